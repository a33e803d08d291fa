"""What a person does with a sync's conflicts: settle one held for them (policy manual) by
choosing its value, or the value one participant had. This only records the choice; the
sync applies it everywhere on its next round (`patchbay run`, or `serve`'s next poll)."""

from __future__ import annotations

import json
from typing import Any

from patchbay.errors import ChoiceRefused, ConflictNotHeld, UnknownConflict
from patchbay.store import Store
from patchbay.store.conflicts import ConflictRecord

APPLIED_LATER = "the sync applies it everywhere on its next round (patchbay run, or serve)"


def value_of(text: str) -> Any:
    """A value typed on a command line: what it means as JSON (42, true, null, "text",
    {"a": 1}) when it parses as JSON, else the text itself (Ada Lovelace)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def find(store: Store, conflict_id: int) -> ConflictRecord:
    found = store.conflicts.get(conflict_id)
    if found is None:
        raise UnknownConflict(f"no conflict {conflict_id} (see `patchbay conflicts list`)")
    return found


def choose(store: Store, conflict_id: int, *, value: Any = None, pick: str | None = None,
           by: str) -> ConflictRecord:
    """Record a person's choice for a held conflict: `value`, or (`pick`) the value that
    participant had; the conflict as it is now (chosen)."""
    conflict = find(store, conflict_id)
    if conflict.status != "held":
        settled = f" ({conflict.winner}'s value stands)" if conflict.winner else ""
        raise ConflictNotHeld(f"conflict {conflict_id} is {conflict.status}{settled}, not held: "
                              "only a conflict held for a person takes a choice")
    if conflict.kind != "field" or conflict.field is None:
        raise ChoiceRefused(f"conflict {conflict_id} is a {conflict.kind} conflict: only a "
                            "field's conflict takes a value")
    if pick is not None:
        if pick not in conflict.candidates:
            raise ChoiceRefused(f"'{pick}' is not a candidate of conflict {conflict_id}; its "
                                "candidates are " + ", ".join(f"'{c}'" for c in conflict.candidates))
        value = conflict.candidates[pick]
    if not store.conflicts.choose(conflict_id, value, by):
        raise ConflictNotHeld(f"conflict {conflict_id} was settled meanwhile: "
                              "only a conflict held for a person takes a choice")
    return find(store, conflict_id)
