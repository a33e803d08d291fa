"""Parent-to-child subqueries in the local org's SOQL: a parent with its children, as
Salesforce answers (null without children, else totalSize/done/records), and the column
metadata `query?columns=true` answers."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from patchbay.localorg.org import Org, OrgConfig, Session
from patchbay.localorg.soql import SoqlError, compile

NOW = dt.datetime(2024, 3, 13, 12, 0, tzinfo=dt.UTC)
INVOICES = {"objects": [{"name": "Invoice__c", "fields": [
    {"name": "Account__c", "type": "reference", "referenceTo": "Account"},
    {"name": "Total__c", "type": "double"}]}]}


@pytest.fixture
def org() -> Org:
    return Org(OrgConfig(custom_schema=INVOICES))


def user(org: Org) -> Session:
    return org.login("integration@patchbay.local", "password")


def run(org: Org, text: str) -> list[dict[str, Any]]:
    query = compile(text, org.schema, include_deleted=False, now=NOW)
    return query.fetch_records(org.storage.db, query.fetch_ids(org.storage.db), "59.0")


def create(org: Org, object_name: str, **values: Any) -> str:
    return org.create(org.sobject(object_name), values, user(org))


def test_a_subquery_reads_each_parent_with_its_children(org: Org) -> None:
    acme = create(org, "Account", Name="Acme")
    create(org, "Account", Name="Bare")
    ng = create(org, "Contact", LastName="Ng", AccountId=acme)
    li = create(org, "Contact", LastName="Li", AccountId=acme)
    gone = create(org, "Contact", LastName="Gone", AccountId=acme)
    org.delete(org.sobject("Contact"), gone)
    records = run(org, "SELECT Name, (SELECT LastName FROM Contacts ORDER BY LastName) "
                       "FROM Account ORDER BY Name")

    def contact(record_id: str, last_name: str) -> dict[str, Any]:
        return {"attributes": {"type": "Contact",
                               "url": f"/services/data/v59.0/sobjects/Contact/{record_id}"},
                "LastName": last_name}

    assert [(r["Name"], r["Contacts"]) for r in records] == [
        ("Acme", {"totalSize": 2, "done": True, "records": [contact(li, "Li"), contact(ng, "Ng")]}),
        ("Bare", None)]
    assert list(records[0]) == ["attributes", "Name", "Contacts"]


def test_subqueries_filter_limit_and_follow_custom_and_standard_relationships(org: Org) -> None:
    acme = create(org, "Account", Name="Acme")
    child = create(org, "Account", Name="Acme Lyon", ParentId=acme)
    for total in (5, 50, 500):
        create(org, "Invoice__c", Name=f"I-{total}", Account__c=acme, Total__c=total)
    create(org, "Opportunity", Name="Deal", StageName="Prospecting", CloseDate="2024-04-01",
           AccountId=acme)
    create(org, "Case", Subject="Broken", AccountId=acme)
    [record] = run(org, "SELECT Id, (SELECT Name FROM Invoices__r WHERE Total__c > 10 "
                        "ORDER BY Total__c DESC LIMIT 1), (SELECT Name FROM ChildAccounts), "
                        "(SELECT Name, Account.Name FROM Opportunities), (SELECT Subject FROM Cases) "
                        "FROM Account WHERE Id = '" + acme + "'")
    assert [r["Name"] for r in record["Invoices__r"]["records"]] == ["I-500"]
    assert record["Invoices__r"]["totalSize"] == 1
    assert [(r["attributes"]["url"].rsplit("/", 1)[1], r["Name"])
            for r in record["ChildAccounts"]["records"]] == [(child, "Acme Lyon")]
    assert record["Opportunities"]["records"][0]["Account"]["Name"] == "Acme"
    assert record["Cases"]["records"][0]["Subject"] == "Broken"


@pytest.mark.parametrize(("text", "code", "reason"), [
    ("SELECT Id, (SELECT Id FROM Nothings) FROM Account", "INVALID_TYPE",
     "Didn't understand relationship 'Nothings' in FROM part of query call."),
    ("SELECT Id, (SELECT COUNT() FROM Contacts) FROM Account", "MALFORMED_QUERY",
     "a subquery can't count or aggregate"),
    ("SELECT Id, (SELECT Nope FROM Contacts) FROM Account", "INVALID_FIELD",
     "No such column 'Nope' on entity 'Contact'."),
    ("SELECT Id, (SELECT Id FROM Contacts), (SELECT Id FROM contacts) FROM Account",
     "MALFORMED_QUERY", "duplicate subquery: Contacts"),
    ("SELECT Id, " + ", ".join(["(SELECT Id FROM Contacts)"] * 21) + " FROM Account",
     "MALFORMED_QUERY", "A query can hold at most 20 subqueries"),
])
def test_a_wrong_subquery_is_refused(org: Org, text: str, code: str, reason: str) -> None:
    with pytest.raises(SoqlError) as raised:
        compile(text, org.schema, include_deleted=False, now=NOW)
    assert raised.value.code == code
    assert reason in raised.value.message


def test_column_metadata_names_fields_parents_and_subqueries(org: Org) -> None:
    query = compile("SELECT Id, Account.Name, (SELECT Subject FROM Cases) FROM Contact",
                    org.schema, include_deleted=False, now=NOW)
    metadata = query.column_metadata()
    assert (metadata["entityName"], metadata["idSelected"], metadata["keyPrefixes"],
            metadata["groupBy"]) == ("Contact", True, ["003"], False)

    def shape(columns: list[dict[str, Any]]) -> list[Any]:
        return [(c["columnName"], c["aggregate"], c["apexType"], shape(c["joinColumns"]))
                for c in columns]

    assert shape(metadata["columnMetadata"]) == [
        ("Id", False, "Id", []), ("Account", False, None, [("Name", False, "String", [])]),
        ("Cases", True, None, [("Subject", False, "String", [])])]
    counted = compile("SELECT COUNT(Id) total FROM Account", org.schema, include_deleted=False,
                      now=NOW).column_metadata()
    assert shape(counted["columnMetadata"]) == [("total", True, "Integer", [])]
