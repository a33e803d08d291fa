"""Field-level three-way merge: one participant's current values against the shadow.

For each shared field of a record, three values meet:

    current   what the participant holds now
    known     what it was last seen holding; `sent`: the values patchbay wrote to it and has
              not seen back yet, oldest first (two writes of one field may be on their way)
    shadow    what every participant should hold (the last synced value)

and the participant's change is decided field by field:

    current in sent                 the echo of patchbay's own write: dropped, with the
                                    writes before it (a write seen delivered before the
                                    values were read counts as known)
    current == known                no change
    first sight, one side empty     not a conflict: the value fills the gap
    not a writer of the field       the edit is undone: the participant gets the shadow back
    known == shadow, nothing sent   an edit from the synced value: it becomes the shadow
    otherwise                       a conflict: the participant changed the field while
                                    another's change had not reached it yet; settled by
                                    the field's policy (latest, priority, owner: the
                                    owner's value, else participant order) or held
                                    for a person (manual), and recorded either way

Edits to different fields by different participants never conflict: each field merges on
its own. `latest` means observed last by patchbay (this change, as it is merged now), never
a comparison of two systems' clocks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

_MISSING = object()


@dataclass(frozen=True)
class FieldRule:
    """How one shared field merges."""

    policy: str = "latest"
    owner: str | None = None
    writers: frozenset[str] | None = None
    """None: every participant may write it."""


@dataclass(frozen=True)
class FieldConflict:
    field: str
    candidates: dict[str, Any]
    """Participant -> its value (the shadow's under the participant that set it)."""
    policy: str
    winner: str | None
    """The participant whose value stands; None while held for a person."""


@dataclass
class Merge:
    """The state of one record as one participant's change is merged into it."""

    shared: dict[str, Any]
    origins: dict[str, str]
    held: set[str]
    known: dict[str, Any]
    sent: dict[str, list[Any]]
    changed: set[str] = field(default_factory=set)
    """Shared fields whose value changed."""
    echoes: int = 0
    edits: int = 0
    undone: set[str] = field(default_factory=set)
    """Fields of this participant to be given the shadow value back."""
    conflicts: list[FieldConflict] = field(default_factory=list)
    overtaken: set[str] = field(default_factory=set)
    """Fields whose pending write the participant's own edit overtook: that write no longer
    stands (it is sent anew, or given up, whatever the merge decides). Its value stays in
    `sent`: a write already under way may still land, and its echo is known for one."""


PENDING_KEPT = 8
"""At most this many unconfirmed writes of one field are remembered."""


def pending(sent: Mapping[str, Any], name: str) -> list[Any]:
    """The values of `name` written and not seen back, oldest first."""
    values = sent.get(name)
    if values is None:
        return []
    return list(values) if isinstance(values, list) else [values]


def with_sent(sent: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, list[Any]]:
    """`sent` with these values written after what it holds."""
    result = {name: pending(sent, name) for name in sent}
    for name, value in values.items():
        queue = result.setdefault(name, [])
        if not queue or queue[-1] != value:
            queue.append(value)
        del queue[:-PENDING_KEPT]
    return result


def last_sent(sent: Mapping[str, Any]) -> dict[str, Any]:
    """The newest value written of each field."""
    return {name: pending(sent, name)[-1] for name in sent if pending(sent, name)}


def merge(participant: str, current: Mapping[str, Any], *, shared: Mapping[str, Any],
          origins: Mapping[str, str], held: Sequence[str], known: Mapping[str, Any],
          sent: Mapping[str, Any], rules: Mapping[str, FieldRule],
          order: Sequence[str]) -> Merge:
    """Merge `participant`'s current values into the shadow (see the module docstring)."""
    result = Merge(dict(shared), dict(origins), set(held), dict(known),
                   {name: pending(sent, name) for name in sent if pending(sent, name)})
    for name, value in current.items():
        rule = rules.get(name, FieldRule())
        on_its_way = result.sent.get(name, [])
        was_known = result.known.get(name, _MISSING)
        if value in on_its_way:
            # The latest write of this value landed; the ones before it are overwritten.
            later = on_its_way[len(on_its_way) - on_its_way[::-1].index(value):]
            result.known[name] = value
            if later:
                result.sent[name] = later
            else:
                del result.sent[name]
            result.echoes += 1
            continue
        if was_known is not _MISSING and value == was_known:
            continue
        result.known[name] = value
        result.edits += 1
        if on_its_way:
            result.overtaken.add(name)
        in_shadow = result.shared.get(name, _MISSING)
        if rule.writers is not None and participant not in rule.writers:
            if in_shadow is not _MISSING and value != in_shadow:
                result.undone.add(name)
            continue
        if in_shadow is _MISSING or (was_known is _MISSING and in_shadow is None):
            _set(result, name, value, participant)
            continue
        if was_known is _MISSING and value is None:
            continue  # first sight of a record lacking a value the others have: it gets it
        if value == in_shadow:
            continue  # it holds the shadow's value already
        if name in result.held:
            continue  # a person settles it; this participant keeps its value meanwhile
        if was_known is not _MISSING and was_known == in_shadow and not on_its_way:
            _set(result, name, value, participant)
            continue
        _conflict(result, participant, name, value, in_shadow, rule, order)
    return result


def _set(result: Merge, name: str, value: Any, participant: str) -> None:
    result.shared[name] = value
    result.origins[name] = participant
    result.changed.add(name)


def _conflict(result: Merge, participant: str, name: str, value: Any, in_shadow: Any,
              rule: FieldRule, order: Sequence[str]) -> None:
    other = result.origins.get(name, "shadow")
    candidates = {other: in_shadow, participant: value}
    if rule.policy == "manual":
        result.held.add(name)
        result.conflicts.append(FieldConflict(name, candidates, "manual", None))
        return
    if rule.policy == "owner" and rule.owner in (participant, other):
        ours = rule.owner == participant
    elif rule.policy in ("owner", "priority"):
        # Between two participants neither of which owns the field, participant order
        # decides as priority does: never which change was observed first, or the outcome
        # would depend on the order of observation.
        ours = _rank(participant, order) < _rank(other, order)
    else:  # latest: this change is the one observed last
        ours = True
    if ours:
        _set(result, name, value, participant)
    else:
        result.undone.add(name)
    result.conflicts.append(FieldConflict(name, candidates, rule.policy,
                                          participant if ours else other))


def _rank(participant: str, order: Sequence[str]) -> int:
    return order.index(participant) if participant in order else len(order)
