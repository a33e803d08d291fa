"""A recursive-descent parser from tokens to the syntax tree. It knows nothing about the schema."""

from __future__ import annotations

import re

from patchbay.localorg.soql.errors import SoqlError, error_at
from patchbay.localorg.soql.lexer import Token, tokenize
from patchbay.localorg.soql.limits import MAX_NESTING, MAX_OFFSET
from patchbay.localorg.soql.syntax import (
    Bool,
    Comparison,
    Condition,
    CountItem,
    Date,
    DateLiteral,
    DateTime,
    FieldItem,
    In,
    Junction,
    Like,
    Not,
    Null,
    Number,
    Order,
    Path,
    Query,
    SubQuery,
    Text,
    Value,
)

_MAX_LIMIT = 2**31 - 1  # the largest LIMIT (ours: Salesforce's integers are 32-bit)

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


class Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.index = 0
        self.nesting = 0  # NOTs and parentheses open around the condition being read

    # -- helpers

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

    def advance(self) -> Token:
        token = self.peek()
        self.index = min(self.index + 1, len(self.tokens) - 1)
        return token

    def is_word(self, token: Token, *words: str) -> bool:
        return token.kind == "ident" and token.arg is None and token.text.upper() in words

    def at_word(self, *words: str) -> bool:
        return self.is_word(self.peek(), *words)

    def fail(self, token: Token, reason: str | None = None) -> SoqlError:
        shown = token.text if token.kind == "eof" else f"'{token.text}'"
        return error_at("MALFORMED_QUERY", self.text, token.pos, reason or f"unexpected token: {shown}")

    def expect_word(self, word: str) -> Token:
        if not self.at_word(word):
            raise self.fail(self.peek())
        return self.advance()

    def expect(self, kind: str) -> Token:
        if self.peek().kind != kind:
            raise self.fail(self.peek())
        return self.advance()

    # -- grammar

    def query(self) -> Query:
        parsed = self.query_body(nested=False)
        self.expect("eof")
        return parsed

    def query_body(self, nested: bool) -> Query:
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
        order: list[Order] = []
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
                raise error_at("NUMBER_OUTSIDE_VALID_RANGE", self.text, offset_token.pos,
                             f"Maximum SOQL offset allowed is {MAX_OFFSET}")
        return Query(tuple(items), target.text, target.pos, where, tuple(order), limit, offset)

    def select_list(self, nested: bool) -> list[FieldItem | CountItem | SubQuery]:
        items = [self.select_item(nested)]
        while self.peek().kind == ",":
            self.advance()
            items.append(self.select_item(nested))
        count_all = next((i for i in items if isinstance(i, CountItem) and i.path is None), None)
        if count_all is not None and len(items) > 1:
            raise error_at("MALFORMED_QUERY", self.text, count_all.pos,
                         "COUNT() can't be combined with other fields or aggregates")
        return items

    def select_item(self, nested: bool) -> FieldItem | CountItem | SubQuery:
        token = self.peek()
        if token.kind == "(":
            if nested:
                raise self.fail(token, "a subquery can't hold another subquery")
            self.advance()
            subquery = SubQuery(self.query_body(nested=True), token.pos)
            self.expect(")")
            return subquery
        if token.kind == "ident" and self.peek(1).kind == "(":
            if token.text.upper() != "COUNT":
                raise self.fail(token, f"{token.text.upper()}() is not supported by the local org")
            self.advance()
            self.advance()
            if self.peek().kind == ")":
                self.advance()
                return CountItem(None, None, token.pos)
            path = self.path()
            self.expect(")")
            alias = None
            following = self.peek()
            if following.kind == "ident" and following.arg is None \
                    and following.text.upper() not in _RESERVED:
                alias = self.advance().text
            return CountItem(path, alias, token.pos)
        if self.is_word(token, "TYPEOF"):
            raise self.fail(token, "TYPEOF is not supported by the local org")
        return FieldItem(self.path())

    def path(self) -> Path:
        first = self.peek()
        names = [self.name().text]
        while self.peek().kind == ".":
            self.advance()
            names.append(self.name().text)
        return Path(tuple(names), first.pos)

    def name(self) -> Token:
        token = self.peek()
        if token.kind != "ident" or token.arg is not None or token.text.upper() in _RESERVED:
            raise self.fail(token)
        return self.advance()

    def order_item(self) -> Order:
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
        return Order(path, descending, nulls_last)

    def count_argument(self, clause: str) -> int:
        token = self.peek()
        if token.kind != "number" or not token.text.isdigit() or int(token.text) > _MAX_LIMIT:
            raise self.fail(token, f"{clause} needs a non-negative integer up to {_MAX_LIMIT}, "
                                   f"not '{token.text}'")
        self.advance()
        return int(token.text)

    def condition(self) -> Condition:
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
        return Junction(junction, tuple(operands))

    def unary(self) -> Condition:
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
            inner = Not(self.unary())
        self.nesting -= 1
        return inner

    def predicate(self) -> Condition:
        path = self.path()
        token = self.peek()
        if token.kind == "op":
            self.advance()
            return Comparison(path, "!=" if token.text == "<>" else token.text, self.value())
        if self.is_word(token, "IN"):
            self.advance()
            return In(path, False, self.value_list())
        if self.is_word(token, "NOT"):
            following = self.peek(1)
            if self.is_word(following, "IN"):
                self.advance()
                self.advance()
                return In(path, True, self.value_list())
            if self.is_word(following, "LIKE"):
                raise self.fail(token, "unexpected token: 'NOT' (SOQL has no infix NOT LIKE; "
                                       "write NOT field LIKE 'pattern')")
            raise self.fail(token)
        if self.is_word(token, "LIKE"):
            self.advance()
            pattern = self.value()
            if not isinstance(pattern, Text):
                raise error_at("MALFORMED_QUERY", self.text, pattern.pos, "LIKE needs a quoted string")
            return Like(path, pattern)
        if self.is_word(token, "INCLUDES", "EXCLUDES"):
            raise self.fail(token, f"{token.text.upper()} is not supported by the local org")
        raise self.fail(token)

    def value_list(self) -> tuple[Value, ...]:
        self.expect("(")
        if self.at_word("SELECT"):
            raise self.fail(self.peek(), "semi-join sub-selects are not supported by the local org")
        values = [self.value()]
        while self.peek().kind == ",":
            self.advance()
            values.append(self.value())
        self.expect(")")
        return tuple(values)

    def value(self) -> Value:
        token = self.advance()
        if token.kind == "string":
            return Text(token.value, token.chars, token.pos)
        if token.kind == "number":
            return Number(token.value, token.pos)
        if token.kind == "date":
            return Date(token.value, token.pos)
        if token.kind == "datetime":
            return DateTime(token.value, token.pos)
        if token.kind == "ident":
            word = token.word.upper()
            if word in ("TRUE", "FALSE") and token.arg is None:
                return Bool(word == "TRUE", token.pos)
            if word == "NULL" and token.arg is None:
                return Null(token.pos)
            if (word in _DATE_LITERALS and token.arg is None) or (word in _DATE_LITERALS_N
                                                                  and token.arg is not None):
                return DateLiteral(word, token.arg, token.pos)
            if word in _DATE_LITERALS_N:
                raise self.fail(token, f"date literal {word} needs a number: {word}:n")
            if _LATER_DATE_LITERAL.match(word):
                raise self.fail(token, f"date literal {word} is not supported by the local org")
        raise self.fail(token)
