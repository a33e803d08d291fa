"""What a finished run leaves behind beside its report: its metrics (patchbay/metrics.py)
and its notifications (runtime/notifications.py); and the engine state's figures that
`GET /metrics` reads at scrape time (`StateCollector`).

`ran` is called once per run by whatever carried it (runner.run, the API's carried
migrations, serve's scheduled runs); it never raises.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from patchbay import logs, metrics
from patchbay.patterns.context import RunContext
from patchbay.runtime.notifications import Notifier
from patchbay.store import Store

log = logging.getLogger(__name__)

_WRITTEN = ("created", "updated", "unchanged", "deleted")


def ran(ctx: RunContext, report: Mapping[str, Any] | None, seconds: float,
        error: BaseException | None = None) -> None:
    """Count a run that ended (with `report`, or stopped by `error`), log it, and tell who
    asked to be told."""
    name = ctx.integration.name
    run = (report or {}).get("run")
    try:
        with logs.context(integration=name, run=run):
            if error is not None:
                log.warning("the run failed: %s", logs.scrubbed(f"{type(error).__name__}: {error}"))
            else:
                log.info("the run ended: %s", (report or {}).get("verdict")
                         or (report or {}).get("status") or "done")
            metrics.run_seconds.labels(name, ctx.integration.pattern).observe(seconds)
            if report is not None:
                _count(ctx, name, report)
    except Exception as exc:  # metrics must never fail the run they describe
        log.warning("%s: counting the run failed: %s", name, type(exc).__name__)
    Notifier(ctx.integration, ctx.store, ctx.notifications).after_run(report, error)


def _count(ctx: RunContext, name: str, report: Mapping[str, Any]) -> None:
    """A migration's counts (deliveries count themselves as they are marked)."""
    counts = report.get("counts")
    if not isinstance(counts, Mapping):
        return
    metrics.records_read.labels(name).inc(counts.get("read", 0))
    metrics.records_written.labels(name).inc(sum(counts.get(s, 0) for s in _WRITTEN))
    run = report.get("run")
    if not run:
        return
    for (status, code), n in ctx.store.outcomes.tally(str(run)).items():
        counter = metrics.records_failed if status == "failed" else metrics.records_set_aside
        counter.labels(name, code or status.upper()).inc(n)


class StateCollector(Collector):
    """The engine state's figures at scrape time, so every process serving one state
    answers the same: the outbox per destination, a sync's conflicts, a correlation's
    review items."""

    def __init__(self, store: Store, integrations: Iterable[str]) -> None:
        self.store, self.integrations = store, list(integrations)

    def collect(self) -> Iterator[Metric]:
        pending = GaugeMetricFamily("patchbay_outbox_pending", "Deliveries waiting, per destination.",
                                    labels=["integration", "destination"])
        dead = GaugeMetricFamily("patchbay_outbox_dead", "Dead letters, per destination.",
                                 labels=["integration", "destination"])
        oldest = GaugeMetricFamily("patchbay_outbox_oldest_pending_seconds",
                                   "Age of the oldest pending delivery, per destination.",
                                   labels=["integration", "destination"])
        for backlog in self.store.outbox.backlog():
            labels = [backlog.integration, backlog.destination]
            pending.add_metric(labels, backlog.pending)
            dead.add_metric(labels, backlog.dead)
            oldest.add_metric(labels, backlog.oldest_pending_seconds)
        conflicts = GaugeMetricFamily("patchbay_sync_conflicts",
                                      "A sync's conflicts by status (held: waiting for a person).",
                                      labels=["integration", "status"])
        reviews = GaugeMetricFamily("patchbay_correlation_pairs",
                                    "A correlation's pairs by status (review: waiting for a person).",
                                    labels=["integration", "status"])
        for name in self.integrations:
            for status, policies in self.store.conflicts.counts(name).items():
                conflicts.add_metric([name, status], sum(policies.values()))
            for status, n in self.store.pairs.counts(name).items():
                reviews.add_metric([name, status], n)
        yield from (pending, dead, oldest, conflicts, reviews)
