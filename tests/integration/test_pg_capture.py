"""PostgreSQL change capture (connectors/pgcapture.py) against a real database.

Every test reads through its own consumer name and its own tables (uuid suffixes), and
removes what it registered afterwards; the shared capture tables stay, as other tests and
runs use them. Cursors go through JSON between calls, as the engine stores them.
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

import psycopg
import pytest

from patchbay import run_integration
from patchbay.connectors.sql import SqlConnector, pgcapture
from patchbay.errors import RetriableError, SpecError
from patchbay.model import Change, ChangeKind
from patchbay.spec import SystemSpec

COLUMNS = ("id integer PRIMARY KEY, name text NOT NULL, amount numeric(12, 2), active boolean, "
           "seen_at timestamp, note text")


class Pg:
    """The test's view of the database: its tables, its consumers, cleaned up afterwards."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.suffix = uuid.uuid4().hex[:10]
        self.tables: list[str] = []
        self.schemas: list[str] = []
        self.roles: list[str] = []
        self.consumers: list[str] = []

    def execute(self, statement: str, params: Sequence[Any] | None = None) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(statement, params)

    def rows(self, statement: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.url, autocommit=True) as conn:
            return conn.execute(statement, params).fetchall()

    def table(self, prefix: str, columns: str = COLUMNS) -> str:
        name = f"{prefix}_{self.suffix}"
        self.execute(f"CREATE TABLE {name} ({columns})")
        self.tables.append(name)
        return name

    def schema(self, prefix: str, create: bool = True) -> str:
        name = f"{prefix}_{self.suffix}"
        if create:
            self.execute(f'CREATE SCHEMA "{name}"')
        self.schemas.append(name)
        return name

    def role(self, prefix: str) -> str:
        name = f"{prefix}_{self.suffix}"
        self.execute(f"CREATE ROLE {name}")
        self.roles.append(name)
        return name

    def consumer(self, label: str) -> str:
        name = f"{label} {self.suffix}"
        self.consumers.append(name)
        return name

    def triggers(self, table: str) -> int:
        return int(self.rows("SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass(%s) "
                             "AND tgname = 'patchbay_capture'", (table,))[0][0])

    def pending(self, consumer: str) -> int:
        return int(self.rows("SELECT count(*) FROM public.patchbay_capture WHERE consumer = %s",
                             (consumer,))[0][0])

    def clean(self) -> None:
        for table in reversed(self.tables):
            self.execute(f"DROP TABLE IF EXISTS {table}")
        for schema in self.schemas:
            self.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        for role in self.roles:
            self.execute(f"DROP OWNED BY {role}")
            self.execute(f"DROP ROLE {role}")
        if self.rows("SELECT to_regclass('public.patchbay_capture_consumers')")[0][0] is not None:
            for consumer in self.consumers:
                self.execute("DELETE FROM public.patchbay_capture WHERE consumer = %s", (consumer,))
                self.execute("DELETE FROM public.patchbay_capture_consumers WHERE consumer = %s",
                             (consumer,))


@pytest.fixture
def pg(pg_url: str) -> Iterator[Pg]:
    database = Pg(pg_url)
    try:
        yield database
    finally:
        database.clean()


@pytest.fixture
def sql(pg_url: str) -> Iterator[SqlConnector]:
    connector = SqlConnector(SystemSpec(url=pg_url, name="pg"))
    yield connector
    connector.close()


def install(sql: SqlConnector, tables: Sequence[str], consumer: str) -> list[pgcapture.Installed]:
    with sql.capture_setup() as conn:
        return pgcapture.install(conn, tables, consumer, pgcapture.schema_of(sql.system))


def remove(sql: SqlConnector, tables: Sequence[str], consumer: str) -> list[pgcapture.Removed]:
    with sql.capture_setup() as conn:
        return pgcapture.remove(conn, tables, consumer, pgcapture.schema_of(sql.system))


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


def test_install_is_idempotent(pg: Pg, sql: SqlConnector) -> None:
    table, consumer = pg.table("cap_items"), pg.consumer("idempotent")
    [first] = install(sql, [table], consumer)
    assert (first.table, first.key, first.trigger, first.registered) == \
        (f"public.{table}", ("id",), "created", True)
    [again] = install(sql, [table], consumer)
    assert (again.trigger, again.registered) == ("kept", False)
    assert pg.triggers(table) == 1
    assert pg.rows("SELECT count(*) FROM public.patchbay_capture_consumers WHERE consumer = %s",
                   (consumer,)) == [(1,)]
    pg.execute(f"INSERT INTO {table} (id, name) VALUES (1, 'one')")
    assert pg.pending(consumer) == 1, "one capture row per change, however often installed"


