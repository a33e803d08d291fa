"""What a person does with a correlation's pairs: look at those the matcher is unsure of
(review), see why a pair scores as it does, and decide: accepted (linked from then on) or
rejected (never linked). This only records the decision; the correlation applies it at its
next match (`patchbay run`, or `serve`'s next rematch), and no later match undoes it.

Listing shows keys and scores only. Explaining a pair reads the compared fields of its two
records from their systems: the reviewer sees those two records' values, nothing else.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from patchbay.errors import ChoiceRefused, SpecError, UnknownPair
from patchbay.patterns.context import RunContext
from patchbay.store import Store
from patchbay.store.pairs import DECIDED, STATUSES, Pair

if TYPE_CHECKING:
    from patchbay.elements.match import Explanation

APPLIED_LATER = "the correlation applies it at its next match (patchbay run, or serve's next rematch)"


def check_status(status: str | None) -> None:
    """A --status / ?status= filter: one of the pairs' statuses."""
    if status is not None and status not in STATUSES:
        raise SpecError(f"status {status!r} is not one of {', '.join(STATUSES)}")


def held(store: Store, integration: str) -> None:
    """UnknownPair unless the engine state holds pairs of `integration` (a correlation that
    has run: a mistyped name has none)."""
    if not store.pairs.counts(integration):
        raise UnknownPair(f"the engine state holds no pairs of '{integration}': not a "
                          "correlation, or it has not run yet")


def find(store: Store, integration: str, left: str, right: str) -> Pair:
    held(store, integration)
    found = store.pairs.get(integration, left, right)
    if found is None:
        raise UnknownPair(f"'{integration}' has no pair {left!r} / {right!r} (see "
                          "`patchbay review list`)")
    found.integration = integration
    return found


def decide(store: Store, integration: str, left: str, right: str, decision: str,
           by: str) -> Pair:
    """Record a person's decision on a pair: accepted or rejected; the pair as it is now."""
    if decision not in DECIDED:
        raise ChoiceRefused(f"a decision is one of {', '.join(DECIDED)}, not {decision!r}")
    find(store, integration, left, right)
    if not store.pairs.decide(integration, left, right, decision, by):
        raise UnknownPair(f"'{integration}' has no pair {left!r} / {right!r} any more")
    return find(store, integration, left, right)


def explain(ctx: RunContext, left: str, right: str) -> Explanation:
    """Why the matcher takes the pair's records for the same or not, from both sides'
    records as they are now (each system is read)."""
    from patchbay.patterns.correlation import Correlation
    from patchbay.spec.correlation import CorrelationSpec

    if not isinstance(ctx.integration, CorrelationSpec):
        raise SpecError(f"'{ctx.integration.name}' is a {ctx.integration.pattern}, not a "
                        "correlation: it has no pairs")
    try:
        return Correlation(ctx).explain(left, right)
    finally:
        ctx.systems.close()


def since_of(text: str | None) -> dt.datetime | None:
    """A --since / ?since= time: ISO 8601, UTC unless it says otherwise."""
    if text is None:
        return None
    try:
        moment = dt.datetime.fromisoformat(text)
    except ValueError:
        raise SpecError(f"since {text!r} is not an ISO 8601 time (2026-01-31 or "
                        "2026-01-31T08:00:00+01:00)") from None
    return moment.astimezone(dt.UTC) if moment.tzinfo is not None else moment.replace(tzinfo=dt.UTC)
