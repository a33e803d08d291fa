"""Broadcast: every change in one source reaches every destination; nothing is lost.

    source.changes(cursor) ──► per destination: filter, transform ──► store.transaction():
        outbox.add(deliveries), cursors.set(cursor)   (together: the rule of the outbox)
    runtime's deliverer, per destination ──► lease ──► `sinks[destination]` (conform +
        write) ──► delivered / retry / dead

A poll enqueues one delivery per destination per change and advances the cursor in the
same transaction, so a crash between the two cannot lose a change. Delivery is per
destination: a dead destination retries with backoff and ends in dead letters, which
`patchbay dead-letters replay` sends again, while the other destinations go on.
Deletes go to every destination (a filter cannot see a deleted record's values).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from patchbay import scope as scopes
from patchbay.connectors.base import Connector
from patchbay.cron import Cron
from patchbay.elements.noticing import change_cursor, pushed
from patchbay.elements.sink import Sink
from patchbay.elements.transform import Transform
from patchbay.errors import ConnectionFailed, SpecError
from patchbay.model import (
    ERROR_FIELD,
    VERSION_FIELD,
    Change,
    ChangeKind,
)
from patchbay.patterns.context import TRANSIENT, LookupCache, RunContext, spec_of
from patchbay.patterns.registry import Pattern
from patchbay.spec import BroadcastDestinationSpec, BroadcastSpec
from patchbay.store.outbox import NewDelivery
from patchbay.store.secrets import CURSOR_DIGESTS

log = logging.getLogger(__name__)


@dataclass
class _Destination:
    spec: BroadcastDestinationSpec
    connector: Connector
    transform: Transform
    accepts: Any
    """The filter as a test of a source record."""


class Broadcast:
    """One broadcast integration: poll its source into the outbox, or take pushed changes
    into it; the runtime delivers the outbox (patchbay.runtime.serving)."""

    settle_rounds = 0
    """A run is one poll and its delivery."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.spec = spec_of(ctx, BroadcastSpec)
        self.source = ctx.systems[self.spec.source.system]
        lookups = LookupCache(ctx.systems)
        self.destinations: dict[str, _Destination] = {}
        self.sinks: dict[str, Sink] = {}
        """Per destination, what the runtime's deliverer writes through (conform, then write)."""
        for destination in self.spec.destinations:
            connector = ctx.systems[destination.system]
            transform = Transform(destination.transform, ctx.params, lookups)
            sink = _sink(connector, destination, transform)
            # Unreachable now: its deliveries wait and retry while the others go on.
            with contextlib.suppress(ConnectionFailed):
                sink.check()
            self.destinations[destination.name] = _Destination(
                destination, connector, transform,
                scopes.to_predicate(scopes.bind(destination.filter, ctx.params)))
            self.sinks[destination.name] = sink
        trigger = self.spec.trigger
        self._cron = Cron.parse(trigger.cron) if trigger.cron is not None else None

    # -- noticing changes -----------------------------------------------------------------------

    def poll(self, enqueued: Callable[[], None] | None = None) -> int:
        """Move the source's changes since the cursor into the outbox; how many there were.
        `enqueued` is called after each batch is durably in the outbox."""
        src, store = self.spec.source, self.ctx.store
        total = 0
        while True:
            cursor = change_cursor(store.cursors.get(self.spec.name, src.system, src.object),
                                   key=src.key, watermark=src.watermark,
                                   trigger=self.spec.trigger, consumer=self.spec.name)
            changes, after = self.source.changes(src.object, cursor, src.fields,
                                                 limit=self.spec.options.batch_size,
                                                 digest_key=store.secrets.key(CURSOR_DIGESTS))
            with store.transaction() as tx:
                tx.outbox.add(self.spec.name, self._deliveries(changes))
                tx.cursors.set(self.spec.name, src.system, src.object, after)
            total += len(changes)
            if changes and enqueued is not None:
                enqueued()
            if len(changes) < self.spec.options.batch_size:
                return total

    def _deliveries(self, changes: Sequence[Change], default_version: str = "") -> list[NewDelivery]:
        deliveries: list[NewDelivery] = []
        upserts = [c for c in changes if c.kind is not ChangeKind.DELETED]
        for name, destination in self.destinations.items():
            key = destination.spec.key
            chosen = [c for c in upserts if destination.accepts(c.record)]
            result = destination.transform.apply([c.record for c in chosen])
            made = {id(source): record for source, record in zip(result.sources, result.records,
                                                                  strict=True)}
            refused = {id(s.source): f"{s.code}: {s.reason}" for s in result.rejected}
            for change in changes:
                version = _version(change, self.spec.source.watermark) or default_version
                # The outbox orders deliveries by the source record's key, whatever the
                # destination keys them by: changes of one record arrive in order.
                if change.kind is ChangeKind.DELETED:
                    target_key = _delete_key(destination.spec, change)
                    deliveries.append(NewDelivery(name, change.key, version, "delete",
                                                  {key: target_key, VERSION_FIELD: version}))
                elif id(change.record) in made:
                    record = made[id(change.record)]
                    deliveries.append(NewDelivery(name, change.key, version, "upsert",
                                                  {**record, VERSION_FIELD: version}))
                elif id(change.record) in refused:
                    # Enqueued as a payload of ERROR_FIELD ("CODE: reason"): the sink refuses
                    # it with that code and reason, so it lands in the dead letters.
                    deliveries.append(NewDelivery(name, change.key, version, "upsert",
                                                  {ERROR_FIELD: refused[id(change.record)]}))
        return deliveries

    def accept(self, body: Mapping[str, Any], received_at: str,
               message: tuple[str, str] | None = None) -> int:
        """Enqueue changes pushed by the source; how many. The body holds either whole
        records, `{"changes": [{"kind": "created"|"updated"|"deleted", "record": {...}}]}`,
        or only ids, `{"ids": [...]}`: their current values are fetched, and an id the
        source does not have is a delete only when the source says it was deleted (see
        Connector.deleted); else it is left out. A change older than one of the same record
        already queued is left out too. `message` (where it came from, its id) makes a
        second push of the same message raise MessageSeen. Returns once the deliveries are
        durably in the outbox (the runtime then wakes this process's delivering threads)."""
        src = self.spec.source
        changes = pushed(self.source, src.object, src.key or "Id", src.fields, body)
        deliveries = self._deliveries(changes, default_version=received_at)
        with self.ctx.store.transaction(serial=f"push:{self.spec.name}") as tx:
            if message is not None:
                tx.seen.first_sight(self.spec.name, *message)
            tx.outbox.add(self.spec.name, deliveries, newer_only=True)
        return len(changes)

    def next_poll(self, now: dt.datetime, first: bool = False) -> dt.datetime:
        """When to poll next: now (at start) or `poll_seconds` on, or the trigger's next
        cron time."""
        if self._cron is not None:
            return self._cron.next_after(now)
        return now if first else now + dt.timedelta(seconds=self.spec.trigger.poll_seconds)

    def report(self, changes: int, delivered: int, retried: int, dead: int) -> BroadcastReport:
        return BroadcastReport(self.spec.name, changes, delivered, retried, dead,
                               self.ctx.store.outbox.counts(self.spec.name))

    def purge(self) -> int:
        """Forget the deliveries made longer ago than the options keep them; how many."""
        keep = self.spec.options.keep_delivered_hours
        if keep is None:
            return 0
        try:
            return self.ctx.store.outbox.purge(dt.timedelta(hours=keep), self.spec.name)
        except TRANSIENT as exc:
            log.warning("%s: purging the outbox failed, trying later: %s", self.spec.name, exc)
            return 0


