"""The Salesforce connector against the local org: scope as SOQL, sessions, limits,
validation at plan time, and the run that pauses on an exhausted API allowance."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from patchbay import SpecError, plan_integration, run_integration
from patchbay.connectors.salesforce import SalesforceConnector, to_soql
from patchbay.errors import ConnectionFailed, PatchbayError, RetriableError, SalesforceError
from patchbay.localorg.org import OrgConfig
from patchbay.localorg.running import LocalOrg
from patchbay.model import Operation, Status
from patchbay.scope import Condition, Group
from patchbay.spec import SystemSpec

SCHEMA = {"fields": {"Account": [{"name": "Legacy_Id__c", "type": "string", "length": 40,
                                  "externalId": True, "unique": True}]}}


@pytest.fixture
def org() -> Iterator[LocalOrg]:
    with LocalOrg(OrgConfig(custom_schema=SCHEMA)) as local:
        yield local


def connector(org: LocalOrg, **options: object) -> SalesforceConnector:
    spec = SystemSpec(url=f"salesforce+http://127.0.0.1:{org.port}", name="crm", options={
        "username": "integration@patchbay.local", "password": "password",
        "security_token": "TOKEN", "backoff_seconds": 0.01, **options})
    return SalesforceConnector(spec)


def test_scope_values_are_quoted_and_escaped_so_they_cannot_change_the_query(org: LocalOrg) -> None:
    crm = connector(org)
    tricky = "O'Brien \\ Sons' OR Name != '"
    outcomes = crm.write("Account", [{"Legacy_Id__c": "1", "Name": tricky},
                                     {"Legacy_Id__c": "2", "Name": "Plain"}],
                         Operation.UPSERT, "Legacy_Id__c")
    assert [o.status for o in outcomes] == [Status.CREATED, Status.CREATED]
    found = [r for page in crm.read("Account", Condition("Name", "eq", tricky),
                                    fields=["Name", "Legacy_Id__c"]) for r in page.records]
    assert [r["Legacy_Id__c"] for r in found] == ["1"]
    types = {"name": "string", "closedate": "date", "amount": "currency"}
    where = to_soql(Group("and", (Condition("Name", "in", ["a'b", "c"]),
                                  Condition("CloseDate", "gte", "2024-01-31"),
                                  Condition("Amount", "ne", 5))), types)
    assert where == ("(Name IN ('a\\'b', 'c') AND CloseDate >= 2024-01-31 AND "
                     "(Amount != 5 AND Amount != null))")


def test_outcomes_per_record_with_salesforce_codes(org: LocalOrg) -> None:
    crm = connector(org)
    outcomes = crm.write("Account", [{"Legacy_Id__c": "1", "Name": "Good"},
                                     {"Legacy_Id__c": "2", "Name": None},
                                     {"Legacy_Id__c": "3", "Name": "x" * 300},
                                     {"Legacy_Id__c": "4", "Name": "Also good"}],
                         Operation.UPSERT, "Legacy_Id__c")
    assert [o.status for o in outcomes] == [Status.CREATED, Status.REJECTED, Status.REJECTED,
                                            Status.CREATED]
    assert [o.code for o in outcomes[1:3]] == ["REQUIRED_FIELD_MISSING", "STRING_TOO_LONG"]
    again = crm.write("Account", [{"Legacy_Id__c": "1", "Name": "Good"},
                                  {"Legacy_Id__c": "4", "Name": "Changed"}],
                      Operation.UPSERT, "Legacy_Id__c")
    assert [o.status for o in again] == [Status.UNCHANGED, Status.UPDATED]
    deleted = crm.write("Account", [{"Legacy_Id__c": "1"}, {"Legacy_Id__c": "99"}],
                        Operation.DELETE, "Legacy_Id__c")
    assert [o.status for o in deleted] == [Status.DELETED, Status.SKIPPED]


def test_an_expired_session_is_renewed_once(org: LocalOrg) -> None:
    crm = connector(org)
    assert crm.count("Account") == 0
    first = crm._token
    org.org.expire_sessions()
    assert crm.count("Account") == 0
    assert crm._token != first


def test_an_exhausted_allowance_is_retried_then_raised_as_retriable(org: LocalOrg) -> None:
    crm = connector(org, retries=2)
    crm.count("Account")
    org.org.limits.max_requests = org.org.limits.used
    with pytest.raises(RetriableError, match="REQUEST_LIMIT_EXCEEDED"):
        crm.count("Account")


def test_the_allowance_is_tried_as_often_as_the_retry_option_says(org: LocalOrg) -> None:
    crm = connector(org, retries=3)
    crm.count("Account")
    org.org.limits.max_requests = org.org.limits.used
    calls = crm.api_calls
    with pytest.raises(RetriableError, match=r"^Salesforce system 'crm': REQUEST_LIMIT_EXCEEDED "
                                              r"after 4 tries$"):
        crm.count("Account")
    assert crm.api_calls - calls == 4


def test_a_refused_login_is_not_retried(org: LocalOrg) -> None:
    crm = connector(org, password="wrong", retries=5, backoff_seconds=5.0,
                    instance_url=f"http://127.0.0.1:{org.port}", access_token="expired")
    started = time.monotonic()
    with pytest.raises(ConnectionFailed, match="refused the login"):
        crm.count("Account")
    assert time.monotonic() - started < 5.0


def write_spec(directory: Path, org: LocalOrg, name_field: str = "Name") -> Path:
    with sqlite3.connect(directory / "source.db") as db:
        db.execute("CREATE TABLE companies (id INTEGER PRIMARY KEY, name TEXT)")
        db.executemany("INSERT INTO companies VALUES (?, ?)",
                       [(i, f"Company {i}") for i in range(1, 1001)])
    spec = directory / "companies.yaml"
    spec.write_text(f"""
