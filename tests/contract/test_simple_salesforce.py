"""The contract checklist (spec section 10), with simple-salesforce unmodified."""

from __future__ import annotations

import csv
import datetime as dt
import io

import pytest
import requests
from simple_salesforce import Salesforce
from simple_salesforce.exceptions import (
    SalesforceAuthenticationFailed,
    SalesforceExpiredSession,
    SalesforceMalformedRequest,
    SalesforceRefusedRequest,
    SalesforceResourceNotFound,
)

from patchbay.localorg.running import LocalOrg
from tests.contract.conftest import KEY, PASSWORD, SECRET, TOKEN, USERNAME, routed


def control(org: LocalOrg, action: str, body: dict[str, object] | None = None) -> None:
    requests.post(f"{org.url}/_emulator/{action}", json=body or {}, timeout=10,
                  headers={"Authorization": f"Bearer {org.control_token}"}).raise_for_status()


# 1. logins


def test_soap_oauth_password_and_client_credentials_logins_work(local_org: LocalOrg) -> None:
    soap = Salesforce(username=USERNAME, password=PASSWORD, security_token=TOKEN,
                      session=routed(local_org))
    oauth = Salesforce(username=USERNAME, password=PASSWORD, consumer_key=KEY,
                       consumer_secret=SECRET, session=routed(local_org))
    client = Salesforce(consumer_key=KEY, consumer_secret=SECRET, domain="patchbay",
                        session=routed(local_org))
    for sf in (soap, oauth, client):
        assert sf.query("SELECT Id FROM Organization")["totalSize"] == 1
    assert len({soap.session_id, oauth.session_id, client.session_id}) == 3


def test_a_wrong_password_raises_authentication_failed(local_org: LocalOrg) -> None:
    with pytest.raises(SalesforceAuthenticationFailed) as raised:
        Salesforce(username=USERNAME, password="wrong", security_token=TOKEN,
                   session=routed(local_org))
    assert "INVALID_LOGIN" in str(raised.value)
    with pytest.raises(SalesforceAuthenticationFailed, match="invalid_grant"):
        Salesforce(username=USERNAME, password="wrong", consumer_key=KEY, consumer_secret=SECRET,
                   session=routed(local_org))


# 2. expired sessions


def test_expired_session_logs_in_again_or_raises_for_a_direct_session(
        local_org: LocalOrg, sf: Salesforce) -> None:
    direct = Salesforce(session_id=sf.session_id, instance_url=local_org.url.replace("http", "https"),
                        session=routed(local_org))
    assert direct.query("SELECT Id FROM Organization")["totalSize"] == 1
    old = sf.session_id
    control(local_org, "sessions/expire")
    assert sf.query("SELECT Id FROM Organization")["totalSize"] == 1
    assert sf.session_id != old
    with pytest.raises(SalesforceExpiredSession, match="INVALID_SESSION_ID"):
        direct.query("SELECT Id FROM Organization")


# 3. records


def test_create_get_update_upsert_delete_and_query_deleted(local_org: LocalOrg, sf: Salesforce) -> None:
    control(local_org, "schema", {"fields": {"Account": [
        {"name": "Legacy_Id__c", "type": "string", "length": 40, "externalId": True,
         "unique": True}]}})
    created = sf.Account.create({"Name": "Acme", "NumberOfEmployees": 12})
    assert created["success"] and created["id"].startswith("001") and len(created["id"]) == 18
    record = sf.Account.get(created["id"])
    assert record["Name"] == "Acme" and record["NumberOfEmployees"] == 12
    assert record["CreatedDate"].endswith("+0000")
    assert sf.Account.update(created["id"], {"Name": "Acme GmbH"}) == 204
    assert sf.Account.get(created["id"][:15])["Name"] == "Acme GmbH"

    assert sf.Account.upsert("Legacy_Id__c/L-1", {"Name": "Legacy One"}) == 201
    assert sf.Account.upsert("Legacy_Id__c/L-1", {"Name": "Legacy One Ltd"}) == 200
    assert sf.Account.get_by_custom_id("Legacy_Id__c", "l-1")["Name"] == "Legacy One Ltd"

    assert sf.Account.delete(created["id"]) == 204
    with pytest.raises(SalesforceResourceNotFound, match="ENTITY_IS_DELETED"):
        sf.Account.get(created["id"])
    alive = sf.query(f"SELECT Id FROM Account WHERE Id = '{created['id']}'")
    assert alive["totalSize"] == 0
    everything = sf.query_all(f"SELECT Id, IsDeleted FROM Account WHERE Id = '{created['id']}'",
                              include_deleted=True)
    assert everything["records"][0]["IsDeleted"] is True


