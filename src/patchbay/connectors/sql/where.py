"""A bound scope as a SQLAlchemy WHERE clause with bound parameters.

A condition marked `normalize` compares `lower(trim(column))` with its value, which binding
normalised already.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from patchbay.errors import SpecError
from patchbay.scope import COMPARE, BoundScope, Group
from patchbay.spec import suggest


def to_sql(scope: BoundScope | None, columns: Mapping[str, sa.ColumnElement[Any]],
           object_name: str = "") -> sa.ColumnElement[bool] | None:
    """A WHERE clause with bound parameters; values never enter the SQL text."""
    if scope is None:
        return None
    if isinstance(scope, Group):
        parts = [to_sql(p, columns, object_name) for p in scope.parts]
        clauses = [p for p in parts if p is not None]
        if scope.op == "and":
            return sa.and_(*clauses)
        if scope.op == "or":
            return sa.or_(*clauses)
        return sa.not_(clauses[0])
    if scope.field not in columns:
        raise SpecError(f"scope names field '{scope.field}', which {object_name or 'the object'} "
                        f"does not have{suggest(scope.field, list(columns.keys()))}")
    column = columns[scope.field]
    if scope.normalize:
        column = sa.func.lower(sa.func.trim(column))
    op, value = scope.op, scope.value
    if op in COMPARE:
        if value is None and op in ("eq", "ne"):
            return column.is_(None) if op == "eq" else column.is_not(None)
        return COMPARE[op](column, value)  # type: ignore[no-any-return]
    if op == "like":
        return column.like(value)
    if op == "not_like":
        return column.not_like(value)
    if op == "in":
        return column.in_(list(value))
    if op == "not_in":
        return column.not_in(list(value))
    return column.is_(None) if value else column.is_not(None)
