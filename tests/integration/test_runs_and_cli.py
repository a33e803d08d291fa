"""Which run a run resumes, when a run stops on its rejects, and the command line around
runs: what it prints from data, its errors, help, version, JSON and tables."""

from __future__ import annotations

import os
import pty
import select
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from patchbay import __version__
from patchbay.localorg.running import LocalOrg
from patchbay.patterns.migration import fingerprint, system_identity
from patchbay.runtime import runner
from patchbay.runtime.runner import Invocation
from patchbay.store import Store
from patchbay.store.schema import SCHEMA_VERSION
from patchbay.urls import sqlalchemy_url

ITEMS = 3000
NAME = "contacts"


def said(result: Any) -> str:
    """The command's output with line wrapping undone."""
    return " ".join(result.output.split())


def sqlite_rows(path: Path, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(path) as db:
        rows = db.execute(sql).fetchall()
    db.close()
    return rows


def make_items(directory: Path, rows: int = ITEMS) -> None:
    with sqlite3.connect(directory / "source.db") as db:
        db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
        db.executemany("INSERT INTO items VALUES (?, ?)", [(i, f"n{i}") for i in range(1, rows + 1)])
    db.close()


def make_target(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE items (item_id INTEGER PRIMARY KEY, name TEXT)")
    db.close()


def items_spec(directory: Path, file: str, target: str, *, batch_size: int = 500) -> Path:
    make_target(directory / target)
    spec = directory / file
    spec.write_text(f"""
systems:
  legacy: sqlite:///source.db
  target: sqlite:///{target}
integrations:
  - name: {NAME}
    pattern: migration
    source: {{system: legacy, object: items, key: id}}
    transform: {{fields: {{item_id: id, name: name}}}}
    destination: {{system: target, object: items, key: item_id}}
    options: {{batch_size: {batch_size}}}
""", encoding="utf-8")
    return spec


def interrupted_run(spec: Path, state: Path) -> str:
    """A run of `spec` stopped after its first batch (as Ctrl-C does); its id."""
    stop = threading.Event()

    def after_a_batch(event: str, _counters: Any) -> None:
        if event == "batch":
            stop.set()

    store = Store.open(directory=state)
    try:
        ctx = Invocation.load(spec, None, {}).context(store, state / "runs", progress=after_a_batch,
                                                      stop=stop)
        report = runner.run(ctx)
    finally:
        store.close()
    assert report["status"] == "interrupted", report
    return str(report["run"])


# -- 1. a run resumes only a run of the same definition ------------------------------------------


def test_a_run_of_another_file_with_the_same_name_is_not_resumed(tmp_path: Path,
                                                                 patchbay: Any) -> None:
    make_items(tmp_path)
    big = items_spec(tmp_path, "big.yaml", "a.db")
    big2 = items_spec(tmp_path, "big2.yaml", "b.db")
    first = interrupted_run(big, tmp_path / ".patchbay")
    landed_first = sqlite_rows(tmp_path / "a.db", "SELECT count(*) FROM items")[0][0]
    assert 0 < landed_first < ITEMS

    other = patchbay("run", big2, "--json", cwd=tmp_path)

    assert other.code == 0, other.log
    report = other.json()
    assert report["run"] != first
    assert report["verdict"] == "complete"
    assert (report["counts"]["read"], report["counts"]["created"]) == (ITEMS, ITEMS)
    assert sqlite_rows(tmp_path / "b.db", "SELECT count(*) FROM items") == [(ITEMS,)]
    assert (f"starting a new run: unfinished run {first} is not resumed, because it ran another "
            f"definition of this integration (`patchbay resume {first}` continues it)") \
        in said(other)

    checkpointed = next(r for r in patchbay("runs", "--json", cwd=tmp_path).json()
                        if r["run"] == first)["counters"]["read"]
    again = patchbay("run", big, cwd=tmp_path)

    assert again.code == 0, again.log
    assert f"resuming run {first} from record {checkpointed:,}" in said(again)
    assert sqlite_rows(tmp_path / "a.db", "SELECT count(*) FROM items") == [(ITEMS,)]


def test_resume_by_id_refuses_a_changed_definition(tmp_path: Path, patchbay: Any) -> None:
    make_items(tmp_path)
    spec = items_spec(tmp_path, "big.yaml", "a.db")
    first = interrupted_run(spec, tmp_path / ".patchbay")
    make_target(tmp_path / "elsewhere.db")
    spec.write_text(spec.read_text().replace("sqlite:///a.db", "sqlite:///elsewhere.db"))

    result = patchbay("resume", first, cwd=tmp_path)

    assert result.code == 1, result.log
    assert (f"run {first} ran another definition of '{NAME}' (systems, source, scope, "
            "transform, destination or parameters differ)") in said(result)
    assert sqlite_rows(tmp_path / "elsewhere.db", "SELECT count(*) FROM items") == [(0,)]


def test_a_run_from_before_fingerprints_is_not_resumed_by_a_plain_run(tmp_path: Path,
                                                                      patchbay: Any) -> None:
    """An engine state of schema version 3 (no fingerprints) with an interrupted run: the
    store gains the column, and a plain run starts anew instead of guessing."""
    make_items(tmp_path)
    spec = items_spec(tmp_path, "big.yaml", "a.db")
    state = tmp_path / ".patchbay"
    old = interrupted_run(spec, state)
    with sqlite3.connect(state / "state.db") as db:
        db.execute("ALTER TABLE patchbay_runs DROP COLUMN fingerprint")
        db.execute("UPDATE patchbay_meta SET value = '3' WHERE name = 'schema_version'")
    db.close()

    result = patchbay("run", spec, "--json", cwd=tmp_path)

    assert result.code == 0, result.log
    assert result.json()["run"] != old
    assert (f"unfinished run {old} is not resumed, because it predates definition "
            "fingerprints") in said(result)
    assert sqlite_rows(state / "state.db", "SELECT value FROM patchbay_meta "
                                           "WHERE name = 'schema_version'") == \
        [(str(SCHEMA_VERSION),)]
    assert sqlite_rows(state / "state.db", f"SELECT status, fingerprint FROM patchbay_runs "
                                           f"WHERE id = '{old}'") == [("interrupted", None)]


def test_the_fingerprint_holds_no_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    password = "s3cret-" + uuid.uuid4().hex
    spec = tmp_path / "crm.yaml"
    spec.write_text(f"""
systems:
  legacy: sqlite:///source.db
  crm: postgresql://app:${{PG_PASSWORD}}@db.internal:5432/crm?password=${{PG_PASSWORD}}
integrations:
  - name: {NAME}
    pattern: migration
    source: {{system: legacy, object: items, key: id}}
    transform: {{fields: {{item_id: id}}}}
    destination: {{system: crm, object: items, key: item_id}}
""", encoding="utf-8")
    marks = []
    for secret in (password, password + "-changed"):
        monkeypatch.setenv("PG_PASSWORD", secret)
        invocation = Invocation.load(spec, None, {})
        store = Store.open(directory=tmp_path / ".patchbay")
        ctx = invocation.context(store, tmp_path)
        marks.append(fingerprint(ctx))
        assert system_identity(ctx.systems.spec("crm").url) == \
            "postgresql://app:***@db.internal:5432/crm"
        store.close()
    assert marks[0] == marks[1], "the password takes no part in the fingerprint"


def watermarked_items(directory: Path) -> None:
    """50 items stamped a minute apart, and two files (big.yaml into a.db, big2.yaml into
    b.db) declaring the same incremental migration of them, by their `updated_at`."""
    with sqlite3.connect(directory / "source.db") as db:
        db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, updated_at TEXT)")
        db.executemany("INSERT INTO items VALUES (?, ?, ?)",
                       [(i, f"n{i}", f"2026-01-01 10:{i:02d}:00") for i in range(1, 51)])
    db.close()
    for spec in (items_spec(directory, "big.yaml", "a.db"), items_spec(directory, "big2.yaml", "b.db")):
        spec.write_text(spec.read_text().replace("key: id}", "key: id, watermark: updated_at}"))


def test_a_watermark_reached_by_another_file_of_the_same_name_is_not_taken(
        tmp_path: Path, patchbay: Any) -> None:
    """An incremental migration (a watermark) of another file sharing the name reads every
    record into its own destination, saying why; its next run reads only what is new."""
    watermarked_items(tmp_path)

    first = patchbay("run", tmp_path / "big.yaml", "--json", cwd=tmp_path)
    other = patchbay("run", tmp_path / "big2.yaml", "--json", cwd=tmp_path)
    again = patchbay("run", tmp_path / "big2.yaml", "--json", cwd=tmp_path)

    assert (first.code, other.code, again.code) == (0, 0, 0), other.log
    assert (first.json()["counts"]["read"], other.json()["counts"]["read"]) == (50, 50)
    assert ("reading every record in scope: the watermark this integration reached was reached "
            "by another definition of it (another file, an edited one or other parameters)") \
        in said(other)
    assert sqlite_rows(tmp_path / "b.db", "SELECT count(*) FROM items") == [(50,)]
    # from its own watermark: the last record again (read with `gte`), found unchanged
    assert (again.json()["counts"]["read"], again.json()["counts"]["unchanged"]) == (1, 1)
    assert "reading every record" not in said(again)


def test_a_watermark_kept_by_name_before_an_upgrade_stays_its_definitions(
        tmp_path: Path, patchbay: Any) -> None:
    """A watermark an older patchbay kept under the object alone is taken up by the
    definition whose run finished last (it wrote it), and by no other definition."""
    watermarked_items(tmp_path)
    first = patchbay("run", tmp_path / "big.yaml", "--json", cwd=tmp_path)
    assert first.code == 0, first.log
    state = tmp_path / ".patchbay" / "state.db"
    with sqlite3.connect(state) as db:  # as an older patchbay kept it
        moved = db.execute("UPDATE patchbay_cursors SET object = 'items' "
                           "WHERE object LIKE 'items@%'").rowcount
    db.close()
    assert moved == 1

    other = patchbay("run", tmp_path / "big2.yaml", "--json", cwd=tmp_path)
    same = patchbay("run", tmp_path / "big.yaml", "--json", cwd=tmp_path)

    assert (other.code, same.code) == (0, 0), same.log
    assert other.json()["counts"]["read"] == 50, "another file never takes the old watermark"
    # the last finished run of the name is now big2's: big's old watermark is not proven its
    assert same.json()["counts"]["read"] == 50
    with sqlite3.connect(state) as db:
        db.execute("DELETE FROM patchbay_cursors WHERE object LIKE 'items@%'")
        db.execute("UPDATE patchbay_cursors SET object = 'items'")
    db.close()
    upgraded = patchbay("run", tmp_path / "big.yaml", "--json", cwd=tmp_path)
    assert upgraded.code == 0, upgraded.log
    # big ran last: its old watermark is taken up: the last record again, found unchanged
    assert (upgraded.json()["counts"]["read"], upgraded.json()["counts"]["unchanged"]) == (1, 1)


# -- 2. values from data are printed as they are ---------------------------------------------------


def test_markup_in_values_and_reasons_is_printed_as_it_is(tmp_path: Path, patchbay: Any) -> None:
    with sqlite3.connect(tmp_path / "source.db") as db:
        db.execute("CREATE TABLE items (code TEXT PRIMARY KEY, name TEXT)")
        db.executemany("INSERT INTO items VALUES (?, ?)",
                       [("[/bold]", None), ("[a-z]", None), ("ok", "[red]fine[/red]")])
    db.close()
    with sqlite3.connect(tmp_path / "target.db") as db:
        db.execute("CREATE TABLE items (code TEXT PRIMARY KEY, name TEXT NOT NULL)")
    db.close()
    spec = tmp_path / "items.yaml"
    spec.write_text("""
systems:
  legacy: sqlite:///source.db
  target: sqlite:///target.db
integrations:
  - name: items [v2]
    pattern: migration
    source: {system: legacy, object: items, key: code}
    transform: {fields: {code: code, name: {from: name, required: true}}}
    destination: {system: target, object: items, key: code}
""", encoding="utf-8")

    plan = patchbay("plan", spec, cwd=tmp_path)
    ran = patchbay("run", spec, "--json", cwd=tmp_path)
    shown = patchbay("show", ran.json()["run"], cwd=tmp_path)

    assert plan.code == 0, plan.log
    assert '"code": "[/bold]"' in said(plan) and '"code": "[a-z]"' in said(plan), plan.log
    assert '"name": "[red]fine[/red]"' in said(plan) and "plan for items [v2]" in said(plan)
    assert ran.code == 3, ran.log
    assert shown.code == 0, shown.log
    assert "[/bold]" in shown.stdout and "[a-z]" in shown.stdout and "items [v2]" in shown.stdout


# -- 4. refused records stop a run -----------------------------------------------------------------


def test_an_unmapped_required_column_is_an_error_before_writing(tmp_path: Path,
                                                                patchbay: Any) -> None:
    make_items(tmp_path, rows=10)
    with sqlite3.connect(tmp_path / "target.db") as db:
        db.execute("CREATE TABLE items (item_id INTEGER PRIMARY KEY, name TEXT, "
                   "region TEXT NOT NULL, note TEXT NOT NULL DEFAULT '')")
    db.close()
    spec = tmp_path / "items.yaml"
    spec.write_text(f"""
systems:
  legacy: sqlite:///source.db
  target: sqlite:///target.db
integrations:
  - name: {NAME}
    pattern: migration
    source: {{system: legacy, object: items, key: id}}
    transform: {{fields: {{item_id: id, name: name}}}}
    destination: {{system: target, object: items, key: item_id}}
""", encoding="utf-8")
    expected = ("'items' of system 'target' requires field 'region' (not null, no default), "
                "which the transform does not produce")

    plan = patchbay("plan", spec, cwd=tmp_path)
    ran = patchbay("run", spec, cwd=tmp_path)

    for result in (plan, ran):
        assert result.code == 2, result.log
        assert expected in said(result) and "note" not in said(result), result.log
    assert sqlite_rows(tmp_path / "target.db", "SELECT count(*) FROM items") == [(0,)]


def rejecting_spec(directory: Path, rows: int, bad_every: int, options: str) -> Path:
    """Items whose every `bad_every`-th name is missing, so the record is set aside."""
    with sqlite3.connect(directory / "source.db") as db:
        db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
        db.executemany("INSERT INTO items VALUES (?, ?)",
                       [(i, None if i % bad_every == 0 else f"n{i}") for i in range(1, rows + 1)])
    db.close()
    make_target(directory / "target.db")
    spec = directory / "items.yaml"
    spec.write_text(f"""
systems:
  legacy: sqlite:///source.db
  target: sqlite:///target.db
integrations:
  - name: {NAME}
    pattern: migration
    source: {{system: legacy, object: items, key: id}}
    transform: {{fields: {{item_id: id, name: {{from: name, required: true}}}}}}
    destination: {{system: target, object: items, key: item_id}}
    options: {options}
""", encoding="utf-8")
    return spec


@pytest.mark.parametrize(("options", "stopped_after", "message"), [
    ("{batch_size: 100, max_rejects: 5}", 100,
     "10 of 100 records set aside, more than max_rejects (5) allows; e.g. "
     "REQUIRED_FIELD_MISSING"),
    ("{batch_size: 500, max_rejects: '5%'}", 1000,
     "100 of 1,000 records set aside, more than max_rejects (5%) allows; e.g. "
     "REQUIRED_FIELD_MISSING"),
], ids=["count", "share"])
def test_more_rejects_than_max_rejects_fail_the_run(tmp_path: Path, patchbay: Any, options: str,
                                                    stopped_after: int, message: str) -> None:
    spec = rejecting_spec(tmp_path, rows=2000, bad_every=10, options=options)

    result = patchbay("run", spec, cwd=tmp_path)

    assert result.code == 1, result.log
    assert message in said(result), result.log
    [run] = patchbay("runs", "--json", cwd=tmp_path).json()
    assert (run["status"], run["counters"]["read"]) == ("failed", stopped_after)


def test_a_share_under_max_rejects_completes_with_rejects(tmp_path: Path, patchbay: Any) -> None:
    spec = rejecting_spec(tmp_path, rows=2000, bad_every=50, options="{max_rejects: '5%'}")

    result = patchbay("run", spec, "--json", cwd=tmp_path)

    assert result.code == 3, result.log
    assert result.json()["counts"]["rejected"] == 40


def test_a_run_whose_first_records_are_all_refused_stops_early(tmp_path: Path,
                                                               patchbay: Any) -> None:
    """Contacts run before their accounts: every lookup misses."""
    with sqlite3.connect(tmp_path / "source.db") as db:
        db.execute("CREATE TABLE contacts (id INTEGER PRIMARY KEY, account INTEGER)")
        db.executemany("INSERT INTO contacts VALUES (?, ?)", [(i, i % 7) for i in range(1, 8001)])
    db.close()
    with sqlite3.connect(tmp_path / "target.db") as db:
        db.execute("CREATE TABLE accounts (legacy_id INTEGER PRIMARY KEY, id TEXT)")
        db.execute("CREATE TABLE contacts (legacy_id INTEGER PRIMARY KEY, account_id TEXT)")
    db.close()
    spec = tmp_path / "contacts.yaml"
    spec.write_text("""
systems:
  legacy: sqlite:///source.db
  target: sqlite:///target.db
integrations:
  - name: contacts
    pattern: migration
    source: {system: legacy, object: contacts, key: id}
    transform:
      fields:
        legacy_id: id
        account_id: {lookup: {system: target, object: accounts, key: legacy_id, value: account,
                              returns: id}}
    destination: {system: target, object: contacts, key: legacy_id}
    options: {batch_size: 500}
""", encoding="utf-8")

    result = patchbay("run", spec, cwd=tmp_path)

    assert result.code == 1, result.log
    assert "stopped: none of the 1,000 records read was written, 1,000 were set aside; e.g. " \
        "LOOKUP_FAILED: account_id: no accounts with legacy_id = 1 in target" in said(result), \
        result.log
    [run] = patchbay("runs", "--json", cwd=tmp_path).json()
    assert (run["status"], run["counters"]) == ("failed", {}), "its refused records are not skipped"

    with sqlite3.connect(tmp_path / "target.db") as db:  # the accounts, migrated at last
        db.executemany("INSERT INTO accounts VALUES (?, ?)", [(i, f"A{i}") for i in range(7)])
    db.close()
    again = patchbay("run", spec, "--json", cwd=tmp_path)

    assert again.code == 0, again.log
    assert f"resuming run {run['run']} from record 0" in said(again)
    assert again.json()["counts"]["created"] == 8000


def test_max_rejects_is_checked_at_load(tmp_path: Path, patchbay: Any) -> None:
    spec = rejecting_spec(tmp_path, rows=10, bad_every=10, options="{max_rejects: lots}")

    result = patchbay("plan", spec, cwd=tmp_path)

    assert result.code == 2, result.log
    assert (f"{spec}:11: integrations[0].options.max_rejects: max_rejects takes a count (100) "
            "or a share of the records read (\"5%\"), not 'lots'") in said(result)


# -- 5. clear answers to bad input -----------------------------------------------------------------


@pytest.mark.parametrize("command", ["show", "resume"])
def test_an_unknown_run_id_is_bad_input(tmp_path: Path, patchbay: Any, command: str) -> None:
    result = patchbay(command, "20260101-000000-abcdef", cwd=tmp_path)

    assert result.code == 2, result.log
    assert said(result) == "error: no run '20260101-000000-abcdef' in the engine state"


def test_a_non_numeric_port_is_an_error(tmp_path: Path, patchbay: Any) -> None:
    spec = items_spec(tmp_path, "items.yaml", "target.db")
    spec.write_text(spec.read_text().replace("sqlite:///target.db",
                                             "postgresql://app:hunter2@db:54x2/crm"))

    result = patchbay("plan", spec, cwd=tmp_path)

    assert result.code == 2, result.log
    assert said(result) == (f"error: {spec}: invalid integration file - {spec}:4: "
                            "systems.target.url: the port of postgresql://app:***@db:54x2/crm is "
                            "not a number from 0 to 65535")


@pytest.fixture
def org() -> Iterator[LocalOrg]:
    with LocalOrg() as local:
        yield local


def test_an_unknown_scope_field_of_salesforce_gets_a_suggestion(tmp_path: Path, patchbay: Any,
                                                                org: LocalOrg) -> None:
    make_target(tmp_path / "target.db")
    spec = tmp_path / "accounts.yaml"
    spec.write_text(f"""
systems:
  crm:
    url: salesforce+http://127.0.0.1:{org.port}
    options: {{username: integration@patchbay.local, password: password, security_token: TOKEN}}
  target: sqlite:///target.db
integrations:
  - name: accounts
    pattern: migration
    source: {{system: crm, object: Account, key: Id, scope: {{field: Industy, eq: Energy}}}}
    transform: {{fields: {{item_id: Id, name: Name}}}}
    destination: {{system: target, object: items, key: item_id}}
""", encoding="utf-8")

    result = patchbay("plan", spec, cwd=tmp_path)

    assert result.code == 2, result.log
    assert said(result) == ("error: Salesforce object 'Account' of system 'crm' has no field "
                            "'Industy'; did you mean 'Industry'?")


def test_a_connection_lost_during_verify_prints_no_traceback(tmp_path: Path, patchbay: Any,
                                                            pg_url: str) -> None:
    make_items(tmp_path, rows=100_000)
    table, app = f"verify_{uuid.uuid4().hex[:10]}", f"patchbay-{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(sqlalchemy_url(pg_url))
    with engine.begin() as conn:
        conn.execute(sa.text(f"CREATE TABLE {table} (item_id INTEGER PRIMARY KEY, name TEXT)"))
    try:
        spec = tmp_path / "items.yaml"
        url = pg_url + ("&" if "?" in pg_url else "?") + f"application_name={app}"
        spec.write_text(f"""
systems:
  legacy: sqlite:///source.db
  pg: {url}
integrations:
  - name: {NAME}
    pattern: migration
    source: {{system: legacy, object: items, key: id}}
    transform: {{fields: {{item_id: id, name: name}}}}
    destination: {{system: pg, object: {table}, key: item_id}}
    options: {{batch_size: 200}}
""", encoding="utf-8")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        process = subprocess.Popen([sys.executable, "-m", "patchbay.cli", "verify", str(spec)],
                                   cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        # Cut verify's connections again and again while it runs: a connection lost between
        # two queries is quietly replaced by the pool, so only a cut that lands mid-query
        # reaches verify, and repeating the cuts makes sure one does.
        terminated = 0
        deadline = time.monotonic() + 60
        while process.poll() is None and time.monotonic() < deadline:
            with engine.begin() as conn:
                terminated += len(conn.execute(sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = :app"), {"app": app}).all())
            time.sleep(0.02)
        out, err = process.communicate(timeout=120)
        assert terminated >= 1, "verify was never connected while it ran"
        assert process.returncode == 1, err
        assert "Traceback" not in out + err, err
        # Where the cut lands decides the wording ("lost its connection" mid-read, "cannot
        # reach" on a reconnect), and the driver's own words vary with the moment; either way
        # it is one line that names the system.
        assert err.startswith("error: "), err
        assert err.count("\n") == 1, err
        assert "system 'pg'" in err, err
        assert "lost its connection" in err or "cannot reach" in err, err
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {table}"))
        engine.dispose()


# -- 30. a file's integrations in dependency order ----------------------------------------------

ACCOUNTS_AND_CONTACTS = """
systems:
  legacy: sqlite:///source.db
  crm: sqlite:///crm.db
integrations:
  - name: contacts
    pattern: migration
    source: {system: legacy, object: contacts, key: id}
    transform:
      fields:
        legacy_id: id
        account_id: {lookup: {system: crm, object: accounts, key: legacy_id, value: account,
                              returns: id}}
    destination: {system: crm, object: contacts, key: legacy_id}
  - name: accounts
    pattern: migration
    source: {system: legacy, object: accounts, key: id}
    transform: {fields: {legacy_id: id, id: {expr: "concat('A-', id)"}}}
    destination: {system: crm, object: accounts, key: legacy_id}
"""


def accounts_and_contacts(directory: Path) -> Path:
    with sqlite3.connect(directory / "source.db") as db:
        db.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY)")
        db.execute("CREATE TABLE contacts (id INTEGER PRIMARY KEY, account INTEGER)")
        db.executemany("INSERT INTO accounts VALUES (?)", [(i,) for i in range(1, 6)])
        db.executemany("INSERT INTO contacts VALUES (?, ?)", [(i, i % 5 + 1) for i in range(1, 21)])
    db.close()
    with sqlite3.connect(directory / "crm.db") as db:
        db.execute("CREATE TABLE accounts (legacy_id INTEGER PRIMARY KEY, id TEXT)")
        db.execute("CREATE TABLE contacts (legacy_id INTEGER PRIMARY KEY, account_id TEXT)")
    db.close()
    spec = directory / "crm.yaml"
    spec.write_text(ACCOUNTS_AND_CONTACTS, encoding="utf-8")
    return spec


def test_run_without_an_integration_runs_all_in_dependency_order(tmp_path: Path,
                                                                 patchbay: Any) -> None:
    spec = accounts_and_contacts(tmp_path)

    result = patchbay("run", spec, "--json", cwd=tmp_path)

    assert result.code == 0, result.log
    reports = result.json()
    assert [(r["integration"], r["verdict"]) for r in reports] == [
        ("accounts", "complete"), ("contacts", "complete")]
    assert sqlite_rows(tmp_path / "crm.db", "SELECT legacy_id, account_id FROM contacts "
                                            "ORDER BY legacy_id") == \
        [(i, f"A-{i % 5 + 1}") for i in range(1, 21)]


def test_running_all_stops_at_the_first_failure(tmp_path: Path, patchbay: Any) -> None:
    spec = accounts_and_contacts(tmp_path)
    spec.write_text(spec.read_text().replace(", id: {expr", ", ident: {expr"))

    result = patchbay("run", spec, cwd=tmp_path)

    assert result.code == 2, result.log
    assert "'accounts' of system 'crm' has no field 'ident'" in said(result), result.log
    assert sqlite_rows(tmp_path / "crm.db", "SELECT count(*) FROM contacts") == [(0,)]
    assert [(r["integration"], r["status"])
            for r in patchbay("runs", "--json", cwd=tmp_path).json()] == [("accounts", "failed")]


# -- 31. the command line itself -------------------------------------------------------------------


def test_version(tmp_path: Path, patchbay: Any) -> None:
    result = patchbay("--version", cwd=tmp_path)

    assert (result.code, result.stdout) == (0, f"patchbay {__version__}\n")


def test_json_errors_are_json(tmp_path: Path, patchbay: Any) -> None:
    result = patchbay("show", "nope", "--json", cwd=tmp_path)

    assert result.code == 2, result.log
    assert result.json() == {"error": "no run 'nope' in the engine state",
                             "problems": ["no run 'nope' in the engine state"], "exit": 2}


def test_help_names_what_options_take(tmp_path: Path, patchbay: Any) -> None:
    result = patchbay("run", "--help", cwd=tmp_path, env={"COLUMNS": "100"})

    assert result.code == 0, result.log
    assert "<bool>" not in result.stdout and "<str>" not in result.stdout, result.stdout
    for shown in ("--param NAME=VALUE", "--state DIR|URL", "--resume RUN", "--integration NAME"):
        assert shown in " ".join(result.stdout.split()), result.stdout


def test_the_runs_table_keeps_run_ids_whole_on_80_columns(tmp_path: Path, patchbay: Any) -> None:
    spec = accounts_and_contacts(tmp_path)
    long_name = " ".join(["accounts"] * 8)
    spec.write_text(spec.read_text().replace("name: accounts", f"name: {long_name}"))
    for name in (long_name, "contacts"):
        assert patchbay("run", spec, "-i", name, cwd=tmp_path).code == 0

    listed = patchbay("runs", cwd=tmp_path, env={"COLUMNS": "80"})

    assert listed.code == 0, listed.log
    ids = [r["run"] for r in patchbay("runs", "--json", cwd=tmp_path).json()]
    assert len(ids) == 2
    for run_id in ids:
        assert run_id in listed.stdout, listed.stdout
    assert max(len(line) for line in listed.stdout.splitlines()) <= 80


def test_verify_shows_the_comparison(tmp_path: Path, patchbay: Any) -> None:
    make_items(tmp_path, rows=20)
    spec = items_spec(tmp_path, "items.yaml", "target.db")
    assert patchbay("run", spec, cwd=tmp_path).code == 0

    result = patchbay("verify", spec, cwd=tmp_path)

    assert result.code == 0, result.log
    header = next(line for line in result.stdout.splitlines() if "in scope" in line)
    assert header.split() == ["┃", "in", "scope", "┃", "read", "┃", "rejected", "┃", "skipped",
                              "┃"], result.stdout
    assert "destination compared with source (20 records)" in result.stdout


def test_the_progress_bar_shows_the_total_when_counting_is_cheap(tmp_path: Path) -> None:
    make_items(tmp_path, rows=ITEMS)
    spec = items_spec(tmp_path, "items.yaml", "target.db")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "COLUMNS": "120"}
    parent, child = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "patchbay.cli", "run", str(spec)],
                               cwd=tmp_path, env=env, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=child)
    os.close(child)
    seen = b""
    while True:
        ready, _, _ = select.select([parent], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(parent, 65536)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    os.close(parent)
    assert process.wait(timeout=60) == 0
    assert f"/{ITEMS}".encode() in seen, seen[-2000:]


def test_an_engine_state_that_cannot_be_reached_is_one_line_without_its_password(
        tmp_path: Path, patchbay: Any) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = patchbay("runs", "--state", f"postgresql://postgres:hunter2@127.0.0.1:{port}/test",
                      cwd=tmp_path)
    assert result.code == 1, result.log
    assert result.stdout == "", result.log
    assert result.stderr == (
        f"run failed: the engine state failed: connection failed: connection to server at "
        f"\"127.0.0.1\", port {port} failed: Connection refused (state=postgresql://postgres:***@"
        f"127.0.0.1:{port}/test, operation=migrate)\n"), result.log
