"""`patchbay match` without the terminal: record sets read from CSV or Parquet files, the
match element fitted once on them, its pairs written out, and the strictness settings
measured side by side (against a labelled sample when there is one).

A CSV file's values are all read as text (an id like `007` stays `007`), a blank cell
being a missing value; a Parquet file's keep their types.
"""

from __future__ import annotations

import csv
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from patchbay.elements.match import Matcher
from patchbay.errors import SpecError
from patchbay.spec.match import PRESETS, MatchSpec, threshold_weight

FORMATS = (".csv", ".parquet")
LINK_COLUMNS = ("rec_id_a", "rec_id_b")
"""The columns of a links-only file and of a labelled sample: one linked pair a row."""
THRESHOLDS = (24.0, 12.0, 3.0, -3.0)
"""The match weights (bits) `profile` measures beside the presets: one stricter than
`strict`, one between `strict` and `balanced`, one either side of `lax`."""

Pair = tuple[str, str]


@dataclass(frozen=True)
class Fitted:
    """A matcher fitted on record sets, and how long blocking, comparing and training took."""

    matcher: Matcher
    left: pa.Table
    right: pa.Table | None
    """None: the duplicates inside `left`."""
    seconds: float

    @property
    def dedup(self) -> bool:
        return self.right is None


@dataclass(frozen=True)
class Setting:
    """What one strictness setting decides; precision and the rest with a labelled sample."""

    strictness: str
    weight: float
    links: int
    review: int
    precision: float | None = None
    recall: float | None = None
    missed: int | None = None
    """Shared records (true pairs) it does not link: false negatives."""
    wrong: int | None = None
    """Links between records that are not the same: false positives."""

    def to_json(self) -> dict[str, Any]:
        return dict(vars(self))


def read_records(path: Path, spec: MatchSpec) -> pa.Table:
    """The record set in `path` (.csv or .parquet), with the id column and every compared
    field of `spec`; SpecError naming the file when it cannot be read or lacks a column."""
    table = _read_table(path)
    missing = [name for name in [spec.id, *spec.fields] if name not in table.column_names]
    if missing:
        what = ", ".join(f"'{name}'" + (" (the id column)" if name == spec.id else "")
                         for name in missing)
        raise SpecError(f"{path}: no column {what}; its columns: {', '.join(table.column_names)}")
    if table.num_rows == 0:
        raise SpecError(f"{path}: no records: there is nothing to match")
    return table


def fit(spec: MatchSpec, left: Path, right: Path | None) -> Fitted:
    """The matcher fitted on the records of `left` and `right` (or of `left` alone: the
    duplicates inside it)."""
    left_table = read_records(left, spec)
    right_table = None if right is None else read_records(right, spec)
    started = time.perf_counter()
    matcher = Matcher(spec).fit(left_table, right_table)
    return Fitted(matcher, left_table, right_table, time.perf_counter() - started)


def strictness_of(text: str | None) -> str | float | None:
    """A --strictness value: a preset's name or a number; None keeps the definition's."""
    if text is None or text in PRESETS:
        return text
    try:
        return float(text)
    except ValueError:
        raise SpecError(f"--strictness {text!r} is not one of {', '.join(PRESETS)} nor a number "
                        "(a probability between 0 and 1, else a match weight in bits)") from None


def output_format(path: Path) -> str:
    """csv or parquet, by the output file's extension."""
    if path.suffix.lower() not in FORMATS:
        raise SpecError(f"--out {path}: the file name ends in .csv or .parquet (the format)")
    return path.suffix.lower().lstrip(".")


def scored_pairs(matcher: Matcher, strictness: str | float | None) -> pa.Table:
    """Every candidate pair, best first: ids, match weight, probability, each field's
    level, the deterministic tier that linked it, decision."""
    table = matcher.pairs(strictness)
    return table.select([name for name in table.column_names if not name.endswith("_gamma")])


def link_pairs(pairs: pa.Table) -> pa.Table:
    """The links of `pairs` as rec_id_a, rec_id_b."""
    links = pairs.filter(pc.equal(pairs.column("decision"), "link"))
    return pa.table(dict(zip(LINK_COLUMNS, (links.column("left_id"), links.column("right_id")),
                             strict=True)))


def write(table: pa.Table, path: Path) -> None:
    """`table` as CSV or Parquet, by `path`'s extension."""
    if output_format(path) == "parquet":
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    else:
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, path)


