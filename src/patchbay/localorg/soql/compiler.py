"""Resolve a syntax tree against the `OrgSchema`, check each value against its field's type, and write
SQLite SQL with a LEFT JOIN per parent relationship. Values only ever travel as `?` parameters.

A parent-to-child subquery is compiled by a compiler of its own against the child object, with the
child's reference to the parent as one more filter.

SQL has three-valued logic and SOQL does not: `Name != 'x'` matches rows whose Name is null, and so does
`NOT Name LIKE 'x%'`. So every predicate is compiled to an expression that is never NULL (true or
false), which makes `NOT` and `!=` behave as SOQL says.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from patchbay import sfid
from patchbay.localorg.schema import NUMBER_TYPES, OrgSchema, SField, SObject
from patchbay.localorg.soql.dates import date_range, midnight
from patchbay.localorg.soql.errors import SoqlError, error_at
from patchbay.localorg.soql.limits import MAX_RELATIONSHIP_DEPTH, MAX_RELATIONSHIPS, MAX_SUBQUERIES
from patchbay.localorg.soql.result import Aggregate, Children, Column, CompiledQuery, Leaf, Node
from patchbay.localorg.soql.syntax import (
    Bool,
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
from patchbay.localorg.storage import quote
from patchbay.localorg.values import stored_datetime

_RUN = 100  # operands of one AND/OR chain in SQL (see _joined)


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


class Compiler:
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

    def compile(self, query: Query, link: tuple[SObject, SField] | None = None) -> CompiledQuery:
        """The query, or with `link` (the child object and its reference to the parent) a
        subquery whose `ids_sql` selects one parent's children."""
        root = link[0] if link is not None else self.schema.get(query.object_name)
        if root is None:
            raise error_at("INVALID_TYPE", self.text, query.object_pos,
                         f"sObject type '{query.object_name}' is not supported.")
        self.root = root

        count_only = any(isinstance(i, CountItem) and i.path is None for i in query.items)
        targets, aggregates = self.select(query)
        if link is not None and (aggregates or count_only):
            raise error_at("MALFORMED_QUERY", self.text, query.object_pos,
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

    def resolve(self, path: Path) -> _Target:
        assert self.root is not None
        names = list(path.names)
        obj = self.root
        # `SELECT Account.Name FROM Account`: a leading object name qualifies the path.
        if len(names) > 1 and names[0].lower() == obj.name.lower() and obj.relationship(names[0]) is None:
            names = names[1:]
        if len(names) - 1 > MAX_RELATIONSHIP_DEPTH:
            raise error_at("MALFORMED_QUERY", self.text, path.pos,
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
                raise error_at("INVALID_FIELD", self.text, path.pos,
                             f"Didn't understand relationship '{name}' in field path.")
            chain += (name.lower(),)
            join = self.joins.get(chain)
            if join is None:
                if len(self.joins) == MAX_RELATIONSHIPS:
                    raise error_at("MALFORMED_QUERY", self.text, path.pos,
                                 f"No more than {MAX_RELATIONSHIPS} child-to-parent relationships can "
                                 "be specified in a query")
                join = _Join(f"t{len(self.joins) + 1}", parent, alias, reference)
                self.joins[chain] = join
            joins.append(join)
            described.append(reference.relationship_name or name)
            obj, alias = parent, join.alias
        found = obj.field(names[-1])
        if found is None:
            raise error_at("INVALID_FIELD", self.text, path.pos,
                         f"No such column '{names[-1]}' on entity '{obj.name}'.")
        return _Target((*described, found.name), found, f"{alias}.{quote(found.name)}", tuple(joins))

    def select(self, query: Query) -> tuple[list[_Target | _SubTarget], list[tuple[str, _Target]]]:
        targets: list[_Target | _SubTarget] = []
        aggregates: list[tuple[str, _Target]] = []
        seen: set[str] = set()
        unnamed = 0
        subqueries = [i for i in query.items if isinstance(i, SubQuery)]
        if len(subqueries) > MAX_SUBQUERIES:
            raise error_at("MALFORMED_QUERY", self.text, subqueries[MAX_SUBQUERIES].pos,
                         f"A query can hold at most {MAX_SUBQUERIES} subqueries")
        for item in query.items:
            if isinstance(item, SubQuery):
                sub = self.subquery(item)
                if sub.name.lower() in seen:
                    raise error_at("MALFORMED_QUERY", self.text, item.pos,
                                 f"duplicate subquery: {sub.name}")
                seen.add(sub.name.lower())
                targets.append(sub)
            elif isinstance(item, FieldItem):
                target = self.resolve(item.path)
                key = ".".join(target.path).lower()
                if key in seen:
                    raise error_at("MALFORMED_QUERY", self.text, item.path.pos,
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
                    raise error_at("MALFORMED_QUERY", self.text, item.pos, f"duplicate alias: {name}")
                seen.add(name.lower())
                aggregates.append((name, target))
        if aggregates and targets:
            first = next(i for i in query.items if not isinstance(i, CountItem))
            position = first.path.pos if isinstance(first, FieldItem) else first.pos
            raise error_at("MALFORMED_QUERY", self.text, position,
                         f"Field must be grouped or aggregated: {targets[0].name}")
        return targets, aggregates

    def subquery(self, item: SubQuery) -> _SubTarget:
        """A parent-to-child subquery, compiled on its own against the child object."""
        assert self.root is not None
        relationship = item.query.object_name
        found = self.schema.child_relationship(self.root, relationship)
        if found is None:
            raise error_at("INVALID_TYPE", self.text, item.query.object_pos,
                         f"Didn't understand relationship '{relationship}' in FROM part of query "
                         "call. If you are attempting to use a custom relationship, be sure to "
                         "append the '__r' after the custom relationship name.")
        child = Compiler(self.text, self.schema, self.include_deleted, self.now)
        compiled = child.compile(item.query, link=found)
        described = found[1].child_relationship
        assert described is not None  # child_relationship found it by this name
        return _SubTarget(described, compiled)

    def shape(self, root: SObject, targets: list[_Target | _SubTarget],
              from_sql: str) -> tuple[Node, str, tuple[int, ...]]:
        """The record tree the selected columns form, the SELECT that fetches its values, and where
        each column sits in a fetched row."""
        expressions: list[str] = []

        def index(expression: str) -> int:
            if expression not in expressions:
                expressions.append(expression)
            return expressions.index(expression)

        tree = Node(root, index('t0."Id"'))
        column_indexes = []
        for target in targets:
            if isinstance(target, _SubTarget):
                tree.entries.append((target.name, Children(target.query)))
                continue
            node = tree
            for key, join in zip(target.path[:-1], target.joins, strict=True):
                child = node.child(key)
                if child is None:
                    child = Node(join.obj, index(f'{join.alias}."Id"'))
                    node.entries.append((key, child))
                node = child
            column_indexes.append(index(target.column))
            node.entries.append((target.path[-1], Leaf(target.field, column_indexes[-1])))
        return tree, f"SELECT {', '.join(expressions)} {from_sql}", tuple(column_indexes)

    # -- ORDER BY

    def order(self, order: tuple[Order, ...], aggregate: bool) -> str:
        if order and aggregate:
            raise error_at("MALFORMED_QUERY", self.text, order[0].path.pos,
                         "Ordered field must be grouped or aggregated")
        terms = []
        ordered: set[str] = set()
        by_id = False
        for item in order:
            target = self.resolve(item.path)
            if target.field.type == "textarea":
                raise error_at("INVALID_FIELD", self.text, item.path.pos,
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

    def condition(self, cond: Condition) -> _Sql:
        """SQL that is true or false, never NULL (see the module docstring)."""
        if isinstance(cond, Junction):
            parts = [self.condition(c) for c in cond.operands]
            return _joined([sql for sql, _ in parts], cond.op), [p for _, params in parts for p in params]
        if isinstance(cond, Not):
            sql, params = self.condition(cond.operand)
            return f"NOT ({sql})", params
        target = self.resolve(cond.path)
        f = target.field
        # Booleans are never null in Salesforce; a null through an empty lookup reads as false, and
        # `= null` means `= false` (documented).
        column = f"coalesce({target.column}, 0)" if f.type == "boolean" else target.column
        if isinstance(cond, Like):
            return self.like(column, f, cond)
        if isinstance(cond, In):
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

    def in_list(self, column: str, f: SField, cond: In) -> _Sql:
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

    def like(self, column: str, f: SField, cond: Like) -> _Sql:
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

    def bind(self, f: SField, value: Value, path: Path) -> _Bound:
        """The stored form of a filter value for this field, or an error if the types don't fit."""
        kind = f.type
        if isinstance(value, Null):
            return _Point(0) if kind == "boolean" else None
        if kind == "boolean":
            if isinstance(value, Bool):
                return _Point(int(value.value))
        elif kind in NUMBER_TYPES:
            if isinstance(value, Number):
                return _Point(value.value)
        elif kind == "date":
            if isinstance(value, Date):
                return _Point(value.value.isoformat())
            if isinstance(value, DateLiteral):
                start, end = date_range(value, self.today)
                return _Range(start.isoformat(), end.isoformat())
        elif kind == "datetime":
            if isinstance(value, DateTime):
                return _Point(stored_datetime(value.value))
            if isinstance(value, DateLiteral):
                # A date literal on a datetime field covers its whole days, from midnight UTC.
                start, end = date_range(value, self.today)
                return _Range(midnight(start), midnight(end))
        elif kind in ("id", "reference"):
            if isinstance(value, Text):
                normal = sfid.to18(value.value)
                if normal is None:
                    raise error_at("INVALID_QUERY_FILTER_OPERATOR", self.text, value.pos,
                                 f"invalid ID field: {value.value}")
                return _Point(normal)
        elif isinstance(value, Text):
            return _Point(value.value)
        raise self.type_error(f, path)

    def type_error(self, f: SField, path: Path) -> SoqlError:
        name = _XSD_NAMES.get(f.type, "string")
        quotes = "should be enclosed in quotes" if name in ("string", "id") else \
            "should not be enclosed in quotes"
        return error_at("INVALID_FIELD", self.text, path.pos,
                      f"value of filter criterion for field '{f.name}' must be of type {name} and {quotes}")


def _joined(parts: list[str], op: str) -> str:
    """`(a OP b OP c ...)`. SQLite refuses an expression over 1000 deep, and a chain of one operator is
    as deep as it is long; so a long chain is cut into parenthesised runs of _RUN operands."""
    if len(parts) > _RUN:
        parts = [_joined(parts[i:i + _RUN], op) for i in range(0, len(parts), _RUN)]
    return "(" + f" {op} ".join(parts) + ")"
