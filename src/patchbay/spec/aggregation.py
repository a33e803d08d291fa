"""The spec of an aggregation: many systems merged into one data set, at once or from a stream."""

from __future__ import annotations

import zoneinfo
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from patchbay.cron import Cron
from patchbay.model import Operation
from patchbay.spec.common import (
    IntegrationSpec,
    Scope,
    SourceSpec,
    SpecModel,
    TransformSpec,
    suggest,
)


class AggregationSourceSpec(SourceSpec):
    """One source of an aggregation, transformed into the common shape."""

    name: str = Field(description="Names the source in provenance, flags, precedence and status.")
    transform: TransformSpec = Field(default_factory=TransformSpec)
    required: bool = Field(
        default=False, description="Without this source there is no answer (no report, no "
                                   "destination written; `patchbay run` exits 1, the API answers "
                                   "503). Otherwise a failing source makes the answer partial: "
                                   "it names the source, leaves null (never 0) and names under "
                                   "`incomplete` the columns it would have decided, writes "
                                   "destinations without the fields made from them, and "
                                   "`patchbay run` exits 3.")
    timeout_seconds: float | None = Field(
        default=None, gt=0, description="Give up on this source after this long (default: "
                                        "the integration's options.timeout_seconds).")
    timezone: str | None = Field(
        default=None, description="The time zone of this source's timestamps that carry none "
                                  "(as its transform gives them), e.g. Europe/Berlin: they are "
                                  "read as wall-clock times there and merged as instants. "
                                  "Without it they are read as UTC; the merge never uses the "
                                  "machine's time zone.")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                zoneinfo.ZoneInfo(value)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value!r}: name one of the IANA "
                                 "database, such as UTC or Europe/Berlin") from None
        return value


Rule = Literal["order", "non_empty", "most_recent"]


class PrecedenceSpec(SpecModel):
    """Which source's value a merged row takes when its sources disagree.

    Each source takes part with one row per key: of several rows of one key in a source,
    only the latest by `recent_by` (or, without it, the last read) counts, for every rule;
    an older row of the same source is not looked at, unless `older_rows: non_empty`."""

    default: Rule = Field(
        default="non_empty",
        description="order: the value of the first source (in `order`) that has the entity, "
                    "even null or empty; non_empty: the first value in that order that is "
                    "neither null nor empty text; most_recent: the value of the source whose "
                    "`recent_by` is latest (nulls last, ties by `order`), even null or empty.")
    order: list[str] | None = Field(default=None, description="Source order (default: `union`).")
    recent_by: str | None = Field(default=None, description="The field most_recent compares, and "
                                                            "that picks a source's latest row of a "
                                                            "key. Timestamps compare as instants "
                                                            "(see the source's `timezone`).")
    fields: dict[str, Rule] = Field(default_factory=dict, description="Rules for single fields.")
    older_rows: Literal["ignore", "non_empty"] = Field(
        default="ignore", description="ignore: of a source's rows of one key only the latest "
                                      "takes part. non_empty: for the fields under the "
                                      "non_empty rule, a latest row with the field empty takes "
                                      "the latest non-empty value of the same source's older "
                                      "rows of the key, before the next source is asked.")


class AggregateSpec(SpecModel):
    """One aggregate column: exactly one of count, sum, min, max, latest (with `by`)."""

    count: str | None = Field(default=None, description='A field (non-null values), or "*".')
    count_distinct: str | None = None
    sum: str | None = None
    min: str | None = None
    max: str | None = None
    avg: str | None = None
    latest: str | None = Field(default=None, description="The value of the row whose `by` is latest.")
    by: str | None = None

    @model_validator(mode="after")
    def _one(self) -> AggregateSpec:
        chosen = [n for n in ("count", "count_distinct", "sum", "min", "max", "avg", "latest")
                  if getattr(self, n) is not None]
        if len(chosen) != 1:
            raise ValueError("an aggregate is exactly one of count, count_distinct, sum, min, max, "
                             "avg, latest")
        if (self.latest is None) != (self.by is None):
            raise ValueError("latest needs by (the field that orders the rows), and by goes with latest")
        return self

    @property
    def function(self) -> tuple[str, str]:
        """(function, field)."""
        for name in ("count", "count_distinct", "sum", "min", "max", "avg", "latest"):
            value = getattr(self, name)
            if value is not None:
                return name, value
        raise AssertionError("validated: one function")


