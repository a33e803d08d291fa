"""What every repository of the engine state stands on: where its connection comes from,
and how a failure of the engine state becomes an error of patchbay's tree.

A repository (runs, outcomes, cursors, outbox, aggregates, seen) is given a `Connections`:

    Own       the Store's: every call of a repository opens, and commits, its own transaction
    Within    a Transaction's: every repository of it works on its one connection, and all
              they write commits together when the `with store.transaction()` block ends

so the same repository code serves a single call (`store.runs.get(id)`) and a unit of work
across tables (`with store.transaction() as tx: tx.outbox.add(...); tx.cursors.set(...)`).
No SQLAlchemy exception leaves either: each becomes an EngineStateError naming the state
(its URL redacted) and the operation, an EngineStateUnavailable (retriable) when the state
could not be reached or is busy.

A call in a transaction of its own that PostgreSQL ends as a deadlock's victim (or a
serialization failure) has written nothing; `rerun_on_conflict` runs such a call again
rather than failing its worker. Within a Transaction the whole unit of work is gone, so
the error goes to its caller, retriable.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import random
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ParamSpec, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from patchbay.errors import EngineStateError, EngineStateUnavailable
from patchbay.spec import redact_url


class Connections(Protocol):
    """Where a repository's statements run; see the module's docstring."""

    def begin(self, operation: str) -> contextlib.AbstractContextManager[Connection]:
        """A connection in a transaction that writes; `operation` names it in errors."""
        ...

    def read(self, operation: str) -> contextlib.AbstractContextManager[Connection]:
        """A connection to read with; `operation` names it in errors."""
        ...


class Own:
    """Each call in a transaction of its own, on a connection from the engine's pool."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    @contextlib.contextmanager
    def begin(self, operation: str) -> Iterator[Connection]:
        with wrapped(self.engine, operation), self.engine.begin() as conn:
            yield conn

    @contextlib.contextmanager
    def read(self, operation: str) -> Iterator[Connection]:
        with wrapped(self.engine, operation), self.engine.connect() as conn:
            yield conn


class Within:
    """Every call on the one connection of a transaction under way, which commits later."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    @contextlib.contextmanager
    def begin(self, operation: str) -> Iterator[Connection]:
        with wrapped(self.conn.engine, operation):
            yield self.conn

    read = begin


class Repository:
    """One table (or a few that belong together) of the engine state."""

    def __init__(self, connections: Connections) -> None:
        self._db = connections


CONFLICTS = frozenset({"40P01", "40001"})
"""PostgreSQL's deadlock_detected and serialization_failure: the transaction was rolled
back whole, and the same work tried again normally goes through."""
_RERUNS = 5

P = ParamSpec("P")
R = TypeVar("R")


def rerun_on_conflict(method: Callable[P, R]) -> Callable[P, R]:
    """A repository method run again, after a short random pause, when its own transaction
    lost a conflict (see CONFLICTS); the last conflict is raised as EngineStateUnavailable."""
    @functools.wraps(method)
    def rerun(*args: P.args, **kwargs: P.kwargs) -> R:
        repository = args[0]
        own = isinstance(repository, Repository) and isinstance(repository._db, Own)
        for attempt in range(1, _RERUNS):
            try:
                return method(*args, **kwargs)
            except EngineStateUnavailable as exc:
                if not own or not conflict(exc):
                    raise
                # Apart again: two workers rerunning at once would meet the same way.
                time.sleep(random.uniform(0.0, 0.02 * attempt))
        return method(*args, **kwargs)
    return rerun


def conflict(exc: BaseException) -> bool:
    """Whether `exc` (or what it was raised from) is a conflict PostgreSQL rolled back."""
    cause = exc.__cause__
    orig = cause.orig if isinstance(cause, sa.exc.DBAPIError) else None
    return getattr(orig, "sqlstate", None) in CONFLICTS


@contextlib.contextmanager
def wrapped(engine: Engine, operation: str) -> Iterator[None]:
    """SQLAlchemy's errors raised inside, as errors of patchbay's tree."""
    try:
        yield
    except sa.exc.SQLAlchemyError as exc:
        raise state_error(exc, engine, operation) from exc


def state_error(exc: sa.exc.SQLAlchemyError, engine: Engine, operation: str) -> EngineStateError:
    """The error of patchbay's tree for a failure of the engine state: unavailable (to be
    tried again) when the state cannot be reached or is busy (a restart, a lost connection,
    a lock held too long), else a plain EngineStateError."""
    cause = exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc
    reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    url = engine.url.set(drivername=engine.url.get_backend_name())  # as written: no +driver
    state = redact_url(url.render_as_string(hide_password=True))
    unreachable = (isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError))
                   or (isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated))
    kind = EngineStateUnavailable if unreachable else EngineStateError
    return kind(f"the engine state failed: {reason}", state=state, operation=operation)


def clock(conn: Connection) -> Any:
    """Now, as the engine state compares times: the database's clock on PostgreSQL (an SQL
    expression, the transaction's start), the local clock elsewhere (a datetime)."""
    if conn.dialect.name == "postgresql":
        return sa.func.now()
    return dt.datetime.now(dt.UTC)


def cut_off_when_idle(conn: Connection, seconds: float) -> None:
    """On PostgreSQL, have the server end this transaction's session if it stays idle in it
    for `seconds`: a process paused inside it (stopped, swapped out) then holds its row
    locks no longer than that, and its commit fails when it wakes."""
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT set_config('idle_in_transaction_session_timeout', :ms, true)"),
                     {"ms": str(max(1, round(seconds * 1000)))})


def current_time(conn: Connection) -> dt.datetime:
    """Now, as `clock` gives it, as a value (to tell how old a stored time is)."""
    if conn.dialect.name == "postgresql":
        return aware(conn.execute(sa.select(sa.func.now())).scalar_one())
    return dt.datetime.now(dt.UTC)


def aware(value: dt.datetime) -> dt.datetime:
    """A stored time with its zone (SQLite gives them back without one: they are UTC)."""
    return value if value.tzinfo is not None else value.replace(tzinfo=dt.UTC)


def insert_or_skip(conn: Connection, table: sa.Table) -> Any:
    """An INSERT that can skip rows already there (the engine state is SQLite or PostgreSQL)."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(table)


def chunks(items: Sequence[Any], size: int) -> Iterator[list[Any]]:
    """`items` a `size` at a time, so that no statement grows without bound."""
    items = list(items)
    for start in range(0, len(items), size):
        yield items[start:start + size]