def test_validation_errors_have_salesforce_codes(local_org: LocalOrg, sf: Salesforce) -> None:
    control(local_org, "schema", {"fields": {"Account": [
        {"name": "Tier__c", "type": "picklist", "picklist": ["Gold", "Silver"], "restricted": True}]}})
    with pytest.raises(SalesforceMalformedRequest) as missing:
        sf.Contact.create({"FirstName": "No Last Name"})
    assert missing.value.content[0]["errorCode"] == "REQUIRED_FIELD_MISSING"
    assert missing.value.content[0]["fields"] == ["LastName"]
    with pytest.raises(SalesforceMalformedRequest) as unknown:
        sf.Account.create({"Name": "x", "Nope__c": 1})
    assert unknown.value.content[0]["errorCode"] == "INVALID_FIELD"
    with pytest.raises(SalesforceMalformedRequest) as too_long:
        sf.Account.create({"Name": "x" * 300})
    assert too_long.value.content[0]["errorCode"] == "STRING_TOO_LONG"
    with pytest.raises(SalesforceMalformedRequest) as picklist:
        sf.Account.create({"Name": "x", "Tier__c": "Platinum"})
    assert picklist.value.content[0]["errorCode"] == "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST"
    with pytest.raises(SalesforceMalformedRequest) as reference:
        sf.Contact.create({"LastName": "Ng", "AccountId": "001000000000999AAA"})
    assert reference.value.content[0]["errorCode"] == "INVALID_CROSS_REFERENCE_KEY"


def test_describe_lists_objects_and_fields(sf: Salesforce) -> None:
    names = {o["name"] for o in sf.describe()["sobjects"]}
    assert {"Account", "Contact", "Opportunity", "Lead", "Case", "Product2", "User"} <= names
    fields = {f["name"]: f for f in sf.Opportunity.describe()["fields"]}
    assert fields["StageName"]["type"] == "picklist"
    assert [p["value"] for p in fields["StageName"]["picklistValues"]] == [
        "Prospecting", "Qualification", "Needs Analysis", "Value Proposition", "Id. Decision Makers",
        "Perception Analysis", "Proposal/Price Quote", "Negotiation/Review", "Closed Won", "Closed Lost"]
    assert fields["StageName"]["restrictedPicklist"] is False
    assert fields["CloseDate"]["nillable"] is False and fields["Amount"]["type"] == "currency"
    assert fields["AccountId"]["referenceTo"] == ["Account"]


# 4. query paging


def test_query_all_pages_through_2500_rows(local_org: LocalOrg, sf: Salesforce) -> None:
    org = local_org.org
    session = org.login(USERNAME, PASSWORD)
    account = org.sobject("Account")
    for i in range(2500):
        org.create(account, {"Name": f"Company {i:04d}"}, session)
    sf.headers["Sforce-Query-Options"] = "batchSize=1000"
    first = sf.query("SELECT Id, Name FROM Account ORDER BY Name")
    assert (first["totalSize"], first["done"], len(first["records"])) == (2500, False, 1000)
    second = sf.query_more(first["nextRecordsUrl"], identifier_is_url=True)
    assert second["totalSize"] == 2500 and len(second["records"]) == 1000
    pages = [first, second]
    while not pages[-1]["done"]:
        pages.append(sf.query_more(pages[-1]["nextRecordsUrl"], identifier_is_url=True))
    assert len(pages) == 3
    names = [r["Name"] for page in pages for r in page["records"]]
    assert names == [f"Company {i:04d}" for i in range(2500)]
    assert len(sf.query_all("SELECT Id FROM Account")["records"]) == 2500


# 5. updated and deleted


def test_updated_and_deleted_since_a_time(local_org: LocalOrg, sf: Salesforce) -> None:
    start = dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.UTC)
    control(local_org, "clock", {"now": start.isoformat()})
    kept = sf.Contact.create({"LastName": "Kept"})["id"]
    gone = sf.Contact.create({"LastName": "Gone"})["id"]
    control(local_org, "clock", {"advance_seconds": 600})
    sf.Contact.delete(gone)
    control(local_org, "clock", {"advance_seconds": 600})
    end = start + dt.timedelta(minutes=30)
    updated = sf.Contact.updated(start, end)
    assert updated["ids"] == [kept]
    deleted = sf.Contact.deleted(start, end)
    assert [d["id"] for d in deleted["deletedRecords"]] == [gone]
    assert deleted["deletedRecords"][0]["deletedDate"].startswith("2024-03-01T12:10:00")


