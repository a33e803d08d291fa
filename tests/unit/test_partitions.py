"""Splitting a run into key ranges, and the ranges' leases, on a real SQLite source and state.

The ranges of a run must hold every record of its scope exactly once (whatever the split
saw), and a range's lease must fence out a holder whose lease was taken over.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from patchbay import scope as scopes
from patchbay.connectors.base import even_cuts
from patchbay.connectors.sql.connector import SqlConnector
from patchbay.elements.capture import Comparison
from patchbay.errors import LeaseLost
from patchbay.patterns.partitioned import ranges_between, within
from patchbay.spec import SystemSpec
from patchbay.store import Store

ROWS = 1_000


@pytest.fixture
def source(tmp_path: Path) -> Iterator[SqlConnector]:
    path = tmp_path / "source.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, code TEXT UNIQUE, city TEXT)")
        db.executemany("INSERT INTO people VALUES (?, ?, ?)",
                       ((i, f"c{i * 7919 % 10007:05d}", ("Berlin", "Paris")[i % 2])
                        for i in range(1, ROWS + 1)))
    connector = SqlConnector(SystemSpec(name="legacy", url=f"sqlite:///{path}"))
    yield connector
    connector.close()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = Store.open(directory=tmp_path / "state")
    yield opened
    opened.close()


def keys_per_range(source: SqlConnector, key: str, scope: scopes.BoundScope | None,
                   cuts: list[object]) -> list[list[object]]:
    """The keys each range of `cuts` reads, through the connector's own scoped read."""
    return [[r[key] for page in source.read("people", within(scope, key, low, high), key=key,
                                            fields=[key]) for r in page.records]
            for low, high in ranges_between(cuts)]


def test_integers_are_cut_evenly_between_the_lowest_and_highest_key() -> None:
    assert even_cuts(1, 100, 4) == [26, 51, 76]
    assert even_cuts(1, 3, 4) == [2, 3]  # fewer integers than ranges: no empty range
    assert even_cuts(5, 5, 4) == []
    assert even_cuts(None, None, 4) == [] and even_cuts(1, 100, 1) == []


def test_ranges_are_unbounded_at_both_ends() -> None:
    assert ranges_between([]) == [(None, None)]
    assert ranges_between([10, 20]) == [(None, 10), (10, 20), (20, None)]


def test_an_integer_key_splits_into_ranges_holding_every_record_once(
        source: SqlConnector) -> None:
    cuts = source.boundaries("people", None, "id", 4)
    assert cuts == [251, 501, 751]
    ranges = keys_per_range(source, "id", None, cuts)
    assert [len(r) for r in ranges] == [250, 250, 250, 250]
    assert sorted(k for r in ranges for k in r) == list(range(1, ROWS + 1))


def test_a_text_key_splits_at_its_quantiles(source: SqlConnector) -> None:
    cuts = source.boundaries("people", None, "code", 4)
    assert len(cuts) == 3 and cuts == sorted(cuts)
    ranges = keys_per_range(source, "code", None, cuts)
    assert [len(r) for r in ranges] == [250, 250, 250, 250]
    every = [k for r in ranges for k in r]
    assert len(every) == len(set(every)) == ROWS


def test_the_split_sees_only_the_scope(source: SqlConnector) -> None:
    paris = scopes.Condition("city", "eq", "Paris")
    high = scopes.Condition("id", "lte", 400)
    scope = scopes.Group("and", (paris, high))
    cuts = source.boundaries("people", scope, "id", 2)
    assert cuts == [200]  # Paris is the odd ids: 1..399, split between the scope's ends
    ranges = keys_per_range(source, "id", scope, cuts)
    assert ranges == [list(range(1, 200, 2)), list(range(201, 400, 2))]
    cuts = source.boundaries("people", scope, "code", 2)
    ranges = keys_per_range(source, "code", scope, cuts)
    assert [len(r) for r in ranges] == [100, 100]


def test_an_empty_scope_is_one_range_that_reads_nothing(source: SqlConnector) -> None:
    nobody = scopes.Condition("city", "eq", "Osaka")
    for key in ("id", "code"):
        cuts = source.boundaries("people", nobody, key, 4)
        assert cuts == []
        assert keys_per_range(source, key, nobody, cuts) == [[]]


def test_a_lease_is_taken_over_once_it_expires_and_fences_out_its_old_holder(
        store: Store) -> None:
    run = store.runs.start("people", "migration", {})
    assert store.ranges.split(run.id, ranges_between([100]))
    assert not store.ranges.split(run.id, ranges_between([5, 6])), "a run is split once"
    first = store.ranges.lease(run.id, 0.2)
    second = store.ranges.lease(run.id, 30)
    assert first is not None and second is not None and (first.number, second.number) == (0, 1)
    assert store.ranges.lease(run.id, 30) is None, "both ranges are held"
    store.ranges.checkpoint(first, position=40, batches=1, counters={"read": 40},
                            comparison={}, high_water=None, seconds=0.2)
    time.sleep(0.3)
    taken = store.ranges.lease(run.id, 30)
    assert taken is not None and taken.number == 0 and taken.token == first.token + 1
    assert taken.position == 40 and taken.takeovers == 1 and taken.resumed == 1, \
        "taken over from its checkpoint"
    stale = re.escape(f"key range 0 of run {run.id} was taken over by another worker")
    with pytest.raises(LeaseLost, match=stale):
        store.ranges.checkpoint(first, position=80, batches=2, counters={"read": 80},
                                comparison={}, high_water=None, seconds=30)
    with pytest.raises(LeaseLost, match=stale):
        store.ranges.done(first)
    assert store.ranges.runs_open(["people"]) == [run.id]
    store.ranges.done(taken)
    store.ranges.done(second)
    assert [r.status for r in store.ranges.of(run.id)] == ["done", "done"]
    assert store.ranges.of(run.id)[0].position == 40
    assert store.ranges.runs_open(["people"]) == []


def test_comparisons_of_ranges_add_up_to_the_comparison_of_the_whole() -> None:
    records = [{"id": i, "name": f"p{i}"} for i in range(1, 101)]
    held = {r["id"]: dict(r) for r in records}
    held[7]["name"] = "changed"
    whole = Comparison("id", ["id", "name"], 5)
    parts = [Comparison("id", ["id", "name"], 5) for _ in range(2)]
    for start in range(0, 100, 25):
        batch = records[start:start + 25]
        whole.add(batch, held)
        parts[start // 50].add(batch, held)
    combined = Comparison.combined(parts, "id", ["id", "name"], 5)
    assert combined.summary() == whole.summary()
    assert combined.differing == 1 and combined.compared == 100
