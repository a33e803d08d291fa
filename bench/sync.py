"""Benchmark: a bi-directional sync between a PostgreSQL table and the local org's Account.

In one run (the local org served in this process; each patchbay side in its own process, so
its peak RSS is its own):
  initial sync   half the records pre-exist in PostgreSQL, half in the local org, none
                 matching: one `run_integration` of the sync until it converges creates each
                 side's records on the other; records/s into PostgreSQL and into the org, and
                 peak RSS at a small and at the full size (it should stay flat)
  migration      the baseline: a plain migration of the org's half into PostgreSQL
  convergence    `patchbay serve` keeps the sync going with change capture on both sides
                 (PostgreSQL capture installed by `patchbay cdc install`, Salesforce CDC);
                 writers update random records on both sides at a fixed rate; for each
                 change, the time until the other side holds the new value; p50 and p99

    python bench/sync.py                        # 100,000 records; 50 changes/s for 30 s
    python bench/sync.py --records 20000 --rate 20 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import psycopg

from patchbay.connectors.salesforce import SalesforceConnector
from patchbay.localorg.org import OrgConfig
from patchbay.localorg.running import LocalOrg
from patchbay.model import Operation, Status
from patchbay.spec import SystemSpec

PG_URL = os.environ.get("PATCHBAY_BENCH_PG", "postgresql://postgres@127.0.0.1:5432/test")
SCHEMA = {"fields": {"Account": [
    {"name": "Patchbay_Id__c", "type": "string", "length": 40, "externalId": True, "unique": True},
    {"name": "Legacy_Id__c", "type": "string", "length": 40, "externalId": True, "unique": True}]}}
CLIENT = {"client_id": "patchbay-local-key", "client_secret": "patchbay-local-secret"}
PATCHBAY = [sys.executable, "-c", "from patchbay.cli import main; main()"]


# -- the two sides --------------------------------------------------------------------------


def create_table(table: str) -> None:
    """The PostgreSQL side: its own key, the gid column, and a watermark the database keeps."""
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"CREATE TABLE {table} (id bigserial PRIMARY KEY, name text, phone text, "
                     "city text, patchbay_id text UNIQUE, "
                     "updated_at timestamptz NOT NULL DEFAULT clock_timestamp())")
        conn.execute(f"CREATE INDEX ON {table} (updated_at, id)")
        conn.execute(f"CREATE FUNCTION {table}_stamp() RETURNS trigger LANGUAGE plpgsql AS "
                     "$$ BEGIN NEW.updated_at := clock_timestamp(); RETURN NEW; END $$")
        conn.execute(f"CREATE TRIGGER {table}_stamp BEFORE UPDATE ON {table} FOR EACH ROW "
                     f"EXECUTE FUNCTION {table}_stamp()")


def drop_table(table: str) -> None:
    with psycopg.connect(PG_URL, autocommit=True) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}; DROP TABLE IF EXISTS {table}_backup; "
                     f"DROP FUNCTION IF EXISTS {table}_stamp()")


def fill_table(table: str, count: int) -> None:
    with psycopg.connect(PG_URL) as conn, conn.cursor() as cur, \
            cur.copy(f"COPY {table} (name, phone, city) FROM STDIN") as copy:
        for i in range(count):
            copy.write_row((f"PG account {i}", f"+49 30 {i:07d}", f"City {i % 97}"))


def connector(org: LocalOrg) -> SalesforceConnector:
    return SalesforceConnector(SystemSpec(url=f"salesforce+http://127.0.0.1:{org.port}",
                                          name="crm", options=CLIENT))


def fill_org(org: LocalOrg, count: int) -> None:
    """Accounts made in the org (no gid yet), loaded through Bulk 2.0 like any client's."""
    records = [{"Legacy_Id__c": f"L-{i}", "Name": f"Org account {i}", "Phone": f"+33 1 {i:07d}",
                "BillingCity": f"Ville {i % 89}"} for i in range(count)]
    outcomes = connector(org).write("Account", records, Operation.UPSERT, "Legacy_Id__c")
    created = sum(o.status is Status.CREATED for o in outcomes)
    if created != count:
        raise SystemExit(f"only {created} of {count} accounts were created in the org")