def summary(fitted: Fitted, pairs: pa.Table, seconds: float) -> dict[str, Any]:
    """The counts `run` reports: candidate pairs, the share of possible pairs blocking kept,
    links, review pairs, and the seconds matching took (blocking, comparing, training,
    scoring, assignment; reading and writing files aside)."""
    decisions = pairs.column("decision")
    return {"candidate_pairs": pairs.num_rows, "possible_pairs": fitted.matcher.blocked.possible,
            "blocking_share": fitted.matcher.blocked.share,
            "links": pc.sum(pc.equal(decisions, "link")).as_py() or 0,
            "review": pc.sum(pc.equal(decisions, "review")).as_py() or 0,
            "seconds": round(seconds, 3)}


def record_id(fitted: Fitted, side: str, value: str) -> Any:
    """An id given on the command line as the id column's type (a Parquet file's may be a
    number)."""
    table = fitted.right if side == "right" and fitted.right is not None else fitted.left
    wanted = table.column(fitted.matcher.spec.id).type
    try:
        return pa.scalar(value).cast(wanted).as_py()
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        raise SpecError(f"{value!r} is not a {side} record id (the ids are {wanted})") from None


def read_labels(path: Path, dedup: bool) -> set[Pair]:
    """The true pairs of a labelled sample (a CSV file with rec_id_a, rec_id_b)."""
    try:
        with path.open(newline="", encoding="utf-8") as file:
            reader = csv.DictReader(file)
            if not set(LINK_COLUMNS) <= set(reader.fieldnames or ()):
                raise SpecError(f"{path}: a labelled sample has the columns "
                                f"{', '.join(LINK_COLUMNS)}; found {', '.join(reader.fieldnames or ())}")
            rows = [(row["rec_id_a"], row["rec_id_b"]) for row in reader]
    except OSError as exc:
        raise SpecError(f"cannot read labels {path}: {exc.strerror or exc}") from exc
    return {_pair(a, b, dedup) for a, b in rows}


def profile(fitted: Fitted, labels: set[Pair] | None, thresholds: tuple[float, ...] = THRESHOLDS
            ) -> list[Setting]:
    """Each preset and threshold, strictest first, with what it decides (one fit: only
    the decisions are derived again)."""
    settings: list[str | float] = [*PRESETS, *thresholds]
    settings.sort(key=threshold_weight, reverse=True)
    matcher, found = fitted.matcher, []
    left, right = (_ids(table, matcher.spec.id, rows) for table, rows in (
        (fitted.left, matcher.blocked.left), (fitted.right or fitted.left, matcher.blocked.right)))
    for strictness in settings:
        decisions = matcher.decisions(strictness)
        linked = {_pair(a, b, fitted.dedup) for a, b in zip(left[decisions == "link"],
                                                           right[decisions == "link"], strict=True)}
        name = strictness if isinstance(strictness, str) else f"{strictness:g}"
        setting = Setting(name, threshold_weight(strictness), len(linked),
                          int((decisions == "review").sum()))
        if labels is not None:
            hits = len(linked & labels)
            setting = replace(setting, precision=hits / len(linked) if linked else 1.0,
                              recall=hits / len(labels) if labels else 1.0,
                              missed=len(labels) - hits, wrong=len(linked) - hits)
        found.append(setting)
    return found


def _ids(table: pa.Table, id_column: str, rows: Any) -> Any:
    """The ids of `rows` as text (labels are text), in an array to select from."""
    ids = pc.cast(table.column(id_column).take(pa.array(rows)), pa.string())
    return np.asarray(ids.to_numpy(zero_copy_only=False), dtype=object)


def _pair(a: str, b: str, dedup: bool) -> Pair:
    """A pair of one record set has no order."""
    return (min(a, b), max(a, b)) if dedup else (a, b)


def _read_table(path: Path) -> pa.Table:
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise SpecError(f"{path}: records are read from .csv or .parquet files")
    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path)
        return _read_csv(path)
    except OSError as exc:
        raise SpecError(f"cannot read records {path}: {exc.strerror or exc}") from exc
    except (pa.ArrowInvalid, UnicodeDecodeError) as exc:
        raise SpecError(f"{path}: not a readable {suffix.lstrip('.')} file: {exc}") from exc


def _read_csv(path: Path) -> pa.Table:
    import pyarrow.csv as pcsv

    with path.open(newline="", encoding="utf-8") as file:
        header = next(csv.reader(file), [])
    as_text = pcsv.ConvertOptions(column_types=dict.fromkeys(header, pa.string()),
                                  strings_can_be_null=True)
    return pcsv.read_csv(path, convert_options=as_text)
