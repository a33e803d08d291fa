"""Message destinations against real brokers: RabbitMQ, NATS JetStream and Redis Streams.

The brokers are used for real; their URLs come from PATCHBAY_TEST_AMQP, PATCHBAY_TEST_NATS
and PATCHBAY_TEST_REDIS (defaults: the local services). A broker that cannot be reached
fails its tests, with the URL tried; it is never skipped.

Each test publishes to exchanges, subjects and streams of its own (a random suffix) and
deletes them afterwards. A broker that stops answering is played by `StallProxy`, a TCP
proxy on 127.0.0.1 in front of the real one that can be told to hold everything it gets.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import nats
import pika
import pytest
import redis
from pika.adapters.blocking_connection import BlockingChannel

from patchbay.connectors.base import Capability, Connector, connect
from patchbay.connectors.messages import Message, message_for, message_id
from patchbay.connectors.nats import NatsConnector
from patchbay.connectors.rabbitmq import RabbitMqConnector
from patchbay.connectors.redis import RedisConnector, marker_key
from patchbay.errors import ConnectionFailed, RetriableError, SpecError
from patchbay.model import ObjectSchema, Operation, Record, Status
from patchbay.spec import SystemSpec

SECRET = "s3cret-pw-7f1c"


def system(url: str, **options: Any) -> SystemSpec:
    return SystemSpec(url=url, options=options, name="events")


@pytest.fixture
def suffix() -> str:
    return uuid.uuid4().hex[:10]


def batch(version: str = "2024-05-01T10:00:00") -> list[Record]:
    """Three broadcast payloads: fields, and the reserved version field."""
    return [
        {"id": 1, "name": "Ada", "country": "GB", "born": dt.date(1815, 12, 10),
         "balance": Decimal("12.50"), "__version__": version},
        {"id": 2, "name": "Grace", "country": "US", "born": None,
         "balance": Decimal("0.10"), "__version__": version},
        {"id": "3", "name": "Émilie", "country": "FR", "born": dt.date(1706, 12, 17),
         "seen": dt.datetime(2024, 5, 1, 9, 30, tzinfo=dt.UTC), "balance": None,
         "__version__": version + "Z"},
    ]


def expected_body(object: str, record: Record, operation: str = "upsert") -> dict[str, Any]:
    def plain(value: Any) -> Any:
        return value.isoformat() if isinstance(value, dt.date) else \
            str(value) if isinstance(value, Decimal) else value

    return {"object": object, "operation": operation, "key": record["id"],
            "version": record.get("__version__"),
            "record": {k: plain(v) for k, v in record.items() if k != "__version__"}}


def expected_id(object: str, record: Record) -> str:
    return message_id(object, record["id"], record["__version__"])


def test_message_ids_follow_the_change_not_the_delivery() -> None:
    first = message_for("customers", {"id": 1, "n": "a", "__version__": "v1"}, Operation.UPSERT, "id")
    same = message_for("customers", {"id": "1", "n": "b", "__version__": "v1"}, Operation.UPDATE, "id")
    later = message_for("customers", {"id": 1, "n": "a", "__version__": "v2"}, Operation.UPSERT, "id")
    elsewhere = message_for("orders", {"id": 1, "n": "a", "__version__": "v1"}, Operation.UPSERT, "id")
    assert isinstance(first, Message) and isinstance(same, Message)
    assert isinstance(later, Message) and isinstance(elsewhere, Message)
    assert first.id == same.id == message_id("customers", 1, "v1")  # key as text: 1 and "1"
    assert len({first.id, later.id, elsewhere.id}) == 3
    assert len(first.id) == 64 and int(first.id, 16) >= 0
    # without a version, the content stands in for it
    plain = [message_for("customers", {"id": 1, "n": n}, Operation.UPSERT, "id") for n in "aab"]
    ids = [m.id for m in plain if isinstance(m, Message)]
    assert ids[0] == ids[1] != ids[2]
    assert json.loads(plain[0].body if isinstance(plain[0], Message) else b"")["version"] is None


# -- RabbitMQ ----------------------------------------------------------------------------------


@pytest.fixture
def amqp(amqp_url: str) -> Iterator[tuple[BlockingChannel, list[str], list[str]]]:
    """A channel to set up and read back with, and lists of exchanges and queues to delete."""
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    exchanges: list[str] = []
    queues: list[str] = []
    try:
        yield connection.channel(), exchanges, queues
    finally:
        channel = connection.channel()
        for queue in queues:
            channel.queue_delete(queue)
        for exchange in exchanges:
            channel.exchange_delete(exchange)
        connection.close()


def bound_queue(amqp: tuple[BlockingChannel, list[str], list[str]], exchange: str,
                binding: str = "#") -> str:
    channel, exchanges, queues = amqp
    channel.exchange_declare(exchange, "topic", durable=True)
    exchanges.append(exchange)
    queue = f"{exchange}.q"
    channel.queue_declare(queue, durable=True)
    queues.append(queue)
    channel.queue_bind(queue, exchange, binding)
    return queue


def drain(channel: BlockingChannel, queue: str) -> list[tuple[Any, Any, dict[str, Any]]]:
    """Every message in the queue: (method, properties, body as JSON)."""
    got: list[tuple[Any, Any, dict[str, Any]]] = []
    while True:
        method, properties, body = channel.basic_get(queue, auto_ack=True)
        if method is None or body is None:
            return got
        got.append((method, properties, json.loads(body)))


def test_rabbitmq_publishes_persistent_confirmed_messages_with_stable_ids(
        amqp_url: str, amqp: Any, suffix: str) -> None:
    channel = amqp[0]
    exchange = f"patchbay-test-{suffix}"
    queue = bound_queue(amqp, exchange, "customers.#")
    records = batch()
    with connect(system(amqp_url, routing_key="customers.{country}", declare=True)) as conn:
        assert isinstance(conn, RabbitMqConnector)
        assert {Capability.WRITE, Capability.DESCRIBE} <= conn.capabilities
        assert conn.describe(exchange) == ObjectSchema(exchange, {}, None)
        conn.check()
        outcomes = conn.write(exchange, records, Operation.UPSERT, "id")
        assert [(o.key, o.status) for o in outcomes] == [(1, Status.CREATED), (2, Status.CREATED),
                                                         ("3", Status.CREATED)]
        first = drain(channel, queue)
        assert [body for _, _, body in first] == [expected_body(exchange, r) for r in records]
        assert [m.routing_key for m, _, _ in first] == ["customers.GB", "customers.US", "customers.FR"]
        for (_, properties, _), record in zip(first, records, strict=True):
            assert properties.delivery_mode == 2
            assert properties.content_type == "application/json"
            assert properties.message_id == expected_id(exchange, record)
            assert properties.type == "upsert"
        assert "__version__" not in first[0][2]["record"]
        assert first[0][2]["record"]["born"] == "1815-12-10"
        assert first[0][2]["record"]["balance"] == "12.50"

        # A redelivery: RabbitMQ delivers it again, with the same ids (consumers dedupe).
        again = conn.write(exchange, batch(), Operation.UPSERT, "id")
        assert [o.status for o in again] == [Status.CREATED] * 3
        second = drain(channel, queue)
        assert [p.message_id for _, p, _ in second] == [p.message_id for _, p, _ in first]
        assert [b for _, _, b in second] == [b for _, _, b in first]

        # A delete: a message saying so, routed with the fields it lacks left empty.
        deleted = conn.write(exchange, [{"id": 1, "__version__": "v9"}], Operation.DELETE, "id")
        assert [(o.key, o.status) for o in deleted] == [(1, Status.DELETED)]
        [(method, properties, body)] = drain(channel, queue)
        assert method.routing_key == "customers."
        assert properties.type == "delete"
        assert body == {"object": exchange, "operation": "delete", "key": 1, "version": "v9",
                        "record": {"id": 1}}
        assert properties.message_id == message_id(exchange, 1, "v9") != first[0][1].message_id


def test_rabbitmq_declares_the_exchange_and_rejects_bad_records_alone(
        amqp_url: str, amqp: Any, suffix: str) -> None:
    channel, exchanges, queues = amqp
    exchange = f"patchbay-test-{suffix}"
    exchanges.append(exchange)
    with connect(system(amqp_url, declare=True, mandatory=False)) as conn:
        records = [*batch()[:1], {"id": 7, "ratio": float("nan"), "__version__": "v1"},
                   {"id": None, "name": "no key"}, {"id": 8, "blob": object(), "__version__": "v1"},
                   batch()[1]]
        outcomes = conn.write(exchange, records, Operation.UPSERT, "id")
        assert [(o.status, o.code) for o in outcomes] == [
            (Status.CREATED, None), (Status.REJECTED, "INVALID_VALUE"),
            (Status.REJECTED, "REQUIRED_FIELD_MISSING"), (Status.REJECTED, "INVALID_TYPE"),
            (Status.CREATED, None)]
        assert "ratio" in (outcomes[1].reason or "") and "blob" in (outcomes[3].reason or "")
    # declared durable topic: a passive declare of the same finds it, a queue can bind to it
    channel.exchange_declare(exchange, "topic", durable=True, passive=True)
    queue = f"{exchange}.q"
    channel.queue_declare(queue, durable=True)
    queues.append(queue)
    channel.queue_bind(queue, exchange, exchange)  # default routing key: the exchange name
    with connect(system(amqp_url)) as conn:
        conn.write(exchange, batch()[:1], Operation.UPSERT, "id")
    [(method, _, _)] = drain(channel, queue)
    assert method.routing_key == exchange


def test_rabbitmq_unroutable_or_missing_exchange_is_retriable(
        amqp_url: str, amqp: Any, suffix: str) -> None:
    exchange = f"patchbay-test-{suffix}"
    bound_queue(amqp, exchange, "customers.GB")
    with connect(system(amqp_url, routing_key="customers.{country}")) as conn:
        with pytest.raises(RetriableError, match="no queue took a message"):
            conn.write(exchange, batch(), Operation.UPSERT, "id")  # US: no queue bound
        with pytest.raises(RetriableError, match=r"does not exist.*declare: true"):
            conn.write(f"{exchange}-missing", batch(), Operation.UPSERT, "id")
        # the connector recovers its channel for the next batch
        outcomes = conn.write(exchange, batch()[:1], Operation.UPSERT, "id")
        assert outcomes[0].status is Status.CREATED
        rejected = conn.write(exchange, [{"id": 5, "__version__": "v"}], Operation.UPSERT, "id")
        assert (rejected[0].status, rejected[0].code) == (Status.REJECTED, "REQUIRED_FIELD_MISSING")


@contextlib.contextmanager
def rabbitmq_max_message_size(size: int) -> Iterator[None]:
    """The broker's message size limit lowered for a while (a runtime setting of the node)."""
    def set_limit(value: str) -> str:
        return subprocess.run(["rabbitmqctl", "eval", f"application:set_env(rabbit, max_message_size, "
                               f"{value})."], check=True, capture_output=True, text=True).stdout

    before = subprocess.run(["rabbitmqctl", "eval", "application:get_env(rabbit, max_message_size)."],
                            check=True, capture_output=True, text=True).stdout
    set_limit(str(size))
    try:
        yield
    finally:
        set_limit(before.strip().removeprefix("{ok,").removesuffix("}") or "134217728")


