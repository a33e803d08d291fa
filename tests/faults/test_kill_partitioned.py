"""`patchbay run --workers 3` on a PostgreSQL state; the holder of a key range is SIGKILLed six
times while the migration runs. Each time another worker (the run keeps a spare) takes the
range over within the lease time, from the range's checkpoint; the destination ends equal
to the source, each record once, and the run has exactly one report. Then the run process
itself is killed: its workers finish, and one of them writes the one report."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

ROWS = 60_000
STATEMENT_SECONDS = 0.4
KILLS = 6
WORKERS = 3
LEASE = 2.0
POLL = LEASE / 10
"""How often a worker without a range looks for one (runtime/partitions.poll_seconds)."""
SLACK = 0.5
"""Time for the new holder's lease to commit and for this test to see it."""


def build_source(path: Path) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, city TEXT, "
                   "score REAL, joined TEXT)")
        db.executemany("INSERT INTO people VALUES (?, ?, ?, ?, ?)", (
            (i, f"person {i}", ("Berlin", "Paris", "Austin", "Osaka")[i % 4], (i % 1000) / 10,
             f"20{10 + i % 15}-0{1 + i % 9}-1{i % 10} 12:00:00") for i in range(1, ROWS + 1)))


@pytest.fixture
def schema(pg_url: str) -> Iterator[str]:
    name = f"fault_split_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
        # no unique key but the surrogate one: a record written twice would be two rows
        conn.execute(f"CREATE TABLE {name}.people (row_id serial PRIMARY KEY, person_id bigint "
                     "NOT NULL, name text, city text, score double precision, joined timestamp)")
        conn.execute(f"CREATE UNIQUE INDEX ON {name}.people (person_id)")
    yield name
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {name} CASCADE")


