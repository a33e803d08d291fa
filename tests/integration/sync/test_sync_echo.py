"""Echoes between two SQLite systems, noticed and delivered step by step with the real
`Sync`: patchbay writes as the same connection (user) a person edits with, so only values
tell its own writes from theirs.

- a hand edit of a field patchbay wrote is a change, synced to the other system, whether it
  is made after the write's echo was seen or before (the write landed, its echo not read yet)
- writing back the value patchbay wrote is no change: nothing is sent, no conflict
- two syncs of the same two tables (each with its own external-id column) settle: their
  writes are each other's changes, yet after convergence a round delivers nothing
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from patchbay import run_integration
from patchbay.patterns.sync import LANDED_MARGIN, Sync
from patchbay.runtime.runner import Invocation
from patchbay.runtime.serving import deliverer_of, outbox_round
from patchbay.store import Store, open_state

NAME = "people - sync"
DDL = """CREATE TABLE people (id INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT, name TEXT,
         city TEXT, patchbay_id TEXT UNIQUE, other_id TEXT UNIQUE, seq INTEGER);
         CREATE TABLE clock (n INTEGER); INSERT INTO clock VALUES (0);
         CREATE TRIGGER people_created AFTER INSERT ON people BEGIN UPDATE clock SET n = n + 1;
           UPDATE people SET seq = (SELECT n FROM clock) WHERE id = NEW.id; END;
         CREATE TRIGGER people_changed AFTER UPDATE OF email, name, city, patchbay_id, other_id
           ON people BEGIN UPDATE clock SET n = n + 1;
           UPDATE people SET seq = (SELECT n FROM clock) WHERE id = NEW.id; END;"""


def integration(name: str, external_id: str, conflicts: str) -> str:
    held = (f"{{object: people, key: id, external_id: {external_id}, watermark: seq, "
            f"fields: [email, name, city]}}")
    return f"""
  - name: {name}
    pattern: sync
    conflicts: {conflicts}
    trigger: {{poll_seconds: 0.2, overlap_seconds: 0}}
    deletes: {{check_seconds: null}}
    participants:
      - {{name: a, system: a}}
      - {{name: b, system: b}}
    objects:
      - name: person
        match: [email]
        fields: [email, name, city]
        participants:
          a: {held}
          b: {held}
