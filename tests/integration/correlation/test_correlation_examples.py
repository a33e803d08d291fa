"""The correlation examples end to end: PostgreSQL and MariaDB for real, local orgs started here.

Each test gets its own PostgreSQL schema and MariaDB database (the examples name plain
tables; the test points the examples' URL variables at them) and drops them afterwards.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import sqlalchemy as sa

from patchbay import run_integration
from patchbay.store import Store
from tests.integration.sync.test_sync_examples import Salesforce, Sql, org

from .leaks import leaked, state_text

EXAMPLES = Path(__file__).parents[3] / "examples"


def generator() -> ModuleType:
    """examples/correlation_hospitals_data.py, the example's synthetic patients."""
    found = importlib.util.spec_from_file_location(
        "correlation_hospitals_data", EXAMPLES / "correlation_hospitals_data.py")
    assert found is not None and found.loader is not None
    module = importlib.util.module_from_spec(found)
    sys.modules[found.name] = module  # its dataclasses look their module up
    found.loader.exec_module(module)
    return module


data = generator()


def copy(example: str, directory: Path) -> Path:
    shutil.copy(EXAMPLES / example, directory / example)
    return directory / example


# -- two hospitals --------------------------------------------------------------------------------

HOSPITALS = "north and south hospitals - patients - correlation"
NORTH_COLUMNS = ["mrn", "given_name", "family_name", "birth_date", "postcode", "address", "phone",
                 "allergies", "gp"]
SOUTH_COLUMNS = ["person_no", "first_name", "surname", "dob", "post_code", "street", "mobile",
                 "allergy_notes", "primary_care"]


@pytest.fixture
def north(pg_url: str) -> Iterator[Sql]:
    database = Sql(pg_url, EXAMPLES / "correlation-hospitals-north.sql")
    yield database
    database.drop()


@pytest.fixture
def south(mysql_url: str) -> Iterator[Sql]:
    database = Sql(mysql_url, EXAMPLES / "correlation-hospitals-south.sql")
    yield database
    database.drop()


def insert(north: Sql, south: Sql, made: Any) -> None:
    with north.engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO patients ({', '.join(NORTH_COLUMNS)}) VALUES "
                             f"({', '.join(':' + c for c in NORTH_COLUMNS)})"), made.north)
    with south.engine.begin() as conn:
        conn.execute(sa.text(f"INSERT INTO persons ({', '.join(SOUTH_COLUMNS)}) VALUES "
                             f"({', '.join(':' + c for c in SOUTH_COLUMNS)})"), made.south)


def exchanged(north: Sql, south: Sql) -> dict[tuple[str, int], tuple[Any, ...]]:
    """(mrn, person_no) -> both sides' phone, allergies and gp, for every pair of rows."""
    n = {r[0]: r[1:] for r in north.rows("SELECT mrn, phone, allergies, gp FROM patients")}
    s = {r[0]: r[1:] for r in south.rows("SELECT person_no, mobile, allergy_notes, primary_care "
                                         "FROM persons")}
    return {(m, p): (*n[m], *s[p]) for m in n for p in s}


