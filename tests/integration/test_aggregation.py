"""The customer 360 example against real systems: two local orgs, the ERP in PostgreSQL and
the support desk in MariaDB. De-duplication, precedence, provenance, flags, roll-ups
written back, reports, the live endpoint, and partial answers with a source down."""

from __future__ import annotations

import json
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import openpyxl
import psycopg
import pyarrow.parquet as pq
import pymysql
import pytest
from starlette.testclient import TestClient

from patchbay import run_integration
from patchbay.api.app import ANSWER_RETRY_SECONDS, MAX_CONCURRENT_ANSWERS, close_app, create_app
from patchbay.localorg.org import OrgConfig
from patchbay.localorg.running import LocalOrg

EXAMPLE = Path(__file__).parents[2] / "examples" / "aggregation"
NAME = "customer 360"


@pytest.fixture
def erp(pg_url: str) -> Iterator[str]:
    schema = f"erp_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"SET search_path TO {schema}")
        conn.execute((EXAMPLE / "erp-and-support-schema.sql").read_text())
        conn.execute("INSERT INTO customers VALUES "
                     "('C-1', 'Analytical Engines', 'ADA@example.com ', '+44 1', '2026-11-01 09:00'),"
                     "('C-2', 'Difference Works', 'charles@example.com', NULL, '2026-11-02 09:00'),"
                     "('C-3', 'Only in ERP', 'erp@example.com', '+49 3', '2026-11-03 09:00')")
        conn.execute("INSERT INTO orders VALUES ('O-1', 'C-1', 100.10, '2026-10-01'), "
                     "('O-2', 'C-1', 200.20, '2026-11-01'), ('O-3', 'C-2', 50.00, '2026-09-09')")
    yield f"{pg_url}?options=-csearch_path%3D{schema}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


@pytest.fixture
def support() -> Iterator[str]:
    database = f"support_{uuid.uuid4().hex[:8]}"
    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", autocommit=True)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {database}")
            cur.execute(f"USE {database}")
            for statement in (EXAMPLE / "erp-and-support-schema.sql").read_text().split(";"):
                if statement.strip() and "CREATE TABLE tickets" in statement:
                    cur.execute(statement)
            cur.executemany("INSERT INTO tickets VALUES (%s, %s, %s, %s, %s)", [
                ("T-1", "ada@example.com", "help", "open", "2026-11-20 10:00:00"),
                ("T-2", "Ada@Example.com", "more help", "pending", "2026-11-21 10:00:00"),
                ("T-3", "ada@example.com", "solved", "closed", "2026-11-01 10:00:00"),
                ("T-4", "grace@example.com", "hi", "open", "2026-11-22 10:00:00")])
        yield f"mysql+pymysql://root@127.0.0.1:3306/{database}"
    finally:
        with conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {database}")
        conn.close()


@pytest.fixture
def orgs(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[LocalOrg, LocalOrg]]:
    schema = json.loads((EXAMPLE / "localorg-schema.json").read_text())
    with LocalOrg(OrgConfig(custom_schema=schema)) as sales, \
            LocalOrg(OrgConfig(custom_schema=schema)) as service:
        sales.org.seed({"Account": [
            {"Name": "Analytical Engines Ltd", "Customer_Email__c": "ada@example.com",
             "Phone": "+44 20 1"},
            {"Name": "Hopper Compilers", "Customer_Email__c": "grace@example.com"}]})
        service.org.clock.advance(3600)
        service.org.seed({"Account": [
            {"Name": "Analytical Engines (support)", "Customer_Email__c": "Ada@Example.com",
             "Phone": "+44 20 9"},
            {"Name": "Difference Works", "Customer_Email__c": "charles@example.com",
             "Phone": "+44 20 2"}]})
        monkeypatch.setenv("SALES_ORG_URL", f"salesforce+http://127.0.0.1:{sales.port}")
        monkeypatch.setenv("SERVICE_ORG_URL", f"salesforce+http://127.0.0.1:{service.port}")
        yield sales, service


