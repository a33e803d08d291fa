"""SqlConnector.changes against real PostgreSQL, MariaDB and SQLite databases.

Changes are polled by a watermark column; the cursor carries the configuration, the position
and keyed digests of the (key, watermark value, values) of the rows already delivered. Every
cursor is passed through JSON between calls, as the engine stores it. Tables get a unique
suffix and are dropped afterwards.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

from patchbay.connectors.base import Capability
from patchbay.connectors.sql import SqlConnector
from patchbay.connectors.sql.changes import row_digest, seal, to_json
from patchbay.errors import SpecError
from patchbay.model import Change, ChangeKind
from patchbay.spec import SystemSpec

T0 = dt.datetime(2024, 5, 1, 10, 0, 0)


KEY = b"the state's key of cursor digests"

ZERO = {"watermark": "updated_at", "key": "id", "overlap_seconds": 0}
"""A starting cursor with no overlap window, whatever the database's default."""


def at(seconds: float) -> dt.datetime:
    return T0 + dt.timedelta(seconds=seconds)


@pytest.fixture(params=["postgresql", "mariadb", "sqlite"])
def db(request: pytest.FixtureRequest, tmp_path: Path, database_of: Any) -> Iterator[Any]:
    with database_of(request, tmp_path) as database:
        yield database


@pytest.fixture
def sql(db: Any) -> Iterator[SqlConnector]:
    connector = SqlConnector(SystemSpec(url=db.url, name="src"))
    yield connector
    connector.close()


def stamp_type(db: Any) -> str:
    return {"postgresql": "TIMESTAMP", "mysql": "DATETIME(6)"}.get(db.dialect, "DATETIME")


def items(db: Any) -> str:
    table: str = db.create("chg", f"id INTEGER PRIMARY KEY, name VARCHAR(40), updated_at {stamp_type(db)}, "
                            f"created_at {stamp_type(db)}")
    return table


def insert(db: Any, table: str, rows: Sequence[dict[str, Any]]) -> None:
    """Insert through the reflected column types, so SQLite stores timestamps as SQLAlchemy does."""
    reflected = sa.Table(table, sa.MetaData(), autoload_with=db.engine)
    with db.engine.begin() as conn:
        conn.execute(sa.insert(reflected), list(rows))


def touch(db: Any, table: str, key: int, when: dt.datetime, name: str) -> None:
    reflected = sa.Table(table, sa.MetaData(), autoload_with=db.engine)
    with db.engine.begin() as conn:
        conn.execute(sa.update(reflected).where(reflected.c.id == key)
                     .values(updated_at=when, name=name))


