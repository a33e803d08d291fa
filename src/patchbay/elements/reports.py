"""Report files: an aggregation's result (an Arrow table) as CSV, JSON, JSONL, Parquet or XLSX,
and as the rows or CSV text of an API answer.

Values keep their exact meaning in every text form: decimals are written as their digits
(JSON strings, never floats, so money does not round), dates and times as ISO 8601 text (a
timestamp with a time zone shows its offset in that zone), nulls as empty CSV fields or JSON
null, lists and structs as JSON (as JSON text in a CSV field). Parquet keeps the Arrow types
as they are. XLSX holds typed cells, within what Excel can hold (see `write_report`).

Tables are walked a record batch at a time, so writing a large table takes little memory
beyond the table itself; and a file is written beside its target and renamed over it only
once complete, so a reader never sees half a report and a failed write keeps the old one.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from patchbay.atomic import replacing
from patchbay.errors import SpecError
from patchbay.extras import driver_needed
from patchbay.model import jsonable

if TYPE_CHECKING:
    from openpyxl.worksheet._write_only import WriteOnlyWorksheet

FORMATS = ("csv", "json", "jsonl", "parquet", "xlsx")

XLSX_MAX_ROWS = 1_048_576
"""Rows of an Excel sheet, the header included."""
XLSX_MAX_COLUMNS = 16_384
XLSX_MAX_TEXT = 32_767
"""Characters of an Excel cell; openpyxl would cut longer text silently."""

_BATCH_ROWS = 10_000
_SHEET_NAME_MAX = 31
_SHEET_NAME_FORBIDDEN = frozenset("\\/?*:[]")
# Excel stores 15 significant digits: a longer integer (an id, say) would lose its last digits.
_XLSX_EXACT_INTEGER = 10**15 - 1
_WIDTH_SAMPLE_ROWS = 100
_WIDTH_MIN, _WIDTH_MAX = 8, 60
# One encoder for all: json.dumps with options makes a new one per call. NaN never reaches
# it (nulled before), and must not: it is not JSON.
_json = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode
_CSV_NEEDS_QUOTES = r'^$|[",\r\n]'
# The characters XML 1.0 cannot carry: openpyxl refuses them.
_XLSX_CONTROL = r"[\x00-\x08\x0b\x0c\x0e-\x1f]"


def format_of(path: Path, declared: str | None = None) -> str:
    """The format of a report file: `declared` if given, else the one its extension names."""
    if declared is not None:
        if declared not in FORMATS:
            raise SpecError(f"unknown report format {declared!r}: use one of {', '.join(FORMATS)}",
                            file=str(path))
        return declared
    extension = path.suffix.lower().removeprefix(".")
    if extension not in FORMATS:
        raise SpecError(
            f"cannot tell the format of report file {path.name!r} from its extension: name it "
            f"{', '.join('.' + f for f in FORMATS)}, or declare format: one of {', '.join(FORMATS)}",
            file=str(path))
    return extension


def write_report(table: pa.Table, path: Path, format: str | None = None, sheet: str = "report") -> Path:
    """Write `table` to `path` atomically, in `format` (default: from the extension); returns `path`.

    The folder is created if missing. The file is written beside the target, flushed to
    disk and renamed over it: a failure leaves the previous file as it was and no
    temporary file. What the format cannot hold is refused with a SpecError (a column
    type, text too long for an Excel cell...).

    XLSX: one sheet named `sheet`, a bold header row kept in view, typed cells. Excel has
    only floats and no time zones, so decimals become floats (shown with their scale's
    decimal places), timestamps with a time zone are converted to UTC and written without
    it, and times are kept to the millisecond or so Excel's day fractions hold. Integers of
    more than 15 digits, which Excel would round, are written as text. NaN and infinities,
    which neither JSON nor Excel can hold, are written as null / empty cells.
    """
    kind = format_of(path, format)
    _check_columns(table)
    if kind == "xlsx":
        _check_sheet_name(sheet)
        _check_xlsx_size(table)
    if kind != "parquet":
        _check_types(table, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    with replacing(path) as temporary:
        if kind == "parquet":
            pq.write_table(table, temporary)
        elif kind == "xlsx":
            _write_xlsx(table, temporary, sheet)
        else:
            with temporary.open("w", encoding="utf-8", newline="") as handle:
                _TEXT_WRITERS[kind](table, handle)
    return path


def rows_of(table: pa.Table) -> list[dict[str, Any]]:
    """The table's rows as JSON-ready objects: the values a JSON report holds."""
    _check_columns(table)
    _check_types(table, "json")
    return [row for rows in _json_batches(table) for row in rows]


def json_chunks(table: pa.Table) -> Iterator[str]:
    """The text of a JSON report, a batch of rows at a time (for an answer streamed out).
    The table is checked now, before the first piece is asked for."""
    _check_columns(table)
    _check_types(table, "json")
    return _json_pieces(table)


