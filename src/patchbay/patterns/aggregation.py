"""Aggregation: many systems merged into one data set, delivered as report files, written
to destination systems, or returned as an API answer.

    sources, in parallel, each with a timeout ──► transform into the common shape (Arrow)
        ──► merge in DuckDB (elements/merge.py) ──► report files | destinations | answer

A source that fails or times out leaves the answer partial, with the source named, unless
the integration says the source is required: then there is no answer. What the missing
source would have decided (its enrich aggregates, say) is null in a partial answer and
named in its `incomplete`, never a number; destinations are not written those fields.
Records a source's transform refuses are set aside with their reasons and counted in the
source's status; the rest go on. (Streaming aggregation, over messages, is
patterns/aggregation_stream.py.)
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import re
import string
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from patchbay import scope as scopes
from patchbay.cron import Cron
from patchbay.elements import merge as merging
from patchbay.elements import reports
from patchbay.elements.expressions import Expression
from patchbay.elements.sink import Sink
from patchbay.elements.transform import Transform
from patchbay.errors import FatalRunError, ParameterError, SpecError
from patchbay.model import Status, jsonable
from patchbay.patterns.context import LookupCache, RunContext, spec_of
from patchbay.patterns.registry import Loop, Pattern, RunReport
from patchbay.spec import (
    AggregationDestinationSpec,
    AggregationSourceSpec,
    AggregationSpec,
    IntegrationSpec,
    ScheduleSpec,
    TransformSpec,
)

log = logging.getLogger(__name__)

SAMPLE_REJECTS = 20
"""Set-aside records listed (with reasons) per source in a status; all are counted."""


class RequiredSourceFailed(FatalRunError):
    """A source the integration cannot do without failed: there is no answer."""

    def __init__(self, answer: Answer) -> None:
        failed = [s for s in answer.sources.values() if s.required and s.status != "ok"]
        super().__init__("required source " + ", ".join(
            f"'{s.name}' {s.status}: {s.error}" for s in failed))
        self.answer = answer


@dataclass
class SourceStatus:
    """How reading one source went."""

    name: str
    system: str
    required: bool
    status: str = "running"
    """ok, failed, or timeout."""
    rows: int = 0
    rejected: int = 0
    seconds: float = 0.0
    error: str | None = None
    rejects: list[dict[str, Any]] = field(default_factory=list)
    """The first set-aside records: key, code, reason."""

    def as_dict(self) -> dict[str, Any]:
        return {"system": self.system, "status": self.status, "required": self.required,
                "rows": self.rows, "rejected": self.rejected, "seconds": round(self.seconds, 3),
                "error": self.error, "rejects": self.rejects}


@dataclass
class Answer:
    """The merged data set, and how each source fared."""

    table: pa.Table
    sources: dict[str, SourceStatus]
    incomplete: dict[str, list[str]] = field(default_factory=dict)
    """{column: the failed sources it needed}: null throughout, not computed."""

    @property
    def partial(self) -> bool:
        return any(s.status != "ok" for s in self.sources.values())

    def summary(self) -> dict[str, Any]:
        return {"rows": self.table.num_rows, "partial": self.partial, "incomplete": self.incomplete,
                "sources": {name: s.as_dict() for name, s in self.sources.items()}}


@dataclass(frozen=True)
class AggregationReport:
    """An aggregation's run: its answer (rows, whether partial, the columns left null, each
    source's status), then the report files and destinations written, or why it failed."""

    integration: str
    rows: int
    partial: bool
    incomplete: dict[str, list[str]]
    sources: dict[str, dict[str, Any]]
    status: str
    seconds: float
    reports: list[str] = field(default_factory=list)
    destinations: dict[str, dict[str, Any]] = field(default_factory=dict)
    error: str | None = None
    """Why it failed (a required source): nothing was written."""

    @classmethod
    def of(cls, integration: str, answer: Answer, status: str, seconds: float,
           **outputs: Any) -> AggregationReport:
        return cls(integration, answer.table.num_rows, answer.partial, answer.incomplete,
                   {name: s.as_dict() for name, s in answer.sources.items()}, status,
                   round(seconds, 3), **outputs)

    def to_json(self) -> dict[str, Any]:
        head = {"integration": self.integration, "pattern": "aggregation", "rows": self.rows,
                "partial": self.partial, "incomplete": self.incomplete, "sources": self.sources,
                "status": self.status}
        if self.error is not None:
            return {**head, "error": self.error, "seconds": self.seconds}
        return {**head, "reports": self.reports, "destinations": self.destinations,
                "seconds": self.seconds}


