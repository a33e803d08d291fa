"""MariaDB change capture (connectors/mycapture.py) against a real database.

As test_pg_capture.py: every test reads through its own consumer name and its own tables
(uuid suffixes), and removes what it registered afterwards; the shared capture tables stay.
Cursors go through JSON between calls, as the engine stores them.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from patchbay import run_integration
from patchbay.connectors.sql import SqlConnector, mycapture
from patchbay.errors import SpecError
from patchbay.model import Change, ChangeKind
from patchbay.spec import SystemSpec
from patchbay.urls import sqlalchemy_url

COLUMNS = ("id integer PRIMARY KEY, name varchar(40) NOT NULL, amount decimal(12, 2), "
           "active boolean, seen_at datetime(3), note text")


class My:
    """The test's view of the database: its tables, its consumers, cleaned up afterwards."""

    def __init__(self, url: str) -> None:
        self.engine = sa.create_engine(sqlalchemy_url(url))
        self.suffix = uuid.uuid4().hex[:10]
        self.tables: list[str] = []
        self.consumers: list[str] = []

    def execute(self, statement: str, params: Any = None) -> None:
        with self.engine.begin() as conn:
            conn.exec_driver_sql(statement, params)

    def rows(self, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(statement, params)]

    def table(self, prefix: str, columns: str = COLUMNS) -> str:
        name = f"{prefix}_{self.suffix}"
        self.execute(f"CREATE TABLE {name} ({columns})")
        self.tables.append(name)
        return name

    def consumer(self, label: str) -> str:
        name = f"{label} {self.suffix}"
        self.consumers.append(name)
        return name

    def triggers(self, table: str) -> int:
        return int(self.rows("SELECT count(*) FROM information_schema.TRIGGERS WHERE "
                             "EVENT_OBJECT_SCHEMA = DATABASE() AND EVENT_OBJECT_TABLE = %s "
                             "AND TRIGGER_NAME LIKE 'patchbay\\_capture\\_%%'", (table,))[0][0])

    def pending(self, consumer: str) -> int:
        return int(self.rows("SELECT count(*) FROM patchbay_capture WHERE consumer = %s",
                             (consumer,))[0][0])

    def clean(self) -> None:
        for table in reversed(self.tables):
            self.execute(f"DROP TABLE IF EXISTS {table}")  # its triggers go with it
        if self.rows("SHOW TABLES LIKE 'patchbay_capture_consumers'"):
            for consumer in self.consumers:
                self.execute("DELETE FROM patchbay_capture WHERE consumer = %s", (consumer,))
                self.execute("DELETE FROM patchbay_capture_consumers WHERE consumer = %s",
                             (consumer,))
        self.engine.dispose()


@pytest.fixture
def my(mysql_url: str) -> Iterator[My]:
    database = My(mysql_url)
    try:
        yield database
    finally:
        database.clean()


@pytest.fixture
def sql(mysql_url: str) -> Iterator[SqlConnector]:
    connector = SqlConnector(SystemSpec(url=mysql_url, name="my"))
    yield connector
    connector.close()


def install(sql: SqlConnector, tables: Sequence[str], consumer: str) -> list[mycapture.Installed]:
    with sql.capture_setup() as conn:
        return mycapture.install(conn, tables, consumer, mycapture.schema_of(sql.system))


def remove(sql: SqlConnector, tables: Sequence[str], consumer: str) -> list[mycapture.Removed]:
    with sql.capture_setup() as conn:
        return mycapture.remove(conn, tables, consumer, mycapture.schema_of(sql.system))


def start(consumer: str, key: str | None = "id") -> dict[str, Any]:
    """The first cursor, as a broadcast passes it."""
    return {"key": key, "cdc": True, "consumer": consumer}


def read(sql: SqlConnector, table: str, cursor: dict[str, Any], limit: int = 2000,
         fields: Sequence[str] | None = None) -> tuple[list[Change], dict[str, Any]]:
    found, after = sql.changes(table, json.loads(json.dumps(cursor)), fields, limit)
    stored: dict[str, Any] = json.loads(json.dumps(after))
    return found, stored


def read_all(sql: SqlConnector, table: str, cursor: dict[str, Any]) -> tuple[list[Change], dict[str, Any]]:
    """Read until nothing is left, each cursor handed back as if recorded."""
    changes: list[Change] = []
    while True:
        found, cursor = read(sql, table, cursor, limit=2)
        changes += found
        if not found:
            return changes, cursor


