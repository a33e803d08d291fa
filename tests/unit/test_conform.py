"""Conform: converting values to a destination's types, and rejecting what it would refuse."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from patchbay.elements.conform import Conformer, Problem, converter
from patchbay.errors import CoercionError
from patchbay.model import FieldSchema, FieldType, ObjectSchema

SCHEMA = ObjectSchema("accounts", {f.name: f for f in (
    FieldSchema("legacy_id", FieldType.STRING, nullable=False, max_length=10),
    FieldSchema("id", FieldType.INTEGER, nullable=False, has_default=True),
    FieldSchema("name", FieldType.STRING, nullable=False, max_length=5),
    FieldSchema("employees", FieldType.INTEGER),
    FieldSchema("revenue", FieldType.DECIMAL),
    FieldSchema("score", FieldType.NUMBER),
    FieldSchema("active", FieldType.BOOLEAN),
    FieldSchema("opened", FieldType.DATE),
    FieldSchema("updated", FieldType.DATETIME),
    FieldSchema("status", FieldType.STRING, choices=("Active", "Inactive")),
    FieldSchema("extra", FieldType.JSON),
)}, key="legacy_id")

FIELDS = ["legacy_id", "name", "employees", "revenue", "score", "active", "opened", "updated",
          "status", "extra", "not_in_schema"]


def good(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "legacy_id": "A-1", "name": "Alpha", "employees": 12, "revenue": Decimal("10.50"),
        "score": 1.5, "active": True, "opened": dt.date(2024, 1, 31),
        "updated": dt.datetime(2024, 1, 31, 10, 0), "status": "Active", "extra": {"a": [1]},
        "not_in_schema": object(),
    }
    record.update(changes)
    return record


@pytest.fixture
def conformer() -> Conformer:
    return Conformer(SCHEMA, FIELDS)


def test_a_record_in_shape_is_untouched(conformer: Conformer) -> None:
    record = good()
    before = dict(record)
    assert conformer.conform(record) is None
    assert record == before
    assert all(record[k] is before[k] for k in record)


def test_values_are_converted_in_place(conformer: Conformer) -> None:
    record = good(legacy_id=7, employees="1_200", revenue="19.99", score="2", active="no",
                  opened="2024-02-29", updated="2024-02-29T08:30:00", extra='{"x": 1}')
    assert conformer.conform(record) is None
    assert record["legacy_id"] == "7"
    assert record["employees"] == 1200 and type(record["employees"]) is int
    assert record["revenue"] == Decimal("19.99")
    assert record["score"] == 2.0 and isinstance(record["score"], float)
    assert record["active"] is False
    assert record["opened"] == dt.date(2024, 2, 29)
    assert record["updated"] == dt.datetime(2024, 2, 29, 8, 30)
    assert record["extra"] == '{"x": 1}'  # json fields are passed as they are


def test_datetime_into_a_date_field_and_date_into_datetime(conformer: Conformer) -> None:
    record = good(opened=dt.datetime(2024, 1, 31, 23, 0), updated=dt.date(2024, 1, 31))
    assert conformer.conform(record) is None
    assert record["opened"] == dt.date(2024, 1, 31) and type(record["opened"]) is dt.date
    assert record["updated"] == dt.datetime(2024, 1, 31, 0, 0)


def test_required_value_missing(conformer: Conformer) -> None:
    assert conformer.conform(good(name=None)) == Problem("REQUIRED_FIELD_MISSING",
                                                         "name is required")
    record = good()
    del record["legacy_id"]
    problem = conformer.conform(record)
    assert problem is not None and problem.code == "REQUIRED_FIELD_MISSING"
    assert "legacy_id" in problem.reason


def test_an_update_may_leave_a_required_field_out_but_not_empty_it() -> None:
    conformer = Conformer(SCHEMA, list(SCHEMA.fields), creates=False)
    assert conformer.conform({"legacy_id": "A-1", "employees": 3}) is None
    assert conformer.conform({"legacy_id": "A-1", "name": None}) == Problem(
        "REQUIRED_FIELD_MISSING", "name is required")
    creating = Conformer(SCHEMA, list(SCHEMA.fields))
    assert creating.conform({"legacy_id": "A-1", "employees": 3}) == Problem(
        "REQUIRED_FIELD_MISSING", "name is required")


def test_optional_value_missing_is_fine(conformer: Conformer) -> None:
    assert conformer.conform(good(employees=None, status=None, opened="")) is None


def test_required_field_not_mapped_rejects_every_record() -> None:
    conformer = Conformer(SCHEMA, ["legacy_id", "employees"])
    assert conformer.missing_required == ["name"]
    problem = conformer.conform({"legacy_id": "A", "employees": 1})
    assert problem == Problem("REQUIRED_FIELD_MISSING", "required field(s) not mapped: name")


def test_an_update_carrying_only_what_changed_is_checked_on_what_it_carries() -> None:
    """A sync's update holds the changed fields only: a required field it leaves out is not
    missing, and a field converted in another record of the batch is not added to it."""
    conformer = Conformer(SCHEMA, list(SCHEMA.fields), creates=False)
    records: list[dict[str, Any]] = [{"legacy_id": "A-1", "employees": "12"},
                                     {"legacy_id": "A-2", "status": "Inactive"},
                                     {"legacy_id": "A-3", "name": None}]
    problems = conformer.conform_batch(records)
    assert problems == {2: Problem("REQUIRED_FIELD_MISSING", "name is required")}
    assert records[:2] == [{"legacy_id": "A-1", "employees": 12},
                           {"legacy_id": "A-2", "status": "Inactive"}]


def test_string_too_long(conformer: Conformer) -> None:
    problem = conformer.conform(good(name="Alpha Beta"))
    assert problem == Problem("STRING_TOO_LONG", "name: 10 characters, at most 5 allowed")
    assert conformer.conform(good(name="Alpha")) is None


def test_string_too_long_after_conversion(conformer: Conformer) -> None:
    problem = conformer.conform(good(legacy_id=12345678901))
    assert problem is not None and problem.code == "STRING_TOO_LONG"


@pytest.mark.parametrize(("field", "value"), [
    ("employees", "approx 50"), ("employees", "12.5"), ("employees", "NaN"),
    ("employees", "Infinity"), ("employees", float("nan")), ("revenue", "ten"),
    ("score", "high"), ("active", "perhaps"), ("opened", "31.01.2024"),
    ("updated", "yesterday"),
])
def test_invalid_type(conformer: Conformer, field: str, value: Any) -> None:
    problem = conformer.conform(good(**{field: value}))
    assert problem is not None
    assert problem.code == "INVALID_TYPE"
    assert problem.reason.startswith(f"{field}: ")


def test_invalid_picklist(conformer: Conformer) -> None:
    assert conformer.conform(good(status="Dormant")) == Problem(
        "INVALID_PICKLIST", "status: 'Dormant' is not an allowed value")
    assert conformer.conform(good(status="Inactive")) is None


def test_fields_missing_from_the_schema_are_ignored() -> None:
    conformer = Conformer(SCHEMA, ["legacy_id", "name", "whatever"])
    assert conformer.conform({"legacy_id": "A", "name": "B", "whatever": object()}) is None


# -- converter ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "raw", "expected"), [
    (FieldType.INTEGER, "42", 42), (FieldType.INTEGER, " 42 ", 42),
    (FieldType.INTEGER, "42.0", 42), (FieldType.INTEGER, 42.0, 42),
    (FieldType.INTEGER, Decimal("3"), 3), (FieldType.INTEGER, True, 1),
    (FieldType.NUMBER, "1.25", 1.25), (FieldType.NUMBER, Decimal("0.5"), 0.5),
    (FieldType.DECIMAL, "1.10", Decimal("1.10")), (FieldType.DECIMAL, 0.1, Decimal("0.1")),
    (FieldType.BOOLEAN, "Y", True), (FieldType.BOOLEAN, "off", False),
    (FieldType.BOOLEAN, 0, False),
    (FieldType.DATE, "2024-01-31", dt.date(2024, 1, 31)),
    (FieldType.DATE, "2024-01-31T10:00:00Z", dt.date(2024, 1, 31)),
    (FieldType.DATETIME, "2024-01-31T10:00:00Z",
     dt.datetime(2024, 1, 31, 10, tzinfo=dt.UTC)),
    (FieldType.STRING, 5, "5"), (FieldType.STRING, dt.date(2024, 1, 31), "2024-01-31"),
    (FieldType.STRING, dt.datetime(2024, 1, 31, 10), "2024-01-31 10:00:00"),
    (FieldType.STRING, {"a": 1}, '{"a": 1}'), (FieldType.STRING, "", ""),
    (FieldType.JSON, [1], [1]),
])
def test_converter(kind: FieldType, raw: Any, expected: Any) -> None:
    value = converter(kind)(raw)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize("kind", [k for k in FieldType if k is not FieldType.STRING])
def test_empty_text_and_none_become_none(kind: FieldType) -> None:
    convert = converter(kind)
    assert convert(None) is None
    assert convert("  ") is None


def test_converter_with_formats() -> None:
    convert = converter(FieldType.DATE, ["%d.%m.%Y"])
    assert convert("31.01.2024") == dt.date(2024, 1, 31)
    with pytest.raises(CoercionError, match="is not a valid date"):
        convert("31/01/2024")


@pytest.mark.parametrize(("kind", "raw", "problem"), [
    (FieldType.INTEGER, "1.5", "is not a whole number"), (FieldType.INTEGER, 2.5, "is not a whole number"),
    (FieldType.INTEGER, "x", "is not an integer"), (FieldType.INTEGER, Decimal("NaN"), "is not an integer"),
    (FieldType.INTEGER, float("inf"), "is not an integer"), (FieldType.NUMBER, "x", "is not a number"),
    (FieldType.DECIMAL, "1,5", "is not a decimal number"), (FieldType.BOOLEAN, "2", "is not a boolean"),
    (FieldType.JSON, "{not json", "is not JSON"),
])
def test_converter_errors_are_coercion_errors(kind: FieldType, raw: Any, problem: str) -> None:
    with pytest.raises(CoercionError, match=f" {problem}$"):
        converter(kind)(raw)
