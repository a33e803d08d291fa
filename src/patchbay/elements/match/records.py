"""A record set as the matcher compares it, kept up to date record by record: what a
re-match joins a changed record with, without reading the other side again.

A record replaced by a newer version, or gone, stays in the arrays as a dead row (`alive`
false) and its new version is appended: an update costs the changed records, not the set.
The next full match builds the set afresh. Held in memory only, like the values a full
match reads: nothing of it is written anywhere.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from patchbay.elements.match.normalise import Column, Strings, text


@dataclass
class Records:
    """Ids, each compared field's prepared column and the blocking keys, row by row."""

    ids: Strings
    columns: dict[str, Column]
    keys: pa.Table
    """The blocking keys (blocking.keys_of), one row per row of the arrays."""
    alive: npt.NDArray[np.bool_]
    rows: dict[str, int]
    """Each live record's row."""

    @classmethod
    def of(cls, ids: Iterable[str], columns: Mapping[str, Column], keys: pa.Table) -> Records:
        array = np.asarray(list(ids), dtype=object)
        return cls(array, dict(columns), keys, np.ones(len(array), dtype=bool),
                   {str(i): row for row, i in enumerate(array)})

    def __len__(self) -> int:
        return len(self.rows)

    def differing(self, table: pa.Table, id_column: str) -> npt.NDArray[np.bool_]:
        """Which records of `table` (the compared fields as given to the matcher) this set
        does not hold as they are there: new ones, and those with a compared value that
        changed. Compared as given (trimmed), before any normalising: that is the costly
        part, and records noticed unchanged are most of what a correlation notices."""
        held = np.array([self.rows.get(str(i), -1) for i in table.column(id_column).to_pylist()],
                        dtype=np.int64)
        differs = held < 0
        known = np.flatnonzero(~differs)
        for name, column in self.columns.items():
            given = np.asarray(text(table.column(name).combine_chunks()).to_numpy(zero_copy_only=False),
                               dtype=object)
            differs[known] |= ~np.asarray(given[known] == column.raw[held[known]], dtype=bool)
        return differs

    def update(self, newer: Records, gone: Iterable[str] = ()) -> None:
        """Take `newer`'s records in place of the versions held (or as new), and forget
        `gone`. `newer.keys` must number its rows from len(self.ids) on (keys_of's
        `first_row`)."""
        replaced = [self.rows.pop(str(i)) for i in [*newer.ids, *gone] if str(i) in self.rows]
        self.alive[replaced] = False
        offset = len(self.ids)
        self.ids = np.concatenate([self.ids, newer.ids])
        self.columns = {name: _joined(column, newer.columns[name])
                        for name, column in self.columns.items()}
        self.keys = pa.concat_tables([self.keys, newer.keys])
        self.alive = np.concatenate([self.alive, np.ones(len(newer.ids), dtype=bool)])
        self.rows.update({str(i): offset + row for row, i in enumerate(newer.ids)})


def _joined(held: Column, newer: Column) -> Column:
    number = None if held.number is None or newer.number is None \
        else np.concatenate([held.number, newer.number])
    return Column(raw=np.concatenate([held.raw, newer.raw]),
                  norm=np.concatenate([held.norm, newer.norm]), number=number)
