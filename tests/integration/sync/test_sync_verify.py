"""`patchbay verify` on a sync: every participant read now and compared pair by pair on the
shared fields both map; "in sync" after a run, and what was changed, added or deleted behind
the sync's back is listed; a field held for a person is reported apart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from patchbay import cli, verify_integration

from .test_sync_sqlite import CRM, ERP, NAME, db, execute, spec, sync

EXTRA = "    deletes: {check_seconds: 0.001}"


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    db(tmp_path / "crm.db", CRM)
    db(tmp_path / "erp.db", ERP)
    execute(tmp_path / "crm.db", "INSERT INTO customers (id, name, email, tier) VALUES "
            "('c1', 'Ada', 'ada@example.com', 'gold'), ('c2', 'Bob', 'bob@example.com', 'silver')")
    execute(tmp_path / "erp.db", "INSERT INTO clients (full_name, mail, level) VALUES "
            "('Cy', 'cy@example.com', 'S')")
    return tmp_path


def verify(here: Path, conflicts: str = "latest") -> dict[str, Any]:
    return verify_integration(spec(here, conflicts=conflicts, extra=EXTRA), NAME,
                              state=here / ".patchbay")


def pair(report: dict[str, Any]) -> dict[str, Any]:
    [only] = report["objects"]["customer"]["pairs"]
    assert only["participants"] == ["crm", "erp"]
    return dict(only)


def test_after_a_run_the_participants_are_in_sync(here: Path) -> None:
    before = verify(here)
    assert before["verdict"] == "out of sync"  # nothing synced yet: each lacks the other's
    assert pair(before)["missing_in"] == {"crm": 1, "erp": 2}
    sync(here, extra=EXTRA)
    report = verify(here)
    assert report["verdict"] == "in sync", report
    assert report["verdict_reasons"] == []
    compared = pair(report)
    assert {k: compared[k] for k in ("compared", "equal", "differing", "missing_in")} == {
        "compared": 3, "equal": 3, "differing": 0, "missing_in": {"crm": 0, "erp": 0}}
    assert compared["fields"] == ["name", "email", "tier"]  # notes: only the CRM maps it
    assert report["objects"]["customer"]["participants"] == {
        "crm": {"read": 3, "unlinked": 0}, "erp": {"read": 3, "unlinked": 0}}
    result = CliRunner().invoke(cli.app, ["verify", str(here / "sync.yaml"), "--state",
                                          str(here / ".patchbay")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "verdict: in sync" in result.output


def test_changes_behind_the_syncs_back_are_listed(here: Path) -> None:
    sync(here, extra=EXTRA)
    execute(here / "erp.db", "UPDATE clients SET level = 'G' WHERE mail = 'bob@example.com'")
    execute(here / "crm.db", "INSERT INTO customers (id, name, email, tier) VALUES "
            "('c9', 'Dan', 'dan@example.com', 'gold')")
    execute(here / "erp.db", "DELETE FROM clients WHERE mail = 'cy@example.com'")
    report = verify(here)
    assert report["verdict"] == "out of sync"
    compared = pair(report)
    assert (compared["compared"], compared["equal"], compared["differing"]) == (2, 1, 1)
    assert compared["differing_by_field"] == {"tier": 1}
    [sample] = compared["samples"]
    assert (sample["field"], sample["values"]) == ("tier", {"crm": "silver", "erp": "gold"})
    assert compared["missing_in"] == {"crm": 0, "erp": 2}  # Dan, not synced; Cy, deleted
    missing = compared["missing_samples"]
    assert [(s["missing_in"], s["held_by"]) for s in missing] == [("erp", "crm")] * 2
    assert "c9" in {s["key"] for s in missing}
    assert report["objects"]["customer"]["participants"]["crm"]["unlinked"] == 1
    assert report["verdict_reasons"] == ["customer: crm and erp: 1 records differ",
                                         "customer: crm and erp: 2 records missing in erp"]
    result = CliRunner().invoke(cli.app, ["verify", str(here / "sync.yaml"), "--state",
                                          str(here / ".patchbay")], env={"COLUMNS": "200"})
    assert result.exit_code == 4, result.output
    assert "verdict: out of sync" in result.output
    assert 'tier: crm "silver" / erp "gold"' in result.output
    as_json = CliRunner().invoke(cli.app, ["verify", str(here / "sync.yaml"), "--state",
                                           str(here / ".patchbay"), "--json"])
    assert json.loads(as_json.output)["verdict"] == "out of sync"
    # The sync takes the edit and the new record, and propagates the delete: in sync again,
    # the deleted record (a tombstone) no longer counted as missing.
    sync(here, extra=EXTRA)
    again = verify(here)
    assert again["verdict"] == "in sync", again
    assert pair(again)["compared"] == 3


def test_a_field_held_for_a_person_is_reported_apart(here: Path) -> None:
    sync(here, conflicts="manual", extra=EXTRA)
    execute(here / "erp.db", "UPDATE clients SET full_name = 'Ada from ERP' WHERE mail LIKE 'ada%'")
    execute(here / "crm.db", "UPDATE customers SET name = 'Ada from CRM' WHERE id = 'c1'")
    sync(here, conflicts="manual", extra=EXTRA)
    report = verify(here, conflicts="manual")
    assert report["verdict"] == "in sync", report
    assert pair(report)["differing"] == 0
    [held] = report["objects"]["customer"]["held"]["samples"]
    assert (held["field"], held["values"]) == ("name", {"crm": "Ada from CRM",
                                                        "erp": "Ada from ERP"})
    assert report["objects"]["customer"]["held"]["count"] == 1
