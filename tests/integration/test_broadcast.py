"""Broadcast end to end: one SQL source, three destinations, dead letters and replay."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from patchbay import run_integration
from patchbay.store import Store

NAME = "Opportunities - broadcast"


def source(path: Path, rows: list[tuple[int, str, str, float, str]]) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE IF NOT EXISTS opportunities (id INTEGER PRIMARY KEY, name TEXT, "
                   "stage TEXT, amount REAL, updated_at TEXT)")
        db.executemany("INSERT OR REPLACE INTO opportunities VALUES (?, ?, ?, ?, ?)", rows)


@pytest.fixture
def erp(pg_url: str) -> Iterator[str]:
    table = f"sales_orders_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (opportunity_id bigint PRIMARY KEY, name text "
                     "NOT NULL, amount numeric(12, 2) NOT NULL)")
    yield table
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")


def spec(directory: Path, pg_url: str, erp: str, unreachable: bool = False) -> Path:
    with sqlite3.connect(directory / "small.db") as db:
        db.execute("CREATE TABLE IF NOT EXISTS small_deals (id INTEGER PRIMARY KEY, name TEXT, "
                   "amount REAL CHECK (amount < 1000))")
    (directory / "audit").mkdir(exist_ok=True)
    path = directory / "broadcast.yaml"
    path.write_text(f"""
systems:
  crm: sqlite:///crm.db
  erp: {"postgresql://nobody@127.0.0.1:1/none" if unreachable else pg_url}
  small: sqlite:///small.db
  audit: {{url: "file:audit", options: {{fields: [change, id, stage, amount]}}}}
integrations:
  - name: {NAME}
    pattern: broadcast
    source: {{system: crm, object: opportunities, key: id, watermark: updated_at}}
    trigger: {{poll_seconds: 0.2}}
    destinations:
      - name: erp
        system: erp
        object: {erp}
        key: opportunity_id
        filter: {{field: stage, eq: Closed Won}}
        transform: {{fields: {{opportunity_id: id, name: name, amount: amount}}}}
      - name: audit
        system: audit
        object: opportunity-changes.jsonl
        key: change
        transform:
          fields:
            change: {{expr: "concat(id, '@', updated_at)"}}
            id: id
            stage: stage
            amount: amount
      - name: small
        system: small
        object: small_deals
        key: id
        transform: {{fields: {{id: id, name: name, amount: amount}}}}
    options: {{batch_size: 50, max_attempts: 3, backoff_seconds: 0, backoff_max_seconds: 0}}
