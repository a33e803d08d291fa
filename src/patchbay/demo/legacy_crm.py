"""Deterministic generator for the bundled "legacy CRM" demo database.

``build_legacy_crm(path)`` writes a SQLite file with two tables in the legacy
system's own naming, ``accounts`` and ``contacts`` (schema in ``_SCHEMA``). The
data looks real: company names are built from per-country word lists, person
names come from several cultures, cities and phone area codes match the
country, and the timestamps run from 2015 to 2024 (the word lists and other
tables are in ``legacy_crm_data``). Everything comes from one
``random.Random(seed)`` and nothing reads the clock, so the same arguments give
a byte-identical file.

Planted dirt
------------
About 2-3% of the rows have a problem that a migration has to reject or clean.
Each dirty row has exactly one problem. Each kind of dirt has a fixed rate in
basis points (1 bp = 0.01%), and its count is
``round_half_up(table_rows * bp / 10_000)``. The counts therefore depend only on
the row counts, never on the seed; the seed only decides *which* rows are dirty.
The counts for the defaults (2,000 accounts, 5,000 contacts) are in brackets.

``accounts`` (220 bp in total = 2.2% [44]):

- ``company_name_too_long`` (20 bp [4]): ``company_name`` is 257-420
  characters long, because someone pasted notes into the name field. It is
  too long for a VARCHAR(255) destination.
- ``industry_code_unnormalized`` (40 bp [8]): a known code with the wrong case
  or extra whitespace (``'edu '``, ``' FIN'``, ``'Mfg'``). ``upper(trim())`` fixes it.
- ``industry_code_unknown`` (20 bp [4]): not a known code even after
  normalising (``'XXX'``, ``'N/A'``, ``'???'``, ``'99'``, ``'OTH'``, ``'-'``).
- ``country_not_iso2`` (40 bp [8]): not an upper-case ISO 3166-1 alpha-2 code,
  but it still names the account's real country (``'Germany'``,
  ``'Deutschland'``, ``'UK'``, ``'USA'``, ``'de'``, ``'CHE'``).
- ``country_blank`` (20 bp [4]): ``country = ''``.
- ``employees_not_numeric`` (50 bp [10]): free text around the real head
  count (``'approx 50'``, ``'ca. 120'``, ``'50+'``, ``'10-20'``, ``'1,200'``,
  ``'1.200'``, ``'n/a'``, ``'unknown'``).
- ``employees_blank`` (30 bp [6]): ``employees = ''``.

``contacts`` (260 bp in total = 2.6% [130]):

- ``orphan_contact`` (30 bp [15]): ``acct_id`` points at an account that does
  not exist. These are ids in the gaps that deleted accounts left in the id
  sequence, or ids above the highest id if there are not enough gaps.
  ``contacts.acct_id`` is declared ``REFERENCES accounts`` but the constraint
  is not enforced, as is usual in SQLite. ``PRAGMA foreign_key_check``
  reports exactly these rows.
- ``last_name_missing`` (50 bp [25]): ``last_name`` is NULL or ``''``. The
  destination requires it.
- ``email_malformed`` (50 bp [25]): for example ``'john.smith@'``,
  ``'john.smith.acme.de'``, ``'john.smith@@acme.de'``, ``'john.smith@acme'``,
  ``'john.smith@acme,de'``, ``'john.smith @acme.de'`` or
  ``'mailto:john.smith@acme.de'``.
- ``email_duplicate`` (40 bp [20]): a second record of a person who already
  has a clean contact row with a lower ``contact_id`` (falling back to any
  clean row if there is none). It copies that row's first name, last name and
  e-mail. About half of these e-mails differ from the original only in letter
  case. All other e-mails are unique and lower case, so the number of these
  rows equals ``count(*) - count(DISTINCT lower(email))`` over the well-formed
  e-mails.
- ``birthdate_malformed`` (50 bp [25]): not a real ``YYYY-MM-DD`` date
  (``'31/02/1980'``, ``'14/05/1980'``, ``'05/14/1980'``, ``'14.05.1980'``,
  ``'19800514'``, ``'1980-02-30'``, ``'0000-00-00'``).
- ``opt_in_blank`` (40 bp [20]): ``opt_in = ''`` instead of ``'Y'``/``'N'``.
  Missing marketing consent has to be resolved and must not be guessed.

Untidiness that is not counted as dirt, because a legacy system normally has
it and a migration should simply carry it over: NULL ``annual_revenue``
(more often for prospects), NULL ``phone``/``website``/``title``/``birthdate``,
``website`` with ``https://www.``, ``http://www.`` or plain ``www.`` prefixes,
gaps in the ``acct_id`` sequence, and contacts whose country differs from their
account's.

Invariants that hold for every row, dirty or not: ``created_at`` and
``updated_at`` are ``'YYYY-MM-DD HH:MM:SS'`` in 2015-2024 with
``updated_at >= created_at``; a contact is created no earlier than its account,
unless it is an orphan; ``status`` is ``'active'``, ``'inactive'`` or
``'prospect'``; ``opt_in`` is ``'Y'``, ``'N'`` or ``''``; clean company names
are unique.

Run it as ``python -m patchbay.demo.legacy_crm PATH [--accounts N] [--seed S]``.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import math
import os
import random
import sqlite3
import sys
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from types import MappingProxyType

from patchbay.demo.legacy_crm_data import (
    COUNTRIES,
    CULTURES,
    FOLD,
    LANGUAGES,
    NAME_NOTES,
    SLUG_STOPWORDS,
    UNKNOWN_INDUSTRY,
    WEBSITE_PREFIXES,
    Country,
    Culture,
)

__all__ = [
    "ACCOUNT_DIRT_BP",
    "CONTACT_DIRT_BP",
    "COUNTRY_CODES",
    "DIRT_KINDS",
    "INDUSTRY_CODES",
    "LegacyCrmSummary",
    "build_legacy_crm",
    "main",
]

ACCOUNT_DIRT_BP: Mapping[str, int] = MappingProxyType(
    {
        "company_name_too_long": 20,
        "industry_code_unnormalized": 40,
        "industry_code_unknown": 20,
        "country_not_iso2": 40,
        "country_blank": 20,
        "employees_not_numeric": 50,
        "employees_blank": 30,
    }
)
"""Rate of each kind of dirt in ``accounts``, in basis points of the row count."""

CONTACT_DIRT_BP: Mapping[str, int] = MappingProxyType(
    {
        "orphan_contact": 30,
        "last_name_missing": 50,
        "email_malformed": 50,
        "email_duplicate": 40,
        "birthdate_malformed": 50,
        "opt_in_blank": 40,
    }
)
"""Rate of each kind of dirt in ``contacts``, in basis points of the row count."""

DIRT_KINDS: tuple[str, ...] = (*ACCOUNT_DIRT_BP, *CONTACT_DIRT_BP)

INDUSTRY_CODES: tuple[str, ...] = ("EDU", "GOV", "MFG", "FIN", "HLT", "RET", "TEC")
COUNTRY_CODES: tuple[str, ...] = ("DE", "US", "GB", "FR", "AT", "CH", "NL")

_SCHEMA = """
CREATE TABLE accounts (
    acct_id        INTEGER PRIMARY KEY,
    company_name   TEXT,
    industry_code  TEXT,
    country        TEXT,
    city           TEXT,
    employees      TEXT,
    annual_revenue REAL,
    phone          TEXT,
    website        TEXT,
    status         TEXT,
    created_at     TEXT,
    updated_at     TEXT
);
CREATE TABLE contacts (
    contact_id INTEGER PRIMARY KEY,
    acct_id    INTEGER REFERENCES accounts (acct_id),
    first_name TEXT,
    last_name  TEXT,
    email      TEXT,
    phone      TEXT,
    title      TEXT,
    country    TEXT,
    birthdate  TEXT,
    opt_in     TEXT,
    created_at TEXT,
    updated_at TEXT
);
CREATE INDEX idx_accounts_updated_at ON accounts (updated_at);
CREATE INDEX idx_contacts_acct_id ON contacts (acct_id);
"""

_EPOCH = datetime(2015, 1, 1)
_SPAN_SECONDS = int((datetime(2025, 1, 1) - _EPOCH).total_seconds())
_BIRTH_FIRST = date(1955, 1, 1).toordinal()
_BIRTH_LAST = date(2001, 12, 31).toordinal()
_FIRST_ACCT_ID = 1000


@dataclass(frozen=True)
class LegacyCrmSummary:
    """What ``build_legacy_crm`` wrote: row counts and the planted dirt per kind."""

    path: Path
    accounts: int
    contacts: int
    dirty_accounts: int
    dirty_contacts: int
    # A mapping cannot be hashed, so it is left out of the dataclass hash.
    dirty_kinds: Mapping[str, int] = field(hash=False)


_INDUSTRY_WEIGHTS: tuple[int, ...] = (8, 6, 22, 14, 12, 16, 22)  # order of INDUSTRY_CODES
_STATUS: tuple[str, ...] = ("active", "inactive", "prospect")
_STATUS_WEIGHTS: tuple[int, ...] = (60, 15, 25)


# --------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------


def _planned(rows: int, basis_points: int) -> int:
    """Round half up in integers, so the documented counts never depend on float rounding."""
    return (rows * basis_points + 5_000) // 10_000


def _fold(text: str) -> str:
    # NFKD catches any accented letter the table misses, so a name added to
    # the word lists later cannot silently lose letters.
    decomposed = unicodedata.normalize("NFKD", text.lower().translate(FOLD))
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def _ascii_token(text: str) -> str:
    return "".join(ch for ch in _fold(text) if ch.isascii() and ch.isalnum())


def _slug(name: str) -> str:
    folded = _fold(name)
    words = "".join(ch if ch.isascii() and ch.isalnum() else " " for ch in folded).split()
    kept = [w for w in words if w not in SLUG_STOPWORDS] or words or ["company"]
    return "-".join(kept[:2])


def _timestamp(offset_seconds: int) -> str:
    return (_EPOCH + timedelta(seconds=offset_seconds)).isoformat(sep=" ")


def _later(rng: random.Random, start: int) -> int:
    """A moment between ``start`` and the end of 2024, weighted towards ``start``."""
    return start + int((_SPAN_SECONDS - 1 - start) * rng.random() ** 2)


def _digit_groups(rng: random.Random, groups: Sequence[int]) -> str:
    parts: list[str] = []
    for index, size in enumerate(groups):
        # Subscriber numbers never start with 0 or 1 in these plans.
        low = 2 * 10 ** (size - 1) if index == 0 else 0
        parts.append(str(rng.randrange(low, 10**size)).zfill(size))
    return " ".join(parts)


def _landline(rng: random.Random, country: Country, area: str) -> str:
    return f"{country.dial} {area} {_digit_groups(rng, country.landline_groups)}"


def _mobile(rng: random.Random, country: Country) -> str:
    prefix = rng.choice(country.mobile_prefixes)
    return f"{country.dial} {prefix} {_digit_groups(rng, country.mobile_groups)}"


def _weighted_culture(rng: random.Random, country: Country) -> Culture:
    names = [name for name, _ in country.cultures]
    weights = [weight for _, weight in country.cultures]
    return CULTURES[rng.choices(names, weights=weights)[0]]


# --------------------------------------------------------------------------
# Accounts
# --------------------------------------------------------------------------


@dataclass(slots=True)
class _Account:
    acct_id: int
    country_code: str
    city: str
    area: str
    industry: str
    employees: int
    name: str
    domain: str
    email_pattern: int
    status: str
    created: int
    updated: int
    revenue: float | None
    phone: str | None
    website: str | None


def _company_name(rng: random.Random, country: Country, industry: str, city: str) -> str:
    language = LANGUAGES[country.language]
    if industry == "EDU":
        templates = language.edu_templates
    elif industry == "GOV":
        templates = language.gov_templates
    else:
        templates = language.private_templates
    surnames = CULTURES[language.culture].last
    surname = rng.choice(surnames)
    partner = rng.choice(surnames)
    while partner == surname:
        partner = rng.choice(surnames)
    return rng.choice(templates).format(
        s=surname,
        s2=partner,
        c=rng.choice(language.coined),
        w=rng.choice(language.sectors.get(industry, ("",))),
        x=rng.choice(country.legal_forms),
        city=city,
        d=rng.choice(language.departments),
    )


def _unique_company_name(
    rng: random.Random, country: Country, industry: str, city: str, taken: set[str]
) -> str:
    name = ""
    for _ in range(40):
        name = _company_name(rng, country, industry, city)
        if name not in taken:
            return name
    # Only reachable with very large account counts; a branch suffix is how
    # real CRMs end up disambiguating identical names anyway.
    suffix = 2
    while f"{name} ({city} {suffix})" in taken:
        suffix += 1
    return f"{name} ({city} {suffix})"


def _make_accounts(rng: random.Random, count: int) -> tuple[list[_Account], list[int]]:
    """Clean accounts in id order, plus the ids skipped by the sequence (deleted accounts)."""
    country_codes = list(COUNTRIES)
    country_weights = [c.weight for c in COUNTRIES.values()]
    created = sorted(rng.randrange(_SPAN_SECONDS) for _ in range(count))
    taken: set[str] = set()
    accounts: list[_Account] = []
    gaps: list[int] = []
    next_id = _FIRST_ACCT_ID
    for created_at in created:
        if rng.random() < 0.08:
            skipped = rng.randint(1, 3)
            gaps.extend(range(next_id, next_id + skipped))
            next_id += skipped
        code = rng.choices(country_codes, weights=country_weights)[0]
        country = COUNTRIES[code]
        city, area = rng.choice(country.cities)
        industry = rng.choices(INDUSTRY_CODES, weights=_INDUSTRY_WEIGHTS)[0]
        employees = max(1, int(10 ** rng.uniform(0.3, 4.7)))
        name = _unique_company_name(rng, country, industry, city, taken)
        taken.add(name)
        status = rng.choices(_STATUS, weights=_STATUS_WEIGHTS)[0]
        null_revenue = rng.random() < (0.35 if status == "prospect" else 0.08)
        revenue = None
        if not null_revenue:
            revenue = float(round(employees * rng.uniform(60_000, 300_000), -3))
        domain = f"{_slug(name)}.{country.tld}"
        website = None if rng.random() < 0.12 else rng.choice(WEBSITE_PREFIXES) + domain
        phone = None if rng.random() < 0.03 else _landline(rng, country, area)
        updated_at = created_at if rng.random() < 0.2 else _later(rng, created_at)
        accounts.append(
            _Account(
                acct_id=next_id,
                country_code=code,
                city=city,
                area=area,
                industry=industry,
                employees=employees,
                name=name,
                domain=domain,
                email_pattern=rng.randrange(6),
                status=status,
                created=created_at,
                updated=updated_at,
                revenue=revenue,
                phone=phone,
                website=website,
            )
        )
        next_id += 1
    return accounts, gaps


def _too_long_name(rng: random.Random, name: str) -> str:
    target = rng.randint(256, 400)
    text = name
    for note in rng.sample(NAME_NOTES, len(NAME_NOTES)):
        if len(text) > target:
            break
        text += " - " + note
    return text[: target + 20].rstrip()


def _dirty_employees(rng: random.Random, employees: int) -> str:
    # People who type "approx" round to two significant digits.
    rough = round(employees, 2 - len(str(employees))) or employees
    low = max(1, employees // 10 * 10)
    options = [
        f"approx {rough}",
        f"ca. {rough}",
        f"{low}+",
        f"{low}-{low * 2}",
        "n/a",
        "unknown",
    ]
    if employees >= 1000:
        options += [f"{employees:,}", f"{employees:,}".replace(",", ".")]
    return rng.choice(options)


def _dirty_industry(rng: random.Random, code: str) -> str:
    return rng.choice((code.lower(), code.lower() + " ", " " + code, code.capitalize(), code + " "))


def _account_rows(
    rng: random.Random, accounts: Sequence[_Account]
) -> tuple[list[tuple[object, ...]], dict[str, int]]:
    kinds = _assign_dirt(rng, len(accounts), ACCOUNT_DIRT_BP)
    rows: list[tuple[object, ...]] = []
    for index, acct in enumerate(accounts):
        kind = kinds.get(index)
        name = acct.name
        industry = acct.industry
        country = acct.country_code
        employees = str(acct.employees)
        if kind == "company_name_too_long":
            name = _too_long_name(rng, name)
        elif kind == "industry_code_unnormalized":
            industry = _dirty_industry(rng, industry)
        elif kind == "industry_code_unknown":
            industry = rng.choice(UNKNOWN_INDUSTRY)
        elif kind == "country_not_iso2":
            country = rng.choice(COUNTRIES[country].dirty_names)
        elif kind == "country_blank":
            country = ""
        elif kind == "employees_not_numeric":
            employees = _dirty_employees(rng, acct.employees)
        elif kind == "employees_blank":
            employees = ""
        rows.append(
            (
                acct.acct_id,
                name,
                industry,
                country,
                acct.city,
                employees,
                acct.revenue,
                acct.phone,
                acct.website,
                acct.status,
                _timestamp(acct.created),
                _timestamp(acct.updated),
            )
        )
    return rows, _count_kinds(kinds, ACCOUNT_DIRT_BP)


# --------------------------------------------------------------------------
# Contacts
# --------------------------------------------------------------------------


@dataclass(slots=True)
class _Contact:
    acct_id: int
    first_name: str
    last_name: str | None
    email: str
    phone: str | None
    title: str | None
    country: str
    birthdate: str | None
    opt_in: str
    created: int
    updated: int


def _email_local(pattern: int, first: str, last: str) -> str:
    given, family = _ascii_token(first), _ascii_token(last)
    return (
        f"{given}.{family}",
        f"{given[:1]}.{family}",
        f"{given}{family}",
        f"{given}_{family}",
        f"{given[:1]}{family}",
        f"{family}.{given}",
    )[pattern]


def _unique_email(local: str, domain: str, taken: set[str]) -> str:
    email = f"{local}@{domain}"
    suffix = 2
    while email in taken:
        email = f"{local}{suffix}@{domain}"
        suffix += 1
    taken.add(email)
    return email


def _make_contacts(
    rng: random.Random, accounts: Sequence[_Account], count: int, taken_emails: set[str]
) -> list[_Contact]:
    """Clean contacts sorted by creation time, as an auto-increment id would order them."""
    if not accounts or count == 0:
        return []
    # Bigger companies have more people in the CRM; prospects have fewer.
    weights = [
        (1.0 + math.log10(a.employees)) * (0.5 if a.status == "prospect" else 1.0) for a in accounts
    ]
    owners = rng.choices(accounts, weights=weights, k=count)
    other_codes = list(COUNTRIES)
    contacts: list[_Contact] = []
    for acct in owners:
        code = acct.country_code
        if rng.random() < 0.12:
            code = rng.choice(other_codes)
        country = COUNTRIES[code]
        culture = _weighted_culture(rng, country)
        first = rng.choice(culture.first)
        last = rng.choice(culture.last)
        local = _email_local(acct.email_pattern, first, last)
        email = _unique_email(local, acct.domain, taken_emails)
        roll = rng.random()
        if roll < 0.55:
            area = acct.area if code == acct.country_code else rng.choice(country.cities)[1]
            phone: str | None = _landline(rng, country, area)
        elif roll < 0.85:
            phone = _mobile(rng, country)
        else:
            phone = None
        title_roll = rng.random()
        if title_roll < 0.08:
            title = None
        elif title_roll < 0.45:
            title = rng.choice(LANGUAGES["en"].titles)
        else:
            title = rng.choice(LANGUAGES[country.language].titles)
        birthdate = None
        if rng.random() >= 0.35:
            birthdate = date.fromordinal(rng.randint(_BIRTH_FIRST, _BIRTH_LAST)).isoformat()
        created = _later(rng, acct.created)
        updated = created if rng.random() < 0.25 else _later(rng, created)
        contacts.append(
            _Contact(
                acct_id=acct.acct_id,
                first_name=first,
                last_name=last,
                email=email,
                phone=phone,
                title=title,
                country=code,
                birthdate=birthdate,
                opt_in="Y" if rng.random() < 0.4 else "N",
                created=created,
                updated=updated,
            )
        )
    contacts.sort(key=lambda c: c.created)
    return contacts


def _malformed_email(rng: random.Random, email: str) -> str:
    local, domain = email.split("@", 1)
    return rng.choice(
        (
            f"{local}@",
            f"{local}.{domain}",
            f"{local}@@{domain}",
            f"{local}@{domain.split('.', 1)[0]}",
            f"{local}@{domain.replace('.', ',')}",
            f"{local} @{domain}",
            f"mailto:{email}",
        )
    )


def _dirty_birthdate(rng: random.Random, birthdate: str | None) -> str:
    if birthdate is None:
        birthdate = date.fromordinal(rng.randint(_BIRTH_FIRST, _BIRTH_LAST)).isoformat()
    y, m, d = birthdate.split("-")
    return rng.choice(
        (
            f"{d}/{m}/{y}",
            f"{m}/{d}/{y}",
            f"{d}.{m}.{y}",
            f"{y}{m}{d}",
            f"31/02/{y}",
            f"{y}-02-{rng.choice(('30', '31'))}",
            "0000-00-00",
        )
    )


def _apply_contact_dirt(
    rng: random.Random, contacts: list[_Contact], missing_ids: Sequence[int]
) -> dict[str, int]:
    kinds = _assign_dirt(rng, len(contacts), CONTACT_DIRT_BP)
    clean = [i for i in range(len(contacts)) if i not in kinds]
    orphan_ids = iter(missing_ids)
    for index in sorted(kinds):
        kind = kinds[index]
        contact = contacts[index]
        if kind == "orphan_contact":
            contact.acct_id = next(orphan_ids)
        elif kind == "last_name_missing":
            contact.last_name = rng.choice((None, ""))
        elif kind == "email_malformed":
            contact.email = _malformed_email(rng, contact.email)
        elif kind == "email_duplicate":
            earlier = bisect.bisect_left(clean, index)
            source = contacts[clean[rng.randrange(earlier)] if earlier else rng.choice(clean)]
            contact.first_name = source.first_name
            contact.last_name = source.last_name
            local, domain = source.email.split("@", 1)
            contact.email = source.email if rng.random() < 0.5 else f"{local.title()}@{domain}"
        elif kind == "birthdate_malformed":
            contact.birthdate = _dirty_birthdate(rng, contact.birthdate)
        elif kind == "opt_in_blank":
            contact.opt_in = ""
    return _count_kinds(kinds, CONTACT_DIRT_BP)


def _missing_account_ids(
    rng: random.Random, accounts: Sequence[_Account], gaps: Sequence[int], needed: int
) -> list[int]:
    if needed <= len(gaps):
        return rng.sample(list(gaps), needed)
    highest = accounts[-1].acct_id if accounts else _FIRST_ACCT_ID - 1
    beyond = [highest + 1 + k for k in range(needed - len(gaps))]
    picked = [*gaps, *beyond]
    rng.shuffle(picked)
    return picked


def _contact_rows(contacts: Sequence[_Contact]) -> list[tuple[object, ...]]:
    return [
        (
            contact_id,
            c.acct_id,
            c.first_name,
            c.last_name,
            c.email,
            c.phone,
            c.title,
            c.country,
            c.birthdate,
            c.opt_in,
            _timestamp(c.created),
            _timestamp(c.updated),
        )
        for contact_id, c in enumerate(contacts, start=1)
    ]


# --------------------------------------------------------------------------
# Dirt bookkeeping
# --------------------------------------------------------------------------


def _assign_dirt(rng: random.Random, rows: int, rates: Mapping[str, int]) -> dict[int, str]:
    """Map row index -> dirt kind, with exactly the planned number of rows per kind."""
    planned = [(kind, _planned(rows, bp)) for kind, bp in rates.items()]
    picked = rng.sample(range(rows), sum(n for _, n in planned))
    kinds: dict[int, str] = {}
    start = 0
    for kind, n in planned:
        for index in picked[start : start + n]:
            kinds[index] = kind
        start += n
    return kinds


def _count_kinds(kinds: Mapping[int, str], rates: Mapping[str, int]) -> dict[str, int]:
    counts = dict.fromkeys(rates, 0)
    for kind in kinds.values():
        counts[kind] += 1
    return counts


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def build_legacy_crm(
    path: str | Path,
    *,
    accounts: int = 2000,
    contacts_per_account: float = 2.5,
    seed: int = 7,
) -> LegacyCrmSummary:
    """Write the legacy CRM demo database to ``path``, replacing any file there.

    ``contacts_per_account`` is an average: the table gets
    ``accounts * contacts_per_account`` contacts (rounded half up), spread
    unevenly over the accounts, with bigger companies getting more. The dirt is
    described in the module docstring.
    """
    if accounts < 0:
        raise ValueError(f"accounts must be >= 0, got {accounts}")
    if not math.isfinite(contacts_per_account) or contacts_per_account < 0:
        raise ValueError(
            f"contacts_per_account must be a finite number >= 0, got {contacts_per_account}"
        )
    target = Path(path)
    rng = random.Random(seed)

    account_objs, gaps = _make_accounts(rng, accounts)
    account_rows, account_dirt = _account_rows(rng, account_objs)

    contact_count = math.floor(accounts * contacts_per_account + 0.5) if accounts else 0
    contacts = _make_contacts(rng, account_objs, contact_count, set())
    orphans_needed = _planned(len(contacts), CONTACT_DIRT_BP["orphan_contact"])
    missing_ids = _missing_account_ids(rng, account_objs, gaps, orphans_needed)
    contact_dirt = _apply_contact_dirt(rng, contacts, missing_ids)
    contact_rows = _contact_rows(contacts)

    _write_database(target, account_rows, contact_rows)
    return LegacyCrmSummary(
        path=target,
        accounts=len(account_rows),
        contacts=len(contact_rows),
        dirty_accounts=sum(account_dirt.values()),
        dirty_contacts=sum(contact_dirt.values()),
        dirty_kinds=MappingProxyType({**account_dirt, **contact_dirt}),
    )


def _write_database(
    target: Path,
    account_rows: Sequence[tuple[object, ...]],
    contact_rows: Sequence[tuple[object, ...]],
) -> None:
    # Building next to the target and renaming means a reader never sees a
    # half-written demo database, and a failed build leaves the old one intact.
    # Not mkstemp: its 0600 mode would make the shared demo file unreadable to
    # other users, while SQLite creates files with the usual umask-based mode.
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        conn = sqlite3.connect(tmp, isolation_level=None)
        try:
            # No journal is needed: on failure the temporary file is discarded.
            conn.execute("PRAGMA journal_mode = OFF")
            conn.execute("PRAGMA synchronous = OFF")
            conn.execute("BEGIN")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.executemany(
                "INSERT INTO accounts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", account_rows
            )
            conn.executemany(
                "INSERT INTO contacts VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", contact_rows
            )
            conn.execute("COMMIT")
        finally:
            conn.close()
        # A journal or WAL left over from an earlier database at this path
        # would be replayed onto the new file by the next reader.
        for sidecar in ("-journal", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(f"{target}{sidecar}")
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _format_summary(summary: LegacyCrmSummary) -> str:
    width = max(len(kind) for kind in summary.dirty_kinds)
    lines = [
        f"wrote {summary.path}",
        f"  accounts: {summary.accounts} ({summary.dirty_accounts} dirty)",
        f"  contacts: {summary.contacts} ({summary.dirty_contacts} dirty)",
        "  dirt:",
    ]
    lines += [f"    {kind:<{width}}  {n}" for kind, n in summary.dirty_kinds.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m patchbay.demo.legacy_crm",
        description="Build the deterministic legacy CRM demo database (SQLite).",
    )
    parser.add_argument("path", type=Path, help="SQLite file to write (overwritten)")
    parser.add_argument(
        "--accounts", type=int, default=2000, help="number of accounts (default: 2000)"
    )
    parser.add_argument("--seed", type=int, default=7, help="random seed (default: 7)")
    parser.add_argument(
        "--contacts-per-account",
        type=float,
        default=2.5,
        help="average contacts per account (default: 2.5)",
    )
    args = parser.parse_args(argv)
    try:
        summary = build_legacy_crm(
            args.path,
            accounts=args.accounts,
            contacts_per_account=args.contacts_per_account,
            seed=args.seed,
        )
    except ValueError as exc:
        parser.error(str(exc))
    print(_format_summary(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
