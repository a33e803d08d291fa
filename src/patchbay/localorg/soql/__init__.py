"""SOQL for the local org: the subset of section 4 of the Salesforce API spec, compiled to SQLite.

Three stages, each readable on its own:

1. `_tokenize` cuts the text into tokens that remember their offset (for the caret in error messages).
2. `_Parser`, a recursive-descent parser, turns the tokens into the small dataclasses below. It knows
   nothing about the schema.
3. `_Compiler` resolves names against the `OrgSchema`, checks each value against its field's type, and
   writes SQLite SQL with a LEFT JOIN per parent relationship. Values only ever travel as `?` parameters.

A parent-to-child subquery (`SELECT Name, (SELECT LastName FROM Contacts) FROM Account`) is compiled
by a compiler of its own against the child object, with the child's reference to the parent as one
more filter; fetching a page runs it once per parent record.

The result, `CompiledQuery`, holds the SQL for the matching root Ids (which the server snapshots for
cursors), for `COUNT()` and for `COUNT(path)`, and turns stored rows back into records shaped as the REST
API returns them, or into Bulk API CSV rows.

SQL has three-valued logic and SOQL does not: `Name != 'x'` matches rows whose Name is null, and so does
`NOT Name LIKE 'x%'`. So every predicate is compiled to an expression that is never NULL (true or
false), which makes `NOT` and `!=` behave as SOQL says.

Text comparisons use SQLite's NOCASE collation, the same as `Storage.find`: case-insensitive for ASCII
letters only.
"""

from __future__ import annotations

import datetime as dt
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from patchbay import sfid
from patchbay.localorg.schema import NUMBER_TYPES, OrgSchema, SField, SObject
from patchbay.localorg.storage import quote
from patchbay.localorg.values import csv_text, from_storage, parse_datetime, stored_datetime

MAX_OFFSET = 2000
MAX_RELATIONSHIP_DEPTH = 5
MAX_SUBQUERIES = 20  # parent-to-child relationships in one query, as Salesforce allows
MAX_RELATIONSHIPS = 55  # child-to-parent relationships in one query
MAX_LENGTH = 100_000  # characters in a statement
# NOTs and parentheses around a condition. Ours (Salesforce documents none): the SQL a condition
# becomes nests deeper still, and SQLite's parser takes a few dozen levels at most.
MAX_NESTING = 10
_RUN = 100  # operands of one AND/OR chain in SQL (see _joined)
_FETCH_CHUNK = 500  # ids per fetch statement, well under SQLite's bound-parameter limit


class SoqlError(Exception):
    """A query Salesforce would refuse with HTTP 400; `code` is its errorCode.

    MALFORMED_QUERY (syntax), INVALID_FIELD (unknown field or relationship, wrong value type),
    INVALID_TYPE (unknown object), NUMBER_OUTSIDE_VALID_RANGE (OFFSET over 2000),
    INVALID_QUERY_FILTER_OPERATOR (a malformed id in a filter on an id field).
    """

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _error(code: str, text: str, pos: int, reason: str) -> SoqlError:
    """An error worded as Salesforce words it: the query line, a caret, the position, the reason."""
    line_start = text.rfind("\n", 0, pos) + 1
    line_end = text.find("\n", pos)
    line = text[line_start:line_end if line_end >= 0 else len(text)]
    before = text[line_start:pos]
    # Keep tabs in the caret line so the caret sits under the right character.
    caret = "".join("\t" if ch == "\t" else " " for ch in before) + "^"
    row = text.count("\n", 0, pos) + 1
    column = pos - line_start + 1
    return SoqlError(code, f"{line}\n{caret}\nERROR at Row:{row}:Column:{column}\n{reason}")


# ---------------------------------------------------------------------------------------------------
# Tokens

@dataclass(frozen=True)
class _Token:
    kind: str  # ident, string, number, date, datetime, op, "(", ")", ",", ".", eof
    text: str  # as written
    pos: int  # offset of its first character
    value: Any = None  # decoded: str for strings, int|float, date, datetime
    arg: int | None = None  # the n of a date literal written NAME:n
    chars: tuple[tuple[str, bool], ...] = ()  # a string's characters, each with "was backslash-escaped"

    @property
    def word(self) -> str:
        """An identifier without its `:n` argument."""
        return self.text.split(":", 1)[0]


_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:?\d{2})")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d+)?|\.\d+)")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SQL_INTEGERS = (-(2**63), 2**63 - 1)
_MAX_LIMIT = 2**31 - 1  # the largest LIMIT (ours: Salesforce's integers are 32-bit)
_OPERATORS = ("<=", ">=", "!=", "<>", "=", "<", ">")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", '"': '"', "'": "'", "\\": "\\",
            "%": "%", "_": "_"}


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            tokens.append(_Token("eof", "<EOF>", pos))
            return tokens
        ch = text[pos]
        if ch == "'":
            token = _string(text, pos)
        elif ch.isdigit() or (ch in "+-." and _NUMBER.match(text, pos)):
            token = _literal(text, pos)
        elif _IDENT.match(ch):  # ASCII only: names never hold other letters
            token = _identifier(text, pos)
        elif ch in "(),.":
            token = _Token(ch, ch, pos)
        else:
            op = next((o for o in _OPERATORS if text.startswith(o, pos)), None)
            if op is None:
                raise _error("MALFORMED_QUERY", text, pos, f"unexpected character: '{ch}'")
            token = _Token("op", op, pos)
        tokens.append(token)
        pos += len(token.text)


def _string(text: str, start: int) -> _Token:
    chars: list[tuple[str, bool]] = []
    pos = start + 1
    while pos < len(text):
        ch = text[pos]
        if ch == "'":
            value = "".join(c for c, _ in chars)
            return _Token("string", text[start:pos + 1], start, value, chars=tuple(chars))
        if ch == "\\":
            code = text[pos + 1:pos + 2]
            if not code or code not in _ESCAPES:
                raise _error("MALFORMED_QUERY", text, pos,
                             f"Illegal character sequence '\\{code}' in string literal.")
            chars.append((_ESCAPES[code], True))
            pos += 2
            continue
        chars.append((ch, False))
        pos += 1
    raise _error("MALFORMED_QUERY", text, start, "unterminated string literal")


