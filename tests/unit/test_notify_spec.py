"""`notify:` in integration files: read per file and per integration, `${ENV}` in its URLs,
its secrets kept out of sight, and every mistake named with its line."""

from __future__ import annotations

import textwrap

import pytest

from patchbay import logs
from patchbay.errors import SpecError
from patchbay.spec import loads

SPEC = """\
systems:
  legacy: sqlite:///legacy.db
notify:
  - webhook: {{url: "https://hooks.example.com/services/${{SLACK_PATH}}"}}
integrations:
  - name: items
    pattern: migration
    source: {{system: legacy, object: items, key: id}}
    destination: {{system: legacy, object: copy, key: id}}
    notify:
{own}
"""

OWN = """\
      - when: {finished: true, rejects_above: 0.05, outbox_older_than_seconds: 600}
        email:
          smtp: "smtp://mailer:${SMTP_PASSWORD}@mail.example.com:587"
          starttls: true
          from: patchbay@example.com
          to: [ops@example.com]
"""

ENVIRON = {"SLACK_PATH": "T000/B000/XyzSecretPath", "SMTP_PASSWORD": "M4il-Pa55word"}


def test_the_file_s_and_the_integration_s_notifications_both_apply() -> None:
    file = loads(SPEC.format(own=OWN), environ=ENVIRON)
    [first, second] = file.notifications(file.integration("items"))
    assert first.webhook is not None and first.webhook.url.endswith("/T000/B000/XyzSecretPath")
    assert first.when.failed and not first.when.finished, "a failed run by default"
    assert second.email is not None and second.email.starttls
    assert second.email.sender == "patchbay@example.com"
    assert second.when.rejects_above == 0.05 and second.when.outbox_older_than_seconds == 600
    secrets = file.secrets
    assert "M4il-Pa55word" in secrets and first.webhook.url in secrets
    assert "M4il-Pa55word" not in logs.scrubbed("refused M4il-Pa55word and " + first.webhook.url)
    assert "XyzSecretPath" not in logs.scrubbed("posting to " + first.webhook.url)


@pytest.mark.parametrize(("own", "expected"), [
    ("      - when: {rejects_above: 5}\n        webhook: {url: 'https://h/x'}\n",
     "SPEC:11: integrations[0].notify[0].when.rejects_above: Input should be less than or equal to 1"),
    ("      - when: {finished: true}\n",
     "SPEC:11: integrations[0].notify[0]: give a webhook, an email, or both"),
    ("      - webhook: {url: 'ftp://h/x'}\n",
     "SPEC:11: integrations[0].notify[0].webhook.url: a webhook URL is"),
    ("      - email: {smtp: 'http://mail', from: a@b, to: [c@d]}\n",
     "SPEC:11: integrations[0].notify[0].email.smtp: an SMTP URL is"),
    ("      - email: {smtp: 'smtp://mail', from: a@b, to: [c@d], starttl: true}\n",
     "did you mean 'starttls'?"),
    ("      - when: {dead_letter: true}\n        webhook: {url: 'https://h/x'}\n",
     "did you mean 'dead_letters'?"),
])
def test_a_mistake_in_notify_is_named_with_its_line(own: str, expected: str) -> None:
    with pytest.raises(SpecError) as caught:
        loads(SPEC.format(own=own), environ=ENVIRON)
    found = "\n".join(p.replace("<integration>", "SPEC") for p in caught.value.problems)
    assert expected in found, found


def test_an_unset_variable_of_a_notify_url_is_a_problem_of_the_file() -> None:
    with pytest.raises(SpecError) as caught:
        loads(SPEC.format(own=textwrap.indent("- webhook: {url: 'https://h/x'}\n", " " * 6)),
              environ={})
    assert caught.value.problems == [
        "<integration>:4: notify[0].webhook.url: environment variable SLACK_PATH is not set"]
