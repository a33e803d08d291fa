"""Bulk API 2.0 in the local org: ingest jobs (insert, upsert, update, delete), their result CSVs,
whole-job failures and state rules, query jobs paged by locator, and the speed of a large load."""

from __future__ import annotations

import csv
import io
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from patchbay.localorg import bulk
from patchbay.localorg.org import Org
from patchbay.localorg.server import create_app
from patchbay.localorg.storage import create_tables

V = "/services/data/v59.0"
JOBS = f"{V}/jobs"
LEGACY_ID = {"fields": {"Account": [{"name": "Legacy_Id__c", "type": "string", "length": 40,
                                     "externalId": True, "unique": True}]}}


@pytest.fixture
def org() -> Org:
    return Org()


@pytest.fixture
def client(org: Org) -> Iterator[TestClient]:
    with TestClient(create_app(org)) as test_client:
        token = test_client.post("/services/oauth2/token", data={
            "grant_type": "password", "client_id": "patchbay-local-key",
            "client_secret": "patchbay-local-secret", "username": "integration@patchbay.local",
            "password": "password"}).json()["access_token"]
        test_client.headers["Authorization"] = f"Bearer {token}"
        yield test_client


def open_job(client: TestClient, obj: str, operation: str, **extra: Any) -> dict[str, Any]:
    response = client.post(f"{JOBS}/ingest", json={"object": obj, "operation": operation,
                                                   "contentType": "CSV", **extra})
    assert response.status_code == 200, response.text
    info: dict[str, Any] = response.json()
    assert info["state"] == "Open"
    return info


def upload(client: TestClient, job_id: str, data: str) -> None:
    response = client.put(f"{JOBS}/ingest/{job_id}/batches", content=data.encode(),
                          headers={"Content-Type": "text/csv; charset=UTF-8"})
    assert response.status_code == 201, response.text
    assert response.content == b""


def close(client: TestClient, job_id: str) -> dict[str, Any]:
    response = client.patch(f"{JOBS}/ingest/{job_id}", json={"state": "UploadComplete"})
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "UploadComplete"
    info: dict[str, Any] = client.get(f"{JOBS}/ingest/{job_id}").json()
    return info


def ingest(client: TestClient, obj: str, operation: str, data: str, **extra: Any) -> dict[str, Any]:
    """Create, upload, close; the job info afterwards."""
    job_id = open_job(client, obj, operation, **extra)["id"]
    upload(client, job_id, data)
    return close(client, job_id)


def results(client: TestClient, job_id: str, part: str) -> list[dict[str, str]]:
    response = client.get(f"{JOBS}/ingest/{job_id}/{part}")
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(response.text, newline="")))


