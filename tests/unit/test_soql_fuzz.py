"""Fuzzing the local org's SOQL: whatever the text, `soql.compile` either compiles it or refuses
it with a SoqlError carrying one of its documented codes, and a compiled query runs on the org's
SQLite without error. Three kinds of input: token soups (words, names, operators and literals in
any order), near-valid queries built from the grammar and the standard schema then mutated, and
valid shapes pushed to extremes (deep, wide, repeated, long). What it found is kept at the end as
plain tests, one query each.
"""
from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from patchbay.localorg import soql
from patchbay.localorg.org import Org, OrgConfig
from patchbay.localorg.soql import SoqlError

# Hundreds of generated inputs each: in `make test`, not in `make check`'s quick loop.
pytestmark = pytest.mark.slow

NOW = dt.datetime(2024, 3, 13, 12, 0, tzinfo=dt.UTC)
CODES = {"MALFORMED_QUERY", "INVALID_FIELD", "INVALID_TYPE", "NUMBER_OUTSIDE_VALID_RANGE",
         "INVALID_QUERY_FILTER_OPERATOR"}
FUZZ = settings(max_examples=400, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

_ORG = Org(OrgConfig())
_ORG.seed({"Account": [{"Name": "Acme", "NumberOfEmployees": 12}, {"Name": "Globex"}],
           "Contact": [{"LastName": "Doe", "FirstName": "Jo"}]})
_ACCOUNTS = dict(_ORG.storage.db.execute('SELECT "Name", "Id" FROM "Account"').fetchall())
_ACCOUNT_ID = _ACCOUNTS["Acme"]

OBJECTS = [obj.name for obj in _ORG.schema]
FIELDS = sorted({f.name for obj in _ORG.schema for f in obj})
RELATIONSHIPS = sorted({f.relationship_name for obj in _ORG.schema for f in obj if f.relationship_name})
KEYWORDS = ["SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "LIKE", "ORDER", "BY", "ASC", "DESC",
            "NULLS", "FIRST", "LAST", "LIMIT", "OFFSET", "COUNT", "GROUP", "HAVING", "WITH", "TYPEOF",
            "INCLUDES", "EXCLUDES", "NULL", "TRUE", "FALSE", "USING", "FOR", "UPDATE"]
DATE_LITERALS = ["TODAY", "YESTERDAY", "TOMORROW", "THIS_WEEK", "LAST_MONTH", "NEXT_YEAR", "LAST_90_DAYS",
                 "LAST_N_DAYS", "NEXT_N_DAYS", "N_DAYS_AGO", "THIS_QUARTER", "LAST_N_WEEKS"]
NUMBERS = ["0", "1", "-1", "+7", "3.5", ".5", "-.25", "2000", "2001", "9999999999",
           "99999999999999999999999", "1" + "0" * 400, "00012"]
STRINGS = ["'Acme'", "''", "'A%'", "'%'", "'_'", "'\\%'", "'\\_x'", "'it\\'s'", "'\\n'", "'\\q'",
           "'unterminated", "'001000000000001AAA'", "'001000000000001'", "'not an id'", f"'{_ACCOUNT_ID}'"]
DATES = ["2024-01-01", "2024-02-30", "0000-01-01", "0001-01-01", "9999-12-31", "2024-13-01"]
DATETIMES = ["2024-01-01T00:00:00Z", "2024-01-01T00:00:00.123Z", "2024-01-01T00:00:00+05:30",
             "2024-01-01T00:00:00-0800", "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00",
             "2024-01-01T24:00:00Z", "2024-01-01T00:00:00+99:99"]
PUNCTUATION = ["(", ")", ",", ".", "=", "!=", "<>", "<", "<=", ">", ">=", ":", "*", ";", "'", "\\",
               "\"", "`", "[", "]", "{", "}", "@", "#", "$", "|", "&", "\t", "\n", "é", "\u00a0"]


def _date_literal(word: str, n: str | None) -> str:
    return word if n is None else f"{word}:{n}"


def literals() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(NUMBERS), st.sampled_from(STRINGS), st.sampled_from(DATES),
        st.sampled_from(DATETIMES), st.sampled_from(["NULL", "TRUE", "FALSE", "null", "True"]),
        st.builds(_date_literal, st.sampled_from(DATE_LITERALS),
                  st.none() | st.sampled_from(["0", "1", "30", "999999", "99999999999999", "1" * 30])),
        st.integers().map(str),
        st.text(max_size=8).map(lambda s: "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"))


