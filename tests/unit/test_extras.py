"""Drivers are extras: patchbay imports and runs without any of them, and a system, merge
or report that needs a missing one stops with an error naming the extra to install."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from patchbay.connectors import connect
from patchbay.elements import merge, reports
from patchbay.errors import MissingDriver
from patchbay.extras import EXTRAS
from patchbay.spec import MergeSpec, SystemSpec


def without(monkeypatch: pytest.MonkeyPatch, *modules: str) -> None:
    """Make `modules` not importable (as if not installed), and forget the connector
    modules that imported them already."""
    for name in modules:
        monkeypatch.setitem(sys.modules, name, None)  # type: ignore[arg-type]
    for name in [n for n in sys.modules if n.startswith(("patchbay.connectors.", "pika", "nats",
                                                         "redis", "psycopg", "pymysql"))]:
        if sys.modules[name] is not None and name not in modules:
            monkeypatch.delitem(sys.modules, name)


@pytest.mark.parametrize(("url", "driver", "extra"), [
    ("amqp://guest:guest@127.0.0.1:5672/", "pika", "rabbitmq"),
    ("nats://127.0.0.1:4222", "nats", "nats"),
    ("redis://127.0.0.1:6379/0", "redis", "redis"),
])
def test_a_broker_without_its_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch, url: str,
                                                      driver: str, extra: str) -> None:
    without(monkeypatch, driver)
    scheme = url.partition(":")[0]
    with pytest.raises(MissingDriver, match=rf"^the {scheme}:// connector needs {driver}, which is not "
                                            rf"installed: pip install 'patchbay\[{extra}\]'$"):
        connect(SystemSpec(url=url, name="bus"))


@pytest.mark.parametrize(("url", "driver", "extra"), [
    ("postgresql://postgres@127.0.0.1:5432/test", "psycopg", "postgres"),
    ("mysql://root@127.0.0.1:3306/test", "pymysql", "mysql"),
])
def test_a_database_without_its_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch, url: str,
                                                        driver: str, extra: str) -> None:
    without(monkeypatch, driver)
    database = connect(SystemSpec(url=url, name="db"))
    with pytest.raises(MissingDriver, match=rf"^system 'db' needs {driver}, which is not installed: "
                                            rf"pip install 'patchbay\[{extra}\]'$"):
        database.check()


def test_an_aggregation_merge_without_duckdb_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    without(monkeypatch, "duckdb")
    spec = MergeSpec.model_validate({"key": "email", "union": ["a"]})
    with pytest.raises(MissingDriver, match=r"^an aggregation's merge needs duckdb, which is not "
                                            r"installed: pip install 'patchbay\[aggregation\]'$"):
        merge.merge({"a": pa.table({"email": ["x@example.com"]})}, spec)


def test_an_xlsx_report_without_openpyxl_names_the_extra(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    without(monkeypatch, "openpyxl")
    with pytest.raises(MissingDriver, match=r"^an XLSX report needs openpyxl, which is not installed: "
                                            r"pip install 'patchbay\[xlsx\]'$"):
        reports.write_report(pa.table({"n": [1]}), tmp_path / "r.xlsx")
    assert not (tmp_path / "r.xlsx").exists()


def test_every_extra_is_declared_in_the_distribution() -> None:
    """Each driver's extra exists in pyproject.toml, and `all` pulls every one."""
    import tomllib

    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    assert set(EXTRAS.values()) <= set(extras)
    every = {e for e in extras if e not in ("all", "dev")}
    assert extras["all"] == [f"patchbay[{','.join(sorted(every, key=list(extras).index))}]"]
    assert "patchbay[all]" in extras["dev"]
    assert not {d.split("[")[0].split(">")[0] for d in project["dependencies"]} & {
        "psycopg", "pymysql", "pika", "nats-py", "redis", "duckdb", "openpyxl",
        "adbc-driver-postgresql", "adbc-driver-sqlite"}


BLOCKED_RUN = """\
import runpy, sys
for name in {drivers!r}:
    sys.modules[name] = None
sys.argv = ["patchbay", *sys.argv[1:]]
runpy.run_module("patchbay.cli", run_name="__main__")
"""

SPEC = """\
systems:
  legacy: sqlite:///legacy.db
  out: {url: "file:out", options: {fields: [id, name]}}
  bus: amqp://guest:guest@127.0.0.1:5672/
integrations:
  - name: accounts
    pattern: migration
    source: {system: legacy, object: accounts, key: id}
    transform: {fields: {id: id, name: name}}
    destination: {system: out, object: accounts.csv, key: id}
  - name: to the bus
    pattern: migration
    source: {system: legacy, object: accounts, key: id}
    transform: {fields: {id: id, name: name}}
    destination: {system: bus, object: accounts, key: id}
"""


def test_without_any_driver_a_sqlite_to_file_migration_runs(tmp_path: Path) -> None:
    with sqlite3.connect(tmp_path / "legacy.db") as db:
        db.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, name TEXT)")
        db.executemany("INSERT INTO accounts VALUES (?, ?)", [(1, "Acme"), (2, "Globex")])
    (tmp_path / "out").mkdir()
    (tmp_path / "spec.yaml").write_text(SPEC)
    script = BLOCKED_RUN.format(drivers=sorted({*EXTRAS, "adbc_driver_manager"}))

    def patchbay(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", script, *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)

    ran = patchbay("run", "spec.yaml", "--integration", "accounts", "--json")
    assert ran.returncode == 0, ran.stderr
    assert (tmp_path / "out" / "accounts.csv").read_text().splitlines() == ["id,name", "1,Acme", "2,Globex"]
    refused = patchbay("plan", "spec.yaml", "--integration", "to the bus", "--json")
    assert refused.returncode == 2, refused.stderr
    assert json.loads(refused.stdout)["error"] == (
        "the amqp:// connector needs pika, which is not installed: pip install 'patchbay[rabbitmq]'")
