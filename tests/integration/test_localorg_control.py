"""The local org's control API under /_emulator/: only for the holder of its control token,
clear 400s for malformed requests, and a server that stays on loopback unless told."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from patchbay.localorg.org import OrgConfig
from patchbay.localorg.running import LocalOrg, free_port


@pytest.fixture
def org() -> Iterator[LocalOrg]:
    with LocalOrg(OrgConfig()) as local:
        yield local


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/_emulator/reset"), ("POST", "/_emulator/sessions/expire"),
    ("POST", "/_emulator/schema"), ("GET", "/_emulator/changes")])
def test_the_control_api_refuses_a_caller_without_the_control_token(
        org: LocalOrg, method: str, path: str) -> None:
    for headers in ({}, bearer("not-the-token"), bearer(org.control_token + "x"),
                    {"Authorization": f"Basic {org.control_token}"}):
        response = httpx.request(method, org.url + path, headers=headers, json={})
        assert response.status_code == 401, (headers, response.text)
        assert response.json() == {
            "error": "the control API needs the org's control token as a Bearer token"}
    assert httpx.request(method, org.url + path, headers=bearer(org.control_token),
                         json={}).status_code == 200


def test_every_org_gets_its_own_control_token() -> None:
    first, second = OrgConfig().control_token, OrgConfig().control_token
    assert first != second and len(first) >= 32


@pytest.mark.parametrize(("action", "body"), [
    ("clock", b"{not json"),
    ("clock", b"[1, 2]"),
    ("clock", b'{"advance_seconds": "soon"}'),
    ("clock", b'{"now": "yesterday"}'),
    ("limits", b'{"DailyApiRequests": {"Max": "many"}}'),
    ("limits", b'{"DailyApiRequests": 5}'),
    ("schema", b'{"objects": [{"label": "no name"}]}'),
    ("schema", b'{"fields": {"Nothing": []}}'),
    ("seed", b'{"records": ["Account"]}'),
])
def test_a_malformed_control_request_is_answered_with_400(
        org: LocalOrg, action: str, body: bytes) -> None:
    response = httpx.post(f"{org.url}/_emulator/{action}", content=body,
                          headers=bearer(org.control_token))
    assert response.status_code == 400, response.text
    assert response.json()["error"].startswith(f"malformed {action} request: ")


@pytest.mark.parametrize("header", ["Basic %%%", "Basic bm8tY29sb24=", "Basic //79"])
def test_a_malformed_basic_header_at_the_token_endpoint_is_400(org: LocalOrg, header: str) -> None:
    # "bm8tY29sb24=" is base64 of "no-colon"; "//79" decodes to bytes that are not UTF-8.
    response = httpx.post(f"{org.url}/services/oauth2/token", data={
        "grant_type": "client_credentials"}, headers={"Authorization": header})
    assert (response.status_code, response.json()) == (400, {
        "error": "invalid_client", "error_description": "malformed Basic authorization header"})


def localorg_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "patchbay.cli", "localorg", *args]


def test_the_server_refuses_a_non_loopback_host_unless_allowed() -> None:
    refused = subprocess.run(localorg_command("--host", "0.0.0.0", "--port", str(free_port())),
                             capture_output=True, text=True, timeout=60, env=os.environ)
    assert refused.returncode == 2
    assert "0.0.0.0 is not a loopback address" in refused.stderr
    assert "--allow-remote" in refused.stderr


def test_the_server_takes_its_control_token_from_the_command_line() -> None:
    port = free_port()
    server = subprocess.Popen(localorg_command("--port", str(port), "--control-token", "s3cret-t0ken"),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}/_emulator/reset"
        deadline = time.monotonic() + 60
        while True:
            try:
                answer = httpx.post(url, headers=bearer("s3cret-t0ken"))
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and server.poll() is None, "no local org"
                time.sleep(0.2)
        assert answer.status_code == 200
        assert httpx.post(url, headers=bearer("guess")).status_code == 401
    finally:
        server.terminate()
        _, stderr = server.communicate(timeout=30)
    assert "control API token s3cret-t0ken" in stderr