def holders(conn: psycopg.Connection[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """(number, holder, token, position, status) of every range, while the state has them."""
    try:
        return conn.execute("SELECT number, holder, token, position, status "
                            "FROM patchbay_key_ranges ORDER BY number").fetchall()
    except psycopg.errors.UndefinedTable:
        return []


def alive(pid: int) -> bool:
    """Whether process `pid` runs (a zombie, ended but not yet reaped, does not)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status


def stopped(pid: int) -> bool:
    """Whether process `pid` is stopped by a signal."""
    return "\nState:\tT" in (_text(f"/proc/{pid}/status") or "")


def test_range_holders_killed_six_times_are_taken_over_within_the_lease(
        tmp_path: Path, pg_url: str, schema: str) -> None:
    build_source(tmp_path / "source.db")
    url = f"{pg_url}?options=-csearch_path%3D{schema}"
    with psycopg.connect(url, autocommit=True) as conn:
        # A slow destination while the holders are killed: every write statement waits a
        # little, without using the CPU, so that the run lasts for the kills however fast
        # the machine is; after the last kill the test lifts the wait (`pace`), and the
        # rest of the run goes at full speed.
        conn.execute("CREATE TABLE pace (slow boolean NOT NULL)")
        conn.execute("INSERT INTO pace VALUES (true)")
        conn.execute("CREATE FUNCTION slowly() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                     f"IF (SELECT slow FROM {schema}.pace) THEN "
                     f"PERFORM pg_sleep({STATEMENT_SECONDS}); END IF; RETURN NULL; END $$")
        conn.execute("CREATE TRIGGER slowly AFTER INSERT OR UPDATE ON people "
                     "FOR EACH STATEMENT EXECUTE FUNCTION slowly()")
    (tmp_path / "people.yaml").write_text(f"""
systems:
  legacy: sqlite:///source.db
  pg: {url}
integrations:
  - name: people backup
    pattern: migration
    source: {{system: legacy, object: people, key: id}}
    transform:
      fields:
        person_id: id
        name: name
        city: city
        score: score
        joined: {{from: joined, type: datetime}}
    destination: {{system: pg, object: people, operation: upsert, key: person_id}}
    options: {{batch_size: 200, lease_seconds: {LEASE}}}
""")
    log = (tmp_path / "run.log").open("wb")
    running = subprocess.Popen([sys.executable, "-m", "patchbay.cli", "run", "people.yaml",
                                "--workers", str(WORKERS), "--state", url, "--json"],
                               cwd=tmp_path, stdout=subprocess.PIPE, stderr=log)
    try:
        takeovers, out = kill_holders(running, url)
    finally:
        if running.poll() is None:
            running.kill()
        log.close()
    assert running.returncode == 0, (tmp_path / "run.log").read_text()
    report = json.loads(out)

    assert max(takeovers) <= LEASE + POLL + SLACK, takeovers
    assert report["verdict"] == "complete", report["verdict_reasons"]
    assert report["counts"]["read"] == ROWS and report["counts"]["failed"] == 0
    assert report["comparison"]["compared"] == ROWS and report["comparison"]["differing"] == 0
    # each kill is one takeover; on a starved machine a live holder may also miss renewing
    # its lease in time, and lose its range the same way (fenced: it records nothing more)
    assert sum(r["takeovers"] for r in report["ranges"]["each"]) >= KILLS
    assert sum(r["resumed"] for r in report["ranges"]["each"]) >= KILLS
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT person_id, name, city, score, joined FROM people").fetchall()
        runs = conn.execute("SELECT status, report IS NOT NULL FROM patchbay_runs").fetchall()
    assert len(rows) == ROWS, "each record once"
    cities = ("Berlin", "Paris", "Austin", "Osaka")
    assert {r[0]: r[1:] for r in rows} == {
        i: (f"person {i}", cities[i % 4], (i % 1000) / 10,
            dt.datetime(2010 + i % 15, 1 + i % 9, 10 + i % 10, 12)) for i in range(1, ROWS + 1)}
    assert runs == [("complete", True)], "exactly one run, with one report"
    assert [p.name for p in (tmp_path / ".patchbay" / "runs").iterdir()] == [report["run"]]


def connected_workers(parent: int) -> int:
    """How many child processes of `parent` hold a connection to PostgreSQL's port: started
    and past their imports (a worker opens the engine state first), so the spare among them
    is ready to take a range over. Python's start takes seconds on a loaded machine."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in (_text(table) or "").splitlines()[1:]:
            fields = line.split()
            if fields[2].rpartition(":")[2] == f"{5432:04X}":
                inodes.add(fields[9])
    count = 0
    for pid in children(parent):
        with contextlib.suppress(OSError):
            sockets = {os.readlink(f"/proc/{pid}/fd/{fd}")[8:-1]
                       for fd in os.listdir(f"/proc/{pid}/fd")}
            count += bool(sockets & inodes) and alive(pid)
    return count


def children(parent: int) -> set[int]:
    """The pids of the processes whose parent is `parent`."""
    found = set()
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        stat = _text(f"/proc/{pid}/stat")
        if stat is not None and int(stat[stat.rindex(")") + 2:].split()[1]) == parent:
            found.add(pid)
    return found


def _text(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def kill_holders(running: subprocess.Popen[bytes], url: str) -> tuple[list[float], bytes]:
    """SIGKILL a range's holder KILLS times, each once it has checkpointed in its range and
    the run's spare worker is up, and wait each time until another worker leases the range;
    then lift the destination's slowness. The seconds each took, and the run's output."""
    takeovers: list[float] = []
    with psycopg.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + 150
        while len(takeovers) < KILLS:
            assert running.poll() is None, f"the run ended after {len(takeovers)} kills"
            assert time.monotonic() < deadline, f"the run made no progress: {takeovers}"
            if connected_workers(running.pid) < WORKERS + 1:
                time.sleep(0.05)
                continue
            # a holder that has checkpointed in its range: it dies mid-range
            held = [r for r in holders(conn) if r[1] and r[3] is not None and r[4] == "open"
                    and alive(int(r[1].rpartition(":")[2]))]
            if not held:
                time.sleep(0.02)
                continue
            number, holder, token, position, _ = held[0]
            pid = int(holder.rpartition(":")[2])
            os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            while True:
                now = {r[0]: r for r in holders(conn)}[number]
                if now[2] > token:  # leased again: another worker took the range
                    break
                assert time.monotonic() - killed < LEASE * 3, f"nobody took it over: {takeovers}"
                time.sleep(0.01)
            takeovers.append(time.monotonic() - killed)
            assert now[1] != holder, "the killed worker cannot have taken it"
            assert now[3] is not None and now[3] >= position, "resumed from its checkpoint"
        conn.execute("UPDATE pace SET slow = false")
    out, _ = running.communicate(timeout=120)
    return takeovers, out


def test_the_run_process_killed_its_workers_finish_and_one_of_them_reports(
        tmp_path: Path, pg_url: str, schema: str) -> None:
    """SIGKILL the `run --workers` process itself: its workers go on, and the one that finds
    every range done while the run's owner is gone settles the run, once; `run` again then
    finds nothing to resume."""
    rows = 60_000
    with sqlite3.connect(tmp_path / "source.db") as db:
        db.execute("CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT)")
        db.executemany("INSERT INTO people VALUES (?, ?)",
                       ((i, f"person {i}") for i in range(1, rows + 1)))
    url = f"{pg_url}?options=-csearch_path%3D{schema}"
    (tmp_path / "people.yaml").write_text(f"""
systems:
  legacy: sqlite:///source.db
  pg: {url}
integrations:
  - name: people backup
    pattern: migration
    source: {{system: legacy, object: people, key: id}}
    transform: {{fields: {{person_id: id, name: name}}}}
    destination: {{system: pg, object: people, operation: upsert, key: person_id}}
    options: {{batch_size: 200, lease_seconds: {LEASE}}}
""")
    running = subprocess.Popen([sys.executable, "-m", "patchbay.cli", "run", "people.yaml",
                                "--workers", "2", "--state", url, "--json"], cwd=tmp_path,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        settled, workers = kill_the_run(running, url)
    finally:
        if running.poll() is None:
            running.kill()
    [(status, report, owner)] = settled
    assert status == "complete", report
    assert int(owner.rpartition(":")[2]) in workers, "a worker of the killed run settled it"
    assert report["counts"]["read"] == rows and report["comparison"]["matching"] == rows
    assert [p.name for p in (tmp_path / ".patchbay" / "runs").iterdir()] == [report["run"]]
    for pid in workers:
        for _ in range(100):
            if not alive(pid):
                break
            time.sleep(0.1)
        assert not alive(pid), "the workers end once the run is settled"
    again = subprocess.run([sys.executable, "-m", "patchbay.cli", "run", "people.yaml",
                            "--workers", "2", "--state", url, "--json"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=120)
    assert json.loads(again.stdout)["run"] != report["run"], "the settled run is not resumed"


def kill_the_run(running: subprocess.Popen[bytes], url: str
                 ) -> tuple[list[tuple[Any, ...]], set[int]]:
    """SIGKILL the run process once a range has a checkpoint; wait until the run is
    settled. The runs' rows, and the pids of the run's worker processes."""
    with psycopg.connect(url, autocommit=True) as conn:
        deadline = time.monotonic() + 60
        while not any(r[3] is not None for r in holders(conn)):
            assert running.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        # Stopped first, so that it starts no worker between this test listing its children
        # and killing it: the run's workers are then its children (spares included: a
        # spare may be the one that finds every range done and settles the run).
        os.kill(running.pid, signal.SIGSTOP)
        while not stopped(running.pid):
            time.sleep(0.01)
        workers = children(running.pid)
        running.kill()
        running.wait()
        held = set()
        while True:
            held |= {int(r[1].rpartition(":")[2]) for r in holders(conn) if r[1]}
            settled = conn.execute("SELECT status, report, owner FROM patchbay_runs").fetchall()
            if settled[0][0] != "running":
                assert held <= workers, f"only the run's workers {workers} hold ranges: {held}"
                return settled, workers
            assert time.monotonic() < deadline + 60, "no worker settled the run"
            time.sleep(0.1)
