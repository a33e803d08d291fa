"""The HTTP destination against a real receiver: Starlette served by uvicorn on a free port.

The receiver records every request and can be told to answer 500 for a while, 400 for
some keys, 409 for an Idempotency-Key it has seen, 429 with Retry-After, or to answer late.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from patchbay.connectors.base import Capability, connect
from patchbay.connectors.http import (
    IDEMPOTENCY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    HttpConnector,
    verify_signature,
)
from patchbay.errors import RetriableError, SpecError
from patchbay.localorg.running import free_port
from patchbay.model import Operation, Status
from patchbay.spec import SystemSpec

SECRET = "whsec-s3cr3t-value"
TOKEN = "tok-very-private-bearer"


@dataclass
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def idempotency_key(self) -> str:
        return self.headers[IDEMPOTENCY_HEADER.lower()]


@dataclass
class Receiver:
    """What the receiver does; the test changes it between writes."""

    port: int
    requests: list[Received] = field(default_factory=list)
    fail_remaining: int = 0
    """Answer 500 to this many requests still."""
    reject_keys: set[Any] = field(default_factory=set)
    """Answer 400 to records with these keys."""
    dedupe: bool = False
    """Answer 409 to an Idempotency-Key already answered 200."""
    too_many: bool = False
    delay: float = 0.0
    seen: set[str] = field(default_factory=set)
    in_flight: int = 0
    most_in_flight: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: Request) -> Response:
        body = await request.body()
        received = Received(request.method, request.url.path,
                            {k.lower(): v for k, v in request.headers.items()}, body)
        self.requests.append(received)
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            if self.fail_remaining > 0:
                self.fail_remaining -= 1
                return Response("database unavailable", status_code=500)
            if self.too_many:
                return Response("slow down", status_code=429, headers={"Retry-After": "30"})
            if received.json["key"] in self.reject_keys:
                return JSONResponse({"error": "amount must be positive", "field": "amount"},
                                    status_code=400)
            key = received.idempotency_key
            if self.dedupe and key in self.seen:
                return JSONResponse({"error": "duplicate"}, status_code=409)
            self.seen.add(key)
            return JSONResponse({"ok": True})
        finally:
            self.in_flight -= 1


class Serving:
    def __init__(self, receiver: Receiver) -> None:
        app = Starlette(routes=[Route("/{path:path}", receiver.handle, methods=["POST", "PUT"])])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=receiver.port,
                                                    log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, name="http-receiver", daemon=True)

    def start(self) -> None:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "receiver did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver(free_port())
    serving = Serving(receiver)
    serving.start()
    try:
        yield receiver
    finally:
        serving.stop()


def http(url: str, **options: Any) -> HttpConnector:
    connector = connect(SystemSpec(url=url, options=options, name="hooks"))
    assert isinstance(connector, HttpConnector)
    return connector


ORDER = {"id": 17, "customer": "Müller GmbH", "amount": Decimal("1234.50"),
         "closed_on": dt.date(2024, 5, 31), "at": dt.datetime(2024, 5, 31, 12, 30, tzinfo=dt.UTC),
         "__version__": "2024-05-31T12:30:00+00:00"}


# -- bodies and headers -------------------------------------------------------------------------


def test_each_record_is_one_json_request_with_its_headers(receiver: Receiver) -> None:
    second = {**ORDER, "id": 18, "__version__": "2024-06-01T08:00:00+00:00"}
    with http(receiver.url + "/v1", headers={"Authorization": f"Bearer {TOKEN}",
                                             "X-Tenant": "acme"}) as hooks:
        outcomes = hooks.write("/orders", [ORDER, second], Operation.UPSERT, "id")

    assert [(o.key, o.status) for o in outcomes] == [(17, Status.CREATED), (18, Status.CREATED)]
    first, other = receiver.requests
    assert (first.method, first.path) == ("POST", "/v1/orders")
    assert first.json == {
        "object": "/orders", "operation": "upsert", "key": 17,
        "version": "2024-05-31T12:30:00+00:00",
        "record": {"id": 17, "customer": "Müller GmbH", "amount": "1234.50",
                   "closed_on": "2024-05-31", "at": "2024-05-31T12:30:00+00:00"},
    }
    assert "__version__" not in first.json["record"]
    assert other.json["key"] == 18
    assert first.headers["content-type"] == "application/json"
    assert first.headers["authorization"] == f"Bearer {TOKEN}"
    assert first.headers["x-tenant"] == "acme"
    assert re.fullmatch(r"[0-9a-f]{64}", first.idempotency_key)
    assert first.idempotency_key != other.idempotency_key
    assert SIGNATURE_HEADER.lower() not in first.headers  # no secret, no signature


def test_idempotency_key_is_stable_across_redeliveries_and_new_per_version(
        receiver: Receiver) -> None:
    newer = {**ORDER, "amount": Decimal("99.00"), "__version__": "2024-06-02T00:00:00+00:00"}
    with http(receiver.url) as hooks:
        hooks.write("/orders", [ORDER], Operation.UPSERT, "id")
        hooks.write("/orders", [dict(ORDER)], Operation.UPSERT, "id")           # redelivery
        hooks.write("/orders", [{**ORDER, "id": "17"}], Operation.UPSERT, "id")  # key as text
        hooks.write("/orders", [newer], Operation.UPSERT, "id")                  # next change
        hooks.write("/invoices", [ORDER], Operation.UPSERT, "id")               # other object

    keys = [r.idempotency_key for r in receiver.requests]
    assert keys[0] == keys[1] == keys[2]
    assert len({keys[0], keys[3], keys[4]}) == 3


def test_without_a_version_the_key_follows_the_content(receiver: Receiver) -> None:
    plain = {"id": 5, "name": "a"}
    with http(receiver.url) as hooks:
        hooks.write("/things", [plain, dict(plain)], Operation.UPSERT, "id")
        hooks.write("/things", [{"id": 5, "name": "b"}], Operation.UPSERT, "id")

    first, again, changed = receiver.requests
    assert first.json["version"] is None
    assert first.idempotency_key == again.idempotency_key != changed.idempotency_key


def test_signature_verifies_and_fails_for_a_tampered_body_or_an_old_timestamp(
        receiver: Receiver) -> None:
    with http(receiver.url, secret=SECRET) as hooks:
        assert hooks.write("/orders", [ORDER], Operation.UPSERT, "id")[0].status is Status.CREATED

    (request,) = receiver.requests
    timestamp = request.headers[TIMESTAMP_HEADER.lower()]
    signature = request.headers[SIGNATURE_HEADER.lower()]
    assert re.fullmatch(r"sha256=[0-9a-f]{64}", signature)
    assert abs(int(timestamp) - time.time()) < 60

    assert verify_signature(SECRET, timestamp, request.body, signature)
    tampered = request.body.replace(b"1234.50", b"9234.50")
    assert tampered != request.body
    assert not verify_signature(SECRET, timestamp, tampered, signature)
    assert not verify_signature("another-secret", timestamp, request.body, signature)
    assert not verify_signature(SECRET, str(int(timestamp) + 1), request.body, signature)
    old = int(timestamp) + 301
    assert not verify_signature(SECRET, timestamp, request.body, signature, now=old)
    assert verify_signature(SECRET, timestamp, request.body, signature, now=old,
                            max_age_seconds=600)
    assert not verify_signature(SECRET, timestamp, request.body, signature, now=int(timestamp) - 301)
    assert not verify_signature(SECRET, "12ab", request.body, signature)
    assert not verify_signature(SECRET, timestamp, request.body, signature.removeprefix("sha256="))
    assert not verify_signature("", timestamp, request.body, signature)


def test_the_signed_material_is_timestamp_dot_body() -> None:
    import hashlib
    import hmac

    body = b'{"object":"/x"}'
    expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert verify_signature("k", "1700000000", body, f"sha256={expected}", now=1_700_000_100)


# -- answers ------------------------------------------------------------------------------------


def test_a_5xx_fails_the_records_and_a_later_write_delivers_them(receiver: Receiver) -> None:
    receiver.fail_remaining = 2
    records = [ORDER, {**ORDER, "id": 18}]
    with http(receiver.url) as hooks:
        failed = hooks.write("/orders", records, Operation.UPSERT, "id")
        assert [(o.status, o.code) for o in failed] == [(Status.FAILED, "HTTP_500")] * 2
        assert failed[0].reason == "database unavailable"
        retried = hooks.write("/orders", records, Operation.UPSERT, "id")   # the outbox's retry
        assert [o.status for o in retried] == [Status.CREATED, Status.CREATED]
        assert hooks.usage() == {"http_requests": 4}

    keys = [r.idempotency_key for r in receiver.requests]
    assert keys[:2] == keys[2:]


def test_a_4xx_rejects_only_its_record_with_the_code_and_the_answer(receiver: Receiver) -> None:
    receiver.reject_keys = {18}
    records = [ORDER, {**ORDER, "id": 18}, {**ORDER, "id": 19}]
    with http(receiver.url) as hooks:
        outcomes = hooks.write("/orders", records, Operation.UPSERT, "id")

    assert [o.status for o in outcomes] == [Status.CREATED, Status.REJECTED, Status.CREATED]
    rejected = outcomes[1]
    assert (rejected.key, rejected.code) == (18, "HTTP_400")
    assert rejected.reason is not None and rejected.reason.startswith(
        '{"error":"amount must be positive"')


def test_a_409_for_a_seen_idempotency_key_counts_as_delivered(receiver: Receiver) -> None:
    receiver.dedupe = True
    with http(receiver.url) as hooks:
        hooks.write("/orders", [ORDER], Operation.UPSERT, "id")
        again = hooks.write("/orders", [ORDER], Operation.UPSERT, "id")

    assert [r.idempotency_key for r in receiver.requests].count(
        receiver.requests[0].idempotency_key) == 2
    assert again[0].status is Status.CREATED


def test_429_fails_and_quotes_retry_after(receiver: Receiver) -> None:
    receiver.too_many = True
    with http(receiver.url) as hooks:
        (outcome,) = hooks.write("/orders", [ORDER], Operation.UPSERT, "id")
    assert (outcome.status, outcome.code) == (Status.FAILED, "HTTP_429")
    assert outcome.reason == "slow down (Retry-After: 30)"


def test_a_late_answer_fails_the_record(receiver: Receiver) -> None:
    receiver.delay = 1.0
    with http(receiver.url, timeout=0.2) as hooks:
        (outcome,) = hooks.write("/orders", [ORDER], Operation.UPSERT, "id")
    assert (outcome.status, outcome.code) == (Status.FAILED, "TIMEOUT")


def test_an_unreachable_receiver_fails_the_batch_retriably_without_secrets(
        caplog: pytest.LogCaptureFixture) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    caplog.set_level(logging.DEBUG)
    with http(closed, secret=SECRET, headers={"Authorization": f"Bearer {TOKEN}"}) as hooks, \
            pytest.raises(RetriableError) as raised:
        hooks.write("/orders", [ORDER, {**ORDER, "id": 18}], Operation.UPSERT, "id")

    message = str(raised.value)
    assert "cannot reach HTTP system 'hooks'" in message
    assert closed in message
    for secret in (SECRET, TOKEN):
        assert secret not in message
        assert secret not in caplog.text
    assert hooks.usage() == {"http_requests": 1}   # not tried record by record


def test_delete_sends_the_key_and_reports_deleted(receiver: Receiver) -> None:
    version = "2024-06-03T10:00:00+00:00"
    with http(receiver.url, method="put") as hooks:
        (outcome,) = hooks.write("/orders", [{"id": 17, "__version__": version}],
                                 Operation.DELETE, "id")

    assert (outcome.key, outcome.status) == (17, Status.DELETED)
    (request,) = receiver.requests
    assert request.method == "PUT"
    assert request.json == {"object": "/orders", "operation": "delete", "key": 17,
                            "version": version, "record": {"id": 17}}


def test_a_record_without_its_key_is_rejected_unsent(receiver: Receiver) -> None:
    with http(receiver.url) as hooks:
        outcomes = hooks.write("/orders", [{"id": None}, ORDER], Operation.UPSERT, "id")
    assert [(o.status, o.code) for o in outcomes] == [
        (Status.REJECTED, "REQUIRED_FIELD_MISSING"), (Status.CREATED, None)]
    assert len(receiver.requests) == 1


def test_concurrency_when_order_does_not_matter(receiver: Receiver) -> None:
    receiver.delay = 0.2
    records = [{"id": i, "__version__": "v1"} for i in range(8)]
    with http(receiver.url, concurrency=4, ordered=False) as hooks:
        outcomes = hooks.write("/orders", records, Operation.UPSERT, "id")

    assert [(o.key, o.status) for o in outcomes] == [(i, Status.CREATED) for i in range(8)]
    assert receiver.most_in_flight > 1
    assert sorted(r.json["key"] for r in receiver.requests) == list(range(8))


# -- options and the seam -----------------------------------------------------------------------


def test_registered_for_http_and_https_and_schemaless() -> None:
    hooks, local = http("https://api.example.com/v1?code=abc"), http("http://127.0.0.1:8080/")
    try:
        assert hooks.capabilities == {Capability.WRITE, Capability.DESCRIBE}
        schema = hooks.describe("/orders")
        assert (schema.name, dict(schema.fields), schema.key) == ("/orders", {}, None)
        assert hooks.url_of("/orders") == "https://api.example.com/v1/orders?code=abc"
        assert hooks.url_of("orders/") == "https://api.example.com/v1/orders/?code=abc"
        assert local.url_of("/orders") == "http://127.0.0.1:8080/orders"
    finally:
        hooks.close()
        local.close()


@pytest.mark.parametrize(("options", "problem"), [
    ({"method": "GET"}, "method must be POST or PUT"),
    ({"concurrency": 4}, "set ordered: false"),
    ({"concurrency": 0, "ordered": False}, "concurrency must be a positive"),
    ({"timeout": "soon"}, "timeout must be a number"),
    ({"secret": ""}, "secret is empty"),
    ({"headers": {"Authorization": "Bearer ${API_TOKEN}"}}, "unsubstituted"),
    ({"headers": {"Authorization": "Bearer x\nInjected: 1"}}, "line break"),
])
def test_bad_options_are_spec_errors(options: dict[str, Any], problem: str) -> None:
    with pytest.raises(SpecError, match=re.escape(problem)) as raised:
        http("https://api.example.com", **options)
    assert "Bearer x" not in str(raised.value)