def _literal(text: str, pos: int) -> _Token:
    """A datetime, date or number, tried in that order (each is a prefix of the one before)."""
    for kind, pattern in (("datetime", _DATETIME), ("date", _DATE), ("number", _NUMBER)):
        match = pattern.match(text, pos)
        if match is None:
            continue
        written = match.group()
        end = match.end()
        if end < len(text) and (text[end].isalnum() or text[end] in "_:"):
            raise _error("MALFORMED_QUERY", text, pos, f"unexpected token: '{written}{text[end]}'")
        value: Any
        if kind == "datetime":
            value = parse_datetime(written)
        elif kind == "date":
            try:
                value = dt.date.fromisoformat(written)
            except ValueError:
                value = None
        else:
            value = float(written) if "." in written else int(written)
            if isinstance(value, int) and not _SQL_INTEGERS[0] <= value <= _SQL_INTEGERS[1]:
                # Past SQLite's integers: still a number, and it compares as one.
                value = float(written)
        if value is None:
            raise _error("MALFORMED_QUERY", text, pos, f"invalid {kind}: {written}")
        return _Token(kind, written, pos, value)
    raise _error("MALFORMED_QUERY", text, pos, f"unexpected character: '{text[pos]}'")


def _identifier(text: str, pos: int) -> _Token:
    match = _IDENT.match(text, pos)
    assert match is not None  # the caller saw a letter or an underscore
    end = match.end()
    if end < len(text) and text[end] == ":":
        # Only date literals take an argument, written without spaces: LAST_N_DAYS:30.
        digits = re.compile(r"\d+").match(text, end + 1)
        if digits is None:
            raise _error("MALFORMED_QUERY", text, end, "unexpected character: ':'")
        return _Token("ident", text[pos:digits.end()], pos, arg=int(digits.group()))
    return _Token("ident", match.group(), pos)


# ---------------------------------------------------------------------------------------------------
# Syntax tree

@dataclass(frozen=True)
class _Path:
    names: tuple[str, ...]  # as written
    pos: int


@dataclass(frozen=True)
class _Text:
    value: str
    chars: tuple[tuple[str, bool], ...]  # for LIKE: which % and _ were escaped
    pos: int


@dataclass(frozen=True)
class _Number:
    value: int | float
    pos: int


@dataclass(frozen=True)
class _Bool:
    value: bool
    pos: int


@dataclass(frozen=True)
class _Null:
    pos: int


@dataclass(frozen=True)
class _Date:
    value: dt.date
    pos: int


@dataclass(frozen=True)
class _DateTime:
    value: dt.datetime
    pos: int


@dataclass(frozen=True)
class _DateLiteral:
    name: str  # upper case
    n: int | None
    pos: int


_Value = _Text | _Number | _Bool | _Null | _Date | _DateTime | _DateLiteral


@dataclass(frozen=True)
class _Comparison:
    path: _Path
    op: str  # = != < <= > >=  (<> is read as !=)
    value: _Value


@dataclass(frozen=True)
class _In:
    path: _Path
    negated: bool
    values: tuple[_Value, ...]


@dataclass(frozen=True)
class _Like:
    path: _Path
    pattern: _Text


@dataclass(frozen=True)
class _Not:
    operand: _Condition


@dataclass(frozen=True)
class _Junction:
    op: str  # AND or OR
    operands: tuple[_Condition, ...]


_Condition = _Comparison | _In | _Like | _Not | _Junction


@dataclass(frozen=True)
class _FieldItem:
    path: _Path


@dataclass(frozen=True)
class _CountItem:
    path: _Path | None  # None for COUNT()
    alias: str | None
    pos: int


@dataclass(frozen=True)
class _SubQuery:
    """`(SELECT fields FROM ChildRelationship ...)`: the parent's children, one list per record."""

    query: _Query  # its object_name is the child relationship's name
    pos: int


@dataclass(frozen=True)
class _Order:
    path: _Path
    descending: bool
    nulls_last: bool


@dataclass(frozen=True)
class _Query:
    items: tuple[_FieldItem | _CountItem | _SubQuery, ...]
    object_name: str
    object_pos: int
    where: _Condition | None
    order: tuple[_Order, ...]
    limit: int | None
    offset: int


# ---------------------------------------------------------------------------------------------------
# Parser

# Words SOQL reserves: never a field name.
_RESERVED = frozenset({"AND", "ASC", "DESC", "EXCLUDES", "FIRST", "FROM", "GROUP", "HAVING", "IN", "INCLUDES",
                       "LAST", "LIKE", "LIMIT", "NOT", "NULL", "NULLS", "OR", "SELECT", "WHERE", "WITH"})
_DATE_LITERALS = frozenset({
    "YESTERDAY", "TODAY", "TOMORROW", "LAST_90_DAYS", "NEXT_90_DAYS",
    "THIS_WEEK", "LAST_WEEK", "NEXT_WEEK", "THIS_MONTH", "LAST_MONTH", "NEXT_MONTH",
    "THIS_YEAR", "LAST_YEAR", "NEXT_YEAR"})
_DATE_LITERALS_N = frozenset({"LAST_N_DAYS", "NEXT_N_DAYS", "N_DAYS_AGO"})
# Real Salesforce date literals the local org does not implement yet: say so rather than "unexpected".
_LATER_DATE_LITERAL = re.compile(r"^(?:(?:THIS|LAST|NEXT)_(?:FISCAL_)?(?:QUARTER|YEAR)|"
                                 r"(?:LAST|NEXT)_N_(?:FISCAL_)?(?:WEEKS|MONTHS|QUARTERS|YEARS)|"
                                 r"N_(?:FISCAL_)?(?:WEEKS|MONTHS|QUARTERS|YEARS)_AGO)$")
