"""Bad input through the command line: a clear message, the right exit code, nothing lost.

Each case checks that the run either wrote nothing, or that every source record is either in
the destination or in rejects.csv.
"""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

INTEGRATION = "Legacy to CRM - Account - migration"
SOURCE_ROWS = 40
PASSWORD = "pa55-W0rd-never-shown"

GOOD_SPEC = """\
systems:
  legacy: sqlite:///legacy.db
  crm: {crm}
integrations:
  - name: Legacy to CRM - Account - migration
    pattern: migration
    parameters:
      country: {{type: string, description: ISO code of the accounts' country}}
    source:
      system: legacy
      object: accounts
      key: acct_id
      scope: {{field: country, eq: {{param: country}}}}
    transform:
      fields:
        legacy_id: acct_id
        name: {{from: company_name}}
        country: country
    destination: {{system: crm, object: accounts, key: legacy_id}}
    options: {{batch_size: 100}}
"""


def said(result: Any) -> str:
    """The command's output with line wrapping undone."""
    return " ".join(result.output.split())


def make_workdir(path: Path) -> Path:
    with sqlite3.connect(path / "legacy.db") as conn:
        conn.execute(
            "CREATE TABLE accounts (acct_id INTEGER PRIMARY KEY, company_name TEXT, country TEXT)"
        )
        conn.executemany(
            "INSERT INTO accounts VALUES (?, ?, ?)",
            [(i, f"Company {i}", "DE" if i % 2 else "AT") for i in range(1, SOURCE_ROWS + 1)],
        )
    conn.close()
    with sqlite3.connect(path / "crm.db") as conn:
        conn.execute(
            "CREATE TABLE accounts (legacy_id INTEGER NOT NULL UNIQUE, "
            "name VARCHAR(40) NOT NULL, country VARCHAR(2))"
        )
    conn.close()
    return path


def crm_rows(path: Path, table: str = "accounts") -> list[tuple[Any, ...]]:
    with sqlite3.connect(path / "crm.db") as conn:
        rows = conn.execute(f"SELECT * FROM {table}").fetchall()
    conn.close()
    return rows


def write_spec(path: Path, text: str) -> Path:
    spec = path / "crm.yaml"
    spec.write_text(text, encoding="utf-8")
    return spec


def assert_clean_failure(result: Any, code: int) -> None:
    assert result.code == code, result.log
    assert "Traceback" not in result.output, result.log
    assert result.stdout.strip() == "" or "error" not in result.stdout.lower(), result.log


def assert_nothing_written(workdir: Path) -> None:
    assert crm_rows(workdir) == [], "a run that did not start wrote to the destination"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return make_workdir(tmp_path)


def good_spec(crm: str = "sqlite:///crm.db") -> str:
    return GOOD_SPEC.format(crm=crm)


def test_the_good_spec_runs(workdir: Path, patchbay: Any) -> None:
    """The baseline every bad case below departs from."""
    spec = write_spec(workdir, good_spec())
    result = patchbay("run", spec, "--param", "country=DE", cwd=workdir)
    assert result.code == 0, result.log
    assert sorted(crm_rows(workdir)) == [
        (i, f"Company {i}", "DE") for i in range(1, SOURCE_ROWS + 1, 2)
    ]


def test_malformed_yaml_names_file_and_line(workdir: Path, patchbay: Any) -> None:
    lines = good_spec().splitlines()
    assert lines[5] == "    pattern: migration"
    lines[5] = "    pattern: migration: [oops"
    spec = write_spec(workdir, "\n".join(lines) + "\n")

    result = patchbay("run", spec, "--param", "country=DE", cwd=workdir)

    assert_clean_failure(result, 2)
    message = said(result)
    assert "crm.yaml:6:" in message, result.log
    assert "malformed YAML" in message, result.log
    assert_nothing_written(workdir)
    assert (
        not (workdir / ".patchbay").exists() or patchbay("runs", "--json", cwd=workdir).json() == []
    )


