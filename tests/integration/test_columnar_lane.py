"""The columnar lane gives exactly what the record lane gives, and hands it dirty batches.

A SQLite source into PostgreSQL (upsert by a unique key) takes the columnar lane when the
transform allows; the same run with `columnar: false` goes record by record. Both must
leave identical destinations and identical reports (but for the lane counts).
"""

from __future__ import annotations

import datetime as dt
import sqlite3
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest

from patchbay import run_integration

ROWS = 1_000
BATCH = 100
DIRTY = {250: ("amount", "twelve"), 777: ("joined", "31/02/2020")}


def build_source(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, city TEXT, "
                   "amount TEXT, joined TEXT, score REAL, vip TEXT)")
        rows = []
        for i in range(1, ROWS + 1):
            row = {"id": i, "name": f"  person {i} ", "city": None if i % 10 == 0 else "Lyon",
                   "amount": f"{i * 3}.25", "joined": f"2021-0{1 + i % 9}-1{i % 10} 08:30:00",
                   "score": i / 8, "vip": "true" if i % 7 == 0 else "false"}
            if i in DIRTY:
                field, value = DIRTY[i]
                row[field] = value
            rows.append(tuple(row.values()))
        db.executemany("INSERT INTO people VALUES (?, ?, ?, ?, ?, ?, ?)", rows)


@pytest.fixture
def tables(pg_url: str) -> Iterator[tuple[str, str]]:
    names = (f"lane_c_{uuid.uuid4().hex[:8]}", f"lane_r_{uuid.uuid4().hex[:8]}")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for name in names:
            conn.execute(f"CREATE TABLE {name} (id serial PRIMARY KEY, person_id bigint UNIQUE "
                         "NOT NULL, name varchar(40) NOT NULL, city text, amount numeric(10,2), "
                         "joined timestamp, score double precision, vip boolean, origin text)")
    yield names
    with psycopg.connect(pg_url, autocommit=True) as conn:
        for name in names:
            conn.execute(f"DROP TABLE IF EXISTS {name}")


def spec_for(directory: Path, pg_url: str, table: str, columnar: bool) -> Path:
    spec = directory / f"{table}.yaml"
    spec.write_text(f"""
systems:
  legacy: sqlite:///source.db
  pg: {pg_url}
integrations:
  - name: people {table}
    pattern: migration
    source: {{system: legacy, object: people, key: id}}
    transform:
      fields:
        person_id: id
        name: {{from: name, trim: true, required: true}}
        city: {{from: city, default: unknown}}
        amount: {{from: amount, type: number}}
        joined: {{from: joined, type: datetime}}
        score: score
        vip: {{from: vip, type: boolean}}
        origin: {{value: legacy}}
    destination: {{system: pg, object: {table}, operation: upsert, key: person_id}}
    options: {{batch_size: {BATCH}, columnar: {str(columnar).lower()}}}
""")
    return spec


def contents(pg_url: str, table: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg_url) as conn:
        return conn.execute(f"SELECT person_id, name, city, amount, joined, score, vip, origin "
                            f"FROM {table} ORDER BY person_id").fetchall()


def comparable(report: dict[str, Any]) -> dict[str, Any]:
    comparison = report["comparison"]
    return {"counts": report["counts"], "verdict": report["verdict"],
            "compared": comparison["compared"], "differing": comparison["differing"],
            "missing": comparison["missing_in_destination"]}


def test_both_lanes_leave_the_same_destination_and_report(
        tmp_path: Path, pg_url: str, tables: tuple[str, str]) -> None:
    build_source(tmp_path / "source.db")
    lane_table, record_table = tables
    state = tmp_path / "state"
    fast = run_integration(spec_for(tmp_path, pg_url, lane_table, True), state=state)
    slow = run_integration(spec_for(tmp_path, pg_url, record_table, False), state=state)

    assert fast["batches"] == {"columnar": ROWS // BATCH - len(DIRTY), "record": len(DIRTY)}
    assert slow["batches"] == {"columnar": 0, "record": ROWS // BATCH}
    assert comparable(fast) == comparable(slow)
    assert fast["verdict"] == "complete_with_rejects"
    assert fast["counts"]["rejected"] == len(DIRTY) and fast["counts"]["created"] == ROWS - 2
    assert contents(pg_url, lane_table) == contents(pg_url, record_table)

    first = contents(pg_url, lane_table)[0]
    assert first == (1, "person 1", "Lyon", Decimal("3.25"), dt.datetime(2021, 2, 11, 8, 30),
                     0.125, False, "legacy")
    by_id = {row[0]: row for row in contents(pg_url, lane_table)}
    assert by_id[10][2] == "unknown", "a null city takes the default in the columnar lane"
    assert set(DIRTY).isdisjoint(by_id)


def test_rerun_and_a_changed_record_go_through_the_lane_staging_path(
        tmp_path: Path, pg_url: str, tables: tuple[str, str]) -> None:
    build_source(tmp_path / "source.db")
    table = tables[0]
    spec = spec_for(tmp_path, pg_url, table, True)
    state = tmp_path / "state"
    run_integration(spec, state=state)
    with sqlite3.connect(tmp_path / "source.db") as db:
        db.execute("UPDATE people SET name = 'renamed' WHERE id = 5")

    again = run_integration(spec, state=state, fresh=True)
    assert again["batches"]["columnar"] == ROWS // BATCH - len(DIRTY)
    assert (again["counts"]["updated"], again["counts"]["created"]) == (1, 0)
    assert again["counts"]["unchanged"] == ROWS - len(DIRTY) - 1
    assert again["comparison"]["differing"] == 0 and again["verdict"] == "complete_with_rejects"
    assert {row[0]: row[1] for row in contents(pg_url, table)}[5] == "renamed"


def test_lane_read_back_catches_a_destination_that_alters_values(
        tmp_path: Path, pg_url: str, tables: tuple[str, str]) -> None:
    build_source(tmp_path / "source.db")
    table = tables[0]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"""
            CREATE FUNCTION {table}_shout() RETURNS trigger AS $$
            BEGIN NEW.city := upper(NEW.city); RETURN NEW; END $$ LANGUAGE plpgsql;
            CREATE TRIGGER {table}_shout BEFORE INSERT ON {table}
            FOR EACH ROW WHEN (NEW.person_id = 42) EXECUTE FUNCTION {table}_shout();""")
    try:
        report = run_integration(spec_for(tmp_path, pg_url, table, True), state=tmp_path / "s")
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE {table}; DROP FUNCTION {table}_shout()")
    assert report["verdict"] == "incomplete"
    assert report["comparison"]["differing"] == 1
    assert {"key": 42, "field": "city", "expected": "Lyon", "actual": "LYON"} in \
        report["comparison"]["samples"]
    assert report["comparison"]["fields"]["city"]["match"] is False