_UNSUPPORTED_CLAUSES = {"GROUP": "GROUP BY", "HAVING": "HAVING", "WITH": "WITH", "USING": "USING SCOPE",
                        "FOR": "FOR VIEW/REFERENCE/UPDATE", "UPDATE": "UPDATE TRACKING/VIEWSTAT"}


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = _tokenize(text)
        self.index = 0
        self.nesting = 0  # NOTs and parentheses open around the condition being read

    # -- helpers

    def peek(self, ahead: int = 0) -> _Token:
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

    def advance(self) -> _Token:
        token = self.peek()
        self.index = min(self.index + 1, len(self.tokens) - 1)
        return token

    def is_word(self, token: _Token, *words: str) -> bool:
        return token.kind == "ident" and token.arg is None and token.text.upper() in words

    def at_word(self, *words: str) -> bool:
        return self.is_word(self.peek(), *words)

    def fail(self, token: _Token, reason: str | None = None) -> SoqlError:
        shown = token.text if token.kind == "eof" else f"'{token.text}'"
        return _error("MALFORMED_QUERY", self.text, token.pos, reason or f"unexpected token: {shown}")

    def expect_word(self, word: str) -> _Token:
        if not self.at_word(word):
            raise self.fail(self.peek())
        return self.advance()

    def expect(self, kind: str) -> _Token:
        if self.peek().kind != kind:
            raise self.fail(self.peek())
        return self.advance()

    # -- grammar

    def query(self) -> _Query:
        parsed = self.query_body(nested=False)
        self.expect("eof")
        return parsed

    def query_body(self, nested: bool) -> _Query:
        """SELECT ... FROM ... and its clauses; `nested` for a parent-to-child subquery."""
        self.expect_word("SELECT")
        items = self.select_list(nested)
        self.expect_word("FROM")
        target = self.peek()
        if target.kind != "ident" or target.arg is not None:
            raise self.fail(target)
        self.advance()
        where = None
        if self.at_word("WHERE"):
            self.advance()
            where = self.condition()
        if self.peek().kind == "ident" and self.peek().text.upper() in _UNSUPPORTED_CLAUSES:
            clause = _UNSUPPORTED_CLAUSES[self.peek().text.upper()]
            raise self.fail(self.peek(), f"{clause} is not supported by the local org")
        order: list[_Order] = []
        if self.at_word("ORDER"):
            self.advance()
            self.expect_word("BY")
            order.append(self.order_item())
            while self.peek().kind == ",":
                self.advance()
                order.append(self.order_item())
        limit = None
        if self.at_word("LIMIT"):
            self.advance()
            limit = self.count_argument("LIMIT")
        offset = 0
        if self.at_word("OFFSET") and not nested:
            self.advance()
            offset_token = self.peek()
            offset = self.count_argument("OFFSET")
            if offset > MAX_OFFSET:
                raise _error("NUMBER_OUTSIDE_VALID_RANGE", self.text, offset_token.pos,
                             f"Maximum SOQL offset allowed is {MAX_OFFSET}")
        return _Query(tuple(items), target.text, target.pos, where, tuple(order), limit, offset)

    def select_list(self, nested: bool) -> list[_FieldItem | _CountItem | _SubQuery]:
        items = [self.select_item(nested)]
        while self.peek().kind == ",":
            self.advance()
            items.append(self.select_item(nested))
        count_all = next((i for i in items if isinstance(i, _CountItem) and i.path is None), None)
        if count_all is not None and len(items) > 1:
            raise _error("MALFORMED_QUERY", self.text, count_all.pos,
                         "COUNT() can't be combined with other fields or aggregates")
        return items

    def select_item(self, nested: bool) -> _FieldItem | _CountItem | _SubQuery:
        token = self.peek()
        if token.kind == "(":
            if nested:
                raise self.fail(token, "a subquery can't hold another subquery")
            self.advance()
            subquery = _SubQuery(self.query_body(nested=True), token.pos)
            self.expect(")")
            return subquery
        if token.kind == "ident" and self.peek(1).kind == "(":
            if token.text.upper() != "COUNT":
                raise self.fail(token, f"{token.text.upper()}() is not supported by the local org")
            self.advance()
            self.advance()
            if self.peek().kind == ")":
                self.advance()
                return _CountItem(None, None, token.pos)
            path = self.path()
            self.expect(")")
            alias = None
            following = self.peek()
            if following.kind == "ident" and following.arg is None \
                    and following.text.upper() not in _RESERVED:
                alias = self.advance().text
            return _CountItem(path, alias, token.pos)
        if self.is_word(token, "TYPEOF"):
            raise self.fail(token, "TYPEOF is not supported by the local org")
        return _FieldItem(self.path())

    def path(self) -> _Path:
        first = self.peek()
        names = [self.name().text]
        while self.peek().kind == ".":
            self.advance()
            names.append(self.name().text)
        return _Path(tuple(names), first.pos)

    def name(self) -> _Token:
        token = self.peek()
        if token.kind != "ident" or token.arg is not None or token.text.upper() in _RESERVED:
            raise self.fail(token)
        return self.advance()

    def order_item(self) -> _Order:
        path = self.path()
        descending = False
        if self.at_word("ASC", "DESC"):
            descending = self.advance().text.upper() == "DESC"
        nulls_last = False  # nulls first by default, whatever the direction (see the spec, 4.1)
        if self.at_word("NULLS"):
            self.advance()
            if not self.at_word("FIRST", "LAST"):
                raise self.fail(self.peek())
            nulls_last = self.advance().text.upper() == "LAST"
        return _Order(path, descending, nulls_last)

    def count_argument(self, clause: str) -> int:
        token = self.peek()
        if token.kind != "number" or not token.text.isdigit() or int(token.text) > _MAX_LIMIT:
            raise self.fail(token, f"{clause} needs a non-negative integer up to {_MAX_LIMIT}, "
                                   f"not '{token.text}'")
        self.advance()
        return int(token.text)

    def condition(self) -> _Condition:
        """Operands joined by one kind of junction: `a AND b AND c` or `a OR b`, never both."""
        operands = [self.unary()]
        junction: str | None = None
        while self.at_word("AND", "OR"):
            token = self.advance()
            word = token.text.upper()
            if junction is not None and word != junction:
                raise self.fail(token, f"unexpected token: '{token.text}' (AND and OR can't be mixed "
                                       "without parentheses)")
            junction = word
            operands.append(self.unary())
        if junction is None:
            return operands[0]
        return _Junction(junction, tuple(operands))

    def unary(self) -> _Condition:
        if not self.at_word("NOT") and self.peek().kind != "(":
            return self.predicate()
        opening = self.advance()
        # Bounded, so that no query runs the parser (or SQLite) out of stack.
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise self.fail(opening, f"conditions nest at most {MAX_NESTING} deep in the local org")
        if opening.kind == "(":
            inner = self.condition()
            self.expect(")")
        else:
            inner = _Not(self.unary())
        self.nesting -= 1
        return inner

    def predicate(self) -> _Condition:
        path = self.path()
        token = self.peek()
        if token.kind == "op":
            self.advance()
            return _Comparison(path, "!=" if token.text == "<>" else token.text, self.value())
        if self.is_word(token, "IN"):
            self.advance()
            return _In(path, False, self.value_list())
        if self.is_word(token, "NOT"):
            following = self.peek(1)
            if self.is_word(following, "IN"):
                self.advance()
                self.advance()
                return _In(path, True, self.value_list())
            if self.is_word(following, "LIKE"):
                raise self.fail(token, "unexpected token: 'NOT' (SOQL has no infix NOT LIKE; "
                                       "write NOT field LIKE 'pattern')")
            raise self.fail(token)
        if self.is_word(token, "LIKE"):
            self.advance()
            pattern = self.value()
            if not isinstance(pattern, _Text):
                raise _error("MALFORMED_QUERY", self.text, pattern.pos, "LIKE needs a quoted string")
            return _Like(path, pattern)
        if self.is_word(token, "INCLUDES", "EXCLUDES"):
            raise self.fail(token, f"{token.text.upper()} is not supported by the local org")
        raise self.fail(token)

    def value_list(self) -> tuple[_Value, ...]:
        self.expect("(")
        if self.at_word("SELECT"):
            raise self.fail(self.peek(), "semi-join sub-selects are not supported by the local org")
        values = [self.value()]
        while self.peek().kind == ",":
            self.advance()
            values.append(self.value())
        self.expect(")")
        return tuple(values)

    def value(self) -> _Value:
        token = self.advance()
        if token.kind == "string":
            return _Text(token.value, token.chars, token.pos)
        if token.kind == "number":
            return _Number(token.value, token.pos)
        if token.kind == "date":
            return _Date(token.value, token.pos)
        if token.kind == "datetime":
            return _DateTime(token.value, token.pos)
        if token.kind == "ident":
            word = token.word.upper()
            if word in ("TRUE", "FALSE") and token.arg is None:
                return _Bool(word == "TRUE", token.pos)
            if word == "NULL" and token.arg is None:
                return _Null(token.pos)
            if (word in _DATE_LITERALS and token.arg is None) or (word in _DATE_LITERALS_N
                                                                  and token.arg is not None):
                return _DateLiteral(word, token.arg, token.pos)
            if word in _DATE_LITERALS_N:
                raise self.fail(token, f"date literal {word} needs a number: {word}:n")
            if _LATER_DATE_LITERAL.match(word):
                raise self.fail(token, f"date literal {word} is not supported by the local org")
        raise self.fail(token)


