"""SOQL in the local org: parsing, type rules, null semantics and result shapes, against real SQLite."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from patchbay import sfid
from patchbay.localorg.schema import OrgSchema
from patchbay.localorg.soql import CompiledQuery, SoqlError, compile
from patchbay.localorg.storage import Storage

NOW = dt.datetime(2024, 3, 13, 12, 0, tzinfo=dt.UTC)  # a Wednesday; that week runs Sun 10th to Sat 16th
VERSION = "59.0"
CUSTOM = {"objects": [{"name": "Invoice__c", "fields": [
    {"name": "Account__c", "type": "reference", "referenceTo": "Account"},
    {"name": "Total__c", "type": "double"},
    {"name": "Due__c", "type": "date"},
    {"name": "Sent__c", "type": "datetime"},
    {"name": "Paid__c", "type": "boolean"},
    {"name": "Code__c", "type": "string", "unique": True, "caseSensitive": True},
]}]}
DUE_DATES = ["2023-03-13", "2023-12-13", "2023-12-14", "2023-12-31", "2024-01-01", "2024-02-29",
             "2024-03-01", "2024-03-09", "2024-03-10", "2024-03-12", "2024-03-13", "2024-03-14",
             "2024-03-16", "2024-03-17", "2024-03-31", "2024-04-01", "2024-06-11", "2024-06-12",
             "2025-01-01"]
SENT_TIMES = ["2024-03-12T23:59:59.999Z", "2024-03-13T00:00:00.000Z", "2024-03-13T23:59:59.999Z",
              "2024-03-14T00:00:00.000Z"]


@dataclass
class Org:
    storage: Storage
    ids: dict[str, str] = field(default_factory=dict)

    @property
    def db(self) -> sqlite3.Connection:
        return self.storage.db

    def add(self, key: str, object_name: str, **values: Any) -> str:
        obj = self.storage.schema.get(object_name)
        assert obj is not None
        record_id = self.storage.new_id(obj)
        self.storage.insert(obj, {"Id": record_id, "IsDeleted": 0, **values})
        self.ids[key] = record_id
        return record_id


@pytest.fixture
def org() -> Iterator[Org]:
    org = Org(Storage(OrgSchema.seed(CUSTOM)))
    ada = org.add("ada", "User", Name="Ada Lovelace", LastName="Lovelace", IsActive=1)
    acme = org.add("acme", "Account", Name="Acme", Industry="Technology", NumberOfEmployees=50,
                   AnnualRevenue=1000.5, OwnerId=ada)
    globex = org.add("globex", "Account", Name="globex", NumberOfEmployees=10, OwnerId=None)
    org.add("initech", "Account", Name="Initech", Industry="Banking", OwnerId=ada)
    org.add("gone", "Account", Name="Gone", NumberOfEmployees=5, IsDeleted=1, OwnerId=ada)
    org.add("ng", "Contact", LastName="Ng", AccountId=acme, Email="ng@acme.test",
            HasOptedOutOfEmail=0, Birthdate="1990-05-01")
    org.add("smith", "Contact", LastName="smith", AccountId=globex, HasOptedOutOfEmail=1)
    org.add("orphan", "Contact", LastName="Orphan", HasOptedOutOfEmail=0)
    for day in DUE_DATES:
        org.add(day, "Invoice__c", Name=day, Due__c=day)
    for moment in SENT_TIMES:
        org.add(moment, "Invoice__c", Name=moment, Sent__c=moment)
    yield org
    org.db.close()


def run(org: Org, text: str, include_deleted: bool = False) -> list[dict[str, Any]]:
    query = compile(text, org.storage.schema, include_deleted=include_deleted, now=NOW)
    return query.fetch_records(org.db, query.fetch_ids(org.db), VERSION)


def column(org: Org, text: str, name: str = "Name", include_deleted: bool = False) -> list[Any]:
    return [r[name] for r in run(org, text, include_deleted)]


def failure(org: Org, text: str) -> SoqlError:
    with pytest.raises(SoqlError) as caught:
        compile(text, org.storage.schema, include_deleted=False, now=NOW)
    return caught.value


def url(object_name: str, record_id: str) -> str:
    return f"/services/data/v{VERSION}/sobjects/{object_name}/{record_id}"


# ---------------------------------------------------------------------------------------------------
# Result shapes

def test_records_have_attributes_nested_parents_and_null_lookups(org: Org) -> None:
    records = run(org, "SELECT Id, LastName, Account.Name FROM Contact ORDER BY LastName")
    assert records == [
        {"attributes": {"type": "Contact", "url": url("Contact", org.ids["ng"])},
         "Id": org.ids["ng"], "LastName": "Ng",
         "Account": {"attributes": {"type": "Account", "url": url("Account", org.ids["acme"])},
                     "Name": "Acme"}},
        {"attributes": {"type": "Contact", "url": url("Contact", org.ids["orphan"])},
         "Id": org.ids["orphan"], "LastName": "Orphan", "Account": None},
        {"attributes": {"type": "Contact", "url": url("Contact", org.ids["smith"])},
         "Id": org.ids["smith"], "LastName": "smith",
         "Account": {"attributes": {"type": "Account", "url": url("Account", org.ids["globex"])},
                     "Name": "globex"}},
    ]


def test_keys_use_describe_casing_and_values_their_json_form(org: Org) -> None:
    [record] = run(org, "select lastname, hasoptedoutofemail, BIRTHDATE, account.annualrevenue, "
                        "account.numberofemployees from contact where lastname = 'ng'")
    assert list(record) == ["attributes", "LastName", "HasOptedOutOfEmail", "Birthdate", "Account"]
    assert record["HasOptedOutOfEmail"] is False
    assert record["Birthdate"] == "1990-05-01"
    assert record["Account"]["AnnualRevenue"] == 1000.5
    assert record["Account"]["NumberOfEmployees"] == 50


def test_datetimes_come_back_in_salesforce_json_form(org: Org) -> None:
    records = run(org, "SELECT Sent__c FROM Invoice__c WHERE Sent__c != null ORDER BY Sent__c LIMIT 1")
    assert records[0]["Sent__c"] == "2024-03-12T23:59:59.999+0000"


def test_two_level_paths_nest_and_stop_at_an_empty_lookup(org: Org) -> None:
    records = run(org, "SELECT LastName, Account.Name, Account.Owner.Name FROM Contact ORDER BY LastName")
    by_name = {r["LastName"]: r for r in records}
    assert by_name["Ng"]["Account"]["Owner"] == {
        "attributes": {"type": "User", "url": url("User", org.ids["ada"])}, "Name": "Ada Lovelace"}
    assert by_name["smith"]["Account"]["Name"] == "globex"
    assert by_name["smith"]["Account"]["Owner"] is None
    assert by_name["Orphan"]["Account"] is None


def test_a_path_may_start_with_the_object_name(org: Org) -> None:
    assert column(org, "SELECT Account.Name FROM Account WHERE Account.Name = 'acme'") == ["Acme"]


def test_custom_relationships_use_the_r_name(org: Org) -> None:
    org.add("inv", "Invoice__c", Name="INV-1", Account__c=org.ids["acme"])
    [record] = run(org, "SELECT Name, Account__r.Name FROM Invoice__c WHERE Account__r.Name = 'Acme'")
    assert record["Account__r"]["Name"] == "Acme"
    assert record["Account__r"]["attributes"]["type"] == "Account"


def test_columns_and_csv_rows_follow_select_order(org: Org) -> None:
    query = compile("SELECT LastName, Account.Name, HasOptedOutOfEmail, account.owner.name FROM Contact",
                    org.storage.schema, include_deleted=False, now=NOW)
    assert [c.path for c in query.columns] == [("LastName",), ("Account", "Name"), ("HasOptedOutOfEmail",),
                                               ("Account", "Owner", "Name")]
    assert [c.field.name for c in query.columns] == ["LastName", "Name", "HasOptedOutOfEmail", "Name"]
    assert query.csv_header == ["LastName", "Account.Name", "HasOptedOutOfEmail", "Account.Owner.Name"]
    assert query.fetch_rows(org.db, query.fetch_ids(org.db)) == [
        ["Ng", "Acme", "false", "Ada Lovelace"],
        ["smith", "globex", "true", ""],
        ["Orphan", "", "false", ""],
    ]


def test_fetch_keeps_the_order_of_the_given_ids_and_skips_missing_ones(org: Org) -> None:
    query = compile("SELECT LastName FROM Contact", org.storage.schema, include_deleted=False, now=NOW)
    wanted = [org.ids["orphan"], "003000000000zzzAAA", org.ids["ng"]]
    assert [r["LastName"] for r in query.fetch_records(org.db, wanted, VERSION)] == ["Orphan", "Ng"]
    assert query.fetch_rows(org.db, wanted) == [["Orphan"], ["Ng"]]


def test_without_order_by_rows_come_in_id_order(org: Org) -> None:
    assert column(org, "SELECT Id FROM Contact", "Id") == sorted(
        [org.ids["ng"], org.ids["smith"], org.ids["orphan"]])


def test_duplicate_fields_are_refused(org: Org) -> None:
    error = failure(org, "SELECT Name, name FROM Account")
    assert error.code == "MALFORMED_QUERY"
    assert "duplicate field selected: Name" in error.message


# ---------------------------------------------------------------------------------------------------
# Operators and null semantics

@pytest.mark.parametrize(("where", "expected"), [
    ("NumberOfEmployees = 50", ["Acme"]),
    ("NumberOfEmployees != 50", ["globex", "Initech"]),  # != also matches null
    ("NumberOfEmployees <> 50", ["globex", "Initech"]),
    ("NumberOfEmployees < 50", ["globex"]),  # < never matches null
    ("NumberOfEmployees <= 50", ["Acme", "globex"]),
    ("NumberOfEmployees > 10", ["Acme"]),
    ("NumberOfEmployees >= 10", ["Acme", "globex"]),
    ("NumberOfEmployees > 9.5", ["Acme", "globex"]),
    ("NumberOfEmployees > -1", ["Acme", "globex"]),
    ("NumberOfEmployees = null", ["Initech"]),
    ("NumberOfEmployees != null", ["Acme", "globex"]),
    ("NumberOfEmployees IN (10, 50)", ["Acme", "globex"]),
    ("NumberOfEmployees NOT IN (10)", ["Acme", "Initech"]),  # NOT IN also matches null
    ("NumberOfEmployees NOT IN (10, null)", ["Acme"]),
    ("NumberOfEmployees IN (10, null)", ["globex", "Initech"]),
    ("AnnualRevenue = 1000.5", ["Acme"]),
    ("Industry != 'Technology'", ["globex", "Initech"]),
    ("Industry < 'C'", ["Initech"]),
    ("Industry LIKE '%'", ["Acme", "Initech"]),  # LIKE never matches null
    ("NOT Industry LIKE 'T%'", ["globex", "Initech"]),
    ("NOT NumberOfEmployees < 50", ["Acme", "Initech"]),  # NOT of a false comparison on null is true
    ("NOT NumberOfEmployees = 50", ["globex", "Initech"]),
])
def test_operators(org: Org, where: str, expected: list[str]) -> None:
    assert column(org, f"SELECT Name FROM Account WHERE {where} ORDER BY Name") == expected


def test_boolean_null_means_false(org: Org) -> None:
    assert column(org, "SELECT LastName FROM Contact WHERE HasOptedOutOfEmail = null ORDER BY LastName",
                  "LastName") == ["Ng", "Orphan"]
    assert column(org, "SELECT LastName FROM Contact WHERE HasOptedOutOfEmail != null", "LastName") \
        == ["smith"]
    assert column(org, "SELECT LastName FROM Contact WHERE HasOptedOutOfEmail = true", "LastName") \
        == ["smith"]
    assert column(org, "SELECT LastName FROM Contact WHERE HasOptedOutOfEmail = FALSE ORDER BY LastName",
                  "LastName") == ["Ng", "Orphan"]


def test_a_filter_on_a_parent_field_also_matches_rows_without_a_parent(org: Org) -> None:
    def names(where: str) -> list[str]:
        return column(org, f"SELECT LastName FROM Contact WHERE {where} ORDER BY LastName", "LastName")

    assert names("Account.Name = null") == ["Orphan"]
    assert names("Account.Name != null") == ["Ng", "smith"]
    assert names("Account.Name != 'Acme'") == ["Orphan", "smith"]
    assert names("Account.Owner.Name = null") == ["Orphan", "smith"]
    assert names("Account.Owner.Name = 'ada lovelace'") == ["Ng"]


def test_text_comparisons_are_case_insensitive(org: Org) -> None:
    assert column(org, "SELECT Name FROM Account WHERE Name = 'ACME'") == ["Acme"]
    assert column(org, "SELECT Name FROM Account WHERE Name IN ('acme', 'GLOBEX') ORDER BY Name") \
        == ["Acme", "globex"]
    assert column(org, "SELECT Name FROM Account WHERE Name != 'acme' ORDER BY Name") == ["globex", "Initech"]
    assert column(org, "SELECT Name FROM Account WHERE Name LIKE 'G%'") == ["globex"]


def test_case_sensitive_fields_compare_exactly(org: Org) -> None:
    org.add("upper", "Invoice__c", Name="upper", Code__c="ABC")
    org.add("lower", "Invoice__c", Name="lower", Code__c="abc")
    assert column(org, "SELECT Name FROM Invoice__c WHERE Code__c = 'abc'") == ["lower"]
    assert column(org, "SELECT Name FROM Invoice__c WHERE Code__c IN ('ABC')") == ["upper"]
    assert column(org, "SELECT Name FROM Invoice__c WHERE Code__c LIKE 'A%'") == ["upper"]
    assert column(org, "SELECT Name FROM Invoice__c WHERE Code__c LIKE '_b_' ORDER BY Name") == ["lower"]


@pytest.mark.parametrize(("pattern", "expected"), [
    (r"50\% off", ["50% off"]),
    ("50% off", ["50% off", "50 percent off"]),
    (r"a\_b", ["a_b"]),
    ("a_b", ["a_b", "axb"]),
    ("%b", ["a_b", "axb"]),
    (r"c:\\temp", [r"c:\temp"]),
    (r"it\'s", ["it's"]),
    ("[x]%", ["[x] brackets"]),
])
def test_like_wildcards_and_escapes(org: Org, pattern: str, expected: list[str]) -> None:
    for name in ["50% off", "50 percent off", "a_b", "axb", r"c:\temp", "it's", "[x] brackets"]:
        org.add(name, "Invoice__c", Name=name, Code__c=name)
    for name_field in ("Name", "Code__c"):  # case-insensitive LIKE and case-sensitive GLOB
        assert sorted(column(org, f"SELECT Name FROM Invoice__c WHERE {name_field} LIKE '{pattern}'")) \
            == sorted(expected), name_field


def test_string_escapes(org: Org) -> None:
    org.add("obrien", "Account", Name="O'Brien \"Bob\"\n")
    assert column(org, r"SELECT Name FROM Account WHERE Name = 'O\'Brien \"Bob\"\n'") \
        == ["O'Brien \"Bob\"\n"]
    error = failure(org, r"SELECT Name FROM Account WHERE Name = 'a\qb'")
    assert error.code == "MALFORMED_QUERY"
    assert "Column:41" in error.message
    assert failure(org, "SELECT Name FROM Account WHERE Name = 'open").code == "MALFORMED_QUERY"


# ---------------------------------------------------------------------------------------------------
# AND / OR / NOT

@pytest.mark.parametrize(("where", "expected"), [
    ("Name = 'Acme' OR Name = 'Initech'", ["Acme", "Initech"]),
    ("NumberOfEmployees > 1 AND Industry = null", ["globex"]),
    ("(Name = 'Acme' OR Name = 'globex') AND NumberOfEmployees < 20", ["globex"]),
    ("Name = 'Initech' OR (NumberOfEmployees > 1 AND NumberOfEmployees < 20)", ["globex", "Initech"]),
    ("NOT (Name = 'Acme' OR Name = 'globex')", ["Initech"]),
    ("NOT Name = 'Acme' AND NOT Name = 'globex'", ["Initech"]),
    ("NOT NOT Name = 'Acme'", ["Acme"]),
    ("((Name = 'Acme'))", ["Acme"]),
])
def test_logic(org: Org, where: str, expected: list[str]) -> None:
    assert column(org, f"SELECT Name FROM Account WHERE {where} ORDER BY Name") == expected


def test_mixing_and_with_or_needs_parentheses(org: Org) -> None:
    error = failure(org, "SELECT Id FROM Account WHERE Name = 'a' AND Name = 'b' OR Name = 'c'")
    assert error.code == "MALFORMED_QUERY"
    assert error.message.splitlines()[1] == " " * 55 + "^"
    assert "ERROR at Row:1:Column:56" in error.message
    assert failure(org, "SELECT Id FROM Account WHERE Name = 'a' OR Name = 'b' AND Name = 'c'").code \
        == "MALFORMED_QUERY"


def test_infix_not_like_is_malformed(org: Org) -> None:
    error = failure(org, "SELECT Id FROM Account WHERE Name NOT LIKE 'A%'")
    assert error.code == "MALFORMED_QUERY"
    assert "ERROR at Row:1:Column:35" in error.message


# ---------------------------------------------------------------------------------------------------
# Dates

@pytest.mark.parametrize(("where", "expected"), [
    ("Due__c = TODAY", ["2024-03-13"]),
    ("Due__c = YESTERDAY", ["2024-03-12"]),
    ("Due__c = TOMORROW", ["2024-03-14"]),
    ("Due__c < TODAY AND Due__c > 2024-03-09", ["2024-03-10", "2024-03-12"]),
    ("Due__c <= TODAY AND Due__c >= 2024-03-12", ["2024-03-12", "2024-03-13"]),
    ("Due__c > TODAY AND Due__c < 2024-03-16", ["2024-03-14"]),
    ("Due__c >= TODAY AND Due__c < 2024-03-16", ["2024-03-13", "2024-03-14"]),
    ("Due__c = LAST_N_DAYS:1", ["2024-03-12", "2024-03-13"]),
    ("Due__c = LAST_N_DAYS:3", ["2024-03-10", "2024-03-12", "2024-03-13"]),
    ("Due__c = NEXT_N_DAYS:3", ["2024-03-14", "2024-03-16"]),
    ("Due__c = N_DAYS_AGO:1", ["2024-03-12"]),
    ("Due__c = N_DAYS_AGO:0", ["2024-03-13"]),
    ("Due__c = LAST_90_DAYS AND Due__c < 2024-02-01", ["2023-12-14", "2023-12-31", "2024-01-01"]),
    ("Due__c = NEXT_90_DAYS AND Due__c > 2024-04-01", ["2024-06-11"]),
    ("Due__c = THIS_WEEK", ["2024-03-10", "2024-03-12", "2024-03-13", "2024-03-14", "2024-03-16"]),
    ("Due__c = LAST_WEEK", ["2024-03-09"]),
    ("Due__c = NEXT_WEEK", ["2024-03-17"]),
    ("Due__c = LAST_MONTH", ["2024-02-29"]),
    ("Due__c = NEXT_MONTH", ["2024-04-01"]),
    ("Due__c = THIS_MONTH AND Due__c > 2024-03-16", ["2024-03-17", "2024-03-31"]),
    ("Due__c = LAST_YEAR AND Due__c > 2023-12-01", ["2023-12-13", "2023-12-14", "2023-12-31"]),
    ("Due__c = NEXT_YEAR", ["2025-01-01"]),
    ("Due__c > THIS_YEAR", ["2025-01-01"]),
    ("Due__c < THIS_YEAR AND Due__c > 2023-12-13", ["2023-12-14", "2023-12-31"]),
    ("Due__c IN (YESTERDAY, TOMORROW, 2025-01-01)", ["2024-03-12", "2024-03-14", "2025-01-01"]),
    ("Due__c = 2024-02-29", ["2024-02-29"]),
    ("Due__c != THIS_YEAR AND Due__c > 2023-12-30", ["2023-12-31", "2025-01-01"]),
])
def test_date_literals_on_a_date_field(org: Org, where: str, expected: list[str]) -> None:
    assert column(org, f"SELECT Name FROM Invoice__c WHERE {where} ORDER BY Due__c") == expected


def test_date_literal_ranges_cover_whole_days_on_a_datetime_field(org: Org) -> None:
    def names(where: str) -> list[str]:
        return column(org, f"SELECT Name FROM Invoice__c WHERE Sent__c != null AND {where} ORDER BY Sent__c")

    assert names("Sent__c = TODAY") == ["2024-03-13T00:00:00.000Z", "2024-03-13T23:59:59.999Z"]
    assert names("Sent__c < TODAY") == ["2024-03-12T23:59:59.999Z"]
    assert names("Sent__c > TODAY") == ["2024-03-14T00:00:00.000Z"]
    assert names("Sent__c <= TODAY") == SENT_TIMES[:3]
    assert names("Sent__c >= TODAY") == SENT_TIMES[1:]
    assert names("Sent__c != TODAY") == [SENT_TIMES[0], SENT_TIMES[3]]
    assert names("Sent__c = LAST_N_DAYS:1") == SENT_TIMES[:3]
    assert names("Sent__c > 2024-03-13T00:00:00Z") == SENT_TIMES[2:]
    assert names("Sent__c >= 2024-03-13T01:00:00+01:00") == SENT_TIMES[1:]
    assert names("Sent__c = 2024-03-13T23:59:59.999Z") == [SENT_TIMES[2]]


def test_the_incremental_sync_query_works(org: Org) -> None:
    records = run(org, "SELECT Id, Name FROM Invoice__c WHERE Sent__c > 2024-03-13T00:00:00Z "
                       "ORDER BY Sent__c, Id")
    assert [r["Name"] for r in records] == SENT_TIMES[2:]


def test_now_may_be_naive_utc(org: Org) -> None:
    query = compile("SELECT Id FROM Invoice__c WHERE Due__c = TODAY", org.storage.schema,
                    include_deleted=False, now=NOW.replace(tzinfo=None))
    assert query.fetch_ids(org.db) == [org.ids["2024-03-13"]]


@pytest.mark.parametrize(("where", "message"), [
    ("CreatedDate > '2024-01-01'", "value of filter criterion for field 'CreatedDate' must be of type "
                                   "dateTime and should not be enclosed in quotes"),
    ("Sent__c = 2024-01-01", "field 'Sent__c' must be of type dateTime"),
    ("Due__c = '2024-01-01'", "field 'Due__c' must be of type date and should not be enclosed in quotes"),
    ("Due__c = 2024-01-01T00:00:00Z", "field 'Due__c' must be of type date"),
    ("Name = 5", "field 'Name' must be of type string and should be enclosed in quotes"),
    ("Name = TODAY", "field 'Name' must be of type string"),
    ("Total__c = '5'", "field 'Total__c' must be of type double and should not be enclosed in quotes"),
    ("Paid__c = 'true'", "field 'Paid__c' must be of type boolean"),
    ("Total__c LIKE '5%'", "field 'Total__c' must be of type double"),
    ("Account__c = 5", "field 'Account__c' must be of type id and should be enclosed in quotes"),
])
def test_values_must_fit_the_field_type(org: Org, where: str, message: str) -> None:
    error = failure(org, f"SELECT Id FROM Invoice__c WHERE {where}")
    assert error.code == "INVALID_FIELD"
    assert message in error.message
    assert "ERROR at Row:1:Column:33" in error.message  # at the field


@pytest.mark.parametrize("literal", ["2024-13-01", "2024-02-30T00:00:00Z", "LAST_N_DAYS", "THIS_QUARTER",
                                     "2024-01-01T00:00:00", "TODAY:3"])
def test_malformed_dates(org: Org, literal: str) -> None:
    assert failure(org, f"SELECT Id FROM Invoice__c WHERE Due__c = {literal}").code == "MALFORMED_QUERY"


# ---------------------------------------------------------------------------------------------------
# Ids

def test_ids_compare_in_18_character_form(org: Org) -> None:
    acme = org.ids["acme"]
    for written in (acme[:15], acme, acme.lower(), acme[:15] + acme[15:].lower()):
        assert column(org, f"SELECT Name FROM Account WHERE Id = '{written}'") == ["Acme"], written
        assert column(org, f"SELECT LastName FROM Contact WHERE AccountId IN ('{written}')",
                      "LastName") == ["Ng"], written
    assert column(org, f"SELECT Name FROM Account WHERE Id != '{acme[:15]}' ORDER BY Name") \
        == ["globex", "Initech"]
    assert column(org, f"SELECT LastName FROM Contact WHERE AccountId != '{acme[:15]}' ORDER BY LastName",
                  "LastName") == ["Orphan", "smith"]


def test_ids_page_by_comparison(org: Org) -> None:
    first = org.ids["acme"]
    assert column(org, f"SELECT Name FROM Account WHERE Id > '{first}'") == ["globex", "Initech"]


def test_a_malformed_id_is_refused(org: Org) -> None:
    error = failure(org, "SELECT Id FROM Account WHERE Id = 'nope'")
    assert error.code == "INVALID_QUERY_FILTER_OPERATOR"
    assert "invalid ID field: nope" in error.message
    assert sfid.to18("nope") is None


# ---------------------------------------------------------------------------------------------------
# ORDER BY, LIMIT, OFFSET

@pytest.mark.parametrize(("order", "expected"), [
    ("Industry", ["globex", "Initech", "Acme"]),  # nulls first
    ("Industry ASC", ["globex", "Initech", "Acme"]),
    ("Industry DESC", ["globex", "Acme", "Initech"]),  # nulls first for DESC too
    ("Industry NULLS LAST", ["Initech", "Acme", "globex"]),
    ("Industry DESC NULLS LAST", ["Acme", "Initech", "globex"]),
    ("Industry ASC NULLS FIRST", ["globex", "Initech", "Acme"]),
    ("Name", ["Acme", "globex", "Initech"]),  # case-insensitive
    ("name desc", ["Initech", "globex", "Acme"]),
    ("NumberOfEmployees DESC", ["Initech", "Acme", "globex"]),
    ("Owner.Name, Name DESC", ["globex", "Initech", "Acme"]),
])
def test_order_by(org: Org, order: str, expected: list[str]) -> None:
    assert column(org, f"SELECT Name FROM Account ORDER BY {order}") == expected


def test_order_by_a_parent_field(org: Org) -> None:
    assert column(org, "SELECT LastName FROM Contact ORDER BY Account.Name DESC NULLS LAST",
                  "LastName") == ["smith", "Ng", "Orphan"]


def test_textarea_fields_can_not_be_sorted(org: Org) -> None:
    assert failure(org, "SELECT Id FROM Account ORDER BY Description").code == "INVALID_FIELD"


@pytest.mark.parametrize(("tail", "expected"), [
    ("LIMIT 2", ["Acme", "globex"]),
    ("LIMIT 0", []),
    ("OFFSET 1", ["globex", "Initech"]),
    ("LIMIT 1 OFFSET 1", ["globex"]),
    ("LIMIT 5 OFFSET 2", ["Initech"]),
    ("OFFSET 2000", []),
])
def test_limit_and_offset(org: Org, tail: str, expected: list[str]) -> None:
    assert column(org, f"SELECT Name FROM Account ORDER BY Name {tail}") == expected


def test_offset_is_at_most_2000(org: Org) -> None:
    error = failure(org, "SELECT Id FROM Account OFFSET 2001")
    assert error.code == "NUMBER_OUTSIDE_VALID_RANGE"
    assert "ERROR at Row:1:Column:31" in error.message


@pytest.mark.parametrize("tail", ["LIMIT -1", "LIMIT 1.5", "LIMIT x", "OFFSET 1 LIMIT 1", "LIMIT"])
def test_malformed_limits(org: Org, tail: str) -> None:
    assert failure(org, f"SELECT Id FROM Account {tail}").code == "MALFORMED_QUERY"


# ---------------------------------------------------------------------------------------------------
# COUNT

def test_count_all(org: Org) -> None:
    query = compile("SELECT COUNT() FROM Account WHERE NumberOfEmployees != 50", org.storage.schema,
                    include_deleted=False, now=NOW)
    assert query.count_only
    assert query.columns == ()
    assert query.fetch_count(org.db) == 2
    assert org.db.execute(query.count_sql, query.params).fetchone()[0] == 2
    limited = compile("select count() from Account limit 1", org.storage.schema,
                      include_deleted=False, now=NOW)
    assert limited.fetch_count(org.db) == 1


def test_count_of_a_field_is_an_aggregate_result(org: Org) -> None:
    query = compile("SELECT COUNT(Id), COUNT(Industry) industries, COUNT(Owner.Name) FROM Account",
                    org.storage.schema, include_deleted=False, now=NOW)
    assert not query.count_only
    assert [a.name for a in query.aggregates] == ["expr0", "industries", "expr1"]
    assert [a.path for a in query.aggregates] == [("Id",), ("Industry",), ("Owner", "Name")]
    assert query.fetch_aggregates(org.db) == [
        {"attributes": {"type": "AggregateResult"}, "expr0": 3, "industries": 2, "expr1": 2}]


def test_count_respects_include_deleted(org: Org) -> None:
    query = compile("SELECT COUNT(Id) FROM Account", org.storage.schema, include_deleted=True, now=NOW)
    assert query.fetch_aggregates(org.db)[0]["expr0"] == 4


@pytest.mark.parametrize("text", [
    "SELECT COUNT(), Name FROM Account",
    "SELECT Name, COUNT() FROM Account",
    "SELECT COUNT(Id), Name FROM Account",
    "SELECT COUNT(Id) FROM Account ORDER BY Name",
    "SELECT COUNT(Id) c, COUNT(Name) c FROM Account",
    "SELECT MAX(Name) FROM Account",
])
def test_count_misuse_is_malformed(org: Org, text: str) -> None:
    assert failure(org, text).code == "MALFORMED_QUERY"


# ---------------------------------------------------------------------------------------------------
# Deleted rows

def test_deleted_rows_only_with_include_deleted(org: Org) -> None:
    assert "Gone" not in column(org, "SELECT Name FROM Account")
    assert column(org, "SELECT Name FROM Account WHERE IsDeleted = true", include_deleted=True) == ["Gone"]
    assert len(column(org, "SELECT Name FROM Account", include_deleted=True)) == 4


def test_a_deleted_parent_reads_as_an_empty_lookup(org: Org) -> None:
    org.add("late", "Contact", LastName="Late", AccountId=org.ids["gone"])
    [record] = run(org, "SELECT LastName, Account.Name FROM Contact WHERE LastName = 'Late'")
    assert record["Account"] is None
    [record] = run(org, "SELECT LastName, Account.Name FROM Contact WHERE LastName = 'Late'",
                   include_deleted=True)
    assert record["Account"]["Name"] == "Gone"


# ---------------------------------------------------------------------------------------------------
# Errors

def test_unknown_field(org: Org) -> None:
    error = failure(org, "SELECT Id, Foo FROM Account")
    assert error.code == "INVALID_FIELD"
    assert error.message == ("SELECT Id, Foo FROM Account\n"
                             "           ^\n"
                             "ERROR at Row:1:Column:12\n"
                             "No such column 'Foo' on entity 'Account'.")


@pytest.mark.parametrize(("text", "message"), [
    ("SELECT Account.Foo FROM Contact", "No such column 'Foo' on entity 'Account'."),
    ("SELECT Acount.Name FROM Contact", "Didn't understand relationship 'Acount' in field path."),
    ("SELECT Account FROM Contact", "No such column 'Account' on entity 'Contact'."),
    ("SELECT Id FROM Contact WHERE Account.Foo = 'x'", "No such column 'Foo' on entity 'Account'."),
    ("SELECT Id FROM Contact ORDER BY Foo", "No such column 'Foo' on entity 'Contact'."),
    ("SELECT COUNT(Foo) FROM Contact", "No such column 'Foo' on entity 'Contact'."),
])
def test_unknown_fields_and_relationships(org: Org, text: str, message: str) -> None:
    error = failure(org, text)
    assert error.code == "INVALID_FIELD"
    assert error.message.endswith(message)


def test_unknown_object(org: Org) -> None:
    error = failure(org, "SELECT Id FROM Foo__c")
    assert error.code == "INVALID_TYPE"
    assert error.message.endswith("ERROR at Row:1:Column:16\nsObject type 'Foo__c' is not supported.")


def test_keywords_and_names_are_case_insensitive(org: Org) -> None:
    assert column(org, "select NAME from ACCOUNT where name = 'acme' order by name asc nulls last limit 1") \
        == ["Acme"]
    assert column(org, "SELECT Name FROM invoice__C WHERE due__C = today") == ["2024-03-13"]


@pytest.mark.parametrize(("text", "column_number"), [
    ("SELECT FROM Account", 8),
    ("SELECT Id Account", 11),
    ("SELECT Id FROM Account WHERE", 29),
    ("SELECT Id FROM Account WHERE Name = ", 37),
    ("SELECT Id FROM Account WHERE Name 'x'", 35),
    ("SELECT Id FROM Account WHERE Name IN ()", 39),
    ("SELECT Id FROM Account WHERE Name LIKE 5", 40),
    ("SELECT Id FROM Account WHERE (Name = 'x'", 41),
    ("SELECT Id FROM Account ORDER Name", 30),
    ("SELECT Id FROM Account ORDER BY Name NULLS", 43),
    ("SELECT Id, FROM Account", 12),
    ("SELECT Id FROM Account WHERE Name = 'x' extra", 41),
    ("SELECT Id FROM Account WHERE Name = \"x\"", 37),
    ("SELECT Id, (SELECT Id, (SELECT Id FROM Cases) FROM Contacts) FROM Account", 24),
    ("SELECT FIELDS(ALL) FROM Account", 8),
    ("SELECT Id FROM Account WHERE Id IN (SELECT AccountId FROM Contact)", 37),
    ("SELECT Id FROM Account GROUP BY Name", 24),
    ("SELECT Id FROM Account WHERE Name INCLUDES ('a')", 35),
    ("SELECT A.B.C.D.E.F.Name FROM Account", 8),
    ("UPDATE Account", 1),
])
def test_malformed_queries_point_at_the_column(org: Org, text: str, column_number: int) -> None:
    error = failure(org, text)
    assert error.code == "MALFORMED_QUERY"
    lines = error.message.splitlines()
    assert lines[0] == text
    assert lines[1] == " " * (column_number - 1) + "^"
    assert lines[2] == f"ERROR at Row:1:Column:{column_number}"


def test_errors_on_later_lines_name_their_row(org: Org) -> None:
    error = failure(org, "SELECT Id\nFROM Account\n  WHERE Name = = 'x'")
    assert error.code == "MALFORMED_QUERY"
    assert error.message.splitlines()[:3] == ["  WHERE Name = = 'x'", "               ^",
                                              "ERROR at Row:3:Column:16"]


def test_five_relationship_levels_are_allowed(org: Org) -> None:
    text = "SELECT Parent.Parent.Parent.Parent.Parent.Name FROM Account"
    records = run(org, text)
    assert all(r["Parent"] is None for r in records)


# ---------------------------------------------------------------------------------------------------
# Parameters

class _Recorder:
    """A connection that remembers every statement it runs."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.statements: list[str] = []

    def execute(self, sql: str, params: Any = ()) -> sqlite3.Cursor:
        self.statements.append(sql)
        return self.db.execute(sql, params)


