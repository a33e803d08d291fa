"""Type coercion, and conforming records to what a destination object accepts.

Conforming before a write turns a record the destination would refuse into a clear reject
(REQUIRED_FIELD_MISSING, STRING_TOO_LONG, INVALID_TYPE, INVALID_PICKLIST) instead of a
failed batch, and gives every system the same values to compare in the report.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from patchbay.model import PYTHON_TYPES, FieldType, ObjectSchema, Record

Converter = Callable[[Any], Any]


class CoercionError(ValueError):
    """A value cannot become the type asked for."""


_TRUE = frozenset({"true", "t", "yes", "y", "1", "on"})
_FALSE = frozenset({"false", "f", "no", "n", "0", "off"})


def _to_string(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=str)
    return str(value)


def _to_integer(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, float | Decimal):
        if value != int(value):
            raise CoercionError(f"{value!r} is not a whole number")
        return int(value)
    try:
        return int(str(value).strip().replace("_", ""))
    except ValueError:
        try:
            number = Decimal(str(value).strip())
        except InvalidOperation:
            raise CoercionError(f"{value!r} is not an integer") from None
        return _to_integer(number)


def _to_number(value: Any) -> Any:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise CoercionError(f"{value!r} is not a number") from None


def _to_decimal(value: Any) -> Any:
    try:
        return Decimal(str(value).strip())
    except InvalidOperation:
        raise CoercionError(f"{value!r} is not a decimal number") from None


def _to_boolean(value: Any) -> Any:
    if isinstance(value, int | float):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise CoercionError(f"{value!r} is not a boolean")


def _date_parser(formats: Sequence[str] | None, want_datetime: bool) -> Converter:
    def parse(value: Any) -> Any:
        if isinstance(value, dt.datetime):
            return value if want_datetime else value.date()
        if isinstance(value, dt.date):
            return dt.datetime.combine(value, dt.time()) if want_datetime else value
        text = str(value).strip()
        for fmt in formats or ():
            try:
                parsed = dt.datetime.strptime(text, fmt)
            except ValueError:
                continue
            return parsed if want_datetime else parsed.date()
        try:
            if want_datetime:
                return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
            if len(text) > 10:
                return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).date()
            return dt.date.fromisoformat(text)
        except ValueError:
            kind = "datetime" if want_datetime else "date"
            raise CoercionError(f"{value!r} is not a valid {kind}") from None
    return parse


def _to_json(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            raise CoercionError(f"{value!r} is not JSON") from None
    return value


def converter(kind: FieldType, formats: Sequence[str] | None = None) -> Converter:
    """A function turning a non-null value into `kind`, raising CoercionError when it cannot.

    Empty strings become None for every type but string.
    """
    base: Converter = {
        FieldType.STRING: _to_string,
        FieldType.INTEGER: _to_integer,
        FieldType.NUMBER: _to_number,
        FieldType.DECIMAL: _to_decimal,
        FieldType.BOOLEAN: _to_boolean,
        FieldType.JSON: _to_json,
    }.get(kind) or _date_parser(formats, kind is FieldType.DATETIME)
    accepted = PYTHON_TYPES[kind]
    if kind is FieldType.STRING:
        return lambda v: v if v is None or type(v) is str else base(v)
    exact = (dt.date,) if kind is FieldType.DATE else accepted
    no_bool = kind in (FieldType.INTEGER, FieldType.NUMBER, FieldType.DECIMAL)

    def convert(value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, exact) and not (no_bool and isinstance(value, bool)) and not (
                kind is FieldType.DATE and isinstance(value, dt.datetime)):
            return value
        if isinstance(value, str) and not value.strip():
            return None
        return base(value)
    return convert


@dataclass(frozen=True, slots=True)
class Problem:
    """Why one record cannot be written as it is."""

    code: str
    reason: str


class Conformer:
    """Checks and converts records to one destination object's schema, per batch.

    Only fields that need work get a step, so a record already in shape costs almost nothing.
    """

    def __init__(self, schema: ObjectSchema, fields: Sequence[str]) -> None:
        self.schema = schema
        self._steps: list[tuple[str, Converter | None, int | None, frozenset[str] | None, bool]] = []
        for name in fields:
            spec = schema.fields.get(name)
            if spec is None:
                continue
            self._steps.append((
                name,
                converter(spec.type) if spec.type is not FieldType.JSON else None,
                spec.max_length if spec.type is FieldType.STRING else None,
                frozenset(spec.choices) if spec.choices else None,
                spec.required,
            ))
        self.missing_required = [f.name for f in schema if f.required and f.name not in fields]

    def conform(self, record: Record) -> Problem | None:
        """Convert `record` in place; return the problem if it cannot be written."""
        if self.missing_required:
            return Problem("REQUIRED_FIELD_MISSING",
                           f"required field(s) not mapped: {', '.join(self.missing_required)}")
        for name, convert, max_length, choices, required in self._steps:
            value = record.get(name)
            if convert is not None and value is not None:
                try:
                    value = convert(value)
                except CoercionError as exc:
                    return Problem("INVALID_TYPE", f"{name}: {exc}")
                record[name] = value
            if value is None:
                if required:
                    return Problem("REQUIRED_FIELD_MISSING", f"{name} is required")
                continue
            if max_length is not None and len(value) > max_length:
                return Problem("STRING_TOO_LONG",
                               f"{name}: {len(value)} characters, at most {max_length} allowed")
            if choices is not None and value not in choices:
                return Problem("INVALID_PICKLIST", f"{name}: {value!r} is not an allowed value")
        return None
