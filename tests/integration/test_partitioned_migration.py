"""A migration run with two worker processes (`patchbay run --workers 2`) on a PostgreSQL
state: PostgreSQL to PostgreSQL, split by the source key, one report for the run."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

ROWS = 20_000
REFUSED = {i for i in range(1, ROWS + 1) if i % 1000 == 7}
"""Records without a name, which the transform refuses."""


@pytest.fixture
def schema(pg_url: str) -> Iterator[str]:
    name = f"split_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
        conn.execute(f"CREATE TABLE {name}.people (code text PRIMARY KEY, id bigint, "
                     "name text, score double precision)")
        with conn.cursor().copy(f"COPY {name}.people FROM STDIN") as copy:
            for i in range(1, ROWS + 1):
                copy.write_row((f"P{i * 7919 % 100_003:06d}", i,
                                None if i in REFUSED else f"person {i}", i / 4))
        conn.execute(f"CREATE TABLE {name}.copy (code text PRIMARY KEY, id bigint NOT NULL, "
                     "name text NOT NULL, score double precision)")
    yield name
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {name} CASCADE")


def run(tmp_path: Path, state: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "patchbay.cli", "run", "people.yaml",
                           "--state", state, "--json", *args],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)


def write_spec(tmp_path: Path, url: str, *, lease_seconds: float = 5) -> None:
    (tmp_path / "people.yaml").write_text(f"""
systems:
  pg: {url}
integrations:
  - name: people copy
    pattern: migration
    source: {{system: pg, object: people, key: code}}
    transform:
      fields:
        code: code
        id: id
        name: {{from: name, required: true}}
        score: score
    destination: {{system: pg, object: copy, operation: upsert, key: code}}
    options: {{batch_size: 500, lease_seconds: {lease_seconds}}}
