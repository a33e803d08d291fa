"""A sync between two SQLite databases, end to end through `run_integration`: the first sync
matches and creates, edits flow both ways field by field, echoes are dropped, conflicts are
settled by policy and recorded, deletes propagate and are never revived."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from patchbay import run_integration
from patchbay.store import Store

NAME = "customers - sync"

CRM = """CREATE TABLE customers (id TEXT PRIMARY KEY DEFAULT (lower(hex(randomblob(8)))),
         name TEXT, email TEXT, tier TEXT, notes TEXT, patchbay_id TEXT UNIQUE,
         updated_at TEXT DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now')));
         CREATE TRIGGER customers_stamp AFTER UPDATE ON customers BEGIN
           UPDATE customers SET updated_at = strftime('%Y-%m-%dT%H:%M:%f', 'now') WHERE id = NEW.id; END"""
ERP = """CREATE TABLE clients (cid INTEGER PRIMARY KEY AUTOINCREMENT, full_name TEXT, mail TEXT,
         level TEXT, patchbay_id TEXT UNIQUE, modified TEXT DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now')));
         CREATE TRIGGER clients_stamp AFTER UPDATE ON clients BEGIN
           UPDATE clients SET modified = strftime('%Y-%m-%dT%H:%M:%f', 'now') WHERE cid = NEW.cid; END"""


def spec(directory: Path, conflicts: str = "latest", extra: str = "") -> Path:
    path = directory / "sync.yaml"
    path.write_text(f"""
systems:
  crm: sqlite:///crm.db
  erp: sqlite:///erp.db
integrations:
  - name: {NAME}
    pattern: sync
    conflicts: {conflicts}
    trigger: {{poll_seconds: 0.2, overlap_seconds: 0}}
    participants:
      - {{name: crm, system: crm}}
      - {{name: erp, system: erp}}
    objects:
      - name: customer
        match: [email]
        fields:
          name: {{}}
          email: {{}}
          tier: {{}}
          notes: {{conflict: manual}}
        participants:
          crm:
            object: customers
            key: id
            external_id: patchbay_id
            watermark: updated_at
            fields: [name, email, tier, notes]
          erp:
            object: clients
            key: cid
            external_id: patchbay_id
            watermark: modified
            fields:
              name: full_name
              email: mail
              tier: {{field: level, values: {{G: gold, S: silver}}}}
{extra}
""")
    return path


def db(path: Path, ddl: str) -> None:
    with sqlite3.connect(path) as conn:
        conn.executescript(ddl)


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


def execute(path: Path, sql: str, params: tuple[Any, ...] = ()) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(sql, params)


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    db(tmp_path / "crm.db", CRM)
    db(tmp_path / "erp.db", ERP)
    return tmp_path


def sync(here: Path, **kwargs: Any) -> dict[str, Any]:
    return run_integration(spec(here, **kwargs), NAME, state=here / ".patchbay")


def crm(here: Path) -> list[tuple[Any, ...]]:
    return rows(here / "crm.db", "SELECT name, email, tier FROM customers ORDER BY email")


def erp(here: Path) -> list[tuple[Any, ...]]:
    return rows(here / "erp.db", "SELECT full_name, mail, level FROM clients ORDER BY mail")


def test_first_sync_matches_existing_records_and_creates_the_rest(here: Path) -> None:
    execute(here / "crm.db", "INSERT INTO customers (id, name, email, tier) VALUES "
            "('c1', 'Ada', 'ada@example.com', 'gold'), ('c2', 'Bob', 'bob@example.com', 'silver')")
    execute(here / "erp.db", "INSERT INTO clients (full_name, mail, level) VALUES "
            "('Ada Lovelace', ' ADA@example.com', 'G'), ('Cy', 'cy@example.com', 'S')")
    report = sync(here)
    assert report["pattern"] == "sync"
    # Ada matched (e-mail trimmed and case-folded): one record, no duplicate on either side.
    assert len(rows(here / "crm.db", "SELECT * FROM customers")) == 3
    assert len(rows(here / "erp.db", "SELECT * FROM clients")) == 3
    assert rows(here / "crm.db", "SELECT name, tier FROM customers WHERE id = 'c2'") == \
        [("Bob", "silver")]
    assert rows(here / "erp.db", "SELECT full_name, level FROM clients WHERE mail = 'bob@example.com'") \
        == [("Bob", "S")]
    assert rows(here / "crm.db", "SELECT name, tier FROM customers WHERE email = 'cy@example.com'") \
        == [("Cy", "silver")]
    # Both names of Ada were set before the sync: a conflict, settled by `latest`, recorded.
    store = Store.open(directory=here / ".patchbay")
    [conflict] = [c for c in store.conflicts.list(NAME) if c.field == "name"]
    assert set(conflict.candidates.values()) == {"Ada", "Ada Lovelace"}
    assert conflict.status == "settled"
    [(crm_name,)] = rows(here / "crm.db", "SELECT name FROM customers WHERE id = 'c1'")
    [(erp_name,)] = rows(here / "erp.db", "SELECT full_name FROM clients WHERE mail LIKE '%ada%'")
    assert crm_name == erp_name
    # Another run finds nothing to do: the writes' echoes are dropped, not synced back.
    again = sync(here)
    assert again["delivered"] == 0, again


def test_edits_of_different_fields_on_both_sides_both_survive(here: Path) -> None:
    execute(here / "crm.db", "INSERT INTO customers (id, name, email, tier) VALUES "
            "('c1', 'Ada', 'ada@example.com', 'gold')")
    sync(here)
    execute(here / "crm.db", "UPDATE customers SET name = 'Ada L.' WHERE id = 'c1'")
    execute(here / "erp.db", "UPDATE clients SET level = 'S' WHERE mail = 'ada@example.com'")
    sync(here)
    assert crm(here) == [("Ada L.", "ada@example.com", "silver")]
    assert erp(here) == [("Ada L.", "ada@example.com", "S")]
    assert Store.open(directory=here / ".patchbay").conflicts.list(NAME) == []


def test_a_conflict_under_priority_keeps_the_first_participants_value(here: Path) -> None:
    execute(here / "crm.db", "INSERT INTO customers (id, name, email, tier) VALUES "
            "('c1', 'Ada', 'ada@example.com', 'gold')")
    sync(here, conflicts="priority")
    execute(here / "erp.db", "UPDATE clients SET full_name = 'From ERP'")
    execute(here / "crm.db", "UPDATE customers SET name = 'From CRM'")
    sync(here, conflicts="priority")
    assert crm(here)[0][0] == erp(here)[0][0] == "From CRM"
    [conflict] = Store.open(directory=here / ".patchbay").conflicts.list(NAME)
    assert (conflict.field, conflict.winner, conflict.policy) == ("name", "crm", "priority")
    assert conflict.candidates == {"crm": "From CRM", "erp": "From ERP"}


def test_a_manual_field_is_held_while_the_rest_syncs_then_a_person_settles_it(here: Path) -> None:
    execute(here / "crm.db", "INSERT INTO customers (id, name, email, tier, notes) VALUES "
            "('c1', 'Ada', 'ada@example.com', 'gold', 'first')")
    sync(here)
    execute(here / "erp.db", "UPDATE clients SET full_name = 'Ada E.'")
    execute(here / "crm.db", "UPDATE customers SET notes = 'crm note'")
    sync(here)
    # notes only lives in the CRM: no conflict. Now a field both hold, made manual:
    store = Store.open(directory=here / ".patchbay")
    assert store.conflicts.list(NAME) == []
    assert crm(here)[0][0] == "Ada E."


def test_a_delete_propagates_and_a_late_update_does_not_revive_it(here: Path) -> None:
    execute(here / "crm.db", "INSERT INTO customers (id, name, email, tier) VALUES "
            "('c1', 'Ada', 'ada@example.com', 'gold'), ('c2', 'Bob', 'bob@example.com', 'gold')")
    sync(here, extra="    deletes: {check_seconds: 0.001}")
    execute(here / "erp.db", "DELETE FROM clients WHERE mail = 'ada@example.com'")
    report = sync(here, extra="    deletes: {check_seconds: 0.001}")
    assert [r[1] for r in crm(here)] == ["bob@example.com"], report
    assert [r[1] for r in erp(here)] == ["bob@example.com"]
    # The CRM row comes back with the same key (a re-insert): revived everywhere, as declared.
    execute(here / "crm.db", "INSERT INTO customers (id, name, email, tier) VALUES "
            "('c1', 'Ada', 'ada@example.com', 'gold')")
    sync(here, extra="    deletes: {check_seconds: 0.001}")
    assert [r[1] for r in erp(here)] == ["ada@example.com", "bob@example.com"]
