"""Blocking: the pairs worth comparing, as the union of equality joins in DuckDB.

Each rule is a list of keys (a field's normalised value, or sound / initial / prefix /
year of it); a pair meeting any rule is a candidate, once. A missing key meets nothing.
Comparing every record with every other is what blocking avoids: the share of all
possible pairs kept is part of the answer, so a rule that keeps too much shows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from patchbay.elements.match.compare import Indices
from patchbay.elements.match.normalise import Column, sounds
from patchbay.extras import driver_needed
from patchbay.spec.match import parse_blocking_key

ROW = "__pb_row"
"""The row number column of a blocking key table."""


@dataclass(frozen=True)
class Blocked:
    """The candidate pairs, as row numbers of the left and right record sets (sorted by
    left, then right), and how many pairs there were to choose from."""

    left: Indices
    right: Indices
    possible: int

    @property
    def share(self) -> float:
        """The share of possible pairs kept."""
        return len(self.left) / self.possible if self.possible else 0.0


def block(rules: list[list[str]], left: Mapping[str, Column], right: Mapping[str, Column] | None) -> Blocked:
    """The pairs meeting any rule; `right` None is one record set matched with itself (each
    pair once, left row before right row)."""
    left_keys = keys_of(rules, left)
    return block_keyed(rules, left_keys, None if right is None else keys_of(rules, right))


def block_keyed(rules: list[list[str]], left: pa.Table, right: pa.Table | None) -> Blocked:
    """`block`, from each record set's blocking keys (`keys_of`)."""
    li, ri = join(rules, left, left if right is None else right, dedup=right is None)
    n_left = left.num_rows
    possible = n_left * (n_left - 1) // 2 if right is None else n_left * right.num_rows
    return Blocked(left=li, right=ri, possible=possible)


def join(rules: list[list[str]], left: pa.Table, right: pa.Table, *, dedup: bool = False
         ) -> tuple[Indices, Indices]:
    """The row numbers of the pairs of `left` and `right` (blocking key tables) meeting any
    rule, sorted by left then right: one DuckDB query, a union of equality joins. A re-match
    joins a few changed records' keys with a whole side's this way."""
    with driver_needed("a match's blocking"):
        import duckdb
    joins = []
    for number, rule in enumerate(rules):
        on = " AND ".join(f'l."k{number}_{i}" = r."k{number}_{i}"' for i in range(len(rule)))
        if dedup:
            on += f" AND l.{ROW} < r.{ROW}"
        joins.append(f"SELECT l.{ROW} AS l, r.{ROW} AS r FROM left_keys l JOIN right_keys r ON {on}")
    with duckdb.connect(config={"enable_external_access": False}) as con:
        con.register("left_keys", left)
        con.register("right_keys", right)
        pairs = con.sql(" UNION ".join(joins) + " ORDER BY l, r").to_arrow_table()
    return _indices(pairs.column("l")), _indices(pairs.column("r"))


def _indices(column: pa.ChunkedArray) -> Indices:
    return np.asarray(column.to_numpy(), dtype=np.int64)


def keys_of(rules: list[list[str]], columns: Mapping[str, Column], first_row: int = 0) -> pa.Table:
    """One row per record: its row number (from `first_row`) and every rule's keys
    (`k<rule>_<key>`)."""
    rows = len(next(iter(columns.values())).norm)
    keys: dict[str, pa.Array] = {ROW: pa.array(np.arange(first_row, first_row + rows, dtype=np.int64))}
    for number, rule in enumerate(rules):
        for place, expression in enumerate(rule):
            keys[f"k{number}_{place}"] = key_values(expression, columns)
    return pa.table(keys)


def rule_fields(rule: list[str]) -> set[str]:
    """The fields a rule's keys are made of."""
    return {parse_blocking_key(expression)[1] for expression in rule}


def meets(rule: list[str], left: Mapping[str, Column], right: Mapping[str, Column], li: Indices,
          ri: Indices) -> npt.NDArray[np.bool_]:
    """Which pairs meet `rule` (every key present and equal on both sides)."""
    met = np.ones(len(li), dtype=bool)
    for expression in rule:
        a = pa.array(key_values(expression, left)).take(pa.array(li))
        b = pa.array(key_values(expression, right)).take(pa.array(ri))
        met &= np.asarray(pc.fill_null(pc.equal(a, b), False).to_numpy(zero_copy_only=False), dtype=bool)
    return met


def key_values(expression: str, columns: Mapping[str, Column]) -> pa.Array:
    """The blocking key `expression` of every record."""
    function, field, size = parse_blocking_key(expression)
    norm = columns[field].norm
    if function == "sound":
        return pa.array(sounds(norm), pa.string())
    text = pa.array(norm, pa.string())
    if function is None:
        return text
    length = {"initial": 1, "year": 4}.get(function, size or 0)
    return pc.utf8_slice_codeunits(text, 0, length)
