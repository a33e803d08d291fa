"""Benchmark: the hospitals' correlation (examples/correlation-hospitals.yaml) at scale.

Two patient registers, the north in PostgreSQL and the south in MariaDB, each of `--records`
synthetic patients (examples/correlation_hospitals_data.py), `--shared` of them in both,
written down with the example's noise (typos, missing values, other spellings, namesakes).
Each patchbay run is one `run_integration` in its own process, so its peak RSS is its own:

  initial      matching both whole sides, linking the pairs (xref, shadow, pairs) and the
               first exchange of phone, allergies and gp: seconds, records/s (both sides'
               records over the run's seconds), links against the truth (shared, wrong)
  edits        `--edits` edits of a shared field on each side, of linked patients; runs
               until the other side holds every edited value: seconds until converged
  rounds       one correlation kept going as `serve` keeps it: a round after `--changed`
               linked patients' address (a compared field) changed in the north, which
               re-matches those records only, beside a full match of both sides (what
               every round cost before re-matching by change), in one process; the
               memory it holds between full matches (after the round) and its peak
  newcomers    `patchbay serve` running; `--newcomers` patients registered at both
               hospitals one after the other (the north, then the south): seconds from
               the south's insert until the pair is linked, p50 and p99 (before, a
               newcomer waited for the next full match: rematch_seconds, 300 s)
  phones       parsing both registers' phone numbers: each value as written (before),
               each number once (now), and again at the next full match under serve

    python bench/correlation.py                      # 100,000 patients in each register
    python bench/correlation.py --records 20000 --edits 500 --newcomers 50
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pymysql

EXAMPLES = Path(__file__).parents[1] / "examples"
NAME = "north and south hospitals - patients - correlation"
PG_URL = os.environ.get("PATCHBAY_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("PATCHBAY_BENCH_MYSQL", "mysql://root@127.0.0.1:3306/test")
NORTH_COLUMNS = ["mrn", "given_name", "family_name", "birth_date", "postcode", "address", "phone",
                 "allergies", "gp"]
SOUTH_COLUMNS = ["person_no", "first_name", "surname", "dob", "post_code", "street", "mobile",
                 "allergy_notes", "primary_care"]


def generator() -> ModuleType:
    found = importlib.util.spec_from_file_location(
        "correlation_hospitals_data", EXAMPLES / "correlation_hospitals_data.py")
    assert found is not None and found.loader is not None
    module = importlib.util.module_from_spec(found)
    sys.modules[found.name] = module
    found.loader.exec_module(module)
    return module


# -- the two registers ----------------------------------------------------------------------


class Registers:
    """A PostgreSQL schema for the north and a MariaDB database for the south, made from the
    example's DDL, dropped at the end."""

    def __init__(self) -> None:
        self.name = f"corr_{uuid.uuid4().hex[:10]}"
        parts = urlsplit(PG_URL)
        query = f"{parts.query}&" if parts.query else ""
        self.north_url = urlunsplit(parts._replace(query=f"{query}options=-csearch_path%3D{self.name}"))
        self.south_url = urlunsplit(urlsplit(MYSQL_URL)._replace(path=f"/{self.name}"))
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {self.name}")
        with self.north() as conn:
            conn.execute((EXAMPLES / "correlation-hospitals-north.sql").read_text())
        with self.mysql(None) as conn, conn.cursor() as cur:
            cur.execute(f"CREATE DATABASE {self.name}")
        with self.mysql() as conn, conn.cursor() as cur:
            for statement in (EXAMPLES / "correlation-hospitals-south.sql").read_text().split(";"):
                if statement.strip():
                    cur.execute(statement)

    def north(self) -> psycopg.Connection[Any]:
        return psycopg.connect(PG_URL, autocommit=True, options=f"-csearch_path={self.name}")

    def mysql(self, database: str | None = "") -> pymysql.Connection[Any]:
        parts = urlsplit(MYSQL_URL)
        return pymysql.connect(host=parts.hostname, port=parts.port or 3306,
                               user=parts.username or "root", password=parts.password or "",
                               database=self.name if database == "" else database,
                               autocommit=True)

    def fill(self, made: Any) -> None:
        with self.north() as conn, conn.cursor() as cur, \
                cur.copy(f"COPY patients ({', '.join(NORTH_COLUMNS)}) FROM STDIN") as copy:
            for row in made.north:
                copy.write_row([row[c] for c in NORTH_COLUMNS])
        with self.mysql() as conn, conn.cursor() as cur:
            sql = (f"INSERT INTO persons ({', '.join(SOUTH_COLUMNS)}) VALUES "
                   f"({', '.join(['%s'] * len(SOUTH_COLUMNS))})")
            rows = [[row[c] for c in SOUTH_COLUMNS] for row in made.south]
            for start in range(0, len(rows), 5000):
                cur.executemany(sql, rows[start:start + 5000])

    def drop(self) -> None:
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {self.name} CASCADE")
        with self.mysql(None) as conn, conn.cursor() as cur:
            cur.execute(f"DROP DATABASE IF EXISTS {self.name}")


