"""The syntax tree the parser builds: small frozen dataclasses that know nothing about the schema."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class Path:
    names: tuple[str, ...]  # as written
    pos: int


@dataclass(frozen=True)
class Text:
    value: str
    chars: tuple[tuple[str, bool], ...]  # for LIKE: which % and _ were escaped
    pos: int


@dataclass(frozen=True)
class Number:
    value: int | float
    pos: int


@dataclass(frozen=True)
class Bool:
    value: bool
    pos: int


@dataclass(frozen=True)
class Null:
    pos: int


@dataclass(frozen=True)
class Date:
    value: dt.date
    pos: int


@dataclass(frozen=True)
class DateTime:
    value: dt.datetime
    pos: int


@dataclass(frozen=True)
class DateLiteral:
    name: str  # upper case
    n: int | None
    pos: int


Value = Text | Number | Bool | Null | Date | DateTime | DateLiteral


@dataclass(frozen=True)
class Comparison:
    path: Path
    op: str  # = != < <= > >=  (<> is read as !=)
    value: Value


@dataclass(frozen=True)
class In:
    path: Path
    negated: bool
    values: tuple[Value, ...]


@dataclass(frozen=True)
class Like:
    path: Path
    pattern: Text


@dataclass(frozen=True)
class Not:
    operand: Condition


@dataclass(frozen=True)
class Junction:
    op: str  # AND or OR
    operands: tuple[Condition, ...]


Condition = Comparison | In | Like | Not | Junction


@dataclass(frozen=True)
class FieldItem:
    path: Path


@dataclass(frozen=True)
class CountItem:
    path: Path | None  # None for COUNT()
    alias: str | None
    pos: int


@dataclass(frozen=True)
class SubQuery:
    """`(SELECT fields FROM ChildRelationship ...)`: the parent's children, one list per record."""

    query: Query  # its object_name is the child relationship's name
    pos: int


@dataclass(frozen=True)
class Order:
    path: Path
    descending: bool
    nulls_last: bool


@dataclass(frozen=True)
class Query:
    items: tuple[FieldItem | CountItem | SubQuery, ...]
    object_name: str
    object_pos: int
    where: Condition | None
    order: tuple[Order, ...]
    limit: int | None
    offset: int
