"""SIGKILL `patchbay serve` twelve times while it delivers, each time in the middle of a batch
(it holds leases on deliveries), restart it each time: every destination ends equal to the
source, no change is delivered twice, and the last run delivers only what the killed
workers left."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from patchbay import run_integration

ROWS = 2_000
KILLS = 12


@pytest.fixture
def table(pg_url: str) -> Iterator[str]:
    name = f"fault_bcast_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (item_id bigint PRIMARY KEY, label text, qty integer)")
    yield name
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")


def stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


class Items:
    """The source table of items, and every state of an item the test wrote: `written` maps
    (item, updated_at) to the qty of that state, which a change of that version carries."""

    def __init__(self, path: Path, rows: int) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, label TEXT, qty INTEGER, "
                        "updated_at TEXT)")
        first = [(i, f"item {i}", 0, stamp()) for i in range(1, rows + 1)]
        self.db.executemany("INSERT INTO items VALUES (?, ?, ?, ?)", first)
        self.written = {(i, at): qty for i, _, qty, at in first}
        self.qty = {i: qty for i, _, qty, _ in first}

    def change(self, item: int) -> None:
        at = stamp()
        self.qty[item] += 1
        self.db.execute("UPDATE items SET qty = ?, updated_at = ? WHERE id = ?",
                        (self.qty[item], at, item))
        self.written[(item, at)] = self.qty[item]

    def current(self) -> dict[int, tuple[str, int, str]]:
        """item -> (label, qty, updated_at), read from the table."""
        return {i: (label, qty, at) for i, label, qty, at in
                self.db.execute("SELECT id, label, qty, updated_at FROM items")}


def owned_by(pid: int) -> str:
    """A LIKE pattern of the lease owners of process `pid` (workers are named host:pid:random)."""
    return f"%:{pid}:%"


def until_leased(process: subprocess.Popen[bytes], leases: Callable[[], set[int]],
                 nudge: Callable[[], None], log: Path) -> None:
    """Return the moment `process` holds leases on deliveries: it is writing a batch or about
    to mark one. `nudge` makes changes when it has had nothing to deliver for a while."""
    deadline = time.monotonic() + 120
    quiet_since = time.monotonic()
    while not leases():
        assert process.poll() is None, f"the worker ended:\n{log.read_text(errors='replace')}"
        assert time.monotonic() < deadline, "the worker leased no delivery in 120 s"
        if time.monotonic() - quiet_since > 2:
            nudge()
            quiet_since = time.monotonic()
        time.sleep(0.005)


def kill_in_flight(process: subprocess.Popen[bytes], leases: Callable[[], set[int]],
                   nudge: Callable[[], None], log: Path) -> set[int]:
    """SIGKILL `process` as soon as it holds leases; the deliveries it still held once dead
    (none when it marked its batch between the look and the kill: that kill missed)."""
    until_leased(process, leases, nudge, log)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    return leases()


def stop(process: subprocess.Popen[bytes]) -> bool:
    """Ctrl-C `process`; whether it ended within 60 s (else it is killed, never left behind)."""
    process.send_signal(signal.SIGINT)
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return False
    return True


def write_spec(directory: Path, pg_url: str, table: str) -> Path:
    (directory / "audit").mkdir()
    spec = directory / "items.yaml"
    spec.write_text(f"""
systems:
  source: sqlite:///source.db
  warehouse: {pg_url}
  audit: {{url: "file:audit", options: {{fields: [change, item_id, qty]}}}}
integrations:
  - name: items
    pattern: broadcast
    source: {{system: source, object: items, key: id, watermark: updated_at}}
    trigger: {{poll_seconds: 0.05}}
    destinations:
      - name: warehouse
        system: warehouse
        object: {table}
        key: item_id
        transform: {{fields: {{item_id: id, label: label, qty: qty}}}}
      - name: audit
        system: audit
        object: changes.jsonl
        key: change
        transform: {{fields: {{change: {{expr: "concat(id, '@', updated_at)"}}, item_id: id, qty: qty}}}}
    options: {{batch_size: 200, lease_seconds: 2, backoff_seconds: 0.1, backoff_max_seconds: 1}}
