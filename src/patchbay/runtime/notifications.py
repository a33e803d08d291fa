"""Telling people: an integration's `notify:` conditions checked after each run and, under
`patchbay serve`, every `check_seconds`; each condition that holds sent to a webhook or
by e-mail.

    after a run          finished, failed, rejects_above, and the state's conditions below
    periodically         dead_letters, outbox_older_than_seconds, api_allowance_below

A condition that holds is told once: `store.alerts.raise_` records it (one process of many
wins), and it is told again only after a check finds it cleared (`finished` is told every
time). Sending never fails a run: each channel is tried SEND_ATTEMPTS times with backoff,
then the failure is logged and counted (`patchbay_notifications_failed_total`), and the
condition is cleared so the next check tries again.

Webhook body: {"text": ..., "integration", "condition", "run", "details"} (`text` is what
Slack shows), signed as patchbay's HTTP destination signs (connectors/http.py `sign`).
E-mail: the same text, with the run's report attached as report.json.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import smtplib
import ssl
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx

from patchbay import logs, metrics
from patchbay.connectors.http import SIGNATURE_HEADER, TIMESTAMP_HEADER, sign
from patchbay.retry import RetryPolicy
from patchbay.spec import EmailNotifySpec, IntegrationSpec, NotifySpec, WebhookNotifySpec
from patchbay.store import Store

log = logging.getLogger(__name__)

SEND_ATTEMPTS = 3
FAILED_VERDICTS = ("failed", "incomplete")


@dataclass(frozen=True)
class Notice:
    """One condition that holds, as it is told."""

    condition: str
    """Its name, with what it concerns: `failed`, `dead_letters:<destination>`, ..."""
    text: str
    details: Mapping[str, Any] = field(default_factory=dict)
    run: str | None = None
    report: Mapping[str, Any] | None = None


class Notifier:
    """The notifications of one integration, on one engine state."""

    def __init__(self, integration: IntegrationSpec, store: Store,
                 notifications: Sequence[NotifySpec], retry: RetryPolicy | None = None) -> None:
        self.integration, self.store, self.notifications = integration, store, notifications
        # any failure is worth another try: a receiver restarting, a mail server busy
        self.retry = retry or RetryPolicy(SEND_ATTEMPTS, 1.0, retry_on=(Exception,))

    @property
    def name(self) -> str:
        return self.integration.name

    def after_run(self, report: Mapping[str, Any] | None, error: BaseException | None = None) -> None:
        """Check a run's conditions (and the state's) and tell what holds; never raises."""
        self._guarded(lambda: self._check(report, error, ran=True))

    def check_state(self) -> None:
        """Check the state's conditions (outbox, dead letters, API allowance); never raises."""
        self._guarded(lambda: self._check(None, None, ran=False))

    def _guarded(self, check: Callable[[], None]) -> None:
        if not self.notifications:
            return
        try:
            check()
        except Exception as exc:  # telling must never stop what it tells about
            log.warning("%s: checking notifications failed: %s", self.name,
                        logs.scrubbed(f"{type(exc).__name__}: {exc}"))

    def _check(self, report: Mapping[str, Any] | None, error: BaseException | None,
               ran: bool) -> None:
        backlog = [b for b in self.store.outbox.backlog() if b.integration == self.name] if any(
            n.when.reads_outbox for n in self.notifications) else []
        allowances = metrics.allowances()
        raised = self.store.alerts.raised(self.name)
        for index, notify in enumerate(self.notifications):
            held: dict[str, Notice] = {}
            checked: list[str] = []  # condition prefixes this check decides on
            when = notify.when
            if ran:
                run_notices = _run_conditions(self.name, notify, report, error)
                held.update(run_notices)
                checked += [c for c, on in (("failed", when.failed),
                                            ("rejects", when.rejects_above is not None)) if on]
            if when.dead_letters:
                checked.append("dead_letters:")
                held.update({f"dead_letters:{b.destination}": Notice(
                    f"dead_letters:{b.destination}",
                    f"patchbay: '{self.name}' has {b.dead} dead letter(s) for {b.destination}",
                    {"destination": b.destination, "dead": b.dead}) for b in backlog if b.dead})
            if when.outbox_older_than_seconds is not None:
                limit = when.outbox_older_than_seconds
                checked.append("outbox_age:")
                held.update({f"outbox_age:{b.destination}": Notice(
                    f"outbox_age:{b.destination}",
                    f"patchbay: '{self.name}': the oldest of {b.pending} pending deliveries to "
                    f"{b.destination} waits for {b.oldest_pending_seconds:.0f} s (limit "
                    f"{limit:g} s)",
                    {"destination": b.destination, "pending": b.pending,
                     "oldest_pending_seconds": round(b.oldest_pending_seconds, 1)})
                    for b in backlog if b.pending and b.oldest_pending_seconds > limit})
            if when.api_allowance_below is not None:
                for system in sorted({name for name, _ in self.integration.systems_used()}):
                    if system not in allowances:
                        continue  # not heard from in this process: nothing to decide
                    used, most = allowances[system]
                    checked.append(f"api_allowance:{system}")
                    left = (most - used) / most if most else 0.0
                    if left < when.api_allowance_below:
                        held[f"api_allowance:{system}"] = Notice(
                            f"api_allowance:{system}",
                            f"patchbay: Salesforce system '{system}' has {most - used} of "
                            f"{most} API calls left ({left:.1%})",
                            {"system": system, "used": used, "max": most})
            mine = {c.partition(":")[2] for c in raised if c.startswith(f"{index}:")}
            cleared = [c for c in mine if c not in held and any(
                c == p or (p.endswith(":") and c.startswith(p)) for p in checked)]
            self.store.alerts.clear(self.name, [f"{index}:{c}" for c in cleared])
            for condition, notice in held.items():
                once = condition != "finished"
                if once and not self.store.alerts.raise_(self.name, f"{index}:{condition}"):
                    continue  # told already, and it has not cleared since
                if not self._send(notify, notice) and once:
                    self.store.alerts.clear(self.name, [f"{index}:{condition}"])

    def _send(self, notify: NotifySpec, notice: Notice) -> bool:
        """Send on each channel; whether at least one got it."""
        sent = False
        for channel, send in (("webhook", notify.webhook and self._post),
                              ("email", notify.email and self._mail)):
            if not send:
                continue
            try:
                self.retry.call(functools.partial(send, notify, notice))
            except Exception as exc:
                metrics.notifications_failed.labels(self.name, channel).inc()
                log.warning("%s: the %s notification of %s could not be sent after %d tries: %s",
                            self.name, channel, notice.condition, self.retry.max_attempts,
                            logs.scrubbed(f"{type(exc).__name__}: {exc}"))
            else:
                metrics.notifications_sent.labels(self.name, channel).inc()
                sent = True
        return sent

    def _post(self, notify: NotifySpec, notice: Notice) -> None:
        webhook = notify.webhook
        assert isinstance(webhook, WebhookNotifySpec)
        body = json.dumps({"text": notice.text, "integration": self.name,
                           "condition": notice.condition, "run": notice.run,
                           "details": notice.details}, default=str).encode()
        headers = {"Content-Type": "application/json"}
        if webhook.secret_env:
            secret = os.environ.get(webhook.secret_env)
            if not secret:
                raise _NotSent(f"environment variable {webhook.secret_env} is not set")
            logs.hide([secret])
            timestamp = str(int(time.time()))
            headers |= {TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign(secret, timestamp, body)}
        response = httpx.post(webhook.url, content=body, headers=headers,
                              timeout=webhook.timeout_seconds)
        if response.status_code >= 300:
            raise _NotSent(f"the webhook answered {response.status_code}")

    def _mail(self, notify: NotifySpec, notice: Notice) -> None:
        email = notify.email
        assert isinstance(email, EmailNotifySpec)
        message = EmailMessage()
        message["Subject"] = f"[patchbay] {self.name}: {notice.condition}"
        message["From"], message["To"] = email.sender, ", ".join(email.to)
        lines = [notice.text, ""] + [f"{k}: {v}" for k, v in notice.details.items()]
        message.set_content("\n".join(lines) + "\n")
        if notice.report is not None:
            message.add_attachment(json.dumps(notice.report, indent=2, default=str).encode(),
                                   maintype="application", subtype="json",
                                   filename="report.json")
        parts = urlsplit(email.smtp)
        secure = parts.scheme.lower() == "smtps"
        port = parts.port or (465 if secure else 25)
        host = parts.hostname or ""
        client = (smtplib.SMTP_SSL(host, port, timeout=email.timeout_seconds,
                                   context=ssl.create_default_context()) if secure
                  else smtplib.SMTP(host, port, timeout=email.timeout_seconds))
        with client:
            if email.starttls and not secure:
                client.starttls(context=ssl.create_default_context())
            if parts.username:
                client.login(unquote(parts.username), unquote(parts.password or ""))
            client.send_message(message)


