"""The cursor of `SqlConnector.changes` polled by a watermark column: its entries, their JSON
form, the late-commit floor and marks, the digest that tells two changes of one timestamp
apart, and the keyed digests by which the cursor remembers the rows of its late window."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import uuid
from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any

import sqlalchemy as sa

from patchbay.connectors.base import keyed_digest
from patchbay.connectors.sql.types import python_type

DEFAULT_OVERLAP_SECONDS = 60.0
"""How far behind its position a poll by a timestamp re-reads where the database cannot say
which transactions are still open (SQLite, MySQL): longer than a write transaction takes
between stamping a row and committing it, in most applications."""


CURSOR_ENTRIES = ("watermark", "key", "overlap_seconds", "created", "position", "taken",
                  "after_key", "late_from", "horizon", "open_since", "marks", "seen")
"""`horizon` and `after_key` are only read, from cursors stored before `late_from` and
`taken` were kept."""


_MARKS = 20


def to_json(value: Any) -> Any:
    """A watermark or key value as JSON can hold it (see from_json)."""
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    return value


def from_json(value: Any, kind: type | None) -> Any:
    """A watermark value back from JSON, as the column's type (a datetime from ISO text)."""
    if not isinstance(value, str):
        return value
    if kind is dt.datetime:
        return dt.datetime.fromisoformat(value)
    if kind is dt.date:
        return dt.date.fromisoformat(value)
    if kind is Decimal:
        return Decimal(value)
    return value


def key_from_json(value: Any, kind: type | None) -> Any:
    """A key value back from JSON (see to_json), as the key column's type."""
    if not isinstance(value, str):
        return value
    if kind is uuid.UUID:
        return uuid.UUID(value)
    if kind is bytes:
        return bytes.fromhex(value)
    if kind is dt.time:
        return dt.time.fromisoformat(value)
    return from_json(value, kind)


def watermark_time(since: tuple[dt.datetime, dt.datetime], watermark: sa.Column[Any]) -> Any:
    """The start of the oldest open transaction as a value of a timestamp or date column."""
    aware, local = since
    moment = aware if getattr(watermark.type, "timezone", False) else local
    return moment.date() if python_type(watermark) is dt.date else moment


def late_floor(cursor: Mapping[str, Any], kind: type | None) -> tuple[bool, Any]:
    """Whether the cursor holds back the next read for transactions still open when it was
    made, and from which watermark value (None: from the first row).

    A timestamp or date watermark keeps the start of the oldest one as `horizon`: what
    commits later is stamped at or after it. A number (an identity, a sequence) cannot be
    told from a time, so each call keeps a mark, [time, highest number visible then]: a
    transaction begun after a mark's time takes numbers above the mark's. The read starts
    at the latest mark before `open_since`, the start of the oldest open transaction, or at
    the first row when there is none (a transaction already open at the first call)."""
    if cursor.get("horizon") is not None:
        return True, from_json(cursor["horizon"], kind)
    if cursor.get("open_since") is None:
        return False, None
    since = dt.datetime.fromisoformat(cursor["open_since"])
    before = [value for at, value in cursor.get("marks") or ()
              if dt.datetime.fromisoformat(at) <= since]
    return True, from_json(before[-1], kind) if before else None


def updated_marks(cursor: Mapping[str, Any], since: dt.datetime, mark: tuple[Any, ...]) -> list[list[Any]]:
    """The cursor's marks with this call's, less those older than the latest before `since`
    (no transaction that can still commit began before it), at most _MARKS of them: dropping
    one moves a later read's start back, never forward."""
    marks = [*(cursor.get("marks") or ()), [mark[1].isoformat(), to_json(mark[0])]]
    before = [i for i, (at, _) in enumerate(marks) if dt.datetime.fromisoformat(at) <= since]
    if before:
        marks = marks[before[-1]:]
    return marks if len(marks) <= _MARKS else [marks[0], *marks[1 - _MARKS:]]


_REPR_STABLE = frozenset({str, int, float, bool, type(None), Decimal, dt.datetime, dt.date, dt.time,
                          uuid.UUID})
"""Types whose repr is the same in every process (a memoryview's, say, holds an address)."""


def row_digest(values: Mapping[str, Any]) -> str:
    """A short digest of a row's values, to tell two changes sharing a watermark value apart;
    a cursor keeps it only under its key (`seal`). Every row read is digested, so it is the
    repr of the values (about a fifth of the cost of JSON), with what has no stable repr
    turned to JSON's text first."""
    text = repr([v if type(v) in _REPR_STABLE else json.dumps(to_json(v), default=str)
                 for v in values.values()])
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def seal(secret: bytes, key: Any, watermark: Any, digest: str | None) -> tuple[str, str | None]:
    """What a cursor keeps of a row it has seen: a keyed digest of its (key, watermark value),
    that tells a second change sharing the timestamp from a late commit, and one of those and
    the row's values (`row_digest`; None when only the pair is known) that tells whether the
    row read again is the row delivered."""
    pair = json.dumps([to_json(key), to_json(watermark)], default=str)
    return keyed_digest(secret, "pair", pair), \
        None if digest is None else keyed_digest(secret, "row", pair, digest)


def remembered_rows(entries: Iterable[Any], secret: bytes, kind: type | None
                    ) -> dict[str, str | None]:
    """A stored cursor's `seen`, as {pair digest: row digest, or None when any values match}.
    Entries are "pair:row" (or "pair") text; a cursor stored before they were keyed holds
    [key, watermark value, digest of the values] lists (no digest before digests were kept),
    sealed here as the rows they name would be."""
    remembered: dict[str, str | None] = {}
    for entry in entries:
        if isinstance(entry, str):
            pair, _, row = entry.partition(":")
            remembered[pair] = row or None
        else:
            sealed = seal(secret, entry[0], from_json(entry[1], kind),
                          entry[2] if len(entry) > 2 else None)
            remembered[sealed[0]] = sealed[1]
    return remembered


def minus(value: Any, overlap: float) -> Any:
    """The start of the overlap window before a watermark value."""
    if not overlap:
        return value
    if isinstance(value, dt.datetime):
        return value - dt.timedelta(seconds=overlap)
    if isinstance(value, dt.date):
        return value - dt.timedelta(days=math.ceil(overlap / 86400))
    if isinstance(value, int):
        return value - math.ceil(overlap)
    if isinstance(value, Decimal):
        return value - Decimal(str(overlap))
    return value - overlap
