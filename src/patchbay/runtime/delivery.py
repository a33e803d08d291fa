"""Delivering the broadcast outbox to its destinations.

A Deliverer works one destination at a time: it leases deliveries (store/outbox.py: due,
unleased, the oldest undelivered one of each record key), writes them through the
destination's write step (elements/sink.py) in as few calls as it can, and marks each
one by its outcome; a delivery's next attempt is scheduled by the one retry policy
(patchbay/retry.py):

    success (created / updated / unchanged / deleted)   delivered
    SKIPPED (insert of an existing key, update or       delivered: an idempotent no-op
      delete of a missing one)
    FAILED, or write raised a RetriableError            retried after the policy's delay;
                                                        dead after `max_attempts`
    REJECTED                                            dead at once, with code and reason
    STALE (a conditional write whose expectation no     discarded, with the reason: the
      longer held: the record changed there)            target reads the record again and
                                                        enqueues what still stands
    write raised anything else (a bug, a refused        logged, then like FAILED: a
      schema)                                           delivery is never dropped

Exactly-once effects come from the destination, not from here: deliveries are written with
the connector's upsert by key (or delete by key), so writing one twice changes nothing.
That covers the one window an outbox cannot close: a worker that wrote a batch and died
before marking it leaves the deliveries leased; once the lease expires another worker
writes them again, and the destination finds them unchanged.

Per-key order holds as long as a write finishes within the lease (`lease_seconds`): a
worker that is still writing when its lease expires can land an old version after the
next worker has written a newer one. Give the lease ample room over the connector's
timeouts.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from patchbay import metrics
from patchbay.elements.sink import UnevenOutcomes, Written
from patchbay.errors import RetriableError
from patchbay.model import Operation, Outcome, Record, Status
from patchbay.retry import RetryPolicy
from patchbay.store import Store
from patchbay.store.outbox import Delivery

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeliveryStats:
    """What one pass did: marks that applied (a mark of a lease lost meanwhile is not counted)."""

    delivered: int = 0
    retried: int = 0
    dead: int = 0
    stale: int = 0

    def __add__(self, other: DeliveryStats) -> DeliveryStats:
        return DeliveryStats(self.delivered + other.delivered, self.retried + other.retried,
                             self.dead + other.dead, self.stale + other.stale)

    @property
    def total(self) -> int:
        return self.delivered + self.retried + self.dead + self.stale


def default_worker() -> str:
    """A name no other worker has: host, process, and a random part for this instance."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


class Target(Protocol):
    """What a destination's deliveries are written through: a Sink (elements/sink.py), or a
    pattern's own step in front of sinks (a sync's, which picks the write per record)."""

    object: str
    key: str
    operation: Operation

    def write(self, batch: Sequence[Record], operation: Operation | None = None) -> Written: ...


