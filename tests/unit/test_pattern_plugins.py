"""A pattern is one spec module, one pattern module and one registry line: a pattern made
here, registered here, is read by the loader, run by the runner and the CLI, and refused
clearly for what it does not do; no other module knows it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import Field
from starlette.testclient import TestClient
from typer.testing import CliRunner

from patchbay import cli
from patchbay.api import create_app
from patchbay.api.app import close_app
from patchbay.errors import SpecError
from patchbay.patterns.context import spec_of
from patchbay.patterns.registry import NotSupported, Pattern, Report
from patchbay.runtime import runner
from patchbay.spec import IntegrationSpec, loads, registry

# -- the spec module ----------------------------------------------------------------------------


class CountSpec(IntegrationSpec):
    """Count the records of one object."""

    pattern: Literal["count"]
    system: str = Field(description="The system whose object is counted.")
    object: str

    def systems_used(self) -> list[tuple[str, tuple[Any, ...]]]:
        return [(self.system, ("system",)), *super().systems_used()]


# -- the pattern module -------------------------------------------------------------------------


@dataclass(frozen=True)
class CountReport:
    integration: str
    records: int

    def to_json(self) -> Report:
        return {"integration": self.integration, "pattern": "count", "status": "complete",
                "records": self.records}


class CountPattern(Pattern):
    def run(self, *, resume: str | None = None, fresh: bool = False, full: bool = False,
            say: Callable[[str], None] | None = None) -> CountReport:
        integration = spec_of(self.ctx, CountSpec)
        return CountReport(integration.name, sum(
            len(page.records) for page in self.ctx.systems[integration.system].read(integration.object)))


# -- the registry line (undone after each test) --------------------------------------------------


@pytest.fixture(autouse=True)
def registered(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(registry, "_registered", dict(registry._registered))
    registry.register(CountSpec, CountPattern)
    yield


@pytest.fixture
def counted(tmp_path: Path) -> Path:
    (tmp_path / "people.csv").write_text("id,name\n1,Ada\n2,Grace\n3,Edsger\n", encoding="utf-8")
    path = tmp_path / "count.yaml"
    path.write_text(f"""
systems:
  files: file://{tmp_path}
integrations:
  - name: people
    pattern: count
    system: files
    object: people.csv
""", encoding="utf-8")
    return path


def test_the_loader_reads_a_registered_pattern(counted: Path) -> None:
    integration = loads(counted.read_text(encoding="utf-8")).integration("people")
    assert isinstance(integration, CountSpec)
    assert (integration.system, integration.object) == ("files", "people.csv")


def test_the_loader_checks_it_like_any_other(counted: Path) -> None:
    text = counted.read_text(encoding="utf-8")
    with pytest.raises(SpecError) as unknown:
        loads(text.replace("system: files", "system: filez"), path=Path("count.yaml"))
    assert unknown.value.problems == [
        "count.yaml:7: integrations[0].system: unknown system 'filez'; did you mean 'files'?"]
    with pytest.raises(SpecError) as misspelt:
        loads(text.replace("pattern: count", "pattern: cuont"), path=Path("count.yaml"))
    assert misspelt.value.problems == [
        "count.yaml:6: integrations[0].pattern: 'cuont' is not a pattern; one of migration, "
        "broadcast, aggregation, sync, correlation, count; did you mean 'count'?"]


def test_the_runner_runs_it(counted: Path, tmp_path: Path) -> None:
    report = runner.run_integration(counted, state=tmp_path / "state")
    assert report == {"integration": "people", "pattern": "count", "status": "complete",
                      "records": 3}


def test_what_it_lacks_is_refused_by_name(counted: Path, tmp_path: Path) -> None:
    with pytest.raises(NotSupported, match=r"^'people' is a count: the count pattern does not "
                                           r"plan: it has no run to preview$"):
        runner.plan_integration(counted, state=tmp_path / "state")
    with pytest.raises(NotSupported, match=r"^'people' is a count: the count pattern does not "
                                           r"verify: it keeps no destination to compare with "
                                           r"its source$"):
        runner.verify_integration(counted, state=tmp_path / "state")
    assert runner.serves(loads(counted.read_text(encoding="utf-8")).integration(None)) is False


def test_the_cli_runs_it_and_refuses_what_it_lacks(counted: Path, tmp_path: Path) -> None:
    state = str(tmp_path / "state")
    ran = CliRunner().invoke(cli.app, ["run", str(counted), "--state", state, "--json"])
    assert (ran.exit_code, json.loads(ran.stdout)) == (0, {
        "integration": "people", "pattern": "count", "status": "complete", "records": 3})
    planned = CliRunner().invoke(cli.app, ["plan", str(counted), "--state", state, "--json"])
    refusal = "'people' is a count: the count pattern does not plan: it has no run to preview"
    assert (planned.exit_code, json.loads(planned.stdout)) == (cli.EXIT_BAD_INPUT, {
        "error": refusal, "problems": [refusal], "exit": cli.EXIT_BAD_INPUT})


def test_the_api_and_the_console_know_its_outbox_by_its_loop(counted: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Whether an integration has deliveries is its pattern's word (the loop that keeps it
    going), not a list of pattern types in the API or the console."""
    app = create_app(counted, str(tmp_path / "state"), None)
    try:
        with TestClient(app, base_url="http://127.0.0.1") as client:
            refused = client.get("/outbox/people")
            assert (refused.status_code, refused.json()["error"]) == (
                400, "'people' is a count, which keeps no outbox")
            page = client.get("/ui/")
            assert page.status_code == 200 and "people" in page.text
            assert "0 pending" not in page.text
            assert "people" not in client.get("/ui/broadcast").text
            monkeypatch.setattr(CountPattern, "loop", "outbox")
            assert client.get("/outbox/people").json() == {"integration": "people",
                                                           "destinations": {}}
            assert "not served here; 0 pending, 0 dead" in client.get("/ui/").text
            outboxes = client.get("/ui/broadcast")
            assert outboxes.status_code == 200 and "people" in outboxes.text
    finally:
        close_app(app)
