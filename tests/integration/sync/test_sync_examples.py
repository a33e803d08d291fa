"""The sync examples end to end: local orgs started here, MariaDB and PostgreSQL for real.

Each test gets its own MariaDB database and PostgreSQL schema (the examples name plain
tables; the test points the examples' URL variables at them) and drops them afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import sqlalchemy as sa

from patchbay import run_integration
from patchbay.connectors.sql.connector import SqlConnector
from patchbay.localorg.org import OrgConfig
from patchbay.localorg.running import LocalOrg
from patchbay.store import Store
from patchbay.urls import sqlalchemy_url

EXAMPLES = Path(__file__).parents[3] / "examples"
SCHEMA = EXAMPLES / "sync-localorg-schema.json"


# -- the systems ---------------------------------------------------------------------------------


class Sql:
    """A database (MariaDB) or schema (PostgreSQL) of one test, made from an example's DDL."""

    def __init__(self, url: str, ddl: Path) -> None:
        self.name = f"sync_{uuid.uuid4().hex[:10]}"
        self.admin = sa.create_engine(sqlalchemy_url(url))
        postgres = url.startswith("postgresql")
        with self.admin.begin() as conn:
            conn.execute(sa.text(f"CREATE {'SCHEMA' if postgres else 'DATABASE'} {self.name}"))
        parts = urlsplit(url)
        if postgres:
            query = f"{parts.query}&" if parts.query else ""
            self.url = urlunsplit(parts._replace(query=f"{query}options=-csearch_path%3D{self.name}"))
        else:
            self.url = urlunsplit(parts._replace(path=f"/{self.name}"))
        self.engine = sa.create_engine(sqlalchemy_url(self.url))
        self.postgres = postgres
        script = ddl.read_text()
        with self.engine.begin() as conn:
            if postgres:
                conn.exec_driver_sql(script)
            else:
                for statement in script.split(";"):
                    if statement.strip():
                        conn.exec_driver_sql(statement)

    def execute(self, sql: str, params: dict[str, Any] | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(sql), params or {})

    def rows(self, sql: str, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), params or {})]

    def drop(self) -> None:
        self.engine.dispose()
        with self.admin.begin() as conn:
            conn.execute(sa.text(f"DROP {'SCHEMA' if self.postgres else 'DATABASE'} "
                                 f"{self.name}{' CASCADE' if self.postgres else ''}"))
        self.admin.dispose()


class Salesforce:
    """A local org as a test uses it: writes through the org's own API, reads its storage."""

    def __init__(self, local: LocalOrg) -> None:
        self.local, self.org = local, local.org
        user = self.org.config.users[0]
        self.session = self.org.login(user.username, user.password)

    @property
    def url(self) -> str:
        return f"salesforce+http://127.0.0.1:{self.local.port}"

    def create(self, sobject: str, **values: Any) -> str:
        return self.org.create(self.org.sobject(sobject), values, self.session)

    def update(self, sobject: str, record_id: str, **values: Any) -> None:
        self.org.update(self.org.sobject(sobject), record_id, values, self.session)

    def rows(self, sobject: str, *fields: str) -> list[tuple[Any, ...]]:
        columns = ", ".join(f'"{f}"' for f in fields)
        storage = self.org.storage
        with storage.lock:
            found = storage.db.execute(f'SELECT {columns} FROM "{sobject}" WHERE "IsDeleted" = 0 '
                                       f'ORDER BY 1').fetchall()
        return [tuple(r) for r in found]

    def id_of(self, sobject: str, name: str) -> str:
        [(record_id,)] = [(r[1],) for r in self.rows(sobject, "Name", "Id") if r[0] == name]
        return str(record_id)


def org() -> LocalOrg:
    """A local org with the examples' Patchbay_Id__c external ids."""
    return LocalOrg(OrgConfig(custom_schema=SCHEMA))


@pytest.fixture
def erp(mysql_url: str) -> Iterator[Sql]:
    database = Sql(mysql_url, EXAMPLES / "sync-quote-to-cash-erp.sql")
    yield database
    database.drop()


@pytest.fixture
def billing(pg_url: str) -> Iterator[Sql]:
    database = Sql(pg_url, EXAMPLES / "sync-quote-to-cash-billing.sql")
    yield database
    database.drop()


def copy(example: str, directory: Path) -> Path:
    shutil.copy(EXAMPLES / example, directory / example)
    return directory / example


# -- quote to cash --------------------------------------------------------------------------------

