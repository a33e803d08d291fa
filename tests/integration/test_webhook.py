"""Changes pushed to a broadcast through its signed webhook: verified, queued, delivered."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from patchbay import run_integration
from patchbay.api.app import create_app
from patchbay.connectors.http import sign
from patchbay.store import Store

NAME = "items pushed"
SECRET = "hook-secret-for-tests"
TOKEN = "api-token-for-tests"


@pytest.fixture
def client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("ITEMS_HOOK_SECRET", SECRET)
    with sqlite3.connect(tmp_path / "source.db") as db:
        db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, updated_at TEXT)")
        db.execute("INSERT INTO items VALUES (7, 'seven', '2026-01-01 10:00:00')")
    with sqlite3.connect(tmp_path / "copy.db") as db:
        db.execute("CREATE TABLE items (item_id INTEGER PRIMARY KEY, name TEXT)")
    (tmp_path / "items.yaml").write_text(f"""
systems:
  source: sqlite:///source.db
  copy: sqlite:///copy.db
integrations:
  - name: {NAME}
    pattern: broadcast
    source: {{system: source, object: items, key: id, watermark: updated_at}}
    trigger: {{webhook: {{secret_env: ITEMS_HOOK_SECRET, sources: [crm]}}}}
    destinations:
      - {{name: copy, system: copy, object: items, key: item_id,
          transform: {{fields: {{item_id: id, name: name}}}}}}
""")
    with TestClient(create_app(tmp_path / "items.yaml", str(tmp_path / "state"), TOKEN)) as test:
        yield test


def push(client: TestClient, body: dict[str, object], *, secret: str = SECRET,
         age: int = 0, source: str = "crm") -> int:
    raw = json.dumps(body).encode()
    stamp = str(int(time.time()) - age)
    response = client.post(f"/hooks/{NAME}", content=raw, headers={
        "X-Patchbay-Timestamp": stamp, "X-Patchbay-Signature": sign(secret, stamp, raw),
        "X-Patchbay-Source": source, "Content-Type": "application/json"})
    return response.status_code


def queued(tmp_path: Path) -> int:
    store = Store.open(directory=tmp_path / "state")
    counts = store.outbox_counts(NAME).get("copy", {})
    store.close()
    return sum(counts.values())


def test_signed_pushes_are_queued_and_delivered(client: TestClient, tmp_path: Path) -> None:
    assert push(client, {"changes": [{"kind": "created", "record": {"id": 1, "name": "one"}}]}) == 202
    assert push(client, {"ids": [7, 99]}) == 202, "ids only: current values are fetched"
    assert queued(tmp_path) == 3
    report = run_integration(tmp_path / "items.yaml", NAME, state=tmp_path / "state")
    assert report["dead"] == 0
    with sqlite3.connect(tmp_path / "copy.db") as db:
        held = db.execute("SELECT item_id, name FROM items ORDER BY item_id").fetchall()
    # 1 pushed whole, 7 fetched, 99 gone from the source: a delete of nothing.
    assert held == [(1, "one"), (7, "seven")]


def test_wrong_signature_age_or_source_is_refused_and_queues_nothing(
        client: TestClient, tmp_path: Path) -> None:
    body = {"changes": [{"record": {"id": 2, "name": "two"}}]}
    assert push(client, body, secret="not the secret") == 401
    assert push(client, body, age=3600) == 401
    assert push(client, body, source="somebody else") == 403
    unsigned = client.post(f"/hooks/{NAME}", json=body)
    assert unsigned.status_code == 401
    assert queued(tmp_path) == 0
    assert client.post("/hooks/nope", content=b"{}").status_code == 404
    assert client.get("/outbox/" + NAME).status_code == 401, "other routes still need the token"