def test_the_recycle_bin_and_undelete(local_org: LocalOrg, sf: Salesforce) -> None:
    start = dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.UTC)
    control(local_org, "clock", {"now": start.isoformat()})
    gone = sf.Contact.create({"LastName": "Binned", "Email": "binned@example.com"})["id"]
    control(local_org, "clock", {"advance_seconds": 600})
    sf.Contact.delete(gone)
    binned = "SELECT Id, LastName, IsDeleted FROM Contact WHERE IsDeleted = true"
    assert sf.query(binned)["totalSize"] == 0, "query never sees the recycle bin"
    in_bin = sf.query_all(binned, include_deleted=True)["records"]
    assert [(r["Id"], r["LastName"], r["IsDeleted"]) for r in in_bin] == [(gone, "Binned", True)]
    with pytest.raises(SalesforceResourceNotFound, match="ENTITY_IS_DELETED"):
        sf.Contact.get(gone)

    # REST has no undelete (SOAP and Apex have): the local org's control API stands in.
    control(local_org, "clock", {"advance_seconds": 600})
    answer = requests.post(f"{local_org.url}/_emulator/undelete", json={"ids": [gone[:15]]},
                           headers={"Authorization": f"Bearer {local_org.control_token}"},
                           timeout=10)
    assert answer.json() == [{"id": gone, "success": True, "errors": []}]
    restored = sf.Contact.get(gone)
    assert (restored["LastName"], restored["Email"], restored["IsDeleted"]) == (
        "Binned", "binned@example.com", False)
    assert restored["SystemModstamp"].startswith("2024-03-01T12:20:00")
    assert sf.query_all(binned, include_deleted=True)["totalSize"] == 0
    end = start + dt.timedelta(minutes=30)
    assert sf.Contact.deleted(start, end)["deletedRecords"] == [], "undeleted: not deleted"
    assert sf.Contact.updated(start + dt.timedelta(minutes=15), end)["ids"] == [gone]


# 6. collections


