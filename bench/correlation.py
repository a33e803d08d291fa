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

    python bench/correlation.py                      # 100,000 patients in each register
    python bench/correlation.py --records 20000 --edits 500
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import shutil
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


def child(spec: Path, state: Path, out: Path) -> None:
    from patchbay import run_integration

    report = run_integration(spec, NAME, state=state)
    out.write_text(json.dumps(report, default=str))
    if report.get("dead"):
        raise SystemExit(f"{NAME}: {json.dumps(report, default=str)[:2000]}")


def run_child(spec: Path, state: Path, env: dict[str, str]) -> tuple[float, float, dict[str, Any]]:
    """(seconds, peak RSS in MB, report) of one `run_integration` in its own process."""
    out = state.parent / "report.json"
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, __file__, "--child", str(spec), str(state), str(out)],
                               env={**os.environ, **env})
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"the correlation failed with status {status}")
    return seconds, usage.ru_maxrss / 1024, json.loads(out.read_text())


def linked(state: Path) -> set[tuple[str, int]]:
    from patchbay.store import Store

    return {(p.left, int(p.right)) for p in Store.open(directory=state).pairs.all(NAME)
            if p.status == "link"}


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
    parser.add_argument("--child", nargs=3, metavar=("SPEC", "STATE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
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
    finally:
        registers.drop()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
