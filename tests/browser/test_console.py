"""The web console in a real browser (Debian's Chromium, through Playwright) against a real
`patchbay serve`: signing in, every page, and what an operator does there taking effect in
the systems (a dead letter replayed and delivered, a conflict resolved and written to both
participants, a pair accepted and its fields crossed), the rejects' CSV, actions refused
without the CSRF token or with the viewer token, the keyboard. A screenshot of each page
is kept under test-output/screenshots/."""

from __future__ import annotations

import csv
import io
import re
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import BrowserContext, Page, expect

from .conftest import OPERATOR_TOKEN, VIEWER_TOKEN, Served, SignIn, screenshot
from .world import (
    AGGREGATION,
    BROADCAST,
    CORRELATION,
    MIGRATION,
    NO_EMAIL,
    PASSWORD,
    SYNC,
    UNSURE,
    rows,
)

# One `serve` and one browser for the module: about 40 s in all.
pytestmark = pytest.mark.slow

PAGES = {"integrations": "/ui/", "runs": "/ui/runs", "broadcast": "/ui/broadcast",
         "aggregation": "/ui/aggregation", "sync": "/ui/sync", "correlation": "/ui/correlation",
         "cluster": "/ui/cluster"}


def eventually(check: Callable[[], bool], timeout: float = 30, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.2)


def unlabelled(page: Page) -> list[str]:
    """The form controls of the page a screen reader could not name."""
    found: list[str] = page.evaluate("""() => [...document.querySelectorAll(
        'input:not([type=hidden]), select, textarea, button')].filter(
        el => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
              && !(el.tagName === 'BUTTON' && el.textContent.trim())).map(el => el.outerHTML)""")
    return found


def unlabelled_tables(page: Page) -> list[str]:
    """The tables of the page without a caption, or with a header cell saying not whether it
    heads a column or a row."""
    found: list[str] = page.evaluate("""() => [...document.querySelectorAll('table')].filter(
        t => !(t.caption && t.caption.textContent.trim())
             || [...t.querySelectorAll('th')].some(th => !th.getAttribute('scope'))).map(
        t => t.outerHTML.slice(0, 200))""")
    return found


