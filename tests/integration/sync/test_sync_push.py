"""Changes a sync's participant pushes (a signed webhook naming the participant in
X-Patchbay-Source): verified, merged once, and synced to the others."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from patchbay import run_integration
from patchbay.api.app import create_app
from patchbay.connectors.http import sign
from tests.integration.sync.test_sync_sqlite import CRM, ERP, NAME, db, execute, rows, spec

SECRET = "erp-hook-secret"
TOKEN = "api-token-for-tests"
ERP_PUSHES = """      - {name: erp, system: erp,
         trigger: {poll_seconds: 60, webhook: {secret_env: ERP_HOOK_SECRET}}}"""


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ERP_HOOK_SECRET", SECRET)
    db(tmp_path / "crm.db", CRM)
    db(tmp_path / "erp.db", ERP)
    path = spec(tmp_path)
    path.write_text(path.read_text().replace("      - {name: erp, system: erp}", ERP_PUSHES))
    return tmp_path


@pytest.fixture
def client(here: Path) -> Iterator[TestClient]:
    with TestClient(create_app(here / "sync.yaml", str(here / ".patchbay"), TOKEN)) as test:
        yield test


def push(client: TestClient, body: dict[str, object], source: str = "erp",
         secret: str = SECRET) -> tuple[int, object]:
    raw = json.dumps(body).encode()
    stamp = str(int(time.time()))
    response = client.post(f"/hooks/{NAME}", content=raw, headers={
        "X-Patchbay-Timestamp": stamp, "X-Patchbay-Signature": sign(secret, stamp, raw),
        "X-Patchbay-Source": source, "Content-Type": "application/json"})
    return response.status_code, response.json()


def test_a_pushed_change_is_merged_once_and_reaches_the_others(here: Path,
                                                               client: TestClient) -> None:
    execute(here / "crm.db", "INSERT INTO customers (id, name, email, tier) VALUES "
            "('c1', 'Ada', 'ada@example.com', 'gold')")
    run_integration(here / "sync.yaml", NAME, state=here / ".patchbay")
    [(cid,)] = rows(here / "erp.db", "SELECT cid FROM clients")
    execute(here / "erp.db", "UPDATE clients SET full_name = 'Ada E.'")

    raw = json.dumps({"ids": [cid]}).encode()
    stamp = str(int(time.time()))
    headers = {"X-Patchbay-Timestamp": stamp, "X-Patchbay-Signature": sign(SECRET, stamp, raw),
               "X-Patchbay-Source": "erp", "Content-Type": "application/json"}
    answer = client.post(f"/hooks/{NAME}", content=raw, headers=headers)
    assert (answer.status_code, answer.json()) == (202, {"accepted": 1})
    assert client.post(f"/hooks/{NAME}", content=raw, headers=headers).status_code == 409
    run_integration(here / "sync.yaml", NAME, state=here / ".patchbay")
    assert rows(here / "crm.db", "SELECT name FROM customers") == [("Ada E.",)]


def test_a_push_names_a_participant_that_takes_webhooks(here: Path, client: TestClient) -> None:
    assert push(client, {"ids": [1]}, source="crm")[0] == 404  # crm polls; it takes no pushes
    assert push(client, {"ids": [1]}, secret="another secret")[0] == 401
    status, answer = push(client, {"changes": [{"record": {"full_name": "no key"}}]})
    assert status == 400 and "needs 'cid'" in json.dumps(answer)
