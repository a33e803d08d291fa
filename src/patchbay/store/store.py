"""The Store: everything the engine must remember between processes."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import secrets
import socket
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from patchbay.errors import MessageSeen
from patchbay.processes import gone, this_host
from patchbay.store import schema
from patchbay.store.aggregates import AggregatesMixin, insert_or_skip
from patchbay.store.outbox import Delivery as Delivery
from patchbay.store.outbox import DeliveryStatus as DeliveryStatus
from patchbay.store.outbox import NewDelivery as NewDelivery
from patchbay.store.outbox import OutboxMixin, as_text, clock, version_order
from patchbay.store.schema import cursors, outbox, outcomes, runs, seen_messages

UNAVAILABLE: tuple[type[Exception], ...] = (sa.exc.OperationalError, sa.exc.InterfaceError)
"""What the engine state raises while it cannot be reached (a restart, a lock held too
long): the work waits and is tried again."""

DEFAULT_DIRECTORY = ".patchbay"
MIGRATION_LOCK = 0x7061746368626179  # "patchbay": the advisory lock that serialises migrations
PUSH_LOCK = 0x70757368  # "push", with the integration: serialises its pushed changes
STALE_AFTER = dt.timedelta(minutes=2)
"""A running run whose owner has not checkpointed for this long, on another host, is dead."""


class RunStatus:
    RUNNING = "running"
    INTERRUPTED = "interrupted"
    FAILED = "failed"
    COMPLETE = "complete"
    COMPLETE_WITH_REJECTS = "complete_with_rejects"
    INCOMPLETE = "incomplete"

    UNFINISHED = (RUNNING, INTERRUPTED, FAILED)


@dataclass(frozen=True, slots=True)
class RunRecord:
    id: str
    integration: str
    pattern: str
    spec_path: str | None
    params: dict[str, Any]
    status: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    heartbeat_at: dt.datetime | None
    owner: str | None
    batches: int
    counters: dict[str, int]
    checkpoint: dict[str, Any] | None
    report: dict[str, Any] | None
    error: str | None
    fingerprint: str | None
    """The digest of the definition the run ran (see migration.fingerprint); None for runs
    started before patchbay kept it."""

    @property
    def owner_alive(self) -> bool:
        """Whether the process that owns this running run still lives."""
        if self.status != RunStatus.RUNNING or not self.owner:
            return False
        host, _, pid = self.owner.rpartition(":")
        if host == this_host():
            return pid.isdigit() and not gone(host, pid)
        beat = self.heartbeat_at or self.started_at
        return _now() - _aware(beat) < STALE_AFTER


@dataclass(frozen=True, slots=True)
class OutcomeRow:
    record_key: Any
    status: str
    code: str | None
    reason: str | None
    source: Mapping[str, Any] | None


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _aware(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def new_run_id() -> str:
    return _now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


class Store(OutboxMixin, AggregatesMixin):
    """Engine state behind SQLAlchemy Core; open with `Store.open()`.

    The broadcast outbox (lease, delivered, retry, dead, dead letters, replay, discard,
    counts) comes from OutboxMixin, in store/outbox.py; `enqueue` is here, beside the
    cursors it advances. Stream aggregations' groups and counted messages (count, dirty,
    written, seen, purge_seen) come from AggregatesMixin, in store/aggregates.py.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._pushing = threading.Lock()
        with engine.begin() as conn:
            if engine.dialect.name == "postgresql":
                # Workers starting together on a new state: one creates the schema, the
                # others wait for it and find it there.
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK})
            schema.migrate(conn)

    @classmethod
    def open(cls, url: str | None = None, directory: str | Path = DEFAULT_DIRECTORY) -> Store:
        """The store at `url`, or an SQLite file `state.db` under `directory`."""
        if url is None:
            url = os.environ.get("PATCHBAY_STATE")
        if url is None:
            path = Path(directory)
            path.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{path / 'state.db'}"
        from patchbay.urls import sqlalchemy_url

        engine = sa.create_engine(sqlalchemy_url(url))
        if engine.dialect.name == "sqlite":
            sa.event.listen(engine, "connect", _sqlite_pragmas)
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()

    # -- runs -----------------------------------------------------------------------------------

    def start_run(self, integration: str, pattern: str, params: Mapping[str, Any],
                  spec_path: str | None = None, fingerprint: str | None = None) -> RunRecord:
        now = _now()
        values = dict(id=new_run_id(), integration=integration, pattern=pattern,
                      spec_path=spec_path, params=jsonable(params), status=RunStatus.RUNNING,
                      started_at=now, heartbeat_at=now, owner=_owner(), batches=0, counters={},
                      checkpoint=None, fingerprint=fingerprint)
        with self.engine.begin() as conn:
            conn.execute(sa.insert(runs).values(**values))
        return self.run(str(values["id"]))

    def claim(self, run_id: str) -> RunRecord:
        """Take over an unfinished run to resume it."""
        with self.engine.begin() as conn:
            conn.execute(sa.update(runs).where(runs.c.id == run_id).values(
                status=RunStatus.RUNNING, owner=_owner(), heartbeat_at=_now(), error=None,
                finished_at=None))
        return self.run(run_id)

    def run(self, run_id: str) -> RunRecord:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).mappings().first()
        if row is None:
            from patchbay.errors import UnknownRun

            raise UnknownRun(f"no run '{run_id}' in the engine state")
        return _run_record(row)

    def runs(self, integration: str | None = None, limit: int = 50) -> list[RunRecord]:
        stmt = sa.select(runs).order_by(runs.c.started_at.desc(), runs.c.id.desc()).limit(limit)
        if integration is not None:
            stmt = stmt.where(runs.c.integration == integration)
        with self.engine.connect() as conn:
            return [_run_record(r) for r in conn.execute(stmt).mappings()]

    def unfinished_runs(self, integration: str, params: Mapping[str, Any]) -> list[RunRecord]:
        """The unfinished runs of this integration name with the same parameters, latest
        first, whatever definition they ran (the caller compares fingerprints)."""
        wanted = jsonable(params)
        stmt = (sa.select(runs).where(runs.c.integration == integration,
                                      runs.c.status.in_(RunStatus.UNFINISHED))
                .order_by(runs.c.started_at.desc(), runs.c.id.desc()))
        with self.engine.connect() as conn:
            return [_run_record(row) for row in conn.execute(stmt).mappings()
                    if row["params"] == wanted]

    def checkpoint(self, run_id: str, *, batch: int, checkpoint: Mapping[str, Any],
                   counters: Mapping[str, int], outcome_rows: Sequence[OutcomeRow] = ()) -> None:
        """Record a written batch: its set-aside records and the position after it, together."""
        with self.engine.begin() as conn:
            if outcome_rows:
                conn.execute(sa.insert(outcomes), [
                    dict(run_id=run_id, batch=batch, record_key=_key_text(o.record_key),
                         status=o.status, code=o.code, reason=o.reason,
                         source=jsonable(o.source) if o.source is not None else None)
                    for o in outcome_rows])
            conn.execute(sa.update(runs).where(runs.c.id == run_id).values(
                batches=batch, checkpoint=jsonable(checkpoint), counters=dict(counters),
                heartbeat_at=_now()))

    def forget_progress(self, run_id: str) -> None:
        """Take a run back to its start: no checkpoint, counters or set-aside records."""
        with self.engine.begin() as conn:
            conn.execute(sa.delete(outcomes).where(outcomes.c.run_id == run_id))
            conn.execute(sa.update(runs).where(runs.c.id == run_id).values(
                batches=0, checkpoint=None, counters={}))

    def finish(self, run_id: str, status: str, *, report: Mapping[str, Any] | None = None,
               error: str | None = None, counters: Mapping[str, int] | None = None) -> None:
        values: dict[str, Any] = dict(status=status, error=error)
        if status not in (RunStatus.RUNNING, RunStatus.INTERRUPTED, RunStatus.FAILED):
            values["finished_at"] = _now()
        if report is not None:
            values["report"] = jsonable(report)
        if counters is not None:
            values["counters"] = dict(counters)
        with self.engine.begin() as conn:
            conn.execute(sa.update(runs).where(runs.c.id == run_id).values(**values))

    def outcomes(self, run_id: str, statuses: Sequence[str] | None = None,
                 limit: int | None = None) -> list[dict[str, Any]]:
        stmt = sa.select(outcomes).where(outcomes.c.run_id == run_id).order_by(outcomes.c.id)
        if statuses:
            stmt = stmt.where(outcomes.c.status.in_(list(statuses)))
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(stmt).mappings()]

    def cursor(self, integration: str, system: str, object: str) -> Any:
        """The watermark an integration reached in one system's object, or None."""
        stmt = sa.select(cursors.c.value).where(cursors.c.integration == integration,
                                                cursors.c.system == system,
                                                cursors.c.object == object)
        with self.engine.connect() as conn:
            return conn.execute(stmt).scalar()

    def set_cursor(self, integration: str, system: str, object: str, value: Any,
                   conn: Connection | None = None) -> None:
        """Move the watermark; inside `conn`'s transaction when given, else in its own."""
        if conn is None:
            with self.engine.begin() as own:
                self.set_cursor(integration, system, object, value, own)
            return
        values = dict(integration=integration, system=system, object=object,
                      value=jsonable(value), updated_at=_now())
        updated = conn.execute(sa.update(cursors).where(
            cursors.c.integration == integration, cursors.c.system == system,
            cursors.c.object == object).values(value=values["value"],
                                               updated_at=values["updated_at"]))
        if updated.rowcount == 0:
            conn.execute(sa.insert(cursors).values(**values))

    # -- outbox ---------------------------------------------------------------------------------

    def enqueue(self, integration: str, deliveries: Sequence[NewDelivery],
                cursor: tuple[str, str, Any] | None = None, *,
                message: tuple[str, str] | None = None, newer_only: bool = False) -> int:
        """Record deliveries, and move the cursor `(system, object, value)` past the changes
        they carry, in ONE transaction: after a crash both happened or neither did, so a
        change is never lost between its capture and its delivery. Return how many were
        recorded. The rest of the outbox is in store/outbox.py.

        For changes a source pushed: `message` (where it came from, its id) is recorded as
        seen in the same transaction, and MessageSeen raised if it was already (a replay);
        `newer_only` leaves out each delivery older than one of the same record already in
        the outbox for its destination (a late push never overwrites a newer version)."""
        rows = [dict(integration=integration, destination=d.destination,
                     record_key=as_text(d.record_key), version=as_text(d.version),
                     operation=d.operation,
                     payload=jsonable(d.payload) if d.payload is not None else None)
                for d in deliveries]
        with contextlib.ExitStack() as serial:
            if newer_only:
                # Two pushes of one record must not both find themselves the newest.
                serial.enter_context(self._pushing)
            with self.engine.begin() as conn:
                if message is not None:
                    self._first_sight(conn, integration, *message)
                if newer_only and rows:
                    if conn.dialect.name == "postgresql":
                        conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key, hashtext(:name))"),
                                     {"key": PUSH_LOCK, "name": integration})
                    rows = _newer_only(conn, integration, rows)
                if cursor is not None:
                    system, object, value = cursor
                    self.set_cursor(integration, system, object, value, conn)
                if rows:
                    now = clock(conn)
                    conn.execute(sa.insert(outbox).values(
                        status=DeliveryStatus.PENDING.value, attempts=0, next_attempt_at=now,
                        created_at=now), rows)
        return len(rows)

    def _first_sight(self, conn: Connection, integration: str, source: str, message_id: str) -> None:
        """Record a pushed message as seen; MessageSeen if it was already."""
        stmt = (insert_or_skip(conn, seen_messages)
                .values(integration=integration, source=source, message_id=message_id,
                        seen_at=clock(conn))
                .on_conflict_do_nothing().returning(seen_messages.c.message_id))
        if conn.execute(stmt).first() is None:
            raise MessageSeen(f"message {message_id!r} from {source} was accepted already",
                              integration=integration)


