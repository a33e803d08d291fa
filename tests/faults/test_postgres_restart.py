"""PostgreSQL really stops in the middle of a migration and starts again: the run rides
through the outage with retries and ends with exactly the source in the table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.faults.test_kill_migration import (
    ROWS,
    batches_done,
    build_source,
    expected_rows,
    write_spec,
)

CLUSTER_VERSION = sorted(os.listdir("/etc/postgresql"))[0] if os.path.isdir("/etc/postgresql") \
    else None


def cluster(action: str) -> None:
    assert CLUSTER_VERSION is not None, "no local PostgreSQL cluster to stop and start"
    subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", CLUSTER_VERSION, "main",
                    action], check=True, capture_output=True, timeout=120)


def wait_for(pg_url: str, up: bool) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            psycopg.connect(pg_url, connect_timeout=2).close()
            if up:
                return
        except psycopg.OperationalError:
            if not up:
                return
        time.sleep(0.2)
    raise AssertionError(f"PostgreSQL did not come {'up' if up else 'down'}")


@pytest.fixture
def table(pg_url: str) -> Iterator[str]:
    name = f"fault_restart_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (person_id bigint PRIMARY KEY, name text, city text, "
                     "score double precision, joined timestamp, active boolean)")
    yield name
    wait_for(pg_url, up=True)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")


def test_a_postgres_restart_mid_run_loses_and_duplicates_nothing(
        tmp_path: Path, pg_url: str, table: str) -> None:
    build_source(tmp_path / "source.db")
    spec = write_spec(tmp_path, pg_url, table,
                      "batch_size: 2000, write_attempts: 12, retry_backoff_seconds: 0.5")
    process = subprocess.Popen([sys.executable, "-m", "patchbay.cli", "run", str(spec), "--json"],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        while batches_done(tmp_path / ".patchbay" / "state.db") < 10:
            assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
            time.sleep(0.02)
        cluster("stop")
        wait_for(pg_url, up=False)
        time.sleep(3)
    finally:
        cluster("start")
    wait_for(pg_url, up=True)
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err.decode()
    report = json.loads(out)
    assert report["verdict"] == "complete"
    assert report["counts"]["read"] == ROWS and report["counts"]["failed"] == 0
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(f"SELECT person_id, name, city, score, joined, active "
                            f"FROM {table}").fetchall()
    assert len(rows) == ROWS
    assert {r[0]: tuple(r[1:]) for r in rows} == expected_rows()