@dataclass
class Deliverer:
    """Delivers one integration's outbox to its destinations (`targets`, by destination name).

    Several Deliverers, in threads, processes or machines sharing a PostgreSQL engine state,
    may work the same destination: leases keep them off each other's deliveries.
    """

    store: Store
    integration: str
    targets: Mapping[str, Target]
    """Each destination's write step: its connector, object, operation for upserts
    (deletes use DELETE) and key field."""
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    lease_seconds: float = 60.0
    worker: str = field(default_factory=default_worker)
    _reclaimed: bool = field(default=False, init=False, repr=False)

    def deliver_once(self, destination: str, limit: int = 500) -> DeliveryStats:
        """Lease up to `limit` due deliveries for `destination`, write them, mark them."""
        if not self._reclaimed:
            # Workers of this machine that were killed hold leases no one would take for
            # `lease_seconds`: a restart takes them over now.
            self.store.outbox.reclaim(self.integration)
            self._reclaimed = True
        target = self.targets[destination]
        leased = self.store.outbox.lease(self.integration, destination, self.worker, limit,
                                  self.lease_seconds)
        stats = DeliveryStats()
        for operation, group in _runs(leased):
            stats += self._write(target, operation, group)
        return stats

    def drain(self, destination: str, limit: int = 500) -> DeliveryStats:
        """Deliver until a lease finds nothing due (retries waiting for later stay pending)."""
        stats = DeliveryStats()
        while True:
            once = self.deliver_once(destination, limit)
            if not once.total:
                return stats
            stats += once

    def _write(self, target: Target, operation: str, group: list[Delivery]) -> DeliveryStats:
        if operation == "delete":
            records = [_key_record(d, target.key) for d in group]
            write_as = Operation.DELETE
        else:
            records = [dict(d.payload or {}) for d in group]
            write_as = target.operation
        try:
            outcomes = target.write(records, write_as).outcomes
        except RetriableError as exc:
            return self._failed(group, str(exc))
        except UnevenOutcomes as exc:
            log.error("%s: %s; retrying them", group[0].destination, exc)
            return self._failed(group, str(exc))
        except Exception as exc:
            log.exception("writing %d deliveries to %s (%s) failed; they will be retried",
                          len(group), group[0].destination, target.object)
            return self._failed(group, f"{type(exc).__name__}: {exc}")
        done: list[Delivery] = []
        stats = DeliveryStats()
        for delivery, outcome in zip(group, outcomes, strict=True):
            if outcome.status.is_delivered:
                done.append(delivery)
            elif outcome.status is Status.STALE:
                applied = self.store.outbox.stale(delivery.id, self.worker, _reason(outcome))
                stats += DeliveryStats(stale=int(applied))
            elif outcome.status is Status.REJECTED:
                applied = self.store.outbox.dead(delivery.id, self.worker, _reason(outcome))
                stats += DeliveryStats(dead=int(applied))
                if applied:
                    metrics.records_failed.labels(self.integration, outcome.code or "REJECTED").inc()
            else:
                stats += self._failed([delivery], _reason(outcome))
        if done:
            delivered = self.store.outbox.delivered([d.id for d in done], self.worker)
            stats += DeliveryStats(delivered=delivered)
            self._count_delivered(done, delivered)
        return stats

    def _count_delivered(self, done: Sequence[Delivery], applied: int) -> None:
        """Written records and their latency, from entering the outbox to now (when every
        mark applied: a mark of a lease lost meanwhile is another worker's to count)."""
        metrics.records_written.labels(self.integration).inc(applied)
        if applied != len(done):
            return
        now = dt.datetime.now(dt.UTC)
        latency = metrics.delivery_latency.labels(self.integration, done[0].destination)
        for delivery in done:  # created_at is aware: the outbox gives every time with its zone
            latency.observe(max(0.0, (now - delivery.created_at).total_seconds()))

    def _failed(self, group: Sequence[Delivery], error: str) -> DeliveryStats:
        retried = dead = 0
        for delivery in group:
            attempts = delivery.attempts + 1
            if self.policy.gives_up(attempts):
                applied = self.store.outbox.dead(delivery.id, self.worker,
                                                 f"{error} (gave up after {attempts} attempts)")
                dead += applied
                if applied:
                    metrics.records_failed.labels(self.integration, "ATTEMPTS_EXHAUSTED").inc()
            else:
                delay = self.policy.next_delay(attempts)
                retried += self.store.outbox.retry(delivery.id, self.worker, error,
                                            dt.timedelta(seconds=delay))
        return DeliveryStats(retried=retried, dead=dead)


def _runs(leased: Sequence[Delivery]) -> list[tuple[str, list[Delivery]]]:
    """Consecutive deliveries of the same operation, in lease order."""
    runs: list[tuple[str, list[Delivery]]] = []
    for delivery in leased:
        if runs and runs[-1][0] == delivery.operation:
            runs[-1][1].append(delivery)
        else:
            runs.append((delivery.operation, [delivery]))
    return runs


def _key_record(delivery: Delivery, key: str) -> Record:
    """The record a delete writes: the key, typed as the payload holds it if it does, with
    any reserved fields (`__version__`, which message destinations build ids from)."""
    payload = delivery.payload or {}
    record: Record = {name: value for name, value in payload.items() if name.startswith("__")}
    record[key] = payload[key] if payload.get(key) is not None else delivery.record_key
    return record


def _reason(outcome: Outcome) -> str:
    reason = outcome.reason or outcome.status.value
    return f"{outcome.code}: {reason}" if outcome.code else reason
