"""Synthetic person records for the match element's tests: two record sets sharing some
people, with typos, missing values and namesakes at known rates."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa

FIRST = ["anna", "ben", "clara", "david", "emma", "felix", "grace", "henry", "isla", "jack", "karen",
         "liam", "maria", "noah", "olivia", "peter", "quinn", "rosa", "sam", "tara", "uma", "victor",
         "wendy", "xavier", "yara", "zoe", "alice", "bruno", "chloe", "diego"]
LAST = ["smith", "jones", "taylor", "brown", "williams", "wilson", "johnson", "davies", "robinson",
        "wright", "thompson", "evans", "walker", "white", "roberts", "green", "hall", "wood", "jackson",
        "clarke", "patel", "khan", "lewis", "james", "phillips", "mason", "mitchell", "rose", "davis",
        "rodriguez", "cox", "alexander", "garden", "campbell", "johnston", "moore", "smyth", "leigh"]


def typo(value: str, rng: np.random.Generator) -> str:
    """One edit: a letter swapped with its neighbour, dropped, or replaced."""
    if len(value) < 3:
        return value
    at = int(rng.integers(0, len(value) - 1))
    edit = int(rng.integers(0, 3))
    if edit == 0:
        return value[:at] + value[at + 1] + value[at] + value[at + 2:]
    if edit == 1:
        return value[:at] + value[at + 1:]
    return value[:at] + "x" + value[at + 1:]


def people(count: int, rng: np.random.Generator) -> dict[str, list[str | None]]:
    born = [dt.date(1940, 1, 1) + dt.timedelta(days=int(d)) for d in rng.integers(0, 60 * 365, count)]
    return {
        "given_name": [FIRST[i] for i in rng.integers(0, len(FIRST), count)],
        "surname": [LAST[i] for i in rng.integers(0, len(LAST), count)],
        "date_of_birth": [d.isoformat() for d in born],
        "postcode": [str(p) for p in rng.integers(2000, 2060, count)],
        "email": [f"p{k}.{int(n)}@example.org" for k, n in enumerate(rng.integers(0, 10**6, count))],
    }


def damaged(records: dict[str, list[str | None]], rate: float, missing: float,
            rng: np.random.Generator) -> dict[str, list[str | None]]:
    """The records with a typo in each value at `rate` and a value missing at `missing`."""
    out: dict[str, list[str | None]] = {}
    for field, values in records.items():
        out[field] = [None if rng.random() < missing else typo(v, rng) if v and rng.random() < rate else v
                      for v in values]
    return out


def two_sets(seed: int = 1, left_count: int = 400, shared: int = 250, right_only: int = 150,
             rate: float = 0.15, missing: float = 0.05) -> tuple[pa.Table, pa.Table, set[tuple[str, str]]]:
    """Left and right record sets (ids `L..`, `R..`, in random order) and the true pairs."""
    rng = np.random.default_rng(seed)
    left = people(left_count, rng)
    right_people = {f: left[f][:shared] + people(right_only, rng)[f] for f in left}
    right = damaged(right_people, rate, missing, rng)
    order = rng.permutation(shared + right_only)
    right = {f: [right[f][k] for k in order] for f in right}
    left_ids = [f"L{k}" for k in range(left_count)]
    right_ids = [f"R{k}" for k in range(shared + right_only)]
    truth = {(f"L{int(order[k])}", right_ids[k]) for k in range(len(order)) if order[k] < shared}
    return pa.table({"id": left_ids, **left}), pa.table({"id": right_ids, **right}), truth


SPEC = {
    "fields": {
        "given_name": {"kind": "name"},
        "surname": {"kind": "name"},
        "date_of_birth": {"kind": "date"},
        "postcode": {"kind": "postcode"},
        "email": {"kind": "email"},
    },
    "blocking": [["postcode"], ["date_of_birth"], ["sound(surname)", "initial(given_name)"]],
    "scoring": {"sample": 20_000},
}
