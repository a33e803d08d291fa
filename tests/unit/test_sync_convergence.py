"""The sync converges whatever order it observes and delivers concurrent edits in.

Three SQLite systems hold the same records (a first sync made them equal). Each system's
writer then makes its own edits (updates of fields the others also edit, and creates) before
the sync sees any of them: the edits are concurrent. Hypothesis draws a schedule for the real
`Sync`: notice one participant, deliver one participant's outbox, reset a participant's
cursor so that it reads its records again (a redelivery of changes already merged), in any
order; then rounds run until nothing is left. A write reaches a participant only after its
own edits were read (a write before would find them and be stale: that is the fault test's
and tests/integration/sync/test_sync_conditional.py's to show).

    priority, owner   the final state and the conflicts' losers (record, field, participant,
                      value) equal those of plain rounds in participant order (an owner
                      policy between two participants that do not own the field decides by
                      participant order, never by which change was seen first)
    latest            every system ends equal, and every value a writer left that is not the
                      final one was recorded as a conflict's loser
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from patchbay.patterns.sync import Sync
from patchbay.runtime.runner import Invocation
from patchbay.runtime.serving import deliverer_of, outbox_round
from patchbay.store import open_state

pytestmark = pytest.mark.slow

NAME = "records - sync"
SYSTEMS = ("a", "b", "c")
FIELDS = ("name", "tier")
RECORDS = 3
DDL = """CREATE TABLE rec (id INTEGER PRIMARY KEY AUTOINCREMENT, email TEXT, name TEXT,
         tier TEXT, patchbay_id TEXT UNIQUE, seq INTEGER);
         CREATE TABLE clock (n INTEGER); INSERT INTO clock VALUES (0);
         CREATE TRIGGER rec_created AFTER INSERT ON rec BEGIN UPDATE clock SET n = n + 1;
           UPDATE rec SET seq = (SELECT n FROM clock) WHERE id = NEW.id; END;
         CREATE TRIGGER rec_changed AFTER UPDATE OF email, name, tier, patchbay_id ON rec
           BEGIN UPDATE clock SET n = n + 1;
           UPDATE rec SET seq = (SELECT n FROM clock) WHERE id = NEW.id; END;"""
"""`seq` is the watermark: every write, patchbay's included, moves it (its writes come back
as changes, as the sync requires)."""

def spec(directory: Path, policy: str) -> Path:
    owners = {"email": "a", "name": "b", "tier": "c"}
    fields = "\n".join(
        f"          {name}: {{conflict: owner, owner: {owners[name]}}}" if policy == "owner"
        else f"          {name}: {{}}" for name in ("email", *FIELDS))
    participants = "\n".join(
        f"          {s}: {{object: rec, key: id, external_id: patchbay_id, watermark: seq, "
        f"fields: [email, name, tier]}}" for s in SYSTEMS)
    path = directory / "sync.yaml"
    path.write_text(f"""
systems:
{chr(10).join(f"  {s}: sqlite:///{directory / s}.db" for s in SYSTEMS)}
integrations:
  - name: {NAME}
    pattern: sync
    conflicts: {"latest" if policy == "owner" else policy}
    trigger: {{poll_seconds: 0.2, overlap_seconds: 0}}
    deletes: {{check_seconds: null}}
    options: {{batch_size: 2}}
    participants:
{chr(10).join(f"      - {{name: {s}, system: {s}}}" for s in SYSTEMS)}
    objects:
      - name: rec
        match: [email]
        fields:
{fields}
        participants:
{participants}
""")
    return path


@dataclass(frozen=True)
class Edit:
    """One writer's edit: set `field` of baseline record `record`, or create a record."""

    system: str
    record: int | None
    field: str
    value: str


def edits_of(system: str) -> st.SearchStrategy[list[Edit]]:
    update = st.builds(Edit, st.just(system), st.integers(0, RECORDS - 1),
                       st.sampled_from(FIELDS), st.sampled_from([f"{system}1", f"{system}2"]))
    create = st.builds(Edit, st.just(system), st.none(), st.just("email"),
                       st.integers(1, 3).map(lambda n: f"{system}-new{n}@example.com"))
    return st.lists(st.one_of(update, update, create), max_size=5)


steps = st.lists(st.tuples(st.sampled_from(["notice", "deliver", "reset"]),
                           st.sampled_from(SYSTEMS)), max_size=14)