QUOTE_TO_CASH = "quote to cash - sync"


def test_quote_to_cash_keeps_crm_erp_and_billing_as_one(
        tmp_path: Path, erp: Sql, billing: Sql, monkeypatch: pytest.MonkeyPatch) -> None:
    spec, state = copy("sync-quote-to-cash.yaml", tmp_path), tmp_path / "state"
    monkeypatch.setenv("ERP_URL", erp.url)
    monkeypatch.setenv("BILLING_URL", billing.url)
    with org() as local:
        crm = Salesforce(local)
        monkeypatch.setenv("CRM_URL", crm.url)

        def sync() -> dict[str, Any]:
            report = run_integration(spec, QUOTE_TO_CASH, state=state)
            dead = Store.open(directory=state).outbox.dead_letters(QUOTE_TO_CASH)
            assert report["dead"] == 0, (report, dead)
            return report

        # One account made in each system reaches the other two, values mapped.
        acme = crm.create("Account", Name="Acme", Industry="Technology")
        erp.execute("INSERT INTO customers (customer_name, sector) VALUES ('Globex', 'FIN')")
        billing.execute("INSERT INTO billing_accounts (legal_name, credit_class) "
                        "VALUES ('Initech', 'A')")
        sync()
        assert crm.rows("Account", "Name", "Industry", "Rating") == [
            ("Acme", "Technology", None), ("Globex", "Finance", None), ("Initech", None, "Hot")]
        assert erp.rows("SELECT customer_name, sector FROM customers ORDER BY 1") == [
            ("Acme", "TECH"), ("Globex", "FIN"), ("Initech", None)]
        assert billing.rows("SELECT legal_name, credit_class FROM billing_accounts ORDER BY 1") \
            == [("Acme", None), ("Globex", None), ("Initech", "A")]
        # Records the sync made carry its global id; where a record was made by a person
        # the field stays empty. Each account has one global id everywhere.
        gids: dict[str, set[str]] = {}
        for name, gid in [*crm.rows("Account", "Name", "Patchbay_Id__c"),
                          *erp.rows("SELECT customer_name, patchbay_id FROM customers"),
                          *billing.rows("SELECT legal_name, patchbay_id FROM billing_accounts")]:
            gids.setdefault(name, set()).update([gid] if gid else [])
        assert [len(g) for g in gids.values()] == [1, 1, 1], gids
        assert sync()["delivered"] == 0, "the writes' echoes are not synced back"

        # An edit in each system reaches the others.
        crm.update("Account", acme, Industry="Retail")
        erp.execute("UPDATE customers SET customer_name = 'Globex Corp' WHERE customer_name = 'Globex'")
        billing.execute("UPDATE billing_accounts SET credit_class = 'C' WHERE legal_name = 'Initech'")
        sync()
        assert crm.rows("Account", "Name", "Industry", "Rating") == [
            ("Acme", "Retail", None), ("Globex Corp", "Finance", None), ("Initech", None, "Cold")]
        assert erp.rows("SELECT customer_name, sector FROM customers ORDER BY 1") == [
            ("Acme", "RET"), ("Globex Corp", "FIN"), ("Initech", None)]
        assert billing.rows("SELECT legal_name FROM billing_accounts ORDER BY 1") == [
            ("Acme",), ("Globex Corp",), ("Initech",)]

        # An order made in the ERP with a customer made with it: the order waits for its
        # customer to reach the CRM, then arrives with the CRM's account id.
        erp.execute("INSERT INTO customers (customer_name, sector) VALUES ('Hooli', 'TECH')")
        erp.execute("INSERT INTO orders (customer_id, title, status, total, due_date) SELECT id, "
                    "'Hooli rollout', 'BOOKED', 1250.50, '2026-12-31' FROM customers "
                    "WHERE customer_name = 'Hooli'")
        report = sync()
        assert report["participants"]["crm"]["waiting for a parent"] == 1, report
        assert report["waiting_for_parent"] == 0, report
        hooli = crm.id_of("Account", "Hooli")
        assert crm.rows("Opportunity", "Name", "StageName", "Amount", "CloseDate", "AccountId") \
            == [("Hooli rollout", "Closed Won", 1250.5, "2026-12-31", hooli)]
        # An opportunity made in the CRM becomes an order of the ERP's customer.
        crm.create("Opportunity", Name="Acme renewal", StageName="Prospecting",
                   CloseDate="2027-01-31", Amount=900, AccountId=acme)
        sync()
        assert erp.rows("SELECT o.title, o.status, o.total, c.customer_name FROM orders o "
                        "JOIN customers c ON c.id = o.customer_id ORDER BY 1") == [
            ("Acme renewal", "QUOTE", 900, "Acme"), ("Hooli rollout", "BOOKED", 1250.5, "Hooli")]
        # Billing holds no opportunities: nothing of them was written there.
        assert len(billing.rows("SELECT * FROM billing_accounts")) == 4
        conflicts = Store.open(directory=state).conflicts.counts(QUOTE_TO_CASH)
        assert conflicts == {}, conflicts