# -- patchbay, in its own process -----------------------------------------------------------


def rounds_child(spec: Path, state: Path, out: Path, changed: int) -> None:
    """A round re-matching `changed` north records, and a full match, timed in one process."""
    from patchbay.model import Operation
    from patchbay.patterns.correlation import Correlation
    from patchbay.runtime.runner import Invocation
    from patchbay.runtime.serving import outbox_round
    from patchbay.store import open_state

    ctx = Invocation.load(spec, NAME, {}).context(*open_state(state))
    try:
        correlation = Correlation(ctx)
        outbox_round(correlation)  # the full match a served correlation starts with
        links = sorted(p.left for p in ctx.store.pairs.all(NAME) if p.status == "link")
        chosen = random.Random(5).sample(links, changed)
        north = ctx.systems["north"]
        current = north.get("patients", "mrn", chosen, ["mrn", "address"])
        north.write("patients", [{"mrn": m, "address": f"{(r['address'] or '').strip()} (flat 2)"}
                                 for m, r in current.items()], Operation.UPDATE, "mrn")
        started = time.perf_counter()
        report = outbox_round(correlation).to_json()
        round_seconds = time.perf_counter() - started
        held = resident_mb()  # what a served correlation holds between full matches
        started = time.perf_counter()
        correlation.correlate()
        full_seconds = time.perf_counter() - started
        out.write_text(json.dumps({"round": round_seconds, "full": full_seconds, "held": held,
                                   "rematched": report["rematched"],
                                   "full_matches": report["full_matches"]}))
    finally:
        ctx.systems.close()


