"""The aggregation pattern on embedded systems (SQLite files): schedule, set-aside records,
report files, and the run's summary."""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from patchbay import run_integration
from patchbay.api.app import MAX_ANSWER_ROWS, close_app, create_app
from patchbay.errors import ParameterError, SpecError
from patchbay.patterns.aggregation import Aggregation, next_run
from patchbay.runtime.runner import Invocation
from patchbay.runtime.serving import serve
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
    serving = threading.Thread(target=serve, args=(ctx, stop), daemon=True)
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


# -- report paths -------------------------------------------------------------------------------


def regional_spec(directory: Path, file: str) -> Path:
    spec = write_spec(directory)
    text = spec.read_text().replace('reports: [{file: "out/report.csv"}]', f'reports: [{{file: "{file}"}}]')
    spec.write_text(text.replace("pattern: aggregation\n",
                                 "pattern: aggregation\n    parameters: {region: {required: true}}\n"))
    return spec


@pytest.mark.parametrize("region", ["../../../../tmp/x", "../outside", "..", "a/b", "a\\b", "x\x00y"])
def test_a_parameter_cannot_move_a_report_out_of_its_folder(tmp_path: Path, region: str) -> None:
    (tmp_path / "project").mkdir()
    spec = regional_spec(tmp_path / "project", "reports/{region}.csv")
    with pytest.raises(ParameterError, match="parameter 'region' is"):
        run_integration(spec, params={"region": region}, state=tmp_path / "state")
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.csv"))
    assert written == [], "nothing is written anywhere"


def test_a_report_path_through_a_link_out_of_its_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "project" / "reports").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "project" / "reports" / "DE").symlink_to(tmp_path / "elsewhere")
    spec = regional_spec(tmp_path / "project", "reports/{region}/report.csv")

    with pytest.raises(ParameterError, match="outside"):
        run_integration(spec, params={"region": "DE"}, state=tmp_path / "state")
    assert list((tmp_path / "elsewhere").iterdir()) == []

    report = run_integration(spec, params={"region": "FR"}, state=tmp_path / "state")
    assert report["reports"] == [str(tmp_path / "project" / "reports" / "FR" / "report.csv")]


