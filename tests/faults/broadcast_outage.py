"""What the broadcast outage tests share: a source table that keeps changing while a
destination is down, `patchbay serve` as a child process, and the checks that the healthy
destinations kept up during the outage and that every destination ends equal to the source.

The source is an SQLite table of items; a thread keeps adding 1 to the qty of a random
item and stamping its updated_at (the broadcast's watermark). qty starts at 0 and only
grows, so a destination's qty of an item says how many of its changes it has seen, and
`qty_at` says what the source held at any moment of the run.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from tests.faults.test_kill_broadcast import stamp

INTEGRATION = "items"
OPTIONS = ("{batch_size: 200, max_attempts: 100, backoff_seconds: 0.2, backoff_max_seconds: 2, "
           "lease_seconds: 30}")
"""Short backoff, so that the outbox catches up within seconds of the end of an outage, and
attempts enough for minutes of retries at the 2 s cap: an outage makes no dead letters."""


class ChangingSource:
    """The source table, and the thread that keeps changing it."""

    def __init__(self, path: Path, rows: int, per_second: float, seed: int = 7) -> None:
        self.path, self.rows, self.per_second = path, rows, per_second
        self._rng = random.Random(seed)
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, label TEXT, qty INTEGER, "
                   "updated_at TEXT)")
        db.executemany("INSERT INTO items VALUES (?, ?, 0, ?)",
                       [(i, f"item {i}", stamp()) for i in range(1, rows + 1)])
        db.close()
        self.log: list[tuple[float, int, int]] = []
        """(time.monotonic() once committed, item, its qty after the change)."""
        self._qty = dict.fromkeys(range(1, rows + 1), 0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="source-writer", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        assert self.error is None, f"the source writer failed: {self.error!r}"

    def _run(self) -> None:
        try:
            db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
            interval = 1 / self.per_second
            due = time.monotonic()
            while not self._stop.is_set():
                item = self._rng.randrange(1, self.rows + 1)
                db.execute("UPDATE items SET qty = qty + 1, updated_at = ? WHERE id = ?",
                           (stamp(), item))
                self._qty[item] += 1
                self.log.append((time.monotonic(), item, self._qty[item]))
                due += interval
                self._stop.wait(max(0.0, due - time.monotonic()))
            db.close()
        except BaseException as exc:  # surfaced by stop(): a silent writer would prove nothing
            self.error = exc

    def qty_at(self, moment: float) -> dict[int, int]:
        """Each item's qty as the source held it at `moment` (time.monotonic())."""
        held = dict.fromkeys(range(1, self.rows + 1), 0)
        for at, item, qty in list(self.log):
            if at > moment:
                break
            held[item] = qty
        return held

    def changes_between(self, start: float, end: float) -> int:
        return sum(1 for at, _, _ in list(self.log) if start <= at <= end)

    def current(self) -> dict[int, tuple[str, int, str]]:
        """item -> (label, qty, updated_at), read from the table."""
        with sqlite3.connect(self.path) as db:
            return {i: (label, qty, at) for i, label, qty, at in
                    db.execute("SELECT id, label, qty, updated_at FROM items")}


def write_spec(directory: Path, pg_url: str, table: str, systems: str = "",
               destinations: str = "") -> Path:
    """A broadcast of the items to a PostgreSQL table (warehouse) and an append-only JSON
    Lines audit (one line per change: a change written twice shows as two lines), plus
    the systems and destinations given as YAML lines."""
    (directory / "audit").mkdir()
    spec = directory / "items.yaml"
    spec.write_text(f"""
systems:
  source: sqlite:///source.db
  warehouse: {pg_url}
  audit: {{url: "file:audit", options: {{fields: [change, item_id, qty]}}}}
{systems}
integrations:
  - name: {INTEGRATION}
    pattern: broadcast
    source: {{system: source, object: items, key: id, watermark: updated_at}}
    trigger: {{poll_seconds: 0.1}}
    destinations:
      - {{name: warehouse, system: warehouse, object: {table}, key: item_id,
          transform: {{fields: {{item_id: id, label: label, qty: qty}}}}}}
      - {{name: audit, system: audit, object: changes.jsonl, key: change, operation: insert,
          transform: {{fields: {{change: {{expr: "concat(id, '@', updated_at)"}}, item_id: id, qty: qty}}}}}}
{destinations}
    options: {OPTIONS}
""")
    return spec


