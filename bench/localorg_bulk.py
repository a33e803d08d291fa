"""Benchmark: load Contacts into the local org through Bulk API 2.0.

In one run: patchbay's Salesforce connector upserting N contacts through a Bulk 2.0 ingest
job of the local org (served on a free port, over HTTP), beside the baseline of inserting
the same rows straight into the org's SQLite table with executemany (what the storage
itself can take). Prints seconds, rows/s, the ratio, and peak RSS of this process.

    python bench/localorg_bulk.py            # 100,000 contacts
    python bench/localorg_bulk.py --rows 20000
"""

from __future__ import annotations

import argparse
import resource
import sqlite3
import time

from patchbay.connectors.salesforce import SalesforceConnector
from patchbay.localorg.org import OrgConfig
from patchbay.localorg.running import LocalOrg
from patchbay.model import Operation, Status
from patchbay.spec import SystemSpec

SCHEMA = {"fields": {"Contact": [{"name": "Legacy_Id__c", "type": "string", "length": 40,
                                  "externalId": True, "unique": True}]}}


def contacts(rows: int) -> list[dict[str, object]]:
    return [{"Legacy_Id__c": f"C-{n}", "LastName": f"Last{n}", "FirstName": f"First{n}",
             "Email": f"person{n}@example.com", "Title": f"Title {n % 50}",
             "MailingCity": f"City {n % 97}"} for n in range(rows)]


def through_patchbay(rows: int) -> float:
    with LocalOrg(OrgConfig(custom_schema=SCHEMA)) as org:
        crm = SalesforceConnector(SystemSpec(
            url=f"salesforce+http://127.0.0.1:{org.port}", name="crm",
            options={"client_id": "patchbay-local-key", "client_secret": "patchbay-local-secret",
                     "bulk_threshold": 1000}))
        records = contacts(rows)
        started = time.perf_counter()
        outcomes = crm.write("Contact", records, Operation.UPSERT, "Legacy_Id__c")
        seconds = time.perf_counter() - started
        created = sum(o.status is Status.CREATED for o in outcomes)
        if created != rows:
            raise SystemExit(f"only {created} of {rows} contacts were created")
        print(f"  ({crm.api_calls} API calls)")
        return seconds


def straight_into_sqlite(rows: int) -> float:
    db = sqlite3.connect(":memory:")
    db.execute('CREATE TABLE "Contact" ("Id" TEXT PRIMARY KEY, "Legacy_Id__c" TEXT, '
               '"LastName" TEXT, "FirstName" TEXT, "Email" TEXT, "Title" TEXT, "MailingCity" TEXT)')
    db.execute('CREATE UNIQUE INDEX ix ON "Contact" ("Legacy_Id__c" COLLATE NOCASE)')
    records = contacts(rows)
    started = time.perf_counter()
    with db:
        db.executemany('INSERT INTO "Contact" VALUES (?, ?, ?, ?, ?, ?, ?)',
                       [(f"003{n:015d}", *r.values()) for n, r in enumerate(records)])
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    args = parser.parse_args()
    print(f"loading {args.rows:,} contacts")
    baseline = straight_into_sqlite(args.rows)
    print(f"sqlite executemany     {baseline:7.2f} s  {args.rows / baseline:>10,.0f} rows/s")
    seconds = through_patchbay(args.rows)
    print(f"patchbay → Bulk 2.0    {seconds:7.2f} s  {args.rows / seconds:>10,.0f} rows/s")
    print(f"local org Bulk 2.0 vs plain SQLite inserts: {baseline / seconds:.2f}x")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    main()