def roundtrip(cursor: dict[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(json.dumps(cursor))
    return loaded


def poll(sql: SqlConnector, table: str, cursor: dict[str, Any], limit: int = 2000,
         fields: Sequence[str] | None = None) -> tuple[list[Change], dict[str, Any]]:
    changes, after = sql.changes(table, cursor, fields=fields, limit=limit, digest_key=KEY)
    return changes, roundtrip(after)


def drain(sql: SqlConnector, table: str, cursor: dict[str, Any], limit: int
          ) -> tuple[list[Change], dict[str, Any]]:
    """Poll until a call returns nothing; every call must stay within `limit`."""
    found: list[Change] = []
    for _ in range(1000):
        changes, cursor = poll(sql, table, cursor, limit)
        assert len(changes) <= limit
        if not changes:
            return found, cursor
        found += changes
    raise AssertionError("changes never ran dry")


def keys(changes: Sequence[Change]) -> list[Any]:
    return [c.key for c in changes]


def pairs(db: Any, table: str, cursor: dict[str, Any]) -> list[list[Any]]:
    """The [key, watermark value] of the table's rows as they are now that the cursor
    remembers: it holds only keyed digests of them."""
    reflected = sa.Table(table, sa.MetaData(), autoload_with=db.engine)
    key, watermark = reflected.c[cursor["key"]], reflected.c[cursor["watermark"]]
    with db.engine.connect() as conn:
        rows = conn.execute(sa.select(key, watermark).where(watermark.is_not(None))
                            .order_by(watermark, key)).all()
    held = {entry.partition(":")[0] for entry in cursor["seen"]}
    return [[k, to_json(w)] for k, w in rows if seal(KEY, k, w, None)[0] in held]


def shown(db: Any, table: str, cursor: dict[str, Any]) -> dict[str, Any]:
    """The cursor with the pairs it remembers in place of their digests."""
    return {**cursor, "seen": pairs(db, table, cursor)}


# -- tests ----------------------------------------------------------------------------------------


def test_sql_connector_declares_changes() -> None:
    assert Capability.CHANGES in SqlConnector.capabilities


def test_first_call_returns_everything_in_watermark_order(db: Any, sql: SqlConnector) -> None:
    table = items(db)
    insert(db, table, [
        {"id": 1, "name": "late", "updated_at": at(3), "created_at": at(0)},
        {"id": 2, "name": "first", "updated_at": at(1), "created_at": at(1)},
        {"id": 3, "name": "tie-b", "updated_at": at(2), "created_at": at(0)},
        {"id": 4, "name": "tie-a", "updated_at": at(2), "created_at": at(2)},
        {"id": 5, "name": "never", "updated_at": None, "created_at": at(0)},
    ])

    changes, cursor = poll(sql, table, {"watermark": "updated_at", "key": "id"})

    assert keys(changes) == [2, 3, 4, 1]  # by watermark, then key; a null watermark is never seen
    assert [c.at for c in changes] == [at(1), at(2), at(2), at(3)]
    assert all(c.kind is ChangeKind.UPDATED and c.system == "src" and c.object == table
               for c in changes)
    assert changes[0].record == {"id": 2, "name": "first", "updated_at": at(1), "created_at": at(1)}
    assert shown(db, table, cursor) == {"watermark": "updated_at", "key": "id",
                             "overlap_seconds": 0 if db.dialect == "postgresql" else 60,
                             "position": at(3).isoformat(), "taken": 1,
                             "late_from": at(3 if db.dialect == "postgresql" else -57).isoformat(),
                             "seen": [[1, at(3).isoformat()]] if db.dialect == "postgresql" else
                             [[2, at(1).isoformat()], [3, at(2).isoformat()],
                              [4, at(2).isoformat()], [1, at(3).isoformat()]]}
    # Keyed digests of each row's key and watermark value, and of those and its values.
    assert all(len(entry) == 33 and entry[16] == ":" for entry in cursor["seen"])

    again, same = poll(sql, table, cursor)
    assert again == [] and same == cursor


def test_key_defaults_to_primary_key_and_fields_narrow_the_record(db: Any, sql: SqlConnector) -> None:
    table = items(db)
    insert(db, table, [{"id": 1, "name": "a", "updated_at": at(1), "created_at": at(0)}])

    changes, cursor = poll(sql, table, {"watermark": "updated_at"}, fields=["name"])

    assert [c.record for c in changes] == [{"name": "a", "id": 1, "updated_at": at(1)}]
    assert cursor["key"] == "id"


def test_created_column_tells_created_from_updated(db: Any, sql: SqlConnector) -> None:
    table = items(db)
    insert(db, table, [
        {"id": 1, "name": "new", "updated_at": at(1), "created_at": at(1)},
        {"id": 2, "name": "edited", "updated_at": at(2), "created_at": at(0)},
    ])

    changes, cursor = poll(sql, table, {"watermark": "updated_at", "key": "id",
                                        "created": "created_at"}, fields=["name"])

    assert [(c.key, c.kind) for c in changes] == [(1, ChangeKind.CREATED), (2, ChangeKind.UPDATED)]
    assert changes[0].record == {"name": "new", "id": 1, "updated_at": at(1)}
    assert cursor["created"] == "created_at"


def test_a_group_sharing_one_timestamp_splits_across_calls(db: Any, sql: SqlConnector) -> None:
    table = items(db)
    insert(db, table, [{"id": 1, "name": "before", "updated_at": at(1), "created_at": at(0)}])
    insert(db, table, [{"id": i, "name": f"bulk {i}", "updated_at": at(5), "created_at": at(0)}
                       for i in range(2, 25)])
    insert(db, table, [{"id": 99, "name": "after", "updated_at": at(9), "created_at": at(0)}])

    found, cursor = drain(sql, table, ZERO, limit=5)

    assert keys(found) == [1, *range(2, 25), 99]  # each exactly once, in order
    assert cursor["position"] == at(9).isoformat()
    assert pairs(db, table, cursor) == [[99, at(9).isoformat()]]


def test_a_partial_page_keeps_the_rest_of_its_group(db: Any, sql: SqlConnector) -> None:
    table = items(db)
    insert(db, table, [{"id": i, "name": "x", "updated_at": at(5), "created_at": at(0)}
                       for i in range(1, 8)])

    first, cursor = poll(sql, table, ZERO, limit=3)

    assert keys(first) == [1, 2, 3]
    assert cursor["position"] == at(5).isoformat()
    assert pairs(db, table, cursor) == [[1, at(5).isoformat()], [2, at(5).isoformat()],
                                        [3, at(5).isoformat()]]
    rest, cursor = poll(sql, table, cursor, limit=3)
    assert keys(rest) == [4, 5, 6]
    last, cursor = poll(sql, table, cursor, limit=3)
    assert keys(last) == [7]
    assert len(pairs(db, table, cursor)) == 7


def test_a_row_of_the_position_gone_between_pages_costs_no_other_row(db: Any,
                                                                     sql: SqlConnector) -> None:
    """The cursor counts the position's rows it has read, not naming the last: one of them
    gone makes the next page start a row late, and the late window reads the row skipped."""
    table = items(db)
    insert(db, table, [{"id": i, "name": "x", "updated_at": at(5), "created_at": at(0)}
                       for i in range(1, 8)])
    first, cursor = poll(sql, table, ZERO, limit=3)
    assert keys(first) == [1, 2, 3] and cursor["taken"] == 3
    db.execute(f"DELETE FROM {table} WHERE id = 1")

    found, cursor = drain(sql, table, cursor, limit=3)

    assert sorted(keys(found)) == [4, 5, 6, 7]  # each once
    assert poll(sql, table, cursor)[0] == []


def test_a_cursor_holds_no_key_or_value_of_a_row(db: Any, sql: SqlConnector) -> None:
    """What a cursor remembers of the rows of its window is keyed digests: the rows' keys and
    values are in it neither as they are nor encoded, and only the key it was made with
    recognises them (another delivers the window's rows again)."""
    table = db.create("priv", f"code VARCHAR(40) PRIMARY KEY, phone VARCHAR(40), "
                              f"updated_at {stamp_type(db)}")
    rows = [{"code": f"patient-{i:04d}", "phone": f"+61 3 5000 {i:04d}", "updated_at": at(i)}
            for i in range(1, 6)]
    insert(db, table, rows)
    start = {"watermark": "updated_at", "key": "code", "overlap_seconds": 3600}

    found, cursor = poll(sql, table, start)

    assert len(found) == 5 and len(cursor["seen"]) == 5
    text = json.dumps(cursor)
    for row in rows:
        for value in (row["code"], row["phone"]):
            for encoded in (value, value.upper(), value.encode().hex(),
                            base64.b64encode(value.encode()).decode()):
                assert encoded not in text
    assert poll(sql, table, cursor)[0] == []
    again, _ = sql.changes(table, cursor, digest_key=b"another state's key")
    assert [c.key for c in again] == [row["code"] for row in rows]


def test_a_cursor_stored_before_its_digests_were_keyed_goes_on(db: Any, sql: SqlConnector) -> None:
    """A cursor of an earlier patchbay names the rows it remembers ([key, watermark value,
    digest of the values]) and the last row read (after_key): it is read as it is, nothing
    it delivered comes again, a second change sharing a timestamp still does, and the cursor
    after it is stored the new way."""
    table = items(db)
    rows = [{"id": i, "name": f"bulk {i}", "updated_at": at(5), "created_at": at(0)}
            for i in range(1, 7)]
    insert(db, table, rows)
    # Rows 1 to 3 were delivered by the earlier patchbay (3 without a digest: older still).
    old = {"watermark": "updated_at", "key": "id", "overlap_seconds": 60,
           "position": at(5).isoformat(), "after_key": 3, "late_from": at(-55).isoformat(),
           "seen": [[1, at(5).isoformat(), row_digest(rows[0])],
                    [2, at(5).isoformat(), row_digest(rows[1])], [3, at(5).isoformat()]]}
    touch(db, table, 2, at(5), "second change, same stamp")

    found, cursor = poll(sql, table, old)

    assert sorted(keys(found)) == [2, 4, 5, 6]
    assert next(c.version for c in found if c.key == 2).startswith(f"{at(5).isoformat()}#")
    assert "after_key" not in cursor and cursor["taken"] == 6
    assert all(isinstance(entry, str) for entry in cursor["seen"])
    assert pairs(db, table, cursor) == [[i, at(5).isoformat()] for i in range(1, 7)]
    assert poll(sql, table, cursor)[0] == []


def test_a_row_committed_late_with_the_cursor_timestamp_is_delivered(db: Any, sql: SqlConnector) -> None:
    table = items(db)
    insert(db, table, [{"id": 1, "name": "a", "updated_at": at(1), "created_at": at(0)},
                       {"id": 2, "name": "b", "updated_at": at(2), "created_at": at(0)}])
    _, cursor = poll(sql, table, ZERO)

    insert(db, table, [{"id": 3, "name": "late", "updated_at": at(2), "created_at": at(0)}])
    changes, cursor = poll(sql, table, cursor)

    assert keys(changes) == [3]
    assert pairs(db, table, cursor) == [[2, at(2).isoformat()], [3, at(2).isoformat()]]
    assert poll(sql, table, cursor)[0] == []


def test_an_overlap_window_catches_late_commits_without_repeating(db: Any, sql: SqlConnector) -> None:
    table = items(db)
    insert(db, table, [{"id": 1, "name": "old", "updated_at": at(0), "created_at": at(0)},
                       {"id": 2, "name": "in window", "updated_at": at(9.4), "created_at": at(0)},
                       {"id": 3, "name": "in window", "updated_at": at(9.7), "created_at": at(0)},
                       {"id": 4, "name": "top", "updated_at": at(10), "created_at": at(0)}])
    start = {"watermark": "updated_at", "key": "id", "overlap_seconds": 1}
    first, cursor = poll(sql, table, start)
    assert keys(first) == [1, 2, 3, 4]
    # Only what lies within one second of the position is remembered.
    assert pairs(db, table, cursor) == [[2, at(9.4).isoformat()], [3, at(9.7).isoformat()],
                              [4, at(10).isoformat()]]
    assert cursor["overlap_seconds"] == 1

    # A transaction that began before the last poll commits now, stamped before the position.
    insert(db, table, [{"id": 5, "name": "late", "updated_at": at(9.5), "created_at": at(0)}])
    changes, cursor = poll(sql, table, cursor)

    assert keys(changes) == [5]  # and not 2, 3, 4, which are inside the window but unchanged
    assert changes[0].at == at(9.5)
    assert cursor["position"] == at(10).isoformat()
    assert poll(sql, table, cursor)[0] == []

    # Without the overlap window the same late commit is missed; SQLite's default window
    # (a minute) catches it. (PostgreSQL's default asks which transactions are open: see
    # test_by_default_a_transaction_committing_late_on_postgresql_is_caught.)
    _, plain = poll(sql, table, ZERO)
    _, default = poll(sql, table, {"watermark": "updated_at", "key": "id"})
    insert(db, table, [{"id": 6, "name": "late", "updated_at": at(9.8), "created_at": at(0)}])
    assert poll(sql, table, plain)[0] == []
    assert keys(poll(sql, table, default)[0]) == ([] if db.dialect == "postgresql" else [6])
    assert keys(poll(sql, table, cursor)[0]) == [6]


def test_a_row_updated_inside_the_window_is_delivered_again(db: Any, sql: SqlConnector) -> None:
    table = items(db)
    insert(db, table, [{"id": 1, "name": "a", "updated_at": at(9.2), "created_at": at(0)},
                       {"id": 2, "name": "b", "updated_at": at(10), "created_at": at(0)}])
    _, cursor = poll(sql, table, {"watermark": "updated_at", "key": "id", "overlap_seconds": 1})

    touch(db, table, 1, at(9.6), "a again")  # moved, yet still before the position
    changes, cursor = poll(sql, table, cursor)

    assert [(c.key, c.record["name"], c.at) for c in changes] == [(1, "a again", at(9.6))]
    assert poll(sql, table, cursor)[0] == []


def test_an_updated_row_is_delivered_again(db: Any, sql: SqlConnector) -> None:
    table = items(db)
    insert(db, table, [{"id": 1, "name": "a", "updated_at": at(1), "created_at": at(0)},
                       {"id": 2, "name": "b", "updated_at": at(2), "created_at": at(0)}])
    _, cursor = poll(sql, table, ZERO)

    touch(db, table, 1, at(30), "a, edited")
    changes, cursor = poll(sql, table, cursor)

    assert [(c.key, c.record["name"], c.at) for c in changes] == [(1, "a, edited", at(30))]
    assert cursor["position"] == at(30).isoformat()
    assert pairs(db, table, cursor) == [[1, at(30).isoformat()]]
    assert poll(sql, table, cursor)[0] == []


@pytest.mark.parametrize("column", ["TIMESTAMPTZ", "TIMESTAMP"])
def test_by_default_a_transaction_committing_late_on_postgresql_is_caught(
        column: str, request: pytest.FixtureRequest, tmp_path: Path, open_db: Any,
        pg_url: str) -> None:
    """A transaction stamps a row with now() (its start), rows stamped later commit and are
    polled, then the transaction commits: the next poll, with the default settings, has it."""
    db = open_db("postgresql", request, tmp_path)
    sql = SqlConnector(SystemSpec(url=db.url, name="src"))
    try:
        table = db.create("late", f"id INTEGER PRIMARY KEY, name VARCHAR(40), "
                                  f"updated_at {column} NOT NULL DEFAULT now()")
        db.execute(f"INSERT INTO {table} (id, name) VALUES (1, 'first')")
        first, cursor = poll(sql, table, {"watermark": "updated_at", "key": "id"})
        assert keys(first) == [1]
        with psycopg.connect(pg_url) as slow:
            slow.execute(f"UPDATE {table} SET name = 'committed late', updated_at = now() "
                         f"WHERE id = 1")
            db.execute(f"INSERT INTO {table} (id, name) VALUES (2, 'second'), (3, 'third')")
            middle, cursor = poll(sql, table, cursor)
            assert keys(middle) == [2, 3]
            # Held back while `slow` is open: the next poll reads from its start.
            assert dt.datetime.fromisoformat(cursor["late_from"]) < \
                dt.datetime.fromisoformat(cursor["position"])
        late, cursor = poll(sql, table, cursor)  # `slow` has committed

        assert [(c.key, c.record["name"]) for c in late] == [(1, "committed late")]
        assert poll(sql, table, cursor)[0] == []
    finally:
        sql.close()
        db.drop_all()


def test_by_default_an_id_committed_late_on_postgresql_is_caught(
        request: pytest.FixtureRequest, tmp_path: Path, open_db: Any, pg_url: str) -> None:
    """A transaction takes id 2 and commits after id 3 was committed and polled."""
    db = open_db("postgresql", request, tmp_path)
    sql = SqlConnector(SystemSpec(url=db.url, name="src"))
    try:
        table = db.create("late_ids", "id INTEGER GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                                      "name VARCHAR(40)")
        db.execute(f"INSERT INTO {table} (name) VALUES ('first')")
        first, cursor = poll(sql, table, {"watermark": "id", "key": "id"})
        assert keys(first) == [1]
        with psycopg.connect(pg_url) as slow:
            slow.execute(f"INSERT INTO {table} (name) VALUES ('committed late')")
            db.execute(f"INSERT INTO {table} (name) VALUES ('third')")
            middle, cursor = poll(sql, table, cursor)
            assert keys(middle) == [3]
        late, cursor = poll(sql, table, cursor)  # `slow` has committed

        assert [(c.key, c.record["name"]) for c in late] == [(2, "committed late")]
        assert poll(sql, table, cursor)[0] == []
    finally:
        sql.close()
        db.drop_all()


def test_a_user_that_cannot_see_other_sessions_reads_a_minute_further_back(
        request: pytest.FixtureRequest, tmp_path: Path, open_db: Any, pg_url: str,
        caplog: pytest.LogCaptureFixture) -> None:
    """pg_read_all_data reads every table but sees no other user's transaction."""
    db = open_db("postgresql", request, tmp_path)
    sql = SqlConnector(SystemSpec(url=db.url, name="src"))

    def reader_role(dbapi: Any, _record: Any) -> None:
        dbapi.execute("SET ROLE pg_read_all_data")
        dbapi.commit()  # a SET undone with its transaction otherwise

    sa.event.listen(sql.engine, "connect", reader_role)
    try:
        table = db.create("hidden", "id INTEGER PRIMARY KEY, name VARCHAR(40), "
                                    "updated_at TIMESTAMPTZ NOT NULL DEFAULT now()")
        with psycopg.connect(pg_url) as slow:
            slow.execute(f"INSERT INTO {table} (id, name) VALUES (1, 'committed late')")
            time.sleep(0.05)
            db.execute(f"INSERT INTO {table} (id, name) VALUES (2, 'second')")
            with caplog.at_level(logging.WARNING, logger="patchbay.connectors.sql"):
                first, cursor = poll(sql, table, {"watermark": "updated_at", "key": "id"})
            assert keys(first) == [2]
            # It sees no open transaction, so the horizon is its own time less a minute.
            behind = dt.datetime.fromisoformat(cursor["position"]) - \
                dt.datetime.fromisoformat(cursor["late_from"])
            assert dt.timedelta(seconds=50) < behind <= dt.timedelta(seconds=60)
        late, cursor = poll(sql, table, cursor)

        assert [(c.key, c.record["name"]) for c in late] == [(1, "committed late")]
        assert [r.getMessage() for r in caplog.records] == [
            "system 'src': the polling user cannot see other users' transactions (grant it "
            "pg_read_all_stats); re-reading 60.0 s behind the ones it sees"]
    finally:
        sql.close()
        db.drop_all()


def test_a_second_change_sharing_its_timestamp_is_delivered(db: Any, sql: SqlConnector) -> None:
    table = items(db)
    insert(db, table, [{"id": 1, "name": "first", "updated_at": at(5), "created_at": at(0)}])
    first, cursor = poll(sql, table, {"watermark": "updated_at", "key": "id"})
    assert first[0].version is None  # the version is the timestamp

    touch(db, table, 1, at(5), "second")  # the same updated_at: the clock ticked too slowly
    second, cursor = poll(sql, table, cursor)

    [entry] = cursor["seen"]
    digest = entry.partition(":")[2]
    assert [(c.key, c.record["name"], c.at, c.version) for c in second] == [
        (1, "second", at(5), f"{at(5).isoformat()}#{digest}")]  # a message id of its own
    assert poll(sql, table, cursor)[0] == []
    touch(db, table, 1, at(5), "first")  # and back again
    assert [c.record["name"] for c in poll(sql, table, cursor)[0]] == ["first"]


def test_an_increasing_id_watermark(db: Any, sql: SqlConnector) -> None:
    table = db.create("ids", "id INTEGER PRIMARY KEY, name VARCHAR(40)")
    insert(db, table, [{"id": i, "name": f"n{i}"} for i in range(1, 8)])

    found, cursor = drain(sql, table, {"watermark": "id", "key": "id"}, limit=3)

    assert keys(found) == list(range(1, 8))
    assert all(c.at is None and c.kind is ChangeKind.UPDATED for c in found)
    # (PostgreSQL also keeps what it knows of open transactions, which depends on the other
    # sessions of the database, and what it remembers depends on them: see
    # test_by_default_an_id_committed_late_on_postgresql_is_caught.)
    assert {k: v for k, v in shown(db, table, cursor).items() if k not in ("open_since", "marks", "seen")} \
        == {"watermark": "id", "key": "id", "overlap_seconds": 0, "position": 7, "taken": 1,
            "late_from": 7 if db.dialect == "sqlite" else cursor["late_from"]}
    remembered = pairs(db, table, cursor)
    assert [7, 7] in remembered if db.dialect == "postgresql" else remembered == [[7, 7]]

    insert(db, table, [{"id": 8, "name": "n8"}, {"id": 9, "name": "n9"}])
    changes, cursor = poll(sql, table, cursor)
    assert keys(changes) == [8, 9]
    assert cursor["position"] == 9

    # An id taken before 9 but committed after it is missed without an overlap, and caught
    # with one (in ids); "created": "id" makes every new row CREATED.
    db.execute(f"DELETE FROM {table} WHERE id = 8")  # as if its transaction were still open
    plain = {"watermark": "id", "key": "id"}
    _, plain = poll(sql, table, plain)
    wide_start = {"watermark": "id", "key": "id", "overlap_seconds": 3, "created": "id"}
    everything, wide = poll(sql, table, wide_start)
    assert keys(everything) == [1, 2, 3, 4, 5, 6, 7, 9]
    assert all(c.kind is ChangeKind.CREATED for c in everything)
    assert pairs(db, table, wide) == [[6, 6], [7, 7], [9, 9]]
    insert(db, table, [{"id": 8, "name": "n8, committed late"}, {"id": 10, "name": "n10"}])
    assert keys(poll(sql, table, plain)[0]) == [10]
    changes, wide = poll(sql, table, wide)
    assert keys(changes) == [8, 10]
    assert sorted(pairs(db, table, wide)) == [[7, 7], [8, 8], [9, 9], [10, 10]]
    assert poll(sql, table, wide)[0] == []


def test_a_timezone_aware_watermark_on_postgresql(request: pytest.FixtureRequest, tmp_path: Path,
                                                  open_db: Any) -> None:
    db = open_db("postgresql", request, tmp_path)
    sql = SqlConnector(SystemSpec(url=db.url, name="src"))
    try:
        table = db.create("tz", "id INTEGER PRIMARY KEY, updated_at TIMESTAMPTZ")
        moment = dt.datetime(2024, 5, 1, 10, tzinfo=dt.UTC)
        insert(db, table, [{"id": 1, "updated_at": moment}, {"id": 2, "updated_at": moment}])

        first, cursor = poll(sql, table, {"watermark": "updated_at", "key": "id"}, limit=1)
        insert(db, table, [{"id": 3, "updated_at": moment - dt.timedelta(milliseconds=300)}])
        rest, cursor = poll(sql, table, {**cursor, "overlap_seconds": 0.5})

        assert keys(first) + keys(rest) == [1, 3, 2]
        assert dt.datetime.fromisoformat(cursor["position"]) == moment
        assert rest[-1].at == moment
    finally:
        sql.close()
        db.drop_all()


def test_sqlite_timestamps_stored_without_a_fraction(tmp_path: Path) -> None:
    """SQLite compares timestamps as text: '10:00:00' sorts before '10:00:00.000000'."""
    url = f"sqlite:///{tmp_path / 'plain.sqlite'}"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (id INTEGER PRIMARY KEY, updated_at DATETIME)"))
        conn.execute(sa.text("INSERT INTO t VALUES (1, '2024-05-01 10:00:00'), "
                             "(2, '2024-05-01 10:00:00.250000')"))
    sql = SqlConnector(SystemSpec(url=url, name="src"))
    try:
        first, cursor = poll(sql, "t", {"watermark": "updated_at", "key": "id"}, limit=1)
        assert keys(first) == [1] and cursor["position"] == "2024-05-01T10:00:00"
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO t VALUES (3, '2024-05-01 10:00:00')"))
        rest, cursor = poll(sql, "t", cursor)
        assert keys(rest) == [3, 2]
        with engine.begin() as conn:
            conn.execute(sa.text("INSERT INTO t VALUES (4, '2024-05-01 10:00:00.25')"))
        assert keys(poll(sql, "t", cursor)[0]) == [4]
    finally:
        sql.close()
        engine.dispose()


@pytest.fixture(params=["postgresql", "mariadb", "sqlite"])
def every_db(request: pytest.FixtureRequest, tmp_path: Path, database_of: Any) -> Iterator[Any]:
    with database_of(request, tmp_path) as database:
        yield database


def counting_rows_read(sql: SqlConnector) -> list[int]:
    """A counter of the rows the connector's queries hand back from the database: the
    driver's row count (PostgreSQL, MariaDB), or every row SQLite's driver builds."""
    read = [0]
    if sql.dialect == "sqlite":
        def counted(dbapi: Any, _record: Any) -> None:
            def row(_cursor: Any, values: tuple[Any, ...]) -> tuple[Any, ...]:
                read[0] += 1
                return values
            dbapi.row_factory = row
        sql.engine.dispose()
        sa.event.listen(sql.engine, "connect", counted)
    else:
        def after(_conn: Any, cursor: Any, statement: str, *_: Any) -> None:
            if statement.lstrip().upper().startswith("SELECT") and cursor.rowcount > 0:
                read[0] += cursor.rowcount
        sa.event.listen(sql.engine, "after_cursor_execute", after)
    return read


def test_a_burst_is_read_about_once_and_a_late_commit_in_it_still_caught(every_db: Any) -> None:
    """2,000 rows stamped within ten seconds, inside the overlap window (a minute on SQLite
    and MariaDB), drained 100 at a time: each page re-reading the window read ten times
    the rows; the late window is now read once the drain has caught up."""
    db = every_db
    sql = SqlConnector(SystemSpec(url=db.url, name="src"))
    try:
        table = items(db)
        burst = [{"id": i, "name": f"n{i}", "updated_at": at(i / 200), "created_at": at(0)}
                 for i in range(2, 2002)]
        insert(db, table, burst)
        read = counting_rows_read(sql)

        found, cursor = drain(sql, table, {"watermark": "updated_at", "key": "id"}, limit=100)

        assert keys(found) == list(range(2, 2002))  # each once, in order
        assert read[0] <= 3 * len(burst), read[0]
        # A row stamped inside the burst, committed after the drain: still caught, once.
        insert(db, table, [{"id": 1, "name": "late", "updated_at": at(5), "created_at": at(0)}])
        late, cursor = poll(sql, table, cursor, limit=100)
        assert keys(late) == ([] if db.dialect == "postgresql" else [1])
        assert poll(sql, table, cursor, limit=100)[0] == []
    finally:
        sql.close()


def test_bad_cursors_are_refused(db: Any, sql: SqlConnector) -> None:
    table = items(db)
    with pytest.raises(SpecError, match="watermark column"):
        sql.changes(table, None)
    with pytest.raises(SpecError, match="did you mean 'overlap_seconds'"):
        sql.changes(table, {"watermark": "updated_at", "overlap_second": 1})
    with pytest.raises(SpecError, match="has no column 'updated'"):
        sql.changes(table, {"watermark": "updated"})
    with pytest.raises(SpecError, match="overlap_seconds"):
        sql.changes(table, {"watermark": "name", "overlap_seconds": 1})
    with pytest.raises(ValueError, match="limit"):
        sql.changes(table, {"watermark": "updated_at"}, limit=0)