def record(client: TestClient, obj: str, record_id: str) -> dict[str, Any]:
    response = client.get(f"{V}/sobjects/{obj}/{record_id}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def create(client: TestClient, obj: str, body: dict[str, Any]) -> str:
    response = client.post(f"{V}/sobjects/{obj}", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


# -- ingest -------------------------------------------------------------------------------------

def test_insert_reports_successful_and_failed_rows(client: TestClient, org: Org) -> None:
    data = ("LastName,FirstName,Email,Title\n"
            "Lovelace,Ada,ada@example.com,\"Countess, \"\"Enchantress\"\"\nof Numbers\"\n"
            ",Nobody,nobody@example.com,Ghost\n"
            f"{'X' * 81},Long,long@example.com,Too long\n"
            "Hopper,Grace,#N/A,Rear Admiral\n")
    info = ingest(client, "Contact", "insert", data)
    assert info["state"] == "JobComplete"
    assert (info["numberRecordsProcessed"], info["numberRecordsFailed"]) == (4, 2)
    assert info["jobType"] == "V2Ingest" and info["apiVersion"] == 59.0 and info["object"] == "Contact"
    assert info["contentUrl"] == f"services/data/v59.0/jobs/ingest/{info['id']}/batches"
    assert info["id"].startswith("750") and len(info["id"]) == 18
    assert "externalIdFieldName" not in info and "errorMessage" not in info

    raw = client.get(f"{JOBS}/ingest/{info['id']}/successfulResults/").text
    assert raw.startswith('"sf__Id","sf__Created","LastName","FirstName","Email","Title"\n')
    successes = results(client, info["id"], "successfulResults")
    assert [(r["sf__Created"], r["LastName"]) for r in successes] == \
        [("true", "Lovelace"), ("true", "Hopper")]
    ada = record(client, "Contact", successes[0]["sf__Id"])
    assert ada["Title"] == 'Countess, "Enchantress"\nof Numbers'
    assert ada["Name"] == "Ada Lovelace"
    assert record(client, "Contact", successes[1]["sf__Id"])["Email"] is None

    failures = results(client, info["id"], "failedResults")
    assert [f["FirstName"] for f in failures] == ["Nobody", "Long"]
    assert failures[0]["sf__Error"] == \
        "REQUIRED_FIELD_MISSING:Required fields are missing: [LastName]:LastName --"
    assert failures[1]["sf__Error"].startswith("STRING_TOO_LONG:")
    assert failures[1]["sf__Error"].endswith(":LastName --")
    assert all(f["sf__Id"] == "" for f in failures)
    # the result path segment is matched case-insensitively
    assert client.get(f"{JOBS}/ingest/{info['id']}/unprocessedRecords").text == \
        '"LastName","FirstName","Email","Title"\n'
    assert client.get(f"{JOBS}/ingest/{info['id']}/UNPROCESSEDRECORDS/").status_code == 200

    origins = {row[0] for row in org.storage.db.execute(
        'SELECT origin FROM "_Changes" WHERE object = ? AND kind = ?', ("Contact", "created"))}
    assert origins == {"bulkapi"}
    assert org.storage.db.execute('SELECT count(*) FROM "Contact"').fetchone()[0] == 2


def test_insert_bad_picklist_and_null_required(org: Org, client: TestClient) -> None:
    org.schema.extend({"fields": {"Account": [{"name": "Tier__c", "type": "picklist",
                                               "picklist": ["Gold", "Silver"], "restricted": True}]}})
    create_tables(org.storage.db, org.schema)
    data = ("Name,Tier__c,NumberOfEmployees\n"
            "Acme,Gold,10\nBadCo,Platinum,5\n#N/A,Gold,1\nNumCo,,many\n")
    info = ingest(client, "Account", "insert", data)
    assert (info["numberRecordsProcessed"], info["numberRecordsFailed"]) == (4, 3)
    errors = {f["Name"]: f["sf__Error"] for f in results(client, info["id"], "failedResults")}
    assert errors["BadCo"] == ("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST:Tier: bad value for "
                               "restricted picklist field: Platinum:Tier__c --")
    assert errors["#N/A"].startswith("REQUIRED_FIELD_MISSING:") and errors["#N/A"].endswith(":Name --")
    assert errors["NumCo"].endswith(":NumberOfEmployees --")
    [acme] = results(client, info["id"], "successfulResults")
    assert record(client, "Account", acme["sf__Id"])["NumberOfEmployees"] == 10


@pytest.mark.parametrize(("delimiter", "char"), [
    ("COMMA", ","), ("TAB", "\t"), ("PIPE", "|"), ("SEMICOLON", ";"), ("CARET", "^"), ("BACKQUOTE", "`")])
@pytest.mark.parametrize("line_ending", ["LF", "CRLF"])
def test_column_delimiters_and_line_endings(client: TestClient, delimiter: str, char: str,
                                            line_ending: str) -> None:
    end = "\r\n" if line_ending == "CRLF" else "\n"
    rows = [["Name", "BillingCity", "Description"],
            ["Plain", "Oslo", "none"],
            [f"With{char}delimiter", "Rome", f"line one{end}line two"]]
    buffer = io.StringIO()
    csv.writer(buffer, delimiter=char, lineterminator=end).writerows(rows)
    info = ingest(client, "Account", "insert", buffer.getvalue(), columnDelimiter=delimiter,
                  lineEnding=line_ending)
    assert (info["state"], info["numberRecordsFailed"]) == ("JobComplete", 0)
    assert (info["columnDelimiter"], info["lineEnding"]) == (delimiter, line_ending)
    successes = results(client, info["id"], "successfulResults")  # always comma-delimited
    assert [s["Name"] for s in successes] == ["Plain", f"With{char}delimiter"]
    second = record(client, "Account", successes[1]["sf__Id"])
    assert (second["BillingCity"], second["Description"]) == ("Rome", f"line one{end}line two")


def test_upsert_by_external_id_creates_and_updates(org: Org, client: TestClient) -> None:
    assert client.post("/_emulator/schema", json=LEGACY_ID, headers={
        "Authorization": f"Bearer {org.config.control_token}"}).status_code == 200
    existing = create(client, "Account", {"Name": "Old name", "Legacy_Id__c": "L-1", "Phone": "123"})
    data = ("Legacy_Id__c,Name,Phone\n"
            "l-1,New name,\n"          # matches L-1 case-insensitively; empty Phone stays
            "L-2,Second,555\n"
            ",No key,1\n"
            "L-3,Twice,1\n"
            "L-3,Twice again,2\n")
    info = ingest(client, "Account", "upsert", data, externalIdFieldName="legacy_id__c")
    assert info["externalIdFieldName"] == "Legacy_Id__c"
    assert (info["state"], info["numberRecordsProcessed"], info["numberRecordsFailed"]) == \
        ("JobComplete", 5, 3)
    successes = {s["Legacy_Id__c"]: s for s in results(client, info["id"], "successfulResults")}
    assert successes["l-1"]["sf__Id"] == existing and successes["l-1"]["sf__Created"] == "false"
    assert successes["L-2"]["sf__Created"] == "true"
    updated = record(client, "Account", existing)
    assert (updated["Name"], updated["Phone"], updated["Legacy_Id__c"]) == ("New name", "123", "L-1")
    created = record(client, "Account", successes["L-2"]["sf__Id"])
    assert (created["Name"], created["Legacy_Id__c"], created["Phone"]) == ("Second", "L-2", "555")
    errors = [f["sf__Error"] for f in results(client, info["id"], "failedResults")]
    assert errors == ["MISSING_ARGUMENT:Legacy_Id__c not specified:--",
                      "DUPLICATE_VALUE:Duplicate external id specified: L-3:--",
                      "DUPLICATE_VALUE:Duplicate external id specified: L-3:--"]

    # the external id column is required
    failed = ingest(client, "Account", "upsert", "Name\nNo key at all\n",
                    externalIdFieldName="Legacy_Id__c")
    assert failed["state"] == "Failed" and "Legacy_Id__c" in failed["errorMessage"]
    # and must name an external id field when the job is created
    refused = client.post(f"{JOBS}/ingest", json={"object": "Account", "operation": "upsert",
                                                  "externalIdFieldName": "Phone"})
    assert refused.status_code == 400 and refused.json()[0]["errorCode"] == "INVALIDJOB"


def test_upsert_by_id(client: TestClient) -> None:
    existing = create(client, "Account", {"Name": "Before"})
    info = ingest(client, "Account", "upsert", f"Id,Name\n{existing},After\n,Brand new\n",
                  externalIdFieldName="Id")
    assert (info["numberRecordsProcessed"], info["numberRecordsFailed"]) == (2, 0)
    successes = results(client, info["id"], "successfulResults")
    assert [(s["sf__Id"] == existing, s["sf__Created"]) for s in successes] == \
        [(True, "false"), (False, "true")]
    assert record(client, "Account", existing)["Name"] == "After"


def test_update_leaves_empty_cells_and_nulls_na(client: TestClient) -> None:
    contact = create(client, "Contact", {"LastName": "Curie", "FirstName": "Marie",
                                         "Email": "marie@example.com", "Title": "Physicist"})
    other = create(client, "Contact", {"LastName": "Keep"})
    data = (f"Id,FirstName,Email,Title,LastName\n"
            f"{contact},,#N/A,Chemist,\n"
            f"{other},,,,#N/A\n"
            f"not-an-id,X,,,\n"
            f",Y,,,\n")
    info = ingest(client, "Contact", "update", data)
    assert (info["numberRecordsProcessed"], info["numberRecordsFailed"]) == (4, 3)
    updated = record(client, "Contact", contact)
    assert (updated["FirstName"], updated["Email"], updated["Title"], updated["LastName"]) == \
        ("Marie", None, "Chemist", "Curie")
    [success] = results(client, info["id"], "successfulResults")
    assert (success["sf__Id"], success["sf__Created"]) == (contact, "false")
    failures = results(client, info["id"], "failedResults")
    assert failures[0]["sf__Id"] == other
    assert failures[0]["sf__Error"] == \
        "REQUIRED_FIELD_MISSING:Required fields are missing: [LastName]:LastName --"
    assert failures[1]["sf__Error"].startswith("MALFORMED_ID:")
    assert failures[2]["sf__Error"] == "MISSING_ARGUMENT:Id not specified in an update call:--"
    assert record(client, "Contact", other)["LastName"] == "Keep"


def test_delete(client: TestClient) -> None:
    ids = [create(client, "Account", {"Name": f"Doomed {n}"}) for n in range(3)]
    info = ingest(client, "Account", "delete", f"Id\n{ids[0]}\n{ids[1][:15]}\n{ids[0]}\n")
    assert (info["numberRecordsProcessed"], info["numberRecordsFailed"]) == (3, 1)
    assert [s["sf__Id"] for s in results(client, info["id"], "successfulResults")] == ids[:2]
    [failure] = results(client, info["id"], "failedResults")
    assert failure["sf__Id"] == ids[0] and failure["sf__Error"].startswith("ENTITY_IS_DELETED:")
    for gone in ids[:2]:
        assert client.get(f"{V}/sobjects/Account/{gone}").status_code == 404
    assert record(client, "Account", ids[2])["Name"] == "Doomed 2"

    extra = ingest(client, "Account", "delete", f"Id,Name\n{ids[2]},x\n")
    assert extra["state"] == "Failed" and "Name" in extra["errorMessage"]
    assert record(client, "Account", ids[2])["Name"] == "Doomed 2"


def test_hard_delete_removes_the_row(client: TestClient, org: Org) -> None:
    record_id = create(client, "Account", {"Name": "Shredded"})
    info = ingest(client, "Account", "hardDelete", f"Id\n{record_id}\n")
    assert (info["state"], info["numberRecordsFailed"]) == ("JobComplete", 0)
    assert org.storage.get(org.sobject("Account"), record_id) is None


def test_unknown_column_fails_the_job(client: TestClient, org: Org) -> None:
    info = ingest(client, "Contact", "insert", "LastName,Foo__c\nOne,x\nTwo,y\n")
    assert info["state"] == "Failed"
    assert info["errorMessage"] == "InvalidBatch : Field name not found : Foo__c"
    assert results(client, info["id"], "successfulResults") == []
    assert [r["LastName"] for r in results(client, info["id"], "unprocessedrecords")] == ["One", "Two"]
    assert org.storage.db.execute('SELECT count(*) FROM "Contact"').fetchone()[0] == 0


def test_job_states(client: TestClient) -> None:
    job_id = open_job(client, "Account", "insert")["id"]
    assert client.get(f"{JOBS}/ingest/{job_id}/successfulResults").status_code == 400
    refused = client.delete(f"{JOBS}/ingest/{job_id}")
    assert refused.status_code == 400 and refused.json()[0]["errorCode"] == "INVALIDJOBSTATE"
    upload(client, job_id, "Name\nOnce\n")
    again = client.put(f"{JOBS}/ingest/{job_id}/batches", content=b"Name\nTwice\n",
                       headers={"Content-Type": "text/csv"})
    assert again.status_code == 400
    assert close(client, job_id)["state"] == "JobComplete"

    closed = client.put(f"{JOBS}/ingest/{job_id}/batches", content=b"Name\nLate\n",
                        headers={"Content-Type": "text/csv"})
    assert closed.status_code == 400 and closed.json()[0]["errorCode"] == "INVALIDJOBSTATE"
    assert client.patch(f"{JOBS}/ingest/{job_id}", json={"state": "Aborted"}).status_code == 400
    assert client.delete(f"{JOBS}/ingest/{job_id}").status_code == 204
    assert client.get(f"{JOBS}/ingest/{job_id}").status_code == 404
    assert client.get(f"{JOBS}/query/{job_id}").status_code == 404

    aborted = open_job(client, "Account", "insert")["id"]
    upload(client, aborted, "Name\nNever\n")
    response = client.patch(f"{JOBS}/ingest/{aborted}", json={"state": "Aborted"})
    assert response.status_code == 200 and response.json()["state"] == "Aborted"
    assert [r["Name"] for r in results(client, aborted, "unprocessedRecords")] == ["Never"]
    assert client.put(f"{JOBS}/ingest/{aborted}/batches", content=b"Name\nx\n").status_code == 400
    assert client.patch(f"{JOBS}/ingest/{aborted}", json={"state": "UploadComplete"}).status_code == 400

    empty = open_job(client, "Account", "insert")["id"]
    assert close(client, empty)["state"] == "Failed"


def test_abort_while_processing_leaves_the_rest_unprocessed(client: TestClient, org: Org) -> None:
    count = 30_000
    job_id = open_job(client, "Account", "insert")["id"]
    upload(client, job_id, "Name\n" + "".join(f"Company {n}\n" for n in range(count)))
    closer = TestClient(client.app, headers={"Authorization": client.headers["Authorization"]})
    thread = threading.Thread(target=close, args=(closer, job_id))
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while client.get(f"{JOBS}/ingest/{job_id}").json()["state"] != "InProgress":
            assert time.monotonic() < deadline
            time.sleep(0.001)
        aborted = client.patch(f"{JOBS}/ingest/{job_id}", json={"state": "Aborted"})
        assert aborted.status_code == 200 and aborted.json()["state"] == "Aborted"
    finally:
        thread.join()
    info = client.get(f"{JOBS}/ingest/{job_id}").json()
    done = info["numberRecordsProcessed"]
    assert info["state"] == "Aborted" and 0 <= done < count
    assert len(results(client, job_id, "successfulResults")) == done
    assert len(results(client, job_id, "unprocessedRecords")) == count - done
    assert org.storage.db.execute('SELECT count(*) FROM "Account"').fetchone()[0] == done


def test_in_progress_polls(client: TestClient, org: Org) -> None:
    bulk.jobs_of(org).in_progress_polls = 2
    job_id = open_job(client, "Account", "insert")["id"]
    upload(client, job_id, "Name\nSlow\n")
    assert close(client, job_id)["state"] == "InProgress"
    assert client.get(f"{JOBS}/ingest/{job_id}/successfulResults").status_code == 400
    assert client.get(f"{JOBS}/ingest/{job_id}").json()["state"] == "InProgress"
    assert client.get(f"{JOBS}/ingest/{job_id}").json()["state"] == "JobComplete"


def test_create_job_validation(client: TestClient) -> None:
    for body in ({"object": "Nope", "operation": "insert"}, {"object": "Account", "operation": "merge"},
                 {"object": "Account", "operation": "insert", "columnDelimiter": "SPACE"},
                 {"object": "Account", "operation": "insert", "lineEnding": "CR"},
                 {"object": "Account", "operation": "upsert"}):
        response = client.post(f"{JOBS}/ingest", json=body)
        assert response.status_code == 400, body
        assert response.json()[0]["errorCode"] == "INVALIDJOB"
    assert client.get(f"{JOBS}/other").status_code == 404


# -- query jobs ---------------------------------------------------------------------------------

def query_job(client: TestClient, soql: str, operation: str = "query", **extra: Any) -> str:
    response = client.post(f"{JOBS}/query", json={"operation": operation, "query": soql, **extra},
                           headers={"Accept": "text/csv; charset=UTF-8"})
    assert response.status_code == 200, response.text
    assert response.json()["state"] == "UploadComplete"
    assert response.json()["jobType"] == "V2Query"
    job_id: str = response.json()["id"]
    info = client.get(f"{JOBS}/query/{job_id}").json()
    assert info["state"] == "JobComplete"
    return job_id


def pages(client: TestClient, job_id: str, max_records: int | None) -> list[tuple[str, int, str]]:
    """(CSV text, Sforce-NumberOfRecords, Sforce-Locator) of every page."""
    found: list[tuple[str, int, str]] = []
    locator = ""
    while True:
        params: dict[str, Any] = {"locator": locator} if locator else {}
        if max_records is not None:
            params["maxRecords"] = max_records
        response = client.get(f"{JOBS}/query/{job_id}/results", params=params)
        assert response.status_code == 200, response.text
        locator = response.headers["Sforce-Locator"]
        found.append((response.text, int(response.headers["Sforce-NumberOfRecords"]), locator))
        if locator == "null":
            return found
        assert len(found) < 100


def test_query_job_pages_by_locator(client: TestClient) -> None:
    names = [f"Company {n:02d}" for n in range(25)]
    ingest(client, "Account", "insert", "Name,NumberOfEmployees\n" + "".join(
        f"{name},{n}\n" for n, name in enumerate(names)))
    job_id = query_job(client, "SELECT Id, Name, NumberOfEmployees, Owner.Name FROM Account "
                               "ORDER BY Name DESC")
    info = client.get(f"{JOBS}/query/{job_id}").json()
    assert (info["numberRecordsProcessed"], info["object"], info["operation"]) == (25, "Account", "query")

    got = pages(client, job_id, 10)
    assert [count for _, count, _ in got] == [10, 10, 5]
    rows: list[dict[str, str]] = []
    for text, count, _ in got:
        assert text.startswith('"Id","Name","NumberOfEmployees","Owner.Name"\n')
        page = list(csv.DictReader(io.StringIO(text)))
        assert len(page) == count
        rows.extend(page)
    assert [r["Name"] for r in rows] == sorted(names, reverse=True)
    assert {r["Owner.Name"] for r in rows} == {"Integration User"}
    assert rows[-1]["NumberOfEmployees"] == "0"

    # a locator can be read again, with another page size
    second_locator = got[0][2]
    again = client.get(f"{JOBS}/query/{job_id}/results",
                       params={"locator": second_locator, "maxRecords": 100})
    assert again.headers["Sforce-NumberOfRecords"] == "15" and again.headers["Sforce-Locator"] == "null"
    bad = client.get(f"{JOBS}/query/{job_id}/results", params={"locator": "bogus"})
    assert bad.status_code == 400 and bad.json()[0]["errorCode"] == "INVALID_QUERY_LOCATOR"
    assert client.get(f"{JOBS}/query/{job_id}/results", params={"maxRecords": "0"}).status_code == 400
    assert [count for _, count, _ in pages(client, job_id, None)] == [25]

    assert client.delete(f"{JOBS}/query/{job_id}").status_code == 204
    assert client.get(f"{JOBS}/query/{job_id}/results").status_code == 404


def test_query_job_options_and_snapshot(client: TestClient) -> None:
    first = create(client, "Account", {"Name": "Semi; colon", "Description": "two\nlines"})
    job_id = query_job(client, "SELECT Name, Description FROM Account", columnDelimiter="SEMICOLON",
                       lineEnding="CRLF")
    create(client, "Account", {"Name": "Too late"})
    client.patch(f"{V}/sobjects/Account/{first}", json={"Description": "changed"})
    [(text, count, locator)] = pages(client, job_id, None)
    assert (count, locator) == (1, "null")
    assert text == '"Name";"Description"\r\n"Semi; colon";"changed"\r\n'


def test_query_all_includes_deleted_rows(client: TestClient) -> None:
    kept, gone = create(client, "Account", {"Name": "Kept"}), create(client, "Account", {"Name": "Gone"})
    assert client.delete(f"{V}/sobjects/Account/{gone}").status_code == 204
    soql = "SELECT Id, Name, IsDeleted FROM Account ORDER BY Name"
    [(live, _, _)] = pages(client, query_job(client, soql), 1000)
    assert [(r["Id"], r["IsDeleted"]) for r in csv.DictReader(io.StringIO(live))] == [(kept, "false")]
    [(every, _, _)] = pages(client, query_job(client, soql, "queryAll"), 1000)
    assert [(r["Name"], r["IsDeleted"]) for r in csv.DictReader(io.StringIO(every))] == \
        [("Gone", "true"), ("Kept", "false")]


def test_query_job_refusals(client: TestClient) -> None:
    for soql, code in [("SELECT COUNT() FROM Account", "API_ERROR"),
                       ("SELECT Id FROM Account OFFSET 5", "API_ERROR"),
                       ("SELECT Nope FROM Account", "INVALID_FIELD"),
                       ("SELECT Id FROM Nowhere", "INVALID_TYPE"),
                       ("SELEKT Id FROM Account", "MALFORMED_QUERY")]:
        response = client.post(f"{JOBS}/query", json={"operation": "query", "query": soql})
        assert response.status_code == 400, soql
        assert response.json()[0]["errorCode"] == code, soql
    bad = client.post(f"{JOBS}/query", json={"operation": "insert", "query": "SELECT Id FROM Account"})
    assert bad.status_code == 400


def test_abort_query_job_while_in_progress(client: TestClient, org: Org) -> None:
    bulk.jobs_of(org).in_progress_polls = 1
    response = client.post(f"{JOBS}/query", json={"operation": "query", "query": "SELECT Id FROM Account"})
    job_id = response.json()["id"]
    assert client.get(f"{JOBS}/query/{job_id}/results").status_code == 412
    aborted = client.patch(f"{JOBS}/query/{job_id}", json={"state": "Aborted"})
    assert aborted.status_code == 200 and aborted.json()["state"] == "Aborted"
    assert client.get(f"{JOBS}/query/{job_id}/results").status_code == 400


# -- a large job (its speed is measured by bench/localorg_bulk.py) ---------------------------

def test_a_large_job_is_processed_whole(client: TestClient, org: Org) -> None:
    count = 5_000
    data = "LastName,FirstName,Email,Title,MailingCity\n" + "".join(
        f"Last{n},First{n},person{n}@example.com,Title {n},City {n % 97}\n" for n in range(count))
    job_id = open_job(client, "Contact", "insert")["id"]
    upload(client, job_id, data)
    info = close(client, job_id)
    assert (info["state"], info["numberRecordsProcessed"], info["numberRecordsFailed"]) == \
        ("JobComplete", count, 0)
    assert org.storage.db.execute('SELECT count(*) FROM "Contact"').fetchone()[0] == count
    successes = client.get(f"{JOBS}/ingest/{job_id}/successfulResults").text
    assert successes.count("\n") == count + 1
