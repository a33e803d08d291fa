"""What this process measured, for `GET /metrics` (Prometheus' text format).

The instruments live in a registry of patchbay's own (`REGISTRY`), not prometheus-client's
global one, so nothing else a host program registers is served with them. They count what
happens in this process (the runs it carries, the deliveries it makes, the Salesforce calls
it sends); what the engine state holds (outboxes, conflicts, review items) is read from it
at scrape time by the API's collector (runtime/observed.py), so every process serving one
state answers the same.

    patchbay_records_read_total{integration}
    patchbay_records_written_total{integration}
    patchbay_records_set_aside_total{integration, code}
    patchbay_records_failed_total{integration, code}
    patchbay_run_seconds{integration, pattern}                      histogram
    patchbay_delivery_latency_seconds{integration, destination}     histogram: enqueued → delivered
    patchbay_salesforce_api_calls_used{system} / _max / _remaining  the org's last answer
    patchbay_notifications_sent_total{integration, channel}
    patchbay_notifications_failed_total{integration, channel}
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)

records_read = Counter("patchbay_records_read", "Records read from sources.",
                       ["integration"], registry=REGISTRY)
records_written = Counter("patchbay_records_written",
                          "Records written to destinations (created, updated, unchanged, deleted).",
                          ["integration"], registry=REGISTRY)
records_set_aside = Counter("patchbay_records_set_aside",
                            "Records set aside (rejected), by outcome code.",
                            ["integration", "code"], registry=REGISTRY)
records_failed = Counter("patchbay_records_failed",
                         "Records that failed to write (a run's failures, dead letters), by code.",
                         ["integration", "code"], registry=REGISTRY)
run_seconds = Histogram("patchbay_run_seconds", "How long runs took.",
                        ["integration", "pattern"], registry=REGISTRY,
                        buckets=(1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 12 * 3600))
delivery_latency = Histogram(
    "patchbay_delivery_latency_seconds",
    "From a change entering the outbox to its delivery, per destination.",
    ["integration", "destination"], registry=REGISTRY,
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600))
api_used = Gauge("patchbay_salesforce_api_calls_used",
                 "API calls the org counts as used in its 24-hour window (its last answer).",
                 ["system"], registry=REGISTRY)
api_max = Gauge("patchbay_salesforce_api_calls_max", "The org's API allowance for 24 hours.",
                ["system"], registry=REGISTRY)
api_remaining = Gauge("patchbay_salesforce_api_calls_remaining",
                      "API calls left in the org's allowance.", ["system"], registry=REGISTRY)
notifications_sent = Counter("patchbay_notifications_sent", "Notifications sent.",
                             ["integration", "channel"], registry=REGISTRY)
notifications_failed = Counter("patchbay_notifications_failed",
                               "Notifications given up on after their retries.",
                               ["integration", "channel"], registry=REGISTRY)

_allowances: dict[str, tuple[int, int]] = {}
_allowances_lock = threading.Lock()


def api_usage(system: str, header: str) -> None:
    """Record an org's `Sforce-Limit-Info` header (`api-usage=used/max`); others are ignored."""
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() != "api-usage":
            continue
        used, _, most = value.strip().partition("/")
        if not (used.isdigit() and most.isdigit()):
            return
        with _allowances_lock:
            _allowances[system] = (int(used), int(most))
        api_used.labels(system).set(int(used))
        api_max.labels(system).set(int(most))
        api_remaining.labels(system).set(max(0, int(most) - int(used)))
        return


def allowances() -> Mapping[str, tuple[int, int]]:
    """(used, max) per Salesforce system, as its org last said in this process."""
    with _allowances_lock:
        return dict(_allowances)
