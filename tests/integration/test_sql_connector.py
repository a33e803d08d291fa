"""SqlConnector against real PostgreSQL, MariaDB and SQLite databases.

Every test runs once per database (the `db` fixture). Tables get a unique suffix and are
dropped afterwards.
"""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from patchbay.connectors.sql import SqlConnector
from patchbay.errors import ConnectionFailed
from patchbay.model import FieldType, Operation, Status
from patchbay.scope import bind, to_predicate
from patchbay.spec import Scope, SystemSpec


def connector(db: Any) -> SqlConnector:
    return SqlConnector(SystemSpec(url=db.url, name="dst"))


@pytest.fixture
def sql(db: Any) -> Any:
    conn = connector(db)
    yield conn
    conn.close()


# -- describe -----------------------------------------------------------------------------------

_TYPES = {
    "postgresql": ("NUMERIC(10,2)", "DOUBLE PRECISION", "BOOLEAN", "TIMESTAMP"),
    "mysql": ("NUMERIC(10,2)", "DOUBLE", "BOOLEAN", "DATETIME"),
    "sqlite": ("NUMERIC(10,2)", "FLOAT", "BOOLEAN", "DATETIME"),
}


def test_describe_reports_types_nullability_and_lengths(db: Any, sql: SqlConnector) -> None:
    numeric, double, boolean, timestamp = _TYPES[db.dialect]
    table = db.create(
        "described",
        f"""
        id {db.autoid},
        ext VARCHAR(20) NOT NULL UNIQUE,
        name VARCHAR(10) NOT NULL,
        notes TEXT,
        amount {numeric},
        score {double},
        active {boolean},
        born DATE,
        seen {timestamp},
        status VARCHAR(8) DEFAULT 'new'
    """,
    )

    schema = sql.describe(table)

    assert schema.name == table
    assert schema.key == "id"
    assert list(schema.fields) == [
        "id",
        "ext",
        "name",
        "notes",
        "amount",
        "score",
        "active",
        "born",
        "seen",
        "status",
    ]
    f = schema.fields
    assert f["id"].type is FieldType.INTEGER and f["id"].has_default
    assert not f["id"].required
    assert (f["ext"].type, f["ext"].max_length, f["ext"].nullable) == (FieldType.STRING, 20, False)
    assert f["ext"].required
    assert (f["name"].type, f["name"].max_length, f["name"].nullable) == (
        FieldType.STRING,
        10,
        False,
    )
    assert f["notes"].type is FieldType.STRING and f["notes"].nullable
    assert f["notes"].max_length is None
    assert f["amount"].type is FieldType.DECIMAL
    assert f["score"].type is FieldType.NUMBER
    # MySQL has no boolean type: BOOLEAN is TINYINT(1), and reads back as an integer.
    assert f["active"].type is (FieldType.INTEGER if db.dialect == "mysql" else FieldType.BOOLEAN)
    assert f["born"].type is FieldType.DATE
    assert f["seen"].type is FieldType.DATETIME
    assert f["status"].has_default and f["status"].max_length == 8
    for name in ("notes", "amount", "score", "active", "born", "seen", "status"):
        assert f[name].nullable, name


# -- read, count, get ---------------------------------------------------------------------------


def _items(db: Any) -> tuple[str, list[dict[str, Any]]]:
    """25 rows with sparse keys, inserted in shuffled order."""
    table = db.create(
        "items",
        """
        num INTEGER PRIMARY KEY,
        label VARCHAR(20),
        country VARCHAR(2),
        amount NUMERIC(10,2)
    """,
    )
    countries = ["DE", "AT", "FR", None, "DE"]
    rows = [
        {
            "num": 3 * i + 1,
            "label": f"{'x' if i % 4 == 0 else 'item'}-{i:02d}",
            "country": countries[i % 5],
            "amount": i + 0.25,
        }
        for i in range(25)
    ]
    shuffled = rows[:]
    random.Random(7).shuffle(shuffled)
    db.insert(table, shuffled)
    return table, rows


