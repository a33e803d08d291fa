"""A partitioned run's key ranges (`patchbay_key_ranges`): who works each, until when, and
how far it got.

    Ranges  split (a run's ranges, once), lease, renew, checkpoint, done, failed, release,
            restart, reopen, of, runs_open

A range is [low, high) of the source key (None: unbounded), so the ranges of a run cover
every key whatever the split saw. Its lease is a holder (host:pid), an expiry and a fencing
token: `lease` takes an open range nobody holds, whose lease expired, or whose holder is a
process of this machine that is gone (one of another machine only by the expiry), and adds
one to the token; every later write of the holder (`renew`, `checkpoint`, `done`, ...) names the token
and changes nothing when another worker has leased the range since (LeaseLost). A range's
checkpoint and its set-aside records commit together:

    with store.transaction() as tx:
        tx.outcomes.add(run_id, batch, rows, key_range=lease.number)
        tx.ranges.checkpoint(lease, position=..., ...)       # LeaseLost: neither is kept

Clock: as for store/leases.py, expiries are computed and compared by the database server on
PostgreSQL (workers on several machines need not agree on the time), by the local clock on
SQLite.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from patchbay.errors import LeaseLost
from patchbay.model import jsonable
from patchbay.processes import owner_gone, this_process
from patchbay.store.schema import key_ranges, runs
from patchbay.store.unit import Repository, aware, clock, current_time

OPEN, DONE, FAILED = "open", "done", "failed"


@dataclass(frozen=True, slots=True)
class KeyRange:
    """One range of a run, as the state holds it (a lease is the range as leased: its
    `token` is the one the holder's writes name)."""

    run_id: str
    number: int
    low: Any
    high: Any
    status: str
    holder: str | None
    lease_expires_at: dt.datetime | None
    token: int
    position: Any
    batches: int
    counters: dict[str, int]
    comparison: dict[str, Any] | None
    high_water: Any
    takeovers: int
    """How often another worker took the range over after its holder's lease expired."""
    resumed: int
    """How often the range was leased again from a checkpoint (taken over, or given back
    when a run stopped and resumed later)."""
    error: str | None
    updated_at: dt.datetime


class Ranges(Repository):
    """The key ranges of partitioned runs."""

    def split(self, run_id: str, bounds: Sequence[tuple[Any, Any]]) -> bool:
        """Record a run's ranges, unless it has some already; whether these were recorded."""
        with self._db.begin("ranges.split") as conn:
            now = current_time(conn)
            if conn.execute(sa.select(sa.func.count()).select_from(key_ranges)
                            .where(key_ranges.c.run_id == run_id)).scalar_one():
                return False
            conn.execute(sa.insert(key_ranges), [
                dict(run_id=run_id, number=number, low=jsonable(low), high=jsonable(high),
                     status=OPEN, holder=None, lease_expires_at=None, token=0, position=None,
                     batches=0, counters={}, comparison=None, high_water=None, takeovers=0,
                     resumed=0, error=None, updated_at=now)
                for number, (low, high) in enumerate(bounds)])
        return True

    def lease(self, run_id: str, seconds: float, *, abandoned: bool = False) -> KeyRange | None:
        """Lease an open range of the run that nobody holds, or whose holder let its lease
        expire or is a process of this machine that is gone; those first (they were started
        and wait), then the lowest; with `abandoned`, only those. None when there is none."""
        with self._db.read("ranges.lease") as conn:
            now = current_time(conn)
            candidates = conn.execute(
                sa.select(key_ranges.c.number, key_ranges.c.token, key_ranges.c.holder,
                          key_ranges.c.lease_expires_at, key_ranges.c.position)
                .where(key_ranges.c.run_id == run_id, key_ranges.c.status == OPEN)
                .order_by(key_ranges.c.number)).all()
        left = [(n, t, h, p) for n, t, h, expires, p in candidates if h is not None
                and (expires is None or aware(expires) < now or owner_gone(h))]
        free = [] if abandoned else [(n, t, h, p) for n, t, h, _, p in candidates if h is None]
        for number, token, holder, started in left + free:
            # compare-and-set on the token: of two workers taking the same range, one wins
            with self._db.begin("ranges.lease") as conn:
                taken = conn.execute(sa.update(key_ranges).where(
                    key_ranges.c.run_id == run_id, key_ranges.c.number == number,
                    key_ranges.c.token == token, key_ranges.c.status == OPEN).values(
                    holder=this_process(), lease_expires_at=now + dt.timedelta(seconds=seconds),
                    token=token + 1, updated_at=now,
                    takeovers=key_ranges.c.takeovers + (0 if holder is None else 1),
                    resumed=key_ranges.c.resumed + (0 if started is None else 1))).rowcount
            if taken:
                return self._get(run_id, number)
        return None

    def renew(self, lease: KeyRange, seconds: float) -> None:
        self._fenced(lease, "ranges.renew", lasting=seconds)

    def checkpoint(self, lease: KeyRange, *, position: Any, batches: int,
                   counters: Mapping[str, int], comparison: Mapping[str, Any],
                   high_water: Any, seconds: float) -> None:
        """Record how far the holder got (its set-aside records go to Outcomes, in the same
        transaction); renews the lease."""
        self._fenced(lease, "ranges.checkpoint", position=jsonable(position), batches=batches,
                     counters=dict(counters), comparison=jsonable(comparison),
                     high_water=jsonable(high_water), lasting=seconds)

    def done(self, lease: KeyRange) -> None:
        """The range is migrated and compared to its end (its last holder is kept: the
        report says who worked it)."""
        self._fenced(lease, "ranges.done", status=DONE, lease_expires_at=None)

    def failed(self, lease: KeyRange, error: str) -> None:
        """The range stopped on an error; its checkpoint stays (reopen resumes it)."""
        self._fenced(lease, "ranges.failed", status=FAILED, holder=None, lease_expires_at=None,
                     error=error)

    def release(self, lease: KeyRange) -> None:
        """Give the range back at its checkpoint (stopped on request): free to lease at once."""
        self._fenced(lease, "ranges.release", holder=None, lease_expires_at=None)

    def restart(self, lease: KeyRange, error: str) -> None:
        """Failed, and back to its start: no checkpoint, no counters (its set-aside records
        are Outcomes.forget's, in the same transaction)."""
        self._fenced(lease, "ranges.restart", status=FAILED, holder=None, lease_expires_at=None,
                     position=None, batches=0, counters={}, comparison=None, high_water=None,
                     error=error)

    def reopen(self, run_id: str) -> None:
        """The failed ranges of a run resumed: open again, each from its checkpoint."""
        with self._db.begin("ranges.reopen") as conn:
            conn.execute(sa.update(key_ranges).where(
                key_ranges.c.run_id == run_id, key_ranges.c.status == FAILED).values(
                status=OPEN, error=None, updated_at=clock(conn)))

    def of(self, run_id: str) -> list[KeyRange]:
        with self._db.read("ranges.of") as conn:
            rows = conn.execute(sa.select(key_ranges).where(key_ranges.c.run_id == run_id)
                                .order_by(key_ranges.c.number)).mappings().all()
        return [_key_range(r) for r in rows]

    def runs_open(self, integrations: Sequence[str]) -> list[str]:
        """The running runs of these integrations with a range not done, oldest first."""
        stmt = (sa.select(runs.c.id).where(
            runs.c.integration.in_(list(integrations)), runs.c.status == "running",
            sa.exists().where(key_ranges.c.run_id == runs.c.id, key_ranges.c.status == OPEN))
            .order_by(runs.c.started_at))
        with self._db.read("ranges.runs_open") as conn:
            return [str(r) for r in conn.execute(stmt).scalars()]

    def _get(self, run_id: str, number: int) -> KeyRange:
        with self._db.read("ranges.get") as conn:
            row = conn.execute(sa.select(key_ranges).where(
                key_ranges.c.run_id == run_id, key_ranges.c.number == number)).mappings().one()
        return _key_range(row)

    def _fenced(self, lease: KeyRange, operation: str, lasting: float | None = None,
                **values: Any) -> None:
        """Write the holder's change (and, `lasting`, its lease renewed for that many
        seconds), if it still holds the range; else LeaseLost."""
        with self._db.begin(operation) as conn:
            now = clock(conn)
            if lasting is not None:
                values["lease_expires_at"] = now + dt.timedelta(seconds=lasting)
            changed = conn.execute(sa.update(key_ranges).where(
                key_ranges.c.run_id == lease.run_id, key_ranges.c.number == lease.number,
                key_ranges.c.token == lease.token, key_ranges.c.status == OPEN).values(
                updated_at=now, **values)).rowcount
        if not changed:
            raise LeaseLost(f"key range {lease.number} of run {lease.run_id} was taken over by "
                            "another worker (this one's lease expired)", run=lease.run_id)


def _key_range(row: sa.RowMapping) -> KeyRange:
    return KeyRange(**{c.name: row[c.name] for c in key_ranges.columns})


