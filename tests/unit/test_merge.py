"""Merge: sources' Arrow tables become one row per entity, enriched, grouped, queried."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from patchbay.elements.merge import localize, merge
from patchbay.errors import ParameterError, SpecError
from patchbay.spec import MergeSpec


def run(sources: Mapping[str, pa.Table], params: Mapping[str, Any] | None = None,
        **spec: Any) -> pa.Table:
    return merge(sources, MergeSpec.model_validate(spec), params).table


def by_key(table: pa.Table, key: str = "id") -> dict[Any, dict[str, Any]]:
    rows = table.to_pylist()
    assert len({row[key] for row in rows}) == len(rows), "keys repeat"
    return {row[key]: row for row in rows}


def ts(day: int) -> dt.datetime:
    return dt.datetime(2024, 1, day, 12, 0)


# -- union and de-duplication -------------------------------------------------------------------


def normalised(emails: list[str | None]) -> pa.Array:
    return pc.utf8_lower(pc.utf8_trim_whitespace(pa.array(emails, pa.string())))


def test_three_sources_become_one_row_per_entity_by_normalised_email() -> None:
    crm = pa.table({"email": normalised(["Ann@Example.com ", "bob@example.com"]), "name": ["Ann", "Bob"]})
    erp = pa.table({"email": normalised([" ANN@example.COM", "cy@example.com"]), "name": ["Ann E.", "Cy"]})
    desk = pa.table({"email": normalised(["bob@EXAMPLE.com", "ann@example.com"]), "name": ["Bobby", None]})

    out = run({"crm": crm, "erp": erp, "desk": desk}, union=["crm", "erp", "desk"], key="email",
              precedence={"default": "order"})

    assert out.column_names == ["email", "name", "_sources", "_differs"]
    assert out.column("email").to_pylist() == ["ann@example.com", "bob@example.com", "cy@example.com"]
    rows = by_key(out, "email")
    assert rows["ann@example.com"]["_sources"] == "crm|erp|desk"
    assert rows["ann@example.com"]["name"] == "Ann"
    assert rows["bob@example.com"]["_sources"] == "crm|desk"
    assert rows["cy@example.com"]["_sources"] == "erp"


def test_within_one_source_the_last_row_of_a_key_counts() -> None:
    a = pa.table({"id": ["k", "j", "k"], "v": ["first", "j", "last"]})

    out = run({"a": a}, union=["a"], key="id")

    assert by_key(out)["k"]["v"] == "last"
    assert out.num_rows == 2


def test_within_one_source_the_latest_recent_by_counts_and_null_loses() -> None:
    a = pa.table({"id": ["k", "k", "k"], "v": ["newest", "older", "undated"],
                  "at": pa.array([ts(9), ts(2), None], pa.timestamp("us"))})

    out = run({"a": a}, union=["a"], key="id", precedence={"recent_by": "at"})

    assert out.num_rows == 1
    assert out.column("v").to_pylist() == ["newest"]
    assert out.column("at").to_pylist() == [ts(9)]


def test_older_rows_of_a_source_fill_its_non_empty_fields_only_when_declared() -> None:
    crm = pa.table({"id": ["k", "k", "k", None, None], "phone": ["old", "older", "", "blank-1", ""],
                    "city": ["Paris", "Lyon", None, "x", "y"], "at": [2, 1, 3, 4, 5]})
    erp = pa.table({"id": ["k"], "phone": ["erp"], "city": ["Nice"], "at": [0]})
    spec: dict[str, Any] = {"union": ["crm", "erp"], "key": "id", "provenance": True, "flags": False,
                            "precedence": {"recent_by": "at", "fields": {"city": "order"}}}

    latest_only = run({"crm": crm, "erp": erp}, **spec).to_pylist()
    spec["precedence"]["older_rows"] = "non_empty"
    filled = run({"crm": crm, "erp": erp}, **spec).to_pylist()

    assert [(r["id"], r["phone"], r["phone__source"], r["city"]) for r in latest_only] == [
        ("k", "erp", "erp", None), (None, "blank-1", "crm", "x"), (None, None, None, "y")]
    assert [(r["id"], r["phone"], r["phone__source"], r["city"]) for r in filled] == [
        ("k", "old", "crm", None), (None, "blank-1", "crm", "x"), (None, None, None, "y")], \
        "phone (non_empty) from crm's latest older value; city (order) still the latest row's"


def test_null_and_empty_keys_are_entities_of_their_own() -> None:
    a = pa.table({"id": [None, None, "", "k"], "v": ["a1", "a2", "a3", "a4"]})
    b = pa.table({"id": [None, "", "k"], "v": ["b1", "b2", "b3"]})

    out = run({"a": a, "b": b}, union=["a", "b"], key="id")

    assert out.column("id").to_pylist() == [None, None, "", "k", None, ""]
    assert out.column("v").to_pylist() == ["a1", "a2", "a3", "a4", "b1", "b2"]
    assert out.column("_sources").to_pylist() == ["a", "a", "a", "a|b", "b", "b"]


def test_columns_follow_first_appearance_then_provenance_flags_and_enrichment() -> None:
    a = pa.table({"name": ["n"], "id": ["k"], "city": ["c"]})
    b = pa.table({"zip": ["z"], "id": ["k"], "name": ["m"]})
    orders = pa.table({"cust": ["k"]})

    out = run({"a": a, "b": b, "orders": orders}, union=["a", "b"], key="id", provenance=True,
              enrich=[{"source": "orders", "join": {"cust": "id"}, "aggregate": {"orders": {"count": "*"}}}])

    assert out.column_names == ["id", "name", "city", "zip", "name__source", "city__source", "zip__source",
                                "_sources", "_differs", "orders"]


def test_a_union_source_without_the_key_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="'b' has no field 'id'"):
        run({"a": pa.table({"id": ["k"]}), "b": pa.table({"ident": ["k"]})}, union=["a", "b"], key="id")


# -- precedence -----------------------------------------------------------------------------------


def two_sources() -> dict[str, pa.Table]:
    a = pa.table({"id": ["k", "m"], "name": [None, "Ma"], "city": ["", "Paris"], "phone": ["1", None],
                  "at": pa.array([ts(1), ts(5)], pa.timestamp("us"))})
    b = pa.table({"id": ["k", "m"], "name": ["Kb", "Mb"], "city": ["Lyon", "Nice"], "phone": ["2", "3"],
                  "at": pa.array([ts(3), ts(2)], pa.timestamp("us"))})
    return {"a": a, "b": b}


def test_order_takes_the_first_source_even_when_its_value_is_null() -> None:
    out = by_key(run(two_sources(), union=["a", "b"], key="id", precedence={"default": "order"}))

    assert (out["k"]["name"], out["k"]["city"], out["k"]["phone"]) == (None, "", "1")
    assert (out["m"]["name"], out["m"]["city"], out["m"]["phone"]) == ("Ma", "Paris", None)


def test_non_empty_takes_the_first_value_that_is_neither_null_nor_empty() -> None:
    out = by_key(run(two_sources(), union=["a", "b"], key="id"))

    assert (out["k"]["name"], out["k"]["city"], out["k"]["phone"]) == ("Kb", "Lyon", "1")
    assert (out["m"]["name"], out["m"]["city"], out["m"]["phone"]) == ("Ma", "Paris", "3")


def test_most_recent_takes_the_value_of_the_latest_row_even_null() -> None:
    out = by_key(run(two_sources(), union=["a", "b"], key="id",
                     precedence={"default": "most_recent", "recent_by": "at"}))

    assert (out["k"]["name"], out["k"]["city"], out["k"]["at"]) == ("Kb", "Lyon", ts(3))
    assert (out["m"]["name"], out["m"]["phone"], out["m"]["at"]) == ("Ma", None, ts(5))


def test_most_recent_puts_nulls_last_and_breaks_ties_by_source_order() -> None:
    a = pa.table({"id": ["tie", "undated"], "v": ["a-tie", "a-undated"],
                  "at": pa.array([ts(4), None], pa.timestamp("us"))})
    b = pa.table({"id": ["tie", "undated"], "v": ["b-tie", "b-dated"],
                  "at": pa.array([ts(4), ts(1)], pa.timestamp("us"))})
    spec: dict[str, Any] = {"union": ["a", "b"], "key": "id", "provenance": True,
                            "precedence": {"default": "most_recent", "recent_by": "at"}}

    out = by_key(run({"a": a, "b": b}, **spec))
    assert (out["tie"]["v"], out["tie"]["v__source"]) == ("a-tie", "a")
    assert out["undated"]["v"] == "b-dated"

    spec["precedence"]["order"] = ["b", "a"]
    assert by_key(run({"a": a, "b": b}, **spec))["tie"]["v"] == "b-tie"


def test_per_field_rules_override_the_default() -> None:
    out = by_key(run(two_sources(), union=["a", "b"], key="id",
                     precedence={"default": "order", "recent_by": "at",
                                 "fields": {"city": "non_empty", "phone": "most_recent"}}))

    assert out["k"]["name"] is None  # order
    assert out["k"]["city"] == "Lyon"  # non_empty
    assert (out["k"]["phone"], out["m"]["phone"]) == ("2", None)  # most_recent: b for k, a for m


def test_a_declared_order_overrides_the_union_order() -> None:
    out = by_key(run(two_sources(), union=["a", "b"], key="id", provenance=True,
                     precedence={"default": "order", "order": ["b", "a"]}))

    assert (out["m"]["name"], out["m"]["city"], out["m"]["name__source"]) == ("Mb", "Nice", "b")
    assert out["m"]["_sources"] == "a|b"  # flags keep the union order


def test_most_recent_without_recent_by_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="most_recent but has no recent_by"):
        run(two_sources(), union=["a", "b"], key="id", precedence={"fields": {"name": "most_recent"}})


# -- provenance and flags -------------------------------------------------------------------------


def test_provenance_names_the_source_of_each_value_and_null_when_none_had_one() -> None:
    out = by_key(run(two_sources(), union=["a", "b"], key="id", provenance=True))

    assert (out["k"]["name__source"], out["k"]["city__source"], out["k"]["phone__source"]) == ("b", "b", "a")
    assert (out["m"]["name__source"], out["m"]["phone__source"]) == ("a", "b")

    a = pa.table({"id": ["k"], "note": pa.array([None], pa.string())})
    b = pa.table({"id": ["k"], "note": [""]})
    assert run({"a": a, "b": b}, union=["a", "b"], key="id", provenance=True,
               precedence={"default": "order"}).column("note__source").to_pylist() == [None]


def test_flags_say_where_each_entity_is_and_which_fields_disagree() -> None:
    a = pa.table({"id": ["both", "same", "only-a"], "name": ["N", "S", "A"], "city": ["X", "C", None],
                  "n": [1, 7, 0], "note": ["", "s", "a"]})
    b = pa.table({"id": ["both", "same", "only-b"], "name": ["M", "S", "B"], "city": ["Y", "C", "B"],
                  "n": [2, 7, 3], "note": ["b", None, "b"]})

    out = by_key(run({"a": a, "b": b}, union=["a", "b"], key="id"))

    assert [(key, row["_sources"]) for key, row in out.items()] == [
        ("both", "a|b"), ("same", "a|b"), ("only-a", "a"), ("only-b", "b")]
    assert out["both"]["_differs"] == "name|city|n"  # the empty note does not disagree
    assert out["same"]["_differs"] == ""
    assert out["only-a"]["_differs"] == out["only-b"]["_differs"] == ""


def test_flags_can_be_left_out() -> None:
    out = run(two_sources(), union=["a", "b"], key="id", flags=False)

    assert "_sources" not in out.column_names and "_differs" not in out.column_names


# -- partial answers ------------------------------------------------------------------------------


def test_a_missing_union_source_is_left_out() -> None:
    sources = two_sources()
    del sources["a"]

    out = run(sources, union=["a", "b"], key="id", provenance=True)

    assert out.column("name").to_pylist() == ["Kb", "Mb"]
    assert set(out.column("_sources").to_pylist()) == {"b"}


def test_without_any_union_source_the_answer_is_an_empty_table_with_the_key() -> None:
    out = run({"orders": pa.table({"x": [1]})}, union=["a", "b"], key="id")

    assert out.num_rows == 0
    assert out.column_names == ["id"]


def test_a_missing_enrich_source_leaves_its_aggregates_null_and_names_them() -> None:
    merged = merge({"a": pa.table({"id": ["k"]})}, MergeSpec.model_validate({
        "union": ["a"], "key": "id", "flags": False,
        "enrich": [{"source": "orders", "join": {"cust": "id"},
                    "aggregate": {"n": {"count": "*"}, "d": {"count_distinct": "sku"},
                                  "total": {"sum": "amount"}, "mean": {"avg": "amount"}}}]}))

    assert merged.table.to_pylist() == [{"id": "k", "n": None, "d": None, "total": None, "mean": None}]
    assert merged.table.schema.field("n").type == pa.int64()
    assert merged.incomplete == {column: ["orders"] for column in ("n", "d", "total", "mean")}


def test_an_entity_without_rows_in_a_present_enrich_source_counts_zero_and_is_not_incomplete() -> None:
    merged = merge({"a": pa.table({"id": ["k", "m"]}), "orders": pa.table({"cust": ["k"]})},
                   MergeSpec.model_validate({"union": ["a"], "key": "id", "flags": False,
                                             "enrich": [{"source": "orders", "join": {"cust": "id"},
                                                         "aggregate": {"n": {"count": "*"}}}]}))

    assert merged.table.to_pylist() == [{"id": "k", "n": 1}, {"id": "m", "n": 0}]
    assert merged.incomplete == {}


def test_with_a_union_source_missing_group_aggregates_are_null_and_named() -> None:
    spec = MergeSpec.model_validate({
        "union": ["a", "b"], "key": "id", "group_by": ["country"],
        "enrich": [{"source": "orders", "join": {"cust": "id"}, "aggregate": {"orders": {"count": "*"}}}],
        "aggregate": {"accounts": {"count": "*"}, "orders": {"sum": "orders"}}})
    a = pa.table({"id": ["1", "2"], "country": ["FR", "DE"]})
    b = pa.table({"id": ["3"], "country": ["FR"]})
    orders = pa.table({"cust": ["1", "3"]})

    whole = merge({"a": a, "b": b, "orders": orders}, spec)
    without_b = merge({"a": a, "orders": orders}, spec)
    without_orders = merge({"a": a, "b": b}, spec)

    assert whole.table.to_pylist() == [{"country": "DE", "accounts": 1, "orders": 0},
                                       {"country": "FR", "accounts": 2, "orders": 2}]
    assert whole.incomplete == {}
    assert without_b.table.to_pylist() == [{"country": "DE", "accounts": None, "orders": None},
                                           {"country": "FR", "accounts": None, "orders": None}]
    assert without_b.incomplete == {"accounts": ["b"], "orders": ["b"]}
    assert without_orders.table.to_pylist() == [{"country": "DE", "accounts": 1, "orders": None},
                                                {"country": "FR", "accounts": 2, "orders": None}]
    assert without_orders.incomplete == {"orders": ["orders"]}


def test_a_field_only_a_missing_source_has_reads_as_null() -> None:
    spec: dict[str, Any] = {"union": ["a", "b"], "key": "id",
                            "enrich": [{"source": "orders", "join": {"cust": "account"},
                                        "aggregate": {"n": {"count": "*"}}}]}
    orders = pa.table({"cust": ["acc-1"]})
    a = pa.table({"id": ["k"]})
    b = pa.table({"id": ["k"], "account": ["acc-1"]})

    without_b = merge({"a": a, "orders": orders}, MergeSpec.model_validate(spec))
    assert without_b.table.column("n").to_pylist() == [None]
    assert without_b.incomplete == {"n": ["b"]}, "the join field comes from the missing source"
    assert run({"a": a, "b": b, "orders": orders}, **spec).column("n").to_pylist() == [1]
    with pytest.raises(SpecError, match="entity field 'account'"):
        run({"a": a, "b": b.drop_columns(["account"]), "orders": orders}, **spec)


# -- enrichment -----------------------------------------------------------------------------------


def test_enrich_reduces_a_source_per_entity_and_joins_it() -> None:
    accounts = pa.table({"id": ["acme", "bolt", "cask"], "name": ["Acme", "Bolt", "Cask"]})
    orders = pa.table({
        "account": ["acme", "acme", "acme", "bolt", "acme", "nobody"],
        "sku": ["s1", "s2", "s1", "s9", None, "s0"],
        "amount": pa.array([10, 25, 5, 7, None, 99], pa.int32()),
        "price": pa.array([Decimal("1.50"), Decimal("2.25"), None, Decimal("9.00"), Decimal("0.10"),
                           Decimal("1.00")], pa.decimal128(10, 2)),
        "at": pa.array([ts(3), ts(9), ts(9), ts(1), None, ts(2)], pa.timestamp("us")),
    })

    out = run({"accounts": accounts, "orders": orders}, union=["accounts"], key="id", flags=False,
              enrich=[{"source": "orders", "join": {"account": "id"}, "aggregate": {
                  "rows": {"count": "*"}, "amounts": {"count": "amount"}, "skus": {"count_distinct": "sku"},
                  "total": {"sum": "amount"}, "smallest": {"min": "price"}, "largest": {"max": "amount"},
                  "mean": {"avg": "amount"}, "last_sku": {"latest": "sku", "by": "at"},
                  "last_at": {"max": "at"}}}])

    rows = by_key(out)
    acme = rows["acme"]
    assert (acme["rows"], acme["amounts"], acme["skus"], acme["total"]) == (4, 3, 2, 40)
    assert (acme["smallest"], acme["largest"], acme["mean"]) == (Decimal("0.10"), 25, pytest.approx(40 / 3))
    assert acme["last_sku"] == "s1"  # a tie on `at` goes to the later row; the undated row never counts
    assert acme["last_at"] == ts(9)
    assert rows["bolt"]["rows"] == 1 and rows["bolt"]["last_sku"] == "s9"
    assert rows["cask"] == {"id": "cask", "name": "Cask", "rows": 0, "amounts": 0, "skus": 0,
                            "total": None, "smallest": None, "largest": None, "mean": None,
                            "last_sku": None, "last_at": None}
    assert out.schema.field("total").type == pa.int64()
    assert out.schema.field("largest").type == pa.int32()
    assert out.schema.field("smallest").type == pa.decimal128(10, 2)
    assert out.schema.field("last_at").type == pa.timestamp("us")


def test_enrich_matches_on_several_fields() -> None:
    accounts = pa.table({"id": ["a1", "a2"], "region": ["eu", "us"]})
    tickets = pa.table({"acct": ["a1", "a1", "a2"], "region": ["eu", "us", "us"],
                        "open": [True, False, True]})

    out = run({"accounts": accounts, "tickets": tickets}, union=["accounts"], key="id", flags=False,
              enrich=[{"source": "tickets", "join": {"acct": "id", "region": "region"},
                       "aggregate": {"tickets": {"count": "*"}, "any_open": {"max": "open"}}}])

    rows = by_key(out)
    assert (rows["a1"]["tickets"], rows["a1"]["any_open"]) == (1, True)
    assert (rows["a2"]["tickets"], rows["a2"]["any_open"]) == (1, True)
    assert out.schema.field("any_open").type == pa.bool_()


def test_enrich_naming_an_unknown_source_field_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match=r"names field 'amout'.*did you mean 'amount'"):
        run({"a": pa.table({"id": ["k"]}), "orders": pa.table({"cust": ["k"], "amount": [1]})},
            union=["a"], key="id",
            enrich=[{"source": "orders", "join": {"cust": "id"}, "aggregate": {"t": {"sum": "amout"}}}])


# -- group by -------------------------------------------------------------------------------------


def test_group_by_reduces_entities_to_one_row_per_group() -> None:
    utc = pa.timestamp("us", tz="UTC")
    a = pa.table({"id": ["1", "2", "3", "4"], "country": ["FR", "DE", "FR", None],
                  "revenue": [10, 20, 30, 5], "at": pa.array([ts(1), ts(2), ts(7), ts(3)], utc)})
    orders = pa.table({"cust": ["1", "1", "3"]})

    out = run({"a": a, "orders": orders}, union=["a"], key="id", group_by=["country"],
              enrich=[{"source": "orders", "join": {"cust": "id"}, "aggregate": {"orders": {"count": "*"}}}],
              aggregate={"accounts": {"count": "*"}, "revenue": {"sum": "revenue"},
                         "orders": {"sum": "orders"}, "newest": {"latest": "id", "by": "at"},
                         "first_at": {"min": "at"}})

    assert out.column_names == ["country", "accounts", "revenue", "orders", "newest", "first_at"]
    assert out.drop_columns(["first_at"]).to_pylist() == [
        {"country": "DE", "accounts": 1, "revenue": 20, "orders": 0, "newest": "2"},
        {"country": "FR", "accounts": 2, "revenue": 40, "orders": 3, "newest": "3"},
        {"country": None, "accounts": 1, "revenue": 5, "orders": 0, "newest": "4"},
    ]
    assert out.schema.field("first_at").type == pa.timestamp("us", tz="UTC")
    assert out.column("first_at")[1].as_py() == ts(1).replace(tzinfo=dt.UTC)


def test_group_by_an_unknown_field_is_a_spec_error() -> None:
    with pytest.raises(SpecError, match="group_by names field 'contry'"):
        run({"a": pa.table({"id": ["1"], "country": ["FR"]})}, union=["a"], key="id",
            group_by=["contry"], aggregate={"n": {"count": "*"}})


# -- final sql ------------------------------------------------------------------------------------


def test_sql_reads_merged_and_sources_by_quoted_name_with_parameters() -> None:
    crm = pa.table({"id": ["k", "m", "n"], "score": [5, 50, 500]})
    tickets = pa.table({"acct": ["k", "k", "n"]})

    out = run({"crm-eu": crm, "help desk": tickets}, {"floor": 10, "unused": "x"},
              union=["crm-eu"], key="id",
              sql='SELECT m.id, m.score, '
                  '(SELECT count(*) FROM "help desk" t WHERE t.acct = m.id) AS tickets, '
                  '(SELECT max(score) FROM "crm-eu") AS top '
                  'FROM merged m WHERE m.score >= $floor ORDER BY m.id')

    assert out.to_pylist() == [{"id": "m", "score": 50, "tickets": 0, "top": 500},
                               {"id": "n", "score": 500, "tickets": 1, "top": 500}]


def test_failing_sql_is_a_spec_error_naming_the_problem() -> None:
    with pytest.raises(SpecError, match=r"merge\.sql failed.*nope"):
        run({"a": pa.table({"id": ["k"]})}, union=["a"], key="id", sql="SELECT nope FROM merged")
    with pytest.raises(SpecError, match="one SELECT"):
        run({"a": pa.table({"id": ["k"]})}, union=["a"], key="id", sql="DROP TABLE merged")


def test_sql_missing_a_parameter_is_a_parameter_error() -> None:
    with pytest.raises(ParameterError, match=r"\$floor"):
        run({"a": pa.table({"id": ["k"]})}, union=["a"], key="id", sql="SELECT * FROM merged WHERE $floor")


# -- types ----------------------------------------------------------------------------------------


def test_differing_types_of_a_field_are_unified() -> None:
    a = pa.table({"id": pa.array([1, 2], pa.int64()), "qty": pa.array([1, 2], pa.int32()),
                  "when": pa.array([1, 2], pa.int64())})
    b = pa.table({"id": ["1", "x"], "qty": [1.5, None], "when": pa.array([ts(1), None], pa.timestamp("us"))})

    out = run({"a": a, "b": b}, union=["a", "b"], key="id", precedence={"default": "order"})

    assert out.schema.field("id").type == pa.string()
    assert out.schema.field("qty").type == pa.float64()
    assert out.schema.field("when").type == pa.string()  # integers cannot become timestamps: text
    assert out.column("id").to_pylist() == ["1", "2", "x"]  # 1 and '1' are one entity
    assert out.column("_sources").to_pylist() == ["a|b", "a", "b"]
    assert out.column("_differs").to_pylist() == ["qty|when", "", ""]


def test_a_type_shared_by_every_source_is_kept() -> None:
    utc = pa.timestamp("us", tz="UTC")
    a = pa.table({"id": pa.array([1, 2], pa.int32()), "at": pa.array([ts(1), ts(2)], utc),
                  "price": pa.array([Decimal("1.10"), None], pa.decimal128(12, 2)), "active": [True, None],
                  "label": pa.array(["x", "y"]).dictionary_encode(),
                  "day": pa.array([dt.date(2024, 1, 1), None])})
    b = pa.table({"id": pa.array([2], pa.int32()), "at": pa.array([ts(5)], utc),
                  "price": pa.array([Decimal("2.20")], pa.decimal128(12, 2)), "active": [False],
                  "label": pa.array(["y"]).dictionary_encode()})

    out = run({"a": a, "b": b}, union=["a", "b"], key="id")

    for name in ("id", "at", "price", "active", "label", "day"):
        assert out.schema.field(name).type == a.schema.field(name).type, name
    rows = by_key(out)
    assert rows[2]["price"] == Decimal("2.20") and rows[2]["active"] is False
    assert rows[1]["at"] == ts(1).replace(tzinfo=dt.UTC)


# -- scale ----------------------------------------------------------------------------------------


def test_a_large_union_is_merged_in_the_database() -> None:
    size = 200_000
    ids = pc.cast(pc.subtract(pc.cumulative_sum(pa.repeat(pa.scalar(1, pa.int64()), size)), 1), pa.string())
    a = pa.table({"id": ids, "v": pa.repeat(pa.scalar("a"), size), "n": pa.repeat(pa.scalar(1), size)})
    b = pa.table({"id": ids.slice(size // 2), "v": pa.repeat(pa.scalar("b"), size - size // 2)})

    out = run({"a": a, "b": b}, union=["a", "b"], key="id", provenance=True,
              precedence={"default": "order", "order": ["b", "a"]})

    assert out.num_rows == size
    assert out.column("id")[size - 1].as_py() == str(size - 1)
    counts = pc.value_counts(out.column("_sources")).to_pylist()
    assert sorted((c["values"], c["counts"]) for c in counts) == [("a", size // 2), ("a|b", size // 2)]
    assert pc.sum(pc.equal(out.column("v"), "b")).as_py() == size // 2


def test_one_union_source_keeps_its_rows_in_order_with_provenance_and_flags() -> None:
    unique = pa.table({"id": [3, 1, 2], "v": ["c", None, ""]})
    out = run({"a": unique}, union=["a"], key="id", provenance=True)
    assert out.to_pylist() == [
        {"id": 3, "v": "c", "v__source": "a", "_sources": "a", "_differs": ""},
        {"id": 1, "v": None, "v__source": None, "_sources": "a", "_differs": ""},
        {"id": 2, "v": "", "v__source": None, "_sources": "a", "_differs": ""}]
    repeated = pa.table({"id": ["k", None, "k", None], "v": ["old", "x", "new", "y"]})
    rows = run({"a": repeated}, union=["a"], key="id").to_pylist()
    assert [(r["id"], r["v"]) for r in rows] == [(None, "x"), ("k", "new"), (None, "y")], \
        "a repeated key is reduced to its last row; null keys stay apart, in table order"


# -- time zones, limits, file access --------------------------------------------------------------

_TZ_MERGE = """
import datetime as dt, json, sys
import pyarrow as pa
from patchbay.elements.merge import merge, localize
from patchbay.spec import MergeSpec