def _newer_only(conn: Connection, integration: str,
                rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows no older than every delivery of their record already in the outbox for
    their destination (discarded ones aside). Versions that cannot be compared (of
    different kinds, or none) never leave a row out."""
    keys = sorted({row["record_key"] for row in rows})
    destinations = sorted({row["destination"] for row in rows})
    newest: dict[tuple[str, str], Any] = {}
    for start in range(0, len(keys), 5000):
        stmt = (sa.select(outbox.c.destination, outbox.c.record_key, outbox.c.version)
                .where(outbox.c.integration == integration,
                       outbox.c.destination.in_(destinations),
                       outbox.c.record_key.in_(keys[start:start + 5000]),
                       outbox.c.status != DeliveryStatus.DISCARDED.value,
                       outbox.c.version.is_not(None)))
        for destination, record_key, version in conn.execute(stmt):
            order = version_order(version)
            held = newest.get((destination, record_key))
            if order is not None and (held is None or (held[0] == order[0] and order > held)):
                newest[(destination, record_key)] = order
    kept = []
    for row in rows:
        held = newest.get((row["destination"], row["record_key"]))
        order = version_order(row["version"])
        if held is not None and order is not None and order[0] == held[0] and order < held:
            continue
        kept.append(row)
    return kept


def _run_record(row: sa.RowMapping) -> RunRecord:
    return RunRecord(**{c.name: row[c.name] for c in runs.columns})


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=10000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _key_text(value: Any) -> str | None:
    return None if value is None else str(value)


def jsonable(value: Any) -> Any:
    """Values as JSON can hold them: dates and decimals become text."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, (dt.date, dt.datetime)):
        return value.isoformat()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