def test_the_command_line_and_the_api_refuse_a_report_path_parameter(tmp_path: Path) -> None:
    spec = regional_spec(tmp_path, "reports/{region}.csv")
    refused = subprocess.run([sys.executable, "-m", "patchbay.cli", "run", str(spec),
                              "-p", "region=../../escaped", "--state", str(tmp_path / "state")],
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2, refused.stderr
    assert "parameter 'region' is '../../escaped'" in refused.stderr

    app = create_app(spec, str(tmp_path / "state"), token=None)
    try:
        with TestClient(app) as client:
            answer = client.post("/runs", json={"integration": "shop report",
                                                "params": {"region": "../../escaped"}})
            assert answer.status_code == 400, answer.text
            assert "parameter 'region' is '../../escaped'" in answer.json()["error"]
            done = client.post("/runs", json={"integration": "shop report", "params": {"region": "DE"}})
            assert done.status_code == 200, done.text
    finally:
        close_app(app)
    assert sorted(p.name for p in tmp_path.rglob("*.csv")) == ["DE.csv"]


# -- time zones ---------------------------------------------------------------------------------


def zoned_spec(directory: Path, timezone: str) -> Path:
    with sqlite3.connect(directory / "crm.db") as db:
        db.execute("CREATE TABLE contacts (email TEXT, phone TEXT, modified TEXT)")
        db.execute("INSERT INTO contacts VALUES ('ada@x.org', '+81 local', '2026-01-01 12:00:00')")
    with sqlite3.connect(directory / "erp.db") as db:
        db.execute("CREATE TABLE customers (email TEXT, phone TEXT, modified TEXT)")
        db.execute("INSERT INTO customers VALUES ('ada@x.org', '+44 erp', '2026-01-01 05:00:00')")
    spec = directory / "zones.yaml"
    fields = "{email: email, phone: phone, modified: {from: modified, type: datetime}}"
    spec.write_text(f"""
systems: {{crm: "sqlite:///crm.db", erp: "sqlite:///erp.db"}}
integrations:
  - name: zones
    pattern: aggregation
    sources:
      - {{name: crm, system: crm, object: contacts, {timezone} transform: {{fields: {fields}}}}}
      - {{name: erp, system: erp, object: customers, transform: {{fields: {fields}}}}}
    merge:
      union: [crm, erp]
      key: email
      flags: false
      provenance: true
      precedence: {{default: most_recent, recent_by: modified}}
    reports: [{{file: out.jsonl}}]
""")
    return spec


@pytest.mark.parametrize(("declared", "winner", "modified"), [
    ("", "crm", "2026-01-01T12:00:00.000000"),
    ("timezone: Asia/Tokyo,", "erp", "2026-01-01T05:00:00.000000+00:00")])
def test_a_source_declares_the_zone_of_its_naive_timestamps(
        tmp_path: Path, declared: str, winner: str, modified: str) -> None:
    report = run_integration(zoned_spec(tmp_path, declared), state=tmp_path / "state")
    assert report["status"] == "complete", report
    [row] = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert (row["phone__source"], row["modified"]) == (winner, modified), \
        "12:00 in Tokyo is 03:00 UTC, earlier than the ERP's 05:00 UTC"


def test_an_unknown_time_zone_is_a_spec_error(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="unknown time zone 'Mars/Olympus'"):
        run_integration(zoned_spec(tmp_path, "timezone: Mars/Olympus,"), state=tmp_path / "state")


# -- live answers -------------------------------------------------------------------------------


def test_an_answer_stops_at_its_limit_and_the_api_refuses_one_over_the_cap(tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    with sqlite3.connect(tmp_path / "shop.db") as db:
        db.executemany("INSERT INTO customers VALUES (?, ?, ?)",
                       [(n, f"c{n}@x.org", "many") for n in range(10, 10 + MAX_ANSWER_ROWS)])
    store = Store.open(directory=tmp_path / "state")
    ctx = Invocation.load(spec, None, {}).context(store, tmp_path / "runs")
    try:
        answer = Aggregation(ctx).answer(limit=7)
        assert answer.table.column("email").to_pylist() == [
            "a@x.org", "b@x.org", *(f"c{n}@x.org" for n in range(10, 15))]
    finally:
        ctx.systems.close()
        store.close()

    app = create_app(spec, str(tmp_path / "state"), token=None)
    try:
        with TestClient(app) as client:
            over = client.get("/aggregations/shop report")
            assert over.status_code == 413, over.text[:300]
            assert over.json()["error"] == (f"the answer has more than {MAX_ANSWER_ROWS} rows; "
                                            "narrow it with parameters, or write a report")
    finally:
        close_app(app)


def test_a_partial_run_writes_destinations_without_what_it_could_not_compute(tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    with sqlite3.connect(tmp_path / "shop.db") as db:
        db.execute("DROP TABLE orders")  # the orders source fails: the totals are unknown
        db.execute("CREATE TABLE rollups (email TEXT PRIMARY KEY, orders INTEGER, total NUMERIC)")
        db.execute("INSERT INTO rollups VALUES ('a@x.org', 2, 15)")
        db.execute("CREATE TABLE by_total (total NUMERIC PRIMARY KEY, email TEXT)")
    spec.write_text(spec.read_text() + """
    destinations:
      - {system: shop, object: rollups, key: email,
         transform: {fields: {email: email, orders: orders, total: total}}}
      - {system: shop, object: by_total, key: total,
         transform: {fields: {total: total, email: email}}}
""")
    report = run_integration(spec, state=tmp_path / "state")

    assert report["status"] == "partial"
    assert report["incomplete"] == {"orders": ["orders"], "total": ["orders"]}
    assert report["destinations"] == {
        "shop/rollups": {"unchanged": 1, "created": 1, "left_out": ["orders", "total"]},
        "shop/by_total": {"not_written": "its key or skip_if needs total, which this partial "
                                         "answer could not compute"}}
    with sqlite3.connect(tmp_path / "shop.db") as db:
        assert sorted(db.execute("SELECT * FROM rollups")) == [("a@x.org", 2, 15), ("b@x.org", None, None)]
        assert list(db.execute("SELECT * FROM by_total")) == []


def test_patchbay_run_says_what_a_partial_run_left_unknown_and_exits_3(tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    with sqlite3.connect(tmp_path / "shop.db") as db:
        db.execute("DROP TABLE orders")
    done = subprocess.run([sys.executable, "-m", "patchbay.cli", "run", str(spec),
                           "--state", str(tmp_path / "state")],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 3, done.stderr
    assert "unknown, left null: orders (needs orders), total (needs orders)" in done.stdout
    with (tmp_path / "out" / "report.csv").open(newline="") as handle:
        rows = {r["email"]: (r["orders"], r["total"]) for r in csv.DictReader(handle)}
    assert rows == {"a@x.org": ("", ""), "b@x.org": ("", "")}


def test_the_answer_headers_name_any_column_percent_encoded(tmp_path: Path) -> None:
    spec = write_spec(tmp_path)
    spec.write_text(spec.read_text().replace("total: {sum: amount}", '"größe, netto": {sum: amount}'))
    with sqlite3.connect(tmp_path / "shop.db") as db:
        db.execute("DROP TABLE orders")
    app = create_app(spec, str(tmp_path / "state"), token=None)
    try:
        with TestClient(app) as client:
            answer = client.get("/aggregations/shop report")
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-patchbay-incomplete-columns"] == "orders,gr%C3%B6%C3%9Fe%2C netto"
            assert answer.json()["incomplete"] == {"orders": ["orders"], "größe, netto": ["orders"]}
    finally:
        close_app(app)