def csv_text(table: pa.Table) -> str:
    """The table as a CSV report holds it: a header row, then one line per row."""
    return "".join(csv_chunks(table))


def csv_chunks(table: pa.Table) -> Iterator[str]:
    """`csv_text` in pieces: the header row, then a batch of lines at a time. The table is
    checked now, before the first piece is asked for."""
    _check_columns(table)
    _check_types(table, "csv")
    return _csv_pieces(table)


# -- checks -------------------------------------------------------------------------------------


def _check_columns(table: pa.Table) -> None:
    names = table.column_names
    if not names:
        raise SpecError("a report needs at least one column")
    repeated = sorted(n for n, count in Counter(names).items() if count > 1)
    if repeated:
        raise SpecError(f"a report's columns need distinct names; repeated: {', '.join(repeated)}")


def _writable(kind: pa.DataType) -> bool:
    """Whether the text formats and XLSX can show values of this type exactly."""
    if pa.types.is_dictionary(kind):
        return _writable(kind.value_type)
    if pa.types.is_union(kind):
        return False
    if pa.types.is_nested(kind):
        return all(_writable(kind.field(i).type) for i in range(kind.num_fields))
    return any(test(kind) for test in (
        pa.types.is_null, pa.types.is_boolean, pa.types.is_integer, pa.types.is_floating,
        pa.types.is_decimal, pa.types.is_date, pa.types.is_time, pa.types.is_timestamp,
        pa.types.is_string, pa.types.is_large_string, pa.types.is_string_view))


def _check_types(table: pa.Table, kind: str) -> None:
    refused = [f"column {f.name!r} is of type {f.type}" for f in table.schema if not _writable(f.type)]
    if refused:
        raise SpecError(f"{kind.upper()} reports cannot hold these columns (binary data, durations, "
                        "intervals and unions have no text form): write Parquet, or convert them", refused)


def _check_sheet_name(name: str) -> None:
    problems = []
    if not 1 <= len(name) <= _SHEET_NAME_MAX:
        problems.append(f"it must be 1 to {_SHEET_NAME_MAX} characters long")
    if set(name) & _SHEET_NAME_FORBIDDEN or any(c < " " for c in name):
        problems.append("it may not hold control characters nor any of "
                        + " ".join(sorted(_SHEET_NAME_FORBIDDEN)))
    if name.startswith("'") or name.endswith("'"):
        problems.append("it may not begin or end with an apostrophe")
    if name.casefold() == "history":
        problems.append("Excel reserves the name History")
    if problems:
        raise SpecError(f"invalid XLSX sheet name {name!r}", problems)


def _check_xlsx_size(table: pa.Table) -> None:
    if table.num_rows + 1 > XLSX_MAX_ROWS:
        raise SpecError(f"the report has {table.num_rows:,} rows; an XLSX sheet holds at most "
                        f"{XLSX_MAX_ROWS - 1:,} under its header: write Parquet or CSV instead")
    if table.num_columns > XLSX_MAX_COLUMNS:
        raise SpecError(f"the report has {table.num_columns:,} columns; an XLSX sheet holds at most "
                        f"{XLSX_MAX_COLUMNS:,}: write Parquet or CSV instead")


def _check_xlsx_text(texts: pa.Array, where: Callable[[int], str]) -> None:
    """Refuse text a cell cannot hold: openpyxl would cut it short, or write a broken file."""
    for test, problem in (
            (pc.greater(pc.utf8_length(texts), XLSX_MAX_TEXT),
             f"is longer than the {XLSX_MAX_TEXT:,} characters of an Excel cell"),
            (pc.match_substring_regex(texts, _XLSX_CONTROL), "holds a control character XLSX cannot hold")):
        first = pc.index(test, True).as_py()
        if first >= 0:
            raise SpecError(f"{where(first)} {problem}: write CSV or Parquet instead, or clean the text")


# -- text forms of values -----------------------------------------------------------------------