def test_a_table_without_a_primary_key_is_refused(pg: Pg, sql: SqlConnector) -> None:
    keyed, loose = pg.table("cap_keyed"), pg.table("cap_loose", "id integer, name text")
    consumer = pg.consumer("no key")
    with pytest.raises(SpecError, match="has no primary key"):
        install(sql, [keyed, loose], consumer)
    assert pg.triggers(keyed) == 0 and pg.triggers(loose) == 0, "all or nothing"
    assert pg.rows("SELECT count(*) FROM public.patchbay_capture_consumers WHERE consumer = %s",
                   (consumer,)) == [(0,)]


def test_a_missing_table_is_refused(pg: Pg, sql: SqlConnector) -> None:
    with pytest.raises(SpecError, match="no table 'cap_nowhere"):
        install(sql, [f"cap_nowhere_{pg.suffix}"], pg.consumer("missing"))


def test_writers_need_no_rights_on_the_capture_tables(pg: Pg, sql: SqlConnector) -> None:
    table, consumer = pg.table("cap_rights"), pg.consumer("rights")
    install(sql, [table], consumer)
    writer = pg.role("cap_writer")
    pg.execute(f"GRANT INSERT, UPDATE, DELETE, SELECT ON {table} TO {writer}")
    with psycopg.connect(pg.url) as conn:
        conn.execute(f"SET ROLE {writer}")
        conn.execute(f"INSERT INTO {table} (id, name) VALUES (1, 'by the application')")
    found, _ = read(sql, table, start(consumer))
    assert summary(found) == [(ChangeKind.CREATED, 1)]


# -- reading ----------------------------------------------------------------------------------------


def test_inserts_updates_and_deletes_come_in_order_with_typed_values(pg: Pg, sql: SqlConnector) -> None:
    table, consumer = pg.table("cap_typed"), pg.consumer("typed")
    install(sql, [table], consumer)
    pg.execute(f"INSERT INTO {table} VALUES (1, 'one', 12.50, true, '2024-05-01 10:00:00.250', NULL)")
    pg.execute(f"INSERT INTO {table} VALUES (2, 'two', 1234567890.12, false, NULL, 'x')")
    pg.execute(f"UPDATE {table} SET name = 'uno', amount = 0.10 WHERE id = 1")
    pg.execute(f"UPDATE {table} SET name = 'uno' WHERE id = 1")  # changes nothing: not captured
    pg.execute(f"DELETE FROM {table} WHERE id = 2")

    found, cursor = read(sql, table, start(consumer))
    assert summary(found) == [(ChangeKind.CREATED, 1), (ChangeKind.CREATED, 2),
                              (ChangeKind.UPDATED, 1), (ChangeKind.DELETED, 2)]
    assert found[0].record == {"id": 1, "name": "one", "amount": Decimal("12.50"), "active": True,
                               "seen_at": dt.datetime(2024, 5, 1, 10, 0, 0, 250000), "note": None}
    assert found[1].record["amount"] == Decimal("1234567890.12")
    assert found[1].record["active"] is False and found[1].record["note"] == "x"
    assert found[2].record["name"] == "uno" and found[2].record["amount"] == Decimal("0.10")
    assert found[3].record == {"id": 2}, "a delete carries the key"
    assert [int(c.version or 0) for c in found] == sorted(int(c.version or 0) for c in found)
    assert all(c.at is not None and c.at.tzinfo is not None for c in found)
    assert all(c.system == "pg" and c.object == table for c in found)
    assert cursor == {**start(consumer), "recorded": [int(c.version or 0) for c in found]}


def test_fields_and_limit(pg: Pg, sql: SqlConnector) -> None:
    table, consumer = pg.table("cap_fields"), pg.consumer("fields")
    install(sql, [table], consumer)
    pg.execute(f"INSERT INTO {table} (id, name, amount) SELECT i, 'n' || i, i FROM generate_series(1, 5) i")
    pg.execute(f"DELETE FROM {table} WHERE id = 5")
    first, cursor = read(sql, table, start(consumer), limit=4, fields=["name"])
    assert [c.record for c in first] == [{"name": f"n{i}", "id": i} for i in range(1, 5)]
    rest, cursor = read(sql, table, cursor, limit=4, fields=["name"])
    assert summary(rest) == [(ChangeKind.CREATED, 5), (ChangeKind.DELETED, 5)]
    assert read(sql, table, cursor)[0] == []
    with pytest.raises(SpecError, match="has no column 'nmae'; did you mean 'name'"):
        read(sql, table, cursor, fields=["nmae"])


