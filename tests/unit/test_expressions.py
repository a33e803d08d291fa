"""Expressions: a whitelist checked when compiled, evaluated against one record."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest

from patchbay.elements.expressions import FUNCTIONS, Expression
from patchbay.errors import SpecError


@pytest.mark.parametrize(("source", "message"), [
    ("().__class__", "only params.<name> may use a dot"),
    ("().__class__.__bases__[0].__subclasses__()", "not allowed|may use a dot|unknown function"),
    ("name.upper()", "only params.<name> may use a dot|unknown function"),
    ("params.x.y", "only params.<name> may use a dot"),
    ("lambda: 1", "Lambda is not allowed"),
    ("(lambda x: x)(1)", "Lambda is not allowed|unknown function"),
    ("[x for x in items]", "ListComp is not allowed"),
    ("{x: 1 for x in items}", "DictComp is not allowed"),
    ("sum(x for x in items)", "not allowed|unknown function"),
    ("open('/etc/passwd')", r"unknown function open\(\)"),
    ("eval('1')", r"unknown function eval\(\)"),
    ("__import__('os')", r"unknown function __import__\(\)"),
    ("getattr(params, 'x')", r"unknown function getattr\(\)"),
    ("import os", "invalid syntax"),
    ("x = 1", "invalid syntax"),
    ("(x := 1)", "NamedExpr is not allowed"),
    ("items[0]", r"only record\['field'\] may be subscripted"),
    ("{'a': 1}", "Dict is not allowed"),
    ("f'{name}'", "JoinedStr is not allowed"),
    ("2 ** 1000000", "Pow is not allowed"),
    ("upper(", "at column"),
])
def test_forbidden_syntax_fails_at_compile_time(source: str, message: str) -> None:
    with pytest.raises(SpecError, match=message) as caught:
        Expression(source)
    assert repr(source) in str(caught.value)


def test_unknown_function_lists_the_available_ones() -> None:
    with pytest.raises(SpecError) as caught:
        Expression("shout(name)")
    assert "unknown function shout()" in str(caught.value)
    assert "available: " in str(caught.value) and "upper" in str(caught.value)


def evaluate(source: str, record: dict[str, Any] | None = None,
             params: dict[str, Any] | None = None) -> Any:
    return Expression(source, params).evaluate(record or {})


def test_fields_are_the_record_names_used() -> None:
    assert Expression("upper(first) + ' ' + coalesce(last, params.x)").fields == ["first", "last"]
    assert Expression("True if a is None else b").fields == ["a", "b"]


@pytest.mark.parametrize(("source", "record", "expected"), [
    ("first + ' ' + last", {"first": "Ada", "last": "Lovelace"}, "Ada Lovelace"),
    ("upper(c)", {"c": "de"}, "DE"),
    ("lower(c)", {"c": "DE"}, "de"),
    ("title(c)", {"c": "alpha beta"}, "Alpha Beta"),
    ("strip(c)", {"c": "  x "}, "x"),
    ("replace(c, '-', '')", {"c": "a-b-c"}, "abc"),
    ("left(c, 2) + right(c, 2)", {"c": "abcdef"}, "abef"),
    ("split_part(email, '@', 1)", {"email": "a@b.de"}, "b.de"),
    ("split_part(email, '@', 5)", {"email": "a@b.de"}, ""),
    ("length(c)", {"c": "abc"}, 3),
    ("round(x, 1)", {"x": 2.26}, 2.3),
    ("int(x) + 1", {"x": "41"}, 42),
    ("decimal(x)", {"x": 1.1}, Decimal("1.1")),
    ("abs(x)", {"x": -3}, 3),
    ("min(a, b)", {"a": 3, "b": 2}, 2),
    ("coalesce(a, b, 'z')", {"a": None, "b": ""}, "z"),
    ("coalesce(a, b)", {"a": "", "b": "y"}, "y"),
    ("concat(a, '-', b)", {"a": "x", "b": None}, "x-"),
    ("'big' if n > 10 else 'small'", {"n": 11}, "big"),
    ("'big' if n > 10 else 'small'", {"n": 3}, "small"),
    ("c in ['DE', 'AT']", {"c": "AT"}, True),
    ("not a and b", {"a": False, "b": True}, True),
    ("missing is None", {}, True),
    ("upper(missing)", {}, None),
    ("record['first name']", {"first name": "Ada"}, "Ada"),
])
def test_evaluation(source: str, record: dict[str, Any], expected: Any) -> None:
    assert evaluate(source, record) == expected


def test_params_are_reachable() -> None:
    assert evaluate("params.region + '-' + c", {"c": "x"}, {"region": "emea"}) == "emea-x"


def test_functions_and_params_are_not_hidden_by_fields_of_the_same_name() -> None:
    record = {"title": "mr", "params": "oops", "name": "ada"}
    assert evaluate("title(name) + params.sep + record['title']", record, {"sep": " "}) == \
        "Ada mr"


def test_today_and_now() -> None:
    # Bounded by the clock read either side: a now() stuck at the epoch, or off by the
    # local zone's offset, falls outside.
    before = dt.datetime.now(dt.UTC)
    today, now = evaluate("today()"), evaluate("now()")
    after = dt.datetime.now(dt.UTC)
    assert type(today) is dt.date and before.astimezone().date() <= today <= after.astimezone().date()
    assert now.utcoffset() == dt.timedelta(0) and before <= now <= after


def test_no_builtins_are_reachable() -> None:
    assert "print" not in FUNCTIONS
    assert evaluate("len") is None  # an unknown name is a missing field, not a builtin
