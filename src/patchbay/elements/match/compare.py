"""Comparing one field over many pairs at once: the level each pair agrees at.

A pair's level is the first of the field's levels it meets (0 the closest); one past the
last means it meets none ("else"), and NULL_LEVEL that a value is missing on one side: no
evidence either way. The pairs come as two aligned row-index arrays; each level is one
array operation (rapidfuzz's element-wise `cpdist` for the string measures, numpy for the
rest) over the pairs no earlier level took.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from patchbay.elements.match.normalise import Column, Strings
from patchbay.extras import driver_needed
from patchbay.spec.match import LevelSpec, MatchFieldSpec

NULL_LEVEL = -1
"""The level of a pair with the field missing on either side."""

Indices = npt.NDArray[np.int64]
Levels = npt.NDArray[np.int8]

_DEFAULT_LEVELS: dict[str, list[dict[str, float] | str]] = {
    "name": ["normalised", {"damerau": 1}, {"jaro_winkler": 0.9}, {"jaro_winkler": 0.8}],
    "text": ["normalised", {"damerau": 1}, {"jaro_winkler": 0.9}, {"token_set": 0.8}],
    "email": ["normalised", {"damerau": 1}, {"jaro_winkler": 0.9}],
    "phone": ["normalised", {"damerau": 1}],
    "date": ["normalised", "swapped_day_month", {"damerau": 1}, {"days": 31}],
    "number": ["normalised", {"damerau": 1}],
    "postcode": ["normalised", {"damerau": 1}],
    "exact": ["normalised"],
}


def levels_of(spec: MatchFieldSpec) -> list[LevelSpec]:
    """The field's levels: its own, or its kind's."""
    if spec.levels is not None:
        return list(spec.levels)
    return [LevelSpec.model_validate(level) for level in _DEFAULT_LEVELS[spec.kind]]


def compare(left: Column, right: Column, li: Indices, ri: Indices, levels: list[LevelSpec]) -> Levels:
    """The level of each pair (`left` row li[k] with `right` row ri[k])."""
    result = np.full(len(li), NULL_LEVEL, dtype=np.int8)
    open_ = np.flatnonzero(left.present[li] & right.present[ri])
    result[open_] = len(levels)
    for number, level in enumerate(levels):
        if len(open_) == 0:
            break
        lk, rk = li[open_], ri[open_]
        met = _meets(level, left, right, lk, rk)
        result[open_[met]] = number
        open_ = open_[~met]
    return result


def _meets(level: LevelSpec, left: Column, right: Column, li: Indices, ri: Indices) -> npt.NDArray[np.bool_]:
    method, threshold = level.method, level.threshold or 0.0
    if method == "exact":
        return np.asarray(left.raw[li] == right.raw[ri], dtype=bool)
    a, b = left.norm[li], right.norm[ri]
    if method == "normalised":
        return np.asarray(a == b, dtype=bool)
    if method in ("within", "days"):
        if left.number is None or right.number is None:
            return np.zeros(len(li), dtype=bool)
        with np.errstate(invalid="ignore"):
            return np.asarray(np.abs(left.number[li] - right.number[ri]) <= threshold, dtype=bool)
    if method == "swapped_day_month":
        return _swapped(a, b)
    if len(a) == 0:
        return np.zeros(0, dtype=bool)
    if method == "jaro_winkler":
        return _element_wise(method, a, b, threshold) >= threshold
    if method == "token_set":
        return _element_wise(method, a, b, threshold * 100) >= threshold * 100
    return _element_wise(method, a, b, threshold) <= threshold  # levenshtein, damerau: edits


def _element_wise(method: str, a: Strings, b: Strings, cutoff: float) -> npt.NDArray[np.float64]:
    """The measure of each pair (a[k], b[k]); past `cutoff` the measure stops early (and
    reads as failing it), which makes most pairs cheap."""
    with driver_needed("a fuzzy comparison"):
        from rapidfuzz import fuzz, process
        from rapidfuzz.distance import DamerauLevenshtein, JaroWinkler, Levenshtein
    scorer: Any = {
        "jaro_winkler": JaroWinkler.normalized_similarity, "token_set": fuzz.token_set_ratio,
        "levenshtein": Levenshtein.distance, "damerau": DamerauLevenshtein.distance}[method]
    limit = int(cutoff) if method in ("levenshtein", "damerau") else cutoff
    return np.asarray(process.cpdist(list(a), list(b), scorer=scorer, score_cutoff=limit, workers=-1),
                      dtype=np.float64)


def _swapped(a: Strings, b: Strings) -> npt.NDArray[np.bool_]:
    """YYYYMMDD dates whose day and month are each other's month and day (and differ)."""
    left, right = pa.array(a, pa.string()), pa.array(b, pa.string())

    def part(text: pa.Array, start: int) -> pa.Array:
        return pc.utf8_slice_codeunits(text, start, start + (4 if start == 0 else 2))

    same = pc.and_(pc.and_(pc.equal(part(left, 0), part(right, 0)), pc.equal(part(left, 4), part(right, 6))),
                   pc.and_(pc.equal(part(left, 6), part(right, 4)), pc.not_equal(left, right)))
    return np.asarray(pc.fill_null(same, False).to_numpy(zero_copy_only=False), dtype=bool)
