"""Three `patchbay serve` processes share a broadcast on a PostgreSQL engine state. The one
holding the noticing lease is SIGKILLed six times (every other time it is first paused with
SIGSTOP, so that it is not known to be gone and its lease must expire): another process
takes over within the lease time each time; every destination ends equal to the source, no
change is enqueued or written twice, and the deliveries were spread over the processes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from patchbay import run_integration
from tests.faults.test_kill_broadcast import Items, stop

ROWS = 1_000
KILLS = int(os.environ.get("PATCHBAY_FAILOVER_KILLS", "6"))
LEASE_SECONDS = 3.0
PROCESSES = 3


@pytest.fixture
def schema(pg_url: str) -> Iterator[str]:
    """A schema of the test's own: the engine state, the warehouse and the audit table. The
    audit's `by` is the application name of the connection that wrote the row (each serve
    process has its own), `at` when."""
    name = f"fault_failover_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
        conn.execute(f"CREATE TABLE {name}.warehouse (item_id bigint PRIMARY KEY, qty integer)")
        conn.execute(f"CREATE TABLE {name}.audit (change text PRIMARY KEY, item_id bigint, "
                     "qty integer, by text DEFAULT current_setting('application_name'), "
                     "at timestamptz DEFAULT clock_timestamp())")
    yield name
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {name} CASCADE")


def test_the_noticing_lease_moves_within_the_lease_time_and_nothing_is_lost_or_doubled(
        tmp_path: Path, pg_url: str, schema: str) -> None:
    rng = random.Random(5)
    items = Items(tmp_path / "source.db", ROWS)
    state = f"{pg_url}?options=-csearch_path%3D{schema}"
    spec = tmp_path / "items.yaml"
    spec.write_text(f"""
systems:
  source: sqlite:///source.db
  pg: {state}
integrations:
  - name: items
    pattern: broadcast
    source: {{system: source, object: items, key: id, watermark: updated_at}}
    trigger: {{poll_seconds: 0.05}}
    destinations:
      - {{name: warehouse, system: pg, object: warehouse, key: item_id,
          transform: {{fields: {{item_id: id, qty: qty}}}}}}
      - {{name: audit, system: pg, object: audit, key: change,
          transform: {{fields: {{change: {{expr: "concat(id, '@', updated_at)"}}, item_id: id, qty: qty}}}}}}
    options: {{batch_size: 100, lease_seconds: 2, backoff_seconds: 0.1}}
