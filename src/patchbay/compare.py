"""Comparing values across systems, whose types differ (Decimal vs float, dates vs text)."""

from __future__ import annotations

import datetime as dt
import decimal
import json
from typing import Any

from patchbay.model import Record


def normalise(value: Any) -> Any:
    """A form that compares equal across systems' types."""
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float, decimal.Decimal)):
        number = decimal.Decimal(str(value))
        if number == number.to_integral_value():
            return int(number)
        return round(float(number), 9)
    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
        return value.isoformat(sep=" ")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, default=str)
    return value


def same_value(a: Any, b: Any) -> bool:
    return bool(a == b) or bool(normalise(a) == normalise(b))


def same_values(record: Record, current: Record) -> bool:
    """Whether writing `record` would change nothing in `current` (only the fields given)."""
    for name, value in record.items():
        held = current.get(name)
        if value != held and normalise(value) != normalise(held):
            return False
    return True


def differing_fields(record: Record, current: Record) -> list[str]:
    return [n for n, v in record.items() if not same_value(v, current.get(n))]
