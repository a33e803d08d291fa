"""SIGKILL a migration of 200,000 rows in the middle, twice, then let a plain re-run resume it.

The destination must end holding exactly the source scope: nothing lost, nothing
duplicated, every value right, and the report of the resumed run must say complete.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psycopg
import pytest

ROWS = 200_000
BATCH = 4_000


def build_source(path: Path) -> None:
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, city TEXT, "
               "score REAL, joined TEXT, active TEXT)")
    db.executemany("INSERT INTO people VALUES (?, ?, ?, ?, ?, ?)", (
        (i, f"person {i}", ("Berlin", "Paris", "Austin", "Osaka")[i % 4], (i % 1000) / 10,
         f"20{10 + i % 15}-0{1 + i % 9}-1{i % 10} 12:00:00", "yes" if i % 3 else "no")
        for i in range(1, ROWS + 1)))
    db.commit()
    db.close()


def write_spec(directory: Path, destination_url: str, table: str,
               options: str = f"batch_size: {BATCH}") -> Path:
    spec = directory / "people.yaml"
    spec.write_text(f"""
systems:
  legacy: sqlite:///source.db
  target: {destination_url}
integrations:
  - name: people backup
    pattern: migration
    source: {{system: legacy, object: people, key: id}}
    transform:
      fields:
        person_id: id
        name: name
        city: {{from: city, map: {{Osaka: 大阪}}}}
        score: score
        joined: {{from: joined, type: datetime}}
        active: {{from: active, type: boolean}}
    destination: {{system: target, object: {table}, operation: upsert, key: person_id}}
    options: {{{options}}}
""")
    return spec


def batches_done(state: Path) -> int:
    if not state.exists():
        return 0
    try:
        with sqlite3.connect(state, timeout=5) as db:
            row = db.execute("SELECT max(batches) FROM patchbay_runs").fetchone()
    except sqlite3.OperationalError:
        return 0
    return int(row[0] or 0)


def start_run(directory: Path, spec: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "patchbay.cli", "run", str(spec), "--json"],
                            cwd=directory, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def kill_after(directory: Path, spec: Path, batches: int) -> None:
    """Start a run and SIGKILL it once `batches` batches are checkpointed."""
    process = start_run(directory, spec)
    state = directory / ".patchbay" / "state.db"
    deadline = time.monotonic() + 120
    while batches_done(state) < batches:
        assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
        assert time.monotonic() < deadline, "the run made no progress"
        time.sleep(0.02)
    os.kill(process.pid, signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL


def run_state(directory: Path) -> list[tuple[str, str, int]]:
    with sqlite3.connect(directory / ".patchbay" / "state.db") as db:
        return db.execute("SELECT id, status, batches FROM patchbay_runs").fetchall()


@pytest.fixture
def pg_table(pg_url: str):  # type: ignore[no-untyped-def]
    table = f"fault_people_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id serial PRIMARY KEY, person_id bigint UNIQUE "
                     "NOT NULL, name text, city text, score double precision, "
                     "joined timestamp, active boolean)")
    yield table
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")


def expected_rows() -> dict[int, tuple[object, ...]]:
    import datetime as dt

    out = {}
    for i in range(1, ROWS + 1):
        city = ("Berlin", "Paris", "Austin", "大阪")[i % 4]
        joined = dt.datetime(2010 + i % 15, 1 + i % 9, 10 + i % 10, 12)
        out[i] = (f"person {i}", city, (i % 1000) / 10, joined, bool(i % 3))
    return out


def kill_twice_then_resume(directory: Path, spec: Path) -> dict[str, object]:
    kill_after(directory, spec, batches=8)
    first = run_state(directory)
    assert len(first) == 1 and first[0][1] == "running", first
    kill_after(directory, spec, batches=25)
    second = run_state(directory)
    assert [run[:2] for run in second] == [(first[0][0], "running")], \
        "a re-run after a crash must resume the run, not start another"
    finish = start_run(directory, spec)
    out, err = finish.communicate(timeout=300)
    assert finish.returncode == 0, err.decode()
    report: dict[str, object] = json.loads(out)
    assert report["run"] == first[0][0]
    return report


def test_sigkill_twice_into_postgres_loses_and_duplicates_nothing(
        tmp_path: Path, pg_url: str, pg_table: str) -> None:
    build_source(tmp_path / "source.db")
    spec = write_spec(tmp_path, pg_url, pg_table)
    report = kill_twice_then_resume(tmp_path, spec)

    assert report["verdict"] == "complete"
    counts = report["counts"]
    assert isinstance(counts, dict)
    assert counts["read"] == ROWS and counts["rejected"] == 0 and counts["failed"] == 0
    comparison = report["comparison"]
    assert isinstance(comparison, dict)
    assert comparison["compared"] == ROWS and comparison["differing"] == 0
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(f"SELECT person_id, name, city, score, joined, active "
                            f"FROM {pg_table}").fetchall()
    assert len(rows) == ROWS
    held = {r[0]: tuple(r[1:]) for r in rows}
    assert held == expected_rows()


def test_sigkill_twice_into_table_without_unique_key_writes_each_record_once(
        tmp_path: Path) -> None:
    build_source(tmp_path / "source.db")
    with sqlite3.connect(tmp_path / "target.db") as db:
        db.execute("CREATE TABLE people_copy (person_id INTEGER NOT NULL, name TEXT, city TEXT, "
                   "score REAL, joined TIMESTAMP, active BOOLEAN)")
    spec = write_spec(tmp_path, "sqlite:///target.db", "people_copy")
    report = kill_twice_then_resume(tmp_path, spec)

    assert report["verdict"] == "complete"
    with sqlite3.connect(tmp_path / "target.db") as db:
        rows = db.execute("SELECT person_id, name, city, score, joined, active FROM people_copy "
                          "ORDER BY person_id").fetchall()
    # Every row, in key order, so a record written twice shows as two rows. SQLite keeps the
    # timestamp as text and the boolean as 0 or 1.
    assert rows == [(i, name, city, score, joined.strftime("%Y-%m-%d %H:%M:%S.%f"), int(active))
                    for i, (name, city, score, joined, active) in expected_rows().items()]