# ---------------------------------------------------------------------------------------------------
# The compiled query

@dataclass(frozen=True)
class Column:
    """One selected field: its path in describe casing (`("Account", "Name")`) and the field at its end."""

    path: tuple[str, ...]
    field: SField

    @property
    def name(self) -> str:
        """The dotted name Bulk CSV uses: `Account.Name`."""
        return ".".join(self.path)


@dataclass(frozen=True)
class Aggregate:
    """One `COUNT(path) [alias]` item: its result key (the alias, or expr0, expr1, ...) and what it counts."""

    name: str
    path: tuple[str, ...]
    field: SField
    position: int  # of its count in the aggregate row (items counting the same path share one)


@dataclass(frozen=True)
class _Leaf:
    field: SField
    index: int  # position in a fetched row


@dataclass(frozen=True)
class _Children:
    """A subquery's place in the result shape: the record's children, fetched by its Id."""

    query: CompiledQuery


@dataclass
class _Node:
    """One record in the result shape: the root, or a parent reached through a relationship."""

    obj: SObject
    id_index: int  # position of this record's Id in a fetched row (null when the lookup is empty)
    entries: list[tuple[str, _Node | _Leaf | _Children]] = field(default_factory=list)

    def child(self, key: str) -> _Node | None:
        return next((e for k, e in self.entries if k == key and isinstance(e, _Node)), None)


@dataclass(frozen=True)
class CompiledQuery:
    """A checked query and its SQL. Every `*_sql` statement takes `params`, in order."""

    text: str
    object: SObject
    count_only: bool  # SELECT COUNT()
    columns: tuple[Column, ...]  # selected fields in SELECT order (empty for COUNT() and aggregates)
    aggregates: tuple[Aggregate, ...]  # COUNT(path) items in SELECT order
    ids_sql: str  # the matching root Ids, ordered, after OFFSET and LIMIT
    count_sql: str  # how many Ids ids_sql returns
    aggregate_sql: str  # one row of counts, one per aggregate ("" when there are none)
    params: tuple[Any, ...]  # a subquery's `ids_sql` takes the parent's Id before them
    limit: int | None
    offset: int
    _fetch_sql: str = field(repr=False)  # SELECT ... FROM ... joins, without WHERE
    _shape: _Node = field(repr=False)  # how a fetched row becomes a record
    _column_indexes: tuple[int, ...] = field(repr=False)  # where each column sits in a fetched row

    @property
    def is_aggregate(self) -> bool:
        return bool(self.aggregates)

    @property
    def has_subqueries(self) -> bool:
        return any(isinstance(entry, _Children) for _, entry in self._shape.entries)

    @property
    def csv_header(self) -> list[str]:
        """Bulk CSV column names in SELECT order, dotted for relationships (`Account.Name`)."""
        return [c.name for c in self.columns]

    def fetch_ids(self, db: sqlite3.Connection) -> list[str]:
        return [row[0] for row in db.execute(self.ids_sql, self.params)]

    def fetch_count(self, db: sqlite3.Connection) -> int:
        return int(db.execute(self.count_sql, self.params).fetchone()[0])

    def fetch_records(self, db: sqlite3.Connection, record_ids: Sequence[str],
                      version: str) -> list[dict[str, Any]]:
        """The records with these Ids, in this order, as the REST API shows them.

        Ids no longer in the table are skipped."""
        records = []
        for row in self._rows(db, record_ids):
            record = _record(self._shape, row, version)
            assert record is not None  # the root Id is never null
            for key, entry in self._shape.entries:
                if isinstance(entry, _Children):
                    record[key] = entry.query.fetch_children(db, row[self._shape.id_index], version)
            records.append(record)
        return records

    def fetch_children(self, db: sqlite3.Connection, parent_id: str,
                       version: str) -> dict[str, Any] | None:
        """A subquery's answer for one parent: null without children, as Salesforce answers."""
        child_ids = [row[0] for row in db.execute(self.ids_sql, (parent_id, *self.params))]
        if not child_ids:
            return None
        records = self.fetch_records(db, child_ids, version)
        return {"totalSize": len(records), "done": True, "records": records}

    def column_metadata(self) -> dict[str, Any]:
        """What `query?columns=true` answers: the selected columns, without running the query."""
        if self.aggregates:
            columns = [_column_entry(a.name, f"COUNT({'.'.join(a.path)})", "Integer",
                                     aggregate=True) for a in self.aggregates]
        else:
            columns = _shape_columns(self._shape, ())
        return {"columnMetadata": columns, "entityName": self.object.name,
                "groupBy": False, "idSelected": any(c.path == ("Id",) for c in self.columns),
                "keyPrefixes": [self.object.key_prefix]}

    def fetch_rows(self, db: sqlite3.Connection, record_ids: Sequence[str]) -> list[list[str]]:
        """The records with these Ids, in this order, as Bulk CSV cells (null is an empty cell)."""
        return [[csv_text(c.field, row[i]) for c, i in zip(self.columns, self._column_indexes, strict=True)]
                for row in self._rows(db, record_ids)]

    def fetch_aggregates(self, db: sqlite3.Connection) -> list[dict[str, Any]]:
        """`[{"attributes": {"type": "AggregateResult"}, "expr0": n, ...}]` (empty past LIMIT/OFFSET)."""
        if not self.aggregates:
            return []
        rows = db.execute(self.aggregate_sql, self.params).fetchall()
        return [{"attributes": {"type": "AggregateResult"},
                 **{a.name: int(row[a.position]) for a in self.aggregates}} for row in rows]

    def _rows(self, db: sqlite3.Connection, record_ids: Sequence[str]) -> list[tuple[Any, ...]]:
        by_id: dict[str, tuple[Any, ...]] = {}
        for start in range(0, len(record_ids), _FETCH_CHUNK):
            chunk = list(record_ids[start:start + _FETCH_CHUNK])
            marks = ", ".join("?" * len(chunk))
            for row in db.execute(f'{self._fetch_sql} WHERE t0."Id" IN ({marks})', chunk):
                by_id[row[0]] = row
        return [by_id[i] for i in record_ids if i in by_id]


