"""The Fellegi-Sunter model, estimated without labels.

For each field and level, m is how often a matching pair agrees at that level and u how
often a non-matching one does; a pair's match weight is the sum over its fields of
log2(m / u) at their levels, plus the prior's log-odds, and a missing value adds nothing.

u is counted on random pairs (nearly all of which are non-matches when the record sets
are large). m is estimated by expectation-maximisation with u held fixed: each round
weighs every pair by its current match probability and counts levels with those weights.

EM runs once per blocking rule, over the pairs that rule selects, with the rule's own
fields left out: among those pairs, non-matches agree on the rule's fields by
construction, not at the rate u says, and would pass for matches; the other fields are
unaffected by the selection. A field's m is the mean over the rules it is not part of.
The prior (the share of candidate pairs that match) is then estimated over all candidate
pairs with m and u fixed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Gammas = npt.NDArray[np.int8]
"""Pairs x fields: the level of each pair on each field (-1: missing)."""
Floats = npt.NDArray[np.float64]
Session = tuple[npt.NDArray[np.bool_], list[int]]
"""One blocking rule in training: the candidate pairs it selects, the fields it is made of."""

_SMOOTHING = 0.5
"""Added to every level's count: a level never seen has a small share, not none (a weight
of infinity would let one field overrule all others)."""
_TOLERANCE = 1e-6


@dataclass(frozen=True)
class Model:
    """m and u per field and level (index = level; the last real level is "else"), and the
    prior match probability of a candidate pair."""

    m: list[Floats]
    u: list[Floats]
    prior: float
    iterations: int

    def weights(self) -> list[Floats]:
        """log2(m / u) per field and level, with one more slot, 0, that level -1 (missing)
        reads."""
        return [np.append(np.log2(m / u), 0.0) for m, u in zip(self.m, self.u, strict=True)]

    @property
    def prior_weight(self) -> float:
        return float(np.log2(self.prior / (1 - self.prior)))


def estimate_u(sample: Gammas, sizes: list[int]) -> list[Floats]:
    """u of each field: its levels' shares among random pairs (missing values left out)."""
    return [_shares(sample[:, f], size, None) for f, size in enumerate(sizes)]


def estimate(gammas: Gammas, sizes: list[int], u: list[Floats], *, prior: float | None,
             expected: float, iterations: int, m: list[Floats] | None = None) -> Model:
    """m (and the prior unless given) by EM over the pairs `gammas`. `sizes` is each
    field's number of levels (else included); `expected` the prior to start from; `m`
    given is held fixed (only the prior is estimated)."""
    fixed = m is not None
    fields = len(sizes)
    m = m if m is not None else [_start_m(size) for size in sizes]
    lam = prior if prior is not None else float(np.clip(expected, 1e-6, 0.5))
    if len(gammas) == 0:  # no pairs: nothing to learn from
        return Model(m=m, u=u, prior=lam, iterations=0)
    log_u = _per_pair(gammas, [np.log(x) for x in u])
    rounds = 0
    while rounds < iterations:
        rounds += 1
        log_m = _per_pair(gammas, [np.log(x) for x in m])
        logit = np.log(lam) - np.log1p(-lam) + log_m - log_u
        p = 1.0 / (1.0 + np.exp(-np.clip(logit, -700, 700)))
        new_m = m if fixed else [_shares(gammas[:, f], sizes[f], p) for f in range(fields)]
        new_lam = prior if prior is not None else float(np.clip(p.mean(), 1e-9, 1 - 1e-9))
        change = max([abs(new_lam - lam)] + [float(np.abs(new - old).max())
                                             for new, old in zip(new_m, m, strict=True)])
        m, lam = new_m, new_lam
        if change < _TOLERANCE:
            break
    return Model(m=m, u=u, prior=lam, iterations=rounds)


def train(gammas: Gammas, sizes: list[int], u: list[Floats], sessions: list[Session], *,
          prior: float | None, iterations: int) -> Model:
    """The model from candidate pairs `gammas`: `sessions` are the blocking rules, each the
    pairs it selects and the fields it is made of."""
    learned: list[list[Floats]] = [[] for _ in sizes]
    rounds = 0
    for rows, blocked in sessions:
        if not rows.any():
            continue
        evidence = gammas[rows]
        evidence[:, blocked] = -1
        session = estimate(evidence, sizes, u, prior=None, expected=0.5, iterations=iterations)
        rounds += session.iterations
        for f in set(range(len(sizes))) - set(blocked):
            learned[f].append(session.m[f])
    if any(not found for found in learned):  # a field in every rule: learnt from all pairs
        everything = estimate(gammas, sizes, u, prior=None, expected=0.5, iterations=iterations)
        learned = [found or [everything.m[f]] for f, found in enumerate(learned)]
    m = [np.asarray(np.mean(found, axis=0), dtype=np.float64) for found in learned]
    model = estimate(gammas, sizes, u, prior=prior, expected=0.5, iterations=iterations, m=m)
    return Model(m=m, u=u, prior=model.prior, iterations=rounds + model.iterations)


def _start_m(size: int) -> Floats:
    """A matching pair mostly agrees closely: the levels' shares fall by half at each step."""
    start = 0.5 ** np.arange(size, dtype=np.float64) * 2
    start[-1] = 0.05
    return np.asarray(start / start.sum(), dtype=np.float64)


def _shares(levels: Gammas, size: int, weights: Floats | None) -> Floats:
    known = levels >= 0
    counts = np.bincount(levels[known], weights=None if weights is None else weights[known], minlength=size)
    smoothed = counts[:size].astype(np.float64) + _SMOOTHING
    return np.asarray(smoothed / smoothed.sum(), dtype=np.float64)


def _per_pair(gammas: Gammas, per_level: list[Floats]) -> Floats:
    """Sum over fields of the value at each pair's level (0 for a missing value)."""
    total = np.zeros(len(gammas), dtype=np.float64)
    for f, values in enumerate(per_level):
        total += np.append(values, 0.0)[gammas[:, f]]
    return total