def org_count(org: LocalOrg, where: str = "1 = 1") -> int:
    with org.org.storage.lock:
        return int(org.org.storage.db.execute(
            f'SELECT count(*) FROM "Account" WHERE "IsDeleted" = 0 AND {where}').fetchone()[0])


def table_count(table: str, where: str = "true") -> int:
    with psycopg.connect(PG_URL) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()
        return int(row[0]) if row else 0


def converged(org: LocalOrg, table: str, records: int) -> bool:
    """Both sides hold every record, each carrying its gid (the records a side held first get
    theirs written too)."""
    return (table_count(table), org_count(org)) == (records, records) and \
        table_count(table, "patchbay_id IS NOT NULL") == records == \
        org_count(org, '"Patchbay_Id__c" IS NOT NULL')


def spec_file(directory: Path, org: LocalOrg, table: str, name: str, changes: str,
              poll: float) -> Path:
    watermarks = ("", "") if changes == "cdc" else (
        "\n            watermark: updated_at", "\n            watermark: SystemModstamp")
    path = directory / f"{name}.yaml"
    path.write_text(f"""
systems:
  crm:
    url: salesforce+http://127.0.0.1:{org.port}
    options: {json.dumps(CLIENT)}
  warehouse: {PG_URL}
integrations:
  - name: {name}
    pattern: sync
    trigger: {{changes: {changes}, poll_seconds: {poll}}}
    participants:
      - {{name: warehouse, system: warehouse}}
      - {{name: crm, system: crm}}
    deletes: {{check_seconds: null}}
    objects:
      - name: account
        match: [name]
        fields: [name, phone, city]
        participants:
          warehouse:
            object: {table}
            key: id
            external_id: patchbay_id{watermarks[0]}
            fields: [name, phone, city]
          crm:
            object: Account
            key: Id
            external_id: Patchbay_Id__c{watermarks[1]}
            fields: {{name: Name, phone: Phone, city: BillingCity}}
    options: {{batch_size: 2000, lease_seconds: 300}}
  - name: {name} baseline
    pattern: migration
    source: {{system: crm, object: Account, key: Id, fields: [Id, Name, Phone, BillingCity]}}
    transform: {{fields: {{id: Id, name: Name, phone: Phone, city: BillingCity}}}}
    destination: {{system: warehouse, object: {table}_backup, operation: upsert, key: id}}
    options: {{batch_size: 2000, verify: counts}}
""")
    return path


# -- in a child process: one patchbay run -----------------------------------------------------


def child(spec: Path, name: str, state: Path) -> None:
    from patchbay import run_integration

    report = run_integration(spec, name, state=state)
    if report.get("dead") or report.get("verdict") not in (None, "complete"):
        raise SystemExit(f"{name}: {json.dumps(report, default=str)[:2000]}")
    # Its own peak: getrusage's ru_maxrss of a forked child keeps the forking process's
    # (this bench's, with the local org in it) across exec; VmHWM is the new process's.
    with open("/proc/self/status", encoding="ascii") as status:
        print(next(line.split()[1] for line in status if line.startswith("VmHWM:")))


def run_child(spec: Path, name: str, state: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one `run_integration` in its own process."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--child", str(spec), name, str(state)],
                          stdout=subprocess.PIPE, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{name} failed with status {done.returncode}")
    return seconds, int(done.stdout.split()[-1]) / 1024


# -- initial sync -----------------------------------------------------------------------------


def initial(records: int, baseline: bool) -> tuple[float, float, float | None]:
    """(seconds of the sync, its peak RSS in MB, seconds of the baseline migration)."""
    half = records // 2
    table = f"bench_sync_{uuid.uuid4().hex[:6]}"
    name = f"bench sync {table}"
    create_table(table)
    try:
        with LocalOrg(OrgConfig(custom_schema=SCHEMA)) as org, \
                tempfile.TemporaryDirectory() as work:
            fill_table(table, half)
            fill_org(org, half)
            spec = spec_file(Path(work), org, table, name, "poll", 1)
            migrated = None
            if baseline:
                with psycopg.connect(PG_URL, autocommit=True) as conn:
                    conn.execute(f"CREATE TABLE {table}_backup (id text PRIMARY KEY, name text, "
                                 "phone text, city text)")
                migrated, _ = run_child(spec, f"{name} baseline", Path(work) / "baseline")
                if table_count(f"{table}_backup") != half:
                    raise SystemExit("the baseline migration did not copy every account")
            seconds, rss = run_child(spec, name, Path(work) / "state")
            if not converged(org, table, records):
                raise SystemExit(f"not converged: PostgreSQL {table_count(table)} rows, "
                                 f"org {org_count(org)} Accounts")
        return seconds, rss, migrated
    finally:
        drop_table(table)


