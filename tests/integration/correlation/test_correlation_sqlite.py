"""A correlation between two SQLite patient registers, end to end: only the patients both
hold are linked, their shared fields are exchanged both ways, nothing of a patient held on
one side only leaves it, and a person's review decisions stand over later matches."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from patchbay import run_integration
from patchbay.patterns.correlation import Correlation
from patchbay.runtime.runner import Invocation
from patchbay.store import Store, open_state

from .leaks import leaked, state_text

NAME = "patients - correlation"
NORTH = """CREATE TABLE patients (id TEXT PRIMARY KEY, given TEXT, family TEXT, born TEXT,
           postcode TEXT, phone TEXT, allergies TEXT,
           updated_at TEXT DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now')));
           CREATE TRIGGER patients_stamp AFTER UPDATE ON patients BEGIN
             UPDATE patients SET updated_at = strftime('%Y-%m-%dT%H:%M:%f', 'now')
             WHERE id = NEW.id; END"""
SOUTH = """CREATE TABLE people (pid INTEGER PRIMARY KEY, first_name TEXT, last_name TEXT,
           dob TEXT, zip TEXT, mobile TEXT, allergy_list TEXT,
           modified TEXT DEFAULT (strftime('%Y-%m-%dT%H:%M:%f', 'now')));
           CREATE TRIGGER people_stamp AFTER UPDATE ON people BEGIN
             UPDATE people SET modified = strftime('%Y-%m-%dT%H:%M:%f', 'now')
             WHERE pid = NEW.pid; END"""
FIRST = ["Ada", "Bob", "Cyd", "Dee", "Eve", "Fay", "Gus", "Hal", "Ivy", "Jon", "Kim", "Lou",
         "Max", "Ned", "Oda", "Pia", "Quin", "Rex", "Sue", "Tom"]
LAST = ["Lovelace", "Hopper", "Turing", "Knuth", "Liskov", "Ritchie", "Thompson", "Hamilton",
        "Wirth", "Backus", "Kay", "Dijkstra", "Engelbart", "Shannon", "Codd", "Stroustrup",
        "Torvalds", "Berners", "Cerf", "Kahn"]


def spec(directory: Path) -> Path:
    path = directory / "correlation.yaml"
    path.write_text(f"""
systems:
  north: sqlite:///north.db
  south: sqlite:///south.db
integrations:
  - name: {NAME}
    pattern: correlation
    trigger: {{poll_seconds: 0.2, overlap_seconds: 0}}
    rematch_seconds: 0.001
    participants:
      - name: north
        system: north
        object: patients
        key: id
        watermark: updated_at
        fields: {{given: given, family: family, born: born, postcode: postcode, phone: phone,
                  allergies: allergies}}
      - name: south
        system: south
        object: people
        key: pid
        watermark: modified
        fields: {{given: first_name, family: last_name, born: dob, postcode: zip,
                  phone: mobile, allergies: allergy_list}}
    match:
      fields:
        given: {{kind: name}}
        family: {{kind: name}}
        born: {{kind: date}}
        postcode: {{kind: postcode}}
      blocking: [[postcode], [born]]
      strictness: balanced
      review: 0
    share:
      phone: {{}}
      allergies: {{writers: [north]}}
""")
    return path


def execute(path: Path, sql: str, params: Any = ()) -> None:
    with sqlite3.connect(path) as conn:
        conn.executescript(sql) if not params else conn.executemany(sql, params)


def rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchall()


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    return registers(tmp_path)


def registers(directory: Path) -> Path:
    """20 patients in the north, 20 in the south; the first 8 are the same people (the
    south spells some names differently and lacks a phone)."""
    execute(directory / "north.db", NORTH)
    execute(directory / "south.db", SOUTH)
    north = [(f"n{i}", FIRST[i], LAST[i], f"19{50 + i}-0{1 + i % 9}-1{i % 9}", f"20{i:02d}",
              f"+61 2 9000 00{i:02d}", f"north-allergy-{i}") for i in range(20)]
    south = []
    for i in range(20):
        if i < 8:  # shared: the same person, a typo in some surnames
            family = LAST[i][:-1] + "x" if i % 3 == 0 else LAST[i]
            south.append((FIRST[i], family, north[i][3], north[i][4], None, None))
        else:  # only in the south: other people
            south.append((f"S{FIRST[i]}", f"South{LAST[i]}", f"18{i:02d}-02-02", f"90{i:02d}",
                          f"+61 3 5000 00{i:02d}", f"south-only-allergy-{i}"))
    execute(directory / "north.db", "INSERT INTO patients (id, given, family, born, postcode, "
            "phone, allergies) VALUES (?, ?, ?, ?, ?, ?, ?)", north)
    execute(directory / "south.db", "INSERT INTO people (first_name, last_name, dob, zip, mobile, "
            "allergy_list) VALUES (?, ?, ?, ?, ?, ?)", south)
    return directory


def correlate(here: Path) -> dict[str, Any]:
    return run_integration(spec(here), NAME, state=here / ".patchbay")


def test_only_shared_records_exchange_their_shared_fields(here: Path) -> None:
    report = correlate(here)
    assert report["pattern"] == "correlation"
    assert report["pairs"].get("link") == 8, report
    shared = rows(here / "south.db", "SELECT pid, mobile, allergy_list FROM people WHERE pid <= 8 "
                                     "ORDER BY pid")
    assert shared == [(i + 1, f"+61 2 9000 00{i:02d}", f"north-allergy-{i}") for i in range(8)]
    # Names, birth dates and postcodes are compared, never exchanged: the typos stay.
    assert rows(here / "south.db", "SELECT last_name FROM people WHERE pid = 1") == [("Lovelacx",)]
    # Nothing crossed for anyone else, either way; no record was created.
    assert rows(here / "south.db", "SELECT count(*) FROM people") == [(20,)]
    assert rows(here / "north.db", "SELECT count(*) FROM patients") == [(20,)]
    assert rows(here / "south.db", "SELECT count(*) FROM people WHERE pid > 8 AND "
                                   "allergy_list LIKE 'north%'") == [(0,)]

    # An edit of a shared field of a shared record crosses; `allergies` only from the north.
    execute(here / "south.db", "UPDATE people SET mobile = '+61 400 000 001' WHERE pid = 2;"
                               "UPDATE people SET allergy_list = 'edited in the south' WHERE pid = 3")
    correlate(here)
    assert rows(here / "north.db", "SELECT phone FROM patients WHERE id = 'n1'") == \
        [("+61 400 000 001",)]
    assert rows(here / "south.db", "SELECT allergy_list FROM people WHERE pid = 3") == \
        [("north-allergy-2",)]  # undone: the south may not write it

    # The audit ledger says what crossed, from which record to which, under which weight.
    ledger = Store.open(directory=here / ".patchbay").pairs.ledger(NAME, key="n1")
    assert {(e["source"], e["target"], e["field"]) for e in ledger} >= \
        {("north", "south", "phone"), ("south", "north", "phone")}
    assert all(e["weight"] is not None for e in ledger)


def unshared_values() -> list[str]:
    """The keys and values of the patients held on one side only (the south's keys are
    numbers, which any text holds: not searched), and the edits of the test below."""
    return [*(value for i in range(8, 20) for value in (
        f"n{i}", FIRST[i], LAST[i], f"19{50 + i}-0{1 + i % 9}-1{i % 9}", f"20{i:02d}",
        f"+61 2 9000 00{i:02d}", f"north-allergy-{i}",
        f"S{FIRST[i]}", f"South{LAST[i]}", f"18{i:02d}-02-02", f"90{i:02d}",
        f"+61 3 5000 00{i:02d}", f"south-only-allergy-{i}")),
        "+61 3 5999 9999", "+61 2 9999 9999"]


def test_nothing_of_an_unshared_record_reaches_the_engine_state(here: Path) -> None:
    reports = [correlate(here)]
    execute(here / "south.db", "UPDATE people SET mobile = '+61 3 5999 9999' WHERE pid = 15")
    execute(here / "north.db", "UPDATE patients SET phone = '+61 2 9999 9999' WHERE id = 'n15'")
    reports.append(correlate(here))
    # Every table and column of the state, and its files' bytes: the change cursors too,
    # which remember the rows changed within their overlap window, unshared ones included.
    state = state_text(here / ".patchbay")
    assert "patchbay_cursors" in state and "seen" in state  # the cursors are in what is read
    assert leaked(state + json.dumps(reports, default=str), unshared_values()) == []
    # Shared records' compared fields are not kept either: only the exchanged ones.
    assert leaked(state, ["Lovelace", "1950-01-10"]) == []


def test_a_person_decision_stands_over_later_matches(here: Path) -> None:
    correlate(here)
    store = Store.open(directory=here / ".patchbay")
    [pair] = [p for p in store.pairs.list(NAME, "link") if p.left == "n4"]
    assert store.pairs.decide(NAME, pair.left, pair.right, "rejected", "tester")
    execute(here / "north.db", "UPDATE patients SET phone = 'changed after the rejection' "
                               "WHERE id = 'n4'")
    report = correlate(here)
    assert report["links_dropped"] == 1 and report["pairs"]["rejected"] == 1
    assert rows(here / "south.db", f"SELECT mobile FROM people WHERE pid = {pair.right}") == \
        [("+61 2 9000 0004",)]  # what it got while linked; the later change does not cross

    # A pair the matcher does not link, accepted by a person, is linked from then on.
    store.pairs.save(NAME, [type(pair)("n12", "13", "accepted", decided_by="tester")])
    correlate(here)
    assert rows(here / "south.db", "SELECT allergy_list FROM people WHERE pid = 13") == \
        [("north-allergy-12",)]


def test_a_stranger_sharing_a_postcode_is_not_linked(here: Path) -> None:
    """Most candidate pairs of a small register are true ones; a prior estimated over the
    candidates alone outweighed three disagreeing fields and linked a stranger."""
    execute(here / "south.db", "UPDATE people SET zip = '2008' WHERE pid = 9")  # Ivy's postcode
    report = correlate(here)
    assert report["pairs"].get("link") == 8, report
    pairs = Store.open(directory=here / ".patchbay").pairs.list(NAME, "link")
    assert ("n8", "9") not in {(p.left, p.right) for p in pairs}
    assert rows(here / "south.db", "SELECT mobile FROM people WHERE pid = 9") == \
        [("+61 3 5000 0008",)]  # its own (pid 9 is the 9th south-only person, i = 8)


def test_a_first_read_whole_keeps_no_key_as_its_position(here: Path) -> None:
    """A participant read whole for the first time (as one whose changes come from change
    capture is) keeps where it is in the engine state so that a killed read resumes; in a
    correlation that position would be a record's key, and the last key of the north's
    first page ('n9') is a patient the south does not hold: the read keeps no position
    and, killed, starts over."""
    ctx = Invocation.load(spec(here), NAME, {}).context(*open_state(here / ".patchbay"))
    try:
        correlation = Correlation(ctx)
        north = next(held for held in correlation.held.values() if held.participant == "north")

        def killed() -> None:
            raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):  # stopped once its first page is merged
            correlation._join_by_reading(north, killed)
    finally:
        ctx.systems.close()
    store = Store.open(directory=here / ".patchbay")
    assert store.cursors.get(NAME, "north", "join:patients") == {"after": None}
    assert leaked(state_text(here / ".patchbay"), unshared_values()) == []
