"""The demo, and the example it runs, work end to end (this is what `make demo` shows)."""

from __future__ import annotations

import io
import json
import sqlite3
from pathlib import Path

import pytest
from rich.console import Console

from patchbay.demo.run import ACCOUNTS, CONTACTS, SALESFORCE, run_demo


@pytest.mark.slow
def test_demo_migrates_the_legacy_crm_and_sets_the_dirt_aside(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As `make demo` runs it: a directory relative to where it runs.
    monkeypatch.chdir(tmp_path)
    out = io.StringIO()
    assert run_demo(Path("demo-output"), Console(file=out, width=120)) == 0
    output = tmp_path / "demo-output"
    text = out.getvalue()
    assert "verdict: complete with rejects" in text
    assert "1980 unchanged, 0 created, 0 updated" in text

    reports = {}  # the first run of each integration (the demo re-runs the accounts)
    runs = [json.loads(p.read_text()) for p in (output / ".patchbay" / "runs").glob("*/report.json")]
    for report in sorted(runs, key=lambda r: r["started_at"]):
        reports.setdefault(report["integration"], report)
    accounts, contacts = reports[ACCOUNTS], reports[CONTACTS]
    # 2,000 accounts of which 20 are dirty in ways no transform can mend (too long a name,
    # an unknown industry, a head count that is not a number).
    assert accounts["counts"]["read"] == 2000
    assert accounts["counts"]["created"] + accounts["counts"]["rejected"] == 2000
    assert accounts["set_aside_by_code"]["UNMAPPED_VALUE"] == 4
    assert accounts["set_aside_by_code"]["STRING_TOO_LONG"] >= 4
    assert contacts["counts"]["read"] == 5000
    assert contacts["set_aside_by_code"]["REQUIRED_FIELD_MISSING"] == 25
    assert contacts["set_aside_by_code"]["DUPLICATE_VALUE"] == 20
    assert contacts["comparison"]["differing"] == 0

    with sqlite3.connect(output / "crm.db") as db:
        accounts_held = db.execute("SELECT count(*) FROM accounts").fetchone()[0]
        contacts_held = db.execute("SELECT count(*) FROM contacts").fetchone()[0]
        orphans = db.execute("SELECT count(*) FROM contacts c LEFT JOIN accounts a "
                             "ON a.id = c.account_id WHERE a.id IS NULL").fetchone()[0]
    assert accounts_held == accounts["counts"]["created"]
    assert contacts_held == contacts["counts"]["created"]
    assert orphans == 0
    rejects = (output / ".patchbay" / "runs" / contacts["run"] / "rejects.csv").read_text()
    assert rejects.count("\n") == contacts["counts"]["rejected"] + 1

    # The same accounts into the local Salesforce org, seeded with one of them.
    salesforce = reports[SALESFORCE]
    assert salesforce["counts"]["updated"] == 1, "the seeded account is updated, not duplicated"
    counts = salesforce["counts"]
    assert counts["created"] + counts["updated"] + counts["rejected"] == counts["read"] == 2000
    assert salesforce["comparison"]["differing"] == 0
    assert salesforce["usage"]["crm"]["api_calls"] > 0

    # The broadcast: Closed Won opportunities reached the ERP and fulfilment, every change
    # the audit, exactly once each.
    assert "ERP sales orders: Deal 0 (1000), Deal 2 (3500)" in text
    assert "fulfilment messages: 2; audit lines: 8 (one per change)" in text
    with sqlite3.connect(output / "erp.db") as erp:
        assert erp.execute("SELECT count(*) FROM sales_orders").fetchone() == (2,)

    # The sync: the org's accounts and the shop's customers are one set, each side's edit
    # reached the other, and the two conflicts on Acme's phone were settled and recorded.
    assert "Acme in both (matched by name, not duplicated)" in text
    assert "conflicts: 1, settled by `latest`" in text
    with sqlite3.connect(output / "shop.db") as shop:
        assert shop.execute("SELECT company, sector, phone FROM customers ORDER BY company"
                            ).fetchall() == [("Acme", "TECH", "+1 555 0111"),
                                             ("Globex", "FIN", "+1 555 0142"),
                                             ("Hooli", "TECH", None), ("Initech", "RET", None)]