def test_rabbitmq_batches_commit_once_and_a_message_too_large_is_rejected_alone(
        amqp_url: str, amqp: Any, suffix: str) -> None:
    channel = amqp[0]
    exchange = f"patchbay-test-{suffix}"
    queue = bound_queue(amqp, exchange, "#")
    records = batch()
    with connect(system(amqp_url)) as conn:
        many = [{**records[0], "id": i} for i in range(1, 1201)]
        assert all(o.status is Status.CREATED for o in conn.write(exchange, many, Operation.UPSERT, "id"))
        assert [body["key"] for _, _, body in drain(channel, queue)] == list(range(1, 1201))
    # the broker reads its size limit when a channel opens: a new connector, under the limit
    with rabbitmq_max_message_size(4096), connect(system(amqp_url)) as limited:
        huge = {"id": 99, "name": "x" * 10_000, "__version__": "v1"}
        outcomes = limited.write(exchange, [records[0], huge, records[1]], Operation.UPSERT, "id")
    assert [(o.status, o.code) for o in outcomes] == [
        (Status.CREATED, None), (Status.REJECTED, "MESSAGE_TOO_LARGE"), (Status.CREATED, None)]
    # the refused batch was not committed: each message is in the queue once
    assert [body["key"] for _, _, body in drain(channel, queue)] == [1, 2]