@pytest.fixture
def spec(tmp_path: Path, erp: str, support: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(EXAMPLE / "customer-360.yaml", tmp_path / "customer-360.yaml")
    monkeypatch.setenv("ERP_URL", erp)
    monkeypatch.setenv("SUPPORT_URL", support)
    return tmp_path / "customer-360.yaml"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def by_email(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["email"]: r for r in rows}


def test_customer_360_merges_enriches_writes_back_and_reports(
        tmp_path: Path, spec: Path, orgs: tuple[LocalOrg, LocalOrg]) -> None:
    sales, _ = orgs
    report = run_integration(spec, NAME, state=tmp_path / "state")
    assert report["status"] == "complete", json.dumps(report, default=str)[:3000]
    assert {n: s["status"] for n, s in report["sources"].items()} == dict.fromkeys(
        ["sales", "service", "erp", "orders", "tickets"], "ok")
    assert report["rows"] == 4, "ada, charles, grace and erp@: one row per customer"

    rows = by_email(pq.read_table(tmp_path / "reports" / "customer-360.parquet").to_pylist())
    ada = rows["ada@example.com"]
    # phone: most recent (the service org changed later); name: first non-empty in union order
    assert (ada["phone"], ada["phone__source"]) == ("+44 20 9", "service")
    assert (ada["name"], ada["name__source"]) == ("Analytical Engines Ltd", "sales")
    assert ada["_sources"] == "sales|service|erp"
    assert set(ada["_differs"].split("|")) == {"modified", "name", "phone"}  # each org its own time
    assert ada["orders"] == 2 and ada["lifetime_value"] == Decimal("300.30")
    assert ada["open_tickets"] == 2, "open and pending count; closed does not"
    assert rows["grace@example.com"]["_sources"] == "sales"
    assert rows["grace@example.com"]["orders"] == 0
    assert rows["erp@example.com"]["_sources"] == "erp"
    assert rows["charles@example.com"]["phone"] == "+44 20 2"

    sheet = openpyxl.load_workbook(tmp_path / "reports" / "customer-360.xlsx")["customers"]
    assert sheet.freeze_panes == "A2"
    header = [c.value for c in sheet[1]]
    assert header[0] == "email" and "lifetime_value" in header
    assert sheet.max_row == 5

    written = report["destinations"]["sales/Account"]
    assert written.get("updated", 0) == 2, written
    with sales.org.storage.lock:
        rollups = dict((r[0], (r[1], r[2])) for r in sales.org.storage.db.execute(
            'SELECT "Customer_Email__c", "Open_Tickets__c", "Lifetime_Value__c" FROM "Account"'))
    assert rollups["ada@example.com"] == (2, 300.3)
    assert rollups["grace@example.com"] == (1, None)


def drop_tickets(support: str) -> None:
    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", autocommit=True,
                           database=support.rsplit("/", 1)[1])
    with conn, conn.cursor() as cur:
        cur.execute("DROP TABLE tickets")