def test_a_primary_key_change_is_a_delete_and_an_upsert(pg: Pg, sql: SqlConnector) -> None:
    table, consumer = pg.table("cap_rekey"), pg.consumer("rekey")
    pg.execute(f"INSERT INTO {table} (id, name) VALUES (1, 'one')")
    install(sql, [table], consumer)
    pg.execute(f"UPDATE {table} SET id = 10, name = 'ten' WHERE id = 1")
    found, _ = read(sql, table, start(consumer))
    assert summary(found) == [(ChangeKind.DELETED, 1), (ChangeKind.CREATED, 10)]
    assert found[0].record == {"id": 1}
    assert found[1].record["name"] == "ten"


def test_two_consumers_each_get_every_change(pg: Pg, sql: SqlConnector) -> None:
    table = pg.table("cap_shared")
    one, two = pg.consumer("first"), pg.consumer("second")
    install(sql, [table], one)
    install(sql, [table], two)
    pg.execute(f"INSERT INTO {table} (id, name) VALUES (1, 'a'), (2, 'b')")
    pg.execute(f"DELETE FROM {table} WHERE id = 1")
    expected = [(ChangeKind.CREATED, 1), (ChangeKind.CREATED, 2), (ChangeKind.DELETED, 1)]
    first, _ = read_all(sql, table, start(one))
    assert summary(first) == expected
    assert pg.pending(one) == 0 and pg.pending(two) == 3, "consuming one leaves the other's alone"
    second, _ = read_all(sql, table, start(two))
    assert summary(second) == expected


def test_remove_drops_the_trigger_only_when_the_last_consumer_leaves(pg: Pg, sql: SqlConnector) -> None:
    table = pg.table("cap_remove")
    one, two = pg.consumer("leaving"), pg.consumer("staying")
    install(sql, [table], one)
    install(sql, [table], two)
    pg.execute(f"INSERT INTO {table} (id, name) VALUES (1, 'a')")

    [gone] = remove(sql, [table], one)
    assert (gone.unregistered, gone.dropped_rows, gone.consumers_left, gone.trigger_dropped) == \
        (True, 1, 1, False)
    assert pg.triggers(table) == 1 and pg.pending(one) == 0 and pg.pending(two) == 1
    with sql.capture_setup() as conn:
        states = [s for s in pgcapture.status(conn) if s.table == f"public.{table}"]
    assert [(s.consumer, s.installed, s.pending) for s in states] == [(two, True, 1)]
    with pytest.raises(SpecError, match="not installed for consumer"):
        read(sql, table, start(one))

    [last] = remove(sql, [table], two)
    assert (last.unregistered, last.consumers_left, last.trigger_dropped) == (True, 0, True)
    assert pg.triggers(table) == 0
    pg.execute(f"INSERT INTO {table} (id, name) VALUES (2, 'b')")
    assert pg.pending(one) == pg.pending(two) == 0
    [again] = remove(sql, [table], two)
    assert not again.unregistered and not again.trigger_dropped


def test_the_capture_of_a_dropped_table_can_be_removed(pg: Pg, sql: SqlConnector) -> None:
    table, consumer = pg.table("cap_dropped"), pg.consumer("dropped")
    install(sql, [table], consumer)
    pg.execute(f"INSERT INTO {table} (id, name) VALUES (1, 'a')")
    pg.execute(f"DROP TABLE {table}")
    with sql.capture_setup() as conn:
        [state] = [s for s in pgcapture.status(conn) if s.consumer == consumer]
    assert (state.table, state.installed, state.pending) == (f"public.{table}", False, 1)
    [done] = remove(sql, [table], consumer)
    assert (done.table, done.unregistered, done.dropped_rows, done.trigger_dropped) == \
        (f"public.{table}", True, 1, False)


