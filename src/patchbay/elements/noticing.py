"""Noticing changes: the cursor a system's `changes` is read with, as a trigger declares it;
and the changes a system pushes (a signed webhook, a Salesforce Outbound Message).

A cursor is stored per (integration, system, object) and handed back to the connector; what
the trigger says now overrides what was stored: the overlap of a polled watermark (None:
the connector's default for its kind of source), and whether the connector follows its
change stream (`cdc`, named for this integration's share of it) or polls.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from patchbay.connectors.base import Connector
from patchbay.errors import SpecError
from patchbay.model import Change, ChangeKind
from patchbay.spec.broadcast import TriggerSpec

log = logging.getLogger(__name__)


def change_cursor(stored: dict[str, Any] | None, *, key: str | None, watermark: str | None,
                  trigger: TriggerSpec, consumer: str) -> dict[str, Any] | None:
    """The cursor to read changes after, from the one stored (None: from the beginning)."""
    cursor = stored
    if watermark and not (cursor and cursor.get("cdc")):
        cursor = {**(cursor or {"watermark": watermark, "key": key}),
                  "overlap_seconds": trigger.overlap_seconds}
    if trigger.changes != "cdc" and cursor and cursor.get("cdc"):
        cursor = {k: v for k, v in cursor.items() if k != "cdc"}  # back to polling
    if trigger.changes == "cdc":
        cursor = {**(cursor or {"key": key}), "cdc": True, "consumer": consumer,
                  "wait_seconds": trigger.poll_seconds}
    return cursor


MAX_PUSHED = 10_000
"""At most this many changes, and this many ids, in one push."""
_INT64 = (-(2 ** 63), 2 ** 63 - 1)


def pushed_changes(body: Mapping[str, Any], key: str
                   ) -> tuple[list[tuple[ChangeKind, dict[str, Any]]], list[Any]]:
    """The changes (kind, record) and ids of a pushed body; a SpecError lists every problem.
    Keys are bounded: text of at most 255 characters (no NUL, which no database takes), or
    whole numbers of 64 bits."""
    problems = [f"unknown field '{name}': a push holds 'changes' or 'ids'"
                for name in body if name not in ("changes", "ids")]
    changes: list[tuple[ChangeKind, dict[str, Any]]] = []
    items = body.get("changes", [])
    if not isinstance(items, list) or len(items) > MAX_PUSHED:
        problems.append(f"'changes' must be a list of at most {MAX_PUSHED} changes")
        items = []
    kinds = ", ".join(repr(k.value) for k in ChangeKind)
    for number, item in enumerate(items, 1):
        record = item.get("record") if isinstance(item, dict) else None
        kind = item.get("kind", "updated") if isinstance(item, dict) else None
        if not isinstance(record, dict):
            problems.append(f"change {number}: must be an object with a 'record' object")
        elif kind not in {k.value for k in ChangeKind}:
            problems.append(f"change {number}: 'kind' must be one of {kinds}, not {kind!r}")
        elif not _bounded_key(record.get(key)):
            problems.append(f"change {number}: its record needs '{key}', text of at most 255 "
                            "characters or a whole number of 64 bits")
        else:
            changes.append((ChangeKind(kind), dict(record)))
    ids = body.get("ids", [])
    if not isinstance(ids, list) or len(ids) > MAX_PUSHED:
        problems.append(f"'ids' must be a list of at most {MAX_PUSHED} ids")
        ids = []
    bad = [i for i, value in enumerate(ids, 1) if not _bounded_key(value)]
    if bad:
        problems.append(f"ids must be text of at most 255 characters or whole numbers of 64 "
                        f"bits: not id {', '.join(map(str, bad[:5]))}")
    if problems:
        raise SpecError("invalid push", problems)
    return changes, list(dict.fromkeys(ids))


def _bounded_key(value: Any) -> bool:
    if isinstance(value, str):
        return 0 < len(value) <= 255 and "\x00" not in value
    return isinstance(value, int) and not isinstance(value, bool) and \
        _INT64[0] <= value <= _INT64[1]


def pushed(connector: Connector, object: str, key: str, fields: Sequence[str] | None,
           body: Mapping[str, Any]) -> list[Change]:
    """The changes a push carries. The body holds either whole records, `{"changes":
    [{"kind": "created"|"updated"|"deleted", "record": {...}}]}`, or only ids, `{"ids":
    [...]}`: their current values are fetched, and an id the system does not have is a
    delete only when the system says it was deleted (see Connector.deleted); else it is
    left out. A SpecError lists every problem of the body."""
    records, wanted = pushed_changes(body, key)
    changes = [Change(connector.name, object, record[key], kind, record)
               for kind, record in records]
    if not wanted:
        return changes
    found = connector.get(object, key, wanted, fields)
    missing = [value for value in wanted if value not in found]
    deleted = connector.deleted(object, key, missing) if missing else {}
    for value in wanted:
        if value in found:
            current = found[value]
            changes.append(Change(connector.name, object, current.get(key, value),
                                  ChangeKind.UPDATED, current))
        elif value in deleted:
            changes.append(Change(connector.name, object, deleted[value], ChangeKind.DELETED,
                                  {key: deleted[value]}))
    unknown = [value for value in missing if value not in deleted]
    if unknown:
        log.warning("%s.%s: %d pushed id(s) neither found nor deleted; left out",
                    connector.name, object, len(unknown))
    return changes
