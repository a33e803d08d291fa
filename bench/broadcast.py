"""Benchmark: broadcast from a PostgreSQL source to three destinations.

In one run, with the engine state in SQLite (the default):
  throughput   N changes already in the source, broadcast by `serve` to PostgreSQL
               (upsert), RabbitMQ (publisher confirms) and a JSON Lines file; changes/s
               until every delivery is made
  naive        the same rows read and written to the same three destinations by a plain
               loop with no outbox, no cursor and no per-delivery bookkeeping
  latency      changes committed at a fixed rate while `serve` runs; for each change, the
               time from its commit in the source to the moment it is written to the last
               destination (the outbox's delivered_at); p50 and p99

    python bench/broadcast.py                   # 20,000 changes; 500 changes/s for 10 s
    python bench/broadcast.py --changes 50000 --rate 1000 --seconds 20
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import resource
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pika
import psycopg

from patchbay.patterns.broadcast import Broadcast
from patchbay.runtime import serving
from patchbay.runtime.runner import Invocation
from patchbay.store import Store

PG_URL = os.environ.get("PATCHBAY_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
AMQP_URL = os.environ.get("PATCHBAY_BENCH_AMQP", "amqp://guest:guest@127.0.0.1:5672/")


def prepare(suffix: str) -> tuple[str, str, str]:
    source, target, exchange = f"bench_events_{suffix}", f"bench_orders_{suffix}", f"bench-{suffix}"
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {source} (id bigint PRIMARY KEY, account text, "
                     "amount numeric(12, 2), status text, "
                     "updated_at timestamptz NOT NULL DEFAULT clock_timestamp())")
        conn.execute(f"CREATE INDEX ON {source} (updated_at, id)")
        conn.execute(f"CREATE TABLE {target} (id bigint PRIMARY KEY, account text, "
                     "amount numeric(12, 2), status text)")
    with pika.BlockingConnection(pika.URLParameters(AMQP_URL)) as amqp:
        channel = amqp.channel()
        channel.exchange_declare(exchange, exchange_type="topic", durable=True)
        channel.queue_declare(exchange, durable=False, auto_delete=False)
        channel.queue_bind(exchange, exchange, routing_key="#")
    return source, target, exchange


def cleanup(source: str, target: str, exchange: str) -> None:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {source}; DROP TABLE IF EXISTS {target}")
    with pika.BlockingConnection(pika.URLParameters(AMQP_URL)) as amqp:
        channel = amqp.channel()
        channel.queue_delete(exchange)
        channel.exchange_delete(exchange)


def insert_changes(source: str, start: int, count: int) -> None:
    with psycopg.connect(PG_URL) as conn, conn.cursor() as cur, \
            cur.copy(f"COPY {source} (id, account, amount, status) FROM STDIN") as copy:
        for i in range(start, start + count):
            copy.write_row((i, f"ACC-{i % 97}", f"{(i % 1000) + 0.5:.2f}", "open"))


def spec_file(directory: Path, source: str, target: str, exchange: str, poll: float) -> Path:
    (directory / "audit").mkdir(exist_ok=True)
    path = directory / "bench.yaml"
    path.write_text(f"""
systems:
  source: {PG_URL}
  warehouse: {PG_URL}
  broker: {{url: "{AMQP_URL}", options: {{routing_key: "event.{{account}}"}}}}
  audit: {{url: "file:audit", options: {{fields: [id, account, amount, status]}}}}
integrations:
  - name: bench
    pattern: broadcast
    source: {{system: source, object: {source}, key: id, watermark: updated_at}}
    trigger: {{poll_seconds: {poll}}}
    destinations:
      - {{name: warehouse, system: warehouse, object: {target}, key: id,
          transform: {{fields: {{id: id, account: account, amount: amount, status: status}}}}}}
      - {{name: broker, system: broker, object: {exchange}, key: id,
          transform: {{fields: {{id: id, account: account, amount: amount, status: status}}}}}}
      - {{name: audit, system: audit, object: events.jsonl, key: id, operation: insert,
          transform: {{fields: {{id: id, account: account, amount: amount, status: status}}}}}}
    options: {{batch_size: 2000, lease_seconds: 120}}
