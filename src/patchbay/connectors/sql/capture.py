"""What the change capture of each database shares: what installing, removing and reading the
state of a capture return, the checks of a capture cursor, and the interface the connector
reaches `pgcapture` (PostgreSQL) and `mycapture` (MySQL, MariaDB) through.

Both keep the same tables and the same cursor protocol (described in pgcapture's docstring),
and give the same changes, so that a consumer cannot tell them apart.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from patchbay.errors import SpecError
from patchbay.model import Change, ChangeKind
from patchbay.spec import SystemSpec, suggest

CAPTURE_TABLE = "patchbay_capture"
CONSUMERS_TABLE = "patchbay_capture_consumers"

KINDS = {"INSERT": ChangeKind.CREATED, "UPDATE": ChangeKind.UPDATED, "DELETE": ChangeKind.DELETED}
"""The kind of change of a capture row's operation."""


@dataclass(frozen=True, slots=True)
class Installed:
    """What `install` did for one table."""

    table: str
    """The table as capture rows name it: schema-qualified, quoted where needed."""
    key: tuple[str, ...]
    trigger: str
    """"created", "kept" (it was there, as it would be made), or "replaced" (the key changed;
    on MySQL, the columns too)."""
    registered: bool
    """The consumer is new for this table (false: it was registered already)."""


@dataclass(frozen=True, slots=True)
class Removed:
    """What `remove` did for one table."""

    table: str
    unregistered: bool
    """The consumer was registered for the table (false: nothing to remove)."""
    dropped_rows: int
    """Capture rows the consumer had not consumed yet."""
    consumers_left: int
    """Other consumers of the table, for which its trigger stays."""
    trigger_dropped: bool
    """No consumer is left for the table, and its trigger is gone."""


@dataclass(frozen=True, slots=True)
class CaptureState:
    """One consumer of one table."""

    consumer: str
    table: str
    installed: bool
    """The table has its capture trigger (and the consumer is registered)."""
    pending: int
    """Changes not yet consumed: to be read, or read and waiting for the cursor listing
    them to come back (the last batch a broadcast polled, until its next poll)."""
    oldest: dt.datetime | None
    """When the oldest change not yet consumed was captured."""


class Capture(Protocol):
    """The change capture of one kind of database: a module (pgcapture, mycapture)."""

    def schema_of(self, system: SystemSpec) -> str: ...

    def install(self, conn: Connection, tables: Sequence[str], consumer: str,
                schema: str) -> list[Installed]: ...

    def remove(self, conn: Connection, tables: Sequence[str], consumer: str,
               schema: str) -> list[Removed]: ...

    def status(self, conn: Connection, schema: str) -> list[CaptureState]: ...

    def relation_name(self, conn: Connection, table: str) -> str | None: ...

    def changes(self, conn: Connection, system: str, object: str, table: sa.Table,
                cursor: Mapping[str, Any], fields: Sequence[str] | None, limit: int,
                schema: str) -> tuple[list[Change], dict[str, Any]]: ...


@dataclass(frozen=True, slots=True)
class Reading:
    """A capture cursor, checked against the table it reads."""

    consumer: str
    recorded: list[int]
    """The seqs to delete before reading: changes the engine has recorded."""
    key: str
    primary: list[str]
    """The primary key columns, which a deleted record holds."""
    shown: list[str]
    """The columns a created or updated record holds."""
    where: str
    """"changes of table ... of system ...", for messages."""


def reading(system: str, object: str, table: sa.Table, cursor: Mapping[str, Any],
            fields: Sequence[str] | None, limit: int) -> Reading:
    """The cursor of a `changes` call, checked: see pgcapture.changes for what it holds."""
    if limit < 1:
        raise ValueError(f"limit must be at least 1, not {limit}")
    where = f"changes of table '{object}' of system '{system}'"
    consumer = cursor.get("consumer")
    if not isinstance(consumer, str) or not consumer:
        raise SpecError(f"{where}: the change capture cursor names no consumer")
    recorded = cursor.get("recorded") or []
    if not isinstance(recorded, list) or not all(type(s) is int for s in recorded):
        raise SpecError(f"{where}: the cursor's 'recorded' must be a list of capture seqs, "
                        f"not {recorded!r}")
    primary = [c.name for c in table.primary_key.columns]
    if not primary:
        raise SpecError(f"table '{object}' of system '{system}' has no primary key: change "
                        "capture records which row changed by its primary key")
    key = cursor.get("key") or (primary[0] if len(primary) == 1 else None)
    if key is None:
        raise SpecError(f"table '{object}' of system '{system}' has a primary key of "
                        f"{len(primary)} columns ({', '.join(primary)}): name one of them as "
                        "the source key")
    if key not in primary:
        raise SpecError(f"{where}: the key '{key}' is not a primary key column "
                        f"({', '.join(primary)}): a deleted row is captured by its primary key "
                        f"alone{suggest(str(key), primary)}")
    for name in fields or ():
        if name not in table.c:
            raise SpecError(f"table '{object}' of system '{system}' has no column "
                            f"'{name}'{suggest(name, table.c.keys())}")
    shown = list(dict.fromkeys([*fields, key])) if fields else list(table.c.keys())
    return Reading(consumer, recorded, str(key), primary, shown, where)


def no_primary_key(table: str) -> SpecError:
    return SpecError(f"table '{table}' has no primary key: change capture records which "
                     "row changed by its primary key; add one")


def not_installed(where: str, consumer: str) -> SpecError:
    return SpecError(f"{where}: change capture is not installed for consumer '{consumer}'; "
                     "run `patchbay cdc install <file>`")
