"""One-to-one assignment: each record of one side keeps at most one pair.

The result is the greedy one (best pair first; a pair is kept when neither of its records
is taken yet), computed in rounds over whole arrays: every round keeps the pairs that are
the best remaining pair of both their records, and drops the pairs those records are in.
A pair kept so is one the greedy pass keeps too, since no better pair of its records is
left; so the rounds give the greedy answer without a loop over pairs. Because the greedy
pass decides the best pairs first, raising the bar (fewer candidates, the best ones) keeps
a subset of the links: the strictness dial is monotone.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from patchbay.elements.match.compare import Indices


def one_to_one(left: Indices, right: Indices, rank: Indices) -> npt.NDArray[np.bool_]:
    """Which pairs are kept; `rank` orders the pairs, 0 the best, all distinct."""
    kept = np.zeros(len(left), dtype=bool)
    if len(left) == 0:
        return kept
    taken_left = np.zeros(left.max() + 1, dtype=bool)
    taken_right = np.zeros(right.max() + 1, dtype=bool)
    open_ = np.arange(len(left))
    while len(open_):
        best_left = _best(left[open_], rank[open_])
        best_right = _best(right[open_], rank[open_])
        mine = rank[open_]
        chosen = open_[(best_left[left[open_]] == mine) & (best_right[right[open_]] == mine)]
        kept[chosen] = True
        taken_left[left[chosen]] = True
        taken_right[right[chosen]] = True
        open_ = open_[~(taken_left[left[open_]] | taken_right[right[open_]])]
    return kept


def _best(records: Indices, rank: Indices) -> Indices:
    """The best (lowest) rank of each record's pairs, indexed by record."""
    best = np.full(records.max() + 1, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(best, records, rank)
    return best
