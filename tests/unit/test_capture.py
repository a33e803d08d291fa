"""Results capture: comparing the destination with the desired records, and the verdict."""

from __future__ import annotations

import datetime as dt
import json
from decimal import Decimal
from typing import Any

import pytest

from patchbay.elements.capture import (
    VERDICT_COMPLETE,
    VERDICT_INCOMPLETE,
    VERDICT_WITH_REJECTS,
    Comparison,
    build_report,
)
from patchbay.spec import IntegrationSpec, loads

FIELDS = ["id", "name", "amount"]


def records(*rows: tuple[Any, ...]) -> list[dict[str, Any]]:
    return [dict(zip(FIELDS, row, strict=True)) for row in rows]


def by_key(rows: list[dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    return {r["id"]: dict(r) for r in rows}


def checksums(comparison: Comparison) -> dict[str, tuple[str, str, bool]]:
    fields = comparison.summary()["fields"]
    return {n: (f["source_checksum"], f["destination_checksum"], f["match"])
            for n, f in fields.items()}


BATCH_1 = records((1, "Alpha", 100), (2, "Beta", 250), (3, "Gamma", None))
BATCH_2 = records((4, "Delta", 75), (5, "Alpha", 100))


def test_equal_data_matches_with_equal_checksums() -> None:
    comparison = Comparison("id", FIELDS)
    comparison.add(BATCH_1, by_key(BATCH_1))
    comparison.add(BATCH_2, by_key(BATCH_2))
    assert (comparison.compared, comparison.matching, comparison.differing,
            comparison.missing) == (5, 5, 0, 0)
    assert comparison.agrees
    for name, (source, destination, match) in checksums(comparison).items():
        assert source == destination and match, name
        assert source != "0" * 16
        assert comparison.tallies[name].differing == 0
    assert comparison.samples == []


def test_values_equal_across_types_match() -> None:
    desired = [{"id": 1, "amount": Decimal("10.50"), "day": dt.date(2024, 1, 31), "n": ""}]
    actual = {1: {"id": 1, "amount": 10.5, "day": "2024-01-31", "n": None}}
    comparison = Comparison("id", ["id", "amount", "day", "n"])
    comparison.add(desired, actual)
    assert comparison.agrees and comparison.matching == 1
    assert all(match for _, _, match in checksums(comparison).values())


def test_one_differing_value_is_counted_and_changes_the_checksum() -> None:
    comparison = Comparison("id", FIELDS)
    actual = by_key(BATCH_1)
    actual[2]["amount"] = 251
    comparison.add(BATCH_1, actual)
    assert (comparison.compared, comparison.matching, comparison.differing) == (3, 2, 1)
    assert not comparison.agrees
    assert comparison.tallies["amount"].differing == 1
    assert comparison.tallies["name"].differing == 0
    sums = checksums(comparison)
    assert sums["amount"][0] != sums["amount"][1] and not sums["amount"][2]
    assert sums["name"][0] == sums["name"][1] and sums["name"][2]
    assert comparison.samples == [{"key": 2, "field": "amount", "expected": 250, "actual": 251}]


def test_a_record_differing_in_two_fields_counts_once() -> None:
    comparison = Comparison("id", FIELDS)
    actual = by_key(BATCH_1)
    actual[1].update(name="ALPHA", amount=1)
    comparison.add(BATCH_1, actual)
    assert (comparison.matching, comparison.differing) == (2, 1)
    assert comparison.tallies["name"].differing == 1
    assert comparison.tallies["amount"].differing == 1
    assert len(comparison.samples) == 1


def test_missing_records_are_counted_and_sampled() -> None:
    comparison = Comparison("id", FIELDS)
    actual = by_key(BATCH_1)
    del actual[3]
    comparison.add(BATCH_1, actual)
    assert (comparison.compared, comparison.matching, comparison.differing,
            comparison.missing) == (3, 2, 0, 1)
    assert not comparison.agrees
    assert comparison.samples == [{"key": 3, "problem": "missing in destination"}]
    comparison.add(BATCH_2, {})
    assert (comparison.compared, comparison.missing) == (5, 3)


def test_samples_are_limited() -> None:
    comparison = Comparison("id", FIELDS, sample_size=2)
    comparison.add(BATCH_1, {k: {**r, "name": "x"} for k, r in by_key(BATCH_1).items()})
    comparison.add(BATCH_2, {})
    assert comparison.differing == 3 and comparison.missing == 2
    assert len(comparison.samples) == 2


def test_checksums_catch_a_difference_across_batches_that_repeat_values() -> None:
    """The same column values in two batches must not cancel out (as XOR would)."""
    batch = records((1, "Same", 1), (2, "Same", 1))
    again = records((3, "Same", 1), (4, "Same", 1))
    equal = Comparison("id", FIELDS)
    equal.add(batch, by_key(batch))
    equal.add(again, by_key(again))
    differs = Comparison("id", FIELDS)
    differs.add(batch, by_key(batch))
    changed = by_key(again)
    changed[4]["name"] = "Other"
    differs.add(again, changed)

    assert checksums(equal)["name"][0] == checksums(differs)["name"][0]
    assert checksums(equal)["name"][0] == checksums(equal)["name"][1]
    assert checksums(differs)["name"][0] != checksums(differs)["name"][1]
    assert not checksums(differs)["name"][2]
    assert differs.tallies["name"].differing == 1
    assert checksums(differs)["amount"][2]


def test_identical_batches_do_not_cancel_out() -> None:
    batch = records((1, "Same", 1))
    twice = Comparison("id", FIELDS)
    twice.add(batch, by_key(batch))
    twice.add(batch, by_key(batch))
    once = Comparison("id", FIELDS)
    once.add(batch, by_key(batch))
    assert checksums(twice)["name"][0] != "0" * 16
    assert checksums(twice)["name"][0] != checksums(once)["name"][0]


def test_values_swapped_between_batches_change_the_checksum() -> None:
    comparison = Comparison("id", FIELDS)
    comparison.add(records((1, "A", 1)), {1: {"id": 1, "name": "B", "amount": 1}})
    comparison.add(records((2, "B", 1)), {2: {"id": 2, "name": "A", "amount": 1}})
    assert comparison.tallies["name"].differing == 2
    assert not checksums(comparison)["name"][2]


def test_state_round_trip_continues_identically() -> None:
    actual = by_key(BATCH_1) | by_key(BATCH_2)
    actual[5]["name"] = "Omega"
    del actual[3]

    straight = Comparison("id", FIELDS, sample_size=5)
    straight.add(BATCH_1, actual)
    straight.add(BATCH_2, actual)

    first = Comparison("id", FIELDS, sample_size=5)
    first.add(BATCH_1, actual)
    state = json.loads(json.dumps(first.state()))
    resumed = Comparison.from_state(state)
    assert resumed.state() == first.state()
    resumed.add(BATCH_2, actual)

    assert resumed.summary() == straight.summary()
    assert resumed.state() == straight.state()
    assert (resumed.compared, resumed.matching, resumed.differing, resumed.missing) == (5, 3, 1, 1)


def test_summary_shape() -> None:
    comparison = Comparison("id", FIELDS)
    comparison.add(BATCH_1, by_key(BATCH_1))
    summary = comparison.summary()
    assert summary["key"] == "id"
    assert (summary["compared"], summary["matching"], summary["differing"],
            summary["missing_in_destination"]) == (3, 3, 0, 0)
    assert list(summary["fields"]) == FIELDS
    assert all(len(f["source_checksum"]) == 16 for f in summary["fields"].values())


# -- the report ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def integration() -> IntegrationSpec:
    text = """\
systems:
  legacy: sqlite:///legacy.db
  warehouse: sqlite:///wh.db
integrations:
  - name: Legacy to warehouse - Account - migration
    pattern: migration
    source: {system: legacy, object: accounts, key: id}
    destination: {system: warehouse, object: accounts, key: legacy_id}
"""
    return loads(text, environ={}).integration(None)


def agreeing(n: int = 3) -> Comparison:
    comparison = Comparison("id", FIELDS)
    rows = records(*((i, f"n{i}", i) for i in range(n)))
    comparison.add(rows, by_key(rows))
    return comparison


def differing() -> Comparison:
    comparison = Comparison("id", FIELDS)
    rows = records((1, "a", 1), (2, "b", 2), (3, "c", 3))
    actual = by_key(rows)
    actual[1]["name"] = "z"
    del actual[2]
    comparison.add(rows, actual)
    return comparison


def report(integration: IntegrationSpec, counters: dict[str, int],
           comparison: Comparison | None = None, source_in_scope: int | None = 3,
           verify: str = "full") -> dict[str, Any]:
    return build_report(integration=integration, run_id="run-1",
                        params={"since": dt.date(2024, 1, 1), "__internal": 1},
                        started_at=dt.datetime(2024, 1, 1, 12, 0), counters=counters,
                        comparison=comparison or agreeing(), source_in_scope=source_in_scope,
                        verify=verify).to_json()


def test_verdict_complete(integration: IntegrationSpec) -> None:
    result = report(integration, {"read": 3, "created": 2, "updated": 1})
    assert result["verdict"] == VERDICT_COMPLETE == "complete"
    assert result["verdict_reasons"] == []
    assert result["counts"] == {"read": 3, "written": 3, "created": 2, "updated": 1,
                                "unchanged": 0, "deleted": 0, "rejected": 0, "skipped": 0,
                                "failed": 0}
    assert result["integration"] == "Legacy to warehouse - Account - migration"
    assert result["pattern"] == "migration"
    assert result["run"] == "run-1"
    assert result["params"] == {"since": "2024-01-01"}
    assert result["source"] == {"system": "legacy", "object": "accounts", "in_scope": 3}
    assert result["destination"] == {"system": "warehouse", "object": "accounts",
                                     "operation": "upsert", "key": "legacy_id"}
    assert result["started_at"] == "2024-01-01T12:00:00+00:00"
    assert result["comparison"]["matching"] == 3
    json.dumps(result)


def test_verdict_complete_with_rejects(integration: IntegrationSpec) -> None:
    result = report(integration, {"read": 3, "created": 2, "rejected": 1})
    assert result["verdict"] == VERDICT_WITH_REJECTS == "complete_with_rejects"
    assert result["verdict_reasons"] == []


def test_skipped_records_do_not_spoil_the_verdict(integration: IntegrationSpec) -> None:
    result = report(integration, {"read": 3, "created": 2, "skipped": 1})
    assert result["verdict"] == VERDICT_COMPLETE


def test_incomplete_when_records_failed(integration: IntegrationSpec) -> None:
    result = report(integration, {"read": 3, "created": 2, "failed": 1, "rejected": 1})
    assert result["verdict"] == VERDICT_INCOMPLETE == "incomplete"
    assert result["verdict_reasons"] == ["1 records failed to write"]


def test_incomplete_when_counts_do_not_match(integration: IntegrationSpec) -> None:
    result = report(integration, {"read": 3, "created": 3}, source_in_scope=4)
    assert result["verdict"] == VERDICT_INCOMPLETE
    (reason,) = result["verdict_reasons"]
    assert "holds 4 records in scope but 3 were read" in reason


def test_unknown_source_count_is_not_a_mismatch(integration: IntegrationSpec) -> None:
    result = report(integration, {"read": 3, "created": 3}, source_in_scope=None)
    assert result["verdict"] == VERDICT_COMPLETE
    assert result["source"]["in_scope"] is None


def test_incomplete_when_the_destination_differs(integration: IntegrationSpec) -> None:
    result = report(integration, {"read": 3, "created": 3}, comparison=differing())
    assert result["verdict"] == VERDICT_INCOMPLETE
    assert result["verdict_reasons"] == [
        "1 written records are missing in the destination",
        "1 records differ from the source",
    ]
    assert result["comparison"]["fields"]["name"]["match"] is False


def test_every_reason_is_given(integration: IntegrationSpec) -> None:
    result = report(integration, {"read": 3, "created": 3, "failed": 2}, comparison=differing(),
                    source_in_scope=5)
    assert result["verdict"] == VERDICT_INCOMPLETE
    assert len(result["verdict_reasons"]) == 4


def test_differences_are_ignored_when_only_counts_are_verified(
        integration: IntegrationSpec) -> None:
    result = report(integration, {"read": 3, "created": 3}, comparison=differing(),
                    verify="counts")
    assert result["verdict"] == VERDICT_COMPLETE
    assert result["comparison"] is None
    assert result["verification"] == "counts"
    assert report(integration, {"read": 3, "created": 2}, source_in_scope=2,
                  verify="counts")["verdict"] == VERDICT_INCOMPLETE