def test_a_late_commit_is_not_skipped(pg: Pg, sql: SqlConnector) -> None:
    table, consumer = pg.table("cap_late"), pg.consumer("late")
    install(sql, [table], consumer)
    with psycopg.connect(pg.url) as late:
        late.execute(f"INSERT INTO {table} (id, name) VALUES (1, 'late')")  # takes the lower seq
        pg.execute(f"INSERT INTO {table} (id, name) VALUES (2, 'early')")
        found, cursor = read(sql, table, start(consumer))
        assert summary(found) == [(ChangeKind.CREATED, 2)]
        late.commit()
    found, cursor = read(sql, table, cursor)
    assert summary(found) == [(ChangeKind.CREATED, 1)]
    assert read(sql, table, cursor)[0] == []


def test_rows_stay_until_a_cursor_listing_them_comes_back(pg: Pg, sql: SqlConnector) -> None:
    table, consumer = pg.table("cap_crash"), pg.consumer("crash")
    install(sql, [table], consumer)
    pg.execute(f"INSERT INTO {table} (id, name) VALUES (1, 'a'), (2, 'b')")
    stored = start(consumer)
    found, lost = read(sql, table, stored)  # the engine dies before storing `lost`
    again, cursor = read(sql, table, stored)
    assert [c.version for c in again] == [c.version for c in found] and len(found) == 2
    assert lost == cursor
    pg.execute(f"UPDATE {table} SET name = 'c' WHERE id = 1")
    after, cursor = read(sql, table, cursor)
    assert summary(after) == [(ChangeKind.UPDATED, 1)], "recorded changes are not read again"
    assert read(sql, table, cursor)[0] == []


def test_schema_qualified_names_and_a_capture_schema_of_its_own(pg: Pg, pg_url: str) -> None:
    data, capture = pg.schema("cap_data"), pg.schema("cap_meta", create=False)
    table = f"{data}.Mixed Case"
    pg.execute(f"CREATE TABLE \"{data}\".\"Mixed Case\" (\"Id\" integer PRIMARY KEY, \"it's\" text)")
    connector = SqlConnector(SystemSpec(url=pg_url, name="pg", options={"capture_schema": capture}))
    consumer = pg.consumer("qualified")
    try:
        [done] = install(connector, [table], consumer)
        assert done.table == f'{data}."Mixed Case"' and done.key == ("Id",)
        pg.execute(f'INSERT INTO "{data}"."Mixed Case" VALUES (7, \'seven\')')
        pg.execute(f'DELETE FROM "{data}"."Mixed Case"')
        found, _ = read(connector, table, start(consumer, key=None))
        assert summary(found) == [(ChangeKind.CREATED, 7), (ChangeKind.DELETED, 7)]
        assert found[0].record == {"Id": 7, "it's": "seven"}
        assert pg.rows(f'SELECT count(*) FROM "{capture}".patchbay_capture')[0][0] == 2
        assert pg.pending(consumer) == 0, "nothing in the default capture schema"
    finally:
        connector.close()


def test_reading_needs_an_install_and_postgresql(pg: Pg, sql: SqlConnector, tmp_path: Path) -> None:
    table = pg.table("cap_bare")
    with pytest.raises(SpecError, match="run `patchbay cdc install"):
        read(sql, table, start(pg.consumer("never installed")))
    with sqlite3.connect(tmp_path / "lite.db") as db:
        db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY)")
    lite = SqlConnector(SystemSpec(url=f"sqlite:///{tmp_path / 'lite.db'}", name="lite"))
    try:
        with pytest.raises(SpecError, match=r"is not PostgreSQL, MySQL or MariaDB: change capture "
                           r"needs one of them; use trigger\.changes: poll"):
            lite.changes("items", start("anyone"))
    finally:
        lite.close()


def test_a_lost_connection_is_retriable(pg: Pg, sql: SqlConnector) -> None:
    table, consumer = pg.table("cap_lost"), pg.consumer("lost")
    install(sql, [table], consumer)
    read(sql, table, start(consumer))
    with sql.engine.connect() as conn:  # the pooled connection the next read will take
        pid = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
    pg.execute("SELECT pg_terminate_backend(%s)", (pid,))
    with pytest.raises(RetriableError, match="lost its connection"):
        read(sql, table, start(consumer))
    unreachable = SqlConnector(SystemSpec(url="postgresql://nobody@127.0.0.1:1/none", name="gone"))
    try:
        with pytest.raises(RetriableError, match="cannot reach system 'gone'"):
            unreachable.changes(table, start(consumer))
    finally:
        unreachable.close()


# -- a broadcast from a captured table -------------------------------------------------------------


