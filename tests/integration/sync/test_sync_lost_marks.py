"""A sync's writes whose mark a kill lost, against real PostgreSQL: what a killed worker or
run had written but not yet recorded is never taken up again as if it had not landed.

- a create that landed, in a batch whose worker was SIGKILLed while it wrote the batch's
  next record (blocked on a person's row lock): its key is recorded as soon as it landed,
  so when a person deletes the new record before the sync ever reads it, the create taken
  up again does not make it anew, and the deletes check passes the delete on
- a create whose key was recorded but whose delivery was not marked (killed between the
  two), its record deleted there unseen: the same
- a batch of the initial load written, its run killed before its checkpoint, a person's
  edit made there since: the batch written again leaves the edit, which is synced
- an update held by a killed worker, taken up after newer values were seen and sent: it is
  stale, and the write that follows still expects (it does not overwrite an edit unseen)
"""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest

from patchbay.patterns.sync import LANDED_MARGIN, Sync
from patchbay.processes import this_host
from patchbay.runtime.runner import Invocation
from patchbay.runtime.serving import deliverer_of, outbox_round
from patchbay.store import open_state

from .tables import pg, stamped_table

NAME = "people - sync"
LITE = """CREATE TABLE people (id INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT, name TEXT,
          patchbay_id TEXT UNIQUE, seq INTEGER);
          CREATE TABLE clock (n INTEGER); INSERT INTO clock VALUES (0);
          CREATE TRIGGER people_created AFTER INSERT ON people BEGIN UPDATE clock SET n = n + 1;
            UPDATE people SET seq = (SELECT n FROM clock) WHERE id = NEW.id; END;
          CREATE TRIGGER people_changed AFTER UPDATE OF email, name, patchbay_id ON people
            BEGIN UPDATE clock SET n = n + 1;
            UPDATE people SET seq = (SELECT n FROM clock) WHERE id = NEW.id; END;"""
DELIVER = """import sys
from pathlib import Path
from patchbay.patterns.sync import Sync
from patchbay.runtime.runner import Invocation
from patchbay.runtime.serving import deliverer_of
from patchbay.store import open_state
ctx = Invocation.load(Path(sys.argv[1]), sys.argv[2], {}).context(*open_state(Path(sys.argv[3])))
deliverer_of(Sync(ctx)).drain("pg/person")
"""


@pytest.fixture
def table(pg_url: str) -> Iterator[str]:
    with stamped_table(pg_url, "lost_marks", "email text, name text") as name:
        yield name


