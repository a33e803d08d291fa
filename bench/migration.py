"""Benchmark: migrate synthetic contacts from SQLite into PostgreSQL.

In one run, each in its own process (so peak RSS is its own):
  patchbay      the migration pattern: read, transform, conform, COPY-upsert, outcomes,
                every record read back and compared, checkpoints and the report
  patchbay-counts   the same with `verify: counts` (no read-back): the cost of verifying
  copy          hand-written: sqlite3 fetchmany -> psycopg COPY (the practical limit)
  executemany   hand-written: sqlite3 fetchmany -> psycopg executemany INSERT

    python bench/migration.py                 # 1,000,000 rows
    python bench/migration.py --rows 5000000  # memory must stay flat
    PATCHBAY_BENCH_PG=postgresql://... to choose the database (default: local test database)
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PG_URL = os.environ.get("PATCHBAY_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
TABLE = "bench_contacts"
COLUMNS = ["id", "first_name", "last_name", "email", "phone", "city", "country", "birthdate",
           "score", "balance", "created_at", "updated_at"]
DDL = f"""
DROP TABLE IF EXISTS {TABLE};
CREATE TABLE {TABLE} (
    id bigint PRIMARY KEY, first_name text, last_name text NOT NULL, email varchar(255),
    phone varchar(40), city text, country varchar(2), birthdate date, score double precision,
    balance numeric(12, 2), created_at timestamp, updated_at timestamp
)"""

FIRST = ["Anna", "Ben", "Chloé", "Dmitri", "Eva", "Farid", "Grace", "Hiro", "Ines", "Jonas",
         "Kemal", "Lena", "Mateo", "Nora", "Olu", "Priya", "Quentin", "Rosa", "Sven", "Yuki"]
LAST = ["Müller", "Smith", "García", "Rossi", "Nowak", "Dubois", "Tanaka", "Okafor", "Larsen",
        "Silva", "Kowalski", "Jensen", "Moreau", "Novak", "Schmidt", "Brown", "Khan", "Berg"]
CITIES = [("Berlin", "DE"), ("Paris", "FR"), ("Austin", "US"), ("Lyon", "FR"), ("Graz", "AT"),
          ("Leeds", "GB"), ("Osaka", "JP"), ("Porto", "PT"), ("Basel", "CH"), ("Delft", "NL")]


def source_file(rows: int, seed: int = 42) -> Path:
    """The synthetic SQLite source, built once per (rows, seed) and reused."""
    path = Path(tempfile.gettempdir()) / f"patchbay-bench-contacts-{rows}-{seed}.db"
    if path.exists():
        return path
    rng = random.Random(seed)
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    db = sqlite3.connect(partial)
    db.execute("CREATE TABLE contacts (id INTEGER PRIMARY KEY, first_name TEXT, last_name TEXT, "
               "email TEXT, phone TEXT, city TEXT, country TEXT, birthdate TEXT, score REAL, "
               "balance TEXT, created_at TEXT, updated_at TEXT)")
    epoch = dt.datetime(2015, 1, 1)
    chunk = []
    for i in range(1, rows + 1):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        city, country = rng.choice(CITIES)
        created = epoch + dt.timedelta(seconds=rng.randrange(300_000_000))
        chunk.append((i, first, last, f"{first}.{last}.{i}@example.com".lower(),
                      f"+49 30 {rng.randrange(10**7):07d}", city, country,
                      dt.date(1950 + rng.randrange(55), 1 + rng.randrange(12),
                              1 + rng.randrange(28)).isoformat(),
                      round(rng.random() * 100, 3), f"{rng.randrange(10**8) / 100:.2f}",
                      created.isoformat(sep=" "),
                      (created + dt.timedelta(seconds=rng.randrange(10**7))).isoformat(sep=" ")))
        if len(chunk) == 50_000:
            db.executemany("INSERT INTO contacts VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", chunk)
            chunk.clear()
    db.executemany("INSERT INTO contacts VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", chunk)
    db.commit()
    db.close()
    partial.rename(path)
    return path


def reset_table() -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(DDL)


def row_count() -> int:
    import psycopg

    with psycopg.connect(PG_URL) as conn:
        row = conn.execute(f"SELECT count(*) FROM {TABLE}").fetchone()
        return int(row[0]) if row else 0


# -- the three contenders, each run in a child process -----------------------------------------


def run_copy(source: Path) -> None:
    import psycopg

    src = sqlite3.connect(source)
    cursor = src.execute(f"SELECT {', '.join(COLUMNS)} FROM contacts ORDER BY id")
    with (psycopg.connect(PG_URL) as conn, conn.cursor() as cur,
          cur.copy(f"COPY {TABLE} ({', '.join(COLUMNS)}) FROM STDIN") as copy):
        while rows := cursor.fetchmany(10_000):
            for row in rows:
                copy.write_row(row)


def run_executemany(source: Path) -> None:
    import psycopg

    src = sqlite3.connect(source)
    cursor = src.execute(f"SELECT {', '.join(COLUMNS)} FROM contacts ORDER BY id")
    marks = ", ".join(["%s"] * len(COLUMNS))
    with psycopg.connect(PG_URL) as conn, conn.cursor() as cur:
        while rows := cursor.fetchmany(10_000):
            cur.executemany(f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES ({marks})", rows)


def write_spec(path: Path, source: Path, warehouse: str, table: str,
               verify: str = "full") -> Path:
    """The benchmarked integration: the contacts of `source` upserted into `table` of the
    `warehouse` database, every field as it is."""
    fields = "\n".join(f"        {c}: {c}" for c in COLUMNS)
    path.write_text(f"""