def test_read_pages_in_key_order_and_resumes_after_a_position(db: Any, sql: SqlConnector) -> None:
    table, rows = _items(db)
    keys = [r["num"] for r in rows]

    pages = list(sql.read(table, page_size=10))

    assert [len(p.records) for p in pages] == [10, 10, 5]
    assert [r["num"] for p in pages for r in p.records] == keys
    assert [p.position for p in pages] == [keys[9], keys[19], keys[24]]
    assert pages[0].records[0] == {
        "num": 1,
        "label": "x-00",
        "country": "DE",
        "amount": Decimal("0.25"),
    }

    resumed = list(sql.read(table, page_size=10, after=pages[0].position))
    assert [r["num"] for p in resumed for r in p.records] == keys[10:]
    assert list(sql.read(table, after=keys[-1])) == []

    only = list(sql.read(table, key="num", fields=["label"], page_size=100))
    assert len(only) == 1
    assert only[0].records[3] == {"label": rows[3]["label"], "num": rows[3]["num"]}
    assert sql.count(table) == 25


SCOPES = [
    {"field": "country", "eq": {"param": "country"}},
    {"field": "country", "is_null": True},
    {
        "and": [
            {"field": "country", "in": ["DE", "AT"]},
            {"field": "num", "gte": 20},
            {"not": {"field": "label", "like": "x%"}},
        ]
    },
    {"or": [{"field": "amount", "lt": 2}, {"field": "num", "in": {"param": "nums"}}]},
]


@pytest.mark.parametrize(
    "scope", SCOPES, ids=["param", "is_null", "and-in-not-like", "or-param-list"]
)
def test_scope_is_pushed_down(db: Any, sql: SqlConnector, scope: dict[str, Any]) -> None:
    table, rows = _items(db)
    bound = bind(Scope.model_validate(scope), {"country": "DE", "nums": [4, 40, 73, 999]})
    expected = [r["num"] for r in rows if to_predicate(bound)(r)]
    assert expected, "the scope should select something"
    assert len(expected) < len(rows), "the scope should leave something out"

    got = [r["num"] for p in sql.read(table, bound, page_size=4) for r in p.records]

    assert got == expected
    assert sql.count(table, bound) == len(expected)


def test_get_finds_records_by_key(db: Any, sql: SqlConnector) -> None:
    table, rows = _items(db)
    by_num = {r["num"]: r for r in rows}

    found = sql.get(table, "num", [4, 7, 999, None, 4])
    assert found == {4: by_num[4], 7: by_num[7]}

    labels = sql.get(table, "label", ["item-01", "nope"], fields=["country"])
    assert labels == {"item-01": {"country": "AT", "label": "item-01"}}
    assert sql.get(table, "num", []) == {}


def test_get_accepts_keys_of_mixed_types(db: Any, sql: SqlConnector) -> None:
    """Lookups ask for a value and its text at once (42 and "42"), as sources differ in types."""
    table, rows = _items(db)
    by_num = {r["num"]: r for r in rows}

    found = sql.get(table, "num", [4, "4", "7", 10, "999"], fields=["label"])

    assert found == {n: {"label": by_num[n]["label"], "num": n} for n in (4, 7, 10)}


# -- write: outcomes per record ----------------------------------------------------------------


def _people(db: Any, unique: bool) -> str:
    return db.create(
        "people",
        f"""
        id {db.autoid},
        ext VARCHAR(20) NOT NULL{" UNIQUE" if unique else ""},
        name VARCHAR(40) NOT NULL,
        score INTEGER
    """,
    )


def _held(db: Any, table: str) -> dict[str, tuple[Any, Any]]:
    return {
        ext: (name, score) for ext, name, score in db.rows(f"SELECT ext, name, score FROM {table}")
    }


def _statuses(outcomes: list[Any]) -> list[tuple[Any, Status]]:
    return [(o.key, o.status) for o in outcomes]