naive = pa.table({"id": ["k"], "phone": ["from a"],
                  "modified": pa.array([dt.datetime(2026, 1, 1, 12)], pa.timestamp("us"))})
aware = pa.table({"id": ["k"], "phone": ["from b"],
                  "modified": pa.array([dt.datetime(2026, 1, 1, 5, tzinfo=dt.UTC)],
                                       pa.timestamp("us", tz="UTC"))})
spec = MergeSpec.model_validate({"union": ["a", "b"], "key": "id", "provenance": True,
                                 "precedence": {"default": "most_recent", "recent_by": "modified"}})
for a in (naive, localize(naive, "Asia/Tokyo")):
    row = merge({"a": a, "b": aware}, spec).table.to_pylist()[0]
    print(json.dumps({"phone": row["phone"], "source": row["phone__source"],
                      "modified": row["modified"].isoformat()}))
"""


@pytest.mark.parametrize("zone", ["Asia/Tokyo", "America/Los_Angeles"])
def test_the_machine_time_zone_does_not_change_a_merge(zone: str) -> None:
    def answers(tz: str) -> list[dict[str, Any]]:
        done = subprocess.run([sys.executable, "-c", _TZ_MERGE], env={**os.environ, "TZ": tz},
                              capture_output=True, text=True, timeout=120, check=True)
        return [json.loads(line) for line in done.stdout.splitlines()]

    in_utc = answers("UTC")
    assert answers(zone) == in_utc
    # Naive 12:00 is 12:00 UTC, later than 05:00 UTC; declared Tokyo time, it is 03:00 UTC.
    assert in_utc == [
        {"phone": "from a", "source": "a", "modified": "2026-01-01T12:00:00+00:00"},
        {"phone": "from b", "source": "b", "modified": "2026-01-01T05:00:00+00:00"}]


def test_localize_reads_naive_timestamps_in_the_zone_and_leaves_the_rest() -> None:
    table = pa.table({"at": pa.array([dt.datetime(2026, 7, 1, 12)], pa.timestamp("us")),
                      "utc": pa.array([dt.datetime(2026, 7, 1, 12, tzinfo=dt.UTC)],
                                      pa.timestamp("us", tz="UTC")),
                      "day": pa.array([dt.date(2026, 7, 1)])})

    out = localize(table, "Europe/Berlin")

    assert out.schema.field("at").type == pa.timestamp("us", tz="Europe/Berlin")
    assert out.column("at")[0].as_py().astimezone(dt.UTC) == dt.datetime(2026, 7, 1, 10, tzinfo=dt.UTC)
    assert out.schema.field("utc").type == pa.timestamp("us", tz="UTC")
    assert out.column("day").to_pylist() == [dt.date(2026, 7, 1)]


@pytest.mark.parametrize("shape", ["merge", "group", "sql"])
def test_a_limit_stops_the_merge_at_that_many_rows(shape: str) -> None:
    sources = {"a": pa.table({"id": [str(n) for n in range(1000)], "g": list(range(1000))})}
    extra: dict[str, Any] = {
        "merge": {}, "group": {"group_by": ["g"], "aggregate": {"n": {"count": "*"}}},
        "sql": {"sql": "SELECT id FROM merged ORDER BY g DESC"}}[shape]
    spec = MergeSpec.model_validate({"union": ["a"], "key": "id", "flags": False, **extra})

    whole = merge(sources, spec).table
    limited = merge(sources, spec, limit=11).table

    assert whole.num_rows == 1000
    assert limited.to_pylist() == whole.slice(0, 11).to_pylist()


def test_merge_sql_cannot_reach_files_through_a_parameter(tmp_path: Path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("x\n42\n")
    with pytest.raises(SpecError, match="file system operations are disabled"):
        run({"a": pa.table({"id": ["1"]})}, {"file": str(secret)}, union=["a"], key="id",
            sql="SELECT * FROM read_csv($file)")
