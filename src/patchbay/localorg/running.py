"""Running a local org: in this process on a free port (tests, the demo), or as a server."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
from types import TracebackType

import uvicorn

from patchbay.localorg.org import Org, OrgConfig
from patchbay.localorg.server import create_app


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class LocalOrg:
    """A local org served on 127.0.0.1 in a background thread.

        with LocalOrg() as org:
            org.url                 # http://127.0.0.1:<port>
            org.org                 # the Org, for direct access in tests
            org.control_token       # Bearer token of the control API under /_emulator/
    """

    def __init__(self, config: OrgConfig | None = None, port: int | None = None) -> None:
        self._fixed_port = port is not None
        self.port = port or free_port()
        self.config = config or OrgConfig()
        self.org = Org(self.config)
        self._prepare()

    def _prepare(self) -> None:
        self.config.public_url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(
            create_app(self.org), host="127.0.0.1", port=self.port, log_level="warning",
            lifespan="off", timeout_graceful_shutdown=1))
        self._thread = threading.Thread(target=self._server.run, name="patchbay-localorg",
                                        daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def control_token(self) -> str:
        return self.config.control_token

    def start(self) -> LocalOrg:
        # A free port can be taken by another process between choosing and binding it:
        # choose again, unless the caller chose it.
        for attempt in range(1 if self._fixed_port else 5):
            if attempt:
                self.port = free_port()
                self._prepare()
            self._thread.start()
            deadline = time.monotonic() + 10
            while not self._server.started and self._thread.is_alive() \
                    and time.monotonic() < deadline:
                time.sleep(0.01)
            if self._server.started:
                return self
        raise RuntimeError(f"the local org did not start on port {self.port}")

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> LocalOrg:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()


def is_loopback(host: str) -> bool:
    """Whether `host` is an address only this machine can reach."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(host: str, port: int, config: OrgConfig, allow_remote: bool = False) -> None:
    """Serve a local org in the foreground until interrupted.

    The local org is a test tool (fixed users, a control API that resets it): it listens
    beyond loopback only when the caller says so with `allow_remote`."""
    if not (allow_remote or is_loopback(host)):
        raise ValueError(f"{host} is not a loopback address: the local org is a test tool and "
                         "listens beyond this machine only with allow_remote")
    config.public_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    uvicorn.run(create_app(Org(config)), host=host, port=port, log_level="info")