@pytest.mark.parametrize("unique", [True, False], ids=["unique-key", "plain-key"])
def test_write_outcomes_per_record(db: Any, sql: SqlConnector, unique: bool) -> None:
    """Upsert, insert, update and delete each report what they did to every record.

    On PostgreSQL a key with a unique constraint takes the COPY path, a plain one the
    generic path; the outcomes must be the same.
    """
    table = _people(db, unique)
    a, b, c = (
        {"ext": "A", "name": "Ann", "score": 1},
        {"ext": "B", "name": "Bob", "score": None},
        {"ext": "C", "name": "Cid", "score": 3},
    )

    first = sql.write(table, [a, b, c], Operation.UPSERT, "ext")
    assert _statuses(first) == [("A", Status.CREATED), ("B", Status.CREATED), ("C", Status.CREATED)]
    assert all(o.reason is None and o.code is None for o in first)
    assert _held(db, table) == {"A": ("Ann", 1), "B": ("Bob", None), "C": ("Cid", 3)}

    again = sql.write(table, [a, b, c], Operation.UPSERT, "ext")
    assert _statuses(again) == [
        ("A", Status.UNCHANGED),
        ("B", Status.UNCHANGED),
        ("C", Status.UNCHANGED),
    ]

    changed = sql.write(
        table,
        [a, {**b, "score": 20}, {"ext": "D", "name": "Dee", "score": 4}],
        Operation.UPSERT,
        "ext",
    )
    assert _statuses(changed) == [
        ("A", Status.UNCHANGED),
        ("B", Status.UPDATED),
        ("D", Status.CREATED),
    ]
    assert _held(db, table) == {"A": ("Ann", 1), "B": ("Bob", 20), "C": ("Cid", 3), "D": ("Dee", 4)}

    inserted = sql.write(
        table,
        [{**a, "name": "Not Ann"}, {"ext": "E", "name": "Eve", "score": 5}],
        Operation.INSERT,
        "ext",
    )
    assert _statuses(inserted) == [("A", Status.SKIPPED), ("E", Status.CREATED)]
    assert _held(db, table)["A"] == ("Ann", 1)

    updated = sql.write(
        table,
        [{**c, "name": "Cyd"}, {"ext": "Z", "name": "Zed", "score": 0}, a],
        Operation.UPDATE,
        "ext",
    )
    assert _statuses(updated) == [
        ("C", Status.UPDATED),
        ("Z", Status.SKIPPED),
        ("A", Status.UNCHANGED),
    ]
    assert updated[1].reason and updated[1].code == "NOT_FOUND"
    assert "Z" not in _held(db, table)
    assert _held(db, table)["C"] == ("Cyd", 3)

    # Records of one batch with different fields: a field a record lacks is left alone.
    partial = sql.write(table, [{"ext": "C", "name": "Cy"}, {"ext": "A", "name": "Ann", "score": 10}],
                        Operation.UPDATE, "ext")
    assert _statuses(partial) == [("C", Status.UPDATED), ("A", Status.UPDATED)]
    assert (_held(db, table)["C"], _held(db, table)["A"]) == (("Cy", 3), ("Ann", 10))
    sql.write(table, [{"ext": "C", "name": "Cyd"}, {"ext": "A", "score": 1}], Operation.UPDATE, "ext")

    deleted = sql.write(table, [{"ext": "B"}, {"ext": "Y"}, {"ext": "D"}], Operation.DELETE, "ext")
    assert _statuses(deleted) == [
        ("B", Status.DELETED),
        ("Y", Status.SKIPPED),
        ("D", Status.DELETED),
    ]
    assert deleted[1].code == "NOT_FOUND"
    assert sorted(_held(db, table)) == ["A", "C", "E"]

    twice = sql.write(
        table,
        [{**a, "score": 7}, {"ext": None, "name": "Nobody"}, {**a, "score": 8}],
        Operation.UPSERT,
        "ext",
    )
    assert [(o.status, o.code) for o in twice] == [
        (Status.SKIPPED, "DUPLICATE_KEY_IN_BATCH"),
        (Status.REJECTED, "REQUIRED_FIELD_MISSING"),
        (Status.UPDATED, None),
    ]
    assert _held(db, table)["A"] == ("Ann", 8)
    assert db.scalar(f"SELECT COUNT(*) FROM {table}") == 3


