"""A broadcast following Salesforce Change Data Capture (CometD) from the local org: it
catches up by polling, then follows events; a restart resumes from the replay id; a replay
id the org no longer keeps falls back to polling; nothing is lost or written twice."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from patchbay.localorg.org import Org, OrgConfig, Session
from patchbay.localorg.running import LocalOrg
from patchbay.patterns.broadcast import Broadcast
from patchbay.runtime import serving
from patchbay.runtime.runner import Invocation
from patchbay.store import Store

NAME = "accounts"


@pytest.fixture
def local() -> Iterator[LocalOrg]:
    with LocalOrg(OrgConfig()) as org:
        yield org


def write_spec(directory: Path, port: int) -> Path:
    (directory / "audit").mkdir(exist_ok=True)
    with sqlite3.connect(directory / "copy.db") as db:
        db.execute("CREATE TABLE IF NOT EXISTS accounts (id TEXT PRIMARY KEY, name TEXT, phone TEXT)")
    spec = directory / "cdc.yaml"
    spec.write_text(f"""
systems:
  crm:
    url: salesforce+http://127.0.0.1:{port}
    options: {{client_id: patchbay-local-key, client_secret: patchbay-local-secret}}
  copy: sqlite:///copy.db
  audit: {{url: "file:audit", options: {{fields: [change, id, name, phone]}}}}
integrations:
  - name: {NAME}
    pattern: broadcast
    source: {{system: crm, object: Account, key: Id, fields: [Id, Name, Phone, SystemModstamp]}}
    trigger: {{changes: cdc, poll_seconds: 0.2}}
    destinations:
      - name: copy
        system: copy
        object: accounts
        key: id
        transform: {{fields: {{id: Id, name: Name, phone: Phone}}}}
      - name: audit
        system: audit
        object: changes.jsonl
        key: change
        transform:
          fields: {{change: {{expr: "concat(Id, '@', SystemModstamp)"}}, id: Id, name: Name, phone: Phone}}
