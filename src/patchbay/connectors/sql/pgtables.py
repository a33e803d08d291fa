"""Arrow tables into and out of PostgreSQL in its binary formats, a column at a time.

The columnar lane writes a batch with one COPY and reads it back with one query. Text costs
on both sides: PostgreSQL parses dates, timestamps and numerics from CSV for well over half
again what it spends on their binary forms, and the read-back's text of them had to be
parsed again by Arrow. Here:

- `copy_rows` renders a table as the data of `COPY ... FROM STDIN (FORMAT binary)`. Each
  column becomes a numpy array of big-endian values (or Arrow's own text bytes), and Arrow
  joins the parts row by row; no Python object is made per value.
- `ReadBack` builds the read-back query, one aggregate per column, and decodes its one row.

Both take only what they carry exactly; anything else (a type, a value PostgreSQL would
refuse or store as something else) gives None, and the caller uses the text formats, whose
errors and values are the ones the record lane sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from psycopg.abc import Buffer
from psycopg.adapt import Loader
from psycopg.pq import Format

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
"""The binary COPY header: the signature, no flags, no header extension."""
TRAILER = b"\xff\xff"

_EPOCH_DAYS = 10_957
"""PostgreSQL counts dates and timestamps from 2000-01-01; Arrow from 1970-01-01."""
_EPOCH_MICROS = _EPOCH_DAYS * 86_400_000_000
# What PostgreSQL accepts, from its epoch (IS_VALID_DATE, IS_VALID_TIMESTAMP). Outside, it
# refuses the value, or reads it as an infinity: such a batch takes the text format.
_DATES = (-2_451_545, 2_147_483_494 - 2_451_545)
_TIMESTAMPS = (-211_813_488_000_000_000, 9_223_371_331_200_000_000)
_INTS = {"int8": (np.dtype(">i8"), -(2**63), 2**63 - 1), "int4": (np.dtype(">i4"), -(2**31), 2**31 - 1),
         "int2": (np.dtype(">i2"), -(2**15), 2**15 - 1)}
_NUMERIC_NEGATIVE = 0x4000


# -- writing: COPY FROM STDIN (FORMAT binary) ---------------------------------------------------


class _Rows:
    """Rows of a COPY, built as a sequence of parts each holding some bytes of every row:
    runs of fixed-width bytes (field lengths, numbers) gathered into one numpy array per
    run, and variable-width values (text). Arrow joins the parts row by row."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._run: list[np.ndarray[Any, Any]] = []
        self._parts: list[pa.Array] = []

    def fixed(self, values: np.ndarray[Any, Any]) -> None:
        """Bytes of one width per row: (count,) of a big-endian type, or (count, width) uint8."""
        self._run.append(np.ascontiguousarray(values).view(np.uint8).reshape(self.count, -1))

    def field(self, values: np.ndarray[Any, Any], valid: np.ndarray[Any, Any] | None) -> None:
        """A fixed-width field: its length word, then its value (nothing for a null)."""
        width = values.shape[1]
        if valid is None:
            self.fixed(np.full(self.count, width, ">i4"))
            self._run.append(values)
            return
        self.fixed(np.where(valid, width, -1).astype(">i4"))
        offsets = np.zeros(self.count + 1, np.int64)
        np.cumsum(np.where(valid, width, 0), out=offsets[1:])
        self.varying(pa.Array.from_buffers(pa.large_binary(), self.count, [
            None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(values[valid]))]))

    def varying(self, values: pa.Array) -> None:
        """Bytes of any length per row, as a large_binary array without nulls."""
        self._close_run()
        self._parts.append(values)

    def _close_run(self) -> None:
        if not self._run:
            return
        block = np.hstack(self._run) if len(self._run) > 1 else np.ascontiguousarray(self._run[0])
        width = block.shape[1]
        offsets = np.arange(0, (self.count + 1) * width, width, dtype=np.int64)
        self._parts.append(pa.Array.from_buffers(pa.large_binary(), self.count, [
            None, pa.py_buffer(offsets), pa.py_buffer(block)]))
        self._run = []

    def joined(self) -> pa.Buffer:
        self._close_run()
        # Joined with an empty separator per row, an array made from buffers: pa.scalar (as
        # pa.array) imports pandas where it is installed, a quarter of a second.
        nothing = pa.Array.from_buffers(pa.large_binary(), self.count, [
            None, pa.py_buffer(np.zeros(self.count + 1, np.int64)), pa.py_buffer(b"")])
        rows = self._parts[0] if len(self._parts) == 1 else \
            pc.binary_join_element_wise(*self._parts, nothing)
        offsets = np.frombuffer(rows.buffers()[1], np.int64)
        start, end = int(offsets[rows.offset]), int(offsets[rows.offset + len(rows)])
        return rows.buffers()[2][start:end]


