"""SIGKILL `patchbay serve` three times at random points while 5,000 orders flow in over
RabbitMQ and NATS JetStream, restarting it each time: the totals per account in the
destination end equal to the published totals, exactly (nothing lost, nothing twice).

The engine state is PostgreSQL (so the row locks of the state are the ones used). Orders
come in both body shapes (plain JSON, patchbay's own message body), with and without
message ids, and some are published twice on RabbitMQ with the same id, as an
at-least-once producer would: those count once.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import IO, Any

import nats
import pika
import psycopg
import pytest

DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_NATS = "nats://127.0.0.1:4222"
ORDERS = 5_000
CHUNK = 100
KILLS = 3
ACCOUNTS = 25
ACK_WAIT = 2


class Brokers:
    """A queue and a JetStream stream of this test, with clients that publish orders to them."""

    def __init__(self, amqp_url: str, nats_url: str, suffix: str) -> None:
        self.queue, self.stream, self.subject = (f"patchbay-fault-orders-{suffix}",
                                                 f"FAULT_ORDERS_{suffix}", f"fault.orders.{suffix}")
        self.amqp = pika.BlockingConnection(pika.URLParameters(amqp_url))
        self.channel = self.amqp.channel()
        self.channel.queue_declare(self.queue, durable=True)
        self.channel.confirm_delivery()
        self.loop = asyncio.new_event_loop()
        self.nats = self.loop.run_until_complete(nats.connect(nats_url, connect_timeout=5))
        self.js = self.nats.jetstream()
        self.loop.run_until_complete(self.js.add_stream(name=self.stream, subjects=[self.subject]))

    def publish(self, orders: list[dict[str, Any]]) -> None:
        """Every other order to each broker; every fourth in patchbay's body shape; ids on
        most; every 50th RabbitMQ order twice, with the same id."""
        async def to_nats(bodies: list[tuple[bytes, str | None]]) -> None:
            for body, message_id in bodies:
                await self.js.publish(self.subject, body,
                                      headers={"Nats-Msg-Id": message_id} if message_id else None)

        bodies: list[tuple[bytes, str | None]] = []
        for order in orders:
            n = order["order"]
            plain = {**order, "amount": float(order["amount"])}
            body = json.dumps(plain if n % 4 < 2 else {
                "object": "orders", "operation": "upsert", "key": n, "version": None,
                "record": {**order, "amount": str(order["amount"])}}).encode()
            message_id = f"order-{n}" if n % 3 else None
            if n % 2:
                bodies.append((body, message_id))
                continue
            properties = pika.BasicProperties(message_id=f"order-{n}", delivery_mode=2)
            for _ in range(2 if n % 50 == 0 else 1):
                self.channel.basic_publish("", self.queue, body, properties)
        self.loop.run_until_complete(to_nats(bodies))

    def close(self) -> None:
        self.channel.queue_delete(self.queue)
        self.amqp.close()
        self.loop.run_until_complete(self.js.delete_stream(self.stream))
        self.loop.run_until_complete(self.nats.close())
        self.loop.close()


@pytest.fixture
def brokers() -> Iterator[Brokers]:
    amqp_url = os.environ.get("PATCHBAY_TEST_AMQP", DEFAULT_AMQP)
    nats_url = os.environ.get("PATCHBAY_TEST_NATS", DEFAULT_NATS)
    try:
        made = Brokers(amqp_url, nats_url, uuid.uuid4().hex[:10])
    except Exception as exc:
        pytest.fail(f"RabbitMQ ({amqp_url}) or NATS JetStream ({nats_url}) is not reachable for "
                    f"the fault tests: {exc}", pytrace=False)
    try:
        yield made
    finally:
        made.close()


@pytest.fixture
def totals(pg_url: str) -> Iterator[str]:
    table = f"fault_order_totals_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (account text PRIMARY KEY, order_count bigint, "
                     "total numeric)")
    yield table
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")


def write_spec(directory: Path, name: str, brokers: Brokers, pg_url: str, table: str) -> Path:
    amqp_url = os.environ.get("PATCHBAY_TEST_AMQP", DEFAULT_AMQP)
    nats_url = os.environ.get("PATCHBAY_TEST_NATS", DEFAULT_NATS)
    path = directory / "totals.yaml"
    path.write_text(f"""
