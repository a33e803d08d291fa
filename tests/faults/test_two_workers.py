"""Two delivery workers share a broadcast's outbox on a PostgreSQL engine state; one is
killed mid-way. Every change still lands once at every destination."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from patchbay import run_integration
from tests.faults.test_kill_broadcast import stamp

ROWS = 3_000


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


def test_two_workers_one_killed_deliver_every_change_once(
        tmp_path: Path, pg_url: str, pg_state: tuple[str, str, str, str]) -> None:
    state, schema, warehouse, audit = pg_state
    db = sqlite3.connect(tmp_path / "source.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, qty INTEGER, updated_at TEXT)")
    db.executemany("INSERT INTO items VALUES (?, 0, ?)", [(i, stamp()) for i in range(1, ROWS + 1)])
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

    def start(command: str) -> subprocess.Popen[bytes]:
        extra = ["--no-api"] if command == "serve" else []
        return subprocess.Popen([sys.executable, "-m", "patchbay.cli", command, str(spec),
                                 "--state", state, *extra], cwd=tmp_path,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    server, helper = start("serve"), start("worker")
    try:
        for wave in range(4):
            for item in range(1 + wave, ROWS + 1, 3):
                db.execute("UPDATE items SET qty = qty + 1, updated_at = ? WHERE id = ?",
                           (stamp(), item))
            time.sleep(0.7)
            if wave == 1:
                assert helper.poll() is None, helper.stderr.read().decode() if helper.stderr else ""
                os.kill(helper.pid, signal.SIGKILL)
                assert helper.wait() == -signal.SIGKILL
                helper = start("worker")
        time.sleep(1)
    finally:
        for process in (server, helper):
            process.send_signal(signal.SIGINT)
        for process in (server, helper):
            process.wait(timeout=60)

    time.sleep(2.5)  # leases of the killed worker run out
    report = run_integration(spec, state=state)
    assert report["dead"] == 0
    counts = report["outbox"]
    assert counts["warehouse"]["pending"] == 0 and counts["audit"]["pending"] == 0

    expected = dict(db.execute("SELECT id, qty FROM items").fetchall())
    with psycopg.connect(pg_url) as conn:
        held = dict(conn.execute(f"SELECT item_id, qty FROM {schema}.{warehouse}").fetchall())
        audit_rows = conn.execute(f"SELECT count(*) FROM {schema}.{audit}").fetchone()
        deliveries = conn.execute(
            f"SELECT count(*), count(DISTINCT (record_key, version)) FROM {schema}.patchbay_outbox "
            "WHERE destination = 'audit' AND status = 'delivered'").fetchone()
    assert held == expected
    assert deliveries is not None and deliveries[0] == deliveries[1], "no change queued twice"
    assert audit_rows == (deliveries[0],), "every audited change written exactly once"
