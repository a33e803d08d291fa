"""Notifications (`notify:`) reach a real SMTP server (aiosmtpd, with a login) and a real
local HTTP receiver, signed; a condition is told once until it clears; a receiver that
fails never fails the run."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from patchbay import metrics, run_integration
from patchbay.connectors.http import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_signature
from patchbay.localorg.org import OrgConfig
from patchbay.localorg.running import LocalOrg, free_port
from patchbay.runtime.notifications import Notifier
from patchbay.spec import load
from patchbay.store import Store
from patchbay.store.outbox import NewDelivery
from tests.integration.observing import (
    BROADCAST,
    ITEMS,
    MIGRATION,
    NAMELESS,
    ORG_SCHEMA,
    SMTP_PASSWORD,
    SMTP_USER,
    TOO_LONG,
    build,
    mail_server,
    receiving,
    serving,
    wait_until,
)

HOOK_SECRET = "n0tify-s1gning-secret"


@pytest.fixture
def org() -> Iterator[LocalOrg]:
    with LocalOrg(OrgConfig(custom_schema=ORG_SCHEMA)) as local:
        yield local


@pytest.fixture
def secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_SECRET", HOOK_SECRET)
    monkeypatch.setenv("SMTP_PASSWORD", SMTP_PASSWORD)
    monkeypatch.setenv("OFFLINE_PASSWORD", "unused-here")


def notify_block(hook: str, smtp_port: int, when: str) -> str:
    return f"""notify:
  - when: {when}
    webhook: {{url: "{hook}", secret_env: HOOK_SECRET}}
    email:
      smtp: "smtp://{SMTP_USER}:${{SMTP_PASSWORD}}@127.0.0.1:{smtp_port}"
      from: patchbay@example.com
      to: [integration-team@example.com]
"""


def test_a_run_is_told_by_webhook_and_mail_and_its_rejects_once(
        tmp_path: Path, org: LocalOrg, secrets: None) -> None:
    with receiving() as hook, mail_server() as mail:
        spec = build(tmp_path, org.port, notify_block(
            hook.url, mail.port, "{finished: true, rejects_above: 0.1}"))
        first = run_integration(spec, MIGRATION, state=tmp_path / "state")
        second = run_integration(spec, MIGRATION, state=tmp_path / "state", fresh=True)

        assert first["verdict"] == second["verdict"] == "complete_with_rejects"
        # finished each time; the rejects (a third of the records) once: they did not clear
        assert sorted(hook.conditions()) == ["finished", "finished", "rejects"]
        for post in hook.posts:
            assert verify_signature(HOOK_SECRET, post.headers[TIMESTAMP_HEADER.lower()], post.body,
                                    post.headers[SIGNATURE_HEADER.lower()])
        rejects = next(p.json for p in hook.posts if p.json["condition"] == "rejects")
        set_aside = len(TOO_LONG) + len(NAMELESS)
        assert rejects["run"] == first["run"] and rejects["integration"] == MIGRATION
        assert f"set aside {set_aside} of {ITEMS} records" in rejects["text"]
        assert rejects["details"]["set_aside"] == set_aside

        assert mail.logins == [SMTP_USER] * 3, "each mail logged in with the URL's credentials"
        assert len(mail.messages) == 3
        subjects = sorted(str(m["Subject"]) for m in mail.messages)
        assert subjects == [f"[patchbay] {MIGRATION}: finished"] * 2 + [
            f"[patchbay] {MIGRATION}: rejects"]
        for message in mail.messages:
            assert message["To"] == "integration-team@example.com"
            [attachment] = list(message.iter_attachments())
            assert attachment.get_filename() == "report.json"
            report = json.loads(attachment.get_content())
            assert report["run"] in (first["run"], second["run"])
            assert report["counts"]["read"] == ITEMS
            body = message.get_body(preferencelist=("plain",))
            assert body is not None and MIGRATION in body.get_content()
        text = json.dumps([p.json for p in hook.posts]) + "".join(m.as_string() for m in mail.messages)
        assert SMTP_PASSWORD not in text and HOOK_SECRET not in text


def test_a_receiver_that_fails_does_not_fail_the_run(tmp_path: Path, org: LocalOrg,
                                                     secrets: None) -> None:
    nobody = free_port()  # nothing listens there: the mail cannot be sent
    failed = metrics.notifications_failed
    with receiving(status=500) as hook:
        spec = build(tmp_path, org.port, notify_block(hook.url, nobody, "{finished: true}"))
        before = (failed.labels(MIGRATION, "webhook")._value.get(),
                  failed.labels(MIGRATION, "email")._value.get())
        report = run_integration(spec, MIGRATION, state=tmp_path / "state")

        assert report["verdict"] == "complete_with_rejects"
        assert len(hook.posts) == 3, "tried three times, then given up on"
        after = (failed.labels(MIGRATION, "webhook")._value.get(),
                 failed.labels(MIGRATION, "email")._value.get())
        assert (after[0] - before[0], after[1] - before[1]) == (1, 1)


def test_serve_tells_dead_letters_once_until_they_clear(tmp_path: Path, org: LocalOrg,
                                                        secrets: None) -> None:
    with receiving() as hook:
        spec = build(tmp_path, org.port, broadcast_notify=f"""    notify:
      - when: {{failed: false, dead_letters: true}}
        webhook: {{url: "{hook.url}", secret_env: HOOK_SECRET}}
        check_seconds: 0.2
