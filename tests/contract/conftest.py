"""Contract tests: unmodified third-party clients against the local org.

simple-salesforce always builds https:// URLs on Salesforce's hosts. Through its public
`session=` argument it gets a requests session whose adapter sends every https request to
the local org's plain-HTTP port instead (the spec's section 0.2).

jsforce and the Salesforce CLI (pinned in `node/package.json`, installed by `make test`)
run as Node processes: small scripts next to these tests, or the `sf` command itself.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
import requests
from requests.adapters import HTTPAdapter
from simple_salesforce import Salesforce

from patchbay.localorg.org import OrgConfig
from patchbay.localorg.running import LocalOrg

USERNAME = "integration@patchbay.local"
PASSWORD = "password"
TOKEN = "TOKEN"
KEY = "patchbay-local-key"
SECRET = "patchbay-local-secret"
CONTRACT = Path(__file__).parent
NODE_MODULES = CONTRACT / "node" / "node_modules"


def run_node(*args: str, env: dict[str, str] | None = None, cwd: Path = CONTRACT) -> str:
    """Run a Node program; its stdout, or a failure that shows its stderr."""
    assert NODE_MODULES.is_dir(), "the Node clients are not installed: run `make test` (npm ci)"
    done = subprocess.run(["node", *args], capture_output=True, text=True, timeout=240,
                          env={**os.environ, **(env or {})}, cwd=cwd)
    assert done.returncode == 0, done.stderr or done.stdout
    return done.stdout


def run_json(*args: str, env: dict[str, str] | None = None) -> object:
    return json.loads(run_node(*args, env=env))


class ToLocalOrg(HTTPAdapter):
    """Rewrites scheme and host of every request to the local org."""

    def __init__(self, base: str) -> None:
        super().__init__()
        self.base = urlsplit(base)

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        assert request.url is not None
        parts = urlsplit(request.url)
        request.url = urlunsplit((self.base.scheme, self.base.netloc, parts.path, parts.query, ""))
        return super().send(request, *args, **kwargs)


@pytest.fixture
def local_org() -> Iterator[LocalOrg]:
    with LocalOrg(OrgConfig()) as org:
        yield org


def routed(org: LocalOrg) -> requests.Session:
    session = requests.Session()
    session.mount("https://", ToLocalOrg(org.url))
    return session


@pytest.fixture
def sf(local_org: LocalOrg) -> Salesforce:
    """A client logged in with username, password and security token (SOAP login)."""
    return Salesforce(username=USERNAME, password=PASSWORD, security_token=TOKEN,
                      session=routed(local_org))
