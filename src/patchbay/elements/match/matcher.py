"""The match element's entry point: `Matcher(spec).fit(left, right)` and then its pairs.

    fit       prepare each field (normalise), block (candidate pairs), compare every
              candidate on every field, count u on random pairs, estimate m by EM
    pairs     every candidate pair with its weight, probability, levels and decision
              (link, review, none) under a strictness; `links` only the links
    explain   one pair field by field: values, the level agreed, its weight
    rematch   the pairs of a few changed records with a whole record set, under the
              fitted model (no refit): `records` prepares a set, `fitted_records` gives
              the two the model was fitted on, to keep up to date (records.Records)

Every step works on whole arrays; nothing loops over pairs in Python.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, cast

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from patchbay.elements.match.assign import one_to_one
from patchbay.elements.match.blocking import Blocked, block_keyed, join, keys_of, meets, rule_fields
from patchbay.elements.match.compare import NULL_LEVEL, Indices, compare, levels_of
from patchbay.elements.match.fellegi_sunter import Floats, Gammas, Model, estimate_u, train
from patchbay.elements.match.normalise import Column, Strings, column
from patchbay.elements.match.records import Records
from patchbay.errors import SpecError
from patchbay.spec.match import LevelSpec, MatchSpec, threshold_weight

Decision = Literal["link", "review", "none"]
_NO_TIER = -1


@dataclass(frozen=True)
class FieldEvidence:
    """What one field says about a pair."""

    field: str
    left: str | None
    right: str | None
    level: str
    weight: float


@dataclass(frozen=True)
class Explanation:
    """Why a pair is (or is not) a link."""

    left_id: Any
    right_id: Any
    candidate: bool
    """Whether blocking made it a candidate (one that is not is never linked)."""
    fields: list[FieldEvidence]
    prior_weight: float
    match_weight: float
    probability: float
    tier: int | None
    """The deterministic tier that links it outright (0 the first), if any."""
    decision: Decision

    def to_json(self) -> dict[str, Any]:
        return {"left_id": self.left_id, "right_id": self.right_id, "candidate": self.candidate,
                "prior_weight": self.prior_weight, "match_weight": self.match_weight,
                "probability": self.probability, "tier": self.tier, "decision": self.decision,
                "fields": [vars(evidence) for evidence in self.fields]}


class Matcher:
    """Finds the pairs of records that are the same, as `spec` defines it."""

    def __init__(self, spec: MatchSpec) -> None:
        self.spec = spec
        self.fields = list(spec.fields)
        self.levels: dict[str, list[LevelSpec]] = {f: levels_of(spec.fields[f]) for f in self.fields}
        self._fitted: _Fitted | None = None
        self._scoring: _Scoring | None = None

    # -- fitting ------------------------------------------------------------------------------

    def fit(self, left: Any, right: Any = None) -> Matcher:
        """Block, compare and estimate the model. `right` None matches `left` with itself
        (finding duplicates inside one record set). Tables are Arrow tables or pandas frames
        with the spec's id column and fields."""
        left_table = _table(left, self.spec, "left")
        right_table = None if right is None else _table(right, self.spec, "right")
        left_columns = self._columns(left_table)
        right_columns = left_columns if right_table is None else self._columns(right_table)
        left_keys = keys_of(self.spec.blocking, left_columns)
        right_keys = left_keys if right_table is None else keys_of(self.spec.blocking, right_columns)
        blocked = block_keyed(self.spec.blocking, left_keys, None if right_table is None else right_keys)
        gammas = self._compare(left_columns, right_columns, blocked.left, blocked.right)
        sizes = [len(self.levels[f]) + 1 for f in self.fields]
        sample = self._sample(left_columns, right_columns, dedup=right_table is None)
        u = estimate_u(sample, sizes)
        sessions = [(meets(rule, left_columns, right_columns, blocked.left, blocked.right),
                     [self.fields.index(f) for f in rule_fields(rule)]) for rule in self.spec.blocking]
        model = train(gammas, sizes, u, sessions, prior=self.spec.scoring.prior,
                      iterations=self.spec.scoring.iterations)
        if self.spec.scoring.prior is None and blocked.possible:
            # EM estimates the share of *candidate* pairs that match; the fields that made
            # them candidates are weighed again, so that prior would count them twice (and
            # on a small data set, where most candidates match, outweigh fields that
            # disagree). The prior of any two records is that share scaled to all pairs.
            matches = model.prior * len(blocked.left)
            model = replace(model, prior=float(np.clip(matches / blocked.possible, 1e-12, 0.5)))
        common = {f: _common(left_columns[f], None if right_table is None else right_columns[f])
                  for f in self.spec.term_frequency}
        frequencies = {f: _share_of(left_columns[f].norm, table) for f, table in common.items()}
        self._scoring = _Scoring(model, common)
        self._fitted = _Fitted(
            left=left_table, right=right_table if right_table is not None else left_table,
            left_columns=left_columns, right_columns=right_columns, left_keys=left_keys,
            right_keys=right_keys, dedup=right_table is None, blocked=blocked, gammas=gammas,
            model=model, common=common, frequencies=frequencies,
            weights=self._weigh(gammas, model, {f: v[blocked.left] for f, v in frequencies.items()}),
            tiers=self._tiers(gammas))
        return self

    def _columns(self, table: pa.Table) -> dict[str, Column]:
        return {f: column(table.column(f), self.spec.fields[f]) for f in self.fields}

    def _compare(self, left: Mapping[str, Column], right: Mapping[str, Column], li: Indices,
                 ri: Indices) -> Gammas:
        gammas = np.empty((len(li), len(self.fields)), dtype=np.int8)
        for number, f in enumerate(self.fields):
            gammas[:, number] = compare(left[f], right[f], li, ri, self.levels[f])
        return gammas

    def _sample(self, left: Mapping[str, Column], right: Mapping[str, Column], *, dedup: bool) -> Gammas:
        """The levels of random pairs (u's evidence)."""
        rng = np.random.default_rng(self.spec.scoring.seed)
        n_left, n_right = len(left[self.fields[0]].norm), len(right[self.fields[0]].norm)
        size = min(self.spec.scoring.sample, n_left * n_right)
        li = rng.integers(0, n_left, size=size)
        ri = rng.integers(0, n_right, size=size)
        if dedup:
            keep = li != ri
            li, ri = li[keep], ri[keep]
        return self._compare(left, right, li, ri)

    def _weigh(self, gammas: Gammas, model: Model, frequencies: Mapping[str, Floats]) -> Floats:
        """Each pair's match weight: the prior's log-odds and each field's weight, the
        term-frequency fields' close agreement weighed by how common the value is
        (`frequencies`: per field, the share of the pair's left value, pair by pair)."""
        weights = self._field_weights(gammas, model, frequencies)
        return np.asarray(model.prior_weight + weights.sum(axis=1), dtype=np.float64)

    def _field_weights(self, gammas: Gammas, model: Model, frequencies: Mapping[str, Floats]) -> Floats:
        """Pairs x fields: each field's weight for each pair."""
        per_level = model.weights()
        weights = np.empty(gammas.shape, dtype=np.float64)
        for number, f in enumerate(self.fields):
            weights[:, number] = per_level[number][gammas[:, number]]
            if f in frequencies:
                weights[:, number] = self._term_weights(number, f, gammas[:, number], frequencies[f],
                                                        weights[:, number], model)
        return weights

    def _term_weights(self, number: int, field: str, levels: Gammas, frequency: Floats, weights: Floats,
                      model: Model) -> Floats:
        """A close agreement (an exact or normalised level) on a common value is less
        evidence than on a rare one: its weight is log2(m / the value's frequency)."""
        agreeing = np.isin(levels, self._close(field)) & (frequency > 0)
        adjusted = weights.copy()
        m = model.m[number][levels[agreeing]]
        adjusted[agreeing] = np.log2(m / frequency[agreeing])
        return adjusted

    def _close(self, field: str) -> list[int]:
        """The field's levels that are agreement on the value itself (exact, normalised)."""
        return [k for k, level in enumerate(self.levels[field]) if level.method in ("exact", "normalised")]

    def _tiers(self, gammas: Gammas) -> Indices:
        """The first deterministic tier each pair meets (-1: none)."""
        tiers = np.full(len(gammas), _NO_TIER, dtype=np.int64)
        for number in reversed(range(len(self.spec.scoring.deterministic))):
            meets = np.ones(len(gammas), dtype=bool)
            for f in self.spec.scoring.deterministic[number]:
                meets &= np.isin(gammas[:, self.fields.index(f)], self._close(f))
            tiers[meets] = number
        return tiers

    @property
    def _state(self) -> _Fitted:
        if self._fitted is None:
            raise RuntimeError("fit the matcher first: Matcher(spec).fit(left, right)"
                               if self._scoring is None else
                               "the matcher let go of its full match (release): fit it again")
        return self._fitted

    def release(self) -> None:
        """Let go of the full match: its candidate pairs (their row numbers, levels, weights
        and tiers) and the record tables, keeping what `records` and `rematch` use (the
        model, the values' frequencies). A correlation keeps its matcher between full
        matches to re-match changes, with the two fitted record sets (`fitted_records`,
        taken before): the pairs' arrays cost it about 190 MB at 100,000 records a side."""
        self._fitted = None

    # -- answers ------------------------------------------------------------------------------

    @property
    def model(self) -> Model:
        return self._state.model

    @property
    def blocked(self) -> Blocked:
        return self._state.blocked

    def _thresholds(self, weights: Floats, tiers: Indices, strictness: str | float | None
                    ) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.bool_]]:
        """Which pairs reach the link threshold, and which the review band (links included),
        before one-to-one."""
        link_at = threshold_weight(self.spec.strictness if strictness is None else strictness)
        tiered = tiers != _NO_TIER
        if self.spec.scoring.probabilistic:
            links = tiered | (weights >= link_at)
            candidates = tiered | (weights >= link_at - self.spec.review) if self.spec.review else links
        else:  # the tiers alone decide; the weights only explain
            links, candidates = tiered, tiered
        return links, candidates

    def decisions(self, strictness: str | float | None = None) -> npt.NDArray[np.str_]:
        """link / review / none for each candidate pair (in blocking order)."""
        fitted = self._state
        weights, tiers = fitted.weights, fitted.tiers
        tiered = tiers != _NO_TIER
        links, candidates = self._thresholds(weights, tiers, strictness)
        if self.spec.one_to_one and not fitted.dedup:
            chosen = np.flatnonzero(candidates)
            # tiers first, then by weight; ties by row numbers, so the order is total
            order = np.lexsort((fitted.blocked.right[chosen], fitted.blocked.left[chosen],
                                -weights[chosen], np.where(tiered[chosen], tiers[chosen], len(tiers))))
            rank = np.empty(len(chosen), dtype=np.int64)
            rank[order] = np.arange(len(chosen))
            kept = one_to_one(fitted.blocked.left[chosen], fitted.blocked.right[chosen], rank)
            candidates = np.zeros(len(weights), dtype=bool)
            candidates[chosen[kept]] = True
            links &= candidates
        return np.where(links, "link", np.where(candidates, "review", "none"))

    def pairs(self, strictness: str | float | None = None) -> pa.Table:
        """Every candidate pair, best first: left_id, right_id, match_weight, probability,
        each field's level (`<field>_level`, its name; `<field>_gamma`, its number, -1
        missing), tier (the deterministic tier that linked it) and decision."""
        fitted = self._state
        li, ri = fitted.blocked.left, fitted.blocked.right
        columns: dict[str, pa.Array] = {
            "left_id": fitted.left.column(self.spec.id).take(pa.array(li)),
            "right_id": fitted.right.column(self.spec.id).take(pa.array(ri)),
            "match_weight": pa.array(fitted.weights),
            "probability": pa.array(_probability(fitted.weights)),
        }
        for number, f in enumerate(self.fields):
            labels = pa.array([level.label for level in self.levels[f]] + ["else", "null"], pa.string())
            gamma = fitted.gammas[:, number]
            at = np.where(gamma == NULL_LEVEL, len(labels) - 1, gamma)
            columns[f"{f}_level"] = labels.take(pa.array(at))
            columns[f"{f}_gamma"] = pa.array(gamma)
        columns["tier"] = pa.array(fitted.tiers, mask=fitted.tiers == _NO_TIER)
        columns["decision"] = pa.array(self.decisions(strictness), pa.string())
        table = pa.table(columns)
        return table.take(pc.sort_indices(table, [("match_weight", "descending"), ("left_id", "ascending"),
                                                   ("right_id", "ascending")]))

    def links(self, strictness: str | float | None = None) -> pa.Table:
        """The linked pairs (left_id, right_id, match_weight, probability), best first."""
        table = self.pairs(strictness)
        table = table.filter(pc.equal(table.column("decision"), "link"))
        return table.select(["left_id", "right_id", "match_weight", "probability"])

    # -- keeping up with changes --------------------------------------------------------------

    def records(self, table: Any, first_row: int = 0) -> Records:
        """A record set (an Arrow table or pandas frame with the id column and fields)
        prepared as the matcher compares it, its blocking keys' rows numbered from
        `first_row` (Records.update: the length of the set it goes into)."""
        table = table if isinstance(table, pa.Table) else pa.Table.from_pandas(table, preserve_index=False)
        columns = self._columns(table)
        return Records.of((str(i) for i in table.column(self.spec.id).to_pylist()), columns,
                          keys_of(self.spec.blocking, columns, first_row))

    def fitted_records(self) -> tuple[Records, Records]:
        """The two record sets the model was fitted on (prepared once, by the fit)."""
        fitted = self._state
        left = Records.of((str(i) for i in fitted.left.column(self.spec.id).to_pylist()),
                          fitted.left_columns, fitted.left_keys)
        if fitted.dedup:
            return left, left
        return left, Records.of((str(i) for i in fitted.right.column(self.spec.id).to_pylist()),
                                fitted.right_columns, fitted.right_keys)

    def rematch(self, left: Records, right: Records, *, left_keys: pa.Table | None = None,
                right_keys: pa.Table | None = None, strictness: str | float | None = None) -> pa.Table:
        """The candidate pairs between the live records of two sets, scored under the fitted
        model without fitting it again: left_id, right_id, match_weight, probability, tier
        and decision (link, review, none) before one-to-one, which the caller applies against
        the links it holds. `left_keys` / `right_keys` narrow a side to some of its rows (the
        blocking keys of the records that changed), so a re-match joins those with the
        other side only."""
        if self._scoring is None:
            raise RuntimeError("fit the matcher first: Matcher(spec).fit(left, right)")
        scoring = self._scoring
        li, ri = join(self.spec.blocking, left.keys if left_keys is None else left_keys,
                      right.keys if right_keys is None else right_keys)
        live = left.alive[li] & right.alive[ri]
        li, ri = li[live], ri[live]
        gammas = self._compare(left.columns, right.columns, li, ri)
        frequencies = {f: _share_of(left.columns[f].norm[li], table) for f, table in scoring.common.items()}
        weights = self._weigh(gammas, scoring.model, frequencies)
        tiers = self._tiers(gammas)
        links, candidates = self._thresholds(weights, tiers, strictness)
        return pa.table({
            "left_id": pa.array(left.ids[li], pa.string()),
            "right_id": pa.array(right.ids[ri], pa.string()),
            "match_weight": pa.array(weights, pa.float64()),
            "probability": pa.array(_probability(weights)),
            "tier": pa.array(tiers, mask=tiers == _NO_TIER),
            "decision": pa.array(np.where(links, "link", np.where(candidates, "review", "none")),
                                 pa.string()),
        })

    def explain(self, left_id: Any, right_id: Any, strictness: str | float | None = None) -> Explanation:
        """Field by field, why the pair is or is not a link."""
        fitted = self._state
        left_row = _row_of(fitted.left, self.spec.id, left_id, "left")
        right_row = _row_of(fitted.right, self.spec.id, right_id, "right")
        if fitted.dedup and left_row > right_row:  # a pair of one record set is kept in row order
            left_row, right_row, left_id, right_id = right_row, left_row, right_id, left_id
        li, ri = np.array([left_row]), np.array([right_row])
        gammas = self._compare(fitted.left_columns, fitted.right_columns, li, ri)
        field_weights = self._field_weights(gammas, fitted.model,
                                            {f: v[li] for f, v in fitted.frequencies.items()})[0]
        weight = fitted.model.prior_weight + float(field_weights.sum())
        tier = int(self._tiers(gammas)[0])
        at = np.flatnonzero((fitted.blocked.left == left_row) & (fitted.blocked.right == right_row))
        decision = cast(Decision, str(self.decisions(strictness)[at[0]])) if len(at) else "none"
        evidence = []
        for number, f in enumerate(self.fields):
            gamma = int(gammas[0, number])
            labels = [level.label for level in self.levels[f]] + ["else"]
            evidence.append(FieldEvidence(
                field=f, left=fitted.left_columns[f].raw[left_row],
                right=fitted.right_columns[f].raw[right_row],
                level="null" if gamma == NULL_LEVEL else labels[gamma], weight=float(field_weights[number])))
        return Explanation(left_id=left_id, right_id=right_id, candidate=bool(len(at)), fields=evidence,
                           prior_weight=fitted.model.prior_weight, match_weight=weight,
                           probability=float(_probability(np.array([weight]))[0]),
                           tier=None if tier == _NO_TIER else tier, decision=decision)