class EnrichSpec(SpecModel):
    """Join a source onto the merged entities, reduced to aggregates per entity.

    An entity no row of the source matches gets 0 for count and count_distinct and null for
    the others (sum, min, max, avg, latest). If the source failed, every aggregate is null
    for every entity and named in the answer's `incomplete`: unknown, not zero."""

    source: str
    join: dict[str, str] = Field(description="{source field: entity field} equalities. (Not "
                                             "`on`, which YAML 1.1 reads as true.)")
    aggregate: dict[str, AggregateSpec] = Field(min_length=1,
                                                description="{new column: aggregate} per entity.")


class MergeSpec(SpecModel):
    """How the sources become one data set (run in DuckDB over Arrow tables)."""

    union: list[str] = Field(min_length=1, description="Sources merged into one row per entity.")
    key: str = Field(description="The field (after each source's transform) that says two rows "
                                 "are one entity, e.g. a normalised email. A null or empty key "
                                 "matches nothing: its row is an entity of its own.")
    precedence: PrecedenceSpec = Field(default_factory=PrecedenceSpec)
    provenance: bool = Field(default=False, description="Add `<field>__source` columns: the source "
                                                        "whose row the field's rule took the value "
                                                        "from, even when that value is empty (order "
                                                        "and most_recent may take it); null when no "
                                                        "source had a non-empty value.")
    flags: bool = Field(default=True, description="Add `_sources` (the sources holding the entity, "
                                                  "'|'-separated in union order) and `_differs` "
                                                  "(the fields, '|'-separated, whose non-empty "
                                                  "values differ between the entity's sources, "
                                                  "each source's latest row of the key: compared "
                                                  "exactly in the merged type, so text differing "
                                                  "in case or spaces differs; null and empty text "
                                                  "are no value and differ from nothing).")
    enrich: list[EnrichSpec] = Field(default_factory=list)
    group_by: list[str] | None = Field(
        default=None, description="Reduce the merged rows to one per group (with `aggregate`).")
    aggregate: dict[str, AggregateSpec] = Field(default_factory=dict)
    sql: str | None = Field(
        default=None, description="A final DuckDB SELECT over `merged` and the sources by name, "
                                  "for what the rest cannot say; parameters as $name.")


class ReportFileSpec(SpecModel):
    """A report file, written atomically (a temporary file renamed over the old one)."""

    file: str = Field(description="Path, relative to the integration file; may use {param}.")
    format: Literal["csv", "json", "jsonl", "parquet", "xlsx"] | None = Field(
        default=None, description="Default: from the file's extension.")
    sheet: str = Field(default="report", description="The XLSX sheet's name.")


class AggregationDestinationSpec(SpecModel):
    """A system the merged data set is written to (e.g. roll-up fields on Accounts)."""

    system: str
    object: str
    operation: Operation = Operation.UPSERT
    key: str
    transform: TransformSpec = Field(default_factory=TransformSpec)


class StreamSourceSpec(SpecModel):
    """Messages of one queue (RabbitMQ) or subject (NATS JetStream) to aggregate."""

    system: str
    object: str = Field(description="The RabbitMQ queue, or the NATS subject.")
    transform: TransformSpec = Field(default_factory=TransformSpec)


class FlushSpec(SpecModel):
    every_seconds: float = Field(default=5.0, gt=0)
    every_messages: int = Field(default=1000, ge=1)


class StreamSpec(SpecModel):
    """Keep aggregates up to date from messages: counted once each, across restarts."""

    sources: list[StreamSourceSpec] = Field(min_length=1)
    group_by: list[str] = Field(min_length=1)
    aggregate: dict[str, AggregateSpec] = Field(min_length=1)
    flush: FlushSpec = Field(default_factory=FlushSpec)