def test_rabbitmq_wrong_password_is_refused_without_showing_it(amqp_url: str) -> None:
    url = amqp_url.replace("guest:guest@", f"guest:{SECRET}@", 1)
    assert SECRET in url
    with connect(system(url)) as conn, pytest.raises(ConnectionFailed) as refused:
        conn.write("anything", batch(), Operation.UPSERT, "id")
    assert SECRET not in str(refused.value)
    assert "***" in str(refused.value)


# -- NATS JetStream ----------------------------------------------------------------------------


class Jet:
    """Set-up and read-back through nats-py, on a loop of its own; deletes its streams."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.streams: list[str] = []

    def run(self, work: Callable[[Any], Any]) -> Any:
        async def go() -> Any:
            client = await nats.connect(self.url, connect_timeout=5, allow_reconnect=False)
            try:
                return await work(client.jetstream())
            finally:
                await client.close()

        return asyncio.run(go())

    def add_stream(self, name: str, subjects: list[str]) -> None:
        self.streams.append(name)
        self.run(lambda js: js.add_stream(name=name, subjects=subjects))

    def messages(self, stream: str) -> list[Any]:
        async def read(js: Any) -> list[Any]:
            info = await js.stream_info(stream)
            return [await js.get_msg(stream, seq) for seq in
                    range(info.state.first_seq, info.state.last_seq + 1)] if info.state.messages else []

        return list(self.run(read))

    def info(self, stream: str) -> Any:
        return self.run(lambda js: js.stream_info(stream))


@pytest.fixture
def jet(nats_url: str) -> Iterator[Jet]:
    jet = Jet(nats_url)
    yield jet

    async def clean(js: Any) -> None:
        for stream in jet.streams:
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await js.delete_stream(stream)

    jet.run(clean)


def test_nats_jetstream_stores_a_redelivery_once(nats_url: str, jet: Jet, suffix: str) -> None:
    stream, subject = f"PATCHBAY_TEST_{suffix}", f"patchbay.test.{suffix}.customers"
    jet.streams.append(stream)
    records = batch()
    with connect(system(nats_url, stream=stream, duplicate_window=300)) as conn:
        assert isinstance(conn, NatsConnector)
        assert conn.describe(subject) == ObjectSchema(subject, {}, None)
        conn.check()
        outcomes = conn.write(subject, records, Operation.UPSERT, "id")
        assert [(o.key, o.status, o.reason) for o in outcomes] == [
            (1, Status.CREATED, None), (2, Status.CREATED, None), ("3", Status.CREATED, None)]
        info = jet.info(stream)
        assert info.config.subjects == [subject]
        assert info.config.duplicate_window == 300
        stored = jet.messages(stream)
        assert [json.loads(m.data) for m in stored] == [expected_body(subject, r) for r in records]
        assert [m.headers["Nats-Msg-Id"] for m in stored] == [expected_id(subject, r) for r in records]
        assert {m.headers["Content-Type"] for m in stored} == {"application/json"}
        assert {m.subject for m in stored} == {subject}

        # A redelivery: acked as a duplicate, stored once.
        again = conn.write(subject, batch(), Operation.UPSERT, "id")
        assert [o.status for o in again] == [Status.CREATED] * 3
        assert all("JetStream dropped" in (o.reason or "") for o in again)
        assert jet.info(stream).state.messages == 3

        deleted = conn.write(subject, [{"id": 2, "__version__": "v9"}], Operation.DELETE, "id")
        assert [(o.key, o.status) for o in deleted] == [(2, Status.DELETED)]
        last = jet.messages(stream)[-1]
        assert json.loads(last.data) == {"object": subject, "operation": "delete", "key": 2,
                                         "version": "v9", "record": {"id": 2}}
        assert last.headers["Nats-Msg-Id"] == message_id(subject, 2, "v9")


def test_nats_adds_the_subject_to_an_existing_stream_or_needs_one(
        nats_url: str, jet: Jet, suffix: str) -> None:
    stream = f"PATCHBAY_TEST_{suffix}"
    jet.add_stream(stream, [f"patchbay.other.{suffix}"])
    subject = f"patchbay.test.{suffix}.orders"
    with connect(system(nats_url)) as conn:
        with pytest.raises(RetriableError, match="no JetStream stream takes subject"):
            conn.write(subject, batch(), Operation.UPSERT, "id")
        with pytest.raises(SpecError, match="not a subject"):
            conn.write(f"patchbay.test.{suffix}.*", batch(), Operation.UPSERT, "id")
    with connect(system(nats_url, stream=stream)) as conn:
        outcomes = conn.write(subject, batch(), Operation.UPSERT, "id")
        assert [o.status for o in outcomes] == [Status.CREATED] * 3
    assert jet.info(stream).config.subjects == [f"patchbay.other.{suffix}", subject]
    assert jet.info(stream).state.messages == 3


def test_nats_rejects_a_message_over_max_payload_alone(nats_url: str, jet: Jet, suffix: str) -> None:
    stream, subject = f"PATCHBAY_TEST_{suffix}", f"patchbay.test.{suffix}.big"
    jet.streams.append(stream)
    with connect(system(nats_url, stream=stream)) as conn:
        huge = {"id": 9, "text": "x" * (2 * 1024 * 1024), "__version__": "v1"}
        outcomes = conn.write(subject, [batch()[0], huge, batch()[1]], Operation.UPSERT, "id")
        assert [(o.status, o.code) for o in outcomes] == [
            (Status.CREATED, None), (Status.REJECTED, "MESSAGE_TOO_LARGE"), (Status.CREATED, None)]
    assert jet.info(stream).state.messages == 2


# -- Redis Streams ------------------------------------------------------------------------------


@pytest.fixture
def rds(redis_url: str) -> Iterator[tuple[redis.Redis, list[str]]]:
    """A client to read back with, and the streams to delete (with their markers)."""
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=5)
    streams: list[str] = []
    try:
        yield client, streams
    finally:
        for stream in streams:
            client.delete(stream, *client.scan_iter(match=f"{stream}:patchbay-dedupe:*"))
        client.close()


def test_redis_adds_each_message_once(redis_url: str, rds: Any, suffix: str) -> None:
    client, streams = rds
    stream = f"patchbay-test:{suffix}"
    streams.append(stream)
    records = batch()
    with connect(system(redis_url)) as conn:
        assert isinstance(conn, RedisConnector)
        assert conn.describe(stream) == ObjectSchema(stream, {}, None)
        conn.check()
        outcomes = conn.write(stream, records, Operation.UPSERT, "id")
        assert [(o.key, o.status, o.reason) for o in outcomes] == [
            (1, Status.CREATED, None), (2, Status.CREATED, None), ("3", Status.CREATED, None)]
        entries = client.xrange(stream)
        assert [set(fields) for _, fields in entries] == [{b"id", b"body"}] * 3
        assert [json.loads(f[b"body"]) for _, f in entries] == [expected_body(stream, r) for r in records]
        ids = [expected_id(stream, r) for r in records]
        assert [f[b"id"].decode() for _, f in entries] == ids
        for message, (entry, _) in zip(ids, entries, strict=True):
            marker = marker_key(stream, message)
            assert client.get(marker) == entry  # the marker holds the entry's id
            assert 7 * 24 * 3600 - 60 < client.ttl(marker) <= 7 * 24 * 3600

        # A redelivery: not added again.
        again = conn.write(stream, batch(), Operation.UPSERT, "id")
        assert [o.status for o in again] == [Status.CREATED] * 3
        assert all("Redis did not add" in (o.reason or "") for o in again)
        assert client.xlen(stream) == 3

        deleted = conn.write(stream, [{"id": 1, "__version__": "v9"}], Operation.DELETE, "id")
        assert [(o.key, o.status) for o in deleted] == [(1, Status.DELETED)]
        [(_, fields)] = client.xrevrange(stream, count=1)
        assert json.loads(fields[b"body"]) == {"object": stream, "operation": "delete", "key": 1,
                                               "version": "v9", "record": {"id": 1}}


def test_redis_options_and_a_key_that_is_not_a_stream(redis_url: str, rds: Any, suffix: str) -> None:
    client, streams = rds
    stream, other = f"patchbay-test:{suffix}", f"patchbay-test:{suffix}:text"
    streams += [stream, other]
    with connect(system(redis_url, dedupe_ttl=3600, maxlen=1000)) as conn:
        conn.write(stream, batch(), Operation.UPSERT, "id")
        ttl = client.ttl(marker_key(stream, expected_id(stream, batch()[0])))
        assert 3500 < ttl <= 3600
        client.set(other, "not a stream")
        with pytest.raises(SpecError, match="WRONGTYPE"):
            conn.write(other, batch(), Operation.UPSERT, "id")
    with pytest.raises(SpecError, match=r"unknown option 'dedup_ttl'.*dedupe_ttl"):
        RedisConnector(system(redis_url, dedup_ttl=5))
    with pytest.raises(SpecError, match="dedupe_ttl must be a whole number"):
        RedisConnector(system(redis_url, dedupe_ttl="week"))


# -- every broker: unreachable, stalled ----------------------------------------------------------


def closed_port() -> int:
    """A local port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


