"""`patchbay demo`: the patterns on embedded defaults, no server to set up.

Migration: a bundled legacy CRM (SQLite, with dirty rows) migrated into a new CRM schema
(SQLite), accounts first and then their contacts, with the plan, both reports, and a
re-run that changes nothing; then the same accounts migrated into Salesforce: a local org
started in this process on a free port and seeded with one account the legacy CRM also
has. Broadcast: opportunities changing in that org reach an SQLite ERP, a fulfilment file
and an audit file. Aggregation: customer 360 over two local orgs, an ERP and a support
desk, into reports, roll-up fields and a live API answer (demo/aggregation.py). Sync: a
local org's accounts and a web shop's customers (SQLite) kept as one, an edit on each side
and a conflict (demo/sync.py).
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.rule import Rule

from patchbay import render
from patchbay.demo.aggregation import run_aggregation
from patchbay.demo.legacy_crm import build_legacy_crm
from patchbay.demo.sync import run_sync
from patchbay.localorg import LocalOrg, OrgConfig
from patchbay.patterns.context import RunContext
from patchbay.runtime import runner
from patchbay.store import Store

ACCOUNTS = "Legacy CRM to CRM - Account - migration"
SALESFORCE = "Legacy CRM to Salesforce - Account - migration"
BROADCAST = "Salesforce to ERP, fulfilment and audit - Opportunity - broadcast"
CONTACTS = "Legacy CRM to CRM - Contact - migration"
SUCCESS = ("complete", "complete_with_rejects", "partial")


def run_demo(directory: Path, console: Console) -> int:
    """Build the demo's data in `directory`, run it, print what happened; 0 on success."""
    directory.mkdir(parents=True, exist_ok=True)
    for leftover in ("legacy_crm.db", "crm.db", ".patchbay"):
        path = directory / leftover
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    files = resources.files("patchbay.demo")
    spec = directory / "legacy-crm.yaml"
    spec.write_text(files.joinpath("legacy-crm.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    with sqlite3.connect(directory / "crm.db") as crm:
        crm.executescript(files.joinpath("crm-schema.sql").read_text(encoding="utf-8"))
    legacy = build_legacy_crm(directory / "legacy_crm.db")

    console.print(Rule("[bold]patchbay demo: migration"))
    console.print(f"legacy CRM: {legacy.accounts:,} accounts and {legacy.contacts:,} contacts, "
                  f"{legacy.dirty_accounts + legacy.dirty_contacts} of them dirty "
                  f"→ new CRM schema in {directory / 'crm.db'}")
    store = Store.open(directory=directory / ".patchbay")
    reports = directory / ".patchbay" / "runs"

    def context(name: str) -> RunContext:
        return runner.Invocation.load(spec, name, {}).context(store, reports)

    render.plan(console, runner.plan(context(ACCOUNTS), examples=1))
    verdicts = []
    for name in (ACCOUNTS, CONTACTS):
        console.print(Rule(name))
        report = runner.run(context(name))
        render.report(console, report)
        verdicts.append(report["verdict"])

    console.print(Rule("re-running the accounts migration"))
    again = runner.run(context(ACCOUNTS))
    counts = again["counts"]
    console.print(f"{counts['unchanged']} unchanged, {counts['created']} created, "
                  f"{counts['updated']} updated: writes are idempotent by key, so a re-run "
                  "or a resume after a crash duplicates nothing.")
    verdicts.append(_salesforce(directory, console, store, reports))
    verdicts.append(run_aggregation(directory, console, store, reports))
    failed_deliveries = run_sync(directory, console, store, reports)
    console.print(Rule())
    console.print(f"Files are in {directory}. Try: patchbay runs --state {directory / '.patchbay'}")
    return 0 if all(v in SUCCESS for v in verdicts) and not failed_deliveries else 1


def _salesforce(directory: Path, console: Console, store: Store, reports: Path) -> str:
    """The accounts again, into a local Salesforce org: upserted by their legacy id."""
    files = resources.files("patchbay.demo")
    schema = json.loads(files.joinpath("salesforce-schema.json").read_text(encoding="utf-8"))
    spec = directory / "legacy-crm-to-salesforce.yaml"
    spec.write_text(files.joinpath("legacy-crm-to-salesforce.yaml").read_text(encoding="utf-8"),
                    encoding="utf-8")
    with LocalOrg(OrgConfig(custom_schema=schema)) as org:
        seeded = org.org.seed({"Account": [{"Name": "Already in Salesforce",
                                            "Legacy_Id__c": "1000"}]})
        console.print(Rule(f"{SALESFORCE} (local org on {org.url})"))
        console.print(f"seeded {len(seeded['Account'])} account that the legacy CRM also has "
                      "(legacy id 1000): the migration updates it instead of duplicating it")
        os.environ["SF_URL"] = f"salesforce+http://127.0.0.1:{org.port}"
        try:
            report = runner.run(runner.Invocation.load(spec, SALESFORCE, {}).context(store, reports))
        finally:
            os.environ.pop("SF_URL", None)
        render.report(console, report)
        _broadcast(directory, console, store, reports, org)
    return str(report["verdict"])


def _broadcast(directory: Path, console: Console, store: Store, reports: Path,
               org: LocalOrg) -> None:
    """Opportunities change in the org; the broadcast carries each change where it belongs."""
    files = resources.files("patchbay.demo")
    spec = directory / "closed-won.yaml"
    spec.write_text(files.joinpath("closed-won.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    (directory / "broadcast").mkdir(exist_ok=True)
    with sqlite3.connect(directory / "erp.db") as erp:
        erp.execute("CREATE TABLE IF NOT EXISTS sales_orders (opportunity_id VARCHAR(18) PRIMARY "
                    "KEY, title VARCHAR(120) NOT NULL, amount NUMERIC(16, 2) NOT NULL, "
                    "account_name VARCHAR(255))")
    console.print(Rule(f"{BROADCAST} (local org → ERP, fulfilment, audit)"))
    session = org.org.login(org.org.config.users[0].username, org.org.config.users[0].password)
    opportunity, account = org.org.sobject("Opportunity"), org.org.sobject("Account")
    accounts = org.org.storage.find(account, account.fields["legacy_id__c"], "1000")
    stages = ["Prospecting", "Qualification", "Closed Won", "Negotiation/Review", "Closed Lost"]
    made = [org.org.create(opportunity, {
        "Name": f"Deal {n}", "StageName": stages[n % len(stages)], "CloseDate": "2026-12-31",
        "Amount": 1000 * (n + 1), "AccountId": accounts[0]}, session) for n in range(5)]
    os.environ["SF_URL"] = f"salesforce+http://127.0.0.1:{org.port}"
    try:
        context = runner.Invocation.load(spec, BROADCAST, {}).context(store, reports)
        first = runner.run(context)
        console.print(f"5 opportunities created: {first['changes']} changes, "
                      f"{first['delivered']} deliveries")
        org.org.clock.advance(1)
        org.org.update(opportunity, made[0], {"StageName": "Closed Won"}, session)
        org.org.update(opportunity, made[1], {"Amount": 99000}, session)
        org.org.update(opportunity, made[2], {"Amount": 3500}, session)
        second = runner.run(runner.Invocation.load(spec, BROADCAST, {}).context(store, reports))
        console.print(f"3 opportunities changed: {second['changes']} changes, "
                      f"{second['delivered']} deliveries")
    finally:
        os.environ.pop("SF_URL", None)
    render.broadcast(console, second)
    with sqlite3.connect(directory / "erp.db") as erp:
        orders = erp.execute("SELECT title, amount FROM sales_orders ORDER BY title").fetchall()
    console.print("ERP sales orders: " + ", ".join(f"{t} ({a})" for t, a in orders))
    fulfilment = (directory / "broadcast" / "fulfilment.jsonl").read_text().count("\n")
    audit = (directory / "broadcast" / "opportunity-changes.jsonl").read_text().count("\n")
    console.print(f"fulfilment messages: {fulfilment}; audit lines: {audit} (one per change)")
