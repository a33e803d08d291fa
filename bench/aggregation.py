"""Benchmark: an aggregation report from SQLite accounts and PostgreSQL orders.

Accounts (SQLite) are merged with their orders (PostgreSQL) into one row per account with
the account's order count, total and last order date, written as a Parquet report. In one
run, each contender in its own process (so peak RSS is its own):
  patchbay   the aggregation pattern through patchbay.run_integration: both sources read in
             parallel, merged in DuckDB, the report written (merge.flags off: no other
             report has the _sources and _differs columns)
  duckdb     hand-written, the practical limit: sqlite3 into Arrow, psycopg COPY TO STDOUT
             (CSV) parsed by Arrow, the join and grouping in DuckDB, DuckDB's Parquet writer
  pandas     what a user would write: pd.read_sql for both, groupby, merge, to_parquet
Each time runs from the contender's first import (timed apart too) to its report written.
The three reports must agree on every account's fields, order count, total (to the cent:
pandas reads numeric as float) and last order, or the run fails.

    python bench/aggregation.py                                   # 1,000,000 accounts, 2,000,000 orders
    python bench/aggregation.py --accounts 100000 --orders 200000 --keep
    PATCHBAY_BENCH_PG=postgresql://... to choose the database (default: local test database)
"""

from __future__ import annotations

import argparse
import cProfile
import importlib
import json
import os
import random
import re
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PG_URL = os.environ.get("PATCHBAY_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
ACCOUNT_COLUMNS = ["account_id", "name", "email", "country", "created_at"]
ORDER_COLUMNS = ["account_id", "amount", "ordered_at"]
"""The columns of orders the report needs: every contender reads these and no others."""
COUNTRIES = ["DE", "FR", "US", "GB", "AT", "CH", "NL", "JP", "PT", "SE", None]
STATUSES = ["open", "paid", "shipped", "cancelled", "refunded"]
PARTS = ["duckdb", "patchbay", "pandas"]
IMPORTS = {"duckdb": ["duckdb", "psycopg", "pyarrow.csv"], "pandas": ["pandas", "sqlalchemy"],
           "patchbay": ["patchbay"]}
"""What each contender imports, timed apart (and included in its time)."""
CENTS = "CAST(round(total * 100) AS HUGEINT)"
"""A total in cents: pandas reads numeric as float (read_sql's default), the others as decimal."""
EPOCH = 1_420_070_400  # 2015-01-01, in seconds


def names(accounts: int, orders: int) -> tuple[Path, str]:
    """The SQLite file and the PostgreSQL table of this size of data."""
    return (Path(tempfile.gettempdir()) / f"patchbay-bench-accounts-{accounts}.db",
            f"bench_agg_orders_{accounts}_{orders}")


def prepare_accounts(path: Path, accounts: int) -> None:
    if path.exists():
        return
    rng = random.Random(7)
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    db = sqlite3.connect(partial)
    db.execute("CREATE TABLE accounts (account_id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
               "email TEXT, country TEXT, created_at TEXT)")
    rows = ((i, f"Account {i}", f"buyer{i}@example.com", rng.choice(COUNTRIES),
             time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(EPOCH + rng.randrange(300_000_000))))
            for i in range(1, accounts + 1))
    with db:
        db.executemany("INSERT INTO accounts VALUES (?, ?, ?, ?, ?)", rows)
    db.close()
    partial.rename(path)


def prepare_orders(table: str, accounts: int, orders: int) -> None:
    """Orders of random accounts (some accounts have none), COPY'd in as text in blocks."""
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        exists = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
        if exists and exists[0]:
            counted = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
            if counted and counted[0] == orders:
                return
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(f"CREATE TABLE {table} (order_id bigint PRIMARY KEY, account_id bigint NOT NULL, "
                     "amount numeric(12, 2) NOT NULL, ordered_at timestamptz NOT NULL, status text)")
        rng = random.Random(11)
        block: list[str] = []
        with conn.cursor() as cur, cur.copy(f"COPY {table} FROM STDIN") as copy:
            for i in range(1, orders + 1):
                cents = rng.randrange(100, 5_000_000)
                at = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(EPOCH + rng.randrange(300_000_000)))
                block.append(f"{i}\t{rng.randrange(1, accounts + 1)}\t{cents // 100}.{cents % 100:02d}\t"
                             f"{at}.{rng.randrange(1_000_000):06d}+00\t{rng.choice(STATUSES)}\n")
                if len(block) == 100_000:
                    copy.write("".join(block))
                    block.clear()
            copy.write("".join(block))
        conn.execute(f"VACUUM ANALYZE {table}")  # hint bits set now, not by the first contender


