"""Waiting for a `patchbay serve` started by a test to answer."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

import httpx


def wait_for_health(url: str, process: subprocess.Popen[Any], seconds: float,
                    logs: Callable[[], Any]) -> None:
    """Return once GET /health answers 200; fail with `logs()` if the process ends first or
    `seconds` pass."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert process.poll() is None and time.monotonic() < deadline, logs()
        time.sleep(0.1)
