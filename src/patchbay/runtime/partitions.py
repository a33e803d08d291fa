"""Workers of a migration split into key ranges (patterns/partitioned.py): the loop that
leases a range, keeps its lease alive and works it; and `patchbay run --workers N`, which
records and splits the run, keeps N worker processes going until every range is done, and
writes the run's one report.

    run --workers N ──► Partitioned.start (record, split) ──► N times `patchbay worker --run RUN`
        │  and a spare (`--spare`: waits for a range whose worker stopped)
        │  heartbeat of the run; a worker process that ended early is replaced by a spare
        └─ every range done ──► Partitioned.settle ──► the report
    work_ranges (each worker): lease ──► work (a thread renews the lease every third of its
        time; a lost lease, or the run no longer running, stops the range after its
        batch) ──► lease the next ...

Every `patchbay serve` and `patchbay worker` on the same state takes ranges up too
(`pick_up`, one range at a time in a thread of its own); `run --workers 0` starts no
worker process and leaves its ranges to them. The run's owner settles it; when the owner
is gone, the worker that finds every range done takes the run over (a compare-and-set on
its owner) and settles it, so there is one report.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from patchbay.errors import (
    EngineStateUnavailable,
    FatalRunError,
    LeaseLost,
    PatchbayError,
    RetriableError,
    RunNotResumable,
    SpecError,
)
from patchbay.model import given_params
from patchbay.patterns.context import RunContext
from patchbay.patterns.partitioned import RANGES_PER_WORKER, Partitioned
from patchbay.patterns.registry import Report, pattern_of
from patchbay.runtime.runner import Invocation
from patchbay.store import Store
from patchbay.store.processes import RUNNING
from patchbay.store.ranges import DONE, FAILED, OPEN, KeyRange
from patchbay.store.runs import RunStatus

log = logging.getLogger(__name__)

WATCH_SECONDS = 0.2
"""How often `run --workers` looks at its ranges and its worker processes."""
BEAT_SECONDS = 10.0
"""How often `run --workers` tells the state its run is alive (others judge a run of another
machine dead when it stays silent for runs.STALE_AFTER)."""
RESTARTS_PER_WORKER = 10
"""How often `run --workers` starts a worker process again that ended before the run did,
per worker asked for (one that fails at once, a file that no longer loads, ends the run)."""


def poll_seconds(lease_seconds: float) -> float:
    """How often a worker without a range looks for one: a tenth of the lease, at most half
    a second, so that a range whose holder died is taken soon after that is known."""
    return min(0.5, lease_seconds / 10)


def run(ctx: RunContext, *, workers: int, worker_command: Callable[[str, bool], list[str]],
        fresh: bool = False, full: bool = False,
        say: Callable[[str], None] | None = None) -> Report:
    """Run `ctx`'s integration split into key ranges by `workers` processes, each started
    as `worker_command(run_id, False)`, beside one spare, `worker_command(run_id, True)`,
    which waits for a range whose worker stopped and then works on like the others; a
    worker process that ends before the run is replaced by a new spare. So a range whose
    worker died is taken over as soon as that is known (at once on this machine, at the
    lease's expiry else), not after a new process has started. With no `workers`, the
    ranges are left to the serve and worker processes sharing the state (`pick_up`), and
    this waits for them. Returns the one report."""
    store = ctx.store
    split = pattern_of(ctx).ranges()
    members = 0 if workers else _members(store)
    record = split.start(RANGES_PER_WORKER * (workers or max(1, members)), fresh=fresh,
                         full=full)
    if split.notice is not None and say is not None:
        say(split.notice)
    if not workers and say is not None:
        say(f"run {record.id}: its {len(store.ranges.of(record.id))} key ranges are left to "
            f"the serve and worker processes sharing the state ({members} running"
            + ("; start one: `patchbay serve` or `patchbay worker` with this file" if not members
               else "") + ")")
    children = ([_spawn(worker_command(record.id, spare))
                 for spare in [False] * workers + [True]] if workers else [])
    restarts = RESTARTS_PER_WORKER * workers
    beat = 0.0
    try:
        while True:
            current = store.runs.get(record.id)
            ranges = store.ranges.of(record.id)
            if current.status != RunStatus.RUNNING or not any(r.status == OPEN for r in ranges):
                break  # every range done, or one failed and no worker takes it up again
            if ctx.stop.is_set():
                _stop(children)
                store.runs.finish(record.id, RunStatus.INTERRUPTED)
                return {"run": record.id, "status": RunStatus.INTERRUPTED,
                        "counters": _counters(ranges)}
            if time.monotonic() >= beat:
                beat = time.monotonic() + BEAT_SECONDS
                with contextlib.suppress(EngineStateUnavailable):
                    store.runs.beat(record.id)
            for number, child in enumerate(children):
                if child.poll() is not None and restarts and any(r.status == OPEN for r in ranges):
                    restarts -= 1
                    children[number] = _spawn(worker_command(record.id, True))
            if children and not any(child.poll() is None for child in children):
                break  # the workers ended, and may not start again: a range failed, or they do
            ctx.stop.wait(WATCH_SECONDS)
    finally:
        _stop(children, wait_first=True)
    current = store.runs.get(record.id)
    if current.status != RunStatus.RUNNING:
        raise FatalRunError(f"run {record.id} {current.status}: {current.error or 'a worker stopped it'}",
                            run=record.id)
    ranges = store.ranges.of(record.id)
    failed = [r for r in ranges if r.status == FAILED]
    left = [r.number for r in ranges if r.status != DONE]
    if failed or left:
        error = (f"key range {failed[0].number} failed: {failed[0].error}" if failed else
                 f"the worker processes kept ending before key ranges {left} were done")
        store.runs.finish(record.id, RunStatus.FAILED, error=error)
        raise FatalRunError(f"run {record.id}: {error}", run=record.id)
    return split.settle(current).to_json()


def work_ranges(ctx: RunContext, run_id: str, stop: threading.Event, *,
                spare: bool = False) -> int:
    """Lease and work ranges of run `run_id` until none is left open (or `stop`); how many
    ranges this worker finished. A range whose holder died is taken once its lease expires
    (or at once, when the holder was a process of this machine). A `spare` takes only such
    a range, the first time. The worker that finds every range done while the run's owner
    is gone settles the run."""
    store = ctx.store
    split = pattern_of(ctx).ranges()
    run = store.runs.get(run_id)
    split.joins(run)
    finished = 0
    while not stop.is_set():
        try:
            run = store.runs.get(run_id)
            if run.status != RunStatus.RUNNING:
                return finished
            lease = split.lease(run_id, abandoned=spare)
        except RetriableError:
            stop.wait(poll_seconds(split.lease_seconds))
            continue
        if lease is None:
            ranges = store.ranges.of(run_id)
            if all(r.status == DONE for r in ranges):
                _settle_orphaned(split, store, run_id)
                return finished
            if not any(r.status == OPEN for r in ranges):
                return finished  # a range failed: the run's owner reports it
            stop.wait(poll_seconds(split.lease_seconds))
            continue
        spare = False
        try:
            with _renewing(store, lease, split.lease_seconds, stop) as halt:
                if split.work(run, lease, halt):
                    finished += 1
        except LeaseLost:
            continue
        except PatchbayError as exc:
            with contextlib.suppress(PatchbayError):
                store.runs.finish(run_id, RunStatus.FAILED,
                                  error=f"key range {lease.number}: {exc}")
            raise
    return finished


def pick_up(path: str | Path, names: Sequence[str], store: Store, reports_dir: Path,
            stop: threading.Event) -> None:
    """Until `stop`: work the ranges of every running partitioned run of the integrations
    `names` of file `path`, as they appear, each with its run's own parameters. A run of
    another definition than the file's (an edited file) is left to other workers."""
    refused: set[str] = set()
    while not stop.is_set():
        try:
            open_runs = [r for r in store.ranges.runs_open(list(names)) if r not in refused]
        except RetriableError:
            open_runs = []
        for run_id in open_runs:
            try:
                work_run(path, run_id, store, reports_dir, stop)
            except (SpecError, RunNotResumable) as exc:
                refused.add(run_id)
                log.warning("not working the key ranges of run %s: %s", run_id, exc)
            except PatchbayError as exc:
                log.warning("key ranges of run %s: %s", run_id, exc)
            except Exception:  # the range is marked failed; this process picks on
                log.exception("key ranges of run %s", run_id)
        stop.wait(1.0)


def work_run(path: str | Path, run_id: str, store: Store, reports_dir: Path,
             stop: threading.Event, *, spare: bool = False) -> int:
    """`work_ranges` of run `run_id` with its integration as file `path` defines it, given
    the run's own parameters (RunNotResumable when the file defines it otherwise now)."""
    run = store.runs.get(run_id)
    given = given_params(run.params)
    ctx = Invocation.load(path, run.integration, given).context(store, reports_dir, stop=stop)
    try:
        return work_ranges(ctx, run_id, stop, spare=spare)
    finally:
        ctx.systems.close()


def _members(store: Store) -> int:
    """How many serve and worker processes share the state now: a run left to them is cut
    into RANGES_PER_WORKER ranges for each."""
    return sum(1 for p in store.processes.list() if p.status == RUNNING)


def _settle_orphaned(split: Partitioned, store: Store, run_id: str) -> None:
    """Settle a run whose every range is done, when its owner is gone: the one worker that
    takes the run over (compare-and-set) writes its report."""
    run = store.runs.get(run_id)
    if run.status != RunStatus.RUNNING or run.owner_alive:
        return
    claimed = store.runs.claim(run_id, owner=run.owner)
    if claimed is not None:
        split.settle(claimed)


@contextlib.contextmanager
def _renewing(store: Store, lease: KeyRange, seconds: float,
              stop: threading.Event) -> Iterator[threading.Event]:
    """An event set when the worker must leave the range after its batch: `stop`, the
    lease lost, or the run no longer running (interrupted or failed elsewhere: a serve's
    range has no process of the run's to stop it); a thread renews the lease every third
    of its time meanwhile, and looks at the run then."""
    halt, ended = threading.Event(), threading.Event()

    def renew() -> None:
        due = seconds / 3
        while not ended.wait(min(due, 0.2)):
            if stop.is_set():
                halt.set()
            due -= min(due, 0.2)
            if due > 0:
                continue
            due = seconds / 3
            try:
                store.ranges.renew(lease, seconds)
                if store.runs.get(lease.run_id).status != RunStatus.RUNNING:
                    halt.set()
                    return
            except LeaseLost:
                halt.set()
                return
            except RetriableError:
                continue  # the lease runs on; the next renewal tries again

    thread = threading.Thread(target=renew, name="patchbay-lease", daemon=True)
    thread.start()
    try:
        yield halt
    finally:
        ended.set()
        thread.join()


def _spawn(command: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)


def _stop(children: list[subprocess.Popen[bytes]], wait_first: bool = False) -> None:
    """End the worker processes: given a moment to end on their own (their ranges done),
    then asked to stop after their batch (SIGTERM), then killed."""
    if wait_first:
        for child in children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=10)
    for child in children:
        if child.poll() is None:
            child.terminate()
    for child in children:
        try:
            child.wait(timeout=30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def _counters(ranges: list[KeyRange]) -> dict[str, int]:
    total: dict[str, int] = {}
    for key_range in ranges:
        for name, value in key_range.counters.items():
            total[name] = total.get(name, 0) + value
    return total
