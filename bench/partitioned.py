"""Benchmark: one migration of synthetic contacts, SQLite into PostgreSQL, split into key
ranges worked by 1, 2 and 4 worker processes (`patchbay run --workers N`), beside the same
run without workers (the baseline), on a PostgreSQL engine state.

Each contender is one `patchbay run` process (with its workers) on a fresh table; every
record is read back and compared. Printed per contender: seconds, rows/s, the ratio to one
worker, the peak RSS of the run process and of its largest worker, and where the CPU went
over the run: patchbay's processes, PostgreSQL's (all its backends, so also other clients'),
and the whole machine's use of its cores, which says where the limit is.

    python bench/partitioned.py                  # 5,000,000 rows
    python bench/partitioned.py --rows 500000    # a quick run
    PATCHBAY_BENCH_PG=postgresql://... to choose the database (default: local test database)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from migration import source_file, write_spec

PG_URL = os.environ.get("PATCHBAY_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
SCHEMA = "bench_partitioned"
URL = f"{PG_URL}?options=-csearch_path%3D{SCHEMA}"
TICK = os.sysconf("SC_CLK_TCK")
DDL = f"""
DROP SCHEMA IF EXISTS {SCHEMA} CASCADE;
CREATE SCHEMA {SCHEMA};
CREATE TABLE {SCHEMA}.contacts (
    id bigint PRIMARY KEY, first_name text, last_name text NOT NULL, email varchar(255),
    phone varchar(40), city text, country varchar(2), birthdate date, score double precision,
    balance numeric(12, 2), created_at timestamp, updated_at timestamp
)"""


@dataclass
class Watch:
    """What the processes used while one contender ran, sampled every tenth of a second."""

    root: int
    peak_kb: dict[int, int] = field(default_factory=dict)
    postgres: dict[int, tuple[int, int]] = field(default_factory=dict)
    """PostgreSQL processes: (CPU ticks when first seen, last seen); new ones from 0."""

    def sample(self, first: bool = False) -> None:
        for pid in _pids():
            stat = _read(f"/proc/{pid}/stat")
            if stat is None:
                continue
            name = stat[stat.index("(") + 1:stat.rindex(")")]
            rest = stat[stat.rindex(")") + 2:].split()
            ppid, ticks = int(rest[1]), int(rest[11]) + int(rest[12])
            if name == "postgres":
                start = ticks if first else self.postgres.get(pid, (0, 0))[0]
                self.postgres[pid] = (start, ticks)
            elif pid == self.root or ppid == self.root:
                status = _read(f"/proc/{pid}/status") or ""
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        self.peak_kb[pid] = max(self.peak_kb.get(pid, 0), int(line.split()[1]))

    @property
    def postgres_seconds(self) -> float:
        return sum(last - start for start, last in self.postgres.values()) / TICK


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _read(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except OSError:
        return None


def _busy() -> tuple[int, int]:
    """(busy, total) CPU ticks of the machine since boot."""
    values = [int(v) for v in (_read("/proc/stat") or "cpu 0").splitlines()[0].split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values) - idle, sum(values)


@dataclass
class Result:
    name: str
    seconds: float
    run_mb: float
    worker_mb: float
    ours: float
    postgres: float
    machine: float
    """Cores busy on average over the run (all processes of the machine)."""


def measure(name: str, workers: int | None, rows: int, source: Path) -> Result:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(DDL)
    with tempfile.TemporaryDirectory() as directory:
        path = write_spec(Path(directory) / "bench.yaml", source, URL, "contacts")
        command = [sys.executable, "-m", "patchbay.cli", "run", str(path), "--state", URL,
                   "--json", *([] if workers is None else ["--workers", str(workers)])]
        busy_before, total_before = _busy()
        ours_before = _children_cpu()
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=directory, stdout=subprocess.PIPE)
        watch = Watch(process.pid)
        watch.sample(first=True)
        while process.poll() is None:
            watch.sample()
            time.sleep(0.1)
        seconds = time.perf_counter() - started
        busy_after, total_after = _busy()
        out = process.stdout.read() if process.stdout else b""
    if process.returncode != 0:
        raise SystemExit(f"{name} failed with status {process.returncode}")
    report = json.loads(out)
    if report["verdict"] != "complete" or report["counts"]["read"] != rows:
        raise SystemExit(f"{name}: {report['verdict']} {report['verdict_reasons']}")
    with psycopg.connect(URL) as conn:
        landed = conn.execute("SELECT count(*) FROM contacts").fetchone()
    if landed is None or landed[0] != rows:
        raise SystemExit(f"{name} left {landed} rows, expected {rows}")
    peaks = dict(watch.peak_kb)
    run_kb = peaks.pop(process.pid, 0)
    ncpu = os.cpu_count() or 1
    machine = (busy_after - busy_before) / max(1, total_after - total_before) * ncpu
    ours = _children_cpu() - ours_before
    return Result(name, seconds, run_kb / 1024, max(peaks.values(), default=0) / 1024, ours,
                  watch.postgres_seconds, machine)


def _children_cpu() -> float:
    """CPU seconds of the ended child processes and theirs (the run process and its workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--workers", default="1,2,4", help="Worker counts, comma-separated.")
    args = parser.parse_args()
    print(f"preparing {args.rows:,} synthetic contacts (12 columns) in SQLite…", flush=True)
    source = source_file(args.rows)
    contenders: list[tuple[str, int | None]] = [("no workers", None)] + [
        (f"{n} worker{'s' if n > 1 else ''}", n) for n in map(int, args.workers.split(","))]
    results = []
    for name, workers in contenders:
        result = measure(name, workers, args.rows, source)
        results.append(result)
        print(f"{name:<11} {result.seconds:7.1f} s {args.rows / result.seconds:>9,.0f} rows/s  "
              f"peak RSS run {result.run_mb:5.0f} MB, worker {result.worker_mb:5.0f} MB  "
              f"CPU patchbay {result.ours:5.1f} s, PostgreSQL {result.postgres:5.1f} s, "
              f"machine {result.machine:.2f} of {os.cpu_count()} cores busy", flush=True)
    one = next((r for r in results if r.name == "1 worker"), results[0])
    print()
    for result in results:
        print(f"{result.name:<11} {one.seconds / result.seconds:.2f}x one worker")
    busiest = max(results, key=lambda r: r.machine)
    cores = os.cpu_count() or 1
    print(f"\nthe limit: the machine's {cores} cores, "
          f"{'saturated' if busiest.machine > 0.9 * cores else 'not saturated'} "
          f"({busiest.machine:.2f} busy at most); of the CPU each run used, PostgreSQL's "
          f"share: " + ", ".join(f"{r.name} {r.postgres / max(0.001, r.ours + r.postgres):.0%}"
                                  for r in results))


if __name__ == "__main__":
    main()
