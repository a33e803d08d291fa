"""PostgreSQL, one destination of a broadcast, really stops and starts again while about
5,000 changes flow (the engine state is SQLite, so only the destination goes away): the
JSON Lines audit keeps up during the outage, and afterwards the table equals the source,
nothing is dead and no change is written twice."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from patchbay import run_integration
from tests.faults.broadcast_outage import (
    ChangingSource,
    assert_alive,
    assert_final_state,
    assert_kept_up,
    audit_last_qty,
    create_table,
    drop_table,
    outbox,
    serving,
    wait_drained,
    warehouse,
    write_spec,
)
from tests.faults.test_postgres_restart import cluster, wait_for

ROWS = 500
PER_SECOND = 200
DOWN_SECONDS = 10
LAG = 5.0
"""How far behind the source a healthy destination may be: a few poll and delivery rounds,
with room for a busy machine; a destination held up by the outage lags by all of it."""


def ensure_up(pg_url: str) -> None:
    """Start PostgreSQL unless it answers: whatever happened to the test, other tests need it."""
    try:
        psycopg.connect(pg_url, connect_timeout=2).close()
    except psycopg.OperationalError:
        cluster("start")
    wait_for(pg_url, up=True)


@pytest.fixture
def table(pg_url: str) -> Iterator[str]:
    name = f"fault_pgbcast_{uuid.uuid4().hex[:8]}"
    create_table(pg_url, name)
    try:
        yield name
    finally:
        ensure_up(pg_url)
        drop_table(pg_url, name)


@pytest.mark.slow
def test_a_postgres_restart_under_a_broadcast_loses_nothing_and_stalls_no_other_destination(
        tmp_path: Path, pg_url: str, table: str) -> None:
    source = ChangingSource(tmp_path / "source.db", ROWS, PER_SECOND)
    spec = write_spec(tmp_path, pg_url, table)
    with serving(tmp_path, spec) as process:
        source.start()
        try:
            time.sleep(8)
            assert_alive(process, tmp_path)
            assert sum(qty for _, qty in warehouse(pg_url, table).values()) > 0, \
                "the warehouse received nothing before the outage"
            try:
                cluster("stop")
                wait_for(pg_url, up=False)
                start = time.monotonic()
                time.sleep(DOWN_SECONDS)
                end = time.monotonic()
                audit = audit_last_qty(tmp_path)
                stuck = outbox(tmp_path)["warehouse"]["pending"]
            finally:
                ensure_up(pg_url)
            made = assert_kept_up(source, start, end, LAG, {"audit": audit})
            assert stuck > 0, "the warehouse had nothing waiting: PostgreSQL was not really down"
            time.sleep(6)  # changes go on flowing into the restarted database
        finally:
            source.stop()
        assert_alive(process, tmp_path)
        counts = wait_drained(tmp_path, process, source, timeout=60)
    assert process.returncode == 0, "patchbay serve did not stop cleanly on Ctrl-C"

    assert counts["warehouse"]["dead"] == 0 and counts["audit"]["dead"] == 0, counts
    report = run_integration(spec, state=tmp_path / ".patchbay")
    assert report["changes"] == 0 and report["delivered"] == 0, "serve had delivered everything"
    assert report["dead"] == 0
    assert len(source.log) >= 4_000, f"only {len(source.log)} changes flowed"
    assert made >= 800
    assert_final_state(tmp_path, source, pg_url, table)
