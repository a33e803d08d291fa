"""The messages an integration has seen (`patchbay_seen_messages`): pushed changes accepted
(a signed webhook request, an Outbound Message) and messages a stream aggregation counted,
so that a message that comes again is neither queued nor counted twice.

    first_sight  record one pushed message; MessageSeen if it was recorded already
    record       record many; which of them are new (the others were recorded already)
    known        which of these ids are recorded
    purge        forget the messages seen longer ago than a cutoff

The insert is the arbiter between two processes (ON CONFLICT DO NOTHING ... RETURNING: of two
transactions recording one message, the second waits for the first and then finds it).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from patchbay.errors import MessageSeen
from patchbay.store.schema import seen_messages
from patchbay.store.unit import Repository, chunks, clock, insert_or_skip

_CHUNK = 2000


class Seen(Repository):
    def first_sight(self, integration: str, source: str, message_id: str) -> None:
        """Record a pushed message as seen; MessageSeen if it was already."""
        with self._db.begin("seen.first_sight") as conn:
            if not record(conn, integration, [(source, message_id)]):
                raise MessageSeen(f"message {message_id!r} from {source} was accepted already",
                                  integration=integration)

    def record(self, integration: str, messages: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
        """Record these (source, message id) as seen; those recorded now (not before)."""
        with self._db.begin("seen.record") as conn:
            return record(conn, integration, messages)

    def known(self, integration: str, source: str, ids: Sequence[str]) -> set[str]:
        """Which of these message ids of `source` are recorded."""
        found: set[str] = set()
        with self._db.read("seen.known") as conn:
            for chunk in chunks(sorted(set(ids)), _CHUNK):
                found.update(conn.execute(sa.select(seen_messages.c.message_id).where(
                    seen_messages.c.integration == integration,
                    seen_messages.c.source == source,
                    seen_messages.c.message_id.in_(chunk))).scalars())
        return found

    def purge(self, integration: str, older_than: dt.timedelta) -> int:
        """Forget the messages seen longer than `older_than` ago; how many. In chunks (a
        transaction each, outside a unit of work), so that a large table is not locked long."""
        purged = 0
        while True:
            with self._db.begin("seen.purge") as conn:
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


def record(conn: Connection, integration: str,
           messages: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """Seen.record on a connection in a transaction (Aggregates.count records and merges in one)."""
    now = clock(conn)
    rows = [dict(integration=integration, source=source, message_id=message_id, seen_at=now)
            for source, message_id in sorted(set(messages))]
    recorded: set[tuple[str, str]] = set()
    for chunk in chunks(rows, _CHUNK):
        stmt = (insert_or_skip(conn, seen_messages).values(chunk)
                .on_conflict_do_nothing()
                .returning(seen_messages.c.source, seen_messages.c.message_id))
        recorded.update((str(s), str(i)) for s, i in conn.execute(stmt))
    return recorded
