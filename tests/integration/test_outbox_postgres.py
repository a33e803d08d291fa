"""The broadcast outbox with its engine state on the real PostgreSQL.

Each test works in a schema of its own (the state through `search_path`, the destination
tables schema-qualified), created and dropped by the test. PostgreSQL that cannot be
reached fails these tests (the `pg_url` fixture), never skips them.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from patchbay.connectors.sql import SqlConnector
from patchbay.elements.sink import Sink
from patchbay.errors import EngineStateUnavailable, MessageSeen, RetriableError
from patchbay.model import Operation
from patchbay.runtime.delivery import Deliverer, DeliveryStats
from patchbay.spec import SystemSpec
from patchbay.store import Store
from patchbay.store.outbox import DeliveryStatus, NewDelivery
from patchbay.store.schema import outbox

INTEGRATION = "contacts-broadcast"
KEYS = 500
VERSIONS = 4  # 2,000 deliveries
PASSWORD = "s3cret-of-the-state"  # trust authentication: accepted, and never shown


@dataclass
class Space:
    schema: str
    state_url: str
    pg_url: str
    engine: Engine


@pytest.fixture
def space(pg_url: str, pg_engine: Engine) -> Iterator[Space]:
    schema = f"pb_outbox_{uuid.uuid4().hex[:10]}"
    with pg_engine.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in pg_url else "?"
    try:
        yield Space(schema, f"{pg_url}{sep}options=-csearch_path%3D{schema}", pg_url, pg_engine)
    finally:
        with pg_engine.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))


def test_two_deliverers_drain_2000_deliveries_each_exactly_once_in_key_order(space: Space) -> None:
    with space.engine.begin() as conn:
        for n in (0, 1):
            conn.execute(sa.text(
                f"CREATE TABLE {space.schema}.dest_w{n} (event TEXT PRIMARY KEY, record TEXT NOT NULL, "
                f"version INTEGER NOT NULL, worker TEXT, "
                f"written_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp())"))

    setup = Store.open(space.state_url)
    try:
        for version in range(1, VERSIONS + 1):
            changes = [NewDelivery("crm", f"r{key}", str(version), "upsert",
                                   {"event": f"r{key}:{version}", "record": f"r{key}",
                                    "version": version})
                       for key in range(KEYS)]
            with setup.transaction() as tx:
                tx.outbox.add(INTEGRATION, changes)
                tx.cursors.set(INTEGRATION, "salesforce", "Contact", version)
        assert setup.cursors.get(INTEGRATION, "salesforce", "Contact") == VERSIONS
    finally:
        setup.close()

    # Each worker writes to a table of its own: a delivery leased by both would land in both.
    stats = [DeliveryStats(), DeliveryStats()]
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def work(n: int) -> None:
        store = Store.open(space.state_url)
        connector = SqlConnector(SystemSpec(name="crm", url=space.pg_url))
        try:
            target = Sink(connector, f"{space.schema}.dest_w{n}", Operation.UPSERT, "event")
            deliverer = Deliverer(store, INTEGRATION, {"crm": target}, worker=f"w{n}")
            start.wait()
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                once = deliverer.deliver_once("crm", limit=100)
                stats[n] += once
                if not once.total:
                    if store.outbox.counts(INTEGRATION)["crm"]["pending"] == 0:
                        return
                    time.sleep(0.005)  # the other worker holds the earlier versions
            raise AssertionError(f"worker w{n} did not finish in time")
        except BaseException as exc:
            errors.append(exc)
        finally:
            connector.close()
            store.close()

    threads = [threading.Thread(target=work, args=(n,)) for n in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors

    total = KEYS * VERSIONS
    assert stats[0].delivered + stats[1].delivered == total
    assert stats[0].delivered > 0 and stats[1].delivered > 0, stats
    assert stats[0].retried + stats[1].retried + stats[0].dead + stats[1].dead == 0

    with space.engine.connect() as conn:
        conn.execute(sa.text(f"SET search_path TO {space.schema}"))
        marks = conn.execute(sa.select(outbox.c.status, outbox.c.attempts, outbox.c.lease_owner,
                                       sa.func.count()).group_by(
            outbox.c.status, outbox.c.attempts, outbox.c.lease_owner)).all()
        written = {n: conn.execute(sa.text(
            f"SELECT event, record, version, written_at FROM {space.schema}.dest_w{n}")).all()
            for n in (0, 1)}
        conn.rollback()
    assert [tuple(m) for m in marks] == [("delivered", 1, None, total)], "each delivery marked once"

    events = [row[0] for n in (0, 1) for row in written[n]]
    assert len(events) == len(set(events)) == total, "each delivery written by one worker only"
    assert sorted(set(events)) == sorted(f"r{k}:{v}" for k in range(KEYS) for v in range(1, VERSIONS + 1))

    by_record: dict[str, list[tuple[dt.datetime, int]]] = {}
    for n in (0, 1):
        for _event, record, version, written_at in written[n]:
            by_record.setdefault(record, []).append((written_at, version))
    for record, writes in by_record.items():
        assert [v for _, v in sorted(writes)] == list(range(1, VERSIONS + 1)), record


def test_outbox_rules_hold_on_postgresql(space: Space) -> None:
    store = Store.open(space.state_url)
    try:
        with store.transaction() as tx:
            tx.outbox.add(INTEGRATION, [
                NewDelivery("crm", 1, "1", "upsert", {"id": 1, "at": dt.date(2024, 5, 1)}),
                NewDelivery("crm", 1, "2", "upsert", {"id": 1}),
                NewDelivery("crm", 2, "1", "delete"),
                NewDelivery("erp", 1, "1", "upsert", {"id": 1}),
            ])
            tx.cursors.set(INTEGRATION, "db", "items", {"after": 7})
        assert store.cursors.get(INTEGRATION, "db", "items") == {"after": 7}

        first = store.outbox.lease(INTEGRATION, "crm", "w1", lease_seconds=0.5)
        assert [(d.record_key, d.version) for d in first] == [("1", "1"), ("2", "1")]
        assert first[0].payload == {"id": 1, "at": "2024-05-01"}
        assert store.outbox.lease(INTEGRATION, "crm", "w2") == []
        assert [d.destination for d in store.outbox.lease(INTEGRATION, "erp", "w2")] == ["erp"]

        time.sleep(0.6)  # w1's lease expires on the database's clock
        second = store.outbox.lease(INTEGRATION, "crm", "w2")
        assert [d.id for d in second] == [d.id for d in first]
        assert store.outbox.delivered([d.id for d in first], "w1") == 0
        assert store.outbox.dead(second[0].id, "w2", "INVALID: refused") is True
        assert store.outbox.retry(second[1].id, "w2", "down", dt.timedelta(seconds=30)) is True
        retried = store.outbox.get(second[1].id)
        assert retried is not None and retried.attempts == 1
        assert retried.next_attempt_at > dt.datetime.now(dt.UTC) + dt.timedelta(seconds=20)

        assert store.outbox.lease(INTEGRATION, "crm", "w2") == [], "version 2 waits behind the dead letter"
        [letter] = store.outbox.dead_letters(INTEGRATION, "crm")
        assert (letter.id, letter.last_error, letter.attempts) == (second[0].id, "INVALID: refused", 1)
        assert store.outbox.replay([letter.id]) == 1
        [again] = store.outbox.lease(INTEGRATION, "crm", "w2")
        assert again.id == letter.id and again.attempts == 0
        assert store.outbox.delivered([again.id], "w2") == 1
        [last] = store.outbox.lease(INTEGRATION, "crm", "w2")
        assert last.version == "2" and last.status is DeliveryStatus.PENDING
        assert store.outbox.delivered([last.id], "w2") == 1
        assert store.outbox.counts(INTEGRATION)["crm"] == {
            "pending": 1, "delivered": 2, "dead": 0, "discarded": 0}
    finally:
        store.close()


def test_pushed_changes_are_taken_once_and_never_older_than_what_is_queued(space: Space) -> None:
    store = Store.open(space.state_url)
    try:
        def pushed(version: str, name: str, message: str | None = None) -> int:
            with store.transaction(serial=f"push:{INTEGRATION}") as tx:
                if message is not None:
                    tx.seen.first_sight(INTEGRATION, "webhook", message)
                return tx.outbox.add(INTEGRATION, [NewDelivery("dest", "k1", version, "upsert",
                                                               {"id": "k1", "name": name})],
                                     newer_only=True)

        assert pushed("2026-03-01T10:00:05+00:00", "newer", "sig-b") == 1
        assert pushed("2026-03-01 10:00:00", "older", "sig-a") == 0, "older: left out"
        with pytest.raises(MessageSeen, match="message 'sig-b' from webhook was accepted already"):
            pushed("2026-03-01T10:00:09+00:00", "again", "sig-b")
        assert pushed("2026-03-01T10:00:05+00:00", "same version") == 1
        with space.engine.connect() as conn:
            names = conn.execute(sa.text(f"SELECT payload->>'name' FROM {space.schema}.patchbay_outbox "
                                         "ORDER BY id")).scalars().all()
        assert names == ["newer", "same version"]
    finally:
        store.close()


def test_a_lost_connection_to_the_state_is_retriable_and_loses_no_unit_of_work(space: Space) -> None:
    app = f"patchbay-{uuid.uuid4().hex[:10]}"
    url = (sa.engine.make_url(space.state_url).set(password=PASSWORD)
           .update_query_dict({"application_name": app}).render_as_string(hide_password=False))

    def cut() -> None:
        """Terminate the state's connections, as a PostgreSQL failover or restart would."""
        with space.engine.begin() as conn:
            assert conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                        "WHERE application_name = :app"), {"app": app}).all()

    def lost(operation: str) -> str:
        return (r"^the engine state failed: terminating connection due to administrator command "
                rf"\(state=postgresql://postgres:\*\*\*@\S+application_name={app}\S*, "
                rf"operation={operation}\)$")

    store = Store.open(url)
    try:
        assert store.runs.latest() == []
        cut()
        with pytest.raises(EngineStateUnavailable, match=lost(r"runs\.latest")) as raised:
            store.runs.latest()
        assert isinstance(raised.value, RetriableError)
        assert PASSWORD not in str(raised.value)
        assert store.runs.latest() == [], "the next call reconnects"

        with pytest.raises(EngineStateUnavailable, match=lost(r"cursors\.set")), \
                store.transaction() as tx:
            tx.outbox.add(INTEGRATION, [NewDelivery("crm", 1, "1", "upsert", {"id": 1})])
            cut()
            tx.cursors.set(INTEGRATION, "db", "items", {"after": 1})
        assert store.outbox.counts(INTEGRATION) == {}, "the deliveries went with the cursor"
        assert store.cursors.get(INTEGRATION, "db", "items") is None
    finally:
        store.close()


