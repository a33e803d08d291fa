"""The Closed Won example end to end: the local org's opportunities into PostgreSQL,
RabbitMQ and a JSON Lines audit."""

from __future__ import annotations

import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import psycopg
import pytest

from patchbay import run_integration
from patchbay.localorg.org import OrgConfig
from patchbay.localorg.running import LocalOrg

EXAMPLE = Path(__file__).parents[2] / "examples" / "broadcast"
NAME = "Salesforce to ERP, fulfilment and audit - Opportunity - broadcast"
AMQP = "amqp://guest:guest@127.0.0.1:5672/"


@pytest.fixture
def erp_schema(pg_url: str) -> Iterator[str]:
    schema = f"erp_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"SET search_path TO {schema}")
        conn.execute((EXAMPLE / "erp-schema.sql").read_text())
    yield schema
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def queue() -> Iterator[tuple[pika.adapters.blocking_connection.BlockingChannel, str]]:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP))
    channel = connection.channel()
    channel.exchange_declare("orders", exchange_type="topic", durable=True)
    name = f"fulfilment-{uuid.uuid4().hex[:8]}"
    channel.queue_declare(name, exclusive=True)
    channel.queue_bind(name, "orders", routing_key="order.#")
    yield channel, name
    connection.close()


def test_closed_won_reaches_erp_and_fulfilment_and_every_change_the_audit(
        tmp_path: Path, pg_url: str, erp_schema: str, queue: tuple[object, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(EXAMPLE / "closed-won.yaml", tmp_path / "closed-won.yaml")
    (tmp_path / "audit").mkdir()
    channel, queue_name = queue
    with LocalOrg(OrgConfig()) as local:
        org = local.org
        monkeypatch.setenv("SF_URL", f"salesforce+http://127.0.0.1:{local.port}")
        monkeypatch.setenv("ERP_URL", f"{pg_url}?options=-csearch_path%3D{erp_schema}")
        session = org.login("integration@patchbay.local", "password")
        account = org.create(org.sobject("Account"), {"Name": "Acme"}, session)
        opportunity = org.sobject("Opportunity")
        won = org.create(opportunity, {"Name": "Big one", "StageName": "Closed Won",
                                       "CloseDate": "2026-06-30", "Amount": 12000,
                                       "AccountId": account}, session)
        open_deal = org.create(opportunity, {"Name": "Maybe", "StageName": "Prospecting",
                                             "CloseDate": "2026-09-30", "Amount": 500,
                                             "AccountId": account}, session)
        spec, state = tmp_path / "closed-won.yaml", tmp_path / "state"

        first = run_integration(spec, NAME, state=state)
        assert (first["changes"], first["dead"]) == (2, 0)
        org.clock.advance(2)
        org.update(opportunity, open_deal, {"StageName": "Closed Won"}, session)
        second = run_integration(spec, NAME, state=state)
        assert (second["changes"], second["delivered"], second["dead"]) == (1, 3, 0)

    with psycopg.connect(pg_url) as conn:
        orders = conn.execute(f"SELECT opportunity_id, title, amount, account_name FROM "
                              f"{erp_schema}.sales_orders ORDER BY title").fetchall()
    assert [(o[0], o[1], float(o[2]), o[3]) for o in orders] == [
        (won, "Big one", 12000.0, "Acme"), (open_deal, "Maybe", 500.0, "Acme")]

    messages = []
    while True:
        method, properties, body = channel.basic_get(queue_name, auto_ack=True)  # type: ignore[attr-defined]
        if method is None:
            break
        messages.append((method.routing_key, properties.message_id, json.loads(body)))
    assert [m[2]["key"] for m in messages] == [won, open_deal]
    assert all(m[0] == f"order.{account}" for m in messages)
    assert len({m[1] for m in messages}) == 2

    audit = [json.loads(line) for line in
             (tmp_path / "audit" / "opportunity-changes.jsonl").read_text().splitlines()]
    assert [(a["opportunity_id"], a["stage"]) for a in audit] == [
        (won, "Closed Won"), (open_deal, "Prospecting"), (open_deal, "Closed Won")]
