"""Cron expressions: when a scheduled poll or run is next due.

The five standard fields, `minute hour day-of-month month day-of-week`, each `*`, a
number, a range `a-b`, a step `*/n` or `a-b/n`, or a comma list of those; day of week 0-7
(0 and 7 are Sunday). As in cron, when both day fields are restricted a day matching
either one is due. `@hourly`, `@daily` (`@midnight`), `@weekly`, `@monthly` and
`@yearly` (`@annually`) stand for their usual expressions. Times are UTC.

A small parser of our own rather than a dependency: the grammar is a page, and the
schedules are checked when an integration file is loaded, with the file's line.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

ALIASES = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *",
           "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *",
           "@annually": "0 0 1 1 *"}
_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
           ("day of week", 0, 7))
_HORIZON = dt.timedelta(days=366 * 5)
"""How far ahead to look for a time that matches (Feb 30 never does)."""


@dataclass(frozen=True)
class Cron:
    """A parsed cron expression; `Cron.parse` raises ValueError saying what is wrong."""

    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, text: str) -> Cron:
        expression = ALIASES.get(text.strip().lower(), text)
        parts = expression.split()
        if len(parts) != 5:
            raise ValueError(f"cron {text!r} needs 5 fields (minute hour day-of-month month "
                             f"day-of-week), found {len(parts)}")
        sets = [_field(part, name, low, high) for part, (name, low, high) in zip(parts, _FIELDS,
                                                                                  strict=True)]
        weekdays = frozenset(d % 7 for d in sets[4])
        return cls(text, sets[0], sets[1], sets[2], sets[3], weekdays,
                   any_day=parts[2] == "*", any_weekday=parts[4] == "*")

    def next_after(self, moment: dt.datetime) -> dt.datetime:
        """The first due time strictly after `moment` (UTC; whole minutes)."""
        current = moment.astimezone(dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(minutes=1)
        limit = current + _HORIZON
        while current < limit:
            if current.month not in self.months:
                current = (current.replace(day=1, hour=0, minute=0) + dt.timedelta(days=32)).replace(day=1)
                continue
            if not self._day_matches(current):
                current = current.replace(hour=0, minute=0) + dt.timedelta(days=1)
                continue
            if current.hour not in self.hours:
                current = current.replace(minute=0) + dt.timedelta(hours=1)
                continue
            if current.minute not in self.minutes:
                current += dt.timedelta(minutes=1)
                continue
            return current
        raise ValueError(f"cron {self.text!r} is never due")

    def _day_matches(self, moment: dt.datetime) -> bool:
        by_day = moment.day in self.days
        by_weekday = (moment.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return by_day and by_weekday
        return by_day or by_weekday


def _field(text: str, name: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for item in text.split(","):
        spread, _, step_text = item.partition("/")
        step = _number(step_text, name) if step_text else 1
        if step < 1:
            raise ValueError(f"the {name} step must be at least 1, not {step}")
        if spread == "*":
            start, end = low, high
        elif "-" in spread:
            first, _, last = spread.partition("-")
            start, end = _number(first, name), _number(last, name)
        else:
            start = _number(spread, name)
            end = high if step_text else start
        if not (low <= start <= end <= high):
            raise ValueError(f"the {name} {item!r} is outside {low}-{high}")
        values.update(range(start, end + 1, step))
    return frozenset(values)


def _number(text: str, name: str) -> int:
    if not text.isdigit():
        raise ValueError(f"the {name} field has {text!r} where a number belongs")
    return int(text)