class Aggregation:
    """One aggregation integration with its sources and outputs."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.spec = spec_of(ctx, AggregationSpec, "an aggregation of sources",
                            lambda a: a.merge is not None)
        self.lookups = LookupCache(ctx.systems)

    # -- the answer -----------------------------------------------------------------------------

    def answer(self, limit: int | None = None) -> Answer:
        """Read every source in parallel, merge; RequiredSourceFailed when a required source
        failed or timed out. `limit`: at most this many rows (see merge.merge)."""
        tables, statuses = self.collect()
        assert self.spec.merge is not None
        merged = merging.merge(tables, self.spec.merge, self.ctx.params, limit=limit)
        answer = Answer(merged.table, statuses, merged.incomplete)
        if any(s.required and s.status != "ok" for s in statuses.values()):
            raise RequiredSourceFailed(answer)
        return answer

    def collect(self) -> tuple[dict[str, pa.Table], dict[str, SourceStatus]]:
        """Each source's records in the common shape, read in a thread of its own; a
        source still reading at its timeout is given up on (its thread ends on its own)."""
        statuses = {s.name: SourceStatus(s.name, s.system, s.required) for s in self.spec.sources}
        tables: dict[str, pa.Table] = {}
        threads = []
        for source in self.spec.sources:
            thread = threading.Thread(target=self._read_into, args=(source, statuses[source.name],
                                                                    tables),
                                      name=f"aggregate-{source.name}", daemon=True)
            thread.start()
            threads.append((source, thread))
        started = time.monotonic()
        for source, thread in threads:
            timeout = source.timeout_seconds or self.spec.options.timeout_seconds
            thread.join(max(0.0, started + timeout - time.monotonic()))
            status = statuses[source.name]
            if thread.is_alive():
                status.status, status.error = "timeout", f"no answer within {timeout:g}s"
                status.seconds = time.monotonic() - started
                tables.pop(source.name, None)
        return {n: t for n, t in tables.items() if statuses[n].status == "ok"}, statuses

    def _read_into(self, source: AggregationSourceSpec, status: SourceStatus,
                   tables: dict[str, pa.Table]) -> None:
        started = time.monotonic()
        try:
            table = self._read(source, status)
        except Exception as exc:  # any failure of one source leaves the others' answer
            status.status, status.error = "failed", f"{type(exc).__name__}: {exc}"
        else:
            if status.status == "running":
                tables[source.name] = table
                status.status, status.rows = "ok", table.num_rows
        status.seconds = time.monotonic() - started

    def _read(self, source: AggregationSourceSpec, status: SourceStatus) -> pa.Table:
        connector = self.ctx.systems[source.system]
        transform = Transform(source.transform, self.ctx.params, self.lookups)
        needed = transform.source_fields
        fields = source.fields or (sorted(needed) if needed is not None else None)
        scope = scopes.bind(source.scope, self.ctx.params) if source.scope else None
        parts: list[pa.Table] = []
        for page in connector.read(source.object, scope, fields=fields,
                                   page_size=self.spec.options.batch_size,
                                   columnar=transform.columnar):
            shaped = transform.apply_table(page.table) \
                if page.table is not None and transform.columnar else None
            if shaped is None:
                result = transform.apply(page.records)
                for refused in result.rejected:
                    status.rejected += 1
                    if len(status.rejects) < SAMPLE_REJECTS:
                        status.rejects.append({"record": jsonable(refused.source.get(source.key or "")),
                                               "code": refused.code, "reason": refused.reason})
                shaped = _table(result.records, transform.output_fields)
            parts.append(shaped)
        table = pa.concat_tables(parts, promote_options="permissive") if parts else \
            _table([], transform.output_fields)
        return merging.localize(table, source.timezone) if source.timezone else table

    # -- outputs --------------------------------------------------------------------------------

    def run(self) -> AggregationReport:
        """Answer, then write every report file and destination; the run's report."""
        started = time.monotonic()
        # Before any source is read: a parameter that would put a report elsewhere refuses the run.
        paths = [self.report_path(r.file) for r in self.spec.reports]
        try:
            answer = self.answer()
        except RequiredSourceFailed as refused:
            return AggregationReport.of(self.spec.name, refused.answer, "failed",
                                        time.monotonic() - started, error=str(refused))
        written = [str(reports.write_report(answer.table, path, r.format, r.sheet))
                   for path, r in zip(paths, self.spec.reports, strict=True)]
        destinations = {f"{d.system}/{d.object}": self.write_destination(answer.table, d,
                                                                         answer.incomplete)
                        for d in self.spec.destinations}
        failed = any(c.get(Status.FAILED.value) or c.get("rejected") for c in destinations.values())
        status = "partial" if answer.partial else ("complete_with_rejects" if failed or any(
            s.rejected for s in answer.sources.values()) else "complete")
        return AggregationReport.of(self.spec.name, answer, status, time.monotonic() - started,
                                    reports=written, destinations=destinations)

    def report_path(self, file: str) -> Path:
        """The path of report `file` with the run's parameters in it (relative to the
        integration file). A parameter's value is a name, not a path: one holding a
        separator or a control character, or that is '.' or '..', is refused; and the path,
        symbolic links resolved, must stay inside the folder named by the text of `file`
        before its first {param}. ParameterError otherwise: the run is refused."""
        base = self.ctx.spec_path.parent if self.ctx.spec_path is not None else Path.cwd()
        prefix, named = "", False
        for text, field_name, _, _ in string.Formatter().parse(file):
            prefix += "" if named else text
            if field_name is None:
                continue
            named = True
            name = re.split(r"[.\[]", field_name, maxsplit=1)[0]
            if name not in self.ctx.params:
                raise SpecError(f"report file {file!r} names parameter '{name}', which is not given")
            _check_path_value(file, name, self.ctx.params[name])
        path = base / file.format(**self.ctx.params)
        if not named:
            return path
        folder = base / prefix if prefix == "" or prefix.endswith("/") else (base / prefix).parent
        if not path.resolve().is_relative_to(folder.resolve()):
            raise ParameterError(f"report file {file!r} would be {path}, outside {folder}: "
                                 "a run's parameters may not move a report elsewhere")
        return path

    def write_destination(self, table: pa.Table, destination: AggregationDestinationSpec,
                          incomplete: Mapping[str, Sequence[str]]) -> dict[str, Any]:
        """Write the merged rows through the destination's transform, in batches; counts
        of outcomes by status. Fields made from `incomplete` columns are left out (listed
        under "left_out"): the destination keeps what it had rather than take a null."""
        connector = self.ctx.systems[destination.system]
        transform = Transform(destination.transform, self.ctx.params, self.lookups)
        unknown = _unknown_fields(destination.transform, incomplete, table.column_names)
        needed = unknown.get(destination.key) or unknown.get("")
        if needed:
            return {"not_written": f"its key or skip_if needs {', '.join(needed)}, which this "
                                   "partial answer could not compute"}
        fields = transform.output_fields if not transform.passes_through else table.column_names
        sink = Sink(connector, destination.object, destination.operation, destination.key,
                    transform=transform, fields=[f for f in fields if f not in unknown],
                    leave_out=unknown,
                    unfit=lambda problems: SpecError(
                        f"integration '{self.spec.name}' does not fit its destination "
                        f"{destination.system}/{destination.object}", problems))
        sink.check()
        counts: dict[str, Any] = {}
        rejects: list[dict[str, Any]] = []

        def refuse(key: Any, code: str | None, reason: str | None) -> None:
            counts["rejected"] = counts.get("rejected", 0) + 1
            if len(rejects) < SAMPLE_REJECTS:
                rejects.append({"record": key, "code": code, "reason": reason})

        merge_key = self.spec.merge.key if self.spec.merge is not None else ""
        for batch in table.to_batches(max_chunksize=self.spec.options.batch_size):
            rows = batch.to_pylist()
            written = sink.write(rows)
            shaped = written.shaped
            for position, aside in shaped.aside.items():
                if aside.status is Status.SKIPPED:
                    counts["skipped"] = counts.get("skipped", 0) + 1
                else:
                    refuse(jsonable(rows[position].get(merge_key)), aside.code, aside.reason)
            for refused in shaped.refused.values():
                refuse(jsonable(refused.key), refused.code, refused.reason)
            for position in shaped.positions:
                outcome = written.outcomes[position]
                if outcome.status is Status.REJECTED:
                    refuse(outcome.key, outcome.code, outcome.reason)
                else:
                    counts[outcome.status.value] = counts.get(outcome.status.value, 0) + 1
        found = {k: v for k, v in counts.items() if v}
        if unknown:
            found["left_out"] = sorted(unknown)
        return {**found, "rejects": rejects} if rejects else found


