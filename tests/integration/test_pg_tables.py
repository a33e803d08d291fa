"""The columnar lane's binary formats against a real PostgreSQL: a batch written by binary COPY
holds what its CSV would have given, a read-back gives back the very table written, and
whatever either cannot carry exactly is declined (None), for the text formats or the record
lane to handle."""

from __future__ import annotations

import datetime as dt
import io
import random
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as arrow_csv
import pytest

from patchbay.connectors.sql import SqlConnector, pgtables
from patchbay.model import Operation, Status
from patchbay.spec import SystemSpec

COLUMNS = ("id bigint PRIMARY KEY, i4 integer, i2 smallint, t text, v varchar(12), d date, "
           "ts timestamp, f double precision, n numeric(12,2), n6 numeric(18,6), n0 numeric(5,0), "
           "b boolean")
TYPES = ["int8", "int4", "int2", "text", "varchar", "date", "timestamp", "float8", "numeric", "numeric",
         "numeric", "bool"]
ROWS = 3_000


def batch(rows: int = ROWS, seed: int = 7) -> pa.Table:
    """Every type the lane writes, with nulls, extremes, and text CSV would have to quote."""
    rng = random.Random(seed)

    def pick(*values: Any) -> list[Any]:
        return [rng.choice(values) for _ in range(rows)]

    table = pa.table({
        "id": pa.array(range(1, rows + 1), pa.int64()),
        "i4": pa.array(pick(None, 0, -1, 2**31 - 1, -(2**31)), pa.int64()),
        "i2": pa.array(pick(None, 0, -(2**15), 2**15 - 1), pa.int64()),
        "t": pa.array(pick(None, "", "héllo", 'a\tb\nc,"d"\\', "x" * 500, "日本")),
        "v": pa.array(pick(None, "", "twelve chars")),
        "d": pa.array(pick(None, dt.date(2000, 1, 1), dt.date(1, 1, 1), dt.date(9999, 12, 31),
                           dt.date(1969, 12, 31)), pa.date32()),
        "ts": pa.array(pick(None, dt.datetime(2000, 1, 1), dt.datetime(1, 1, 1, 0, 0, 0, 1),
                            dt.datetime(9999, 12, 31, 23, 59, 59, 999999)), pa.timestamp("us")),
        "f": pa.array(pick(None, 0.0, -0.0, 0.1, 1e308, -2.5e-300, float("inf"))),
        "n": pa.array(pick(None, Decimal("0"), Decimal("-0.01"), Decimal("9999999999.99"),
                           Decimal("-9999999999.99"), Decimal("1.05")), pa.decimal128(12, 2)),
        "n6": pa.array(pick(None, Decimal("-0.000001"), Decimal("999999999999.999999"),
                            Decimal("1234.5678")), pa.decimal128(18, 6)),
        "n0": pa.array(pick(None, Decimal("0"), Decimal("-99999"), Decimal("10000")), pa.decimal128(5, 0)),
        "b": pa.array(pick(None, True, False)),
    })
    return pa.concat_tables([table.slice(0, rows // 3), table.slice(rows // 3)])  # in two chunks


@pytest.fixture
def tables(pg_url: str) -> Iterator[tuple[str, str]]:
    names = (f"bin_{uuid.uuid4().hex[:8]}", f"csv_{uuid.uuid4().hex[:8]}")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for name in names:
            conn.execute(f"CREATE TABLE {name} ({COLUMNS})")
    yield names
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for name in names:
            conn.execute(f"DROP TABLE IF EXISTS {name}")


@pytest.fixture
def sql(pg_url: str) -> Iterator[SqlConnector]:
    connector = SqlConnector(SystemSpec(url=pg_url, name="pg"))
    yield connector
    connector.close()


def test_a_binary_copy_stores_what_csv_stores(pg_url: str, sql: SqlConnector,
                                              tables: tuple[str, str]) -> None:
    binary, text = tables
    table = batch()
    assert pgtables.copy_rows(table, TYPES) is not None, "every column goes in binary"
    assert sql.write_table(binary, table, Operation.UPSERT, "id") == {Status.CREATED: ROWS}
    sink = io.BytesIO()
    arrow_csv.write_csv(table, sink, arrow_csv.WriteOptions(include_header=False))
    with psycopg.connect(pg_url, autocommit=True) as conn:
        with conn.cursor() as cursor, cursor.copy(f"COPY {text} FROM STDIN (FORMAT csv)") as copy:
            copy.write(sink.getvalue())
        differing = conn.execute(f"SELECT count(*) FROM {binary} a FULL JOIN {text} c USING (id) "
                                 f"WHERE a::text IS DISTINCT FROM c::text").fetchone()
    assert differing == (0,)

    again = sql.write_table(binary, table, Operation.UPSERT, "id")
    assert again == {Status.UNCHANGED: ROWS}, "through the staging table, in binary too"


def test_the_read_back_is_the_table_written(sql: SqlConnector, tables: tuple[str, str]) -> None:
    table = batch()
    sql.write_table(tables[0], table, Operation.UPSERT, "id")
    back = sql.get_table(tables[0], "id", list(range(1, ROWS + 1)), table.schema)
    assert back is not None and back.sort_by("id").equals(table.combine_chunks()), "in any order"

    some = [*range(ROWS, 0, -7), ROWS + 5]  # a range holding other rows, a missing key
    back = sql.get_table(tables[0], "id", some, table.schema)
    assert back is not None
    assert sorted(back["id"].to_pylist()) == sorted(some[:-1])
    assert sql.get_table(tables[0], "id", [ROWS + 5], table.schema).num_rows == 0


def test_values_binary_cannot_carry_go_as_text(sql: SqlConnector, tables: tuple[str, str]) -> None:
    table = batch(10)
    too_big = table.set_column(1, "i4", pa.array([2**31] * 10, pa.int64()))
    assert pgtables.copy_rows(too_big, TYPES) is None
    ancient = table.set_column(5, "d", pa.array([-3_000_000] * 10, pa.int32()).view(pa.date32()))
    assert pgtables.copy_rows(ancient, TYPES) is None, "before 4713 BC: no date PostgreSQL knows"
    wide = table.set_column(8, "n", table["n"].cast(pa.decimal128(30, 2)))
    assert pgtables.copy_rows(wide, TYPES) is None
    assert pgtables.copy_rows(table, [*TYPES[:-1], None]) is None
    # The text format then carries it, or the database refuses it as it would any text.
    assert sql.write_table(tables[0], too_big, Operation.UPSERT, "id") is None


def test_a_read_back_declines_what_it_cannot_tell_apart(pg_url: str, sql: SqlConnector,
                                                        tables: tuple[str, str]) -> None:
    name = tables[0]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"INSERT INTO {name} (id, t, d, n) VALUES (1, 'a' || chr(31) || 'b', NULL, 1), "
                     f"(2, 'plain', 'infinity', 'NaN'), (3, chr(1), '2020-01-01', 2)")
    schema = batch(1).schema

    def read(field: str, keys: list[int]) -> Any:
        return sql.get_table(name, "id", keys, pa.schema([schema.field("id"), schema.field(field)]))

    assert read("t", [1]) is None, "a separator inside a value"
    assert read("t", [3])["t"].to_pylist() == [None], "\\x01 reads as null: the compare then differs"
    assert read("d", [2]) is None, "an infinite date is no date of the batch"
    assert read("n", [2]) is None, "NaN is no decimal"
    assert read("d", [1])["d"].to_pylist() == [None]
    assert read("d", [3])["d"].to_pylist() == [dt.date(2020, 1, 1)]
