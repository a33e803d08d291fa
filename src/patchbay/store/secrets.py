"""Keys the engine draws once for its state (`patchbay_secrets`), shared by every process of
it, kept apart from what they key.

    key  the named key, drawn at random (32 bytes) the first time it is asked for

`key(CURSOR_DIGESTS)` keys the digests by which a change cursor remembers the records it
has seen (connectors' `changes`), so that a cursor, which any run report, log line or
export may show, holds nothing of a record, a correlation's unshared ones included.

Why in the state, and not derived from a secret in the environment: a cursor is only ever
read back against the same state, and every worker of a cluster must agree on the key; one
drawn and kept by the state needs no configuration that a worker could lack or get wrong (a
wrong key would not fail: it would deliver again the rows of every cursor's window). It is
kept in a table of its own, never in the cursors: reading the cursors (or a report, a log,
a dump of the cursors) tells nothing; reading this table as well gives only a way to test a
guess of a whole row (key, timestamp to its last digit, and values) within the last overlap
window, not to read one. Whoever can read the whole state can read the shared records'
shadows anyway.
"""

from __future__ import annotations

import secrets as random

import sqlalchemy as sa

from patchbay.store.schema import secrets
from patchbay.store.unit import Connections, Repository, clock, insert_or_skip

CURSOR_DIGESTS = "cursor digests"


class Secrets(Repository):
    def __init__(self, connections: Connections) -> None:
        super().__init__(connections)
        self._known: dict[str, bytes] = {}  # a key never changes once drawn

    def key(self, name: str) -> bytes:
        """The key named `name`, drawn the first time: of two processes drawing at once, the
        first to insert wins, and both return its key."""
        if name not in self._known:
            select = sa.select(secrets.c.value).where(secrets.c.name == name)
            with self._db.read("secrets.key") as conn:
                value = conn.execute(select).scalar()
            if value is None:
                with self._db.begin("secrets.key") as conn:
                    conn.execute(insert_or_skip(conn, secrets).values(
                        name=name, value=random.token_hex(32), created_at=clock(conn))
                        .on_conflict_do_nothing())
                    value = conn.execute(select).scalar_one()
            self._known[name] = bytes.fromhex(value)
        return self._known[name]