""")
    return spec


class Engine:
    """One patchbay process: a Broadcast with connectors of its own (a restart is a new one)."""

    def __init__(self, spec: Path, directory: Path) -> None:
        self.store = Store.open(directory=directory / ".patchbay")
        self.broadcast = Broadcast(Invocation.load(spec, NAME, {}).context(
            self.store, directory / "runs"))

    def round(self) -> int:
        changes = self.broadcast.poll()
        serving.deliver(self.broadcast)
        return changes

    def cursor(self) -> dict[str, Any]:
        found = self.store.cursors.get(NAME, "crm", "Account")
        assert isinstance(found, dict)
        return found

    def close(self) -> None:
        self.broadcast.ctx.systems.close()
        self.store.close()


def org_accounts(org: Org) -> dict[str, tuple[Any, ...]]:
    with org.storage.lock:
        return {r[0]: (r[1], r[2]) for r in org.storage.db.execute(
            'SELECT "Id", "Name", "Phone" FROM "Account" WHERE "IsDeleted" = 0')}


def copied(directory: Path) -> dict[str, tuple[Any, ...]]:
    with sqlite3.connect(directory / "copy.db") as db:
        return {r[0]: (r[1], r[2]) for r in db.execute("SELECT id, name, phone FROM accounts")}


def audit_changes(directory: Path) -> list[str]:
    path = directory / "audit" / "changes.jsonl"
    return [json.loads(line)["change"] for line in path.read_text().splitlines() if line.strip()]


def login(org: Org) -> Session:
    return org.login("integration@patchbay.local", "password")


def test_catches_up_by_polling_then_follows_events_and_resumes_by_replay_id(
        tmp_path: Path, local: LocalOrg) -> None:
    org, accounts = local.org, local.org.sobject("Account")
    session = login(org)
    first = org.create(accounts, {"Name": "Acme", "Phone": "1"}, session)
    org.create(accounts, {"Name": "Globex"}, session)
    spec = write_spec(tmp_path, local.port)

    engine = Engine(spec, tmp_path)
    assert engine.round() == 2, "the first start catches up by polling: every existing record"
    assert engine.cursor()["caught_up"] is True and engine.cursor()["replay_id"] is None
    org.clock.advance(1)
    org.update(accounts, first, {"Phone": "2"}, session)
    third = org.create(accounts, {"Name": "Initech"}, session)
    assert engine.round() == 2
    replay = engine.cursor()["replay_id"]
    assert isinstance(replay, int), "the changes came as events: the cursor holds their replay id"
    assert copied(tmp_path) == org_accounts(org)
    engine.close()

    # changes while patchbay is down arrive after the restart, from the replay id on
    org.clock.advance(1)
    org.update(accounts, third, {"Name": "Initech Ltd", "Phone": "3"}, session)
    org.delete(accounts, first, session=session)
    restarted = Engine(spec, tmp_path)
    assert restarted.round() == 2
    assert restarted.cursor()["replay_id"] > replay
    assert restarted.cursor()["caught_up"] is True
    assert copied(tmp_path) == org_accounts(org)
    assert first not in copied(tmp_path), "a delete event deletes"
    restarted.close()

    changes = audit_changes(tmp_path)
    assert len(changes) == len(set(changes)), "no change was written twice"


def test_a_replay_id_older_than_retention_falls_back_to_polling(tmp_path: Path, local: LocalOrg) -> None:
    org, accounts = local.org, local.org.sobject("Account")
    session = login(org)
    spec = write_spec(tmp_path, local.port)
    engine = Engine(spec, tmp_path)
    engine.round()
    org.clock.advance(1)
    one = org.create(accounts, {"Name": "Acme"}, session)
    assert engine.round() == 1
    assert isinstance(engine.cursor()["replay_id"], int)
    engine.close()

    # Down for four days: the events of the changes made meanwhile are no longer kept.
    org.clock.advance(3600)
    org.update(accounts, one, {"Phone": "555"}, session)
    two = org.create(accounts, {"Name": "Globex"}, session)
    org.clock.advance(4 * 24 * 3600)
    later = org.create(accounts, {"Name": "Hooli"}, session)
    restarted = Engine(spec, tmp_path)
    assert restarted.round() >= 3, "the fallback poll finds what the events no longer tell"
    assert restarted.cursor()["caught_up"] is True
    assert copied(tmp_path) == org_accounts(org)
    assert {k: copied(tmp_path)[k] for k in (one, two, later)} == {
        one: ("Acme", "555"), two: ("Globex", None), later: ("Hooli", None)}
    # and then events again
    org.clock.advance(1)
    org.update(accounts, two, {"Phone": "777"}, session)
    assert restarted.round() == 1
    assert isinstance(restarted.cursor()["replay_id"], int)
    assert copied(tmp_path)[two] == ("Globex", "777")
    restarted.close()
    changes = audit_changes(tmp_path)
    assert len(changes) == len(set(changes)), "no change was written twice"


def test_serve_delivers_an_event_within_a_few_seconds(tmp_path: Path, local: LocalOrg) -> None:
    import threading
    import time

    org, accounts = local.org, local.org.sobject("Account")
    session = login(org)
    spec = write_spec(tmp_path, local.port)
    engine = Engine(spec, tmp_path)
    stop = threading.Event()
    server = threading.Thread(target=serving.serve, args=(engine.broadcast.ctx, stop), daemon=True)
    server.start()
    try:
        time.sleep(0.5)  # caught up (nothing yet), now following events
        made = org.create(accounts, {"Name": "Fast"}, session)
        deadline = time.monotonic() + 15
        while made not in copied(tmp_path) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert made in copied(tmp_path)
        # A second when the machine is idle; room for a loaded one (2 cores, shared).
        assert time.monotonic() - (deadline - 15) < 5
    finally:
        stop.set()
        server.join(timeout=10)
        engine.close()


def test_a_subscription_the_org_forgot_before_its_first_event_catches_up(
        tmp_path: Path, local: LocalOrg) -> None:
    import httpx

    org, accounts = local.org, local.org.sobject("Account")
    session = login(org)
    spec = write_spec(tmp_path, local.port)
    engine = Engine(spec, tmp_path)
    assert engine.round() == 0  # caught up: subscribed for new events, none yet
    stream = engine.broadcast.source._stream  # type: ignore[attr-defined]
    [subscription] = stream._subscriptions.values()
    httpx.post(f"{local.url}/cometd/59.0", headers={"Authorization": f"Bearer {session.token}"},
               json=[{"channel": "/meta/disconnect", "clientId": subscription.client.client_id}])
    org.clock.advance(1)
    made = org.create(accounts, {"Name": "In the gap"}, session)
    for _ in range(3):  # the connect finds the client gone; the next rounds catch up
        engine.round()
    assert made in copied(tmp_path), "a change made while the org had forgotten us is not lost"
    engine.close()