def next_run(schedule: ScheduleSpec, after: dt.datetime | None = None) -> dt.datetime:
    """The next time a schedule is due, after `after` (default now), in UTC. Every
    `every_seconds` counts from the epoch, so that processes started at different times
    agree on the due times (and a due time is run once: runtime/serving.py)."""
    now = after or dt.datetime.now(dt.UTC)
    if schedule.every_seconds is not None:
        periods = math.floor(now.timestamp() / schedule.every_seconds) + 1
        return dt.datetime.fromtimestamp(periods * schedule.every_seconds, dt.UTC)
    if schedule.cron is not None:
        return Cron.parse(schedule.cron).next_after(now)
    times = []
    for text in schedule.daily_at or []:
        hours, minutes = (int(part) for part in text.split(":"))
        today = now.replace(hour=hours, minute=minutes, second=0, microsecond=0)
        times.append(today if today > now else today + dt.timedelta(days=1))
    return min(times)


def _check_path_value(file: str, name: str, value: Any) -> None:
    text = str(value)
    if text in ("", ".", "..") or re.search(r"[/\\\x00-\x1f\x7f]", text):
        raise ParameterError(f"parameter '{name}' is {text!r}, which report file {file!r} cannot "
                             "take: a value in a path must be a name (not empty, '.' or '..'; no "
                             "'/', '\\' or control characters)")


