"""`--log-format json`: a real `patchbay serve` logs one JSON object per line, naming the
run and the integration, with no field value and no secret in any line."""

from __future__ import annotations

import base64
import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

from patchbay import logs
from patchbay.localorg.org import OrgConfig
from patchbay.localorg.running import LocalOrg
from patchbay.store import Store
from tests.integration.observing import (
    BROADCAST,
    MIGRATION,
    ORG_SCHEMA,
    SECRET_VALUE,
    TOKEN,
    build,
    environment,
    serving,
    wait_until,
)

VALUES = ("Small win", "Big win", "Other win", "Item 1", "nnnnnnnnnn", "L11")
"""Field values of the records (names, the external ids a query looks up): none may be
logged."""


@pytest.fixture
def org() -> Iterator[LocalOrg]:
    with LocalOrg(OrgConfig(custom_schema=ORG_SCHEMA)) as local:
        yield local


def test_serve_logs_json_lines_with_runs_and_no_values_or_secrets(tmp_path: Path,
                                                                  org: LocalOrg) -> None:
    spec = build(tmp_path, org.port)
    with serving(tmp_path, spec, "--log-format", "json") as served:
        run = served.run(MIGRATION)
        store = Store.open(directory=tmp_path / "state")
        wait_until(lambda: sum(b.dead for b in store.outbox.backlog()) == 4, what="dead letters")
        wait_until(lambda: f'"{BROADCAST}: ' in served.logs(), what="the broadcast's progress")
        text = served.logs()

    lines = [json.loads(line) for line in text.splitlines() if line.strip()]
    assert lines, "serve logged nothing"
    for line in lines:
        assert {"time", "level", "logger", "message"} <= set(line), line
    ended = [line for line in lines if line.get("run") == run["run"]]
    assert ended and all(line["integration"] == MIGRATION for line in ended), lines
    assert any(line["message"] == "the run ended: complete_with_rejects" for line in ended)
    assert any(line.get("integration") == BROADCAST for line in lines), lines
    assert any(line["message"].startswith("API on http://127.0.0.1") for line in lines)
    for secret in (SECRET_VALUE, TOKEN):
        for form in (secret, quote(secret, safe=""), base64.b64encode(secret.encode()).decode()):
            assert form not in text
    for value in VALUES:
        assert value not in text, f"the field value {value!r} was logged"


def _formatted(show_values: bool, **extra: object) -> dict[str, object]:
    return dict(json.loads(_line(logs.JsonLines(show_values), **extra)))


def _line(formatter: logging.Formatter, **extra: object) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    logger = logging.getLogger(f"patchbay.test-{type(formatter).__name__}-{id(formatter)}")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with logs.context(integration="accounts", run="run-1"):
            logger.warning("refused with postgresql://u:Hidden-Pa55@db/x and Hidden-Pa55",
                           extra=extra)
    finally:
        logger.removeHandler(handler)
    return stream.getvalue()


def test_values_are_written_only_when_asked_and_secrets_never() -> None:
    logs.hide(["Hidden-Pa55"])
    quiet = _formatted(False, record_key="A-1", values={"Name": "Ada Lovelace"})
    assert quiet["run"] == "run-1" and quiet["integration"] == "accounts"
    assert quiet["record_key"] == "A-1" and "values" not in quiet
    assert "Hidden-Pa55" not in json.dumps(quiet) and "***" in str(quiet["message"])
    shown = _formatted(True, values={"Name": "Ada Lovelace", "note": "Hidden-Pa55"})
    assert shown["values"] == {"Name": "Ada Lovelace", "note": "***"}
    # the text format keeps them out the same way
    text = _line(logs.OneLine(False), values={"Name": "Ada Lovelace"})
    assert "Ada Lovelace" not in text and "Hidden-Pa55" not in text and "***" in text
    shown_text = _line(logs.OneLine(True), values={"Name": "Ada Lovelace", "note": "Hidden-Pa55"})
    assert "Ada Lovelace" in shown_text and "Hidden-Pa55" not in shown_text


def test_run_logs_json_lines_naming_its_run(tmp_path: Path, org: LocalOrg) -> None:
    spec = build(tmp_path, org.port)
    done = subprocess.run(
        [sys.executable, "-m", "patchbay.cli", "--log-format", "json", "run", str(spec),
         "--integration", MIGRATION, "--state", str(tmp_path / "state"), "--json"],
        cwd=tmp_path, env=environment(), capture_output=True, text=True, timeout=300)
    assert done.returncode == 3, done.stderr  # complete with rejects
    report = json.loads(done.stdout)
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    ended = {"level": "info", "logger": "patchbay.runtime.observed", "run": report["run"],
             "integration": MIGRATION, "message": "the run ended: complete_with_rejects"}
    assert any(ended.items() <= line.items() for line in lines), lines
    for value in VALUES:
        assert value not in done.stderr
