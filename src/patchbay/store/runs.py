"""Runs and their outcomes: what a run is doing or did, and the records it set aside.

    Runs      start, claim, beat, get, latest, unfinished, checkpoint, restart, finish
    Outcomes  add (a batch's set-aside records), of (a run's), forget (a run's, or a key range's)

A written batch is recorded as one unit of work (see patterns/migration.py):

    with store.transaction() as tx:
        tx.outcomes.add(run_id, batch, rows)
        tx.runs.checkpoint(run_id, batch=batch, checkpoint=position, counters=counters)
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from patchbay.errors import UnknownRun
from patchbay.model import jsonable
from patchbay.processes import gone, this_host, this_process
from patchbay.store.schema import outcomes, runs
from patchbay.store.unit import Repository, aware

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
        return _now() - aware(beat) < STALE_AFTER


@dataclass(frozen=True, slots=True)
class OutcomeRow:
    record_key: Any
    status: str
    code: str | None
    reason: str | None
    source: Mapping[str, Any] | None


def new_run_id() -> str:
    return _now().strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


class Runs(Repository):
    """The table of runs (`patchbay_runs`)."""

    def start(self, integration: str, pattern: str, params: Mapping[str, Any],
              spec_path: str | None = None, fingerprint: str | None = None) -> RunRecord:
        now = _now()
        values = dict(id=new_run_id(), integration=integration, pattern=pattern,
                      spec_path=spec_path, params=jsonable(params), status=RunStatus.RUNNING,
                      started_at=now, heartbeat_at=now, owner=this_process(), batches=0, counters={},
                      checkpoint=None, fingerprint=fingerprint)
        with self._db.begin("runs.start") as conn:
            conn.execute(sa.insert(runs).values(**values))
        return self.get(str(values["id"]))

    def claim(self, run_id: str, *, owner: str | None = None) -> RunRecord | None:
        """Take over an unfinished run to resume it. With `owner`: only if that process
        still owns it (of two processes taking over a dead owner's run, one does); None
        when another took it first."""
        stmt = sa.update(runs).where(runs.c.id == run_id)
        if owner is not None:
            stmt = stmt.where(runs.c.owner == owner)
        with self._db.begin("runs.claim") as conn:
            taken = conn.execute(stmt.values(
                status=RunStatus.RUNNING, owner=this_process(), heartbeat_at=_now(), error=None,
                finished_at=None)).rowcount
        return self.get(run_id) if taken else None

    def beat(self, run_id: str) -> None:
        """Its owner lives (a run whose checkpoints others write: a partitioned one)."""
        with self._db.begin("runs.beat") as conn:
            conn.execute(sa.update(runs).where(runs.c.id == run_id).values(heartbeat_at=_now()))

    def get(self, run_id: str) -> RunRecord:
        with self._db.read("runs.get") as conn:
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).mappings().first()
        if row is None:
            raise UnknownRun(f"no run '{run_id}' in the engine state")
        return _run_record(row)

    def latest(self, integration: str | None = None, limit: int = 50) -> list[RunRecord]:
        """The latest runs (of one integration, or of all), latest first."""
        stmt = sa.select(runs).order_by(runs.c.started_at.desc(), runs.c.id.desc()).limit(limit)
        if integration is not None:
            stmt = stmt.where(runs.c.integration == integration)
        with self._db.read("runs.latest") as conn:
            return [_run_record(r) for r in conn.execute(stmt).mappings()]

    def unfinished(self, integration: str, params: Mapping[str, Any]) -> list[RunRecord]:
        """The unfinished runs of this integration name with the same parameters, latest
        first, whatever definition they ran (the caller compares fingerprints)."""
        wanted = jsonable(params)
        stmt = (sa.select(runs).where(runs.c.integration == integration,
                                      runs.c.status.in_(RunStatus.UNFINISHED))
                .order_by(runs.c.started_at.desc(), runs.c.id.desc()))
        with self._db.read("runs.unfinished") as conn:
            return [_run_record(row) for row in conn.execute(stmt).mappings()
                    if row["params"] == wanted]

    def checkpoint(self, run_id: str, *, batch: int, checkpoint: Mapping[str, Any],
                   counters: Mapping[str, int]) -> None:
        """Record the position after a written batch (its set-aside records go to Outcomes,
        in the same transaction)."""
        with self._db.begin("runs.checkpoint") as conn:
            conn.execute(sa.update(runs).where(runs.c.id == run_id).values(
                batches=batch, checkpoint=jsonable(checkpoint), counters=dict(counters),
                heartbeat_at=_now()))

    def restart(self, run_id: str) -> None:
        """Take a run back to its start: no checkpoint, no counters (its set-aside records
        are Outcomes.forget's, in the same transaction)."""
        with self._db.begin("runs.restart") as conn:
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
        with self._db.begin("runs.finish") as conn:
            conn.execute(sa.update(runs).where(runs.c.id == run_id).values(**values))


class Outcomes(Repository):
    """The records runs set aside or failed (`patchbay_outcomes`); successes are counted,
    not listed."""

    def add(self, run_id: str, batch: int, rows: Sequence[OutcomeRow],
            key_range: int | None = None) -> None:
        if not rows:
            return
        with self._db.begin("outcomes.add") as conn:
            conn.execute(sa.insert(outcomes), [
                dict(run_id=run_id, batch=batch, key_range=key_range,
                     record_key=_key_text(o.record_key),
                     status=o.status, code=o.code, reason=o.reason,
                     source=jsonable(o.source) if o.source is not None else None)
                for o in rows])

    def of(self, run_id: str, statuses: Sequence[str] | None = None,
           limit: int | None = None, *, offset: int = 0, code: str | None = None,
           containing: str | None = None) -> list[dict[str, Any]]:
        """A run's outcomes in the order they were recorded; of these statuses only, when given;
        of one code (a status when it has none, as in the report's counts by code); whose key
        or reason holds `containing` (case-insensitive)."""
        stmt = sa.select(outcomes).where(outcomes.c.run_id == run_id).order_by(outcomes.c.id)
        if statuses:
            stmt = stmt.where(outcomes.c.status.in_(list(statuses)))
        if code is not None:
            stmt = stmt.where(sa.func.coalesce(outcomes.c.code, outcomes.c.status) == code)
        if containing:
            # the text is a bound value; LIKE's own wildcards in it are taken literally
            pattern = "%" + containing.lower().replace("\\", "\\\\").replace("%", "\\%") \
                .replace("_", "\\_") + "%"
            stmt = stmt.where(sa.or_(sa.func.lower(outcomes.c.record_key).like(pattern, escape="\\"),
                                     sa.func.lower(outcomes.c.reason).like(pattern, escape="\\")))
        if offset:
            stmt = stmt.offset(offset)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._db.read("outcomes.of") as conn:
            return [dict(r) for r in conn.execute(stmt).mappings()]

    def tally(self, run_id: str) -> dict[tuple[str, str], int]:
        """How many of a run's outcomes per (status, code); a missing code is ''."""
        stmt = (sa.select(outcomes.c.status, outcomes.c.code, sa.func.count())
                .where(outcomes.c.run_id == run_id)
                .group_by(outcomes.c.status, outcomes.c.code))
        with self._db.read("outcomes.tally") as conn:
            return {(status, code or ""): int(n) for status, code, n in conn.execute(stmt)}

    def forget(self, run_id: str, key_range: int | None = None) -> None:
        """A run's set-aside records; of one key range only, when given."""
        stmt = sa.delete(outcomes).where(outcomes.c.run_id == run_id)
        if key_range is not None:
            stmt = stmt.where(outcomes.c.key_range == key_range)
        with self._db.begin("outcomes.forget") as conn:
            conn.execute(stmt)


def _run_record(row: sa.RowMapping) -> RunRecord:
    return RunRecord(**{c.name: row[c.name] for c in runs.columns})


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _key_text(value: Any) -> str | None:
    return None if value is None else str(value)