def test_a_refused_batch_rejects_only_its_bad_records(db: Any, sql: SqlConnector) -> None:
    """NULL in a NOT NULL column, a value too long, a duplicate in another unique column and
    a missing parent are rejected alone, with the database's reason; every good record lands.
    """
    parent = db.create("parent", "id INTEGER PRIMARY KEY")
    db.insert(parent, [{"id": 1}, {"id": 2}])
    child = db.create(
        "child",
        f"""
        id {db.autoid},
        ext VARCHAR(20) NOT NULL UNIQUE,
        name VARCHAR(10) NOT NULL,
        email VARCHAR(50) UNIQUE,
        parent_id INTEGER REFERENCES {parent}(id)
    """,
    )
    db.insert(child, [{"ext": "old", "name": "Old", "email": "taken@x.example", "parent_id": 1}])

    records = [
        {"ext": f"r{i:03d}", "name": f"n{i}", "email": f"p{i}@x.example", "parent_id": 1 + i % 2}
        for i in range(60)
    ]
    bad = {
        3: ("name", None, "REQUIRED_FIELD_MISSING"),
        17: ("name", "x" * 11, "STRING_TOO_LONG"),
        18: ("email", "p5@x.example", "DUPLICATE_VALUE"),  # same as a good record in the batch
        31: ("email", "taken@x.example", "DUPLICATE_VALUE"),  # same as a row already there
        44: ("parent_id", 99, "INVALID_CROSS_REFERENCE_KEY"),
        59: ("parent_id", 98, "INVALID_CROSS_REFERENCE_KEY"),
    }
    for index, (name, value, _) in bad.items():
        records[index][name] = value
    if db.dialect == "sqlite":
        # SQLite does not enforce VARCHAR lengths: the long name is stored as it is.
        del bad[17]

    outcomes = sql.write(child, records, Operation.UPSERT, "ext")

    assert len(outcomes) == len(records)
    for index, (record, outcome) in enumerate(zip(records, outcomes, strict=True)):
        assert outcome.key == record["ext"]
        if index in bad:
            assert outcome.status is Status.REJECTED, (index, outcome)
            assert outcome.code == bad[index][2], (index, outcome)
            assert outcome.reason, (index, outcome)
        else:
            assert outcome.status is Status.CREATED, (index, outcome)
    good = {
        r["ext"]: (r["name"], r["email"], r["parent_id"])
        for i, r in enumerate(records)
        if i not in bad
    }
    held = {
        ext: (name, email, parent_id)
        for ext, name, email, parent_id in db.rows(
            f"SELECT ext, name, email, parent_id FROM {child} WHERE ext <> 'old'"
        )
    }
    assert held == good

    # Bad updates of existing records are refused alone too; the good updates land.
    updates = [
        {"ext": f"r{i:03d}", "name": f"u{i}", "email": f"p{i}@x.example", "parent_id": 1 + i % 2}
        for i in range(10)
    ]
    updates[2]["name"] = None
    updates[6]["parent_id"] = 97
    outcomes = sql.write(child, updates, Operation.UPSERT, "ext")
    assert [(o.status, o.code) for o in outcomes] == [
        (Status.REJECTED, "REQUIRED_FIELD_MISSING")
        if i == 2
        else (Status.REJECTED, "INVALID_CROSS_REFERENCE_KEY")
        if i == 6
        else (Status.CREATED, None)
        if i == 3
        # r003 was rejected before: now it is good
        else (Status.UPDATED, None)
        for i in range(10)
    ]
    names = dict(db.rows(f"SELECT ext, name FROM {child} WHERE ext LIKE 'r00%'"))
    assert names == {f"r{i:03d}": f"u{i}" if i not in (2, 6) else f"n{i}" for i in range(10)}