UNREACHABLE = {
    "amqp": "amqp://guest:{secret}@127.0.0.1:{port}/",
    "nats": "nats://patchbay:{secret}@127.0.0.1:{port}",
    "redis": "redis://:{secret}@127.0.0.1:{port}/0",
}


@pytest.mark.parametrize("scheme", sorted(UNREACHABLE))
def test_an_unreachable_broker_is_retriable_and_keeps_the_password(scheme: str) -> None:
    url = UNREACHABLE[scheme].format(secret=SECRET, port=closed_port())
    with connect(system(url, connect_timeout=3)) as conn:
        started = time.monotonic()
        with pytest.raises(RetriableError) as failed:
            conn.write("patchbay.unreachable", batch(), Operation.UPSERT, "id")
        assert time.monotonic() - started < 10
        with pytest.raises(ConnectionFailed) as checked:
            conn.check()
    for error in (failed.value, checked.value):
        assert SECRET not in str(error) and SECRET not in repr(error.args)
        assert "***" in str(error)


class StallProxy:
    """A TCP proxy on 127.0.0.1 to a local broker that, once stalled, holds all it gets."""

    def __init__(self, port: int) -> None:
        self.target = ("127.0.0.1", port)
        self.stalled = threading.Event()
        self.closed = threading.Event()
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.port = int(self.server.getsockname()[1])
        self.sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                continue
            upstream = socket.create_connection(self.target, timeout=5)
            self.sockets += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        source.settimeout(0.2)
        while not self.closed.is_set():
            try:
                data = source.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                break
            if not data:
                break
            while self.stalled.is_set() and not self.closed.is_set():
                time.sleep(0.02)
            try:
                sink.sendall(data)
            except OSError:
                break
        for end in (source, sink):
            end.close()

    def close(self) -> None:
        self.closed.set()
        self.server.close()
        for end in self.sockets:
            end.close()


