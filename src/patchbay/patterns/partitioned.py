"""A migration split into key ranges that workers lease and checkpoint on their own, with one
report for the run (`patchbay run --workers N`; `patchbay worker` takes ranges up too).

    start   the run recorded once (or resumed) ──► source.boundaries(scope, key, parts)
            ──► ranges [low, high) of the source key, the first and last unbounded
            ──► store.ranges.split (each range: lease, fencing token, checkpoint)
    work    a leased range: the migration's own read ──► transform ──► write ──► compare,
            its scope narrowed to low <= key < high and read after the range's checkpoint;
            each batch's set-aside records and the range's checkpoint in one transaction,
            fenced by the lease's token (a worker whose lease was taken records nothing)
    settle  every range done: the ranges' counters and comparisons added up (checksums are
            sums of per-batch digests, so they add exactly), one verdict, one report

The steps only; the runtime's loops (runtime/partitions.py) lease, renew and start workers.
A worker that dies leaves its range leased until the lease expires; the next worker takes it
over from its checkpoint and replays at most the batches written since, which the
idempotent writes make harmless.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
from collections import Counter
from dataclasses import replace
from typing import Any

from patchbay import scope as scopes
from patchbay.elements import capture
from patchbay.elements.capture import Comparison, MigrationReport
from patchbay.errors import FatalRunError, LeaseLost, RunNotResumable, SpecError
from patchbay.model import Operation, Status
from patchbay.patterns.context import RunContext
from patchbay.patterns.migration import (
    Checkpoints,
    Migration,
    NothingWritten,
    Prepared,
    Written,
    fingerprint,
    keep_watermark,
    later,
    prepare,
    watermark_reached,
)
from patchbay.store import RunRecord, Transaction
from patchbay.store.ranges import DONE, KeyRange
from patchbay.store.runs import RunStatus

RANGES_PER_WORKER = 4
"""A run is cut into this many ranges per worker, so that a worker finishing early takes
another range and a slow one holds up less of the run."""


def ranges_between(cuts: list[Any]) -> list[tuple[Any, Any]]:
    """The ranges [low, high) that ascending `cuts` make, the first and the last unbounded
    (None), so that together they hold every key, also one the split did not see."""
    bounds = [None, *cuts, None]
    return list(itertools.pairwise(bounds))


def within(scope: scopes.BoundScope | None, key: str, low: Any,
           high: Any) -> scopes.BoundScope | None:
    """`scope` narrowed to the keys of the range [low, high)."""
    parts = [part for part in (scope,
                               None if low is None else scopes.Condition(key, "gte", low),
                               None if high is None else scopes.Condition(key, "lt", high))
             if part is not None]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else scopes.Group("and", tuple(parts))


class Partitioned:
    """A migration's run split into key ranges: start, lease, work, settle."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.migration = Migration(ctx)
        self.integration = self.migration.integration
        self.lease_seconds = self.integration.options.lease_seconds

    @property
    def notice(self) -> str | None:
        return self.migration.notice

    def start(self, parts: int, *, fresh: bool = False, full: bool = False) -> RunRecord:
        """Record the run (or resume the unfinished one of this definition) and split it
        into about `parts` ranges of the source key, unless it is split already; a resumed
        run's failed ranges are opened again, each from its checkpoint."""
        store, src = self.ctx.store, self.integration.source
        if src.key is None:
            raise SpecError(f"'{self.integration.name}': a run with workers splits the source "
                            "by its key; declare source.key")
        run = self.migration.start(fresh=fresh, full=full, split=True)
        if ranges := store.ranges.of(run.id):
            store.ranges.reopen(run.id)
            done = sum(1 for r in ranges if r.status == DONE)
            self.migration.notice = (f"resuming run {run.id}: {done} of its {len(ranges)} key "
                                     "ranges done, the others from their checkpoints")
            return run
        watermark_after = None
        if src.watermark and not run.params.get("__full__"):
            watermark_after = watermark_reached(self.ctx)
        try:
            prepared = prepare(self.ctx, watermark_after)
            try:
                cuts = prepared.source.boundaries(src.object, prepared.scope, src.key, parts)
            except NotImplementedError as exc:
                raise SpecError(f"'{self.integration.name}': {exc}; run it without --workers") \
                    from None
        except BaseException as exc:
            store.runs.finish(run.id, RunStatus.FAILED, error=str(exc) or type(exc).__name__)
            raise
        bounds = ranges_between(cuts)
        store.runs.checkpoint(run.id, batch=0, counters={}, checkpoint={
            "ranges": len(bounds), "watermark_after": watermark_after})
        store.ranges.split(run.id, bounds)
        return store.runs.get(run.id)

    def joins(self, run: RunRecord) -> None:
        """Check that this worker's definition is the one `run` runs (a worker started with
        an edited file must not work its ranges)."""
        if run.fingerprint is not None and run.fingerprint != fingerprint(self.ctx):
            raise RunNotResumable(f"run {run.id} runs another definition of "
                                  f"'{self.integration.name}' than this file's")

    def lease(self, run_id: str, *, abandoned: bool = False) -> KeyRange | None:
        return self.ctx.store.ranges.lease(run_id, self.lease_seconds, abandoned=abandoned)

    def work(self, run: RunRecord, lease: KeyRange, stop: threading.Event) -> bool:
        """Migrate the leased range from its checkpoint to its end (True), or until `stop`
        (False: the range is given back at its checkpoint). LeaseLost when another worker
        took the range over meanwhile."""
        ctx, store, migration = self.ctx, self.ctx.store, self.migration
        src, dst = self.integration.source, self.integration.destination
        assert src.key is not None  # start refuses a source without a key
        prepared = prepare(ctx, (run.checkpoint or {}).get("watermark_after"))
        prepared.scope = within(prepared.scope, src.key, lease.low, lease.high)
        counters: Counter[str] = Counter(lease.counters)
        comparison = (Comparison.from_state(lease.comparison) if lease.comparison else
                      Comparison(dst.key, list(prepared.fields), self.integration.options.sample_size))

        def record(tx: Transaction, item: Written) -> None:
            tx.outcomes.add(run.id, item.batch, item.rows, key_range=lease.number)
            tx.ranges.checkpoint(lease, position=item.position, batches=item.batch,
                                 counters=item.counters, comparison=comparison.state(),
                                 high_water=item.high_water, seconds=self.lease_seconds)

        checkpoints = Checkpoints(store, record, lambda *_: None)
        try:
            stopped, _ = migration.carry(prepared, lease.position, lease.batches, counters,
                                         comparison, lease.high_water, checkpoints, run.id, stop)
            if not stopped:
                migration.check_rejects(counters, [], run.id, finished=True)
        except LeaseLost:
            checkpoints.finish(raise_error=False)
            raise
        except NothingWritten as exc:
            # resumed from its checkpoint, the range would skip the records it refused
            checkpoints.finish(raise_error=False)
            with store.transaction() as tx:
                tx.outcomes.forget(run.id, key_range=lease.number)
                tx.ranges.restart(lease, str(exc))
            raise
        except BaseException as exc:
            checkpoints.finish(raise_error=False)
            with contextlib.suppress(LeaseLost):
                store.ranges.failed(lease, str(exc) or type(exc).__name__)
            raise
        if stopped:
            store.ranges.release(lease)
            return False
        store.ranges.done(lease)
        return True

    def settle(self, run: RunRecord) -> MigrationReport:
        """The run's one report, once every range is done: counts and comparisons added up,
        the verdict judged over all of them; the run finished with it."""
        ctx, store = self.ctx, self.ctx.store
        src, dst = self.integration.source, self.integration.destination
        ranges = store.ranges.of(run.id)
        left = [r.number for r in ranges if r.status != DONE]
        if left:
            raise FatalRunError(f"run {run.id}: key ranges {left} are not done", run=run.id)
        try:
            prepared = prepare(ctx, (run.checkpoint or {}).get("watermark_after"))
            counters: Counter[str] = Counter()
            for key_range in ranges:
                counters.update(key_range.counters)
            comparison = Comparison.combined(
                [Comparison.from_state(r.comparison) for r in ranges if r.comparison],
                dst.key, list(prepared.fields), self.integration.options.sample_size)
            self.migration.check_rejects(counters, [], run.id, finished=True)
        except BaseException as exc:
            store.runs.finish(run.id, RunStatus.FAILED, error=str(exc) or type(exc).__name__)
            raise
        report = self.migration.report(run, prepared, counters, comparison)
        report = replace(report, ranges=self._ranges(ranges),
                         **self._unverified(report, prepared, ranges))
        high_water = None
        for key_range in ranges:
            if key_range.high_water is not None:
                high_water = later(key_range.high_water, high_water)
        if src.watermark and high_water is not None and report.verdict != RunStatus.INCOMPLETE:
            keep_watermark(store, self.ctx, high_water)
        report = capture.write_report_files(ctx.reports_dir / run.id, report,
                                            store.outcomes.of(run.id))
        store.runs.finish(run.id, report.verdict, report=report.to_json(), counters=counters)
        return report

    def _unverified(self, report: MigrationReport, prepared: Prepared,
                    ranges: list[KeyRange]) -> dict[str, Any]:
        """A run is complete only if every range compared what it wrote: a range that
        wrote records and compared fewer makes the verdict incomplete."""
        if (self.integration.options.verify != "full"
                or self.integration.destination.operation is Operation.DELETE):
            return {}
        short = []
        for key_range in ranges:
            counts = key_range.counters
            written = sum(counts.get(s.value, 0)
                          for s in (Status.CREATED, Status.UPDATED, Status.UNCHANGED))
            compared = (key_range.comparison or {}).get("compared", 0)
            if compared < written:
                short.append(f"key range {key_range.number} compared {compared:,} of the "
                             f"{written:,} records it wrote")
        if not short:
            return {}
        return {"verdict": capture.VERDICT_INCOMPLETE,
                "verdict_reasons": [*report.verdict_reasons, *short]}

    @staticmethod
    def _ranges(ranges: list[KeyRange]) -> dict[str, Any]:
        return {
            "count": len(ranges),
            "workers": len({r.holder for r in ranges}),
            "taken_over": sum(1 for r in ranges if r.takeovers),
            "resumed": sum(1 for r in ranges if r.resumed),
            "each": [{"range": r.number, "low": r.low, "high": r.high,
                      "read": r.counters.get("read", 0), "batches": r.batches,
                      "worker": r.holder, "takeovers": r.takeovers, "resumed": r.resumed}
                     for r in ranges],
        }
