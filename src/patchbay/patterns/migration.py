"""Migration: move a scoped set of records in batches; graceful per-record failure; resumable.

    source.read(scope, after=checkpoint) ──► transform ──► conform ──► destination.write
        (reader thread, bounded queue)                                   │
                                               capture.compare ◄── destination.get(keys)
                                                     │
                    store.transaction(): outcomes.add(set-aside records),
                                         runs.checkpoint(position, counters)

A checkpoint is written only after its batch is written and compared, so it never runs
ahead of the destination; writes are idempotent by key, so replaying the batch after a
crash changes nothing. Stopping (Ctrl-C) finishes the current batch and leaves the run
resumable.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import queue
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from patchbay import logs
from patchbay import scope as scopes
from patchbay.compare import differing_fields, normalise, same_values
from patchbay.connectors.base import Capability, Connector
from patchbay.elements import capture
from patchbay.elements.capture import Comparison, MigrationInterrupted, MigrationReport
from patchbay.elements.columnar import arrow_type
from patchbay.elements.sink import Shaped, Sink
from patchbay.elements.transform import Transform
from patchbay.errors import FatalRunError, PatchbayError, RunNotResumable, SpecError
from patchbay.model import Operation, Page, Record, Status, given_params, jsonable
from patchbay.patterns.context import LookupCache, RunContext, spec_of
from patchbay.patterns.registry import Pattern, Report, RunReport, Started
from patchbay.retry import RetryPolicy
from patchbay.spec import MigrationSpec, redact_url
from patchbay.store import Store, Transaction
from patchbay.store.runs import OutcomeRow, RunRecord, RunStatus

if TYPE_CHECKING:
    from patchbay.patterns.partitioned import Partitioned

EARLY_SAMPLE = 1000
"""Records read before a run judges its share of rejects (or that it writes nothing at all)."""


@dataclass
class Prepared:
    """An integration bound to its run: compiled scope and transform, checked destination."""

    source: Connector
    sink: Sink
    """The destination, described and checked."""
    scope: scopes.BoundScope | None
    transform: Transform
    read_fields: list[str] | None
    columnar: bool
    """Pages come as Arrow tables and go through the columnar lane while they can."""

    @property
    def destination(self) -> Connector:
        return self.sink.connector

    @property
    def fields(self) -> list[str]:
        """The fields written (and compared)."""
        return self.sink.fields or []


def fingerprint(ctx: RunContext) -> str:
    """A digest of the definition a run runs: the integration as declared (source, scope,
    transform, destination, parameters; not its options, which a resumed run may tune), the
    identity of every system it uses, and the run's parameters. Secrets never enter it: a
    system's identity is its URL without password, query or fragment, and secrets only
    ever sit in systems (`${ENV}` is filled in nowhere else)."""
    integration = spec_of(ctx, MigrationSpec)
    systems = {name: system_identity(ctx.systems.spec(name).url)
               for name in sorted({s for s, _ in integration.systems_used()})}
    definition = {"integration": integration.model_dump(mode="json", by_alias=True,
                                                        exclude={"options"}),
                  "systems": systems,
                  "params": given_params(jsonable(dict(ctx.params)))}
    text = json.dumps(definition, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def watermark_reached(ctx: RunContext) -> Any:
    """The watermark this very definition reached in its source (None: none yet, so a
    run reads every record in scope). Kept per definition (see watermark_object): keyed by
    the integration's name alone, a run of another file sharing the name, or of this one
    edited or with other parameters, would start after records it never wrote."""
    integration = spec_of(ctx, MigrationSpec)
    src = integration.source
    mark = fingerprint(ctx)
    reached = ctx.store.cursors.get(integration.name, src.system, watermark_object(src.object, mark))
    return reached if reached is not None else _watermark_kept_by_name(ctx, mark)


def _watermark_kept_by_name(ctx: RunContext, mark: str) -> Any:
    """A watermark kept before watermarks were kept per definition (under the object alone)
    is this definition's when the last run of the name that finished was of this definition:
    it wrote that watermark, so an upgrade does not read every record again. Otherwise
    (another definition's, or nobody can tell) None: a full read is the safe answer."""
    integration = spec_of(ctx, MigrationSpec)
    src = integration.source
    kept = ctx.store.cursors.get(integration.name, src.system, src.object)
    if kept is None:
        return None
    finished = [run for run in ctx.store.runs.latest(integration.name)
                if run.status in (RunStatus.COMPLETE, RunStatus.COMPLETE_WITH_REJECTS)]
    return kept if finished and finished[0].fingerprint == mark else None


def keep_watermark(store: Store, ctx: RunContext, high_water: Any) -> None:
    """Record the watermark a complete run of this definition reached."""
    integration = spec_of(ctx, MigrationSpec)
    src = integration.source
    store.cursors.set(integration.name, src.system,
                      watermark_object(src.object, fingerprint(ctx)), high_water)


def watermark_object(object: str, mark: str) -> str:
    """The name a definition's watermark is kept under in the cursors of its source: the
    object and the definition's fingerprint."""
    return f"{object}@{mark}"


def system_identity(url: str) -> str:
    """Which system a URL reaches, without anything secret: scheme, user, host, port, path."""
    redacted = redact_url(url)
    with contextlib.suppress(ValueError):
        return urlunsplit(urlsplit(redacted)._replace(query="", fragment=""))
    return redacted


def prepare(ctx: RunContext, watermark_after: Any = None) -> Prepared:
    integration = spec_of(ctx, MigrationSpec)
    src, dst = integration.source, integration.destination
    source, destination = ctx.systems[src.system], ctx.systems[dst.system]
    bound = scopes.bind(src.scope, ctx.params)
    if src.watermark and watermark_after is not None:
        # `gte`, not `gt`: records sharing the last run's top timestamp, or committed late
        # with it, are read again; the idempotent write finds them unchanged.
        after = scopes.Condition(src.watermark, "gte", watermark_after)
        bound = after if bound is None else scopes.Group("and", (bound, after))
    transform = Transform(integration.transform, ctx.params, LookupCache(ctx.systems))
    options = integration.options
    sink = Sink(destination, dst.object, dst.operation, dst.key, transform=transform,
                fields=transform.output_fields, strict=True,
                passed=list(source.describe(src.object).fields) if transform.passes_through else (),
                unfit=lambda problems: SpecError(f"integration '{integration.name}' does not fit "
                                                 "its destination", problems),
                retry=RetryPolicy(options.write_attempts, options.retry_backoff_seconds))
    sink.check()
    wanted = transform.source_fields
    extra = {f for f in (src.key, src.watermark) if f}
    read_fields = sorted(wanted | extra) if wanted is not None else src.fields
    prepared = Prepared(source, sink, bound, transform, read_fields, columnar=False)
    prepared.columnar = (options.columnar and transform.columnar
                         and Capability.COLUMNAR in source.capabilities and sink.accepts_tables()
                         and all(arrow_type(sink.schema.fields[f]) is not None
                                 for f in prepared.fields))
    return prepared


def rejected(shaped: Shaped) -> list[int]:
    """Positions of the records a shaped batch set aside as rejected, in the order found:
    marked broken by the source (a CSV row it could not read whole), refused by the
    transform, refused by the conform step."""
    return [p for p, o in shaped.aside.items() if o.status is Status.REJECTED] + list(shaped.refused)


def skipped(shaped: Shaped) -> list[int]:
    """Positions of the records a shaped batch skipped (the transform's skip_if)."""
    return [p for p, o in shaped.aside.items() if o.status is Status.SKIPPED]


@dataclass
class Written:
    """A written batch on its way to its checkpoint."""

    batch: int
    position: Any
    counters: dict[str, int]
    rows: list[OutcomeRow]
    high_water: Any
    check: Callable[[], None] | None
    """Compares the batch with the destination (reads it back)."""


class Checkpoints:
    """Compares each written batch with the destination, then checkpoints it (`record`, in
    a transaction with nothing else), in order, in a thread of its own, while the next batch
    is being written. A checkpoint still never runs ahead of the destination; a crash
    replays the few batches written since the last one, which the idempotent writes make
    harmless."""

    DEPTH = 2

    def __init__(self, store: Store, record: Callable[[Transaction, Written], None],
                 notify: Callable[[str, Mapping[str, int]], None]) -> None:
        self.store, self.record, self.notify = store, record, notify
        self.error: BaseException | None = None
        self._queue: queue.Queue[Written | None] = queue.Queue(maxsize=self.DEPTH)
        self._thread = threading.Thread(target=self._work, name="patchbay-checkpoints",
                                        daemon=True)
        self._thread.start()

    def put(self, written: Written) -> None:
        if self.error is not None:
            raise self.error
        self._queue.put(written)

    def finish(self, raise_error: bool = True) -> None:
        """Wait until every batch handed over is checkpointed."""
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
        if raise_error and self.error is not None:
            raise self.error

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            if self.error is not None:
                continue  # keep draining, so that the writer never blocks on a dead thread
            try:
                if item.check is not None:
                    item.check()
                with self.store.transaction() as tx:
                    self.record(tx, item)
                self.notify("batch", item.counters)
            except BaseException as exc:
                self.error = exc


class Migration:
    """One run of a migration integration."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.integration = spec_of(ctx, MigrationSpec)
        self.options = self.integration.options
        self.notice: str | None = None
        """What `start` chose, when the person running it should hear of it."""
        self._first_refusal: OutcomeRow | None = None

    # -- starting and resuming ------------------------------------------------------------------

    def start(self, *, resume: str | None = None, fresh: bool = False, full: bool = False,
              split: bool = False) -> RunRecord:
        """Begin a run, or resume one: `resume` by id, or the latest unfinished run of the
        same definition (fingerprint) and parameters. `notice` then says what was chosen
        when it is not a plain new run. `split`: the run is (to be) split into key ranges
        (patterns/partitioned.py); a run of the other kind is not resumed so."""
        store, name = self.ctx.store, self.integration.name
        mark = fingerprint(self.ctx)
        if resume is not None:
            run = store.runs.get(resume)
            if run.integration != name:
                raise RunNotResumable(f"run {resume} belongs to '{run.integration}', not '{name}'")
            if run.status not in RunStatus.UNFINISHED:
                raise RunNotResumable(f"run {resume} is {run.status}; nothing to resume")
            if run.fingerprint is not None and run.fingerprint != mark:
                raise RunNotResumable(
                    f"run {resume} ran another definition of '{name}' (systems, source, scope, "
                    "transform, destination or parameters differ); `patchbay run --fresh` "
                    "starts a new run")
        else:
            found = None if fresh else self._resumable(mark, self._run_params(full))
            if found is None:
                self._note_other_watermark(mark, full)
                return store.runs.start(name, self.integration.pattern, self._run_params(full),
                                       str(self.ctx.spec_path) if self.ctx.spec_path else None,
                                       fingerprint=mark)
            run = found
        if run.owner_alive:
            raise RunNotResumable(f"run {run.id} is still running (owner {run.owner})")
        has_ranges = bool(store.ranges.of(run.id))
        if has_ranges and not split:
            raise RunNotResumable(f"run {run.id} is split into key ranges: resume it with "
                                  "`patchbay run --workers N`")
        if split and not has_ranges and run.batches:
            raise RunNotResumable(f"run {run.id} was started without workers: resume it with "
                                  f"`patchbay resume {run.id}`, or start anew with --fresh")
        self.notice = f"resuming run {run.id} from record {run.counters.get('read', 0):,}"
        claimed = store.runs.claim(run.id, owner=run.owner)
        if claimed is None:
            raise RunNotResumable(f"run {run.id} was just taken over by another process")
        return claimed

    def _resumable(self, mark: str, params: Mapping[str, Any]) -> RunRecord | None:
        """The latest unfinished run of this very definition and these parameters. Runs of the
        same name but another definition (another file, a changed destination) or of an
        unknown one (started before runs kept their fingerprint) are left alone: resuming
        them would skip records this definition never wrote."""
        candidates = self.ctx.store.runs.unfinished(self.integration.name, params)
        same = next((r for r in candidates if r.fingerprint == mark), None)
        unknown_live = next((r for r in candidates if r.fingerprint is None and r.owner_alive),
                            None)
        if same is None and unknown_live is not None:
            # a process of an older patchbay may be running this very definition right now
            raise RunNotResumable(f"run {unknown_live.id} is still running "
                                  f"(owner {unknown_live.owner})")
        if same is None and candidates:
            other = candidates[0]
            why = ("it ran another definition of this integration" if other.fingerprint
                   else "it predates definition fingerprints, so it may have run another one")
            self.notice = (f"starting a new run: unfinished run {other.id} is not resumed, "
                           f"because {why} (`patchbay resume {other.id}` continues it)")
        return same

    def _note_other_watermark(self, mark: str, full: bool) -> None:
        """Say why a new incremental run reads every record when the integration's name has
        reached a watermark in its source under another definition only."""
        src = self.integration.source
        if not src.watermark or full or watermark_reached(self.ctx) is not None:
            return
        others = [o for o in self.ctx.store.cursors.objects(self.integration.name, src.system)
                  if o == src.object or o.startswith(f"{src.object}@")]
        if others:
            said = ("reading every record in scope: the watermark this integration reached "
                    "was reached by another definition of it (another file, an edited one or "
                    "other parameters)")
            self.notice = said if self.notice is None else f"{self.notice}; {said}"

    def _run_params(self, full: bool) -> dict[str, Any]:
        params = dict(self.ctx.params)
        if full:
            params["__full__"] = True
        return params

    # -- the run --------------------------------------------------------------------------------

    def run(self, run: RunRecord) -> MigrationReport | MigrationInterrupted:
        """Carry the run to its end (or to a stop); return the report. What it logs names it."""
        with logs.context(integration=self.integration.name, run=run.id):
            return self._carry(run)

    def _carry(self, run: RunRecord) -> MigrationReport | MigrationInterrupted:
        ctx, store = self.ctx, self.ctx.store
        state = dict(run.checkpoint or {})
        full = bool(run.params.get("__full__"))
        watermark_after = None
        src = self.integration.source
        if src.watermark and not full:
            watermark_after = state.get("watermark_after", watermark_reached(ctx))
        try:
            prepared = prepare(ctx, watermark_after)
        except PatchbayError as exc:
            store.runs.finish(run.id, RunStatus.FAILED, error=str(exc))
            raise
        counters: Counter[str] = Counter(run.counters)
        comparison = (Comparison.from_state(state["comparison"]) if "comparison" in state
                      else Comparison(self.integration.destination.key,
                                      [f for f in prepared.fields], self.options.sample_size))
        batch_no = run.batches
        high_water = state.get("high_water")
        ctx.notify("start", counters)
        self._announce_scope(prepared)

        def record(tx: Transaction, item: Written) -> None:
            tx.outcomes.add(run.id, item.batch, item.rows)
            tx.runs.checkpoint(
                run.id, batch=item.batch, counters=item.counters,
                checkpoint={"position": item.position, "comparison": comparison.state(),
                            "high_water": item.high_water, "watermark_after": watermark_after})

        checkpoints = Checkpoints(store, record, ctx.notify)
        try:
            stopped, high_water = self.carry(prepared, state.get("position"), batch_no, counters,
                                             comparison, high_water, checkpoints, run.id,
                                             ctx.stop)
            if stopped:
                store.runs.finish(run.id, RunStatus.INTERRUPTED)
                return MigrationInterrupted(run.id, dict(counters))
            self.check_rejects(counters, [], run.id, finished=True)
        except BaseException as exc:
            # What was written before the failure still gets its checkpoint; the run keeps
            # the counters of its last checkpoint, so a resume counts nothing twice.
            checkpoints.finish(raise_error=False)
            if isinstance(exc, NothingWritten):
                with store.transaction() as tx:
                    tx.outcomes.forget(run.id)
                    tx.runs.restart(run.id)
            store.runs.finish(run.id, RunStatus.FAILED, error=str(exc) or type(exc).__name__)
            raise
        report = self.report(run, prepared, counters, comparison)
        status = report.verdict
        if src.watermark and high_water is not None and status != RunStatus.INCOMPLETE:
            keep_watermark(store, ctx, high_water)
        report = capture.write_report_files(ctx.reports_dir / run.id, report, store.outcomes.of(run.id))
        store.runs.finish(run.id, status, report=report.to_json(), counters=counters)
        return report

    def carry(self, prepared: Prepared, position: Any, batch_no: int, counters: Counter[str],
              comparison: Comparison, high_water: Any, checkpoints: Checkpoints, run_id: str,
              stop: threading.Event) -> tuple[bool, Any]:
        """Read, write and checkpoint the batches after `position` to the end of the scope,
        or until `stop` is set after a batch; whether it stopped, and the watermark reached.
        Every batch is checkpointed when this returns."""
        for page, shaped in self._pages(prepared, position):
            batch_no += 1
            rows, high_water, check = self._one_batch(prepared, page, shaped, counters,
                                                      comparison, high_water)
            checkpoints.put(Written(batch_no, page.position, dict(counters), rows,
                                     high_water, check))
            self.check_rejects(counters, rows, run_id, finished=False)
            if stop.is_set():
                checkpoints.finish()
                return True, high_water
        checkpoints.finish()
        return False, high_water

    def _announce_scope(self, prepared: Prepared) -> None:
        """Tell the progress display how many records are in scope, when the source can say
        so without reading them (a COUNT query); a file would have to be read twice."""
        if self.ctx.progress is None or Capability.COUNT not in prepared.source.capabilities:
            return
        with contextlib.suppress(PatchbayError, NotImplementedError):
            in_scope = prepared.source.count(self.integration.source.object, prepared.scope)
            self.ctx.notify("scope", {"in_scope": in_scope})

    def check_rejects(self, counters: Counter[str], rows: list[OutcomeRow], run_id: str, *,
                       finished: bool) -> None:
        """Stop the run, failed, when it sets aside more than `max_rejects` allows; without
        a limit, when every record read so far was refused (contacts run before their
        accounts): after the first EARLY_SAMPLE records, or at the end of a smaller scope."""
        read, rejected = counters["read"], counters["rejected"]
        if self._first_refusal is None:
            self._first_refusal = next((r for r in rows if r.status == Status.REJECTED), None)
        example = ("" if self._first_refusal is None else
                   f"; e.g. {self._first_refusal.code}: {self._first_refusal.reason}")
        limit = self.options.max_rejects
        if limit is not None:
            allowed = self.options.rejects_allowed(read)
            if rejected > allowed and (finished or isinstance(limit, int) or read >= EARLY_SAMPLE):
                raise FatalRunError(f"{rejected:,} of {read:,} records set aside, more than "
                                    f"max_rejects ({limit}) allows{example}", run=run_id)
            return
        written = sum(counters[s.value] for s in (Status.CREATED, Status.UPDATED,
                                                  Status.UNCHANGED, Status.DELETED))
        if rejected and not written and (finished or read >= EARLY_SAMPLE):
            raise NothingWritten(
                f"stopped: none of the {read:,} records read was written, {rejected:,} were "
                f"set aside{example}. Fix the cause (a record they depend on not migrated yet?) "
                "and run again, from the first record; or set options.max_rejects to let such "
                "a run go on", run=run_id)

    def _pages(self, prepared: Prepared, position: Any) -> Iterator[tuple[Page, Any]]:
        """Read ahead in a thread, `concurrency` pages at most, so memory stays bounded. A page
        that comes as a table is shaped there too (transform and conform, see `_shape_table`),
        while the writer is busy with the pages before it: each page comes with its shaped
        table, or None when it goes through the record lane."""
        src = self.integration.source
        pages: queue.Queue[tuple[Page, Any] | BaseException | None] = queue.Queue(
            maxsize=self.options.concurrency)
        stop = threading.Event()

        def reader() -> None:
            try:
                for page in prepared.source.read(src.object, prepared.scope, key=src.key,
                                                 fields=prepared.read_fields, after=position,
                                                 page_size=self.options.batch_size,
                                                 columnar=prepared.columnar):
                    item = (page, None if page.table is None else
                            prepared.sink.shape_table(page.table))
                    while not stop.is_set():
                        try:
                            pages.put(item, timeout=0.2)
                            break
                        except queue.Full:
                            continue
                    if stop.is_set():
                        return
                pages.put(None)
            except BaseException as exc:  # handed to the consumer, which re-raises it
                pages.put(exc)

        thread = threading.Thread(target=reader, name="patchbay-reader", daemon=True)
        thread.start()
        try:
            while True:
                item = pages.get()
                if item is None:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            thread.join(timeout=5)

    def _one_batch(self, prepared: Prepared, page: Page, shaped: Any, counters: Counter[str],
                   comparison: Comparison, high_water: Any
                   ) -> tuple[list[OutcomeRow], Any, Callable[[], None] | None]:
        """Write one page: its shaped table through the columnar lane, or else its records,
        shaped here. Returns the records set aside, the watermark reached, and the
        comparison of the written records with the destination, to be run later."""
        src_key = self.integration.source.key
        dst = self.integration.destination
        counters["read"] += len(page)
        watermark = self.integration.source.watermark
        if watermark:
            top = _top(page, watermark)
            if top is not None:
                high_water = later(top, high_water)
        if shaped is not None and self._columnar_batch(prepared, shaped, counters):
            counters["batches_columnar"] += 1
            return [], high_water, self._table_check(prepared, shaped, comparison)
        counters["batches_record"] += 1
        sources = page.records
        result = prepared.sink.write(sources)
        shaped, outcomes = result.shaped, result.outcomes
        refused, left = rejected(shaped), skipped(shaped)
        rows = [OutcomeRow(_source_key(sources[p], src_key), outcomes[p].status, outcomes[p].code,
                           outcomes[p].reason, sources[p]) for p in (*refused, *left)]
        counters["rejected"] += len(refused)
        counters["skipped"] += len(left)
        written = []
        for record, position in zip(shaped.records, shaped.positions, strict=True):
            outcome = outcomes[position]
            counters[outcome.status.value] += 1
            if outcome.status.is_success:
                if outcome.status is not Status.DELETED:
                    written.append(record)
            else:
                rows.append(OutcomeRow(outcome.key, outcome.status.value, outcome.code,
                                       outcome.reason, sources[position]))
        if self.options.verify != "full" or not written or dst.operation is Operation.DELETE:
            return rows, high_water, None

        def check() -> None:
            comparison.add(written, prepared.sink.get([r[dst.key] for r in written],
                                                      prepared.fields))
        return rows, high_water, check

    def _columnar_batch(self, prepared: Prepared, shaped: Any, counters: Counter[str]) -> bool:
        """Write a shaped page as one Arrow table. False when the destination refused
        something, which the record lane then finds; nothing is written then."""
        written = prepared.sink.write_table(shaped)
        if written is None:
            return False
        for status, count in written.items():
            counters[status.value] += count
        return True

    def _table_check(self, prepared: Prepared, written: Any,
                     comparison: Comparison) -> Callable[[], None] | None:
        if self.options.verify != "full":
            return None
        dst = self.integration.destination

        def check() -> None:
            keys = written[dst.key].to_pylist()
            actual = prepared.sink.get_table(keys, written.schema)
            if actual is None or not comparison.add_table(written, actual):
                comparison.add(written.to_pylist(), prepared.sink.get(keys, prepared.fields))
        return check

    # -- results capture ------------------------------------------------------------------------

    def report(self, run: RunRecord, prepared: Prepared, counters: Mapping[str, int],
               comparison: Comparison) -> MigrationReport:
        src = self.integration.source
        in_scope = None
        with contextlib.suppress(NotImplementedError):
            in_scope = prepared.source.count(src.object, prepared.scope)
        src_name, dst_name = src.system, self.integration.destination.system
        usage = {src_name: prepared.source.usage(), dst_name: prepared.destination.usage()}
        return capture.build_report(
            integration=self.integration, run_id=run.id, params=run.params,
            started_at=run.started_at, counters=counters, comparison=comparison,
            source_in_scope=in_scope, verify=self.options.verify, usage=usage)


class NothingWritten(FatalRunError):
    """A run stopped early because every record it read was refused. Its checkpoint is
    dropped: resumed from it, the run would skip the records it refused, which are those
    it has to write once their cause is fixed."""


def later(value: Any, high_water: Any) -> Any:
    """The later of a page's top watermark value and the one checkpointed (which JSON may
    have turned into text)."""
    if high_water is None:
        return value
    try:
        return value if value > high_water else high_water
    except TypeError:
        return value if normalise(value) > normalise(high_water) else high_water


def _top(page: Page, field: str) -> Any:
    if page.table is not None:
        import pyarrow.compute as pc

        return pc.max(page.table[field]).as_py()
    values = [r[field] for r in page.records if r.get(field) is not None]
    return max(values) if values else None


def _source_key(record: Record, key: str | None) -> Any:
    return record.get(key) if key else None


# -- plan: what a run would do, without writing ------------------------------------------------


def plan(ctx: RunContext, *, examples: int = 5, limit: int | None = None) -> dict[str, Any]:
    """Classify each record in scope as insert / update / unchanged / reject, writing nothing."""
    integration = spec_of(ctx, MigrationSpec)
    src, dst = integration.source, integration.destination
    prepared = prepare(ctx, watermark_reached(ctx) if src.watermark else None)
    counts: Counter[str] = Counter()
    samples: dict[str, list[dict[str, Any]]] = {}

    def sample(kind: str, item: dict[str, Any]) -> None:
        bucket = samples.setdefault(kind, [])
        if len(bucket) < examples:
            bucket.append(item)

    for page, shaped in _shaped_pages(ctx, prepared):
        counts["read"] += len(page)
        records = shaped.records
        for position in rejected(shaped):
            counts["reject"] += 1
            aside = shaped.aside.get(position) or shaped.refused[position]
            sample("reject", {"source": capture.plain_record(page[position]),
                              "code": aside.code, "reason": aside.reason})
        counts["skip"] += len(skipped(shaped))
        current = prepared.destination.get(dst.object, dst.key, [r[dst.key] for r in records],
                                           prepared.fields) if records else {}
        for record in records:
            held = current.get(record[dst.key])
            kind = _planned(dst.operation, record, held)
            counts[kind] += 1
            example: dict[str, Any] = {"key": capture.plain(record[dst.key])}
            if kind == "update" and held is not None:
                example["changes"] = {f: {"from": capture.plain(held.get(f)),
                                          "to": capture.plain(record[f])}
                                      for f in differing_fields(record, held)}
            elif kind == "insert":
                example["record"] = capture.plain_record(record)
            sample(kind, example)
        if limit is not None and counts["read"] >= limit:
            break
    return {"integration": integration.name, "params": capture.plain_record(dict(ctx.params)),
            "counts": {k: counts.get(k, 0) for k in
                       ("read", "insert", "update", "unchanged", "delete", "not_found", "reject", "skip")},
            "examples": samples}


def _shaped_pages(ctx: RunContext, prepared: Prepared) -> Iterator[tuple[list[Record], Shaped]]:
    """The records in scope a page at a time, each page with its shaped records (plan and
    verify: written nowhere, so read in this thread)."""
    integration = spec_of(ctx, MigrationSpec)
    src = integration.source
    for page in prepared.source.read(src.object, prepared.scope, key=src.key,
                                     fields=prepared.read_fields,
                                     page_size=integration.options.batch_size):
        yield page.records, prepared.sink.shape(page.records)


def _planned(operation: Operation, record: Record, held: Record | None) -> str:
    if operation is Operation.DELETE:
        return "delete" if held is not None else "not_found"
    if held is None:
        return "not_found" if operation is Operation.UPDATE else "insert"
    if same_values(record, held):
        return "unchanged"
    return "unchanged" if operation is Operation.INSERT else "update"


# -- verify: the comparison alone --------------------------------------------------------------


def _refused_last_time(ctx: RunContext) -> frozenset[str]:
    """Keys of the records the last finished run of these parameters had set aside."""
    for run in ctx.store.runs.latest(ctx.integration.name, limit=20):
        finished = run.status not in RunStatus.UNFINISHED
        same = given_params(run.params) == \
            jsonable(dict(ctx.params))
        if finished and same:
            rows = ctx.store.outcomes.of(run.id, statuses=[Status.REJECTED.value])
            return frozenset(str(r["record_key"]) for r in rows if r["record_key"] is not None)
    return frozenset()


def verify(ctx: RunContext) -> dict[str, Any]:
    """Compare the destination with the source scope now, writing nothing."""
    integration = spec_of(ctx, MigrationSpec)
    dst = integration.destination
    prepared = prepare(ctx)
    comparison = Comparison(dst.key, prepared.fields, integration.options.sample_size,
                            refused=_refused_last_time(ctx))
    counters: Counter[str] = Counter()
    for page, shaped in _shaped_pages(ctx, prepared):
        counters["read"] += len(page)
        records = shaped.records
        counters["rejected"] += len(rejected(shaped))
        counters["skipped"] += len(skipped(shaped))
        if records:
            comparison.add(records, prepared.destination.get(
                dst.object, dst.key, [r[dst.key] for r in records], prepared.fields))
        ctx.notify("verify", counters)
    return capture.build_report(integration=integration, run_id=None, params=dict(ctx.params),
                                started_at=None, counters=counters, comparison=comparison,
                                source_in_scope=counters["read"], verify="full").to_json()


class MigrationPattern(Pattern):
    """A migration as a plug-in: recorded runs that resume, a plan, a verification."""

    records_runs = True
    splits = True

    def start(self, *, resume: str | None = None, fresh: bool = False,
              full: bool = False) -> Started:
        migration = Migration(self.ctx)
        record = migration.start(resume=resume, fresh=fresh, full=full)
        return Started(record, migration.notice, lambda: migration.run(record))

    def run(self, *, resume: str | None = None, fresh: bool = False, full: bool = False,
            say: Callable[[str], None] | None = None) -> RunReport:
        started = self.start(resume=resume, fresh=fresh, full=full)
        if started.notice is not None and say is not None:
            say(started.notice)
        return started.carry()

    def ranges(self) -> Partitioned:
        from patchbay.patterns.partitioned import Partitioned

        return Partitioned(self.ctx)

    def plan(self, examples: int) -> Report:
        return plan(self.ctx, examples=examples)

    def verify(self) -> Report:
        return verify(self.ctx)