def create_table(pg_url: str, table: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (item_id bigint PRIMARY KEY, label text, qty integer)")


def drop_table(pg_url: str, table: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")


@contextmanager
def serving(directory: Path, spec: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`patchbay serve --no-api` in `directory`, its output in serve.log (a pipe nobody reads
    would fill up and block it); stopped with Ctrl-C, and it must then exit cleanly."""
    environ = {k: v for k, v in os.environ.items() if k != "PATCHBAY_STATE"}
    with (directory / "serve.log").open("wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "patchbay.cli", "serve", str(spec),
                                    "--no-api"], cwd=directory, env=environ, stdout=log,
                                   stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(2)  # SIGINT
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def assert_alive(process: subprocess.Popen[bytes], directory: Path) -> None:
    assert process.poll() is None, "patchbay serve ended:\n" + serve_log(directory)


def serve_log(directory: Path, tail: int = 4000) -> str:
    path = directory / "serve.log"
    return path.read_text(errors="replace")[-tail:] if path.exists() else ""


def outbox(directory: Path) -> dict[str, dict[str, int]]:
    """Deliveries per destination and status, read from the engine state as serve runs."""
    counts: dict[str, dict[str, int]] = {}
    state = directory / ".patchbay" / "state.db"
    if not state.exists():
        return counts
    try:
        with sqlite3.connect(state, timeout=10) as db:
            rows = db.execute("SELECT destination, status, count(*) FROM patchbay_outbox "
                              "WHERE integration = ? GROUP BY destination, status",
                              (INTEGRATION,)).fetchall()
    except sqlite3.OperationalError:  # not created yet
        return counts
    for destination, status, n in rows:
        counts.setdefault(destination, {"pending": 0, "delivered": 0, "dead": 0})[status] = n
    return counts


def delivered_changes(directory: Path, destination: str) -> list[tuple[str, str]]:
    """(record key, version) of every delivery made to `destination`."""
    with sqlite3.connect(directory / ".patchbay" / "state.db", timeout=10) as db:
        return db.execute("SELECT record_key, version FROM patchbay_outbox WHERE integration = ? "
                          "AND destination = ? AND status = 'delivered'",
                          (INTEGRATION, destination)).fetchall()


def audit_lines(directory: Path) -> list[dict[str, Any]]:
    """The audit's complete lines (serve may be appending the last one right now)."""
    path = directory / "audit" / "changes.jsonl"
    if not path.exists():
        return []
    text = path.read_text()
    whole = text if text.endswith("\n") else text[:text.rfind("\n") + 1]
    return [json.loads(line) for line in whole.splitlines() if line.strip()]


def audit_last_qty(directory: Path) -> dict[int, int]:
    last: dict[int, int] = {}
    for line in audit_lines(directory):
        last[int(line["item_id"])] = int(line["qty"])
    return last


def warehouse(pg_url: str, table: str) -> dict[int, tuple[str, int]]:
    with psycopg.connect(pg_url, connect_timeout=5) as conn:
        return {r[0]: (r[1], r[2]) for r in conn.execute(f"SELECT item_id, label, qty FROM {table}")}


def behind(held: dict[int, int], expected: dict[int, int]) -> list[int]:
    """Items a destination holds an older qty of than `expected` (missing counts as older)."""
    return [item for item, qty in expected.items() if held.get(item, -1) < qty]


def assert_kept_up(source: ChangingSource, start: float, end: float, lag: float,
                   healthy: dict[str, dict[int, int]]) -> int:
    """Each healthy destination (name -> its qty per item, read at `end`) holds every change
    the source made until `lag` seconds before `end`; the outage began at `start`. Returns how
    many changes that window held, which must be enough for the check to mean something."""
    cutoff = end - lag
    made = source.changes_between(start, cutoff)
    assert made >= 200, f"only {made} changes were made during the outage: nothing to keep up with"
    expected = source.qty_at(cutoff)
    for name, held in healthy.items():
        late = behind(held, expected)
        assert not late, (f"the healthy destination {name} stalled while another was down: "
                          f"{len(late)} items lag more than {lag:g}s behind the source (e.g. item "
                          f"{late[0]}: {held.get(late[0])} < {expected[late[0]]}); {made} changes "
                          f"were made in the window")
    return made


def wait_drained(directory: Path, process: subprocess.Popen[bytes], source: ChangingSource,
                 timeout: float) -> dict[str, dict[str, int]]:
    """Wait until serve has polled every change (the audit's last line of each item is the
    source's) and delivered everything (nothing pending anywhere); the outbox then."""
    current = {i: qty for i, (_, qty, _) in source.current().items()}
    deadline = time.monotonic() + timeout
    counts: dict[str, dict[str, int]] = {}
    while time.monotonic() < deadline:
        assert_alive(process, directory)
        counts = outbox(directory)
        if audit_last_qty(directory) == current and counts \
                and all(c["pending"] == 0 for c in counts.values()):
            return counts
        time.sleep(0.5)
    raise AssertionError(f"the outbox did not drain within {timeout:g}s after the outage: {counts}"
                         f"\n{serve_log(directory)}")


def differences(held: dict[int, Any], expected: dict[int, Any]) -> str:
    """What tells two states apart, shortly (pytest does not rewrite the asserts of a
    module that is not a test module, so they say it themselves)."""
    wrong = sorted(k for k in expected.keys() | held.keys() if held.get(k) != expected.get(k))
    shown = ", ".join(f"{k}: {held.get(k)!r} != {expected.get(k)!r}" for k in wrong[:3])
    return f"{len(wrong)} of {len(expected)} items differ from the source ({shown})"


def assert_final_state(directory: Path, source: ChangingSource, pg_url: str, table: str) -> None:
    """The warehouse holds exactly the source; the audit has every delivered change once,
    and its last line of each item is the item's current qty."""
    current = source.current()
    expected = {i: (label, qty) for i, (label, qty, _) in current.items()}
    held = warehouse(pg_url, table)
    assert held == expected, "warehouse: " + differences(held, expected)

    lines = audit_lines(directory)
    changes = [line["change"] for line in lines]
    twice = len(changes) - len(set(changes))
    assert twice == 0, f"{twice} changes were written to the audit twice"
    delivered = delivered_changes(directory, "audit")
    assert len(lines) == len(delivered), (f"{len(lines)} audit lines for {len(delivered)} "
                                          "delivered changes: one each, no more, no less")
    last, latest = audit_last_qty(directory), {i: qty for i, (_, qty, _) in current.items()}
    assert last == latest, ("the audit's last line of each item is its current state (order "
                            "kept per record): " + differences(last, latest))