def test_sobject_collections_all_or_none(sf: Salesforce) -> None:
    good = [{"attributes": {"type": "Account"}, "Name": f"Co {i}"} for i in range(3)]
    created = sf.restful("composite/sobjects", method="POST",
                         json={"allOrNone": False, "records": good})
    assert all(r["success"] for r in created)
    mixed = [*good, {"attributes": {"type": "Contact"}, "FirstName": "no last name"}]
    rolled = sf.restful("composite/sobjects", method="POST",
                        json={"allOrNone": True, "records": mixed})
    assert [r["success"] for r in rolled] == [False] * 4
    assert rolled[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert rolled[3]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    assert sf.query("SELECT COUNT() FROM Account")["totalSize"] == 3

    ids = [r["id"] for r in created]
    updated = sf.restful("composite/sobjects", method="PATCH", json={"records": [
        {"attributes": {"type": "Account"}, "id": i, "Industry": "Retail"} for i in ids]})
    assert all(r["success"] for r in updated)
    deleted = sf.restful("composite/sobjects", method="DELETE",
                         params={"ids": ",".join(ids), "allOrNone": "false"})
    assert [r["id"] for r in deleted] == ids and all(r["success"] for r in deleted)
    with pytest.raises(SalesforceMalformedRequest) as too_many:
        sf.restful("composite/sobjects", method="POST", json={"records": [
            {"attributes": {"type": "Account"}, "Name": str(i)} for i in range(201)]})
    assert too_many.value.content[0]["errorCode"] == "EXCEEDED_ID_LIMIT"


# 8. API usage and limits


def test_api_usage_header_and_limit(local_org: LocalOrg, sf: Salesforce) -> None:
    sf.query("SELECT Id FROM Organization")
    used = sf.api_usage["api-usage"].used
    assert used >= 1 and sf.api_usage["api-usage"].total == 15000
    control(local_org, "limits", {"DailyApiRequests": {"Max": used + 1, "used": used}})
    sf.query("SELECT Id FROM Organization")
    with pytest.raises(SalesforceRefusedRequest) as refused:
        sf.query("SELECT Id FROM Organization")
    assert refused.value.content[0]["errorCode"] == "REQUEST_LIMIT_EXCEEDED"


# 7. Bulk 2.0


def test_bulk2_insert_upsert_delete_and_query_by_locator(local_org: LocalOrg, sf: Salesforce) -> None:
    control(local_org, "schema", {"fields": {"Contact": [
        {"name": "Legacy_Id__c", "type": "string", "length": 40, "externalId": True,
         "unique": True}]}})
    rows = [{"LastName": f"Person {i}", "Legacy_Id__c": f"P-{i}"} for i in range(250)]
    rows.append({"FirstName": "No last name", "Legacy_Id__c": "P-bad"})
    inserted = sf.bulk2.Contact.insert(records=rows, wait=0)
    assert sum(job["numberRecordsProcessed"] for job in inserted) == 251
    assert sum(job["numberRecordsFailed"] for job in inserted) == 1
    failed = sf.bulk2.Contact.get_failed_records(inserted[0]["job_id"])
    assert list(csv.DictReader(io.StringIO(failed))) == [{
        "sf__Id": "",
        "sf__Error": "REQUIRED_FIELD_MISSING:Required fields are missing: [LastName]:LastName --",
        "Legacy_Id__c": "P-bad", "FirstName": "No last name", "LastName": ""}]

    existing = sf.query("SELECT Id FROM Contact WHERE Legacy_Id__c = 'P-1'")["records"][0]["Id"]
    upserted = sf.bulk2.Contact.upsert(records=[{"Legacy_Id__c": "P-1", "Title": "Boss"},
                                                {"Legacy_Id__c": "P-new", "LastName": "New"}],
                                       external_id_field="Legacy_Id__c", wait=0)
    assert upserted[0]["numberRecordsFailed"] == 0
    successes = sf.bulk2.Contact.get_successful_records(upserted[0]["job_id"])
    by_key = {row["Legacy_Id__c"]: row for row in csv.DictReader(io.StringIO(successes))}
    assert by_key.keys() == {"P-1", "P-new"}
    assert (by_key["P-1"]["sf__Id"], by_key["P-1"]["sf__Created"]) == (existing, "false")
    assert by_key["P-new"]["sf__Created"] == "true"
    upserted_rows = sf.query("SELECT Id, LastName, Title, Legacy_Id__c FROM Contact "
                             "WHERE Legacy_Id__c IN ('P-1', 'P-new') ORDER BY Legacy_Id__c")
    assert [(r["Id"], r["LastName"], r["Title"], r["Legacy_Id__c"])
            for r in upserted_rows["records"]] == [
        (existing, "Person 1", "Boss", "P-1"), (by_key["P-new"]["sf__Id"], "New", None, "P-new")]

    pages = list(sf.bulk2.Contact.query("SELECT Id, LastName FROM Contact", max_records=100,
                                        wait=0))
    assert len(pages) == 3
    assert sum(page.count("\n") - 1 for page in pages) == 251

    first_id = sf.query("SELECT Id FROM Contact WHERE Legacy_Id__c = 'P-2'")["records"][0]["Id"]
    deleted = sf.bulk2.Contact.delete(records=[{"Id": first_id}], wait=0)
    assert deleted[0]["numberRecordsFailed"] == 0
    assert sf.query_all("SELECT Id FROM Contact WHERE IsDeleted = true",
                        include_deleted=True)["totalSize"] == 1


def test_malformed_and_invalid_soql_get_their_codes(sf: Salesforce) -> None:
    with pytest.raises(SalesforceMalformedRequest) as malformed:
        sf.query("SELECT Id FROM Account WHERE Name NOT LIKE 'A%'")
    assert malformed.value.content[0]["errorCode"] == "MALFORMED_QUERY"
    assert "ERROR at Row:1:Column:" in malformed.value.content[0]["message"]
    with pytest.raises(SalesforceMalformedRequest) as field:
        sf.query("SELECT Id, Nmae FROM Account")
    assert field.value.content[0]["errorCode"] == "INVALID_FIELD"
    with pytest.raises(SalesforceMalformedRequest) as unknown:
        sf.query("SELECT Id FROM Invoice__c")
    assert unknown.value.content[0]["errorCode"] == "INVALID_TYPE"
    related = sf.query("SELECT Id, Account.Name FROM Contact WHERE CreatedDate = TODAY "
                       "ORDER BY LastName LIMIT 5 OFFSET 0")
    assert related["totalSize"] == 0 and related["done"] is True
