"""The registry of processes sharing the engine state (`patchbay_processes`): every `serve`
and `worker` registers when it starts, beats while it runs, and says when it stops.

    register   a row: host, pid, role, version, started, heartbeat
    beat       the heartbeat now (a process marked gone that beats again is running again)
    stopped    it ended cleanly
    mark_gone  running processes silent too long, or of this machine and ended: gone
    forget     rows of processes stopped or gone long ago
    list       every row, newest first (`now`: the clock the rows are stamped by)
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import sqlalchemy as sa

from patchbay.processes import gone, this_host
from patchbay.store.schema import processes
from patchbay.store.unit import Repository, aware, clock, current_time

RUNNING, STOPPED, GONE = "running", "stopped", "gone"


@dataclass(frozen=True, slots=True)
class ProcessRecord:
    id: str
    host: str
    pid: int
    role: str
    version: str
    status: str
    started_at: dt.datetime
    heartbeat_at: dt.datetime
    ended_at: dt.datetime | None


class Processes(Repository):
    """The process registry (`patchbay_processes`); see the module's docstring."""

    def register(self, id: str, host: str, pid: int, role: str, version: str) -> None:
        with self._db.begin("processes.register") as conn:
            now = clock(conn)
            conn.execute(sa.insert(processes).values(
                id=id, host=host, pid=pid, role=role, version=version, status=RUNNING,
                started_at=now, heartbeat_at=now))

    def beat(self, id: str) -> bool:
        """Record a heartbeat; False when the process is not registered (or stopped)."""
        with self._db.begin("processes.beat") as conn:
            return bool(conn.execute(sa.update(processes).where(
                processes.c.id == id, processes.c.status != STOPPED).values(
                heartbeat_at=clock(conn), status=RUNNING, ended_at=None)).rowcount)

    def stopped(self, id: str) -> None:
        with self._db.begin("processes.stopped") as conn:
            conn.execute(sa.update(processes).where(processes.c.id == id).values(
                status=STOPPED, ended_at=clock(conn)))

    def mark_gone(self, silent_for: dt.timedelta) -> int:
        """Mark gone the running processes without a heartbeat for `silent_for`, and those of
        this machine that have ended; how many."""
        with self._db.begin("processes.mark_gone") as conn:
            now = clock(conn)
            running = processes.c.status == RUNNING
            here = conn.execute(sa.select(processes.c.id, processes.c.pid).where(
                running, processes.c.host == this_host())).all()
            ended = [id for id, pid in here if gone(this_host(), pid)]
            return int(conn.execute(sa.update(processes).where(
                running, sa.or_(processes.c.heartbeat_at < now - silent_for,
                                processes.c.id.in_(ended))).values(
                status=GONE, ended_at=now)).rowcount)

    def forget(self, older_than: dt.timedelta) -> int:
        """Delete the rows of processes that ended longer than `older_than` ago; how many."""
        with self._db.begin("processes.forget") as conn:
            return int(conn.execute(sa.delete(processes).where(
                processes.c.status != RUNNING,
                processes.c.ended_at < clock(conn) - older_than)).rowcount)

    def now(self) -> dt.datetime:
        """Now by the clock the heartbeats are stamped with."""
        with self._db.read("processes.now") as conn:
            return current_time(conn)

    def list(self) -> list[ProcessRecord]:
        with self._db.read("processes.list") as conn:
            rows = conn.execute(sa.select(processes).order_by(
                processes.c.started_at.desc(), processes.c.id)).mappings().all()
        return [ProcessRecord(
            row["id"], row["host"], int(row["pid"]), row["role"], row["version"], row["status"],
            aware(row["started_at"]), aware(row["heartbeat_at"]),
            aware(row["ended_at"]) if row["ended_at"] is not None else None) for row in rows]