def _record(node: _Node, row: tuple[Any, ...], version: str) -> dict[str, Any] | None:
    record_id = row[node.id_index]
    if record_id is None:
        return None  # an empty lookup, or a parent that is gone
    record: dict[str, Any] = {"attributes": {
        "type": node.obj.name, "url": f"/services/data/v{version}/sobjects/{node.obj.name}/{record_id}"}}
    for key, entry in node.entries:
        if isinstance(entry, _Node):
            record[key] = _record(entry, row, version)
        elif isinstance(entry, _Children):
            record[key] = None  # keeps its place in SELECT order; fetch_records fills it in
        else:
            record[key] = from_storage(entry.field, row[entry.index])
    return record


_APEX_TYPES = {"id": "Id", "reference": "Id", "boolean": "Boolean", "int": "Integer",
               "double": "Double", "currency": "Decimal", "percent": "Double", "date": "Date",
               "datetime": "Datetime", "time": "Time"}


def _column_entry(name: str, display: str, apex_type: str | None, aggregate: bool = False,
                  joins: list[dict[str, Any]] | None = None, f: SField | None = None) -> dict[str, Any]:
    return {"aggregate": aggregate, "apexType": apex_type, "booleanType": apex_type == "Boolean",
            "columnName": name, "custom": bool(f and f.custom), "displayName": display,
            "foreignKeyName": None, "insertable": bool(f and f.createable),
            "joinColumns": joins or [], "numberType": apex_type in ("Integer", "Double", "Decimal"),
            "textType": apex_type == "String", "updatable": bool(f and f.updateable)}


def _shape_columns(node: _Node, prefix: tuple[str, ...]) -> list[dict[str, Any]]:
    """Column metadata of a record shape: fields, parents with their fields, subqueries."""
    columns = []
    for key, entry in node.entries:
        display = ".".join((*prefix, key))
        if isinstance(entry, _Leaf):
            columns.append(_column_entry(key, display, _APEX_TYPES.get(entry.field.type, "String"),
                                         f=entry.field))
        elif isinstance(entry, _Node):
            columns.append(_column_entry(key, display, None, joins=_shape_columns(entry, (*prefix, key))))
        else:
            columns.append(_column_entry(key, display, None, aggregate=True,
                                         joins=_shape_columns(entry.query._shape, ())))
    return columns


# ---------------------------------------------------------------------------------------------------
# Compiler

@dataclass(frozen=True)
class _Join:
    alias: str
    obj: SObject
    parent_alias: str
    reference: SField  # the reference field on the parent alias's table


@dataclass(frozen=True)
class _Target:
    """A path resolved against the schema."""

    path: tuple[str, ...]  # describe casing
    field: SField
    column: str  # SQL: alias."Field"
    joins: tuple[_Join, ...]  # one per relationship along the path

    @property
    def name(self) -> str:
        return ".".join(self.path)


@dataclass(frozen=True)
class _SubTarget:
    """A subquery resolved against the schema: the child relationship's name and its query."""

    name: str  # describe casing: Contacts
    query: CompiledQuery


@dataclass(frozen=True)
class _Point:
    value: Any  # a stored value


@dataclass(frozen=True)
class _Range:
    start: Any  # inclusive, as stored
    end: Any  # exclusive, as stored


_Bound = _Point | _Range | None  # None: the value null
_Sql = tuple[str, list[Any]]

_NOT_TEXT = NUMBER_TYPES | {"boolean", "date", "datetime"}
_XSD_NAMES = {"boolean": "boolean", "int": "integer", "double": "double", "currency": "double",
              "percent": "double", "date": "date", "datetime": "dateTime", "id": "id", "reference": "id"}


def _is_text(f: SField) -> bool:
    return f.type not in _NOT_TEXT


def _equality_collation(f: SField) -> str:
    # Ids compare case-insensitively too: two distinct 18-character ids never differ only in case
    # (their suffix encodes the case), and the reference indexes are NOCASE.
    return " COLLATE NOCASE" if _is_text(f) and not f.case_sensitive else ""


def _ordering_collation(f: SField) -> str:
    # Ids order by their exact text (creation order), as ORDER BY Id and paging by `Id > x` expect.
    if f.type in ("id", "reference") or not _is_text(f) or f.case_sensitive:
        return ""
    return " COLLATE NOCASE"


