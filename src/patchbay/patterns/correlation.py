"""Correlation: two systems exchange data about the records both hold, and only those.

    every `rematch_seconds` (and at every run, and when the file changes): read both sides'
        compared fields, match them (elements/match: blocking, comparisons, Fellegi-Sunter,
        one to one) ──► pairs: link / review; a person's decisions (accepted, rejected)
        stand over any match
        ──► new links: a gid in the xref for both records, both merged as first seen
        ──► links that no longer hold: forgotten (xref, shadow, pending deliveries)
    between full matches, each batch of changes noticed: the records whose compared values
        changed (or that are new, or gone) are re-matched against the other side through
        the blocking rules, under the model of the last full match (no refit): a newly
        shared record is linked, a link that no longer holds is dropped, one to one against
        the links held, a person's decisions standing
    then, for linked records only, everything a sync does (patterns/sync.py): changes
        merged field by field with the shadow, echoes dropped, conflicts by policy, each
        side's difference delivered through the outbox; each field written, each link made
        and dropped is recorded in the audit ledger (store/pairs.py)

What the re-match joins with is both sides' compared values as the last full match read
them, kept up to date with every change noticed: in this process's memory only (a full
match reads them into memory too), never in the engine state, not even hashed (a birth date
or a postcode is too short a value for a hash to hide).

A record without a link is never identified (`_identify` gives it no gid): nothing of it
reaches the engine state, the outbox, the other system, a log line or a report, beyond
counts. The compared fields that `share` does not list never cross either: the shadow holds
the shared ones only. A correlation never creates or deletes a record.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from patchbay import scope as scopes
from patchbay.elements.match.assign import one_to_one
from patchbay.elements.shape import Shape
from patchbay.errors import SpecError
from patchbay.model import Change, ChangeKind, Record
from patchbay.patterns.context import RunContext, spec_of
from patchbay.patterns.registry import Pattern, Report
from patchbay.patterns.sync import Held, Sync, _Work, merging, new_gid
from patchbay.patterns.sync_verify import verify
from patchbay.spec import IntegrationSpec
from patchbay.spec.correlation import CorrelationSideSpec, CorrelationSpec
from patchbay.spec.sync import ParticipantObjectSpec, SharedFieldSpec, SyncSpec
from patchbay.store.pairs import DECIDED, LINKED, Crossed, Pair
from patchbay.store.shadow import Shadow
from patchbay.store.xref import Link, key_text

if TYPE_CHECKING:
    from patchbay.elements.match import Explanation, Matcher
    from patchbay.elements.match.records import Records

log = logging.getLogger(__name__)

OBJECT = "record"
"""The one shared object of a correlation's sync (see CorrelationSpec.as_sync)."""


