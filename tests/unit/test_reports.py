"""Report files and API answers from an Arrow table: every format holds the values exactly,
XLSX holds typed cells, and a write either replaces the old file whole or leaves it be."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import os
import tempfile
import tracemalloc
import zipfile
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import openpyxl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from patchbay.elements import reports
from patchbay.elements.reports import (
    FORMATS,
    csv_chunks,
    csv_text,
    format_of,
    json_chunks,
    rows_of,
    write_report,
)
from patchbay.errors import SpecError

PARIS = ZoneInfo("Europe/Paris")
NOTE = 'commas, "quotes"\r\nand lines'


def sample() -> pa.Table:
    return pa.table({
        "count": pa.array([1, None, -3], pa.int64()),
        "ratio": pa.array([0.1, 2.5, None], pa.float64()),
        "amount": pa.array([Decimal("1234567890.12"), Decimal("-0.01"), None], pa.decimal128(12, 2)),
        "day": pa.array([dt.date(2024, 2, 29), None, dt.date(1999, 12, 31)], pa.date32()),
        "at": pa.array([dt.datetime(2024, 7, 1, 12, 30, 0, 250000, PARIS), None,
                        dt.datetime(2024, 1, 15, 8, 0, tzinfo=PARIS)], pa.timestamp("us", "Europe/Paris")),
        "local": pa.array([dt.datetime(2024, 3, 10, 2, 30, 0, 123000), dt.datetime(1970, 1, 1), None],
                          pa.timestamp("ms")),
        "ok": pa.array([True, False, None]),
        "note": pa.array([NOTE, "Zoë — 日本 ✓", None]),
        "label": pa.array(["=1+1", "", "#N/A"]),
        "tags": pa.array([["x", "y"], [], None], pa.list_(pa.string())),
    })


# The values as text (CSV), None for a null.
TEXT: list[dict[str, str | None]] = [
    {"count": "1", "ratio": "0.1", "amount": "1234567890.12", "day": "2024-02-29",
     "at": "2024-07-01T12:30:00.250000+02:00", "local": "2024-03-10T02:30:00.123", "ok": "true",
     "note": NOTE, "label": "=1+1", "tags": '["x", "y"]'},
    {"count": None, "ratio": "2.5", "amount": "-0.01", "day": None, "at": None,
     "local": "1970-01-01T00:00:00.000", "ok": "false", "note": "Zoë — 日本 ✓", "label": "", "tags": "[]"},
    {"count": "-3", "ratio": None, "amount": None, "day": "1999-12-31",
     "at": "2024-01-15T08:00:00.000000+01:00", "local": None, "ok": None, "note": None,
     "label": "#N/A", "tags": None},
]

# The values as JSON holds them.
JSON_ROWS: list[dict[str, Any]] = [
    {**TEXT[0], "count": 1, "ratio": 0.1, "ok": True, "tags": ["x", "y"]},
    {**TEXT[1], "ratio": 2.5, "ok": False, "tags": []},
    {**TEXT[2], "count": -3},
]


def written(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- formats ------------------------------------------------------------------------------------


def test_format_comes_from_the_extension_unless_declared() -> None:
    assert [format_of(Path(f"r.{f}")) for f in FORMATS] == list(FORMATS)
    assert format_of(Path("out/Report.XLSX")) == "xlsx"
    assert format_of(Path("report.txt"), "csv") == "csv"


@pytest.mark.parametrize("path, declared", [("report.txt", None), ("report", None), ("r.csv", "tsv")])
def test_an_unknown_format_is_refused_naming_the_formats(path: str, declared: str | None) -> None:
    with pytest.raises(SpecError) as raised:
        format_of(Path(path), declared)
    assert all(f in str(raised.value) for f in FORMATS)


def test_write_report_refuses_an_unknown_extension_and_writes_nothing(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="parquet"):
        write_report(sample(), tmp_path / "report.xls")
    assert written(tmp_path) == []


# -- each format, read back ---------------------------------------------------------------------


def test_csv_round_trip(tmp_path: Path) -> None:
    path = write_report(sample(), tmp_path / "deep" / "er" / "report.csv")
    assert path == tmp_path / "deep" / "er" / "report.csv"
    raw = path.read_bytes()
    assert not raw.startswith(b"\xef\xbb\xbf")
    assert raw.startswith(b"count,ratio,amount,day,at,local,ok,note,label,tags\r\n")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert rows == [{k: "" if v is None else v for k, v in row.items()} for row in TEXT]
    assert Decimal(rows[0]["amount"]) == Decimal("1234567890.12")


def test_csv_quotes_as_rfc_4180_and_keeps_empty_text_apart_from_null() -> None:
    text = csv_text(pa.table({"a": ["", None, 'say "hi"', "x,y", "plain"]}))
    assert text == 'a\r\n""\r\n\r\n"say ""hi"""\r\n"x,y"\r\nplain\r\n'