def summary(changes: Sequence[Change]) -> list[tuple[ChangeKind, Any]]:
    return [(c.kind, c.key) for c in changes]


# -- install ----------------------------------------------------------------------------------------


def test_install_is_idempotent_and_follows_new_columns(my: My, sql: SqlConnector) -> None:
    table, consumer = my.table("mycap_items"), my.consumer("idempotent")
    [first] = install(sql, [table], consumer)
    assert (first.table, first.key, first.trigger, first.registered) == \
        (f"test.{table}", ("id",), "created", True)
    [again] = install(sql, [table], consumer)
    assert (again.trigger, again.registered) == ("kept", False)
    assert my.triggers(table) == 3
    my.execute(f"INSERT INTO {table} (id, name) VALUES (1, 'one')")
    assert my.pending(consumer) == 1, "one capture row per change, however often installed"

    my.execute(f"ALTER TABLE {table} ADD COLUMN extra varchar(10)")
    [regenerated] = install(sql, [table], consumer)
    assert regenerated.trigger == "replaced" and my.triggers(table) == 3
    my.execute(f"UPDATE {table} SET extra = 'new' WHERE id = 1")
    found, _ = read(sql, table, start(consumer))
    assert summary(found) == [(ChangeKind.CREATED, 1), (ChangeKind.UPDATED, 1)]
    assert found[1].record["extra"] == "new", "the new column is captured"


def test_a_table_without_a_primary_key_is_refused(my: My, sql: SqlConnector) -> None:
    keyed, loose = my.table("mycap_keyed"), my.table("mycap_loose", "id integer, name text")
    consumer = my.consumer("no key")
    with pytest.raises(SpecError, match="has no primary key"):
        install(sql, [keyed, loose], consumer)
    assert my.triggers(keyed) == 0 and my.triggers(loose) == 0, "all or nothing"
    with pytest.raises(SpecError, match="no table 'mycap_nowhere"):
        install(sql, [f"mycap_nowhere_{my.suffix}"], consumer)


# -- reading ----------------------------------------------------------------------------------------


def test_changes_come_in_order_typed_as_a_read_types_them(my: My, sql: SqlConnector) -> None:
    table, consumer = my.table("mycap_typed"), my.consumer("typed")
    install(sql, [table], consumer)
    my.execute(f"INSERT INTO {table} VALUES (1, 'one', 12.50, true, '2024-05-01 10:00:00.250', NULL)")
    my.execute(f"INSERT INTO {table} VALUES (2, 'two', 1234567890.12, false, NULL, 'x')")
    my.execute(f"UPDATE {table} SET name = 'uno', amount = 0.10 WHERE id = 1")
    my.execute(f"UPDATE {table} SET name = 'uno' WHERE id = 1")  # changes nothing: not captured
    my.execute(f"UPDATE {table} SET name = 'UNO' WHERE id = 1")  # a change, whatever the collation
    my.execute(f"DELETE FROM {table} WHERE id = 2")

    found, cursor = read(sql, table, start(consumer))
    assert summary(found) == [(ChangeKind.CREATED, 1), (ChangeKind.CREATED, 2),
                              (ChangeKind.UPDATED, 1), (ChangeKind.UPDATED, 1),
                              (ChangeKind.DELETED, 2)]
    assert found[0].record == {"id": 1, "name": "one", "amount": Decimal("12.50"), "active": 1,
                               "seen_at": dt.datetime(2024, 5, 1, 10, 0, 0, 250000), "note": None}
    assert found[1].record["amount"] == Decimal("1234567890.12")
    assert found[1].record["active"] == 0 and found[1].record["note"] == "x"
    assert found[2].record["name"] == "uno" and found[2].record["amount"] == Decimal("0.10")
    assert found[3].record["name"] == "UNO"
    assert found[4].record == {"id": 2}, "a delete carries the key"
    # What the capture gives is what a read of the table gives, types included.
    [row] = sql.get(table, "id", [1]).values()
    assert found[3].record == row and [type(v) for v in found[3].record.values()] == \
        [type(v) for v in row.values()]
    assert [int(c.version or 0) for c in found] == sorted(int(c.version or 0) for c in found)
    assert all(c.at is not None and c.at.tzinfo is not None for c in found)
    assert all(c.system == "my" and c.object == table for c in found)
    assert cursor == {**start(consumer), "recorded": [int(c.version or 0) for c in found]}