def drop_orders(table: str) -> None:
    import psycopg

    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")


# -- the three contenders, each run in a child process -----------------------------------------


def run_duckdb(accounts_db: Path, orders: str, out: Path) -> None:
    import io

    import duckdb
    import psycopg
    import pyarrow as pa
    import pyarrow.csv as arrow_csv

    # Rows into one struct array, then split into columns: Arrow's fastest way from tuples.
    row = pa.struct([("account_id", pa.int64()), ("name", pa.string()), ("email", pa.string()),
                     ("country", pa.string()), ("created_at", pa.string())])
    batches = []
    src = sqlite3.connect(accounts_db)
    cursor = src.execute(f"SELECT {', '.join(ACCOUNT_COLUMNS)} FROM accounts")
    while rows := cursor.fetchmany(100_000):
        batches.append(pa.RecordBatch.from_struct_array(pa.array(rows, row)))
    src.close()
    accounts = pa.Table.from_batches(batches)

    sink = io.BytesIO()
    with psycopg.connect(PG_URL) as conn, conn.cursor() as cur, cur.copy(
            f"COPY (SELECT {', '.join(ORDER_COLUMNS)} FROM {orders}) TO STDOUT (FORMAT csv)") as copy:
        for data in copy:
            sink.write(data)
    sink.seek(0)
    order_table = arrow_csv.read_csv(
        sink, arrow_csv.ReadOptions(column_names=ORDER_COLUMNS),
        convert_options=arrow_csv.ConvertOptions(column_types={
            "account_id": pa.int64(), "amount": pa.decimal128(12, 2),
            "ordered_at": pa.timestamp("us", "UTC")}))
    del sink

    with duckdb.connect() as con:
        con.register("accounts", accounts)
        con.register("orders", order_table)
        con.execute(f"""
            COPY (SELECT a.*, coalesce(o.order_count, 0) AS order_count, o.total, o.last_order
                  FROM accounts a LEFT JOIN (
                      SELECT account_id, count(*) AS order_count, sum(amount) AS total,
                             max(ordered_at) AS last_order
                      FROM orders GROUP BY account_id) o USING (account_id))
            TO '{out}' (FORMAT parquet)""")