systems:
  rabbit: {amqp_url}
  jet: {{url: "{nats_url}", options: {{ack_wait: {ACK_WAIT}}}}}
  warehouse: {pg_url}
integrations:
  - name: {name}
    pattern: aggregation
    stream:
      sources:
        - {{system: rabbit, object: {brokers.queue}}}
        - {{system: jet, object: {brokers.subject}}}
      group_by: [account]
      aggregate:
        order_count: {{count: "*"}}
        total: {{sum: amount}}
      flush: {{every_seconds: 0.3, every_messages: 150}}
    destinations:
      - {{system: warehouse, object: {table}, key: account}}
    options: {{batch_size: 100}}
""")
    return path


def serving(path: Path, pg_url: str, log: IO[bytes]) -> subprocess.Popen[bytes]:
    environ = {k: v for k, v in os.environ.items() if k != "PATCHBAY_STATE"}
    return subprocess.Popen([sys.executable, "-m", "patchbay.cli", "serve", str(path), "--no-api",
                             "--state", pg_url], cwd=path.parent, env=environ,
                            stdout=subprocess.DEVNULL, stderr=log)


def held(pg_url: str, table: str) -> dict[str, tuple[int, Decimal]]:
    with psycopg.connect(pg_url) as conn:
        return {r[0]: (int(r[1]), r[2]) for r in conn.execute(
            f"SELECT account, order_count, total FROM {table}")}


@pytest.mark.slow
def test_killing_serve_three_times_while_orders_flow_counts_each_order_once(
        tmp_path: Path, pg_url: str, brokers: Brokers, totals: str) -> None:
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)
    name = f"fault stream totals {uuid.uuid4().hex[:8]}"
    path = write_spec(tmp_path, name, brokers, pg_url, totals)
    log_path = tmp_path / "serve.log"
    expected: dict[str, tuple[int, Decimal]] = {}
    chunks = ORDERS // CHUNK
    kill_after = set(rng.sample(range(1, chunks - 1), KILLS))

    with log_path.open("wb") as log:
        worker = serving(path, pg_url, log)
        try:
            for chunk in range(chunks):
                orders = []
                for n in range(chunk * CHUNK, (chunk + 1) * CHUNK):
                    account = f"ACC-{rng.randrange(ACCOUNTS):02d}"
                    amount = Decimal(rng.randrange(1, 100_000)) / 100
                    orders.append({"order": n, "account": account, "amount": amount})
                    count, total = expected.get(account, (0, Decimal(0)))
                    expected[account] = (count + 1, total + amount)
                brokers.publish(orders)
                time.sleep(rng.uniform(0.0, 0.08))
                if chunk in kill_after:
                    time.sleep(rng.uniform(0.0, 0.6))  # somewhere in a fetch, count, write or ack
                    assert worker.poll() is None, log_path.read_text()
                    os.kill(worker.pid, signal.SIGKILL)
                    assert worker.wait() == -signal.SIGKILL
                    worker = serving(path, pg_url, log)

            deadline = time.monotonic() + 120
            while held(pg_url, totals) != expected and time.monotonic() < deadline:
                assert worker.poll() is None, log_path.read_text()
                time.sleep(0.5)
        finally:
            worker.send_signal(signal.SIGINT)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()

    got = held(pg_url, totals)
    assert got == expected, (f"seed {seed}: " + "; ".join(
        f"{a}: {got.get(a)} != {expected.get(a)}" for a in sorted({*got, *expected})
        if got.get(a) != expected.get(a)) + "\n" + log_path.read_text()[-3000:])
    with psycopg.connect(pg_url, autocommit=True) as conn:
        seen = conn.execute("SELECT count(*) FROM patchbay_seen_messages WHERE integration = %s",
                            (name,)).fetchone()
        dirty = conn.execute("SELECT count(*) FROM patchbay_aggregates WHERE integration = %s "
                             "AND dirty", (name,)).fetchone()
        conn.execute("DELETE FROM patchbay_seen_messages WHERE integration = %s", (name,))
        conn.execute("DELETE FROM patchbay_aggregates WHERE integration = %s", (name,))
    assert seen == (ORDERS,), "each order recorded once"
    assert dirty == (0,)
