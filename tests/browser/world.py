"""The systems the console's browser tests look at: one integration file with a migration
that sets records aside, a broadcast with a dead letter, an aggregation with a report, a
sync with a conflict held for a person and a correlation with a pair to review; SQLite
databases throughout, in one folder. The sync's conflict and the correlation's pair come
from the integration tests' own fixtures, run before `serve` starts."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import yaml

from patchbay import run_integration

from ..integration.correlation.test_correlation_review import UNSURE, with_unsure_pair
from ..integration.correlation.test_correlation_sqlite import NAME as CORRELATION
from ..integration.correlation.test_correlation_sqlite import registers
from ..integration.sync.test_sync_conflicts import held_conflict
from ..integration.sync.test_sync_sqlite import CRM, ERP, db
from ..integration.sync.test_sync_sqlite import NAME as SYNC
from ..integration.sync.test_sync_sqlite import spec as sync_spec

__all__ = ["CORRELATION", "SYNC", "UNSURE"]

MIGRATION = "legacy contacts - migration"
BROADCAST = "deals - broadcast"
AGGREGATION = "contacts - aggregation"
PASSWORD = "vault-pa55word-never-rendered"
NO_EMAIL = ("c3", "c7", "c11")
"""The legacy contacts without an e-mail: set aside by the migration."""

FILE = f"""
systems:
  legacy: sqlite:///legacy.db
  target: sqlite:///target.db
  deals: sqlite:///deals.db
  small: sqlite:///small.db
  vault: postgresql://svc:{PASSWORD}@127.0.0.1:1/none
integrations:
  - name: {MIGRATION}
    pattern: migration
    description: The legacy CRM's contacts, into the new one
    parameters:
      country: {{type: string, choices: [DE, AT], default: DE, description: the contacts' country}}
    source:
      system: legacy
      object: contacts
      key: id
      scope: {{field: country, eq: {{param: country}}}}
    transform:
      fields:
        id: id
        name: name
        email: {{from: email, required: true}}
    destination: {{system: target, object: contacts, key: id}}
    options: {{batch_size: 4}}
  - name: {BROADCAST}
    pattern: broadcast
    trigger: {{poll_seconds: 0.2}}
    source: {{system: deals, object: deals, key: id, watermark: updated_at}}
    destinations:
      - name: small
        system: small
        object: small_deals
        key: id
        transform: {{fields: {{id: id, name: name, amount: amount}}}}
    options: {{max_attempts: 1, backoff_seconds: 0, backoff_max_seconds: 0}}
  - name: {AGGREGATION}
    pattern: aggregation
    sources:
      - {{name: contacts, system: legacy, object: contacts,
          transform: {{fields: {{id: id, country: country}}}}}}
      - {{name: deals, system: deals, object: deals,
          transform: {{fields: {{deal: id, amount: amount}}}}}}
    merge: {{union: [contacts], key: id}}
    reports: [{{file: reports/contacts.csv}}]
"""

REFUSE_BIG = ("CREATE TRIGGER refuse_big BEFORE INSERT ON small_deals WHEN NEW.amount >= 1000 "
              "BEGIN SELECT RAISE(ABORT, 'amount over the small system''s limit'); END")


def build(here: Path) -> Path:
    """The folder's databases, the state of the sync and the correlation, and the one file
    of every integration (console.yaml)."""
    with sqlite3.connect(here / "legacy.db") as conn:
        conn.execute("CREATE TABLE contacts (id TEXT PRIMARY KEY, name TEXT, email TEXT, country TEXT)")
        conn.executemany("INSERT INTO contacts VALUES (?, ?, ?, ?)", [
            (f"c{i}", f"Contact <{i}>", None if f"c{i}" in NO_EMAIL else f"c{i}@example.com",
             "DE" if i <= 12 else "AT") for i in range(1, 16)])
    with sqlite3.connect(here / "target.db") as conn:
        conn.execute("CREATE TABLE contacts (id TEXT PRIMARY KEY, name TEXT, email TEXT NOT NULL)")
    with sqlite3.connect(here / "deals.db") as conn:
        conn.execute("CREATE TABLE deals (id INTEGER PRIMARY KEY, name TEXT, amount REAL, updated_at TEXT)")
        conn.executemany("INSERT INTO deals VALUES (?, ?, ?, ?)", [
            (1, "Small deal", 500.0, "2026-01-01 10:00:00"),
            (2, "Big deal", 25000.0, "2026-01-01 10:00:01")])
    with sqlite3.connect(here / "small.db") as conn:
        conn.execute("CREATE TABLE small_deals (id INTEGER PRIMARY KEY, name TEXT, amount REAL)")
        conn.execute(REFUSE_BIG)

    # The sync's held conflict (its fixture runs the sync twice, from the folder).
    db(here / "crm.db", CRM)
    db(here / "erp.db", ERP)
    held_conflict(here)
    # The correlation's pair under review.
    registers(here)
    with_unsure_pair(here)
    run_integration(here / "correlation.yaml", CORRELATION, state=here / ".patchbay")

    document: dict[str, Any] = yaml.safe_load(FILE)
    for path in (sync_spec(here, conflicts="manual"), here / "correlation.yaml"):
        other = yaml.safe_load(path.read_text())
        document["systems"].update(other["systems"])
        document["integrations"] += other["integrations"]
    path = here / "console.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()