def _sink(connector: Connector, destination: BroadcastDestinationSpec,
          transform: Transform) -> Sink:
    """A destination's write step. Its payloads were transformed when enqueued and went
    through JSON since: they are conformed again (dates and decimals get their types
    back). A transform's fields are checked against the destination when it is first
    described, so a misfit fails at start, not at delivery."""
    def unfit(problems: list[str]) -> SpecError:
        return SpecError("the broadcast does not fit its destinations",
                         [f"destination '{destination.name}': {p}" for p in problems])
    return Sink(connector, destination.object, destination.operation, destination.key,
                fields=None if transform.passes_through else transform.output_fields,
                conform_every_field=True, unfit=unfit, broken_code=None)


def _delete_key(destination: BroadcastDestinationSpec, change: Change) -> Any:
    """The destination key of a deleted record: its source field when the key is a copy of
    one (a deleted record carries little more than its key), else the source key."""
    mapping = destination.transform.fields.get(destination.key)
    source_field = (mapping.from_ or destination.key) if mapping is not None and \
        mapping.expr is None and mapping.lookup is None and "value" not in mapping.model_fields_set \
        else None
    if source_field is not None and change.record.get(source_field) is not None:
        return change.record[source_field]
    return change.key


def _version(change: Change, watermark: str | None) -> str:
    """The change's version: the source's own, else its time, else its watermark value."""
    if change.version is not None:
        return change.version
    if change.at is not None:
        return change.at.isoformat()
    value = change.record.get(watermark) if watermark else None
    return "" if value is None else str(value)


@dataclass(frozen=True)
class BroadcastReport:
    """One round of a broadcast: changes noticed, deliveries made, retried and dead, and
    the outbox's deliveries per destination and status after it."""

    integration: str
    changes: int
    delivered: int
    retried: int
    dead: int
    outbox: dict[str, dict[str, int]]

    def to_json(self) -> dict[str, Any]:
        return {"integration": self.integration, "pattern": "broadcast", "changes": self.changes,
                "delivered": self.delivered, "retried": self.retried, "dead": self.dead,
                "outbox": self.outbox}


class BroadcastPattern(Pattern):
    """A broadcast as a plug-in: kept going by the runtime's outbox loop (poll, deliver), one
    round of it for a run; pushed changes go into the outbox."""

    loop = "outbox"

    def accept(self, body: Mapping[str, Any], received_at: str,
               message: tuple[str, str] | None = None, source: str | None = None) -> int:
        return Broadcast(self.ctx).accept(body, received_at, message)

    def watched(self) -> Broadcast:
        return Broadcast(self.ctx)
