"""A migration end to end, through the command line: SQLite legacy CRM -> PostgreSQL / MariaDB.

The source holds 5,000 accounts (2,000 of them in Germany, the scope of the run) with dirty
rows planted at known ids, and contacts that refer to accounts. Each destination gets its own
tables (unique suffix) and its own working directory, where the engine keeps its state.
"""

from __future__ import annotations

import csv
import json
import shutil
import sqlite3
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from patchbay.store import Store

INTEGRATION = "Legacy CRM to CRM - Account - migration"
CONTACTS = "Legacy CRM to CRM - Contact - migration"
ACCOUNTS = 5000
INDUSTRIES = {"TEC": "Technology", "FIN": "Finance", "MFG": "Manufacturing", "EDU": "Education"}

# Dirty accounts in scope (country DE: acct_id % 5 in (0, 1)), by the code they must get.
REJECTED_IN_TRANSFORM = {
    10: "REQUIRED_FIELD_MISSING",
    511: "REQUIRED_FIELD_MISSING",
    1500: "REQUIRED_FIELD_MISSING",
    21: "STRING_TOO_LONG",
    2001: "STRING_TOO_LONG",
    4020: "STRING_TOO_LONG",
    35: "INVALID_TYPE",
    3006: "INVALID_TYPE",
    4996: "INVALID_TYPE",
    40: "UNMAPPED_VALUE",
    2505: "UNMAPPED_VALUE",
    4001: "UNMAPPED_VALUE",
}
# Refused by the destination itself: the website is unique there, and an earlier account has it.
DUPLICATE_WEBSITE_OF = {1001: 6, 3501: 11}
REJECTED = {**REJECTED_IN_TRANSFORM, **dict.fromkeys(DUPLICATE_WEBSITE_OF, "DUPLICATE_VALUE")}
# The same kinds of dirt outside the scope, which must not count.
OUT_OF_SCOPE_DIRT = {
    12: ("company_name", ""),
    22: ("company_name", "N" * 150),
    33: ("employees", "lots"),
    43: ("industry", "???"),
}


def country_of(acct_id: int) -> str:
    return "DE" if acct_id % 5 in (0, 1) else ("AT", "FR", "CH")[acct_id % 3]


def account(acct_id: int) -> dict[str, Any]:
    return {
        "acct_id": acct_id,
        "company_name": f"Company {acct_id} GmbH",
        "country": country_of(acct_id),
        "industry": list(INDUSTRIES)[acct_id % 4],
        "employees": "" if acct_id % 37 == 0 else str(10 + acct_id % 500),
        "website": None if acct_id % 10 == 0 else f"https://acct{acct_id}.example.com",
        "founded": f"{1950 + acct_id % 70}-{1 + acct_id % 12:02d}-{1 + acct_id % 28:02d}",
    }


def build_legacy(path: Path) -> None:
    accounts = {i: account(i) for i in range(1, ACCOUNTS + 1)}
    for i in (10, 511):
        accounts[i]["company_name"] = ""
    accounts[1500]["company_name"] = None
    for i in (21, 2001, 4020):
        accounts[i]["company_name"] = f"Company {i} " + "and notes pasted into the name " * 5
    for i, text in ((35, "approx 50"), (3006, "50+"), (4996, "n/a")):
        accounts[i]["employees"] = text
    for i in (40, 2505, 4001):
        accounts[i]["industry"] = "XXX"
    for i, original in DUPLICATE_WEBSITE_OF.items():
        accounts[i]["website"] = accounts[original]["website"]
    for i, (name, value) in OUT_OF_SCOPE_DIRT.items():
        accounts[i][name] = value
    good = [i for i in accounts if country_of(i) == "DE" and i not in REJECTED]
    contacts = [
        {
            "contact_id": n,
            "acct_id": good[(n * 7) % len(good)],
            "first_name": f"First{n}",
            "last_name": f"Last{n}",
            "email": f"Person{n}@Example.COM",
        }
        for n in range(1, 301)
    ]
    # Contacts whose account the lookup cannot find: rejected in scope, refused by the
    # destination, not there at all, out of scope, and none given.
    for contact_id, acct_id in ((301, 10), (302, 1001), (303, 99999), (304, 2), (305, None)):
        contacts.append(
            {
                "contact_id": contact_id,
                "acct_id": acct_id,
                "first_name": "No",
                "last_name": f"Account{contact_id}",
                "email": f"x{contact_id}@example.com",
            }
        )
    with sqlite3.connect(path) as conn:
        conn.execute(
            "CREATE TABLE accounts (acct_id INTEGER PRIMARY KEY, company_name TEXT, "
            "country TEXT, industry TEXT, employees TEXT, website TEXT, founded TEXT)"
        )
        conn.execute(
            "CREATE TABLE contacts (contact_id INTEGER PRIMARY KEY, acct_id INTEGER, "
            "first_name TEXT, last_name TEXT, email TEXT)"
        )
        rows = list(accounts.values())
        shuffled = rows[1::2] + rows[::2]  # key order must come from the read, not the file
        conn.executemany(
            "INSERT INTO accounts VALUES (:acct_id, :company_name, :country, "
            ":industry, :employees, :website, :founded)",
            shuffled,
        )
        conn.executemany(
            "INSERT INTO contacts VALUES (:contact_id, :acct_id, :first_name, :last_name, :email)",
            contacts,
        )
    conn.close()


