"""Leases, the process registry and claimed ticks on an SQLite and a PostgreSQL engine state:
take, renew, expire, take over (also from an ended process at once), fencing (a holder that
lost its lease commits nothing), a take waiting for the holder's commit, one claim per tick;
`patchbay cluster` and GET /cluster."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from starlette.testclient import TestClient
from typer.testing import CliRunner

from patchbay.api import create_app
from patchbay.api.app import close_app
from patchbay.cli import app as cli
from patchbay.errors import EngineStateError, LeaseLost
from patchbay.processes import this_host
from patchbay.runtime.cluster import Member, cluster_status
from patchbay.store import Store
from patchbay.store.leases import Fence
from patchbay.store.outbox import NewDelivery

INTEGRATION = "items"


@pytest.fixture(params=["sqlite", "postgresql"])
def state(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An engine state URL: an SQLite file, or a PostgreSQL schema of the test's own."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'state.db'}"
        return
    pg_url: str = request.getfixturevalue("pg_url")
    engine: Engine = request.getfixturevalue("pg_engine")
    schema = f"pb_lease_{uuid.uuid4().hex[:10]}"
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    try:
        yield f"{pg_url}{'&' if '?' in pg_url else '?'}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))


@pytest.fixture
def store(state: str) -> Iterator[Store]:
    opened = Store.open(state)
    yield opened
    opened.close()


def ended_pid() -> int:
    """The id of a process of this machine that has ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def enqueue(store: Store, key: str) -> None:
    with store.transaction() as tx:
        tx.outbox.add(INTEGRATION, [NewDelivery("dest", key, "1", "upsert", {"id": key})])


def queued(store: Store) -> int:
    return sum(sum(per.values()) for per in store.outbox.counts(INTEGRATION).values())


def test_a_lease_is_taken_once_renewed_and_taken_over_when_it_expires(store: Store) -> None:
    first = store.leases.take("notice:items", "host-a:1:aa", 0.5)
    assert first == Fence("notice:items", "host-a:1:aa", 1, 0.5)
    assert store.leases.take("notice:items", "host-b:2:bb", 0.5) is None, "held: not taken"
    assert store.leases.take("notice:items", "host-a:1:aa", 0.5) == first, \
        "its holder takes it again with the same token"

    time.sleep(0.3)
    assert store.leases.renew(first)
    time.sleep(0.3)  # past the first expiry, within the renewed one
    assert store.leases.take("notice:items", "host-b:2:bb", 0.5) is None, "renewed: still held"

    time.sleep(0.6)
    second = store.leases.take("notice:items", "host-b:2:bb", 0.5)
    assert second == Fence("notice:items", "host-b:2:bb", 2, 0.5), \
        "expired: taken over, token raised"
    assert not store.leases.renew(first), "the old holder's renewal fails"
    assert not store.leases.release(first), "and so does its release"
    [record] = store.leases.list()
    assert (record.holder, record.token, record.expired) == ("host-b:2:bb", 2, False)

    assert store.leases.release(second)
    [released] = store.leases.list()
    assert (released.holder, released.expired) == (None, True)
    assert store.leases.take("notice:items", "host-a:1:aa", 0.5) == \
        Fence("notice:items", "host-a:1:aa", 3, 0.5), "a released lease is taken at once"


def test_the_lease_of_an_ended_process_of_this_machine_is_taken_over_at_once(store: Store) -> None:
    assert store.leases.take("notice:far", f"other-host:{ended_pid()}:aa", 60) is not None
    assert store.leases.take("notice:far", f"{this_host()}:1:bb", 60) is None, \
        "a holder on another machine is not known to be gone: its lease must expire"
    assert store.leases.take("notice:items", f"{this_host()}:{ended_pid()}:aa", 60) is not None
    taken = store.leases.take("notice:items", f"{this_host()}:1:bb", 60)
    assert taken is not None and taken.token == 2


