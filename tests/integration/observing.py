"""What the metrics, JSON logs and notifications tests share: a file with a migration into
the local org that sets records aside and a broadcast with a dead letter, a real `patchbay
serve` of it, a local HTTP receiver and a local SMTP server."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from patchbay.localorg.running import free_port
from tests.serving import wait_for_health

MIGRATION = "Items into the org - migration"
BROADCAST = "Deals - broadcast"
TOKEN = "metrics-t0ken-of-the-tests"
ITEMS = 30
TOO_LONG = {i for i in range(1, ITEMS + 1) if i % 5 == 0}
"""Items whose name the org refuses (STRING_TOO_LONG)."""
NAMELESS = {i for i in range(1, ITEMS + 1) if i % 7 == 0 and i not in TOO_LONG}
"""Items the transform sets aside (a required name missing)."""
SECRET_VALUE = "Very-S3cret-Passw0rd"
"""A password of a system the broadcast cannot reach: its errors are logged."""


def build(directory: Path, org_port: int, notify: str = "", *, broadcast_notify: str = "") -> Path:
    """The systems' data and the integration file in `directory`."""
    with sqlite3.connect(directory / "source.db") as db:
        db.execute("CREATE TABLE items (legacy_id TEXT PRIMARY KEY, name TEXT)")
        db.executemany("INSERT INTO items VALUES (?, ?)", [
            (f"L{i}", None if i in NAMELESS else ("n" * 300 if i in TOO_LONG else f"Item {i}"))
            for i in range(1, ITEMS + 1)])
        db.execute("CREATE TABLE deals (id INTEGER PRIMARY KEY, name TEXT, amount REAL, "
                   "updated_at TEXT)")
        db.executemany("INSERT INTO deals VALUES (?, ?, ?, ?)", [
            (1, "Small win", 500.0, "2026-01-01 10:00:00"),
            (2, "Big win", 25000.0, "2026-01-01 10:00:00"),
            (3, "Other win", 700.0, "2026-01-01 10:00:01")])
    db.close()
    with sqlite3.connect(directory / "small.db") as db:
        db.execute("CREATE TABLE small_deals (id INTEGER PRIMARY KEY, name TEXT, "
                   "amount REAL CHECK (amount < 1000))")
    db.close()
    path = directory / "observed.yaml"
    path.write_text(f"""
systems:
  legacy: sqlite:///source.db
  small: sqlite:///small.db
  org:
    url: salesforce+http://127.0.0.1:{org_port}
    options: {{username: integration@patchbay.local, password: password, security_token: TOKEN}}
  offline: postgresql://postgres:${{OFFLINE_PASSWORD}}@127.0.0.1:1/test?connect_timeout=1
{notify}
integrations:
  - name: {MIGRATION}
    pattern: migration
    source: {{system: legacy, object: items, key: legacy_id}}
    transform: {{fields: {{Legacy_Id__c: legacy_id, Name: {{from: name, required: true}}}}}}
    destination: {{system: org, object: Account, key: Legacy_Id__c}}
  - name: {BROADCAST}
    pattern: broadcast
    source: {{system: legacy, object: deals, key: id, watermark: updated_at}}
    trigger: {{poll_seconds: 0.2}}
    destinations:
      - name: small
        system: small
        object: small_deals
        key: id
        transform: {{fields: {{id: id, name: name, amount: amount}}}}
      - name: offline
        system: offline
        object: deals
        key: id
    options: {{batch_size: 50, max_attempts: 2, backoff_seconds: 0.2, backoff_max_seconds: 0.2}}
{broadcast_notify}
""", encoding="utf-8")
    return path


ORG_SCHEMA = {"fields": {"Account": [{"name": "Legacy_Id__c", "type": "string", "length": 40,
                                      "externalId": True, "unique": True}]}}


