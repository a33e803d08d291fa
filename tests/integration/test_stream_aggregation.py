"""Stream aggregation against real brokers and databases: orders from a RabbitMQ queue and a
NATS JetStream subject, order counts and totals per account upserted into PostgreSQL and
SQLite; each message counted once, across redeliveries.

The brokers' URLs come from PATCHBAY_TEST_AMQP and PATCHBAY_TEST_NATS (defaults: the local
services); one that cannot be reached fails the test, it is never skipped. Each test uses a
queue, exchange, stream, subject and tables of its own, and deletes them afterwards.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import nats
import pika
import psycopg
import pytest

from patchbay import run_integration
from patchbay.connectors.base import connect
from patchbay.errors import SpecError
from patchbay.model import Operation, Status
from patchbay.patterns.aggregation_stream import StreamAggregation
from patchbay.runtime.runner import Invocation
from patchbay.spec import SystemSpec
from patchbay.store import Store

ACK_WAIT = 2  # seconds before JetStream redelivers what a consumer took and did not ack


@dataclass
class Brokers:
    """A queue (bound to an exchange of its own) and a stream with one subject, for one test."""

    amqp_url: str
    nats_url: str
    suffix: str

    @property
    def queue(self) -> str:
        return f"patchbay-orders-{self.suffix}"

    @property
    def exchange(self) -> str:
        return f"patchbay-orders-x-{self.suffix}"

    @property
    def stream(self) -> str:
        return f"ORDERS_{self.suffix}"

    @property
    def subject(self) -> str:
        return f"orders.{self.suffix}"

    def create(self) -> None:
        with self._channel() as channel:
            channel.queue_declare(self.queue, durable=True)
            channel.exchange_declare(self.exchange, "topic", durable=True)
            channel.queue_bind(self.queue, self.exchange, "#")
        self._nats(lambda js: js.add_stream(name=self.stream, subjects=[self.subject]))

    def delete(self) -> None:
        with self._channel() as channel:
            channel.queue_delete(self.queue)
            channel.exchange_delete(self.exchange)
        self._nats(lambda js: js.delete_stream(self.stream))

    def publish_amqp(self, body: dict[str, Any], message_id: str | None = None) -> None:
        """A plain JSON order, straight into the queue."""
        with self._channel() as channel:
            channel.basic_publish("", self.queue, json.dumps(body).encode(),
                                  pika.BasicProperties(message_id=message_id, delivery_mode=2))

    def publish_nats(self, body: dict[str, Any]) -> None:
        """A plain JSON order, without a Nats-Msg-Id (its id is then its stream sequence)."""
        self._nats(lambda js: js.publish(self.subject, json.dumps(body).encode()))

    def publish_as_patchbay(self, system: str, records: list[dict[str, Any]]) -> None:
        """Orders the way patchbay's own message destinations publish them."""
        if system == "amqp":
            connector = connect(SystemSpec(name="events", url=self.amqp_url))
            object = self.exchange
        else:
            connector = connect(SystemSpec(name="events", url=self.nats_url))
            object = self.subject
        with connector:
            outcomes = connector.write(object, records, Operation.UPSERT, "order")
        assert [o.status for o in outcomes] == [Status.CREATED] * len(records)

    def _channel(self) -> Any:
        broker = self

        class Opened:
            def __enter__(self) -> Any:
                self.connection = pika.BlockingConnection(pika.URLParameters(broker.amqp_url))
                return self.connection.channel()

            def __exit__(self, *exc: object) -> None:
                self.connection.close()

        return Opened()

    def _nats(self, work: Any) -> None:
        async def go() -> None:
            client = await nats.connect(self.nats_url, connect_timeout=5, allow_reconnect=False)
            try:
                await work(client.jetstream())
            finally:
                await client.close()

        asyncio.run(go())


@pytest.fixture
def brokers(amqp_url: str, nats_url: str) -> Iterator[Brokers]:
    made = Brokers(amqp_url, nats_url, uuid.uuid4().hex[:10])
    made.create()
    try:
        yield made
    finally:
        made.delete()


@pytest.fixture
def warehouse(pg_url: str) -> Iterator[str]:
    """The name of a PostgreSQL table for the totals; the test creates it (or not yet)."""
    table = f"order_totals_{uuid.uuid4().hex[:8]}"
    yield table
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")