def test_other_types_come_back_as_a_read_gives_them(my: My, sql: SqlConnector) -> None:
    table = my.table(
        "mycap_types", "id varchar(20) PRIMARY KEY, stamp timestamp(6) NULL, day date, "
        "span time, raw varbinary(16), blob_ blob, ratio double, count_ bigint, "
        "kind enum('a', 'b'), label varchar(20) CHARACTER SET utf8mb4")
    consumer = my.consumer("types")
    install(sql, [table], consumer)
    my.execute(f"INSERT INTO {table} VALUES ('k''1', '2024-05-01 10:00:00.123456', '2024-02-29', "
               "'30:15:01', x'00ff10', x'deadbeef', 0.1 + 0.2e0, 9007199254740993, 'b', 'héllo ✓')")
    my.execute(f"INSERT INTO {table} (id) VALUES ('nulls')")
    found, _ = read(sql, table, start(consumer))
    assert summary(found) == [(ChangeKind.CREATED, "k'1"), (ChangeKind.CREATED, "nulls")]
    read_back = sql.get(table, "id", ["k'1", "nulls"])
    for change in found:
        expected = read_back[change.key]
        assert change.record == expected
        assert [type(v) for v in change.record.values()] == [type(v) for v in expected.values()]
    assert found[0].record["raw"] == b"\x00\xff\x10"
    assert found[0].record["stamp"] == dt.datetime(2024, 5, 1, 10, 0, 0, 123456)


def test_a_primary_key_change_is_a_delete_and_an_insert(my: My, sql: SqlConnector) -> None:
    table, consumer = my.table("mycap_rekey"), my.consumer("rekey")
    my.execute(f"INSERT INTO {table} (id, name) VALUES (1, 'one')")
    install(sql, [table], consumer)
    my.execute(f"UPDATE {table} SET id = 10, name = 'ten' WHERE id = 1")
    found, _ = read(sql, table, start(consumer))
    assert summary(found) == [(ChangeKind.DELETED, 1), (ChangeKind.CREATED, 10)]
    assert found[0].record == {"id": 1}
    assert found[1].record["name"] == "ten"


def test_fields_and_limit(my: My, sql: SqlConnector) -> None:
    table, consumer = my.table("mycap_fields"), my.consumer("fields")
    install(sql, [table], consumer)
    my.execute(f"INSERT INTO {table} (id, name, amount) VALUES (1, 'n1', 1), (2, 'n2', 2), "
               "(3, 'n3', 3), (4, 'n4', 4), (5, 'n5', 5)")
    my.execute(f"DELETE FROM {table} WHERE id = 5")
    first, cursor = read(sql, table, start(consumer), limit=4, fields=["name"])
    assert [c.record for c in first] == [{"name": f"n{i}", "id": i} for i in range(1, 5)]
    rest, cursor = read(sql, table, cursor, limit=4, fields=["name"])
    assert summary(rest) == [(ChangeKind.CREATED, 5), (ChangeKind.DELETED, 5)]
    assert read(sql, table, cursor)[0] == []


def test_two_consumers_each_get_every_change(my: My, sql: SqlConnector) -> None:
    table = my.table("mycap_shared")
    one, two = my.consumer("first"), my.consumer("second")
    install(sql, [table], one)
    install(sql, [table], two)
    my.execute(f"INSERT INTO {table} (id, name) VALUES (1, 'a'), (2, 'b')")
    my.execute(f"UPDATE {table} SET name = 'B' WHERE id = 2")
    my.execute(f"DELETE FROM {table} WHERE id = 1")
    expected = [(ChangeKind.CREATED, 1), (ChangeKind.CREATED, 2), (ChangeKind.UPDATED, 2),
                (ChangeKind.DELETED, 1)]
    first, _ = read_all(sql, table, start(one))
    assert summary(first) == expected
    assert my.pending(one) == 0 and my.pending(two) == 4, "consuming one leaves the other's alone"
    second, _ = read_all(sql, table, start(two))
    assert summary(second) == expected


