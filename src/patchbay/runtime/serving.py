"""The loops that keep integrations going (`patchbay serve`, `patchbay worker`) and the
delivery of broadcasts' outboxes.

A pattern says which loop keeps an integration going (Pattern.loop_of) and gives the steps:
a broadcast polls its source into its outbox; an aggregation runs; a stream aggregation
takes messages and flushes them. The loops here own the threads, the waits, and the
retries of what cannot be reached now; the patterns hold no loop of their own.

Any number of processes may serve the same integrations on one engine state (PostgreSQL):
each is a cluster Member (runtime/cluster.py). An integration's changes are noticed by the
one process holding its noticing lease, and committed under that lease's fence; a scheduled
run or cron poll is claimed per due time, so it fires in one process; deliveries are leased
per delivery from the outbox by every process.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Protocol

from patchbay import logs
from patchbay.errors import LeaseLost
from patchbay.patterns.context import TRANSIENT, RunContext
from patchbay.patterns.registry import Loop, Pattern, RunReport, pattern_of
from patchbay.retry import RetryPolicy
from patchbay.runtime import observed
from patchbay.runtime.cluster import Lease, Member, notice_lease
from patchbay.runtime.delivery import Deliverer, DeliveryStats, Target, default_worker
from patchbay.runtime.notifications import Notifier
from patchbay.spec import BroadcastOptions, TriggerSpec

if TYPE_CHECKING:
    from patchbay.patterns.aggregation import Aggregation
    from patchbay.patterns.aggregation_stream import StreamAggregation

log = logging.getLogger(__name__)

PURGE_EVERY_SECONDS = 600.0
WITHOUT_POLLING: frozenset[Loop] = frozenset({"outbox"})
"""The loops an extra worker (`patchbay worker`) runs: delivering, without noticing changes."""


def serve(ctx: RunContext, stop: threading.Event, poll: bool = True,
          member: Member | None = None) -> None:
    """Keep `ctx`'s integration going with its pattern's loop until `stop` is set, as
    `member` of the processes sharing the engine state (without one: a member of its own)."""
    if member is None:
        with Member(ctx.store, role="serve" if poll else "worker") as own:
            return serve(ctx, stop, poll, own)
    pattern = pattern_of(ctx)
    loop = type(pattern).loop_of(ctx.integration)
    if loop is None:
        raise pattern.not_supported("keep going under serve: it only runs")
    _LOOPS[loop](pattern.watched(), stop, poll, member)


def round_of(pattern: Pattern) -> RunReport | None:
    """One round of the pattern's loop as its run, where the loop does part of the run (a
    broadcast's or a sync's delivery); None where the pattern runs by itself."""
    if type(pattern).loop_of(pattern.ctx.integration) == "outbox":
        return outbox_round(pattern.watched())
    return None


class _Beside(Protocol):
    def is_alive(self) -> bool: ...

    def stop(self) -> None: ...


def keep_going(contexts: Sequence[RunContext], *, poll: bool, member: Member,
               beside: Sequence[_Beside] = (), started: Callable[[], None] = lambda: None) -> None:
    """Serve each integration in a thread of its own, as `member` of the processes sharing
    the engine state, until Ctrl-C, or until all of them (and what runs `beside` them: the
    API's server, the loop working key ranges) have ended; `started` is called once they
    run."""
    stop = threading.Event()
    threads = []
    for ctx in contexts:
        thread = threading.Thread(target=_serving, args=(ctx, stop, poll, member),
                                  name=ctx.integration.name, daemon=True)
        thread.start()
        threads.append(thread)
    # a run's own conditions are told after it; only the others are worth a periodic check
    watched = [ctx for ctx in contexts if any(n.when.watches_state for n in ctx.notifications)]
    # extra workers leave notifications to serve; the watcher keeps nothing going by itself
    watcher = threading.Thread(target=_watch_state, args=(watched, stop), name="notify",
                               daemon=True) if poll and watched else None
    if watcher is not None:
        watcher.start()
    started()
    previous = signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        while not stop.is_set() and (any(t.is_alive() for t in threads)
                                     or any(b.is_alive() for b in beside)):
            stop.wait(0.5)
    finally:
        stop.set()
        signal.signal(signal.SIGINT, previous)
        for other in beside:
            other.stop()
        for thread in [*threads, *([watcher] if watcher is not None else [])]:
            thread.join(timeout=30)


def _serving(ctx: RunContext, stop: threading.Event, poll: bool, member: Member) -> None:
    try:
        with logs.context(integration=ctx.integration.name):
            serve(ctx, stop, poll, member)
    finally:
        ctx.systems.close()


def _watch_state(contexts: Sequence[RunContext], stop: threading.Event) -> None:
    """Check the state's notification conditions (outbox age, dead letters, API allowance)
    of each integration, as often as its shortest `check_seconds`, until `stop` is set."""
    notifiers = [(Notifier(ctx.integration, ctx.store, ctx.notifications),
                  min(n.check_seconds for n in ctx.notifications if n.when.watches_state))
                 for ctx in contexts]
    due = [time.monotonic() + every for _, every in notifiers]
    while not stop.wait(max(0.0, min(due) - time.monotonic())):
        for index, (notifier, every) in enumerate(notifiers):
            if time.monotonic() >= due[index]:
                notifier.check_state()
                due[index] = time.monotonic() + every


# -- waking the delivering threads on a push ----------------------------------------------------

_waking: dict[str, set[Callable[[], None]]] = {}
_waking_lock = threading.Lock()


def wake(name: str) -> None:
    """Wake the delivering threads of broadcast `name` that serve in this process: pushed
    changes are delivered at once, not at the next poll."""
    with _waking_lock:
        callbacks = list(_waking.get(name, ()))
    for callback in callbacks:
        callback()


@contextlib.contextmanager
def _woken_by_pushes(name: str, callback: Callable[[], None]) -> Iterator[None]:
    with _waking_lock:
        _waking.setdefault(name, set()).add(callback)
    try:
        yield
    finally:
        with _waking_lock:
            _waking[name].discard(callback)


# -- the outbox loop: a broadcast, a sync --------------------------------------------------------


class _OutboxSpec(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def options(self) -> BroadcastOptions: ...

    @property
    def trigger(self) -> TriggerSpec: ...


class Noticing(Protocol):
    """What the outbox loop drives (a Broadcast, a Sync): it notices changes into the
    outbox; the loop delivers them through its `sinks`, one per destination."""

    spec: _OutboxSpec
    ctx: RunContext
    settle_rounds: int

    @property
    def sinks(self) -> Mapping[str, Target]: ...

    def poll(self, enqueued: Callable[[], None] | None = None) -> int: ...

    def purge(self) -> int: ...

    def next_poll(self, now: dt.datetime, first: bool = False) -> dt.datetime: ...

    def report(self, changes: int, delivered: int, retried: int, dead: int) -> RunReport: ...



def deliverer_of(broadcast: Noticing, member: Member | None = None) -> Deliverer:
    """The deliverer of a broadcast's outbox: per destination, its sink, with the
    broadcast's retry policy and lease; named as one of `member`'s workers, if given."""
    options = broadcast.spec.options
    return Deliverer(broadcast.ctx.store, broadcast.spec.name, broadcast.sinks,
                     RetryPolicy(options.max_attempts, options.backoff_seconds,
                                 options.backoff_max_seconds),
                     lease_seconds=options.lease_seconds,
                     worker=member.worker_name() if member is not None else default_worker())


def deliver(broadcast: Noticing, deliverer: Deliverer | None = None) -> DeliveryStats:
    """Deliver what is due until nothing due is left, every destination in a thread of its
    own: a slow destination (waiting on its network) holds up no other."""
    deliverer = deliverer or deliverer_of(broadcast)
    names = list(broadcast.sinks)
    with ThreadPoolExecutor(max_workers=len(names), thread_name_prefix="deliver") as pool:
        drained = pool.map(lambda name: deliverer.drain(name, broadcast.spec.options.batch_size),
                           names)
        stats = DeliveryStats()
        for result in drained:
            stats = stats + result
    return stats


def outbox_round(watched: Noticing) -> RunReport:
    """Poll everything new, deliver everything due, and again while a poll notices something
    (up to the pattern's `settle_rounds`: a sync sees its own writes come back); the report
    of what happened."""
    changes = watched.poll()
    stats = deliver(watched)
    for _ in range(watched.settle_rounds):
        more = watched.poll()
        if not more:
            break
        changes += more
        stats += deliver(watched)
    return watched.report(changes, stats.delivered, stats.retried, stats.dead)


def _serve_outbox(broadcast: Noticing, stop: threading.Event, poll: bool, member: Member) -> None:
    """Notice and deliver until `stop` is set. This thread polls the source every
    `poll_seconds` while this process holds the integration's noticing lease (and otherwise
    tries to take it every heartbeat; never when `poll` is false: an extra worker, which
    only delivers); each
    destination has a delivering thread of its own, woken as soon as a poll, or a push to
    this process, has put something in the outbox. So delivering overlaps noticing, and a
    slow destination holds up no other. A source or engine state that cannot be reached for
    a while is tried again on the next round; any other error stops the broadcast."""
    ended = threading.Event()
    wakes: dict[str, threading.Event] = {}
    workers: dict[str, threading.Thread] = {}
    tally = _Tally()
    deliverer = deliverer_of(broadcast, member)
    lease = member.lease(notice_lease(broadcast.spec.name)) if poll else None

    def wake_all() -> None:
        for wake in list(wakes.values()):
            wake.set()

    def start_delivering() -> None:
        """A delivering thread for each destination without a live one: a sync may gain a
        participant while it runs (one it loses ends its thread)."""
        for name in list(broadcast.sinks):
            if name not in workers or not workers[name].is_alive():
                wakes.setdefault(name, threading.Event())
                workers[name] = threading.Thread(
                    target=_keep_delivering, name=f"deliver-{name}", daemon=True,
                    args=(broadcast, deliverer, name, wakes[name], stop, ended, tally))
                workers[name].start()

    start_delivering()
    purged_at = -PURGE_EVERY_SECONDS
    poll_at = broadcast.next_poll(dt.datetime.now(dt.UTC), first=True)
    try:
        # A push (webhook, Outbound Message) to this process wakes the delivering
        # threads at once, as a poll that found changes does.
        with _woken_by_pushes(broadcast.spec.name, wake_all):
            while not stop.is_set():
                if time.monotonic() - purged_at >= PURGE_EVERY_SECONDS:
                    broadcast.purge()
                    purged_at = time.monotonic()
                changes, noticing = 0, False
                if lease is not None and dt.datetime.now(dt.UTC) >= poll_at:
                    changes, noticing, poll_at = _notice(broadcast, lease, member, poll_at,
                                                         wake_all)
                    start_delivering()
                stats = tally.take()
                broadcast.ctx.notify(broadcast.ctx.integration.pattern, {
                    "changes": changes, "delivered": stats.delivered,
                    "retried": stats.retried, "dead": stats.dead})
                # Wake at least every poll_seconds, to report and purge between cron times;
                # every heartbeat while another process notices, to take over when it dies.
                until_poll = (poll_at - dt.datetime.now(dt.UTC)).total_seconds()
                pause = broadcast.spec.trigger.poll_seconds
                if lease is not None and not noticing:
                    pause = min(pause, member.heartbeat_seconds)
                stop.wait(max(0.0, min(until_poll, pause)))
    finally:
        ended.set()
        wake_all()
        for worker in workers.values():
            worker.join(timeout=60)


def _notice(broadcast: Noticing, lease: Lease, member: Member, due: dt.datetime,
            enqueued: Callable[[], None]) -> tuple[int, bool, dt.datetime]:
    """Poll the source into the outbox if this process holds the noticing lease (and, with
    a cron trigger, claims the poll due at `due`), committing under the lease's fence: the
    changes noticed, whether this process notices, and when to try next (`due` again while
    another process notices: this one takes over if that one dies)."""
    name = broadcast.spec.name
    try:
        if not lease.held():
            return 0, False, due
        if broadcast.spec.trigger.cron is not None and not member.claim(name, due):
            return 0, True, broadcast.next_poll(dt.datetime.now(dt.UTC))
        with broadcast.ctx.store.fenced(lease.fence):
            changes = broadcast.poll(enqueued=enqueued)
    except LeaseLost:
        lease.lost()
        log.warning("%s: another process took over noticing its changes", name)
        return 0, False, due
    except TRANSIENT as exc:
        log.warning("%s: noticing changes failed, trying again: %s", name, exc)
        changes = 0
    return changes, True, broadcast.next_poll(dt.datetime.now(dt.UTC))


def _keep_delivering(broadcast: Noticing, deliverer: Deliverer, name: str, wake: threading.Event,
                     stop: threading.Event, ended: threading.Event, tally: _Tally) -> None:
    limit, pause = broadcast.spec.options.batch_size, broadcast.spec.trigger.poll_seconds
    while not (stop.is_set() or ended.is_set()) and name in broadcast.sinks:
        # Cleared before the lease, not after the wait: a wake that comes while this
        # pass leases finds the next wait already set.
        wake.clear()
        try:
            stats = deliverer.deliver_once(name, limit)
        except TRANSIENT as exc:  # its deliveries wait for the next try
            log.warning("%s: delivering to %s failed, trying again: %s",
                        broadcast.spec.name, name, exc)
            stats = DeliveryStats()
        except Exception:
            log.exception("%s: delivering to %s failed, trying again", broadcast.spec.name, name)
            stats = DeliveryStats()
        if stats.total:
            tally.add(stats)
            continue
        # Nothing due: sleep until a poll or a push enqueues, or a retry may have come due.
        wake.wait(pause)


class _Tally:
    """Delivery counts from the delivering threads, taken by the noticing one to report."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats = DeliveryStats()

    def add(self, stats: DeliveryStats) -> None:
        with self._lock:
            self._stats += stats

    def take(self) -> DeliveryStats:
        with self._lock:
            stats, self._stats = self._stats, DeliveryStats()
            return stats


# -- the schedule loop: an aggregation of sources -----------------------------------------------


def _serve_schedule(aggregation: Aggregation, stop: threading.Event, poll: bool,
                    member: Member) -> None:
    """Run on the integration's schedule until `stop` is set: each due time is claimed
    first, so that of the processes serving it one runs it. A run that fails is logged and
    the schedule goes on; a run missed while nothing was serving is not made up."""
    from patchbay.patterns.aggregation import next_run  # DuckDB: only when used

    schedule = aggregation.spec.schedule
    assert schedule is not None  # the pattern's loop is "schedule" only with one
    name, now = aggregation.spec.name, dt.datetime.now(dt.UTC)
    # every_seconds: the period under way is due at start (run now, unless another
    # process has run it).
    due = next_run(schedule, now - dt.timedelta(seconds=schedule.every_seconds)) \
        if schedule.every_seconds else next_run(schedule, now)
    while not stop.wait(max(0.0, (due - dt.datetime.now(dt.UTC)).total_seconds())):
        try:
            ours = member.claim(name, due)
        except TRANSIENT as exc:
            log.warning("%s: the run due at %s is skipped: the engine state cannot say "
                        "whether another process runs it: %s", name, due.isoformat(), exc)
            ours = False
        if ours:
            began = time.monotonic()
            try:
                report = aggregation.run()
            except Exception as exc:  # the next scheduled run may well succeed
                log.exception("%s: the scheduled run failed", name)
                observed.ran(aggregation.ctx, None, time.monotonic() - began, exc)
            else:
                observed.ran(aggregation.ctx, report.to_json(), time.monotonic() - began)
                aggregation.ctx.notify("aggregation", {"rows": report.rows,
                                                       "partial": int(report.partial)})
        due = next_run(schedule, max(due, dt.datetime.now(dt.UTC)))


# -- the stream loop: a stream aggregation ------------------------------------------------------


def _serve_stream(stream: StreamAggregation, stop: threading.Event, poll: bool,
                  member: Member) -> None:
    """Consume and flush until `stop` is set: a flush every `flush.every_seconds`, or as soon
    as `flush.every_messages` are held. A source, destination or engine state that cannot be
    reached is tried again on the next round; the messages held stay unacked meanwhile. On
    stop, what is held is flushed first."""
    from patchbay.patterns.aggregation_stream import LONGEST_WAIT, SHORTEST_WAIT

    flush = stream.stream.flush
    wait, flushed_at, purged_at = SHORTEST_WAIT, time.monotonic(), -PURGE_EVERY_SECONDS
    try:
        while not stop.is_set():
            if time.monotonic() - purged_at >= PURGE_EVERY_SECONDS:
                stream.purge()
                purged_at = time.monotonic()
            due = flush.every_seconds - (time.monotonic() - flushed_at)
            if due <= 0 or stream.holding >= flush.every_messages:
                if not stream.flush_logged():
                    stop.wait(flush.every_seconds)  # the state is down: not in a hot loop
                flushed_at = time.monotonic()
                continue
            taken = stream.take(min(wait, due))
            if taken:
                wait = SHORTEST_WAIT
            else:
                wait = min(wait * 2, LONGEST_WAIT)
                if not any(s.subscription for s in stream.sources):
                    stop.wait(min(wait, due))  # every source failed at once: no hot loop
    finally:
        if stream.holding:
            stream.flush_logged()
        stream.close()


_LOOPS: dict[Loop, Callable[[Any, threading.Event, bool, Member], None]] = {
    "outbox": _serve_outbox, "schedule": _serve_schedule, "stream": _serve_stream}
