"""The state of stream aggregations: groups with their accumulators, and the messages counted.

A group is one row of `patchbay_aggregates`: the integration, the group's values as JSON
text (`group_key`), the accumulators (`state`, JSON), a `revision` that every change
increments, and `dirty` while the destinations lack the current values. The store knows
nothing of what an accumulator means: `count` is given a function that combines two.

    count      ONE transaction: the messages' ids into `patchbay_seen_messages` (those
               recorded already are left out), the deltas of the messages recorded now
               merged into their groups, the groups marked dirty
    dirty      the dirty groups, in group_key order, a page at a time
    written    clear `dirty` of groups written, unless they changed since they were read
    purge_seen forget counted messages older than a cutoff

Two processes may count into the same integration (a PostgreSQL state): the insert into
`patchbay_seen_messages` is the arbiter (ON CONFLICT DO NOTHING ... RETURNING: of two
transactions recording one message, the second waits for the first and then finds it),
and the groups are locked (SELECT ... FOR UPDATE, in group_key order so that two
transactions do not deadlock) before they are read, merged and written back. On SQLite
the transaction holds the database's one write lock from its first insert.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from patchbay.store.outbox import clock
from patchbay.store.schema import aggregates, seen_messages

Combine = Callable[[Mapping[str, Any], Mapping[str, Any]], dict[str, Any]]
"""(accumulators so far, delta) -> accumulators with the delta merged in; both JSON-ready.
The first argument is empty for a group not seen before."""

_CHUNK = 2000


@dataclass(frozen=True, slots=True)
class Counted:
    """One message to count: where it came from, its id, its group and what it adds."""

    source: str
    message_id: str
    group_key: str
    delta: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Group:
    """One group of a stream aggregation as stored."""

    group_key: str
    state: dict[str, Any]
    revision: int


class AggregatesMixin:
    """The stream aggregation part of the Store (which supplies `engine`)."""

    engine: Engine

    def seen(self, integration: str, source: str, ids: Sequence[str]) -> set[str]:
        """Which of these message ids of `source` have been counted."""
        found: set[str] = set()
        with self.engine.connect() as conn:
            for chunk in _chunks(sorted(set(ids))):
                found.update(conn.execute(sa.select(seen_messages.c.message_id).where(
                    seen_messages.c.integration == integration,
                    seen_messages.c.source == source,
                    seen_messages.c.message_id.in_(chunk))).scalars())
        return found

    def count(self, integration: str, messages: Sequence[Counted], combine: Combine) -> list[Counted]:
        """Record the messages as seen and merge the deltas of those not seen before into
        their groups, marked dirty, in ONE transaction; return the messages counted now.
        A message recorded already (by an earlier transaction, here or in another process)
        is not counted again. Ids should be unique per source in one call."""
        unique: dict[tuple[str, str], Counted] = {}
        for message in messages:
            unique.setdefault((message.source, message.message_id), message)
        if not unique:
            return []
        with self.engine.begin() as conn:
            now = clock(conn)
            rows = [dict(integration=integration, source=source, message_id=message_id, seen_at=now)
                    for source, message_id in sorted(unique)]
            recorded: set[tuple[str, str]] = set()
            for chunk in _chunks(rows):
                stmt = (insert_or_skip(conn, seen_messages).values(chunk)
                        .on_conflict_do_nothing()
                        .returning(seen_messages.c.source, seen_messages.c.message_id))
                recorded.update((str(s), str(i)) for s, i in conn.execute(stmt))
            counted = [m for key, m in unique.items() if key in recorded]
            deltas: dict[str, dict[str, Any]] = {}
            for message in counted:
                deltas[message.group_key] = combine(deltas.get(message.group_key, {}), message.delta)
            if deltas:
                self._merge(conn, integration, deltas, combine, now)
        return counted

    def _merge(self, conn: Connection, integration: str, deltas: Mapping[str, Mapping[str, Any]],
               combine: Combine, now: Any) -> None:
        keys = sorted(deltas)
        # A group new to the state gets an empty row first, so that every group of the
        # batch can be locked the same way (a lock cannot be taken on a row not there).
        for chunk in _chunks(keys):
            conn.execute(insert_or_skip(conn, aggregates).values(
                [dict(integration=integration, group_key=key, state={}, revision=0, dirty=False,
                      updated_at=now) for key in chunk]).on_conflict_do_nothing())
        stored: dict[str, Mapping[str, Any]] = {}
        for chunk in _chunks(keys):
            select = (sa.select(aggregates.c.group_key, aggregates.c.state)
                      .where(aggregates.c.integration == integration,
                             aggregates.c.group_key.in_(chunk))
                      .order_by(aggregates.c.group_key).with_for_update())
            stored.update((str(k), state or {}) for k, state in conn.execute(select))
        update = (sa.update(aggregates)
                  .where(aggregates.c.integration == sa.bindparam("b_integration"),
                         aggregates.c.group_key == sa.bindparam("b_group_key"))
                  .values(state=sa.bindparam("b_state"), revision=aggregates.c.revision + 1,
                          dirty=True, updated_at=now))
        conn.execute(update, [dict(b_integration=integration, b_group_key=key,
                                   b_state=combine(stored.get(key, {}), deltas[key]))
                              for key in keys])

    def dirty(self, integration: str, after: str | None = None, limit: int = 1000) -> list[Group]:
        """Up to `limit` dirty groups whose group_key sorts after `after`, in that order."""
        stmt = (sa.select(aggregates.c.group_key, aggregates.c.state, aggregates.c.revision)
                .where(aggregates.c.integration == integration, aggregates.c.dirty.is_(True))
                .order_by(aggregates.c.group_key).limit(limit))
        if after is not None:
            stmt = stmt.where(aggregates.c.group_key > after)
        with self.engine.connect() as conn:
            return [Group(str(k), dict(state or {}), int(r)) for k, state, r in conn.execute(stmt)]

    def written(self, integration: str, groups: Sequence[Group]) -> None:
        """Clear `dirty` of groups whose values as read (their revision) are now in every
        destination. A group that changed since it was read stays dirty."""
        if not groups:
            return
        stmt = (sa.update(aggregates)
                .where(aggregates.c.integration == sa.bindparam("b_integration"),
                       aggregates.c.group_key == sa.bindparam("b_group_key"),
                       aggregates.c.revision == sa.bindparam("b_revision"))
                .values(dirty=False))
        with self.engine.begin() as conn:
            conn.execute(stmt, [dict(b_integration=integration, b_group_key=g.group_key,
                                     b_revision=g.revision) for g in groups])

    def purge_seen(self, integration: str, older_than: dt.timedelta) -> int:
        """Forget the messages counted longer than `older_than` ago; how many. In chunks,
        so that a large table is not locked for long."""
        purged = 0
        while True:
            with self.engine.begin() as conn:
                cutoff = clock(conn) - older_than
                old = (sa.select(seen_messages.c.source, seen_messages.c.message_id)
                       .where(seen_messages.c.integration == integration,
                              seen_messages.c.seen_at < cutoff).limit(_CHUNK))
                keys = [tuple(row) for row in conn.execute(old)]
                if keys:
                    purged += conn.execute(sa.delete(seen_messages).where(
                        seen_messages.c.integration == integration,
                        sa.tuple_(seen_messages.c.source, seen_messages.c.message_id).in_(keys))
                    ).rowcount
            if len(keys) < _CHUNK:
                return purged


def insert_or_skip(conn: Connection, table: sa.Table) -> Any:
    """An INSERT that can skip rows already there (the engine state is SQLite or PostgreSQL)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def _chunks(items: Sequence[Any]) -> Iterator[list[Any]]:
    for start in range(0, len(items), _CHUNK):
        yield list(items[start:start + _CHUNK])