@pytest.mark.parametrize("how", ["wrong port", "dropped table"])
def test_a_source_down_gives_a_partial_answer_naming_it_and_what_it_left_unknown(
        tmp_path: Path, spec: Path, support: str, orgs: tuple[LocalOrg, LocalOrg],
        monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    sales, _ = orgs
    with sales.org.storage.lock:
        sales.org.storage.db.execute(
            'UPDATE "Account" SET "Open_Tickets__c" = 7 WHERE "Customer_Email__c" = \'ada@example.com\'')
    if how == "wrong port":
        monkeypatch.setenv("SUPPORT_URL", f"mysql+pymysql://root@127.0.0.1:{closed_port()}/nothing")
    else:
        drop_tickets(support)
    report = run_integration(spec, NAME, state=tmp_path / "state")
    assert report["status"] == "partial"
    assert report["partial"] is True
    assert report["sources"]["tickets"]["status"] == "failed"
    assert report["sources"]["tickets"]["error"]
    assert report["incomplete"] == {"open_tickets": ["tickets"], "oldest_open_ticket": ["tickets"]}
    assert report["rows"] == 4
    rows = by_email(pq.read_table(tmp_path / "reports" / "customer-360.parquet").to_pylist())
    assert rows["ada@example.com"]["orders"] == 2, "the other sources still answer"
    assert {email: row["open_tickets"] for email, row in rows.items()} == dict.fromkeys(rows), \
        "tickets unknown, not 0"

    written = report["destinations"]["sales/Account"]
    assert written == {"updated": 1, "unchanged": 1, "skipped": 2, "left_out": ["Open_Tickets__c"]}, \
        "grace has no value to write but the null she has"
    with sales.org.storage.lock:
        rollups = dict((r[0], (r[1], r[2])) for r in sales.org.storage.db.execute(
            'SELECT "Customer_Email__c", "Open_Tickets__c", "Lifetime_Value__c" FROM "Account"'))
    assert rollups["ada@example.com"] == (7, 300.3), "the count it had stays; the value is written"
    assert rollups["grace@example.com"] == (None, None)

    app = create_app(spec, str(tmp_path / "state"), token=None)
    try:
        with TestClient(app) as client:
            live = client.get("/aggregations/customer 360", params={"email": "ada@example.com"})
            assert live.status_code == 200, live.text
            assert live.headers["x-patchbay-incomplete-columns"] == "open_tickets,oldest_open_ticket"
            body = live.json()
            assert body["incomplete"] == report["incomplete"]
            [ada] = body["records"]
            assert (ada["orders"], ada["open_tickets"], ada["oldest_open_ticket"]) == (2, None, None)
            csv_answer = client.get("/aggregations/customer 360",
                                    params={"email": "ada@example.com", "format": "csv"})
            header, line = csv_answer.text.strip().splitlines()
            assert dict(zip(header.split(","), line.split(","), strict=True))["open_tickets"] == ""
    finally:
        close_app(app)


def test_a_required_source_down_gives_no_answer(
        tmp_path: Path, spec: Path, orgs: tuple[LocalOrg, LocalOrg],
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ERP_URL", f"postgresql://postgres@127.0.0.1:{closed_port()}/test")
    report = run_integration(spec, NAME, state=tmp_path / "state")
    assert report["status"] == "failed"
    assert "erp" in report["error"]
    assert not (tmp_path / "reports" / "customer-360.parquet").exists()


def test_the_live_endpoint_answers_for_one_customer_in_json_and_csv(
        tmp_path: Path, spec: Path, orgs: tuple[LocalOrg, LocalOrg],
        monkeypatch: pytest.MonkeyPatch) -> None:
    app = create_app(spec, str(tmp_path / "state"), token=None)
    try:
        with TestClient(app) as client:
            answer = client.get("/aggregations/customer 360",
                                params={"email": "charles@example.com"})
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert body["partial"] is False and answer.headers["x-patchbay-partial"] == "false"
            [charles] = body["records"]
            assert charles["email"] == "charles@example.com" and charles["open_tickets"] == 0
            assert charles["_sources"] == "service|erp"
            assert charles["lifetime_value"] == "50.00", "decimals travel as exact text"
            assert set(body["sources"]) == {"sales", "service", "erp", "orders", "tickets"}
            assert body["sources"]["erp"]["rows"] == 1, "the email is pushed down as a scope"

            csv_answer = client.get("/aggregations/customer 360",
                                    params={"email": "ada@example.com", "format": "csv"})
            assert csv_answer.status_code == 200
            lines = csv_answer.text.strip().splitlines()
            assert lines[0].startswith("email,") and len(lines) == 2
            assert "ada@example.com" in lines[1] and "+44 20 9" in lines[1]

            assert client.get("/aggregations/customer 306").status_code == 404
    finally:
        close_app(app)

    monkeypatch.setenv("SUPPORT_URL", f"mysql+pymysql://root@127.0.0.1:{closed_port()}/nothing")
    app = create_app(spec, str(tmp_path / "state"), token=None)
    try:
        with TestClient(app) as client:
            partial = client.get("/aggregations/customer 360", params={"email": "ada@example.com"})
            assert partial.status_code == 200
            assert partial.json()["partial"] is True
            assert partial.headers["x-patchbay-failed-sources"] == "tickets"
    finally:
        close_app(app)


def test_a_live_call_finds_the_customer_in_every_source_whatever_the_case_and_spaces(
        tmp_path: Path, spec: Path, orgs: tuple[LocalOrg, LocalOrg]) -> None:
    app = create_app(spec, str(tmp_path / "state"), token=None)
    try:
        with TestClient(app) as client:
            answer = client.get("/aggregations/customer 360", params={"email": " Ada@Example.COM"})
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert {name: s["rows"] for name, s in body["sources"].items()} == {
                "sales": 1, "service": 1, "erp": 1, "orders": 3, "tickets": 3}, \
                "PostgreSQL holds 'ADA@example.com ', the orgs 'ada@example.com' and 'Ada@Example.com'"
            [ada] = body["records"]
            assert (ada["email"], ada["_sources"], ada["orders"], ada["open_tickets"]) == (
                "ada@example.com", "sales|service|erp", 2, 2)
    finally:
        close_app(app)


def slow_view(erp: str, pg_url: str, table: str, *, seconds: int) -> None:
    """`slow_<table>` in the ERP's schema: the table's rows after a sleep of `seconds`."""
    schema = erp.rsplit("%3D", 1)[1]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE VIEW {schema}.slow_{table} AS "
                     f"SELECT t.* FROM {schema}.{table} t, pg_sleep({seconds})")


def test_a_source_slower_than_its_timeout_is_given_up_and_named(tmp_path: Path, erp: str,
                                                                 pg_url: str) -> None:
    slow_view(erp, pg_url, "orders", seconds=12)
    spec = tmp_path / "slow.yaml"
    spec.write_text(f"""
systems:
  erp: "{erp}"
integrations:
  - name: slow
    pattern: aggregation
    sources:
      - {{name: customers, system: erp, object: customers,
          transform: {{fields: {{id: customer_id, email: email}}}}}}
      - {{name: orders, system: erp, object: slow_orders, timeout_seconds: 1,
          transform: {{fields: {{customer_id: customer_id, amount: amount}}}}}}
    merge:
      union: [customers]
      key: id
      enrich:
        - source: orders
          join: {{customer_id: id}}
          aggregate: {{orders: {{count: "*"}}}}
    reports: [{{file: slow.csv}}]
""")
    started = time.monotonic()
    report = run_integration(spec, state=tmp_path / "state")
    # Well under the slow source's 12 s, with room for a loaded machine over the 1 s timeout.
    assert time.monotonic() - started < 9, "the answer does not wait for the slow source"
    assert report["status"] == "partial"
    assert report["sources"]["orders"]["status"] == "timeout"
    assert "1s" in report["sources"]["orders"]["error"]
    assert report["rows"] == 3
    assert (tmp_path / "slow.csv").read_text().count("\n") == 4


def test_post_runs_runs_an_aggregation_on_demand(
        tmp_path: Path, spec: Path, orgs: tuple[LocalOrg, LocalOrg]) -> None:
    app = create_app(spec, str(tmp_path / "state"), token="t0ken")
    try:
        with TestClient(app) as client:
            assert client.post("/runs", json={"integration": NAME}).status_code == 401
            done = client.post("/runs", json={"integration": NAME},
                               headers={"Authorization": "Bearer t0ken"})
            assert done.status_code == 200, done.text
            assert done.json()["status"] == "complete" and done.json()["rows"] == 4
            assert client.get("/aggregations/customer 360").status_code == 401, \
                "the live answer needs the token too"
    finally:
        close_app(app)
    assert (tmp_path / "reports" / "customer-360.parquet").exists()


@pytest.mark.slow
def test_live_answers_past_the_concurrency_bound_are_told_to_retry(tmp_path: Path, erp: str,
                                                                   pg_url: str) -> None:
    slow_view(erp, pg_url, "customers", seconds=3)
    spec = tmp_path / "slow.yaml"
    spec.write_text(f"""
systems:
  erp: "{erp}"
integrations:
  - name: slow
    pattern: aggregation
    sources:
      - {{name: customers, system: erp, object: slow_customers,
          transform: {{fields: {{id: customer_id, email: email}}}}}}
    merge: {{union: [customers], key: id}}
""")
    app = create_app(spec, str(tmp_path / "state"), token=None)
    try:
        with TestClient(app) as client, ThreadPoolExecutor(MAX_CONCURRENT_ANSWERS + 1) as pool:
            answers = list(pool.map(lambda _: client.get("/aggregations/slow"),
                                    range(MAX_CONCURRENT_ANSWERS + 1)))
            assert sorted(a.status_code for a in answers) == [200] * MAX_CONCURRENT_ANSWERS + [503]
            [busy] = [a for a in answers if a.status_code == 503]
            assert busy.headers["retry-after"] == str(ANSWER_RETRY_SECONDS)
            assert busy.json() == {
                "error": f"busy: {MAX_CONCURRENT_ANSWERS} aggregations are being computed, the most "
                         f"this server computes at once; retry in {ANSWER_RETRY_SECONDS} seconds",
                "retry_after_seconds": ANSWER_RETRY_SECONDS}
            assert all(a.json()["rows"] == 3 for a in answers if a.status_code == 200)
            answering = [pool.submit(client.get, "/aggregations/slow", params={"format": "csv"})
                         for _ in range(MAX_CONCURRENT_ANSWERS)]
            time.sleep(1)
            run = client.post("/runs", json={"integration": "slow"})
            assert (run.status_code, run.headers["retry-after"]) == (503, str(ANSWER_RETRY_SECONDS)), \
                "a run on demand counts as one of them"
            assert [a.result().status_code for a in answering] == [200] * MAX_CONCURRENT_ANSWERS, \
                "every answer sent gave its place back"
            assert client.post("/runs", json={"integration": "slow"}).status_code == 200
    finally:
        close_app(app)