def environment(**extra: str) -> dict[str, str]:
    environ = {k: v for k, v in os.environ.items()
               if k not in ("PATCHBAY_STATE", "PATCHBAY_API_TOKEN")}
    return {**environ, "OFFLINE_PASSWORD": SECRET_VALUE, "PATCHBAY_API_TOKEN": TOKEN, **extra}


@dataclass
class Served:
    url: str
    process: subprocess.Popen[str]
    stderr: Path

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {TOKEN}"}

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.get(self.url + path, headers=self.headers, timeout=30, **kwargs)

    def post(self, path: str, body: Mapping[str, Any]) -> httpx.Response:
        return httpx.post(self.url + path, headers=self.headers, json=body, timeout=60)

    def run(self, integration: str) -> dict[str, Any]:
        """Start a run through the API and wait for its end."""
        started = self.post("/runs", {"integration": integration})
        assert started.status_code == 202, started.text
        deadline = time.monotonic() + 120
        while (run := self.get(started.json()["url"]).json())["status"] == "running":
            assert time.monotonic() < deadline, run
            time.sleep(0.1)
        return dict(run)

    def logs(self) -> str:
        return self.stderr.read_text(encoding="utf-8")


@contextmanager
def serving(directory: Path, spec: Path, *options: str, **environ: str) -> Iterator[Served]:
    """A real `patchbay serve` of `spec` (its standard error in a file), stopped after."""
    port = free_port()
    stderr = directory / "serve.err"
    with stderr.open("w", encoding="utf-8") as errors:
        process = subprocess.Popen(
            [sys.executable, "-m", "patchbay.cli", *options, "serve", str(spec), "--state",
             str(directory / "state"), "--port", str(port)],
            cwd=directory, env=environment(**environ), stdout=subprocess.DEVNULL, stderr=errors,
            text=True)
    served = Served(f"http://127.0.0.1:{port}", process, stderr)
    try:
        wait_for_health(served.url, process, 60, served.logs)
        yield served
    finally:
        process.terminate()
        process.wait(timeout=60)


def wait_until(check: Any, seconds: float = 60, what: str = "") -> Any:
    deadline = time.monotonic() + seconds
    while not (found := check()):
        assert time.monotonic() < deadline, f"waited {seconds} s for {what or check}"
        time.sleep(0.1)
    return found


# -- receivers ----------------------------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.body))


@dataclass
class Receiver:
    """A local HTTP server that keeps what is posted to it, answering `status`."""

    status: int = 200
    posts: list[Received] = field(default_factory=list)
    url: str = ""

    def conditions(self) -> list[str]:
        return [post.json["condition"] for post in list(self.posts)]


@contextmanager
def receiving(status: int = 200) -> Iterator[Receiver]:
    receiver = Receiver(status)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            receiver.posts.append(Received({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(receiver.status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Mailbox:
    """What a local SMTP server received, and the logins it accepted."""

    messages: list[EmailMessage] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)
    port: int = 0

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        # aiosmtpd calls the handler's hooks by these names
        content = envelope.content if isinstance(envelope.content, bytes) else \
            str(envelope.content).encode()
        parsed = message_from_bytes(content, policy=policy.default)
        assert isinstance(parsed, EmailMessage)
        self.messages.append(parsed)
        return "250 OK"


SMTP_USER, SMTP_PASSWORD = "notifier", "Smtp-Pa55word"


@contextmanager
def mail_server() -> Iterator[Mailbox]:
    """aiosmtpd on a free port, taking the login SMTP_USER / SMTP_PASSWORD (without TLS:
    it is loopback)."""
    box = Mailbox()

    def authenticate(server: Any, session: Session, envelope: Envelope, mechanism: str,
                     data: Any) -> AuthResult:
        good = isinstance(data, LoginPassword) and data.login.decode() == SMTP_USER \
            and data.password.decode() == SMTP_PASSWORD
        if good:
            box.logins.append(SMTP_USER)
        return AuthResult(success=good)

    box.port = free_port()
    controller = Controller(box, hostname="127.0.0.1", port=box.port, authenticator=authenticate,
                            auth_require_tls=False)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()
