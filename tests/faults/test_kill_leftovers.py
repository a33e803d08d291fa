"""What a process killed with SIGKILL leaves behind is taken over at the restart: the
temporary copy of a file it was rewriting is removed, and the deliveries it had leased are
delivered at once, not after `lease_seconds`."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from patchbay.atomic import replacing
from patchbay.connectors.files import FileConnector
from patchbay.elements.sink import Sink
from patchbay.model import Operation
from patchbay.runtime.delivery import Deliverer, DeliveryStats
from patchbay.spec import SystemSpec
from patchbay.store import Store
from patchbay.store.outbox import NewDelivery

ROWS = 20_000

REWRITE_FOREVER = """
import sys
from patchbay.connectors.files import FileConnector
from patchbay.model import Operation
from patchbay.spec import SystemSpec

files = FileConnector(SystemSpec(name="out", url="file:" + sys.argv[1]))
round = 0
while True:
    round += 1
    files.write("big.jsonl", [{"id": i, "round": round} for i in range(int(sys.argv[2]))],
                Operation.UPSERT, "id")
"""

LEASE_AND_HANG = """
import sys, time
from patchbay.runtime.delivery import default_worker
from patchbay.store import Store

store = Store.open(directory=sys.argv[1])
leased = store.outbox.lease("orders - broadcast", "audit", default_worker(), lease_seconds=600)
print(len(leased), flush=True)
time.sleep(600)
"""


def child(script: str, *arguments: object) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", script, *map(str, arguments)], text=True,
                            stdout=subprocess.PIPE, env=os.environ.copy())


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:  # renamed over the file meanwhile
        return 0


def temporaries(folder: Path) -> list[Path]:
    return sorted(folder.glob(".big.jsonl.*.tmp"))


def test_a_copy_left_by_a_process_killed_mid_write_is_removed_on_start(tmp_path: Path) -> None:
    left: list[Path] = []
    for _ in range(20):  # killed while a copy is being written, which it nearly always is
        writer = child(REWRITE_FOREVER, tmp_path, ROWS)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (
                    (tmp_path / "big.jsonl").exists()
                    and any(map(size, temporaries(tmp_path)))):
                time.sleep(0.005)
        finally:
            writer.send_signal(signal.SIGKILL)
            writer.wait(timeout=30)
        left = temporaries(tmp_path)
        if left:
            break
    assert len(left) == 1 and left[0].stat().st_size > 0, "the killed writer left its copy"

    FileConnector(SystemSpec(name="out", url=f"file:{tmp_path}"))  # the restart

    assert temporaries(tmp_path) == []
    lines = (tmp_path / "big.jsonl").read_text().splitlines()
    assert len(lines) == ROWS and len({json.loads(line)["round"] for line in lines}) == 1


def test_a_copy_of_a_running_writer_is_left_alone(tmp_path: Path) -> None:
    running = tmp_path / f".big.jsonl.{socket.gethostname()}.{os.getpid()}.abc123.tmp"
    running.write_text("being written")

    FileConnector(SystemSpec(name="out", url=f"file:{tmp_path}"))

    assert temporaries(tmp_path) == [running]


def test_leases_of_a_killed_worker_are_taken_over_at_the_restart(tmp_path: Path) -> None:
    state = tmp_path / "state"
    store = Store.open(directory=state)
    store.outbox.add("orders - broadcast", [
        NewDelivery("audit", key, f"v{key}", "upsert", {"id": key, "status": "paid"})
        for key in (1, 2, 3)])
    worker = child(LEASE_AND_HANG, state)
    try:
        assert worker.stdout is not None and worker.stdout.readline().strip() == "3"
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait(timeout=30)
    assert store.outbox.lease("orders - broadcast", "audit", "someone", lease_seconds=60) == [], \
        "the killed worker's leases have not expired"

    (tmp_path / "audit").mkdir()
    files = FileConnector(SystemSpec(name="audit", url=f"file:{tmp_path / 'audit'}",
                                     options={"fields": ["id", "status"]}))
    restarted = Deliverer(store, "orders - broadcast",
                          {"audit": Sink(files, "orders.jsonl", Operation.UPSERT, "id")})

    assert restarted.deliver_once("audit") == DeliveryStats(delivered=3)
    assert [json.loads(line) for line in (tmp_path / "audit" / "orders.jsonl").read_text()
            .splitlines()] == [{"id": 1, "status": "paid"}, {"id": 2, "status": "paid"},
                               {"id": 3, "status": "paid"}]
    store.close()


def test_the_next_write_of_a_file_removes_the_copy_a_dead_writer_left(tmp_path: Path) -> None:
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                           capture_output=True, text=True, check=True)
    folder = tmp_path / "reports"  # not the folder of a file system: no sweep on start
    folder.mkdir()
    left = folder / f".big.jsonl.{socket.gethostname()}.{ended.stdout.strip()}.abc123.tmp"
    left.write_text("half a file")
    other = folder / f".other.jsonl.{socket.gethostname()}.{ended.stdout.strip()}.abc123.tmp"
    other.write_text("half of another file")

    with replacing(folder / "big.jsonl") as temporary:
        temporary.write_text('{"id": 1}\n')

    assert sorted(p.name for p in folder.iterdir()) == [other.name, "big.jsonl"]