@pytest.mark.slow
def test_hospitals_exchange_what_they_know_of_shared_patients_only(
        tmp_path: Path, north: Sql, south: Sql, monkeypatch: pytest.MonkeyPatch) -> None:
    # A thousand patients each: with a few hundred, nearly every pair the blocking keeps is
    # the same patient, and the model learns that agreeing on a name and birth date is enough.
    made = data.patients(1000, shared=0.3, namesakes=20, seed=11)
    insert(north, south, made)
    before_north = north.rows("SELECT * FROM patients ORDER BY mrn")
    before_south = south.rows("SELECT * FROM persons ORDER BY person_no")
    spec, state = copy("correlation-hospitals.yaml", tmp_path), tmp_path / "state"
    monkeypatch.setenv("NORTH_URL", north.url)
    monkeypatch.setenv("SOUTH_URL", south.url)

    def correlate() -> dict[str, Any]:
        report = run_integration(spec, HOSPITALS, state=state)
        assert report["dead"] == 0, report
        return report

    report = correlate()
    store = Store.open(directory=state)
    pairs = store.pairs.all(HOSPITALS)
    links = {(p.left, int(p.right)) for p in pairs if p.status == "link"}
    review = {(p.left, int(p.right)) for p in pairs if p.status == "review"}
    shared, namesakes = set(made.shared), set(made.namesakes)
    # Never a wrong link: every link is a shared patient, none is a pair of namesakes.
    assert links <= shared, sorted(links - shared)
    assert not links & namesakes and not review & namesakes
    assert len(links) >= 0.95 * len(shared), (len(links), len(review), report["pairs"])

    # Each linked patient's phone, allergies and gp are now the same in both registers,
    # each the value the hospital that knew it held (the phone: one of the two forms).
    values = exchanged(north, south)
    by_north = {r["mrn"]: r for r in made.north}
    by_south = {r["person_no"]: r for r in made.south}
    for mrn, person_no in links:
        phone, allergies, gp, mobile, allergy_notes, primary_care = values[(mrn, person_no)]
        assert (phone, allergies, gp) == (mobile, allergy_notes, primary_care)
        assert allergies == by_north[mrn]["allergies"] and gp == by_south[person_no]["primary_care"]
        assert phone in {by_north[mrn]["phone"], by_south[person_no]["mobile"]} - {None}

    # Nothing of anyone else moved, in either register; no record was made.
    unlinked_north = {r[0] for r in before_north} - {m for m, _ in links}
    unlinked_south = {r[0] for r in before_south} - {p for _, p in links}
    assert [r for r in north.rows("SELECT * FROM patients ORDER BY mrn")
            if r[0] in unlinked_north] == [r for r in before_north if r[0] in unlinked_north]
    assert [r for r in south.rows("SELECT * FROM persons ORDER BY person_no")
            if r[0] in unlinked_south] == [r for r in before_south if r[0] in unlinked_south]

    # Nor is anything of them in the engine state (every table, the change cursors too, and
    # its files' bytes): no key, name or phone. A gp or allergy text is common to many
    # patients; the south's gp reaches the state only through a linked patient: not searched
    # when one has it, nor a family name that is in one ("Dr Hughes, ...").
    linked_gps = {by_south[p]["primary_care"] for _, p in links}
    in_linked = " ".join(filter(None, linked_gps)).lower()
    unlinked = [v for r in made.north if r["mrn"] in unlinked_north
                for v in (r["mrn"], r["family_name"], r["phone"])
                if v and v.lower() not in in_linked]
    unlinked += [v for r in made.south if r["person_no"] in unlinked_south
                 for v in (r["mobile"], r["primary_care"]) if v and v not in linked_gps]
    assert leaked(state_text(state), unlinked) == []

    # An edit on either side of a linked pair reaches the other.
    (mrn_a, no_a), (mrn_b, no_b) = sorted(links)[:2]
    north.execute("UPDATE patients SET allergies = 'latex, penicillin, wasps' WHERE mrn = :m",
                  {"m": mrn_a})
    south.execute("UPDATE persons SET primary_care = 'Dr New, Riverside Surgery' "
                  "WHERE person_no = :p", {"p": no_b})
    # An edit of an unlinked patient stays where it was made.
    lone = sorted(unlinked_north)[0]
    north.execute("UPDATE patients SET phone = '+44 7700 999999' WHERE mrn = :m", {"m": lone})
    correlate()
    assert south.rows("SELECT allergy_notes FROM persons WHERE person_no = :p", {"p": no_a}) == \
        [("latex, penicillin, wasps",)]
    assert north.rows("SELECT gp FROM patients WHERE mrn = :m", {"m": mrn_b}) == \
        [("Dr New, Riverside Surgery",)]
    assert leaked(state_text(state), ["+44 7700 999999", lone]) == []
    assert correlate()["delivered"] == 0, "the writes' echoes are not exchanged again"

    # A patient now registered at both (new in each) is linked at the next run.
    newcomer = data.patients(1, shared=1.0, seed=99, start=5000)
    insert(north, south, newcomer)
    [(new_mrn, new_no)] = newcomer.shared
    correlate()
    pair = Store.open(directory=state).pairs.get(HOSPITALS, new_mrn, str(new_no))
    assert pair is not None and pair.status == "link"
    assert north.rows("SELECT gp FROM patients WHERE mrn = :m", {"m": new_mrn}) == \
        [(newcomer.south[0]["primary_care"],)]
    assert south.rows("SELECT allergy_notes FROM persons WHERE person_no = :p", {"p": new_no}) == \
        [(newcomer.north[0]["allergies"],)]


