"""What a person does with a sync's conflicts, from the command line and over the HTTP API:
a field held for a person (conflict: manual) is listed, shown, resolved, and the choice is
written to every participant by the next run; a conflict no one is asked about is refused."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from patchbay import cli
from patchbay.api import create_app
from patchbay.api.app import close_app
from patchbay.runtime.conflicts import value_of
from patchbay.store import Store

from .test_sync_sqlite import CRM, ERP, NAME, db, execute, rows, spec, sync

TOKEN = "t0ken-for-the-conflict-tests"


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    db(tmp_path / "crm.db", CRM)
    db(tmp_path / "erp.db", ERP)
    return tmp_path


def names(here: Path) -> tuple[str, str]:
    [(crm,)] = rows(here / "crm.db", "SELECT name FROM customers")
    [(erp,)] = rows(here / "erp.db", "SELECT full_name FROM clients")
    return crm, erp


def held_conflict(here: Path) -> int:
    """Both participants change the name of one customer before the sync sees either: a
    conflict held for a person, each keeping its own value meanwhile."""
    execute(here / "crm.db", "INSERT INTO customers (id, name, email, tier) VALUES "
            "('c1', 'Ada', 'ada@example.com', 'gold')")
    sync(here, conflicts="manual")
    execute(here / "erp.db", "UPDATE clients SET full_name = 'Ada from ERP'")
    execute(here / "crm.db", "UPDATE customers SET name = 'Ada from CRM'")
    sync(here, conflicts="manual")
    assert names(here) == ("Ada from CRM", "Ada from ERP")  # held: neither overwritten
    [conflict] = Store.open(directory=here / ".patchbay").conflicts.list(NAME, "held")
    return conflict.id


def patchbay(here: Path, *args: str) -> Any:
    return CliRunner().invoke(cli.app, [*args, "--state", str(here / ".patchbay")],
                              env={"COLUMNS": "200"})


def said(result: Any) -> str:
    return " ".join(result.output.split())


def test_a_held_conflict_is_listed_shown_and_resolved_on_the_command_line(here: Path) -> None:
    conflict_id = held_conflict(here)
    listed = patchbay(here, "conflicts", "list", "--status", "held", "--json")
    assert listed.exit_code == 0, listed.output
    [found] = json.loads(listed.output)
    assert (found["id"], found["field"], found["policy"], found["status"]) == (
        conflict_id, "name", "manual", "held")
    assert found["candidates"] == {"crm": "Ada from CRM", "erp": "Ada from ERP"}
    assert json.loads(patchbay(here, "conflicts", "list", "--status", "resolved",
                               "--json").output) == []
    shown = patchbay(here, "conflicts", "show", str(conflict_id))
    assert shown.exit_code == 0, shown.output
    for expected in ("name", "manual", "held", '"Ada from CRM"', '"Ada from ERP"',
                     f"patchbay conflicts resolve {conflict_id}"):
        assert expected in said(shown)

    resolved = patchbay(here, "conflicts", "resolve", str(conflict_id), "--pick", "erp",
                        "--by", "[bold]ops")
    assert resolved.exit_code == 0, resolved.output
    assert '"Ada from ERP" by [bold]ops' in said(resolved)  # a name from data, printed as is
    assert "next round" in said(resolved)
    assert names(here) == ("Ada from CRM", "Ada from ERP")  # recorded, not applied yet
    sync(here, conflicts="manual")
    assert names(here) == ("Ada from ERP", "Ada from ERP")
    shown = json.loads(patchbay(here, "conflicts", "show", str(conflict_id), "--json").output)
    assert (shown["status"], shown["chosen"], shown["resolved_by"]) == (
        "resolved", "Ada from ERP", "[bold]ops")
    assert shown["resolved_at"] is not None
    # Settled now: another run writes nothing more, and the conflict takes no other choice.
    assert sync(here, conflicts="manual")["delivered"] == 0
    again = patchbay(here, "conflicts", "resolve", str(conflict_id), "--value", "x")
    assert again.exit_code == 2
    assert f"conflict {conflict_id} is resolved, not held" in said(again)


def test_a_value_typed_is_json_when_it_parses_and_text_otherwise(here: Path) -> None:
    assert (value_of("42"), value_of('"42"'), value_of("null"), value_of("Ada L.")) == (
        42, "42", None, "Ada L.")
    conflict_id = held_conflict(here)
    resolved = patchbay(here, "conflicts", "resolve", str(conflict_id), "--value", "Ada L.",
                        "--json")
    assert resolved.exit_code == 0, resolved.output
    assert json.loads(resolved.output)["chosen"] == "Ada L."
    sync(here, conflicts="manual")
    assert names(here) == ("Ada L.", "Ada L.")


def test_choices_the_command_line_refuses(here: Path) -> None:
    conflict_id = held_conflict(here)
    refused = {
        ("conflicts", "show", "999"): "no conflict 999",
        ("conflicts", "resolve", "999", "--pick", "crm"): "no conflict 999",
        ("conflicts", "resolve", str(conflict_id)): "--value VALUE, or --pick PARTICIPANT",
        ("conflicts", "resolve", str(conflict_id), "--value", "1", "--pick", "crm"):
            "--value VALUE, or --pick PARTICIPANT",
        ("conflicts", "resolve", str(conflict_id), "--pick", "billing"):
            "'billing' is not a candidate",
        ("conflicts", "list", "--status", "helt"): "did you mean 'held'",
    }
    for args, message in refused.items():
        result = patchbay(here, *args)
        assert result.exit_code == 2, (args, result.output)
        assert message in said(result), (args, result.output)
    answer = json.loads(patchbay(here, "conflicts", "show", "999", "--json").output)
    assert answer["exit"] == 2 and "no conflict 999" in answer["error"]


def test_a_conflict_settled_by_its_policy_takes_no_choice(here: Path) -> None:
    execute(here / "crm.db", "INSERT INTO customers (id, name, email, tier) VALUES "
            "('c1', 'Ada', 'ada@example.com', 'gold')")
    sync(here, conflicts="priority")
    execute(here / "erp.db", "UPDATE clients SET full_name = 'From ERP'")
    execute(here / "crm.db", "UPDATE customers SET name = 'From CRM'")
    sync(here, conflicts="priority")
    [settled] = Store.open(directory=here / ".patchbay").conflicts.list(NAME)
    result = patchbay(here, "conflicts", "resolve", str(settled.id), "--pick", "erp")
    assert result.exit_code == 2
    assert f"conflict {settled.id} is settled (crm's value stands), not held" in said(result)
    sync(here, conflicts="priority")
    assert names(here) == ("From CRM", "From CRM")


# -- the same over the HTTP API -----------------------------------------------------------------


@pytest.fixture
def client(here: Path) -> Iterator[TestClient]:
    app = create_app(spec(here, conflicts="manual"), str(here / ".patchbay"), TOKEN)
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as test_client:
        yield test_client
    close_app(app)


def test_a_held_conflict_is_listed_shown_and_resolved_over_the_api(here: Path,
                                                                     client: TestClient) -> None:
    conflict_id = held_conflict(here)
    listed = client.get("/conflicts", params={"integration": NAME, "status": "held"})
    assert listed.status_code == 200, listed.text
    [found] = listed.json()["conflicts"]
    assert (found["id"], found["url"]) == (conflict_id, f"/conflicts/{conflict_id}")
    assert client.get("/conflicts", params={"status": "held", "offset": 1}).json() == {
        "conflicts": []}
    shown = client.get(f"/conflicts/{conflict_id}").json()
    assert shown["candidates"] == {"crm": "Ada from CRM", "erp": "Ada from ERP"}
    assert TestClient(client.app).get("/conflicts").status_code == 401  # no token

    resolved = client.post(f"/conflicts/{conflict_id}/resolve", json={"pick": "crm", "by": "ops"})
    assert resolved.status_code == 200, resolved.text
    assert (resolved.json()["status"], resolved.json()["chosen"]) == ("chosen", "Ada from CRM")
    assert "next round" in resolved.json()["applied"]
    again = client.post(f"/conflicts/{conflict_id}/resolve", json={"value": "other"})
    assert again.status_code == 409
    assert "not held" in again.json()["error"]
    sync(here, conflicts="manual")
    assert names(here) == ("Ada from CRM", "Ada from CRM")
    assert client.get(f"/conflicts/{conflict_id}").json()["status"] == "resolved"


def test_requests_the_api_refuses_with_a_clear_answer(here: Path, client: TestClient) -> None:
    conflict_id = held_conflict(here)
    resolve = f"/conflicts/{conflict_id}/resolve"
    refused = [
        ("GET", "/conflicts?status=helt", None, 400, "invalid query"),
        ("GET", "/conflicts?offset=-1", None, 400, "invalid query"),
        ("GET", "/conflicts?limit=100000", None, 400, "invalid query"),
        ("GET", "/conflicts/987654", None, 404, "no conflict 987654"),
        ("GET", f"/conflicts/{2 ** 70}", None, 404, f"no conflict {2 ** 70}"),
        ("GET", "/conflicts/abc", None, 404, "no such route"),
        ("POST", "/conflicts/987654/resolve", {"pick": "crm"}, 404, "no conflict 987654"),
        ("POST", resolve, {}, 400, "invalid request"),
        ("POST", resolve, {"value": 1, "pick": "crm"}, 400, "invalid request"),
        ("POST", resolve, {"pick": 7}, 400, "invalid request"),
        ("POST", resolve, {"value": "a\x00b"}, 400, "invalid request"),
        ("POST", resolve, {"valeu": 1}, 400, "invalid request"),
        ("POST", resolve, {"pick": "billing"}, 400, "'billing' is not a candidate"),
    ]
    for method, path, body, status, message in refused:
        answer = client.request(method, path, json=body)
        assert answer.status_code == status, (path, body, answer.text)
        assert message in answer.json()["error"], (path, body, answer.text)
    problems = client.post(resolve, json={"valeu": 1}).json()["problems"]
    assert "unknown field 'valeu'; did you mean 'value'?" in problems
    not_json = client.post(resolve, content=b'{"pick": "crm"}', headers={"Content-Type": "text/plain"})
    assert not_json.status_code == 415
    assert client.get(f"/conflicts/{conflict_id}").json()["status"] == "held"