""")
    return path


def broadcast_for(path: Path, state: Path) -> tuple[Broadcast, Store]:
    store = Store.open(directory=state)
    invocation = Invocation.load(path, "bench", {})
    return Broadcast(invocation.context(store, state / "runs")), store


def throughput(changes: int) -> tuple[float, float]:
    suffix = uuid.uuid4().hex[:6]
    names = prepare(suffix)
    try:
        insert_changes(names[0], 1, changes)
        with tempfile.TemporaryDirectory() as work:
            broadcast, store = broadcast_for(spec_file(Path(work), *names, poll=0.05),
                                             Path(work) / "state")
            # `serve` as it runs in production: noticing and delivering overlap.
            stop = threading.Event()
            server = threading.Thread(target=serving.serve, args=(broadcast.ctx, stop), daemon=True)
            started = time.perf_counter()
            server.start()
            while sum(c["delivered"] for c in store.outbox.counts("bench").values()) < 3 * changes:
                if not server.is_alive():
                    raise SystemExit("serve stopped before the outbox was delivered")
                time.sleep(0.02)
            seconds = time.perf_counter() - started
            stop.set()
            server.join(timeout=30)
            delivered = sum(c["delivered"] for c in store.outbox.counts("bench").values())
            if delivered != 3 * changes:
                raise SystemExit(f"only {delivered} of {3 * changes} deliveries made")
            broadcast.ctx.systems.close()
        return seconds, changes / seconds
    finally:
        cleanup(*names)


def naive(changes: int) -> tuple[float, float]:
    """Read the source and write the three destinations directly: no outbox, no cursor."""
    suffix = uuid.uuid4().hex[:6]
    source, target, exchange = prepare(suffix)
    try:
        insert_changes(source, 1, changes)
        with tempfile.TemporaryDirectory() as work:
            started = time.perf_counter()
            with psycopg.connect(PG_URL) as conn, \
                    pika.BlockingConnection(pika.URLParameters(AMQP_URL)) as amqp, \
                    open(Path(work) / "events.jsonl", "a", encoding="utf-8") as audit:
                channel = amqp.channel()
                channel.confirm_delivery()
                rows = conn.execute(f"SELECT id, account, amount, status FROM {source} "
                                    "ORDER BY updated_at, id").fetchall()
                for start in range(0, len(rows), 2000):
                    batch = rows[start:start + 2000]
                    with conn.cursor() as cur:
                        cur.executemany(f"INSERT INTO {target} VALUES (%s, %s, %s, %s) ON CONFLICT "
                                        "(id) DO UPDATE SET account = EXCLUDED.account, amount = "
                                        "EXCLUDED.amount, status = EXCLUDED.status", batch)
                    conn.commit()
                    for row in batch:
                        body = json.dumps({"id": row[0], "account": row[1], "amount": str(row[2]),
                                           "status": row[3]})
                        channel.basic_publish(exchange, f"event.{row[1]}", body,
                                              pika.BasicProperties(delivery_mode=2))
                        audit.write(body + "\n")
                    audit.flush()
            seconds = time.perf_counter() - started
        return seconds, changes / seconds
    finally:
        cleanup(source, target, exchange)


def latency(rate: int, seconds: float) -> tuple[float, float, int]:
    suffix = uuid.uuid4().hex[:6]
    names = prepare(suffix)
    try:
        with tempfile.TemporaryDirectory() as work:
            broadcast, store = broadcast_for(spec_file(Path(work), *names, poll=0.02),
                                             Path(work) / "state")
            stop = threading.Event()
            server = threading.Thread(target=serving.serve, args=(broadcast.ctx, stop), daemon=True)
            server.start()
            total = int(rate * seconds)
            with psycopg.connect(PG_URL, autocommit=True) as conn:
                started = time.perf_counter()
                for i in range(1, total + 1):
                    conn.execute(f"INSERT INTO {names[0]} (id, account, amount, status) "
                                 "VALUES (%s, %s, 1, 'open')", (i, f"ACC-{i % 97}"))
                    pause = started + i / rate - time.perf_counter()
                    if pause > 0:
                        time.sleep(pause)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                counts = store.outbox.counts("bench")
                if sum(c["delivered"] for c in counts.values()) >= 3 * total:
                    break
                time.sleep(0.1)
            stop.set()
            server.join(timeout=10)
            with psycopg.connect(PG_URL) as conn:
                committed = {str(r[0]): r[1] for r in
                             conn.execute(f"SELECT id, updated_at FROM {names[0]}")}
            with store.engine.connect() as conn:
                import sqlalchemy as sa

                rows = conn.execute(sa.text(
                    "SELECT record_key, max(delivered_at), count(*) FROM patchbay_outbox "
                    "WHERE status = 'delivered' GROUP BY record_key")).fetchall()
            broadcast.ctx.systems.close()
        delays = []
        for key, last, count in rows:
            if count == 3:
                arrived = last if isinstance(last, dt.datetime) else dt.datetime.fromisoformat(last)
                if arrived.tzinfo is None:
                    arrived = arrived.replace(tzinfo=dt.UTC)
                delays.append((arrived - committed[key]).total_seconds())
        delays.sort()
        p50 = statistics.median(delays)
        p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
        return p50, p99, len(delays)
    finally:
        cleanup(*names)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--changes", type=int, default=20_000)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=10)
    args = parser.parse_args()
    print(f"{args.changes:,} changes, PostgreSQL source → PostgreSQL + RabbitMQ + JSON Lines")
    naive_seconds, naive_rate = naive(args.changes)
    print(f"naive loop (no outbox)   {naive_seconds:7.2f} s  {naive_rate:>9,.0f} changes/s")
    seconds, rate = throughput(args.changes)
    print(f"patchbay broadcast       {seconds:7.2f} s  {rate:>9,.0f} changes/s to 3 destinations")
    print(f"patchbay vs naive loop (the cost of durability): {rate / naive_rate:.2f}x")
    p50, p99, measured = latency(args.rate, args.seconds)
    print(f"latency at {args.rate} changes/s, commit → last destination: p50 {p50 * 1000:.0f} ms, "
          f"p99 {p99 * 1000:.0f} ms ({measured:,} changes)")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