""")
    return path


def erp_rows(pg_url: str, table: str) -> dict[int, tuple[str, float]]:
    with psycopg.connect(pg_url) as conn:
        return {r[0]: (r[1], float(r[2])) for r in conn.execute(f"SELECT * FROM {table}")}


def audit_lines(directory: Path) -> list[dict[str, object]]:
    text = (directory / "audit" / "opportunity-changes.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_every_change_reaches_every_destination_and_dead_letters_replay(
        tmp_path: Path, pg_url: str, erp: str) -> None:
    source(tmp_path / "crm.db", [
        (1, "Small win", "Closed Won", 500.0, "2026-01-01 10:00:00"),
        (2, "Big win", "Closed Won", 25000.0, "2026-01-01 10:00:00"),
        (3, "Open deal", "Prospecting", 700.0, "2026-01-01 10:00:01"),
        (4, "Lost deal", "Closed Lost", 90.0, "2026-01-01 10:00:02")])
    path = spec(tmp_path, pg_url, erp)
    state = tmp_path / "state"

    first = run_integration(path, state=state)
    assert (first["changes"], first["delivered"], first["dead"]) == (4, 2 + 4 + 3, 1)
    assert erp_rows(pg_url, erp) == {1: ("Small win", 500.0), 2: ("Big win", 25000.0)}
    assert {line["change"] for line in audit_lines(tmp_path)} == {
        "1@2026-01-01 10:00:00", "2@2026-01-01 10:00:00", "3@2026-01-01 10:00:01",
        "4@2026-01-01 10:00:02"}
    store = Store.open(directory=state)
    [letter] = store.outbox.dead_letters(NAME)
    assert (letter.destination, letter.record_key) == ("small", "2")
    assert "CHECK" in (letter.last_error or "") or "constraint" in (letter.last_error or "").lower()

    source(tmp_path / "crm.db", [(3, "Open deal", "Closed Won", 750.0, "2026-01-02 09:00:00"),
                                 (2, "Big win", "Closed Won", 26000.0, "2026-01-02 09:00:01")])
    second = run_integration(path, state=state)
    assert second["changes"] == 2
    assert erp_rows(pg_url, erp)[3] == ("Open deal", 750.0)
    assert erp_rows(pg_url, erp)[2] == ("Big win", 26000.0)
    assert len(audit_lines(tmp_path)) == 6, "one audit line per change, none twice"
    counts = store.outbox.counts(NAME)["small"]
    assert counts["dead"] == 1 and counts["pending"] == 1, \
        "deal 2's newer change waits behind its dead letter"

    again = run_integration(path, state=state)
    assert again["changes"] == 0 and again["delivered"] == 0, "nothing is delivered twice"

    with sqlite3.connect(tmp_path / "small.db") as db:  # someone lifts the limit
        db.execute("CREATE TABLE lifted (id INTEGER PRIMARY KEY, name TEXT, amount REAL)")
        db.execute("INSERT INTO lifted SELECT * FROM small_deals")
        db.execute("DROP TABLE small_deals")
        db.execute("ALTER TABLE lifted RENAME TO small_deals")
    replayed = subprocess.run([sys.executable, "-m", "patchbay.cli", "dead-letters", "replay",
                               str(letter.id), "--state", str(state)],
                              capture_output=True, text=True, timeout=60)
    assert replayed.returncode == 0 and "1 dead letters queued again" in replayed.stdout
    final = run_integration(path, state=state)
    assert final["delivered"] == 2 and final["dead"] == 0
    with sqlite3.connect(tmp_path / "small.db") as db:
        assert db.execute("SELECT id, amount FROM small_deals ORDER BY id").fetchall() == [
            (1, 500.0), (2, 26000.0), (3, 750.0), (4, 90.0)], "replayed in order, then the newer change"


def test_an_unreachable_destination_does_not_hold_up_the_others(
        tmp_path: Path, pg_url: str, erp: str) -> None:
    source(tmp_path / "crm.db", [(i, f"Deal {i}", "Closed Won", 10.0 * i, "2026-01-01 10:00:00")
                                 for i in range(1, 21)])
    path = spec(tmp_path, pg_url, erp, unreachable=True)
    report = run_integration(path, state=tmp_path / "state")
    assert report["outbox"]["audit"]["delivered"] == 20
    assert report["outbox"]["small"]["delivered"] == 20
    erp_counts = report["outbox"]["erp"]
    assert erp_counts["delivered"] == 0
    assert erp_counts["pending"] + erp_counts["dead"] == 20, "nothing lost: retrying or dead"


def test_by_default_a_change_committed_late_is_broadcast(
        tmp_path: Path, pg_url: str, erp: str) -> None:
    with sqlite3.connect(tmp_path / "crm.db") as db:  # a timestamp column, not text
        db.execute("CREATE TABLE opportunities (id INTEGER PRIMARY KEY, name TEXT, stage TEXT, "
                   "amount REAL, updated_at DATETIME)")
    source(tmp_path / "crm.db", [(1, "First", "Closed Won", 10.0, "2026-01-01 10:00:00"),
                                 (2, "Second", "Closed Won", 20.0, "2026-01-01 10:00:05")])
    path = spec(tmp_path, pg_url, erp)
    state = tmp_path / "state"
    assert run_integration(path, state=state)["changes"] == 2

    # Stamped before the change already broadcast, committed after it (no overlap declared).
    source(tmp_path / "crm.db", [(3, "Late", "Closed Won", 30.0, "2026-01-01 10:00:03")])
    late = run_integration(path, state=state)

    assert late["changes"] == 1
    assert erp_rows(pg_url, erp) == {1: ("First", 10.0), 2: ("Second", 20.0), 3: ("Late", 30.0)}
    assert run_integration(path, state=state)["changes"] == 0


def test_a_file_destination_that_does_not_exist_yet_keeps_the_types_of_values(
        tmp_path: Path, pg_url: str, erp: str) -> None:
    source(tmp_path / "crm.db", [(1, "Small win", "Closed Won", 500.5, "2026-01-01 10:00:00"),
                                 (2, "Open deal", "Prospecting", 70.0, "2026-01-01 10:00:01")])

    run_integration(spec(tmp_path, pg_url, erp), state=tmp_path / "state")

    assert audit_lines(tmp_path) == [  # numbers stay numbers, not the text of the declared fields
        {"change": "1@2026-01-01 10:00:00", "id": 1, "stage": "Closed Won", "amount": 500.5},
        {"change": "2@2026-01-01 10:00:01", "id": 2, "stage": "Prospecting", "amount": 70.0}]