class ScheduleSpec(SpecModel):
    """When `patchbay serve` runs an aggregation by itself: every so often, or at set times."""

    every_seconds: float | None = Field(
        default=None, gt=0,
        description="This often, in periods counted from the epoch (so that every process "
                    "serving it has the same due times); the period under way is due at start.")
    daily_at: list[str] | None = Field(
        default=None, description='Times of day, UTC, as "HH:MM" (e.g. ["02:00"]).')
    cron: str | None = Field(default=None, description='A UTC cron expression, e.g. "0 2 * * 1-5".')

    @model_validator(mode="after")
    def _one(self) -> ScheduleSpec:
        if sum(v is not None for v in (self.every_seconds, self.daily_at, self.cron)) != 1:
            raise ValueError("a schedule is one of every_seconds, daily_at or cron")
        if self.cron is not None:
            Cron.parse(self.cron)
        for time in self.daily_at or []:
            hours, _, minutes = time.partition(":")
            if not (hours.isdigit() and minutes.isdigit() and len(minutes) == 2
                    and int(hours) < 24 and int(minutes) < 60):
                raise ValueError(f'daily_at takes times as "HH:MM", not {time!r}')
        return self


class AggregationOptions(SpecModel):
    timeout_seconds: float = Field(default=60.0, gt=0, description="Per source, unless it says.")
    batch_size: int = Field(default=2000, ge=1, le=1_000_000)


class AggregationSpec(IntegrationSpec):
    """Many systems merged into one data set: a report, a destination, an API answer
    (`GET /aggregations/<name>`); or, with `stream`, aggregates kept up to date from messages."""

    pattern: Literal["aggregation"]
    sources: list[AggregationSourceSpec] = Field(default_factory=list)
    merge: MergeSpec | None = None
    stream: StreamSpec | None = None
    reports: list[ReportFileSpec] = Field(default_factory=list)
    destinations: list[AggregationDestinationSpec] = Field(default_factory=list)
    schedule: ScheduleSpec | None = Field(
        default=None, description="Run by itself under `patchbay serve` (sources with merge).")
    options: AggregationOptions = Field(default_factory=AggregationOptions)

    @model_validator(mode="after")
    def _consistent(self) -> AggregationSpec:
        if (self.stream is None) == (self.merge is None):
            raise ValueError("an aggregation has either sources with merge, or stream")
        if self.stream is not None and self.schedule is not None:
            raise ValueError("a stream aggregation runs continuously: it takes no schedule")
        if self.merge is not None:
            names = [s.name for s in self.sources]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"source names must differ; used twice: {', '.join(twice)}")
            named = [*self.merge.union, *(e.source for e in self.merge.enrich),
                     *(self.merge.precedence.order or [])]
            unknown = [n for n in named if n not in names]
            if unknown:
                raise ValueError(f"merge names source '{unknown[0]}', which is not one of the "
                                 f"sources{suggest(unknown[0], names)}")
            if self.merge.group_by is None and self.merge.aggregate:
                raise ValueError("merge.aggregate needs merge.group_by")
        return self

    def scopes(self) -> list[tuple[Scope, tuple[Any, ...]]]:
        return [(s.scope, ("sources", i, "scope")) for i, s in enumerate(self.sources) if s.scope]

    def transforms(self) -> list[tuple[TransformSpec, tuple[Any, ...]]]:
        found: list[tuple[TransformSpec, tuple[Any, ...]]] = [
            (s.transform, ("sources", i, "transform")) for i, s in enumerate(self.sources)]
        found += [(d.transform, ("destinations", i, "transform"))
                  for i, d in enumerate(self.destinations)]
        if self.stream is not None:
            found += [(s.transform, ("stream", "sources", i, "transform"))
                      for i, s in enumerate(self.stream.sources)]
        return found

    def objects_written(self) -> set[tuple[str, str]]:
        return {(d.system, d.object) for d in self.destinations}

    def systems_used(self) -> list[tuple[str, tuple[Any, ...]]]:
        used: list[tuple[str, tuple[Any, ...]]] = [
            (s.system, ("sources", i, "system")) for i, s in enumerate(self.sources)]
        used += [(d.system, ("destinations", i, "system")) for i, d in enumerate(self.destinations)]
        if self.stream is not None:
            used += [(s.system, ("stream", "sources", i, "system"))
                     for i, s in enumerate(self.stream.sources)]
        return [*used, *super().systems_used()]