systems:
  legacy: sqlite:///source.db
  crm:
    url: salesforce+http://127.0.0.1:{org.port}
    options: {{client_id: patchbay-local-key, client_secret: patchbay-local-secret,
               backoff_seconds: 0.01, retries: 1}}
integrations:
  - name: companies
    pattern: migration
    source: {{system: legacy, object: companies, key: id}}
    transform:
      fields:
        Legacy_Id__c: {{from: id, type: string}}
        {name_field}: name
    destination: {{system: crm, object: Account, operation: upsert, key: Legacy_Id__c}}
    options: {{batch_size: 100, write_attempts: 2, retry_backoff_seconds: 0.01}}
""")
    return spec


def test_a_field_the_object_lacks_fails_at_plan_time(tmp_path: Path, org: LocalOrg) -> None:
    spec = write_spec(tmp_path, org, name_field="Nmae")
    with pytest.raises(SpecError) as raised:
        plan_integration(spec, state=tmp_path / "state")
    assert "'Account' of system 'crm' has no field 'Nmae'; did you mean 'Name'?" in str(raised.value)
    assert org.org.limits.used < 10, "nothing was written"


def test_the_run_pauses_when_the_allowance_runs_out_and_resumes_losing_nothing(
        tmp_path: Path, org: LocalOrg) -> None:
    spec = write_spec(tmp_path, org)
    state = tmp_path / "state"
    org.org.limits.max_requests = 20
    with pytest.raises(RetriableError, match="REQUEST_LIMIT_EXCEEDED"):
        run_integration(spec, state=state)
    held = org.org.storage.db.execute('SELECT count(*) FROM "Account"').fetchone()[0]
    assert 0 < held < 1000
    org.org.limits.max_requests = 15000
    report = run_integration(spec, state=state)
    assert report["verdict"] == "complete"
    assert report["counts"]["read"] == 1000
    rows = org.org.storage.db.execute(
        'SELECT count(*), count(DISTINCT "Legacy_Id__c") FROM "Account"').fetchone()
    assert rows == (1000, 1000)


def test_large_scopes_and_batches_go_through_bulk_jobs(org: LocalOrg) -> None:
    crm = connector(org, bulk_threshold=100)
    records = [{"Legacy_Id__c": str(i), "Name": f"Bulk {i}", "NumberOfEmployees": i}
               for i in range(1, 301)]
    records[7]["Name"] = None
    outcomes = crm.write("Account", records, Operation.UPSERT, "Legacy_Id__c")
    assert sum(o.status is Status.CREATED for o in outcomes) == 299
    assert outcomes[7].status is Status.REJECTED and outcomes[7].code == "REQUIRED_FIELD_MISSING"
    jobs = org.org.storage.db.execute(
        "SELECT count(DISTINCT origin) FROM \"_Changes\" WHERE origin = 'bulkapi'").fetchone()
    assert jobs == (1,), "the batch went through a Bulk 2.0 ingest job"

    # An update by Id in bulk reads no ids first: a record deleted meanwhile is skipped as
    # one not there, the others are updated.
    ids = [o.destination_id for o in outcomes if o.status is Status.CREATED]
    org.org.delete(org.org.sobject("Account"), str(ids[3]))
    before = crm.api_calls
    updated = crm.write("Account", [{"Id": i, "Phone": "+1 555"} for i in ids],
                        Operation.UPDATE, "Id")
    assert crm.api_calls - before <= 8, "one ingest job, no query of the ids"
    assert [o.status for o in updated].count(Status.UPDATED) == len(ids) - 1
    assert (updated[3].status, updated[3].code) == (Status.SKIPPED, "NOT_FOUND")

    before = crm.api_calls
    pages = list(crm.read("Account", Condition("NumberOfEmployees", "gt", 50),
                          fields=["Legacy_Id__c", "Name", "NumberOfEmployees"], page_size=100))
    read = [r for page in pages for r in page.records]
    assert len(read) == 250 and len(pages) == 3
    assert {r["NumberOfEmployees"] for r in read} == set(range(51, 301))
    assert all(isinstance(r["NumberOfEmployees"], int) for r in read)
    assert crm.api_calls - before < 12, "one query job, not a page of REST per 200 rows"


def test_changes_since_a_cursor_never_skip_records_sharing_a_timestamp(org: LocalOrg) -> None:
    import datetime as dt

    crm = connector(org)
    org.org.clock.set(dt.datetime(2026, 1, 5, 9, 0, tzinfo=dt.UTC))
    session = org.org.login("integration@patchbay.local", "password")
    account = org.org.sobject("Account")
    first = [org.org.create(account, {"Name": f"Same second {i}"}, session) for i in range(5)]

    changes, cursor = crm.changes("Account", None, ["Name"], limit=3)
    assert [c.key for c in changes] == first[:3]
    changes, cursor = crm.changes("Account", cursor, ["Name"], limit=3)
    assert [c.key for c in changes] == first[3:]
    late = [org.org.create(account, {"Name": f"Late, same stamp {i}"}, session) for i in range(2)]
    changes, cursor = crm.changes("Account", cursor, ["Name"])
    assert [c.key for c in changes] == late, "committed later with the same timestamp: not lost"
    assert all(c.kind.value == "created" for c in changes)
    # The cursor remembers those ids as keyed digests, not as they are (or in upper case);
    # one stored by an earlier patchbay, with the ids, goes on as the digests would.
    assert not [i for i in first + late if i in str(cursor) or i.upper() in str(cursor)]
    again, upgraded = crm.changes("Account", {**cursor, "seen": [*first, *late]}, ["Name"])
    assert again == [] and sorted(upgraded["seen"]) == sorted(cursor["seen"])

    org.org.clock.advance(30)
    org.org.update(account, first[0], {"Name": "Renamed"}, session)
    org.org.delete(account, first[1])
    changes, cursor = crm.changes("Account", cursor, ["Name"])
    kinds = {(c.key, c.kind.value) for c in changes}
    assert kinds == {(first[0], "updated"), (first[1], "deleted")}
    assert [c.record["Name"] for c in changes if c.kind.value == "updated"] == ["Renamed"]
    changes, cursor = crm.changes("Account", cursor, ["Name"])
    assert changes == [], "nothing is delivered twice"


def test_a_scope_on_is_deleted_reads_deleted_records(org: LocalOrg) -> None:
    crm = connector(org)
    session = org.org.login("integration@patchbay.local", "password")
    account = org.org.sobject("Account")
    gone = org.org.create(account, {"Name": "Gone"}, session)
    org.org.create(account, {"Name": "Kept"}, session)
    org.org.delete(account, gone)
    deleted = [r for page in crm.read("Account", Condition("IsDeleted", "eq", True),
                                      fields=["Name"]) for r in page.records]
    assert [r["Id"] for r in deleted] == [gone]
    assert crm.count("Account", Condition("IsDeleted", "eq", True)) == 1


def test_an_error_answer_of_the_org_is_a_patchbay_error_naming_its_system(org: LocalOrg) -> None:
    crm = connector(org)
    with pytest.raises(SalesforceError, match=r"^NOT_FOUND: .* \(system=crm\)$") as refused:
        crm.request("GET", "sobjects/Account/001000000000000AAA")
    assert isinstance(refused.value, PatchbayError)
    assert (refused.value.status, refused.value.code, refused.value.context) == (
        404, "NOT_FOUND", {"system": "crm"})
