"""Salesforce Outbound Messages into a broadcast, through the API and the local org:
acknowledged once the records' current values are queued, refused with a SOAP fault
otherwise (Salesforce then sends them again), harmless when late or repeated."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import httpx
import pytest
from starlette.testclient import TestClient

from patchbay import sfid
from patchbay.api import serve_api
from patchbay.api.app import close_app, create_app
from patchbay.api.outbound import MAX_ELEMENTS
from patchbay.connectors.http import sign
from patchbay.errors import SpecError
from patchbay.localorg.org import ORG_ID, OrgConfig, Session
from patchbay.localorg.running import LocalOrg, free_port
from patchbay.patterns.broadcast import Broadcast
from patchbay.runtime import serving
from patchbay.runtime.delivery import DeliveryStats
from patchbay.runtime.runner import Invocation, serve
from patchbay.spec import load
from patchbay.store import Store
from patchbay.store.outbox import Delivery

NAME = "Salesforce to files - Account - broadcast"
SECRET = "outbound-secret-for-tests"
TOKEN = "api-token-for-tests"
SESSION_ID = f"{ORG_ID[:15]}!AQoAQSessionOfTheSendingUser"
SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
OUTBOUND = "http://soap.sforce.com/2005/09/outbound"
SOAP_HEADERS = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}

SPEC = """
systems:
  crm:
    url: salesforce+http://127.0.0.1:{port}
    options: {{username: integration@patchbay.local, password: password, security_token: TOKEN,
               retries: 0, backoff_seconds: 0.01}}
  files:
    url: file:out
    options: {{fields: {{accounts.jsonl: [account_id, name, modified_at],
                         history.jsonl: [change, account_id, name]}}}}
integrations:
  - name: {name}
    pattern: broadcast
    source: {{system: crm, object: Account, key: Id, watermark: SystemModstamp,
              fields: [Id, Name, SystemModstamp]}}
    trigger: {{outbound_messages: {{organization_id: {org}, secret_env: SF_OUTBOUND_SECRET}}}}
    destinations:
      - name: accounts
        system: files
        object: accounts.jsonl
        key: account_id
        transform: {{fields: {{account_id: Id, name: Name, modified_at: SystemModstamp}}}}
      - name: history
        system: files
        object: history.jsonl
        key: change
        transform:
          fields: {{change: {{expr: "concat(Id, '@', SystemModstamp)"}}, account_id: Id, name: Name}}
    options: {{max_attempts: 1, backoff_seconds: 0, backoff_max_seconds: 0}}
"""


def notification(records: Sequence[Mapping[str, str]], *, org: str = ORG_ID,
                 object: str = "Account", session_id: str | None = None) -> bytes:
    """A `notifications` message as Salesforce posts it (spec §6.4): the selected fields as
    sf: elements of the enterprise namespace, the object as the sObject's xsi:type."""
    items = "".join(
        f"<Notification><Id>{sfid.make('04l', number)}</Id>"
        f'<sObject xsi:type="sf:{object}" xmlns:sf="urn:sobject.enterprise.soap.sforce.com">'
        + "".join(f"<sf:{field}>{escape(value)}</sf:{field}>" for field, value in record.items())
        + "</sObject></Notification>"
        for number, record in enumerate(records, 1))
    session = '<SessionId xsi:nil="true"/>' if session_id is None else \
        f"<SessionId>{session_id}</SessionId>"
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}" '
        'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">'
        f'<soapenv:Body><notifications xmlns="{OUTBOUND}">'
        f"<OrganizationId>{org}</OrganizationId><ActionId>{sfid.make('04k', 1)}</ActionId>"
        f"{session}<EnterpriseUrl>https://example.my.salesforce.com/services/Soap/c/59.0/"
        f"{org[:15]}</EnterpriseUrl><PartnerUrl>https://example.my.salesforce.com/services/"
        f"Soap/u/59.0/{org[:15]}</PartnerUrl>{items}"
        "</notifications></soapenv:Body></soapenv:Envelope>").encode()


