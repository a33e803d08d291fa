"""A real `patchbay serve` over the browser tests' world (world.py), once for the module,
and Debian's Chromium driven by Playwright: never a downloaded browser."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Playwright, Request, Route, sync_playwright

from patchbay.localorg.running import free_port
from tests.serving import wait_for_health

from .world import build

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]
OPERATOR_TOKEN = "operator-t0ken-of-the-browser-tests"
VIEWER_TOKEN = "viewer-t0ken-of-the-browser-tests"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-output" / "screenshots"


@dataclass
class Served:
    url: str
    here: Path
    process: subprocess.Popen[bytes]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    here = tmp_path_factory.mktemp("console")
    cwd = Path.cwd()
    os.chdir(here)  # the sync's fixture runs it from its folder
    try:
        path = build(here)
    finally:
        os.chdir(cwd)
    port = free_port()
    env = {**os.environ, "PATCHBAY_API_TOKEN": OPERATOR_TOKEN, "PATCHBAY_VIEWER_TOKEN": VIEWER_TOKEN}
    log = (here / "serve.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "patchbay.cli", "serve", str(path), "--state",
                                str(here / ".patchbay"), "--port", str(port)],
                               cwd=here, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_health(url, process, 60, lambda: "patchbay serve did not come up:\n"
                        + (here / "serve.log").read_text())
    except AssertionError:
        process.kill()
        raise
    try:
        yield Served(url, here, process)
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium package (.ci/run does)",
                    pytrace=False)
    launched = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
    yield launched
    launched.close()


@pytest.fixture
def context(browser: Browser, served: Served) -> Iterator[BrowserContext]:
    """A fresh browser profile that may reach the served console only: any other request
    fails the test (the console loads nothing from elsewhere)."""
    opened = browser.new_context(base_url=served.url, accept_downloads=True,
                                 viewport={"width": 1200, "height": 900})
    elsewhere: list[str] = []

    def only_here(route: Route, request: Request) -> None:
        if request.url.startswith(served.url + "/"):
            route.continue_()
        else:
            elsewhere.append(request.url)
            route.abort()

    opened.route("**/*", only_here)
    yield opened
    opened.close()
    assert not elsewhere, f"the console asked for something elsewhere: {elsewhere}"


SignIn = Callable[[str], Page]


@pytest.fixture
def sign_in(context: BrowserContext) -> SignIn:
    def signed_in(token: str) -> Page:
        page = context.new_page()
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(str(error)))
        page.goto("/ui/")
        assert page.url.endswith("/ui/signin?next=%2Fui%2F")
        page.get_by_label("Token").fill(token)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url("**/ui/")
        assert not problems, problems
        return page
    return signed_in


def screenshot(page: Page, name: str) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