""")
    return spec


def outbox_rows(state: Path, where: str = "1 = 1", *args: object) -> list[tuple[Any, ...]]:
    """(id, destination, record_key, version, status) of the deliveries `where` selects; none
    before serve has made the engine state."""
    if not state.exists():
        return []
    try:
        with sqlite3.connect(state, timeout=10) as db:
            return db.execute("SELECT id, destination, record_key, version, status "
                              f"FROM patchbay_outbox WHERE {where}", args).fetchall()
    except sqlite3.OperationalError:
        return []


def statuses(rows: list[tuple[Any, ...]]) -> dict[str, dict[str, int]]:
    """Deliveries per destination and status, every status present, as the report counts them."""
    counts: dict[str, dict[str, int]] = {}
    for _, destination, _, _, status in rows:
        per = counts.setdefault(destination, dict.fromkeys(
            ("pending", "delivered", "dead", "discarded"), 0))
        per[status] += 1
    return counts


def test_killing_the_worker_twelve_times_mid_batch_loses_and_duplicates_nothing(
        tmp_path: Path, pg_url: str, table: str) -> None:
    rng = random.Random(11)
    items = Items(tmp_path / "source.db", ROWS)
    spec = write_spec(tmp_path, pg_url, table)
    state = tmp_path / ".patchbay" / "state.db"

    def burst(changes: int) -> None:
        for _ in range(changes):
            items.change(rng.randrange(1, ROWS + 1))

    hits, in_flight = 0, set[int]()
    for attempt in range(2 * KILLS):
        if hits == KILLS:
            break
        log = tmp_path / f"serve-{attempt}.log"
        with log.open("wb") as out:
            worker = subprocess.Popen([sys.executable, "-m", "patchbay.cli", "serve", str(spec),
                                       "--no-api"], cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT)
        burst(rng.randrange(300, 700))

        def leases(pid: int = worker.pid) -> set[int]:
            return {row[0] for row in outbox_rows(
                state, "status = 'pending' AND lease_owner LIKE ?", owned_by(pid))}

        try:
            # Up and delivering, then some way into its work, killed in the middle of a batch.
            until_leased(worker, leases, lambda: burst(50), log)
            time.sleep(rng.uniform(0.1, 1.0))
            in_flight = kill_in_flight(worker, leases, lambda: burst(50), log)
        finally:
            if worker.poll() is None:  # the test failed: leave no worker behind
                worker.kill()
                worker.wait()
        hits += bool(in_flight)
    assert hits == KILLS, f"only {hits} of {2 * KILLS} kills came while the worker held leases"

    time.sleep(2.5)  # the last killed worker's leases (lease_seconds: 2) run out
    before = outbox_rows(state)
    served = statuses(before)
    assert served["warehouse"]["delivered"] > 0 and served["audit"]["delivered"] > 0, \
        f"the killed workers delivered nothing themselves: {served}"
    queued = {(key, version) for _, destination, key, version, _ in before if destination == "audit"}
    current = items.current()
    unqueued = [i for i, (_, _, at) in current.items() if (str(i), at) not in queued]
    report = run_integration(spec, state=tmp_path / ".patchbay")
    assert report["changes"] == len(unqueued), "the last run noticed only what no worker had"
    pending = sum(counts["pending"] for counts in served.values())
    assert report["delivered"] == pending + 2 * len(unqueued), \
        "the last run delivered only the remainder: what the workers left, and its own changes"
    assert report["outbox"] == {name: {"pending": 0, "delivered": counts["delivered"]
                                       + counts["pending"] + len(unqueued), "dead": 0, "discarded": 0}
                                for name, counts in served.items()}
    left = {row[0]: row[4] for row in outbox_rows(state) if row[0] in in_flight}
    assert left == dict.fromkeys(in_flight, "delivered"), \
        "what the last worker held when killed was delivered after its leases ran out"

    expected = {i: (label, qty) for i, (label, qty, _) in current.items()}
    with psycopg.connect(pg_url) as conn:
        held = {r[0]: (r[1], r[2]) for r in conn.execute(f"SELECT item_id, label, qty FROM {table}")}
    assert held == expected

    delivered = [(key, version) for _, destination, key, version, status
                 in outbox_rows(state) if destination == "audit" and status == "delivered"]
    assert len(delivered) == len(set(delivered)), "no change was queued twice"
    lines = [json.loads(line) for line in
             (tmp_path / "audit" / "changes.jsonl").read_text().splitlines() if line.strip()]
    # JSON Lines keeps the values' types: the ids and quantities are the source's integers.
    assert sorted((line["change"], line["item_id"], line["qty"]) for line in lines) == sorted(
        (f"{key}@{version}", int(key), items.written.get((int(key), version)))
        for key, version in delivered), \
        "the audit holds each delivered change once, with the qty the test wrote in that version"
    last = {}
    for line in lines:
        last[line["item_id"]] = line["qty"]
    assert last == {i: qty for i, (_, qty) in expected.items()}, \
        "the audit's last line of each item is its current state: order kept per record"