""")


def test_two_workers_migrate_every_range_and_write_one_report(
        tmp_path: Path, pg_url: str, schema: str) -> None:
    url = f"{pg_url}?options=-csearch_path%3D{schema}"
    write_spec(tmp_path, url)
    done = run(tmp_path, url, "--workers", "2")
    assert done.returncode == 3, done.stderr  # complete, with the refused records set aside
    report: dict[str, Any] = json.loads(done.stdout)
    assert report["verdict"] == "complete_with_rejects", report["verdict_reasons"]
    assert report["counts"]["read"] == ROWS
    assert report["counts"]["created"] == ROWS - len(REFUSED)
    assert report["counts"]["rejected"] == len(REFUSED)
    assert report["source"]["in_scope"] == ROWS
    comparison = report["comparison"]
    assert comparison["compared"] == ROWS - len(REFUSED) and comparison["matching"] == ROWS - len(REFUSED)
    assert all(f["match"] for f in comparison["fields"].values())
    ranges = report["ranges"]
    assert ranges["count"] == 8 and ranges["taken_over"] == 0
    assert sum(r["read"] for r in ranges["each"]) == ROWS
    assert all(r["read"] > ROWS / 16 for r in ranges["each"][1:]), "text keys cut at quantiles"
    assert sum(report["set_aside_by_code"].values()) == len(REFUSED)
    assert ranges["workers"] == 2, "both worker processes took ranges"

    with psycopg.connect(url) as conn:
        source = conn.execute("SELECT code, id, name, score FROM people WHERE name IS NOT NULL "
                              "ORDER BY code").fetchall()
        copied = conn.execute("SELECT code, id, name, score FROM copy ORDER BY code").fetchall()
        runs = conn.execute("SELECT id, status, report IS NOT NULL, owner FROM patchbay_runs"
                            ).fetchall()
        workers = conn.execute("SELECT count(DISTINCT holder), count(*) FILTER "
                               "(WHERE status = 'done') FROM patchbay_key_ranges").fetchone()
        outcomes = conn.execute("SELECT count(*), count(DISTINCT record_key), "
                                "count(DISTINCT key_range) FROM patchbay_outcomes").fetchone()
    assert copied == source
    assert [(r[0], r[1], r[2]) for r in runs] == [(report["run"], "complete_with_rejects", True)]
    assert workers == (2, 8), "every range done, by the two workers"
    assert outcomes is not None and outcomes[:2] == (len(REFUSED), len(REFUSED))
    rejects = (Path(report["files"]["rejects"])).read_text().splitlines()
    assert len(rejects) == len(REFUSED) + 1

    again = run(tmp_path, url, "--workers", "2")
    assert again.returncode == 3, again.stderr
    second = json.loads(again.stdout)
    assert second["run"] != report["run"], "a finished run is not resumed"
    assert second["counts"]["unchanged"] == ROWS - len(REFUSED)


def test_a_worker_started_on_its_own_takes_ranges_of_a_run_up(
        tmp_path: Path, pg_url: str, schema: str) -> None:
    url = f"{pg_url}?options=-csearch_path%3D{schema}"
    write_spec(tmp_path, url)
    helper = subprocess.Popen([sys.executable, "-m", "patchbay.cli", "worker", "people.yaml",
                               "--state", url], cwd=tmp_path, stderr=subprocess.PIPE)
    try:
        done = run(tmp_path, url, "--workers", "1")
    finally:
        helper.send_signal(signal.SIGINT)
        _, err = helper.communicate(timeout=60)
    assert done.returncode == 3, done.stderr
    assert helper.returncode == 0, err.decode()
    report = json.loads(done.stdout)
    assert report["counts"]["read"] == ROWS
    # the helper, up before the run's own worker processes, may work every range itself
    assert report["ranges"]["count"] == 4
    assert helper.pid in {int(r["worker"].rpartition(":")[2]) for r in report["ranges"]["each"]}
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM copy").fetchone() == (ROWS - len(REFUSED),)


def test_a_run_stopped_by_ctrl_c_is_resumed_from_its_ranges_checkpoints(
        tmp_path: Path, pg_url: str, schema: str) -> None:
    url = f"{pg_url}?options=-csearch_path%3D{schema}"
    write_spec(tmp_path, url)
    with psycopg.connect(url, autocommit=True) as conn:
        # a slow destination (a pause per write statement), so that Ctrl-C comes mid-run
        conn.execute("CREATE FUNCTION slowly() RETURNS trigger LANGUAGE plpgsql AS "
                     "$$ BEGIN PERFORM pg_sleep(0.1); RETURN NULL; END $$")
        conn.execute("CREATE TRIGGER slowly AFTER INSERT ON copy FOR EACH STATEMENT "
                     "EXECUTE FUNCTION slowly()")
    stopped = subprocess.Popen([sys.executable, "-m", "patchbay.cli", "run", "people.yaml",
                                "--workers", "2", "--state", url, "--json"], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)
    with psycopg.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + 120
        while True:
            assert stopped.poll() is None and time.monotonic() < deadline
            with contextlib.suppress(psycopg.errors.UndefinedTable):
                if conn.execute("SELECT count(*) FROM patchbay_key_ranges "
                                "WHERE position IS NOT NULL").fetchone() >= (2,):
                    break
            time.sleep(0.05)
    os.killpg(stopped.pid, signal.SIGINT)  # Ctrl-C reaches the run and its workers
    out, err = stopped.communicate(timeout=120)
    assert stopped.returncode == 130, err.decode()
    interrupted = json.loads(out)
    assert interrupted["status"] == "interrupted"
    with psycopg.connect(url) as conn:  # the ranges stopped between checkpoints
        [(stopped_midway,)] = conn.execute("SELECT count(*) FROM patchbay_key_ranges WHERE "
                                           "position IS NOT NULL AND status <> 'done'").fetchall()
    assert stopped_midway >= 1

    done = run(tmp_path, url, "--workers", "2")
    assert done.returncode == 3, done.stderr
    assert f"resuming run {interrupted['run']}" in done.stderr
    report = json.loads(done.stdout)
    assert report["run"] == interrupted["run"]
    assert report["counts"]["read"] == ROWS and report["comparison"]["missing_in_destination"] == 0
    # each range stopped midway went on from its checkpoint (one that had finished before
    # Ctrl-C took effect is not resumed: how many did is timing, not behaviour)
    assert report["ranges"]["resumed"] == stopped_midway and report["ranges"]["taken_over"] == 0
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*), count(DISTINCT code) FROM copy").fetchone() == \
            (ROWS - len(REFUSED), ROWS - len(REFUSED))
        assert conn.execute("SELECT count(*) FROM patchbay_runs").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM patchbay_outcomes").fetchone() == \
            (len(REFUSED),), "no set-aside record recorded twice"


def test_a_run_without_workers_is_worked_by_serve_processes_which_give_ranges_back_when_stopped(
        tmp_path: Path, pg_url: str, schema: str) -> None:
    """`run --workers 0` starts no worker process: two `serve` processes on the state work
    its ranges (four for each). One serve is stopped by Ctrl-C mid-range: it gives the range
    back at its checkpoint and ends. Then the run is stopped by Ctrl-C: the other serve,
    which no signal reaches, leaves its range at its checkpoint at its next lease renewal,
    and runs on. The run started again resumes; the serve finishes it from the checkpoints
    (resumed, never taken over: no lease had to run out)."""
    url = f"{pg_url}?options=-csearch_path%3D{schema}"
    write_spec(tmp_path, url, lease_seconds=LEASE_SECONDS)
    with psycopg.connect(url, autocommit=True) as conn:
        # a slow destination (a pause per write statement) until the run is resumed, so
        # that a range lasts longer than a renewal's third of the lease and Ctrl-C comes
        # mid-range
        conn.execute("CREATE FUNCTION slowly() RETURNS trigger LANGUAGE plpgsql AS "
                     "$$ BEGIN PERFORM pg_sleep(0.5); RETURN NULL; END $$")
        conn.execute("CREATE TRIGGER slowly AFTER INSERT ON copy FOR EACH STATEMENT "
                     "EXECUTE FUNCTION slowly()")
    serves = [subprocess.Popen([sys.executable, "-m", "patchbay.cli", "serve", "people.yaml",
                                "--state", url, "--no-api"], cwd=tmp_path,
                               stderr=subprocess.PIPE) for _ in range(2)]
    first, second = serves
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            deadline = time.monotonic() + 120
            while len(_registered(conn)) < 2:
                assert all(s.poll() is None for s in serves) and time.monotonic() < deadline
                time.sleep(0.05)
            interrupted = subprocess.Popen(
                [sys.executable, "-m", "patchbay.cli", "run", "people.yaml", "--workers", "0",
                 "--state", url, "--json"], cwd=tmp_path, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True)
            _held_midway(conn, first, interrupted, deadline)
            first.send_signal(signal.SIGINT)
            _, err = first.communicate(timeout=60)
            assert first.returncode == 0, err.decode()
            assert not _held_by(conn, first.pid), \
                "the stopped serve holds no range"

            number = _held_midway(conn, second, interrupted, deadline)
            interrupted.send_signal(signal.SIGINT)
            out, err = interrupted.communicate(timeout=60)
            assert interrupted.returncode == 130, err
            assert "left to the serve and worker processes" in err
            stopped = time.monotonic()
            while _held_by(conn, second.pid):
                assert time.monotonic() - stopped < LEASE_SECONDS + 1, \
                    "the serve left the interrupted run's range at its next renewal"
                time.sleep(0.05)
            assert second.poll() is None, "and runs on"
            [(position, status)] = conn.execute(
                "SELECT position, status FROM patchbay_key_ranges WHERE number = %s",
                (number,)).fetchall()
            assert position is not None and status == "open", "given back at its checkpoint"
            conn.execute("DROP TRIGGER slowly ON copy")
        done = run(tmp_path, url, "--workers", "0")
    finally:
        for serve in serves:
            if serve.poll() is None:
                serve.send_signal(signal.SIGINT)
                serve.communicate(timeout=60)
    assert second.returncode == 0
    assert done.returncode == 3, done.stderr
    assert f"resuming run {json.loads(out)['run']}" in done.stderr
    report = json.loads(done.stdout)
    assert report["verdict"] == "complete_with_rejects", report["verdict_reasons"]
    assert report["counts"]["read"] == ROWS and report["comparison"]["missing_in_destination"] == 0
    ranges = report["ranges"]
    assert ranges["count"] == 8, "four ranges for each serve sharing the state"
    # a range's worker is its last holder: the serve stopped early may have finished none
    assert {int(r["worker"].rpartition(":")[2]) for r in ranges["each"]} <= \
        {s.pid for s in serves}, "the serves worked every range"
    assert ranges["taken_over"] == 0 and ranges["resumed"] >= 2, \
        "the ranges given back were resumed from their checkpoints"
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM copy").fetchone() == (ROWS - len(REFUSED),)
        assert conn.execute("SELECT status FROM patchbay_runs").fetchall() == \
            [("complete_with_rejects",)]


LEASE_SECONDS = 1.5
"""The key ranges' lease in the serves' test: a serve looks at the run every half second."""


def _held_midway(conn: psycopg.Connection[tuple[Any, ...]], serve: subprocess.Popen[bytes],
                 running: subprocess.Popen[str], deadline: float) -> int:
    """Wait until `serve` holds a range it has written one batch of (of five: the rest
    lasts longer than a renewal's wait); the range's number."""
    while not (held := conn.execute(
            "SELECT number FROM patchbay_key_ranges WHERE holder LIKE %s AND batches = 1 AND "
            "status = 'open'", (f"%:{serve.pid}",)).fetchall()):
        assert running.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    return int(held[0][0])


def _held_by(conn: psycopg.Connection[tuple[Any, ...]], pid: int) -> int:
    """How many open ranges process `pid` holds."""
    row = conn.execute("SELECT count(*) FROM patchbay_key_ranges WHERE holder LIKE %s AND "
                       "status = 'open'", (f"%:{pid}",)).fetchone()
    return 0 if row is None else int(row[0])


def _registered(conn: psycopg.Connection[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The processes registered as running in the engine state (none before it exists)."""
    try:
        return conn.execute("SELECT id FROM patchbay_processes WHERE status = 'running'"
                            ).fetchall()
    except psycopg.errors.UndefinedTable:
        return []