@pytest.mark.parametrize(
    ("find", "replace", "line", "where", "hint"),
    [
        (
            "name: {from: company_name}",
            "name: {form: company_name}",
            17,
            "integrations[0].transform.fields.name.form",
            "unknown field 'form'; did you mean 'from'?",
        ),
        (
            "options: {batch_size: 100}",
            "options: {batch_sise: 100}",
            20,
            "integrations[0].options.batch_sise",
            "unknown field 'batch_sise'; did you mean 'batch_size'?",
        ),
        (
            "key: legacy_id}",
            "key: legacy_id, operaton: upsert}",
            19,
            "integrations[0].destination.operaton",
            "did you mean 'operation'?",
        ),
        (
            "object: accounts\n",
            "objet: accounts\n",
            11,
            "integrations[0].source.objet",
            "did you mean 'object'?",
        ),
    ],
    ids=["mapping-field", "option", "destination-field", "source-field"],
)
def test_unknown_field_is_named_with_a_suggestion(
    workdir: Path, patchbay: Any, find: str, replace: str, line: int, where: str, hint: str
) -> None:
    text = good_spec()
    assert text.count(find) == 1
    spec = write_spec(workdir, text.replace(find, replace))

    result = patchbay("run", spec, "--param", "country=DE", cwd=workdir)

    assert_clean_failure(result, 2)
    message = said(result)
    assert f"crm.yaml:{line}: {where}" in message, result.log
    assert hint in message, result.log
    assert_nothing_written(workdir)


def test_misspelt_command_line_option(workdir: Path, patchbay: Any) -> None:
    spec = write_spec(workdir, good_spec())

    result = patchbay("run", spec, "--parma", "country=DE", cwd=workdir)

    assert_clean_failure(result, 2)
    message = said(result)
    assert "--parma" in message and "--param" in message, result.log
    assert_nothing_written(workdir)


def test_misspelt_parameter_name(workdir: Path, patchbay: Any) -> None:
    spec = write_spec(workdir, good_spec())

    result = patchbay("run", spec, "--param", "contry=DE", cwd=workdir)

    assert_clean_failure(result, 2)
    message = said(result)
    assert "unknown parameter 'contry'" in message and "did you mean 'country'?" in message, (
        result.log
    )
    assert_nothing_written(workdir)


def test_missing_required_parameter(workdir: Path, patchbay: Any) -> None:
    spec = write_spec(workdir, good_spec())

    result = patchbay("run", spec, cwd=workdir)

    assert_clean_failure(result, 2)
    message = said(result)
    assert "parameter 'country' is required" in message, result.log
    assert "--param country=" in message, result.log
    assert_nothing_written(workdir)
    # It was refused before a run began: there is nothing to resume.
    assert (
        not (workdir / ".patchbay").exists() or patchbay("runs", "--json", cwd=workdir).json() == []
    )


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres:${CRM_PASSWORD}@127.0.0.1:1/test",
        "mysql://root:${CRM_PASSWORD}@127.0.0.1:1/test",
    ],
    ids=["postgresql", "mariadb"],
)
def test_unreachable_database(workdir: Path, patchbay: Any, url: str) -> None:
    spec = write_spec(workdir, good_spec(crm=url))
    env = {"CRM_PASSWORD": PASSWORD}

    result = patchbay("run", spec, "--param", "country=DE", cwd=workdir, env=env)

    assert_clean_failure(result, 1)
    message = said(result)
    redacted = url.replace("${CRM_PASSWORD}", "***")
    assert f"cannot reach system 'crm' at {redacted}" in message, result.log
    assert PASSWORD not in result.output, result.log
    # The failed run is on record, resumable, with the same redacted reason and no password.
    runs = patchbay("runs", "--json", cwd=workdir).json()
    assert [(r["integration"], r["status"]) for r in runs] == [(INTEGRATION, "failed")]
    assert redacted in runs[0]["error"] and PASSWORD not in json.dumps(runs)
    state = b"".join(p.read_bytes() for p in (workdir / ".patchbay").rglob("*") if p.is_file())
    assert PASSWORD.encode() not in state
    plan = patchbay("plan", spec, "--param", "country=DE", cwd=workdir, env=env)
    assert_clean_failure(plan, 1)
    assert PASSWORD not in plan.output and redacted in said(plan), plan.log


