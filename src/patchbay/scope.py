"""Scope: which records an integration takes.

A scope is written once in the integration file and bound to the run's parameters here.
Connectors push the bound scope down to their system (the SQL connector's `to_sql` gives a
parameterised SQLAlchemy WHERE clause, Salesforce's `to_soql` a SOQL condition);
`to_predicate` serves systems that cannot filter themselves. The tree is part of the model
layer, so connectors import it without importing the elements.

A condition marked `normalize` compares text trimmed and in lower case on both sides: its
value is normalised here, when bound, and each compiler normalises the field (SQL as
lower(trim(column)), the predicate in Python; SOQL compares text ignoring case already).
"""

from __future__ import annotations

import datetime as dt
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from patchbay.model import Record
from patchbay.spec import COMPARISONS, ParamRef, Scope


@dataclass(frozen=True, slots=True)
class Condition:
    """One bound condition: `field op value`."""

    field: str
    op: str
    value: Any = None
    normalize: bool = False
    """Compare the field's text trimmed and in lower case (the value is so already)."""


@dataclass(frozen=True, slots=True)
class Group:
    """`and`, `or` or `not` of bound scopes."""

    op: str
    parts: tuple[BoundScope, ...]


BoundScope = Condition | Group


def bind(scope: Scope | None, params: Mapping[str, Any]) -> BoundScope | None:
    """Replace parameter references by the run's values."""
    if scope is None:
        return None

    def value_of(value: Any) -> Any:
        if isinstance(value, ParamRef):
            return params[value.param]
        if isinstance(value, list):
            flat: list[Any] = []
            for item in value:
                resolved = value_of(item)
                flat.extend(resolved if isinstance(resolved, list) else [resolved])
            return flat
        return value

    if scope.field is not None:
        if scope.optional and any(params.get(ref.param) is None for ref in _param_refs(scope)):
            return None
        for op in COMPARISONS:
            if op in scope.model_fields_set:
                return _condition(scope, op, value_of(getattr(scope, op)))
        if "in_" in scope.model_fields_set:
            return _condition(scope, "in", value_of(scope.in_))
        if "not_in" in scope.model_fields_set:
            return _condition(scope, "not_in", value_of(scope.not_in))
        return Condition(scope.field, "is_null", bool(scope.is_null))
    if scope.and_ is not None or scope.or_ is not None:
        op, members = ("and", scope.and_) if scope.and_ is not None else ("or", scope.or_)
        parts = tuple(b for b in (bind(s, params) for s in members or []) if b is not None)
        return Group(op, parts) if parts else None  # only optional conditions, none given
    assert scope.not_ is not None
    inner = bind(scope.not_, params)
    return None if inner is None else Group("not", (inner,))


def _condition(scope: Scope, op: str, value: Any) -> Condition:
    assert scope.field is not None
    if not scope.normalize:
        return Condition(scope.field, op, value)
    folded = [_normalized(v) for v in value] if isinstance(value, list) else _normalized(value)
    return Condition(scope.field, op, folded, normalize=True)


def _normalized(value: Any) -> Any:
    """Text as a normalised condition compares it: trimmed, in lower case (None stays None)."""
    return None if value is None else str(value).strip().lower()


def _param_refs(scope: Scope) -> list[ParamRef]:
    values = [getattr(scope, op) for op in COMPARISONS] + [scope.in_, scope.not_in]
    found: list[ParamRef] = []
    for value in values:
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, ParamRef):
                found.append(item)
    return found


def fields_of(scope: BoundScope | None) -> set[str]:
    if scope is None:
        return set()
    if isinstance(scope, Condition):
        return {scope.field}
    return set().union(*(fields_of(p) for p in scope.parts))


COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq, "ne": operator.ne, "gt": operator.gt,
    "gte": operator.ge, "lt": operator.lt, "lte": operator.le,
}
"""The comparisons as functions: on Python values here, on SQLAlchemy columns in `to_sql`."""


