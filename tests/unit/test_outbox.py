"""The broadcast outbox on an SQLite engine state, delivered to real destinations.

Destinations are real: an SQLite database through the SQL connector. A destination is made
unreachable by pointing it at a database under a directory that does not exist yet
(restored by creating it), or at PostgreSQL on a port nothing listens on.
"""

from __future__ import annotations

import datetime as dt
import socket
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from patchbay.connectors.sql import SqlConnector
from patchbay.elements.sink import Sink
from patchbay.errors import EngineStateError
from patchbay.model import Operation, Status
from patchbay.retry import RetryPolicy
from patchbay.runtime.delivery import Deliverer, DeliveryStats
from patchbay.spec import SystemSpec
from patchbay.store import Store
from patchbay.store import schema as store_schema
from patchbay.store.outbox import DeliveryStatus, NewDelivery

INTEGRATION = "contacts-broadcast"
NULL_KEY_REFUSED = (r"^the engine state failed: NOT NULL constraint failed: patchbay_outbox\.record_key "
                    r"\(state=sqlite:///\S+/state/state\.db, operation=outbox\.add\)$")
# Delays long enough that "not due yet" holds on a loaded machine, short enough to wait out.
FAST = RetryPolicy(max_attempts=4, backoff_seconds=0.5, backoff_max=10.0, jitter=0.0)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(directory=tmp_path / "state")
    yield opened
    opened.close()