TOKENS = st.one_of(st.sampled_from(KEYWORDS), st.sampled_from(FIELDS), st.sampled_from(OBJECTS),
                   st.sampled_from(RELATIONSHIPS), st.sampled_from(PUNCTUATION), literals(),
                   st.from_regex(r"[A-Za-z_][A-Za-z0-9_]{0,12}(__c|__r)?", fullmatch=True))


@st.composite
def token_soups(draw: st.DrawFn) -> str:
    tokens = draw(st.lists(TOKENS, max_size=30))
    separator = draw(st.sampled_from([" ", "", "\n", "  "]))
    start = draw(st.sampled_from(["", "SELECT ", "SELECT Id FROM Account WHERE "]))
    return start + separator.join(tokens)


@st.composite
def paths(draw: st.DrawFn, obj_name: str) -> str:
    """A field path on the object: a field, a parent's field, sometimes a wrong one."""
    obj = _ORG.schema.get(obj_name)
    assert obj is not None
    names: list[str] = []
    for _ in range(draw(st.integers(0, 3))):
        references = [f for f in obj if f.relationship_name and len(f.reference_to) == 1]
        if not references or draw(st.booleans()):
            break
        reference = draw(st.sampled_from(references))
        parent = _ORG.schema.get(reference.reference_to[0])
        if parent is None:
            break
        names.append(str(reference.relationship_name))
        obj = parent
    last = draw(st.sampled_from([f.name for f in obj]) | st.sampled_from(FIELDS))
    path = ".".join([*names, last])
    return draw(st.sampled_from([path, path, path.upper(), f"{obj_name}.{path}"]))


@st.composite
def conditions(draw: st.DrawFn, obj_name: str, depth: int = 0) -> str:
    kind = draw(st.sampled_from(["compare", "compare", "in", "like", "not", "junction"]
                                if depth < 3 else ["compare", "in", "like"]))
    if kind == "not":
        return f"NOT {draw(conditions(obj_name, depth + 1))}"
    if kind == "junction":
        parts = draw(st.lists(conditions(obj_name, depth + 1), min_size=2, max_size=3))
        word = draw(st.sampled_from(["AND", "OR"]))
        return "(" + f" {word} ".join(parts) + ")"
    path = draw(paths(obj_name))
    if kind == "in":
        values = draw(st.lists(literals(), min_size=1, max_size=4))
        negated = draw(st.sampled_from(["", "NOT "]))
        return f"{path} {negated}IN ({', '.join(values)})"
    if kind == "like":
        return f"{path} LIKE {draw(literals())}"
    op = draw(st.sampled_from(["=", "!=", "<>", "<", "<=", ">", ">="]))
    return f"{path} {op} {draw(literals())}"


@st.composite
def near_valid_queries(draw: st.DrawFn) -> str:
    obj_name = draw(st.sampled_from(OBJECTS))
    if draw(st.integers(0, 5)) == 0:
        items = draw(st.sampled_from(["COUNT()", f"COUNT({draw(paths(obj_name))})",
                                      f"COUNT(Id) n, COUNT({draw(paths(obj_name))})"]))
    else:
        items = ", ".join(draw(st.lists(paths(obj_name), min_size=1, max_size=5)))
    parts = [f"SELECT {items} FROM {obj_name}"]
    if draw(st.booleans()):
        parts.append(f"WHERE {draw(conditions(obj_name))}")
    if draw(st.booleans()):
        order = [f"{draw(paths(obj_name))} {draw(st.sampled_from(['', 'ASC', 'DESC']))}"
                 f" {draw(st.sampled_from(['', 'NULLS FIRST', 'NULLS LAST']))}"
                 for _ in range(draw(st.integers(1, 3)))]
        parts.append("ORDER BY " + ", ".join(order))
    if draw(st.booleans()):
        parts.append(f"LIMIT {draw(st.sampled_from(NUMBERS))}")
    if draw(st.booleans()):
        parts.append(f"OFFSET {draw(st.sampled_from(NUMBERS))}")
    text = " ".join(parts)
    # Near-valid: now and then one token dropped, repeated or replaced.
    tokens = text.split(" ")
    mutation = draw(st.sampled_from(["none", "none", "drop", "repeat", "replace"]))
    if mutation != "none":
        at = draw(st.integers(0, len(tokens) - 1))
        if mutation == "drop":
            del tokens[at]
        elif mutation == "repeat":
            tokens.insert(at, tokens[at])
        else:
            tokens[at] = draw(TOKENS)
    return " ".join(tokens)