""")
    watch = psycopg.connect(pg_url, autocommit=True)

    def start(slot: int) -> subprocess.Popen[bytes]:
        log = tmp_path / f"serve-{slot}-{time.monotonic_ns()}.log"
        with log.open("wb") as out:
            return subprocess.Popen(
                [sys.executable, "-m", "patchbay.cli", "serve", str(spec), "--state", state,
                 "--no-api", "--lease-seconds", str(LEASE_SECONDS)], cwd=tmp_path,
                env={**os.environ, "PGAPPNAME": f"serve-{slot}"}, stdout=out,
                stderr=subprocess.STDOUT)

    def holder() -> str | None:
        """The process holding the noticing lease, while it has not expired."""
        try:
            row = watch.execute(f"SELECT holder FROM {schema}.patchbay_leases WHERE name = "
                                "'notice:items' AND expires_at > now()").fetchone()
        except psycopg.errors.UndefinedTable:  # no serve has made the engine state yet
            return None
        return None if row is None else str(row[0])

    def queued() -> list[tuple[Any, ...]]:
        """(record_key, version, status) of the audit's deliveries."""
        try:
            return watch.execute(f"SELECT record_key, version, status FROM {schema}.patchbay_outbox"
                                 " WHERE destination = 'audit'").fetchall()
        except psycopg.errors.UndefinedTable:
            return []

    def registered(process: subprocess.Popen[bytes]) -> None:
        """Wait until `process` has registered in the engine state (it is up)."""
        deadline = time.monotonic() + 60
        while True:
            try:
                if watch.execute(f"SELECT 1 FROM {schema}.patchbay_processes WHERE pid = %s "
                                 "AND status = 'running'", (process.pid,)).fetchone():
                    return
            except psycopg.errors.UndefinedTable:  # the engine state is not made yet
                pass
            assert process.poll() is None, "a serve process ended"
            assert time.monotonic() < deadline, "a serve process did not register in 60 s"
            time.sleep(0.05)

    def burst() -> None:
        """Change some items, each once: every state written is then one a poll can see."""
        for item in rng.sample(range(1, ROWS + 1), rng.randrange(100, 300)):
            items.change(item)

    def all_noticed() -> None:
        """Wait until the state written so far is all queued (else no item may change again:
        a poll sees only an item's latest state)."""
        deadline = time.monotonic() + 60
        while len(queued()) < len(items.written):
            assert time.monotonic() < deadline, \
                f"{len(items.written) - len(queued())} changes not noticed in 60 s"
            time.sleep(0.05)

    servers = [start(slot) for slot in range(PROCESSES)]
    takeovers: list[tuple[str, float]] = []
    try:
        all_noticed()
        for kill in range(KILLS):
            for process in servers:  # up, so that two processes can take over
                registered(process)
            deadline = time.monotonic() + 60
            while (current := holder()) is None:
                assert time.monotonic() < deadline, "no process took the noticing lease in 60 s"
                time.sleep(0.02)
            slot = next(s for s, p in enumerate(servers) if f":{p.pid}:" in current)
            burst()
            time.sleep(rng.uniform(0.05, 0.5))  # noticing and delivering that burst
            victim = servers[slot]
            paused = kill % 2 == 1
            os.kill(victim.pid, signal.SIGSTOP if paused else signal.SIGKILL)
            killed_at = time.monotonic()
            if not paused:  # reaped at once, as a supervisor does: its pid is gone
                assert victim.wait(timeout=30) == -signal.SIGKILL
            while (taker := holder()) in (None, current):
                assert time.monotonic() - killed_at < 4 * LEASE_SECONDS, \
                    f"no process took over from {current} in {4 * LEASE_SECONDS} s"
                time.sleep(0.01)
            takeovers.append(("paused" if paused else "killed", time.monotonic() - killed_at))
            assert any(f":{p.pid}:" in taker for p in servers if p is not victim)
            if paused:
                os.kill(victim.pid, signal.SIGKILL)  # killed while paused: it never wakes
            assert victim.wait(timeout=30) == -signal.SIGKILL
            servers[slot] = start(slot)  # it boots while the next rounds go on
            all_noticed()
        burst()
        all_noticed()
        time.sleep(1)
    finally:
        stopped = [stop(process) for process in servers]
    assert stopped == [True] * PROCESSES, "every serve ends on Ctrl-C"

    print("takeovers (s):", ", ".join(f"{how} {seconds:.2f}" for how, seconds in takeovers))
    assert len(takeovers) == KILLS
    # A paused holder renewed its lease at most a heartbeat before it was paused: its lease
    # runs out within LEASE_SECONDS, and another process takes it at its next try (every
    # 0.05 s here). The bounds leave room for a loaded machine's scheduling: on a 2-core
    # machine at a load of 16-20, one pause in five was taken over in 5.9 s, the others in
    # 2.3-3.1 s.
    pauses = sorted(seconds for how, seconds in takeovers if how == "paused")
    assert pauses[len(pauses) // 2] <= LEASE_SECONDS + 0.5, \
        f"takeovers of a paused holder within the lease time ({LEASE_SECONDS} s): {pauses}"
    assert pauses[-1] <= 2 * LEASE_SECONDS, f"and none much later: {pauses}"
    assert max(seconds for how, seconds in takeovers if how == "killed") < 1.5, \
        "a killed holder of this machine is known gone: its lease is taken over at once"

    time.sleep(2.5)  # leases on deliveries of the last killed process run out
    report = run_integration(spec, state=state)
    assert report["changes"] == 0, "every change was noticed by the serve processes"
    assert report["outbox"] == {name: {"pending": 0, "delivered": len(items.written), "dead": 0,
                                       "discarded": 0} for name in ("warehouse", "audit")}

    enqueued = [(key, version) for key, version, _ in queued()]
    assert len(enqueued) == len(set(enqueued)), "no change enqueued twice"
    expected = {i: qty for i, (_, qty, _) in items.current().items()}
    held = dict(watch.execute(f"SELECT item_id, qty FROM {schema}.warehouse").fetchall())
    assert held == expected, "the warehouse equals the source"
    audited = watch.execute(f"SELECT change, item_id, qty FROM {schema}.audit").fetchall()
    assert sorted(audited) == sorted((f"{i}@{at}", i, qty) for (i, at), qty in items.written.items()), \
        "the audit holds every state the test wrote, each once, with its qty"
    by_item: dict[int, list[int]] = {}
    for item, qty in watch.execute(f"SELECT item_id, qty FROM {schema}.audit ORDER BY at, change"):
        by_item.setdefault(item, []).append(qty)
    assert all(q == sorted(q) for q in by_item.values()), "each item's changes landed in order"
    writers = dict(watch.execute(f"SELECT by, count(*) FROM {schema}.audit "
                                 "WHERE by LIKE 'serve-%' GROUP BY by").fetchall())
    print("audit rows written per serve slot:", writers)
    assert len(writers) == PROCESSES, f"deliveries spread over every process: {writers}"
    watch.close()