def test_json_round_trip(tmp_path: Path) -> None:
    path = write_report(sample(), tmp_path / "report.json")
    assert json.loads(path.read_text(encoding="utf-8")) == JSON_ROWS
    assert "Zoë — 日本 ✓" in path.read_text(encoding="utf-8")


def test_jsonl_round_trip(tmp_path: Path) -> None:
    path = write_report(sample(), tmp_path / "report.jsonl")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == JSON_ROWS


def test_parquet_round_trip_keeps_the_types(tmp_path: Path) -> None:
    table = sample()
    back = pq.read_table(write_report(table, tmp_path / "report.parquet"))
    assert back.schema == table.schema
    assert back.equals(table)


def test_empty_tables(tmp_path: Path) -> None:
    empty = sample().slice(0, 0)
    assert csv_text(empty) == "count,ratio,amount,day,at,local,ok,note,label,tags\r\n"
    assert rows_of(empty) == []
    assert json.loads(write_report(empty, tmp_path / "r.json").read_text()) == []
    assert write_report(empty, tmp_path / "r.jsonl").read_text() == ""
    ws = openpyxl.load_workbook(write_report(empty, tmp_path / "r.xlsx"))["report"]
    assert [c.value for c in ws[1]] == empty.column_names
    assert ws.max_row == 1


# -- XLSX ---------------------------------------------------------------------------------------


def test_xlsx_round_trip_with_typed_cells(tmp_path: Path) -> None:
    path = write_report(sample(), tmp_path / "report.xlsx", sheet="Figures 2024")
    book = openpyxl.load_workbook(path)
    assert book.sheetnames == ["Figures 2024"]
    ws = book["Figures 2024"]
    assert ws.freeze_panes == "A2"
    assert [c.value for c in ws[1]] == sample().column_names
    assert all(c.font.b for c in ws[1])
    values = [[c.value for c in row] for row in ws.iter_rows(min_row=2)]
    assert values == [
        [1, 0.1, 1234567890.12, dt.datetime(2024, 2, 29), dt.datetime(2024, 7, 1, 10, 30, 0, 250000),
         dt.datetime(2024, 3, 10, 2, 30, 0, 123000), True, NOTE, "=1+1", '["x", "y"]'],
        [None, 2.5, -0.01, None, None, dt.datetime(1970, 1, 1), False, "Zoë — 日本 ✓", None, "[]"],
        [-3, None, None, dt.datetime(1999, 12, 31), dt.datetime(2024, 1, 15, 7, 0), None, None, None,
         "#N/A", None],
    ]
    count, ratio, amount, day, at, local, ok, _, label, _ = ws[2]
    assert isinstance(count.value, int) and count.data_type == "n"
    assert isinstance(ratio.value, float)
    assert amount.data_type == "n" and amount.number_format == "0.00"
    assert day.data_type == "d" and day.number_format == "yyyy-mm-dd"
    assert at.data_type == "d" and at.number_format == "yyyy-mm-dd hh:mm:ss.000"
    assert local.data_type == "d"
    assert ok.data_type == "b"
    assert label.data_type == "s" and label.value == "=1+1"
    assert ws["I4"].data_type == "s"  # '#N/A' is text, not Excel's error
    with zipfile.ZipFile(path) as archive:
        sheet_xml = archive.read("xl/worksheets/sheet1.xml")
    assert b"<f>" not in sheet_xml