@contextmanager
def synced(policy: str) -> Iterator[tuple[Path, Sync]]:
    """Three systems holding the same baseline records, and a sync over them."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for system in SYSTEMS:
            with sqlite3.connect(directory / f"{system}.db") as conn:
                conn.executescript(DDL)
        with sqlite3.connect(directory / "a.db") as conn:
            conn.executemany("INSERT INTO rec (email, name, tier) VALUES (?, ?, ?)",
                             [(f"r{i}@example.com", f"name{i}", "t0") for i in range(RECORDS)])
        invocation = Invocation.load(spec(directory, policy), NAME, {})
        ctx = invocation.context(*open_state(directory / "state"))
        try:
            sync = Sync(ctx)
            settle(sync)
            yield directory, sync
        finally:
            ctx.systems.close()


def settle(sync: Sync) -> None:
    """Rounds until one notices and delivers nothing."""
    for _ in range(10):
        report = outbox_round(sync)
        if not report.changes and not report.delivered:
            return
    raise AssertionError("the sync did not settle in ten rounds")


def apply(directory: Path, edits: list[Edit]) -> None:
    for edit in edits:
        with sqlite3.connect(directory / f"{edit.system}.db") as conn:
            if edit.record is None:
                conn.execute("INSERT INTO rec (email, name, tier) SELECT ?, ?, 't0' WHERE NOT "
                             "EXISTS (SELECT 1 FROM rec WHERE email = ?)",
                             (edit.value, edit.system, edit.value))
            else:
                conn.execute(f"UPDATE rec SET {edit.field} = ? WHERE email = ?",
                             (edit.value, f"r{edit.record}@example.com"))


def run(sync: Sync, schedule: list[tuple[str, str]]) -> None:
    """The schedule's steps, then rounds until settled. A participant is delivered to only
    once its own edits were read."""
    cursors = {s: sync.store.cursors.get(NAME, s, "rec") for s in SYSTEMS}
    deliverer = deliverer_of(sync)
    read: set[str] = set()
    for action, system in schedule:
        held = sync.held[("rec", system)]
        if action == "notice" or (action == "deliver" and system not in read):
            sync._notice(held, None)
            read.add(system)
        elif action == "deliver":
            deliverer.drain(held.destination)
        else:
            sync.store.cursors.set(NAME, system, "rec", cursors[system])
    settle(sync)


def state(directory: Path) -> dict[str, set[tuple[Any, ...]]]:
    found = {}
    for system in SYSTEMS:
        with sqlite3.connect(directory / f"{system}.db") as conn:
            found[system] = set(conn.execute("SELECT email, name, tier FROM rec"))
    return found


def losers(sync: Sync) -> set[tuple[str, str, str, Any]]:
    """(record's email, field, participant, value) of every value that lost a conflict.
    Which value it lost to may differ with the order (with three systems, the second
    observed may beat the first and lose to the third): the losers do not."""
    emails = {s.gid: s.shared.get("email") for s in sync.store.shadows.each(NAME, "rec")}
    found = set()
    for conflict in sync.store.conflicts.list(NAME, limit=10_000):
        assert conflict.kind == "field", conflict
        found.update((emails[conflict.gid], str(conflict.field), who, value)
                     for who, value in conflict.candidates.items() if who != conflict.winner)
    return found


def outcome(policy: str, edits: list[Edit], schedule: list[tuple[str, str]]
            ) -> tuple[dict[str, set[tuple[Any, ...]]], set[tuple[str, str, str, Any]]]:
    with synced(policy) as (directory, sync):
        apply(directory, edits)
        run(sync, schedule)
        return state(directory), losers(sync)


def concurrent_edits() -> st.SearchStrategy[list[Edit]]:
    return st.tuples(*(edits_of(s) for s in SYSTEMS)).map(lambda e: [x for s in e for x in s])


CHECK = settings(max_examples=15, deadline=None,
                 suppress_health_check=[HealthCheck.too_slow],
                 # No shrinking: a failing example of the open finding below would take
                 # minutes to shrink in every run of the suite.
                 phases=[Phase.explicit, Phase.reuse, Phase.generate])


@pytest.mark.parametrize("policy", ["priority", "owner"])
@CHECK
@given(edits=concurrent_edits(), schedule=steps)
def test_priority_and_owner_do_not_depend_on_the_order_of_observation(
        policy: str, edits: list[Edit], schedule: list[tuple[str, str]]) -> None:
    final, lost = outcome(policy, edits, schedule)
    reference, reference_lost = outcome(policy, edits, [])
    assert final["a"] == final["b"] == final["c"]
    assert final == reference
    assert lost == reference_lost


@CHECK
@given(edits=concurrent_edits(), schedule=steps)
def test_latest_converges_and_records_every_losing_value(
        edits: list[Edit], schedule: list[tuple[str, str]]) -> None:
    final, lost = outcome("latest", edits, schedule)
    assert final["a"] == final["b"] == final["c"]
    rows = {email: dict(zip(FIELDS, rest, strict=True)) for email, *rest in final["a"]}
    last: dict[tuple[str, int, str], str] = {}
    for edit in edits:
        if edit.record is not None:
            last[(edit.system, edit.record, edit.field)] = edit.value
    for (system, record, name), value in last.items():
        email = f"r{record}@example.com"
        assert rows[email][name] == value or (email, name, system, value) in lost, \
            (system, record, name, value, rows[email], lost)
    created = {e.value for e in edits if e.record is None}
    assert set(rows) == {f"r{i}@example.com" for i in range(RECORDS)} | created
