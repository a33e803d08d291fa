"""Requests generated from the API's own OpenAPI document (GET /openapi.json, by
Schemathesis) against a real `serve` API with a token: whatever they hold, none is answered
with a server error, with the token and without it, and every answer has a status the
document lists for its operation.

The served file has a migration, and a broadcast that takes webhooks and Outbound Messages,
their secrets set: a 500 here is a bug, not a missing secret.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import schemathesis
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.core import NOT_SET
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.schemas import OpenApiSchema
from sqlalchemy.engine import Engine

from patchbay.api import serve_api
from patchbay.connectors.http import sign
from patchbay.localorg.running import free_port

TOKEN = "t0ken-for-generated-requests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECRETS = {"FUZZ_HOOK_SECRET": "hook-secret-for-generated-requests",
           "FUZZ_OUTBOUND_SECRET": "outbound-secret-for-generated-requests"}
EXAMPLES = 10
"""Per operation, test and engine state: about 140 requests each, seconds in all."""
BROADCAST = "pushed"

SPEC = f"""
systems:
  source: sqlite:///source.db
  target: sqlite:///target.db
integrations:
  - name: items
    pattern: migration
    parameters: {{min_id: {{type: integer, default: 0}}}}
    source: {{system: source, object: items, key: id, scope: {{field: id, gte: {{param: min_id}}}}}}
    destination: {{system: target, object: items, key: id}}
  - name: {BROADCAST}
    pattern: broadcast
    source: {{system: source, object: items, key: id, watermark: updated_at}}
    trigger:
      webhook: {{secret_env: FUZZ_HOOK_SECRET}}
      outbound_messages: {{organization_id: 00D000000000001AAA, secret_env: FUZZ_OUTBOUND_SECRET}}
    destinations: [{{name: copy, system: target, object: items, key: id}}]
"""


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API over the file, its engine state in SQLite or in a PostgreSQL schema of its
    own (which refuses what SQLite takes, NUL characters among them)."""
    directory = tmp_path_factory.mktemp("schema")
    for name in ("source", "target"):
        with sqlite3.connect(directory / f"{name}.db") as db:
            db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, updated_at TEXT)")
    (directory / "api.yaml").write_text(SPEC.replace("sqlite:///", f"sqlite:///{directory}/"))
    saved = {name: os.environ.get(name) for name in SECRETS}
    os.environ.update(SECRETS)
    with contextlib.ExitStack() as cleanup:
        cleanup.callback(_restore, saved)
        state = str(directory / "state")
        if request.param == "postgresql":
            state = cleanup.enter_context(_postgres_state(request.getfixturevalue("pg_url"),
                                                          request.getfixturevalue("pg_engine")))
        yield cleanup.enter_context(serve_api("127.0.0.1", free_port(), directory / "api.yaml",
                                              state, token=TOKEN)).url


def _restore(saved: dict[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@contextlib.contextmanager
def _postgres_state(pg_url: str, pg_engine: Engine) -> Iterator[str]:
    schema = f"pb_api_schema_{uuid.uuid4().hex[:10]}"
    with pg_engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{pg_url}{'&' if '?' in pg_url else '?'}options=-csearch_path%3D{schema}"
    finally:
        with pg_engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))


@pytest.fixture(scope="module")
def api_schema(served: str) -> OpenApiSchema:
    schema = schemathesis.openapi.from_url(f"{served}/openapi.json", headers=AUTH)
    schema.config.base_url = served
    return schema


def _answered(case: Any, headers: dict[str, str]) -> Any:
    if case.path == "/hooks/{integration}" and case.path_parameters["integration"] == BROADCAST:
        response = _signed(case)
    else:
        query = {"secret": SECRETS["FUZZ_OUTBOUND_SECRET"]} \
            if case.path == "/outbound/{integration}" else {}
        response = case.call(headers=headers, params={**(case.query or {}), **query}, timeout=30)
    where = (case.method, case.formatted_path, response.status_code, response.text[:500])
    assert response.status_code < 500, where
    assert str(response.status_code) in case.operation.definition.raw["responses"], where
    return response


def _signed(case: Any) -> httpx.Response:
    """A webhook of the generated body, signed: what only the source can send."""
    body = json.dumps(case.body).encode() if case.body is not NOT_SET else b""
    stamp = str(int(time.time()))
    return httpx.post(f"{case.operation.schema.config.base_url}/hooks/{BROADCAST}", content=body,
                      timeout=30, headers={
                          "Content-Type": "application/json", "X-Patchbay-Timestamp": stamp,
                          "X-Patchbay-Signature": sign(SECRETS["FUZZ_HOOK_SECRET"], stamp, body)})


def _each_operation(api_schema: OpenApiSchema, check: Callable[[Any], None]) -> None:
    """`check` on EXAMPLES generated requests of every operation the document describes,
    requests that fit the document and requests that do not; a route of an integration
    also gets the served broadcast's name, for answers other than 404."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    described = {f"{method.upper()} {path}" for path, item in api_schema.raw_schema["paths"].items()
                 for method in item}
    # The document's own route is left out by Schemathesis: it was loaded from there.
    assert {o.label for o in operations} == described - {"GET /openapi.json"}
    for operation in operations:
        cases = [operation.as_strategy(GenerationMode.POSITIVE),
                 operation.as_strategy(GenerationMode.NEGATIVE)]
        if "{integration}" in operation.path:
            cases.append(operation.as_strategy(GenerationMode.POSITIVE,
                                               path_parameters={"integration": BROADCAST}))

        @given(st.one_of(cases))
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def generated(case: Any) -> None:
            check(case)

        generated()


def test_no_generated_request_is_a_server_error_with_the_token(api_schema: OpenApiSchema) -> None:
    def check(case: Any) -> None:
        _answered(case, AUTH)

    _each_operation(api_schema, check)


def test_no_generated_request_is_a_server_error_without_the_token(
        api_schema: OpenApiSchema) -> None:
    def check(case: Any) -> None:
        response = _answered(case, {})
        if case.path != "/health" and not case.path.startswith(("/hooks/", "/outbound/")):
            assert response.status_code == 401, (case.method, case.formatted_path)

    _each_operation(api_schema, check)


def test_nul_characters_in_the_path_or_query_are_400_on_either_engine_state(served: str) -> None:
    for path in ("/outbox/a%00b", "/runs/x%00", "/runs?integration=a%00", "/dead-letters?destination=%00",
                 "/aggregations/a%00"):
        answer = httpx.get(served + path, headers=AUTH)
        assert (answer.status_code, answer.json()) == (
            400, {"error": "the path and the query cannot hold NUL characters"}), path