def test_xlsx_column_widths_fit_header_and_values(tmp_path: Path) -> None:
    table = pa.table({"id": [1, 2], "a_rather_long_column_name": ["x", "y"], "text": ["z" * 40, "w"],
                      "huge": ["q" * 500, None]})
    ws = openpyxl.load_workbook(write_report(table, tmp_path / "r.xlsx"))["report"]
    widths = {k: d.width for k, d in ws.column_dimensions.items()}
    assert widths["A"] == 8
    assert widths["B"] >= len("a_rather_long_column_name")
    assert widths["C"] >= 40
    assert widths["D"] == 60


def test_xlsx_keeps_long_integers_as_text_and_drops_what_excel_cannot_hold(tmp_path: Path) -> None:
    table = pa.table({"id": pa.array([123456789012345678, 999_999_999_999_999, None], pa.int64()),
                      "x": pa.array([float("nan"), float("inf"), 1.5]),
                      "small": pa.array([0.1, None, 2.5], pa.float32()),
                      "cents": pa.array([Decimal("1.5"), Decimal("0"), None], pa.decimal128(10, 4))})
    ws = openpyxl.load_workbook(write_report(table, tmp_path / "r.xlsx"))["report"]
    assert [c.value for c in ws["A"][1:]] == ["123456789012345678", 999_999_999_999_999, None]
    assert [c.value for c in ws["B"][1:]] == [None, None, 1.5]
    assert [c.value for c in ws["C"][1:]] == [0.1, None, 2.5]
    assert ws["D2"].value == 1.5 and ws["D2"].number_format == "0.0000"


@pytest.mark.parametrize("name", ["", "x" * 32, "a/b", "q?", "[1]", "'quoted'", "History", "tab\there"])
def test_an_invalid_sheet_name_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(SpecError, match="sheet name"):
        write_report(sample(), tmp_path / "r.xlsx", sheet=name)
    assert written(tmp_path) == []


def test_a_sheet_name_of_31_characters_is_fine(tmp_path: Path) -> None:
    path = write_report(sample(), tmp_path / "r.xlsx", sheet="s" * 31)
    assert openpyxl.load_workbook(path).sheetnames == ["s" * 31]


def test_too_many_rows_for_xlsx_is_refused_before_writing(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(reports, "XLSX_MAX_ROWS", 3)
    with pytest.raises(SpecError, match="Parquet or CSV"):
        write_report(sample(), tmp_path / "r.xlsx")
    assert written(tmp_path) == []
    write_report(sample().slice(0, 2), tmp_path / "r.xlsx")
    assert written(tmp_path) == ["r.xlsx"]


@pytest.mark.parametrize("text, problem", [("x" * 32_768, "32,767"), ("bell\x07", "control character")])
def test_text_an_excel_cell_cannot_hold_is_refused(tmp_path: Path, text: str, problem: str) -> None:
    table = pa.table({"note": ["fine", text]})
    with pytest.raises(SpecError, match=problem) as raised:
        write_report(table, tmp_path / "r.xlsx")
    assert "'note', sheet row 3" in str(raised.value)
    write_report(table, tmp_path / "r.csv")  # CSV holds it


# -- atomicity ----------------------------------------------------------------------------------


@pytest.fixture
def previous(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A folder holding report files from an earlier run, with openpyxl's temporary files
    kept in a folder of the test's own."""
    system_temp = tmp_path / "system-temp"
    system_temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_temp))
    folder = tmp_path / "reports"
    for kind in FORMATS:
        write_report(sample().slice(0, 1), folder / f"r.{kind}")
    return folder


def unchanged(folder: Path, before: dict[str, bytes]) -> None:
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    assert list((folder.parent / "system-temp").iterdir()) == []


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


