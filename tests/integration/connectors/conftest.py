"""The systems the shared connector tests run against, each reached through the registry by URL.

A `Subject` is one connector under test and one object of its system holding the same seven
records, written by the connector itself (an insert) in an order that is not the order of
their keys. Which tests a subject takes follows from the capabilities its connector class
claims (`claiming`), never from a list kept here: a connector that claims a capability gets
every test of it.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import nats
import pika
import pytest
import redis
import sqlalchemy as sa

from patchbay.connectors.base import Capability, Connector, connect, connector_class
from patchbay.localorg.org import OrgConfig
from patchbay.localorg.running import LocalOrg
from patchbay.model import Operation, Record, Status
from patchbay.spec import SystemSpec

# (key, name, amount) in the order they are written; `amount` is null once.
SEED: tuple[tuple[str, str, int | None], ...] = (
    ("k04", "Delta", 40), ("k01", "Alpha", 10), ("k07", "Foxtrot", 70), ("k03", "Charlie", None),
    ("k06", "Echo", 20), ("k02", "Bravo", 20), ("k05", "Alder", 50))

# The URL scheme of each subject: what the registry picks its connector class by.
SCHEMES: dict[str, str] = {
    "sqlite": "sqlite", "postgresql": "postgresql", "mariadb": "mysql",
    "csv": "file", "jsonl": "file", "parquet": "file", "salesforce": "salesforce",
    "salesforce-bulk": "salesforce",
    "rabbitmq": "amqp", "nats": "nats", "redis": "redis", "http": "http",
}

_ACCOUNT_KEY = {"fields": {"Account": [{"name": "Legacy_Id__c", "type": "string", "length": 40,
                                        "externalId": True, "unique": True}]}}


def claiming(capability: Capability) -> list[str]:
    """The subjects whose connector class claims `capability`."""
    return [name for name, scheme in SCHEMES.items()
            if capability in connector_class(scheme).capabilities]


@dataclass
class Subject:
    """A connector and the object of its system the tests use, with the names of its fields."""

    connector: Connector
    object: str
    key: str
    name: str
    amount: str
    stores_records: bool = True
    """A table or a file keeps records (get finds them); a broker passes messages on."""
    orders_by_key: bool = True
    """False where the connector documents reading in stored order (files: no sorting)."""
    insert_looks_up_keys: bool = True
    """False where the connector documents that an insert appends without looking (files)."""
    compares_before_writing: bool = True
    """False where the connector documents writing equal records too (Salesforce bulk jobs):
    they are then reported UPDATED rather than UNCHANGED."""
    revision: str | None = None
    """A number the SQL subjects' changes are polled by: every write sets it."""
    changes_cursor: dict[str, Any] | None = None
    queue: str | None = None
    """Where the messages written to `object` can be consumed (RabbitMQ: a bound queue)."""

    def record(self, key: str, name: str, amount: int | None = None, revision: int = 0) -> Record:
        made: Record = {self.key: key, self.name: name, self.amount: amount}
        if self.revision is not None:
            made[self.revision] = revision
        return made

    def seed(self) -> None:
        records = [self.record(k, n, a, i + 1) for i, (k, n, a) in enumerate(SEED)]
        outcomes = self.connector.write(self.object, records, Operation.INSERT, self.key)
        assert [(o.key, o.status) for o in outcomes] == [(k, Status.CREATED) for k, _, _ in SEED]


def _sql(url: str, stack: ExitStack) -> Subject:
    table = f"contract_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(url.replace("mysql://", "mysql+pymysql://", 1)
                              .replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {table} (code VARCHAR(10) PRIMARY KEY, "
                             "name VARCHAR(40) NOT NULL, amount INTEGER, rev INTEGER NOT NULL)"))

    def drop() -> None:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        engine.dispose()

    stack.callback(drop)
    connector = stack.enter_context(connect(SystemSpec(url=url, name="contract")))
    return Subject(connector, table, "code", "name", "amount", revision="rev",
                   changes_cursor={"watermark": "rev", "key": "code"})


def _files(folder: Path, extension: str, stack: ExitStack) -> Subject:
    connector = stack.enter_context(connect(SystemSpec(url=f"file:{folder}", name="contract")))
    return Subject(connector, f"accounts.{extension}", "code", "name", "amount", orders_by_key=False,
                   insert_looks_up_keys=False)


