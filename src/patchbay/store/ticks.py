"""Scheduled work claimed (`patchbay_ticks`): one row per integration and due time.

Every process serving a scheduled integration wakes at the same due times (a cron time, a
multiple of `every_seconds`); each claims the time before it runs, and the insert is the
arbiter (ON CONFLICT DO NOTHING ... RETURNING: of two processes claiming one time, the
second finds the first's row), so a scheduled run fires once across all processes.
"""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa

from patchbay.store.schema import ticks
from patchbay.store.unit import Repository, clock, insert_or_skip


def tick_text(due: dt.datetime) -> str:
    """A due time as the claims store it: UTC, to the millisecond."""
    return due.astimezone(dt.UTC).isoformat(timespec="milliseconds")


class Ticks(Repository):
    def claim(self, integration: str, due: dt.datetime, process: str) -> bool:
        """Claim the run of `integration` due at `due` for `process`; whether it got it."""
        with self._db.begin("ticks.claim") as conn:
            return conn.execute(insert_or_skip(conn, ticks).values(
                integration=integration, tick=tick_text(due), process=process,
                claimed_at=clock(conn)).on_conflict_do_nothing()
                .returning(ticks.c.tick)).first() is not None

    def claimed(self, integration: str) -> dict[str, str]:
        """The due times of `integration` claimed, and by which process."""
        with self._db.read("ticks.claimed") as conn:
            return {tick: process for tick, process in conn.execute(
                sa.select(ticks.c.tick, ticks.c.process).where(ticks.c.integration == integration))}

    def forget(self, older_than: dt.timedelta) -> int:
        """Delete the claims made longer than `older_than` ago; how many."""
        with self._db.begin("ticks.forget") as conn:
            return int(conn.execute(sa.delete(ticks).where(
                ticks.c.claimed_at < clock(conn) - older_than)).rowcount)