def _unknown_fields(transform: TransformSpec, incomplete: Mapping[str, Sequence[str]],
                    columns: Sequence[str]) -> dict[str, list[str]]:
    """{destination field: the incomplete columns it is made from} for the fields of a
    destination's transform; under "" those `skip_if` reads."""
    if not incomplete:
        return {}
    reads: dict[str, set[str]] = {}
    for target, mapping in transform.fields.items():
        if mapping.lookup is not None:
            reads[target] = {mapping.lookup.value}
        elif mapping.from_:
            reads[target] = {mapping.from_}
        elif mapping.expr:
            reads[target] = set(Expression(mapping.expr).fields)
        elif mapping.value is None:
            reads[target] = {target}
    if transform.keep_unmapped or not transform.fields:
        reads.update({column: {column} for column in columns if column not in transform.fields})
    if transform.skip_if:
        reads[""] = set(Expression(transform.skip_if).fields)
    found = {target: sorted(read & incomplete.keys()) for target, read in reads.items()}
    return {target: read for target, read in found.items() if read}


def _table(records: Sequence[Mapping[str, Any]], fields: Sequence[str]) -> pa.Table:
    if records:
        return pa.Table.from_pylist(list(records))
    return pa.table({name: pa.array([], pa.null()) for name in fields})


class AggregationPattern(Pattern):
    """An aggregation as a plug-in: of sources (run now, on a schedule, or answered live), or
    of a stream (consumed and flushed)."""

    holds_data_set = True

    @classmethod
    def loop_of(cls, integration: IntegrationSpec) -> Loop | None:
        assert isinstance(integration, AggregationSpec)
        if integration.stream is not None:
            return "stream"
        return "schedule" if integration.schedule is not None else None

    def run(self, *, resume: str | None = None, fresh: bool = False, full: bool = False,
            say: Callable[[str], None] | None = None) -> RunReport:
        if self._streams:
            report: RunReport = self.watched().run_once()
            return report
        return Aggregation(self.ctx).run()

    def answer(self, limit: int | None = None) -> Answer:
        return Aggregation(self.ctx).answer(limit)

    def watched(self) -> Any:
        if self._streams:
            from patchbay.patterns import aggregation_stream  # brokers' clients: only when used

            return aggregation_stream.StreamAggregation(self.ctx)
        return Aggregation(self.ctx)

    @property
    def _streams(self) -> bool:
        return type(self).loop_of(self.ctx.integration) == "stream"
