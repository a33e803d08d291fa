"""Tests for the bundled legacy CRM demo database generator.

The dirt checks find dirty rows with their own SQL rather than asking the
generator which rows it touched. That way the summary counts are checked
against what a migration will actually see in the data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from patchbay.demo.legacy_crm import (
    ACCOUNT_DIRT_BP,
    CONTACT_DIRT_BP,
    COUNTRY_CODES,
    DIRT_KINDS,
    INDUSTRY_CODES,
    LegacyCrmSummary,
    build_legacy_crm,
    main,
)

_INDUSTRIES = "(" + ", ".join(f"'{code}'" for code in INDUSTRY_CODES) + ")"
_COUNTRIES = "(" + ", ".join(f"'{code}'" for code in COUNTRY_CODES) + ")"
_MALFORMED_EMAIL = (
    "(email NOT GLOB '?*@?*.?*' OR email GLOB '*@*@*' OR email GLOB '*[^A-Za-z0-9._@+-]*')"
)

# Each query returns the primary keys of the rows that show one kind of dirt.
_DETECTORS: dict[str, str] = {
    "company_name_too_long": "SELECT acct_id FROM accounts WHERE length(company_name) > 255",
    "industry_code_unnormalized": (
        f"SELECT acct_id FROM accounts WHERE industry_code NOT IN {_INDUSTRIES}"
        f" AND upper(trim(industry_code)) IN {_INDUSTRIES}"
    ),
    "industry_code_unknown": (
        "SELECT acct_id FROM accounts"
        f" WHERE coalesce(upper(trim(industry_code)), '') NOT IN {_INDUSTRIES}"
    ),
    "country_not_iso2": (
        f"SELECT acct_id FROM accounts WHERE country <> '' AND country NOT IN {_COUNTRIES}"
    ),
    "country_blank": "SELECT acct_id FROM accounts WHERE country = ''",
    "employees_not_numeric": (
        "SELECT acct_id FROM accounts WHERE employees <> '' AND employees GLOB '*[^0-9]*'"
    ),
    "employees_blank": "SELECT acct_id FROM accounts WHERE employees = ''",
    "orphan_contact": (
        "SELECT c.contact_id FROM contacts AS c"
        " LEFT JOIN accounts AS a ON a.acct_id = c.acct_id WHERE a.acct_id IS NULL"
    ),
    "last_name_missing": (
        "SELECT contact_id FROM contacts WHERE last_name IS NULL OR trim(last_name) = ''"
    ),
    "email_malformed": f"SELECT contact_id FROM contacts WHERE {_MALFORMED_EMAIL}",
    "email_duplicate": (
        "SELECT contact_id FROM ("
        "  SELECT contact_id, row_number() OVER ("
        "    PARTITION BY lower(email) ORDER BY contact_id) AS seen"
        f"  FROM contacts WHERE NOT {_MALFORMED_EMAIL}"
        ") WHERE seen > 1"
    ),
    # date() keeps an impossible day such as '1980-02-30' as it is, but date
    # arithmetic normalises it, so a difference means "not a real date".
    "birthdate_malformed": (
        "SELECT contact_id FROM contacts WHERE birthdate IS NOT NULL"
        " AND coalesce(date(birthdate, '+0 days') <> birthdate, 1)"
    ),
    "opt_in_blank": "SELECT contact_id FROM contacts WHERE opt_in = ''",
}

_DEFAULT_COUNTS = {
    "company_name_too_long": 4,
    "industry_code_unnormalized": 8,
    "industry_code_unknown": 4,
    "country_not_iso2": 8,
    "country_blank": 4,
    "employees_not_numeric": 10,
    "employees_blank": 6,
    "orphan_contact": 15,
    "last_name_missing": 25,
    "email_malformed": 25,
    "email_duplicate": 20,
    "birthdate_malformed": 25,
    "opt_in_blank": 20,
}

# The default build plus an odd-sized one with another seed, so the detectors
# are not tuned to a single data set.
# (accounts, contacts_per_account, seed)
_CONFIGS: dict[str, tuple[int, float, int]] = {
    "default": (2000, 2.5, 7),
    "odd": (777, 3.3, 123),
}


@dataclasses.dataclass(frozen=True)
class Built:
    summary: LegacyCrmSummary
    conn: sqlite3.Connection


@pytest.fixture(scope="module", params=list(_CONFIGS), ids=list(_CONFIGS))
def built(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Built]:
    path = tmp_path_factory.mktemp("crm") / "legacy_crm.sqlite"
    accounts, per_account, seed = _CONFIGS[request.param]
    summary = build_legacy_crm(path, accounts=accounts, contacts_per_account=per_account, seed=seed)
    conn = sqlite3.connect(path)
    yield Built(summary, conn)
    conn.close()


@pytest.fixture(scope="module")
def default_build(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Built]:
    path = tmp_path_factory.mktemp("crm_default") / "legacy_crm.sqlite"
    summary = build_legacy_crm(path)
    conn = sqlite3.connect(path)
    yield Built(summary, conn)
    conn.close()


def _scalar(conn: sqlite3.Connection, sql: str) -> int:
    value = conn.execute(sql).fetchone()[0]
    assert isinstance(value, int)
    return value


def _ids(conn: sqlite3.Connection, sql: str) -> list[int]:
    return [row[0] for row in conn.execute(sql)]


def _dump(path: Path) -> dict[str, list[tuple[object, ...]]]:
    conn = sqlite3.connect(path)
    try:
        return {
            "accounts": conn.execute("SELECT * FROM accounts ORDER BY acct_id").fetchall(),
            "contacts": conn.execute("SELECT * FROM contacts ORDER BY contact_id").fetchall(),
        }
    finally:
        conn.close()


# --- counts -------------------------------------------------------------------


def test_default_row_counts(default_build: Built) -> None:
    summary, conn = default_build.summary, default_build.conn
    assert summary.accounts == 2000
    assert summary.contacts == 5000
    assert _scalar(conn, "SELECT count(*) FROM accounts") == 2000
    assert _scalar(conn, "SELECT count(*) FROM contacts") == 5000


def test_default_dirt_counts_match_module_docstring(default_build: Built) -> None:
    summary = default_build.summary
    assert dict(summary.dirty_kinds) == _DEFAULT_COUNTS
    assert summary.dirty_accounts == 44
    assert summary.dirty_contacts == 130


def test_summary_totals_add_up(built: Built) -> None:
    summary = built.summary
    assert tuple(summary.dirty_kinds) == DIRT_KINDS
    assert summary.dirty_accounts == sum(summary.dirty_kinds[k] for k in ACCOUNT_DIRT_BP)
    assert summary.dirty_contacts == sum(summary.dirty_kinds[k] for k in CONTACT_DIRT_BP)
    assert summary.accounts == _scalar(built.conn, "SELECT count(*) FROM accounts")
    assert summary.contacts == _scalar(built.conn, "SELECT count(*) FROM contacts")


def test_counts_follow_documented_rates(built: Built) -> None:
    summary = built.summary
    for kind, bp in ACCOUNT_DIRT_BP.items():
        assert summary.dirty_kinds[kind] == (summary.accounts * bp + 5000) // 10000, kind
    for kind, bp in CONTACT_DIRT_BP.items():
        assert summary.dirty_kinds[kind] == (summary.contacts * bp + 5000) // 10000, kind


def test_dirty_share_is_two_to_three_percent(built: Built) -> None:
    summary = built.summary
    assert 0.02 <= summary.dirty_accounts / summary.accounts <= 0.03
    assert 0.02 <= summary.dirty_contacts / summary.contacts <= 0.03


def test_contacts_per_account_sets_total(tmp_path: Path) -> None:
    summary = build_legacy_crm(tmp_path / "crm.sqlite", accounts=300, contacts_per_account=1.5)
    assert summary.contacts == 450


# --- dirt, detected independently -----------------------------------------------


def test_every_kind_has_a_detector() -> None:
    assert set(_DETECTORS) == set(DIRT_KINDS)


@pytest.mark.parametrize("kind", DIRT_KINDS)
def test_dirt_kind_occurs_as_often_as_reported(built: Built, kind: str) -> None:
    found = _ids(built.conn, _DETECTORS[kind])
    assert len(found) == built.summary.dirty_kinds[kind]
    assert len(found) > 0


@pytest.mark.parametrize(
    ("table", "kinds"), [("accounts", ACCOUNT_DIRT_BP), ("contacts", CONTACT_DIRT_BP)]
)
def test_each_dirty_row_has_exactly_one_kind(
    built: Built, table: str, kinds: dict[str, int]
) -> None:
    flagged: list[int] = []
    for kind in kinds:
        flagged += _ids(built.conn, _DETECTORS[kind])
    assert len(flagged) == len(set(flagged)), "a row carries more than one kind of dirt"
    expected = built.summary.dirty_accounts if table == "accounts" else built.summary.dirty_contacts
    assert len(flagged) == expected


def test_foreign_keys_valid_except_planted_orphans(built: Built) -> None:
    violations = built.conn.execute("PRAGMA foreign_key_check").fetchall()
    assert {row[0] for row in violations} == {"contacts"}
    assert {row[2] for row in violations} == {"accounts"}
    violating_ids = sorted(row[1] for row in violations)
    assert violating_ids == sorted(_ids(built.conn, _DETECTORS["orphan_contact"]))
    assert len(violating_ids) == built.summary.dirty_kinds["orphan_contact"]


def test_orphans_point_at_distinct_missing_accounts(built: Built) -> None:
    missing = _ids(
        built.conn,
        "SELECT c.acct_id FROM contacts AS c"
        " LEFT JOIN accounts AS a ON a.acct_id = c.acct_id WHERE a.acct_id IS NULL",
    )
    assert len(missing) == len(set(missing))


def test_clean_values_are_canonical(built: Built) -> None:
    conn = built.conn
    assert _scalar(conn, "SELECT count(*) FROM accounts WHERE employees GLOB '0*'") == 0
    assert _scalar(conn, "SELECT count(*) FROM accounts WHERE company_name IS NULL") == 0
    assert _scalar(conn, f"SELECT count(*) FROM contacts WHERE country NOT IN {_COUNTRIES}") == 0
    assert _scalar(conn, "SELECT count(*) FROM contacts WHERE first_name IS NULL") == 0
    # Only the case-variant duplicates carry upper-case letters in an e-mail.
    upper = _scalar(
        conn,
        f"SELECT count(*) FROM contacts WHERE email <> lower(email) AND NOT {_MALFORMED_EMAIL}",
    )
    assert upper <= built.summary.dirty_kinds["email_duplicate"]


def test_clean_company_names_are_unique(built: Built) -> None:
    duplicates = _scalar(
        built.conn,
        "SELECT count(*) - count(DISTINCT company_name) FROM accounts",
    )
    assert duplicates == 0


# --- invariants that hold for every row -------------------------------------------


@pytest.mark.parametrize("table", ["accounts", "contacts"])
def test_timestamps_are_well_formed_and_ordered(built: Built, table: str) -> None:
    conn = built.conn
    bad_format = _scalar(
        conn,
        f"SELECT count(*) FROM {table} WHERE"
        " coalesce(datetime(created_at, '+0 seconds') <> created_at, 1)"
        " OR coalesce(datetime(updated_at, '+0 seconds') <> updated_at, 1)",
    )
    assert bad_format == 0
    assert _scalar(conn, f"SELECT count(*) FROM {table} WHERE updated_at < created_at") == 0
    lo, hi = conn.execute(f"SELECT min(created_at), max(updated_at) FROM {table}").fetchone()
    assert lo >= "2015-01-01 00:00:00"
    assert hi <= "2024-12-31 23:59:59"


def test_contacts_are_created_after_their_account(built: Built) -> None:
    early = _scalar(
        built.conn,
        "SELECT count(*) FROM contacts AS c JOIN accounts AS a ON a.acct_id = c.acct_id"
        " WHERE c.created_at < a.created_at",
    )
    assert early == 0


def test_enumerated_columns(built: Built) -> None:
    statuses = {r[0] for r in built.conn.execute("SELECT DISTINCT status FROM accounts")}
    assert statuses == {"active", "inactive", "prospect"}
    opt_ins = {r[0] for r in built.conn.execute("SELECT DISTINCT opt_in FROM contacts")}
    assert opt_ins == {"Y", "N", ""}


def test_schema_and_indexes(default_build: Built) -> None:
    conn = default_build.conn
    account_columns = [r[1] for r in conn.execute("PRAGMA table_info(accounts)")]
    assert account_columns == [
        "acct_id",
        "company_name",
        "industry_code",
        "country",
        "city",
        "employees",
        "annual_revenue",
        "phone",
        "website",
        "status",
        "created_at",
        "updated_at",
    ]
    contact_columns = [r[1] for r in conn.execute("PRAGMA table_info(contacts)")]
    assert contact_columns == [
        "contact_id",
        "acct_id",
        "first_name",
        "last_name",
        "email",
        "phone",
        "title",
        "country",
        "birthdate",
        "opt_in",
        "created_at",
        "updated_at",
    ]
    indexed = {
        (table, info[2])
        for table in ("accounts", "contacts")
        for index in conn.execute(f"PRAGMA index_list({table})")
        for info in conn.execute(f"PRAGMA index_info({index[1]})")
    }
    assert indexed == {("accounts", "updated_at"), ("contacts", "acct_id")}
    revenue_types = {
        r[0] for r in conn.execute("SELECT DISTINCT typeof(annual_revenue) FROM accounts")
    }
    assert revenue_types == {"real", "null"}


# --- determinism ----------------------------------------------------------------


def test_same_seed_gives_identical_database(tmp_path: Path) -> None:
    first = build_legacy_crm(tmp_path / "a.sqlite", seed=11)
    second = build_legacy_crm(tmp_path / "b.sqlite", seed=11)
    assert _dump(first.path) == _dump(second.path)
    assert first.path.read_bytes() == second.path.read_bytes()
    assert dataclasses.replace(first, path=second.path) == second


# The rows the default build writes, as a digest: moving the generator's code or its data
# tables must not change one value. (Rows, not file bytes: the file's layout is SQLite's.)
_DEFAULT_ROWS_SHA256 = "3bba45172b1abcfe6bab549427a1dac6a8ee808450004b68f88a17362a09f5b9"


def test_default_build_writes_the_recorded_rows(default_build: Built) -> None:
    digest = hashlib.sha256()
    for table, rows in _dump(default_build.summary.path).items():
        assert table in ("accounts", "contacts")
        for row in rows:
            digest.update(json.dumps(row, ensure_ascii=False).encode() + b"\n")
    assert digest.hexdigest() == _DEFAULT_ROWS_SHA256


def test_different_seed_gives_different_data_but_same_dirt_counts(tmp_path: Path) -> None:
    first = build_legacy_crm(tmp_path / "a.sqlite", seed=1)
    second = build_legacy_crm(tmp_path / "b.sqlite", seed=2)
    first_rows, second_rows = _dump(first.path), _dump(second.path)
    assert first_rows["accounts"] != second_rows["accounts"]
    assert first_rows["contacts"] != second_rows["contacts"]
    assert dict(first.dirty_kinds) == dict(second.dirty_kinds)


# --- file handling and arguments ---------------------------------------------------


def test_overwrites_existing_file_and_stale_journal(tmp_path: Path) -> None:
    path = tmp_path / "crm.sqlite"
    path.write_bytes(b"not a database")
    Path(f"{path}-journal").write_bytes(b"stale journal")
    summary = build_legacy_crm(path, accounts=50)
    assert summary.path == path
    assert not Path(f"{path}-journal").exists()
    conn = sqlite3.connect(path)
    try:
        assert _scalar(conn, "SELECT count(*) FROM accounts") == 50
    finally:
        conn.close()
    assert [p.name for p in tmp_path.iterdir()] == ["crm.sqlite"]


def test_zero_accounts_builds_empty_tables(tmp_path: Path) -> None:
    summary = build_legacy_crm(tmp_path / "empty.sqlite", accounts=0)
    assert (summary.accounts, summary.contacts) == (0, 0)
    assert set(summary.dirty_kinds.values()) == {0}
    assert _dump(summary.path) == {"accounts": [], "contacts": []}


@pytest.mark.parametrize("accounts", [1, 7, 60])
def test_tiny_builds_stay_consistent(tmp_path: Path, accounts: int) -> None:
    summary = build_legacy_crm(tmp_path / "tiny.sqlite", accounts=accounts)
    conn = sqlite3.connect(summary.path)
    try:
        for kind in DIRT_KINDS:
            assert len(_ids(conn, _DETECTORS[kind])) == summary.dirty_kinds[kind], kind
    finally:
        conn.close()


@pytest.mark.parametrize(
    "kwargs",
    [{"accounts": -1}, {"contacts_per_account": -0.5}, {"contacts_per_account": float("nan")}],
)
def test_rejects_invalid_arguments(tmp_path: Path, kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=f"^{next(iter(kwargs))} must be .*>= 0, got "):
        build_legacy_crm(tmp_path / "x.sqlite", **kwargs)  # type: ignore[arg-type]
    assert not any(tmp_path.iterdir())


def test_summary_is_frozen_and_read_only(default_build: Built) -> None:
    summary = default_build.summary
    with pytest.raises(dataclasses.FrozenInstanceError, match="cannot assign to field 'accounts'"):
        summary.accounts = 1  # type: ignore[misc]
    with pytest.raises(TypeError, match="does not support item assignment"):
        summary.dirty_kinds["opt_in_blank"] = 0  # type: ignore[index]
    hash(summary)


def test_cli_prints_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cli.sqlite"
    assert main([str(path), "--accounts", "200", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert str(path) in out
    assert "accounts: 200" in out
    assert "contacts: 500" in out
    for kind in DIRT_KINDS:
        assert kind in out
    assert _dump(path) == _dump(
        build_legacy_crm(tmp_path / "api.sqlite", accounts=200, seed=3).path
    )