@dataclass
class World:
    """The local org as the broadcast's source, the API in front of it, files behind it."""

    tmp: Path
    local: LocalOrg
    session: Session
    client: TestClient

    @property
    def spec(self) -> Path:
        return self.tmp / "outbound.yaml"

    def account(self, name: str) -> str:
        return self.local.org.create(self.local.org.sobject("Account"), {"Name": name}, self.session)

    def rename(self, record_id: str, name: str) -> None:
        # A later SystemModstamp: the renamed record is a new version.
        self.local.org.clock.advance(1)
        self.local.org.update(self.local.org.sobject("Account"), record_id, {"Name": name},
                              self.session)

    def post(self, body: bytes, *, secret: str | None = SECRET, integration: str = NAME,
             headers: Mapping[str, str] = SOAP_HEADERS) -> Any:
        params = {} if secret is None else {"secret": secret}
        return self.client.post(f"/outbound/{integration}", content=body, params=params,
                                headers=dict(headers))

    def queued(self) -> list[Delivery]:
        store = Store.open(directory=self.tmp / "state")
        try:
            found: list[Delivery] = []
            while (delivery := store.outbox.get(len(found) + 1)) is not None:
                found.append(delivery)
            return found
        finally:
            store.close()

    def deliver(self) -> DeliveryStats:
        store = Store.open(directory=self.tmp / "state")
        ctx = Invocation.load(self.spec, NAME, {}).context(store, self.tmp / "state" / "runs")
        try:
            return serving.deliver(Broadcast(ctx))
        finally:
            ctx.systems.close()
            store.close()

    def lines(self, file: str) -> list[dict[str, Any]]:
        return [json.loads(line) for line in (self.tmp / "out" / file).read_text().splitlines()]


