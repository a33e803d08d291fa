"""A sync's verification (`patchbay verify` on a sync): read every participant now, writing
nothing, and say for every pair of participants of each object which records differ on the
shared fields both read, and which records one holds and the other lacks.

    per object, per participant: read its scope ──► shared shape (lookups translated to
    parent gids through the xref, as the sync does) ──► gid (xref; else the external id)
    per pair of participants: join by gid ──► compared, equal, differing (samples: gid,
    field, both values), missing in each

A record missing where the sync deleted it (a tombstone, a delete sent or carried out) is
not missing. Fields held for a person (conflict: manual) are listed apart, never counted as
differences: the sync leaves them unequal on purpose until someone chooses.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from patchbay import scope as scopes
from patchbay.model import Record
from patchbay.store.xref import Link, key_text

if TYPE_CHECKING:
    from patchbay.patterns.sync import Held, Sync

IN_SYNC, OUT_OF_SYNC = "in sync", "out of sync"
SAMPLES = 10
"""Differences (and missing records, and held fields) shown per pair or object."""


@dataclass
class _Copy:
    """One participant's records of one object, as shared values by gid."""

    participant: str
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    """gid -> the participant's key."""
    read: int = 0
    unlinked: int = 0
    """Records the xref does not know (not synced yet, or never: see `creates`)."""


@dataclass
class _Pair:
    """Two participants' copies of one object, compared."""

    first: str
    second: str
    fields: list[str]
    compared: int = 0
    equal: int = 0
    differing: int = 0
    by_field: Counter[str] = field(default_factory=Counter)
    missing_in: dict[str, int] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    missing_samples: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"participants": [self.first, self.second], "fields": self.fields,
                "compared": self.compared, "equal": self.equal, "differing": self.differing,
                "differing_by_field": dict(self.by_field), "missing_in": self.missing_in,
                "samples": self.samples, "missing_samples": self.missing_samples}


@dataclass(frozen=True)
class SyncVerification:
    """A sync's participants compared now: per object, what each holds and every pair's
    differences; the verdict is "in sync" only when no pair differs or misses a record."""

    integration: str
    objects: dict[str, dict[str, Any]]
    verdict: str
    verdict_reasons: list[str]

    def to_json(self) -> dict[str, Any]:
        return {"integration": self.integration, "pattern": "sync", "verification": "full",
                "objects": self.objects, "verdict": self.verdict,
                "verdict_reasons": self.verdict_reasons}


def verify(sync: Sync) -> SyncVerification:
    objects: dict[str, dict[str, Any]] = {}
    reasons: list[str] = []
    read = Counter[str]()
    for obj in sync.objects:
        held = [sync.held[(obj.name, p)] for p in sync.order if (obj.name, p) in sync.held]
        # Every participant's records of this object are held in memory (gid -> shared
        # values), one object at a time, so that each pair can be joined by gid; the reads
        # themselves stream a page at a time.
        copies = {h.participant: _read(sync, h, read) for h in held}
        gids = sorted({g for c in copies.values() for g in c.records})
        shadows = sync.store.shadows.get(sync.name, obj.name, gids)
        links = sync.store.xref.of(sync.name, obj.name, gids)
        gone = {g for g, s in shadows.items() if s.state == "deleted"}
        pairs = []
        for a, b in itertools.combinations(held, 2):
            fields = [n for n in obj.fields if a.shape.reads(n) and b.shape.reads(n)]
            pair = _Pair(a.participant, b.participant, fields,
                         missing_in={a.participant: 0, b.participant: 0})
            _compare(pair, copies[a.participant], copies[b.participant],
                     {g: set(s.held) for g, s in shadows.items() if s.held}, gone, links)
            pairs.append(pair)
            where = f"{obj.name}: {a.participant} and {b.participant}"
            if pair.differing:
                reasons.append(f"{where}: {pair.differing} records differ")
            for lacking, n in pair.missing_in.items():
                if n:
                    reasons.append(f"{where}: {n} records missing in {lacking}")
        objects[obj.name] = {
            "participants": {p: {"read": c.read, "unlinked": c.unlinked}
                             for p, c in copies.items()},
            "pairs": [p.to_json() for p in pairs],
            "held": _held(shadows, copies)}
    return SyncVerification(sync.name, objects, OUT_OF_SYNC if reasons else IN_SYNC, reasons)