# -- a company's and a partner's orgs -------------------------------------------------------------

PARTNERS = "company and partner orgs - Contact - correlation"


def test_partner_orgs_exchange_the_shared_fields_of_contacts_both_hold(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec, state = copy("correlation-partner-orgs.yaml", tmp_path), tmp_path / "state"
    with org() as company_org, org() as partner_org:
        company, partner = Salesforce(company_org), Salesforce(partner_org)
        monkeypatch.setenv("COMPANY_ORG_URL", company.url)
        monkeypatch.setenv("PARTNER_ORG_URL", partner.url)
        people = [("Ada", "Lovelace"), ("Grace", "Hopper"), ("Alan", "Turing"),
                  ("Edsger", "Dijkstra"), ("Barbara", "Liskov"), ("Donald", "Knuth"),
                  ("Frances", "Allen"), ("John", "Backus"), ("Margaret", "Hamilton"),
                  ("Ken", "Thompson"), ("Dennis", "Ritchie"), ("Niklaus", "Wirth")]
        # The first six work with both companies: each org knows them its own way.
        for i, (first, last) in enumerate(people):
            email = f"{first.lower()}.{last.lower()}@example.org"
            if i < 6:
                company.create("Contact", FirstName=first, LastName=last, Email=email,
                               Phone=f"+1 415 555 01{i:02d}", Title="Engineer")
                partner.create("Contact", FirstName=first.upper() if i % 2 else first,
                               LastName=last, Email=email.upper() if i == 3 else email,
                               MobilePhone=f"+1 650 555 02{i:02d}", Department="Research")
            elif i < 9:
                company.create("Contact", FirstName=first, LastName=last, Email=email,
                               Phone=f"+1 415 555 03{i:02d}", Title=f"Company only {i}")
            else:
                partner.create("Contact", FirstName=first, LastName=last,
                               Email=f"{first.lower()}@partner.example.net",
                               MobilePhone=f"+1 650 555 04{i:02d}", Department=f"Partner only {i}")

        def correlate() -> dict[str, Any]:
            report = run_integration(spec, PARTNERS, state=state)
            assert report["dead"] == 0, report
            return report

        report = correlate()
        assert report["pairs"].get("link") == 6, report
        fields = ("LastName", "Phone", "MobilePhone", "Title", "Department")
        shared = {last for _, last in people[:6]}
        for side in (company, partner):
            rows = side.rows("Contact", *fields)
            assert [r for r in rows if r[0] in shared] == sorted(
                (last, f"+1 415 555 01{i:02d}", f"+1 650 555 02{i:02d}", "Engineer", "Research")
                for i, (_, last) in enumerate(people[:6]))
        # Contacts of one org only: nothing of them reached the other org or the state.
        assert len(company.rows("Contact", "Id")) == 9 and len(partner.rows("Contact", "Id")) == 9
        assert [r for r in company.rows("Contact", *fields) if r[0] not in shared] == [
            (last, f"+1 415 555 03{i:02d}", None, f"Company only {i}", None)
            for i, (_, last) in enumerate(people) if 6 <= i < 9]
        assert [r for r in partner.rows("Contact", *fields) if r[0] not in shared] == sorted(
            (last, None, f"+1 650 555 04{i:02d}", None, f"Partner only {i}")
            for i, (_, last) in enumerate(people) if i >= 9)
        # Nor the state (every table, the change cursors too, and its files' bytes): neither
        # their ids nor their values.
        ids = [i for side in (company, partner) for last, i in side.rows("Contact", "LastName", "Id")
               if last not in shared]
        assert len(ids) == 6
        assert leaked(state_text(state), [*ids, *(v for i in range(6, 12) for v in (
            f"+1 415 555 03{i:02d}", f"+1 650 555 04{i:02d}", f"Company only {i}",
            f"Partner only {i}", people[i][1], f"{people[i][0].lower()}.{people[i][1].lower()}"
            "@example.org", f"{people[i][0].lower()}@partner.example.net"))]) == []

        # An edit in the partner's org reaches the company's for a shared contact.
        [hopper] = [i for last, i in partner.rows("Contact", "LastName", "Id") if last == "Hopper"]
        partner.update("Contact", hopper, Department="Compilers")
        correlate()
        assert ("Hopper", "Compilers") in company.rows("Contact", "LastName", "Department")
