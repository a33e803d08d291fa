"""The engine state as repositories under one unit of work, on a real SQLite state.

`store.transaction()` commits what its repositories write together or not at all; a failure
of the state is an error of patchbay's tree naming the state and the operation, never a raw
SQLAlchemy one. (The outbox's own rules are in test_outbox.py; a lost PostgreSQL connection
in tests/integration/test_outbox_postgres.py.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from patchbay.errors import EngineStateError, EngineStateUnavailable, RetriableError
from patchbay.store import Store, open_state, schema
from patchbay.store.runs import OutcomeRow

NAME = "legacy-accounts"
REFUSED = OutcomeRow("A1", "rejected", "INVALID_TYPE", "not a number", {"id": "A1"})


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(directory=tmp_path / "state")
    yield opened
    opened.close()


def test_a_checkpoint_and_its_set_aside_records_commit_together(store: Store) -> None:
    run = store.runs.start(NAME, "migration", {"country": "DE"})
    with store.transaction() as tx:
        tx.outcomes.add(run.id, 1, [REFUSED])
        tx.runs.checkpoint(run.id, batch=1, checkpoint={"position": 200}, counters={"read": 200})
    with pytest.raises(EngineStateError, match=(
            r"^the engine state failed: FOREIGN KEY constraint failed "
            r"\(state=sqlite:///\S+/state/state\.db, operation=outcomes\.add\)$")), \
            store.transaction() as tx:
        tx.runs.checkpoint(run.id, batch=2, checkpoint={"position": 400}, counters={"read": 400})
        tx.outcomes.add(run.id, 2, [REFUSED])
        tx.outcomes.add("no-such-run", 2, [REFUSED])  # refused by the foreign key
    after = store.runs.get(run.id)
    assert (after.batches, after.checkpoint, after.counters) == (1, {"position": 200}, {"read": 200})
    assert [(o["batch"], o["record_key"]) for o in store.outcomes.of(run.id)] == [(1, "A1")]


def test_a_run_taken_back_to_its_start_forgets_its_outcomes_in_the_same_unit(store: Store) -> None:
    run = store.runs.start(NAME, "migration", {})
    with store.transaction() as tx:
        tx.outcomes.add(run.id, 1, [REFUSED])
        tx.runs.checkpoint(run.id, batch=1, checkpoint={"position": 1}, counters={"read": 1})
    with store.transaction() as tx:
        tx.outcomes.forget(run.id)
        tx.runs.restart(run.id)
    after = store.runs.get(run.id)
    assert (after.batches, after.checkpoint, after.counters) == (0, None, {})
    assert store.outcomes.of(run.id) == []


def test_transactions_of_one_serial_name_run_one_at_a_time(store: Store) -> None:
    inside, release = threading.Event(), threading.Event()
    order: list[str] = []

    def first() -> None:
        with store.transaction(serial="push:contacts"):
            order.append("first in")
            inside.set()
            release.wait(10)
            order.append("first out")

    def second() -> None:
        with store.transaction(serial="push:contacts"):
            order.append("second in")

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    threads[0].start()
    assert inside.wait(10)
    threads[1].start()
    with store.transaction(serial="push:other"):
        order.append("other name")  # another name does not wait
    time.sleep(0.3)
    release.set()
    for thread in threads:
        thread.join(10)
    assert order == ["first in", "other name", "first out", "second in"]


def test_a_state_that_cannot_be_opened_is_a_retriable_engine_state_error(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "state.db").mkdir()  # a directory where the database file goes
    with pytest.raises(EngineStateUnavailable, match=(
            r"^the engine state failed: unable to open database file "
            r"\(state=sqlite:///\S+/state/state\.db, operation=migrate\)$")) as raised:
        Store.open(directory=tmp_path / "state")
    assert isinstance(raised.value, RetriableError)
    assert isinstance(raised.value.__cause__, sa.exc.OperationalError)


def test_every_entry_point_opens_the_state_the_same_way(tmp_path: Path) -> None:
    store, reports = open_state(str(tmp_path / "here"))
    try:
        assert reports == tmp_path / "here" / "runs"
        assert store.engine.url.database == str(tmp_path / "here" / "state.db")
    finally:
        store.close()
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    store, reports = open_state(url)
    try:
        assert reports == Path(".patchbay") / "runs"
        assert store.engine.url.database == str(tmp_path / "elsewhere.db")
    finally:
        store.close()


def test_a_state_of_a_newer_patchbay_is_refused_with_an_engine_state_error(tmp_path: Path) -> None:
    Store.open(directory=tmp_path).close()
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'state.db'}")
    with engine.begin() as conn:
        conn.execute(sa.update(schema.meta).values(value=str(schema.SCHEMA_VERSION + 1)))
    engine.dispose()
    with pytest.raises(EngineStateError, match=(
            rf"^the engine state has schema version {schema.SCHEMA_VERSION + 1}, newer than "
            rf"this patchbay knows \({schema.SCHEMA_VERSION}\); upgrade patchbay "
            r"\(operation=migrate\)$")):
        Store.open(directory=tmp_path)
