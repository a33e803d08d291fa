"""The two Salesforce example migrations, end to end against the local org."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from patchbay import run_integration
from patchbay.demo.legacy_crm import build_legacy_crm
from patchbay.localorg.org import OrgConfig
from patchbay.localorg.running import LocalOrg

EXAMPLES = Path(__file__).parents[2] / "examples" / "salesforce"
ACCOUNTS = "Legacy CRM to Salesforce - Account - migration"
CONTACTS = "Legacy CRM to Salesforce - Contact - migration"
BACKUP = "Salesforce to Postgres - Contact - migration"


@pytest.fixture
def org(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalOrg]:
    for name in EXAMPLES.iterdir():
        shutil.copy(name, tmp_path / name.name)
    with LocalOrg(OrgConfig(custom_schema=tmp_path / "localorg-schema.json")) as local:
        monkeypatch.setenv("SF_URL", f"salesforce+http://127.0.0.1:{local.port}")
        yield local


def test_legacy_crm_into_salesforce_then_a_backup_into_postgres(
        tmp_path: Path, org: LocalOrg, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    legacy = build_legacy_crm(tmp_path / "legacy_crm.db", accounts=300)
    spec = tmp_path / "legacy-crm-to-salesforce.yaml"
    state = tmp_path / "state"

    accounts = run_integration(spec, ACCOUNTS, state=state)
    assert accounts["verdict"] == "complete_with_rejects"
    assert accounts["counts"]["read"] == legacy.accounts
    assert accounts["comparison"]["compared"] == accounts["counts"]["created"]
    assert accounts["comparison"]["differing"] == 0
    assert accounts["usage"]["crm"]["api_calls"] > 0
    contacts = run_integration(spec, CONTACTS, state=state)
    assert contacts["verdict"] == "complete_with_rejects"
    assert contacts["counts"]["read"] == legacy.contacts
    assert contacts["comparison"]["differing"] == 0
    assert contacts["set_aside_by_code"]["LOOKUP_FAILED"] >= legacy.dirty_kinds["orphan_contact"]

    sf = org.org
    account_object, contact_object = sf.sobject("Account"), sf.sobject("Contact")
    with sf.storage.lock:
        held_accounts = sf.storage.db.execute(
            'SELECT count(*) FROM "Account" WHERE "IsDeleted" = 0').fetchone()[0]
        linked = sf.storage.db.execute(
            'SELECT count(*) FROM "Contact" c JOIN "Account" a ON a."Id" = c."AccountId" '
            'WHERE c."Legacy_Id__c" IS NOT NULL').fetchone()[0]
    assert held_accounts == accounts["counts"]["created"]
    assert linked == contacts["counts"]["created"], "every migrated contact has its account"
    assert account_object and contact_object

    again = run_integration(spec, ACCOUNTS, state=state, fresh=True)
    assert again["counts"]["unchanged"] == accounts["counts"]["created"]
    assert again["counts"]["created"] == again["counts"]["updated"] == 0

    schema = f"sf_backup_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
        conn.execute(f"SET search_path TO {schema}")
        conn.execute((tmp_path / "backup-schema.sql").read_text())
    try:
        monkeypatch.setenv("PG_URL", f"{pg_url}?options=-csearch_path%3D{schema}")
        backup_spec = tmp_path / "salesforce-contacts-to-postgres.yaml"
        backup = run_integration(backup_spec, BACKUP, state=state)
        assert backup["verdict"] == "complete", backup["verdict_reasons"]
        assert backup["counts"]["created"] == contacts["counts"]["created"]
        assert backup["comparison"]["differing"] == 0
        with psycopg.connect(pg_url) as conn:
            rows = conn.execute(f"SELECT count(*), count(account_name) FROM "
                                f"{schema}.customer_master_contacts").fetchone()
        assert rows == (contacts["counts"]["created"], contacts["counts"]["created"])

        session = sf.login("integration@patchbay.local", "password")
        changed = sf.storage.find(contact_object, contact_object.fields["legacy_id__c"], "1")
        sf.clock.advance(5)
        sf.update(contact_object, changed[0], {"Title": "Chief Migrator"}, session)
        incremental = run_integration(backup_spec, BACKUP, state=state)
        assert incremental["counts"]["updated"] == 1
        assert incremental["counts"]["read"] < backup["counts"]["read"]
        with psycopg.connect(pg_url) as conn:
            title = conn.execute(f"SELECT title FROM {schema}.customer_master_contacts "
                                 "WHERE salesforce_id = %s", (changed[0],)).fetchone()
        assert title == ("Chief Migrator",)
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