def _relationship_paths(count: int) -> list[str]:
    """`count` distinct parent chains from Account (Owner.CreatedBy.LastModifiedBy...Name)."""
    chains = [["Owner"], ["CreatedBy"], ["LastModifiedBy"]]
    for chain in chains:
        if len(chains) >= count:
            break
        if len(chain) < 5:
            chains += [[*chain, "CreatedBy"], [*chain, "LastModifiedBy"]]
    return [".".join([*chain, "Name"]) for chain in chains[:count]]


_MANY = " OR ".join(["Name = 'a'"] * 150)
_WRAPPERS = [("(", ")"), ("NOT ", ""), ("NOT (", ")"), (f"({_MANY} OR ", ")"),
             ("(Name = 'a' AND NOT ", ")"), (f"({_MANY} OR NOT ", ")")]
_LEAVES = ["Name = null", "Name LIKE 'a%'", "CreatedDate = LAST_N_DAYS:5",
           "CreatedDate NOT IN (TODAY, 2024-01-01T00:00:00Z, null, " + ", ".join(["YESTERDAY"] * 150) + ")"]


@st.composite
def extreme_queries(draw: st.DrawFn) -> str:
    """Valid shapes pushed far: deep, wide, repeated, many relationships, big numbers, long text."""
    n = draw(st.integers(1, 3000))
    where = "SELECT Id FROM Account WHERE "
    shape = draw(st.sampled_from(["nested", "not", "mixed", "or", "and", "in-dates", "order", "count",
                                  "relationships", "days", "limit", "number", "long"]))
    if shape == "nested":
        return where + "(" * n + "Name = null" + ")" * n
    if shape == "not":
        return where + "NOT " * n + "Name = null"
    if shape == "mixed":
        levels = draw(st.lists(st.sampled_from(_WRAPPERS), max_size=14))
        return (where + "".join(opening for opening, _ in levels) + draw(st.sampled_from(_LEAVES))
                + "".join(closing for _, closing in reversed(levels)))
    if shape in ("or", "and"):
        return where + f" {shape.upper()} ".join(["Name = 'a'"] * n)
    if shape == "in-dates":
        return where + f"CreatedDate IN ({', '.join(['TODAY'] * n)})"
    if shape == "order":
        return "SELECT Id FROM Account ORDER BY " + ", ".join(["Name"] * n)
    if shape == "count":
        return "SELECT " + ", ".join(["COUNT(Id)"] * n) + " FROM Account"
    if shape == "relationships":
        return "SELECT " + ", ".join(_relationship_paths(min(n, 93))) + " FROM Account"
    if shape == "days":
        word = draw(st.sampled_from(["LAST_N_DAYS", "NEXT_N_DAYS", "N_DAYS_AGO"]))
        days = draw(st.integers(0, 10**20))
        return where + f"CreatedDate {draw(st.sampled_from(['=', '<', '>=']))} {word}:{days}"
    if shape == "limit":
        return f"SELECT Id FROM Account LIMIT {draw(st.integers(0, 10**30))}"
    if shape == "number":
        return where + f"NumberOfEmployees > {draw(st.integers(-(10**30), 10**30))}"
    return where + "Name = '" + "x" * draw(st.integers(99_000, 101_000)) + "'"


@pytest.fixture(scope="module")
def org() -> Iterator[Org]:
    yield _ORG


def check(org: Org, text: str) -> None:
    """Compiled and run, or refused with a documented code: nothing else."""
    for include_deleted in (False, True):
        try:
            compiled = soql.compile(text, org.schema, include_deleted=include_deleted, now=NOW)
        except SoqlError as refused:
            assert refused.code in CODES, (text, refused.code)
            assert refused.message
            return
        db = org.storage.db
        compiled.fetch_count(db)
        compiled.fetch_aggregates(db)
        found = compiled.fetch_ids(db)
        compiled.fetch_records(db, found, "59.0")
        compiled.fetch_rows(db, found)


@FUZZ
@given(text=token_soups())
def test_token_soups_are_compiled_or_refused(org: Org, text: str) -> None:
    check(org, text)