def copy_rows(table: pa.Table, types: Sequence[str | None]) -> list[Any] | None:
    """The data of a binary COPY of `table` into columns of `types` (psycopg's names of
    PostgreSQL types: int8, text, numeric, ...), as buffers to send one after the other;
    None when a column's type or values need the text format."""
    count = table.num_rows
    if count == 0:
        return [SIGNATURE, TRAILER]
    rows = _Rows(count)
    rows.fixed(np.full(count, table.num_columns, ">i2"))
    for column, kind in zip(table.columns, types, strict=True):
        if not _encode(rows, column.combine_chunks(), kind):
            return None
    return [SIGNATURE, rows.joined(), TRAILER]


def _encode(rows: _Rows, column: pa.Array, kind: str | None) -> bool:
    arrow = column.type
    if kind in ("text", "varchar") and (pa.types.is_string(arrow) or pa.types.is_large_string(arrow)):
        lengths = pc.binary_length(column)
        if column.null_count:
            lengths = pc.fill_null(lengths, -1)
            column = pc.fill_null(column, "")
        rows.fixed(lengths.to_numpy().astype(">i4"))
        rows.varying(column.cast(pa.large_binary()))
        return True
    if kind is None:
        return False
    if column.null_count == len(column):
        rows.fixed(np.full(len(column), -1, ">i4"))
        return True
    values = _values(_filled(column), kind)
    if values is None:
        return False
    valid = column.is_valid().to_numpy(zero_copy_only=False) if column.null_count else None
    rows.field(np.ascontiguousarray(values).view(np.uint8).reshape(len(column), -1), valid)
    return True


def _values(column: pa.Array, kind: str) -> np.ndarray[Any, Any] | None:
    """The column's values in PostgreSQL's binary form of `kind`, one row each; None when
    the Arrow type is not one that form holds exactly, or a value is out of its range."""
    arrow = column.type
    if kind in _INTS and pa.types.is_int64(arrow):
        dtype, low, high = _INTS[kind]
        numbers = column.to_numpy()
        return numbers.astype(dtype) if _within(numbers, low, high + 1) else None
    if kind == "float8" and pa.types.is_float64(arrow):
        doubles: np.ndarray[Any, Any] = column.to_numpy()
        return doubles.astype(">f8")
    if kind == "bool" and pa.types.is_boolean(arrow):
        flags: np.ndarray[Any, Any] = column.to_numpy(zero_copy_only=False)
        return flags.astype(np.uint8)
    if kind == "date" and pa.types.is_date32(arrow):
        days = column.view(pa.int32()).to_numpy().astype(np.int64) - _EPOCH_DAYS
        return days.astype(">i4") if _within(days, *_DATES) else None
    if kind == "timestamp" and arrow == pa.timestamp("us"):
        micros: np.ndarray[Any, Any] = column.view(pa.int64()).to_numpy()
        low, high = _TIMESTAMPS
        # Compared before the shift, which could overflow.
        if not _within(micros, low + _EPOCH_MICROS, high + _EPOCH_MICROS):
            return None
        return (micros - _EPOCH_MICROS).astype(">i8")
    if kind == "numeric" and pa.types.is_decimal128(arrow) and arrow.precision <= 18 and arrow.scale >= 0:
        return _numeric(column, arrow.scale)
    return None


def _filled(column: pa.Array) -> pa.Array:
    """The column with a zero of its type under each null: what lies under a null is
    undefined, and every slot is converted (and range-checked) at once."""
    if not column.null_count:
        return column
    arrow = column.type
    if pa.types.is_boolean(arrow):
        zero = pa.scalar(False)
    elif pa.types.is_decimal(arrow):
        zero = pa.scalar(Decimal(0), arrow)
    elif pa.types.is_date32(arrow):
        zero = pa.scalar(0, pa.int32()).cast(arrow)
    else:
        zero = pa.scalar(0, pa.int64()).cast(arrow)
    return pc.fill_null(column, zero)


