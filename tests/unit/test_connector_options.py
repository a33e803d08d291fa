"""Connector options are typed per connector: validated when the file is loaded (its line,
a "did you mean"), described by `patchbay schema`, and refused by name when a connector is
made in code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from patchbay import spec
from patchbay.connectors import connect
from patchbay.connectors.base import options_model
from patchbay.connectors.files import FileConnector, FileOptions
from patchbay.errors import SpecError
from patchbay.spec import SystemSpec, loads

FILE = """\
systems:
  legacy: sqlite:///legacy.db
  out:
    url: file:out
    options: {delimeter: ";", fields: [id]}
  bus: {url: "amqp://guest:guest@127.0.0.1:5672/", options: {timeout: -1, routng_key: x}}
  crm:
    url: salesforce+http://127.0.0.1:8299
    options:
      client_id: key
      bulk_threshold: many
  warehouse:
    url: postgresql://app@db.internal/crm
    options: {schema: public, pool_size: 5}
integrations:
  - name: accounts
    pattern: migration
    source: {system: legacy, object: accounts, key: id}
    destination: {system: out, object: accounts.csv, key: id}
"""


def test_a_misspelt_or_mistyped_option_is_a_problem_of_the_file_with_its_line() -> None:
    with pytest.raises(SpecError) as refused:
        loads(FILE, Path("crm.yaml"))
    assert refused.value.problems == [
        "crm.yaml:5: systems.out.options.delimeter: unknown field 'delimeter'; "
        "did you mean 'delimiter'?",
        "crm.yaml:6: systems.bus.options.timeout: Input should be greater than 0",
        "crm.yaml:6: systems.bus.options.routng_key: unknown field 'routng_key'; "
        "did you mean 'routing_key'?",
        "crm.yaml:11: systems.crm.options.bulk_threshold: Input should be a valid integer, "
        "unable to parse string as an integer",
    ]


def test_valid_options_load() -> None:
    good = FILE.replace("delimeter", "delimiter").replace("timeout: -1, routng_key", "routing_key") \
        .replace("bulk_threshold: many", "bulk_threshold: 5000")
    loaded = loads(good, Path("crm.yaml"))
    assert loaded.systems["warehouse"].options == {"schema": "public", "pool_size": 5}


def test_the_schema_describes_every_connectors_options() -> None:
    described = spec.json_schema()["connectorOptions"]
    assert set(described) == {"sqlite", "postgresql", "postgres", "mysql", "mariadb", "file",
                              "salesforce", "amqp", "nats", "redis", "http", "https"}
    assert list(described["file"]["properties"]) == [
        "format", "delimiter", "encoding", "null_values", "fields"]
    assert described["file"]["additionalProperties"] is False
    assert described["postgresql"] == described["sqlite"]
    assert described["sqlite"]["properties"]["schema"]["description"] == (
        "The schema of tables named without one (`schema.table` names its own).")
    assert described["amqp"]["properties"]["timeout"]["default"] == 30.0


def test_the_registry_gives_the_options_model_by_scheme() -> None:
    assert options_model("file") is FileOptions
    assert options_model("no-such-scheme") is None


def test_a_connector_made_in_code_refuses_an_unknown_option(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"^system 'hooks': unknown option 'secert'; did you mean "
                                        r"'secret'\?; known options: secret, headers, method, "
                                        r"timeout, concurrency, ordered$"):
        connect(SystemSpec(url="https://example.com/hooks", name="hooks", options={"secert": "x"}))
    assert FileConnector(SystemSpec(url=f"file:{tmp_path}", name="out",
                                    options={"delimiter": ";"})).name == "out"


def test_a_connector_reads_its_options_typed() -> None:
    with pytest.raises(SpecError, match=r"^system 'crm': invalid options\n  - option retries: "
                                        r"Input should be a valid integer"):
        connect(SystemSpec(url="salesforce+http://127.0.0.1:1", name="crm",
                           options={"retries": "twice"}))
    crm = connect(SystemSpec(url="salesforce+http://127.0.0.1:1", name="crm",
                             options={"api_version": 61.0, "bulk_threshold": "2000"}))
    assert (crm.version, crm.bulk_threshold) == ("61.0", 2000)  # type: ignore[attr-defined]


def test_loading_alone_validates_the_options(tmp_path: Path) -> None:
    """Importing the file's models is enough: the registry is registered with them by the
    package itself, not by whoever happened to import the connectors first."""
    (tmp_path / "crm.yaml").write_text(FILE)
    script = ("import sys\nfrom patchbay.spec import load\nfrom patchbay.errors import SpecError\n"
              "try:\n    load(sys.argv[1])\nexcept SpecError as exc:\n    print(exc.problems[0])\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "crm.yaml")],
                          capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout == (f"{tmp_path / 'crm.yaml'}:5: systems.out.options.delimeter: unknown field "
                           "'delimeter'; did you mean 'delimiter'?\n")
