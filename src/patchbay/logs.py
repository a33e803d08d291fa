"""Structured logs: `--log-format json` writes one JSON object per line.

    {"time": "2026-12-07T16:40:01.123456+00:00", "level": "warning", "logger": "patchbay...",
     "message": "...", "run": "...", "integration": "...", "record_key": "..."}

`run` and `integration` come from the code that runs them (`context`), `record_key` from a
log call that names one (`extra={"record_key": key}`); fields that are not known are left
out. Values of records never appear: a log call that has some to show passes them as
`extra={"values": {...}}`, which is written (as `values`) only under `--log-values`, and
otherwise said in words. Every line, in either format, goes through `scrub` with the
secrets of every integration file this process loaded (`hide`): a driver's message that
quotes a URL or a password shows *** instead.
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime as dt
import json
import logging
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from patchbay.spec.common import scrub

FORMATS = ("text", "json")

_run: contextvars.ContextVar[str | None] = contextvars.ContextVar("patchbay_run", default=None)
_integration: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "patchbay_integration", default=None)

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def hide(secrets: Iterable[str]) -> None:
    """Keep these secrets out of every log line of this process from now on."""
    with _secrets_lock:
        _secrets.update(s for s in secrets if s)


def scrubbed(text: str) -> str:
    """`text` with URLs redacted and every hidden secret replaced by ***."""
    with _secrets_lock:
        known = list(_secrets)
    return scrub(text, known)


@contextlib.contextmanager
def context(*, integration: str | None = None, run: str | None = None) -> Iterator[None]:
    """Log records made inside (in this thread) name this integration and run."""
    tokens = []
    if integration is not None:
        tokens.append((_integration, _integration.set(integration)))
    if run is not None:
        tokens.append((_run, _run.set(run)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class JsonLines(logging.Formatter):
    """A log record as one JSON object (see the module's docstring)."""

    def __init__(self, values: bool = False) -> None:
        super().__init__()
        self.values = values

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname.lower(), "logger": record.name,
            "message": scrubbed(record.getMessage())}
        run = getattr(record, "run", None) or _run.get()
        integration = getattr(record, "integration", None) or _integration.get()
        key = getattr(record, "record_key", None)
        if run is not None:
            line["run"] = str(run)
        if integration is not None:
            line["integration"] = str(integration)
        if key is not None:
            line["record_key"] = scrubbed(str(key))
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            line["error"] = scrubbed(f"{type(error).__name__}: {error}")
        shown = getattr(record, "values", None)
        if self.values and shown is not None:
            line["values"] = json.loads(scrubbed(json.dumps(shown, default=str)))
        return json.dumps(line, ensure_ascii=False, default=str)


class OneLine(logging.Formatter):
    """A log record as one line of text, without traceback: the command reports failures
    itself, so a library's traceback (a driver's, when a connection is lost) would only
    bury that message. Values (`extra={"values": ...}`) only under `--log-values`."""

    def __init__(self, values: bool = False) -> None:
        super().__init__()
        self.values = values

    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.levelname.lower()}: {record.name}: {record.getMessage()}"
        shown = getattr(record, "values", None)
        if self.values and shown is not None:
            text += f" {json.dumps(shown, default=str, ensure_ascii=False)}"
        return scrubbed(text)


_format = "text"


def structured() -> bool:
    """Whether logs are JSON lines (then a command's messages to people are logged too)."""
    return _format == "json"


def configure(format: str = "text", values: bool = False, level: int = logging.WARNING) -> None:
    """Log to standard error in `format` (text or json) from `level` on."""
    global _format
    _format = format
    handler = logging.StreamHandler()
    handler.setFormatter(JsonLines(values) if format == "json" else OneLine(values))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    # The pool logs, with a traceback, that it could not reset a connection the database
    # dropped; the operation that lost it says so already (RetriableError, ConnectionFailed).
    logging.getLogger("sqlalchemy.pool").setLevel(logging.CRITICAL)
    # httpx logs every request's URL at info: a query's values (SOQL), a webhook's secret path
    for chatty in ("httpx", "httpcore"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
