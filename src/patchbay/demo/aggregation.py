"""The demo's aggregation: customer 360 over two local orgs, an ERP and a support desk.

Two local orgs (sales and service) are started in this process and seeded with accounts
that overlap by email, and the ERP's customers and orders and the support desk's tickets
are SQLite files. The aggregation writes an XLSX and a Parquet report and the roll-up
fields on the sales org's accounts; then the HTTP API answers for one customer.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from urllib.parse import quote

import httpx
from rich.console import Console
from rich.rule import Rule
from rich.table import Table

from patchbay import render
from patchbay.api import serve_api
from patchbay.localorg import LocalOrg, OrgConfig, free_port
from patchbay.runtime import runner
from patchbay.store import Store

NAME = "customer 360"
CUSTOMERS = [  # (company, email as each system writes it, phone)
    ("Analytical Engines Ltd", "Ada@Example.com", "+44 20 7946 0001"),
    ("Difference Works", "charles@example.com", "+44 20 7946 0002"),
    ("Hopper Compilers", "grace@example.com", "+1 212 555 0103"),
    ("Turing Machines", "alan@example.com", None),
    ("Lovelace Notes", "notes@example.com", "+44 20 7946 0005"),
]


def run_aggregation(directory: Path, console: Console, store: Store, reports: Path) -> str:
    """Run the customer 360 aggregation and call its endpoint once; the run's status."""
    files = resources.files("patchbay.demo")
    spec = directory / "customer-360.yaml"
    spec.write_text(files.joinpath("customer-360.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    schema = json.loads(files.joinpath("customer-360-schema.json").read_text(encoding="utf-8"))
    _build_erp_and_support(directory, files.joinpath("erp-and-support-schema.sql").read_text())
    with LocalOrg(OrgConfig(custom_schema=schema)) as sales, \
            LocalOrg(OrgConfig(custom_schema=schema)) as service, \
            _environment(SALES_ORG_URL=f"salesforce+http://127.0.0.1:{sales.port}",
                         SERVICE_ORG_URL=f"salesforce+http://127.0.0.1:{service.port}"):
        _seed_orgs(sales, service)
        console.print(Rule(f"{NAME} (two local orgs + ERP + support desk → reports, roll-ups, API)"))
        report = runner.run(runner.Invocation.load(spec, NAME, {}).context(store, reports))
        render.aggregation(console, report)
        _show_rollups(console, sales)
        _call_endpoint(console, spec, directory)
    return str(report["status"])


def _build_erp_and_support(directory: Path, schema: str) -> None:
    today = dt.date(2026, 11, 27)
    for name in ("erp.db", "support.db"):
        with sqlite3.connect(directory / name) as db:
            for table in ("customers", "orders", "tickets"):
                db.execute(f"DROP TABLE IF EXISTS {table}")
            db.executescript(schema)
    with sqlite3.connect(directory / "erp.db") as erp:
        erp.executemany("INSERT INTO customers VALUES (?, ?, ?, ?, ?)", [
            (f"C-{i:03d}", company, email.upper() if i == 3 else email, phone if i != 2 else None,
             f"2026-11-{10 + i:02d} 09:00:00")
            for i, (company, email, phone) in enumerate(CUSTOMERS[:4])])
        erp.executemany("INSERT INTO orders VALUES (?, ?, ?, ?)", [
            (f"O-{n:04d}", f"C-{n % 4:03d}", f"{120 + 37.5 * n:.2f}",
             (today - dt.timedelta(days=9 * n)).isoformat()) for n in range(1, 13)])
    with sqlite3.connect(directory / "support.db") as support:
        support.executemany("INSERT INTO tickets VALUES (?, ?, ?, ?, ?)", [
            (f"T-{n:03d}", CUSTOMERS[n % 5][1], f"Question {n}", ("open", "pending", "closed")[n % 3],
             f"2026-11-{n + 1:02d} 10:00:00") for n in range(1, 10)])


def _seed_orgs(sales: LocalOrg, service: LocalOrg) -> None:
    sales.org.seed({"Account": [
        {"Name": company, "Customer_Email__c": email, "Phone": phone}
        for company, email, phone in CUSTOMERS[:3]]})
    service.org.clock.advance(60)  # the service org's edits are the most recent
    service.org.seed({"Account": [
        {"Name": company + " (support)", "Customer_Email__c": email.lower(),
         "Phone": "+1 555 0100" if n == 1 else None}
        for n, (company, email, _) in enumerate(CUSTOMERS[1:], start=1)]})


def _show_rollups(console: Console, sales: LocalOrg) -> None:
    table = Table("sales org account", "open tickets", "lifetime value")
    org = sales.org
    with org.storage.lock:
        rows = org.storage.db.execute('SELECT "Name", "Open_Tickets__c", "Lifetime_Value__c" '
                                      'FROM "Account" ORDER BY "Name"').fetchall()
    for name, tickets, value in rows:
        table.add_row(name, "" if tickets is None else f"{tickets:g}",
                      "" if value is None else f"{value:,.2f}")
    console.print("roll-up fields written back to the sales org:")
    console.print(table)


def _call_endpoint(console: Console, spec: Path, directory: Path) -> None:
    port = free_port()
    server = serve_api("127.0.0.1", port, spec, str(directory / ".patchbay"), token=None)
    try:
        url = f"{server.url}/aggregations/{quote(NAME)}?email=charles@example.com"
        answer = httpx.get(url, timeout=60).json()
    finally:
        server.stop()
    console.print(f"GET /aggregations/{quote(NAME)}?email=charles@example.com → "
                  f"{len(answer['records'])} record, partial: {answer['partial']}")
    for record in answer["records"]:
        shown = {k: v for k, v in record.items() if not k.endswith("__source")}
        console.print_json(json.dumps(shown, default=str))


@contextmanager
def _environment(**values: str) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
