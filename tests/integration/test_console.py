"""The web console's rules without a browser (tests/browser/ drives one): an open console
on loopback, forms bounded and well formed, signing in going back to the console only,
sessions ended by a new token, the viewer token's configuration checked; the cluster page
and a partitioned run's key ranges."""

from __future__ import annotations

import html
import json
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from patchbay.api import ApiConfigError, create_app, serve_api
from patchbay.api.app import close_app
from patchbay.api.console import MAX_FIELDS, MAX_FORM
from patchbay.runtime.cluster import Member
from patchbay.store import Store

TOKEN = "t0ken-for-the-console-tests"
MIGRATION = "items - migration"
SPEC = f"""
systems:
  source: sqlite:///source.db
  target: sqlite:///target.db
integrations:
  - name: {MIGRATION}
    pattern: migration
    source: {{system: source, object: items, key: id}}
    transform: {{fields: {{id: id, name: name}}}}
    destination: {{system: target, object: items, key: id}}
"""


@pytest.fixture
def spec_path(tmp_path: Path) -> Path:
    for name in ("source", "target"):
        with sqlite3.connect(tmp_path / f"{name}.db") as db:
            db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT)")
    with sqlite3.connect(tmp_path / "source.db") as db:
        db.executemany("INSERT INTO items VALUES (?, ?)", [(1, "one"), (2, "two")])
    path = tmp_path / "console.yaml"
    path.write_text(SPEC)
    return path


def client_of(spec_path: Path, token: str | None, viewer: str | None = None) -> Iterator[TestClient]:
    app = create_app(spec_path, str(spec_path.parent / "state"), token, viewer=viewer)
    try:
        with TestClient(app, base_url="http://127.0.0.1") as client:
            yield client
    finally:
        close_app(app)


@pytest.fixture
def operator(spec_path: Path) -> Iterator[TestClient]:
    for client in client_of(spec_path, TOKEN):
        sign_in(client, TOKEN)
        yield client


def csrf_of(client: TestClient, path: str = "/ui/") -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', client.get(path).text)
    assert found, path
    return found[1]


def sign_in(client: TestClient, token: str, following: str = "/ui/") -> str:
    answer = client.post("/ui/signin", data={"csrf": csrf_of(client, "/ui/signin"), "token": token,
                                             "next": following}, follow_redirects=False)
    assert answer.status_code == 303, answer.text
    return answer.headers["location"]


def test_without_a_token_the_console_is_open_but_its_actions_still_need_the_csrf_token(
        spec_path: Path) -> None:
    for client in client_of(spec_path, None):
        page = client.get("/ui/")
        assert page.status_code == 200 and "open on loopback" in page.text
        action = f"/ui/integrations/{MIGRATION}/run"
        refused = client.post(action, data={"full": "1"})
        assert refused.status_code == 403 and "CSRF token" in refused.text
        started = client.post(action, data={"csrf": csrf_of(client)}, follow_redirects=False)
        assert started.status_code == 303 and started.headers["location"].startswith("/ui/runs/")