def test_a_holder_that_lost_its_lease_commits_nothing(store: Store) -> None:
    old = store.leases.take("notice:items", "host-a:1:aa", 0.2)
    assert old is not None
    with store.fenced(old):
        enqueue(store, "k1")
    assert queued(store) == 1, "committed while the lease was held"

    time.sleep(0.3)
    with store.fenced(old):
        enqueue(store, "k2")
    assert queued(store) == 2, "expired but not taken over: no one else did the work"

    new = store.leases.take("notice:items", "host-b:2:bb", 30)
    assert new is not None
    with store.fenced(old), pytest.raises(LeaseLost, match="taken over by another process"):
        enqueue(store, "k3")
    assert queued(store) == 2, "the stale holder's enqueue was rolled back"
    with store.fenced(new):
        enqueue(store, "k3")
    enqueue(store, "k4")  # outside fenced(): a transaction as ever
    assert queued(store) == 4


def test_a_takeover_waits_for_the_holders_commit_under_way(store: Store) -> None:
    """The holder's fenced unit of work began before its lease expired; a process taking
    the lease meanwhile waits for it to commit, then takes it, and finds its work done."""
    old = store.leases.take("notice:items", "host-a:1:aa", 1.0)
    assert old is not None
    committing = threading.Event()
    taken: list[Fence | None] = []

    def take_over() -> None:
        committing.wait()
        time.sleep(1.1)  # the lease has expired by now
        taken.append(store.leases.take("notice:items", "host-b:2:bb", 30))

    thief = threading.Thread(target=take_over)
    thief.start()
    with store.fenced(old), store.transaction() as tx:
        tx.outbox.add(INTEGRATION, [NewDelivery("dest", "k1", "1", "upsert", {"id": "k1"})])
        committing.set()
        for _ in range(4):  # working (never idle for the lease's length) while the taker waits
            time.sleep(0.4)
            tx.outbox.counts(INTEGRATION)
        assert not taken, "the take waited for the holder's unit of work"
    thief.join(timeout=30)
    assert taken and taken[0] is not None and taken[0].token == 2
    assert queued(store) == 1, "the holder's work committed before the takeover"


def test_a_holder_paused_inside_its_unit_of_work_is_cut_off_on_postgresql(
        pg_url: str, pg_engine: Engine) -> None:
    """Idle in its fenced transaction for longer than the lease (a process stopped there),
    the holder loses its session: the takeover goes on, and the holder commits nothing."""
    schema = f"pb_lease_{uuid.uuid4().hex[:10]}"
    with pg_engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    store = Store.open(f"{pg_url}{'&' if '?' in pg_url else '?'}options=-csearch_path%3D{schema}")
    try:
        old = store.leases.take("notice:items", "host-a:1:aa", 0.5)
        assert old is not None
        taken: list[Fence | None] = []
        thief = threading.Thread(target=lambda: (time.sleep(0.6), taken.append(
            store.leases.take("notice:items", "host-b:2:bb", 30))))
        with pytest.raises(EngineStateError), store.fenced(old), store.transaction() as tx:
            tx.outbox.add(INTEGRATION, [NewDelivery("dest", "k1", "1", "upsert", {"id": "k1"})])
            thief.start()
            time.sleep(1.5)  # paused: idle in the transaction past the lease
            thief.join(timeout=5)
            assert taken and taken[0] is not None and taken[0].token == 2, \
                "taken over while the holder was still paused"
        assert queued(store) == 0, "the paused holder's work was never committed"
    finally:
        store.close()
        with pg_engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))