def make_destination(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE IF NOT EXISTS accounts (id TEXT PRIMARY KEY)")
        db.execute("CREATE TABLE IF NOT EXISTS contacts (id TEXT PRIMARY KEY, name TEXT NOT NULL, "
                   "account_id TEXT REFERENCES accounts(id), version TEXT)")
    return path


def target(url: str, object: str = "contacts", name: str = "crm") -> Sink:
    return Sink(SqlConnector(SystemSpec(name=name, url=url)), object, Operation.UPSERT, "id")


def sqlite_target(path: Path) -> Sink:
    return target(f"sqlite:///{path}")


def rows(path: Path) -> dict[str, tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        return {r[0]: tuple(r[1:]) for r in db.execute(
            "SELECT id, name, account_id, version FROM contacts ORDER BY id")}


def change(key: str, version: str, name: str = "n", account: str | None = None,
           destination: str = "crm") -> NewDelivery:
    return NewDelivery(destination, key, version, "upsert",
                       {"id": key, "name": name, "account_id": account, "version": version})


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def wait_until_due(store: Store, id: int) -> None:
    delivery = store.outbox.get(id)
    assert delivery is not None
    wait = (delivery.next_attempt_at - dt.datetime.now(dt.UTC)).total_seconds()
    time.sleep(max(wait, 0) + 0.02)


# -- schema and enqueue ----------------------------------------------------------------------------


def test_a_version_1_state_gains_the_outbox(tmp_path: Path) -> None:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    with engine.begin() as conn:
        store_schema.meta.create(conn)
        store_schema.MIGRATIONS[0](conn)
        conn.execute(sa.insert(store_schema.meta).values(name="schema_version", value="1"))
    store = Store(engine)
    try:
        assert "patchbay_outbox" in sa.inspect(engine).get_table_names()
        with engine.connect() as conn:
            version = conn.execute(sa.select(store_schema.meta.c.value)).scalar()
        assert version == str(store_schema.SCHEMA_VERSION)
        assert store.outbox.add(INTEGRATION, [change("c1", "1")]) == 1
    finally:
        store.close()


def test_enqueue_advances_the_cursor_with_the_deliveries(store: Store) -> None:
    with store.transaction() as tx:
        added = tx.outbox.add(INTEGRATION, [change("c1", "1"), change("c2", "1", destination="erp")])
        tx.cursors.set(INTEGRATION, "salesforce", "Contact", {"modstamp": "2024-05-01T10:00:00Z"})
    assert added == 2
    assert store.cursors.get(INTEGRATION, "salesforce", "Contact") == {"modstamp": "2024-05-01T10:00:00Z"}
    assert store.outbox.counts(INTEGRATION) == {
        "crm": {"pending": 1, "delivered": 0, "dead": 0, "discarded": 0},
        "erp": {"pending": 1, "delivered": 0, "dead": 0, "discarded": 0}}
    [leased] = store.outbox.lease(INTEGRATION, "crm", "w1")
    assert (leased.record_key, leased.version, leased.operation, leased.attempts) == ("c1", "1", "upsert", 0)
    assert leased.payload == {"id": "c1", "name": "n", "account_id": None, "version": "1"}
    assert leased.status is DeliveryStatus.PENDING and leased.lease_owner == "w1"
    assert leased.lease_expires_at is not None and leased.lease_expires_at > leased.created_at


def test_a_failing_insert_leaves_the_cursor_where_it_was(store: Store) -> None:
    with store.transaction() as tx:
        tx.outbox.add(INTEGRATION, [change("c1", "1")])
        tx.cursors.set(INTEGRATION, "salesforce", "Contact", 10)
    broken = NewDelivery("crm", None, "2", "upsert", {"id": None})  # the outbox refuses a null key
    with pytest.raises(EngineStateError, match=NULL_KEY_REFUSED), store.transaction() as tx:
        tx.cursors.set(INTEGRATION, "salesforce", "Contact", 20)
        tx.outbox.add(INTEGRATION, [change("c2", "2"), broken])
    assert store.cursors.get(INTEGRATION, "salesforce", "Contact") == 10
    assert store.outbox.counts(INTEGRATION)["crm"]["pending"] == 1


def test_a_delivery_operation_is_upsert_or_delete() -> None:
    with pytest.raises(ValueError, match="'upsert' or 'delete'"):
        NewDelivery("crm", "c1", "1", "merge", {})


# -- order, dead letters, replay -------------------------------------------------------------------


def test_a_later_change_never_overtakes_an_earlier_one(store: Store, tmp_path: Path) -> None:
    path = make_destination(tmp_path / "crm.db")
    store.outbox.add(INTEGRATION, [change("c1", "1", "Ann"), change("c1", "2", "Anne"),
                                change("c2", "1", "Bob"), change("c1", "3", "Anna")])
    leased = store.outbox.lease(INTEGRATION, "crm", "peek", lease_seconds=0.0)
    assert [(d.record_key, d.version) for d in leased] == [("c1", "1"), ("c2", "1")]

    deliverer = Deliverer(store, INTEGRATION, {"crm": sqlite_target(path)})
    seen = []
    while (stats := deliverer.deliver_once("crm")).total:
        seen.append((stats.delivered, rows(path)["c1"][2]))
    assert seen == [(2, "1"), (1, "2"), (1, "3")]
    assert rows(path) == {"c1": ("Anna", None, "3"), "c2": ("Bob", None, "1")}


def test_a_rejected_delivery_is_dead_at_once_and_blocks_its_key_until_replayed(
        store: Store, tmp_path: Path) -> None:
    path = make_destination(tmp_path / "crm.db")
    store.outbox.add(INTEGRATION, [change("c1", "1", "Ann", account="A9"),
                                change("c1", "2", "Anne", account="A9"), change("c2", "1", "Bob")])
    deliverer = Deliverer(store, INTEGRATION, {"crm": sqlite_target(path)})

    assert deliverer.deliver_once("crm") == DeliveryStats(delivered=1, retried=0, dead=1)
    [letter] = store.outbox.dead_letters(INTEGRATION)
    assert (letter.record_key, letter.version, letter.attempts) == ("c1", "1", 1)
    assert letter.last_error is not None
    assert letter.last_error.startswith("INVALID_CROSS_REFERENCE_KEY:")
    assert "FOREIGN KEY" in letter.last_error
    assert store.outbox.dead_letters(INTEGRATION, "erp") == [] and store.outbox.dead_letters("other") == []
    assert deliverer.deliver_once("crm").total == 0, "c1 v2 waits behind its dead letter"
    assert "c1" not in rows(path)

    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO accounts VALUES ('A9')")
    assert store.outbox.replay([letter.id]) == 1
    replayed = store.outbox.get(letter.id)
    assert replayed is not None
    assert (replayed.status, replayed.attempts) == (DeliveryStatus.PENDING, 0)
    assert deliverer.deliver_once("crm") == DeliveryStats(delivered=1)
    assert rows(path)["c1"] == ("Ann", "A9", "1")
    assert deliverer.deliver_once("crm") == DeliveryStats(delivered=1)
    assert rows(path)["c1"] == ("Anne", "A9", "2")
    assert store.outbox.counts(INTEGRATION)["crm"] == {
        "pending": 0, "delivered": 3, "dead": 0, "discarded": 0}


def test_discarding_a_dead_letter_unblocks_its_key_for_good(store: Store, tmp_path: Path) -> None:
    path = make_destination(tmp_path / "crm.db")
    store.outbox.add(INTEGRATION, [change("c1", "1", "Ann", account="A9"), change("c1", "2", "Anne")])
    deliverer = Deliverer(store, INTEGRATION, {"crm": sqlite_target(path)})
    assert deliverer.deliver_once("crm") == DeliveryStats(dead=1)
    [letter] = store.outbox.dead_letters()
    assert store.outbox.discard([letter.id]) == 1
    assert deliverer.deliver_once("crm") == DeliveryStats(delivered=1)
    assert rows(path) == {"c1": ("Anne", None, "2")}
    discarded = store.outbox.get(letter.id)
    assert discarded is not None and discarded.status is DeliveryStatus.DISCARDED
    assert store.outbox.replay([letter.id]) == 0, "a discarded letter is final"
    assert store.outbox.discard([letter.id]) == 0
    assert store.outbox.get(10_000) is None


# -- retries ---------------------------------------------------------------------------------------


def test_a_transient_failure_is_retried_later_and_later_then_dead_then_replayed(
        store: Store, tmp_path: Path) -> None:
    path = tmp_path / "not-yet" / "crm.db"  # its directory does not exist: unreachable
    store.outbox.add(INTEGRATION, [change("c1", "1", "Ann")])
    deliverer = Deliverer(store, INTEGRATION, {"crm": sqlite_target(path)}, policy=FAST)
    [id] = [d.id for d in store.outbox.lease(INTEGRATION, "crm", "peek", lease_seconds=0.0)]

    delays = []
    for attempt in (1, 2, 3):
        before = dt.datetime.now(dt.UTC)
        assert deliverer.deliver_once("crm") == DeliveryStats(retried=1)
        after = dt.datetime.now(dt.UTC)
        delivery = store.outbox.get(id)
        assert delivery is not None
        assert (delivery.status, delivery.attempts, delivery.lease_owner) == (
            DeliveryStatus.PENDING, attempt, None)
        assert delivery.last_error is not None and "cannot reach system 'crm'" in delivery.last_error
        expected = dt.timedelta(seconds=FAST.backoff_seconds * 2 ** (attempt - 1))
        assert before + expected <= delivery.next_attempt_at <= after + expected
        delays.append(delivery.next_attempt_at - before)
        assert deliverer.deliver_once("crm").total == 0, "not due yet"
        wait_until_due(store, id)
    assert delays == sorted(delays)

    assert deliverer.deliver_once("crm") == DeliveryStats(dead=1)
    [letter] = store.outbox.dead_letters(INTEGRATION, "crm")
    assert letter.attempts == 4 and letter.last_error is not None
    assert "gave up after 4 attempts" in letter.last_error

    make_destination(path)
    assert store.outbox.replay([id]) == 1
    assert deliverer.deliver_once("crm") == DeliveryStats(delivered=1)
    assert rows(path) == {"c1": ("Ann", None, "1")}


def test_any_other_error_from_the_write_is_retried_not_lost(store: Store, tmp_path: Path) -> None:
    path = make_destination(tmp_path / "crm.db")
    store.outbox.add(INTEGRATION, [change("c1", "1")])
    wrong = target(f"sqlite:///{path}", object="no_such_table")  # a SpecError, not retriable
    deliverer = Deliverer(store, INTEGRATION, {"crm": wrong}, policy=FAST)
    assert deliverer.deliver_once("crm") == DeliveryStats(retried=1)
    assert store.outbox.lease(INTEGRATION, "crm", "peek") == [], "waiting for its next attempt"
    counts = store.outbox.counts(INTEGRATION)["crm"]
    assert counts["pending"] == 1 and counts["dead"] == 0


def test_retry_policy_doubles_up_to_the_cap_less_the_jitter() -> None:
    policy = RetryPolicy(backoff_seconds=1.0, backoff_max=10.0, jitter=0.2)
    for attempts, base in [(1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (5, 10.0), (40, 10.0), (500, 10.0)]:
        for _ in range(50):
            assert 0.8 * base <= policy.next_delay(attempts) <= base
    exact = RetryPolicy(backoff_seconds=0.5, jitter=0.0)
    assert [exact.next_delay(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert RetryPolicy().max_attempts == 8
    assert not RetryPolicy().gives_up(7) and RetryPolicy().gives_up(8)
    with pytest.raises(ValueError, match="jitter is a fraction"):
        RetryPolicy(jitter=1.0)
    with pytest.raises(ValueError, match="max_attempts must be at least 1"):
        RetryPolicy(max_attempts=0)


# -- isolation, leases, idempotency -----------------------------------------------------------------


def test_an_unreachable_destination_does_not_hold_back_the_others(store: Store, tmp_path: Path) -> None:
    path = make_destination(tmp_path / "crm.db")
    changes = []
    for i in range(50):
        changes += [change(f"c{i}", "1"), change(f"c{i}", "1", destination="warehouse")]
    store.outbox.add(INTEGRATION, changes)
    down = target(f"postgresql://postgres@127.0.0.1:{closed_port()}/nothing", name="warehouse")
    deliverer = Deliverer(store, INTEGRATION, {"crm": sqlite_target(path), "warehouse": down})

    assert deliverer.deliver_once("warehouse") == DeliveryStats(retried=50)
    assert deliverer.deliver_once("crm") == DeliveryStats(delivered=50)
    assert len(rows(path)) == 50
    counts = store.outbox.counts(INTEGRATION)
    assert counts["crm"]["delivered"] == 50
    assert counts["warehouse"] == {"pending": 50, "delivered": 0, "dead": 0, "discarded": 0}


def test_an_expired_lease_goes_to_another_worker_and_the_first_ones_marks_are_ignored(
        store: Store, tmp_path: Path) -> None:
    path = make_destination(tmp_path / "crm.db")
    store.outbox.add(INTEGRATION, [change("c1", "1", "Ann")])
    [held] = store.outbox.lease(INTEGRATION, "crm", "w1", lease_seconds=2)  # w1 then "dies"
    assert store.outbox.lease(INTEGRATION, "crm", "w2") == []
    time.sleep(2.1)

    w2 = Deliverer(store, INTEGRATION, {"crm": sqlite_target(path)}, worker="w2")
    assert w2.deliver_once("crm") == DeliveryStats(delivered=1)
    assert store.outbox.delivered([held.id], "w1") == 0
    assert store.outbox.retry(held.id, "w1", "late", dt.timedelta(0)) is False
    assert store.outbox.dead(held.id, "w1", "late") is False
    final = store.outbox.get(held.id)
    assert final is not None
    assert (final.status, final.attempts, final.lease_owner, final.last_error) == (
        DeliveryStatus.DELIVERED, 1, None, None)
    assert final.delivered_at is not None


def test_a_lease_taken_over_before_the_first_worker_marks_ignores_its_marks(store: Store) -> None:
    store.outbox.add(INTEGRATION, [change("c1", "1")])
    [held] = store.outbox.lease(INTEGRATION, "crm", "w1", lease_seconds=0.0)
    [again] = store.outbox.lease(INTEGRATION, "crm", "w2", lease_seconds=60)
    assert again.id == held.id and again.lease_owner == "w2"
    assert store.outbox.dead(held.id, "w1", "too late") is False
    assert store.outbox.retry(again.id, "w2", "busy", dt.timedelta(seconds=30)) is True
    retried = store.outbox.get(held.id)
    assert retried is not None and retried.last_error == "busy" and retried.lease_owner is None


def test_a_redelivery_after_a_crash_changes_nothing(store: Store, tmp_path: Path) -> None:
    path = make_destination(tmp_path / "crm.db")
    store.outbox.add(INTEGRATION, [change("c1", "1", "Ann"), change("c2", "1", "Bob")])
    crm = sqlite_target(path)
    leased = store.outbox.lease(INTEGRATION, "crm", "w1", lease_seconds=0.2)
    # w1 writes the batch, then dies before marking it
    outcomes = crm.connector.write("contacts", [dict(d.payload or {}) for d in leased],
                                   Operation.UPSERT, "id")
    assert [o.status.value for o in outcomes] == ["created", "created"]
    written = rows(path)
    time.sleep(0.3)

    assert Deliverer(store, INTEGRATION, {"crm": crm}).deliver_once("crm") == DeliveryStats(delivered=2)
    assert rows(path) == written
    again = crm.connector.write("contacts", [dict(d.payload or {}) for d in leased],
                                Operation.UPSERT, "id")
    assert [o.status.value for o in again] == ["unchanged", "unchanged"]


def test_upserts_and_deletes_are_written_in_lease_order(store: Store, tmp_path: Path) -> None:
    path = make_destination(tmp_path / "crm.db")
    with sqlite3.connect(path) as db:
        db.executemany("INSERT INTO contacts (id, name) VALUES (?, ?)", [("c1", "a"), ("c2", "b")])
    store.outbox.add(INTEGRATION, [
        change("c3", "1", "Cy"),
        NewDelivery("crm", "c1", "2", "delete", None),
        NewDelivery("crm", "c2", "2", "delete", {"id": "c2"}),
        change("c4", "1", "Di"),
        NewDelivery("crm", "c9", "1", "delete"),  # not there: skipped, an idempotent no-op
    ])
    deliverer = Deliverer(store, INTEGRATION, {"crm": sqlite_target(path)})
    assert deliverer.drain("crm") == DeliveryStats(delivered=5)
    assert set(rows(path)) == {"c3", "c4"}


def test_sqlite_leases_never_overlap(tmp_path: Path) -> None:
    stores = [Store.open(directory=tmp_path / "state") for _ in range(2)]
    stores[0].outbox.add(INTEGRATION, [change(f"c{i}", "1") for i in range(300)])
    leased: list[list[int]] = [[] for _ in range(4)]
    marked = [0] * 4
    start = threading.Barrier(4)

    def work(n: int) -> None:
        store = stores[n % 2]
        start.wait()
        while batch := store.outbox.lease(INTEGRATION, "crm", f"w{n}", limit=7):
            leased[n] += [d.id for d in batch]
            marked[n] += store.outbox.delivered([d.id for d in batch], f"w{n}")

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    try:
        every = [id for ids in leased for id in ids]
        assert len(every) == len(set(every)) == sum(marked) == 300
        assert stores[0].outbox.counts(INTEGRATION)["crm"]["delivered"] == 300
    finally:
        for store in stores:
            store.close()


# -- purge -----------------------------------------------------------------------------------------


def test_purge_forgets_old_deliveries_and_discarded_letters_but_never_work_to_do(
        store: Store, tmp_path: Path) -> None:
    path = make_destination(tmp_path / "crm.db")
    store.outbox.add(INTEGRATION, [change("c1", "1"), change("c2", "1", account="A9"),
                                change("c3", "1", account="A9"), change("c4", "1")])
    store.outbox.add("other", [change("x1", "1")])
    deliverer = Deliverer(store, INTEGRATION, {"crm": sqlite_target(path)})
    assert deliverer.deliver_once("crm", limit=3) == DeliveryStats(delivered=1, dead=2)
    letters = store.outbox.dead_letters(INTEGRATION)
    store.outbox.discard([letters[0].id])
    Deliverer(store, "other", {"crm": sqlite_target(path)}).deliver_once("crm")

    assert store.outbox.purge(dt.timedelta(hours=1)) == 0, "nothing is that old yet"
    time.sleep(0.05)
    assert store.outbox.purge(dt.timedelta(seconds=0.01), INTEGRATION) == 2
    assert store.outbox.counts(INTEGRATION) == {
        "crm": {"pending": 1, "delivered": 0, "dead": 1, "discarded": 0}}
    assert store.outbox.counts("other")["crm"]["delivered"] == 1, "another integration's are kept"
    # the dead letter still blocks nothing else and can be replayed
    assert store.outbox.replay([letters[1].id]) == 1


def test_outbox_purge_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from patchbay.cli import app

    store = Store.open(directory=tmp_path / ".patchbay")
    path = make_destination(tmp_path / "crm.db")
    store.outbox.add(INTEGRATION, [change("c1", "1"), change("c2", "1")])
    Deliverer(store, INTEGRATION, {"crm": sqlite_target(path)}).deliver_once("crm")
    store.close()
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    kept = runner.invoke(app, ["outbox", "purge"])
    assert kept.exit_code == 0 and "0 deliveries purged" in kept.output
    time.sleep(0.05)
    purged = runner.invoke(app, ["outbox", "purge", "--older-than", "0.01s"])
    assert purged.exit_code == 0 and "2 deliveries purged" in purged.output
    wrong = runner.invoke(app, ["outbox", "purge", "--older-than", "soon"])
    assert wrong.exit_code != 0 and "not a duration" in wrong.output


def test_a_large_add_is_written_whole_in_several_statements(store: Store) -> None:
    added = store.outbox.add(INTEGRATION, [change(f"k{n}", "1") for n in range(2_500)])
    assert added == 2_500
    assert store.outbox.counts(INTEGRATION)["crm"]["pending"] == 2_500
    leased = store.outbox.lease(INTEGRATION, "crm", "w", limit=3_000)
    assert sorted(d.record_key for d in leased) == sorted(f"k{n}" for n in range(2_500))
    assert {d.payload["version"] for d in leased if d.payload} == {"1"}


def test_a_delivery_is_done_when_written_or_skipped_and_only_then() -> None:
    """The deliverer and a sync's write at once mark a delivery done by the same rule."""
    assert {s for s in Status if s.is_delivered} == {
        Status.CREATED, Status.UPDATED, Status.UNCHANGED, Status.DELETED, Status.SKIPPED}
