"""Stream aggregation: aggregates per group kept up to date from the messages of queues
(RabbitMQ) and subjects (NATS JetStream), each message counted once across restarts.

    sources ──► fetch (held, not acked) ──► flush, every `flush.every_seconds` or
    `flush.every_messages` held, whichever comes first:
      1. drop the held messages already counted (same source and id: recorded in
         patchbay_seen_messages, or held twice); transform the rest with their source's
         transform, and take each one's group (the `group_by` fields) and its delta
         (one accumulator per aggregate). A message that is not a JSON object, that the
         transform rejects, that lacks a group_by field or whose value does not fit an
         aggregate (a sum of text) is rejected: counted, logged with its reason, acked;
      2. ONE store transaction: the ids into patchbay_seen_messages, and the deltas of the
         messages recorded by this insert (not those some other transaction recorded first)
         merged into their groups in patchbay_aggregates, which become dirty;
      3. the dirty groups (of this flush and of earlier ones whose write failed) written
         to every destination, upserted by the destination key; a group written to all of
         them is no longer dirty, unless it changed meanwhile (its revision);
      4. every held message acked, duplicates and rejected ones included.

Why nothing is lost and nothing counted twice. A message is acked only after the
transaction that counted it committed (4 after 2), so a crash before 2 leaves it unacked:
the broker delivers it again (RabbitMQ at once when the connection dies, JetStream after
`ack_wait`) and it is counted then, not before. A crash between 2 and 4 leaves it unacked
too, but its id is already in patchbay_seen_messages, written in the same transaction as
its delta: the redelivery is recognised in 1 (or, should two processes race, by the insert
in 2, which counts only the ids it recorded itself) and acked without being counted. A
failed or interrupted 3 leaves the groups dirty in the state, and the next flush, in this
process or the next, writes their current values: destinations are written with whole
values, not increments, so a write repeated is harmless. Each message is counted in
exactly the transaction that recorded its id, and a transaction either commits both or
neither.

Counted ids are forgotten after SEEN_RETENTION (7 days). That is safe because only an
unacked message comes back, and a broker gives it back within minutes (when the connection
drops, or after `ack_wait`), not days; a message id older than that can come back only if a
producer publishes it again, which is a new message as far as a broker is concerned.

Accumulators (JSON in the state, exact: numbers are decimals, kept as text): count → n;
sum → s; min / max → the value; avg → s and n; latest → the value and its `by`.
count_distinct is refused at start: it would have to keep every value seen, for ever.
A group's written row is its group_by fields and the aggregates' values, through the
destination's transform.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from patchbay.connectors.base import Capability, Connector, Received, Subscription
from patchbay.connectors.messages import to_json
from patchbay.elements.sink import Sink
from patchbay.elements.transform import Transform
from patchbay.errors import PatchbayError, SpecError
from patchbay.model import ERROR_FIELD, Operation, Outcome, Record, Status
from patchbay.patterns.context import TRANSIENT, LookupCache, RunContext, spec_of
from patchbay.spec import AggregateSpec, AggregationDestinationSpec, AggregationSpec, StreamSourceSpec
from patchbay.store.aggregates import Counted, Group

log = logging.getLogger(__name__)

SEEN_RETENTION = dt.timedelta(days=7)
SHORTEST_WAIT, LONGEST_WAIT = 0.05, 1.0
"""How long serving waits on an empty source, doubling while all of them stay empty."""
RUN_ONCE_WAIT = 0.5
"""How long `run_once` waits on a source before it takes it as drained."""

_PATCHBAY_BODY = frozenset({"object", "operation", "key", "version", "record"})
"""The fields of the body patchbay's own message destinations publish (connectors/messages)."""
_WRITTEN = frozenset({Status.CREATED, Status.UPDATED, Status.UNCHANGED, Status.SKIPPED})


# -- accumulators -------------------------------------------------------------------------------


class _Unfit(Exception):
    """A value an aggregate cannot take (the message is rejected)."""


def _number(value: Any, name: str) -> Decimal | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise _Unfit(f"field {name} is {value}, not a number")
    if isinstance(value, int | Decimal):
        number = Decimal(value)
    elif isinstance(value, float | str):
        try:
            number = Decimal(repr(value) if isinstance(value, float) else value.strip())
        except InvalidOperation:
            raise _Unfit(f"field {name} is {value!r}, not a number") from None
    else:
        raise _Unfit(f"field {name} is a {type(value).__name__}, not a number")
    if not number.is_finite():
        raise _Unfit(f"field {name} is {value!r}, not a finite number")
    return number