# -- convergence under load -------------------------------------------------------------------


def convergence(org: LocalOrg, table: str, records: int, spec: Path, name: str, state: Path,
                rate: int, seconds: float) -> tuple[list[float], int]:
    """(delays in seconds of the changes that arrived, changes made); a change overwritten
    before it arrived is not measured."""
    log = open(state.parent / "serve.log", "w", encoding="utf-8")  # noqa: SIM115
    serve = subprocess.Popen([*PATCHBAY, "serve", str(spec), "-i", name, "--state", str(state),
                              "--no-api"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and not converged(org, table, records):
            if serve.poll() is not None:
                raise SystemExit("serve stopped before the first sync converged")
            time.sleep(0.5)
        time.sleep(2)  # the echoes of the first sync's writes
        with psycopg.connect(PG_URL) as conn:
            pg_keys: dict[str, int] = dict(conn.execute(f"SELECT name, id FROM {table}").fetchall())
        with org.org.storage.lock:
            org_keys = dict(org.org.storage.db.execute(
                'SELECT "Name", "Id" FROM "Account" WHERE "IsDeleted" = 0').fetchall())
        # A record is known by its name on both sides (every name is distinct).
        names = sorted(pg_keys.keys() & org_keys.keys())
        # name -> (the side that must receive it, value, when it was written)
        pending: dict[str, tuple[str, str, float]] = {}
        delays: list[float] = []
        lock = threading.Lock()
        made = [0]
        stop = threading.Event()

        def note(record: str, towards: str, value: str) -> None:
            with lock:
                pending[record] = (towards, value, time.perf_counter())
                made[0] += 1

        def write_table() -> None:
            rng = random.Random(1)
            with psycopg.connect(PG_URL, autocommit=True) as conn:
                started, i = time.perf_counter(), 0
                while not stop.is_set():
                    i += 1
                    record, value = rng.choice(names), f"pg-{i}"
                    conn.execute(f"UPDATE {table} SET phone = %s WHERE id = %s",
                                 (value, pg_keys[record]))
                    note(record, "crm", value)
                    time.sleep(max(0.0, started + i / (rate / 2) - time.perf_counter()))

        def write_org() -> None:
            rng, crm = random.Random(2), connector(org)
            started, i = time.perf_counter(), 0
            while not stop.is_set():
                i += 1
                record, value = rng.choice(names), f"sf-{i}"
                [outcome] = crm.write("Account", [{"Id": org_keys[record], "Phone": value}],
                                      Operation.UPDATE, "Id")
                if outcome.status.is_success:
                    note(record, "warehouse", value)
                time.sleep(max(0.0, started + i / (rate / 2) - time.perf_counter()))

        def arrived(towards: str, held: dict[str, str]) -> None:
            now = time.perf_counter()
            with lock:
                for record, value in held.items():
                    wanted = pending.get(record)
                    if wanted is not None and wanted[0] == towards and wanted[1] == value:
                        delays.append(now - wanted[2])
                        del pending[record]

        writers = [threading.Thread(target=write_table), threading.Thread(target=write_org)]
        for writer in writers:
            writer.start()
        started = time.perf_counter()
        with psycopg.connect(PG_URL, autocommit=True) as conn:
            # The monitor reads only the changed rows of each side, by its modification stamp;
            # on PostgreSQL a few seconds back, for a write stamped before it commits.
            since_table = conn.execute("SELECT clock_timestamp()").fetchone()[0]  # type: ignore[index]
            since_org = "2000-01-01T00:00:00.000Z"
            while time.perf_counter() - started < seconds + 30:
                if time.perf_counter() - started >= seconds:
                    stop.set()
                    with lock:
                        if not pending:
                            break
                rows = conn.execute(f"SELECT name, phone, updated_at FROM {table} "
                                    "WHERE updated_at > %s - interval '5 seconds'",
                                    (since_table,)).fetchall()
                if rows:
                    since_table = max(r[2] for r in rows)
                    arrived("warehouse", {r[0]: r[1] for r in rows})
                with org.org.storage.lock:
                    found = org.org.storage.db.execute(
                        'SELECT "Name", "Phone", "SystemModstamp" FROM "Account" '
                        'WHERE "SystemModstamp" >= ?', (since_org,)).fetchall()
                if found:
                    since_org = max(r[2] for r in found)
                    arrived("crm", {r[0]: r[1] for r in found})
                time.sleep(0.02)
        stop.set()
        for writer in writers:
            writer.join()
        return delays, made[0]
    finally:
        serve.terminate()
        serve.wait(timeout=30)
        log.close()
        dead = (state.parent / "serve.log").read_text(encoding="utf-8").count("dead")
        if dead:
            print(f"serve logged {dead} rounds with dead letters", file=sys.stderr)


def steady(records: int, rate: int, seconds: float) -> tuple[float, float, int, int]:
    """(p50 and p99 in seconds, changes measured, changes overwritten or not arrived)."""
    half = records // 2
    table = f"bench_sync_{uuid.uuid4().hex[:6]}"
    name = f"bench sync {table}"
    create_table(table)
    try:
        with LocalOrg(OrgConfig(custom_schema=SCHEMA)) as org, \
                tempfile.TemporaryDirectory() as work:
            fill_table(table, half)
            fill_org(org, half)
            spec = spec_file(Path(work), org, table, name, "cdc", 0.05)
            subprocess.run([*PATCHBAY, "cdc", "install", str(spec), "-i", name], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                delays, made = convergence(org, table, records, spec, name,
                                           Path(work) / "state", rate, seconds)
            finally:
                subprocess.run([*PATCHBAY, "cdc", "remove", str(spec), "-i", name],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        delays.sort()
        p50 = statistics.median(delays)
        p99 = delays[min(len(delays) - 1, int(len(delays) * 0.99))]
        return p50, p99, len(delays), made - len(delays)
    finally:
        drop_table(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--records", type=int, default=100_000)
    parser.add_argument("--small", type=int, default=20_000,
                        help="The smaller initial sync, to compare peak RSS with.")
    parser.add_argument("--steady-records", type=int, default=4_000,
                        help="Records synced before the convergence test.")
    parser.add_argument("--rate", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--child", nargs=3, metavar=("SPEC", "NAME", "STATE"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), args.child[1], Path(args.child[2]))
        return
    half = args.records // 2
    print(f"{args.records:,} records: {half:,} in PostgreSQL, {half:,} Accounts in the local "
          "org, none matching", flush=True)
    small_seconds, small_rss, _ = initial(args.small, baseline=False)
    seconds, rss, migrated = initial(args.records, baseline=True)
    assert migrated is not None
    print(f"migration org → PostgreSQL (baseline)  {migrated:7.2f} s  "
          f"{half / migrated:>8,.0f} records/s")
    print(f"initial sync: {args.records / seconds:,.0f} records/s ({seconds:.2f} s; "
          f"{half / seconds:,.0f} records/s into PostgreSQL and {half / seconds:,.0f} into the "
          "org, at once)")
    print(f"initial sync vs migration, records/s into PostgreSQL: {migrated / seconds:.2f}x")
    print(f"peak RSS of the sync: {small_rss:.0f} MB at {args.small:,} records, {rss:.0f} MB at "
          f"{args.records:,} ({small_seconds:.2f} s at {args.small:,})", flush=True)
    p50, p99, measured, lost = steady(args.steady_records, args.rate, args.seconds)
    print(f"convergence at {args.rate} changes/s: p50 {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms "
          f"({measured:,} changes; {lost} overwritten or not arrived)")
    print(f"peak RSS of this process (local org, writers, monitor) "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    main()