def test_the_backlog_counts_waiting_and_dead_by_the_state_s_clock(space: Space) -> None:
    store = Store.open(space.state_url)
    try:
        store.outbox.add(INTEGRATION, [NewDelivery("erp", key, "v1", "upsert", {"id": key})
                                       for key in range(3)]
                         + [NewDelivery("audit", 1, "v1", "upsert", {"id": 1})])
        [first, *_] = store.outbox.lease(INTEGRATION, "erp", "tester", limit=1)
        assert store.outbox.dead(first.id, "tester", "refused")
        [audit] = store.outbox.lease(INTEGRATION, "audit", "tester")
        store.outbox.delivered([audit.id], "tester")
        time.sleep(0.3)
        [erp] = store.outbox.backlog()
        assert (erp.integration, erp.destination, erp.pending, erp.dead) == (INTEGRATION, "erp",
                                                                             2, 1)
        assert 0.3 <= erp.oldest_pending_seconds < 60
        with space.engine.connect() as conn:
            # a table this small is read whole anyway: ask whether the index can serve
            conn.execute(sa.text("SET enable_seqscan = off"))
            plan = "\n".join(conn.execute(sa.text(
                f"EXPLAIN SELECT count(*) FROM {space.schema}.patchbay_outbox "
                "WHERE status IN ('pending', 'dead')")).scalars())
        assert "ix_patchbay_outbox_waiting" in plan, plan
    finally:
        store.close()