class _NotSent(Exception):
    """A receiver that did not take the notification."""


def _run_conditions(name: str, notify: NotifySpec, report: Mapping[str, Any] | None,
                    error: BaseException | None) -> dict[str, Notice]:
    """The run's conditions of `notify` that hold."""
    when, held = notify.when, {}
    report = report or {}
    run = report.get("run")
    verdict = "failed" if error is not None else str(report.get("verdict")
                                                     or report.get("status") or "finished")
    counts = report.get("counts") or {}
    read = counts.get("read", report.get("delivered", 0) + report.get("dead", 0))
    set_aside = counts.get("rejected", 0) + counts.get("failed", 0) + report.get("dead", 0)
    summary = {"verdict": verdict, "read": read, "set_aside": set_aside,
               **({"error": logs.scrubbed(str(error))} if error is not None else {})}
    of_run = f"run {run} of '{name}'" if run else f"'{name}'"
    if when.finished and error is None:
        held["finished"] = Notice("finished", f"patchbay: {of_run} finished: {verdict}"
                                  + (f", {set_aside} of {read} set aside" if set_aside else ""),
                                  summary, run, report)
    if when.failed and (error is not None or verdict in FAILED_VERDICTS):
        reason = logs.scrubbed(str(error)) if error is not None else "; ".join(
            report.get("verdict_reasons") or []) or verdict
        held["failed"] = Notice("failed", f"patchbay: {of_run} failed: {reason}", summary, run,
                                report or None)
    share = when.rejects_above
    if share is not None and read and set_aside / read > share:
        held["rejects"] = Notice("rejects", f"patchbay: {of_run} set aside {set_aside} of {read} "
                                 f"records ({set_aside / read:.1%}, above {share:.1%})",
                                 summary, run, report)
    return held
