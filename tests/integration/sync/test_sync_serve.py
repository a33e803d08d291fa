"""A sync under `patchbay serve`: edits flow while it runs, and a participant added to the
file while it runs is backfilled and then kept in sync; one removed has its xref retired
while the others go on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.sync.test_sync_sqlite import CRM, ERP, db, execute, rows

NAME = "customers - sync"
BILLING = """CREATE TABLE accounts (id TEXT PRIMARY KEY, name TEXT, email TEXT,
             updated_at TEXT DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now')));
             CREATE TRIGGER accounts_stamp AFTER UPDATE ON accounts BEGIN
               UPDATE accounts SET updated_at = strftime('%Y-%m-%dT%H:%M:%f', 'now')
               WHERE id = NEW.id; END"""


def write_spec(path: Path, participants: list[str]) -> None:
    held = {
        "crm": """          crm: {object: customers, key: id, external_id: patchbay_id,
                watermark: updated_at, fields: [name, email]}""",
        "erp": """          erp: {object: clients, key: cid, external_id: patchbay_id, watermark: modified,
                fields: {name: full_name, email: mail}}""",
        "billing": """          billing: {object: accounts, key: id, watermark: updated_at,
                    fields: [name, email]}"""}
    listed = "\n".join(f"      - {{name: {p}, system: {p}}}" for p in participants)
    mapped = "\n".join(held[p] for p in participants)
    text = f"""
systems:
  crm: sqlite:///crm.db
  erp: sqlite:///erp.db
  billing: sqlite:///billing.db
integrations:
  - name: {NAME}
    pattern: sync
    trigger: {{poll_seconds: 0.2, overlap_seconds: 0}}
    participants:
{listed}
    objects:
      - name: customer
        match: [email]
        fields: [name, email]
        participants:
{mapped}
"""
    # A new modification time even within the file system's time resolution.
    before = path.stat().st_mtime_ns if path.exists() else 0
    path.write_text(text)
    os.utime(path, ns=(before + 10_000_000, before + 10_000_000))


def wait_for(check: Callable[[], bool], what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting: {what}"
        time.sleep(0.1)


@pytest.fixture
def here(tmp_path: Path) -> Path:
    db(tmp_path / "crm.db", CRM)
    db(tmp_path / "erp.db", ERP)
    db(tmp_path / "billing.db", BILLING)
    return tmp_path


@pytest.fixture
def serving(here: Path) -> Iterator[Callable[[], subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []

    def start() -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-m", "patchbay.cli", "serve", "sync.yaml", "--no-api", "--state",
             ".patchbay"], cwd=here, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        started.append(process)
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()


def emails(path: Path, table: str, column: str = "email") -> list[Any]:
    """The e-mails a table holds, in lower case: which participant's spelling of Ada's won
    is the conflict policy's business (billing's, observed last)."""
    return sorted(r[0].lower() for r in rows(path, f"SELECT {column} FROM {table}"))


def test_participants_join_and_leave_a_running_sync(here: Path, serving: Any) -> None:
    spec = here / "sync.yaml"
    write_spec(spec, ["crm", "erp"])
    execute(here / "crm.db", "INSERT INTO customers (id, name, email) VALUES "
            "('c1', 'Ada', 'ada@example.com'), ('c2', 'Bob', 'bob@example.com')")
    execute(here / "billing.db", "INSERT INTO accounts (id, name, email) VALUES "
            "('b1', 'Ada B.', 'ADA@example.com'), ('b9', 'Zoe', 'zoe@example.com')")
    process = serving()
    wait_for(lambda: emails(here / "erp.db", "clients", "mail") ==
             ["ada@example.com", "bob@example.com"], "the first sync")
    execute(here / "erp.db", "UPDATE clients SET full_name = 'Bob E.' WHERE mail = 'bob@example.com'")
    wait_for(lambda: rows(here / "crm.db", "SELECT name FROM customers WHERE id = 'c2'") ==
             [("Bob E.",)], "an edit while serving")

    write_spec(spec, ["crm", "erp", "billing"])  # billing joins the running sync
    wait_for(lambda: emails(here / "billing.db", "accounts") ==
             ["ada@example.com", "bob@example.com", "zoe@example.com"], "billing backfilled")
    # Ada was matched (no second Ada anywhere); Zoe, billing's own, reached the others.
    wait_for(lambda: emails(here / "crm.db", "customers") ==
             ["ada@example.com", "bob@example.com", "zoe@example.com"], "zoe reaches the crm")
    assert len(rows(here / "erp.db", "SELECT * FROM clients")) == 3

    write_spec(spec, ["crm", "billing"])  # erp leaves
    wait_for(lambda: rows(here / ".patchbay" / "state.db", "SELECT count(*) FROM patchbay_xref "
                          "WHERE participant = 'erp'") == [(0,)], "erp's xref retired")
    execute(here / "crm.db", "UPDATE customers SET name = 'Zoe C.' WHERE email = 'zoe@example.com'")
    wait_for(lambda: rows(here / "billing.db", "SELECT name FROM accounts WHERE id = 'b9'") ==
             [("Zoe C.",)], "the others go on")
    assert rows(here / "erp.db", "SELECT full_name FROM clients WHERE mail = 'zoe@example.com'") \
        == [("Zoe",)]
    assert process.poll() is None, process.communicate()