@FUZZ
@given(text=st.text(max_size=60))
def test_any_text_is_compiled_or_refused(org: Org, text: str) -> None:
    check(org, text)


@FUZZ
@given(text=near_valid_queries())
def test_near_valid_queries_are_compiled_or_refused(org: Org, text: str) -> None:
    check(org, text)


@settings(FUZZ, max_examples=100)
@given(text=extreme_queries())
def test_extreme_queries_are_compiled_or_refused(org: Org, text: str) -> None:
    check(org, text)


# What the fuzzing found, one query each: refused with a clear answer, or answered right.
WHERE = "SELECT Id FROM Account WHERE "
REFUSED = [
    ("SELECT Id FROM Accounté", "MALFORMED_QUERY", "unexpected character: 'é'"),
    (WHERE + "CreatedDate > 0001-01-01T00:00:00+01:00", "MALFORMED_QUERY",
     "invalid datetime: 0001-01-01T00:00:00+01:00"),
    ("SELECT Id FROM Account LIMIT 2147483648", "MALFORMED_QUERY",
     "LIMIT needs a non-negative integer up to 2147483647, not '2147483648'"),
    (WHERE + "NOT " * 11 + "Name = null", "MALFORMED_QUERY", "conditions nest at most 10 deep"),
    (WHERE + "(" * 11 + "Name = null" + ")" * 11, "MALFORMED_QUERY", "conditions nest at most 10 deep"),
    ("SELECT " + ", ".join(_relationship_paths(56)) + " FROM Account", "MALFORMED_QUERY",
     "No more than 55 child-to-parent relationships can be specified in a query"),
    (WHERE + "Name = '" + "x" * 99_963 + "'", "MALFORMED_QUERY",
     "SOQL statements cannot be longer than 100000 characters; this one has 100001."),
]


@pytest.mark.parametrize(("text", "code", "reason"), REFUSED)
def test_what_the_fuzzing_found_is_refused(org: Org, text: str, code: str, reason: str) -> None:
    with pytest.raises(SoqlError, match=re.escape(reason)) as refused:
        soql.compile(text, org.schema, include_deleted=False, now=NOW)
    assert refused.value.code == code


ANSWERED = [
    (WHERE + "NOT " * 10 + "Name != null", ["Acme", "Globex"]),
    (WHERE + " OR ".join(["Name = 'Acme'"] * 1500), ["Acme"]),
    (WHERE + " AND ".join(["Name != 'Initech'"] * 1500), ["Acme", "Globex"]),
    (WHERE + f"CreatedDate IN ({', '.join(['LAST_N_DAYS:100000000'] * 1500)})", ["Acme", "Globex"]),
    (WHERE + "CreatedDate < N_DAYS_AGO:100000000000000000000", []),
    (WHERE + "CreatedDate < NEXT_N_DAYS:100000000000000000000", ["Acme", "Globex"]),
    (WHERE + "NumberOfEmployees < 1000000000000000000000000000000", ["Acme"]),
    ("SELECT Id FROM Account ORDER BY " + ", ".join(["Name DESC"] * 3000), ["Globex", "Acme"]),
    ("SELECT " + ", ".join(_relationship_paths(55)) + " FROM Account ORDER BY Name", ["Acme", "Globex"]),
    ("SELECT Id FROM Account ORDER BY Name LIMIT 2147483647", ["Acme", "Globex"]),
    (WHERE + "Name = '" + "x" * 99_962 + "'", []),
]


@pytest.mark.parametrize(("text", "names"), ANSWERED)
def test_what_the_fuzzing_found_is_answered(org: Org, text: str, names: list[str]) -> None:
    # Today is the day the accounts were made, for the date literals.
    compiled = soql.compile(text, org.schema, include_deleted=False, now=org.clock.now())
    assert compiled.fetch_ids(org.storage.db) == [_ACCOUNTS[name] for name in names]


def test_many_counts_of_one_field_are_counted_once_each(org: Org) -> None:
    compiled = soql.compile("SELECT " + ", ".join(["COUNT(Id)"] * 2999) + ", COUNT(Name) named FROM Account",
                            org.schema, include_deleted=False, now=NOW)
    [row] = compiled.fetch_aggregates(org.storage.db)
    assert row == {"attributes": {"type": "AggregateResult"}, **{f"expr{i}": 2 for i in range(2999)},
                   "named": 2}
