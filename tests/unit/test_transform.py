"""Transform: what source records become, and which are set aside and why."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import pytest

from patchbay.elements.transform import Transform, TransformResult
from patchbay.errors import SpecError
from patchbay.spec import Lookup, TransformSpec


def transform(spec: dict[str, Any], params: Mapping[str, Any] | None = None,
              resolve: Any = None) -> Transform:
    return Transform(TransformSpec.model_validate(spec), params, resolve)


def run(spec: dict[str, Any], batch: list[dict[str, Any]],
        params: Mapping[str, Any] | None = None) -> TransformResult:
    return transform(spec, params).apply(batch)


def one(spec: dict[str, Any], record: dict[str, Any],
        params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    result = run(spec, [record], params)
    assert not result.rejected, result.rejected
    (out,) = result.records
    return out


# -- renames ------------------------------------------------------------------------------------


def test_plain_renames_take_the_fast_path() -> None:
    t = transform({"fields": {"legacy_id": {"from": "acct_id", "trim": False},
                              "Name": {"from": "acct_name", "trim": False},
                              "Country": {"from": "country", "trim": False}}})
    assert t.output_fields == ["legacy_id", "Name", "Country"]
    assert t._steps == [] and len(t._renames) == 3
    source = {"acct_id": 7, "acct_name": " Alpha ", "country": "DE", "other": 1}
    result = t.apply([source])
    assert result.records == [{"legacy_id": 7, "Name": " Alpha ", "Country": "DE"}]
    assert result.sources == [source]
    assert result.sources[0] is source
    assert result.rejected == [] and result.skipped == []


def test_a_single_rename() -> None:
    assert one({"fields": {"Name": {"from": "n", "trim": False}}}, {"n": "x", "y": 1}) == \
        {"Name": "x"}


def test_missing_source_fields_become_null() -> None:
    spec = {"fields": {"A": {"from": "a", "trim": False}, "B": {"from": "b", "trim": False}}}
    result = run(spec, [{"a": 1, "b": 2}, {"a": 3}, {}])
    assert result.records == [{"A": 1, "B": 2}, {"A": 3, "B": None}, {"A": None, "B": None}]
    assert one({"fields": {"C": {"from": "c", "type": "integer"}}}, {}) == {"C": None}


def test_mapping_without_from_reads_the_field_of_the_same_name() -> None:
    assert one({"fields": {"amount": {"type": "integer"}}}, {"amount": "5"}) == {"amount": 5}


def test_source_fields_lists_what_the_transform_reads() -> None:
    t = transform({"fields": {"A": "a", "B": {"expr": "b + c"}, "C": {"value": 1},
                              "amount": {"type": "integer"}},
                   "skip_if": "deleted"})
    assert t.source_fields == {"a", "b", "c", "amount", "deleted"}
    assert transform({"keep_unmapped": True, "fields": {"A": "a"}}).source_fields is None
    assert transform({}).source_fields is None


# -- constants, maps, defaults ------------------------------------------------------------------


def test_constants_and_param_constants() -> None:
    spec = {"fields": {"Source": {"value": "legacy"}, "Region": {"value": {"param": "region"}},
                       "Nothing": {"value": None}, "Count": {"value": 3}}}
    assert one(spec, {"x": 1}, {"region": "emea"}) == {
        "Source": "legacy", "Region": "emea", "Nothing": None, "Count": 3}


VALUE_MAP = {"A": "Active", "I": "Inactive", "1": "One"}


@pytest.mark.parametrize(("unmapped", "expected"), [("keep", "X"), ("null", None)])
def test_value_map_unmapped_keep_and_null(unmapped: str, expected: Any) -> None:
    spec = {"fields": {"Status": {"from": "s", "map": VALUE_MAP, "unmapped": unmapped}}}
    result = run(spec, [{"s": "A"}, {"s": "I"}, {"s": "X"}, {"s": None}, {"s": 1}])
    assert [r["Status"] for r in result.records] == ["Active", "Inactive", expected, None, "One"]


def test_value_map_unmapped_reject() -> None:
    spec = {"fields": {"Status": {"from": "s", "map": VALUE_MAP, "unmapped": "reject"}}}
    result = run(spec, [{"s": "A"}, {"s": "X"}, {"s": "I"}])
    assert [r["Status"] for r in result.records] == ["Active", "Inactive"]
    (rejected,) = result.rejected
    assert (rejected.index, rejected.code, rejected.source) == (1, "UNMAPPED_VALUE", {"s": "X"})
    assert "'X' is not in the value map" in rejected.reason
    assert "Status" in rejected.reason


def test_value_map_applies_after_trim() -> None:
    spec = {"fields": {"Status": {"from": "s", "map": VALUE_MAP, "unmapped": "reject",
                                  "trim": True}}}
    assert one(spec, {"s": " I "}) == {"Status": "Inactive"}


def test_defaults_apply_on_null_and_empty_string() -> None:
    spec = {"fields": {"Country": {"from": "c", "default": "DE"}}}
    result = run(spec, [{"c": None}, {"c": ""}, {}, {"c": "AT"}, {"c": 0}])
    assert [r["Country"] for r in result.records] == ["DE", "DE", "DE", "AT", 0]


def test_default_applies_after_trim_to_blank_text() -> None:
    spec = {"fields": {"Country": {"from": "c", "default": "DE", "trim": True}}}
    assert one(spec, {"c": "   "}) == {"Country": "DE"}


def test_trim() -> None:
    trimmed = {"fields": {"Name": {"from": "n", "trim": True}}}
    kept = {"fields": {"Name": {"from": "n", "trim": False, "type": "string"}}}
    assert one(trimmed, {"n": "  Alpha \t"}) == {"Name": "Alpha"}
    assert one(trimmed, {"n": 5}) == {"Name": 5}
    assert one(kept, {"n": "  Alpha "}) == {"Name": "  Alpha "}


# -- types --------------------------------------------------------------------------------------


def test_type_coercion() -> None:
    spec = {"fields": {
        "n": {"from": "n", "type": "integer"},
        "f": {"from": "f", "type": "number"},
        "d": {"from": "d", "type": "decimal"},
        "b": {"from": "b", "type": "boolean"},
        "day": {"from": "day", "type": "date"},
        "at": {"from": "at", "type": "datetime"},
        "s": {"from": "s", "type": "string"},
    }}
    out = one(spec, {"n": "42", "f": "1.5", "d": "19.99", "b": "yes", "day": "2024-01-31",
                     "at": "2024-01-31T10:15:00", "s": 12})
    assert out == {"n": 42, "f": 1.5, "d": Decimal("19.99"), "b": True,
                   "day": dt.date(2024, 1, 31), "at": dt.datetime(2024, 1, 31, 10, 15), "s": "12"}
    assert type(out["n"]) is int


def test_invalid_type_rejects_with_code() -> None:
    spec = {"fields": {"id": {"from": "id", "trim": False},
                       "employees": {"from": "emp", "type": "integer"}}}
    result = run(spec, [{"id": 1, "emp": "42"}, {"id": 2, "emp": "approx 50"},
                        {"id": 3, "emp": "12.5"}, {"id": 4, "emp": ""}])
    assert result.records == [{"id": 1, "employees": 42}, {"id": 4, "employees": None}]
    assert [(r.index, r.code) for r in result.rejected] == [
        (1, "INVALID_TYPE"), (2, "INVALID_TYPE")]
    assert result.rejected[0].reason.startswith("employees: ")
    assert "'approx 50'" in result.rejected[0].reason


def test_dates_with_formats() -> None:
    spec = {"fields": {"opened": {"from": "o", "type": "date",
                                  "formats": ["%d.%m.%Y", "%m/%d/%Y"]}}}
    result = run(spec, [{"o": "31.01.2024"}, {"o": "02/29/2024"}, {"o": "2024-03-01"},
                        {"o": "31/31/2024"}])
    assert [r["opened"] for r in result.records] == [
        dt.date(2024, 1, 31), dt.date(2024, 2, 29), dt.date(2024, 3, 1)]
    assert [(r.index, r.code) for r in result.rejected] == [(3, "INVALID_TYPE")]


def test_datetime_with_format() -> None:
    spec = {"fields": {"at": {"from": "at", "type": "datetime", "formats": ["%d.%m.%Y %H:%M"]}}}
    assert one(spec, {"at": "31.01.2024 10:15"}) == {"at": dt.datetime(2024, 1, 31, 10, 15)}


def test_required() -> None:
    spec = {"fields": {"Name": {"from": "n", "required": True, "trim": True}}}
    result = run(spec, [{"n": "A"}, {"n": None}, {"n": "  "}, {}])
    assert result.records == [{"Name": "A"}]
    assert [(r.index, r.code) for r in result.rejected] == [
        (1, "REQUIRED_FIELD_MISSING"), (2, "REQUIRED_FIELD_MISSING"),
        (3, "REQUIRED_FIELD_MISSING")]
    assert result.rejected[0].reason == "Name is required but empty"


def test_required_is_satisfied_by_a_default() -> None:
    spec = {"fields": {"Name": {"from": "n", "required": True, "default": "unknown"}}}
    assert one(spec, {"n": None}) == {"Name": "unknown"}


# -- expressions --------------------------------------------------------------------------------


def test_expressions() -> None:
    spec = {"fields": {
        "Full": {"expr": "concat(first, ' ', last)"},
        "Plus": {"expr": "first + ' ' + last"},
        "Upper": {"expr": "upper(country)"},
        "Phone": {"expr": "coalesce(mobile, phone, 'none')"},
        "Size": {"expr": "'big' if employees > 100 else 'small'"},
        "Region": {"expr": "params.region"},
        "Label": {"expr": "lower(last) + '-' + params.region"},
        "Gross": {"expr": "round(amount * 1.19, 2)"},
    }}
    record = {"first": "Ada", "last": "Lovelace", "country": "gb", "mobile": None,
              "phone": "0123", "employees": 250, "amount": 100}
    assert one(spec, record, {"region": "emea"}) == {
        "Full": "Ada Lovelace", "Plus": "Ada Lovelace", "Upper": "GB", "Phone": "0123",
        "Size": "big", "Region": "emea", "Label": "lovelace-emea", "Gross": 119.0}


def test_expression_result_is_coerced() -> None:
    spec = {"fields": {"n": {"expr": "concat(a, b)", "type": "integer"}}}
    assert one(spec, {"a": "4", "b": "2"}) == {"n": 42}


def test_a_failing_expression_rejects_only_that_record() -> None:
    spec = {"fields": {"id": {"from": "id", "trim": False}, "n": {"expr": "int(x) * 2"}}}
    result = run(spec, [{"id": 1, "x": "2"}, {"id": 2, "x": "two"}, {"id": 3, "x": "5"}])
    assert result.records == [{"id": 1, "n": 4}, {"id": 3, "n": 10}]
    assert [r["id"] for r in result.sources] == [1, 3]
    (rejected,) = result.rejected
    assert (rejected.index, rejected.code) == (1, "TRANSFORM_FAILED")
    assert rejected.reason.startswith("ValueError")


def test_forbidden_expression_fails_when_the_transform_is_built() -> None:
    with pytest.raises(SpecError, match="unknown function"):
        transform({"fields": {"x": {"expr": "__import__('os').system('true')"}}})
    with pytest.raises(SpecError, match=r"only params\.<name> may use a dot"):
        transform({"skip_if": "().__class__"})


# -- skip_if and keep_unmapped ------------------------------------------------------------------


def test_skip_if_counts_skipped_records() -> None:
    spec = {"fields": {"id": "id"}, "skip_if": "status == 'deleted' or params.cutoff > id"}
    batch = [{"id": 1, "status": "active"}, {"id": 5, "status": "deleted"},
             {"id": 6, "status": "active"}]
    result = transform(spec, {"cutoff": 2}).apply(batch)
    assert result.records == [{"id": 6}]
    assert [(s.index, s.code) for s in result.skipped] == [(0, "SKIPPED"), (1, "SKIPPED")]
    assert result.skipped[1].source is batch[1]
    assert "skip_if" in result.skipped[0].reason
    assert result.rejected == []


def test_keep_unmapped_passes_other_fields_through() -> None:
    spec = {"keep_unmapped": True, "fields": {
        "Name": {"from": "acct_name", "trim": False},
        "Country": {"from": "country", "trim": True},
        "Source": {"value": "legacy"},
    }}
    source = {"acct_id": 1, "acct_name": "Alpha", "country": " DE ", "extra": [1]}
    out = one(spec, source)
    assert out["Name"] == "Alpha"
    assert out["Country"] == "DE"
    assert out["Source"] == "legacy"
    assert out["acct_id"] == 1 and out["extra"] == [1]
    assert source["country"] == " DE "


def test_no_fields_passes_everything_through() -> None:
    source = {"a": 1, "b": " x "}
    result = run({}, [source])
    assert result.records == [source] and result.records[0] is not source


def test_without_keep_unmapped_other_fields_are_dropped() -> None:
    assert one({"fields": {"Name": "n"}}, {"n": "x", "other": 1}) == {"Name": "x"}


# -- lookups ------------------------------------------------------------------------------------


class Resolver:
    def __init__(self, table: dict[Any, Any]) -> None:
        self.table = table
        self.calls: list[tuple[Lookup, set[Any]]] = []

    def __call__(self, lookup: Lookup, values: set[Any]) -> Mapping[Any, Any]:
        self.calls.append((lookup, set(values)))
        return {v: self.table[v] for v in values if v in self.table}


def lookup_spec(on_missing: str = "reject", required: bool = False) -> dict[str, Any]:
    return {"fields": {
        "id": {"from": "id", "trim": False},
        "ParentId": {"required": required, "lookup": {
            "system": "warehouse", "object": "accounts", "key": "legacy_id",
            "value": "parent", "returns": "id", "on_missing": on_missing}},
    }}


BATCH: list[dict[str, Any]] = [
    {"id": 1, "parent": "P1"}, {"id": 2, "parent": "P2"}, {"id": 3, "parent": "P1"},
    {"id": 4, "parent": None}, {"id": 5, "parent": "P9"}, {"id": 6, "parent": ""}]


def test_lookups_are_resolved_once_per_batch() -> None:
    resolver = Resolver({"P1": "001A", "P2": "001B"})
    t = transform(lookup_spec(on_missing="null"), resolve=resolver)
    result = t.apply(BATCH)
    assert len(resolver.calls) == 1
    lookup, values = resolver.calls[0]
    assert values == {"P1", "P2", "P9"}
    assert (lookup.object, lookup.key, lookup.returns) == ("accounts", "legacy_id", "id")
    assert [r["ParentId"] for r in result.records] == ["001A", "001B", "001A", None, None, None]
    t.apply(BATCH[:2])
    assert len(resolver.calls) == 2


def test_lookup_on_missing_reject() -> None:
    resolver = Resolver({"P1": "001A", "P2": "001B"})
    result = transform(lookup_spec(), resolve=resolver).apply(BATCH)
    assert [r["id"] for r in result.records] == [1, 2, 3, 4, 6]
    (rejected,) = result.rejected
    assert (rejected.index, rejected.code) == (4, "LOOKUP_FAILED")
    assert "'P9'" in rejected.reason and "warehouse" in rejected.reason


def test_required_lookup_with_empty_value_is_rejected() -> None:
    resolver = Resolver({"P1": "001A"})
    result = transform(lookup_spec(on_missing="null", required=True), resolve=resolver).apply(
        [{"id": 1, "parent": "P1"}, {"id": 2, "parent": None}])
    assert [r["id"] for r in result.records] == [1]
    assert [(r.index, r.code) for r in result.rejected] == [(1, "REQUIRED_FIELD_MISSING")]


def test_lookup_with_nothing_to_look_up_does_not_call_the_resolver() -> None:
    resolver = Resolver({})
    result = transform(lookup_spec(), resolve=resolver).apply([{"id": 1, "parent": None}])
    assert resolver.calls == []
    assert result.records == [{"id": 1, "ParentId": None}]


def test_lookups_need_a_resolver() -> None:
    with pytest.raises(ValueError, match="resolver"):
        transform(lookup_spec())


def test_output_and_source_fields_with_a_lookup() -> None:
    t = transform(lookup_spec(), resolve=Resolver({}))
    assert t.output_fields == ["id", "ParentId"]
    assert t.source_fields == {"id", "parent"}