class Correlation(Sync):
    """One correlation integration: a sync of the linked pairs, linked by matching."""

    creates_records = False
    keeps_read_position = False

    def __init__(self, ctx: RunContext) -> None:
        self.correlation = spec_of(ctx, CorrelationSpec)
        self._matched_at: float | None = None
        self._live: _Live | None = None
        self.dropped = 0
        self.rematched = 0
        self.full_matches = 0
        super().__init__(ctx, self.correlation.as_sync())

    def _also_read(self, participant: str) -> tuple[str, ...]:
        """The compared fields, read with every change to re-match the records that change
        (into memory, for the matcher only: the shape shares the `share` fields alone)."""
        side = self.correlation.side(participant)
        return tuple(side.fields[name].field for name in self.correlation.match.fields)

    def _definition(self, integration: IntegrationSpec) -> SyncSpec:
        if not isinstance(integration, CorrelationSpec):
            raise SpecError(f"'{self.name}' is no longer a correlation")
        self.correlation = integration
        self._matched_at = None  # a new definition of "same": match again at once
        return integration.as_sync()

    # -- identity comes from matching only ------------------------------------------------------

    def _identify(self, held: Held, changes: Sequence[Change], work: _Work) -> dict[str, str]:
        self.tally.add(held.participant, "not shared", len(changes))
        return {}

    def poll(self, enqueued: Callable[[], None] | None = None) -> int:
        with merging(self.name):
            due = self._matched_at is None or \
                time.monotonic() - self._matched_at >= self.correlation.rematch_seconds
            if due:
                self.correlate()
            return super().poll(enqueued)

    def correlate(self) -> None:
        """Match both sides now, and bring the pairs and the xref up to date with it."""
        self._matched_at = time.monotonic()
        self._live = None
        self.full_matches += 1
        left_side, right_side = self.correlation.participants
        left, right = self._compared(left_side), self._compared(right_side)
        known = {(p.left, p.right): p for p in self.store.pairs.all(self.name)}
        # A pair with a gid is linked in the xref, whatever a person has said since.
        linked_before = {p.gid: (p.left, p.right) for p in known.values() if p.gid}
        found: dict[tuple[str, str], Pair] = {}
        if left.num_rows and right.num_rows:
            found, matcher = self._matched(left, right)
            self._live = _Live(matcher, list(matcher.fitted_records()))
            matcher.release()  # a re-match needs the model and the records, not the pairs
        present = (set(left.column("id").to_pylist()), set(right.column("id").to_pylist()))
        pairs = _pairs(found, known, present)
        linked_now = {p.gid for p in pairs.values() if p.status in LINKED and p.gid}
        dropped = sorted(set(linked_before) - linked_now)
        for gid in dropped:  # a person's decision stays; a match's link is marked dropped
            left_key, right_key = key = linked_before[gid]
            if key not in pairs:
                pairs[key] = Pair(left_key, right_key, "dropped", None, known[key].weight,
                                  known[key].probability)
        for key, pair in known.items():
            if pair.status == "review" and key not in pairs:
                pairs[key] = Pair(pair.left, pair.right, "dropped", None)
        new = [p for p in pairs.values()
               if p.status in LINKED and p.gid and p.gid not in linked_before]
        self._store(pairs, new, {gid: linked_before[gid] for gid in dropped})
        self._merge_new(new)

    # -- re-matching the records that change --------------------------------------------------

    def _merge(self, held: Held, changes: Sequence[Change], **kwargs: Any) -> None:
        self._rematch(held, changes)
        super()._merge(held, changes, **kwargs)

    def _rematch(self, held: Held, changes: Sequence[Change]) -> None:
        """Re-match the records of `changes` whose compared values changed (new ones, gone
        ones) against the other side, under the last full match's model: link what is now
        shared, drop the links that no longer hold; a person's decisions stand. Nothing
        before the first full match of this process (a push merged by another one)."""
        live = self._live
        if live is None or not changes:
            return
        index = [p.name for p in self.correlation.participants].index(held.participant)
        side, other = live.sides[index], live.sides[1 - index]
        latest = {key_text(c.key): c for c in changes if c.key is not None and c.key != ""}
        present = {k: c for k, c in latest.items()
                   if c.kind is not ChangeKind.DELETED and held.in_scope(c.record)}
        gone = [k for k in latest if k not in present and k in side.rows]
        given = self._compared_rows(self.correlation.participants[index],
                                    [c.record for c in present.values()])
        differing = side.differing(given, "id")
        if not differing.any() and not gone:
            return
        newer = live.matcher.records(given.filter(pa.array(differing)), first_row=len(side.ids))
        side.update(newer, gone)
        candidates = live.matcher.rematch(side, other, left_keys=newer.keys) if index == 0 \
            else live.matcher.rematch(other, side, right_keys=newer.keys)
        changed = {str(i) for i in newer.ids} | set(gone)
        self.rematched += len(changed)
        keys: tuple[set[str], set[str]] = (set(candidates.column("left_id").to_pylist()),
                                           set(candidates.column("right_id").to_pylist()))
        keys[index].update(changed)
        known = {(p.left, p.right): p for p in self.store.pairs.touching(
            self.name, sorted(keys[0]), sorted(keys[1]))}
        pairs, new, dropped = _rematched(candidates, known, index, changed,
                                         (live.sides[0].rows, live.sides[1].rows))
        if pairs:
            self._store(pairs, new, dropped)
            self._merge_new(new)

    def explain(self, left_key: str, right_key: str) -> Explanation:
        """Field by field, why the matcher takes these two records for the same or not, as
        both sides' records in scope are now (the matcher fitted on them as `correlate` fits
        it): the compared fields' values of the two, the level they agree at, its weight."""
        from patchbay.elements.match import Matcher

        tables = [self._compared(side) for side in self.correlation.participants]
        for side, table, key in zip(self.correlation.participants, tables, (left_key, right_key),
                                    strict=True):
            if not pc.any(pc.equal(table.column("id"), key)).as_py():
                raise SpecError(f"{side.name} holds no record {key!r} in the correlation's scope "
                                "now: there is nothing to explain")
        spec = self.correlation.match.model_copy(update={"id": "id"})
        return Matcher(spec).fit(*tables).explain(left_key, right_key)

    def _compared(self, side: CorrelationSideSpec) -> pa.Table:
        """A side's records in scope, as the compared fields' shared values (text), with the
        key as `id`: read into memory for the matcher only, never kept."""
        shape = self._compared_shape(side)
        connector = self.ctx.systems[side.system]
        return pa.concat_tables([self._compared_rows(side, page.records) for page in connector.read(
            side.object, scopes.bind(side.scope, self.ctx.params), key=side.key,
            fields=shape.read_fields(), page_size=5000)] or [self._compared_rows(side, [])])

    def _compared_shape(self, side: CorrelationSideSpec) -> Shape:
        match = self.correlation.match
        held = ParticipantObjectSpec(object=side.object, key=side.key,
                                     fields={n: side.fields[n] for n in match.fields})
        return Shape(held, {n: SharedFieldSpec(type="text") for n in match.fields})

    def _compared_rows(self, side: CorrelationSideSpec, records: Sequence[Record]) -> pa.Table:
        """`records` of `side` as the compared fields' shared values (text), the key as `id`."""
        fields = list(self.correlation.match.fields)
        shape = self._compared_shape(side)
        ids: list[str] = []
        columns: dict[str, list[Any]] = {n: [] for n in fields}
        for record in records:
            if record.get(side.key) is None:
                continue
            shared = shape.to_shared(record)
            ids.append(key_text(record[side.key]))
            for name in fields:
                columns[name].append(shared.get(name))
        return pa.table({"id": pa.array(ids, pa.string()),
                         **{n: pa.array(v, pa.string()) for n, v in columns.items()}})

    def _matched(self, left: pa.Table, right: pa.Table) -> tuple[dict[tuple[str, str], Pair], Matcher]:
        """The matcher's links and review pairs, and the fitted matcher."""
        from patchbay.elements.match import Matcher  # DuckDB, rapidfuzz: only when used

        spec = self.correlation.match.model_copy(update={"id": "id"})
        matcher = Matcher(spec).fit(left, right)
        table = matcher.pairs()
        table = table.filter(pc.not_equal(table.column("decision"), "none"))
        found: dict[tuple[str, str], Pair] = {}
        for row in table.select(["left_id", "right_id", "match_weight", "probability",
                                 "decision"]).to_pylist():
            found[(row["left_id"], row["right_id"])] = Pair(
                row["left_id"], row["right_id"], row["decision"], None,
                float(row["match_weight"]), float(row["probability"]))
        return found, matcher

    def _store(self, pairs: Mapping[tuple[str, str], Pair], new: Sequence[Pair],
               dropped: Mapping[str, tuple[str, str]]) -> None:
        """The pairs, the new links (xref, an empty shadow) and the links dropped (gid ->
        keys: forgotten with their pending deliveries), in one unit of work with their
        entries in the audit ledger."""
        left, right = (p.name for p in self.correlation.participants)
        destinations = [held.destination for held in self.held.values()]
        gone = sorted(dropped)
        events = [Crossed(str(p.gid), left, p.left, right, p.right, "", p.weight, "linked")
                  for p in new]
        events += [Crossed(gid, left, keys[0], right, keys[1], "",
                           pairs[keys].weight if keys in pairs else None, "dropped")
                   for gid, keys in dropped.items()]
        with self.store.transaction(serial=f"sync:{self.name}") as tx:
            tx.pairs.save(self.name, list(pairs.values()))
            if gone:
                tx.xref.forget(self.name, OBJECT, gone)
                tx.shadows.forget(self.name, OBJECT, gone)
                for destination in destinations:
                    tx.outbox.supersede(self.name, destination, gone)
            tx.xref.save(self.name, OBJECT, [link for p in new for link in (
                Link(str(p.gid), left, p.left), Link(str(p.gid), right, p.right))])
            tx.shadows.save(self.name, OBJECT, [Shadow(str(p.gid)) for p in new])
            if events:
                tx.pairs.crossed(self.name, events)
        self.dropped += len(dropped)
        if dropped:
            log.info("%s: %d link(s) no longer hold and were dropped", self.name, len(dropped))

    def _merge_new(self, new: Sequence[Pair]) -> None:
        """Both records of each new link, merged as first seen: what differs is settled by
        the conflict policies and sent across."""
        for index, side in enumerate(self.correlation.participants):
            held = self.held[(OBJECT, side.name)]
            keys = [p.left if index == 0 else p.right for p in new]
            for start in range(0, len(keys), self.spec.options.batch_size):
                chunk = keys[start:start + self.spec.options.batch_size]
                records = held.connector.get(side.object, side.key, chunk,
                                             held.read_fields())
                # merged as they are, not re-matched: the match that linked them is current
                super()._merge(held, [Change(side.name, side.object, key, ChangeKind.UPDATED, record)
                                   for key, record in records.items()])

    # -- the ledger and the report --------------------------------------------------------------

    def crossed(self, held: Held, records: Sequence[Record]) -> None:
        """Each shared field written to `held`'s side, in the audit ledger: from which record
        to which, under which match weight (the values stay in the systems)."""
        names = {m.field: n for n, m in held.spec.fields.items()}
        by_gid = self.store.pairs.by_gid(self.name, [str(r["__gid__"]) for r in records])
        left = self.correlation.participants[0].name
        other = next(p.name for p in self.correlation.participants if p.name != held.participant)
        found = []
        for record in records:
            pair = by_gid.get(str(record["__gid__"]))
            if pair is None:
                continue
            source_key, target_key = (pair.right, pair.left) if held.participant == left \
                else (pair.left, pair.right)
            found += [Crossed(str(pair.gid), other, source_key, held.participant, target_key,
                              names[name], pair.weight)
                      for name in record if name in names]
        if found:
            self.store.pairs.crossed(self.name, found)

    def _reported(self) -> dict[str, Any]:
        dropped, self.dropped = self.dropped, 0
        rematched, self.rematched = self.rematched, 0
        full, self.full_matches = self.full_matches, 0
        return {"pairs": self.store.pairs.counts(self.name), "links_dropped": dropped,
                "full_matches": full, "rematched": rematched}


