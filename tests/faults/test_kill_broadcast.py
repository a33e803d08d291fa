"""SIGKILL `patchbay serve` at random points while changes flow, restart it each time:
every destination ends equal to the source, and no change is delivered twice."""

from __future__ import annotations

import datetime as dt
import json
import os
import random
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

ROWS = 2_000
KILLS = 20


@pytest.fixture
def table(pg_url: str) -> Iterator[str]:
    name = f"fault_bcast_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {name} (item_id bigint PRIMARY KEY, label text, qty integer)")
    yield name
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {name}")


def stamp() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


def write_spec(directory: Path, pg_url: str, table: str) -> Path:
    (directory / "audit").mkdir()
    spec = directory / "items.yaml"
    spec.write_text(f"""
systems:
  source: sqlite:///source.db
  warehouse: {pg_url}
  audit: {{url: "file:audit", options: {{fields: [change, item_id, qty]}}}}
integrations:
  - name: items
    pattern: broadcast
    source: {{system: source, object: items, key: id, watermark: updated_at}}
    trigger: {{poll_seconds: 0.05}}
    destinations:
      - name: warehouse
        system: warehouse
        object: {table}
        key: item_id
        transform: {{fields: {{item_id: id, label: label, qty: qty}}}}
      - name: audit
        system: audit
        object: changes.jsonl
        key: change
        transform: {{fields: {{change: {{expr: "concat(id, '@', updated_at)"}}, item_id: id, qty: qty}}}}
    options: {{batch_size: 200, lease_seconds: 2, backoff_seconds: 0.1, backoff_max_seconds: 1}}
""")
    return spec


def test_killing_the_worker_twenty_times_while_changes_flow_loses_and_duplicates_nothing(
        tmp_path: Path, pg_url: str, table: str) -> None:
    rng = random.Random(11)
    db = sqlite3.connect(tmp_path / "source.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, label TEXT, qty INTEGER, updated_at TEXT)")
    db.executemany("INSERT INTO items VALUES (?, ?, ?, ?)",
                   [(i, f"item {i}", 0, stamp()) for i in range(1, ROWS + 1)])
    spec = write_spec(tmp_path, pg_url, table)
    kills = 0
    for _ in range(KILLS):
        worker = subprocess.Popen([sys.executable, "-m", "patchbay.cli", "serve", str(spec), "--no-api"],
                                  cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        for _ in range(rng.randrange(300, 700)):
            item = rng.randrange(1, ROWS + 1)
            db.execute("UPDATE items SET qty = qty + 1, updated_at = ? WHERE id = ?", (stamp(), item))
        time.sleep(rng.uniform(0.3, 1.5))
        assert worker.poll() is None, worker.stderr.read().decode() if worker.stderr else ""
        os.kill(worker.pid, signal.SIGKILL)
        assert worker.wait() == -signal.SIGKILL
        kills += 1
    assert kills == KILLS

    time.sleep(2.5)  # the last killed worker's leases (lease_seconds: 2) run out
    report = run_integration(spec, state=tmp_path / ".patchbay")
    assert report["outbox"]["warehouse"]["pending"] == 0 and report["outbox"]["audit"]["pending"] == 0
    assert report["dead"] == 0 and report["outbox"]["warehouse"]["dead"] == 0

    expected = {i: (label, qty) for i, label, qty in db.execute("SELECT id, label, qty FROM items")}
    with psycopg.connect(pg_url) as conn:
        held = {r[0]: (r[1], r[2]) for r in conn.execute(f"SELECT item_id, label, qty FROM {table}")}
    assert held == expected

    lines = [json.loads(line) for line in
             (tmp_path / "audit" / "changes.jsonl").read_text().splitlines() if line.strip()]
    changes = [line["change"] for line in lines]
    assert len(changes) == len(set(changes)), "no change was written twice"
    last = {}
    for line in lines:
        last[int(line["item_id"])] = int(line["qty"])
    assert last == {i: qty for i, (_, qty) in expected.items()}, \
        "the audit's last line of each item is its current state: order kept per record"