"""


def write_spec(here: Path, *integrations: str) -> Path:
    path = here / "sync.yaml"
    path.write_text(f"systems:\n  a: sqlite:///{here / 'a.db'}\n  b: sqlite:///{here / 'b.db'}\n"
                    f"integrations:{''.join(integrations)}")
    return path


def execute(path: Path, sql: str, params: tuple[Any, ...] = ()) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute(sql, params)


def people(path: Path) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute("SELECT email, name, city FROM people ORDER BY email").fetchall()


@pytest.fixture
def here(tmp_path: Path) -> Path:
    for system in ("a", "b"):
        with sqlite3.connect(tmp_path / f"{system}.db") as conn:
            conn.executescript(DDL)
    execute(tmp_path / "a.db", "INSERT INTO people (email, name, city) VALUES "
            "('ada@example.com', 'Ada', 'London'), ('bob@example.com', 'Bob', 'Paris')")
    return tmp_path


@pytest.fixture(params=["latest", "priority"])
def sync(request: pytest.FixtureRequest, here: Path) -> Iterator[Sync]:
    """A sync whose first rounds made the two systems equal. Under priority `a` wins
    conflicts: `b`'s edits below must still count, since they come after patchbay's write."""
    path = write_spec(here, integration(NAME, "patchbay_id", request.param))
    ctx = Invocation.load(path, NAME, {}).context(*open_state(here / "state"))
    try:
        made = Sync(ctx)
        settle(made)
        yield made
    finally:
        ctx.systems.close()


def settle(sync: Sync) -> int:
    """Rounds until one notices and delivers nothing; how many deliveries were made."""
    delivered = 0
    for _ in range(10):
        report = outbox_round(sync)
        delivered += report.delivered
        if not report.changes and not report.delivered:
            return delivered
    raise AssertionError("the sync did not settle in ten rounds")


def test_a_hand_edit_after_the_echo_was_seen_is_synced(sync: Sync, here: Path) -> None:
    execute(here / "a.db", "UPDATE people SET name = 'Ada L.' WHERE email = 'ada@example.com'")
    settle(sync)
    assert people(here / "b.db")[0][1] == "Ada L."
    execute(here / "b.db", "UPDATE people SET name = 'Ada Lovelace' "
            "WHERE email = 'ada@example.com'")
    settle(sync)
    assert people(here / "a.db") == people(here / "b.db")
    assert people(here / "a.db")[0][1] == "Ada Lovelace"
    assert sync.store.conflicts.list(NAME) == []


def test_a_hand_edit_before_the_echo_was_read_is_synced(sync: Sync, here: Path) -> None:
    execute(here / "a.db", "UPDATE people SET name = 'Ada L.' WHERE email = 'ada@example.com'")
    sync.poll()
    deliverer_of(sync).drain("b/person")  # the write lands in b; its echo is not read yet
    assert people(here / "b.db")[0][1] == "Ada L."
    time.sleep(LANDED_MARGIN.total_seconds())  # a person's edit comes after the write landed
    execute(here / "b.db", "UPDATE people SET name = 'Ada Lovelace' "
            "WHERE email = 'ada@example.com'")
    settle(sync)
    assert people(here / "a.db") == people(here / "b.db")
    assert people(here / "a.db")[0][1] == "Ada Lovelace"
    assert sync.store.conflicts.list(NAME) == []


@pytest.mark.parametrize("echo_read", [True, False])
def test_writing_back_the_value_patchbay_wrote_is_no_change(sync: Sync, here: Path,
                                                            echo_read: bool) -> None:
    execute(here / "a.db", "UPDATE people SET city = 'Rome' WHERE email = 'bob@example.com'")
    if echo_read:
        settle(sync)
    else:
        sync.poll()
        deliverer_of(sync).drain("b/person")
    execute(here / "b.db", "UPDATE people SET city = 'Rome' WHERE email = 'bob@example.com'")
    before = sync.tally.take()
    sync.poll()
    noticed = sync.tally.take()
    assert noticed.get("b", {}).get("edits", 0) == 0, (before, noticed)
    assert settle(sync) == 0
    assert people(here / "a.db") == people(here / "b.db")
    assert sync.store.conflicts.list(NAME) == []


def test_two_syncs_of_the_same_records_do_not_ping_pong(here: Path) -> None:
    path = write_spec(here, integration("first - sync", "patchbay_id", "latest"),
                      integration("second - sync", "other_id", "priority"))
    state = here / "state"

    def rounds() -> int:
        return sum(run_integration(path, name, state=state)["delivered"]
                   for name in ("first - sync", "second - sync"))

    rounds()
    rounds()
    execute(here / "a.db", "UPDATE people SET name = 'Ada L.' WHERE email = 'ada@example.com'")
    execute(here / "b.db", "UPDATE people SET city = 'Lyon' WHERE email = 'bob@example.com'")
    execute(here / "b.db", "INSERT INTO people (email, name, city) VALUES "
            "('cy@example.com', 'Cy', 'Oslo')")
    for _ in range(4):
        if not rounds():
            break
    assert rounds() == 0
    assert rounds() == 0
    assert people(here / "a.db") == people(here / "b.db") == [
        ("ada@example.com", "Ada L.", "London"), ("bob@example.com", "Bob", "Lyon"),
        ("cy@example.com", "Cy", "Oslo")]
    store = Store.open(directory=state)
    assert store.conflicts.list("first - sync") == store.conflicts.list("second - sync") == []