@dataclass
class _Live:
    """What a re-match needs between full matches: the last full match's fitted matcher
    and both sides' records as it compares them, kept up to date (in memory only)."""

    matcher: Matcher
    sides: list[Records]


def _rematched(candidates: pa.Table, known: Mapping[tuple[str, str], Pair], side: int,
               changed: set[str], live: tuple[Mapping[str, int], Mapping[str, int]]
               ) -> tuple[dict[tuple[str, str], Pair], list[Pair], dict[str, tuple[str, str]]]:
    """What a re-match of the `changed` records of `side` (0 left, 1 right; gone ones among
    them) changes, from its `candidates` (Matcher.rematch) and the `known` pairs touching
    them or their candidates: the pairs to save, the new links, the links dropped (gid ->
    keys). A link of a changed record holds while the re-match still links the pair; a link
    of records that did not change stands; a person's accepted pair stays linked while both
    records exist, a rejected one is never linked. The rest, one to one (best first) among
    the records no link holds."""
    found = {(row["left_id"], row["right_id"]): row for row in candidates.to_pylist()}
    pairs: dict[tuple[str, str], Pair] = {}
    dropped: dict[str, tuple[str, str]] = {}
    taken: tuple[set[str], set[str]] = (set(), set())

    def exists(key: tuple[str, str]) -> bool:
        return key[0] in live[0] and key[1] in live[1]

    def scored(key: tuple[str, str], status: str, gid: str | None = None) -> Pair:
        row = found.get(key)
        return Pair(key[0], key[1], status, gid, row["match_weight"] if row else None,
                    row["probability"] if row else None)

    new: list[Pair] = []
    for key, pair in known.items():
        mine = key[side] in changed
        holds = pair.status == "accepted" or (pair.status == "link" and (
            not mine or (key in found and found[key]["decision"] == "link")))
        if pair.gid and holds and exists(key):
            taken[0].add(key[0])
            taken[1].add(key[1])
            if mine and pair.status == "link":
                pairs[key] = scored(key, "link", pair.gid)
        elif pair.gid:  # linked in the xref, and no longer: dropped
            dropped[pair.gid] = key
            status = pair.status if pair.status in DECIDED else \
                "review" if key in found and found[key]["decision"] == "review" else "dropped"
            pairs[key] = Pair(key[0], key[1], status, None, pair.weight, pair.probability,
                              pair.decided_by)
            if key in found and pair.status not in DECIDED:
                pairs[key] = scored(key, status)
    for key, pair in known.items():  # a person's link whose records are both there again
        if pair.status == "accepted" and not pair.gid and key[side] in changed and exists(key) \
                and key[0] not in taken[0] and key[1] not in taken[1]:
            pair.gid = new_gid()
            pairs[key] = pair
            new.append(pair)
            taken[0].add(key[0])
            taken[1].add(key[1])
    open_ = [key for key, row in found.items()
             if row["decision"] != "none" and key not in pairs
             and (key not in known or known[key].status not in DECIDED)
             and key[0] not in taken[0] and key[1] not in taken[1]]
    if open_:
        rows = [found[key] for key in open_]
        left_codes = np.unique([k[0] for k in open_], return_inverse=True)[1]
        right_codes = np.unique([k[1] for k in open_], return_inverse=True)[1]
        tiers = np.array([row["tier"] if row["tier"] is not None else len(rows) for row in rows])
        order = np.lexsort((right_codes, left_codes, -np.array([row["match_weight"] for row in rows]),
                            tiers))
        rank = np.empty(len(rows), dtype=np.int64)
        rank[order] = np.arange(len(rows))
        kept = one_to_one(left_codes.astype(np.int64), right_codes.astype(np.int64), rank)
        for key, row, keep in zip(open_, rows, kept, strict=True):
            if not keep:
                continue
            pair = scored(key, row["decision"], new_gid() if row["decision"] == "link" else None)
            pairs[key] = pair
            if pair.gid:
                new.append(pair)
    for key, pair in known.items():  # a review pair of a changed record the re-match leaves
        if pair.status == "review" and key[side] in changed and key not in pairs:
            pairs[key] = Pair(key[0], key[1], "dropped", None, pair.weight, pair.probability)
    return pairs, new, dropped


