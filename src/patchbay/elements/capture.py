"""Results capture: compare what a destination holds with what it should hold.

A Comparison is fed batch by batch with the desired records (the transformed, conformed
source) and the destination's records for the same keys. It keeps, per field, how many
values differ and a checksum of each side (a sum of per-batch digests), plus a sample of differing
records. Its state is plain JSON so a run can checkpoint it and resume it after a crash.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import operator
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from patchbay.compare import normalise
from patchbay.model import KeyValue, Record, given_params

_MASK = (1 << 64) - 1


def _row(columns: Any, record: Record, fields: list[str]) -> tuple[Any, ...]:
    try:
        row: tuple[Any, ...] = columns(record)
    except KeyError:
        row = tuple(record.get(f) for f in fields)
    return row


def _rows(columns: Any, records: Sequence[Record], fields: list[str]) -> list[tuple[Any, ...]]:
    try:
        return list(map(columns, records))
    except KeyError:
        return [_row(columns, r, fields) for r in records]


def _digest(keys: bytes, values: Sequence[Any]) -> int:
    """A digest of one field's values over one batch, tied to the batch's keys so that
    values swapped between records (or batches) change it."""
    hasher = hashlib.blake2b(keys, digest_size=8)
    hasher.update(repr(values).encode("utf-8", "surrogatepass"))
    return int.from_bytes(hasher.digest(), "big")


@dataclass
class FieldTally:
    differing: int = 0
    source_checksum: int = 0
    destination_checksum: int = 0


@dataclass
class Comparison:
    key: str
    fields: list[str]
    sample_size: int = 20
    compared: int = 0
    matching: int = 0
    differing: int = 0
    missing: int = 0
    tallies: dict[str, FieldTally] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    refused: frozenset[str] = frozenset()
    """Keys the destination refused in the last run: absent from it as expected."""
    refused_earlier: int = 0

    def __post_init__(self) -> None:
        for name in self.fields:
            self.tallies.setdefault(name, FieldTally())

    def add(self, desired: Sequence[Record], actual: Mapping[KeyValue, Record]) -> None:
        """Compare one batch of desired records with the destination's records by key."""
        key = self.key
        fields = self.fields
        columns = operator.itemgetter(*fields) if len(fields) > 1 else (lambda r: (r.get(fields[0]),))
        found = [actual.get(r[key]) for r in desired]
        present = [i for i, held in enumerate(found) if held is not None]
        self.compared += len(desired)
        if len(present) < len(desired):
            for index, held in enumerate(found):
                if held is None:
                    if str(desired[index][key]) in self.refused:
                        self.refused_earlier += 1
                        continue
                    self.missing += 1
                    if len(self.samples) < self.sample_size:
                        self.samples.append({"key": plain(desired[index][key]),
                                             "problem": "missing in destination"})
            want_rows = [_row(columns, desired[i], fields) for i in present]
            have_rows = [_row(columns, found[i], fields) for i in present]  # type: ignore[arg-type]
        else:
            want_rows = _rows(columns, desired, fields)
            have_rows = _rows(columns, found, fields)  # type: ignore[arg-type]
        keys = repr([desired[i][key] for i in present]).encode("utf-8", "surrogatepass")
        if want_rows == have_rows:
            self.matching += len(present)
            for tally, column in zip(self.tallies.values(), zip(*want_rows, strict=True), strict=False):
                digest = _digest(keys, column)
                tally.source_checksum = (tally.source_checksum + digest) & _MASK
                tally.destination_checksum = (tally.destination_checksum + digest) & _MASK
            return
        differs = [False] * len(present)
        for name, tally, want, have in zip(self.fields, self.tallies.values(),
                                           zip(*want_rows, strict=True), zip(*have_rows, strict=True),
                                           strict=False):
            if want == have:
                digest = _digest(keys, want)
                tally.source_checksum = (tally.source_checksum + digest) & _MASK
                tally.destination_checksum = (tally.destination_checksum + digest) & _MASK
                continue
            want_n = tuple(normalise(v) for v in want)
            have_n = tuple(normalise(v) for v in have)
            tally.source_checksum = (tally.source_checksum + _digest(keys, want_n)) & _MASK
            tally.destination_checksum = (tally.destination_checksum + _digest(keys, have_n)) & _MASK
            for position, (w, h) in enumerate(zip(want_n, have_n, strict=True)):
                if w != h:
                    tally.differing += 1
                    if not differs[position] and len(self.samples) < self.sample_size:
                        self.samples.append({"key": plain(desired[present[position]][key]),
                                             "field": name, "expected": plain(w), "actual": plain(h)})
                    differs[position] = True
        different = sum(differs)
        self.differing += different
        self.matching += len(present) - different

    def add_table(self, desired: Any, actual: Any) -> bool:
        """Compare a batch held as Arrow tables. False, with nothing counted, when the
        batch is not identical: the caller then compares it record by record, which says
        what differs."""
        import pyarrow.compute as pc

        from patchbay.elements import columnar

        key = self.key
        if actual.num_rows != desired.num_rows:
            return False
        # A batch's keys are unique (as written), so when the destination's come in the same
        # order, as they mostly do (a range read back in the order it was stored, that of the
        # batch), the rows line up as they are.
        if not desired[key].equals(actual[key]):
            order = pc.index_in(desired[key], value_set=actual[key])
            if order.null_count:
                return False
            actual = actual.take(order)
        if any(not desired[f].equals(actual[f]) for f in self.fields):
            return False
        keys = columnar.digest(b"", desired[key]).to_bytes(8, "big")
        self.compared += desired.num_rows
        self.matching += desired.num_rows
        for name in self.fields:
            digest = columnar.digest(keys, desired[name])
            tally = self.tallies[name]
            tally.source_checksum = (tally.source_checksum + digest) & _MASK
            tally.destination_checksum = (tally.destination_checksum + digest) & _MASK
        return True

    @property
    def agrees(self) -> bool:
        """Whether the destination holds every compared record, equal to the source."""
        return self.missing == 0 and self.differing == 0

    def state(self) -> dict[str, Any]:
        return {
            "key": self.key, "fields": self.fields, "sample_size": self.sample_size,
            "compared": self.compared, "matching": self.matching, "differing": self.differing,
            "missing": self.missing, "samples": self.samples,
            "tallies": {n: [t.differing, f"{t.source_checksum:016x}", f"{t.destination_checksum:016x}"]
                        for n, t in self.tallies.items()},
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> Comparison:
        comparison = cls(state["key"], list(state["fields"]), state["sample_size"],
                         state["compared"], state["matching"], state["differing"],
                         state["missing"], {}, list(state["samples"]))
        for name, (differing, source, destination) in state["tallies"].items():
            comparison.tallies[name] = FieldTally(differing, int(source, 16), int(destination, 16))
        return comparison

    @classmethod
    def combined(cls, parts: Sequence[Comparison], key: str, fields: list[str],
                 sample_size: int) -> Comparison:
        """Comparisons of disjoint sets of records (the key ranges of one run) as one: the
        counts add up, and so do the checksums, which are sums of per-batch digests."""
        total = cls(key, list(fields), sample_size)
        for part in parts:
            total.compared += part.compared
            total.matching += part.matching
            total.differing += part.differing
            total.missing += part.missing
            total.refused_earlier += part.refused_earlier
            for name, tally in part.tallies.items():
                mine = total.tallies.setdefault(name, FieldTally())
                mine.differing += tally.differing
                mine.source_checksum = (mine.source_checksum + tally.source_checksum) & _MASK
                mine.destination_checksum = (mine.destination_checksum
                                             + tally.destination_checksum) & _MASK
            total.samples.extend(part.samples[:max(0, sample_size - len(total.samples))])
        return total

    def summary(self) -> dict[str, Any]:
        """The comparison as it appears in a report."""
        return {
            "key": self.key,
            "compared": self.compared,
            "matching": self.matching,
            "differing": self.differing,
            "missing_in_destination": self.missing,
            "refused_by_destination_earlier": self.refused_earlier,
            "fields": {
                name: {"differing": t.differing,
                       "source_checksum": f"{t.source_checksum & _MASK:016x}",
                       "destination_checksum": f"{t.destination_checksum & _MASK:016x}",
                       "match": t.source_checksum == t.destination_checksum}
                for name, t in self.tallies.items()
            },
            "samples": self.samples,
        }




# -- the report ---------------------------------------------------------------------------------

VERDICT_COMPLETE = "complete"
VERDICT_WITH_REJECTS = "complete_with_rejects"
VERDICT_INCOMPLETE = "incomplete"


def build_report(*, integration: Any, run_id: str | None, params: Mapping[str, Any],
                 started_at: dt.datetime | None, counters: Mapping[str, int],
                 comparison: Comparison, source_in_scope: int | None,
                 verify: str, usage: Mapping[str, Mapping[str, int]] | None = None) -> MigrationReport:
    """The run's results compared with the desired state, and its verdict."""
    src, dst = integration.source, integration.destination
    finished = dt.datetime.now(dt.UTC)
    read = counters.get("read", 0)
    written = sum(counters.get(s, 0) for s in ("created", "updated", "unchanged", "deleted"))
    counts = {
        "read": read, "written": written,
        **{s: counters.get(s, 0) for s in
           ("created", "updated", "unchanged", "deleted", "rejected", "skipped", "failed")},
    }
    reasons: list[str] = []
    if counts["failed"]:
        reasons.append(f"{counts['failed']} records failed to write")
    if source_in_scope is not None and source_in_scope != read:
        reasons.append(f"the source holds {source_in_scope} records in scope but {read} were read "
                       "(it changed during the run)")
    if verify == "full":
        if comparison.missing:
            reasons.append(f"{comparison.missing} written records are missing in the destination")
        if comparison.differing:
            reasons.append(f"{comparison.differing} records differ from the source")
    if reasons:
        verdict = VERDICT_INCOMPLETE
    elif counts["rejected"] or comparison.refused_earlier:
        verdict = VERDICT_WITH_REJECTS
    else:
        verdict = VERDICT_COMPLETE
    started = started_at if started_at is None or started_at.tzinfo else started_at.replace(tzinfo=dt.UTC)
    seconds = (finished - started).total_seconds() if started else None
    return MigrationReport(
        integration=integration.name,
        pattern=integration.pattern,
        run=run_id,
        params=plain_record(given_params(params)),
        started_at=started.isoformat() if started else None,
        finished_at=finished.isoformat(),
        seconds=round(seconds, 3) if seconds is not None else None,
        records_per_second=round(read / seconds, 1) if seconds else None,
        source={"system": src.system, "object": src.object, "in_scope": source_in_scope},
        destination={"system": dst.system, "object": dst.object,
                     "operation": str(dst.operation), "key": dst.key},
        counts=counts,
        batches={"columnar": counters.get("batches_columnar", 0),
                 "record": counters.get("batches_record", 0)},
        verification=verify,
        comparison=comparison.summary() if verify == "full" else None,
        verdict=verdict,
        verdict_reasons=reasons,
        usage={system: dict(used) for system, used in (usage or {}).items() if used},
    )


@dataclass(frozen=True)
class MigrationReport:
    """A migration's run (or a verification) compared with the desired state, and its
    verdict; once its files are written, the set-aside counts by code and the files' paths.
    Its JSON is what report.json, `patchbay run --json` and the API show."""

    integration: str
    pattern: str
    run: str | None
    params: dict[str, Any]
    started_at: str | None
    finished_at: str
    seconds: float | None
    records_per_second: float | None
    source: dict[str, Any]
    destination: dict[str, Any]
    counts: dict[str, int]
    batches: dict[str, int]
    verification: str
    comparison: dict[str, Any] | None
    verdict: str
    verdict_reasons: list[str]
    usage: dict[str, dict[str, int]]
    set_aside_by_code: dict[str, int] | None = None
    files: dict[str, str] | None = None
    ranges: dict[str, Any] | None = None
    """A run split into key ranges: how many, each one's bounds and counts, which were
    taken over from a worker that stopped (patterns/partitioned.py)."""

    def to_json(self) -> dict[str, Any]:
        found = {f.name: getattr(self, f.name) for f in fields(self)}
        return {k: v for k, v in found.items()
                if v is not None or k not in ("set_aside_by_code", "files", "ranges")}


@dataclass(frozen=True)
class MigrationInterrupted:
    """A migration's run stopped on request after a batch: resumable."""

    run: str
    counters: dict[str, int]

    def to_json(self) -> dict[str, Any]:
        return {"run": self.run, "status": "interrupted", "counters": self.counters}


def write_report_files(directory: Path, report: MigrationReport,
                       set_aside: Iterable[Mapping[str, Any]]) -> MigrationReport:
    """report.json, and rejects.csv: every record set aside, with its reason and source values.

    Returns the report completed with the set-aside counts by code and the files' paths.
    """
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    rejects_path = directory / "rejects.csv"
    rows = list(set_aside)
    codes: dict[str, int] = {}
    for row in rows:
        codes[row["code"] or row["status"]] = codes.get(row["code"] or row["status"], 0) + 1
    report = replace(report, set_aside_by_code=codes, files={
        "report": str(directory / "report.json"), "rejects": str(rejects_path)})
    source_fields = list(dict.fromkeys(f for row in rows for f in (row.get("source") or {})))
    temporary = rejects_path.with_suffix(".csv.tmp")
    with temporary.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["record_key", "status", "code", "reason", *source_fields])
        for row in rows:
            source = row.get("source") or {}
            writer.writerow([row["record_key"], row["status"], row["code"], row["reason"],
                             *(source.get(f) for f in source_fields)])
    temporary.replace(rejects_path)
    report_path = directory / "report.json"
    temporary = report_path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(report.to_json(), indent=2, default=str), encoding="utf-8")
    temporary.replace(report_path)
    return report


def plain(value: Any) -> Any:
    """A value as JSON shows it."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


def plain_record(record: Mapping[str, Any]) -> dict[str, Any]:
    return {k: plain(v) for k, v in record.items()}