def _plain_number(number: Decimal) -> int | Decimal:
    """An integral decimal without a fraction as an int: counts of whole things stay whole."""
    if number == number.to_integral_value() and int(number.as_tuple().exponent) >= 0:
        return int(number)
    return number


def _ordered(value: Any) -> tuple[int, Any]:
    """What min, max and latest compare: numbers (and numeric text) by value, before
    other values, which compare as text (ISO dates and times sort as they should)."""
    if not isinstance(value, bool):
        with contextlib.suppress(_Unfit):
            number = _number(value, "")
            if number is not None:
                return (0, number)
    return (1, str(value))


def _stored(value: Any) -> dict[str, Any]:
    """A value as the state keeps it: numbers as exact text, marked; the rest as JSON has it."""
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        number = _number(value, "")
        return {"v": str(number), "num": True}
    return {"v": json.loads(to_json(value))}


def _loaded(stored: Mapping[str, Any]) -> Any:
    return _plain_number(Decimal(stored["v"])) if stored.get("num") else stored["v"]


@dataclass(frozen=True)
class _Aggregate:
    """One aggregate column: the delta of one record, how two accumulators combine, and
    the value of one. The empty accumulator {} is a group without values yet."""

    name: str
    function: str
    field: str
    by: str | None

    @classmethod
    def of(cls, name: str, spec: AggregateSpec) -> _Aggregate:
        function, field_name = spec.function
        return cls(name, function, field_name, spec.by)

    def delta(self, record: Record) -> dict[str, Any]:
        value = True if self.field == "*" else record.get(self.field)
        if self.function == "count":
            return {"n": 0 if value is None else 1}
        if self.function in ("sum", "avg"):
            number = _number(value, self.field)
            if number is None:
                return {}
            return {"s": str(number)} if self.function == "sum" else {"s": str(number), "n": 1}
        if value is None:
            return {}
        if self.function == "latest":
            assert self.by is not None
            by = record.get(self.by)
            return {} if by is None else {**_stored(value), "by": _stored(by)}
        return _stored(value)  # min, max

    def combine(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
        if not a or not b:
            return dict(a or b)
        if self.function == "count":
            return {"n": a["n"] + b["n"]}
        if self.function == "sum":
            return {"s": str(Decimal(a["s"]) + Decimal(b["s"]))}
        if self.function == "avg":
            return {"s": str(Decimal(a["s"]) + Decimal(b["s"])), "n": a["n"] + b["n"]}
        if self.function == "latest":
            # A tie keeps the later delta: messages of one group arrive in order per source.
            newer = _ordered(_loaded(b["by"])) >= _ordered(_loaded(a["by"]))
            return dict(b if newer else a)
        smaller = _ordered(_loaded(b)) < _ordered(_loaded(a))
        return dict(b if smaller == (self.function == "min") else a)

    def value(self, state: Mapping[str, Any]) -> Any:
        if self.function == "count":
            return state.get("n", 0)
        if not state:
            return None
        if self.function == "sum":
            return _plain_number(Decimal(state["s"]))
        if self.function == "avg":
            return Decimal(state["s"]) / state["n"] if state["n"] else None
        return _loaded(state)


# -- the pattern --------------------------------------------------------------------------------


@dataclass
class _Source:
    spec: StreamSourceSpec
    name: str
    """How its messages' ids are recorded: "<system>/<object>"."""
    connector: Connector
    transform: Transform
    subscription: Subscription | None = None


@dataclass
class Tally:
    """What a stream aggregation did: messages taken, counted, not counted, groups written."""

    messages: int = 0
    """Taken from the sources (a message delivered twice is taken twice)."""
    counted: int = 0
    duplicates: int = 0
    """Redeliveries of messages counted already: acked, not counted."""
    rejected: int = 0
    skipped: int = 0
    """Deletes (a delete carries only a key: nothing to aggregate) and transform skip_if."""
    groups_changed: int = 0
    written: int = 0
    """Groups written to every destination."""
    failed: int = 0
    """Group writes that failed: the group stays dirty and is written at the next flush."""

    def add(self, other: Tally) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)


@dataclass(frozen=True)
class StreamReport:
    """What a stream aggregation's run did (its Tally), and the sources and destinations
    that failed, each with its last error."""

    integration: str
    tally: Tally
    errors: dict[str, str]

    def to_json(self) -> dict[str, Any]:
        return {"integration": self.integration, "pattern": "stream aggregation",
                **asdict(self.tally), "errors": self.errors}


