"""The shared shape of a sync (and of a correlation): one participant's record as shared
values, and shared values as that participant's record.

Values of different systems compare as the shared field's type says (`canonical`), so
100.0 from Salesforce and 100.00 from a numeric column are one value, and an empty string
is null (Salesforce keeps no empty text): a difference of representation is never a change.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from patchbay.spec.sync import FieldMapSpec, ParticipantObjectSpec, SharedFieldSpec


def canonical(value: Any, kind: str = "auto") -> Any:
    """`value` as the shared shape holds it (JSON): what two systems' values are compared by."""
    if value is None or (isinstance(value, str) and value == "" and kind in ("auto", "text")):
        return None
    if kind == "text":
        return value if isinstance(value, str) else str(canonical(value))
    if kind == "boolean" or (kind == "auto" and isinstance(value, bool)):
        if isinstance(value, str):
            return value.strip().lower() in ("true", "1", "yes")
        return bool(value)
    if kind in ("number", "integer") or (kind == "auto" and isinstance(value, (int, float, Decimal))):
        return _number(value, kind)
    if kind == "datetime" or (kind == "auto" and isinstance(value, dt.datetime)):
        return _datetime(value)
    if kind == "date" or (kind == "auto" and isinstance(value, dt.date)):
        return _date(value)
    return value if isinstance(value, str) else str(value)


def _number(value: Any, kind: str) -> Any:
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation:
        return str(value)
    if kind == "integer" or number == number.to_integral_value():
        return int(number)
    return format(number.normalize(), "f")


def _datetime(value: Any) -> Any:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    if not isinstance(value, dt.datetime):
        return str(value)
    aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    # Salesforce keeps milliseconds: finer digits would differ on every round trip.
    utc = aware.astimezone(dt.UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _date(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)[:10]


@dataclass(frozen=True)
class Shape:
    """One participant's mapping of one shared object, both ways."""

    held: ParticipantObjectSpec
    fields: Mapping[str, SharedFieldSpec]

    def to_shared(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """The shared values a participant's record holds (fields it maps `in` or both)."""
        shared: dict[str, Any] = {}
        for name, mapping in self.held.fields.items():
            if mapping.direction == "out" or mapping.field not in record:
                continue
            value = record[mapping.field]
            if mapping.values is not None and value is not None:
                value = mapping.values.get(str(value), value)
            shared[name] = canonical(value, self.fields[name].type)
        return shared

    def from_shared(self, shared: Mapping[str, Any]) -> dict[str, Any]:
        """A participant's record fields for shared values (fields it maps `out` or both)."""
        record: dict[str, Any] = {}
        for name, value in shared.items():
            mapping = self.held.fields.get(name)
            if mapping is None or mapping.direction == "in":
                continue
            record[mapping.field] = _inverse(mapping, value)
        return record

    def writes(self, name: str) -> bool:
        """Whether shared field `name` is written to this participant."""
        mapping = self.held.fields.get(name)
        return mapping is not None and mapping.direction != "in"

    def reads(self, name: str) -> bool:
        mapping = self.held.fields.get(name)
        return mapping is not None and mapping.direction != "out"

    def read_fields(self) -> list[str]:
        """The participant's fields a change must carry: its key, external id and mapped fields."""
        names = [self.held.key, *([self.held.external_id] if self.held.external_id else []),
                 *(m.field for m in self.held.fields.values() if m.direction != "out")]
        if self.held.watermark:
            names.append(self.held.watermark)
        return list(dict.fromkeys(names))


def _inverse(mapping: FieldMapSpec, value: Any) -> Any:
    if mapping.values is None or value is None:
        return value
    for theirs, shared in mapping.values.items():
        if canonical(shared) == value:
            return theirs
    return value
