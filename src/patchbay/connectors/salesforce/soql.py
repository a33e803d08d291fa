"""A bound scope as a SOQL WHERE condition, values quoted and escaped by field type."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from patchbay.scope import BoundScope, Condition, Group

_COMPARE = {"eq": "=", "ne": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def to_soql(scope: BoundScope | None, types: Mapping[str, str]) -> str:
    """A SOQL WHERE condition, each value quoted and escaped for its field's type.

    `ne` and `not_in` exclude nulls, as the same scope does in SQL (SOQL's != alone would
    keep them).
    """
    if scope is None:
        return ""
    if isinstance(scope, Group):
        parts = [to_soql(p, types) for p in scope.parts]
        if scope.op == "not":
            return _false_soql(scope.parts[0], types)
        return "(" + f" {scope.op.upper()} ".join(parts) + ")"
    name, op, value = scope.field, scope.op, scope.value
    kind = types.get(name.lower(), "string")
    if op == "is_null":
        return f"{name} = null" if value else f"{name} != null"
    if op in ("in", "not_in"):
        # SOQL's IN (..., null) matches null fields, SQL's never does; its NOT IN with a null
        # keeps nothing.
        present = [v for v in value if v is not None]
        if (op == "not_in" and len(present) < len(value)) or (op == "in" and not present):
            return _NEVER
        listed = ", ".join(soql_literal(v, kind) for v in present) or "null"
        return f"{name} IN ({listed})" if op == "in" else \
            f"({name} NOT IN ({listed}) AND {name} != null)"
    if op in ("like", "not_like"):
        condition = f"{name} LIKE {soql_literal(str(value), 'string')}"
        return condition if op == "like" else f"(NOT {condition} AND {name} != null)"
    if value is None:
        return f"{name} {'=' if op == 'eq' else '!='} null"
    condition = f"{name} {_COMPARE[op]} {soql_literal(value, kind)}"
    return f"({condition} AND {name} != null)" if op == "ne" else condition


_NEVER = "Id = null"  # no record matches: every record has an Id
_NEGATED = {"eq": "!=", "ne": "=", "gt": "<=", "gte": "<", "lt": ">=", "lte": ">"}


def _false_soql(scope: BoundScope, types: Mapping[str, str]) -> str:
    """A SOQL condition matching the records for which `scope` is false, which is what `not`
    keeps in SQL. SOQL has no unknown, so `NOT (x)` alone would also keep the records where
    x compares a null field (unknown in SQL); each comparison is negated here instead."""
    if isinstance(scope, Group):
        if scope.op == "not":
            return to_soql(scope.parts[0], types)
        parts = [_false_soql(p, types) for p in scope.parts]
        return "(" + f" {'OR' if scope.op == 'and' else 'AND'} ".join(parts) + ")"
    name, op, value = scope.field, scope.op, scope.value
    kind = types.get(name.lower(), "string")
    if op == "is_null":
        return to_soql(Condition(name, op, not value), types)
    if op in ("in", "not_in"):
        listed = [v for v in value if v is not None]
        if (op == "in" and len(listed) < len(value)) or (op == "not_in" and not listed):
            return _NEVER  # `in` a list holding null is never false, nor `not_in` only nulls
        return to_soql(Condition(name, "not_in" if op == "in" else "in", listed), types)
    if op in ("like", "not_like"):
        return to_soql(Condition(name, "not_like" if op == "like" else "like", value), types)
    if value is None:
        if op not in ("eq", "ne"):
            return _NEVER  # compared with null: unknown, never false
        return f"{name} {'!=' if op == 'eq' else '='} null"
    condition = f"{name} {_NEGATED[op]} {soql_literal(value, kind)}"
    return f"({condition} AND {name} != null)" if op == "eq" else condition


def soql_literal(value: Any, kind: str) -> str:
    """A value written for a SOQL filter on a field of type `kind`."""
    if value is None:
        return "null"
    if kind == "datetime":
        if isinstance(value, dt.datetime):
            moment = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
        elif isinstance(value, dt.date):
            moment = dt.datetime.combine(value, dt.time(), dt.UTC)
        else:
            moment = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
            moment = moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)
        moment = moment.astimezone(dt.UTC)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    if kind == "date":
        day = value.date() if isinstance(value, dt.datetime) else value
        if not isinstance(day, dt.date):
            day = dt.date.fromisoformat(str(day)[:10])
        return day.isoformat()
    if isinstance(value, bool) or kind == "boolean":
        return "true" if value in (True, "true", "True", 1, "1") else "false"
    if kind in ("int", "double", "currency", "percent") and isinstance(value, int | float | Decimal):
        return str(value)
    text = str(value)
    for raw, escaped in (("\\", "\\\\"), ("'", "\\'"), ("\n", "\\n"), ("\r", "\\r"),
                         ("\t", "\\t"), ('"', '\\"')):
        text = text.replace(raw, escaped)
    return f"'{text}'"