class _Compiler:
    def __init__(self, text: str, schema: OrgSchema, include_deleted: bool, now: dt.datetime) -> None:
        self.text = text
        self.schema = schema
        self.include_deleted = include_deleted
        if now.tzinfo is None:
            now = now.replace(tzinfo=dt.UTC)
        self.now = now
        self.today = now.astimezone(dt.UTC).date()
        self.joins: dict[tuple[str, ...], _Join] = {}
        self.root: SObject | None = None

    def compile(self, query: _Query, link: tuple[SObject, SField] | None = None) -> CompiledQuery:
        """The query, or with `link` (the child object and its reference to the parent) a
        subquery whose `ids_sql` selects one parent's children."""
        root = link[0] if link is not None else self.schema.get(query.object_name)
        if root is None:
            raise _error("INVALID_TYPE", self.text, query.object_pos,
                         f"sObject type '{query.object_name}' is not supported.")
        self.root = root

        count_only = any(isinstance(i, _CountItem) and i.path is None for i in query.items)
        targets, aggregates = self.select(query)
        if link is not None and (aggregates or count_only):
            raise _error("MALFORMED_QUERY", self.text, query.object_pos,
                         "a subquery can't count or aggregate")
        where_sql, params = self.condition(query.where) if query.where is not None else ("", [])
        order_sql = self.order(query.order, bool(aggregates))

        from_sql = f"FROM {quote(root.name)} AS t0" + "".join(
            f" LEFT JOIN {quote(j.obj.name)} AS {j.alias} ON {j.alias}.\"Id\" = "
            f"{j.parent_alias}.{quote(j.reference.name)}" + self.not_deleted(j.alias, " AND ")
            for j in self.joins.values())
        link_sql = f"t0.{quote(link[1].name)} = ?" if link is not None else ""
        filters = [f for f in (self.not_deleted("t0", ""), link_sql, where_sql) if f]
        filter_sql = " WHERE " + " AND ".join(filters) if filters else ""
        paging = " LIMIT ? OFFSET ?"
        all_params = (*params, -1 if query.limit is None else query.limit, query.offset)

        ids_sql = f'SELECT t0."Id" {from_sql}{filter_sql} ORDER BY {order_sql}{paging}'
        aggregate_sql = ""
        # Each counted column once: SQLite returns 2000 columns at most.
        counted = list(dict.fromkeys(t.column for _, t in aggregates))
        if aggregates:
            # One result row, so LIMIT and OFFSET apply to it as Salesforce applies them to grouped rows.
            counts = ", ".join(f"COUNT({column})" for column in counted)
            aggregate_sql = f"SELECT {counts} {from_sql}{filter_sql}{paging}"

        shape, fetch_sql, column_indexes = self.shape(root, targets, from_sql)
        return CompiledQuery(
            text=self.text, object=root, count_only=count_only,
            columns=tuple(Column(t.path, t.field) for t in targets if isinstance(t, _Target)),
            aggregates=tuple(Aggregate(name, t.path, t.field, counted.index(t.column))
                             for name, t in aggregates),
            ids_sql=ids_sql, count_sql=f"SELECT COUNT(*) FROM ({ids_sql})", aggregate_sql=aggregate_sql,
            params=all_params, limit=query.limit, offset=query.offset,
            _fetch_sql=fetch_sql, _shape=shape, _column_indexes=column_indexes)

    def not_deleted(self, alias: str, prefix: str) -> str:
        # Parents are joined only while they exist, so a deleted parent shows as an empty lookup.
        return "" if self.include_deleted else f'{prefix}{alias}."IsDeleted" IS NOT 1'

    # -- names

    def resolve(self, path: _Path) -> _Target:
        assert self.root is not None
        names = list(path.names)
        obj = self.root
        # `SELECT Account.Name FROM Account`: a leading object name qualifies the path.
        if len(names) > 1 and names[0].lower() == obj.name.lower() and obj.relationship(names[0]) is None:
            names = names[1:]
        if len(names) - 1 > MAX_RELATIONSHIP_DEPTH:
            raise _error("MALFORMED_QUERY", self.text, path.pos,
                         f"A field path can follow at most {MAX_RELATIONSHIP_DEPTH} relationships")
        alias = "t0"
        chain: tuple[str, ...] = ()
        described: list[str] = []
        joins: list[_Join] = []
        for name in names[:-1]:
            reference = obj.relationship(name)
            parent = self.schema.get(reference.reference_to[0]) \
                if reference is not None and len(reference.reference_to) == 1 else None
            if reference is None or parent is None:
                raise _error("INVALID_FIELD", self.text, path.pos,
                             f"Didn't understand relationship '{name}' in field path.")
            chain += (name.lower(),)
            join = self.joins.get(chain)
            if join is None:
                if len(self.joins) == MAX_RELATIONSHIPS:
                    raise _error("MALFORMED_QUERY", self.text, path.pos,
                                 f"No more than {MAX_RELATIONSHIPS} child-to-parent relationships can "
                                 "be specified in a query")
                join = _Join(f"t{len(self.joins) + 1}", parent, alias, reference)
                self.joins[chain] = join
            joins.append(join)
            described.append(reference.relationship_name or name)
            obj, alias = parent, join.alias
        found = obj.field(names[-1])
        if found is None:
            raise _error("INVALID_FIELD", self.text, path.pos,
                         f"No such column '{names[-1]}' on entity '{obj.name}'.")
        return _Target((*described, found.name), found, f"{alias}.{quote(found.name)}", tuple(joins))

    def select(self, query: _Query) -> tuple[list[_Target | _SubTarget], list[tuple[str, _Target]]]:
        targets: list[_Target | _SubTarget] = []
        aggregates: list[tuple[str, _Target]] = []
        seen: set[str] = set()
        unnamed = 0
        subqueries = [i for i in query.items if isinstance(i, _SubQuery)]
        if len(subqueries) > MAX_SUBQUERIES:
            raise _error("MALFORMED_QUERY", self.text, subqueries[MAX_SUBQUERIES].pos,
                         f"A query can hold at most {MAX_SUBQUERIES} subqueries")
        for item in query.items:
            if isinstance(item, _SubQuery):
                sub = self.subquery(item)
                if sub.name.lower() in seen:
                    raise _error("MALFORMED_QUERY", self.text, item.pos,
                                 f"duplicate subquery: {sub.name}")
                seen.add(sub.name.lower())
                targets.append(sub)
            elif isinstance(item, _FieldItem):
                target = self.resolve(item.path)
                key = ".".join(target.path).lower()
                if key in seen:
                    raise _error("MALFORMED_QUERY", self.text, item.path.pos,
                                 f"duplicate field selected: {'.'.join(target.path)}")
                seen.add(key)
                targets.append(target)
            elif item.path is not None:
                target = self.resolve(item.path)
                if item.alias is None:
                    name = f"expr{unnamed}"
                    unnamed += 1
                else:
                    name = item.alias
                if name.lower() in seen:
                    raise _error("MALFORMED_QUERY", self.text, item.pos, f"duplicate alias: {name}")
                seen.add(name.lower())
                aggregates.append((name, target))
        if aggregates and targets:
            first = next(i for i in query.items if not isinstance(i, _CountItem))
            position = first.path.pos if isinstance(first, _FieldItem) else first.pos
            raise _error("MALFORMED_QUERY", self.text, position,
                         f"Field must be grouped or aggregated: {targets[0].name}")
        return targets, aggregates

    def subquery(self, item: _SubQuery) -> _SubTarget:
        """A parent-to-child subquery, compiled on its own against the child object."""
        assert self.root is not None
        relationship = item.query.object_name
        found = self.schema.child_relationship(self.root, relationship)
        if found is None:
            raise _error("INVALID_TYPE", self.text, item.query.object_pos,
                         f"Didn't understand relationship '{relationship}' in FROM part of query "
                         "call. If you are attempting to use a custom relationship, be sure to "
                         "append the '__r' after the custom relationship name.")
        child = _Compiler(self.text, self.schema, self.include_deleted, self.now)
        compiled = child.compile(item.query, link=found)
        described = found[1].child_relationship
        assert described is not None  # child_relationship found it by this name
        return _SubTarget(described, compiled)

    def shape(self, root: SObject, targets: list[_Target | _SubTarget],
              from_sql: str) -> tuple[_Node, str, tuple[int, ...]]:
        """The record tree the selected columns form, the SELECT that fetches its values, and where
        each column sits in a fetched row."""
        expressions: list[str] = []

        def index(expression: str) -> int:
            if expression not in expressions:
                expressions.append(expression)
            return expressions.index(expression)

        tree = _Node(root, index('t0."Id"'))
        column_indexes = []
        for target in targets:
            if isinstance(target, _SubTarget):
                tree.entries.append((target.name, _Children(target.query)))
                continue
            node = tree
            for key, join in zip(target.path[:-1], target.joins, strict=True):
                child = node.child(key)
                if child is None:
                    child = _Node(join.obj, index(f'{join.alias}."Id"'))
                    node.entries.append((key, child))
                node = child
            column_indexes.append(index(target.column))
            node.entries.append((target.path[-1], _Leaf(target.field, column_indexes[-1])))
        return tree, f"SELECT {', '.join(expressions)} {from_sql}", tuple(column_indexes)

    # -- ORDER BY

    def order(self, order: tuple[_Order, ...], aggregate: bool) -> str:
        if order and aggregate:
            raise _error("MALFORMED_QUERY", self.text, order[0].path.pos,
                         "Ordered field must be grouped or aggregated")
        terms = []
        ordered: set[str] = set()
        by_id = False
        for item in order:
            target = self.resolve(item.path)
            if target.field.type == "textarea":
                raise _error("INVALID_FIELD", self.text, item.path.pos,
                             f"field '{target.field.name}' can not be sorted in a query call")
            if target.column in ordered:
                continue  # a repeated key orders nothing more (and SQLite takes 2000 at most)
            ordered.add(target.column)
            by_id = by_id or target.column == 't0."Id"'
            direction = " DESC" if item.descending else ""
            nulls = "LAST" if item.nulls_last else "FIRST"
            terms.append(f"{target.column}{_ordering_collation(target.field)}{direction} NULLS {nulls}")
        if not by_id:
            terms.append('t0."Id"')  # no ORDER BY: by Id; with one, Id breaks ties so pages are stable
        return ", ".join(terms)

    # -- WHERE

    def condition(self, cond: _Condition) -> _Sql:
        """SQL that is true or false, never NULL (see the module docstring)."""
        if isinstance(cond, _Junction):
            parts = [self.condition(c) for c in cond.operands]
            return _joined([sql for sql, _ in parts], cond.op), [p for _, params in parts for p in params]
        if isinstance(cond, _Not):
            sql, params = self.condition(cond.operand)
            return f"NOT ({sql})", params
        target = self.resolve(cond.path)
        f = target.field
        # Booleans are never null in Salesforce; a null through an empty lookup reads as false, and
        # `= null` means `= false` (documented).
        column = f"coalesce({target.column}, 0)" if f.type == "boolean" else target.column
        if isinstance(cond, _Like):
            return self.like(column, f, cond)
        if isinstance(cond, _In):
            return self.in_list(column, f, cond)
        return self.compare(column, f, cond.op, self.bind(f, cond.value, cond.path))

    def compare(self, column: str, f: SField, op: str, bound: _Bound) -> _Sql:
        if bound is None:
            if op == "=":
                return f"{column} IS NULL", []
            if op == "!=":
                return f"{column} IS NOT NULL", []
            return "0", []  # nothing is less or greater than null
        if isinstance(bound, _Point):
            if op == "=":
                return f"({column} IS NOT NULL AND {column}{_equality_collation(f)} = ?)", [bound.value]
            if op == "!=":
                return f"({column} IS NULL OR {column}{_equality_collation(f)} != ?)", [bound.value]
            return f"({column} IS NOT NULL AND {column}{_ordering_collation(f)} {op} ?)", [bound.value]
        # A date literal: `=` is inside [start, end), `<` before start, `>` after end.
        start, end = bound.start, bound.end
        if op == "=":
            return f"({column} IS NOT NULL AND {column} >= ? AND {column} < ?)", [start, end]
        if op == "!=":
            return f"({column} IS NULL OR {column} < ? OR {column} >= ?)", [start, end]
        operator, value = {"<": ("<", start), "<=": ("<", end), ">": (">=", end), ">=": (">=", start)}[op]
        return f"({column} IS NOT NULL AND {column} {operator} ?)", [value]

    def in_list(self, column: str, f: SField, cond: _In) -> _Sql:
        bounds = [self.bind(f, v, cond.path) for v in cond.values]
        points = [b.value for b in bounds if isinstance(b, _Point)]
        parts: list[str] = []
        params: list[Any] = []
        if points:
            parts.append(f"{column}{_equality_collation(f)} IN ({', '.join('?' * len(points))})")
            params.extend(points)
        for b in bounds:
            if isinstance(b, _Range):
                parts.append(f"({column} >= ? AND {column} < ?)")
                params.extend((b.start, b.end))
        sql = f"({column} IS NOT NULL AND {_joined(parts, 'OR')})" if parts else "0"
        if any(b is None for b in bounds):
            sql = f"({column} IS NULL OR {sql})"
        # The positive form is never NULL, so its negation also matches null rows (unless null is listed).
        return (f"NOT {sql}" if cond.negated else sql), params

    def like(self, column: str, f: SField, cond: _Like) -> _Sql:
        if not _is_text(f):
            raise self.type_error(f, cond.path)
        if f.case_sensitive:
            # GLOB is SQLite's case-sensitive matcher: * and ? are its wildcards, [c] a literal c.
            glob = "".join(("*" if ch == "%" else "?") if ch in "%_" and not escaped
                           else (f"[{ch}]" if ch in "*?[" else ch) for ch, escaped in cond.pattern.chars)
            return f"({column} IS NOT NULL AND {column} GLOB ?)", [glob]
        pattern = "".join(ch if ch in "%_" and not escaped else ("\\" + ch if ch in "%_\\" else ch)
                          for ch, escaped in cond.pattern.chars)
        return f"({column} IS NOT NULL AND {column} LIKE ? ESCAPE '\\')", [pattern]

    # -- values

    def bind(self, f: SField, value: _Value, path: _Path) -> _Bound:
        """The stored form of a filter value for this field, or an error if the types don't fit."""
        kind = f.type
        if isinstance(value, _Null):
            return _Point(0) if kind == "boolean" else None
        if kind == "boolean":
            if isinstance(value, _Bool):
                return _Point(int(value.value))
        elif kind in NUMBER_TYPES:
            if isinstance(value, _Number):
                return _Point(value.value)
        elif kind == "date":
            if isinstance(value, _Date):
                return _Point(value.value.isoformat())
            if isinstance(value, _DateLiteral):
                start, end = _date_range(value, self.today)
                return _Range(start.isoformat(), end.isoformat())
        elif kind == "datetime":
            if isinstance(value, _DateTime):
                return _Point(stored_datetime(value.value))
            if isinstance(value, _DateLiteral):
                # A date literal on a datetime field covers its whole days, from midnight UTC.
                start, end = _date_range(value, self.today)
                return _Range(_midnight(start), _midnight(end))
        elif kind in ("id", "reference"):
            if isinstance(value, _Text):
                normal = sfid.to18(value.value)
                if normal is None:
                    raise _error("INVALID_QUERY_FILTER_OPERATOR", self.text, value.pos,
                                 f"invalid ID field: {value.value}")
                return _Point(normal)
        elif isinstance(value, _Text):
            return _Point(value.value)
        raise self.type_error(f, path)

    def type_error(self, f: SField, path: _Path) -> SoqlError:
        name = _XSD_NAMES.get(f.type, "string")
        quotes = "should be enclosed in quotes" if name in ("string", "id") else \
            "should not be enclosed in quotes"
        return _error("INVALID_FIELD", self.text, path.pos,
                      f"value of filter criterion for field '{f.name}' must be of type {name} and {quotes}")


