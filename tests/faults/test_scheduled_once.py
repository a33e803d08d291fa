"""Two `patchbay serve` processes on one PostgreSQL engine state serve an aggregation due
every half second: over more than 50 due times, each ran once, in one of the two processes.

Each run writes the time it ran into a destination row; a trigger logs every write with the
application name of the process's connection, so a due time run by both processes would
show as two writes for one claimed due time."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.faults.test_kill_broadcast import stop

TICKS = 50
EVERY_SECONDS = 0.5


@pytest.fixture
def schema(pg_url: str) -> Iterator[str]:
    name = f"fault_schedule_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
        conn.execute(f"CREATE TABLE {name}.beats (id integer PRIMARY KEY)")
        conn.execute(f"INSERT INTO {name}.beats VALUES (1)")
        conn.execute(f"CREATE TABLE {name}.ran (id integer PRIMARY KEY, at timestamptz)")
        # Every run updates this row: runs of two due times that overlap (the first ones,
        # while DuckDB loads) would otherwise both insert it, and one would be refused.
        conn.execute(f"INSERT INTO {name}.ran VALUES (1, NULL)")
        conn.execute(f"CREATE TABLE {name}.fired (n serial PRIMARY KEY, by text, at timestamptz)")
        conn.execute(f"""CREATE FUNCTION {name}.log_run() RETURNS trigger AS $$
            BEGIN INSERT INTO {name}.fired (by, at)
                  VALUES (current_setting('application_name'), NEW.at); RETURN NEW; END
            $$ LANGUAGE plpgsql""")
        conn.execute(f"CREATE TRIGGER log_run AFTER UPDATE ON {name}.ran "
                     f"FOR EACH ROW EXECUTE FUNCTION {name}.log_run()")
    yield name
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {name} CASCADE")


def test_two_processes_never_run_the_same_scheduled_run_twice(
        tmp_path: Path, pg_url: str, schema: str) -> None:
    state = f"{pg_url}?options=-csearch_path%3D{schema}"
    spec = tmp_path / "tick.yaml"
    spec.write_text(f"""
systems:
  pg: {state}
integrations:
  - name: tick
    pattern: aggregation
    sources: [{{name: beats, system: pg, object: beats, transform: {{fields: {{id: id}}}}}}]
    merge: {{union: [beats], key: id}}
    destinations:
      - {{system: pg, object: ran, key: id, transform: {{fields: {{id: id, at: {{expr: "now()"}}}}}}}}
    schedule: {{every_seconds: {EVERY_SECONDS}}}
""")
    watch = psycopg.connect(pg_url, autocommit=True)

    def start(slot: int) -> subprocess.Popen[bytes]:
        log = tmp_path / f"serve-{slot}.log"
        with log.open("wb") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "patchbay.cli", "serve", str(spec), "--state", state,
                 "--no-api"], cwd=tmp_path, env={**os.environ, "PGAPPNAME": f"serve-{slot}"},
                stdout=out, stderr=subprocess.STDOUT)

    def claimed() -> list[tuple[str, str]]:
        """(due time, process) of every claimed run."""
        try:
            return watch.execute(f"SELECT tick, process FROM {schema}.patchbay_ticks "
                                 "WHERE integration = 'tick' ORDER BY tick").fetchall()
        except psycopg.errors.UndefinedTable:
            return []

    servers = [start(0), start(1)]
    try:
        deadline = time.monotonic() + 120
        while len(claimed()) < TICKS:
            assert all(p.poll() is None for p in servers), \
                (tmp_path / "serve-0.log").read_text() + (tmp_path / "serve-1.log").read_text()
            assert time.monotonic() < deadline, f"{TICKS} due times did not come in 120 s"
            time.sleep(0.1)
        time.sleep(2 * EVERY_SECONDS)  # the last runs claimed have written
    finally:
        stopped = [stop(process) for process in servers]
    assert stopped == [True, True]

    runs = claimed()
    fired = watch.execute(f"SELECT by, at FROM {schema}.fired ORDER BY n").fetchall()
    watch.close()
    claimers = {process.split(":")[1] for _, process in runs}
    assert claimers == {str(p.pid) for p in servers}, "both processes claimed due times"
    assert {by for by, _ in fired} == {"serve-0", "serve-1"}, "both processes ran some"
    assert len(fired) == len(runs) >= TICKS, \
        f"one run per claimed due time: {len(fired)} runs for {len(runs)} due times"
    assert len({at for _, at in fired}) == len(fired), "no two runs wrote the same run's time"