def lite(tmp_path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with sqlite3.connect(tmp_path / "lite.db") as conn:
        return conn.execute(sql, params).fetchall()


def state(tmp_path: Path, sql: str, params: tuple[Any, ...] = ()) -> int:
    with sqlite3.connect(tmp_path / "state" / "state.db") as conn:
        return conn.execute(sql, params).rowcount


def write_spec(tmp_path: Path, pg_url: str, table: str, order: tuple[str, str]) -> Path:
    fields = "[email, name]"
    held = {"pg": f"pg: {{object: {table}, key: id, external_id: patchbay_id, "
                  f"watermark: updated_at, fields: {fields}}}",
            "lite": f"lite: {{object: people, key: id, external_id: patchbay_id, "
                    f"watermark: seq, fields: {fields}}}"}
    spec = tmp_path / "sync.yaml"
    spec.write_text(f"""
systems:
  pg: {pg_url}
  lite: sqlite:///{tmp_path / 'lite.db'}
integrations:
  - name: {NAME}
    pattern: sync
    conflicts: latest
    trigger: {{poll_seconds: 0.1, overlap_seconds: 0}}
    deletes: {{check_seconds: 0.001}}
    participants:
      - {{name: {order[0]}, system: {order[0]}}}
      - {{name: {order[1]}, system: {order[1]}}}
    objects:
      - name: person
        match: [email]
        fields: {fields}
        participants:
          {held[order[0]]}
          {held[order[1]]}
""")
    return spec


@contextmanager
def synced(tmp_path: Path, pg_url: str, table: str,
           order: tuple[str, str] = ("pg", "lite")) -> Iterator[tuple[Sync, Path]]:
    """PostgreSQL and SQLite tables kept in sync, Ann in SQLite, settled."""
    with sqlite3.connect(tmp_path / "lite.db") as conn:
        conn.executescript(LITE)
        conn.execute("INSERT INTO people (email, name) VALUES ('ann@example.com', 'Ann')")
    spec = write_spec(tmp_path, pg_url, table, order)
    ctx = Invocation.load(spec, NAME, {}).context(*open_state(tmp_path / "state"))
    try:
        sync = Sync(ctx)
        settle(sync)
        yield sync, spec
    finally:
        ctx.systems.close()


def settle(sync: Sync) -> None:
    for _ in range(8):
        report = outbox_round(sync)
        if not report.changes and not report.delivered:
            return
    raise AssertionError("the sync did not settle")


def settle_past_the_margin(sync: Sync) -> None:
    """Settle once the keys recorded have been recorded longer than the margin the deletes
    check allows the state's clock."""
    time.sleep(LANDED_MARGIN.total_seconds() + 0.1)
    settle(sync)


def names(tmp_path: Path, pg_url: str, table: str) -> tuple[list[str], list[str]]:
    return ([n for (n,) in pg(pg_url, f"SELECT name FROM {table} ORDER BY name")],
            [n for (n,) in lite(tmp_path, "SELECT name FROM people ORDER BY name")])


def test_a_create_landed_by_a_worker_killed_mid_batch_is_not_made_anew_after_a_delete(
        tmp_path: Path, pg_url: str, table: str) -> None:
    with synced(tmp_path, pg_url, table) as (sync, spec):
        assert names(tmp_path, pg_url, table) == (["Ann"], ["Ann"])
        # One batch for pg: a create (Dee), then an update (Ann), in that order.
        lite(tmp_path, "INSERT INTO people (email, name) VALUES ('dee@example.com', 'Dee')")
        sync.poll()
        lite(tmp_path, "UPDATE people SET name = 'Anna' WHERE name = 'Ann'")
        sync.poll()
        with psycopg.connect(pg_url) as person:
            # A person holds Ann's row: the worker's update of it waits, after Dee landed.
            person.execute(f"SELECT id FROM {table} WHERE name = 'Ann' FOR UPDATE")
            worker = subprocess.Popen([sys.executable, "-c", DELIVER, str(spec), NAME,
                                       str(tmp_path / "state")])
            try:
                deadline = time.monotonic() + 60
                while not pg(pg_url, "SELECT 1 FROM pg_stat_activity WHERE wait_event_type = "
                                     "'Lock' AND query LIKE %s", (f"%{table}%",)):
                    assert worker.poll() is None and time.monotonic() < deadline
                    time.sleep(0.05)
                assert pg(pg_url, f"SELECT name FROM {table} WHERE name = 'Dee'") == [("Dee",)]
            finally:
                worker.send_signal(signal.SIGKILL)
                worker.wait()
            person.rollback()
        assert sync.store.outbox.counts(NAME)["pg/person"]["delivered"] == 0
        # The person deletes Dee on pg before the sync ever read it there.
        pg(pg_url, f"DELETE FROM {table} WHERE name = 'Dee'")
        settle_past_the_margin(sync)
        assert names(tmp_path, pg_url, table) == (["Anna"], ["Anna"])


def test_a_create_whose_key_was_recorded_but_not_its_delivery_is_not_made_anew(
        tmp_path: Path, pg_url: str, table: str) -> None:
    with synced(tmp_path, pg_url, table) as (sync, _):
        lite(tmp_path, "INSERT INTO people (email, name) VALUES ('dee@example.com', 'Dee')")
        sync.poll()
        deliverer_of(sync).drain("pg/person")
        assert pg(pg_url, f"SELECT name FROM {table} ORDER BY name") == [("Ann",), ("Dee",)]
        # As a worker killed after recording the key and before marking the delivery leaves it.
        assert state(tmp_path, "UPDATE patchbay_outbox SET status = 'pending', delivered_at = "
                               "NULL WHERE destination = 'pg/person' AND payload LIKE "
                               "'%\"create\"%'") == 1
        pg(pg_url, f"DELETE FROM {table} WHERE name = 'Dee'")
        settle_past_the_margin(sync)
        assert names(tmp_path, pg_url, table) == (["Ann"], ["Ann"])


def test_a_load_batch_written_again_after_a_kill_leaves_an_edit_made_since(
        tmp_path: Path, pg_url: str, table: str) -> None:
    # SQLite first: its first read, and the initial load at its end, come before pg's poll.
    with synced(tmp_path, pg_url, table, order=("lite", "pg")) as (sync, _):
        join = "DELETE FROM patchbay_cursors WHERE system = 'lite' AND object = 'join:people'"
        assert state(tmp_path, join) == 1  # SQLite's first read is under way again
        lite(tmp_path, "INSERT INTO people (email, name) VALUES ('bob@example.com', 'Bob')")
        sync.poll()  # read to its end: the initial load creates Bob on pg
        assert pg(pg_url, f"SELECT name FROM {table} ORDER BY name") == [("Ann",), ("Bob",)]
        # As a run killed after writing the batch and before its checkpoint leaves it.
        bob = pg(pg_url, f"SELECT patchbay_id FROM {table} WHERE name = 'Bob'")[0][0]
        assert state(tmp_path, "DELETE FROM patchbay_xref WHERE participant = 'pg' "
                               "AND gid = ?", (bob,)) == 1
        assert state(tmp_path, join) == 1
        pg(pg_url, f"UPDATE {table} SET name = 'Bobby (pg)' WHERE name = 'Bob'")
        settle(sync)
        assert names(tmp_path, pg_url, table) == (["Ann", "Bobby (pg)"], ["Ann", "Bobby (pg)"])


def test_an_old_write_found_stale_late_leaves_the_next_write_conditional(
        tmp_path: Path, pg_url: str, table: str) -> None:
    with synced(tmp_path, pg_url, table) as (sync, _):
        lite(tmp_path, "UPDATE people SET name = 'A1'")
        sync.poll()
        # A worker takes the write of A1 to pg and is killed: its lease holds the write.
        ended = subprocess.Popen([sys.executable, "-c", "pass"])
        ended.wait()
        held = sync.store.outbox.lease(NAME, "pg/person", f"{this_host()}:{ended.pid}:w",
                                       lease_seconds=60)
        assert len(held) == 1
        pg(pg_url, f"UPDATE {table} SET name = 'P1'")  # the newer edit wins (latest)
        sync.poll()
        lite(tmp_path, "UPDATE people SET name = 'A2'")  # and this one over it
        sync.poll()  # A2 for pg, behind the write of A1
        # The killed worker's lease is taken over: A1 is stale (pg holds P1).
        stats = deliverer_of(sync).deliver_once("pg/person")
        assert (stats.stale, stats.delivered) == (1, 0)
        sync.poll()  # pg read again: it holds P1, as last seen
        pg(pg_url, f"UPDATE {table} SET name = 'P2'")  # before A2 is written
        deliverer_of(sync).drain("pg/person")  # before the sync reads P2
        settle(sync)
        assert names(tmp_path, pg_url, table) == (["P2"], ["P2"])
