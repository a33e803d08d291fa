"""The file connector against real CSV, JSON Lines and Parquet files in a temporary folder."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import tracemalloc
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from patchbay.connectors.base import connect
from patchbay.connectors.files import ERROR_FIELD, RAW_FIELD, FileConnector
from patchbay.errors import ConnectionFailed, SpecError
from patchbay.model import FieldType, Operation, Outcome, Page, Record, Status
from patchbay.scope import BoundScope, Condition, Group
from patchbay.spec import SystemSpec

ACCOUNTS = (
    "id,name,amount,country,email\n"
    "1,Acme,95,DE,a@acme.test\n"
    "2,Beta,150,AT,\n"
    "3,Gamma,1000,FR,g@gamma.test\n"
    "4,Alpha,20,DE,\n"
    "5,Apex,250,AT,x@apex.test\n"
    "6,Delta,100,DE,d@delta.test\n"
)


def files(folder: Path, **options: Any) -> FileConnector:
    connector = connect(SystemSpec(url=f"file:{folder}", name="files", options=options))
    assert isinstance(connector, FileConnector)
    return connector


def records(pages: list[Page]) -> list[Record]:
    return [r for page in pages for r in page.records]


def statuses(outcomes: list[Outcome]) -> list[Status]:
    return [o.status for o in outcomes]


def errors(found: list[Record]) -> list[Record]:
    return [r for r in found if ERROR_FIELD in r]


# -- reading ------------------------------------------------------------------------------------


def test_csv_reads_in_pages_filtered_by_scope(tmp_path: Path) -> None:
    (tmp_path / "accounts.csv").write_text(ACCOUNTS)
    # Text compared with a number is compared as a number: "95" > 100 would hold as text.
    scope = Group("and", (Condition("amount", "gt", 100), Condition("country", "in", ["DE", "AT"])))

    pages = list(files(tmp_path).read("accounts.csv", scope, page_size=1))

    assert [p.records for p in pages] == [
        [{"id": "2", "name": "Beta", "amount": "150", "country": "AT", "email": None}],
        [{"id": "5", "name": "Apex", "amount": "250", "country": "AT", "email": "x@apex.test"}],
    ]
    assert [p.position for p in pages] == [2, 5]


@pytest.mark.parametrize(("scope", "ids"), [
    (Condition("name", "like", "A%"), ["1", "4", "5"]),
    (Condition("email", "is_null", True), ["2", "4"]),
    (Condition("email", "is_null", False), ["1", "3", "5", "6"]),
    (Condition("amount", "lte", 100), ["1", "4", "6"]),
    (Condition("country", "not_in", ["DE"]), ["2", "3", "5"]),
])
def test_csv_scope_operators(tmp_path: Path, scope: BoundScope, ids: list[str]) -> None:
    (tmp_path / "accounts.csv").write_text(ACCOUNTS)
    connector = files(tmp_path)

    assert [r["id"] for r in records(list(connector.read("accounts.csv", scope)))] == ids
    assert connector.count("accounts.csv", scope) == len(ids)


def test_csv_values_stay_text_and_null_values_read_as_none(tmp_path: Path) -> None:
    (tmp_path / "people.txt").write_text("id;score;note\n1;007;NULL\n2;;n/a\n")
    connector = files(tmp_path, format="csv", delimiter=";", null_values=["NULL", "n/a"])

    assert records(list(connector.read("people.txt"))) == [
        {"id": "1", "score": "007", "note": None},
        {"id": "2", "score": "", "note": None},
    ]


def test_fields_limits_each_record_and_keeps_the_key(tmp_path: Path) -> None:
    (tmp_path / "accounts.csv").write_text(ACCOUNTS)
    scope = Condition("country", "eq", "FR")

    found = records(list(files(tmp_path).read("accounts.csv", scope, key="id", fields=["name"])))

    assert found == [{"name": "Gamma", "id": "3"}]


def test_unknown_field_in_scope_or_fields_is_a_spec_error(tmp_path: Path) -> None:
    (tmp_path / "accounts.csv").write_text(ACCOUNTS)
    connector = files(tmp_path)

    with pytest.raises(SpecError, match="no field 'contry'; did you mean 'country'"):
        list(connector.read("accounts.csv", Condition("contry", "eq", "DE")))
    with pytest.raises(SpecError, match="no field 'nam'"):
        list(connector.read("accounts.csv", fields=["nam"]))


def test_resume_after_skips_source_rows_not_matching_records(tmp_path: Path) -> None:
    (tmp_path / "accounts.csv").write_text(ACCOUNTS)
    connector = files(tmp_path)
    scope = Condition("country", "eq", "DE")

    first = next(connector.read("accounts.csv", scope, page_size=1))
    rest = list(connector.read("accounts.csv", scope, after=first.position, page_size=1))

    assert first.records[0]["id"] == "1" and first.position == 1
    # after=2 must skip rows 1-2 of the file, not the first two German accounts.
    assert [r["id"] for r in records(list(connector.read("accounts.csv", scope, after=2)))] == [
        "4", "6"]
    assert [r["id"] for r in records(rest)] == ["4", "6"]
    assert [p.position for p in rest] == [4, 6]


def test_broken_csv_rows_arrive_as_error_records_between_the_good_ones(tmp_path: Path) -> None:
    (tmp_path / "accounts.csv").write_bytes(
        b"id,name,amount\n"
        b"1,Acme,10\n"
        b"2,Beta\n"                      # line 3: a field short
        b'3,"Gamma\nGmbH",30\n'          # lines 4-5: a good row over two lines
        b"4,D\xe9lta,40\n"               # line 6: not UTF-8
        b"5,Eps,50,extra\n"              # line 7: a field too many
        b'6,"Zeta"x,60\n'                # line 8: text after a closing quote
        b"7,Eta,70\n"
    )
    connector = files(tmp_path)
    # The scope would exclude every broken row had they been read as records.
    scope = Condition("amount", "gte", 10)

    found = records(list(connector.read("accounts.csv", scope, fields=["id"], page_size=2)))

    assert [r.get("id") for r in found] == ["1", None, "3", None, None, None, "7"]
    where = str(tmp_path / "accounts.csv")
    assert errors(found) == [
        {ERROR_FIELD: f"{where} line 3: expected 3 fields, found 2", RAW_FIELD: "2,Beta"},
        {ERROR_FIELD: f"{where} line 6: bytes that are not valid utf-8",
         RAW_FIELD: "4,D\\xe9lta,40"},
        {ERROR_FIELD: f"{where} line 7: expected 3 fields, found 4", RAW_FIELD: "5,Eps,50,extra"},
        {ERROR_FIELD: f'{where} line 8: malformed CSV: \',\' expected after \'"\'',
         RAW_FIELD: '6,"Zeta"x,60'},
    ]
    assert connector.count("accounts.csv", scope) == 7
    # Broken rows are rows: resuming after the fifth row starts at the sixth.
    resumed = records(list(connector.read("accounts.csv", after=5)))
    assert [r.get("id", r.get(RAW_FIELD)) for r in resumed] == ['6,"Zeta"x,60', "7"]


def test_an_unbalanced_quote_breaks_its_line_and_the_rows_after_it_are_read(tmp_path: Path) -> None:
    text = ('id,name\n'
            '1,Acme\n'
            '2,"Beta\n'               # line 3: the quote runs on to line 6
            '3,Gamma\n'
            '\n'
            '4,"Delta, Inc."\n'
            '5,"Eps\n'                # line 7: the quote runs on to the end of the file
            '6,Zeta\n')
    (tmp_path / "accounts.csv").write_text(text)
    connector = files(tmp_path)
    where = tmp_path / "accounts.csv"

    found = records(list(connector.read("accounts.csv")))

    assert found == [
        {"id": "1", "name": "Acme"},
        {ERROR_FIELD: f"{where} line 3: malformed CSV: an unbalanced quote ran on over 4 lines "
                      f"(',' expected after '\"')", RAW_FIELD: '2,"Beta'},
        {"id": "3", "name": "Gamma"},
        {"id": "4", "name": "Delta, Inc."},
        {ERROR_FIELD: f"{where} line 7: malformed CSV: an unbalanced quote ran on over 2 lines "
                      f"(unexpected end of data)", RAW_FIELD: '5,"Eps'},
        {"id": "6", "name": "Zeta"},
    ]
    assert connector.count("accounts.csv") == 6  # every row counts, the broken ones too
    resumed = records(list(connector.read("accounts.csv", after=3)))
    assert [r.get("id", r.get(RAW_FIELD)) for r in resumed] == ["4", '5,"Eps', "6"]
    # A rewrite copies the broken lines as they are and still finds the rows after them.
    outcomes = connector.write("accounts.csv", [{"id": "3", "name": "Gamma 2"}], Operation.UPSERT,
                               "id")
    assert statuses(outcomes) == [Status.UPDATED]
    assert where.read_text() == text.replace("3,Gamma\n", "3,Gamma 2\n")


def test_broken_json_lines_arrive_as_error_records_between_the_good_ones(tmp_path: Path) -> None:
    (tmp_path / "contacts.jsonl").write_bytes(
        b'{"id": 1, "name": "Ann"}\n'
        b"{not json}\n"
        b"\n"
        b"[1, 2]\n"
        b'{"id": 2, "name": "B\xffb"}\n'
        b'{"id": 3, "name": "Cy", "tags": ["x"]}'
    )
    connector = files(tmp_path)

    found = records(list(connector.read("contacts.jsonl", Condition("id", "gt", 0))))

    where = str(tmp_path / "contacts.jsonl")
    assert found == [
        {"id": 1, "name": "Ann"},
        {ERROR_FIELD: f"{where} line 2: not valid JSON: Expecting property name enclosed in "
                      f"double quotes at column 2", RAW_FIELD: "{not json}"},
        {ERROR_FIELD: f"{where} line 4: a JSON array where an object was expected",
         RAW_FIELD: "[1, 2]"},
        {ERROR_FIELD: f"{where} line 5: bytes that are not valid utf-8",
         RAW_FIELD: '{"id": 2, "name": "B\\xffb"}'},
        {"id": 3, "name": "Cy", "tags": ["x"]},
    ]
    assert [p.position for p in connector.read("contacts.jsonl", page_size=2)] == [2, 4, 5]


def test_get_matches_keys_as_text_and_skips_broken_rows(tmp_path: Path) -> None:
    (tmp_path / "accounts.csv").write_text(ACCOUNTS + "7,broken\n")

    found = files(tmp_path).get("accounts.csv", "id", [2, "5", 99], fields=["name"])

    assert found == {2: {"name": "Beta", "id": "2"}, "5": {"name": "Apex", "id": "5"}}


@pytest.mark.slow
def test_reading_a_large_csv_keeps_memory_flat(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with path.open("w") as handle:
        handle.write("id,name,amount,country,email\n")
        for i in range(200_000):
            handle.write(f"{i},Customer number {i},{i % 997}.50,DE,customer{i}@example.test\n")
    connector = files(tmp_path)

    tracemalloc.start()
    try:
        rows = 0
        for page in connector.read("big.csv", Condition("country", "eq", "DE"), page_size=1000):
            rows += len(page.records)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert rows == 200_000
    # The whole file as records would take well over 100 MB.
    assert peak < 4 * 1024 * 1024


# -- describing and checking --------------------------------------------------------------------


def test_describe_csv_and_json_lines(tmp_path: Path) -> None:
    (tmp_path / "accounts.csv").write_text("\ufeffid,name\n1,Acme\n")
    (tmp_path / "contacts.jsonl").write_text(
        '{"id": 1, "score": 1, "active": true, "meta": {"a": 1}}\n'
        '{"id": 2, "score": 2.5, "name": "Bo", "active": null}\nbroken\n')
    connector = files(tmp_path)

    csv_fields = connector.describe("accounts.csv").fields
    jsonl_fields = connector.describe("contacts.jsonl").fields

    assert {n: (f.type, f.nullable) for n, f in csv_fields.items()} == {
        "id": (FieldType.STRING, True), "name": (FieldType.STRING, True)}
    assert {n: f.type for n, f in jsonl_fields.items()} == {
        "id": FieldType.INTEGER, "score": FieldType.NUMBER, "active": FieldType.BOOLEAN,
        "meta": FieldType.JSON, "name": FieldType.STRING}


def test_describe_of_a_missing_file_needs_the_fields_option(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"out\.csv does not exist yet"):
        files(tmp_path).describe("out.csv")

    described = files(tmp_path, fields=["id", "name"]).describe("out.csv")
    per_file = files(tmp_path, fields={"out.jsonl": ["key"]}).describe("out.jsonl")

    assert [(f.name, f.type) for f in described] == [
        ("id", FieldType.STRING), ("name", FieldType.STRING)]
    assert [(f.name, f.type) for f in per_file] == [("key", FieldType.JSON)]  # kept as they come


def test_check_needs_the_folder_and_objects_need_a_known_format(tmp_path: Path) -> None:
    files(tmp_path).check()
    with pytest.raises(ConnectionFailed, match="does not exist"):
        files(tmp_path / "missing").check()
    with pytest.raises(SpecError, match=r"cannot tell the format of 'notes\.txt'"):
        list(files(tmp_path).read("notes.txt"))
    with pytest.raises(SpecError, match="must name a file inside"):
        list(files(tmp_path).read("../accounts.csv"))
    (tmp_path / "accounts.csv").write_text(ACCOUNTS)
    with pytest.raises(SpecError, match=r"no file 'acounts\.csv'.*did you mean 'accounts\.csv'"):
        list(files(tmp_path).read("acounts.csv"))
    with pytest.raises(SpecError, match="unknown option 'delimeter'; did you mean 'delimiter'"):
        files(tmp_path, delimeter=";")


# -- writing CSV --------------------------------------------------------------------------------


def test_csv_insert_creates_the_file_with_a_header_then_appends(tmp_path: Path) -> None:
    connector = files(tmp_path)

    first = connector.write("out.csv", [
        {"id": 1, "name": "Acme", "since": dt.date(2024, 1, 31), "limit": Decimal("10.50"),
         "active": True},
        {"id": 2, "name": "Beta, Inc", "since": None, "limit": None, "active": False},
    ], Operation.INSERT, "id")
    second = connector.write("out.csv", [
        {"id": 3, "name": "Gamma"},
        {"id": 4, "name": "Delta", "phone": "123"},
        {"id": None, "name": "no key"},
    ], Operation.INSERT, "id")

    assert statuses(first) == [Status.CREATED, Status.CREATED]
    assert statuses(second) == [Status.CREATED, Status.REJECTED, Status.REJECTED]
    assert (second[1].code, second[2].code) == ("UNKNOWN_FIELD", "REQUIRED_FIELD_MISSING")
    assert (tmp_path / "out.csv").read_text() == (
        "id,name,since,limit,active\n"
        "1,Acme,2024-01-31,10.50,true\n"
        '2,"Beta, Inc",,,false\n'
        "3,Gamma,,,\n"
    )


def test_csv_insert_after_a_last_line_without_line_ending(tmp_path: Path) -> None:
    (tmp_path / "out.csv").write_text("id,name\r\n1,Acme")

    files(tmp_path).write("out.csv", [{"id": 2, "name": "Beta"}], Operation.INSERT, "id")

    assert (tmp_path / "out.csv").read_bytes() == b"id,name\r\n1,Acme\r\n2,Beta\r\n"


def test_csv_upsert_outcomes_and_untouched_rows_copied_as_they_were(tmp_path: Path) -> None:
    original = (
        'id,name,amount\n'
        '1,"Acme",10\n'          # quoted although it need not be: copied as it is
        '2,Beta,20\n'
        '3,Gamma\n'              # broken: kept for whoever repairs the file
        '4,Delta,40\n'
    )
    (tmp_path / "accounts.csv").write_text(original)
    connector = files(tmp_path)

    outcomes = connector.write("accounts.csv", [
        {"id": 2, "amount": 20},                 # 20 and "20" are the same in a CSV
        {"id": 4, "name": "Delta AG"},
        {"id": 5, "name": "Eps", "amount": Decimal("5.5")},
        {"id": 6, "name": "Zeta"},
        {"id": 6, "name": "Zeta again"},
        {"id": 7, "colour": "red"},
        {"id": "", "name": "no key"},
    ], Operation.UPSERT, "id")

    assert statuses(outcomes) == [Status.UNCHANGED, Status.UPDATED, Status.CREATED,
                                  Status.SKIPPED, Status.CREATED, Status.REJECTED,
                                  Status.REJECTED]
    assert [o.key for o in outcomes[:6]] == [2, 4, 5, 6, 6, 7]
    assert outcomes[3].code == "DUPLICATE_KEY_IN_BATCH"
    assert outcomes[5].code == "UNKNOWN_FIELD"
    assert (tmp_path / "accounts.csv").read_text() == (
        'id,name,amount\n'
        '1,"Acme",10\n'
        '2,Beta,20\n'
        '3,Gamma\n'
        '4,Delta AG,40\n'
        '5,Eps,5.5\n'
        '6,Zeta again,\n'
    )


def test_csv_update_and_delete_outcomes(tmp_path: Path) -> None:
    (tmp_path / "accounts.csv").write_text(ACCOUNTS)
    connector = files(tmp_path)

    updated = connector.write("accounts.csv", [{"id": "1", "country": "CH"}, {"id": 42}],
                              Operation.UPDATE, "id")
    deleted = connector.write("accounts.csv", [{"id": 2}, {"id": 3}, {"id": 42}],
                              Operation.DELETE, "id")

    assert statuses(updated) == [Status.UPDATED, Status.SKIPPED]
    assert updated[1].code == "NOT_FOUND"
    assert statuses(deleted) == [Status.DELETED, Status.DELETED, Status.SKIPPED]
    left = records(list(connector.read("accounts.csv")))
    assert [(r["id"], r["country"]) for r in left] == [
        ("1", "CH"), ("4", "DE"), ("5", "AT"), ("6", "DE")]


def test_update_of_a_file_that_does_not_exist_skips_and_creates_nothing(tmp_path: Path) -> None:
    outcomes = files(tmp_path).write("out.csv", [{"id": 1}], Operation.UPDATE, "id")

    assert statuses(outcomes) == [Status.SKIPPED]
    assert list(tmp_path.iterdir()) == []


def test_rewrite_is_atomic_and_leaves_no_temporary_file(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "accounts.csv"
    path.write_text(ACCOUNTS)
    path.chmod(0o640)
    connector = files(tmp_path)

    connector.write("accounts.csv", [{"id": 1, "name": "Acme AG"}], Operation.UPSERT, "id")

    assert sorted(p.name for p in tmp_path.iterdir()) == ["accounts.csv"]
    assert oct(path.stat().st_mode & 0o777) == oct(0o640)
    assert "1,Acme AG,95" in path.read_text()

    def fail(*args: Any) -> None:
        raise OSError("disk full")

    before = path.read_bytes()
    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        connector.write("accounts.csv", [{"id": 2, "name": "Beta AG"}], Operation.UPSERT, "id")

    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["accounts.csv"]


# -- writing JSON Lines -------------------------------------------------------------------------


def test_json_lines_insert_upsert_delete(tmp_path: Path) -> None:
    path = tmp_path / "contacts.jsonl"
    path.write_text('{"id": 1, "name": "Ann"}\nnot json')
    connector = files(tmp_path)
    when = dt.datetime(2024, 5, 1, 12, 30)

    inserted = connector.write("contacts.jsonl", [
        {"id": 2, "name": "Bob", "seen": when, "balance": Decimal("12.30")},
        {"id": 3, "name": "Cy", "bad": object()},
    ], Operation.INSERT, "id")
    upserted = connector.write("contacts.jsonl", [
        {"id": 2, "seen": when, "balance": Decimal("12.30")},
        {"id": 1, "name": "Anne"},
        {"id": 4, "name": "Dee"},
    ], Operation.UPSERT, "id")
    deleted = connector.write("contacts.jsonl", [{"id": 4}, {"id": 5}], Operation.DELETE, "id")

    assert statuses(inserted) == [Status.CREATED, Status.REJECTED]
    assert inserted[1].code == "INVALID_VALUE"
    assert statuses(upserted) == [Status.UNCHANGED, Status.UPDATED, Status.CREATED]
    assert statuses(deleted) == [Status.DELETED, Status.SKIPPED]
    lines = path.read_text().splitlines()
    assert lines[1] == "not json"
    assert [json.loads(line) for i, line in enumerate(lines) if i != 1] == [
        {"id": 1, "name": "Anne"},
        {"id": 2, "name": "Bob", "seen": "2024-05-01 12:30:00", "balance": "12.30"},
    ]


# -- Parquet ------------------------------------------------------------------------------------


def test_parquet_round_trip(tmp_path: Path) -> None:
    connector = files(tmp_path)
    rows = [{"id": i, "name": f"n{i}", "amount": Decimal(f"{i}.25"),
             "day": dt.date(2024, 1, 1) + dt.timedelta(days=i)} for i in range(1, 6)]

    created = connector.write("orders.parquet", rows[:3], Operation.INSERT, "id")
    appended = connector.write("orders.parquet", [*rows[3:], {"id": 9, "amount": "lots"}],
                               Operation.INSERT, "id")
    upserted = connector.write("orders.parquet", [
        {"id": 1, "name": "n1"}, {"id": 2, "name": "renamed"}, {"id": 6, "name": "n6"},
        {"id": 7, "colour": "red"},
    ], Operation.UPSERT, "id")

    assert statuses(created) == [Status.CREATED] * 3
    assert statuses(appended) == [Status.CREATED, Status.CREATED, Status.REJECTED]
    assert appended[2].code == "INVALID_TYPE"
    assert statuses(upserted) == [Status.UNCHANGED, Status.UPDATED, Status.CREATED,
                                  Status.REJECTED]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["orders.parquet"]
    assert pq.read_table(tmp_path / "orders.parquet").to_pylist() == [
        rows[0], {**rows[1], "name": "renamed"}, *rows[2:],
        {"id": 6, "name": "n6", "amount": None, "day": None}]

    scope = Condition("amount", "gt", 2)
    pages = list(connector.read("orders.parquet", scope, fields=["name"], page_size=2))
    assert [p.records for p in pages] == [
        [{"name": "renamed"}, {"name": "n3"}], [{"name": "n4"}, {"name": "n5"}]]
    assert [p.position for p in pages] == [3, 5]
    resumed = records(list(connector.read("orders.parquet", scope, after=3)))
    assert [r["id"] for r in resumed] == [4, 5]
    assert connector.count("orders.parquet", scope) == 4
    assert connector.get("orders.parquet", "id", ["6"])["6"]["name"] == "n6"
    assert {n: f.type for n, f in connector.describe("orders.parquet").fields.items()} == {
        "id": FieldType.INTEGER, "name": FieldType.STRING, "amount": FieldType.DECIMAL,
        "day": FieldType.DATE}


def test_parquet_resume_passes_over_row_groups(tmp_path: Path) -> None:
    table = pa.Table.from_pylist([{"id": i} for i in range(100)])
    pq.write_table(table, tmp_path / "ids.parquet", row_group_size=30)

    found = records(list(files(tmp_path).read("ids.parquet", after=65)))

    assert [r["id"] for r in found] == list(range(65, 100))


def test_parquet_without_pyarrow_says_what_to_install(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pq.write_table(pa.Table.from_pylist([{"id": 1}]), tmp_path / "ids.parquet")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)

    with pytest.raises(SpecError, match=r"patchbay\[parquet\]"):
        list(files(tmp_path).read("ids.parquet"))