def source_rows(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
    with sqlite3.connect(path) as conn:
        conn.row_factory = sqlite3.Row
        rows = [dict(r) for r in conn.execute(sql, params)]
    conn.close()
    return rows


def expected_account(row: dict[str, Any]) -> tuple[Any, ...]:
    """What the transform makes of a clean source account (the columns compared)."""
    return (
        row["acct_id"],
        row["company_name"],
        "DE",
        INDUSTRIES[row["industry"]],
        int(row["employees"]) if row["employees"] else None,
        row["founded"],
        row["website"],
        f"{row['company_name'].upper()} ({row['country']})",
        "legacy-crm",
    )


DESTINATION_COLUMNS = (
    "legacy_id, name, country_code, industry, employees, founded_on, website, "
    "display_name, source_system"
)


def destination_accounts(db: Any, table: str) -> set[tuple[Any, ...]]:
    return {
        (*row[:5], str(row[5]), *row[6:])
        for row in db.rows(f"SELECT {DESTINATION_COLUMNS} FROM {table}")
    }


SPEC = """\
systems:
  legacy: sqlite:///{source}
  crm: {url}
integrations:
  - name: {accounts_integration}
    pattern: migration
    parameters:
      country: {{type: string, description: ISO code of the accounts' country}}
    source:
      system: legacy
      object: accounts
      key: acct_id
      scope: {{field: country, eq: {{param: country}}}}
    transform:
      fields:
        legacy_id: acct_id
        name: {{from: company_name, required: true}}
        country_code: {{value: {{param: country}}}}
        industry:
          from: industry
          map: {{TEC: Technology, FIN: Finance, MFG: Manufacturing, EDU: Education}}
          unmapped: reject
        employees: {{from: employees, type: integer}}
        founded_on: {{from: founded, type: date}}
        website: website
        display_name: {{expr: "concat(upper(company_name), ' (', country, ')')"}}
        source_system: {{value: legacy-crm}}
    destination: {{system: crm, object: {accounts}, operation: upsert, key: legacy_id}}
    options: {{batch_size: 500}}

  - name: {contacts_integration}
    pattern: migration
    source: {{system: legacy, object: contacts, key: contact_id}}
    transform:
      fields:
        legacy_id: contact_id
        account_id:
          lookup: {{system: crm, object: {accounts}, key: legacy_id, value: acct_id, returns: id}}
        full_name: {{expr: "first_name + ' ' + last_name"}}
        email: {{expr: "lower(email)"}}
    destination: {{system: crm, object: {contacts}, operation: upsert, key: legacy_id}}
    options: {{batch_size: 100}}
"""


def concurrently(patchbay: Any, cwd: Path, *commands: tuple[Any, ...]) -> list[Any]:
    """Run commands that only read at the same time; their Results in order."""
    with ThreadPoolExecutor(len(commands)) as pool:
        return list(pool.map(lambda args: patchbay(*args, cwd=cwd), commands))


@dataclass
class Scenario:
    db: Any
    cwd: Path
    spec: Path
    source: Path
    accounts: str
    contacts: str
    first: Any  # Result of the first run
    report: dict[str, Any]

    def write_spec(self, name: str, source: Path) -> Path:
        path = self.cwd / name
        path.write_text(
            SPEC.format(
                source=source,
                url=self.db.url,
                accounts=self.accounts,
                contacts=self.contacts,
                accounts_integration=INTEGRATION,
                contacts_integration=CONTACTS,
            ),
            encoding="utf-8",
        )
        return path

    def file(self, reported: str) -> Path:
        """A path the report gives, which is relative to the directory the command ran in."""
        return self.cwd / reported

    def runs_recorded(self) -> list[str]:
        """Ids of the runs in the engine state the commands keep in cwd/.patchbay."""
        store = Store.open(directory=self.cwd / ".patchbay")
        try:
            return [r.id for r in store.runs.latest(limit=1000)]
        finally:
            store.close()

    def snapshot(self) -> list[tuple[Any, ...]]:
        return self.db.rows(f"SELECT id, {DESTINATION_COLUMNS} FROM {self.accounts} ORDER BY id")


@pytest.fixture(scope="module")
def legacy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("legacy") / "legacy.db"
    build_legacy(path)
    return path


@pytest.fixture(scope="class", params=["postgresql", "mariadb"])
def scenario(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    legacy: Path,
    patchbay: Any,
    open_db: Any,
) -> Iterator[Scenario]:
    """A destination with the first run done: `patchbay run spec.yaml --param country=DE`."""
    cwd = tmp_path_factory.mktemp(f"e2e-{request.param}")
    db = open_db(request.param, request, cwd)
    timestamp = "TIMESTAMP" if db.dialect == "postgresql" else "DATETIME"
    try:
        accounts = db.create(
            "accounts",
            f"""
            id {db.autoid},
            legacy_id INTEGER NOT NULL UNIQUE,
            name VARCHAR(100) NOT NULL,
            country_code VARCHAR(2) NOT NULL,
            industry VARCHAR(20),
            employees INTEGER,
            founded_on DATE,
            website VARCHAR(120) UNIQUE,
            display_name VARCHAR(200),
            source_system VARCHAR(20) NOT NULL,
            migrated_at {timestamp} DEFAULT CURRENT_TIMESTAMP
        """,
        )
        contacts = db.create(
            "contacts",
            f"""
            id {db.autoid},
            legacy_id INTEGER NOT NULL UNIQUE,
            account_id INTEGER NOT NULL REFERENCES {accounts}(id),
            full_name VARCHAR(120),
            email VARCHAR(120)
        """,
        )
        state = Scenario(db, cwd, cwd / "crm.yaml", legacy, accounts, contacts, None, {})
        state.write_spec("crm.yaml", legacy)
        state.first = patchbay(
            "run", state.spec, "-i", INTEGRATION, "--param", "country=DE", "--json", cwd=cwd
        )
        assert state.first.code == 3, state.first.log
        state.report = state.first.json()
        yield state
    finally:
        db.drop_all()


class TestMigrationEndToEnd:
    def test_first_run_writes_exactly_the_good_rows_in_scope(self, scenario: Scenario) -> None:
        in_scope = source_rows(scenario.source, "SELECT * FROM accounts WHERE country = ?", ("DE",))
        expected = {expected_account(r) for r in in_scope if r["acct_id"] not in REJECTED}

        assert destination_accounts(scenario.db, scenario.accounts) == expected
        assert (
            scenario.db.scalar(
                f"SELECT COUNT(*) FROM {scenario.accounts} WHERE migrated_at IS NULL"
            )
            == 0
        )

    def test_report_counts_verdict_and_checksums(self, scenario: Scenario) -> None:
        report = scenario.report
        run_dir = scenario.cwd / ".patchbay" / "runs" / report["run"]
        assert scenario.file(report["files"]["report"]) == run_dir / "report.json"

        on_disk = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
        assert on_disk["run"] == report["run"]
        for current in (report, on_disk):
            assert current["verdict"] == "complete_with_rejects", current["verdict_reasons"]
            assert current["verdict_reasons"] == []
            assert current["params"] == {"country": "DE"}
            assert current["source"] == {"system": "legacy", "object": "accounts", "in_scope": 2000}
            good = 2000 - len(REJECTED)
            assert current["counts"] == {
                "read": 2000,
                "written": good,
                "created": good,
                "updated": 0,
                "unchanged": 0,
                "deleted": 0,
                "rejected": len(REJECTED),
                "skipped": 0,
                "failed": 0,
            }
            codes: dict[str, int] = {}
            for code in REJECTED.values():
                codes[code] = codes.get(code, 0) + 1
            assert current["set_aside_by_code"] == codes
            comparison = current["comparison"]
            assert (
                comparison["compared"],
                comparison["matching"],
                comparison["differing"],
                comparison["missing_in_destination"],
            ) == (good, good, 0, 0)
            assert comparison["samples"] == []
            assert set(comparison["fields"]) == {
                "legacy_id",
                "name",
                "country_code",
                "industry",
                "employees",
                "founded_on",
                "website",
                "display_name",
                "source_system",
            }
            for name, tally in comparison["fields"].items():
                assert tally["match"] is True, name
                assert tally["differing"] == 0, name
                assert tally["source_checksum"] == tally["destination_checksum"], name
            sums = {t["source_checksum"] for t in comparison["fields"].values()}
            assert len(sums) == len(comparison["fields"]), "each field has its own checksum"

    def test_rejects_csv_lists_every_rejected_record(self, scenario: Scenario) -> None:
        path = scenario.file(scenario.report["files"]["rejects"])
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle))
        by_key = {int(r["record_key"]): r for r in rows}
        assert len(rows) == len(by_key) == len(REJECTED)
        assert {k: r["code"] for k, r in by_key.items()} == REJECTED
        source = {
            r["acct_id"]: r
            for r in source_rows(
                scenario.source,
                f"SELECT * FROM accounts WHERE acct_id IN ({','.join('?' * len(REJECTED))})",
                tuple(REJECTED),
            )
        }
        for key, row in by_key.items():
            assert row["status"] == "rejected", row
            assert row["reason"], row
            assert row["acct_id"] == str(key)
            for name in ("company_name", "employees", "industry", "website", "country"):
                assert row[name] == (source[key][name] or ""), (key, name, row)
        assert "approx 50" in by_key[35]["reason"]
        assert "XXX" in by_key[40]["reason"]
        assert "name" in by_key[21]["reason"]
        assert (
            "website" in by_key[1001]["reason"]
            or "Duplicate" in by_key[1001]["reason"]
            or "duplicate" in by_key[1001]["reason"]
        )

    def test_rerun_changes_nothing(self, scenario: Scenario, patchbay: Any) -> None:
        before = scenario.snapshot()

        again = patchbay(
            "run",
            scenario.spec,
            "-i",
            INTEGRATION,
            "--param",
            "country=DE",
            "--json",
            cwd=scenario.cwd,
        )

        assert again.code == 3, again.log
        report = again.json()
        assert report["run"] != scenario.report["run"]
        good = 2000 - len(REJECTED)
        assert report["counts"] == {
            "read": 2000,
            "written": good,
            "created": 0,
            "updated": 0,
            "unchanged": good,
            "deleted": 0,
            "rejected": len(REJECTED),
            "skipped": 0,
            "failed": 0,
        }
        assert report["verdict"] == "complete_with_rejects"
        assert scenario.snapshot() == before
        db, table = scenario.db, scenario.accounts
        assert db.scalar(f"SELECT COUNT(DISTINCT legacy_id) FROM {table}") == good
        assert db.scalar(f"SELECT COUNT(*) FROM {table}") == good

    def test_plan_on_changed_source_counts_and_writes_nothing(
        self, scenario: Scenario, patchbay: Any
    ) -> None:
        changed = scenario.cwd / "legacy-changed.db"
        shutil.copyfile(scenario.source, changed)
        with sqlite3.connect(changed) as conn:
            conn.executemany(
                "UPDATE accounts SET company_name = ? WHERE acct_id = ?",
                [("Renamed 50 AG", 50), ("Renamed 51 AG", 51)],
            )
            conn.execute("UPDATE accounts SET employees = '9999' WHERE acct_id = 1200")
            conn.execute("UPDATE accounts SET company_name = 'Out of scope' WHERE acct_id = 52")
            conn.executemany(
                "INSERT INTO accounts VALUES (?, ?, 'DE', 'FIN', '5', NULL, '2020-01-01')",
                [(6000 + n, f"New {n} KG") for n in range(1, 5)],
            )
            conn.execute(
                "INSERT INTO accounts VALUES (6010, 'New AT', 'AT', 'FIN', '5', NULL, '2020-01-01')"
            )
        conn.close()
        spec = scenario.write_spec("crm-changed.yaml", changed)
        before = scenario.snapshot()
        runs_before = scenario.runs_recorded()

        planned = patchbay(
            "plan",
            spec,
            "-i",
            INTEGRATION,
            "--param",
            "country=DE",
            "--json",
            "--examples",
            "10",
            cwd=scenario.cwd,
        )

        assert planned.code == 0, planned.log
        result = planned.json()
        good = 2000 - len(REJECTED)
        # The plan cannot know that the destination will refuse the duplicate websites: they
        # are not there, so they count as inserts, besides the four new accounts.
        assert result["counts"] == {
            "read": 2004,
            "insert": 4 + len(DUPLICATE_WEBSITE_OF),
            "update": 3,
            "unchanged": good - 3,
            "delete": 0,
            "not_found": 0,
            "reject": len(REJECTED_IN_TRANSFORM),
            "skip": 0,
        }
        updates = {e["key"]: e["changes"] for e in result["examples"]["update"]}
        assert updates == {
            50: {
                "name": {"from": "Company 50 GmbH", "to": "Renamed 50 AG"},
                "display_name": {"from": "COMPANY 50 GMBH (DE)", "to": "RENAMED 50 AG (DE)"},
            },
            51: {
                "name": {"from": "Company 51 GmbH", "to": "Renamed 51 AG"},
                "display_name": {"from": "COMPANY 51 GMBH (DE)", "to": "RENAMED 51 AG (DE)"},
            },
            1200: {"employees": {"from": 10 + 1200 % 500, "to": 9999}},
        }
        inserted = {e["key"] for e in result["examples"]["insert"]}
        assert inserted == {6001, 6002, 6003, 6004, *DUPLICATE_WEBSITE_OF}
        rejected = {e["source"]["acct_id"] for e in result["examples"]["reject"]}
        assert rejected == set(sorted(REJECTED_IN_TRANSFORM)[:10]), "--examples 10: the first, by key"
        assert scenario.snapshot() == before, "plan wrote to the destination"
        assert scenario.runs_recorded() == runs_before, "plan started a run"

    @pytest.mark.slow
    def test_verify_finds_a_row_edited_by_hand(self, scenario: Scenario, patchbay: Any) -> None:
        db, table = scenario.db, scenario.accounts
        baseline = patchbay(
            "verify",
            scenario.spec,
            "-i",
            INTEGRATION,
            "--param",
            "country=DE",
            "--json",
            cwd=scenario.cwd,
        )
        assert baseline.code == 3, baseline.log
        report = baseline.json()
        assert report["verdict"] == "complete_with_rejects"
        assert report["comparison"]["differing"] == 0
        # The records the destination refused in the run are absent, as expected, and
        # counted apart; nothing else may be missing.
        assert report["comparison"]["missing_in_destination"] == 0
        assert report["comparison"]["refused_by_destination_earlier"] == len(DUPLICATE_WEBSITE_OF)

        db.execute(f"UPDATE {table} SET name = 'Edited By Hand' WHERE legacy_id = 101")
        verify = ("verify", scenario.spec, "-i", INTEGRATION, "--param", "country=DE")
        try:
            edited, plain = concurrently(patchbay, scenario.cwd, (*verify, "--json"), verify)
        finally:
            db.execute(f"UPDATE {table} SET name = 'Company 101 GmbH' WHERE legacy_id = 101")

        assert edited.code == 4, edited.log
        report = edited.json()
        assert report["verdict"] == "incomplete"
        assert report["verdict_reasons"] == ["1 records differ from the source"]
        comparison = report["comparison"]
        assert comparison["differing"] == 1
        assert {
            "key": 101,
            "field": "name",
            "expected": "Company 101 GmbH",
            "actual": "Edited By Hand",
        } in comparison["samples"]
        assert comparison["fields"]["name"]["match"] is False
        assert comparison["fields"]["name"]["differing"] == 1
        assert all(t["match"] for n, t in comparison["fields"].items() if n != "name")
        assert plain.code == 4, plain.log
        assert "incomplete" in plain.stdout and "Edited By Hand" in plain.stdout

    def test_lookup_fills_contacts_account_from_the_destination(
        self, scenario: Scenario, patchbay: Any
    ) -> None:
        result = patchbay("run", scenario.spec, "-i", CONTACTS, "--json", cwd=scenario.cwd)

        assert result.code == 3, result.log
        report = result.json()
        assert report["integration"] == CONTACTS
        assert report["counts"]["created"] == 300
        assert report["counts"]["rejected"] == 5
        assert report["set_aside_by_code"] == {"LOOKUP_FAILED": 4, "REQUIRED_FIELD_MISSING": 1}
        source = {
            r["contact_id"]: r for r in source_rows(scenario.source, "SELECT * FROM contacts")
        }
        db = scenario.db
        held = {
            row[0]: row[1:]
            for row in db.rows(
                f"SELECT c.legacy_id, a.legacy_id, c.full_name, c.email FROM {scenario.contacts} c "
                f"JOIN {scenario.accounts} a ON a.id = c.account_id"
            )
        }
        assert held == {
            n: (r["acct_id"], f"{r['first_name']} {r['last_name']}", r["email"].lower())
            for n, r in source.items()
            if n <= 300
        }
        with scenario.file(report["files"]["rejects"]).open(newline="", encoding="utf-8") as handle:
            rejects = {int(r["record_key"]): r for r in csv.DictReader(handle)}
        assert {k: r["code"] for k, r in rejects.items()} == {
            301: "LOOKUP_FAILED",
            302: "LOOKUP_FAILED",
            303: "LOOKUP_FAILED",
            304: "LOOKUP_FAILED",
            305: "REQUIRED_FIELD_MISSING",
        }
        assert "99999" in rejects[303]["reason"]

    @pytest.mark.slow
    def test_runs_and_show_print_the_run(self, scenario: Scenario, patchbay: Any) -> None:
        run_id = scenario.report["run"]

        listed, runs_json, shown, details, unknown = concurrently(
            patchbay,
            scenario.cwd,
            ("runs",),
            ("runs", "--json", "--integration", INTEGRATION),
            ("show", run_id, "--rejects", "50"),
            ("show", run_id, "--json"),
            ("show", "no-such-run"),
        )

        assert listed.code == 0, listed.log
        assert run_id in listed.stdout
        assert "complete with rejects" in listed.stdout
        runs = runs_json.json()
        first = next(r for r in runs if r["run"] == run_id)
        assert first["status"] == "complete_with_rejects"
        assert first["counters"]["read"] == 2000
        assert first["counters"]["rejected"] == len(REJECTED)
        assert first["error"] is None

        assert shown.code == 0, shown.log
        assert run_id in shown.stdout and INTEGRATION in shown.stdout
        assert "complete with rejects" in shown.stdout
        for key in REJECTED:
            assert str(key) in shown.stdout
        shown_json = details.json()
        assert shown_json["report"]["counts"] == scenario.report["counts"]
        assert shown_json["report"]["verdict"] == "complete_with_rejects"
        assert len(shown_json["set_aside"]) == 10
        assert unknown.code == 2, unknown.log  # an unknown id is bad input
        assert "no run 'no-such-run'" in unknown.stderr and "Traceback" not in unknown.stderr
