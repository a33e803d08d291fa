"""Synthetic patients for the two hospitals of correlation-hospitals.yaml (no real person).

    patients(count, shared, seed)   the north's rows, the south's rows and which are whom

A share of the patients is treated at both hospitals. The two registers hold them the way
registers do: a typo in a surname, a first name in capitals, a postcode or an address
missing, a street written "Rd" for "Road", a phone in international form on one side and
national form on the other, or held by one hospital only; the allergies are known to the
north, the primary-care contact (gp) to the south. The rest are patients of
one hospital only, among them namesakes: two different people of the same name and birth
date, one in each hospital, living elsewhere with other phones.

Deterministic: the same arguments give the same rows.

    python examples/correlation_hospitals_data.py 1000 > rows.json
"""

from __future__ import annotations

import datetime
import json
import random
import sys
from dataclasses import dataclass, field
from typing import Any

GIVEN = ["Olivia", "Amelia", "Isla", "Ava", "Mia", "Ivy", "Lily", "Isabella", "Rosie", "Sophia",
         "Grace", "Freya", "Willow", "Florence", "Emily", "Ella", "Poppy", "Evie", "Elsie",
         "Charlotte", "Noah", "Oliver", "George", "Arthur", "Muhammad", "Leo", "Harry", "Oscar",
         "Archie", "Henry", "Theodore", "Freddie", "Jack", "Charlie", "Theo", "Thomas", "Alfie",
         "Jacob", "William", "Lucas", "Jude", "Reuben", "Zainab", "Aisha", "Priya", "Mateo",
         "Chloe", "Nadia", "Owen", "Ruth"]
FAMILY = ["Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies",
          "Patel", "Robinson", "Wright", "Thompson", "Evans", "Walker", "White", "Roberts",
          "Green", "Hall", "Thomas", "Clarke", "Jackson", "Wood", "Harris", "Edwards", "Turner",
          "Martin", "Cooper", "Hill", "Ward", "Hughes", "Moore", "Clark", "King", "Harrison",
          "Lewis", "Baker", "Lee", "Allen", "Morris", "Khan", "Scott", "Watson", "Davis",
          "Parker", "James", "Bennett", "Young", "Phillips", "Richardson", "Mitchell",
          "Okonkwo", "Nowak", "Kowalski", "Fernandes", "O'Brien", "McDonald", "Ahmed", "Singh",
          "Murphy", "Kelly"]
STREETS = ["High", "Station", "Church", "Mill", "Park", "Victoria", "Green", "Manor", "Kings",
           "Queens", "New", "Grange", "Chapel", "Albert", "Alexandra", "York", "London",
           "Springfield", "Windsor", "Orchard"]
KINDS = [("Road", "Rd"), ("Street", "St"), ("Lane", "Ln"), ("Avenue", "Ave"), ("Close", "Cl")]
AREAS = ["LS", "M", "B", "BS", "NE", "S", "L", "NG", "CF", "EH", "G", "OX"]
ALLERGIES = ["penicillin", "latex", "peanuts", "shellfish", "aspirin", "ibuprofen", "codeine",
             "sulfonamides", "eggs", "bee stings"]
SURGERIES = ["Riverside Surgery", "Parkview Medical Centre", "The Health Centre",
             "Millbrook Practice", "Church Lane Surgery", "Northgate Medical Practice",
             "Beech House Surgery", "Westfield Health"]


@dataclass
class Person:
    """One person as they are, before a register writes them down."""

    given: str
    family: str
    born: datetime.date
    postcode: str
    street: str
    phone: str  # national digits, 11 of them: 07700 900123
    allergies: str
    gp: str


@dataclass
class Hospitals:
    """The rows of both registers, and which rows are the same person."""

    north: list[dict[str, Any]] = field(default_factory=list)
    south: list[dict[str, Any]] = field(default_factory=list)
    shared: list[tuple[str, int]] = field(default_factory=list)
    """(north mrn, south person_no) of each patient of both hospitals."""
    namesakes: list[tuple[str, int]] = field(default_factory=list)
    """(north mrn, south person_no) of two different people of one name and birth date."""


