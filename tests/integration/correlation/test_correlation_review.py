"""A person reviews a correlation's pairs, from the command line and over the HTTP API: the
pairs the matcher is unsure of are listed (keys and scores, never a value), one is explained
field by field from its two records as they are now, accepted (linked from the next match
on) or rejected (a link dropped, the decision kept over later matches); the audit ledger
lists what crossed. And the privacy promise, for the logs and the run reports: nothing of a
record without a match appears in either."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient
from typer.testing import CliRunner

from patchbay import cli
from patchbay.api import create_app
from patchbay.api.app import close_app
from patchbay.store import Store
from patchbay.store.pairs import Pair

from .test_correlation_sqlite import FIRST, LAST, NAME, correlate, execute, here, rows, spec

__all__ = ["here"]  # the fixture, used by name

TOKEN = "t0ken-for-the-review-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
UNSURE = ("n8", "9")
"""North's Ivy Wirth and the south's record 9 once it shares her given name and postcode
(but not her surname nor birth date): between the review and the link threshold."""


def reviewed_spec(here: Path) -> Path:
    """The correlation with a review band of 6 bits under the link threshold, and a known
    prior (EM cannot tell it from 20 records a side, where nearly every compared pair is a
    match)."""
    path = spec(here)
    path.write_text(path.read_text().replace(
        "review: 0", "review: 6\n      scoring: {prior: 0.5}"))
    return path


@pytest.fixture
def unsure(here: Path) -> Path:
    return with_unsure_pair(here)


def with_unsure_pair(here: Path) -> Path:
    """The fixture's patients, and one more pair the matcher is unsure of: south's record
    9 becomes an Ivy of north's Ivy Wirth's postcode, other surname, other birth date, no
    phone."""
    execute(here / "south.db", "UPDATE people SET first_name = 'Ivy', last_name = 'Quux', "
                               "dob = '1801-05-05', zip = '2008', mobile = NULL WHERE pid = 9")
    reviewed_spec(here)
    return here


def run(here: Path) -> dict[str, Any]:
    from patchbay import run_integration

    return run_integration(here / "correlation.yaml", NAME, state=here / ".patchbay")


def patchbay(here: Path, *args: str) -> Any:
    return CliRunner().invoke(cli.app, [*args, "--state", str(here / ".patchbay")],
                              env={"COLUMNS": "200"})


def said(result: Any) -> str:
    return " ".join(result.output.split())


@pytest.fixture
def api(unsure: Path) -> Iterator[TestClient]:
    app = create_app(unsure / "correlation.yaml", str(unsure / ".patchbay"), TOKEN)
    try:
        with TestClient(app) as client:
            yield client
    finally:
        close_app(app)


def test_a_pair_under_review_is_listed_explained_and_accepted(unsure: Path) -> None:
    report = run(unsure)
    assert report["pairs"] == {"link": 8, "review": 1}, report

    listed = patchbay(unsure, "review", "list", "--integration", NAME, "--status", "review",
                      "--json")
    assert listed.exit_code == 0, listed.output
    [pair] = json.loads(listed.output)
    assert (pair["left"], pair["right"], pair["status"], pair["gid"]) == (*UNSURE, "review", None)
    assert 0 < pair["weight"] < 6.63 and 0.5 < pair["probability"] < 0.99
    table = patchbay(unsure, "review", "list", "-i", NAME)
    assert table.exit_code == 0 and "n8" in said(table) and "review" in said(table)
    # keys and scores only: not one compared or shared value of any record
    for value in ("Ivy", "Quux", "Wirth", "2008", "1801-05-05", "1958", "+61", "allergy"):
        assert value not in table.output and value not in listed.output, value

    shown = patchbay(unsure, "review", "show", NAME, *UNSURE, "--file", "correlation.yaml")
    assert shown.exit_code == 0, shown.output
    for expected in ("review", "given", "Ivy", "normalised", "family", "Wirth", "Quux", "else",
                     "postcode", "2008", "patchbay review accept|reject"):
        assert expected in said(shown), expected
    explained = json.loads(patchbay(unsure, "review", "show", NAME, *UNSURE, "--file",
                                    "correlation.yaml", "--json").output)
    levels = {f["field"]: (f["left"], f["right"], f["level"]) for f in explained["explanation"]["fields"]}
    assert levels["given"] == ("Ivy", "Ivy", "normalised")
    assert levels["born"][2] == "else" and levels["postcode"] == ("2008", "2008", "normalised")
    assert explained["explanation"]["decision"] == "review"
    assert explained["explanation"]["match_weight"] == pytest.approx(pair["weight"])

    accepted = patchbay(unsure, "review", "accept", NAME, *UNSURE, "--by", "nurse")
    assert accepted.exit_code == 0, accepted.output
    assert "accepted by nurse" in said(accepted) and "next match" in said(accepted)
    # recorded only: nothing crossed yet
    assert rows(unsure / "south.db", "SELECT allergy_list FROM people WHERE pid = 9") == \
        [("south-only-allergy-8",)]
    report = run(unsure)
    assert report["pairs"] == {"link": 8, "accepted": 1}, report
    assert rows(unsure / "south.db", "SELECT mobile, allergy_list FROM people WHERE pid = 9") == \
        [("+61 2 9000 0008", "north-allergy-8")]
    report = run(unsure)  # a later match does not undo it
    assert report["pairs"] == {"link": 8, "accepted": 1}, report

    ledger = json.loads(patchbay(unsure, "audit", NAME, "--key", "9", "--json").output)
    assert {(e["event"], e["source"], e["source_key"], e["target"], e["target_key"], e["field"])
            for e in ledger} == {("linked", "north", "n8", "south", "9", ""),
                                 ("crossed", "north", "n8", "south", "9", "phone"),
                                 ("crossed", "north", "n8", "south", "9", "allergies")}
    table = patchbay(unsure, "audit", NAME, "--field", "allergies")
    assert table.exit_code == 0 and "allergies" in said(table) and "north-allergy" not in table.output
    assert json.loads(patchbay(unsure, "audit", NAME, "--since", "2999-01-01",
                               "--json").output) == []


def test_a_rejected_link_is_dropped_and_the_decision_kept(unsure: Path) -> None:
    run(unsure)
    [linked] = [p for p in Store.open(directory=unsure / ".patchbay").pairs.list(NAME, "link")
                if p.left == "n4"]
    rejected = patchbay(unsure, "review", "reject", NAME, "n4", linked.right, "--json")
    assert rejected.exit_code == 0, rejected.output
    assert json.loads(rejected.output)["status"] == "rejected"
    execute(unsure / "north.db", "UPDATE patients SET phone = 'after the rejection' WHERE id = 'n4'")
    report = run(unsure)
    assert report["links_dropped"] == 1 and report["pairs"]["rejected"] == 1, report
    assert rows(unsure / "south.db", f"SELECT mobile FROM people WHERE pid = {linked.right}") == \
        [("+61 2 9000 0004",)]
    report = run(unsure)
    assert report["links_dropped"] == 0 and report["pairs"]["rejected"] == 1, report
    listed = json.loads(patchbay(unsure, "review", "list", "--status", "rejected", "--json").output)
    assert [(p["integration"], p["left"], p["decided_by"]) for p in listed] == \
        [(NAME, "n4", listed[0]["decided_by"])] and listed[0]["decided_by"]


def test_unknown_pairs_and_bad_input_exit_2(unsure: Path) -> None:
    run(unsure)
    for args in (("review", "accept", NAME, "n8", "10"),
                 ("review", "reject", "no such correlation", *UNSURE),
                 ("review", "show", NAME, "n19", "1"),
                 ("review", "list", "-i", "no such correlation"),
                 ("review", "list", "--status", "linked"),
                 ("audit", "no such correlation"),
                 ("audit", NAME, "--since", "yesterday")):
        result = patchbay(unsure, *args)
        assert result.exit_code == 2, (args, result.output)
    failed = patchbay(unsure, "review", "accept", NAME, "n8", "10", "--json")
    assert json.loads(failed.output)["exit"] == 2 and "no pair" in json.loads(failed.output)["error"]
    # a record that left the scope cannot be explained; its pair stays as it was
    execute(unsure / "south.db", "DELETE FROM people WHERE pid = 9")
    gone = patchbay(unsure, "review", "show", NAME, *UNSURE, "--file", "correlation.yaml")
    assert gone.exit_code == 2 and "south holds no record '9'" in said(gone)


def test_the_api_lists_decides_and_audits(api: TestClient, unsure: Path) -> None:
    run(unsure)
    listed = api.get("/reviews", params={"integration": NAME, "status": "review"}, headers=AUTH)
    assert listed.status_code == 200, listed.text
    [pair] = listed.json()["pairs"]
    assert (pair["left"], pair["right"]) == UNSURE and "Ivy" not in listed.text
    assert len(api.get("/reviews", params={"limit": 3}, headers=AUTH).json()["pairs"]) == 3
    [last] = api.get("/reviews", params={"limit": 3, "offset": 8}, headers=AUTH).json()["pairs"]
    assert last["left"] == "n8"  # the lowest weight comes last

    decided = api.post(f"/reviews/{NAME}/decide", headers=AUTH,
                       json={"left": "n8", "right": "9", "decision": "accepted", "by": "nurse"})
    assert decided.status_code == 200, decided.text
    assert (decided.json()["status"], decided.json()["decided_by"]) == ("accepted", "nurse")
    assert "next match" in decided.json()["applied"]
    run(unsure)
    ledger = api.get(f"/audit/{NAME}", params={"key": "n8", "field": "phone"}, headers=AUTH)
    assert ledger.status_code == 200, ledger.text
    assert [(e["source"], e["target"], e["field"]) for e in ledger.json()["ledger"]] == \
        [("north", "south", "phone")]
    assert api.get(f"/audit/{NAME}", params={"since": "2999-01-01T00:00:00+00:00"},
                   headers=AUTH).json()["ledger"] == []


def test_the_api_answers_bad_input_with_4xx(api: TestClient, unsure: Path) -> None:
    run(unsure)
    decide = f"/reviews/{NAME}/decide"
    answers = {
        "no token": api.get("/reviews").status_code,
        "bad status": api.get("/reviews", params={"status": "linked"}, headers=AUTH).status_code,
        "bad limit": api.get("/reviews", params={"limit": "0"}, headers=AUTH).status_code,
        "bad offset": api.get("/reviews", params={"offset": "-1"}, headers=AUTH).status_code,
        "unknown integration": api.get("/reviews", params={"integration": "nope"},
                                       headers=AUTH).status_code,
        "unknown pair": api.post(decide, headers=AUTH, json={
            "left": "n8", "right": "10", "decision": "rejected"}).status_code,
        "unknown correlation": api.post("/reviews/nope/decide", headers=AUTH, json={
            "left": "n8", "right": "9", "decision": "rejected"}).status_code,
        "bad decision": api.post(decide, headers=AUTH, json={
            "left": "n8", "right": "9", "decision": "maybe"}).status_code,
        "key not text": api.post(decide, headers=AUTH, json={
            "left": 8, "right": "9", "decision": "accepted"}).status_code,
        "unknown field": api.post(decide, headers=AUTH, json={
            "left": "n8", "right": "9", "decision": "accepted", "why": "x"}).status_code,
        "NUL": api.post(decide, headers=AUTH, json={
            "left": "n8\x00", "right": "9", "decision": "accepted"}).status_code,
        "not JSON": api.post(decide, headers=AUTH, content=b"left=n8").status_code,
        "too big": api.post(decide, headers={**AUTH, "Content-Type": "application/json"},
                            content=b'{"left": "' + b"x" * (1024 * 1024) + b'"}').status_code,
        "bad since": api.get(f"/audit/{NAME}", params={"since": "yesterday"},
                             headers=AUTH).status_code,
        "unknown audit": api.get("/audit/nope", headers=AUTH).status_code,
    }
    assert answers == {
        "no token": 401, "bad status": 400, "bad limit": 400, "bad offset": 400,
        "unknown integration": 404, "unknown pair": 404, "unknown correlation": 404,
        "bad decision": 400, "key not text": 400, "unknown field": 400, "NUL": 400,
        "not JSON": 415, "too big": 413, "bad since": 400, "unknown audit": 404}
    assert api.get("/reviews", params={"status": "review"}, headers=AUTH).json()["pairs"][0][
        "status"] == "review"  # nothing above changed a pair
    document = api.get("/openapi.json", headers=AUTH).json()
    assert {"/reviews", "/reviews/{integration}/decide", "/audit/{integration}"} <= \
        set(document["paths"])


def test_nothing_of_an_unshared_record_reaches_the_logs_or_the_reports(
        here: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    reports = [correlate(here)]
    execute(here / "south.db", "UPDATE people SET mobile = '+61 3 5999 9999' WHERE pid = 15")
    execute(here / "north.db", "UPDATE patients SET phone = '+61 2 9999 9999' WHERE id = 'n15'")
    execute(here / "south.db", "UPDATE people SET mobile = '+61 400 000 001' WHERE pid = 2")
    # a shared patient's record changes so that it matches no longer: its link is dropped
    execute(here / "north.db", "UPDATE patients SET given = 'Zoe', family = 'Other', "
                               "born = '2001-01-01', postcode = '7777' WHERE id = 'n7'")
    reports.append(correlate(here))
    assert reports[-1]["links_dropped"] == 1, reports[-1]
    written = [path.read_text(errors="replace") for path in (here / ".patchbay").rglob("*")
               if path.is_file() and path.suffix != ".db" and ".db-" not in path.name]
    logged = caplog.text + "\n".join(str(r.args) for r in caplog.records)
    assert any(r.name.startswith("patchbay") for r in caplog.records), \
        "the runs logged nothing: the test would prove nothing"
    said_anywhere = "\n".join([json.dumps(reports, default=str), logged, *written])
    unshared = [value for i in range(8, 20) for value in (
        f"S{FIRST[i]}", f"South{LAST[i]}", f"+61 3 5000 00{i:02d}", f"south-only-allergy-{i}",
        f"north-allergy-{i}", f"+61 2 9000 00{i:02d}", f"'n{i}'", f"18{i:02d}-02-02",
        "+61 3 5999 9999", "+61 2 9999 9999")]
    assert [value for value in unshared if value in said_anywhere] == []


def test_a_decision_made_while_a_match_runs_is_not_undone_by_it(tmp_path: Path) -> None:
    """A match reads the pairs, a person decides meanwhile (serve rematches all the time),
    then the match writes what it found: the decision stands, for the next match to apply."""
    store = Store.open(directory=tmp_path)
    store.pairs.save(NAME, [Pair("n1", "1", "review", None, 3.0, 0.9)])
    read_by_the_match = store.pairs.all(NAME)
    assert store.pairs.decide(NAME, "n1", "1", "accepted", "nurse")
    store.pairs.save(NAME, [Pair(p.left, p.right, p.status, p.gid, 3.1, 0.91) for p in read_by_the_match])
    kept = store.pairs.get(NAME, "n1", "1")
    assert kept is not None and (kept.status, kept.decided_by) == ("accepted", "nurse")
    # a decision still replaces a decision, and a match still updates an undecided pair
    store.pairs.save(NAME, [Pair("n1", "1", "rejected", None, 3.1, 0.91, "nurse"),
                            Pair("n2", "2", "review", None, 2.0, 0.8)])
    store.pairs.save(NAME, [Pair("n2", "2", "link", "g2", 7.0, 0.99)])
    assert sorted((p.left, p.status) for p in store.pairs.all(NAME)) == [("n1", "rejected"), ("n2", "link")]