def test_writes_round_trip_typed_values(db: Any, sql: SqlConnector) -> None:
    numeric, double, _, timestamp = _TYPES[db.dialect]
    table = db.create(
        "typed",
        f"""
        ext VARCHAR(20) PRIMARY KEY,
        amount {numeric},
        score {double},
        born DATE,
        seen {timestamp},
        notes TEXT
    """,
    )
    record = {
        "ext": "t1",
        "amount": Decimal("12.50"),
        "score": 0.25,
        "born": dt.date(1980, 5, 14),
        "seen": dt.datetime(2024, 1, 2, 3, 4, 5),
        "notes": "ünïcødé ✓",
    }

    assert _statuses(sql.write(table, [record], Operation.UPSERT, "ext")) == [
        ("t1", Status.CREATED)
    ]
    assert _statuses(sql.write(table, [record], Operation.UPSERT, "ext")) == [
        ("t1", Status.UNCHANGED)
    ]
    held = sql.get(table, "ext", ["t1"])["t1"]
    assert Decimal(str(held["amount"])) == Decimal("12.50")
    assert held["score"] == pytest.approx(0.25)
    assert str(held["born"])[:10] == "1980-05-14"
    assert str(held["seen"]).startswith("2024-01-02 03:04:05")
    assert held["notes"] == "ünïcødé ✓"


# -- unreachable -------------------------------------------------------------------------------

PASSWORD = "s3cret-Pw0rd"


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://postgres:{PASSWORD}@127.0.0.1:1/test",
        f"mysql://root:{PASSWORD}@127.0.0.1:1/test",
    ],
    ids=["postgresql", "mariadb"],
)
def test_unreachable_database_fails_with_the_redacted_url(url: str) -> None:
    system = SystemSpec(url=url, name="warehouse", options={"connect_timeout": 3})
    redacted = url.replace(PASSWORD, "***")
    calls = {
        "check": lambda c: c.check(),
        "describe": lambda c: c.describe("accounts"),
        "count": lambda c: c.count("accounts"),
        "read": lambda c: next(iter(c.read("accounts"))),
        "get": lambda c: c.get("accounts", "id", [1]),
        "write": lambda c: c.write("accounts", [{"id": 1}], Operation.UPSERT, "id"),
    }
    for what, call in calls.items():
        with SqlConnector(system) as conn, pytest.raises(ConnectionFailed) as caught:
            call(conn)
        message = str(caught.value)
        assert "warehouse" in message, (what, message)
        assert redacted in message, (what, message)
        assert PASSWORD not in message, (what, message)
        assert PASSWORD not in repr(caught.value), what
        assert caught.value.__cause__ is None and caught.value.__suppress_context__, what


def test_unopenable_sqlite_file_fails_as_connection(tmp_path: Any) -> None:
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'x.db'}"
    with (
        SqlConnector(SystemSpec(url=url, name="legacy")) as conn,
        pytest.raises(ConnectionFailed, match="legacy"),
    ):
        conn.describe("accounts")


def test_unknown_table_and_column_are_named_with_a_suggestion(db: Any, sql: SqlConnector) -> None:
    table, _ = _items(db)
    from patchbay.errors import SpecError

    with pytest.raises(SpecError, match=f"did you mean '{table}'"):
        sql.describe(table[:-1])
    with pytest.raises(SpecError, match="did you mean 'label'"):
        sql.write(table, [{"num": 1, "lable": "x"}], Operation.UPSERT, "num")
    assert sa.inspect(db.engine).has_table(table)


# -- options ------------------------------------------------------------------------------------


def test_the_schema_and_pool_size_options(pg_url: str) -> None:
    """`schema` is where tables named without one are; `pool_size` the connections kept."""
    schema = f"pb_options_{random.randrange(1 << 30)}"
    admin = sa.create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://", 1))
    try:
        with admin.begin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
            conn.execute(sa.text(f"CREATE TABLE {schema}.accounts (id integer PRIMARY KEY, name text)"))
            conn.execute(sa.text(f"INSERT INTO {schema}.accounts VALUES (1, 'Acme')"))
        sql = SqlConnector(SystemSpec(url=pg_url, name="wh", options={"schema": schema, "pool_size": 2}))
        try:
            assert [r for page in sql.read("accounts") for r in page.records] == [{"id": 1, "name": "Acme"}]
            assert sql.engine.pool.size() == 2  # type: ignore[attr-defined]
        finally:
            sql.close()
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
