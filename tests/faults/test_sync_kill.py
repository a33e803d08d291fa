"""SIGKILL `patchbay serve` of a sync at random moments while people edit both systems, and
restart it each time; then let it converge and check it against the writers' logs.

A PostgreSQL table and an SQLite table hold the same records (a natural key `nkey` the
writers set). On each side a writer makes random edits: creates, updates of the fields both
sides edit (`name`, `city`; every value written is new, so a value names its write), and
deletes. A monitor samples both tables all along. Watermark columns are kept by triggers, so
patchbay's own writes come back as changes. At the end:

    equal          both systems hold the same records with the same shared values
    no duplicate   no natural key twice in a system
    no revival     no deleted natural key anywhere
    no lost update the last value each writer wrote to a field of a record that still exists
                   is the final value, or a recorded conflict's loser, or was overwritten on a
                   system after the monitor saw it there (a later edit of a value that had
                   reached that system; a create's values reach a system with the record)
    no flip-flop   the monitor never sees a field go back to a value it had left (writers never
                   write a value twice)

Edits and kills default to a size that runs in about a minute; the issue's
10,000 edits and 100 kills: PATCHBAY_SYNC_EDITS=10000 PATCHBAY_SYNC_KILLS=100; another
draw of the writers and kills: PATCHBAY_SYNC_SEED. What keeps it passing: writes to both
tables are conditional (a write that finds a person's edit is stale, not applied, and the
record is read again), creates taken up again after a kill never write over an edit nor
make anew a record seen there since or whose key was recorded (at once when it landed), and
a stale delivery is never taken as landed.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import pytest

from patchbay import run_integration

EDITS = int(os.environ.get("PATCHBAY_SYNC_EDITS", "1200"))
KILLS = int(os.environ.get("PATCHBAY_SYNC_KILLS", "18"))
NAME = "people - sync"
FIELDS = ("name", "city")

LITE = """PRAGMA journal_mode=WAL;
CREATE TABLE people (id INTEGER PRIMARY KEY AUTOINCREMENT, nkey TEXT, name TEXT, city TEXT,
  patchbay_id TEXT UNIQUE, seq INTEGER);
CREATE TABLE clock (n INTEGER); INSERT INTO clock VALUES (0);
CREATE TRIGGER people_created AFTER INSERT ON people BEGIN UPDATE clock SET n = n + 1;
  UPDATE people SET seq = (SELECT n FROM clock) WHERE id = NEW.id; END;
CREATE TRIGGER people_changed AFTER UPDATE OF nkey, name, city, patchbay_id ON people
  BEGIN UPDATE clock SET n = n + 1; UPDATE people SET seq = (SELECT n FROM clock)
  WHERE id = NEW.id; END;"""


@pytest.fixture
def table(pg_url: str) -> Iterator[str]:
    name = f"fault_sync_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"""CREATE TABLE {name} (id bigserial PRIMARY KEY, nkey text, name text,
            city text, patchbay_id text UNIQUE, updated_at timestamptz NOT NULL DEFAULT
            clock_timestamp())""")
        conn.execute(f"""CREATE FUNCTION {name}_stamp() RETURNS trigger AS $$ BEGIN
            NEW.updated_at := clock_timestamp(); RETURN NEW; END $$ LANGUAGE plpgsql""")
        conn.execute(f"CREATE TRIGGER {name}_stamp BEFORE UPDATE ON {name} "
                     f"FOR EACH ROW EXECUTE FUNCTION {name}_stamp()")
    yield name
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")
        conn.execute(f"DROP FUNCTION IF EXISTS {name}_stamp()")


def write_spec(directory: Path, pg_url: str, table: str) -> Path:
    fields = "[nkey, name, city]"
    spec = directory / "sync.yaml"
    spec.write_text(f"""
systems:
  pg: {pg_url}
  lite: sqlite:///lite.db
integrations:
  - name: {NAME}
    pattern: sync
    conflicts: latest
    trigger: {{poll_seconds: 0.1, overlap_seconds: 0}}
    deletes: {{check_seconds: 0.5}}
    participants:
      # PostgreSQL commits out of timestamp order: its changes are re-read a while back.
      - {{name: pg, system: pg, trigger: {{poll_seconds: 0.1, overlap_seconds: 2}}}}
      - {{name: lite, system: lite}}
    objects:
      - name: person
        match: [nkey]
        fields: {fields}
        participants:
          pg: {{object: {table}, key: id, external_id: patchbay_id, watermark: updated_at,
                fields: {fields}}}
          lite: {{object: people, key: id, external_id: patchbay_id, watermark: seq,
                  fields: {fields}}}
    options: {{batch_size: 200, lease_seconds: 2, backoff_seconds: 0.1, backoff_max_seconds: 1}}
