"""Deletes and undeletes on the Salesforce side: the local org's recycle bin (queryAll,
getDeleted, getUpdated, the undelete control call, DELETE and UNDELETE change events), the
connector's changes in poll and cdc mode, and a broadcast that deletes a record in its
destination and writes it again once it is restored."""

from __future__ import annotations

import datetime as dt
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from patchbay import sfid
from patchbay.connectors.salesforce import SalesforceConnector
from patchbay.connectors.salesforce.cometd import CometdClient
from patchbay.localorg.org import OrgConfig, OrgError
from patchbay.localorg.running import LocalOrg
from patchbay.model import Change
from patchbay.patterns.broadcast import Broadcast
from patchbay.runtime import serving
from patchbay.runtime.runner import Invocation
from patchbay.spec import SystemSpec
from patchbay.store import Store

SCHEMA = {"fields": {"Account": [{"name": "Legacy_Id__c", "type": "string", "length": 40,
                                  "externalId": True, "unique": True}]}}
START = dt.datetime(2026, 3, 2, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def local() -> Iterator[LocalOrg]:
    with LocalOrg(OrgConfig(custom_schema=SCHEMA)) as org:
        yield org


class Rest:
    """The local org over HTTP, as the integration user, and its control API."""

    def __init__(self, org: LocalOrg) -> None:
        self.http = httpx.Client(base_url=org.url, timeout=10)
        self.control_headers = {"Authorization": f"Bearer {org.control_token}"}
        self.token = self.http.post("/services/oauth2/token", data={
            "grant_type": "client_credentials", "client_id": "patchbay-local-key",
            "client_secret": "patchbay-local-secret"}).json()["access_token"]

    def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.request(method, f"/services/data/v59.0/{path}", headers={
            "Authorization": f"Bearer {self.token}"}, **kwargs)

    def create(self, obj: str, **fields: Any) -> str:
        return str(self.call("POST", f"sobjects/{obj}", json=fields).json()["id"])

    def query(self, soql: str, every: bool = False) -> list[dict[str, Any]]:
        response = self.call("GET", "queryAll/" if every else "query/", params={"q": soql})
        assert response.status_code == 200, response.text
        records: list[dict[str, Any]] = response.json()["records"]
        return records

    def undelete(self, *ids: str) -> httpx.Response:
        return self.http.post("/_emulator/undelete", json={"ids": list(ids)},
                              headers=self.control_headers)

    def window(self, kind: str, start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
        response = self.call("GET", f"sobjects/Account/{kind}/", params={
            "start": start.isoformat(), "end": end.isoformat()})
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    def advance(self, seconds: float) -> None:
        assert self.http.post("/_emulator/clock", json={"advance_seconds": seconds},
                              headers=self.control_headers).status_code == 200


@pytest.fixture
def rest(local: LocalOrg) -> Rest:
    local.org.clock.set(START)
    return Rest(local)


def collect(client: CometdClient, count: int, seconds: float = 5) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while len(events) < count and time.monotonic() < deadline:
        events += client.connect(0.5)
    return events


def test_a_deleted_record_is_in_the_recycle_bin_until_undeleted(rest: Rest) -> None:
    gone = rest.create("Account", Name="Binned", Phone="1")
    rest.create("Account", Name="Kept")
    rest.advance(120)
    assert rest.call("DELETE", f"sobjects/Account/{gone}").status_code == 204

    binned = "SELECT Id, Name, IsDeleted FROM Account WHERE IsDeleted = true"
    assert rest.query(binned) == [], "query and get never see the recycle bin"
    assert rest.call("GET", f"sobjects/Account/{gone}").json()[0]["errorCode"] == "ENTITY_IS_DELETED"
    assert [(r["Id"], r["Name"], r["IsDeleted"]) for r in rest.query(binned, every=True)] == [
        (gone, "Binned", True)]
    assert {r["Name"]: r["IsDeleted"] for r in rest.query(
        "SELECT Name, IsDeleted FROM Account", every=True)} == {"Binned": True, "Kept": False}
    window = (START, START + dt.timedelta(minutes=10))
    assert [d["id"] for d in rest.window("deleted", *window)["deletedRecords"]] == [gone]

    rest.advance(120)
    answer = rest.undelete(gone)
    assert (answer.status_code, answer.json()) == (200, [{"id": gone, "success": True, "errors": []}])
    record = rest.call("GET", f"sobjects/Account/{gone}").json()
    assert (record["Name"], record["Phone"], record["IsDeleted"]) == ("Binned", "1", False)
    assert record["SystemModstamp"] == "2026-03-02T09:04:00.000+0000", "a new SystemModstamp"
    assert rest.query(binned, every=True) == []
    assert rest.window("deleted", *window)["deletedRecords"] == [], "no longer deleted"
    assert gone in rest.window("updated", START + dt.timedelta(minutes=3), window[1])["ids"]

    rest.advance(60)
    assert rest.call("DELETE", f"sobjects/Account/{gone}").status_code == 204
    deleted = rest.window("deleted", *window)["deletedRecords"]
    assert deleted == [{"id": gone, "deletedDate": "2026-03-02T09:05:00.000+0000"}], \
        "deleted again: listed once, with its last deletion"


def test_undelete_refuses_what_is_not_in_the_recycle_bin(local: LocalOrg, rest: Rest) -> None:
    live = rest.create("Account", Name="Live", Legacy_Id__c="L-1")
    old = rest.create("Account", Name="Old", Legacy_Id__c="L-2")
    rest.call("DELETE", f"sobjects/Account/{old}")
    rest.create("Account", Name="New", Legacy_Id__c="L-2")
    unknown = sfid.make("001", 999)
    answer = rest.undelete(live, old, unknown, "not-an-id")
    assert answer.status_code == 200
    results = answer.json()
    assert [(r["id"], r["success"]) for r in results] == [
        (live, False), (old, False), (unknown, False), (None, False)]
    assert [r["errors"][0]["statusCode"] for r in results] == [
        "UNDELETE_FAILED", "DUPLICATE_VALUE", "NOT_FOUND", "MALFORMED_ID"]
    assert results[0]["errors"][0]["message"] == "Entity is not in the recycle bin"
    with pytest.raises(OrgError, match="not in the recycle bin"):
        local.org.undelete(local.org.sobject("Account"), live)
    for body in ({}, {"ids": "001"}, {"ids": [1]}):
        refused = rest.http.post("/_emulator/undelete", json=body, headers=rest.control_headers)
        assert refused.status_code == 400, body
        assert refused.json()["error"].startswith("malformed undelete request: ")


def test_change_events_tell_of_the_delete_then_the_undelete(local: LocalOrg, rest: Rest) -> None:
    record = rest.create("Account", Name="Round trip", Phone="5")
    client = CometdClient(httpx.Client(), f"{local.url}/cometd/59.0",
                          lambda: {"Authorization": f"Bearer {rest.token}"})
    client.handshake()
    client.subscribe("/data/AccountChangeEvent", -1)
    client.connect(0.1)  # answered at once: the first connect after a handshake
    rest.call("DELETE", f"sobjects/Account/{record}")
    rest.advance(1)
    assert rest.undelete(record).json()[0]["success"]
    events = collect(client, 2)
    payloads = [e["data"]["payload"] for e in events]
    headers = [p["ChangeEventHeader"] for p in payloads]
    assert [(h["changeType"], h["recordIds"]) for h in headers] == [
        ("DELETE", [record]), ("UNDELETE", [record])]
    assert set(payloads[0]) == {"ChangeEventHeader"}, "a DELETE carries the header only"
    undeleted = payloads[1]
    assert (undeleted["Name"], undeleted["Phone"]) == ("Round trip", "5")
    assert undeleted["LastModifiedDate"] == "2026-03-02T09:00:01.000Z"
    assert "IsDeleted" not in undeleted and "SystemModstamp" not in undeleted
    assert headers[1]["changedFields"] == [] and headers[1]["changeOrigin"].startswith(
        "com/salesforce/api/soap/")
    client.disconnect()


def connector(local: LocalOrg) -> SalesforceConnector:
    return SalesforceConnector(SystemSpec(
        url=f"salesforce+http://127.0.0.1:{local.port}", name="crm",
        options={"client_id": "patchbay-local-key", "client_secret": "patchbay-local-secret"}))


def kinds(changes: list[Change]) -> list[tuple[Any, str]]:
    return [(c.key, c.kind.value) for c in changes]


def test_polled_changes_are_deleted_then_updated(local: LocalOrg, rest: Rest) -> None:
    crm = connector(local)
    record = rest.create("Account", Name="Polled")
    changes, cursor = crm.changes("Account", None, ["Name"])
    assert kinds(changes) == [(record, "created")]
    rest.advance(10)
    rest.call("DELETE", f"sobjects/Account/{record}")
    changes, cursor = crm.changes("Account", cursor, ["Name"])
    assert kinds(changes) == [(record, "deleted")]
    rest.advance(10)
    rest.undelete(record)
    changes, cursor = crm.changes("Account", cursor, ["Name"])
    assert kinds(changes) == [(record, "updated")], "back, and not deleted again"
    assert changes[0].record["Name"] == "Polled"
    assert crm.changes("Account", cursor, ["Name"])[0] == []
    rest.advance(10)
    rest.call("DELETE", f"sobjects/Account/{record}")
    changes, cursor = crm.changes("Account", cursor, ["Name"])
    assert kinds(changes) == [(record, "deleted")], "deleted again in the same minute: seen"
    assert crm.changes("Account", cursor, ["Name"])[0] == []
    crm.close()


def test_cdc_changes_are_deleted_then_updated_with_current_values(
        local: LocalOrg, rest: Rest) -> None:
    crm = connector(local)
    record = rest.create("Account", Name="Streamed", Phone="7")
    changes, cursor = crm.changes("Account", {"cdc": True}, ["Name", "Phone"])
    assert kinds(changes) == [(record, "created")] and cursor["caught_up"]

    def next_changes() -> list[Change]:
        nonlocal cursor
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            found, cursor = crm.changes("Account", {**cursor, "wait_seconds": 0.5},
                                        ["Name", "Phone"])
            if found:
                return found
        return []

    rest.call("DELETE", f"sobjects/Account/{record}")
    assert kinds(next_changes()) == [(record, "deleted")]
    rest.advance(1)
    rest.undelete(record)
    revived = next_changes()
    assert kinds(revived) == [(record, "updated")]
    assert (revived[0].record["Name"], revived[0].record["Phone"]) == ("Streamed", "7"), \
        "the UNDELETE's record, fetched whole"
    assert isinstance(cursor["replay_id"], int)
    crm.close()


class Engine:
    """A broadcast from the local org's accounts to a SQLite table."""

    def __init__(self, directory: Path, port: int, changes: str) -> None:
        with sqlite3.connect(directory / "copy.db") as db:
            db.execute("CREATE TABLE accounts (id TEXT PRIMARY KEY, name TEXT)")
        spec = directory / "revive.yaml"
        spec.write_text(f"""
systems:
  crm:
    url: salesforce+http://127.0.0.1:{port}
    options: {{client_id: patchbay-local-key, client_secret: patchbay-local-secret}}
  copy: sqlite:///copy.db
integrations:
  - name: accounts
    pattern: broadcast
    source: {{system: crm, object: Account, key: Id, fields: [Id, Name]}}
    trigger: {{changes: {changes}, poll_seconds: 0.2}}
    destinations:
      - {{name: copy, system: copy, object: accounts, key: id,
          transform: {{fields: {{id: Id, name: Name}}}}}}
""")
        self.directory = directory
        self.store = Store.open(directory=directory / ".patchbay")
        self.broadcast = Broadcast(Invocation.load(spec, "accounts", {}).context(
            self.store, directory / "runs"))

    def until(self, expected: dict[str, str]) -> dict[str, str]:
        """Poll and deliver until the copy is as expected (events may take a round or two)."""
        deadline = time.monotonic() + 10
        while True:
            self.broadcast.poll()
            serving.deliver(self.broadcast)
            with sqlite3.connect(self.directory / "copy.db") as db:
                copy = dict(db.execute("SELECT id, name FROM accounts").fetchall())
            if copy == expected or time.monotonic() > deadline:
                return copy

    def close(self) -> None:
        self.broadcast.ctx.systems.close()
        self.store.close()


@pytest.mark.parametrize("changes", ["poll", "cdc"])
def test_a_broadcast_deletes_then_writes_the_revived_record(
        tmp_path: Path, local: LocalOrg, rest: Rest, changes: str) -> None:
    record = rest.create("Account", Name="Revived")
    other = rest.create("Account", Name="Steady")
    engine = Engine(tmp_path, local.port, changes)
    assert engine.until({record: "Revived", other: "Steady"}) == {record: "Revived",
                                                                  other: "Steady"}
    rest.advance(5)
    rest.call("DELETE", f"sobjects/Account/{record}")
    assert engine.until({other: "Steady"}) == {other: "Steady"}, "the delete is delivered"
    rest.advance(5)
    rest.undelete(record)
    assert engine.until({record: "Revived", other: "Steady"}) == {
        record: "Revived", other: "Steady"}, "the revived record is written again"
    engine.close()