def test_forms_are_bounded_and_well_formed(operator: TestClient) -> None:
    action = f"/ui/integrations/{MIGRATION}/run"
    csrf = csrf_of(operator)
    cases = {
        "JSON, not a form": (operator.post(action, json={"csrf": csrf}), 415),
        "too large": (operator.post(action, data={"csrf": csrf, "x": "a" * (MAX_FORM + 1)}), 413),
        "NUL in a field": (operator.post(action, data={"csrf": csrf, "name": "a\x00b"}), 400),
        "not UTF-8": (operator.post(action, content=b"csrf=" + csrf.encode() + b"&x=%ff",
                                    headers={"Content-Type": "application/x-www-form-urlencoded"}), 400),
        "too many fields": (operator.post(action, content="&".join(
            f"f{i}=1" for i in range(MAX_FIELDS + 1)).encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"}), 400),
        "no dead letter chosen": (operator.post("/ui/dead-letters/replay", data={"csrf": csrf}), 400),
        "a delivery id not a number": (operator.post("/ui/dead-letters/replay",
                                                     data={"csrf": csrf, "id": "1 OR 1=1"}), 400),
        "no such conflict": (operator.post("/ui/conflicts/5/resolve",
                                           data={"csrf": csrf, "choice": "value", "value": "x"}), 404),
        "no choice": (operator.post("/ui/conflicts/5/resolve", data={"csrf": csrf}), 400),
        "no such correlation": (operator.post("/ui/reviews/decide", data={"csrf": csrf}), 404),
        "a page of letters": (operator.get("/ui/runs/x", params={"page": "abc"}), 404),
        "a GET of an action": (operator.get("/ui/dead-letters/replay"), 405),
    }
    for case, (answer, status) in cases.items():
        assert answer.status_code == status, (case, answer.status_code, answer.text)
        assert answer.headers["content-type"].startswith("text/html"), case
        assert 'role="alert"' in answer.text, case


def test_a_bad_page_number_is_a_clear_400(operator: TestClient) -> None:
    started = operator.post(f"/ui/integrations/{MIGRATION}/run", data={"csrf": csrf_of(operator)},
                            follow_redirects=False)
    run_page = started.headers["location"]
    for page in ("abc", "0", "-1", "99999999999"):
        answer = operator.get(run_page, params={"page": page})
        assert answer.status_code == 400 and "is a whole number from 1" in answer.text, page
    assert operator.get(run_page, params={"q": "x" * 1001}).status_code == 400
    # what the run page's script follows while the run runs
    progress = operator.get(f"{run_page}/progress")
    assert progress.status_code == 200 and set(progress.json()) == {"status", "counters", "batches"}
    assert progress.json()["status"] in ("running", "complete")


def test_signing_in_goes_back_to_the_console_only(spec_path: Path) -> None:
    for client in client_of(spec_path, TOKEN):
        for elsewhere in ("//evil.example/", "https://evil.example/", "/runs", "/ui\\@evil"):
            client.cookies.clear()
            assert sign_in(client, TOKEN, elsewhere) == "/ui/", elsewhere
        client.cookies.clear()
        assert sign_in(client, TOKEN, "/ui/runs?integration=x") == "/ui/runs?integration=x"
        # a sign-in posted from elsewhere (no session, so no CSRF token to match) is refused
        client.cookies.clear()
        refused = client.post("/ui/signin", data={"csrf": "", "token": TOKEN}, follow_redirects=False)
        assert refused.status_code == 403 and "CSRF token" in refused.text


def test_a_new_token_ends_the_sessions_of_the_old_one(spec_path: Path) -> None:
    for first in client_of(spec_path, TOKEN):
        sign_in(first, TOKEN)
        cookies = dict(first.cookies)
        assert first.get("/ui/", follow_redirects=False).status_code == 200
    for second in client_of(spec_path, "another-t0ken"):
        second.cookies.update(cookies)
        answer = second.get("/ui/", follow_redirects=False)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/ui/signin")
    for same in client_of(spec_path, TOKEN):  # another process with the same token takes it
        same.cookies.update(cookies)
        assert same.get("/ui/", follow_redirects=False).status_code == 200


def test_the_viewer_token_is_checked_before_serving(spec_path: Path) -> None:
    with pytest.raises(ApiConfigError, match="PATCHBAY_API_TOKEN is not"):
        serve_api("127.0.0.1", 0, spec_path, None, token=None, viewer="v")
    with pytest.raises(ApiConfigError, match="a viewer would be an operator"):
        serve_api("127.0.0.1", 0, spec_path, None, token=TOKEN, viewer=TOKEN)


def test_the_cluster_page_lists_each_process_and_its_lease_escaped(spec_path: Path) -> None:
    store = Store.open(directory=spec_path.parent / "state")
    lease = "notice:items <b>bold</b>"
    try:
        with Member(store, "worker", lease_seconds=30) as member:
            assert member.lease(lease).held()
            for client in client_of(spec_path, TOKEN, viewer="v1ewer-token"):
                sign_in(client, "v1ewer-token")  # read-only, and still shown the page
                answer = client.get("/ui/cluster")
                assert answer.status_code == 200, answer.text
                page = answer.text
                assert '<a href="/ui/cluster" aria-current="page">Cluster</a>' in page
                processes = table(page, "Processes, newest first")
                row = next(r for r in processes if member.id in r)
                assert "<td>worker</td>" in row and ">running<" in row
                assert html.escape(lease, quote=False) in row, "the lease it holds, escaped"
                [leased] = table(page, "Leases")
                assert html.escape(lease, quote=False) in leased and member.id in leased
                assert "expires " in leased and "expired" not in leased
                assert "<b>bold</b>" not in page
    finally:
        store.close()



def test_pages_mask_the_tokens_in_what_the_state_holds(spec_path: Path) -> None:
    # A dead letter's error and payload, a failed run's error: what the pages show of the
    # state goes through the API's Redactor (the state is not trusted to hold no secret).
    from patchbay.store.outbox import NewDelivery

    error = f"refused with {TOKEN} and v1ewer-token"
    store = Store.open(directory=spec_path.parent / "state")
    try:
        store.outbox.add(MIGRATION, [NewDelivery("target", 7, "v1", "upsert", {"note": TOKEN})])
        [leased] = store.outbox.lease(MIGRATION, "target", "worker")
        store.outbox.dead(leased.id, "worker", error)
        run = store.runs.start(MIGRATION, "migration", {})
        store.runs.finish(run.id, "failed", error=error)
    finally:
        store.close()
    for client in client_of(spec_path, TOKEN, viewer="v1ewer-token"):
        sign_in(client, TOKEN)
        for path in (f"/ui/dead-letters/{leased.id}", f"/ui/runs/{run.id}"):
            page = client.get(path)
            assert page.status_code == 200, (path, page.text)
            assert TOKEN not in page.text and "v1ewer-token" not in page.text, path
            assert "refused with *** and ***" in page.text, path


@pytest.mark.slow
def test_a_partitioned_run_shows_its_key_ranges(spec_path: Path) -> None:
    with sqlite3.connect(spec_path.parent / "source.db") as db:
        db.executemany("INSERT INTO items VALUES (?, ?)", [(i, f"item {i}") for i in range(3, 41)])
    done = subprocess.run([sys.executable, "-m", "patchbay.cli", "run", spec_path.name, "--state",
                           "state", "--workers", "2", "--json"], cwd=spec_path.parent,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    ranges = report["ranges"]["each"]
    assert len(ranges) > 1 and sum(r["read"] for r in ranges) == 40
    for client in client_of(spec_path, TOKEN):
        sign_in(client, TOKEN)
        page = client.get(f"/ui/runs/{report['run']}").text
        caption = f"Key ranges ({len(ranges)}, worked by {report['ranges']['workers']} worker processes"
        assert caption in page
        shown = table(page, "Key ranges")
        assert len(shown) == len(ranges)
        for row, key_range in zip(shown, ranges, strict=True):
            cells = re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)
            assert cells[0] == str(key_range["range"])
            low = "the first key" if key_range["low"] is None else f"<code>{key_range['low']}</code>"
            high = "past the last key" if key_range["high"] is None else \
                f"<code>{key_range['high']}</code>"
            assert cells[1:] == [low, high, str(key_range["read"]), str(key_range["batches"]),
                                 f"<code>{key_range['worker']}</code>", "0", "0"]
        # a run of one process has no ranges to show
        first = client.post(f"/ui/integrations/{MIGRATION}/run", data={"csrf": csrf_of(client)},
                            follow_redirects=False).headers["location"]
        eventually_complete(client, first)
        alone = client.get(first).text
        assert "Counts" in alone and "Key ranges" not in alone


def eventually_complete(client: TestClient, run_page: str) -> None:
    deadline = time.monotonic() + 30
    while client.get(f"{run_page}/progress").json()["status"] == "running":
        assert time.monotonic() < deadline, f"{run_page} still running after 30 s"
        time.sleep(0.1)


def table(page: str, caption: str) -> list[str]:
    """The body rows of the page's table with this caption (at its start)."""
    found = re.search(r"<caption>" + re.escape(caption) + r".*?</caption>.*?<tbody>(.*?)</tbody>",
                      page, re.S)
    assert found, f"no table '{caption}'"
    return re.findall(r"<tr>(.*?)</tr>", found[1], re.S)
