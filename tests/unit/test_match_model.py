"""Fellegi-Sunter estimation without labels, and one-to-one assignment."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from patchbay.elements.match.assign import one_to_one
from patchbay.elements.match.fellegi_sunter import estimate, estimate_u

M = [np.array([0.85, 0.10, 0.05]), np.array([0.70, 0.20, 0.10]), np.array([0.90, 0.10])]
U = [np.array([0.01, 0.04, 0.95]), np.array([0.02, 0.08, 0.90]), np.array([0.10, 0.90])]
SIZES = [3, 3, 2]


def simulated(pairs: int, share: float,
              rng: np.random.Generator) -> tuple[npt.NDArray[np.int8], npt.NDArray[np.bool_]]:
    """Levels of `pairs` pairs, a `share` of them matches, drawn from M and U; 5 % missing."""
    matches = rng.random(pairs) < share
    gammas = np.empty((pairs, len(SIZES)), dtype=np.int8)
    for f, size in enumerate(SIZES):
        gammas[:, f] = np.where(matches, rng.choice(size, pairs, p=M[f]), rng.choice(size, pairs, p=U[f]))
        gammas[rng.random(pairs) < 0.05, f] = -1
    return gammas, matches


def test_em_recovers_the_m_and_u_the_data_was_made_with() -> None:
    rng = np.random.default_rng(7)
    candidates, matches = simulated(60_000, 0.2, rng)
    random_pairs, _ = simulated(100_000, 0.0, rng)
    u = estimate_u(random_pairs, SIZES)
    model = estimate(candidates, SIZES, u, prior=None, expected=0.5, iterations=200)
    for f in range(len(SIZES)):
        np.testing.assert_allclose(model.u[f], U[f], atol=0.005)
        np.testing.assert_allclose(model.m[f], M[f], atol=0.02)
    assert abs(model.prior - matches.mean()) < 0.01
    # a missing value weighs nothing
    assert all(w[-1] == 0.0 for w in model.weights())


def test_a_given_prior_is_kept() -> None:
    rng = np.random.default_rng(8)
    candidates, _ = simulated(20_000, 0.2, rng)
    u = estimate_u(simulated(50_000, 0.0, rng)[0], SIZES)
    assert estimate(candidates, SIZES, u, prior=0.3, expected=0.5, iterations=50).prior == 0.3


def greedy(left: list[int], right: list[int], rank: list[int]) -> set[int]:
    """The plain greedy pass, one pair at a time: what one_to_one must equal."""
    kept, lefts, rights = set(), set(), set()
    for k in sorted(range(len(rank)), key=rank.__getitem__):
        if left[k] not in lefts and right[k] not in rights:
            kept.add(k)
            lefts.add(left[k])
            rights.add(right[k])
    return kept


def test_one_to_one_keeps_each_record_in_its_best_pair() -> None:
    #            a-x  a-y  b-x  b-y  c-y
    left, right = [0, 0, 1, 1, 2], [0, 1, 0, 1, 1]
    rank = [0, 3, 1, 2, 4]
    kept = one_to_one(np.array(left), np.array(right), np.array(rank))
    assert set(np.flatnonzero(kept)) == {0, 3} == greedy(left, right, rank)


def test_one_to_one_is_the_greedy_assignment_on_random_pairs() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        n = 400
        left, right = rng.integers(0, 60, n), rng.integers(0, 60, n)
        rank = rng.permutation(n)
        kept = one_to_one(left, right, rank)
        assert set(np.flatnonzero(kept)) == greedy(left.tolist(), right.tolist(), rank.tolist())