def create_warehouse(pg_url: str, table: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (account text PRIMARY KEY, order_count bigint NOT NULL, "
                     "total numeric, smallest numeric, largest numeric, average numeric, "
                     "last_status text)")


def warehouse_rows(pg_url: str, table: str) -> dict[str, tuple[Any, ...]]:
    with psycopg.connect(pg_url) as conn:
        return {r[0]: tuple(r[1:]) for r in conn.execute(
            f"SELECT account, order_count, total, smallest, largest, average, last_status FROM {table}")}


def write_spec(directory: Path, brokers: Brokers, pg_url: str, table: str, *,
               every_messages: int = 50, sqlite_copy: bool = False,
               aggregate: str | None = None) -> Path:
    """Orders from the queue (field `account`) and the subject (field `acct`, renamed by the
    source's transform) into the warehouse table, and optionally a SQLite copy with fewer
    columns (a destination transform)."""
    if sqlite_copy:
        with sqlite3.connect(directory / "copy.db") as db:
            db.execute("CREATE TABLE IF NOT EXISTS account_orders (account TEXT PRIMARY KEY, "
                       "orders INTEGER, total REAL)")
    copy = """
      - system: copy
        object: account_orders
        key: account
        transform: {fields: {account: account, orders: order_count, total: total}}""" if sqlite_copy else ""
    aggregates = aggregate or """
        order_count: {count: "*"}
        total: {sum: amount}
        smallest: {min: amount}
        largest: {max: amount}
        average: {avg: amount}
        last_status: {latest: status, by: at}"""
    path = directory / "totals.yaml"
    path.write_text(f"""
systems:
  rabbit: {brokers.amqp_url}
  jet: {{url: "{brokers.nats_url}", options: {{ack_wait: {ACK_WAIT}}}}}
  warehouse: {pg_url}
  copy: sqlite:///copy.db
integrations:
  - name: order totals {brokers.suffix}
    pattern: aggregation
    stream:
      sources:
        - {{system: rabbit, object: {brokers.queue}}}
        - system: jet
          object: {brokers.subject}
          transform: {{fields: {{account: acct, amount: amount, status: status, at: at}}}}
      group_by: [account]
      aggregate:{aggregates}
      flush: {{every_seconds: 0.5, every_messages: {every_messages}}}
    destinations:
      - system: warehouse
        object: {table}
        key: account{copy}
""")
    return path


@dataclass
class Expected:
    """What the published orders add up to, per account."""

    amounts: dict[str, list[Decimal]]
    latest: dict[str, tuple[str, str]]

    @classmethod
    def empty(cls) -> Expected:
        return cls({}, {})

    def add(self, account: str, amount: str, status: str, at: str) -> None:
        self.amounts.setdefault(account, []).append(Decimal(amount))
        if account not in self.latest or at >= self.latest[account][0]:
            self.latest[account] = (at, status)

    def rows(self) -> dict[str, tuple[Any, ...]]:
        return {account: (len(values), sum(values), min(values), max(values),
                          sum(values) / len(values), self.latest[account][1])
                for account, values in self.amounts.items()}


def publish_orders(brokers: Brokers, expected: Expected, start: int, count: int) -> None:
    """`count` orders over both brokers and both body shapes: plain JSON and patchbay's."""
    as_patchbay: dict[str, list[dict[str, Any]]] = {"amqp": [], "nats": []}
    for n in range(start, start + count):
        account = f"ACC-{n % 4}"
        amount = f"{(n * 37) % 500}.{n % 100:02d}"
        status = ["new", "paid", "shipped"][n % 3]
        at = f"2026-03-01T10:{n // 60 % 60:02d}:{n % 60:02d}"
        expected.add(account, amount, status, at)
        way = n % 4
        if way == 0:
            brokers.publish_amqp({"order": n, "account": account, "amount": float(amount),
                                  "status": status, "at": at}, message_id=f"order-{n}")
        elif way == 1:
            as_patchbay["amqp"].append({"order": n, "account": account, "amount": Decimal(amount),
                                        "status": status, "at": at})
        elif way == 2:
            brokers.publish_nats({"order": n, "acct": account, "amount": float(amount),
                                  "status": status, "at": at})
        else:
            as_patchbay["nats"].append({"order": n, "acct": account, "amount": Decimal(amount),
                                        "status": status, "at": at})
    for system, records in as_patchbay.items():
        if records:
            brokers.publish_as_patchbay(system, records)


def test_orders_from_rabbitmq_and_nats_are_totalled_per_account_once_each(
        tmp_path: Path, brokers: Brokers, pg_url: str, warehouse: str) -> None:
    create_warehouse(pg_url, warehouse)
    path = write_spec(tmp_path, brokers, pg_url, warehouse, sqlite_copy=True)
    state = tmp_path / "state"
    expected = Expected.empty()
    publish_orders(brokers, expected, 0, 120)
    # the same order again, with the same message id: RabbitMQ delivers it twice
    brokers.publish_amqp({"order": 0, "account": "ACC-0", "amount": 0.0, "status": "new",
                          "at": "2026-03-01T10:00:00"}, message_id="order-0")
    # orders without the field they are grouped by: rejected, counted, the rest go on
    brokers.publish_amqp({"order": 900, "amount": 5}, message_id="order-900")
    brokers.publish_nats({"order": 901, "amount": 5})
    brokers.publish_amqp({"order": 902, "account": "ACC-1", "amount": "lots"}, message_id="order-902")
    brokers.publish_nats({"order": 903, "acct": None, "amount": 5})

    first = run_integration(path, state=state)
    assert first["pattern"] == "stream aggregation"
    assert (first["messages"], first["counted"], first["duplicates"], first["rejected"]) == (
        120 + 1 + 4, 120, 1, 4), first
    assert first["groups_changed"] >= 4 and first["failed"] == 0 and first["errors"] == {}
    assert warehouse_rows(pg_url, warehouse) == expected.rows()
    with sqlite3.connect(tmp_path / "copy.db") as db:
        copy = {r[0]: (r[1], r[2]) for r in db.execute("SELECT * FROM account_orders")}
    assert copy == {a: (r[0], pytest.approx(float(r[1]))) for a, r in expected.rows().items()}

    # More orders, and once more an order counted already: only the new ones count.
    publish_orders(brokers, expected, 120, 40)
    brokers.publish_amqp({"order": 5, "account": "ACC-1", "amount": 1000.0, "status": "x",
                          "at": "2099-01-01T00:00:00"}, message_id="order-4")
    second = run_integration(path, state=state)
    assert (second["messages"], second["counted"], second["duplicates"], second["rejected"]) == (
        41, 40, 1, 0), second
    assert warehouse_rows(pg_url, warehouse) == expected.rows()

    # Nothing new: nothing counted, nothing left to write.
    third = run_integration(path, state=state)
    assert (third["messages"], third["counted"], third["written"]) == (0, 0, 0), third


def test_a_message_taken_and_not_acked_comes_back_and_is_not_counted_twice(
        tmp_path: Path, brokers: Brokers, pg_url: str, warehouse: str) -> None:
    """The consumer dies after counting (flush step 2) and before acking (step 4)."""
    create_warehouse(pg_url, warehouse)
    path = write_spec(tmp_path, brokers, pg_url, warehouse, every_messages=1000)
    state = tmp_path / "state"
    expected = Expected.empty()
    publish_orders(brokers, expected, 0, 80)

    store = Store.open(directory=state)
    ctx = Invocation.load(path, None, {}).context(store, state / "runs")
    aggregation = StreamAggregation(ctx)
    assert aggregation.take(0.5) == 80
    counted = aggregation.record()
    assert (counted.counted, counted.duplicates) == (80, 0)
    aggregation.close()  # gone without acking: RabbitMQ takes them back now, JetStream after ack_wait
    ctx.systems.close()
    store.close()
    assert warehouse_rows(pg_url, warehouse) == {}, "counted, not yet written"

    time.sleep(ACK_WAIT + 0.5)
    again = run_integration(path, state=state)
    assert (again["messages"], again["counted"], again["duplicates"]) == (80, 0, 80), again
    assert again["written"] == 4, "the groups counted before the crash are written now"
    assert warehouse_rows(pg_url, warehouse) == expected.rows()

    time.sleep(ACK_WAIT + 0.5)
    settled = run_integration(path, state=state)
    assert settled["messages"] == 0, "every message was acked this time"


def test_a_destination_that_cannot_be_written_gets_the_groups_at_the_next_flush(
        tmp_path: Path, brokers: Brokers, pg_url: str, warehouse: str) -> None:
    path = write_spec(tmp_path, brokers, pg_url, warehouse)
    state = tmp_path / "state"
    expected = Expected.empty()
    publish_orders(brokers, expected, 0, 30)

    down = run_integration(path, state=state)  # the table does not exist yet
    assert (down["counted"], down["written"], down["failed"]) == (30, 0, 4), down
    [(name, error)] = down["errors"].items()
    assert name == f"warehouse/{warehouse}" and warehouse in error

    create_warehouse(pg_url, warehouse)
    publish_orders(brokers, expected, 30, 1)
    up = run_integration(path, state=state)
    assert (up["counted"], up["written"], up["failed"], up["errors"]) == (1, 4, 0, {}), up
    assert warehouse_rows(pg_url, warehouse) == expected.rows()


def test_what_a_stream_cannot_aggregate_is_refused_at_start(
        tmp_path: Path, brokers: Brokers, pg_url: str, warehouse: str) -> None:
    path = write_spec(tmp_path, brokers, pg_url, warehouse,
                      aggregate='\n        customers: {count_distinct: customer}')
    with pytest.raises(SpecError, match="unbounded state"):
        run_integration(path, state=tmp_path / "state")
    path = write_spec(tmp_path, brokers, pg_url, warehouse)
    path.write_text(path.read_text().replace("system: rabbit, object", "system: copy, object"))
    with pytest.raises(SpecError, match="cannot consume messages"):
        run_integration(path, state=tmp_path / "state")