def run_pandas(accounts_db: Path, orders: str, out: Path) -> None:
    import pandas as pd
    import sqlalchemy as sa

    with sqlite3.connect(accounts_db) as src:
        accounts = pd.read_sql(f"SELECT {', '.join(ACCOUNT_COLUMNS)} FROM accounts", src)
    engine = sa.create_engine(re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", PG_URL))
    with engine.connect() as conn:
        order_frame = pd.read_sql(f"SELECT {', '.join(ORDER_COLUMNS)} FROM {orders}", conn)
    engine.dispose()
    per_account = order_frame.groupby("account_id").agg(
        order_count=("amount", "size"), total=("amount", "sum"), last_order=("ordered_at", "max"))
    report = accounts.merge(per_account, on="account_id", how="left")
    report["order_count"] = report["order_count"].fillna(0).astype("int64")
    report.to_parquet(out, index=False)


def run_patchbay(accounts_db: Path, orders: str, out: Path, workdir: Path) -> None:
    import patchbay

    # flags: false, so that the report holds what the other contenders' reports hold (with one
    # union source, _sources and _differs would be the same on every row anyway).
    spec = workdir / "bench.yaml"
    spec.write_text(f"""
systems:
  crm: sqlite:///{accounts_db}
  shop: {PG_URL}
integrations:
  - name: account orders
    pattern: aggregation
    sources:
      - name: accounts
        system: crm
        object: accounts
        transform:
          fields: {{{", ".join(f"{c}: {c}" for c in ACCOUNT_COLUMNS)}}}
      - name: orders
        system: shop
        object: {orders}
        transform:
          fields: {{{", ".join(f"{c}: {c}" for c in ORDER_COLUMNS)}}}
    merge:
      union: [accounts]
      key: account_id
      flags: false
      enrich:
        - source: orders
          join: {{account_id: account_id}}
          aggregate:
            order_count: {{count: "*"}}
            total: {{sum: amount}}
            last_order: {{max: ordered_at}}
    reports:
      - file: {out}
    options: {{timeout_seconds: 600}}
""")
    report = patchbay.run_integration(spec, "account orders", state=workdir / "state")
    if report["status"] != "complete":
        raise SystemExit(f"patchbay run not complete: {json.dumps(report, default=str)}")


def part(which: str, accounts: int, orders: int, out: Path, profile: Path | None) -> None:
    """One contender, timed from its imports to its report written; prints its figures."""
    accounts_db, table = names(accounts, orders)
    with tempfile.TemporaryDirectory() as work:
        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        started = time.perf_counter()
        for module in IMPORTS[which]:
            importlib.import_module(module)
        imported = time.perf_counter()
        if which == "duckdb":
            run_duckdb(accounts_db, table, out)
        elif which == "pandas":
            run_pandas(accounts_db, table, out)
        else:
            run_patchbay(accounts_db, table, out, Path(work))
        ended = time.perf_counter()
        if profiler and profile:
            profiler.disable()
            profiler.dump_stats(profile)
    print(json.dumps({"seconds": ended - started, "imports": imported - started,
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def measure(which: str, args: argparse.Namespace, out: Path) -> dict[str, float]:
    """Seconds (of which imports) and peak RSS in MB of one contender, in a process of its own."""
    command = [sys.executable, __file__, "--part", which, "--accounts", str(args.accounts),
               "--orders", str(args.orders), "--out", str(out)]
    if args.profile and which == "patchbay":
        command += ["--profile", str(args.profile)]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{which} failed with status {done.returncode}")
    figures: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures


def check(outputs: dict[str, Path], accounts: int) -> None:
    """The reports agree: one row per account, and per account the same fields, count, total
    and last order; otherwise the run fails, naming what differs."""
    import duckdb

    with duckdb.connect() as con:
        totals = {}
        for which, path in outputs.items():
            rows, ids, count, cents = con.execute(
                f"SELECT count(*), count(DISTINCT account_id), sum(order_count), sum({CENTS}) "
                "FROM read_parquet(?)", [str(path)]).fetchone() or (0, 0, 0, 0)
            if rows != accounts or ids != accounts:
                raise SystemExit(f"{which} report has {rows:,} rows for {ids:,} accounts, "
                                 f"expected {accounts:,}")
            totals[which] = (count, cents)
        if len(set(totals.values())) != 1:
            raise SystemExit(f"the reports disagree on order count and total: {totals}")
        reference = outputs["duckdb"]
        compared = f"account_id, name, email, country, created_at, order_count, {CENTS}, last_order"
        for which, path in outputs.items():
            differing = con.execute(f"""
                SELECT count(DISTINCT account_id) FROM (
                    (SELECT {compared} FROM read_parquet($a) EXCEPT SELECT {compared} FROM read_parquet($b))
                    UNION ALL
                    (SELECT {compared} FROM read_parquet($b) EXCEPT SELECT {compared} FROM read_parquet($a)))
                """, {"a": str(reference), "b": str(path)}).fetchone()
            if differing and differing[0]:
                raise SystemExit(f"{which} and duckdb disagree on {differing[0]:,} of {accounts:,} accounts")
    count, cents = totals["duckdb"]
    print(f"reports agree: {accounts:,} rows, {count:,} orders, total {cents // 100:,}.{cents % 100:02d}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--accounts", type=int, default=1_000_000)
    parser.add_argument("--orders", type=int, default=2_000_000)
    parser.add_argument("--keep", action="store_true",
                        help="Keep the generated data for the next run (and reuse it if there).")
    parser.add_argument("--profile", type=Path,
                        help="Write a cProfile of patchbay's part to this file.")
    parser.add_argument("--part", choices=PARTS, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.part:
        part(args.part, args.accounts, args.orders, args.out, args.profile)
        return
    accounts_db, table = names(args.accounts, args.orders)
    try:
        print(f"preparing {args.accounts:,} accounts in SQLite and {args.orders:,} orders in PostgreSQL…",
              flush=True)
        started = time.perf_counter()
        prepare_accounts(accounts_db, args.accounts)
        prepare_orders(table, args.accounts, args.orders)
        print(f"  ready in {time.perf_counter() - started:.1f} s", flush=True)
        with tempfile.TemporaryDirectory() as reports:
            outputs = {which: Path(reports) / f"{which}.parquet" for which in PARTS}
            results = {}
            for which in PARTS:
                results[which] = figures = measure(which, args, outputs[which])
                print(f"{which:<9} {figures['seconds']:7.2f} s (imports {figures['imports']:.2f} s)  "
                      f"peak RSS {figures['rss_mb']:7.1f} MB", flush=True)
            check(outputs, args.accounts)
    finally:
        if not args.keep:
            accounts_db.unlink(missing_ok=True)
            drop_orders(table)
    patchbay_s, duckdb_s, pandas_s = (results[w]["seconds"] for w in ("patchbay", "duckdb", "pandas"))
    print(f"patchbay vs hand-written DuckDB: {duckdb_s / patchbay_s:.2f} (target ≥ 0.7)")
    print(f"patchbay vs pandas: {pandas_s / patchbay_s:.1f}x faster (target ≥ 3)")


if __name__ == "__main__":
    main()
