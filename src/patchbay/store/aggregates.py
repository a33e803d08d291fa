"""The state of stream aggregations: groups with their accumulators (the messages counted
are the Seen repository's, store/seen.py).

A group is one row of `patchbay_aggregates`: the integration, the group's values as JSON
text (`group_key`), the accumulators (`state`, JSON), a `revision` that every change
increments, and `dirty` while the destinations lack the current values. The store knows
nothing of what an accumulator means: `count` is given a function that combines two.

    count      ONE transaction: the messages' ids into `patchbay_seen_messages` (those
               recorded already are left out), the deltas of the messages recorded now
               merged into their groups, the groups marked dirty
    dirty      the dirty groups, in group_key order, a page at a time
    written    clear `dirty` of groups written, unless they changed since they were read

Two processes may count into the same integration (a PostgreSQL state): the insert into
`patchbay_seen_messages` is the arbiter (ON CONFLICT DO NOTHING ... RETURNING: of two
transactions recording one message, the second waits for the first and then finds it),
and the groups are locked (SELECT ... FOR UPDATE, in group_key order so that two
transactions do not deadlock) before they are read, merged and written back. On SQLite
the transaction holds the database's one write lock from its first insert.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from patchbay.store import seen
from patchbay.store.schema import aggregates
from patchbay.store.unit import Repository, chunks, clock, insert_or_skip

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


class Aggregates(Repository):
    """The groups of stream aggregations (`patchbay_aggregates`)."""

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
        with self._db.begin("aggregates.count") as conn:
            recorded = seen.record(conn, integration, list(unique))
            counted = [m for key, m in unique.items() if key in recorded]
            deltas: dict[str, dict[str, Any]] = {}
            for message in counted:
                deltas[message.group_key] = combine(deltas.get(message.group_key, {}), message.delta)
            if deltas:
                _merge(conn, integration, deltas, combine, clock(conn))
        return counted

    def dirty(self, integration: str, after: str | None = None, limit: int = 1000) -> list[Group]:
        """Up to `limit` dirty groups whose group_key sorts after `after`, in that order."""
        stmt = (sa.select(aggregates.c.group_key, aggregates.c.state, aggregates.c.revision)
                .where(aggregates.c.integration == integration, aggregates.c.dirty.is_(True))
                .order_by(aggregates.c.group_key).limit(limit))
        if after is not None:
            stmt = stmt.where(aggregates.c.group_key > after)
        with self._db.read("aggregates.dirty") as conn:
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
        with self._db.begin("aggregates.written") as conn:
            conn.execute(stmt, [dict(b_integration=integration, b_group_key=g.group_key,
                                     b_revision=g.revision) for g in groups])


def _merge(conn: Connection, integration: str, deltas: Mapping[str, Mapping[str, Any]],
           combine: Combine, now: Any) -> None:
    keys = sorted(deltas)
    # A group new to the state gets an empty row first, so that every group of the
    # batch can be locked the same way (a lock cannot be taken on a row not there).
    for chunk in chunks(keys, _CHUNK):
        conn.execute(insert_or_skip(conn, aggregates).values(
            [dict(integration=integration, group_key=key, state={}, revision=0, dirty=False,
                  updated_at=now) for key in chunk]).on_conflict_do_nothing())
    stored: dict[str, Mapping[str, Any]] = {}
    for chunk in chunks(keys, _CHUNK):
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
