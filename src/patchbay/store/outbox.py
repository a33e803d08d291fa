"""The broadcast outbox: durable deliveries, leased per destination, in order per record.

One row per destination per change. A change enters with `Outbox.add`, in the same
transaction that advances the source cursor past it, so a crash either keeps both or
neither ("nothing lost"):

    with store.transaction() as tx:
        tx.outbox.add(integration, deliveries)
        tx.cursors.set(integration, system, object, position)

Workers then, for one destination at a time:

    lease      the due pending deliveries whose lease is free or expired, at most the
               oldest undelivered one of each record key, ordered by id
    write      through the destination's connector (patchbay.runtime.delivery)
    mark       delivered / retry (pending again, due later) / dead / stale (discarded: a
               conditional write found the record changed), each applied only while the
               worker still holds the lease

Rules a caller can rely on:

- Per-destination isolation: leasing names one destination; a slow or unreachable one
  never holds back the others (each has its own pending rows, retries and dead letters).
- Per-key order: a delivery is leased only when no earlier delivery of the same record key
  for the same destination is still `pending` (in flight, waiting for a retry, or simply
  not yet leased) or `dead`. A key with a dead letter is therefore BLOCKED for that
  destination until the letter is replayed (`replay`, which delivers it first) or given
  up (`discard`); the other keys go on. Only dead letters can be replayed or discarded:
  a discarded letter is final, since replaying it after a later version was delivered
  would put an old version back.
- Leases: one statement locks the chosen deliveries in id order, skipping any another
  transaction has locked, checks again under each lock that the lease is still free, and
  takes them; so workers on any number of machines never hold the same delivery at once,
  and a lease never waits for another worker (two that waited for each other's rows, each
  locking in its plan's order, deadlocked). Marks lock their rows in id order too. On
  SQLite that statement is one writer transaction. A lease that expires (its worker died, or was slower
  than `lease_seconds`) can be taken by another worker; the first worker's late marks are
  then ignored. A worker of this machine whose process has ended holds nothing: `reclaim`
  frees its leases at once (a Deliverer does it when it starts). `lease_seconds` must
  exceed the longest write, or a late write of an old version could land after a newer one.
- Clock: on PostgreSQL every timestamp the outbox compares (due, lease expiry, created,
  delivered) is the database server's clock, so workers with skewed clocks agree; on
  SQLite it is the local clock (one machine). A `retry` given a timedelta counts it from
  that same clock.
- `attempts` counts finished attempts: each of `delivered`, `retry` and `dead` adds one;
  `replay` resets it to 0.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from patchbay.model import jsonable
from patchbay.processes import owner_gone
from patchbay.store.schema import WAITING, outbox
from patchbay.store.unit import (
    Repository,
    aware,
    chunks,
    clock,
    current_time,
    rerun_on_conflict,
)


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    """To be delivered: not yet leased, leased (in flight), or waiting for its next attempt."""
    DELIVERED = "delivered"
    DEAD = "dead"
    """Given up on (permanent refusal, or out of attempts); blocks its key until replayed
    or discarded."""
    DISCARDED = "discarded"
    """A dead letter an operator gave up on; final."""


OPERATIONS = ("upsert", "delete")
_BLOCKING = (DeliveryStatus.PENDING.value, DeliveryStatus.DEAD.value)
SUPERSEDED = "superseded by a later delivery"
"""The reason of a delivery `supersede` discarded (a stale one says "stale: ...")."""
_CHUNK = 5000
_ADD_CHUNK = 1000
"""Deliveries per INSERT: 11 values each, within PostgreSQL's 65,535 parameters."""


@dataclass(frozen=True, slots=True)
class NewDelivery:
    """A change to deliver to one destination.

    `record_key` orders the deliveries (one record's changes are delivered in the order
    they were enqueued) and is stored as text. `version` is the change's version as the
    source knows it (modstamp, sequence), kept for the record. `payload` is the record to
    write (for an upsert), stored as JSON: dates and decimals become text. A delete's
    payload may hold the key field with its typed value; otherwise `record_key` is used.
    """

    destination: str
    record_key: Any
    version: Any
    operation: str
    payload: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.operation not in OPERATIONS:
            raise ValueError(f"a delivery's operation is 'upsert' or 'delete', not {self.operation!r}")