def _texts(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Each value as CSV shows it (null stays null)."""
    kind = column.type
    if pa.types.is_dictionary(kind):
        return _texts(_decoded(column))
    if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_string_view(kind):
        return column
    if pa.types.is_null(kind):
        return pa.nulls(len(column), pa.string())
    if pa.types.is_decimal(kind):
        # Arrow writes small decimals in exponent form (0E-8); the fixed form keeps the scale.
        return pa.array([None if v is None else format(v, "f") for v in column.to_pylist()], pa.string())
    if pa.types.is_timestamp(kind):
        return _iso_timestamps(column)
    if pa.types.is_nested(kind):
        return pa.array([None if v is None else _json(jsonable(v))
                         for v in column.to_pylist(maps_as_pydicts="strict")], pa.string())
    # Booleans as true/false, dates and times as ISO 8601, floats as the shortest text that
    # reads back as the same float.
    return pc.cast(column, pa.string())


def _iso_timestamps(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """ISO 8601 with a 'T', with as many decimals as the unit holds, and the offset in the
    column's time zone when it has one (Arrow writes +0100; ISO 8601's extended form is +01:00)."""
    if column.type.tz is None:
        return pc.strftime(column, "%Y-%m-%dT%H:%M:%S")
    text = pc.strftime(column, "%Y-%m-%dT%H:%M:%S%z")
    return pc.replace_substring_regex(text, r"([+-]\d\d)(\d\d)$", r"\1:\2")


def _decoded(column: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    return pc.cast(column, column.type.value_type)


def _json_values(column: pa.Array) -> list[Any]:
    kind = column.type
    if pa.types.is_dictionary(kind):
        return _json_values(_decoded(column))
    if pa.types.is_boolean(kind) or pa.types.is_integer(kind):
        numbers: list[Any] = column.to_pylist()
        return numbers
    if pa.types.is_floating(kind):
        return _floats(column)
    if pa.types.is_nested(kind):
        return [jsonable(v) for v in column.to_pylist(maps_as_pydicts="strict")]
    texts: list[Any] = _texts(column).to_pylist()
    return texts


def _floats(column: pa.Array) -> list[float | None]:
    """The numbers of a float column; NaN and infinities, which JSON and Excel lack, as None."""
    if pa.types.is_float64(column.type):
        values: list[float | None] = column.to_pylist()
    else:
        # A narrower float's shortest text names the number meant (0.1), where widening it
        # would give its binary neighbour (0.10000000149011612).
        values = [None if t is None else float(t) for t in pc.cast(column, pa.string()).to_pylist()]
    return [v if v is None or math.isfinite(v) else None for v in values]


def _json_batches(table: pa.Table) -> Iterator[list[dict[str, Any]]]:
    names = table.column_names
    for batch in table.to_batches(max_chunksize=_BATCH_ROWS):
        columns = [_json_values(c) for c in batch.columns]
        yield [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]


# -- CSV, JSON, JSONL ---------------------------------------------------------------------------


def _csv_fields(text: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """RFC 4180 fields: quoted when holding a quote, comma or line break; a null is an empty
    field and an empty text a quoted one, so the two stay apart."""
    quoted = pc.binary_join_element_wise('"', pc.replace_substring(text, '"', '""'), '"', "")
    return pc.fill_null(pc.if_else(pc.match_substring_regex(text, _CSV_NEEDS_QUOTES), quoted, text), "")


def _csv_pieces(table: pa.Table) -> Iterator[str]:
    header = _csv_fields(pa.array(table.column_names, pa.string())).to_pylist()
    yield ",".join(header) + "\r\n"
    for batch in table.to_batches(max_chunksize=_BATCH_ROWS):
        if batch.num_rows:
            lines = pc.binary_join_element_wise(*(_csv_fields(_texts(c)) for c in batch.columns), ",")
            yield "\r\n".join(lines.to_pylist()) + "\r\n"


def _write_csv(table: pa.Table, handle: TextIO) -> None:
    for piece in _csv_pieces(table):
        handle.write(piece)


def _json_pieces(table: pa.Table) -> Iterator[str]:
    yield "["
    separator = "\n"
    for rows in _json_batches(table):
        if rows:
            yield separator + ",\n".join(map(_json, rows))
            separator = ",\n"
    yield "]\n" if separator == "\n" else "\n]\n"


def _write_json(table: pa.Table, handle: TextIO) -> None:
    for piece in _json_pieces(table):
        handle.write(piece)


def _write_jsonl(table: pa.Table, handle: TextIO) -> None:
    for rows in _json_batches(table):
        handle.write("".join(_json(row) + "\n" for row in rows))


_TEXT_WRITERS: dict[str, Callable[[pa.Table, TextIO], None]] = {
    "csv": _write_csv, "json": _write_json, "jsonl": _write_jsonl,
}


# -- XLSX ---------------------------------------------------------------------------------------


def _write_xlsx(table: pa.Table, path: Path, sheet: str) -> None:
    # openpyxl is imported only to write XLSX: it would add a tenth of a second to every start,
    # and it is an extra (`patchbay[xlsx]`).
    with driver_needed("an XLSX report"):
        from openpyxl import Workbook
        from openpyxl.styles import Font
        from openpyxl.utils import get_column_letter

    # A write-only workbook streams rows out, so memory stays flat however long the sheet.
    book = Workbook(write_only=True)
    ws = book.create_sheet(title=sheet)
    names = table.column_names
    try:
        # Widths and frozen panes must be set before the first row is written.
        sample = table.slice(0, _WIDTH_SAMPLE_ROWS)
        for index, (name, column) in enumerate(zip(names, sample.columns, strict=True), 1):
            ws.column_dimensions[get_column_letter(index)].width = _width(name, column)
        ws.freeze_panes = "A2"
        _check_xlsx_text(pa.array(names, pa.string()), lambda i: f"column name {names[i]!r}")
        bold = Font(bold=True)
        header = []
        for name in names:
            cell = _text_cell(ws, name)
            cell.font = bold
            header.append(cell)
        ws.append(header)
        first_row = 2
        for batch in table.to_batches(max_chunksize=_BATCH_ROWS):
            columns = [_xlsx_values(ws, column, name, first_row)
                       for name, column in zip(names, batch.columns, strict=True)]
            for row in zip(*columns, strict=True):
                ws.append(row)
            first_row += batch.num_rows
        book.save(path)
    except BaseException:
        _discard_sheet(ws)
        raise


def _discard_sheet(ws: Any) -> None:
    """openpyxl streams a write-only sheet into a file of the system's temporary folder and
    deletes it when the workbook is saved, or at exit: a failed write deletes it now, lest a
    long-running process gather them."""
    writer = getattr(ws, "_writer", None)
    if writer is not None:
        # Closing the sheet first ends its streams into the file, which would otherwise
        # end, on their own and out of order, when collected.
        with suppress(Exception):
            ws.close()
        with suppress(Exception):
            writer.cleanup()


def _width(name: str, sample: pa.ChunkedArray) -> float:
    """A column width (in characters) fitting the bold header and the first rows' values."""
    lengths = [len(name) + 2]
    for text in _texts(sample).to_pylist():
        if text is not None:
            lengths.append(max((len(line) for line in text.splitlines()), default=0))
    return min(max(max(lengths) + 1, _WIDTH_MIN), _WIDTH_MAX)