@pytest.mark.parametrize("kind", FORMATS)
def test_a_failed_rename_keeps_the_old_file(previous: Path, kind: str,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    before = contents(previous)

    def refuse(*_: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError, match="disk full"):
        write_report(sample(), previous / f"r.{kind}")
    unchanged(previous, before)


@pytest.mark.parametrize("kind", ["csv", "json", "jsonl", "xlsx"])
def test_a_failure_mid_write_keeps_the_old_file(previous: Path, kind: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    before = contents(previous)
    table = pa.table({"n": list(range(30)), "tags": [[str(i)] for i in range(30)]})
    plain = reports.jsonable
    seen: list[Any] = []

    def fail_late(value: Any) -> Any:
        seen.append(value)
        if len(seen) == 25:
            raise RuntimeError("broke mid-write")
        return plain(value)

    monkeypatch.setattr(reports, "_BATCH_ROWS", 2)
    monkeypatch.setattr(reports, "_WIDTH_SAMPLE_ROWS", 2)
    monkeypatch.setattr(reports, "jsonable", fail_late)
    with pytest.raises(RuntimeError, match="mid-write"):
        write_report(table, previous / f"r.{kind}")
    unchanged(previous, before)


def test_text_xlsx_cannot_hold_found_mid_write_keeps_the_old_file(previous: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    before = contents(previous)
    monkeypatch.setattr(reports, "_BATCH_ROWS", 2)
    table = pa.table({"note": ["a", "b", "c", "d", "e\x00"]})
    with pytest.raises(SpecError, match="sheet row 6"):
        write_report(table, previous / "r.xlsx")
    unchanged(previous, before)


def test_a_column_type_the_writer_refuses_keeps_the_old_file(previous: Path) -> None:
    before = contents(previous)
    table = pa.table({"n": [1], "blob": pa.array([b"\x00\x01"], pa.binary()),
                      "wait": pa.array([dt.timedelta(seconds=3)], pa.duration("s"))})
    for kind in ("csv", "json", "jsonl", "xlsx"):
        with pytest.raises(SpecError, match="Parquet") as raised:
            write_report(table, previous / f"r.{kind}")
        assert raised.value.problems == ["column 'blob' is of type binary",
                                         "column 'wait' is of type duration[s]"]
    unchanged(previous, before)
    write_report(table, previous / "r.parquet")  # Parquet holds any Arrow type


def test_a_rewrite_keeps_the_file_mode(tmp_path: Path) -> None:
    path = write_report(sample(), tmp_path / "r.csv")
    assert path.stat().st_mode & 0o777 == 0o644
    path.chmod(0o600)
    write_report(sample(), path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert written(tmp_path) == ["r.csv"]


def test_columns_need_distinct_names(tmp_path: Path) -> None:
    table = pa.Table.from_arrays([pa.array([1]), pa.array([2])], names=["a", "a"])
    with pytest.raises(SpecError, match="repeated: a"):
        write_report(table, tmp_path / "r.parquet")
    with pytest.raises(SpecError, match="repeated: a"):
        rows_of(table)
    with pytest.raises(SpecError, match="at least one column"):
        csv_text(pa.table({}))


# -- API answers --------------------------------------------------------------------------------


def test_rows_of_gives_the_json_values() -> None:
    assert rows_of(sample()) == JSON_ROWS


def test_csv_text_is_the_csv_file(tmp_path: Path) -> None:
    assert csv_text(sample()).encode("utf-8") == write_report(sample(), tmp_path / "r.csv").read_bytes()


@pytest.mark.slow
def test_streamed_pieces_are_the_report_files_in_batches(tmp_path: Path) -> None:
    table = pa.concat_tables([sample()] * 3000)  # more rows than one batch
    csv_pieces, json_pieces = list(csv_chunks(table)), list(json_chunks(table))
    assert len(csv_pieces) > 2 and len(json_pieces) > 3
    assert "".join(csv_pieces).encode("utf-8") == write_report(table, tmp_path / "r.csv").read_bytes()
    assert "".join(json_pieces).encode("utf-8") == write_report(table, tmp_path / "r.json").read_bytes()


def test_streamed_pieces_are_checked_before_the_first_is_asked_for() -> None:
    binary = pa.table({"blob": pa.array([b"x"], pa.binary())})
    with pytest.raises(SpecError, match="CSV reports cannot hold"):
        csv_chunks(binary)
    with pytest.raises(SpecError, match="JSON reports cannot hold"):
        json_chunks(binary)


def test_decimals_stay_exact_text() -> None:
    table = pa.table({
        "big": pa.array([Decimal("12345678901234567890.0123456789"), Decimal("-0.0000000001")],
                        pa.decimal128(38, 10)),
        "zero": pa.array([Decimal("0"), Decimal("1.5")], pa.decimal128(20, 8)),
        "hundreds": pa.array([Decimal("1200"), None], pa.decimal128(5, -2)),
    })
    assert rows_of(table) == [
        {"big": "12345678901234567890.0123456789", "zero": "0.00000000", "hundreds": "1200"},
        {"big": "-0.0000000001", "zero": "1.50000000", "hundreds": None},
    ]
    assert csv_text(table) == ("big,zero,hundreds\r\n12345678901234567890.0123456789,0.00000000,1200\r\n"
                               "-0.0000000001,1.50000000,\r\n")


def test_nested_values_and_odd_numbers() -> None:
    table = pa.table({
        "item": pa.array([{"price": Decimal("9.99"), "on": dt.date(2024, 5, 1)}, None],
                         pa.struct([("price", pa.decimal128(6, 2)), ("on", pa.date32())])),
        "attrs": pa.array([[("k", 1)], []], pa.map_(pa.string(), pa.int64())),
        "x": pa.array([float("nan"), float("-inf")]),
        "small": pa.array([0.1, None], pa.float32()),
        "kind": pa.array(["a", "b"]).dictionary_encode(),
        "nothing": pa.nulls(2),
        "clock": pa.array([dt.time(13, 5, 7), None], pa.time32("s")),
    })
    assert rows_of(table) == [
        {"item": {"price": "9.99", "on": "2024-05-01"}, "attrs": {"k": 1}, "x": None, "small": 0.1,
         "kind": "a", "nothing": None, "clock": "13:05:07"},
        {"item": None, "attrs": {}, "x": None, "small": None, "kind": "b", "nothing": None, "clock": None},
    ]
    assert csv_text(table).split("\r\n")[1:3] == [
        '"{""price"": ""9.99"", ""on"": ""2024-05-01""}","{""k"": 1}",nan,0.1,a,,13:05:07',
        ",{},-inf,,b,,",
    ]


def test_timestamps_keep_their_unit_and_zone() -> None:
    table = pa.table({
        "s": pa.array([1_735_689_599], pa.timestamp("s", "UTC")),
        "ms": pa.array([1_735_689_599_123], pa.timestamp("ms", "UTC")),
        "us": pa.array([1_735_689_599_123_456], pa.timestamp("us", "UTC")),
        "ns": pa.array([1_735_689_599_123_456_789], pa.timestamp("ns", "Asia/Kolkata")),
    })
    assert rows_of(table) == [{"s": "2024-12-31T23:59:59+00:00", "ms": "2024-12-31T23:59:59.123+00:00",
                               "us": "2024-12-31T23:59:59.123456+00:00",
                               "ns": "2025-01-01T05:29:59.123456789+05:30"}]


# -- large tables -------------------------------------------------------------------------------


def large(rows: int) -> pa.Table:
    numbers = pa.array(range(rows), pa.int64())
    return pa.table({
        "id": numbers,
        "name": pc.binary_join_element_wise("name, ", pc.cast(numbers, pa.string()), ""),
        "amount": pc.cast(numbers, pa.decimal128(21, 2)),
        "at": pc.cast(pc.multiply(numbers, 1000), pa.timestamp("s", "UTC")),
    })


def test_a_large_csv_keeps_memory_flat(tmp_path: Path) -> None:
    table = large(300_000)
    tracemalloc.start()
    try:
        path = write_report(table, tmp_path / "r.csv")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 50 * 2**20  # about 2 MB in fact: a batch at a time
    with path.open(newline="") as handle:
        last = list(csv.reader(io.StringIO(handle.read()[-200:])))[-1]
    assert last == ["299999", "name, 299999", "299999.00",
                    dt.datetime.fromtimestamp(299_999_000, dt.UTC).isoformat()]


@pytest.mark.slow
def test_a_large_xlsx(tmp_path: Path) -> None:
    path = write_report(large(300_000).select(["id", "amount"]), tmp_path / "r.xlsx")
    with zipfile.ZipFile(path) as archive:
        sheet_xml = archive.read("xl/worksheets/sheet1.xml")
    assert sheet_xml.count(b"</row>") == 300_001
    assert written(tmp_path) == ["r.xlsx"]
