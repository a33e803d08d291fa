"""How field values are stored in the local org's SQLite tables, read from JSON and written
back in Salesforce's formats.

Storage: booleans and ints as INTEGER, double/currency/percent as REAL, dates as
'YYYY-MM-DD', datetimes as 'YYYY-MM-DDTHH:MM:SS.fffZ' (UTC, fixed width, so text order
is time order), everything else as TEXT.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from patchbay.localorg.schema import SField

_DATETIME_IN = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,6}))?(Z|[+-]\d{2}:?\d{2})?$")


class FieldValueError(ValueError):
    """A value that does not fit its field; `code` is the Salesforce error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse_datetime(text: str) -> dt.datetime | None:
    """A Salesforce datetime (`Z`, `±HH:MM` or `±HHMM`, optional fraction) as aware UTC."""
    match = _DATETIME_IN.match(text.strip())
    if match is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = match.groups()
    micro = int((fraction or "0").ljust(6, "0"))
    try:
        value = dt.datetime(int(year), int(month), int(day), int(hour), int(minute),
                            int(second), micro, tzinfo=dt.UTC)
    except ValueError:
        return None
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        try:
            value -= sign * dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
        except OverflowError:  # in UTC it falls before year 1 or after 9999
            return None
    return value


def stored_datetime(value: dt.datetime) -> str:
    value = value.astimezone(dt.UTC)
    return value.strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"


def output_datetime(stored: str) -> str:
    """'2024-01-02T03:04:05.000Z' as Salesforce writes it in JSON: '...000+0000'."""
    return stored[:-1] + "+0000"


def to_storage(field: SField, value: Any) -> Any:
    """A JSON value (or CSV text) for `field` as stored; raises FieldValueError when it does not fit."""
    if value is None:
        return None
    kind = field.type
    if kind == "boolean":
        if isinstance(value, bool):
            return int(value)
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return int(value.lower() in ("true", "1"))
        raise FieldValueError("JSON_PARSER_ERROR", f"Cannot deserialize instance of boolean from "
                                               f"value {value!r} for field {field.name}")
    if kind == "int":
        try:
            number = float(value) if isinstance(value, str) else value
            if isinstance(number, bool) or not isinstance(number, int | float) \
                    or number != int(number):
                raise TypeError
        except (TypeError, ValueError):
            raise FieldValueError("JSON_PARSER_ERROR", f"Cannot deserialize instance of int from "
                                                   f"value {value!r} for field {field.name}") from None
        if abs(int(number)) >= 10 ** max(field.precision or 9, 1):
            raise FieldValueError("NUMBER_OUTSIDE_VALID_RANGE",
                              f"{field.name}: value outside of valid range on numeric field")
        return int(number)
    if kind in ("double", "currency", "percent"):
        try:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        except (TypeError, ValueError):
            raise FieldValueError("JSON_PARSER_ERROR", f"Cannot deserialize instance of double from "
                                                   f"value {value!r} for field {field.name}") from None
    if kind == "date":
        text = str(value)[:10]
        try:
            return dt.date.fromisoformat(text).isoformat()
        except ValueError:
            raise FieldValueError("JSON_PARSER_ERROR", f"Cannot deserialize instance of date from "
                                                   f"value {value!r} for field {field.name}") from None
    if kind == "datetime":
        parsed = parse_datetime(str(value))
        if parsed is None:
            raise FieldValueError("JSON_PARSER_ERROR", f"Cannot deserialize instance of datetime "
                                                   f"from value {value!r} for field {field.name}")
        return stored_datetime(parsed)
    if not isinstance(value, str):
        if isinstance(value, bool | int | float):
            value = str(value).lower() if isinstance(value, bool) else str(value)
        else:
            raise FieldValueError("JSON_PARSER_ERROR", f"Cannot deserialize value {value!r} for "
                                                   f"field {field.name}")
    if field.length and len(value) > field.length:
        raise FieldValueError("STRING_TOO_LONG", f"{field.label or field.name}: data value too "
                                             f"large: {value[:40]} (max length={field.length})")
    return value


def from_storage(field: SField, stored: Any) -> Any:
    """A stored value as Salesforce's JSON shows it."""
    if stored is None:
        return None
    kind = field.type
    if kind == "boolean":
        return bool(stored)
    if kind == "int":
        return int(stored)
    if kind in ("double", "currency", "percent"):
        return float(stored)
    if kind == "datetime":
        return output_datetime(stored)
    return stored


def csv_text(field: SField, stored: Any) -> str:
    """A stored value as Bulk API CSV writes it (null as an empty cell)."""
    if stored is None:
        return ""
    if field.type == "boolean":
        return "true" if stored else "false"
    if field.type == "datetime":
        return str(stored)
    if field.type in ("double", "currency", "percent"):
        number = float(stored)
        return str(int(number)) if number.is_integer() else repr(number)
    return str(stored)
