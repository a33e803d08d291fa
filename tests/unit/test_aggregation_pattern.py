"""The aggregation pattern on embedded systems (SQLite files): schedule, set-aside records,
report files, and the run's summary."""

from __future__ import annotations

import csv
import datetime as dt
import sqlite3
import threading
import time
from pathlib import Path

from patchbay import run_integration
from patchbay.patterns.aggregation import Aggregation, next_run
from patchbay.runtime.runner import Invocation
from patchbay.spec import ScheduleSpec
from patchbay.store import Store


def test_next_run_of_every_and_daily_at() -> None:
    noon = dt.datetime(2026, 11, 27, 12, 0, tzinfo=dt.UTC)
    assert next_run(ScheduleSpec(every_seconds=90), noon) == noon + dt.timedelta(seconds=90)
    daily = ScheduleSpec(daily_at=["02:00", "13:30"])
    assert next_run(daily, noon) == dt.datetime(2026, 11, 27, 13, 30, tzinfo=dt.UTC)
    assert next_run(daily, noon.replace(hour=14)) == dt.datetime(2026, 11, 28, 2, 0, tzinfo=dt.UTC)
    assert next_run(ScheduleSpec(daily_at=["12:00"]), noon) == noon + dt.timedelta(days=1), \
        "a time that is now is the next day's"


def write_spec(directory: Path, schedule: str = "") -> Path:
    with sqlite3.connect(directory / "shop.db") as db:
        db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY, email TEXT, name TEXT)")
        db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer INTEGER, amount NUMERIC)")
        db.executemany("INSERT INTO customers VALUES (?, ?, ?)",
                       [(1, "A@x.org", "Ann"), (2, "b@x.org", "Bob"), (3, None, "No email")])
        db.executemany("INSERT INTO orders VALUES (?, ?, ?)", [(1, 1, 10), (2, 1, 5), (3, 2, 7)])
    spec = directory / "shop.yaml"
    spec.write_text(f"""
systems:
  shop: sqlite:///shop.db
integrations:
  - name: shop report
    pattern: aggregation
    sources:
      - name: customers
        system: shop
        object: customers
        transform:
          fields:
            email: {{expr: "lower(email)", required: true}}
            name: name
            customer_id: id
      - name: orders
        system: shop
        object: orders
        transform: {{fields: {{customer: customer, amount: amount}}}}
    merge:
      union: [customers]
      key: email
      enrich:
        - source: orders
          join: {{customer: customer_id}}
          aggregate: {{orders: {{count: "*"}}, total: {{sum: amount}}}}
    reports: [{{file: "out/report.csv"}}]
{schedule}""")
    return spec


def test_a_record_a_source_cannot_transform_is_set_aside_with_its_reason(tmp_path: Path) -> None:
    report = run_integration(write_spec(tmp_path), state=tmp_path / "state")
    assert report["status"] == "complete_with_rejects"
    customers = report["sources"]["customers"]
    assert (customers["rows"], customers["rejected"]) == (2, 1)
    assert customers["rejects"][0]["code"] == "REQUIRED_FIELD_MISSING"
    with (tmp_path / "out" / "report.csv").open(newline="") as handle:
        rows = {r["email"]: r for r in csv.DictReader(handle)}
    assert set(rows) == {"a@x.org", "b@x.org"}
    assert (rows["a@x.org"]["orders"], rows["a@x.org"]["total"]) == ("2", "15")


def test_serve_runs_an_aggregation_on_its_schedule(tmp_path: Path) -> None:
    spec = write_spec(tmp_path, "    schedule: {every_seconds: 0.3}")
    store = Store.open(directory=tmp_path / "state")
    runs: list[int] = []
    ctx = Invocation.load(spec, None, {}).context(
        store, tmp_path / "runs", progress=lambda event, counters: runs.append(counters["rows"]))
    stop = threading.Event()
    serving = threading.Thread(target=Aggregation(ctx).serve, args=(stop,), daemon=True)
    serving.start()
    deadline = time.monotonic() + 10
    while len(runs) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    stop.set()
    serving.join(timeout=10)
    assert not serving.is_alive(), "serve stops when told"
    assert runs[:3] == [2, 2, 2], "it ran at start and then on its schedule"
    assert (tmp_path / "out" / "report.csv").exists()
    ctx.systems.close()
    store.close()