def _pairs(found: Mapping[tuple[str, str], Pair], known: Mapping[tuple[str, str], Pair],
           present: tuple[set[str], set[str]]) -> dict[tuple[str, str], Pair]:
    """This match's pairs, a person's decisions standing over it: an accepted pair stays
    linked while both records exist (and its keys link to nothing else), a rejected one is
    never linked. A pair linked before keeps its gid."""
    decided = {k: p for k, p in known.items() if p.status in DECIDED}
    pairs: dict[tuple[str, str], Pair] = {}
    taken: tuple[set[str], set[str]] = (set(), set())
    for key, pair in decided.items():
        pairs[key] = pair
        if pair.status == "accepted" and key[0] in present[0] and key[1] in present[1]:
            pair.gid = pair.gid or new_gid()
            taken[0].add(key[0])
            taken[1].add(key[1])
        else:
            pair.gid = None  # not linked (now): a record of it is gone, or it was rejected
    for key, pair in found.items():
        if key in decided or key[0] in taken[0] or key[1] in taken[1]:
            continue
        previous = known.get(key)
        if pair.status == "link":
            pair.gid = previous.gid if previous is not None and previous.status in LINKED and \
                previous.gid else new_gid()
        pairs[key] = pair
    return pairs


class CorrelationPattern(Pattern):
    """A correlation as a plug-in: kept going by the runtime's outbox loop (match when due,
    notice, deliver); a run matches and syncs until nothing new is noticed."""

    loop = "outbox"

    def watched(self) -> Correlation:
        return Correlation(self.ctx)

    def accept(self, body: Mapping[str, Any], received_at: str,
               message: tuple[str, str] | None = None, source: str | None = None) -> int:
        return Correlation(self.ctx).accept(body, received_at, message, source)

    def verify(self) -> Report:
        return verify(Correlation(self.ctx)).to_json()

