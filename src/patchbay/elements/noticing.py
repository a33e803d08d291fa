"""Noticing changes: the cursor a system's `changes` is read with, as a trigger declares it.

A cursor is stored per (integration, system, object) and handed back to the connector; what
the trigger says now overrides what was stored: the overlap of a polled watermark (None:
the connector's default for its kind of source), and whether the connector follows its
change stream (`cdc`, named for this integration's share of it) or polls.
"""

from __future__ import annotations

from typing import Any

from patchbay.spec.broadcast import TriggerSpec


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
