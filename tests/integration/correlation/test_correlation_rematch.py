"""Between full matches, a correlation re-matches the records that change against the other
side through the blocking rules, under the model of its last full match: a record that
becomes shared is linked within a round, a link that no longer holds is dropped (reported,
and in the audit ledger), and a person's decisions stand. The full match does not run in
those rounds (`full_matches` 0): the correlation is served as `serve` keeps it, one object
polled round after round, with a rematch_seconds far away."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from patchbay.patterns.correlation import Correlation
from patchbay.runtime.runner import Invocation
from patchbay.runtime.serving import outbox_round
from patchbay.store import Store, open_state
from patchbay.store.pairs import Pair

from .leaks import leaked, state_text
from .test_correlation_sqlite import FIRST, LAST, NAME, execute, here, rows, spec, unshared_values

__all__ = ["here"]  # the fixture, used by name


@pytest.fixture
def served(here: Path) -> Iterator[Correlation]:
    """The fixture's correlation, matched in full once, then kept going without a full match."""
    path = spec(here)
    path.write_text(path.read_text().replace("rematch_seconds: 0.001", "rematch_seconds: 3600"))
    ctx = Invocation.load(path, NAME, {}).context(*open_state(here / ".patchbay"))
    try:
        correlation = Correlation(ctx)
        first = round_(correlation)
        assert first["full_matches"] == 1 and first["pairs"] == {"link": 8}, first
        assert first["rematched"] == 0, "the records the full match read are not re-matched"
        yield correlation
    finally:
        ctx.systems.close()


def round_(correlation: Correlation) -> dict[str, Any]:
    report: dict[str, Any] = outbox_round(correlation).to_json()
    return report


def pair(here: Path, left: str, right: str) -> Pair | None:
    return Store.open(directory=here / ".patchbay").pairs.get(NAME, left, right)


def ledger(here: Path, key: str) -> list[tuple[str, str, str, str]]:
    return [(e["event"], e["source_key"], e["target_key"], e["field"])
            for e in Store.open(directory=here / ".patchbay").pairs.ledger(NAME, key=key)]


def test_a_record_that_becomes_shared_is_linked_at_the_next_round(served: Correlation,
                                                                  here: Path) -> None:
    execute(here / "north.db", "INSERT INTO patients (id, given, family, born, postcode, phone, "
                               "allergies) VALUES ('n20', 'Una', 'Newcomer', '1990-03-04', '3030', "
                               "'+61 2 9000 0020', 'north-allergy-20')")
    report = round_(served)
    assert report["full_matches"] == 0 and report["rematched"] == 1, report
    assert report["pairs"] == {"link": 8}  # on one side only: nothing to link it to

    execute(here / "south.db", "INSERT INTO people (pid, first_name, last_name, dob, zip) "
                               "VALUES (21, 'UNA', 'Newcomer', '1990-03-04', '3030')")
    report = round_(served)
    assert report["full_matches"] == 0 and report["rematched"] == 1, report
    assert report["pairs"] == {"link": 9}, report
    linked = pair(here, "n20", "21")
    assert linked is not None and linked.status == "link" and linked.gid
    # linked, so its shared fields crossed (the south had no phone nor allergies)
    assert rows(here / "south.db", "SELECT mobile, allergy_list FROM people WHERE pid = 21") == \
        [("+61 2 9000 0020", "north-allergy-20")]
    assert ("linked", "n20", "21", "") in ledger(here, "21")
    assert ("crossed", "n20", "21", "allergies") in ledger(here, "21")


def test_a_link_that_no_longer_holds_is_dropped_and_reported(served: Correlation,
                                                            here: Path) -> None:
    [before] = [p for p in Store.open(directory=here / ".patchbay").pairs.list(NAME, "link")
                if p.left == "n7"]
    execute(here / "north.db", "UPDATE patients SET given = 'Zoe', family = 'Other', "
                               "born = '2001-01-01', postcode = '7777' WHERE id = 'n7'")
    report = round_(served)
    assert report["full_matches"] == 0 and report["links_dropped"] == 1, report
    assert report["pairs"] == {"link": 7, "dropped": 1}, report
    after = pair(here, "n7", before.right)
    assert after is not None and after.status == "dropped" and after.gid is None
    assert ("dropped", "n7", before.right, "") in ledger(here, "n7")
    # no longer linked: an edit of its shared fields stays where it is made
    execute(here / "north.db", "UPDATE patients SET phone = '+61 2 1111 1111' WHERE id = 'n7'")
    round_(served)
    assert rows(here / "south.db", f"SELECT mobile FROM people WHERE pid = {before.right}") == \
        [("+61 2 9000 0007",)]

    # and back as it was: linked again, by a re-match
    execute(here / "north.db", f"UPDATE patients SET given = '{FIRST[7]}', family = '{LAST[7]}', "
                               "born = '1957-08-17', postcode = '2007' WHERE id = 'n7'")
    report = round_(served)
    assert report["full_matches"] == 0 and report["pairs"] == {"link": 8}, report


def test_a_person_decision_stands_over_a_rematch(served: Correlation, here: Path) -> None:
    store = Store.open(directory=here / ".patchbay")
    [rejected] = [p for p in store.pairs.list(NAME, "link") if p.left == "n4"]
    assert store.pairs.decide(NAME, rejected.left, rejected.right, "rejected", "nurse")
    store.pairs.save(NAME, [Pair("n12", "13", "accepted", decided_by="nurse")])
    # both change in a compared field, still matching as they did
    execute(here / "north.db", "UPDATE patients SET given = upper(given), "
                               "phone = 'after the rejection' WHERE id IN ('n4', 'n12')")
    report = round_(served)
    assert report["full_matches"] == 0 and report["rematched"] == 2, report
    assert report["links_dropped"] == 1 and report["pairs"] == \
        {"link": 7, "rejected": 1, "accepted": 1}, report
    after = pair(here, rejected.left, rejected.right)
    assert after is not None and (after.status, after.gid, after.decided_by) == \
        ("rejected", None, "nurse")
    assert rows(here / "south.db", f"SELECT mobile FROM people WHERE pid = {rejected.right}") == \
        [("+61 2 9000 0004",)]  # what it got while linked
    # the accepted pair is linked: the north's allergies reach the south's record 13
    accepted = pair(here, "n12", "13")
    assert accepted is not None and accepted.status == "accepted" and accepted.gid
    assert rows(here / "south.db", "SELECT allergy_list FROM people WHERE pid = 13") == \
        [("north-allergy-12",)]
    round_(served)
    assert Store.open(directory=here / ".patchbay").pairs.counts(NAME) == \
        {"link": 7, "rejected": 1, "accepted": 1}


def test_nothing_of_an_unshared_record_reaches_the_state_through_a_rematch(
        served: Correlation, here: Path) -> None:
    execute(here / "south.db", "UPDATE people SET mobile = '+61 3 5999 9999', "
                               "first_name = 'Renamed' WHERE pid = 15")
    execute(here / "north.db", "UPDATE patients SET phone = '+61 2 9999 9999', "
                               "family = 'Renamedfamily' WHERE id = 'n15'")
    report = round_(served)
    assert report["rematched"] == 2 and report["full_matches"] == 0, report
    # Every table and column of the state (the change cursors too) and its files' bytes.
    state = state_text(here / ".patchbay")
    assert leaked(state, ["Renamed", "Renamedfamily", *unshared_values()]) == []
    assert json.dumps(report).count("Renamed") == 0