def _joined(parts: list[str], op: str) -> str:
    """`(a OP b OP c ...)`. SQLite refuses an expression over 1000 deep, and a chain of one operator is
    as deep as it is long; so a long chain is cut into parenthesised runs of _RUN operands."""
    if len(parts) > _RUN:
        parts = [_joined(parts[i:i + _RUN], op) for i in range(0, len(parts), _RUN)]
    return "(" + f" {op} ".join(parts) + ")"


def _midnight(day: dt.date) -> str:
    return stored_datetime(dt.datetime.combine(day, dt.time(), dt.UTC))


def _add_months(first: dt.date, months: int) -> dt.date:
    index = first.year * 12 + first.month - 1 + months
    return dt.date(index // 12, index % 12 + 1, 1)


def _days_after(day: dt.date, days: int) -> dt.date:
    """`day` moved by `days`, held within years 1 to 9999 (a range past them ends there)."""
    ordinal = min(max(day.toordinal() + days, 1), dt.date.max.toordinal())
    return dt.date.fromordinal(ordinal)


def _date_range(literal: _DateLiteral, today: dt.date) -> tuple[dt.date, dt.date]:
    """[first day, day after the last day) of a date literal, relative to today (UTC)."""
    day = dt.timedelta(days=1)
    name, n = literal.name, literal.n
    if name == "YESTERDAY":
        return today - day, today
    if name == "TODAY":
        return today, today + day
    if name == "TOMORROW":
        return today + day, today + 2 * day
    if name in ("LAST_N_DAYS", "LAST_90_DAYS"):
        # Counts back from today and includes it: LAST_N_DAYS:1 is yesterday and today.
        return _days_after(today, -(90 if n is None else n)), today + day
    if name in ("NEXT_N_DAYS", "NEXT_90_DAYS"):
        return today + day, _days_after(today, 1 + (90 if n is None else n))
    if name == "N_DAYS_AGO":
        assert n is not None
        return _days_after(today, -n), _days_after(today, 1 - n)
    shift = {"THIS": 0, "LAST": -1, "NEXT": 1}[name.split("_")[0]]
    if name.endswith("_WEEK"):
        sunday = today - ((today.weekday() + 1) % 7) * day  # weeks start on Sunday (en_US)
        start = sunday + 7 * shift * day
        return start, start + 7 * day
    if name.endswith("_MONTH"):
        start = _add_months(today.replace(day=1), shift)
        return start, _add_months(start, 1)
    year = today.year + shift  # *_YEAR
    return dt.date(year, 1, 1), dt.date(year + 1, 1, 1)


# ---------------------------------------------------------------------------------------------------

def compile(text: str, schema: OrgSchema, *, include_deleted: bool, now: dt.datetime) -> CompiledQuery:
    """Parse and check a SOQL query; raises SoqlError as Salesforce would refuse it.

    `include_deleted` is queryAll (soft-deleted rows too); `now` is the org's clock, for date literals.
    """
    if len(text) > MAX_LENGTH:
        raise SoqlError("MALFORMED_QUERY", f"SOQL statements cannot be longer than {MAX_LENGTH} "
                                           f"characters; this one has {len(text)}.")
    return _Compiler(text, schema, include_deleted, now).compile(_Parser(text).query())