# -- a CSV source with broken rows --------------------------------------------------------------

CSV_SPEC = """\
systems:
  export: file:{folder}
  crm: sqlite:///crm.db
integrations:
  - name: Export to CRM - Contact - migration
    pattern: migration
    source: {{system: export, object: contacts.csv, key: contact_id}}
    transform:
      fields:
        legacy_id: {{from: contact_id, type: integer}}
        last_name: last_name
        email: email
    destination: {{system: crm, object: contacts, key: legacy_id}}
"""

CSV_LINES = [
    b"contact_id,last_name,email",
    b"1,Smith,smith@example.com",
    b"2,Jones,jones@example.com",
    b"3,Miller,miller@example.com,unexpected",  # line 4: one field too many
    b"4,Brown,brown@example.com",
    b"5,Davis,davis@example.com",
    b"6,Wilson",  # line 7: a field missing
    b"7,,nobody@example.com",  # well formed, but last_name is required
    b"8,M\xfcller,mueller@example.com",  # line 9: not UTF-8
    b"9,Taylor,taylor@example.com",
    b'10,"Clark, Jr.",clark@example.com',
]
BROKEN_LINES = {4: "unexpected", 7: "6,Wilson", 9: "M\\xfcller"}


def test_csv_source_with_broken_rows(workdir: Path, patchbay: Any) -> None:
    folder = workdir / "export"
    folder.mkdir()
    (folder / "contacts.csv").write_bytes(b"\n".join(CSV_LINES) + b"\n")
    with sqlite3.connect(workdir / "crm.db") as conn:
        conn.execute(
            "CREATE TABLE contacts (legacy_id INTEGER NOT NULL UNIQUE, "
            "last_name VARCHAR(40) NOT NULL, email VARCHAR(80))"
        )
    conn.close()
    spec = write_spec(workdir, CSV_SPEC.format(folder=folder))

    result = patchbay("run", spec, "--json", cwd=workdir)

    assert result.code == 3, result.log
    report = result.json()
    assert report["verdict"] == "complete_with_rejects"
    assert report["counts"]["read"] == len(CSV_LINES) - 1
    assert report["counts"]["created"] == 6
    assert report["counts"]["rejected"] == 4
    assert report["set_aside_by_code"] == {"MALFORMED_RECORD": 3, "REQUIRED_FIELD_MISSING": 1}
    landed = {row[0]: row[1:] for row in crm_rows(workdir, "contacts")}
    assert landed == {
        1: ("Smith", "smith@example.com"),
        2: ("Jones", "jones@example.com"),
        4: ("Brown", "brown@example.com"),
        5: ("Davis", "davis@example.com"),
        9: ("Taylor", "taylor@example.com"),
        10: ("Clark, Jr.", "clark@example.com"),
    }
    with (workdir / report["files"]["rejects"]).open(newline="", encoding="utf-8") as handle:
        rejects = list(csv.DictReader(handle))
    malformed = [r for r in rejects if r["code"] == "MALFORMED_RECORD"]
    assert len(malformed) == 3
    for line, raw in BROKEN_LINES.items():
        matching = [r for r in malformed if f"line {line}" in r["reason"]]
        assert len(matching) == 1, (line, malformed)
        assert "contacts.csv" in matching[0]["reason"]
        assert raw in " ".join(matching[0].values()), (line, matching[0])
    required = [r for r in rejects if r["code"] == "REQUIRED_FIELD_MISSING"]
    assert [r["record_key"] for r in required] == ["7"]
    # Nothing lost: every data line of the file is in the destination or in rejects.csv.
    assert len(landed) + len(rejects) == len(CSV_LINES) - 1
