"""Changes pushed to a broadcast through its signed webhook: verified, queued, delivered."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.testclient import TestClient

from patchbay import run_integration
from patchbay.api import serve_api
from patchbay.api.app import create_app
from patchbay.api.webhooks import MAX_BODY
from patchbay.connectors.http import sign
from patchbay.localorg.running import free_port
from patchbay.runtime.runner import Invocation, serve
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
    trigger: {{poll_seconds: 60, webhook: {{secret_env: ITEMS_HOOK_SECRET, sources: [crm]}}}}
    destinations:
      - {{name: copy, system: copy, object: items, key: item_id,
          transform: {{fields: {{item_id: id, name: name}}}}}}
""")
    with TestClient(create_app(tmp_path / "items.yaml", str(tmp_path / "state"), TOKEN)) as test:
        yield test


def signed(body: bytes, *, secret: str = SECRET, age: int = 0, source: str = "crm"
           ) -> dict[str, str]:
    stamp = str(int(time.time()) - age)
    return {"X-Patchbay-Timestamp": stamp, "X-Patchbay-Signature": sign(secret, stamp, body),
            "X-Patchbay-Source": source, "Content-Type": "application/json"}


def push(client: TestClient, body: dict[str, object], *, secret: str = SECRET,
         age: int = 0, source: str = "crm") -> int:
    raw = json.dumps(body).encode()
    response = client.post(f"/hooks/{NAME}", content=raw,
                           headers=signed(raw, secret=secret, age=age, source=source))
    return response.status_code


