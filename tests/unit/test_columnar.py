"""Arrow helpers of the columnar lane: casts that leave the record lane its cases, digests
that depend on values only, not on how Arrow happens to hold them."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pyarrow as pa
import pytest

from patchbay.elements import columnar


@pytest.mark.parametrize("values", [["1", " 2"], ["1", "2 "], ["1", ""], ["\t3"], ["3\n"], ["\v3"], ["3\r"]])
def test_text_with_surrounding_spaces_or_empty_is_left_to_the_record_lane(values: list[str]) -> None:
    for target in (pa.int64(), pa.float64(), pa.date32(), pa.decimal128(10, 2)):
        assert columnar.cast(pa.chunked_array([pa.array(values)]), target) is None


def test_hexadecimal_text_is_no_integer_in_either_lane() -> None:
    assert columnar.cast(pa.chunked_array([pa.array(["12", "0x10"])]), pa.int64()) is None
    assert columnar.cast(pa.chunked_array([pa.array(["12", "0X10"])]), pa.int64()) is None


def test_clean_text_casts_and_nulls_stay_null() -> None:
    column = pa.chunked_array([pa.array(["1", None, "30"])])
    cast = columnar.cast(column, pa.int64())
    assert cast is not None and cast.to_pylist() == [1, None, 30]
    everything_null = columnar.cast(pa.chunked_array([pa.array([None, None], pa.string())]), pa.int64())
    assert everything_null is not None and everything_null.to_pylist() == [None, None]
    empty = columnar.cast(pa.chunked_array([pa.array([], pa.string())]), pa.int64())
    assert empty is not None and len(empty) == 0


@pytest.mark.parametrize("array", [
    pa.array([1, None, 3]),
    pa.array(["a", None, "ccc", ""]),
    pa.array([1.5, None, -0.0]),
    pa.array([dt.date(2020, 1, 1), None], pa.date32()),
    pa.array([Decimal("1.25"), None], pa.decimal128(5, 2)),
    pa.array([dt.datetime(2020, 1, 1, 8, 30)], pa.timestamp("us")),
    pa.array([True, None, False]),
])
def test_a_digest_depends_on_the_values_not_their_layout(array: pa.Array) -> None:
    whole = columnar.digest(b"keys", array)
    assert columnar.digest(b"keys", pa.chunked_array([array[:1], array[1:]])) == whole
    padded = pa.concat_arrays([array, array]).slice(len(array), len(array))
    assert columnar.digest(b"keys", padded) == whole
    assert columnar.digest(b"other keys", array) != whole
