"""Cron expressions for scheduled polls and runs."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from patchbay.cron import Cron
from patchbay.errors import SpecError
from patchbay.spec import load

FRIDAY_NOON = dt.datetime(2026, 11, 27, 12, 0, 30, tzinfo=dt.UTC)


def at(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=dt.UTC)  # type: ignore[misc]


@pytest.mark.parametrize(("expression", "expected"), [
    ("* * * * *", at(2026, 11, 27, 12, 1)),
    ("*/15 * * * *", at(2026, 11, 27, 12, 15)),
    ("0 2 * * *", at(2026, 11, 28, 2, 0)),
    ("@hourly", at(2026, 11, 27, 13, 0)),
    ("@daily", at(2026, 11, 28, 0, 0)),
    ("30 9 * * 1-5", at(2026, 11, 30, 9, 30)),          # Friday noon → Monday
    ("0 0 1 * *", at(2026, 12, 1, 0, 0)),
    ("0 0 1 1 *", at(2027, 1, 1, 0, 0)),
    ("0 12 29 2 *", at(2028, 2, 29, 12, 0)),            # the next leap day
    ("5,10 12 * * *", at(2026, 11, 27, 12, 5)),
    ("0 8-10/2 * * *", at(2026, 11, 28, 8, 0)),
    ("0 0 * * 7", at(2026, 11, 29, 0, 0)),              # 7 is Sunday, as 0 is
    ("0 0 1 * 1", at(2026, 11, 30, 0, 0)),              # both day fields: either matches
])
def test_next_after(expression: str, expected: dt.datetime) -> None:
    assert Cron.parse(expression).next_after(FRIDAY_NOON) == expected


def test_next_after_is_strictly_after() -> None:
    exactly = at(2026, 11, 27, 12, 15)
    assert Cron.parse("*/15 * * * *").next_after(exactly) == at(2026, 11, 27, 12, 30)


@pytest.mark.parametrize(("expression", "says"), [
    ("* * * *", "needs 5 fields"),
    ("61 * * * *", "minute '61' is outside 0-59"),
    ("* 24 * * *", "hour '24' is outside 0-23"),
    ("*/0 * * * *", "step must be at least 1"),
    ("* * * jan *", "'jan' where a number belongs"),
    ("5-1 * * * *", "outside"),
])
def test_bad_expressions_say_what_is_wrong(expression: str, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        Cron.parse(expression)


def test_an_expression_that_is_never_due_says_so() -> None:
    with pytest.raises(ValueError, match="never due"):
        Cron.parse("0 0 30 2 *").next_after(FRIDAY_NOON)


def test_a_bad_cron_in_a_file_names_the_line(tmp_path: Path) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text("""systems:
  a: sqlite:///a.db
integrations:
  - name: b
    pattern: broadcast
    source: {system: a, object: t, key: id, watermark: updated_at}
    trigger:
      cron: "*/5 * * *"
    destinations:
      - {name: d, system: a, object: u, key: id}
""")
    with pytest.raises(SpecError) as caught:
        load(spec)
    assert caught.value.problems == [
        f"{spec}:8: integrations[0].trigger.cron: cron '*/5 * * *' needs 5 fields "
        "(minute hour day-of-month month day-of-week), found 4"]