""")
    return spec


class Side:
    """One system's table, as its writer and the monitor reach it."""

    def __init__(self, name: str, pg_url: str | None, table: str, lite: Path) -> None:
        self.name, self.pg_url, self.table, self.lite = name, pg_url, table, lite

    def execute(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        if self.pg_url is not None:
            with psycopg.connect(self.pg_url, autocommit=True) as conn:
                cursor = conn.execute(sql.replace("?", "%s").replace("people", self.table),
                                      params)
                return cursor.fetchall() if cursor.description else []
        with sqlite3.connect(self.lite, timeout=30, isolation_level=None) as conn:
            return conn.execute(sql, params).fetchall()

    def rows(self) -> list[tuple[Any, ...]]:
        return self.execute("SELECT nkey, name, city FROM people")


@dataclass
class Log:
    """What the writers did, and what the monitor saw."""

    writes: list[tuple[float, str, str, str, str]] = field(default_factory=list)
    """(time, system, nkey, field, value)"""
    created: dict[str, tuple[str, float]] = field(default_factory=dict)
    """nkey -> (system, time) of the create"""
    deleted: set[str] = field(default_factory=set)
    deletes: list[tuple[float, str, str, int]] = field(default_factory=list)
    """(time, system, nkey, rows deleted)"""
    seen: dict[tuple[str, str, str], list[tuple[float, Any]]] = field(default_factory=dict)
    """(system, nkey, field) -> the values the monitor saw change to, with when."""
    lock: threading.Lock = field(default_factory=threading.Lock)


def writer(side: Side, edits: int, pace: float, rng: random.Random, log: Log,
           failed: list[BaseException]) -> None:
    try:
        for n in range(edits):
            kind = rng.random()
            keys = [k for (k,) in side.execute("SELECT nkey FROM people")]
            with log.lock:
                keys = [k for k in keys if k not in log.deleted]
            if kind < 0.15 or not keys:
                nkey = f"{side.name}-{n}"
                values = (f"{side.name}:{n}:name", f"{side.name}:{n}:city")
                now = time.time()
                side.execute("INSERT INTO people (nkey, name, city) VALUES (?, ?, ?)",
                             (nkey, *values))
                with log.lock:
                    log.created[nkey] = (side.name, now)
                    log.writes += [(now, side.name, nkey, f, v) for f, v in zip(FIELDS, values,
                                                                              strict=True)]
            elif kind < 0.2:
                nkey = rng.choice(keys)
                with log.lock:
                    log.deleted.add(nkey)  # before the delete: the writers stop editing it
                now = time.time()
                gone = side.execute("DELETE FROM people WHERE nkey = ? RETURNING id", (nkey,))
                with log.lock:
                    log.deletes.append((now, side.name, nkey, len(gone)))
            else:
                nkey, name = rng.choice(keys), rng.choice(FIELDS)
                value = f"{side.name}:{n}:{name}"
                now = time.time()
                side.execute(f"UPDATE people SET {name} = ? WHERE nkey = ?", (value, nkey))
                with log.lock:
                    log.writes.append((now, side.name, nkey, name, value))
            time.sleep(rng.uniform(0, 2 * pace))
    except BaseException as exc:  # reported by the test, not lost in the thread
        failed.append(exc)


def monitor(sides: list[Side], log: Log, stop: threading.Event) -> None:
    while not stop.is_set():
        for side in sides:
            now = time.time()
            for nkey, *values in side.rows():
                for name, value in zip(FIELDS, values, strict=True):
                    seen = log.seen.setdefault((side.name, nkey, name), [])
                    if not seen or seen[-1][1] != value:
                        seen.append((now, value))
        stop.wait(0.05)


def serve(directory: Path, spec: Path, attempt: int) -> subprocess.Popen[bytes]:
    """`patchbay serve`, once it is serving (its start takes longer than many kills' waits)."""
    log = directory / f"serve-{attempt}.log"
    with log.open("wb") as out:
        process = subprocess.Popen([sys.executable, "-m", "patchbay.cli", "serve", str(spec),
                                    "--no-api"], cwd=directory, stdout=out,
                                   stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while b"serving" not in log.read_bytes():
        assert process.poll() is None, log.read_text(errors="replace")
        assert time.monotonic() < deadline, "serve did not start in 60 s"
        time.sleep(0.02)
    return process


def delivered(state: Path) -> int:
    if not state.exists():
        return 0
    with sqlite3.connect(state, timeout=10) as db:
        return int(db.execute("SELECT count(*) FROM patchbay_outbox "
                              "WHERE status = 'delivered'").fetchone()[0])


def losers(state: Path) -> set[str]:
    """Every value that lost a conflict."""
    with sqlite3.connect(state) as db:
        rows = db.execute("SELECT candidates, winner FROM patchbay_conflicts "
                          "WHERE kind = 'field'").fetchall()
    return {str(v) for candidates, winner in rows
            for who, v in json.loads(candidates).items() if who != winner}


@pytest.mark.xfail(strict=False, reason=(
    "open: a record a person deleted can come back where it was deleted (seed 7 and seed 3 "
    "in some runs of ten at the default size) when a kill falls between a write landing and "
    "its record in the engine state and the person deletes the new record before the sync "
    "reads it: an initial-load batch written but not checkpointed (the join of a side takes "
    "many serves while they are killed within a second), or a steady-state create whose key "
    "was not yet read back (milliseconds). Nothing tells such a record from one never "
    "written; see tests/integration/sync/test_sync_lost_marks.py for the cases closed"))
def test_killing_serve_while_both_systems_are_edited_converges_without_losses(
        tmp_path: Path, pg_url: str, table: str) -> None:
    rng = random.Random(int(os.environ.get("PATCHBAY_SYNC_SEED", "7")))
    with sqlite3.connect(tmp_path / "lite.db") as conn:
        conn.executescript(LITE)
    spec = write_spec(tmp_path, pg_url, table)
    sides = [Side("pg", pg_url, table, tmp_path / "lite.db"),
             Side("lite", None, table, tmp_path / "lite.db")]
    log, failed, stop = Log(), list[BaseException](), threading.Event()
    pace = 2 * KILLS * 1.8 / EDITS  # each writer spreads its edits over the kills (~1.8 s)
    writers = [threading.Thread(target=writer, args=(side, EDITS // 2, pace,
                                                     random.Random(rng.random()), log, failed))
               for side in sides]
    watching = threading.Thread(target=monitor, args=(sides, log, stop))
    started = time.monotonic()
    watching.start()
    for thread in writers:
        thread.start()
    kills = 0
    try:
        while kills < KILLS or any(t.is_alive() for t in writers):
            process = serve(tmp_path, spec, kills)
            try:
                time.sleep(rng.uniform(0.05, 1.2))
                assert process.poll() is None, (tmp_path / f"serve-{kills}.log").read_text()
                os.kill(process.pid, signal.SIGKILL)
                assert process.wait() == -signal.SIGKILL
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
            kills += 1
        for thread in writers:
            thread.join()
        assert not failed, failed
        served = delivered(tmp_path / ".patchbay" / "state.db")
        assert served > 0, "the killed processes delivered nothing"
        # Converge: rounds until two in a row deliver nothing, past a deletes check.
        quiet = 0
        for _ in range(30):
            report = run_integration(spec, state=tmp_path / ".patchbay")
            quiet = quiet + 1 if not report["delivered"] and not report["changes"] else 0
            if quiet == 2:
                break
            time.sleep(0.6)
        time.sleep(0.3)
    finally:
        stop.set()
        watching.join()
    took = time.monotonic() - started
    print(f"{len(log.writes)} values written, {len(log.deleted)} deletes, {kills} kills, "
          f"{served} deliveries by the killed processes, "
          f"{delivered(tmp_path / '.patchbay' / 'state.db') - served} after, {took:.0f} s")
    assert quiet == 2, "the sync did not settle after the kills"

    pg, lite = (side.rows() for side in sides)
    # Every guarantee is checked and all that fail are reported together.
    broken: dict[str, Any] = {}
    for system, rows in (("pg", pg), ("lite", lite)):
        keys = [nkey for nkey, *_ in rows]
        twice = sorted({k for k in keys if keys.count(k) > 1})
        if twice:
            broken[f"duplicates in {system}"] = twice[:5]
        back = sorted(set(keys) & log.deleted)
        if back:
            broken[f"deleted records back in {system}"] = (
                len(back), [d for d in log.deletes if d[2] in back][:5])
    if sorted(pg) != sorted(lite):
        broken["the systems differ"] = sorted(set(pg) ^ set(lite))[:5]

    final = {(nkey, name): value for nkey, *values in pg
             for name, value in zip(FIELDS, values, strict=True)}
    lost = losers(tmp_path / ".patchbay" / "state.db")
    last: dict[tuple[str, str, str], tuple[float, str]] = {}
    for at, system, nkey, name, value in log.writes:
        last[(system, nkey, name)] = (at, value)
    unaccounted = []
    for (system, nkey, name), (at, value) in last.items():
        if nkey in log.deleted or final.get((nkey, name)) == value or value in lost:
            continue
        # Overwritten by a writer on a system the value had reached (the monitor saw it there).
        # A create's value reached every system it reached at all (the record came there
        # holding it), and a writer edits only records its system holds: a later edit there
        # overwrote it, even one made before the monitor's next look.
        first = log.created.get(nkey) == (system, at)
        overwritten = any(
            later > at and ((first and other != system) or any(
                v == value and seen_at <= later
                for seen_at, v in log.seen.get((other, nkey, name), [])))
            for later, other, key, f, _ in log.writes if key == nkey and f == name)
        if not overwritten:
            unaccounted.append((system, nkey, name, value, final.get((nkey, name))))
    if unaccounted:
        broken["lost updates"] = (len(unaccounted), unaccounted[:5])

    flips = []
    for (system, nkey, name), seen in log.seen.items():
        values = [v for _, v in seen]
        for i, value in enumerate(values):
            if value is not None and value in values[:i]:
                flips.append((system, nkey, name, values))
                break
    if flips:
        broken["fields back to an older value"] = (len(flips), flips[:3])
    print(broken)
    assert not broken