def _read(sync: Sync, held: Held, read: Counter[str]) -> _Copy:
    """A participant's records of one object in its scope, as shared values by gid."""
    copy = _Copy(held.participant)
    spec, obj = held.spec, held.object
    originates = sync.spec.participant(held.participant).creates
    pages = held.connector.read(spec.object, scopes.bind(spec.scope, sync.ctx.params),
                                key=spec.key, fields=held.read_fields(),
                                page_size=sync.spec.options.batch_size)
    for page in pages:
        records = page.records
        links = sync.store.xref.by_keys(sync.name, obj.name, held.participant,
                                        [r[spec.key] for r in records])
        parents = _parent_gids(sync, held, records)
        for record in records:
            key = key_text(record[spec.key])
            link = links.get(key)
            gid = link.gid if link is not None else (
                str(record[spec.external_id]) if spec.external_id and record.get(spec.external_id)
                else None)
            copy.read += 1
            if gid is None:
                copy.unlinked += 1
                if not originates:
                    continue  # never created elsewhere: by design, not a difference
                gid = f"{held.participant}:{key}"  # missing everywhere else
            copy.records[gid] = _shared(held, record, parents)
            copy.keys[gid] = key
        read[held.participant] += len(records)
        sync.ctx.notify("verify", {"read": sum(read.values())})
    return copy


def _parent_gids(sync: Sync, held: Held, records: Sequence[Record]) -> dict[str, dict[str, str]]:
    """For each lookup field, the parent gids of the parent keys these records hold."""
    found: dict[str, dict[str, str]] = {}
    for name, shared in held.object.fields.items():
        mapping = held.spec.fields.get(name)
        if shared.lookup is None or mapping is None:
            continue
        values = [r.get(mapping.field) for r in records]
        links = sync.store.xref.by_keys(sync.name, shared.lookup, held.participant,
                                        [v for v in values if v is not None])
        found[name] = {k: link.gid for k, link in links.items()}
    return found


def _shared(held: Held, record: Record, parents: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
    """The record's shared values, a lookup as its parent's gid; a parent outside the sync
    is left out, as the sync leaves it."""
    shared = held.shape.to_shared(record)
    for name, by_key in parents.items():
        if shared.get(name) is not None:
            parent = by_key.get(key_text(record[held.spec.fields[name].field]))
            if parent is None:
                del shared[name]
            else:
                shared[name] = parent
    return shared


def _compare(pair: _Pair, a: _Copy, b: _Copy, held: Mapping[str, set[str]], gone: set[str],
             links: Mapping[str, Mapping[str, Link]]) -> None:
    for gid, values in a.records.items():
        other = b.records.get(gid)
        if other is None:
            _missing(pair, gid, a, b, gone, links)
            continue
        pair.compared += 1
        differ = [n for n in pair.fields if n not in held.get(gid, ())
                  and values.get(n) != other.get(n)]
        if not differ:
            pair.equal += 1
            continue
        pair.differing += 1
        pair.by_field.update(differ)
        for name in differ:
            if len(pair.samples) < SAMPLES:
                pair.samples.append({"gid": gid, "field": name, "values": {
                    a.participant: values.get(name), b.participant: other.get(name)}})
    for gid in b.records:
        if gid not in a.records:
            _missing(pair, gid, b, a, gone, links)


def _missing(pair: _Pair, gid: str, holding: _Copy, lacking: _Copy, gone: set[str],
             links: Mapping[str, Mapping[str, Link]]) -> None:
    """A record one participant holds and the other lacks: missing, unless the sync deleted
    it (a tombstone, or a delete sent to or carried out by either)."""
    of = links.get(gid, {})
    if gid in gone or any(of[p].state != "live" for p in (holding.participant, lacking.participant)
                          if p in of):
        return
    pair.missing_in[lacking.participant] += 1
    if len(pair.missing_samples) < SAMPLES:
        pair.missing_samples.append({"gid": gid, "missing_in": lacking.participant,
                                     "key": holding.keys[gid], "held_by": holding.participant})


def _held(shadows: Mapping[str, Any], copies: Mapping[str, _Copy]) -> dict[str, Any]:
    """The fields held for a person, with each participant's value now."""
    found = [(gid, name) for gid, s in sorted(shadows.items()) for name in s.held]
    return {"count": len(found), "samples": [
        {"gid": gid, "field": name, "values": {p: c.records[gid].get(name)
                                               for p, c in copies.items() if gid in c.records}}
        for gid, name in found[:SAMPLES]]}