# -- two orgs -------------------------------------------------------------------------------------

TWO_ORGS = "east and west orgs - Account - sync"


def test_two_orgs_keep_one_set_of_accounts(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    spec, state = copy("sync-two-orgs.yaml", tmp_path), tmp_path / "state"
    with org() as east_org, org() as west_org:
        east, west = Salesforce(east_org), Salesforce(west_org)
        monkeypatch.setenv("EAST_ORG_URL", east.url)
        monkeypatch.setenv("WEST_ORG_URL", west.url)

        def sync() -> dict[str, Any]:
            report = run_integration(spec, TWO_ORGS, state=state)
            assert report["dead"] == 0, report
            return report

        def both() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
            fields = ("Name", "Industry", "Phone", "Website")
            return east.rows("Account", *fields), west.rows("Account", *fields)

        acme = east.create("Account", Name="Acme", Industry="Technology", Phone="555-0100")
        west.create("Account", Name="Globex", Industry="Finance")
        sync()
        accounts: list[tuple[Any, ...]] = [("Acme", "Technology", "555-0100", None),
                                           ("Globex", "Finance", None, None)]
        assert both() == (accounts, accounts)

        # Edits of different fields in each org both survive; an edit of the same field in
        # both keeps the later one and is recorded as a conflict.
        west_acme = west.id_of("Account", "Acme")
        west.update("Account", west_acme, Website="acme.example.com")
        east.update("Account", acme, Phone="555-0199")
        east.update("Account", east.id_of("Account", "Globex"), Industry="Banking")
        west.update("Account", west.id_of("Account", "Globex"), Industry="Insurance")
        sync()
        accounts = [("Acme", "Technology", "555-0199", "acme.example.com"),
                    ("Globex", "Insurance", None, None)]
        assert both() == (accounts, accounts)
        [conflict] = Store.open(directory=state).conflicts.list(TWO_ORGS)
        assert (conflict.field, conflict.policy, conflict.winner) == ("industry", "latest", "west")
        assert sync()["delivered"] == 0


# -- Salesforce and a PostgreSQL app database, both by change capture -----------------------------

HEROKU = "salesforce and app database - sync"


@pytest.fixture
def app(pg_url: str) -> Iterator[Sql]:
    database = Sql(pg_url, EXAMPLES / "sync-heroku-connect.sql")
    yield database
    database.drop()


def eventually(check: Callable[[], Any], what: str, seconds: float = 20) -> Any:
    """The first true result of `check`, polled while the sync serves."""
    deadline = time.monotonic() + seconds
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"not within {seconds} s: {what}")
        time.sleep(0.2)