@pytest.fixture
def world(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    monkeypatch.setenv("SF_OUTBOUND_SECRET", SECRET)
    (tmp_path / "out").mkdir()
    with contextlib.ExitStack() as stack:
        local = stack.enter_context(LocalOrg(OrgConfig(database=str(tmp_path / "org.db"))))
        # The 15-character org id declared, the 18-character one sent: the same org.
        (tmp_path / "outbound.yaml").write_text(SPEC.format(port=local.port, name=NAME,
                                                            org=ORG_ID[:15]))
        app = create_app(tmp_path / "outbound.yaml", str(tmp_path / "state"), TOKEN)
        stack.callback(close_app, app)
        client = stack.enter_context(TestClient(app))
        world = World(tmp_path, local, local.org.login("integration@patchbay.local", "password"),
                      client)
        stack.callback(lambda: world.local.stop())  # the org a test may have started anew
        yield world


def ack_of(response: Any) -> str | None:
    assert response.headers["content-type"] == "text/xml; charset=utf-8", response.text
    root = ElementTree.fromstring(response.content)
    return root.findtext(f"{{{SOAP_ENV}}}Body/{{{OUTBOUND}}}notificationsResponse/{{{OUTBOUND}}}Ack")


def fault_of(response: Any) -> tuple[str, str]:
    assert response.headers["content-type"] == "text/xml; charset=utf-8", response.text
    fault = ElementTree.fromstring(response.content).find(f"{{{SOAP_ENV}}}Body/{{{SOAP_ENV}}}Fault")
    assert fault is not None, response.text
    return fault.findtext("faultcode") or "", fault.findtext("faultstring") or ""


def test_an_acknowledged_notification_queued_the_current_values_not_the_stale_ones(
        world: World) -> None:
    acme, globex = world.account("Acme"), world.account("Globex")
    stale = notification([{"Id": acme, "Name": "Acme"}, {"Id": globex, "Name": "Globex"}])
    world.rename(acme, "Acme Corporation")

    response = world.post(stale)  # no bearer token: Salesforce cannot send one

    assert response.status_code == 200 and ack_of(response) == "true"
    queued = world.queued()
    assert sorted((d.destination, d.operation) for d in queued) == [
        ("accounts", "upsert"), ("accounts", "upsert"), ("history", "upsert"), ("history", "upsert")]
    names = {d.record_key: d.payload["name"] for d in queued
             if d.destination == "accounts" and d.payload is not None}
    assert names == {acme: "Acme Corporation", globex: "Globex"}
    assert all(d.version for d in queued), "the source's SystemModstamp versions each delivery"
    assert world.client.get(f"/outbox/{NAME}").status_code == 401, "other routes need the token"


def test_the_same_notification_twice_has_the_effect_of_once(world: World) -> None:
    acme, globex = world.account("Acme"), world.account("Globex")
    message = notification([{"Id": acme, "Name": "Acme"}, {"Id": globex, "Name": "Globex"},
                            {"Id": acme, "Name": "Acme"}])

    assert [ack_of(world.post(message)) for _ in range(2)] == ["true", "true"]

    queued = world.queued()
    first, second = queued[:len(queued) // 2], queued[len(queued) // 2:]
    assert len(first) == 4, "each record once per destination, though notified twice"
    assert [(d.destination, d.record_key, d.version) for d in first] == \
        [(d.destination, d.record_key, d.version) for d in second]
    assert world.deliver().dead == 0
    assert sorted((r["account_id"], r["name"]) for r in world.lines("accounts.jsonl")) == \
        sorted([(acme, "Acme"), (globex, "Globex")])
    assert sorted(r["account_id"] for r in world.lines("history.jsonl")) == sorted([acme, globex])

    world.rename(acme, "Acme Corporation")
    assert ack_of(world.post(message)) == "true"
    assert world.deliver().dead == 0
    assert {r["account_id"]: r["name"] for r in world.lines("accounts.jsonl")} == \
        {acme: "Acme Corporation", globex: "Globex"}
    history = sorted((r["account_id"], r["name"]) for r in world.lines("history.jsonl"))
    assert history == sorted([(acme, "Acme"), (acme, "Acme Corporation"), (globex, "Globex")]), \
        "one line per version of a record"


def test_a_record_deleted_in_the_source_becomes_a_delete(world: World) -> None:
    acme, globex = world.account("Acme"), world.account("Globex")
    message = notification([{"Id": acme, "Name": "Acme"}, {"Id": globex, "Name": "Globex"}])
    assert ack_of(world.post(message)) == "true"
    assert world.deliver().dead == 0
    world.local.org.delete(world.local.org.sobject("Account"), globex)

    assert ack_of(world.post(message)) == "true"

    latest = world.queued()[4:]
    assert sorted((d.destination, d.record_key, d.operation) for d in latest) == [
        ("accounts", acme, "upsert"), ("accounts", globex, "delete"),
        ("history", acme, "upsert"), ("history", globex, "delete")]
    assert world.deliver().dead == 0
    assert [r["account_id"] for r in world.lines("accounts.jsonl")] == [acme]


def test_notifications_from_another_org_or_without_the_secret_are_refused(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    acme = world.account("Acme")
    message = notification([{"Id": acme, "Name": "Acme"}])

    other_org = world.post(notification([{"Id": acme}], org=sfid.make("00D", 2)))
    assert other_org.status_code == 403 and fault_of(other_org)[0] == "soapenv:Client"
    lower_case = world.post(notification([{"Id": acme}], org=ORG_ID.lower()))
    assert lower_case.status_code == 403, "org ids are case-sensitive"
    for secret in (None, "", "not-the-secret", SECRET + "x"):
        refused = world.post(message, secret=secret)
        assert refused.status_code == 401, secret
        assert "secret" in fault_of(refused)[1]
    monkeypatch.delenv("SF_OUTBOUND_SECRET")
    unset = world.post(message)
    assert unset.status_code == 500
    assert fault_of(unset) == ("soapenv:Server", "the Outbound Messages secret is not set "
                                                 "(environment variable SF_OUTBOUND_SECRET)")
    assert world.queued() == []


def test_bodies_that_are_not_notifications_for_this_broadcast_are_refused(world: World) -> None:
    acme = world.account("Acme")
    message = notification([{"Id": acme, "Name": "Acme"}])
    bomb = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>' + message.split(b"?>", 1)[1])
    bomb = bomb.replace(b"<sf:Name>Acme</sf:Name>", b"<sf:Name>&lol2;</sf:Name>")
    entity_only = message.replace(b"<soapenv:Body>", b"<soapenv:Body><!ENTITY x 'y'>")

    for body in (bomb, entity_only):
        refused = world.post(body)
        assert refused.status_code == 400
        assert fault_of(refused)[1] == "DOCTYPE and ENTITY declarations are not accepted"
    malformed = world.post(message.replace(b"</notifications>", b"</notification>"))
    assert malformed.status_code == 400
    assert fault_of(malformed)[1].startswith("the body is not well-formed XML: mismatched tag")
    not_soap = world.post(b"<notifications/>")
    assert "not a SOAP 1.1 envelope" in fault_of(not_soap)[1]
    contacts = world.post(notification([{"Id": sfid.make("003", 1)}], object="Contact"))
    assert fault_of(contacts)[1] == f"'{NAME}' takes notifications of Account, not of Contact"
    too_many = world.post(notification([{"Id": acme}] * 101))
    assert "1 to 100 Notification elements, not 101" in fault_of(too_many)[1]
    no_id = world.post(notification([{"Name": "Acme"}]))
    assert "Notification 1: its sObject has no Id" in fault_of(no_id)[1]
    huge = world.post(message.replace(b"Acme</sf:Name>", b"A" * 6_000_000 + b"</sf:Name>"))
    assert huge.status_code == 413
    as_json = world.post(message, headers={"Content-Type": "application/json"})
    assert as_json.status_code == 415
    latin = world.post(message, headers={"Content-Type": "text/xml; charset=iso-8859-1"})
    assert latin.status_code == 415
    unknown = world.post(message, integration="no such broadcast")
    assert unknown.status_code == 404 and fault_of(unknown)[0] == "soapenv:Client"
    assert world.queued() == []

    soap12 = world.post(message, headers={"Content-Type": 'application/soap+xml; charset="UTF-8"'})
    assert soap12.status_code == 200 and ack_of(soap12) == "true"


def test_a_source_that_is_down_gets_a_fault_and_the_redelivery_is_acknowledged(
        world: World) -> None:
    acme = world.account("Acme")
    message = notification([{"Id": acme, "Name": "Acme"}])
    world.local.stop()

    down = world.post(message)

    assert down.status_code == 500
    assert fault_of(down) == ("soapenv:Server", "a system the broadcast reads cannot be reached "
                                                "now; the server's log has the details")
    assert world.queued() == []

    # The same org, back on the same address: what Salesforce retries against.
    world.local = LocalOrg(OrgConfig(database=str(world.tmp / "org.db")), port=world.local.port).start()
    again = world.post(message)
    assert again.status_code == 200 and ack_of(again) == "true"
    assert [(d.destination, d.record_key, d.operation) for d in world.queued()] == [
        ("accounts", acme, "upsert"), ("history", acme, "upsert")]


def test_the_session_id_is_never_logged(world: World, caplog: pytest.LogCaptureFixture) -> None:
    acme = world.account("Acme")
    caplog.set_level(logging.DEBUG)
    assert ack_of(world.post(notification([{"Id": acme}], session_id=SESSION_ID))) == "true"
    refused = world.post(notification([{"Id": acme}], session_id=SESSION_ID, org=sfid.make("00D", 2)))
    assert refused.status_code == 403
    ours = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("patchbay"))
    assert "outbound message" in ours and SECRET not in ours
    assert SESSION_ID not in caplog.text, "in no log, the HTTP libraries' included"


def test_a_15_character_id_is_the_same_record_and_an_id_never_deleted_is_no_delete(
        world: World) -> None:
    acme, globex = world.account("Acme"), world.account("Globex")
    never_existed = sfid.make("001", 999)
    message = notification([{"Id": acme[:15]}, {"Id": globex}, {"Id": never_existed}])

    assert ack_of(world.post(message)) == "true"

    assert [(d.destination, d.record_key, d.operation) for d in world.queued()] == [
        ("accounts", acme, "upsert"), ("accounts", globex, "upsert"),
        ("history", acme, "upsert"), ("history", globex, "upsert")]


def test_malformed_messages_are_400_client_faults(world: World) -> None:
    acme = world.account("Acme")
    message = notification([{"Id": acme}])
    for body in (b"<notifications/>", b"not xml", message.replace(b"</notifications>", b"</x>"),
                 notification([{"Id": acme}], object="Contact"), notification([{"Name": "x"}]),
                 notification([{"Id": acme[:14] + "!"}]),
                 notification([{"Id": acme, "Name": "Acme"}]).replace(b"Acme", b"\xff\xfe")):
        refused = world.post(body)
        assert refused.status_code == 400, refused.text
        assert fault_of(refused)[0] == "soapenv:Client"
    assert world.queued() == []


def test_outbound_messages_need_a_secret_unless_declared_open(world: World) -> None:
    declared = SPEC.format(port=world.local.port, name=NAME, org=ORG_ID[:15])
    without = world.tmp / "without-secret.yaml"
    without.write_text(declared.replace(", secret_env: SF_OUTBOUND_SECRET", ""))
    with pytest.raises(SpecError) as refused:
        load(without)
    assert any("give secret_env (an environment variable holding the secret the endpoint URL "
               "carries as ?secret=), or allow_unauthenticated: true" in p
               for p in refused.value.problems), refused.value.problems

    declared_open = world.tmp / "open.yaml"
    declared_open.write_text(declared.replace("secret_env: SF_OUTBOUND_SECRET",
                                              "allow_unauthenticated: true"))
    app = create_app(declared_open, str(world.tmp / "state"), TOKEN)
    try:
        with TestClient(app) as client:
            answer = client.post(f"/outbound/{NAME}", content=notification([{"Id": world.account("A")}]),
                                 headers=SOAP_HEADERS)
            assert ack_of(answer) == "true"
    finally:
        close_app(app)


def test_a_fault_never_shows_the_servers_paths(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SF_OUTBOUND_SECRET", SECRET)
    missing = tmp_path / "no such directory" / "crm.db"
    (tmp_path / "sql.yaml").write_text(f"""
systems:
  crm: sqlite:///{missing}
  files: {{url: "file:out", options: {{fields: {{accounts.jsonl: [Id]}}}}}}
integrations:
  - name: {NAME}
    pattern: broadcast
    source: {{system: crm, object: Account, key: Id}}
    trigger: {{outbound_messages: {{organization_id: {ORG_ID}, secret_env: SF_OUTBOUND_SECRET}}}}
    destinations: [{{name: accounts, system: files, object: accounts.jsonl, key: Id}}]
""")
    app = create_app(tmp_path / "sql.yaml", str(tmp_path / "state"), TOKEN)
    try:
        with TestClient(app) as client:
            answer = client.post(f"/outbound/{NAME}", params={"secret": SECRET},
                                 content=notification([{"Id": sfid.make("001", 1)}]),
                                 headers=SOAP_HEADERS)
    finally:
        close_app(app)
    assert answer.status_code == 500
    assert fault_of(answer) == ("soapenv:Server", "a system the broadcast reads cannot be "
                                                  "reached now; the server's log has the details")
    assert str(tmp_path) not in answer.text


def test_messages_dense_with_elements_neither_stall_the_server_nor_get_parsed_whole(
        world: World) -> None:
    acme = world.account("Acme")
    # About 4.8 MB of 1.2 million elements: seconds of parsing each, were it parsed whole.
    heavy = notification([{"Id": acme, "Name": "Acme"}]).replace(
        b"<sf:Name>Acme</sf:Name>", b"<sf:Name>" + b"<x/>" * 1_200_000 + b"</sf:Name>")
    with serve_api("127.0.0.1", free_port(), world.spec, str(world.tmp / "state"),
                   token=TOKEN) as server:
        answers: list[httpx.Response] = []

        def post() -> None:
            answers.append(httpx.post(f"{server.url}/outbound/{NAME}", params={"secret": SECRET},
                                      content=heavy, headers=SOAP_HEADERS, timeout=120))

        posting = [threading.Thread(target=post) for _ in range(3)]
        for thread in posting:
            thread.start()
        slowest = 0.0
        while any(thread.is_alive() for thread in posting):
            asked = time.monotonic()
            assert httpx.get(f"{server.url}/health", timeout=60).status_code == 200
            slowest = max(slowest, time.monotonic() - asked)
            time.sleep(0.05)
        for thread in posting:
            thread.join()
    assert [(a.status_code, fault_of(a)) for a in answers] == [
        (400, ("soapenv:Client", f"a message holds at most {MAX_ELEMENTS} XML elements"))] * 3
    # Parsed on the event loop, each took it away for seconds (a loaded machine: margin).
    assert slowest < 2.0, f"GET /health waited {slowest:.1f} s while messages were parsed"


def test_a_webhook_of_salesforce_ids_takes_15_and_18_characters_alike(
        world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SF_HOOK_SECRET", "hook-secret-for-tests")
    declared = world.tmp / "hooked.yaml"
    declared.write_text(SPEC.format(port=world.local.port, name=NAME, org=ORG_ID[:15]).replace(
        "trigger: {outbound_messages:", "trigger: {webhook: {secret_env: SF_HOOK_SECRET}, "
                                        "outbound_messages:"))
    acme, globex = world.account("Acme"), world.account("Globex")
    world.local.org.delete(world.local.org.sobject("Account"), globex)
    body = json.dumps({"ids": [acme[:15], globex[:15], sfid.make("001", 999)]}).encode()
    stamp = str(int(time.time()))
    app = create_app(declared, str(world.tmp / "state"), TOKEN)
    try:
        with TestClient(app) as client:
            answer = client.post(f"/hooks/{NAME}", content=body, headers={
                "X-Patchbay-Timestamp": stamp, "Content-Type": "application/json",
                "X-Patchbay-Signature": sign("hook-secret-for-tests", stamp, body)})
    finally:
        close_app(app)
    assert answer.status_code == 202, answer.text
    assert [(d.destination, d.record_key, d.operation) for d in world.queued()] == [
        ("accounts", acme, "upsert"), ("accounts", globex, "delete"),
        ("history", acme, "upsert"), ("history", globex, "delete")]


def test_an_acknowledged_notification_is_delivered_at_once_by_the_serving_broadcast(
        world: World) -> None:
    declared = world.tmp / "slow-poll.yaml"
    declared.write_text(SPEC.format(port=world.local.port, name=NAME, org=ORG_ID[:15]).replace(
        "trigger: {outbound_messages:", "trigger: {poll_seconds: 60, outbound_messages:"))
    store = Store.open(directory=world.tmp / "state")
    polled = threading.Event()
    ctx = Invocation.load(declared, NAME, {}).context(store, world.tmp / "state" / "runs",
                                                      progress=lambda *_: polled.set())
    stop = threading.Event()
    serving = threading.Thread(target=serve, args=(ctx, stop), daemon=True)
    serving.start()
    try:
        # The first poll (at start) finds nothing; the next one is a minute away.
        assert polled.wait(30)
        acme = world.account("Acme")
        pushed_at = time.monotonic()
        assert ack_of(world.post(notification([{"Id": acme}]))) == "true"
        accounts = world.tmp / "out" / "accounts.jsonl"
        while not accounts.exists() or not world.lines("accounts.jsonl"):
            assert time.monotonic() - pushed_at < 10, "the notification waits for the next poll"
            time.sleep(0.05)
        assert [(r["account_id"], r["name"]) for r in world.lines("accounts.jsonl")] == [(acme, "Acme")]
    finally:
        stop.set()
        serving.join(timeout=30)
        store.close()
