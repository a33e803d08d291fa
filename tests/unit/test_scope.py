"""Scope: binding parameters, parameterised SQL push-down, and the in-process predicate."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite

from patchbay.connectors.salesforce import to_soql
from patchbay.connectors.sql.where import to_sql
from patchbay.errors import SpecError
from patchbay.scope import (
    BoundScope,
    Condition,
    Group,
    bind,
    fields_of,
    to_predicate,
)
from patchbay.spec import Scope

INJECTION = "x'; DROP TABLE accounts; --"

metadata = sa.MetaData()
accounts = sa.Table(
    "accounts", metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("name", sa.String),
    sa.Column("country", sa.String, nullable=False),
    sa.Column("amount", sa.Integer),
    sa.Column("created", sa.Date, nullable=False),
    sa.Column("email", sa.String),
)

ROWS: list[dict[str, Any]] = [
    {"id": 1, "name": "Alpha GmbH", "country": "DE", "amount": 100,
     "created": dt.date(2024, 1, 15), "email": "a@alpha.de"},
    {"id": 2, "name": "Beta AG", "country": "AT", "amount": 250,
     "created": dt.date(2024, 2, 1), "email": None},
    {"id": 3, "name": "Gamma_SA", "country": "CH", "amount": None,
     "created": dt.date(2024, 3, 10), "email": "g@gamma.ch"},
    {"id": 4, "name": "Delta Ltd", "country": "GB", "amount": 75,
     "created": dt.date(2023, 12, 31), "email": "d@delta.co.uk"},
    {"id": 5, "name": INJECTION, "country": "DE", "amount": 1000,
     "created": dt.date(2024, 2, 1), "email": None},
]


def csv_like(row: dict[str, Any]) -> dict[str, Any]:
    """The same row as a CSV reader gives it: every value text, nulls empty."""
    return {k: "" if v is None else v.isoformat() if isinstance(v, dt.date) else str(v)
            for k, v in row.items()}


@pytest.fixture(scope="module")
def engine() -> Iterator[sa.Engine]:
    engine = sa.create_engine("sqlite://")
    metadata.create_all(engine)
    with engine.begin() as connection:
        connection.execute(accounts.insert(), ROWS)
    yield engine
    engine.dispose()


def scope(data: dict[str, Any], params: dict[str, Any] | None = None) -> BoundScope:
    bound = bind(Scope.model_validate(data), params or {})
    assert bound is not None
    return bound


def sql_ids(engine: sa.Engine, bound: BoundScope) -> list[int]:
    where = to_sql(bound, accounts.c, "table 'accounts'")
    assert where is not None
    with engine.connect() as connection:
        return list(connection.scalars(sa.select(accounts.c.id).where(where).order_by("id")))


def predicate_ids(bound: BoundScope, rows: list[dict[str, Any]]) -> list[int]:
    test = to_predicate(bound)
    return [int(r["id"]) for r in rows if test(r)]


def compiled(bound: BoundScope) -> sa.engine.Compiled:
    where = to_sql(bound, accounts.c)
    assert where is not None
    return where.compile(dialect=sqlite.dialect())


CASES: list[tuple[str, dict[str, Any], dict[str, Any], list[int]]] = [
    # (name, scope, params, ids expected)
    ("eq", {"field": "country", "eq": "DE"}, {}, [1, 5]),
    ("eq_int", {"field": "amount", "eq": 250}, {}, [2]),
    ("eq_null", {"field": "email", "eq": None}, {}, [2, 5]),
    ("ne", {"field": "country", "ne": "DE"}, {}, [2, 3, 4]),
    ("ne_on_nullable", {"field": "amount", "ne": 100}, {}, [2, 4, 5]),
    ("ne_null", {"field": "email", "ne": None}, {}, [1, 3, 4]),
    ("gt", {"field": "amount", "gt": 100}, {}, [2, 5]),
    ("gte", {"field": "amount", "gte": 100}, {}, [1, 2, 5]),
    ("lt", {"field": "amount", "lt": 100}, {}, [4]),
    ("lte", {"field": "amount", "lte": 100}, {}, [1, 4]),
    ("gt_text", {"field": "name", "gt": "C"}, {}, [3, 4, 5]),
    ("date_gte", {"field": "created", "gte": dt.date(2024, 2, 1)}, {}, [2, 3, 5]),
    ("date_lt", {"field": "created", "lt": dt.date(2024, 1, 15)}, {}, [4]),
    ("date_eq", {"field": "created", "eq": dt.date(2024, 2, 1)}, {}, [2, 5]),
    ("in", {"field": "country", "in": ["AT", "CH"]}, {}, [2, 3]),
    ("in_numbers", {"field": "amount", "in": [75, 1000, 5]}, {}, [4, 5]),
    ("not_in", {"field": "country", "not_in": ["DE", "GB"]}, {}, [2, 3]),
    ("not_in_nullable", {"field": "amount", "not_in": [100]}, {}, [2, 4, 5]),
    ("like", {"field": "name", "like": "%a %"}, {}, [1, 2, 4]),
    ("like_underscore", {"field": "name", "like": "Gamma_S_"}, {}, [3]),
    ("like_prefix", {"field": "email", "like": "%.de"}, {}, [1]),
    ("not_like", {"field": "email", "not_like": "%.de"}, {}, [3, 4]),
    ("is_null", {"field": "email", "is_null": True}, {}, [2, 5]),
    ("is_not_null", {"field": "amount", "is_null": False}, {}, [1, 2, 4, 5]),
    ("and", {"and": [{"field": "country", "eq": "DE"}, {"field": "amount", "lt": 500}]}, {}, [1]),
    ("or", {"or": [{"field": "country", "eq": "GB"}, {"field": "amount", "gt": 200}]}, {},
     [2, 4, 5]),
    ("not", {"not": {"field": "country", "in": ["DE", "AT"]}}, {}, [3, 4]),
    ("nested", {"and": [
        {"or": [{"field": "country", "eq": "DE"}, {"field": "country", "eq": "AT"}]},
        {"not": {"field": "created", "lt": dt.date(2024, 2, 1)}},
    ]}, {}, [2, 5]),
    ("param", {"field": "created", "gte": {"param": "since"}},
     {"since": dt.date(2024, 3, 1)}, [3]),
    ("param_list_in", {"field": "country", "in": {"param": "countries"}},
     {"countries": ["GB", "CH", "FR"]}, [3, 4]),
    ("param_list_not_in", {"field": "country", "not_in": {"param": "countries"}},
     {"countries": ["DE", "AT"]}, [3, 4]),
    ("param_inside_in", {"field": "country", "in": ["AT", {"param": "more"}]},
     {"more": ["CH", "GB"]}, [2, 3, 4]),
    ("injection_eq", {"field": "name", "eq": INJECTION}, {}, [5]),
    ("injection_like", {"field": "name", "like": INJECTION}, {}, [5]),
    ("injection_in", {"field": "name", "in": [INJECTION, "Beta AG"]}, {}, [2, 5]),
    ("as_stored", {"field": "name", "eq": "  beta ag "}, {}, []),
    ("normalized_eq", {"field": "name", "eq": "  beta ag ", "normalize": True}, {}, [2]),
    ("normalized_ne", {"field": "email", "ne": "A@ALPHA.DE", "normalize": True}, {}, [3, 4]),
    ("normalized_in", {"field": "country", "in": ["de", " gb"], "normalize": True}, {}, [1, 4, 5]),
    ("normalized_not_in", {"field": "country", "not_in": ["De"], "normalize": True}, {}, [2, 3, 4]),
    ("normalized_like", {"field": "name", "like": "%GMBH", "normalize": True}, {}, [1]),
    ("normalized_not_like", {"field": "email", "not_like": "%.DE", "normalize": True}, {}, [3, 4]),
    ("normalized_param", {"field": "email", "eq": {"param": "email"}, "normalize": True},
     {"email": " G@Gamma.CH "}, [3]),
]


@pytest.mark.parametrize(("data", "params", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_sql_selects_exactly_the_expected_rows(engine: sa.Engine, data: dict[str, Any],
                                               params: dict[str, Any], expected: list[int]) -> None:
    assert sql_ids(engine, scope(data, params)) == expected


@pytest.mark.parametrize(("data", "params", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_predicate_agrees_with_sql(data: dict[str, Any], params: dict[str, Any],
                                   expected: list[int]) -> None:
    bound = scope(data, params)
    assert predicate_ids(bound, ROWS) == expected


@pytest.mark.parametrize(("data", "params", "expected"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_predicate_on_csv_text_agrees_with_sql(data: dict[str, Any], params: dict[str, Any],
                                               expected: list[int]) -> None:
    """Numbers held as text compare as numbers, dates as ISO text, empty text as null."""
    bound = scope(data, params)
    assert predicate_ids(bound, [csv_like(r) for r in ROWS]) == expected


def test_csv_numbers_compare_numerically_not_as_text() -> None:
    rows = [{"id": "1", "amount": "9"}, {"id": "2", "amount": "10"}, {"id": "3", "amount": "100"}]
    assert predicate_ids(scope({"field": "amount", "gt": 9}), rows) == [2, 3]
    assert predicate_ids(scope({"field": "amount", "lt": 10}), rows) == [1]
    assert predicate_ids(scope({"field": "amount", "eq": 10}), [{"id": 1, "amount": "10.0"}]) == [1]


@pytest.mark.parametrize("op", ["eq", "ne", "gt", "gte", "lt", "lte", "like", "not_like",
                                "in", "not_in"])
def test_sql_is_parameterised(op: str) -> None:
    value: Any = [INJECTION, "second value"] if op in ("in", "not_in") else INJECTION
    result = compiled(scope({"field": "name", op: value}))
    text = str(result)
    assert "DROP TABLE" not in text
    assert "second value" not in text
    assert "accounts.name" in text
    assert "?" in text or "POSTCOMPILE" in text
    values = list(result.params.values())
    flat = [v for item in values for v in (item if isinstance(item, list) else [item])]
    assert INJECTION in flat


def test_sql_is_parameterised_through_groups_and_params() -> None:
    bound = scope({"or": [
        {"field": "name", "eq": {"param": "name"}},
        {"not": {"field": "country", "in": {"param": "countries"}}},
        {"and": [{"field": "amount", "gte": 12345}, {"field": "email", "is_null": True}]},
    ]}, {"name": INJECTION, "countries": ["XX-SECRET"]})
    result = compiled(bound)
    text = str(result)
    for literal in ("DROP TABLE", "XX-SECRET", "12345"):
        assert literal not in text
    assert "IS NULL" in text and " OR " in text and "NOT" in text
    assert set(map(repr, result.params.values())) == {
        repr(INJECTION), repr(["XX-SECRET"]), repr(12345)}


def test_null_comparisons_compile_to_is_null() -> None:
    assert "email IS NULL" in str(compiled(scope({"field": "email", "eq": None})))
    assert "email IS NOT NULL" in str(compiled(scope({"field": "email", "ne": None})))
    assert "email IS NOT NULL" in str(compiled(scope({"field": "email", "is_null": False})))


def test_the_injection_value_did_not_run(engine: sa.Engine) -> None:
    sql_ids(engine, scope({"field": "name", "eq": INJECTION}))
    with engine.connect() as connection:
        assert connection.scalar(sa.select(sa.func.count()).select_from(accounts)) == len(ROWS)


def test_unknown_field_raises_spec_error_with_suggestion() -> None:
    with pytest.raises(SpecError) as caught:
        to_sql(scope({"field": "contry", "eq": "DE"}), accounts.c, "table 'accounts'")
    message = str(caught.value)
    assert "contry" in message and "table 'accounts'" in message
    assert "did you mean 'country'?" in message


def test_unknown_field_inside_a_group_is_found() -> None:
    with pytest.raises(SpecError, match="did you mean 'amount'"):
        to_sql(scope({"and": [{"field": "country", "eq": "DE"},
                              {"not": {"field": "amout", "gt": 1}}]}), accounts.c)


def test_bind_replaces_params_and_flattens_lists() -> None:
    bound = scope({"and": [
        {"field": "created", "gte": {"param": "since"}},
        {"field": "country", "in": ["AT", {"param": "more"}, {"param": "one"}]},
        {"not": {"field": "email", "is_null": True}},
    ]}, {"since": dt.date(2024, 1, 1), "more": ["CH", "GB"], "one": "DE"})
    assert bound == Group("and", (
        Condition("created", "gte", dt.date(2024, 1, 1)),
        Condition("country", "in", ["AT", "CH", "GB", "DE"]),
        Group("not", (Condition("email", "is_null", True),)),
    ))
    assert fields_of(bound) == {"created", "country", "email"}


def test_bind_of_no_scope() -> None:
    assert bind(None, {}) is None
    assert to_sql(None, accounts.c) is None
    assert to_predicate(None)({"anything": 1}) is True
    assert fields_of(None) == set()


def test_bind_needs_the_parameter() -> None:
    with pytest.raises(KeyError, match=r"^'missing'$"):
        bind(Scope.model_validate({"field": "a", "eq": {"param": "missing"}}), {})


def test_predicate_on_missing_fields_is_false_except_is_null() -> None:
    record = {"id": 1}
    for data in ({"field": "x", "eq": 1}, {"field": "x", "ne": 1}, {"field": "x", "in": [1]},
                 {"field": "x", "not_in": [1]}, {"field": "x", "like": "%"},
                 {"field": "x", "not_like": "a%"}, {"field": "x", "gt": 0}):
        assert to_predicate(scope(data))(record) is False, data
    assert to_predicate(scope({"field": "x", "is_null": True}))(record) is True


def test_predicate_dates_against_datetimes_and_text() -> None:
    since = scope({"field": "at", "gte": dt.date(2024, 2, 1)})
    test = to_predicate(since)
    assert test({"at": dt.datetime(2024, 2, 1, 9, 30)})
    assert not test({"at": dt.datetime(2024, 1, 31, 23, 59)})
    assert test({"at": "2024-02-01 00:00:00"})
    assert not test({"at": "2024-01-31"})
    text_literal = to_predicate(scope({"field": "at", "lt": "2024-02-01"}))
    assert text_literal({"at": dt.date(2024, 1, 31)})
    assert not text_literal({"at": dt.date(2024, 2, 1)})


def test_predicate_not_over_a_null_field_agrees_with_sql(engine: sa.Engine) -> None:
    bound = scope({"not": {"field": "amount", "gt": 100}})
    assert predicate_ids(bound, ROWS) == sql_ids(engine, bound)


def test_predicate_booleans_from_text() -> None:
    active = to_predicate(scope({"field": "active", "eq": True}))
    assert [active({"active": v}) for v in ("true", "1", "yes", "false", "0", True, False)] == [
        True, True, True, False, False, True, False]


def test_an_optional_condition_is_dropped_when_its_parameter_is_not_given() -> None:
    one = Scope.model_validate({"field": "email", "eq": {"param": "email"}, "optional": True})
    assert bind(one, {"email": None}) is None
    assert bind(one, {"email": "a@b.c"}) == Condition("email", "eq", "a@b.c")
    both = Scope.model_validate({"and": [
        {"field": "status", "eq": "open"},
        {"field": "email", "eq": {"param": "email"}, "optional": True}]})
    assert bind(both, {"email": None}) == Group("and", (Condition("status", "eq", "open"),))
    only_optional = Scope.model_validate({"or": [
        {"field": "email", "eq": {"param": "email"}, "optional": True}]})
    assert bind(only_optional, {"email": None}) is None
    strict = Scope.model_validate({"field": "email", "eq": {"param": "email"}})
    assert bind(strict, {"email": None}) == Condition("email", "eq", None), \
        "without optional, a missing value is a condition on null, never dropped"


def test_a_normalized_condition_matches_stored_text_trimmed_and_in_any_case() -> None:
    engine = sa.create_engine("sqlite://")
    metadata.create_all(engine)
    rows = [{**ROWS[0], "email": " Ada@Example.com "}, {**ROWS[1], "email": "ADA@EXAMPLE.COM"},
            {**ROWS[2], "email": "bob@example.com"}]
    with engine.begin() as connection:
        connection.execute(accounts.insert(), rows)
    bound = scope({"field": "email", "eq": {"param": "email"}, "normalize": True},
                  {"email": "Ada@example.COM"})
    try:
        assert bound == Condition("email", "eq", "ada@example.com", normalize=True)
        assert sql_ids(engine, bound) == [1, 2]
        assert predicate_ids(bound, rows) == [1, 2]
        assert str(compiled(bound)) == "lower(trim(accounts.email)) = ?"
    finally:
        engine.dispose()


def test_salesforce_gets_the_normalized_value_its_text_comparisons_ignore_case_of() -> None:
    bound = scope({"field": "Customer_Email__c", "in": ["Ada@Example.com ", "B@x.org"], "normalize": True})
    assert to_soql(bound, {"customer_email__c": "email"}) == \
        "Customer_Email__c IN ('ada@example.com', 'b@x.org')"


@pytest.mark.parametrize("data", [{"field": "amount", "gt": 5, "normalize": True},
                                  {"field": "email", "is_null": True, "normalize": True},
                                  {"and": [{"field": "email", "eq": "x"}], "normalize": True}])
def test_normalize_goes_with_a_text_comparison_on_a_field(data: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="normalize compares text: it goes with a field and one of "
                                         "eq, ne, in, not_in, like, not_like"):
        Scope.model_validate(data)