@dataclass(frozen=True)
class _Scoring:
    """What scoring a pair needs of a fit, its full match let go (Matcher.release)."""

    model: Model
    common: dict[str, pa.Table]
    """Per term-frequency field: each value and its share of all records (`_common`)."""


@dataclass(frozen=True)
class _Fitted:
    left: pa.Table
    right: pa.Table
    left_columns: dict[str, Column]
    right_columns: dict[str, Column]
    left_keys: pa.Table
    right_keys: pa.Table
    dedup: bool
    blocked: Blocked
    gammas: Gammas
    model: Model
    common: dict[str, pa.Table]
    """Per term-frequency field: each value and its share of all records (`_common`)."""
    frequencies: dict[str, Floats]
    """Per term-frequency field: the share of each left record's value."""
    weights: Floats
    tiers: Indices


def _probability(weights: Floats) -> Floats:
    return np.asarray(1.0 / (1.0 + np.exp2(-np.clip(weights, -1000, 1000))), dtype=np.float64)


def _table(data: Any, spec: MatchSpec, side: str) -> pa.Table:
    table = data if isinstance(data, pa.Table) else pa.Table.from_pandas(data, preserve_index=False)
    missing = [name for name in [spec.id, *spec.fields] if name not in table.column_names]
    if missing:
        raise SpecError(f"the {side} records have no column {', '.join(map(repr, missing))} "
                        f"(columns: {', '.join(table.column_names)})")
    if table.num_rows == 0:
        raise SpecError(f"the {side} records are empty: there is nothing to match")
    return table


def _row_of(table: pa.Table, id_column: str, value: Any, side: str) -> int:
    found = pc.index(table.column(id_column), value).as_py()
    if found < 0:
        raise SpecError(f"no {side} record has {id_column} {value!r}")
    return int(found)


def _common(left: Column, right: Column | None) -> pa.Table:
    """How common each normalised value is among all records of the fit: `values`, `shares`."""
    values = left.norm if right is None else np.concatenate([left.norm, right.norm])
    text = pa.array(values, pa.string())
    counts = pc.value_counts(text.drop_null())
    return pa.table({"values": counts.field("values"),
                     "shares": pa.array(np.asarray(counts.field("counts"), dtype=np.float64) / len(text))})


def _share_of(norm: Strings, common: pa.Table) -> Floats:
    """The share of each value among the fit's records (`_common`); 0 where it is missing
    or was not seen."""
    positions = pc.index_in(pa.array(norm, pa.string()), value_set=common.column("values").combine_chunks())
    shares = pc.fill_null(common.column("shares").combine_chunks().take(positions), 0.0)
    return np.asarray(shares.to_numpy(zero_copy_only=False), dtype=np.float64)
