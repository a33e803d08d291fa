"""`patchbay run --workers 3` on a PostgreSQL state; the holder of a key range is SIGKILLed six
times while the migration runs. Each time another worker takes the range over within the
lease time, from the range's checkpoint; the destination ends equal to the source, each
record once, and the run has exactly one report."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

ROWS = int(os.environ.get("PATCHBAY_SPLIT_ROWS", "300000"))
KILLS = 6
LEASE = 2.0
POLL = LEASE / 10
"""How often a worker without a range looks for one (runtime/partitions.poll_seconds)."""
SLACK = 0.5
"""Time for the new holder's lease to commit and for this test to see it."""


def build_source(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, city TEXT, "
                   "score REAL, joined TEXT)")
        db.executemany("INSERT INTO people VALUES (?, ?, ?, ?, ?)", (
            (i, f"person {i}", ("Berlin", "Paris", "Austin", "Osaka")[i % 4], (i % 1000) / 10,
             f"20{10 + i % 15}-0{1 + i % 9}-1{i % 10} 12:00:00") for i in range(1, ROWS + 1)))


@pytest.fixture
def schema(pg_url: str) -> Iterator[str]:
    name = f"fault_split_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
        # no unique key but the surrogate one: a record written twice would be two rows
        conn.execute(f"CREATE TABLE {name}.people (row_id serial PRIMARY KEY, person_id bigint "
                     "NOT NULL, name text, city text, score double precision, joined timestamp)")
        conn.execute(f"CREATE UNIQUE INDEX ON {name}.people (person_id)")
    yield name
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {name} CASCADE")


def holders(conn: psycopg.Connection[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """(number, holder, token, position, status) of every range, while the state has them."""
    try:
        return conn.execute("SELECT number, holder, token, position, status "
                            "FROM patchbay_key_ranges ORDER BY number").fetchall()
    except psycopg.errors.UndefinedTable:
        return []


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_range_holders_killed_six_times_are_taken_over_within_the_lease(
        tmp_path: Path, pg_url: str, schema: str) -> None:
    build_source(tmp_path / "source.db")
    url = f"{pg_url}?options=-csearch_path%3D{schema}"
    (tmp_path / "people.yaml").write_text(f"""
systems:
  legacy: sqlite:///source.db
  pg: {url}
integrations:
  - name: people backup
    pattern: migration
    source: {{system: legacy, object: people, key: id}}
    transform:
      fields:
        person_id: id
        name: name
        city: city
        score: score
        joined: {{from: joined, type: datetime}}
    destination: {{system: pg, object: people, operation: upsert, key: person_id}}
    options: {{batch_size: 500, lease_seconds: {LEASE}}}
""")
    log = (tmp_path / "run.log").open("wb")
    running = subprocess.Popen([sys.executable, "-m", "patchbay.cli", "run", "people.yaml",
                                "--workers", "3", "--state", url, "--json"], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=log)
    takeovers: list[float] = []
    with psycopg.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + 90
        while len(takeovers) < KILLS:
            assert running.poll() is None, f"the run ended after {len(takeovers)} kills"
            assert time.monotonic() < deadline, "the run made no progress"
            # a holder that has checkpointed in its range: it dies mid-range
            held = [r for r in holders(conn) if r[1] and r[3] is not None and r[4] == "open"
                    and alive(int(r[1].rpartition(":")[2]))]
            if not held:
                time.sleep(0.02)
                continue
            number, holder, token, position, _ = held[0]
            pid = int(holder.rpartition(":")[2])
            os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            while True:
                now = {r[0]: r for r in holders(conn)}[number]
                if now[2] > token:  # leased again: another worker took the range
                    break
                assert time.monotonic() - killed < LEASE * 3, "nobody took the range over"
                time.sleep(0.01)
            takeovers.append(time.monotonic() - killed)
            assert now[1] != holder, "the killed worker cannot have taken it"
            assert now[3] is not None and now[3] >= position, "resumed from its checkpoint"
    out, _ = running.communicate(timeout=120)
    log.close()
    assert running.returncode == 0, (tmp_path / "run.log").read_text()
    report = json.loads(out)

    assert max(takeovers) <= LEASE + POLL + SLACK, takeovers
    assert report["verdict"] == "complete", report["verdict_reasons"]
    assert report["counts"]["read"] == ROWS and report["counts"]["failed"] == 0
    assert report["comparison"]["compared"] == ROWS and report["comparison"]["differing"] == 0
    assert sum(r["takeovers"] for r in report["ranges"]["each"]) == KILLS
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT person_id, name, city, score, joined FROM people").fetchall()
        runs = conn.execute("SELECT status, report IS NOT NULL FROM patchbay_runs").fetchall()
    assert len(rows) == ROWS, "each record once"
    cities = ("Berlin", "Paris", "Austin", "Osaka")
    assert {r[0]: r[1:] for r in rows} == {
        i: (f"person {i}", cities[i % 4], (i % 1000) / 10,
            dt.datetime(2010 + i % 15, 1 + i % 9, 10 + i % 10, 12)) for i in range(1, ROWS + 1)}
    assert runs == [("complete", True)], "exactly one run, with one report"
    assert [p.name for p in (tmp_path / ".patchbay" / "runs").iterdir()] == [report["run"]]
