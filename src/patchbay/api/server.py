"""Serving the API with uvicorn in a background thread (beside `patchbay serve`'s broadcast
loops, or in tests), and the rule that keeps an API without a token on loopback."""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

import uvicorn
from starlette.applications import Starlette

from patchbay.api.app import close_app, create_app
from patchbay.errors import SpecError

TOKEN_VARIABLE = "PATCHBAY_API_TOKEN"
VIEWER_VARIABLE = "PATCHBAY_VIEWER_TOKEN"


class ApiConfigError(SpecError):
    """The API cannot be served as asked (no token beyond loopback, port taken)."""


def api_token() -> str | None:
    """The bearer token, from the environment (never from the integration file)."""
    return os.environ.get(TOKEN_VARIABLE) or None


def viewer_token() -> str | None:
    """The web console's read-only token, from the environment: it signs in a viewer, who
    sees every page and may take no action."""
    return os.environ.get(VIEWER_VARIABLE) or None


def is_loopback(host: str) -> bool:
    """Whether `host` only takes connections from this machine. Names other than
    'localhost' are not resolved: they do not count as loopback."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def loopback_names(host: str) -> set[str]:
    """The Host names by which a browser reaches a server listening on loopback `host`."""
    bound = host.lower().strip("[]")
    return {"localhost", "127.0.0.1", "[::1]", f"[{bound}]" if ":" in bound else bound}


def check_binding(host: str, port: int, token: str | None, viewer: str | None = None) -> None:
    """An API without a token (None or empty) is open: allowed on loopback only. A viewer
    token needs an operator token (without one, everyone is an operator) other than it."""
    if not token and not is_loopback(host):
        raise ApiConfigError(
            f"refusing to serve the API on {host}:{port} without a token: set {TOKEN_VARIABLE}, "
            "or listen on loopback only (--host 127.0.0.1), or turn the API off (--no-api)")
    if viewer and not token:
        raise ApiConfigError(f"{VIEWER_VARIABLE} is set but {TOKEN_VARIABLE} is not: without an "
                             "operator token the console is open to everyone on this machine")
    if viewer and token and hmac.compare_digest(viewer.encode("utf-8"), token.encode("utf-8")):
        raise ApiConfigError(f"{VIEWER_VARIABLE} is the same as {TOKEN_VARIABLE}: a viewer would "
                             "be an operator")


def server_config(app: Starlette, host: str, port: int, token: str | None,
                  log_level: str = "warning") -> uvicorn.Config:
    """uvicorn's configuration for the API; refuses an API without a token beyond loopback."""
    check_binding(host, port, token)
    return uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="off",
                          server_header=False)


class ApiServer:
    """The API served by uvicorn in a background thread: `start()`, `stop()`, or `with`."""

    def __init__(self, app: Starlette, config: uvicorn.Config) -> None:
        self.app, self.config = app, config
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, name="patchbay-api", daemon=True)

    def _run(self) -> None:
        # uvicorn gives up with SystemExit (the port is taken, say); start() then says so
        with contextlib.suppress(SystemExit):
            self._server.run()

    @property
    def url(self) -> str:
        host = self.config.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else ("[::1]" if host == "::" else host)
        if ":" in shown and not shown.startswith("["):
            shown = f"[{shown}]"
        return f"http://{shown}:{self.config.port}"

    def start(self, timeout: float = 10.0) -> ApiServer:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self._server.should_exit = True
                close_app(self.app, 0)
                raise ApiConfigError(f"the API could not listen on {self.config.host}:"
                                     f"{self.config.port} (is the port taken?)")
            time.sleep(0.01)
        return self

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop answering, then stop the runs the API started (resumable) and close."""
        self._server.should_exit = True
        self._thread.join(timeout=10)
        close_app(self.app, timeout)

    def __enter__(self) -> ApiServer:
        return self.start() if not self._thread.is_alive() else self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()


def serve_api(host: str, port: int, spec_path: Path, state: str | None, *, token: str | None,
              viewer: str | None = None, serving: Iterable[str] = (),
              log_level: str = "warning") -> ApiServer:
    """Serve the API of `spec_path` on host:port in a background thread; return it started.

    Without a token (None or empty) the API is open, which is allowed on loopback only:
    anything else raises ApiConfigError before the file is even read. Open, it answers
    only requests whose Host is a loopback name (see BearerAuth). `viewer`: the console's
    read-only token."""
    check_binding(host, port, token, viewer)
    app = create_app(spec_path, state, token, viewer=viewer, serving=serving,
                     hosts=None if token else loopback_names(host))
    try:
        config = server_config(app, host, port, token, log_level)
    except BaseException:
        close_app(app, 0)
        raise
    return ApiServer(app, config).start()
