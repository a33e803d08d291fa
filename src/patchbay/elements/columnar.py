"""Arrow helpers for the columnar lane of a pipeline.

Pages that arrive as Arrow tables go through transform, conform, write and compare a
column at a time, in Arrow's compiled kernels, instead of a Python loop per value. The
lane takes only what it can do exactly as the record lane would; whenever a batch holds
anything else (a value a cast refuses, a null in a required field, a value too long, a
write the database refuses, a difference in the read-back) the batch is handed to the
record lane, which finds and explains each bad record. So the two lanes always agree, and
the columnar one costs nothing on clean data but speed.
"""

from __future__ import annotations

import hashlib
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from patchbay.model import FieldSchema, FieldType

_NULL = "\x00null"


def arrow_type(field: FieldSchema) -> pa.DataType | None:
    """The Arrow type holding exactly the values of a destination field, or None if the
    columnar lane cannot guarantee that (JSON, decimals of unknown scale, instants)."""
    kind = field.type
    if kind is FieldType.STRING:
        return pa.string()
    if kind is FieldType.INTEGER:
        return pa.int64()
    if kind is FieldType.NUMBER:
        return pa.float64()
    if kind is FieldType.BOOLEAN:
        return pa.bool_()
    if kind is FieldType.DATE:
        return pa.date32()
    if kind is FieldType.DATETIME and not field.timezone:
        return pa.timestamp("us")
    if kind is FieldType.DECIMAL and field.scale is not None:
        return pa.decimal128(field.precision or 38, field.scale)
    return None


def cast(column: pa.ChunkedArray | pa.Array, to: pa.DataType) -> pa.ChunkedArray | None:
    """`column` as `to`, or None when a value would not convert exactly."""
    if column.type == to:
        return column
    if pa.types.is_string(column.type) and not pa.types.is_string(to) and _padded_or_empty(column):
        return None  # surrounding spaces or empty text: the record lane's rules apply
    if pa.types.is_string(column.type) and pa.types.is_integer(to) and any(
            pc.any(pc.match_substring(column, x)).as_py() for x in ("x", "X")):
        return None  # Arrow reads 0x10 as 16, where the record lane refuses it
    if pa.types.is_string(to) and not pa.types.is_string(column.type) \
            and not pa.types.is_integer(column.type):
        return None  # floats and dates render as text differently in Python
    try:
        return pc.cast(column, to, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
        return None


def _padded_or_empty(column: pa.ChunkedArray | pa.Array) -> bool:
    """Whether a text value is empty or starts or ends with whitespace. Trimming and
    comparing lengths costs a fraction of a regular expression; it also counts the vertical
    tab as whitespace, which no cast accepts around a value either."""
    lengths = pc.binary_length(column)
    return bool(pc.min(lengths).as_py() == 0 or pc.sum(lengths).as_py() != pc.sum(
        pc.binary_length(pc.ascii_trim_whitespace(column))).as_py())


def digest(keys: bytes, column: pa.ChunkedArray | pa.Array) -> int:
    """A digest of one column over one batch, tied to the batch's keys.

    Equal columns of one type give equal digests: the null positions are hashed apart,
    and the values with nulls filled in, from their buffers (as text for variable-width
    types), so no slot left undefined under a null enters the hash.
    """
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    hasher = hashlib.blake2b(keys, digest_size=8)
    # Buffers are hashed through views of the bytes wanted, not copies.
    if column.null_count:
        nulls = pc.cast(pc.is_null(column), pa.uint8())
        hasher.update(memoryview(nulls.buffers()[1])[:len(column)])
    kind = column.type
    zero = _zero(kind)
    if zero is not None:
        filled = pc.fill_null(column, zero) if column.null_count else column
        width = kind.bit_width // 8
        data = memoryview(filled.buffers()[1])
        hasher.update(data[filled.offset * width:(filled.offset + len(filled)) * width])
        return int.from_bytes(hasher.digest(), "big")
    text = column if pa.types.is_string(kind) else pc.cast(column, pa.string())
    if text.null_count:
        text = pc.fill_null(text, _NULL)
    count = len(text)
    lengths = memoryview(pc.binary_length(text).buffers()[1])
    offsets = memoryview(text.buffers()[1]).cast("B")
    data = text.buffers()[2]
    first = int.from_bytes(offsets[text.offset * 4:text.offset * 4 + 4], "little")
    last = int.from_bytes(offsets[(text.offset + count) * 4:(text.offset + count) * 4 + 4], "little")
    hasher.update(lengths[:count * 4])
    hasher.update(memoryview(data)[first:last] if data is not None else b"")
    return int.from_bytes(hasher.digest(), "big")


def _zero(kind: pa.DataType) -> pa.Scalar | None:
    """A value of a fixed-width type to put under nulls, or None for other types."""
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return pa.scalar(0, kind)
    if pa.types.is_decimal(kind):
        return pa.scalar(Decimal(0), kind)
    if pa.types.is_date32(kind):
        return pa.scalar(0, pa.int32()).cast(kind)
    if pa.types.is_timestamp(kind):
        return pa.scalar(0, pa.int64()).cast(kind)
    return None


def finish(column: pa.ChunkedArray | pa.Array, trim: bool, default: Any,
           kind: FieldType | None, required: bool) -> pa.ChunkedArray | pa.Array | None:
    """A transform field's steps after its value is taken: trim, default, coerce, require."""
    text = pa.types.is_string(column.type)
    if trim and text:
        column = pc.utf8_trim_whitespace(column)
    if default is not None:
        if text and pc.any(pc.equal(column, "")).as_py():
            return None
        try:
            column = pc.fill_null(column, default)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            return None
    if kind is not None:
        target = arrow_type(FieldSchema("", kind))
        if target is None:
            return None
        converted = cast(column, target)
        if converted is None:
            return None
        column = converted
    if required and (column.null_count or (
            pa.types.is_string(column.type) and pc.any(pc.equal(column, "")).as_py())):
        return None
    return column