def copied(tmp_path: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(tmp_path / "copy.db") as db:
        return db.execute("SELECT item_id, name FROM items ORDER BY item_id").fetchall()


def queued(tmp_path: Path) -> int:
    store = Store.open(directory=tmp_path / "state")
    counts = store.outbox.counts(NAME).get("copy", {})
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


def test_a_replayed_request_is_refused_and_an_older_push_never_overwrites_a_newer_one(
        client: TestClient, tmp_path: Path) -> None:
    def renamed(name: str) -> bytes:
        return json.dumps({"changes": [{"record": {"id": 5, "name": name}}]}).encode()

    first, second = renamed("first"), renamed("second")
    first_headers = signed(first, age=20)
    assert client.post(f"/hooks/{NAME}", content=first, headers=first_headers).status_code == 202
    assert push(client, {"changes": [{"record": {"id": 5, "name": "second"}}]}, age=10) == 202
    run_integration(tmp_path / "items.yaml", NAME, state=tmp_path / "state")
    assert copied(tmp_path) == [(5, "second"), (7, "seven")]

    replayed = client.post(f"/hooks/{NAME}", content=first, headers=first_headers)
    assert replayed.status_code == 409
    assert replayed.json() == {"error": "this signed request was accepted already; a change "
                                        "is sent again with a new timestamp and signature"}
    # Signed earlier than the one delivered, and never seen: accepted, but not queued.
    older = client.post(f"/hooks/{NAME}", content=second, headers=signed(second, age=30))
    assert older.status_code == 202
    run_integration(tmp_path / "items.yaml", NAME, state=tmp_path / "state")
    assert copied(tmp_path) == [(5, "second"), (7, "seven")]
    assert queued(tmp_path) == 3, "two pushes of 5, one poll of 7"


@pytest.mark.parametrize(("body", "problem"), [
    ({"changes": "abc"}, "'changes' must be a list of at most 10000 changes"),
    ({"changes": [{"kind": "renamed", "record": {"id": 1}}]},
     "change 1: 'kind' must be one of 'created', 'updated', 'deleted', not 'renamed'"),
    ({"changes": [{"record": {"name": "no id"}}]},
     "change 1: its record needs 'id', text of at most 255 characters or a whole number of 64 bits"),
    ({"changes": [7]}, "change 1: must be an object with a 'record' object"),
    ({"ids": [1, 2 ** 64]}, "ids must be text of at most 255 characters or whole numbers of 64 "
                            "bits: not id 2"),
    ({"ids": {"a": 1}}, "'ids' must be a list of at most 10000 ids"),
    ({"records": []}, "unknown field 'records': a push holds 'changes' or 'ids'"),
])
def test_a_malformed_push_is_400_with_the_reason(client: TestClient, tmp_path: Path,
                                                  body: dict[str, Any], problem: str) -> None:
    raw = json.dumps(body).encode()
    answer = client.post(f"/hooks/{NAME}", content=raw, headers=signed(raw))
    assert answer.status_code == 400, answer.text
    assert answer.json() == {"error": "invalid push", "problems": [problem]}
    assert queued(tmp_path) == 0


def test_headers_are_checked_before_the_body_and_the_body_is_capped(
        client: TestClient, tmp_path: Path) -> None:
    long_stamp = client.post(f"/hooks/{NAME}", content=b"{}", headers={
        **signed(b"{}"), "X-Patchbay-Timestamp": "9" * 5000})
    assert long_stamp.status_code == 400
    assert long_stamp.json() == {"error": "X-Patchbay-Timestamp must be Unix seconds (at most "
                                          "12 digits)"}
    deep = b"[" * 100_000 + b"]" * 100_000
    too_deep = client.post(f"/hooks/{NAME}", content=deep, headers=signed(deep))
    assert (too_deep.status_code, too_deep.json()) == (
        400, {"error": "the webhook's body is not JSON: nested deeper than 64 levels"})
    big = json.dumps({"ids": [7], "padding": "x" * MAX_BODY}).encode()
    too_big = client.post(f"/hooks/{NAME}", content=big, headers=signed(big))
    assert too_big.status_code == 413
    assert too_big.json() == {"error": f"the webhook's body exceeds {MAX_BODY} bytes"}
    assert queued(tmp_path) == 0


def test_an_unsigned_huge_body_is_refused_without_being_held(tmp_path: Path,
                                                            client: TestClient) -> None:
    chunk = b"x" * (1024 * 1024)

    def body() -> Iterator[bytes]:
        for _ in range(200):
            yield chunk

    with serve_api("127.0.0.1", free_port(), tmp_path / "items.yaml", str(tmp_path / "state"),
                   token=TOKEN) as server:
        tracemalloc.start()
        try:
            answer = httpx.post(f"{server.url}/hooks/{NAME}", content=body(), timeout=60,
                                headers={"Content-Type": "application/json"})
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert answer.status_code == 401
    assert peak < 50 * 1024 * 1024, f"{peak // 2 ** 20} MB held for a 200 MB unsigned body"


def test_a_body_without_a_length_is_cut_off_while_streaming(tmp_path: Path,
                                                            client: TestClient) -> None:
    """Signed-looking headers and a chunked body (no Content-Length to refuse it by): the
    body is read only up to the cap. Read whole, it would be held and then fail its
    signature (401)."""
    chunk = b"x" * (1024 * 1024)

    def body() -> Iterator[bytes]:
        for _ in range(8 * MAX_BODY // len(chunk)):
            yield chunk

    with serve_api("127.0.0.1", free_port(), tmp_path / "items.yaml", str(tmp_path / "state"),
                   token=TOKEN) as server:
        tracemalloc.start()
        try:
            answer = httpx.post(f"{server.url}/hooks/{NAME}", content=body(), timeout=60,
                                headers=signed(b"{}"))
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    assert "content-length" not in answer.request.headers
    assert answer.status_code == 413
    assert answer.json() == {"error": f"the webhook's body exceeds {MAX_BODY} bytes"}
    assert peak < 4 * MAX_BODY, f"{peak // 2 ** 20} MB held for a {8 * MAX_BODY // 2 ** 20} MB body"
    assert queued(tmp_path) == 0


def test_a_push_is_delivered_at_once_not_at_the_next_poll(client: TestClient,
                                                          tmp_path: Path) -> None:
    store = Store.open(directory=tmp_path / "state")
    ctx = Invocation.load(tmp_path / "items.yaml", NAME, {}).context(store, tmp_path / "runs")
    stop = threading.Event()
    serving = threading.Thread(target=serve, args=(ctx, stop), daemon=True)
    serving.start()
    try:
        deadline = time.monotonic() + 10  # the first poll (at start) finds the source's row
        while copied(tmp_path) != [(7, "seven")]:
            assert time.monotonic() < deadline, "the first poll delivered nothing"
            time.sleep(0.05)
        pushed_at = time.monotonic()
        assert push(client, {"changes": [{"record": {"id": 8, "name": "eight"}}]}) == 202
        while copied(tmp_path) != [(7, "seven"), (8, "eight")]:
            assert time.monotonic() - pushed_at < 10, "the push waits for the next poll (60 s)"
            time.sleep(0.05)
    finally:
        stop.set()
        serving.join(timeout=30)
        store.close()