def test_each_tick_is_claimed_once(store: Store) -> None:
    due = dt.datetime(2026, 12, 7, 16, 0, tzinfo=dt.UTC)
    results: list[bool] = []
    lock = threading.Lock()

    def claim(process: str) -> None:
        for minute in range(20):
            got = store.ticks.claim(INTEGRATION, due + dt.timedelta(minutes=minute), process)
            with lock:
                results.append(got)

    threads = [threading.Thread(target=claim, args=(f"p{n}",)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results.count(True) == 20, "of three processes, one claims each of 20 ticks"
    assert len(store.ticks.claimed(INTEGRATION)) == 20
    assert not store.ticks.claim(INTEGRATION, due, "p9")


def test_members_renew_their_leases_release_them_on_stop_and_are_listed(store: Store) -> None:
    with Member(store, "serve", lease_seconds=0.6) as first, \
            Member(store, "worker", lease_seconds=0.6) as second:
        assert first.lease("notice:items").held()
        time.sleep(1.5)  # two and a half lease times: renewed by the heartbeat
        assert not second.lease("notice:items").held(), "the heartbeat kept it with the first"
        status = cluster_status(store)
        shown = {p["id"]: p for p in status["processes"]}
        assert shown[first.id]["leases"] == ["notice:items"]
        assert (shown[first.id]["role"], shown[first.id]["status"]) == ("serve", "running")
        assert shown[first.id]["heartbeat_age_seconds"] < 1.0
        assert (shown[second.id]["role"], shown[second.id]["leases"]) == ("worker", [])
        assert [(lease["name"], lease["holder"]) for lease in status["leases"]] == \
            [("notice:items", first.id)]
        first.stop()
        assert second.lease("notice:items").held(), "released on stop: taken at once"
    shown = {p["id"]: p["status"] for p in cluster_status(store)["processes"]}
    assert shown == {first.id: "stopped", second.id: "stopped"}


def test_a_process_that_stopped_beating_is_gone(store: Store) -> None:
    killed = f"{this_host()}:{ended_pid()}:aa"
    store.processes.register(killed, this_host(), int(killed.split(":")[1]), "serve", "0.1.0")
    store.processes.register("far-host:12:bb", "far-host", 12, "worker", "0.1.0")
    shown = {p["id"]: p["status"] for p in cluster_status(store)["processes"]}
    assert shown == {killed: "gone", "far-host:12:bb": "running"}, \
        "an ended process of this machine is shown gone at once; another machine's is not"
    assert store.processes.mark_gone(dt.timedelta(seconds=60)) == 1
    time.sleep(0.2)
    assert store.processes.mark_gone(dt.timedelta(seconds=0.1)) == 1, "silent too long"
    assert {p.status for p in store.processes.list()} == {"gone"}
    assert store.processes.beat("far-host:12:bb"), "a gone process that beats again runs again"
    assert store.processes.forget(dt.timedelta(0)) == 1


def test_patchbay_cluster_and_get_cluster_list_processes_and_leases(
        state: str, store: Store, tmp_path: Path) -> None:
    with Member(store, "serve", lease_seconds=30) as member:
        assert member.lease("notice:items").held()
        result = CliRunner().invoke(cli, ["cluster", "--state", state, "--json"])
        assert result.exit_code == 0, result.output
        listed = json.loads(result.output)
        [process] = listed["processes"]
        assert (process["id"], process["leases"], process["status"]) == \
            (member.id, ["notice:items"], "running")
        table = CliRunner().invoke(cli, ["cluster", "--state", state], env={"COLUMNS": "200"})
        assert table.exit_code == 0, table.output
        assert member.id in table.output and "notice:items" in table.output

        (tmp_path / "out").mkdir()
        spec = tmp_path / "served.yaml"
        spec.write_text("""
systems: {out: "file:out"}
integrations:
  - {name: copy, pattern: migration, source: {system: out, object: a.csv, key: id},
     destination: {system: out, object: b.csv, key: id}}
""")
        app = create_app(spec, state, "token-of-the-test")
        try:
            with TestClient(app, headers={"Authorization": "Bearer token-of-the-test"}) as client:
                answer = client.get("/cluster")
                assert answer.status_code == 200, answer.text
                assert [p["id"] for p in answer.json()["processes"]] == [member.id]
                assert TestClient(app).get("/cluster").status_code == 401
        finally:
            close_app(app)
