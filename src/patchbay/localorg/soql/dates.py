"""Date literals (TODAY, LAST_N_DAYS:n, THIS_MONTH, ...) as the days they cover."""

from __future__ import annotations

import datetime as dt

from patchbay.localorg.soql.syntax import DateLiteral
from patchbay.localorg.values import stored_datetime


def midnight(day: dt.date) -> str:
    return stored_datetime(dt.datetime.combine(day, dt.time(), dt.UTC))


def _add_months(first: dt.date, months: int) -> dt.date:
    index = first.year * 12 + first.month - 1 + months
    return dt.date(index // 12, index % 12 + 1, 1)


def _days_after(day: dt.date, days: int) -> dt.date:
    """`day` moved by `days`, held within years 1 to 9999 (a range past them ends there)."""
    ordinal = min(max(day.toordinal() + days, 1), dt.date.max.toordinal())
    return dt.date.fromordinal(ordinal)


def date_range(literal: DateLiteral, today: dt.date) -> tuple[dt.date, dt.date]:
    """[first day, day after the last day) of a date literal, relative to today (UTC)."""
    day = dt.timedelta(days=1)
    name, n = literal.name, literal.n
    if name == "YESTERDAY":
        return today - day, today
    if name == "TODAY":
        return today, today + day
    if name == "TOMORROW":
        return today + day, today + 2 * day
    if name in ("LAST_N_DAYS", "LAST_90_DAYS"):
        # Counts back from today and includes it: LAST_N_DAYS:1 is yesterday and today.
        return _days_after(today, -(90 if n is None else n)), today + day
    if name in ("NEXT_N_DAYS", "NEXT_90_DAYS"):
        return today + day, _days_after(today, 1 + (90 if n is None else n))
    if name == "N_DAYS_AGO":
        assert n is not None
        return _days_after(today, -n), _days_after(today, 1 - n)
    shift = {"THIS": 0, "LAST": -1, "NEXT": 1}[name.split("_")[0]]
    if name.endswith("_WEEK"):
        sunday = today - ((today.weekday() + 1) % 7) * day  # weeks start on Sunday (en_US)
        start = sunday + 7 * shift * day
        return start, start + 7 * day
    if name.endswith("_MONTH"):
        start = _add_months(today.replace(day=1), shift)
        return start, _add_months(start, 1)
    year = today.year + shift  # *_YEAR
    return dt.date(year, 1, 1), dt.date(year + 1, 1, 1)
