"""Two delivery workers share a broadcast's outbox on a PostgreSQL engine state; one is
killed in the middle of a batch. Every change still lands once at every destination, and
the last run delivers only what the workers left."""

from __future__ import annotations

import random
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from patchbay import run_integration
from tests.faults.test_kill_broadcast import Items, kill_in_flight, owned_by, stop

ROWS = 1_500


@pytest.fixture
def pg_state(pg_url: str) -> Iterator[tuple[str, str, str, str]]:
    """(state URL, schema, warehouse table, audit table), all in a schema of their own."""
    schema = f"fault_workers_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"CREATE TABLE {schema}.warehouse (item_id bigint PRIMARY KEY, qty integer)")
        conn.execute(f"CREATE TABLE {schema}.audit (change text PRIMARY KEY, item_id bigint, "
                     "qty integer)")
    yield f"{pg_url}?options=-csearch_path%3D{schema}", schema, "warehouse", "audit"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def conn(pg_url: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """A connection to watch the outbox and read the destinations with."""
    with psycopg.connect(pg_url, autocommit=True) as watching:
        yield watching


def test_two_workers_one_killed_mid_batch_deliver_every_change_once(
        tmp_path: Path, pg_url: str, pg_state: tuple[str, str, str, str],
        conn: psycopg.Connection[tuple[Any, ...]]) -> None:
    state, schema, warehouse, audit = pg_state
    items = Items(tmp_path / "source.db", ROWS)
    target = f"{pg_url}?options=-csearch_path%3D{schema}"
    spec = tmp_path / "items.yaml"
    spec.write_text(f"""
systems:
  source: sqlite:///source.db
  pg: {target}
integrations:
  - name: items to two tables
    pattern: broadcast
    source: {{system: source, object: items, key: id, watermark: updated_at}}
    trigger: {{poll_seconds: 0.05}}
    destinations:
      - {{name: warehouse, system: pg, object: {warehouse}, key: item_id,
          transform: {{fields: {{item_id: id, qty: qty}}}}}}
      - {{name: audit, system: pg, object: {audit}, key: change,
          transform: {{fields: {{change: {{expr: "concat(id, '@', updated_at)"}}, item_id: id, qty: qty}}}}}}
    options: {{batch_size: 100, lease_seconds: 2, backoff_seconds: 0.1}}
""")

    def start(command: str) -> tuple[subprocess.Popen[bytes], Path]:
        extra = ["--no-api"] if command == "serve" else []
        log = tmp_path / f"{command}-{time.monotonic_ns()}.log"
        with log.open("wb") as out:
            return subprocess.Popen([sys.executable, "-m", "patchbay.cli", command, str(spec),
                                     "--state", state, *extra], cwd=tmp_path,
                                    stdout=out, stderr=subprocess.STDOUT), log

    def outbox(where: str = "TRUE", *args: object) -> list[tuple[Any, ...]]:
        """(id, destination, record_key, version, status) of the deliveries `where` selects."""
        try:
            return conn.execute("SELECT id, destination, record_key, version, status FROM "
                                f"{schema}.patchbay_outbox WHERE {where}", args).fetchall()
        except psycopg.errors.UndefinedTable:  # serve has not made the engine state yet
            return []

    def all_noticed() -> None:
        """Wait until serve has queued every state the test wrote: then no item changes
        twice between two polls, and the audit must hold every state written."""
        deadline = time.monotonic() + 120
        while len(outbox("destination = 'audit'")) < len(items.written):
            assert server.poll() is None, server_log.read_text(errors="replace")
            assert time.monotonic() < deadline, "serve did not notice the changes within 120 s"
            time.sleep(0.05)

    def nudge() -> None:
        for item in random.Random(len(items.written)).sample(range(1, ROWS + 1), 100):
            items.change(item)
        all_noticed()

    (server, server_log), (helper, helper_log) = start("serve"), start("worker")
    try:
        all_noticed()
        for wave in range(4):
            for item in range(1 + wave, ROWS + 1, 3):
                items.change(item)
            all_noticed()
            if wave == 1:
                for _ in range(5):
                    def leases(pid: int = helper.pid) -> set[int]:
                        return {row[0] for row in outbox(
                            "status = 'pending' AND lease_owner LIKE %s", owned_by(pid))}
                    in_flight = kill_in_flight(helper, leases, nudge, helper_log)
                    helper, helper_log = start("worker")
                    if in_flight:
                        break
                assert in_flight, "none of 5 kills came while the helper held leases"
        time.sleep(1)
    finally:
        stopped = [stop(process) for process in (server, helper)]
    assert stopped == [True, True], "serve and the worker end on Ctrl-C"

    time.sleep(2.5)  # leases of the killed worker run out
    before = outbox()
    pending = sum(1 for row in before if row[4] == "pending")
    report = run_integration(spec, state=state)
    assert (report["changes"], report["delivered"], report["dead"]) == (0, pending, 0), \
        "every change was noticed before; the last run delivered only what the workers left"
    assert report["outbox"] == {name: {"pending": 0, "delivered": len(items.written), "dead": 0,
                                       "discarded": 0} for name in ("warehouse", "audit")}
    assert {row[4] for row in outbox("id = ANY(%s)", list(in_flight))} == {"delivered"}, \
        "what the helper held when killed was delivered after its leases ran out"

    expected = {i: qty for i, (_, qty, _) in items.current().items()}
    held = dict(conn.execute(f"SELECT item_id, qty FROM {schema}.{warehouse}").fetchall())
    audited = conn.execute(f"SELECT change, item_id, qty FROM {schema}.{audit}").fetchall()
    assert held == expected
    delivered = [(row[2], row[3]) for row in outbox("destination = 'audit' AND status = 'delivered'")]
    assert len(delivered) == len(set(delivered)), "no change queued twice"
    assert sorted(audited) == sorted((f"{i}@{at}", i, qty) for (i, at), qty in items.written.items()), \
        "the audit holds every state the test wrote, each once, with its qty"