def test_heroku_connect_style_sync_under_serve_follows_both_change_streams(
        tmp_path: Path, app: Sql, patchbay: Any) -> None:
    spec = copy("sync-heroku-connect.yaml", tmp_path)
    with org() as local:
        crm = Salesforce(local)
        env = {"SF_URL": crm.url, "APP_DB_URL": app.url, "APP_CAPTURE_SCHEMA": app.name}
        installed = patchbay("cdc", "install", spec, cwd=tmp_path, env=env)
        assert installed.code == 0, installed.log
        # Records both sides hold before the sync starts: joined by reading them whole.
        acme = crm.create("Account", Name="Acme", Industry="Technology")
        crm.create("Contact", FirstName="Ada", LastName="Lovelace", Email="ada@example.com",
                   AccountId=acme)
        app.execute("INSERT INTO account (name, industry) VALUES ('Globex', 'Finance')")
        serving = subprocess.Popen(
            [sys.executable, "-m", "patchbay.cli", "serve", str(spec), "--no-api",
             "--state", str(tmp_path / "state")], cwd=tmp_path,
            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            eventually(lambda: app.rows("SELECT a.name, a.industry, c.first_name, c.email FROM "
                                        "contact c JOIN account a ON a.id = c.account_id") == [
                ("Acme", "Technology", "Ada", "ada@example.com")],
                "the org's account and contact in the app database")
            eventually(lambda: crm.rows("Account", "Name", "Industry") == [
                ("Acme", "Technology"), ("Globex", "Finance")], "the app's account in the org")

            # The app makes an account and its contact in one transaction: the contact
            # waits for its account to reach Salesforce, then points at it there.
            app.execute("WITH a AS (INSERT INTO account (name, phone) VALUES ('Hooli', '555-0142') "
                        "RETURNING id) INSERT INTO contact (account_id, first_name, last_name, "
                        "email) SELECT id, 'Gavin', 'Belson', 'gavin@example.com' FROM a")
            eventually(lambda: [r for r in crm.rows("Contact", "Email", "LastName", "AccountId")
                                if r[0] == "gavin@example.com"], "the app's contact in the org")
            assert [r for r in crm.rows("Contact", "Email", "LastName", "AccountId")
                    if r[0] == "gavin@example.com"] == [
                ("gavin@example.com", "Belson", crm.id_of("Account", "Hooli"))]

            # An edit on each side reaches the other.
            crm.update("Account", acme, Phone="555-0100")
            app.execute("UPDATE account SET industry = 'Banking' WHERE name = 'Globex'")
            eventually(lambda: app.rows("SELECT phone FROM account WHERE name = 'Acme'")
                       == [("555-0100",)], "the org's edit in the app database")
            eventually(lambda: ("Globex", "Banking") in crm.rows("Account", "Name", "Industry"),
                       "the app's edit in the org")

            # A delete in PostgreSQL removes the Salesforce record.
            app.execute("DELETE FROM contact WHERE email = 'gavin@example.com'")
            eventually(lambda: [r for r in crm.rows("Contact", "Email")
                                if r[0] == "gavin@example.com"] == [],
                       "the app's delete in the org")
            assert crm.rows("Contact", "Email") == [("ada@example.com",)]
        finally:
            serving.terminate()
            output, _ = serving.communicate(timeout=20)
        assert "Traceback" not in output, output


def test_a_contact_committed_with_its_account_between_their_reads_keeps_its_account(
        tmp_path: Path, app: Sql, patchbay: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """The app's transaction commits after the sync read the accounts' changes and before it
    reads the contacts': the contact's account is one the sync has not seen yet, not one
    outside the sync, and the contact reaches the org pointing at it."""
    spec, state = copy("sync-heroku-connect.yaml", tmp_path), tmp_path / "state"
    with org() as local:
        crm = Salesforce(local)
        for name, value in {"SF_URL": crm.url, "APP_DB_URL": app.url,
                            "APP_CAPTURE_SCHEMA": app.name}.items():
            monkeypatch.setenv(name, value)
        installed = patchbay("cdc", "install", spec, cwd=tmp_path)
        assert installed.code == 0, installed.log
        assert run_integration(spec, HEROKU, state=state)["dead"] == 0  # both sides joined

        reading = SqlConnector.changes
        committed: list[str] = []

        def changes(self: SqlConnector, object: str, *args: Any, **kwargs: Any) -> Any:
            if object == "contact" and not committed:
                committed.append(object)
                app.execute("WITH a AS (INSERT INTO account (name) VALUES ('Hooli') RETURNING id) "
                            "INSERT INTO contact (account_id, first_name, last_name, email) "
                            "SELECT id, 'Gavin', 'Belson', 'gavin@example.com' FROM a")
            return reading(self, object, *args, **kwargs)

        monkeypatch.setattr(SqlConnector, "changes", changes)
        assert run_integration(spec, HEROKU, state=state)["dead"] == 0
        assert committed, "the contacts' changes were read"
        hooli = crm.id_of("Account", "Hooli")
        assert crm.rows("Contact", "Email", "AccountId") == [("gavin@example.com", hooli)]
        # Made there pointing at its account from the first, not linked by a later edit.
        [gavin] = [r[0] for r in crm.rows("Contact", "Id", "Email") if r[1] == "gavin@example.com"]
        with crm.org.storage.lock:
            logged = crm.org.storage.db.execute(
                'SELECT kind, snapshot FROM "_Changes" WHERE record_id = ? ORDER BY seq',
                [gavin]).fetchall()
        assert [(kind, json.loads(snapshot).get("AccountId")) for kind, snapshot in logged] \
            == [("created", hooli)]
