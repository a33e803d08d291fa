"""The HTTP API of `patchbay serve`: auth, on-demand runs, run status, dead letters, OpenAPI.

Through Starlette's TestClient, and through a real server on a free port (httpx), and once
through the `patchbay serve` command itself.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount, Route
from starlette.testclient import TestClient

from patchbay.api import ApiConfigError, create_app, serve_api
from patchbay.api.app import close_app
from patchbay.api.openapi import OPENAPI
from patchbay.localorg.running import free_port
from patchbay.store import Store
from tests.serving import wait_for_health

TOKEN = "t0ken-for-the-api-tests"
PASSWORD = "vault-pa55word-never-shown"
MIGRATION = "Source to target - Item - migration"
BROADCAST = "CRM to small - Deal - broadcast"

SPEC = f"""
systems:
  source: sqlite:///source.db
  target: sqlite:///target.db
  crm: sqlite:///crm.db
  small: sqlite:///small.db
  vault: postgresql://svc:{PASSWORD}@127.0.0.1:1/none
integrations:
  - name: {MIGRATION}
    pattern: migration
    description: Items of one country
    parameters:
      country: {{type: string, description: ISO code of the items' country}}
      min_id: {{type: integer, default: 0}}
    source:
      system: source
      object: items
      key: id
      scope: {{and: [{{field: country, eq: {{param: country}}}}, {{field: id, gte: {{param: min_id}}}}]}}
    transform: {{fields: {{item_id: id, name: name, country: country}}}}
    destination: {{system: target, object: items, key: item_id}}
    options: {{batch_size: 3}}
  - name: {BROADCAST}
    pattern: broadcast
    source: {{system: crm, object: deals, key: id, watermark: updated_at}}
    destinations:
      - name: small
        system: small
        object: small_deals
        key: id
        transform: {{fields: {{id: id, name: name, amount: amount}}}}
    options: {{max_attempts: 1, backoff_seconds: 0, backoff_max_seconds: 0}}
"""

ITEMS = [(i, f"item {i}", "DE" if i % 3 else "AT") for i in range(1, 11)]


@pytest.fixture
def spec_path(tmp_path: Path) -> Path:
    with sqlite3.connect(tmp_path / "source.db") as db:
        db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, country TEXT)")
        db.executemany("INSERT INTO items VALUES (?, ?, ?)", ITEMS)
    with sqlite3.connect(tmp_path / "target.db") as db:
        db.execute("CREATE TABLE items (item_id INTEGER PRIMARY KEY, name TEXT, country TEXT)")
    with sqlite3.connect(tmp_path / "crm.db") as db:
        db.execute("CREATE TABLE deals (id INTEGER PRIMARY KEY, name TEXT, amount REAL, "
                   "updated_at TEXT)")
        db.executemany("INSERT INTO deals VALUES (?, ?, ?, ?)", [
            (1, "Small deal", 500.0, "2026-01-01 10:00:00"),
            (2, "Big deal", 25000.0, "2026-01-01 10:00:01")])
    with sqlite3.connect(tmp_path / "small.db") as db:
        db.execute("CREATE TABLE small_deals (id INTEGER PRIMARY KEY, name TEXT, "
                   "amount REAL CHECK (amount < 1000))")
    path = tmp_path / "api.yaml"
    path.write_text(SPEC)
    return path


@pytest.fixture
def state(tmp_path: Path) -> str:
    return str(tmp_path / "state")


@pytest.fixture
def client(spec_path: Path, state: str) -> Iterator[TestClient]:
    app = create_app(spec_path, state, TOKEN)
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as test_client:
        yield test_client
    close_app(app)


def wait_for_run(get: Any, url: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        answer = get(url)
        assert answer.status_code == 200, answer.text
        run: dict[str, Any] = answer.json()
        if run["status"] != "running":
            return run
        assert time.monotonic() < deadline, f"run still running: {run}"
        time.sleep(0.05)


# -- auth ---------------------------------------------------------------------------------------


def test_every_route_but_health_needs_the_token(spec_path: Path, state: str) -> None:
    app = create_app(spec_path, state, TOKEN)
    try:
        anonymous = TestClient(app)
        assert anonymous.get("/health").json() == {"ok": True}
        for method, path in [("GET", "/integrations"), ("GET", "/runs"), ("POST", "/runs"),
                             ("GET", "/runs/x"), ("GET", "/dead-letters"),
                             ("POST", "/dead-letters/replay"), ("GET", "/openapi.json"),
                             ("GET", f"/outbox/{BROADCAST}"), ("GET", "/no/such/route")]:
            answer = anonymous.request(method, path, json={})
            assert answer.status_code == 401, (method, path, answer.text)
            assert answer.headers["www-authenticate"].startswith("Bearer")
            assert "error" in answer.json() and TOKEN not in answer.text
        for header in (f"Bearer {TOKEN}x", "Bearer ", f"Basic {TOKEN}", TOKEN, f"Bearer {TOKEN[:-1]}"):
            answer = anonymous.get("/integrations", headers={"Authorization": header})
            assert answer.status_code == 401, header
        assert anonymous.get("/integrations",
                             headers={"Authorization": f"bearer {TOKEN}"}).status_code == 200
    finally:
        close_app(app)


def test_without_a_token_the_api_listens_on_loopback_only(spec_path: Path, state: str) -> None:
    for host in ("0.0.0.0", "::", "192.168.1.10", "example.com"):
        with pytest.raises(ApiConfigError, match="PATCHBAY_API_TOKEN"):
            serve_api(host, free_port(), spec_path, state, token=None)
        with pytest.raises(ApiConfigError, match="PATCHBAY_API_TOKEN"):
            serve_api(host, free_port(), spec_path, state, token="")
    with serve_api("127.0.0.1", free_port(), spec_path, state, token=None) as server:
        answer = httpx.get(f"{server.url}/integrations")  # open: the loopback demo case
        assert answer.status_code == 200
        assert [i["name"] for i in answer.json()["integrations"]] == [MIGRATION, BROADCAST]


def test_without_a_token_only_json_changes_state_and_only_loopback_names_are_answered(
        spec_path: Path, state: str) -> None:
    with serve_api("127.0.0.1", free_port(), spec_path, state, token=None) as server:
        port = server.url.rsplit(":", 1)[1]
        body = json.dumps({"integration": MIGRATION, "params": {"country": "DE"}})
        # What a web page can send to any site without the browser asking first.
        for media_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data"):
            answer = httpx.post(f"{server.url}/runs", content=body,
                                headers={"Content-Type": media_type})
            assert (answer.status_code, answer.json()) == (415, {
                "error": "the body must be JSON, sent as Content-Type: application/json"}), media_type
        for path in ("/dead-letters/replay", "/dead-letters/discard"):
            assert httpx.post(server.url + path, content='{"ids": [1]}').status_code == 415
        assert httpx.get(f"{server.url}/runs").json() == {"runs": []}, "nothing was started"
        # A page of another site whose name points at 127.0.0.1 (DNS rebinding).
        for host in (f"attacker.example:{port}", "attacker.example", f"127.0.0.1.nip.example:{port}"):
            answer = httpx.get(f"{server.url}/integrations", headers={"Host": host})
            assert answer.status_code == 403, host
            assert answer.json()["error"].startswith(f"Host {host.rsplit(':', 1)[0]!r} is not "
                                                     "this server's name")
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "LOCALHOST"):
            assert httpx.get(f"{server.url}/integrations", headers={"Host": host}).status_code == 200
        started = httpx.post(f"{server.url}/runs", content=body,
                             headers={"Content-Type": "application/json; charset=utf-8"})
        assert started.status_code == 202, started.text
        wait_for_run(lambda path: httpx.get(server.url + path), started.json()["url"])


def test_a_port_in_use_is_a_clear_error(spec_path: Path, state: str) -> None:
    with serve_api("127.0.0.1", free_port(), spec_path, state, token=TOKEN) as server:
        port = int(server.url.rsplit(":", 1)[1])
        with pytest.raises(ApiConfigError, match="could not listen"):
            serve_api("127.0.0.1", port, spec_path, state, token=TOKEN)


# -- integrations and runs ---------------------------------------------------------------------


def test_integrations_list_names_patterns_and_parameters(client: TestClient) -> None:
    migration, broadcast = client.get("/integrations").json()["integrations"]
    assert migration == {
        "name": MIGRATION, "pattern": "migration", "description": "Items of one country",
        "parameters": {
            "country": {"type": "string", "required": True, "default": None,
                        "description": "ISO code of the items' country", "choices": None},
            "min_id": {"type": "integer", "required": False, "default": 0, "description": None,
                       "choices": None}}}
    assert broadcast["pattern"] == "broadcast" and broadcast["destinations"] == ["small"]
    assert broadcast["parameters"] == {} and broadcast["served"] is False


def test_a_migration_runs_in_the_background_over_a_real_server(spec_path: Path, state: str,
                                                                  tmp_path: Path) -> None:
    with serve_api("127.0.0.1", free_port(), spec_path, state, token=TOKEN) as server, \
            httpx.Client(base_url=server.url,
                         headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        started = http.post("/runs", json={"integration": MIGRATION, "params": {"country": "DE"}})
        assert started.status_code == 202, started.text
        body = started.json()
        assert body["status"] == "running" and body["url"] == f"/runs/{body['run']}"
        assert started.headers["location"] == body["url"]

        run = wait_for_run(http.get, body["url"])
        assert run["status"] == "complete", run
        assert run["params"] == {"country": "DE", "min_id": 0} and run["error"] is None
        expected = len([i for i in ITEMS if i[2] == "DE"])
        assert run["counters"]["read"] == expected
        report = run["report"]
        assert report["verdict"] == "complete"
        assert (report["counts"]["read"], report["counts"]["created"]) == (expected, expected)
        with sqlite3.connect(tmp_path / "target.db") as db:
            assert db.execute("SELECT item_id, name, country FROM items ORDER BY item_id").fetchall() \
                == [item for item in ITEMS if item[2] == "DE"]

        # a parameter given as a JSON number or as text, the same
        again = http.post("/runs", json={"integration": MIGRATION,
                                         "params": {"country": "AT", "min_id": "4"}})
        assert again.status_code == 202, again.text
        second = wait_for_run(http.get, again.json()["url"])
        assert second["status"] == "complete"
        assert second["report"]["counts"]["created"] == len(
            [i for i in ITEMS if i[2] == "AT" and i[0] >= 4])

        listed = http.get("/runs", params={"integration": MIGRATION}).json()["runs"]
        assert [r["run"] for r in listed] == [second["run"], run["run"]]
        assert http.get("/runs", params={"limit": 1}).json()["runs"][0]["run"] == second["run"]
        assert http.get("/runs", params={"integration": "nothing"}).json() == {"runs": []}
        assert http.get("/runs", params={"limit": 0}).status_code == 400
        missing = http.get("/runs/20990101-000000-abcdef")
        assert missing.status_code == 404 and "no run" in missing.json()["error"]


def test_bad_parameters_are_400_with_every_problem(client: TestClient, state: str) -> None:
    missing = client.post("/runs", json={"integration": MIGRATION})
    assert missing.status_code == 400
    assert missing.json()["problems"] == [
        "parameter 'country' is required: pass --param country=<string> (ISO code of the items' country)"]

    wrong = client.post("/runs", json={"integration": MIGRATION,
                                       "params": {"country": "DE", "min_id": "many", "contry": "x"}})
    assert wrong.status_code == 400
    problems = wrong.json()["problems"]
    assert problems == [f"unknown parameter 'contry' for '{MIGRATION}'; did you mean 'country'?",
                        "parameter 'min_id': 'many' is not a valid integer"]
    nested = client.post("/runs", json={"integration": MIGRATION, "params": {"country": {"a": 1}}})
    assert nested.status_code == 400 and "JSON object" in nested.json()["problems"][0]
    assert Store.open(directory=state).runs.latest() == [], "nothing started"


def test_an_unknown_integration_is_400_with_a_suggestion(client: TestClient) -> None:
    answer = client.post("/runs", json={"integration": "Source to target - Items - migration"})
    assert answer.status_code == 400
    body = answer.json()
    assert body["error"] == "no integration 'Source to target - Items - migration'"
    assert f"did you mean '{MIGRATION}'?" in body["problems"][0]
    far = client.post("/runs", json={"integration": "zzz"}).json()
    assert MIGRATION in far["problems"][0] and BROADCAST in far["problems"][0]


@pytest.mark.parametrize(("body", "expected"), [
    ({}, f"'integration' is required: the name of one of '{MIGRATION}', '{BROADCAST}'"),
    ({"integration": MIGRATION, "params": [1]}, """'params' must be an object: {"name": value, ...}"""),
    ({"integration": MIGRATION, "full": "yes"}, "'full' must be true or false"),
    ({"integration": MIGRATION, "paramz": {}}, "unknown field 'paramz'; did you mean 'params'?"),
])
def test_a_malformed_run_request_is_400(client: TestClient, body: dict[str, Any],
                                        expected: str) -> None:
    answer = client.post("/runs", json=body)
    assert answer.status_code == 400
    assert answer.json()["problems"] == [expected]


def test_errors_are_json(client: TestClient) -> None:
    not_json = client.post("/runs", content=b"{nope", headers={"Content-Type": "application/json"})
    assert (not_json.status_code, not_json.json()) == (400, {"error": "the body is not valid JSON"})
    assert client.post("/runs", json=[1]).json() == {"error": "the body must be a JSON object"}
    deep = {"integration": MIGRATION, "params": {"country": [[[[[[[[["DE"]]]]]]]]]}}
    for _ in range(60):
        deep = {"integration": MIGRATION, "params": {"country": deep}}
    too_deep = client.post("/runs", json=deep)
    assert (too_deep.status_code, too_deep.json()) == (
        400, {"error": "the body is nested deeper than 64 levels"})
    brackets = client.post("/runs", content=b"[" * 100_000 + b"]" * 100_000,
                           headers={"Content-Type": "application/json"})
    assert (brackets.status_code, brackets.json()) == (
        400, {"error": "the body is nested deeper than 64 levels"})
    assert client.get("/nowhere").status_code == 404 and "error" in client.get("/nowhere").json()
    wrong_method = client.delete("/runs")
    assert wrong_method.status_code == 405 and wrong_method.json() == {"error": "method not allowed"}
    assert client.get("/outbox/nothing").status_code == 404
    assert client.get(f"/outbox/{MIGRATION}").status_code == 400


def test_a_run_already_running_with_the_same_params_is_409(client: TestClient, state: str) -> None:
    store = Store.open(directory=state)
    running = store.runs.start(MIGRATION, "migration", {"country": "DE", "min_id": 0})
    answer = client.post("/runs", json={"integration": MIGRATION, "params": {"country": "DE"}})
    assert answer.status_code == 409, answer.text
    assert running.id in answer.json()["error"]
    other = client.post("/runs", json={"integration": MIGRATION, "params": {"country": "AT"}})
    assert other.status_code == 202
    assert wait_for_run(client.get, other.json()["url"])["status"] == "complete"
    store.close()


# -- broadcasts and dead letters ---------------------------------------------------------------


def test_dead_letters_list_replay_and_discard(client: TestClient) -> None:
    summary = client.post("/runs", json={"integration": BROADCAST})
    assert summary.status_code == 200, summary.text
    assert {k: summary.json()[k] for k in ("changes", "delivered", "dead")} == {
        "changes": 2, "delivered": 1, "dead": 1}

    [letter] = client.get("/dead-letters", params={"integration": BROADCAST}).json()["dead_letters"]
    assert (letter["destination"], letter["record_key"], letter["status"]) == ("small", "2", "dead")
    assert "payload" not in letter
    assert letter["last_error"] == "DATABASE_ERROR: CHECK constraint failed: amount < 1000"
    assert client.get("/dead-letters", params={"destination": "other"}).json() == {"dead_letters": []}
    shown = client.get(f"/dead-letters/{letter['id']}").json()
    assert shown["payload"]["amount"] == 25000.0 and shown["payload"]["name"] == "Big deal"
    assert client.get("/dead-letters/987654").status_code == 404
    counts = client.get(f"/outbox/{BROADCAST}").json()
    assert counts == {"integration": BROADCAST, "destinations": {
        "small": {"pending": 0, "delivered": 1, "dead": 1, "discarded": 0}}}

    replayed = client.post("/dead-letters/replay", json={"ids": [letter["id"], 987654]})
    assert replayed.json() == {"replayed": 1, "requested": 2}
    again = client.get(f"/dead-letters/{letter['id']}").json()
    assert (again["status"], again["attempts"]) == ("pending", 0)
    assert client.get("/dead-letters").json() == {"dead_letters": []}

    round_two = client.post("/runs", json={"integration": BROADCAST}).json()
    assert (round_two["changes"], round_two["dead"]) == (0, 1)  # still refused: dead again
    assert client.post("/dead-letters/discard", json={"ids": [letter["id"]]}).json() == {
        "discarded": 1, "requested": 1}
    assert client.get(f"/dead-letters/{letter['id']}").json()["status"] == "discarded"
    assert client.post("/dead-letters/discard", json={"ids": [letter["id"]]}).json()["discarded"] == 0
    assert client.get(f"/outbox/{BROADCAST}").json()["destinations"]["small"]["discarded"] == 1

    bad: dict[str, Any]
    for bad in ({}, {"ids": []}, {"ids": ["1"]}, {"ids": [True]}, {"ids": [1], "all": True}):
        answer = client.post("/dead-letters/replay", json=bad)
        assert answer.status_code == 400 and answer.json()["problems"], bad


def test_a_broadcast_the_server_keeps_going_is_not_run_on_demand(spec_path: Path, state: str) -> None:
    app = create_app(spec_path, state, TOKEN, serving=[BROADCAST])
    try:
        client = TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"})
        assert client.post("/runs", json={"integration": BROADCAST}).status_code == 409
        assert client.get("/integrations").json()["integrations"][1]["served"] is True
    finally:
        close_app(app)


def test_secrets_never_appear_in_answers(client: TestClient, state: str) -> None:
    from patchbay.store.outbox import NewDelivery

    # Secrets in every answer that can carry them: a dead letter's error and payload, and a
    # failed run's error.
    error = f"cannot connect to postgresql://svc:{PASSWORD}@db with {TOKEN}"
    redacted = "cannot connect to postgresql://svc:***@db with ***"
    store = Store.open(directory=state)
    store.outbox.add(BROADCAST, [NewDelivery("small", 7, "v1", "upsert", {"id": 7, "note": PASSWORD})])
    [leased] = store.outbox.lease(BROADCAST, "small", "worker")
    store.outbox.dead(leased.id, "worker", error)
    run = store.runs.start(MIGRATION, "migration", {"country": "DE"})
    store.runs.finish(run.id, "failed", error=error)
    store.close()
    answers = {path: client.get(path) for path in (
        f"/dead-letters/{leased.id}", "/dead-letters", f"/runs/{run.id}", "/runs")}
    for path, answer in answers.items():
        assert answer.status_code == 200, (path, answer.text)
        assert PASSWORD not in answer.text and TOKEN not in answer.text, path
    letter = answers[f"/dead-letters/{leased.id}"].json()
    assert (letter["last_error"], letter["payload"]) == (redacted, {"id": 7, "note": "***"})
    assert [d["last_error"] for d in answers["/dead-letters"].json()["dead_letters"]] == [redacted]
    assert answers[f"/runs/{run.id}"].json()["error"] == redacted
    assert [r["error"] for r in answers["/runs"].json()["runs"]] == [redacted]


# -- OpenAPI ------------------------------------------------------------------------------------


def test_openapi_describes_every_route(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert document == OPENAPI and document["openapi"].startswith("3.1")
    assert document["components"]["securitySchemes"]["bearer"] == {
        **document["components"]["securitySchemes"]["bearer"], "type": "http", "scheme": "bearer"}
    assert document["security"] == [{"bearer": []}]
    served = set()
    for route in cast(Starlette, client.app).routes:
        if isinstance(route, Mount):  # the web console's pages: HTML, not the API
            assert route.path == "/ui"
            continue
        assert isinstance(route, Route)
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", route.path)
        for method in (route.methods or set()) - {"HEAD"}:
            served.add((path, method.lower()))
    described = {(path, method) for path, item in document["paths"].items() for method in item}
    assert served == described
    assert document["paths"]["/health"]["get"]["security"] == []
    schemas = document["components"]["schemas"]
    for ref in re.findall(r'"\$ref": "#/components/schemas/(\w+)"', str(document).replace("'", '"')):
        assert ref in schemas, ref
    for path, item in document["paths"].items():
        for method, operation in item.items():
            assert operation["responses"], (path, method)
            if path != "/health":
                assert "401" in operation["responses"], (path, method)


# -- the command --------------------------------------------------------------------------------


def test_patchbay_serve_serves_the_api_for_a_file_without_broadcasts(spec_path: Path,
                                                                     tmp_path: Path) -> None:
    only_migration = tmp_path / "only-migration.yaml"
    only_migration.write_text(SPEC.split(f"  - name: {BROADCAST}")[0])
    environ = {k: v for k, v in os.environ.items() if k not in ("PATCHBAY_STATE", "PATCHBAY_API_TOKEN")}
    command = [sys.executable, "-m", "patchbay.cli", "serve", str(only_migration), "--state",
               str(tmp_path / "state")]

    refused = subprocess.run([*command, "--host", "0.0.0.0"], env=environ, capture_output=True,
                             text=True, timeout=60, check=False)
    assert refused.returncode == 2, refused.stderr
    assert "without a token" in " ".join(refused.stderr.split())
    # without the API, a file's migrations alone are worth serving: their key ranges
    no_api = subprocess.run([*command, "--no-api", "--integration", BROADCAST], env=environ,
                            capture_output=True, text=True, timeout=60, check=False)
    assert no_api.returncode == 2 and "has no broadcast, sync, stream or scheduled aggregation " \
        f"or migration integration named '{BROADCAST}'" in " ".join(no_api.stderr.split())

    port = free_port()
    process = subprocess.Popen([*command, "--port", str(port)], cwd=tmp_path,
                               env={**environ, "PATCHBAY_API_TOKEN": TOKEN},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for_health(url, process, 30, process.communicate)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        assert httpx.get(f"{url}/integrations").status_code == 401
        started = httpx.post(f"{url}/runs", headers=headers,
                             json={"integration": MIGRATION, "params": {"country": "DE"}})
        assert started.status_code == 202, started.text
        run = wait_for_run(lambda path: httpx.get(url + path, headers=headers), started.json()["url"])
        assert run["status"] == "complete"
    finally:
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "bearer token required" in err and TOKEN not in out + err