def _port(url: str) -> int:
    return urlsplit(url).port or {"amqp": 5672, "nats": 4222, "redis": 6379}[urlsplit(url).scheme]


def _through(url: str, proxy: StallProxy) -> str:
    """The URL with the proxy's port in place of the broker's."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit(":", 1)[0] if parts.port else parts.netloc
    return urlunsplit(parts._replace(netloc=f"{host}:{proxy.port}"))


@pytest.mark.parametrize("scheme", ["amqp", "nats", "redis"])
def test_a_broker_that_stops_answering_is_retriable_in_time(
        scheme: str, request: pytest.FixtureRequest, suffix: str) -> None:
    url: str = request.getfixturevalue(f"{scheme}_url")
    proxy = StallProxy(_port(url))
    object, cleanup = _destination(scheme, url, suffix)
    conn: Connector = connect(system(_through(url, proxy), timeout=1, connect_timeout=2,
                                     **({"stream": f"PATCHBAY_TEST_{suffix}"}
                                        if scheme == "nats" else {})))
    try:
        assert conn.write(object, batch()[:1], Operation.UPSERT, "id")[0].status is Status.CREATED
        proxy.stalled.set()
        started = time.monotonic()
        with pytest.raises(RetriableError, match=r"not confirmed|not acked|no answer"):
            conn.write(object, batch()[1:], Operation.UPSERT, "id")
        assert time.monotonic() - started < 8
        proxy.stalled.clear()
        # the broker answers again: the next batch goes through (on a new connection if need be)
        outcomes = conn.write(object, batch()[1:], Operation.UPSERT, "id")
        assert [o.status for o in outcomes] == [Status.CREATED] * 2
    finally:
        proxy.stalled.clear()
        conn.close()
        proxy.close()
        cleanup()


def _destination(scheme: str, url: str, suffix: str) -> tuple[str, Callable[[], None]]:
    """An exchange, subject or stream to publish to, and how to delete it afterwards."""
    if scheme == "amqp":
        exchange = f"patchbay-test-{suffix}"
        connection = pika.BlockingConnection(pika.URLParameters(url))
        channel = connection.channel()
        channel.exchange_declare(exchange, "topic", durable=True)
        channel.queue_declare(f"{exchange}.q", durable=True)
        channel.queue_bind(f"{exchange}.q", exchange, "#")
        connection.close()

        def clean_amqp() -> None:
            with pika.BlockingConnection(pika.URLParameters(url)) as done:
                done.channel().queue_delete(f"{exchange}.q")
                done.channel().exchange_delete(exchange)

        return exchange, clean_amqp
    if scheme == "nats":
        jet = Jet(url)
        jet.streams.append(f"PATCHBAY_TEST_{suffix}")
        return f"patchbay.test.{suffix}.stall", lambda: jet.run(
            lambda js: js.delete_stream(f"PATCHBAY_TEST_{suffix}"))
    stream = f"patchbay-test:{suffix}"

    def clean_redis() -> None:
        with redis.Redis.from_url(url) as client:
            client.delete(stream, *client.scan_iter(match=f"{stream}:patchbay-dedupe:*"))

    return stream, clean_redis
