"""A correlation between two groups of records of one object (two sides on one system, told
apart by their scopes): the records of a person present in both groups exchange their
shared fields; nothing crosses for anyone else."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from patchbay import run_integration

NAME = "branches - correlation"


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    with sqlite3.connect(tmp_path / "crm.db") as conn:
        conn.executescript("""
            CREATE TABLE contacts (id INTEGER PRIMARY KEY, branch TEXT, name TEXT, born TEXT,
              email TEXT, phone TEXT,
              updated_at TEXT DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now')));
            CREATE TRIGGER contacts_stamp AFTER UPDATE ON contacts BEGIN
              UPDATE contacts SET updated_at = strftime('%Y-%m-%dT%H:%M:%f', 'now')
              WHERE id = NEW.id; END""")
        people = [("Ada Lovelace", "1815-12-10", "ada@example.com"),
                  ("Grace Hopper", "1906-12-09", "grace@example.com"),
                  ("Alan Turing", "1912-06-23", "alan@example.com"),
                  ("Edsger Dijkstra", "1930-05-11", "edsger@example.com")]
        for number, (name, born, email) in enumerate(people):
            conn.execute("INSERT INTO contacts (branch, name, born, email, phone) "
                         "VALUES ('east', ?, ?, ?, ?)", (name, born, email, f"+1 555 010{number}"))
        # The west branch knows Ada and Grace (one typo), and two people the east does not.
        conn.executemany("INSERT INTO contacts (branch, name, born, email) VALUES ('west', ?, ?, ?)",
                         [("Ada Lovelace", "1815-12-10", "ada@example.com"),
                          ("Grace Hoper", "1906-12-09", "grace@example.com"),
                          ("Barbara Liskov", "1939-11-07", "barbara@example.com"),
                          ("Ken Thompson", "1943-02-04", "ken@example.com")])
    (tmp_path / "correlation.yaml").write_text(f"""
systems:
  crm: sqlite:///crm.db
integrations:
  - name: {NAME}
    pattern: correlation
    trigger: {{overlap_seconds: 0}}
    participants:
      - {{name: east, system: crm, object: contacts, key: id, watermark: updated_at,
          scope: {{field: branch, eq: east}}, fields: [name, born, email, phone]}}
      - {{name: west, system: crm, object: contacts, key: id, watermark: updated_at,
          scope: {{field: branch, eq: west}}, fields: [name, born, email, phone]}}
    match:
      fields: {{name: {{kind: name}}, born: {{kind: date}}, email: {{kind: email}}}}
      blocking: [[born], [email]]
      scoring: {{deterministic: [[email, born]]}}
    share:
      phone: {{writers: [east]}}
""")
    return tmp_path


def test_two_groups_of_one_object_exchange_for_shared_people_only(here: Path) -> None:
    report = run_integration(here / "correlation.yaml", NAME, state=here / ".patchbay")
    assert report["pairs"] == {"link": 2}, report
    assert rows(here / "crm.db", "SELECT name, phone FROM contacts WHERE branch = 'west' "
                                 "ORDER BY id") == [("Ada Lovelace", "+1 555 0100"),
                                                    ("Grace Hoper", "+1 555 0101"),
                                                    ("Barbara Liskov", None),
                                                    ("Ken Thompson", None)]
    assert rows(here / "crm.db", "SELECT count(*) FROM contacts") == [(8,)]
