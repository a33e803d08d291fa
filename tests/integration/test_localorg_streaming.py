"""Change Data Capture from the local org, over HTTP: the change events of /_emulator/changes,
and the CometD endpoint through patchbay's own Bayeux client (handshake, replay -2/-1/N,
held connects, channels, retention, resuming after a restart, a server that forgot us)."""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from patchbay.connectors.salesforce.cometd import CometdClient
from patchbay.errors import ReplayIdInvalid, SessionExpired, StreamingError
from patchbay.localorg.org import OrgConfig
from patchbay.localorg.running import LocalOrg

SCHEMA = {"objects": [{"name": "Invoice__c", "fields": [{"name": "Total__c", "type": "currency"}]}]}
ACCOUNTS = "/data/AccountChangeEvent"


@pytest.fixture
def org() -> Iterator[LocalOrg]:
    with LocalOrg(OrgConfig(custom_schema=SCHEMA)) as local:
        yield local


class Rest:
    """REST calls to the local org as the integration user."""

    def __init__(self, org: LocalOrg) -> None:
        self.http = httpx.Client(base_url=org.url)
        self.control_headers = {"Authorization": f"Bearer {org.control_token}"}
        self.token = ""
        self.login()

    def login(self) -> None:
        self.token = self.http.post("/services/oauth2/token", data={
            "grant_type": "password", "client_id": "patchbay-local-key",
            "client_secret": "patchbay-local-secret", "username": "integration@patchbay.local",
            "password": "password"}).json()["access_token"]

    def call(self, method: str, path: str, content_type: str = "application/json",
             **kwargs: Any) -> httpx.Response:
        response = self.http.request(method, f"/services/data/v59.0/{path}", headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": content_type}, **kwargs)
        assert response.status_code < 300, response.text
        return response

    def create(self, obj: str, **fields: Any) -> str:
        return str(self.call("POST", f"sobjects/{obj}", json=fields).json()["id"])

    def changes(self, **params: Any) -> list[dict[str, Any]]:
        response = self.http.get("/_emulator/changes", params=params,
                                 headers=self.control_headers)
        assert response.status_code == 200, response.text
        events: list[dict[str, Any]] = response.json()
        return events

    def control(self, action: str, body: dict[str, Any]) -> None:
        assert self.http.post(f"/_emulator/{action}", json=body,
                              headers=self.control_headers).status_code == 200


@pytest.fixture
def rest(org: LocalOrg) -> Rest:
    return Rest(org)


def streaming(org: LocalOrg, rest: Rest) -> CometdClient:
    return CometdClient(httpx.Client(), f"{org.url}/cometd/59.0",
                        lambda: {"Authorization": f"Bearer {rest.token}"})


def replay_ids(events: list[dict[str, Any]]) -> list[int]:
    return [e["data"]["event"]["replayId"] for e in events]


def record_ids(events: list[dict[str, Any]]) -> list[str]:
    return [e["data"]["payload"]["ChangeEventHeader"]["recordIds"][0] for e in events]


def collect(client: CometdClient, count: int, seconds: float = 5) -> list[dict[str, Any]]:
    """Connect until `count` events have come (or the time is up)."""
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while len(events) < count and time.monotonic() < deadline:
        events += client.connect(0.5)
    return events


def test_handshake_with_a_good_and_a_bad_token(org: LocalOrg, rest: Rest) -> None:
    good = streaming(org, rest)
    good.handshake()
    assert good.client_id
    bad = CometdClient(httpx.Client(), f"{org.url}/cometd/59.0", lambda: {"Authorization": "Bearer nope"})
    with pytest.raises(SessionExpired, match="refused the handshake: 401::Authentication invalid"):
        bad.handshake()
    reply = httpx.post(f"{org.url}/cometd/59.0", json=[{"channel": "/meta/handshake", "version": "1.0",
                                                         "supportedConnectionTypes": ["long-polling"]}],
                       headers={"Authorization": "Bearer nope"}).json()
    assert reply == [{"channel": "/meta/handshake", "successful": False, "error": "403::Handshake denied",
                      "ext": {"sfdc": {"failureReason": "401::Authentication invalid"}, "replay": True},
                      "advice": {"reconnect": "none"}}]


def test_change_events_carry_what_salesforce_puts_in_them(org: LocalOrg, rest: Rest) -> None:
    user_id = org.org.config.users[0].id
    account = rest.create("Account", Name="Acme", Phone="+1 555 0100", NumberOfEmployees=12,
                          AnnualRevenue=1000.5, Description=None)
    rest.call("PATCH", f"sobjects/Account/{account}", json={"Phone": None, "Website": "acme.example",
                                                           "Name": "Acme"})
    rest.call("DELETE", f"sobjects/Account/{account}")
    created, updated, deleted = events = rest.changes(entity="Account")
    assert {e["channel"] for e in events} == {ACCOUNTS}
    assert replay_ids(events) == sorted(replay_ids(events))
    assert len({e["data"]["schema"] for e in events}) == 1

    header = created["data"]["payload"]["ChangeEventHeader"]
    assert header["entityName"] == "Account" and header["recordIds"] == [account]
    assert (header["changeType"], header["changedFields"], header["sequenceNumber"]) == ("CREATE", [], 1)
    assert header["changeOrigin"] == "com/salesforce/api/rest/59.0"
    assert header["commitUser"] == user_id and header["transactionKey"]
    assert isinstance(header["commitTimestamp"], int) and header["commitTimestamp"] > 1_600_000_000_000
    body = {k: v for k, v in created["data"]["payload"].items() if k != "ChangeEventHeader"}
    assert body["Name"] == "Acme" and body["NumberOfEmployees"] == 12 and body["AnnualRevenue"] == 1000.5
    assert body["OwnerId"] == user_id
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", body["CreatedDate"])
    assert (header["nulledFields"], header["diffFields"]) == ([], [])
    assert not {"Id", "IsDeleted", "SystemModstamp", "Description", "Website"} & set(body)
    assert None not in body.values()

    payload = updated["data"]["payload"]
    header = payload.pop("ChangeEventHeader")
    assert header["changeType"] == "UPDATE"
    assert set(payload) == set(header["changedFields"]) == {"Phone", "Website", "LastModifiedDate"}
    assert payload["Phone"] is None and payload["Website"] == "acme.example"
    assert (header["nulledFields"], header["diffFields"]) == (["Phone"], [])
    assert payload["LastModifiedDate"].endswith("Z")
    assert header["transactionKey"] != created["data"]["payload"]["ChangeEventHeader"]["transactionKey"]

    assert list(deleted["data"]["payload"]) == ["ChangeEventHeader"]
    assert deleted["data"]["payload"]["ChangeEventHeader"]["changeType"] == "DELETE"
    assert deleted["data"]["payload"]["ChangeEventHeader"]["commitUser"] == user_id

    assert replay_ids(rest.changes(entity="Account", after=replay_ids(events)[0])) == replay_ids(events)[1:]
    assert [e["channel"] for e in rest.changes()] == ["/data/ChangeEvents"] * 3
    assert rest.changes(entity="Contact") == []


def test_one_write_call_is_one_transaction_and_compound_names_nest(org: LocalOrg, rest: Rest) -> None:
    results = rest.call("POST", "composite/sobjects", json={"records": [
        {"attributes": {"type": "Contact"}, "LastName": "Doe", "FirstName": "Jo"},
        {"attributes": {"type": "Contact"}, "LastName": "Roe"}]}).json()
    rest.call("PATCH", f"sobjects/Contact/{results[0]['id']}", json={"LastName": "Dow"})
    first, second, renamed = rest.changes(entity="Contact")
    headers = [e["data"]["payload"]["ChangeEventHeader"] for e in (first, second)]
    assert headers[0]["transactionKey"] == headers[1]["transactionKey"]
    assert [h["sequenceNumber"] for h in headers] == [1, 2]
    # One commit number per transaction, growing from one transaction to the next.
    later = renamed["data"]["payload"]["ChangeEventHeader"]["commitNumber"]
    assert headers[0]["commitNumber"] == headers[1]["commitNumber"] < later
    assert isinstance(later, int)
    assert first["data"]["payload"]["Name"] == {"FirstName": "Jo", "LastName": "Doe"}
    assert second["data"]["payload"]["Name"] == {"LastName": "Roe"}
    assert "LastName" not in first["data"]["payload"]
    assert renamed["data"]["payload"]["Name"] == {"LastName": "Dow"}
    assert renamed["data"]["payload"]["ChangeEventHeader"]["changedFields"] == \
        ["Name.LastName", "LastModifiedDate"]


def test_bulk_writes_say_so_in_their_change_origin(org: LocalOrg, rest: Rest) -> None:
    job = rest.call("POST", "jobs/ingest", json={"object": "Account", "operation": "insert",
                                                 "contentType": "CSV", "lineEnding": "LF"}).json()["id"]
    rest.call("PUT", f"jobs/ingest/{job}/batches", content="Name\nOne\nTwo\n", content_type="text/csv")
    rest.call("PATCH", f"jobs/ingest/{job}", json={"state": "UploadComplete"})
    headers = [e["data"]["payload"]["ChangeEventHeader"] for e in rest.changes(entity="Account")]
    assert [h["changeOrigin"] for h in headers] == ["com/salesforce/api/bulkapi/59.0"] * 2
    assert [h["sequenceNumber"] for h in headers] == [1, 2]


def test_replay_all_only_new_or_after_an_id(org: LocalOrg, rest: Rest) -> None:
    ids = [rest.create("Account", Name=f"A{n}") for n in range(3)]
    everything = streaming(org, rest)
    everything.subscribe(ACCOUNTS, -2)
    replayed = collect(everything, 3)
    assert record_ids(replayed) == ids

    only_new = streaming(org, rest)
    only_new.subscribe(ACCOUNTS, -1)
    after_first = streaming(org, rest)
    after_first.subscribe(ACCOUNTS, replay_ids(replayed)[0])
    assert only_new.connect(0.2) == []
    fourth = rest.create("Account", Name="A3")
    assert record_ids(collect(only_new, 1)) == [fourth]
    assert record_ids(collect(after_first, 3)) == [*ids[1:], fourth]
    assert record_ids(collect(everything, 1)) == [fourth]
    for client in (everything, only_new, after_first):
        client.disconnect()


def test_a_held_connect_returns_as_soon_as_a_record_changes(org: LocalOrg, rest: Rest) -> None:
    client = streaming(org, rest)
    client.subscribe(ACCOUNTS, -1)
    writer = threading.Timer(0.3, lambda: rest.create("Account", Name="Late"))
    started = time.monotonic()
    writer.start()
    events = client.connect(30)
    elapsed = time.monotonic() - started
    writer.join()
    assert len(events) == 1 and 0.25 < elapsed < 15, "back with the change, long before the hold ends"


def test_the_first_connect_after_a_handshake_is_answered_at_once(org: LocalOrg, rest: Rest) -> None:
    def post(message: dict[str, Any]) -> tuple[list[dict[str, Any]], float]:
        started = time.monotonic()
        reply = httpx.post(f"{org.url}/cometd/59.0", json=[message], timeout=30,
                           headers={"Authorization": f"Bearer {rest.token}"}).json()
        return reply, time.monotonic() - started

    [handshake], _ = post({"channel": "/meta/handshake", "version": "1.0",
                           "supportedConnectionTypes": ["long-polling"]})
    connect = {"channel": "/meta/connect", "clientId": handshake["clientId"],
               "connectionType": "long-polling"}
    [first], elapsed = post(connect)
    assert elapsed < 2
    assert (first["successful"], first["advice"]) == (True, {"reconnect": "retry", "interval": 0,
                                                             "timeout": 110_000})
    [held], elapsed = post({**connect, "advice": {"timeout": 500}})
    assert held["successful"] is True and elapsed >= 0.45


def test_a_subscribe_wakes_a_held_connect(org: LocalOrg, rest: Rest) -> None:
    account = rest.create("Account", Name="Acme")
    client = streaming(org, rest)
    client.handshake()
    delivered: list[dict[str, Any]] = []
    holder = threading.Thread(target=lambda: delivered.extend(client.connect(10)))
    started = time.monotonic()
    holder.start()
    time.sleep(0.3)
    reply = httpx.post(f"{org.url}/cometd/59.0", headers={"Authorization": f"Bearer {rest.token}"},
                       json=[{"channel": "/meta/subscribe", "clientId": client.client_id,
                              "subscription": ACCOUNTS, "ext": {"replay": {ACCOUNTS: -2}}}]).json()
    assert reply[0]["successful"] is True
    holder.join()
    assert record_ids(delivered) == [account] and time.monotonic() - started < 3


def test_object_channels_and_the_all_changes_channel(org: LocalOrg, rest: Rest) -> None:
    client = streaming(org, rest)
    client.subscribe(ACCOUNTS, -1)
    client.subscribe("/data/ChangeEvents", -1)
    client.subscribe("/data/Invoice__ChangeEvent", -1)
    account = rest.create("Account", Name="Acme")
    contact = rest.create("Contact", LastName="Doe")
    invoice = rest.create("Invoice__c", Name="INV-1", Total__c=10)
    by_channel: dict[str, list[str]] = {}
    for event in collect(client, 5):
        by_channel.setdefault(event["channel"], []).extend(record_ids([event]))
    assert by_channel == {ACCOUNTS: [account], "/data/ChangeEvents": [account, contact, invoice],
                          "/data/Invoice__ChangeEvent": [invoice]}
    with pytest.raises(StreamingError, match="does not exist"):
        client.subscribe("/data/Nothing__ChangeEvent", -1)


def test_replay_ids_outside_retention_are_refused(org: LocalOrg, rest: Rest) -> None:
    rest.create("Account", Name="Old")
    old = replay_ids(rest.changes())[-1]
    client = streaming(org, rest)
    client.subscribe(ACCOUNTS, old)
    with pytest.raises(ReplayIdInvalid, match="The replayId 99 you provided was invalid"):
        client.subscribe(ACCOUNTS, 99)
    rest.control("clock", {"advance_seconds": 73 * 3600})
    rest.login()
    assert rest.changes() == []
    with pytest.raises(ReplayIdInvalid) as refused:
        streaming(org, rest).subscribe(ACCOUNTS, old - 1)
    assert refused.value.replay_id == old - 1 and refused.value.channel == ACCOUNTS
    everything = streaming(org, rest)
    everything.subscribe(ACCOUNTS, -2)
    assert everything.connect(0.2) == []
    fresh = rest.create("Account", Name="New")
    assert record_ids(collect(everything, 1)) == [fresh]


def test_a_restarted_consumer_resumes_after_its_last_replay_id(org: LocalOrg, rest: Rest) -> None:
    first = streaming(org, rest)
    first.subscribe(ACCOUNTS, -1)
    written: list[str] = []
    halfway = threading.Event()

    def write() -> None:
        for n in range(30):
            if n == 15:
                halfway.wait(5)
            written.append(rest.create("Account", Name=f"A{n}"))
            time.sleep(0.005)

    writer = threading.Thread(target=write)
    writer.start()
    seen = collect(first, 5)
    halfway.set()
    assert 5 <= len(seen) <= 15
    # The consumer stops here without a word; a new one starts from what the old one saw,
    # while the writer goes on.
    second = streaming(org, rest)
    second.subscribe(ACCOUNTS, replay_ids(seen)[-1])
    writer.join()
    rest_of_them = collect(second, 30 - len(seen))
    delivered = record_ids(seen) + record_ids(rest_of_them)
    assert delivered == written
    assert second.connect(0.1) == []


def test_a_client_the_server_forgot_handshakes_again_by_itself(org: LocalOrg, rest: Rest) -> None:
    client = streaming(org, rest)
    client.subscribe(ACCOUNTS, -2)
    before = rest.create("Account", Name="Before")
    assert record_ids(collect(client, 1)) == [before]
    forgotten = client.client_id
    reply = httpx.post(f"{org.url}/cometd/59.0", headers={"Authorization": f"Bearer {rest.token}"},
                       json=[{"channel": "/meta/disconnect", "clientId": forgotten}]).json()
    assert reply[0]["successful"] is True
    after = rest.create("Account", Name="After")
    assert record_ids(collect(client, 1)) == [after]
    assert client.client_id not in (None, forgotten)


def test_a_resume_past_retention_is_refused_so_the_caller_can_poll(org: LocalOrg, rest: Rest) -> None:
    client = streaming(org, rest)
    client.subscribe(ACCOUNTS, -2)
    rest.create("Account", Name="Seen")
    assert len(collect(client, 1)) == 1
    rest.create("Account", Name="Missed")
    httpx.post(f"{org.url}/cometd/59.0", headers={"Authorization": f"Bearer {rest.token}"},
               json=[{"channel": "/meta/disconnect", "clientId": client.client_id}])
    rest.control("clock", {"advance_seconds": 73 * 3600})
    rest.login()
    latest = rest.create("Account", Name="Latest")
    with pytest.raises(ReplayIdInvalid, match="The replayId 1 you provided was invalid"):
        client.connect(0.2)
    client.subscribe(ACCOUNTS, -2)
    assert record_ids(collect(client, 1)) == [latest]


def test_an_expired_session_is_reported_and_renewed(org: LocalOrg, rest: Rest) -> None:
    client = streaming(org, rest)
    client.subscribe(ACCOUNTS, -2)
    rest.control("sessions/expire", {})
    with pytest.raises(SessionExpired, match="refused the session: 401::Authentication invalid"):
        client.connect(0.2)
    rest.login()
    created = rest.create("Account", Name="Renewed")
    assert record_ids(collect(client, 1)) == [created]


def test_an_org_file_from_before_streaming_gets_the_new_columns(tmp_path: Path) -> None:
    path = tmp_path / "org.db"
    with sqlite3.connect(path) as db:
        db.execute('CREATE TABLE "_Changes" (seq INTEGER PRIMARY KEY AUTOINCREMENT, object TEXT NOT NULL, '
                   "record_id TEXT NOT NULL, kind TEXT NOT NULL, fields TEXT NOT NULL, at TEXT NOT NULL, "
                   "origin TEXT NOT NULL)")
    with LocalOrg(OrgConfig(database=str(path))) as org:
        rest = Rest(org)
        account = rest.create("Account", Name="Acme")
        assert record_ids(rest.changes()) == [account]
        start = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() - 3600))
        end = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(time.time() + 3600))
        updated = rest.call("GET", "sobjects/Account/updated/", params={"start": start, "end": end}).json()
        assert updated["ids"] == [account]
