"""The compiled query: its SQL, and how stored rows become records as the REST API shows them, or
Bulk API CSV rows."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from patchbay.localorg.schema import SField, SObject
from patchbay.localorg.values import csv_text, from_storage

_FETCH_CHUNK = 500  # ids per fetch statement, well under SQLite's bound-parameter limit


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
class Leaf:
    field: SField
    index: int  # position in a fetched row


@dataclass(frozen=True)
class Children:
    """A subquery's place in the result shape: the record's children, fetched by its Id."""

    query: CompiledQuery


@dataclass
class Node:
    """One record in the result shape: the root, or a parent reached through a relationship."""

    obj: SObject
    id_index: int  # position of this record's Id in a fetched row (null when the lookup is empty)
    entries: list[tuple[str, Node | Leaf | Children]] = field(default_factory=list)

    def child(self, key: str) -> Node | None:
        return next((e for k, e in self.entries if k == key and isinstance(e, Node)), None)


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
    _shape: Node = field(repr=False)  # how a fetched row becomes a record
    _column_indexes: tuple[int, ...] = field(repr=False)  # where each column sits in a fetched row

    @property
    def is_aggregate(self) -> bool:
        return bool(self.aggregates)

    @property
    def has_subqueries(self) -> bool:
        return any(isinstance(entry, Children) for _, entry in self._shape.entries)

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
                if isinstance(entry, Children):
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


def _record(node: Node, row: tuple[Any, ...], version: str) -> dict[str, Any] | None:
    record_id = row[node.id_index]
    if record_id is None:
        return None  # an empty lookup, or a parent that is gone
    record: dict[str, Any] = {"attributes": {
        "type": node.obj.name, "url": f"/services/data/v{version}/sobjects/{node.obj.name}/{record_id}"}}
    for key, entry in node.entries:
        if isinstance(entry, Node):
            record[key] = _record(entry, row, version)
        elif isinstance(entry, Children):
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


def _shape_columns(node: Node, prefix: tuple[str, ...]) -> list[dict[str, Any]]:
    """Column metadata of a record shape: fields, parents with their fields, subqueries."""
    columns = []
    for key, entry in node.entries:
        display = ".".join((*prefix, key))
        if isinstance(entry, Leaf):
            columns.append(_column_entry(key, display, _APEX_TYPES.get(entry.field.type, "String"),
                                         f=entry.field))
        elif isinstance(entry, Node):
            columns.append(_column_entry(key, display, None, joins=_shape_columns(entry, (*prefix, key))))
        else:
            columns.append(_column_entry(key, display, None, aggregate=True,
                                         joins=_shape_columns(entry.query._shape, ())))
    return columns
