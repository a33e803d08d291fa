"""Columnar reads through ADBC (Arrow's C drivers for PostgreSQL and SQLite): which columns
give the row path's values as Arrow, and how a batch is converted or refused."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa

POSTGRES_BATCH_BYTES = 16 << 20
"""The Arrow data of a batch of a PostgreSQL read (ADBC's default): per-batch costs vanish,
and memory stays flat on any table."""


_Convert = Callable[[pa.Array], pa.Array]


class Refused(Exception):
    """A batch holds a value the row path gives otherwise: it reads on from the last page given."""


@dataclass(frozen=True)
class ArrowQuery:
    """A columnar read's query for an ADBC driver, and how its batches become the row path's."""

    connect: Callable[[], Any]
    sql: str
    parameters: tuple[Any, ...] | None
    options: dict[str, str]
    converts: list[_Convert]
    """One per column selected, in order."""
    checked: bool
    """Whether a last column, past those, is null but in rows that must take the row path."""

    def convert(self, batch: pa.RecordBatch, names: list[str]) -> pa.RecordBatch:
        if self.checked and batch.column(len(self.converts)).null_count < batch.num_rows:
            raise Refused
        return pa.RecordBatch.from_arrays(
            [convert(batch.column(i)) for i, convert in enumerate(self.converts)], names=names)


_PYTHON_DAYS = (-719_162, 2_932_896)
"""The dates (days since 1970) a Python date holds, 0001-01-01 to 9999-12-31: the row path's
driver refuses others, and ADBC gives PostgreSQL's infinite dates as dates far outside."""


_PYTHON_MICROS = (-62_135_596_800_000_000, 253_402_300_799_999_999)
"""The same for instants, in microseconds since 1970."""


_DAY_MICROS = 86_400_000_000


def _converter(target: pa.DataType, *sources: pa.DataType, bounds: tuple[int, int] | None = None,
               utf8: bool = False) -> _Convert:
    """The conversion of a column of one of the `sources` types (an extension type's storage
    type counts) to `target`, refusing values that would not convert exactly, out of
    `bounds` (as integers), or not UTF-8. A column of nulls only is the target type's, whatever
    its own: SQLite's driver types such a column in a first batch as integers."""

    def convert(values: pa.Array) -> pa.Array:
        if values.null_count == len(values):
            return pa.nulls(len(values), target)
        if isinstance(values, pa.ExtensionArray):
            values = values.storage
        if values.type not in sources:
            raise Refused
        if bounds is not None:
            extent = pc.min_max(values.view(pa.int32() if pa.types.is_date32(values.type) else pa.int64()))
            if extent["min"].as_py() < bounds[0] or extent["max"].as_py() > bounds[1]:
                raise Refused
        if utf8:
            values.validate(full=True)
        return values.cast(target)

    return convert


def postgres_column(kind: sa.types.TypeEngine[Any], zone: str) -> tuple[bool, _Convert] | None:
    """How ADBC gives a PostgreSQL column's values as the row path gives them: whether it is
    selected as text, and the conversion of what comes; None if it cannot."""
    if isinstance(kind, sa.Boolean):
        return False, _converter(pa.bool_(), pa.bool_())
    if isinstance(kind, sa.Integer):
        return False, _converter(pa.int64(), pa.int16(), pa.int32(), pa.int64())
    if isinstance(kind, sa.Float):
        # As text, which is what the row path reads: PostgreSQL writes some reals with other
        # digits than the shortest Arrow would give, and any float rounded when
        # extra_float_digits is below 1.
        return True, _converter(pa.float64(), pa.string())
    if isinstance(kind, sa.Numeric):
        # ADBC gives numeric as text, of every digit of the scale: exact in the declared
        # precision (where the row path infers one from the values it sees), NaN and
        # infinity refused.
        precision, scale = kind.precision, kind.scale
        if precision is None or scale is None or not 0 <= scale <= precision <= 38:
            return None
        return False, _converter(pa.decimal128(precision, scale), pa.string())
    if isinstance(kind, sa.DateTime):
        if kind.timezone:
            # A day inside Python's range, so that no zone's offset leaves it.
            return False, _converter(pa.timestamp("us", zone), pa.timestamp("us", "UTC"), bounds=(
                _PYTHON_MICROS[0] + _DAY_MICROS, _PYTHON_MICROS[1] - _DAY_MICROS))
        return False, _converter(pa.timestamp("us"), pa.timestamp("us"), bounds=_PYTHON_MICROS)
    if isinstance(kind, sa.Date):
        return False, _converter(pa.date32(), pa.date32(), bounds=_PYTHON_DAYS)
    if isinstance(kind, sa.String):
        return False, _converter(pa.string(), pa.string())
    return None


def sqlite_column(kind: sa.types.TypeEngine[Any]) -> _Convert | None:
    """The conversion of a SQLite column's values as ADBC gives them to the row path's types,
    for the declared types whose affinity stores one class of value (and null): INTEGER,
    REAL, TEXT. Another class in the column (text in an INTEGER column) fails the driver
    after its first batch, and in it makes the batch's type another; a blob in a TEXT
    column is flagged by the query (see `ArrowQuery.checked`). Others (NUMERIC, DATE,
    BOOLEAN, none) take the row path: SQLite stores their values in any class."""
    if isinstance(kind, sa.Integer):
        return _converter(pa.int64(), pa.int64())
    if isinstance(kind, sa.Float):
        return _converter(pa.float64(), pa.float64())
    if isinstance(kind, sa.String):
        # sqlite3 fails on text that is not UTF-8; the driver copies its bytes.
        return _converter(pa.string(), pa.string(), utf8=True)
    return None


def arrow_pages(batches: Iterator[pa.RecordBatch], size: int) -> Iterator[pa.Table]:
    """The batches' rows in tables of `size` rows, the last one shorter: the row path's pages,
    so that a read it takes over goes on with the pages it would have given."""
    held: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        held.append(batch)
        count += batch.num_rows
        if count >= size:
            rows = pa.Table.from_batches(held)
            start = 0
            while count - start >= size:
                yield rows.slice(start, size)
                start += size
            held = rows.slice(start).to_batches()
            count -= start
    if count:
        yield pa.Table.from_batches(held)


def rows_to_table(rows: Sequence[tuple[Any, ...]], names: Sequence[str],
                  struct: pa.StructType | None) -> tuple[pa.Table | None, pa.StructType | None]:
    """A table from driver rows, and the row type to reuse for the next page.

    Without a known row type, each column's type is inferred; a column whose values
    are of mixed Python types (as SQLite allows) makes the page unfit for the lane.
    """
    try:
        if struct is None:
            arrays = [pa.array(column) for column in zip(*rows, strict=True)]
            struct = pa.struct([pa.field(n, a.type) for n, a in zip(names, arrays, strict=True)])
            if any(pa.types.is_null(f.type) for f in struct):
                return pa.Table.from_arrays(arrays, names=list(names)), None
            return pa.Table.from_arrays(arrays, names=list(names)), struct
        rows_array = pa.array(rows, type=struct)
        return pa.Table.from_arrays(rows_array.flatten(), names=list(names)), struct
    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
        return None, None
