"""RabbitMQ, one destination of a broadcast, really stops for 30 s (`rabbitmqctl stop_app`)
while changes flow: the PostgreSQL table and the JSON Lines audit keep up during the outage,
and afterwards the queue holds every change, in order per record, and the last message of
each record is the source's current state.

The connector publishes at least once, as it documents: a batch retried after a failure
is published again with the same message ids (say the broker committed it but the answer
was lost with the connection), and consumers de-duplicate by message id. So the test lets
the queue hold a message twice only with the same id AND the same body, and counts such
copies; de-duplicated by message id, the queue must be the source's history.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest

from patchbay import run_integration
from patchbay.connectors.messages import message_id
from tests.faults.broadcast_outage import (
    ChangingSource,
    assert_alive,
    assert_final_state,
    assert_kept_up,
    audit_last_qty,
    create_table,
    delivered_changes,
    drop_table,
    outbox,
    serving,
    wait_drained,
    warehouse,
    write_spec,
)

DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/"
ROWS = 400
PER_SECOND = 60
OUTAGE_SECONDS = 30
LAG = 5.0
"""How far behind the source a healthy destination may be: a few poll and delivery rounds,
with room for a busy machine; a destination held up by the outage lags by all of it."""


def broker_answers(url: str) -> bool:
    try:
        pika.BlockingConnection(pika.URLParameters(url)).close()
    except pika.exceptions.AMQPError:
        return False
    return True


def rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


def wait_broker(url: str, up: bool, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if broker_answers(url) == up:
            return
        time.sleep(0.3)
    raise AssertionError(f"RabbitMQ did not come {'up' if up else 'down'} within {timeout:g}s")


def ensure_up(url: str) -> None:
    """Start the broker app unless it answers: whatever happened to the test, the tests after
    it need RabbitMQ."""
    if not broker_answers(url):
        rabbitmqctl("start_app")
        wait_broker(url, up=True)


@pytest.fixture
def amqp_url() -> Iterator[str]:
    url = os.environ.get("PATCHBAY_TEST_AMQP", DEFAULT_AMQP)
    if not broker_answers(url):
        pytest.fail("RabbitMQ is not reachable for the fault tests", pytrace=False)
    try:
        yield url
    finally:
        ensure_up(url)


@pytest.fixture
def queue(amqp_url: str) -> Iterator[tuple[str, str]]:
    """(exchange, queue): a durable queue bound to everything the exchange gets."""
    exchange = f"patchbay-fault-{uuid.uuid4().hex[:10]}"
    name = f"{exchange}.q"
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
    channel = connection.channel()
    channel.exchange_declare(exchange, "topic", durable=True)
    channel.queue_declare(name, durable=True)
    channel.queue_bind(name, exchange, "#")
    connection.close()  # stop_app would break it; a new one is opened to read and clean up
    try:
        yield exchange, name
    finally:
        ensure_up(amqp_url)  # this teardown runs before the broker fixture's
        connection = pika.BlockingConnection(pika.URLParameters(amqp_url))
        channel = connection.channel()
        channel.queue_delete(name)
        channel.exchange_delete(exchange)
        connection.close()


@pytest.fixture
def table(pg_url: str) -> Iterator[str]:
    name = f"fault_rabbit_{uuid.uuid4().hex[:8]}"
    create_table(pg_url, name)
    yield name
    drop_table(pg_url, name)


def consume_all(url: str, queue: str) -> list[tuple[str, bytes]]:
    """Every message in the queue, in queue order: (message id, body)."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        waiting = channel.queue_declare(queue, durable=True, passive=True).method.message_count
        got: list[tuple[str, bytes]] = []
        for method, properties, body in channel.consume(queue, auto_ack=True,
                                                         inactivity_timeout=3):
            if method is None or properties is None or body is None:
                break
            got.append((str(properties.message_id), body))
        channel.cancel()
    finally:
        connection.close()
    assert len(got) == waiting, f"the queue said {waiting} messages, {len(got)} were read"
    return got


@pytest.mark.slow
def test_a_rabbitmq_outage_loses_nothing_and_stalls_no_other_destination(
        tmp_path: Path, pg_url: str, amqp_url: str, queue: tuple[str, str], table: str) -> None:
    exchange, queue_name = queue
    source = ChangingSource(tmp_path / "source.db", ROWS, PER_SECOND)
    spec = write_spec(tmp_path, pg_url, table, systems=f"  broker: {amqp_url}", destinations=f"""\
      - {{name: broker, system: broker, object: {exchange}, key: item_id,
          transform: {{fields: {{item_id: id, label: label, qty: qty}}}}}}""")
    with serving(tmp_path, spec) as process:
        source.start()
        try:
            time.sleep(6)
            assert_alive(process, tmp_path)
            assert outbox(tmp_path).get("broker", {}).get("delivered", 0) > 0, \
                "nothing reached RabbitMQ before the outage"
            try:
                rabbitmqctl("stop_app")
                wait_broker(amqp_url, up=False)
                start = time.monotonic()
                time.sleep(OUTAGE_SECONDS)
                end = time.monotonic()
                healthy = {"warehouse": {i: qty for i, (_, qty) in warehouse(pg_url, table).items()},
                           "audit": audit_last_qty(tmp_path)}
                stuck = outbox(tmp_path)["broker"]["pending"]
            finally:
                rabbitmqctl("start_app")
            wait_broker(amqp_url, up=True)
            made = assert_kept_up(source, start, end, LAG, healthy)
            assert stuck > 0, "nothing waited for RabbitMQ: it was not really down"
            time.sleep(5)  # changes go on flowing to the restarted broker
        finally:
            source.stop()
        assert_alive(process, tmp_path)
        counts = wait_drained(tmp_path, process, source, timeout=60)
    assert process.returncode == 0, "patchbay serve did not stop cleanly on Ctrl-C"

    assert all(c["dead"] == 0 for c in counts.values()), f"the outage made dead letters: {counts}"
    report = run_integration(spec, state=tmp_path / ".patchbay")
    assert report["changes"] == 0 and report["delivered"] == 0 and report["dead"] == 0, report
    assert made >= 1_000 and len(source.log) >= 2_000, (made, len(source.log))
    assert_final_state(tmp_path, source, pg_url, table)

    messages = consume_all(amqp_url, queue_name)
    first: dict[str, bytes] = {}
    copies = 0
    versions: dict[int, list[str]] = {}
    last: dict[int, dict[str, Any]] = {}
    for mid, body in messages:
        if mid in first:
            assert body == first[mid], f"message id {mid} came twice with different bodies"
            copies += 1
        first[mid] = body
        message = json.loads(body)
        key = int(message["key"])
        assert mid == message_id(exchange, key, message["version"]), \
            "the message id is the digest of (exchange, key, version)"
        versions.setdefault(key, []).append(message["version"])
        last[key] = message
    out_of_order = [k for k, seen in versions.items() if seen != sorted(seen)]
    assert not out_of_order, f"messages of items {out_of_order[:5]} arrived out of version order"

    published = {(str(k), v) for k, seen in versions.items() for v in seen}
    assert published == set(delivered_changes(tmp_path, "broker")), \
        "the queue holds exactly the changes the outbox delivered to RabbitMQ"
    current = source.current()
    effect = {k: (m["record"]["label"], m["record"]["qty"], m["version"]) for k, m in last.items()}
    assert effect == current, (f"de-duplicated by message id, the queue's last message of each "
                               f"item is its current state ({copies} raw duplicates of "
                               f"{len(messages)} messages)")
