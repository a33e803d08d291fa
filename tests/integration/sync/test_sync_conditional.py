"""Conditional writes against real PostgreSQL: a sync's write lands only while the record
still holds what the sync last saw there (or wrote), so a person's edit made between the
sync's read and its write is never overwritten unseen.

- the connector: `write_if` updates, deletes and upserts by key only where each expected
  field holds one of its values; otherwise the row is left as it is and the outcome is
  STALE (a missing row is SKIPPED)
- the sync: an edit on SQLite is enqueued for PostgreSQL; a person edits the same field on
  PostgreSQL before it is delivered: the write is stale (discarded, not delivered, not a
  dead letter), the record is read again, and the person's edit wins (observed last) and
  reaches SQLite, with the overwritten value recorded as the conflict's loser; an edit of
  another field meanwhile is kept beside the synced one
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from patchbay.connectors.base import connect
from patchbay.model import Operation, Status
from patchbay.patterns.sync import Sync
from patchbay.runtime.runner import Invocation
from patchbay.runtime.serving import deliverer_of, outbox_round
from patchbay.spec import SystemSpec
from patchbay.store import open_state

from .tables import pg, stamped_table

NAME = "people - sync"
LITE = """CREATE TABLE people (id INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT, name TEXT,
          city TEXT, patchbay_id TEXT UNIQUE, seq INTEGER);
          CREATE TABLE clock (n INTEGER); INSERT INTO clock VALUES (0);
          CREATE TRIGGER people_created AFTER INSERT ON people BEGIN UPDATE clock SET n = n + 1;
            UPDATE people SET seq = (SELECT n FROM clock) WHERE id = NEW.id; END;
          CREATE TRIGGER people_changed AFTER UPDATE OF email, name, city, patchbay_id ON people
            BEGIN UPDATE clock SET n = n + 1;
            UPDATE people SET seq = (SELECT n FROM clock) WHERE id = NEW.id; END;"""


@pytest.fixture
def table(pg_url: str) -> Iterator[str]:
    with stamped_table(pg_url, "conditional", "email text, name text, city text") as name:
        yield name


def test_write_if_writes_only_where_the_record_holds_what_is_expected(
        pg_url: str, table: str) -> None:
    pg(pg_url, f"INSERT INTO {table} (name, city, patchbay_id) VALUES "
               "('Ann', 'Oslo', 'g1'), ('Bob', NULL, 'g2'), ('Cy', 'Rome', 'g3')")  # ids 1-3
    connector = connect(SystemSpec(name="pg", url=pg_url))
    try:
        outcomes = connector.write_if(table, [
            {"id": 1, "name": "Anna"},      # holds what is expected: written
            {"id": 2, "city": "Bergen"},    # null expected (None or ""): written
            {"id": 3, "name": "Cyd"},       # a person changed it: stale, left as it is
            {"id": 9, "name": "Nobody"},    # no such record: skipped
        ], Operation.UPDATE, "id", [
            {"name": ["Ann", "Anna"]}, {"city": [None, ""]}, {"name": ["Cyrus"]},
            {"name": ["x"]}])
        assert [o.status for o in outcomes] == [Status.UPDATED, Status.UPDATED, Status.STALE,
                                                Status.SKIPPED]
        deleted = connector.write_if(table, [{"id": 3}, {"id": 2}], Operation.DELETE, "id",
                                     [{"name": ["Cyrus"]}, {"name": ["Bob"]}])
        assert [o.status for o in deleted] == [Status.STALE, Status.DELETED]
        # An upsert by external id: a new key is inserted; an existing record is updated
        # only where it holds what is expected.
        upserted = connector.write_if(table, [
            {"patchbay_id": "g4", "name": "Dee"}, {"patchbay_id": "g1", "name": "Annie"},
            {"patchbay_id": "g3", "name": "Cyd"}], Operation.UPSERT, "patchbay_id",
            [{"name": ["Dee"]}, {"name": ["Anna"]}, {"name": ["Cyrus"]}])
        assert [o.status for o in upserted] == [Status.CREATED, Status.UPDATED, Status.STALE]
    finally:
        connector.close()
    assert pg(pg_url, f"SELECT patchbay_id, name, city FROM {table} ORDER BY patchbay_id") == [
        ("g1", "Annie", "Oslo"), ("g3", "Cy", "Rome"), ("g4", "Dee", None)]


@contextmanager
def synced(tmp_path: Path, pg_url: str, table: str) -> Iterator[Sync]:
    """A PostgreSQL table and an SQLite table kept in sync, settled, one person in SQLite."""
    with sqlite3.connect(tmp_path / "lite.db") as conn:
        conn.executescript(LITE)
        conn.execute("INSERT INTO people (email, name, city) VALUES ('ann@example.com', 'Ann', "
                     "'Oslo')")
    fields = "[email, name, city]"
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
    deletes: {{check_seconds: null}}
    participants:
      - {{name: pg, system: pg}}
      - {{name: lite, system: lite}}
    objects:
      - name: person
        match: [email]
        fields: {fields}
        participants:
          pg: {{object: {table}, key: id, external_id: patchbay_id, watermark: updated_at,
                fields: {fields}}}
          lite: {{object: people, key: id, external_id: patchbay_id, watermark: seq,
                  fields: {fields}}}
""")
    ctx = Invocation.load(spec, NAME, {}).context(*open_state(tmp_path / "state"))
    try:
        yield Sync(ctx)
    finally:
        ctx.systems.close()


