"""Columnar reads of SQL tables give what row reads give.

On PostgreSQL and SQLite a columnar read runs its query through an ADBC driver, which hands
over Arrow batches, instead of streaming rows through the Python driver. These tests hold
that path to the row path, against real databases: the same values (decimals to the last
digit, floats to the last bit, instants in the session's zone, nulls apart from empty
text), the same Arrow types (but for a numeric's precision, which is the declared one, and
a column of nulls only, which keeps its declared type), the same scope, fields, order and
positions; and the row path taking over where the driver cannot give what it gives: a value
Python or Arrow cannot hold, and SQLite's dynamically typed values of another class than
their column's.
"""

from __future__ import annotations

import datetime as dt
import math
import resource
import sqlite3
import threading
import uuid
from collections.abc import Iterable, Iterator, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
import pyarrow as pa
import pytest

from patchbay.connectors.sql import SqlConnector
from patchbay.connectors.sql import arrow as arrow_reads
from patchbay.demo.legacy_crm import build_legacy_crm
from patchbay.model import Page, Position
from patchbay.scope import bind, to_predicate
from patchbay.spec import Scope, SystemSpec


@pytest.fixture
def pg(request: pytest.FixtureRequest, tmp_path: Path, open_db: Any) -> Iterator[Any]:
    database = open_db("postgresql", request, tmp_path)
    try:
        yield database
    finally:
        database.drop_all()


@pytest.fixture
def lite(request: pytest.FixtureRequest, tmp_path: Path, open_db: Any) -> Iterator[Any]:
    database = open_db("sqlite", request, tmp_path)
    try:
        yield database
    finally:
        database.drop_all()
        database.engine.dispose()


@pytest.fixture(params=["postgresql", "sqlite"])
def either(request: pytest.FixtureRequest, tmp_path: Path, database_of: Any) -> Iterator[Any]:
    """Each database the ADBC path serves."""
    with database_of(request, tmp_path) as database:
        yield database


def connector(url: str, zone: str | None = None, **settings: str) -> SqlConnector:
    """A connector whose sessions have this time zone and these settings."""
    options = ([f"-c TimeZone={zone}"] if zone else []) + [f"-c {k}={v}" for k, v in settings.items()]
    if options:
        url += ("&" if "?" in url else "?") + "options=" + quote(" ".join(options))
    return SqlConnector(SystemSpec(url=url, name="src"))


def arrow_read(sql: SqlConnector, *args: Any, **kwargs: Any) -> list[Page]:
    """A columnar read, failing if any of it is left to the row path."""
    return list(arrow_pages(sql, *args, **kwargs))


def arrow_pages(sql: SqlConnector, *args: Any, **kwargs: Any) -> Iterator[Page]:
    """The same, page by page."""

    def row_path(*_: Any) -> Iterator[Page]:
        raise AssertionError("the read fell back to the row path")

    sql._read_rows = row_path  # type: ignore[method-assign]
    try:
        yield from sql.read(*args, columnar=True, **kwargs)
    finally:
        del sql._read_rows


def row_read(sql: SqlConnector, table: str, page_size: int, key: str | None = "id",
             fields: Sequence[str] | None = None) -> list[Page]:
    """The columnar read of the row path alone."""
    return list(sql._read_rows(table, None, key, fields, None, page_size, True))


def rows_taken_over(sql: SqlConnector) -> list[Position]:
    """Spy on the row path: the positions it is asked to go on from."""
    taken: list[Position] = []
    row_path = sql._read_rows

    def spy(object: str, scope: Any, key: Any, fields: Any, after: Any, *rest: Any) -> Iterator[Page]:
        taken.append(after)
        return row_path(object, scope, key, fields, after, *rest)

    sql._read_rows = spy  # type: ignore[method-assign]
    return taken


def table_of(pages: Iterable[Page]) -> pa.Table:
    tables = []
    for page in pages:
        assert page.table is not None, "a columnar page"
        tables.append(page.table)
    return pa.concat_tables(tables)


def records_of(pages: Iterable[Page]) -> list[dict[str, Any]]:
    return [record for page in pages for record in page.records]