def test_signing_in_takes_a_token_and_keeps_none_in_the_cookie(context: BrowserContext,
                                                               served: Served) -> None:
    page = context.new_page()
    page.goto("/ui/broadcast")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    screenshot(page, "signin")
    page.get_by_label("Token").fill("not the token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("neither the API token nor the viewer token")
    page.get_by_label("Token").fill(OPERATOR_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/ui/broadcast")  # back where the visitor was going
    expect(page.get_by_role("status")).to_contain_text("signed in as operator")
    [cookie] = context.cookies()
    assert (cookie["httpOnly"], cookie["sameSite"], cookie["path"]) == (True, "Strict", "/ui")
    assert OPERATOR_TOKEN not in cookie["value"] and VIEWER_TOKEN not in cookie["value"]
    # The API itself still wants the bearer token: the session does not open it.
    assert httpx.get(f"{served.url}/runs").status_code == 401


def test_every_page_opens_labelled_and_shows_no_secret(sign_in: SignIn, served: Served) -> None:
    page = sign_in(OPERATOR_TOKEN)
    for name, path in PAGES.items():
        answer = page.goto(path)
        assert answer is not None and answer.status == 200, (path, answer and answer.status)
        expect(page.locator("h1")).to_be_visible()
        assert PASSWORD not in page.content() and OPERATOR_TOKEN not in page.content()
        assert unlabelled(page) == [], (path, unlabelled(page))
        assert unlabelled_tables(page) == [], (path, unlabelled_tables(page))
        screenshot(page, name)
    page.goto("/ui/")
    for name in (MIGRATION, BROADCAST, AGGREGATION, SYNC, CORRELATION):
        expect(page.get_by_role("heading", name=name)).to_be_visible()
    expect(page.get_by_role("button", name=f"Run {MIGRATION} now")).to_be_enabled()
    # The `serve` under test is itself a process of the cluster, beating and holding the
    # leases on noticing the integrations it keeps going.
    page.goto("/ui/cluster")
    processes = page.get_by_role("table", name="Processes, newest first")
    serve = processes.locator("tbody tr", has_text=f":{served.process.pid}:")
    expect(serve).to_have_count(1)
    expect(serve.get_by_role("cell", name="serve", exact=True)).to_be_visible()
    expect(serve.get_by_role("cell", name="running", exact=True)).to_be_visible()
    expect(serve).to_contain_text(f"notice:{BROADCAST}")
    leases = page.get_by_role("table", name="Leases")
    held = leases.locator("tbody tr", has_text=f"notice:{BROADCAST}")
    expect(held).to_contain_text(f":{served.process.pid}:")
    expect(held).to_contain_text("expires ")


def test_a_migration_run_now_shows_its_rejects_filtered_paged_and_as_csv(sign_in: SignIn) -> None:
    page = sign_in(OPERATOR_TOKEN)
    form = page.locator("form", has=page.get_by_role("button", name=f"Run {MIGRATION} now"))
    form.get_by_label("country").select_option("DE")
    form.get_by_role("button", name=f"Run {MIGRATION} now").click()
    page.wait_for_url(re.compile(r".*/ui/runs/[0-9a-f-]+$"))
    # The page follows the run until it ends (its script reloads it then).
    expect(page.locator(".verdict")).to_have_text("complete_with_rejects", timeout=30_000)
    counts = page.get_by_role("table", name="Counts")
    expect(counts).to_contain_text("12")  # read
    rejects = page.get_by_role("table", name="Page 1")
    for key in NO_EMAIL:
        expect(rejects).to_contain_text(key)
    expect(rejects).to_contain_text("Contact <3>")  # a source value, escaped, not markup
    assert unlabelled(page) == []
    screenshot(page, "run")

    page.get_by_label("Key or reason contains").fill("c11")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_role("table", name="Page 1").locator("tbody tr")).to_have_count(1)
    page.get_by_label("Key or reason contains").fill("no such record")
    page.get_by_role("button", name="Filter").click()
    expect(page.get_by_role("table", name="Page 1")).to_contain_text("None that match")

    with page.expect_download() as downloading:
        page.get_by_role("link", name=re.compile("Download every set-aside record")).click()
    text = Path(downloading.value.path()).read_text(encoding="utf-8")
    table = list(csv.DictReader(io.StringIO(text)))
    assert sorted(r["record_key"] for r in table) == sorted(NO_EMAIL)
    assert {r["name"] for r in table} == {"Contact <3>", "Contact <7>", "Contact <11>"}


def test_a_dead_letter_is_shown_replayed_and_delivered(sign_in: SignIn, served: Served) -> None:
    page = sign_in(OPERATOR_TOKEN)
    small = served.here / "small.db"
    eventually(lambda: rows(small, "SELECT id FROM small_deals") == [(1,)], what="the small deal")
    page.goto("/ui/broadcast")
    dead = page.get_by_role("table", name="Dead letters (oldest first)")
    expect(dead).to_contain_text("amount over the small system's limit", timeout=20_000)
    page.goto("/ui/")  # the integrations page counts what waits in the outbox
    expect(page.get_by_role("region", name=re.compile(f"^{BROADCAST}"))).to_contain_text(
        "served here; 0 pending, 1 dead")
    page.goto("/ui/broadcast")
    page.get_by_role("link", name=re.compile(r"^show \d+$")).first.click()
    expect(page.locator("pre")).to_contain_text("Big deal")
    screenshot(page, "dead-letter")
    page.go_back()

    with sqlite3.connect(small) as conn:  # the destination takes big deals now
        conn.execute("DROP TRIGGER refuse_big")
    page.get_by_label(re.compile(r"choose dead letter \d+")).check()
    page.get_by_role("button", name="Replay the chosen").click()
    expect(page.get_by_role("status")).to_contain_text("1 of 1 dead letters sent again")
    eventually(lambda: rows(small, "SELECT id, name FROM small_deals ORDER BY id")
               == [(1, "Small deal"), (2, "Big deal")], what="the replayed deal delivered")
    page.reload()
    section = page.get_by_role("region", name=re.compile(f"^{BROADCAST}"))
    expect(section.get_by_text("No dead letters.")).to_be_visible()
    delivered = section.get_by_role("table", name="Deliveries per destination").locator("tbody tr")
    expect(delivered.locator("td").nth(1)).to_have_text("2")  # pending 0, delivered 2
    page.goto("/ui/")
    expect(page.get_by_role("region", name=re.compile(f"^{BROADCAST}"))).to_contain_text(
        "served here; 0 pending, 0 dead")


def test_a_held_conflict_is_resolved_and_written_to_both_participants(sign_in: SignIn,
                                                                      served: Served) -> None:
    page = sign_in(OPERATOR_TOKEN)
    page.goto("/ui/sync")
    conflict = page.locator("form.conflict").first
    expect(conflict).to_contain_text("Ada from CRM")
    expect(conflict).to_contain_text("Ada from ERP")
    screenshot(page, "sync-conflict")
    conflict.get_by_label("another value:").check()
    conflict.get_by_label(re.compile("the value to write everywhere")).fill("Ada Lovelace")
    conflict.get_by_role("button", name=re.compile("Resolve conflict")).click()
    expect(page.get_by_role("status")).to_contain_text("chosen")
    eventually(lambda: (rows(served.here / "crm.db", "SELECT name FROM customers"),
                        rows(served.here / "erp.db", "SELECT full_name FROM clients"))
               == ([("Ada Lovelace",)], [("Ada Lovelace",)]), what="the choice in both systems")
    page.goto("/ui/sync")
    expect(page.get_by_text("None held.")).to_be_visible()


def test_a_pair_is_explained_accepted_and_its_fields_cross(sign_in: SignIn, served: Served) -> None:
    page = sign_in(OPERATOR_TOKEN)
    page.goto("/ui/correlation")
    page.get_by_role("link", name=f"explain and decide {UNSURE[0]} / {UNSURE[1]}").click()
    explained = page.get_by_role("table", name="Field by field")
    expect(explained).to_contain_text("Ivy")
    expect(explained).to_contain_text("Quux")
    assert unlabelled(page) == []
    screenshot(page, "pair")
    page.get_by_role("button", name="Accept: the same").click()
    expect(page.get_by_role("status")).to_contain_text("accepted")
    south = served.here / "south.db"
    eventually(lambda: rows(south, "SELECT mobile, allergy_list FROM people WHERE pid = 9")
               == [("+61 2 9000 0008", "north-allergy-8")], what="the accepted pair's fields")
    # the ledger, searched, says what crossed
    page.goto("/ui/correlation")
    page.get_by_label("Record key").fill(UNSURE[1])
    page.get_by_role("button", name="Search the ledger").click()
    ledger = page.get_by_role("table", name="What crossed, newest first")
    expect(ledger).to_contain_text("allergies")
    expect(ledger).to_contain_text("phone")


def test_an_aggregation_runs_now_and_its_report_downloads(sign_in: SignIn) -> None:
    page = sign_in(OPERATOR_TOKEN)
    page.get_by_role("button", name=f"Run {AGGREGATION} now").click()
    expect(page.get_by_role("heading", name=f"{AGGREGATION}: done")).to_be_visible()
    page.goto("/ui/aggregation")
    sources = page.get_by_role("table", name="Each source in the last answer")
    expect(sources.locator("td.status")).to_have_text(["ok", "ok"])
    screenshot(page, "aggregation-answered")
    with page.expect_download() as downloading:
        page.get_by_role("link", name="reports/contacts.csv").click()
    text = Path(downloading.value.path()).read_text(encoding="utf-8")
    assert text.splitlines()[0].startswith("id,country,") and text.count("\n") == 16


def test_actions_without_the_csrf_token_or_with_the_viewer_token_are_refused(
        sign_in: SignIn, browser: object, served: Served, context: BrowserContext) -> None:
    page = sign_in(OPERATOR_TOKEN)
    runs_before = page.goto("/ui/runs") and page.locator("tbody tr").count()
    action = f"/ui/integrations/{MIGRATION}/run"
    refused = page.request.post(action, form={"country": "DE"})
    assert refused.status == 403 and "CSRF token" in refused.text()
    wrong = page.request.post(action, form={"country": "DE", "csrf": "made-up"})
    assert wrong.status == 403 and "CSRF token" in wrong.text()
    page.goto("/ui/runs")
    expect(page.locator("tbody tr")).to_have_count(runs_before)

    viewer = context.browser.new_context(base_url=served.url)  # type: ignore[union-attr]
    try:
        seen = viewer.new_page()
        seen.goto("/ui/")
        seen.get_by_label("Token").fill(VIEWER_TOKEN)
        seen.get_by_role("button", name="Sign in").click()
        expect(seen.get_by_text("Read-only")).to_be_visible()
        expect(seen.get_by_role("button", name=f"Run {MIGRATION} now")).to_be_disabled()
        screenshot(seen, "viewer")
        csrf = seen.locator("input[name=csrf]").first.get_attribute("value")
        assert csrf
        answer = seen.request.post(action, form={"country": "DE", "csrf": csrf})
        assert answer.status == 403 and "viewer token" in answer.text()
        seen.set_content(answer.text())
        screenshot(seen, "refused")
    finally:
        viewer.close()
    page.goto("/ui/runs")
    expect(page.locator("tbody tr")).to_have_count(runs_before)


def test_clear_pages_for_what_is_not_there_or_not_well_formed(sign_in: SignIn) -> None:
    page = sign_in(OPERATOR_TOKEN)
    for path, status, said in (("/ui/runs/no-such-run", 404, "no run 'no-such-run'"),
                               ("/ui/no/such/page", 404, "no such page"),
                               ("/ui/dead-letters/99999999999999999999", 404, "no delivery"),
                               ("/ui/correlation?since=yesterday", 400, "not an ISO 8601 time"),
                               ("/ui/correlation/pair?integration=x", 404, "name a correlation"),
                               ("/ui/runs/x?page=abc", 404, "no run")):
        answer = page.goto(path)
        assert answer is not None and answer.status == status, (path, answer and answer.status)
        expect(page.get_by_role("alert")).to_contain_text(said)


def test_the_keyboard_alone_signs_in_and_runs_an_integration(context: BrowserContext) -> None:
    page = context.new_page()
    page.goto("/ui/")
    page.keyboard.type(OPERATOR_TOKEN)  # the token's field has the focus
    page.keyboard.press("Enter")
    page.wait_for_url("**/ui/")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to the content"
    focused: list[str] = []
    for _ in range(30):
        page.keyboard.press("Tab")
        focused.append(page.evaluate(
            "(el => (el.labels && el.labels[0] ? el.labels[0].textContent : el.textContent).trim())"
            "(document.activeElement)"))
        if focused[-1] == f"Run {MIGRATION} now":
            break
    # the pages, sign-out, then the migration's form in order: country, full, fresh, run
    assert focused[:len(PAGES_LABELS) + 1] == [*PAGES_LABELS, "Sign out"], focused
    assert focused[-4:] == ["country", "full (ignore the incremental watermark)",
                            "fresh (do not resume an unfinished run)", f"Run {MIGRATION} now"]
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"  # the focus is visible
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r".*/ui/runs/[0-9a-f-]+$"))
    expect(page.get_by_role("heading", name=re.compile("^Run "))).to_be_visible()


PAGES_LABELS = ("Integrations", "Runs", "Broadcast", "Aggregation", "Sync", "Correlation", "Cluster")