def settle(sync: Sync) -> None:
    for _ in range(6):
        report = outbox_round(sync)
        if not report.changes and not report.delivered:
            return
    raise AssertionError("the sync did not settle")


def both(tmp_path: Path, pg_url: str, table: str) -> tuple[list[Any], list[Any]]:
    with sqlite3.connect(tmp_path / "lite.db") as conn:
        lite = conn.execute("SELECT name, city FROM people").fetchall()
    return pg(pg_url, f"SELECT name, city FROM {table}"), lite


def test_a_stale_write_is_not_applied_and_the_edit_it_would_have_overwritten_is_synced(
        tmp_path: Path, pg_url: str, table: str) -> None:
    with synced(tmp_path, pg_url, table) as sync:
        settle(sync)
        assert both(tmp_path, pg_url, table) == ([("Ann", "Oslo")], [("Ann", "Oslo")])

        with sqlite3.connect(tmp_path / "lite.db") as conn:
            conn.execute("UPDATE people SET name = 'Anna (lite)'")
        sync.poll()  # lite's edit is enqueued for pg, not delivered yet
        # A person edits the same field, and another, on pg before the write lands.
        pg(pg_url, f"UPDATE {table} SET name = 'Annie (pg)', city = 'Bergen'")
        stats = deliverer_of(sync).drain("pg/person")
        assert (stats.delivered, stats.stale, stats.dead) == (0, 1, 0)
        assert pg(pg_url, f"SELECT name, city FROM {table}") == [("Annie (pg)", "Bergen")]
        assert sync.store.outbox.counts(NAME)["pg/person"]["dead"] == 0

        settle(sync)
        assert both(tmp_path, pg_url, table) == ([("Annie (pg)", "Bergen")],
                                                 [("Annie (pg)", "Bergen")])
        conflicts = sync.store.conflicts.list(NAME, limit=10)
        assert [(c.field, c.candidates.get("lite"), c.winner) for c in conflicts] == [
            ("name", "Anna (lite)", "pg")]


def test_a_create_taken_up_again_after_a_crash_does_not_write_over_an_edit(
        tmp_path: Path, pg_url: str, table: str) -> None:
    """The create landed, its worker died before marking it; a person edited the new record;
    the create delivered again (its lease taken over) leaves the edit, which is synced."""
    with synced(tmp_path, pg_url, table) as sync:
        settle(sync)  # the initial load creates Ann through the bulk path, not the outbox
        with sqlite3.connect(tmp_path / "lite.db") as conn:
            conn.execute("INSERT INTO people (email, name, city) VALUES ('dee@example.com', "
                         "'Dee', 'Bergen')")
        sync.poll()
        deliverer_of(sync).drain("pg/person")
        assert pg(pg_url, f"SELECT name FROM {table} ORDER BY name") == [("Ann",), ("Dee",)]
        # All delivered: the create is made pending again, as a kill before its mark leaves it.
        assert sync.store.outbox.counts(NAME)["pg/person"]["pending"] == 0
        with sqlite3.connect(tmp_path / "state" / "state.db") as conn:
            changed = conn.execute(
                "UPDATE patchbay_outbox SET status = 'pending', delivered_at = NULL "
                "WHERE destination = 'pg/person' AND payload LIKE '%\"create\"%'").rowcount
        assert changed == 1
        pg(pg_url, f"UPDATE {table} SET name = 'Deedee (pg)' WHERE name = 'Dee'")
        stats = deliverer_of(sync).drain("pg/person")
        assert (stats.stale, stats.dead) == (1, 0)
        assert pg(pg_url, f"SELECT name FROM {table} ORDER BY name") == [("Ann",),
                                                                          ("Deedee (pg)",)]
        settle(sync)
        held_pg, held_lite = both(tmp_path, pg_url, table)
        assert sorted(held_pg) == sorted(held_lite) == [("Ann", "Oslo"), ("Deedee (pg)", "Bergen")]


def test_a_value_sent_then_undone_where_it_came_from_is_followed_by_the_value_undone_to(
        tmp_path: Path, pg_url: str, table: str) -> None:
    """A person changes a field on pg and changes it back before the sync's write of the
    first change reaches SQLite: SQLite, which already held the value changed back to, is
    written again, so the first value does not land and stay there."""
    with synced(tmp_path, pg_url, table) as sync:
        settle(sync)
        pg(pg_url, f"UPDATE {table} SET city = 'Bergen'")
        sync.poll()  # Bergen is on its way to SQLite
        pg(pg_url, f"UPDATE {table} SET city = 'Oslo'")
        sync.poll()
        settle(sync)
        assert both(tmp_path, pg_url, table) == ([("Ann", "Oslo")], [("Ann", "Oslo")])
