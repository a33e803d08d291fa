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

from patchbay.errors import CoercionError
from patchbay.model import PYTHON_TYPES, FieldSchema, FieldType, ObjectSchema, Record

Converter = Callable[[Any], Any]


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
        try:
            whole = int(value)
        except (ValueError, OverflowError):  # NaN, Infinity
            raise CoercionError(f"{value!r} is not an integer") from None
        if value != whole:
            raise CoercionError(f"{value!r} is not a whole number")
        return whole
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
        if type(value) is str and not formats:
            try:
                parsed = dt.datetime.fromisoformat(value)
            except ValueError:
                pass
            else:
                return parsed if want_datetime else parsed.date()
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
    if kind is FieldType.JSON:
        exact = tuple(t for t in accepted if t is not str)  # JSON text is parsed
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


_BULK: dict[FieldType, Converter] = {
    FieldType.DATETIME: dt.datetime.fromisoformat,
    FieldType.DECIMAL: Decimal,
    FieldType.NUMBER: float,
}
"""Converters fast enough to try on a whole column first; any failure falls back to the
careful per-value path, which finds the bad values and says why."""


class Conformer:
    """Checks and converts records to one destination object's schema, a batch at a time.

    Work is done field by field over the batch, and only for fields that need it, so a
    batch already in shape costs a type check per value.
    """

    def __init__(self, schema: ObjectSchema, fields: Sequence[str], *, creates: bool = True) -> None:
        """`creates`: whether writes may create records (insert, upsert); an update or a
        delete of existing records needs no required field."""
        self.schema = schema
        self._steps: list[_FieldCheck] = []
        for name in fields:
            spec = schema.fields.get(name)
            if spec is not None:
                self._steps.append(_FieldCheck(spec, creates))
        self.missing_required = [f.name for f in schema
                                 if creates and f.required and f.name not in fields]

    def conform(self, record: Record) -> Problem | None:
        """Convert one record in place; return its problem if it cannot be written."""
        return self.conform_batch([record]).get(0)

    def conform_batch(self, records: Sequence[Record]) -> dict[int, Problem]:
        """Convert records in place; return the problem of each one that cannot be written."""
        if self.missing_required:
            problem = Problem("REQUIRED_FIELD_MISSING",
                              f"required field(s) not mapped: {', '.join(self.missing_required)}")
            return dict.fromkeys(range(len(records)), problem)
        problems: dict[int, Problem] = {}
        for step in self._steps:
            step.run(records, problems)
        return problems


    def conform_table(self, table: Any) -> Any:
        """The Arrow table converted to the destination's types, or None if any record
        needs the record lane (a value that does not convert, a null where one is required,
        a value too long or not among the choices)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        from patchbay.elements import columnar

        if self.missing_required:
            return None
        columns = {name: table[name] for name in table.column_names}
        for step in self._steps:
            if step.name not in columns:
                continue
            target = columnar.arrow_type(step.spec)
            if target is None:
                return None
            column = columnar.cast(columns[step.name], target)
            if column is None:
                return None
            if step.required and column.null_count:
                return None
            # No text has more characters than bytes: counting characters, which costs more,
            # is needed only when some text has more bytes than the limit.
            if step.max_length is not None and len(column) and (
                    pc.max(pc.binary_length(column)).as_py() or 0) > step.max_length and (
                    pc.max(pc.utf8_length(column)).as_py() or 0) > step.max_length:
                return None
            if step.choices is not None and not pc.all(pc.or_kleene(
                    pc.is_null(column), pc.is_in(column, pa.array(sorted(step.choices))))).as_py():
                return None
            columns[step.name] = column
        return pa.Table.from_arrays(list(columns.values()), names=list(columns))


class _FieldCheck:
    """Conversion and checks of one destination field."""

    def __init__(self, spec: FieldSchema, creates: bool = True) -> None:
        self.spec = spec
        self.creates = creates
        self.name = spec.name
        self.kind = spec.type
        self.convert = converter(spec.type) if spec.type is not FieldType.JSON else None
        self.accepted = tuple(t for t in PYTHON_TYPES[spec.type]
                              if not (t is int and spec.type is not FieldType.INTEGER
                                      and spec.type is not FieldType.JSON))
        self.max_length = spec.max_length if spec.type is FieldType.STRING else None
        self.choices = frozenset(spec.choices) if spec.choices else None
        self.required = spec.required
        self.clean_types = frozenset((*self.accepted, type(None)))

    def run(self, records: Sequence[Record], problems: dict[int, Problem]) -> None:
        name = self.name
        column = [r.get(name) for r in records]
        kinds = set(map(type, column))
        if self.convert is not None and not kinds <= self.clean_types:
            column = self._convert(records, column, problems)
        if self.required and type(None) in kinds | set(map(type, column)):
            for index, value in enumerate(column):
                # An update that leaves a field out keeps its value; only a create, or a null
                # written on purpose, leaves a required field empty.
                if value is None and (self.creates or name in records[index]):
                    problems.setdefault(index, Problem("REQUIRED_FIELD_MISSING", f"{name} is required"))
        if self.max_length is not None:
            limit = self.max_length
            if max(map(len, filter(None, column)), default=0) > limit:
                for index, value in enumerate(column):
                    if value is not None and len(value) > limit:
                        problems.setdefault(index, Problem(
                            "STRING_TOO_LONG",
                            f"{name}: {len(value)} characters, at most {limit} allowed"))
        if self.choices is not None:
            for index, value in enumerate(column):
                if value is not None and value not in self.choices:
                    problems.setdefault(index, Problem(
                        "INVALID_PICKLIST", f"{name}: {value!r} is not an allowed value"))

    def _convert(self, records: Sequence[Record], column: list[Any],
                 problems: dict[int, Problem]) -> list[Any]:
        """Convert the values not yet of the field's type; a value that cannot be is a problem."""
        name, accepted, convert = self.name, self.accepted, self.convert
        assert convert is not None
        bulk = _BULK.get(self.kind)
        if bulk is not None and set(map(type, column)) <= {str, type(None)}:
            try:
                converted = [None if v is None else bulk(v) for v in column]
            except (ValueError, TypeError, ArithmeticError):
                pass
            else:
                for record, value in zip(records, converted, strict=True):
                    record[name] = value
                return converted
        converted = list(column)
        for index, value in enumerate(column):
            if value is None or type(value) in accepted:
                continue
            try:
                value = convert(value)
            except CoercionError as exc:
                problems.setdefault(index, Problem("INVALID_TYPE", f"{name}: {exc}"))
                converted[index] = ""
                continue
            records[index][name] = value
            converted[index] = value
        return converted