# -- in-process filtering -----------------------------------------------------------------------


def to_predicate(scope: BoundScope | None) -> Callable[[Record], bool]:
    """A test of one record, for sources that cannot filter (files, message streams).

    It follows SQL's three-valued logic, so it keeps exactly the rows a WHERE clause would:
    a comparison with a null field is unknown, and `not` of unknown is still unknown.
    """
    test = _truth(scope)
    return lambda record: test(record) is True


Truth = Callable[[Record], bool | None]


def _truth(scope: BoundScope | None) -> Truth:
    if scope is None:
        return lambda record: True
    if isinstance(scope, Group):
        tests = [_truth(p) for p in scope.parts]
        if scope.op == "and":
            return lambda record: _all([t(record) for t in tests])
        if scope.op == "or":
            return lambda record: _any([t(record) for t in tests])
        only = tests[0]
        return lambda record: None if (v := only(record)) is None else not v
    name, op, value = scope.field, scope.op, scope.value
    if scope.normalize:
        return _truth_normalized(scope)
    if op == "is_null":
        return lambda record: _is_null(record.get(name)) == value
    if op in ("like", "not_like"):
        pattern = _like_regex(str(value))
        want = op == "like"
        return lambda record: (None if _is_null(record.get(name))
                               else bool(pattern.fullmatch(str(record.get(name)))) == want)
    if op in ("in", "not_in"):
        options = list(value)
        want = op == "in"

        # A null in the list is never equal to anything: where nothing else matches, the
        # answer is unknown, so `not_in` with a null keeps nothing, as in SQL.
        unknown_otherwise = any(_is_null(o) for o in options)
        listed = [o for o in options if not _is_null(o)]

        def member(record: Record) -> bool | None:
            got = record.get(name)
            if _is_null(got):
                return None
            if any(_equal(got, o) for o in listed):
                return want
            return None if unknown_otherwise else not want
        return member
    compare = COMPARE[op]

    def test(record: Record) -> bool | None:
        got = record.get(name)
        if value is None:
            # `eq: null` and `ne: null` are written as IS NULL / IS NOT NULL in SQL
            return _is_null(got) == (op == "eq") if op in ("eq", "ne") else None
        if _is_null(got):
            return None
        left, right = _comparable(got, value)
        try:
            return bool(compare(left, right))
        except TypeError:
            return bool(compare(str(left), str(right)))
    return test


def _truth_normalized(scope: Condition) -> Truth:
    """The same test, of the field's text normalised."""
    plain = _truth(Condition("value", scope.op, scope.value))
    name = scope.field
    return lambda record: plain({"value": _normalized(record.get(name))})


def _all(values: list[bool | None]) -> bool | None:
    if False in values:
        return False
    return None if None in values else True


def _any(values: list[bool | None]) -> bool | None:
    if True in values:
        return True
    return None if None in values else False


def _is_null(value: Any) -> bool:
    return value is None or value == ""


def _equal(got: Any, option: Any) -> bool:
    left, right = _comparable(got, option)
    return bool(left == right)


def _comparable(got: Any, literal: Any) -> tuple[Any, Any]:
    """Text read from files is compared with numbers as numbers and with dates as ISO text."""
    if isinstance(got, str) and not isinstance(literal, str):
        if isinstance(literal, bool):
            return got.strip().lower() in ("true", "1", "yes", "y"), literal
        if isinstance(literal, (int, float, Decimal)):
            try:
                return Decimal(got.strip()), Decimal(str(literal))
            except ArithmeticError:
                return got, str(literal)
        if isinstance(literal, (dt.date, dt.datetime)):
            return got, literal.isoformat(sep=" ") if isinstance(literal, dt.datetime) \
                else literal.isoformat()
    if isinstance(literal, str) and isinstance(got, (dt.date, dt.datetime)):
        return got.isoformat(), literal
    return got, literal


def _like_regex(pattern: str) -> re.Pattern[str]:
    out = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.compile(out, re.DOTALL)
