"""The Store: everything the engine must remember between processes, as repositories.

    store.runs.get(run_id)                    one call, one transaction of its own
    with store.transaction() as tx:           one unit of work across tables: what the
        tx.outbox.add(integration, deliveries)    repositories of `tx` write commits
        tx.cursors.set(integration, system, object, position)    together, or not at all

Both have the same repositories (see `Repositories`): runs, outcomes, cursors, outbox,
aggregates, seen, a sync's xref, shadows and conflicts, a correlation's pairs, the alerts of
notifications, a partitioned run's key ranges, the cluster's leases, process registry and
claimed ticks, and the keys drawn for the state (secrets). A new table is one repository
module, one migration step (schema.py) and one line in `Repositories`.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from patchbay.store import schema
from patchbay.store.aggregates import Aggregates
from patchbay.store.alerts import Alerts
from patchbay.store.conflicts import Conflicts
from patchbay.store.cursors import Cursors
from patchbay.store.leases import Fence, Leases
from patchbay.store.outbox import Outbox
from patchbay.store.pairs import Pairs
from patchbay.store.processes import Processes
from patchbay.store.ranges import Ranges
from patchbay.store.runs import Outcomes, Runs
from patchbay.store.secrets import Secrets
from patchbay.store.seen import Seen
from patchbay.store.shadow import Shadows
from patchbay.store.ticks import Ticks
from patchbay.store.unit import Connections, Own, Within, wrapped
from patchbay.store.xref import Xref
from patchbay.urls import sqlalchemy_url

DEFAULT_DIRECTORY = ".patchbay"
MIGRATION_LOCK = 0x7061746368626179  # "patchbay": the advisory lock that serialises migrations
SERIAL_LOCK = 0x70757368  # with a name's hash: serialises the transactions given that name


class Repositories:
    """The engine state's repositories, all on the same connections."""

    def __init__(self, connections: Connections) -> None:
        self.runs = Runs(connections)
        self.outcomes = Outcomes(connections)
        self.cursors = Cursors(connections)
        self.outbox = Outbox(connections)
        self.aggregates = Aggregates(connections)
        self.seen = Seen(connections)
        self.xref = Xref(connections)
        self.shadows = Shadows(connections)
        self.conflicts = Conflicts(connections)
        self.pairs = Pairs(connections)
        self.alerts = Alerts(connections)
        self.ranges = Ranges(connections)
        self.leases = Leases(connections)
        self.processes = Processes(connections)
        self.ticks = Ticks(connections)
        self.secrets = Secrets(connections)


class Transaction(Repositories):
    """One unit of work: its repositories work on one connection, in one transaction."""

    def __init__(self, conn: Connection) -> None:
        super().__init__(Within(conn))


class Store(Repositories):
    """Engine state behind SQLAlchemy Core; open with `Store.open()` (or `open_state`).
    Each call of its repositories is a transaction of its own; `transaction()` makes one
    of several."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(Own(engine))
        self.engine = engine
        self._serials: dict[str, threading.Lock] = {}
        self._serials_lock = threading.Lock()
        self._fences = threading.local()
        with wrapped(engine, "migrate"), engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                # Workers starting together on a new state: one creates the schema, the
                # others wait for it and find it there.
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            schema.migrate(conn)

    @classmethod
    def open(cls, url: str | None = None, directory: str | Path = DEFAULT_DIRECTORY) -> Store:
        """The store at `url` (else $PATCHBAY_STATE), or an SQLite file `state.db` under
        `directory`."""
        if url is None:
            url = os.environ.get("PATCHBAY_STATE")
        if url is None:
            path = Path(directory)
            path.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{path / 'state.db'}"
        engine = sa.create_engine(sqlalchemy_url(url))
        if engine.dialect.name == "sqlite":
            sa.event.listen(engine, "connect", _sqlite_pragmas)
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    @contextlib.contextmanager
    def transaction(self, *, serial: str | None = None) -> Iterator[Transaction]:
        """One unit of work: everything its repositories write commits when the block ends,
        or nothing does if it raises. Transactions given the same `serial` name run one at a
        time: in this process, and on PostgreSQL across processes (an advisory lock). Inside
        `fenced(fence)`, it first checks that the fence still holds its lease (LeaseLost
        if not)."""
        fence: Fence | None = getattr(self._fences, "fence", None)
        with contextlib.ExitStack() as held:
            if serial is not None:
                held.enter_context(self._serial(serial))
            with wrapped(self.engine, "transaction"), self.engine.begin() as conn:
                if serial is not None and conn.dialect.name == "postgresql":
                    conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key, hashtext(:name))"),
                                 {"key": SERIAL_LOCK, "name": serial})
                tx = Transaction(conn)
                # PostgreSQL: the lease row is locked first, so a takeover waits for this
                # commit. SQLite has one writer at a time: checked just before the commit, the
                # fence is as sure and the write lock is not held through the whole unit.
                early = conn.dialect.name == "postgresql"
                if fence is not None and early:
                    tx.leases.hold(fence)
                yield tx
                if fence is not None and not early:
                    tx.leases.hold(fence)

    @contextlib.contextmanager
    def fenced(self, fence: Fence) -> Iterator[None]:
        """Every unit of work this thread begins inside commits only while `fence` holds
        its lease: a holder that was paused past its lease commits nothing after another
        process took over (see store/leases.py)."""
        outer = getattr(self._fences, "fence", None)
        self._fences.fence = fence
        try:
            yield
        finally:
            self._fences.fence = outer

    def _serial(self, name: str) -> threading.Lock:
        with self._serials_lock:
            return self._serials.setdefault(name, threading.Lock())


def open_state(state: str | Path | None) -> tuple[Store, Path]:
    """The engine state and the directory of run reports, as every entry point (command
    line, HTTP API, Python API) opens them: `state` is a database URL (reports then go under
    .patchbay/runs), or a directory holding state.db and runs/ (.patchbay by default)."""
    if state is not None and "://" in str(state):
        return Store.open(str(state)), Path(DEFAULT_DIRECTORY) / "runs"
    directory = Path(state) if state else Path(DEFAULT_DIRECTORY)
    return Store.open(directory=directory), directory / "runs"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