@dataclass(frozen=True, slots=True)
class Delivery:
    """One row of the outbox."""

    id: int
    integration: str
    destination: str
    record_key: str
    version: str | None
    operation: str
    payload: dict[str, Any] | None
    status: DeliveryStatus
    attempts: int
    next_attempt_at: dt.datetime
    lease_owner: str | None
    lease_expires_at: dt.datetime | None
    last_error: str | None
    created_at: dt.datetime
    delivered_at: dt.datetime | None


def as_text(value: Any) -> str | None:
    """A key or version as the outbox stores it."""
    if value is None:
        return None
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def version_order(version: str | None) -> tuple[str, Any] | None:
    """A stored version as something to order by: a time (ISO 8601, a naive one taken as
    UTC), or a whole number; None for anything else. Only versions of the same kind (the
    first item) compare."""
    if not version:
        return None
    text = version.strip()
    if text.isascii() and text.isdigit() and len(text) <= 30:
        return ("number", int(text))
    try:
        at = dt.datetime.fromisoformat(text)
    except ValueError:
        return None
    return ("time", aware(at))


class Outbox(Repository):
    """The outbox (`patchbay_outbox`); see the module's docstring."""

    def add(self, integration: str, deliveries: Sequence[NewDelivery], *,
            newer_only: bool = False) -> int:
        """Record deliveries; how many were recorded. In a unit of work with the cursor
        moved past the changes they carry (see the module's docstring).

        For changes a source pushed, `newer_only` leaves out each delivery older than one of
        the same record already in the outbox for its destination (a late push never
        overwrites a newer version). Two pushes of one record must then not both find
        themselves the newest: run it in
        `store.transaction(serial=f"push:{integration}")`."""
        rows = [dict(integration=integration, destination=d.destination,
                     record_key=as_text(d.record_key), version=as_text(d.version),
                     operation=d.operation,
                     payload=jsonable(d.payload) if d.payload is not None else None)
                for d in deliveries]
        with self._db.begin("outbox.add") as conn:
            if newer_only and rows:
                rows = _newer_only(conn, integration, rows)
            now = clock(conn)
            pending = [{**row, "status": DeliveryStatus.PENDING.value, "attempts": 0,
                        "next_attempt_at": now, "created_at": now} for row in rows]
            if conn.dialect.name != "postgresql":
                if pending:  # executemany: one statement compiled once
                    conn.execute(sa.insert(outbox), pending)
                return len(rows)
            # PostgreSQL: one multi-row INSERT per chunk, not executemany: psycopg pipelines
            # that, and a process stopped mid-pipeline leaves its session neither idle nor
            # done, out of reach of the idle timeout that frees a paused lease holder's locks
            # (store/leases.py). (Compiling these costs: SQLite, which has no such session,
            # keeps executemany.)
            for chunk in chunks(pending, _ADD_CHUNK):
                conn.execute(sa.insert(outbox).values(chunk))
        return len(rows)

    @rerun_on_conflict
    def lease(self, integration: str, destination: str, worker: str, limit: int = 500,
              lease_seconds: float = 60.0) -> list[Delivery]:
        """Lease up to `limit` deliveries for `destination` to `worker`, ordered by id.

        Only pending deliveries that are due and whose lease is free or expired, and of
        each record key only the oldest one not yet delivered (see the module's rules).
        """
        if limit <= 0:
            return []
        with self._db.begin("outbox.lease") as conn:
            now = clock(conn)
            # The head of each record key (its oldest pending or dead delivery) in one
            # sorted pass. (A correlated NOT EXISTS per candidate ran as a nested loop over
            # the whole outbox on PostgreSQL: 45 s for a lease of 24,000 rows.)
            rank = sa.func.row_number().over(partition_by=outbox.c.record_key,
                                             order_by=outbox.c.id)
            heads = (sa.select(outbox.c.id, outbox.c.status, outbox.c.next_attempt_at,
                               outbox.c.lease_expires_at, rank.label("rank"))
                     .where(outbox.c.integration == integration,
                            outbox.c.destination == destination,
                            outbox.c.status.in_(_BLOCKING))
                     .subquery("heads"))
            pick = (sa.select(heads.c.id)
                    .where(heads.c.rank == 1,
                           heads.c.status == DeliveryStatus.PENDING.value,
                           heads.c.next_attempt_at <= now,
                           sa.or_(heads.c.lease_expires_at.is_(None),
                                  heads.c.lease_expires_at <= now))
                    .order_by(heads.c.id).limit(limit))
            # Workers racing for the same heads are kept apart by the row locks: a head
            # another worker is taking (or marking) is skipped, not waited for, and one it
            # has just taken fails the lease's check, made again under the lock.
            free = sa.or_(outbox.c.lease_expires_at.is_(None), outbox.c.lease_expires_at <= now)
            picked = pick.cte("picked")
            locked = _locked(outbox.c.id.in_(sa.select(picked.c.id)),
                             outbox.c.status == DeliveryStatus.PENDING.value, free,
                             skip=True).cte("locked")
            stmt = (sa.update(outbox)
                    .where(outbox.c.id.in_(sa.select(locked.c.id)))
                    .values(lease_owner=worker,
                            lease_expires_at=now + dt.timedelta(seconds=lease_seconds))
                    .returning(*outbox.c))
            leased = [_delivery(row) for row in conn.execute(stmt).mappings()]
        return sorted(leased, key=lambda d: d.id)

    @rerun_on_conflict
    def reclaim(self, integration: str) -> int:
        """Free the leases held by workers of this machine whose process has ended (killed,
        crashed); how many. A restarted process then delivers them at once instead of
        waiting `lease_seconds`. Leases of other machines' workers are left to expire."""
        with self._db.begin("outbox.reclaim") as conn:
            held = (outbox.c.integration == integration,
                    outbox.c.status == DeliveryStatus.PENDING.value,
                    outbox.c.lease_expires_at > clock(conn))
            owners = conn.execute(sa.select(outbox.c.lease_owner).distinct().where(*held)).scalars()
            ended = [owner for owner in owners if owner and owner_gone(owner)]
            if not ended:
                return 0
            return int(conn.execute(_in_order(*held, outbox.c.lease_owner.in_(ended))
                                    .values(lease_owner=None, lease_expires_at=None)).rowcount)

    def leased_by(self) -> dict[str, int]:
        """Deliveries being written now, per worker holding their lease (every integration)."""
        with self._db.read("outbox.leased_by") as conn:
            rows = conn.execute(sa.select(outbox.c.lease_owner, sa.func.count())
                                .where(outbox.c.status == DeliveryStatus.PENDING.value,
                                       outbox.c.lease_expires_at > clock(conn))
                                .group_by(outbox.c.lease_owner))
            return {owner: int(n) for owner, n in rows if owner}

    @rerun_on_conflict
    def delivered(self, ids: Sequence[int], worker: str) -> int:
        """Mark deliveries `worker` holds as delivered; return how many it still held."""
        done = 0
        with self._db.begin("outbox.delivered") as conn:
            now = clock(conn)
            for chunk in chunks(ids, _CHUNK):
                done += conn.execute(_held(chunk, worker).values(
                    status=DeliveryStatus.DELIVERED.value, delivered_at=now,
                    attempts=outbox.c.attempts + 1, lease_owner=None,
                    lease_expires_at=None)).rowcount
        return done

    @rerun_on_conflict
    def retry(self, id: int, worker: str, error: str,
              next_attempt_at: dt.datetime | dt.timedelta) -> bool:
        """Put a delivery `worker` holds back to pending, due at `next_attempt_at` (a time,
        or a delay from the outbox's clock); whether `worker` still held it."""
        with self._db.begin("outbox.retry") as conn:
            due = (clock(conn) + next_attempt_at if isinstance(next_attempt_at, dt.timedelta)
                   else next_attempt_at)
            return bool(conn.execute(_held([id], worker).values(
                attempts=outbox.c.attempts + 1, last_error=error, next_attempt_at=due,
                lease_owner=None, lease_expires_at=None)).rowcount)

    @rerun_on_conflict
    def dead(self, id: int, worker: str, error: str) -> bool:
        """Make a delivery `worker` holds a dead letter; whether `worker` still held it."""
        with self._db.begin("outbox.dead") as conn:
            return bool(conn.execute(_held([id], worker).values(
                status=DeliveryStatus.DEAD.value, attempts=outbox.c.attempts + 1,
                last_error=error, lease_owner=None, lease_expires_at=None)).rowcount)

    @rerun_on_conflict
    def stale(self, id: int, worker: str, error: str) -> bool:
        """Give up a delivery `worker` holds whose conditional write found the record changed
        (its writer decides anew from the record as it is now); whether it still held it."""
        with self._db.begin("outbox.stale") as conn:
            return bool(conn.execute(_held([id], worker).values(
                status=DeliveryStatus.DISCARDED.value, attempts=outbox.c.attempts + 1,
                last_error=f"stale: {error}", lease_owner=None,
                lease_expires_at=None)).rowcount)

    # -- dead letters ---------------------------------------------------------------------------

    def dead_letters(self, integration: str | None = None, destination: str | None = None,
                     limit: int = 100) -> list[Delivery]:
        stmt = (sa.select(outbox).where(outbox.c.status == DeliveryStatus.DEAD.value)
                .order_by(outbox.c.id).limit(limit))
        if integration is not None:
            stmt = stmt.where(outbox.c.integration == integration)
        if destination is not None:
            stmt = stmt.where(outbox.c.destination == destination)
        with self._db.read("outbox.dead_letters") as conn:
            return [_delivery(row) for row in conn.execute(stmt).mappings()]

    def get(self, id: int) -> Delivery | None:
        with self._db.read("outbox.get") as conn:
            row = conn.execute(sa.select(outbox).where(outbox.c.id == id)).mappings().first()
        return None if row is None else _delivery(row)

    @rerun_on_conflict
    def replay(self, ids: Sequence[int]) -> int:
        """Dead letters back to pending, attempts reset, due now; how many were dead."""
        changed = 0
        with self._db.begin("outbox.replay") as conn:
            now = clock(conn)
            for chunk in chunks(ids, _CHUNK):
                changed += conn.execute(_in_order(
                    outbox.c.id.in_(chunk), outbox.c.status == DeliveryStatus.DEAD.value).values(
                    status=DeliveryStatus.PENDING.value, attempts=0, next_attempt_at=now,
                    lease_owner=None, lease_expires_at=None)).rowcount
        return changed

    @rerun_on_conflict
    def discard(self, ids: Sequence[int]) -> int:
        """Give up on dead letters for good (unblocks their keys); how many were dead."""
        changed = 0
        with self._db.begin("outbox.discard") as conn:
            for chunk in chunks(ids, _CHUNK):
                changed += conn.execute(_in_order(
                    outbox.c.id.in_(chunk), outbox.c.status == DeliveryStatus.DEAD.value).values(
                    status=DeliveryStatus.DISCARDED.value)).rowcount
        return changed

    @rerun_on_conflict
    def supersede(self, integration: str, destination: str, record_keys: Sequence[Any]) -> int:
        """Give up the pending deliveries of these records that no worker holds now: a later
        delivery carries what they did (a sync's writes hold a record's whole difference).
        They become discarded, with the reason; how many."""
        changed = 0
        with self._db.begin("outbox.supersede") as conn:
            now = clock(conn)
            for chunk in chunks(sorted({as_text(k) for k in record_keys}), _CHUNK):
                changed += conn.execute(_in_order(
                    outbox.c.integration == integration, outbox.c.destination == destination,
                    outbox.c.record_key.in_(chunk),
                    outbox.c.status == DeliveryStatus.PENDING.value,
                    sa.or_(outbox.c.lease_owner.is_(None), outbox.c.lease_expires_at < now))
                    .values(status=DeliveryStatus.DISCARDED.value, lease_owner=None,
                            last_error=SUPERSEDED)).rowcount
        return changed

    def purge(self, older_than: dt.timedelta, integration: str | None = None) -> int:
        """Delete the deliveries delivered, or discarded, longer than `older_than` ago; how
        many. Pending deliveries and dead letters are never purged: they are work to do.
        Deletes go in chunks, so that a large outbox is not locked for long."""
        purged = 0
        while True:
            with self._db.begin("outbox.purge") as conn:
                cutoff = clock(conn) - older_than
                finished = sa.or_(
                    sa.and_(outbox.c.status == DeliveryStatus.DELIVERED.value,
                            outbox.c.delivered_at < cutoff),
                    sa.and_(outbox.c.status == DeliveryStatus.DISCARDED.value,
                            outbox.c.created_at < cutoff))
                chosen = sa.select(outbox.c.id).where(finished).limit(_CHUNK)
                if integration is not None:
                    chosen = chosen.where(outbox.c.integration == integration)
                ids = list(conn.execute(chosen).scalars())
                if ids:
                    purged += conn.execute(sa.delete(outbox).where(outbox.c.id.in_(ids))).rowcount
            if len(ids) < _CHUNK:
                return purged

    def landed(self, integration: str, destination: str, record_keys: Sequence[Any],
               before: dt.datetime) -> set[str]:
        """Of these records, those whose newest delivery to `destination` (superseded ones
        aside) was delivered before `before`: what it wrote is what the destination held
        then, unless someone changed it since. A newest one found stale (discarded: the
        record had changed there) landed nothing."""
        newest: dict[str, tuple[int, str, dt.datetime | None]] = {}
        with self._db.read("outbox.landed") as conn:
            for chunk in chunks(sorted({as_text(k) for k in record_keys if k is not None}),
                                _CHUNK):
                rows = conn.execute(sa.select(outbox.c.record_key, outbox.c.id, outbox.c.status,
                                              outbox.c.delivered_at).where(
                    outbox.c.integration == integration, outbox.c.destination == destination,
                    outbox.c.record_key.in_(chunk),
                    sa.or_(outbox.c.status != DeliveryStatus.DISCARDED.value,
                           outbox.c.last_error.is_(None),
                           outbox.c.last_error != SUPERSEDED)))
                for key, id, status, at in rows:
                    if key not in newest or id > newest[key][0]:
                        newest[key] = (id, status, _aware(at))
        return {key for key, (_, status, at) in newest.items()
                if status == DeliveryStatus.DELIVERED.value and at is not None and at < before}

    def counts(self, integration: str) -> dict[str, dict[str, int]]:
        """Deliveries per destination and status (every status present, zero or not)."""
        stmt = (sa.select(outbox.c.destination, outbox.c.status, sa.func.count())
                .where(outbox.c.integration == integration)
                .group_by(outbox.c.destination, outbox.c.status))
        counts: dict[str, dict[str, int]] = {}
        with self._db.read("outbox.counts") as conn:
            for destination, status, n in conn.execute(stmt):
                per = counts.setdefault(destination, {s.value: 0 for s in DeliveryStatus})
                per[status] = int(n)
        return counts

    def ages(self, integration: str, latest: int = 1000) -> dict[str, dict[str, Any]]:
        """Per destination: when its oldest pending delivery was enqueued, and the delivery
        latency (enqueued to delivered, seconds) of its `latest` deliveries: mean and max."""
        oldest = (sa.select(outbox.c.destination, sa.func.min(outbox.c.created_at))
                  .where(outbox.c.integration == integration,
                         outbox.c.status == DeliveryStatus.PENDING.value,
                         WAITING)  # the partial index's words: not a walk of delivered rows
                  .group_by(outbox.c.destination))
        delivered = (sa.select(outbox.c.destination, outbox.c.created_at, outbox.c.delivered_at)
                     .where(outbox.c.integration == integration,
                            outbox.c.status == DeliveryStatus.DELIVERED.value,
                            outbox.c.delivered_at.is_not(None))
                     .order_by(outbox.c.id.desc()).limit(latest))
        ages: dict[str, dict[str, Any]] = {}
        with self._db.read("outbox.ages") as conn:
            for destination, at in conn.execute(oldest):
                ages.setdefault(destination, {})["oldest_pending_at"] = _aware(at)
            latencies: dict[str, list[float]] = {}
            for destination, created, delivered_at in conn.execute(delivered):
                start, end = _aware(created), _aware(delivered_at)
                if start is not None and end is not None:
                    latencies.setdefault(destination, []).append(
                        max(0.0, (end - start).total_seconds()))
        for destination, seconds in latencies.items():
            ages.setdefault(destination, {}).update(
                latency_mean_seconds=sum(seconds) / len(seconds),
                latency_max_seconds=max(seconds), latency_of=len(seconds))
        return ages

    def backlog(self) -> list[Backlog]:
        """Every integration's pending and dead deliveries per destination, and the oldest
        pending one's age by the state's clock (metrics and notifications read it)."""
        stmt = (sa.select(outbox.c.integration, outbox.c.destination, outbox.c.status,
                          sa.func.count(), sa.func.min(outbox.c.created_at))
                .where(WAITING)  # as the partial index says it, so the planner takes it
                .group_by(outbox.c.integration, outbox.c.destination, outbox.c.status))
        found: dict[tuple[str, str], Backlog] = {}
        with self._db.read("outbox.backlog") as conn:
            now = current_time(conn)
            for integration, destination, status, n, oldest in conn.execute(stmt):
                oldest = _aware(oldest)
                was = found.get((integration, destination)) or Backlog(integration, destination)
                if status == DeliveryStatus.DEAD.value:
                    was = replace(was, dead=int(n))
                else:
                    age = (now - oldest).total_seconds() if oldest is not None else 0.0
                    was = replace(was, pending=int(n), oldest_pending_seconds=max(0.0, age))
                found[(integration, destination)] = was
        return list(found.values())