def _salesforce(stack: ExitStack, bulk: bool) -> Subject:
    """The local org; with `bulk`, every read and write of more than one record goes through
    a Bulk 2.0 job instead of the REST query and sObject Collections."""
    org = stack.enter_context(LocalOrg(OrgConfig(custom_schema=_ACCOUNT_KEY)))
    options: dict[str, Any] = {"username": "integration@patchbay.local", "password": "password",
                               "security_token": "TOKEN"}
    if bulk:
        options["bulk_threshold"] = 1
    connector = stack.enter_context(connect(SystemSpec(
        url=f"salesforce+http://127.0.0.1:{org.port}", name="contract", options=options)))
    return Subject(connector, "Account", "Legacy_Id__c", "Name", "NumberOfEmployees",
                   compares_before_writing=not bulk)


def _rabbitmq(url: str, stack: ExitStack) -> Subject:
    suffix = uuid.uuid4().hex[:10]
    exchange, queue = f"patchbay-contract-x-{suffix}", f"patchbay-contract-{suffix}"
    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.exchange_declare(exchange, "topic", durable=True)
    channel.queue_declare(queue, durable=True)
    channel.queue_bind(queue, exchange, "#")

    def delete() -> None:
        channel.queue_delete(queue)
        channel.exchange_delete(exchange)
        connection.close()

    stack.callback(delete)
    connector = stack.enter_context(connect(SystemSpec(url=url, name="contract")))
    return Subject(connector, exchange, "code", "name", "amount", stores_records=False, queue=queue)


def _jetstream(url: str, work: Callable[[Any], Any]) -> None:
    async def go() -> None:
        client = await nats.connect(url, connect_timeout=5, allow_reconnect=False)
        try:
            await work(client.jetstream())
        finally:
            await client.close()

    asyncio.run(go())


def _nats(url: str, stack: ExitStack) -> Subject:
    suffix = uuid.uuid4().hex[:10]
    stream, subject = f"CONTRACT_{suffix}", f"contract.{suffix}"
    _jetstream(url, lambda js: js.add_stream(name=stream, subjects=[subject]))
    stack.callback(_jetstream, url, lambda js: js.delete_stream(stream))
    # A message taken and not acked comes back after ack_wait: short, so the test need not wait.
    connector = stack.enter_context(connect(SystemSpec(url=url, name="contract",
                                                       options={"ack_wait": 1})))
    return Subject(connector, subject, "code", "name", "amount", stores_records=False, queue=subject)


def _redis(url: str, stack: ExitStack) -> Subject:
    stream = f"patchbay-contract-{uuid.uuid4().hex[:10]}"
    client = redis.Redis.from_url(url)

    def delete() -> None:
        for name in client.scan_iter(match=f"*{stream}*"):
            client.delete(name)
        client.close()

    stack.callback(delete)
    connector = stack.enter_context(connect(SystemSpec(url=url, name="contract")))
    return Subject(connector, stream, "code", "name", "amount", stores_records=False)


class _Accepting(BaseHTTPRequestHandler):
    """A webhook receiver that takes every request."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests read outcomes, not the server's log."""


def _http(stack: ExitStack) -> Subject:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Accepting)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stack.callback(server.server_close)
    stack.callback(server.shutdown)
    connector = stack.enter_context(connect(SystemSpec(
        url=f"http://127.0.0.1:{server.server_address[1]}", name="contract")))
    return Subject(connector, "/accounts", "code", "name", "amount", stores_records=False)


def _open(name: str, request: pytest.FixtureRequest, folder: Path, stack: ExitStack) -> Subject:
    if name == "sqlite":
        return _sql(f"sqlite:///{folder / 'contract.sqlite'}", stack)
    if name in ("postgresql", "mariadb"):
        return _sql(request.getfixturevalue("pg_url" if name == "postgresql" else "mysql_url"), stack)
    if name in ("csv", "jsonl", "parquet"):
        return _files(folder, name, stack)
    if name.startswith("salesforce"):
        return _salesforce(stack, bulk=name == "salesforce-bulk")
    if name == "http":
        return _http(stack)
    url = request.getfixturevalue({"rabbitmq": "amqp_url", "nats": "nats_url",
                                   "redis": "redis_url"}[name])
    return {"rabbitmq": _rabbitmq, "nats": _nats, "redis": _redis}[name](url, stack)


@pytest.fixture
def subject(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Subject]:
    """The subject named by the test's parameter; a record store comes seeded."""
    with ExitStack() as stack:
        made = _open(request.param, request, tmp_path, stack)
        if made.stores_records:
            made.seed()
        yield made
