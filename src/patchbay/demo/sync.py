"""The demo's sync: a local org's accounts and a web shop's customers (SQLite), both ways.

The org is started in this process and seeded with three accounts, the shop with two
customers, one of them an account the org also has (matched by name, not duplicated). A
first sync makes both sides hold all four; then each side edits an account, and both edit
one account's phone: the later edit wins and the conflict is counted.
"""

from __future__ import annotations

import json
import sqlite3
from importlib import resources
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.rule import Rule
from rich.table import Table

from patchbay.demo.aggregation import _environment
from patchbay.localorg import LocalOrg, OrgConfig
from patchbay.runtime import runner
from patchbay.store import Store

NAME = "Salesforce and shop - Account - sync"


def run_sync(directory: Path, console: Console, store: Store, reports: Path) -> int:
    """Run the sync twice around an edit on each side; how many deliveries failed."""
    files = resources.files("patchbay.demo")
    spec = directory / "accounts-sync.yaml"
    spec.write_text(files.joinpath("accounts-sync.yaml").read_text(encoding="utf-8"),
                    encoding="utf-8")
    shop_db = directory / "shop.db"
    shop_db.unlink(missing_ok=True)
    with sqlite3.connect(shop_db) as shop:
        shop.executescript(files.joinpath("shop-schema.sql").read_text(encoding="utf-8"))
        shop.executemany("INSERT INTO customers (company, sector, phone) VALUES (?, ?, ?)",
                         [("Acme", "TECH", "+1 555 0100"), ("Hooli", "TECH", None)])
    schema = json.loads(files.joinpath("sync-schema.json").read_text(encoding="utf-8"))
    with LocalOrg(OrgConfig(custom_schema=schema)) as local, \
            _environment(SF_URL=f"salesforce+http://127.0.0.1:{local.port}",
                         SHOP_URL=f"sqlite:///{shop_db.resolve()}"):
        org = local.org
        account = org.sobject("Account")
        ids = dict(zip(["Acme", "Globex", "Initech"], org.seed({"Account": [
            {"Name": "Acme", "Industry": "Technology"},
            {"Name": "Globex", "Industry": "Finance"},
            {"Name": "Initech", "Industry": "Manufacturing"}]})["Account"], strict=True))
        console.print(Rule(f"{NAME} (local org ⇄ {shop_db.name})"))

        def sync() -> dict[str, Any]:
            return runner.run(runner.Invocation.load(spec, NAME, {}).context(store, reports))

        first = sync()
        console.print("first sync: the org has 3 accounts, the shop 2 customers, Acme in both "
                      f"(matched by name, not duplicated): {_summary(first)}")
        session = org.login(org.config.users[0].username, org.config.users[0].password)
        org.update(account, ids["Globex"], {"Phone": "+1 555 0142"}, session)
        org.update(account, ids["Acme"], {"Phone": "+1 555 0199"}, session)
        with sqlite3.connect(shop_db) as shop:
            shop.execute("UPDATE customers SET sector = 'RET' WHERE company = 'Initech'")
            shop.execute("UPDATE customers SET phone = '+1 555 0111' WHERE company = 'Acme'")
        second = sync()
        console.print("edits: the org set Globex's phone, the shop Initech's industry, and both "
                      f"set Acme's phone: {_summary(second)}")
        _show(console, local, shop_db)
    conflicts = sum(second["conflicts"].get("settled", {}).values())
    console.print(f"conflicts: {conflicts}, settled by `latest` and recorded: the phone both "
                  "sides edited (when the two Acmes were matched, the phone only the shop had "
                  "filled the org's empty one: no conflict)")
    return int(first["dead"]) + int(second["dead"])


def _summary(report: dict[str, Any]) -> str:
    """What each participant was noticed doing and was sent, and the deliveries made."""
    parts = []
    for participant, counts in report["participants"].items():
        parts.append(f"{participant}: {counts.get('changes', 0)} changes noticed, "
                     f"{counts.get('creates sent', 0)} creates and "
                     f"{counts.get('updates sent', 0)} updates sent")
    return "; ".join(parts) + f" ({report['delivered']} deliveries)"


def _show(console: Console, local: LocalOrg, shop_db: Path) -> None:
    """Both sides after the sync, side by side."""
    table = Table("org Account", "Industry", "Phone", "shop customer", "sector", "phone")
    storage = local.org.storage
    with storage.lock:
        accounts = storage.db.execute('SELECT "Name", "Industry", "Phone" FROM "Account" '
                                  'ORDER BY "Name"').fetchall()
    with sqlite3.connect(shop_db) as shop:
        customers = shop.execute("SELECT company, sector, phone FROM customers "
                                 "ORDER BY company").fetchall()
    for left, right in zip(accounts, customers, strict=False):
        table.add_row(*(str(v or "") for v in (*left, *right)))
    console.print(table)