@dataclass(frozen=True, slots=True)
class Backlog:
    """What waits in one destination's outbox."""

    integration: str
    destination: str
    pending: int = 0
    dead: int = 0
    oldest_pending_seconds: float = 0.0


def _newer_only(conn: Connection, integration: str,
                rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows no older than every delivery of their record already in the outbox for
    their destination (discarded ones aside). Versions that cannot be compared (of
    different kinds, or none) never leave a row out."""
    keys = sorted({row["record_key"] for row in rows})
    destinations = sorted({row["destination"] for row in rows})
    newest: dict[tuple[str, str], Any] = {}
    for start in range(0, len(keys), _CHUNK):
        stmt = (sa.select(outbox.c.destination, outbox.c.record_key, outbox.c.version)
                .where(outbox.c.integration == integration,
                       outbox.c.destination.in_(destinations),
                       outbox.c.record_key.in_(keys[start:start + _CHUNK]),
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


def _held(ids: Sequence[int], worker: str) -> sa.Update:
    return _in_order(outbox.c.id.in_(list(ids)), outbox.c.lease_owner == worker,
                     outbox.c.status == DeliveryStatus.PENDING.value)


def _in_order(*where: sa.ColumnElement[bool]) -> sa.Update:
    """An UPDATE of the rows `where` picks, locked first in id order: two transactions
    updating some of the same rows then wait for each other at most one way round."""
    return sa.update(outbox).where(outbox.c.id.in_(_locked(*where)))


def _locked(*where: sa.ColumnElement[bool], skip: bool = False) -> sa.Select[tuple[int]]:
    """The ids of the rows `where` picks, locked in id order (PostgreSQL's plan would take
    them in whatever order its scan meets them); `skip` passes over rows locked already."""
    return (sa.select(outbox.c.id).where(*where).order_by(outbox.c.id)
            .with_for_update(skip_locked=skip, of=outbox))


def _aware(value: dt.datetime | None) -> dt.datetime | None:
    return None if value is None else aware(value)


def _delivery(row: sa.RowMapping) -> Delivery:
    values = {c.name: row[c.name] for c in outbox.columns}
    for name in ("next_attempt_at", "lease_expires_at", "created_at", "delivered_at"):
        values[name] = _aware(values[name])
    values["status"] = DeliveryStatus(values["status"])
    values["id"] = int(values["id"])
    return Delivery(**values)