def test_values_only_travel_as_parameters(org: Org) -> None:
    acme = org.ids["acme"]
    text = ("SELECT Name, Account__r.Name FROM Invoice__c WHERE (Name = 'Zanzibar\\' OR 1=1 --' "
            "OR Name LIKE 'Quux%' OR Name IN ('Wibble', 'Wobble')) AND Total__c != 12345.5 "
            f"AND Due__c != 2031-07-04 AND Sent__c != 2031-07-05T06:07:08Z AND Account__c != '{acme[:15]}' "
            "AND Due__c != LAST_N_DAYS:17 ORDER BY Name LIMIT 77 OFFSET 33")
    query = compile(text, org.storage.schema, include_deleted=False, now=NOW)
    recorder = _Recorder(org.db)
    query.fetch_records(recorder, [acme], VERSION)  # type: ignore[arg-type]
    query.fetch_rows(recorder, [acme])  # type: ignore[arg-type]
    statements = [query.ids_sql, query.count_sql, *recorder.statements]
    for value in ("Zanzibar", "1=1", "Quux", "Wibble", "Wobble", "12345", "2031", acme, acme[:15],
                  "2024-02-25", "77", "33"):
        assert all(value not in sql for sql in statements), value
    params = [str(p) for p in query.params]
    assert "Zanzibar' OR 1=1 --" in params
    assert "12345.5" in params
    assert "2031-07-05T06:07:08.000Z" in params
    assert acme in params
    assert "2024-02-25" in params  # the start of LAST_N_DAYS:17
    assert params[-2:] == ["77", "33"]
    assert query.fetch_ids(org.db) == []


def test_aggregate_sql_is_parameterised(org: Org) -> None:
    query = compile("SELECT COUNT(Id) FROM Account WHERE Name != 'Zanzibar' LIMIT 9",
                    org.storage.schema, include_deleted=False, now=NOW)
    assert "Zanzibar" not in query.aggregate_sql
    assert "9" not in query.aggregate_sql
    assert org.db.execute(query.aggregate_sql, query.params).fetchall() == [(3,)]


def test_compiled_query_exposes_its_parts(org: Org) -> None:
    query = compile("SELECT Name FROM Account LIMIT 3 OFFSET 1", org.storage.schema,
                    include_deleted=False, now=NOW)
    assert isinstance(query, CompiledQuery)
    assert query.object.name == "Account"
    assert (query.limit, query.offset) == (3, 1)
    assert not query.is_aggregate
    assert query.aggregates == ()