def broadcast_file(directory: Path, pg_url: str, name: str, source: str, mirror: str) -> Path:
    (directory / "out").mkdir(exist_ok=True)
    path = directory / "capture.yaml"
    path.write_text(f"""
systems:
  db: {pg_url}
  out: {{url: "file:out", options: {{fields: [id, name, amount, active, seen_at, note]}}}}
integrations:
  - name: {name}
    pattern: broadcast
    source: {{system: db, object: {source}, key: id}}
    trigger: {{changes: cdc, poll_seconds: 0.2}}
    destinations:
      - {{name: mirror, system: db, object: {mirror}, key: id}}
      - {{name: lines, system: out, object: items.jsonl, key: id}}
    options: {{batch_size: 3, max_attempts: 3, backoff_seconds: 0, backoff_max_seconds: 0}}
""")
    return path


def jsonl(directory: Path) -> list[dict[str, Any]]:
    text = (directory / "out" / "items.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def outbox(state: Path) -> list[tuple[str, str, str, str]]:
    with sqlite3.connect(state / "state.db") as db:
        return db.execute("SELECT destination, record_key, version, operation FROM patchbay_outbox "
                          "ORDER BY id").fetchall()


def test_a_broadcast_follows_a_captured_table_deletes_included(
        pg: Pg, sql: SqlConnector, tmp_path: Path, pg_url: str) -> None:
    source, mirror = pg.table("cap_source"), pg.table("cap_mirror")
    name = pg.consumer("Items - broadcast")
    install(sql, [source], name)
    path = broadcast_file(tmp_path, pg_url, name, source, mirror)
    state = tmp_path / "state"

    def rows(table: str) -> list[tuple[Any, ...]]:
        return pg.rows(f"SELECT * FROM {table} ORDER BY id")

    pg.execute(f"INSERT INTO {source} VALUES (1, 'one', 10.50, true, '2024-05-01 10:00:00', NULL), "
               "(2, 'two', 20, false, NULL, 'n'), (3, 'three', NULL, NULL, NULL, NULL), "
               "(4, 'four', 4.25, true, '2024-05-02 11:30:00', 'gone soon')")
    pg.execute(f"UPDATE {source} SET amount = 11.75 WHERE id = 1")
    pg.execute(f"DELETE FROM {source} WHERE id = 4")
    first = run_integration(path, state=state)
    assert (first["changes"], first["dead"]) == (6, 0)
    assert rows(mirror) == rows(source)

    pg.execute(f"UPDATE {source} SET name = 'TWO', active = true WHERE id = 2")
    pg.execute(f"DELETE FROM {source} WHERE id = 1")
    pg.execute(f"INSERT INTO {source} VALUES (5, 'five', 5.05, false, '2024-06-01 08:00:00', NULL)")
    pg.execute(f"UPDATE {source} SET id = 6 WHERE id = 3")
    second = run_integration(path, state=state)
    assert (second["changes"], second["dead"]) == (5, 0)
    assert rows(mirror) == rows(source) == [
        (2, "TWO", Decimal("20.00"), True, None, "n"), (5, "five", Decimal("5.05"), False,
                                                        dt.datetime(2024, 6, 1, 8), None),
        (6, "three", None, None, None, None)]
    # The file's fields are declared without types: values keep theirs (JSON has no
    # timestamps, and decimals are written as text, for their precision).
    columns = ("id", "name", "amount", "active", "seen_at", "note")
    assert sorted(jsonl(tmp_path), key=lambda line: int(line["id"])) == [
        {c: v.isoformat() if isinstance(v, dt.datetime) else str(v) if isinstance(v, Decimal)
         else v for c, v in zip(columns, row, strict=True)} for row in rows(source)]

    again = run_integration(path, state=state)
    assert again["changes"] == 0 and again["delivered"] == 0, "nothing is read or delivered twice"
    deliveries = outbox(state)
    assert len(deliveries) == 2 * 11, "one delivery per destination per change"
    assert len({(d, key, version) for d, key, version, _ in deliveries}) == len(deliveries)
    assert [op for d, _, _, op in deliveries if d == "lines"].count("delete") == 3
    assert pg.pending(name) == 0, "each poll consumes what the previous one recorded"


# -- the command line --------------------------------------------------------------------------------


def test_cdc_install_status_and_remove_commands(pg: Pg, tmp_path: Path, pg_url: str,
                                                 patchbay: Any) -> None:
    source, mirror = pg.table("cap_cli"), pg.table("cap_cli_mirror")
    name = pg.consumer("Cli - broadcast")
    path = broadcast_file(tmp_path, pg_url, name, source, mirror)

    installed = patchbay("cdc", "install", path, cwd=tmp_path)
    assert installed.code == 0, installed.log
    assert f"capturing public.{source}" in installed.stdout and "trigger created" in installed.stdout
    again = patchbay("cdc", "install", path, "--integration", name, cwd=tmp_path)
    assert again.code == 0 and "trigger kept" in again.stdout and "already registered" in again.stdout
    pg.execute(f"INSERT INTO {source} (id, name) VALUES (1, 'a'), (2, 'b')")

    shown = patchbay("cdc", "status", path, cwd=tmp_path)
    assert shown.code == 0, shown.log
    assert "installed" in shown.stdout and f"public.{source}" in shown.stdout
    assert " 2 " in shown.stdout, shown.log

    removed = patchbay("cdc", "remove", path, cwd=tmp_path)
    assert removed.code == 0, removed.log
    assert "2 pending changes dropped" in removed.stdout and "trigger dropped" in removed.stdout
    assert pg.triggers(source) == 0
    after = patchbay("cdc", "status", path, cwd=tmp_path)
    assert "not installed" in after.stdout, after.log

    wrong = patchbay("cdc", "install", path, "--integration", "Nobody", cwd=tmp_path)
    assert wrong.code == 2 and "has no integration 'Nobody'" in wrong.stderr, wrong.log


def test_cdc_commands_explain_what_they_cannot_do(pg: Pg, tmp_path: Path, pg_url: str,
                                                  patchbay: Any) -> None:
    loose = pg.table("cap_cli_loose", "id integer, name text")
    name = pg.consumer("Loose - broadcast")
    path = broadcast_file(tmp_path, pg_url, name, loose, loose)
    refused = patchbay("cdc", "install", path, cwd=tmp_path)
    assert refused.code == 2 and "has no primary key" in refused.stderr, refused.log
    assert "Traceback" not in refused.output

    missing = broadcast_file(tmp_path, pg_url, name, f"cap_nowhere_{pg.suffix}", loose)
    absent = patchbay("cdc", "install", missing, cwd=tmp_path)
    assert absent.code == 2 and f"has no table 'cap_nowhere_{pg.suffix}'" in absent.stderr, absent.log

    down = broadcast_file(tmp_path, "postgresql://nobody@127.0.0.1:1/none", name, loose, loose)
    unreachable = patchbay("cdc", "install", down, cwd=tmp_path)
    assert unreachable.code == 1 and "cannot reach system 'db'" in unreachable.stderr, unreachable.log

    (tmp_path / "lite.yaml").write_text(f"""
systems:
  lite: sqlite:///lite.db
  out: {{url: "file:out", options: {{fields: [id]}}}}
integrations:
  - name: {name}
    pattern: broadcast
    source: {{system: lite, object: items, key: id}}
    trigger: {{changes: cdc}}
    destinations: [{{name: lines, system: out, object: items.jsonl, key: id}}]
""")
    lite = patchbay("cdc", "install", tmp_path / "lite.yaml", cwd=tmp_path)
    assert lite.code == 2 and "is not PostgreSQL" in lite.stderr, lite.log


def test_a_named_sync_installs_the_capture_of_its_database_participants(
        pg: Pg, tmp_path: Path, pg_url: str, patchbay: Any) -> None:
    table = pg.table("cap_cli_sync")
    name = pg.consumer("Both - sync")
    (tmp_path / "sync.yaml").write_text(f"""
systems:
  db: {pg_url}
  lite: sqlite:///lite.db
integrations:
  - name: {name}
    pattern: sync
    trigger: {{changes: cdc}}
    participants: [{{name: db, system: db}}, {{name: lite, system: lite}}]
    objects:
      - name: item
        fields: [name]
        participants:
          db: {{object: {table}, key: id, fields: [name]}}
          lite: {{object: items, key: id, fields: [name]}}
""")
    # The other participant follows a capture of its own (Salesforce CDC, say): skipped.
    installed = patchbay("cdc", "install", tmp_path / "sync.yaml", "--integration", name,
                         cwd=tmp_path)
    assert installed.code == 0, installed.log
    assert f"capturing public.{table}" in installed.stdout
    assert "system 'lite', which is not PostgreSQL" in installed.stderr, installed.log
    removed = patchbay("cdc", "remove", tmp_path / "sync.yaml", "--integration", name,
                       cwd=tmp_path)
    assert removed.code == 0 and pg.triggers(table) == 0, removed.log