def person(rng: random.Random, number: int) -> Person:
    kind = rng.choice(KINDS)[0]
    return Person(
        given=rng.choice(GIVEN), family=rng.choice(FAMILY),
        born=datetime.date(1930, 1, 1) + datetime.timedelta(days=rng.randrange(80 * 365)),
        postcode=f"{rng.choice(AREAS)}{rng.randrange(1, 30)} {rng.randrange(1, 10)}"
                 f"{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}{rng.choice('ABDEFGHJLNPQRSTUWXYZ')}",
        street=f"{rng.randrange(1, 200)} {rng.choice(STREETS)} {kind}",
        # Unique per person: the check digits of a real range are not needed to parse.
        phone=f"07{number // 1_000_000 % 10}{number % 1_000_000:06d}{rng.randrange(10, 100)}",
        allergies=", ".join(sorted(rng.sample(ALLERGIES, rng.randrange(1, 3)))),
        gp=f"Dr {rng.choice(FAMILY)}, {rng.choice(SURGERIES)}")


def typo(rng: random.Random, text: str) -> str:
    """One slip of the keyboard: two letters swapped, one dropped or one doubled."""
    if len(text) < 4:
        return text
    i = rng.randrange(1, len(text) - 2)
    slip = rng.randrange(3)
    if slip == 0:
        return text[:i] + text[i + 1] + text[i] + text[i + 2:]
    if slip == 1:
        return text[:i] + text[i + 1:]
    return text[:i] + text[i] + text[i:]


def international(phone: str) -> str:
    return f"+44 {phone[1:5]} {phone[5:]}"


def north_row(mrn: str, p: Person, noisy: random.Random | None = None,
              allergies: bool = True, phone: bool = True) -> dict[str, Any]:
    row = {"mrn": mrn, "given_name": p.given, "family_name": p.family, "birth_date": p.born,
           "postcode": p.postcode, "address": p.street,
           "phone": international(p.phone) if phone else None,
           "allergies": p.allergies if allergies else None, "gp": None}
    if noisy is not None:
        if noisy.random() < 0.15:
            row["family_name"] = typo(noisy, p.family)
        if noisy.random() < 0.05:
            row["postcode"] = None
        if noisy.random() < 0.1:
            row["address"] = None
    return row


def south_row(number: int, p: Person, noisy: random.Random | None = None,
              gp: bool = True, phone: bool = True) -> dict[str, Any]:
    full, short = next(k for k in KINDS if p.street.endswith(k[0]))
    row = {"person_no": number, "first_name": p.given, "surname": p.family, "dob": p.born,
           "post_code": p.postcode.replace(" ", ""), "street": p.street,
           "mobile": p.phone if phone else None, "allergy_notes": None,
           "primary_care": p.gp if gp else None}
    if noisy is not None:
        if noisy.random() < 0.15:
            row["surname"] = typo(noisy, p.family)
        if noisy.random() < 0.1:
            row["first_name"] = p.given.upper()
        if noisy.random() < 0.05:
            row["post_code"] = None
        if noisy.random() < 0.3:
            row["street"] = p.street[: -len(full)] + short
    return row


def patients(count: int, shared: float = 0.3, namesakes: int = 0, seed: int = 7,
             start: int = 0) -> Hospitals:
    """`count` patients in each register, `shared` of them in both, and `namesakes` pairs
    of one-hospital patients who share a name and birth date with one in the other.
    `start` offsets the keys and phones, for patients added later."""
    rng, noise = random.Random(seed), random.Random(seed + 1)
    both = int(count * shared)
    out = Hospitals()
    for i in range(count):
        number = start + i
        mrn, person_no = f"MRN-{number:07d}", number + 1
        if i < both:  # one person, written down by each register its own way
            p = person(rng, 2 * number)
            knows = noise.random()
            out.north.append(north_row(mrn, p, noise, phone=knows > 0.2))
            out.south.append(south_row(person_no, p, noise, phone=knows < 0.8))
            out.shared.append((mrn, person_no))
            continue
        north, south = person(rng, 2 * number), person(rng, 2 * number + 1)
        if i - both < namesakes:  # a namesake of the same birth date: another person
            south.given, south.family, south.born = north.given, north.family, north.born
            out.namesakes.append((mrn, person_no))
        out.north.append(north_row(mrn, north))
        out.south.append(south_row(person_no, south))
    return out


if __name__ == "__main__":
    made = patients(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
    json.dump({"north": made.north, "south": made.south}, sys.stdout, default=str, indent=1)
