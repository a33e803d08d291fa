"""Secrets in system URLs (the userinfo password, and query arguments such as
`?password=` or `?sslpassword=`, raw or percent-encoded) never reach the command line's
output, the report files, the engine state or the API's answers."""

from __future__ import annotations

import base64
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast
from urllib.parse import quote, quote_plus, urlsplit

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from starlette.testclient import TestClient

from patchbay.api import create_app
from patchbay.api.app import close_app

TOKEN = "t0ken-for-the-redaction-tests"
QUERY_PASSWORD = "Qu3ry/Pa55 w@rd!"
USER_PASSWORD = "Us3r:Pa55#word"
SSL_PASSWORD = "Ss1-k3y+pa55"
SECRETS = (QUERY_PASSWORD, USER_PASSWORD, SSL_PASSWORD)
TABLE = "redaction_items"
GOOD = "Items to PostgreSQL - migration"
BAD = "Items to unreachable PostgreSQL - migration"

SPEC = f"""
systems:
  files: file:.
  warehouse: ${{GOOD_URL}}
  offline: postgresql://postgres:${{USER_PASSWORD}}@127.0.0.1:1/test?sslpassword=${{SSL_PASSWORD}}&password=${{QUERY_PASSWORD}}&connect_timeout=3
integrations:
  - name: {GOOD}
    pattern: migration
    source: {{system: files, object: items.csv, key: id}}
    transform: {{fields: {{id: {{from: id, type: integer}}, name: name}}}}
    destination: {{system: warehouse, object: {TABLE}, key: id}}
  - name: {BAD}
    pattern: migration
    source: {{system: files, object: items.csv, key: id}}
    destination: {{system: offline, object: {TABLE}, key: id}}
"""


def wait_for_run(client: TestClient, url: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while (run := client.get(url).json())["status"] == "running":
        assert time.monotonic() < deadline, f"run still running: {run}"
        time.sleep(0.05)
    return cast(dict[str, Any], run)


def forms(secret: str) -> set[str]:
    """A secret as it could be written out: raw, percent-encoded, base64 (alone, and as a
    Basic authorization header's user:password)."""
    return {secret, quote(secret, safe=""), quote_plus(secret), quote(secret),
            base64.b64encode(secret.encode()).decode(),
            base64.b64encode(f"postgres:{secret}".encode()).decode()}


def assert_no_secret(where: str, text: str) -> None:
    for secret in SECRETS:
        for form in forms(secret):
            assert form not in text, f"{form!r} (a form of a secret) is in {where}:\n{text}"


@pytest.fixture
def folder(tmp_path: Path, pg_url: str, pg_engine: Engine) -> Iterator[Path]:
    with pg_engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {TABLE}"))
        conn.execute(sa.text(f"CREATE TABLE {TABLE} (id integer PRIMARY KEY, name text)"))
    (tmp_path / "items.csv").write_text("id,name\n1,one\n2,two\n", encoding="utf-8")
    (tmp_path / "redaction.yaml").write_text(SPEC, encoding="utf-8")
    yield tmp_path
    with pg_engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {TABLE}"))


def environment(pg_url: str) -> dict[str, str]:
    # PostgreSQL here trusts local connections, so the query's password is accepted and unused
    separator = "&" if urlsplit(pg_url).query else "?"
    return {"GOOD_URL": f"{pg_url}{separator}password={quote(QUERY_PASSWORD, safe='')}",
            "USER_PASSWORD": quote(USER_PASSWORD, safe=""),
            "SSL_PASSWORD": quote_plus(SSL_PASSWORD),
            "QUERY_PASSWORD": quote(QUERY_PASSWORD, safe="")}


def everything_written(folder: Path) -> Iterator[tuple[str, str]]:
    """Every file under the folder's engine state, and every row of its tables."""
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != "items.csv" and path.suffix != ".yaml":
            yield str(path), path.read_bytes().decode("utf-8", errors="replace")
    for database in folder.rglob("state.db"):
        with sqlite3.connect(database) as db:
            yield f"{database} (rows)", "\n".join(db.iterdump())


def test_the_command_line_shows_no_secret(folder: Path, pg_url: str, patchbay: Any) -> None:
    env = environment(pg_url)
    good = patchbay("run", "redaction.yaml", "-i", GOOD, cwd=folder, env=env)
    assert good.code == 0, good.log
    bad = patchbay("run", "redaction.yaml", "-i", BAD, cwd=folder, env=env)
    assert bad.code == 1, bad.log
    assert "cannot reach system 'offline' at postgresql://postgres:***@127.0.0.1:1/test?" \
           "sslpassword=***&password=***&connect_timeout=3" in bad.stderr
    with sqlite3.connect(folder / ".patchbay" / "state.db") as db:
        run_ids = [row[0] for row in db.execute("SELECT id FROM patchbay_runs")]
    assert len(run_ids) == 2
    outputs = [good, bad, patchbay("runs", cwd=folder, env=env),
               *(patchbay("show", run_id, cwd=folder, env=env) for run_id in run_ids)]
    for result in outputs:
        assert_no_secret(f"the output of {result.args}", result.stdout + result.stderr)
    for where, text in everything_written(folder):
        assert_no_secret(where, text)


def test_the_api_answers_no_secret(folder: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in environment(pg_url).items():
        monkeypatch.setenv(name, value)
    app = create_app(folder / "redaction.yaml", str(folder / "state"), TOKEN)
    answers = []
    with TestClient(app, headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        for name, status in ((GOOD, "complete"), (BAD, "failed")):
            started = client.post("/runs", json={"integration": name, "params": {}})
            assert started.status_code == 202, started.text
            finished = wait_for_run(client, started.json()["url"])
            assert finished["status"] == status, finished
            answers += [started.text, client.get(started.json()["url"]).text]
        answers += [client.get(path).text for path in ("/runs", "/integrations")]
        # the web console's pages of the same runs (the failed run's error among them)
        signin = client.get("/ui/signin")
        csrf = re.search(r'name="csrf" value="([^"]+)"', signin.text)
        assert csrf, signin.text
        client.post("/ui/signin", data={"csrf": csrf[1], "token": TOKEN})
        run_ids = [run["run"] for run in client.get("/runs").json()["runs"]]
        pages = [client.get(path) for path in ("/ui/", "/ui/runs", *(f"/ui/runs/{i}" for i in run_ids))]
        assert all(page.status_code == 200 for page in pages)
        assert any("password=***" in page.text for page in pages)
        answers += [page.text for page in pages]
    close_app(app)
    assert any("password=***" in answer for answer in answers), answers
    for answer in answers:
        assert_no_secret("an API answer", answer)
    for where, text in everything_written(folder):
        assert_no_secret(where, text)