def _text_cell(ws: WriteOnlyWorksheet, value: str) -> Any:
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.cell import TYPE_STRING

    cell = WriteOnlyCell(ws, value)
    # openpyxl makes a formula of text beginning with '=', and an error of '#N/A' and the like.
    cell.data_type = TYPE_STRING
    return cell


def _styled(ws: WriteOnlyWorksheet, values: list[Any], number_format: str) -> Iterator[Any]:
    """The values in cells of one number format, lazily: a write-only sheet writes each row
    out as it is appended, so one cell serves the whole column, which spares making and
    styling a cell per value (a fifth of the time)."""
    from openpyxl.cell import WriteOnlyCell

    cell = WriteOnlyCell(ws)
    cell.number_format = number_format
    for value in values:
        if value is None:
            yield None
        else:
            cell.value = value
            yield cell


def _xlsx_values(ws: WriteOnlyWorksheet, column: pa.Array, name: str, first_row: int) -> Iterable[Any]:
    """The cells of one column of a batch, whose first row is the sheet's `first_row`: plain
    values where openpyxl types them right, cells where they need a number format or must
    be kept as text."""
    from openpyxl.cell.cell import ERROR_CODES

    kind = column.type
    if pa.types.is_dictionary(kind):
        return _xlsx_values(ws, _decoded(column), name, first_row)
    if pa.types.is_integer(kind):
        return [v if v is None or -_XLSX_EXACT_INTEGER <= v <= _XLSX_EXACT_INTEGER else _text_cell(ws, str(v))
                for v in column.to_pylist()]
    if pa.types.is_floating(kind):
        return _floats(column)
    if pa.types.is_boolean(kind):
        booleans: list[Any] = column.to_pylist()
        return booleans
    if pa.types.is_decimal(kind):
        places = "." + "0" * kind.scale if kind.scale > 0 else ""
        return _styled(ws, [None if v is None else float(v) for v in column.to_pylist()], "0" + places)
    if pa.types.is_date(kind):
        return _styled(ws, column.to_pylist(), "yyyy-mm-dd")
    if pa.types.is_timestamp(kind):
        # Casting away the zone keeps the instant's UTC wall-clock time; Python's datetime
        # holds no finer than microseconds (and Excel, through openpyxl, milliseconds).
        naive = pc.cast(column, pa.timestamp("us"), safe=False)
        return _styled(ws, naive.to_pylist(), "yyyy-mm-dd hh:mm:ss" + _fraction(kind.unit))
    if pa.types.is_time(kind):
        times = pc.cast(column, pa.time64("us"), safe=False)
        return _styled(ws, times.to_pylist(), "hh:mm:ss" + _fraction(kind.unit))
    texts = _texts(column)
    _check_xlsx_text(texts, lambda i: f"column {name!r}, sheet row {first_row + i}:")
    # Only text openpyxl would not keep as text needs a cell of its own.
    return [_text_cell(ws, v) if v is not None and (v.startswith("=") or v in ERROR_CODES) else v
            for v in texts.to_pylist()]


def _fraction(unit: str) -> str:
    return "" if unit == "s" else ".000"