systems:
  legacy: sqlite:///{source}
  warehouse: {warehouse}
integrations:
  - name: bench contacts
    pattern: migration
    source: {{system: legacy, object: contacts, key: id}}
    transform:
      fields:
{fields}
    destination: {{system: warehouse, object: {table}, operation: upsert, key: id}}
    options: {{batch_size: 10000, verify: {verify}}}
""")
    return path


def run_patchbay(source: Path, workdir: Path, verify: str = "full") -> None:
    from patchbay.runtime import runner
    from patchbay.store import Store

    spec = write_spec(workdir / "bench.yaml", source, PG_URL, TABLE, verify)
    invocation = runner.Invocation.load(spec, None, {})
    store = Store.open(directory=workdir / "state")
    report = runner.run(invocation.context(store, workdir / "runs"))
    if report["verdict"] != "complete":
        raise SystemExit(f"patchbay run not complete: {report['verdict']} {report['verdict_reasons']}")


def child(which: str, rows: int) -> None:
    source = source_file(rows)
    if which == "copy":
        run_copy(source)
    elif which == "executemany":
        run_executemany(source)
    else:
        with tempfile.TemporaryDirectory() as workdir:
            run_patchbay(source, Path(workdir), "counts" if which == "patchbay-counts" else "full")


def measure(which: str, rows: int) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one contender in its own process."""
    reset_table()
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, __file__, "--child", which, "--rows", str(rows)])
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if status != 0:
        raise SystemExit(f"{which} failed with status {status}")
    landed = row_count()
    if landed != rows:
        raise SystemExit(f"{which} left {landed} rows, expected {rows}")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--child", choices=["patchbay", "patchbay-counts", "copy", "executemany"])
    parser.add_argument("--skip-executemany", action="store_true",
                        help="Leave out the slowest baseline.")
    args = parser.parse_args()
    if args.child:
        child(args.child, args.rows)
        return
    print(f"preparing {args.rows:,} synthetic contacts (12 columns) in SQLite…", flush=True)
    source_file(args.rows)
    contenders = ["copy", "patchbay", "patchbay-counts"] + (
        [] if args.skip_executemany else ["executemany"])
    results = {}
    for which in contenders:
        seconds, rss = measure(which, args.rows)
        results[which] = (seconds, rss)
        print(f"{which:<16} {seconds:8.2f} s  {args.rows / seconds:>10,.0f} rows/s  "
              f"peak RSS {rss:7.1f} MB", flush=True)
    copy_rate = args.rows / results["copy"][0]
    patchbay_rate = args.rows / results["patchbay"][0]
    print(f"patchbay vs PostgreSQL COPY: {patchbay_rate / copy_rate:.2f}x COPY "
          "(every record read back and compared)")
    counts_rate = args.rows / results["patchbay-counts"][0]
    print(f"patchbay, verify: counts, vs PostgreSQL COPY: {counts_rate / copy_rate:.2f}x COPY")
    if "executemany" in results:
        print(f"patchbay vs executemany: {patchbay_rate / (args.rows / results['executemany'][0]):.2f}x")


if __name__ == "__main__":
    main()
