"""Leases (`patchbay_leases`): work that one process at a time may do, such as noticing an
integration's changes, shared by every process of an engine state.

    take      hold the lease if it is free, expired, or its holder's process (of this
              machine) has ended; the Fence of this take, or None while another holds it
    renew     push the expiry on; False once another process has taken it
    release   give it up, so that another takes it at once
    hold      inside a unit of work: fail with LeaseLost unless the fence still holds

A lease is a row: its holder, its expiry, and a fencing token raised at every change of
holder. A process that stops renewing (killed, paused, cut off) loses the lease when it
expires, and another takes it. A paused holder may wake and commit what it prepared
before: it commits only inside `store.transaction()` under its fence, whose first statement
(`hold`) writes the lease row only while holder and token are still its own. On PostgreSQL
that write also locks the row until the commit, so a take waits for the commit (and then
sees the work done), or a commit after a take finds the token changed and rolls back; on
SQLite every writing transaction runs alone. So work under a lease is never committed by two
holders, whatever the clocks and pauses. A holder paused inside such a unit of work (or
inside a take or renewal) would keep the row locked and hold up the takeover: on PostgreSQL
each of these transactions has the server end its session once it is idle in it for the
lease's length (`cut_off_when_idle`).

Clock: the expiry is computed and compared by the database server on PostgreSQL, by the
local clock on SQLite (one machine).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from patchbay.errors import LeaseLost
from patchbay.processes import owner_gone
from patchbay.store.schema import leases
from patchbay.store.unit import (
    Repository,
    aware,
    clock,
    current_time,
    cut_off_when_idle,
    insert_or_skip,
)


@dataclass(frozen=True, slots=True)
class Fence:
    """One take of a lease: its name, its holder, the token the take raised it to, and how
    long the lease lasts unless renewed."""

    name: str
    holder: str
    token: int
    seconds: float


@dataclass(frozen=True, slots=True)
class LeaseRecord:
    """A row of `patchbay_leases`, with whether it had expired when read."""

    name: str
    holder: str | None
    token: int
    acquired_at: dt.datetime
    renewed_at: dt.datetime
    expires_at: dt.datetime
    expired: bool


class Leases(Repository):
    """Leases (`patchbay_leases`); see the module's docstring."""

    def take(self, name: str, holder: str, seconds: float) -> Fence | None:
        """Hold lease `name` for `seconds` if it is free, expired, held by an ended process
        of this machine, or `holder`'s already; its Fence, or None while another holds it."""
        with self._db.begin("leases.take") as conn:
            cut_off_when_idle(conn, seconds)
            now = clock(conn)
            until = now + dt.timedelta(seconds=seconds)
            created = conn.execute(insert_or_skip(conn, leases).values(
                name=name, holder=holder, token=1, acquired_at=now, renewed_at=now,
                expires_at=until).on_conflict_do_nothing().returning(leases.c.token)).first()
            if created is not None:
                return Fence(name, holder, 1, seconds)
            current = conn.execute(sa.select(leases.c.holder, leases.c.token)
                                   .where(leases.c.name == name)).one()
            if current.holder == holder:
                mine = Fence(name, holder, current.token, seconds)
                renewed = conn.execute(_held(mine).values(renewed_at=now, expires_at=until)).rowcount
                return mine if renewed else None
            takeable = [leases.c.holder.is_(None), leases.c.expires_at <= now]
            if current.holder is not None and owner_gone(current.holder):
                takeable.append(sa.true())
            # Compare-and-set on the token read: of two takers, the second finds it raised.
            taken = conn.execute(sa.update(leases).where(
                leases.c.name == name, leases.c.token == current.token, sa.or_(*takeable))
                .values(holder=holder, token=current.token + 1, acquired_at=now,
                        renewed_at=now, expires_at=until)).rowcount
            return Fence(name, holder, current.token + 1, seconds) if taken else None

    def renew(self, fence: Fence) -> bool:
        """Push the lease's expiry its length on; False once another holds it."""
        with self._db.begin("leases.renew") as conn:
            cut_off_when_idle(conn, fence.seconds)
            now = clock(conn)
            return bool(conn.execute(_held(fence).values(
                renewed_at=now, expires_at=now + dt.timedelta(seconds=fence.seconds))).rowcount)

    def release(self, fence: Fence) -> bool:
        """Give the lease up (free for any process now); whether `fence` still held it."""
        with self._db.begin("leases.release") as conn:
            cut_off_when_idle(conn, fence.seconds)
            return bool(conn.execute(_held(fence).values(holder=None,
                                                         expires_at=clock(conn))).rowcount)

    def hold(self, fence: Fence) -> None:
        """Inside a unit of work (first on PostgreSQL, last on SQLite: see Store.transaction):
        LeaseLost unless `fence` still holds its lease; on PostgreSQL the lease row stays
        locked until the unit of work ends, and the server ends it if it is left idle for
        the lease's length."""
        with self._db.begin("leases.hold") as conn:
            cut_off_when_idle(conn, fence.seconds)
            if not conn.execute(_held(fence).values(token=leases.c.token)).rowcount:
                raise LeaseLost(f"lease '{fence.name}' was taken over by another process",
                                holder=fence.holder)

    def list(self) -> list[LeaseRecord]:
        """Every lease, by name."""
        with self._db.read("leases.list") as conn:
            now = current_time(conn)
            rows = conn.execute(sa.select(leases).order_by(leases.c.name)).mappings().all()
        return [_record(row, now) for row in rows]


def _held(fence: Fence) -> sa.Update:
    return sa.update(leases).where(leases.c.name == fence.name, leases.c.holder == fence.holder,
                                   leases.c.token == fence.token)


def _record(row: sa.RowMapping, now: dt.datetime) -> LeaseRecord:
    times = {name: aware(row[name]) for name in ("acquired_at", "renewed_at", "expires_at")}
    return LeaseRecord(row["name"], row["holder"], int(row["token"]), **times,
                       expired=row["holder"] is None or times["expires_at"] <= now)