def plain(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records compared strictly: a decimal by its digits (12.5 is not 12.50), an instant by
    its text in its zone, a float by its bits, text apart from bytes."""

    def value(v: Any) -> Any:
        if isinstance(v, Decimal):
            return ("decimal", str(v))
        if isinstance(v, dt.datetime):
            return ("datetime", v.isoformat(), str(v.tzinfo))
        if isinstance(v, float) and math.isnan(v):
            return ("float", "nan")
        if isinstance(v, float):
            return ("float", v.hex())
        if isinstance(v, bytes):
            return ("bytes", v)
        return v

    return [{k: value(v) for k, v in record.items()} for record in records]


def assert_same_pages(fast: Sequence[Page], rows: Sequence[Page]) -> None:
    """The same pages as the row path's: positions, values, table or records, Arrow types
    (a decimal's scale; a column the row path types as null only from its values aside)."""
    assert [p.position for p in fast] == [p.position for p in rows]
    assert plain(records_of(fast)) == plain(records_of(rows))
    assert [p.table is None for p in fast] == [p.table is None for p in rows]
    for got, expected in zip(fast, rows, strict=True):
        if got.table is None:
            continue
        assert got.table.column_names == expected.table.column_names
        for field in expected.table.schema:
            kind = got.table.schema.field(field.name).type
            if pa.types.is_decimal(field.type):
                assert kind.scale == field.type.scale, field.name
            elif not pa.types.is_null(field.type):
                assert kind == field.type, field.name


EVERY_TYPE = """
    id BIGINT PRIMARY KEY,
    small SMALLINT,
    whole INTEGER,
    amount NUMERIC(12,2),
    precise NUMERIC(38,10),
    score DOUBLE PRECISION,
    ratio REAL,
    flag BOOLEAN,
    name TEXT,
    code VARCHAR(10),
    fixed CHAR(3),
    born DATE,
    seen TIMESTAMP,
    at TIMESTAMPTZ
"""
NASTY_TEXT = 'say "hi", then\nleave \\ Zoë ✓;'


@pytest.mark.parametrize(("zone", "settings"), [
    (None, {}), ("Asia/Kolkata", {}), ("America/St_Johns", {}),
    ("UTC", {"extra_float_digits": "0", "IntervalStyle": "sql_standard"}),
], ids=["server-zone", "kolkata", "st-johns", "old-float-digits"])
def test_every_common_type_reads_as_the_row_path_reads_it(
        pg: Any, zone: str | None, settings: dict[str, str]) -> None:
    table = pg.create("every_type", EVERY_TYPE)
    pg.execute(f"""
        INSERT INTO {table} VALUES
        (1, 7, -42, 12.50, 1.5, 3.25, 0.1, true, 'Ada', 'A-1', 'ab', '2024-02-29',
         '2024-02-29 23:59:59.999999', '2024-03-31 01:30:00.5+02'),
        (2, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL),
        (3, -32768, 2147483647, -1234567890.12, 1234567890123456789012345678.0123456789,
         'NaN', 'Infinity', false, '', 'NULL', 'a', '0999-12-31', '1900-01-01 00:00:00',
         '1900-01-01 00:00:00+00:53:28'),
        (4, 0, 0, 0.00, -0.0000000001, '-0', '-Infinity', NULL, :nasty, 'NaN', '', '1970-01-01',
         '1970-01-01 00:00:00.000001', '2038-01-19 03:14:08+00'),
        (5, 1, 1, 9999999999.99, 0, 1e-310, 3.4e38, true, 'N/A', '""', '"', '9999-12-31',
         '2000-01-01 12:00:00', '2000-06-15 12:00:00-09:30'),
        (6, 2, 2, 0.01, 0.1, 0.30000000000000004, 50816768, false, 'x', 'y', 'z', '0001-01-01',
         '0001-01-01 00:00:00', '9999-12-30 12:00:00+00'),
        (7, 3, 3, -0.01, -0.1, 1.2345678901234567e300, -2747983900, true, 'x', 'y', 'z',
         '2000-01-01', '9999-12-31 23:59:59.999999', '0001-01-02 12:00:00+00')
    """, {"nasty": NASTY_TEXT})
    sql = connector(pg.url, zone, **settings)
    try:
        fast = table_of(arrow_read(sql, table, page_size=100))
        rows = table_of(row_read(sql, table, 100))
        records = records_of(sql.read(table, page_size=100))
    finally:
        sql.close()

    assert plain(fast.to_pylist()) == plain(records)
    assert fast.column_names == rows.column_names
    for field in fast.schema:
        inferred = rows.schema.field(field.name).type
        if pa.types.is_decimal(inferred):
            assert field.type.scale == inferred.scale, field.name
        else:
            assert field.type == inferred, field.name
    assert fast.schema.field("amount").type == pa.decimal128(12, 2)
    assert fast.schema.field("precise").type == pa.decimal128(38, 10)
    if zone is not None:
        assert fast.schema.field("at").type == pa.timestamp("us", zone)
    assert fast.column("name").to_pylist()[1:4] == [None, "", NASTY_TEXT]


def test_a_value_arrow_refuses_hands_the_rest_to_the_row_path(
        pg: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """NaN fits no Arrow decimal: the pages read before it stand, the row path reads on."""
    table = pg.create("refused", "id INTEGER PRIMARY KEY, amount NUMERIC(10,2), note TEXT")
    pg.insert(table, [{"id": i, "amount": Decimal("NaN") if i == 61 else Decimal(i) / 4,
                       "note": f"n{i}"} for i in range(1, 101, 2)])
    monkeypatch.setattr(arrow_reads, "POSTGRES_BATCH_BYTES", 100)  # a batch every few rows
    sql = connector(pg.url)
    try:
        taken = rows_taken_over(sql)
        pages = list(sql.read(table, columnar=True, page_size=4))
        expected = list(sql.read(table, page_size=4))
    finally:
        sql.close()

    ids = [r["id"] for page in pages for r in page.records]
    assert ids == list(range(1, 101, 2)), "every row once, in key order"
    assert plain(records_of(pages)) == plain(records_of(expected))
    assert [page.position for page in pages] == [page.records[-1]["id"] for page in pages]
    before = [page for page in pages if page.records[-1]["id"] < 61]
    assert before and all(page.table is not None for page in before), "read by ADBC"
    assert next(page for page in pages if page.position >= 61).table is None, "read by rows"
    assert taken[0] is not None and taken[0] < 61, "taken over after the pages ADBC gave"


@pytest.mark.parametrize(("column", "value"), [
    ("DATE", "infinity"), ("DATE", "-infinity"), ("DATE", "0044-03-15 BC"), ("DATE", "10000-01-01"),
    ("TIMESTAMP", "infinity"), ("TIMESTAMPTZ", "-infinity"), ("TIMESTAMPTZ", "10000-01-01 00:00+00"),
])
def test_a_date_python_cannot_hold_fails_the_read_as_on_the_row_path(
        pg: Any, monkeypatch: pytest.MonkeyPatch, column: str, value: str) -> None:
    """ADBC gives infinite dates as dates of odd years: the row path's driver refuses them."""
    table = pg.create("beyond", f"id INTEGER PRIMARY KEY, at {column}")
    pg.execute(f"INSERT INTO {table} SELECT n, CASE WHEN n = 30 THEN '{value}'::{column} "
               f"ELSE '2000-01-01'::{column} + n * interval '1 day' END FROM generate_series(1, 40) n")
    monkeypatch.setattr(arrow_reads, "POSTGRES_BATCH_BYTES", 100)
    sql = connector(pg.url)

    def until_failure(columnar: bool) -> tuple[list[Position], type[BaseException]]:
        positions = []
        with pytest.raises(psycopg.DataError) as failure:
            for page in sql.read(table, columnar=columnar, page_size=4):
                positions.append(page.position)
        return positions, failure.type

    try:
        assert until_failure(True) == until_failure(False) == ([4 * i for i in range(1, 8)],
                                                               psycopg.DataError)
    finally:
        sql.close()


@pytest.mark.parametrize("column", ["NUMERIC", "UUID", "JSONB", "INTERVAL", "BYTEA", "TIME",
                                    "NUMERIC(40,2)"])
def test_columns_adbc_cannot_type_as_the_row_path_take_the_row_path(pg: Any, column: str) -> None:
    table = pg.create("other_type", f"id INTEGER PRIMARY KEY, value {column}")
    value = {"NUMERIC": "1.5", "UUID": "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
             "JSONB": """'{"a": [1, 2]}'""", "INTERVAL": "'1 day 2 hours'",
             "BYTEA": "'\\x0102'", "TIME": "'12:30'", "NUMERIC(40,2)": "1.5"}[column]
    pg.execute(f"INSERT INTO {table} VALUES (1, {value}), (2, NULL)")
    sql = connector(pg.url)
    try:
        taken = rows_taken_over(sql)
        got = list(sql.read(table, columnar=True))
        rows = row_read(sql, table, 1000)
    finally:
        sql.close()
    assert taken[0] is None, "the whole read by rows"
    assert_same_pages(got, rows)


QUOTED = "O'Brien \\ 50%"
"""A parameter that is only safe bound as a literal if quoted right."""

def _items(db: Any) -> tuple[str, list[dict[str, Any]]]:
    table = db.create("items", "num INTEGER PRIMARY KEY, label VARCHAR(20), country VARCHAR(2), "
                               "amount NUMERIC(10,2)")
    countries = ["DE", "AT", "FR", None, "DE"]
    rows = [{"num": 3 * i + 1, "label": f"{'x' if i % 4 == 0 else 'item'}-{i:02d}",
             "country": countries[i % 5], "amount": i + 0.25} for i in range(25)]
    rows[7]["label"] = QUOTED
    db.insert(table, rows[::-1])
    return table, rows


SCOPES = [
    {"field": "country", "eq": {"param": "country"}},
    {"field": "label", "eq": {"param": "quoted"}},
    {"field": "country", "is_null": True},
    {"and": [{"field": "country", "in": ["DE", "AT"]}, {"field": "num", "gte": 20},
             {"not": {"field": "label", "like": "x%"}}]},
    {"or": [{"field": "amount", "lt": 2}, {"field": "num", "in": {"param": "nums"}}]},
    {"or": [{"field": "num", "lt": 10.5}, {"field": "country", "ne": "FR"}]},
]


@pytest.mark.parametrize("scope", SCOPES, ids=["param", "quoted-param", "is_null", "and-in-not-like",
                                               "or-param-list", "float-ne"])
def test_scope_fields_and_positions_as_the_row_path(db: Any, scope: dict[str, Any]) -> None:
    table, rows = _items(db)
    bound = bind(Scope.model_validate(scope),
                 {"country": "DE", "nums": [4, 40, 73, 999], "quoted": QUOTED})
    expected = [r for r in rows if to_predicate(bound)(r)]
    assert expected and len(expected) < len(rows)
    sql = connector(db.url)
    try:
        fields = ["label", "country"] if db.dialect == "sqlite" else ["label", "amount"]
        fast = arrow_read(sql, table, bound, fields=fields, page_size=2) if db.dialect != "mysql" \
            else list(sql.read(table, bound, fields=fields, page_size=2, columnar=True))
        slow = list(sql.read(table, bound, fields=fields, page_size=2))
    finally:
        sql.close()

    assert plain(records_of(fast)) == plain(records_of(slow))
    assert [r["num"] for r in records_of(fast)] == [r["num"] for r in expected]
    assert list(records_of(fast)[0]) == [*fields, "num"]
    assert [p.position for p in fast] == [p.position for p in slow]


def test_parameters_sqlite_and_adbc_bind_differently_take_the_row_path(lite: Any) -> None:
    """sqlite3 binds a date as its ISO text; ADBC would bind it otherwise."""
    table = lite.create("days", "id INTEGER PRIMARY KEY, day TEXT")
    lite.insert(table, [{"id": i, "day": f"2024-01-{i:02d}"} for i in range(1, 21)])
    bound = bind(Scope.model_validate({"field": "day", "gte": {"param": "since"}}),
                 {"since": dt.date(2024, 1, 15)})
    sql = connector(lite.url)
    try:
        taken = rows_taken_over(sql)
        got = list(sql.read(table, bound, columnar=True, page_size=4))
    finally:
        sql.close()
    assert taken == [None]
    assert [r["id"] for r in records_of(got)] == list(range(15, 21))


def test_reads_resume_after_a_position_or_an_offset(either: Any) -> None:
    keyed, rows = _items(either)
    heap = either.create("heap", "label TEXT, n INTEGER")
    either.insert(heap, [{"label": f"h{i}", "n": i} for i in range(10)])
    sql = connector(either.url)
    try:
        after = rows[9]["num"]
        resumed = records_of(arrow_read(sql, keyed, after=after, page_size=4, fields=["label"]))
        assert [r["num"] for r in resumed] == [r["num"] for r in rows[10:]]

        pages = arrow_read(sql, heap, page_size=4)
        assert [p.position for p in pages] == [4, 8, 10]
        rest = records_of(arrow_read(sql, heap, after=4))
        assert rest == records_of(sql.read(heap, after=4)) and len(rest) == 6
    finally:
        sql.close()


def test_a_read_left_early_leaves_the_connector_usable(either: Any) -> None:
    table, rows = _items(either)
    sql = connector(either.url)
    try:
        for page in sql.read(table, page_size=2, columnar=True, fields=["label", "country"]):
            assert page.table is not None
            break
        assert len(records_of(sql.read(table, columnar=True, fields=["label", "country"]))) == len(rows)
        assert sql.count(table) == len(rows)
    finally:
        sql.close()


def test_memory_stays_flat_on_a_large_table(either: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages are cut from a batch at a time: a 48 MB table read holding a few MB at once.
    (The drivers allocate their batches themselves: the process's memory is what counts.)"""
    table = either.create("large", "id INTEGER PRIMARY KEY, body TEXT")
    small = either.create("small", "id INTEGER PRIMARY KEY, body TEXT")
    either.insert(small, [{"id": 1, "body": "x"}])
    rows = 48_000
    if either.dialect == "postgresql":
        either.execute(f"INSERT INTO {table} SELECT n, repeat(md5(n::text), 32) "
                       f"FROM generate_series(1, {rows}) AS n")
    else:
        either.execute(f"WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n "
                       f"WHERE i < {rows}) INSERT INTO {table} SELECT i, printf('%.1024c', 'x') FROM n")
    monkeypatch.setattr(arrow_reads, "POSTGRES_BATCH_BYTES", 1 << 20)
    sql = connector(either.url)
    try:
        arrow_read(sql, small)  # drivers and their caches loaded
        baseline = _resident()
        held = count = 0
        for page in arrow_pages(sql, table, page_size=500):
            held = max(held, _resident() - baseline)
            count += len(page)
    finally:
        sql.close()
    assert count == rows
    assert held < 16 << 20, f"{held:,} bytes more held while reading"


def _resident() -> int:
    """The process's resident memory, in bytes."""
    pages = Path("/proc/self/statm").read_text().split()[1]
    return int(pages) * resource.getpagesize()


def test_connection_arguments_reach_adbc(pg: Any) -> None:
    """The URL's options (a search path), an encoding other than UTF-8 and a password that
    needs quoting: ADBC connects as psycopg does."""
    schema = f"s_{uuid.uuid4().hex[:8]}"
    pg.execute(f"CREATE SCHEMA {schema}")
    try:
        pg.execute(f"CREATE TABLE {schema}.people (id INTEGER PRIMARY KEY, name TEXT)")
        pg.execute(f"INSERT INTO {schema}.people VALUES (1, 'Zoë'), (2, 'Ærø')")
        user, _, rest = pg.url.partition("://")[2].partition("@")
        url = (f"postgresql://{user}:{quote('p@ss:/?#&= %', safe='')}@{rest}"
               f"{'&' if '?' in rest else '?'}options={quote(f'-csearch_path={schema}')}"
               f"&client_encoding=LATIN1")
        sql = connector(url)
        try:
            fast = arrow_read(sql, "people")
            slow = list(sql.read("people"))
        finally:
            sql.close()
        assert records_of(fast) == records_of(slow) == [{"id": 1, "name": "Zoë"}, {"id": 2, "name": "Ærø"}]
    finally:
        pg.execute(f"DROP SCHEMA {schema} CASCADE")



def test_sources_read_in_threads_read_as_alone(pg: Any, lite: Any) -> None:
    """The aggregation pattern reads its sources in threads, which the drivers let run at once."""
    tables = {"pg": _items(pg)[0], "lite": _lite_table(lite)}
    connectors = {"pg": connector(pg.url), "lite": connector(lite.url)}
    read: dict[str, list[dict[str, Any]]] = {}
    try:
        threads = [threading.Thread(target=lambda name=name: read.__setitem__(name, records_of(
            arrow_read(connectors[name], tables[name], page_size=500)))) for name in tables]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for name, sql in connectors.items():
            assert plain(read[name]) == plain(records_of(sql.read(tables[name], page_size=500)))
    finally:
        for sql in connectors.values():
            sql.close()

# -- SQLite: dynamically typed values --------------------------------------------------------


def _lite_table(db: Any, rows: int = 5000) -> str:
    table = db.create("dyn", "id INTEGER PRIMARY KEY, whole INTEGER, name TEXT, score REAL, "
                             "late VARCHAR(20)")
    db.insert(table, [{"id": i, "whole": i * 7, "name": f"n{i}", "score": i / 8,
                       "late": None if i < 2500 else f"l{i}"} for i in range(1, rows + 1)])
    return table


def test_sqlite_reads_its_declared_types(lite: Any) -> None:
    """A column null all through the first batch (typed as integers by the driver) reads on
    when its values come, by ADBC again."""
    table = _lite_table(lite)
    sql = connector(lite.url)
    try:
        fast = arrow_read(sql, table, page_size=1000)
        rows = row_read(sql, table, 1000)
    finally:
        sql.close()
    assert_same_pages(fast, rows)
    assert fast[0].table.schema == pa.schema([("id", pa.int64()), ("whole", pa.int64()),
                                              ("name", pa.string()), ("score", pa.float64()),
                                              ("late", pa.string())])


DIRTY = [
    ("whole", "'abc'"), ("whole", "2.5"), ("whole", "x'4142'"), ("score", "'n/a'"),
    ("name", "x'4142'"), ("late", "x'c3a9'"),
]


@pytest.mark.parametrize(("column", "value"), DIRTY,
                         ids=[f"{c}={v}" for c, v in DIRTY])
@pytest.mark.parametrize("row", [5, 3500], ids=["first-batch", "later"])
def test_sqlite_values_of_another_class_take_the_row_path(
        lite: Any, column: str, value: str, row: int) -> None:
    """Text in an INTEGER column, a real in it, a blob in a TEXT column: pages before it
    are ADBC's, the rest the row path's, the whole as the row path gives it."""
    table = _lite_table(lite)
    lite.execute(f"UPDATE {table} SET {column} = {value} WHERE id = {row}")
    sql = connector(lite.url)
    try:
        taken = rows_taken_over(sql)
        fast = list(sql.read(table, columnar=True, page_size=1000))
        del sql._read_rows
        rows = row_read(sql, table, 1000)
    finally:
        sql.close()
    assert_same_pages(fast, rows)
    assert len(taken) == 1 and (taken[0] or 0) <= row - 1 <= (taken[0] or 0) + 2000
    assert all(p.table is not None for p in fast if p.position <= (taken[0] or 0))


def test_sqlite_numbers_in_text_columns_are_text(lite: Any) -> None:
    """TEXT affinity stores a number as text ('007' and '1e5' stay as written, 12 is '12'),
    REAL and INTEGER affinity store numeric text as numbers."""
    table = lite.create("numbers", "id INTEGER PRIMARY KEY, code TEXT, n INTEGER, x REAL")
    lite.insert(table, [{"id": 1, "code": "007", "n": "12", "x": "2.5"},
                        {"id": 2, "code": 12, "n": 3, "x": 4},
                        {"id": 3, "code": 1.5, "n": None, "x": None},
                        {"id": 4, "code": "1e5", "n": " 7 ", "x": "-0.0"},
                        {"id": 5, "code": "", "n": 5.0, "x": 1e308}])
    sql = connector(lite.url)
    try:
        fast = arrow_read(sql, table, page_size=2)
        rows = row_read(sql, table, 2)
    finally:
        sql.close()
    assert_same_pages(fast, rows)
    assert [r["code"] for r in records_of(fast)] == ["007", "12", "1.5", "1e5", ""]
    assert [r["n"] for r in records_of(fast)] == [12, 3, None, 7, 5]


def test_sqlite_text_that_is_not_utf8_fails_as_on_the_row_path(lite: Any) -> None:
    table = _lite_table(lite)
    lite.execute(f"UPDATE {table} SET name = CAST(x'41ff' AS TEXT) WHERE id = 3500")
    sql = connector(lite.url)

    def until_failure(columnar: bool) -> list[Position]:
        positions = []
        with pytest.raises(sqlite3.OperationalError, match="UTF-8"):
            for page in sql.read(table, columnar=columnar, page_size=1000):
                positions.append(page.position)
        return positions

    try:
        assert until_failure(True) == until_failure(False) == [1000, 2000, 3000]
    finally:
        sql.close()


@pytest.mark.parametrize("column", ["NUMERIC", "DECIMAL(10,2)", "DATE", "DATETIME", "BOOLEAN", "BLOB", ""])
def test_sqlite_columns_of_any_class_take_the_row_path(lite: Any, column: str) -> None:
    table = lite.create("anyclass", f"id INTEGER PRIMARY KEY, value {column}")
    lite.insert(table, [{"id": i, "value": v} for i, v in enumerate([1, 2.5, "2024-01-01", None], 1)])
    sql = connector(lite.url)
    try:
        taken = rows_taken_over(sql)
        got = list(sql.read(table, columnar=True))
        del sql._read_rows
        rows = row_read(sql, table, 1000)
    finally:
        sql.close()
    assert taken == [None]
    assert_same_pages(got, rows)


def test_sqlite_views_take_the_row_path(lite: Any) -> None:
    """A view's column has its declared type, but a union may give it values of any class."""
    table = _lite_table(lite, 10)
    view = lite.name("mixed")
    lite.execute(f"CREATE VIEW {view} AS SELECT id, name FROM {table} "
                 f"UNION ALL SELECT id + 100, id FROM {table}")
    try:
        sql = connector(lite.url)
        try:
            taken = rows_taken_over(sql)
            got = records_of(sql.read(view, columnar=True, key=None))
        finally:
            sql.close()
        assert taken == [None]
        assert [r["name"] for r in got][9:11] == ["n10", 1]
    finally:
        lite.execute(f"DROP VIEW {view}")


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:",
                                 "sqlite:///file:{path}?mode=ro&uri=true", "sqlite:///{path}?timeout=5"])
def test_sqlite_databases_only_sqlalchemy_opens_take_the_row_path(tmp_path: Path, url: str) -> None:
    path = tmp_path / "uri.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
        db.execute("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
    db.close()
    sql = connector(url.format(path=path))
    try:
        if "path" not in url:
            with sql.engine.begin() as conn:  # one pooled connection holds the database
                conn.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT)")
                conn.exec_driver_sql("INSERT INTO t VALUES (1, 'a'), (2, 'b')")
        taken = rows_taken_over(sql)
        assert records_of(sql.read("t", columnar=True)) == [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]
        assert taken == [None]
    finally:
        sql.close()


def test_the_legacy_crm_reads_by_adbc_as_by_rows(tmp_path: Path) -> None:
    """The demo's legacy database, planted dirt and all, reads wholly by ADBC."""
    legacy = build_legacy_crm(tmp_path / "legacy.db", accounts=600)
    sql = connector(f"sqlite:///{legacy.path}")
    try:
        for table in ("accounts", "contacts"):
            fast = arrow_read(sql, table, page_size=256)
            rows = row_read(sql, table, 256, key=sql.describe(table).key)
            assert_same_pages(fast, rows)
            assert len(records_of(fast)) >= 600
    finally:
        sql.close()