""")
        with serving(tmp_path, spec, HOOK_SECRET=HOOK_SECRET):
            wait_until(lambda: {"dead_letters:small", "dead_letters:offline"} <=
                       set(hook.conditions()), what="both destinations' dead letters told")
            time.sleep(2)  # ten checks more: the same dead letters are not told again
            assert sorted(hook.conditions()) == ["dead_letters:offline", "dead_letters:small"]
            small = next(p.json for p in hook.posts if p.json["condition"] == "dead_letters:small")
            assert small["integration"] == BROADCAST and small["details"]["dead"] == 1

            store = Store.open(directory=tmp_path / "state")
            [letter] = store.outbox.dead_letters(BROADCAST, "small")
            store.outbox.discard([letter.id])
            wait_until(lambda: not any(c.endswith("dead_letters:small")
                                       for c in store.alerts.raised(BROADCAST)),
                       what="the cleared condition forgotten")
            with sqlite3.connect(tmp_path / "source.db") as db:  # another deal too big for small
                db.execute("INSERT INTO deals VALUES (4, 'Huge win', 90000, '2026-01-02 08:00:00')")
            db.close()
            wait_until(lambda: hook.conditions().count("dead_letters:small") == 2,
                       what="the new dead letter told")


def test_outbox_age_and_api_allowance_are_told_once_until_they_clear(
        tmp_path: Path, org: LocalOrg, secrets: None) -> None:
    with receiving() as hook:
        spec = build(tmp_path, org.port, broadcast_notify=f"""    notify:
      - when: {{failed: false, outbox_older_than_seconds: 1, api_allowance_below: 0.1}}
        webhook: {{url: "{hook.url}"}}
""")
        broadcast = load(spec).integration(BROADCAST)
        # the broadcast's file names no Salesforce system: an org it uses is what counts
        integration = broadcast.model_copy(update={"destinations": [
            d.model_copy(update={"system": "org"}) if d.name == "offline" else d
            for d in broadcast.destinations]})
        store = Store.open(directory=tmp_path / "state")
        notifier = Notifier(integration, store, integration.notify)
        store.outbox.add(BROADCAST, [NewDelivery("small", 1, "v1", "upsert", {"id": 1})])
        metrics.api_usage("org", "api-usage=950/1000")

        notifier.check_state()
        assert hook.conditions() == ["api_allowance:org"], "the delivery is not a second old"
        time.sleep(1.2)
        notifier.check_state()
        notifier.check_state()
        assert sorted(hook.conditions()) == ["api_allowance:org", "outbox_age:small"]
        age = next(p.json for p in hook.posts if p.json["condition"] == "outbox_age:small")
        assert age["details"]["pending"] == 1 and age["details"]["oldest_pending_seconds"] > 1

        [leased] = store.outbox.lease(BROADCAST, "small", "tester")
        store.outbox.delivered([leased.id], "tester")
        metrics.api_usage("org", "api-usage=100/1000")
        notifier.check_state()
        assert store.alerts.raised(BROADCAST) == set(), "both cleared"
        metrics.api_usage("org", "api-usage=990/1000")
        notifier.check_state()
        assert hook.conditions().count("api_allowance:org") == 2, "told again once it came back"