def test_a_late_commit_is_not_skipped(my: My, sql: SqlConnector) -> None:
    table, consumer = my.table("mycap_late"), my.consumer("late")
    install(sql, [table], consumer)
    with my.engine.connect() as late:
        late.exec_driver_sql(f"INSERT INTO {table} (id, name) VALUES (1, 'late')")  # the lower seq
        my.execute(f"INSERT INTO {table} (id, name) VALUES (2, 'early')")
        found, cursor = read(sql, table, start(consumer))
        assert summary(found) == [(ChangeKind.CREATED, 2)]
        late.commit()
    found, cursor = read(sql, table, cursor)
    assert summary(found) == [(ChangeKind.CREATED, 1)]
    assert read(sql, table, cursor)[0] == []


def test_rows_stay_until_a_cursor_listing_them_comes_back(my: My, sql: SqlConnector) -> None:
    table, consumer = my.table("mycap_crash"), my.consumer("crash")
    install(sql, [table], consumer)
    my.execute(f"INSERT INTO {table} (id, name) VALUES (1, 'a'), (2, 'b')")
    stored = start(consumer)
    found, lost = read(sql, table, stored)  # the engine dies before storing `lost`
    again, cursor = read(sql, table, stored)
    assert [c.version for c in again] == [c.version for c in found] and len(found) == 2
    assert lost == cursor
    assert my.pending(consumer) == 2, "nothing is consumed before its cursor comes back"
    my.execute(f"UPDATE {table} SET name = 'c' WHERE id = 1")
    after, cursor = read(sql, table, cursor)
    assert summary(after) == [(ChangeKind.UPDATED, 1)], "recorded changes are not read again"
    assert my.pending(consumer) == 1
    assert read(sql, table, cursor)[0] == []
    assert my.pending(consumer) == 0


def test_remove_drops_the_triggers_only_when_the_last_consumer_leaves(my: My, sql: SqlConnector) -> None:
    table = my.table("mycap_remove")
    one, two = my.consumer("leaving"), my.consumer("staying")
    install(sql, [table], one)
    install(sql, [table], two)
    my.execute(f"INSERT INTO {table} (id, name) VALUES (1, 'a')")

    [gone] = remove(sql, [table], one)
    assert (gone.unregistered, gone.dropped_rows, gone.consumers_left, gone.trigger_dropped) == \
        (True, 1, 1, False)
    assert my.triggers(table) == 3 and my.pending(one) == 0 and my.pending(two) == 1
    with sql.capture_setup() as conn:
        states = [s for s in mycapture.status(conn, "test") if s.table == f"test.{table}"]
    assert [(s.consumer, s.installed, s.pending) for s in states] == [(two, True, 1)]
    with pytest.raises(SpecError, match="not installed for consumer"):
        read(sql, table, start(one))

    [last] = remove(sql, [table], two)
    assert (last.unregistered, last.consumers_left, last.trigger_dropped) == (True, 0, True)
    assert my.triggers(table) == 0
    my.execute(f"INSERT INTO {table} (id, name) VALUES (2, 'b')")
    assert my.pending(one) == my.pending(two) == 0


def test_reading_needs_an_install_and_a_capturing_database(my: My, sql: SqlConnector,
                                                           tmp_path: Path) -> None:
    table = my.table("mycap_bare")
    with pytest.raises(SpecError, match="run `patchbay cdc install"):
        read(sql, table, start(my.consumer("never installed")))
    with sqlite3.connect(tmp_path / "lite.db") as db:
        db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY)")
    lite = SqlConnector(SystemSpec(url=f"sqlite:///{tmp_path / 'lite.db'}", name="lite"))
    try:
        with pytest.raises(SpecError, match=r"needs one of them; use trigger\.changes: poll"):
            lite.changes("items", start("anyone"))
    finally:
        lite.close()


# -- a broadcast from a captured table -------------------------------------------------------------


def broadcast_file(directory: Path, mysql_url: str, name: str, source: str) -> Path:
    path = directory / "capture.yaml"
    path.write_text(f"""
systems:
  db: "{mysql_url}"
  lite: sqlite:///mirror.db
integrations:
  - name: {name}
    pattern: broadcast
    source: {{system: db, object: {source}, key: id}}
    trigger: {{changes: cdc, poll_seconds: 0.2}}
    destinations:
      - {{name: mirror, system: lite, object: items, key: id}}
    options: {{batch_size: 3, max_attempts: 3, backoff_seconds: 0, backoff_max_seconds: 0}}
""")
    with sqlite3.connect(directory / "mirror.db") as db:
        db.execute("CREATE TABLE IF NOT EXISTS items (id INTEGER PRIMARY KEY, name TEXT, "
                   "amount NUMERIC, active INTEGER, seen_at TIMESTAMP, note TEXT)")
    return path