def _within(values: np.ndarray[Any, Any], low: int, end: int) -> bool:
    """Whether every value is in [low, end)."""
    return bool(values.size == 0 or (values.min() >= low and values.max() < end))


def _numeric(column: pa.Array, scale: int) -> np.ndarray[Any, Any] | None:
    """PostgreSQL's binary numeric of each value of a decimal128 column whose unscaled values
    fit in 64 bits: ndigits, weight, sign, dscale, then base-10000 digits, all int16. Every
    value gets as many digits as the largest needs; PostgreSQL drops the zero ones."""
    pairs = np.frombuffer(column.buffers()[1], np.int64)[column.offset * 2:(column.offset + len(column)) * 2]
    unscaled, high = pairs[0::2], pairs[1::2]
    if not np.array_equal(high, unscaled >> 63):
        return None  # wider than 64 bits
    magnitude = np.abs(unscaled).astype(np.uint64)
    whole, fraction = np.divmod(magnitude, np.uint64(10**scale))
    largest = int(whole.max()) if len(whole) else 0
    whole_groups = -(-len(str(largest)) // 4) if largest else 0
    groups = [(whole // np.uint64(10 ** (4 * j))) % np.uint64(10_000)
              for j in range(whole_groups - 1, -1, -1)]
    for j in range(1, -(-scale // 4) + 1):
        shift = scale - 4 * j
        groups.append((fraction // np.uint64(10**shift)) % np.uint64(10_000) if shift >= 0
                      else (fraction % np.uint64(10 ** (4 + shift))) * np.uint64(10**-shift))
    out = np.empty((len(column), 4 + len(groups)), ">i2")
    out[:, 0] = len(groups)
    out[:, 1] = whole_groups - 1
    out[:, 2] = np.where(unscaled < 0, _NUMERIC_NEGATIVE, 0)
    out[:, 3] = scale
    for index, group in enumerate(groups):
        out[:, 4 + index] = group
    return out


# -- reading back: one row, one aggregate per column ---------------------------------------------


class RawLoader(Loader):
    """The bytes of a binary result value as they are: the read-back decodes them itself."""

    format = Format.BINARY

    def load(self, data: Buffer) -> bytes:
        return bytes(data)


@dataclass(frozen=True, slots=True)
class Column:
    """What the read-back needs of a destination column."""

    name: str
    """Quoted."""
    kind: str | None
    """psycopg's name of its type (int8, timestamp, ...), if a plain one."""
    nullable: bool


_SENDS: dict[str, tuple[str, str, Any]] = {
    # kind: (send form of a value, the zero standing in for null, the Arrow type it fills)
    "int8": ("int8send({})", "0", pa.types.is_int64),
    "int4": ("int8send({}::int8)", "0", pa.types.is_int64),
    "int2": ("int8send({}::int8)", "0", pa.types.is_int64),
    "float8": ("float8send({})", "0", pa.types.is_float64),
    "date": ("date_send({})", "'2000-01-01'::date", pa.types.is_date32),
    "timestamp": ("timestamp_send({})", "'2000-01-01'::timestamp", lambda t: t == pa.timestamp("us")),
    "bool": ("boolsend({})", "false", pa.types.is_boolean),
}


class ReadBack:
    """The read-back of a batch as one row: `aggregates` over the batch's rows, fetched in
    binary with RawLoader for bytea and text; `table` decodes the row. Integers, doubles,
    dates, timestamps and booleans travel as their send forms (nulls as a zero, and a mask),
    which costs the database less than their text and the client nothing to parse. Text,
    numerics and the rest travel as text joined by \\x1f, null as \\x01, which costs the
    database least: a value holding either character makes `table` return None (or
    differ), and the caller then compares record by record."""

    def __init__(self, schema: pa.Schema, columns: Sequence[Column], encoding: str) -> None:
        """`columns`: the destination's, one per field of `schema`; `encoding`: the
        connection's (Python's name), that of the text."""
        self.schema = schema
        self.encoding = encoding
        self._kinds: list[tuple[str | None, int]] = []
        self.aggregates: list[str] = []
        for field, column in zip(schema, columns, strict=True):
            send = _SENDS.get(column.kind or "")
            if send is None or not send[2](field.type):
                self._kinds.append((None, 1))
                self.aggregates.append(f"string_agg(coalesce({column.name}::text, E'\\x01'), E'\\x1f')")
                continue
            form, zero, _ = send
            value = form.format(f"coalesce({column.name}, {zero})") if column.nullable else \
                form.format(column.name)
            self.aggregates.append(f"string_agg({value}, ''::bytea)")
            if column.nullable:
                self.aggregates.append(
                    f"string_agg(CASE WHEN {column.name} IS NULL THEN '0' ELSE '1' END, '')")
            self._kinds.append((column.kind, 1 + column.nullable))

    def table(self, count: int, values: Sequence[Any]) -> pa.Table | None:
        """The batch read back, from the row's values (after the count); None when a value
        cannot be told apart or has no Arrow value of the field's type."""
        arrays = []
        at = 0
        for field, (kind, width) in zip(self.schema, self._kinds, strict=True):
            if kind is None:
                array = _separated(field.type, count, values[at], self.encoding)
            else:
                array = _sent(kind, field.type, count, values[at], values[at + 1] if width > 1 else None)
            if array is None:
                return None
            arrays.append(array)
            at += width
        return pa.Table.from_arrays(arrays, schema=self.schema)


def _sent(kind: str, arrow: pa.DataType, count: int, data: bytes, marks: bytes | None) -> pa.Array | None:
    valid = None
    if marks is not None:
        flags = np.frombuffer(marks, np.uint8)
        if len(flags) != count:
            return None
        valid = flags == ord("1")
    if kind == "bool":
        values: np.ndarray[Any, Any] = np.frombuffer(data, np.uint8).astype(bool)
    elif kind == "date":
        days = np.frombuffer(data, ">i4").astype(np.int64)
        if not _within(days, *_DATES):
            return None  # an infinity: no value written is one
        values = (days + _EPOCH_DAYS).astype(np.int32)
    elif kind == "timestamp":
        micros = np.frombuffer(data, ">i8").astype(np.int64)
        if not _within(micros, *_TIMESTAMPS):
            return None
        values = micros + _EPOCH_MICROS
    else:
        values = np.frombuffer(data, ">f8" if kind == "float8" else ">i8").astype(
            np.float64 if kind == "float8" else np.int64)
    if len(values) != count:
        return None
    if kind == "bool":
        values = np.packbits(values, bitorder="little")  # Arrow's booleans are bits
    bitmap = None if valid is None else pa.py_buffer(np.packbits(valid, bitorder="little"))
    return pa.Array.from_buffers(arrow, count, [bitmap, pa.py_buffer(values)],
                                 null_count=-1 if bitmap is not None else 0)


def _separated(arrow: pa.DataType, count: int, data: bytes | None, encoding: str) -> pa.Array | None:
    """A column read back as its values' text, \\x1f between them, \\x01 for null."""
    if data is None:
        return None
    if encoding != "utf-8":
        data = data.decode(encoding).encode("utf-8")
    raw = np.frombuffer(data, np.uint8)
    ends = np.flatnonzero(raw == 0x1F)
    if len(ends) != count - 1:
        return None
    # The separators cut out, each value's offset moves back by those before it.
    width = np.int32 if len(raw) < 2**31 else np.int64
    offsets = np.empty(count + 1, width)
    offsets[0] = 0
    offsets[1:-1] = ends - np.arange(len(ends))
    offsets[-1] = len(raw) - len(ends)
    text = raw[raw != 0x1F] if len(ends) else raw
    lengths = np.diff(offsets)
    nulls = (lengths == 1) & (text[np.minimum(offsets[:-1], len(text) - 1)] == 0x01) if len(text) \
        else np.zeros(count, bool)
    bitmap = pa.py_buffer(np.packbits(~nulls, bitorder="little")) if nulls.any() else None
    column = pa.Array.from_buffers(pa.string() if width is np.int32 else pa.large_string(), count,
                                   [bitmap, pa.py_buffer(offsets), pa.py_buffer(text)],
                                   null_count=-1 if bitmap is not None else 0)
    try:
        column.validate(full=True)
        return column.cast(arrow)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None