def resident_mb() -> float:
    """This process's resident memory now, in MB (Linux)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(spec: Path, state: Path, out: Path) -> None:
    from patchbay import run_integration

    report = run_integration(spec, NAME, state=state)
    out.write_text(json.dumps(report, default=str))
    if report.get("dead"):
        raise SystemExit(f"{NAME}: {json.dumps(report, default=str)[:2000]}")


def run_child(spec: Path, state: Path, env: dict[str, str], *extra: str
              ) -> tuple[float, float, dict[str, Any]]:
    """(seconds, peak RSS in MB, report) of one `run_integration` (or, with `--rounds N`,
    `rounds_child`) in its own process."""
    out = state.parent / "report.json"
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, __file__, "--child", str(spec), str(state), str(out),
                                *extra], env={**os.environ, **env})
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"the correlation failed with status {status}")
    return seconds, usage.ru_maxrss / 1024, json.loads(out.read_text())


def linked(state: Path) -> set[tuple[str, int]]:
    from patchbay.store import Store

    return {(p.left, int(p.right)) for p in Store.open(directory=state).pairs.all(NAME)
            if p.status == "link"}


def newcomers(registers: Registers, spec: Path, state: Path, env: dict[str, str], made: Any,
              ) -> list[float]:
    """Seconds from each newcomer's second registration until `patchbay serve` links it."""
    serving = subprocess.Popen([sys.executable, "-m", "patchbay.cli", "serve", str(spec),
                                "--state", str(state), "--no-api"], env={**os.environ, **env},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_full_match(state)
        registered: dict[str, float] = {}
        linked_at: dict[str, float] = {}
        for north_row, south_row in zip(made.north, made.south, strict=True):
            with registers.north() as conn, conn.cursor() as cur:
                cur.execute(f"INSERT INTO patients ({', '.join(NORTH_COLUMNS)}) VALUES "
                            f"({', '.join(['%s'] * len(NORTH_COLUMNS))})",
                            [north_row[c] for c in NORTH_COLUMNS])
            with registers.mysql() as conn, conn.cursor() as cur:
                cur.execute(f"INSERT INTO persons ({', '.join(SOUTH_COLUMNS)}) VALUES "
                            f"({', '.join(['%s'] * len(SOUTH_COLUMNS))})",
                            [south_row[c] for c in SOUTH_COLUMNS])
            registered[north_row["mrn"]] = time.perf_counter()
            linked_at.update(newly_linked(state, registered, linked_at))
            time.sleep(0.25)
        deadline = time.perf_counter() + 120
        while len(linked_at) < len(registered) and time.perf_counter() < deadline:
            time.sleep(0.2)
            linked_at.update(newly_linked(state, registered, linked_at))
        return [linked_at[m] - registered[m] for m in registered if m in linked_at]
    finally:
        serving.send_signal(signal.SIGINT)
        serving.wait(timeout=120)


def wait_for_full_match(state: Path) -> None:
    """Until serve's first round has matched both sides in full and moved on to noticing
    changes (a cursor stored after it started)."""
    started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    for _ in range(6000):
        time.sleep(0.2)
        with sqlite3.connect(state / "state.db", timeout=30) as conn:
            if conn.execute("SELECT count(*) FROM patchbay_cursors WHERE updated_at > ?",
                            (started,)).fetchone()[0]:
                return
    raise SystemExit("serve never matched")


def newly_linked(state: Path, registered: dict[str, float], seen: dict[str, float]
                 ) -> dict[str, float]:
    waiting = [m for m in registered if m not in seen]
    if not waiting:
        return {}
    with sqlite3.connect(state / "state.db", timeout=30) as conn:
        found = conn.execute(
            f"SELECT left_key FROM patchbay_pairs WHERE status = 'link' AND left_key IN "
            f"({', '.join('?' * len(waiting))})", waiting).fetchall()
    now = time.perf_counter()
    return {m: now for (m,) in found}


def phones(made: Any) -> tuple[int, float, float, float]:
    """(values, seconds each value as written, seconds now, seconds again) to parse both
    registers' phones as the example's phone field does."""
    import pyarrow as pa

    from patchbay.elements.match import normalise
    from patchbay.spec.match import MatchFieldSpec

    spec = MatchFieldSpec.model_validate({"kind": "phone", "region": "GB"})
    columns = [pa.array([r["phone"] for r in made.north]), pa.array([r["mobile"] for r in made.south])]
    values = sum(len(c) - c.null_count for c in columns)
    started = time.perf_counter()
    for column in columns:  # what parsing did before: each distinct text, every match
        normalise._per_value(normalise.text(column), lambda v: normalise.e164.__wrapped__(v, "GB"))
    before = time.perf_counter() - started
    timed = []
    for _ in range(2):
        started = time.perf_counter()
        for column in columns:
            normalise.column(column, spec)
        timed.append(time.perf_counter() - started)
    return values, before, timed[0], timed[1]


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


# -- the run --------------------------------------------------------------------------------


def edit(registers: Registers, links: list[tuple[str, int]], count: int,
         rng: random.Random) -> tuple[dict[int, str], dict[str, str]]:
    """`count` allergies edited in the north and `count` gps in the south, of different
    linked patients: what the south (by person_no) and the north (by mrn) should then hold."""
    chosen = rng.sample(links, min(2 * count, len(links)))
    allergies = {pair: f"edited allergy {i}" for i, pair in enumerate(chosen[:count])}
    gps = {pair: f"Dr Edited {i}, Bench Surgery" for i, pair in enumerate(chosen[count:])}
    with registers.north() as conn, conn.cursor() as cur:
        cur.executemany("UPDATE patients SET allergies = %s WHERE mrn = %s",
                        [(v, mrn) for (mrn, _), v in allergies.items()])
    with registers.mysql() as conn, conn.cursor() as cur:
        cur.executemany("UPDATE persons SET primary_care = %s WHERE person_no = %s",
                        [(v, no) for (_, no), v in gps.items()])
    return {no: v for (_, no), v in allergies.items()}, {mrn: v for (mrn, _), v in gps.items()}


def converged(registers: Registers, in_south: dict[int, str], in_north: dict[str, str]) -> bool:
    with registers.mysql() as conn, conn.cursor() as cur:
        cur.execute("SELECT person_no, allergy_notes FROM persons")
        south = dict(cur.fetchall())
    with registers.north() as conn:
        north = dict(conn.execute("SELECT mrn, gp FROM patients").fetchall())
    return all(south.get(k) == v for k, v in in_south.items()) and \
        all(north.get(k) == v for k, v in in_north.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000, help="Patients in each register.")
    parser.add_argument("--shared", type=float, default=0.3)
    parser.add_argument("--edits", type=int, default=2_000, help="Edits on each side.")
    parser.add_argument("--changed", type=int, default=100,
                        help="Records changed before the timed round.")
    parser.add_argument("--newcomers", type=int, default=200,
                        help="Patients registered at both while serving.")
    parser.add_argument("--child", nargs=3, metavar=("SPEC", "STATE", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child and args.rounds:
        rounds_child(*(Path(a) for a in args.child), args.rounds)
        return
    if args.child:
        child(*(Path(a) for a in args.child))
        return
    made = generator().patients(args.records, shared=args.shared, namesakes=args.records // 100)
    registers = Registers()
    directory = Path(tempfile.mkdtemp(prefix="patchbay-bench-correlation-"))
    try:
        started = time.perf_counter()
        registers.fill(made)
        print(f"{args.records:,} patients in each register (north PostgreSQL, south MariaDB), "
              f"{len(made.shared):,} shared, {len(made.namesakes):,} namesake pairs; loaded in "
              f"{time.perf_counter() - started:.1f} s", flush=True)
        spec, state = directory / "correlation-hospitals.yaml", directory / "state"
        shutil.copy(EXAMPLES / "correlation-hospitals.yaml", spec)
        env = {"NORTH_URL": registers.north_url, "SOUTH_URL": registers.south_url}

        seconds, rss, report = run_child(spec, state, env)
        links = linked(state)
        wrong = len(links - set(made.shared))
        print(f"initial correlation: {2 * args.records / seconds:,.0f} records/s ({seconds:.1f} s "
              f"for {2 * args.records:,} records; links {len(links):,} of {len(made.shared):,} "
              f"shared, {wrong} wrong, review {report['pairs'].get('review', 0):,}; "
              f"{report['delivered']:,} records written); peak RSS {rss:.0f} MB", flush=True)

        in_south, in_north = edit(registers, sorted(links), args.edits, random.Random(3))
        started, runs, peak = time.perf_counter(), 0, 0.0
        while True:
            runs += 1
            _, rss, report = run_child(spec, state, env)
            peak = max(peak, rss)
            if converged(registers, in_south, in_north) or runs == 5:
                break
        seconds = time.perf_counter() - started
        done = converged(registers, in_south, in_north)
        print(f"{args.edits:,} edits on each side: {'converged' if done else 'NOT converged'} in "
              f"{seconds:.1f} s ({runs} run{'s' if runs > 1 else ''}; {report['delivered']:,} "
              f"records written in the last); peak RSS {peak:.0f} MB", flush=True)

        _, rss, timed = run_child(spec, state, env, "--rounds", str(args.changed))
        print(f"a round with {timed['rematched']:,} changed records re-matched: "
              f"{timed['round'] * 1000:,.0f} ms; a full match of both sides (before: every "
              f"match): {timed['full']:,.1f} s; ratio {timed['full'] / timed['round']:,.0f}x; "
              f"RSS held between full matches {timed['held']:.0f} MB, peak {rss:.0f} MB",
              flush=True)

        arriving = generator().patients(args.newcomers, shared=1.0, seed=77,
                                        start=10 * args.records)
        waited = newcomers(registers, spec, state, env, arriving)
        print(f"{args.newcomers} newcomers registered at both while serving (poll every 5 s): "
              f"{len(waited)} linked, p50 {percentile(waited, 0.5):.1f} s, p99 "
              f"{percentile(waited, 0.99):.1f} s after their second registration (before: at "
              f"the next full match, up to rematch_seconds, 300 s)" if waited else
              f"{args.newcomers} newcomers: none linked", flush=True)

        values, before, first, again = phones(made)
        print(f"phone parsing, {values:,} values: {before:.1f} s each value as written "
              f"(before); {first:.1f} s each number once (now); {again:.2f} s again at the "
              f"next full match under serve; ratio {before / first:.1f}x / "
              f"{before / max(again, 1e-9):,.0f}x", flush=True)
    finally:
        registers.drop()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
