"""The vocabulary every layer shares: records, keys, operations, outcomes, schemas, changes."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any, NamedTuple

Record = dict[str, Any]
"""One record: field name to value."""

KeyValue = Any
"""The value of a record's key field (an id, an external id, a natural key)."""

ERROR_FIELD = "__error__"
"""Reserved field of a record a system could not give whole (a broken file row, a message
body that is not a JSON object) or a transform could not make: why, with where it came
from. The pattern sets such a record aside (or dead-letters its delivery) with this reason."""
RAW_FIELD = "__raw__"
"""Reserved field beside ERROR_FIELD: the text as the system holds it (bounded)."""

VERSION_FIELD = "__version__"
"""Reserved field of a broadcast's records: the version of the change. Message
destinations build their idempotency ids from it; it is never written as a field."""

Position = Any
"""Where a read stopped, as the connector understands it (last key, row offset).
JSON-serialisable, so that it can be checkpointed."""


class Operation(StrEnum):
    INSERT = "insert"
    UPDATE = "update"
    UPSERT = "upsert"
    DELETE = "delete"


class Status(StrEnum):
    """What happened to one record at a destination."""

    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"
    DELETED = "deleted"
    SKIPPED = "skipped"
    """Deliberately not written: an insert of a key that exists, an update of one that does not."""
    REJECTED = "rejected"
    """The record is invalid for the destination; retrying will not help."""
    FAILED = "failed"
    """A transient failure; retrying may help."""
    STALE = "stale"
    """Not written: a conditional write whose expectation no longer held (the record changed
    there since the writer saw it). Neither retried as it is nor a dead letter: the writer
    reads the record again and decides anew."""

    @property
    def is_success(self) -> bool:
        return self in _SUCCESS

    @property
    def is_delivered(self) -> bool:
        """A delivery with this outcome is done: written, or deliberately not (skipped)."""
        return self in _DELIVERED


_SUCCESS = frozenset({Status.CREATED, Status.UPDATED, Status.UNCHANGED, Status.DELETED})
_DELIVERED = _SUCCESS | {Status.SKIPPED}


class Outcome(NamedTuple):
    """The result for one record of a write, in the order of the batch written.

    A named tuple: a migration makes one per record, so it must be cheap to create.
    """

    key: KeyValue
    status: Status
    reason: str | None = None
    code: str | None = None
    """A short machine-readable error code (REQUIRED_FIELD_MISSING, STRING_TOO_LONG, ...)."""
    destination_id: str | None = None
    """The id the destination gave the record, where it has its own (Salesforce Id)."""


class Page:
    """A page of records from a read, with the position to resume after it.

    A connector asked for columnar pages hands the page over as an Arrow table; the records
    are then made from it only if a step needs them one by one.
    """

    __slots__ = ("_records", "position", "table")

    def __init__(self, records: list[Record] | None, position: Position, table: Any = None) -> None:
        self._records = records
        self.position = position
        self.table = table

    @property
    def records(self) -> list[Record]:
        if self._records is None:
            self._records = self.table.to_pylist() if self.table is not None else []
        return self._records

    def __len__(self) -> int:
        return len(self._records) if self._records is not None else int(self.table.num_rows)


class FieldType(StrEnum):
    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    DECIMAL = "decimal"
    BOOLEAN = "boolean"
    DATE = "date"
    DATETIME = "datetime"
    JSON = "json"


PYTHON_TYPES: dict[FieldType, tuple[type, ...]] = {
    FieldType.STRING: (str,),
    FieldType.INTEGER: (int,),
    FieldType.NUMBER: (float, int),
    FieldType.DECIMAL: (Decimal, int),
    FieldType.BOOLEAN: (bool,),
    FieldType.DATE: (dt.date,),
    FieldType.DATETIME: (dt.datetime,),
    FieldType.JSON: (dict, list, str, int, float, bool),
}


@dataclass(frozen=True, slots=True)
class FieldSchema:
    name: str
    type: FieldType
    nullable: bool = True
    max_length: int | None = None
    has_default: bool = False
    """The system fills the field when it is not given (autoincrement, server default)."""
    choices: tuple[str, ...] | None = None
    """Allowed values of a picklist."""
    precision: int | None = None
    scale: int | None = None
    """Digits of a decimal field, and how many after the point."""
    timezone: bool = False
    """A datetime field that stores an instant (timestamptz)."""

    @property
    def required(self) -> bool:
        return not self.nullable and not self.has_default


@dataclass(frozen=True, slots=True)
class ObjectSchema:
    """What a system says about one of its objects."""

    name: str
    fields: Mapping[str, FieldSchema]
    key: str | None = None

    def __iter__(self) -> Iterator[FieldSchema]:
        return iter(self.fields.values())

    def __contains__(self, name: object) -> bool:
        return name in self.fields


class ChangeKind(StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    DELETED = "deleted"


@dataclass(frozen=True, slots=True)
class Change:
    """A record that changed in a system: what, when, and from where."""

    system: str
    object: str
    key: KeyValue
    kind: ChangeKind
    record: Record
    changed_fields: frozenset[str] = field(default_factory=frozenset)
    at: dt.datetime | None = None
    version: str | None = None
    """The source's own version of the change (a change-log sequence, a replay id), when
    its time cannot tell two changes of one record apart."""


def given_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """A run's parameters as they were given: without the engine's own `__` entries (such as
    `__full__`, a full re-read asked for), which a run's definition and display leave out."""
    return {k: v for k, v in params.items() if not k.startswith("__")}


def jsonable(value: Any) -> Any:
    """A value as JSON holds it, for the engine state, reports and answers: mappings and
    sequences item by item, dates and times as ISO text, decimals as fixed-point text (the
    scale kept: 0.00000000, not 0E-8), NaN and infinities (which JSON lacks) as None,
    anything else JSON has no type for (UUIDs) as its text."""
    kind = type(value)
    if kind is str or kind is int or kind is bool or value is None:  # most values: at once
        return value
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