@dataclass
class _Held:
    source: _Source
    received: Received


@dataclass
class _Errors:
    """The last error of each source and destination (the summary shows them)."""

    by_name: dict[str, str] = field(default_factory=dict)

    def note(self, name: str, exc: BaseException, what: str, integration: str) -> None:
        self.by_name[name] = str(exc) or type(exc).__name__
        if isinstance(exc, (PatchbayError, *TRANSIENT)):
            log.warning("%s: %s %s failed, trying again later: %s", integration, what, name, exc)
        else:
            log.error("%s: %s %s failed, trying again later", integration, what, name,
                      exc_info=exc)


class StreamAggregation:
    """One aggregation with `stream`: consume its sources, keep the groups, write them."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.spec = spec_of(ctx, AggregationSpec,
                            "a stream aggregation (an aggregation with stream)",
                            lambda a: a.stream is not None)
        assert self.spec.stream is not None
        self.stream = self.spec.stream
        self.name = self.spec.name
        self._check()
        self.aggregates = [_Aggregate.of(n, a) for n, a in self.stream.aggregate.items()]
        lookups = LookupCache(ctx.systems)
        self.sources = [
            _Source(s, f"{s.system}/{s.object}", ctx.systems[s.system],
                    Transform(s.transform, ctx.params, lookups)) for s in self.stream.sources]
        for source in self.sources:
            if Capability.CONSUME not in source.connector.capabilities:
                raise SpecError(f"system '{source.spec.system}' ({type(source.connector).__name__}) "
                                "cannot consume messages: a stream source is a RabbitMQ queue or "
                                "a NATS JetStream subject")
        produced = [*self.stream.group_by, *self.stream.aggregate]
        self.destinations = {f"{d.system}/{d.object}": self._sink(d, produced, lookups)
                             for d in self.spec.destinations}
        self._held: list[_Held] = []
        self._warned: set[tuple[str, str, int]] = set()
        self.errors = _Errors()

    def _check(self) -> None:
        """Refuse at start what a stream aggregation cannot do."""
        problems = [f"stream.aggregate.{n}: count_distinct is not supported in a stream: it "
                    "would have to keep every distinct value ever seen (unbounded state); use "
                    "an aggregation with merge for it"
                    for n, a in self.stream.aggregate.items() if a.count_distinct is not None]
        problems += [f"stream.aggregate.{n}: the name is also a group_by field"
                     for n in self.stream.aggregate if n in self.stream.group_by]
        for where, named in (("stream.sources", self.stream.sources),
                             ("destinations", self.spec.destinations)):
            names = [f"{s.system}/{s.object}" for s in named]
            problems += [f"{where}: {n} is named twice" for n in sorted(set(names))
                         if names.count(n) > 1]
        if not self.spec.destinations:
            problems.append("a stream aggregation writes its groups to destinations; it has none")
        problems += [f"destinations.{i}: a stream aggregation writes its groups (insert, update, "
                     f"upsert), it does not {d.operation.value}"
                     for i, d in enumerate(self.spec.destinations) if d.operation is Operation.DELETE]
        if self.spec.reports:
            problems.append("reports: a stream aggregation writes destinations, not report files")
        if problems:
            raise SpecError(f"'{self.name}' cannot run as a stream aggregation", problems)

    # -- running --------------------------------------------------------------------------------

    def run_once(self) -> StreamReport:
        """Consume what the sources hold now (until a fetch comes back empty), flushing
        every `flush.every_messages`, then flush; the summary of what happened."""
        tally = Tally()
        try:
            while not self.ctx.stop.is_set():
                self.take(RUN_ONCE_WAIT)
                drained = len(self._held) < self.stream.flush.every_messages
                tally.add(self.flush())
                if drained:
                    break
            self.purge()
        finally:
            self.close()
        return self.summary(tally)

    @property
    def holding(self) -> int:
        """How many messages are held, not yet flushed."""
        return len(self._held)

    def flush_logged(self) -> bool:
        """Flush; whether it went through."""
        try:
            tally = self.flush()
        except TRANSIENT as exc:
            log.warning("%s: flushing failed, trying again (the %d messages held stay unacked): "
                        "%s", self.name, len(self._held), exc)
            return False
        self.ctx.notify("aggregation", asdict(tally))
        return True

    def take(self, wait: float) -> int:
        """Fetch from the sources until `flush.every_messages` are held, or each source has
        given what it had (a fetch that brought fewer than asked); how many came. Only the
        first fetch waits up to `wait`: once messages come, an empty source is not waited
        for, so that what is held is acked soon. A source that fails is logged and left
        for the next round (its subscription is opened again then)."""
        taken = 0
        giving = list(self.sources)
        while giving:
            for source in list(giving):
                room = self.stream.flush.every_messages - len(self._held)
                if room <= 0:
                    return taken
                asked = min(room, self.spec.options.batch_size)
                try:
                    if source.subscription is None:
                        source.subscription = source.connector.subscribe(source.spec.object,
                                                                         self.name)
                    got = source.subscription.fetch(asked, wait if not taken else SHORTEST_WAIT)
                except SpecError:
                    raise
                except Exception as exc:
                    self.errors.note(source.name, exc, "consuming", self.name)
                    self._close_subscription(source)
                    got = []
                else:
                    self.errors.by_name.pop(source.name, None)
                if len(got) < asked:
                    giving.remove(source)
                self._held += [_Held(source, r) for r in got]
                taken += len(got)
        return taken

    # -- flushing -------------------------------------------------------------------------------

    def flush(self) -> Tally:
        """Count the held messages, write the dirty groups, ack the messages: the steps of
        the module's protocol, in that order."""
        tally = Tally(messages=len(self._held))
        tally.add(self.record())
        written, failed = self.write()
        tally.written, tally.failed = written, failed
        self.ack()
        return tally

    def record(self) -> Tally:
        """Steps 1 and 2: what of the held messages is new, counted in one transaction."""
        tally = Tally()
        fresh: list[_Held] = []
        for source in self.sources:
            mine = [h for h in self._held if h.source is source]
            if not mine:
                continue
            counted = self.ctx.store.seen.known(self.name, source.name, [h.received.id for h in mine])
            for held in mine:
                if held.received.id in counted:
                    tally.duplicates += 1
                else:
                    counted.add(held.received.id)  # held twice: the second is a duplicate
                    fresh.append(held)
        deltas: list[Counted] = []
        for source in self.sources:
            deltas += self._deltas(source, [h for h in fresh if h.source is source], tally)
        counted_now = self.ctx.store.aggregates.count(self.name, deltas, self._combine)
        tally.counted = len(counted_now)
        tally.duplicates += len(deltas) - len(counted_now)  # another process counted them first
        tally.groups_changed = len({c.group_key for c in counted_now})
        return tally

    def _deltas(self, source: _Source, held: Sequence[_Held], tally: Tally) -> list[Counted]:
        records: list[Record] = []
        owners: dict[int, _Held] = {}
        for message in held:
            body = message.received.body
            if ERROR_FIELD in body:
                self._reject(message, str(body[ERROR_FIELD]), tally)
                continue
            record = _record_of(body)
            if record is None:
                tally.skipped += 1
                continue
            owners[id(record)] = message
            records.append(record)
        result = source.transform.apply(records)
        for aside in result.rejected:
            self._reject(owners[id(aside.source)], f"{aside.code}: {aside.reason}", tally)
        tally.skipped += len(result.skipped)
        deltas: list[Counted] = []
        for original, record in zip(result.sources, result.records, strict=True):
            message = owners[id(original)]
            missing = [f for f in self.stream.group_by if record.get(f) in (None, "")]
            if missing:
                self._reject(message, f"the group_by field {missing[0]} is missing or empty", tally)
                continue
            try:
                delta = {a.name: a.delta(record) for a in self.aggregates}
                group = to_json([record[f] for f in self.stream.group_by]).decode("utf-8")
            except (_Unfit, TypeError, ValueError) as exc:
                self._reject(message, str(exc), tally)
                continue
            deltas.append(Counted(source.name, message.received.id, group, delta))
        return deltas

    def _reject(self, message: _Held, reason: str, tally: Tally) -> None:
        tally.rejected += 1
        # the reason and the body may quote values: shown only under --log-values
        body = json.dumps(message.received.body, default=str, ensure_ascii=False)[:500]
        log.warning("%s: message %s of %s not counted", self.name, message.received.id,
                    message.source.name, extra={"values": {"reason": reason, "body": body}})

    def _combine(self, a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
        return {agg.name: agg.combine(a.get(agg.name, {}), b.get(agg.name, {}))
                for agg in self.aggregates}

    def write(self) -> tuple[int, int]:
        """Step 3: every dirty group to every destination, a page at a time; (groups
        written everywhere, group writes that failed). A group that fails anywhere stays
        dirty and is written again at the next flush."""
        written = failed = 0
        after: str | None = None
        page = self.spec.options.batch_size
        while True:
            groups = self.ctx.store.aggregates.dirty(self.name, after, page)
            if not groups:
                break
            rows = [self._row(g) for g in groups]
            done = [True] * len(groups)
            for name, destination in self.destinations.items():
                for index, outcome in enumerate(self._write_to(name, destination, rows)):
                    if outcome.status not in _WRITTEN:
                        done[index] = False
                        failed += 1
                        self._warn_once(name, groups[index], outcome)
            finished = [g for g, ok in zip(groups, done, strict=True) if ok]
            self.ctx.store.aggregates.written(self.name, finished)
            written += len(finished)
            if len(groups) < page:
                break
            after = groups[-1].group_key
        return written, failed

    def _row(self, group: Group) -> Record:
        values = json.loads(group.group_key)
        row: Record = dict(zip(self.stream.group_by, values, strict=True))
        for agg in self.aggregates:
            row[agg.name] = agg.value(group.state.get(agg.name, {}))
        return row

    def _sink(self, destination: AggregationDestinationSpec, produced: list[str],
              lookups: LookupCache) -> Sink:
        """A destination's write step. It is described on first use and checked against what
        the transform produces then (a destination not there yet is described at a later
        flush); every field it has is conformed."""
        transform = Transform(destination.transform, self.ctx.params, lookups)
        fields = produced if transform.passes_through else transform.output_fields

        def unfit(problems: list[str]) -> SpecError:
            return SpecError(f"'{self.name}' does not fit destination {destination.system}/"
                             f"{destination.object}", problems)
        return Sink(self.ctx.systems[destination.system], destination.object,
                    destination.operation, destination.key, transform=transform, fields=fields,
                    conform_every_field=True, unfit=unfit)

    def _write_to(self, name: str, sink: Sink, rows: Sequence[Record]) -> list[Outcome]:
        try:
            outcomes = sink.write(rows).outcomes
        except Exception as exc:  # the destination is down or refuses the batch: groups stay dirty
            self.errors.note(name, exc, "writing to", self.name)
            return [Outcome(None, Status.FAILED, str(exc))] * len(rows)
        self.errors.by_name.pop(name, None)
        return outcomes

    def _warn_once(self, destination: str, group: Group, outcome: Outcome) -> None:
        """Log a group a destination refused, once per value of the group (it is retried at
        every flush until written)."""
        if outcome.status is Status.FAILED or (destination, group.group_key, group.revision) \
                in self._warned:
            return
        self._warned.add((destination, group.group_key, group.revision))
        log.warning("%s: %s refused a group (%s); it stays dirty and is written again at "
                    "every flush", self.name, destination, outcome.code,
                    extra={"record_key": group.group_key, "values": {"reason": outcome.reason}})

    def ack(self) -> None:
        """Step 4: ack every held message. An ack that fails leaves its messages to come
        back; they are recognised as counted then."""
        for source in self.sources:
            mine = [h.received for h in self._held if h.source is source]
            if not mine or source.subscription is None:
                continue
            try:
                source.subscription.ack(mine)
            except Exception as exc:
                self.errors.note(source.name, exc, "acknowledging messages of", self.name)
                self._close_subscription(source)
        self._held.clear()

    # -- upkeep ---------------------------------------------------------------------------------

    def purge(self) -> int:
        """Forget the ids of messages counted longer ago than SEEN_RETENTION; how many."""
        try:
            return self.ctx.store.seen.purge(self.name, SEEN_RETENTION)
        except TRANSIENT as exc:
            log.warning("%s: forgetting old message ids failed, trying later: %s", self.name, exc)
            return 0

    def close(self) -> None:
        """Close the subscriptions; messages held and not acked go back to their brokers."""
        for source in self.sources:
            self._close_subscription(source)
        self._held.clear()

    def _close_subscription(self, source: _Source) -> None:
        subscription, source.subscription = source.subscription, None
        if subscription is not None:
            with contextlib.suppress(Exception):
                subscription.close()

    def summary(self, tally: Tally) -> StreamReport:
        return StreamReport(self.name, tally, dict(self.errors.by_name))


def _record_of(body: Mapping[str, Any]) -> Record | None:
    """The record a message carries: the `record` of patchbay's own message body, or the
    body itself; None for a delete (it carries only a key: nothing to aggregate)."""
    if set(body) == _PATCHBAY_BODY and isinstance(body.get("record"), Mapping):
        if body.get("operation") == "delete":
            return None
        return dict(body["record"])
    return dict(body)

