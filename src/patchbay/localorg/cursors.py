"""Query cursors: the ids a query matched when it ran, paged through by locator."""

from __future__ import annotations

import datetime as dt
import threading
from dataclasses import dataclass

from patchbay import sfid
from patchbay.localorg.soql import CompiledQuery

CURSOR_LIFETIME = dt.timedelta(days=2)


class InvalidLocator(LookupError):
    """No open cursor has this locator (never opened, or expired)."""


@dataclass
class Cursor:
    compiled: CompiledQuery
    ids: list[str]
    page_size: int
    created: dt.datetime


class Cursors:
    """Open query cursors of one org."""

    def __init__(self) -> None:
        self._open: dict[str, Cursor] = {}
        self._lock = threading.Lock()
        self._counter = 0

    def open(self, cursor: Cursor) -> str:
        with self._lock:
            self._counter += 1
            key = sfid.make("01g", self._counter)
            self._open[key] = cursor
        return key

    def get(self, key: str, now: dt.datetime) -> Cursor:
        cursor = self._open.get(key)
        if cursor is None or now - cursor.created > CURSOR_LIFETIME:
            raise InvalidLocator(key)
        return cursor