def _waiting_for_a_lock(engine: Engine, application: str, within: float = 10.0) -> None:
    """Wait until the session named `application` waits for a row lock."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            if conn.execute(sa.text(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = :name "
                    "AND wait_event_type = 'Lock'"), {"name": application}).scalar_one():
                return
        time.sleep(0.02)
    raise AssertionError(f"{application} never waited for a lock")


def test_a_lease_skips_rows_another_transaction_holds_instead_of_waiting(space: Space) -> None:
    store = Store.open(space.state_url)
    try:
        store.outbox.add(INTEGRATION, [NewDelivery("crm", f"r{n}", "1", "upsert", {"n": n})
                                       for n in range(3)])
        with space.engine.connect() as conn:
            ids = list(conn.execute(sa.text(
                f"SELECT id FROM {space.schema}.patchbay_outbox ORDER BY id")).scalars())
        leased: list[int] = []
        lease = threading.Thread(target=lambda: leased.extend(
            d.id for d in store.outbox.lease(INTEGRATION, "crm", "w1")))
        with space.engine.begin() as holder:
            holder.execute(sa.text(f"SELECT 1 FROM {space.schema}.patchbay_outbox "
                                   "WHERE id = :id FOR UPDATE"), {"id": ids[0]})
            lease.start()
            lease.join(5)
            waited = lease.is_alive()
        lease.join()
        assert not waited, "the lease waited for a row another transaction held"
        assert leased == ids[1:]
        assert [d.id for d in store.outbox.lease(INTEGRATION, "crm", "w2")] == ids[:1]
    finally:
        store.close()


def test_a_mark_that_postgresql_ends_as_a_deadlock_s_victim_is_run_again(space: Space) -> None:
    # A real deadlock: the mark locks the first of its rows, then waits for the second,
    # which this test holds while it asks for the first.
    application = f"pb_mark_{uuid.uuid4().hex[:8]}"
    store = Store.open(f"{space.state_url}&application_name={application}")
    try:
        store.outbox.add(INTEGRATION, [NewDelivery("crm", f"r{n}", "1", "upsert", {"n": n})
                                       for n in range(2)])
        first, second = (d.id for d in store.outbox.lease(INTEGRATION, "crm", "w1"))
        marked: list[int] = []
        failed: list[BaseException] = []

        def mark() -> None:
            try:
                marked.append(store.outbox.delivered([first, second], "w1"))
            except BaseException as exc:
                failed.append(exc)

        table = f"{space.schema}.patchbay_outbox"
        with space.engine.begin() as holder:
            holder.execute(sa.text(f"SELECT 1 FROM {table} WHERE id = :id FOR UPDATE"),
                           {"id": second})
            thread = threading.Thread(target=mark)
            thread.start()
            _waiting_for_a_lock(space.engine, application)
            # The mark holds `first` now: this lock is granted only once PostgreSQL has
            # ended the mark's transaction (it has waited longest) as the deadlock's victim.
            holder.execute(sa.text(f"SELECT 1 FROM {table} WHERE id = :id FOR UPDATE"),
                           {"id": first})
        thread.join(30)
        assert not thread.is_alive()
        assert not failed, failed
        assert marked == [2]
        assert {store.outbox.get(id).status for id in (first, second)  # type: ignore[union-attr]
                } == {DeliveryStatus.DELIVERED}
    finally:
        store.close()