def test_a_broadcast_carries_deletes_from_mariadb_to_sqlite(
        my: My, sql: SqlConnector, tmp_path: Path, mysql_url: str) -> None:
    source = my.table("mycap_source")
    name = my.consumer("Items - broadcast")
    install(sql, [source], name)
    path = broadcast_file(tmp_path, mysql_url, name, source)
    state = tmp_path / "state"

    def mirror() -> list[tuple[Any, ...]]:
        with sqlite3.connect(tmp_path / "mirror.db") as db:
            return db.execute("SELECT id, name, amount, active, seen_at, note FROM items "
                              "ORDER BY id").fetchall()

    my.execute(f"INSERT INTO {source} VALUES (1, 'one', 10.50, true, '2024-05-01 10:00:00', NULL), "
               "(2, 'two', 20, false, NULL, 'n'), (3, 'three', NULL, NULL, NULL, NULL), "
               "(4, 'four', 4.25, true, '2024-05-02 11:30:00', 'gone soon')")
    my.execute(f"UPDATE {source} SET amount = 11.75 WHERE id = 1")
    my.execute(f"DELETE FROM {source} WHERE id = 4")
    first = run_integration(path, state=state)
    assert (first["changes"], first["dead"]) == (6, 0)
    assert [row[:2] for row in mirror()] == [(1, "one"), (2, "two"), (3, "three")]
    assert mirror()[0][2] == 11.75

    my.execute(f"UPDATE {source} SET name = 'TWO', active = true WHERE id = 2")
    my.execute(f"DELETE FROM {source} WHERE id = 1")
    my.execute(f"INSERT INTO {source} VALUES (5, 'five', 5.05, false, '2024-06-01 08:00:00', NULL)")
    my.execute(f"UPDATE {source} SET id = 6 WHERE id = 3")
    second = run_integration(path, state=state)
    assert (second["changes"], second["dead"]) == (5, 0)
    assert [row[:4] for row in mirror()] == [(2, "TWO", 20, 1), (5, "five", 5.05, 0),
                                             (6, "three", None, None)]

    again = run_integration(path, state=state)
    assert again["changes"] == 0 and again["delivered"] == 0, "nothing is read or delivered twice"
    with sqlite3.connect(state / "state.db") as db:
        deliveries = db.execute("SELECT record_key, operation FROM patchbay_outbox").fetchall()
    assert len(deliveries) == 11, "one delivery per change"
    assert [op for _, op in deliveries].count("delete") == 3
    assert my.pending(name) == 0, "each poll consumes what the previous one recorded"


# -- the command line --------------------------------------------------------------------------------


def test_cdc_install_status_and_remove_commands(my: My, tmp_path: Path, mysql_url: str,
                                                 patchbay: Any) -> None:
    source = my.table("mycap_cli")
    name = my.consumer("Cli - broadcast")
    path = broadcast_file(tmp_path, mysql_url, name, source)

    installed = patchbay("cdc", "install", path, cwd=tmp_path)
    assert installed.code == 0, installed.log
    assert f"capturing test.{source}" in installed.stdout and "trigger created" in installed.stdout
    again = patchbay("cdc", "install", path, "--integration", name, cwd=tmp_path)
    assert again.code == 0 and "trigger kept" in again.stdout and "already registered" in again.stdout
    my.execute(f"INSERT INTO {source} (id, name) VALUES (1, 'a'), (2, 'b')")

    shown = patchbay("cdc", "status", path, cwd=tmp_path)
    assert shown.code == 0, shown.log
    assert "installed" in shown.stdout and f"test.{source}" in shown.stdout
    assert " 2 " in shown.stdout, shown.log

    removed = patchbay("cdc", "remove", path, cwd=tmp_path)
    assert removed.code == 0, removed.log
    assert "2 pending changes dropped" in removed.stdout and "trigger dropped" in removed.stdout
    assert my.triggers(source) == 0
    after = patchbay("cdc", "status", path, cwd=tmp_path)
    assert "not installed" in after.stdout, after.log

    loose = my.table("mycap_cli_loose", "id integer, name text")
    refused = patchbay("cdc", "install", broadcast_file(tmp_path, mysql_url, name, loose),
                       cwd=tmp_path)
    assert refused.code == 2 and "has no primary key" in refused.stderr, refused.log
