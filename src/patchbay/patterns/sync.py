"""Bi-directional sync: several systems keep their own copy of the same records, and behave
as one.

    per object (parents first), per participant:
        changes(cursor) ──► identify (xref, external id, match keys) ──► three-way merge
        with the shadow (elements/threeway.py) ──► store.transaction(): xref, shadow,
        conflicts, outbox (each other participant's difference), cursor   (together)
    the runtime's deliverer ──► per participant and object, `SyncTarget` ──► sinks

Identity: every real-world record has a global id (gid); the xref links it to each
participant's key, and where a participant has an external-id field the gid is written
there, so a create written twice is one record (upsert on it) and the create's echo is
recognised by it. A participant joins by being read whole first: its records are matched
to the shadow by the declared match fields (one candidate: linked; several: held for
review; none: a new record), then what it lacks is created on it. Nothing is written to a
participant before it has been read whole, so a first sync creates no duplicates.

Echo: whatever is enqueued for a participant is recorded in its xref row (`sent`) in the
same unit of work; a change whose values equal those is the echo and is dropped, while an
edit made later (by anyone, to any value) is a change. A delivery carries the record's whole
difference from what the participant was last seen holding, and supersedes the deliveries
of that record no worker has taken yet, so an older value never lands after a newer one.

Deletes (policy propagate): the shadow becomes a tombstone, so a late update from a
participant that has not applied the delete yet is dropped, never a revival; a record that
comes back where it was deleted (an undelete, a re-insert of its key) is revived or
ignored as declared. Participants whose trigger cannot see deletes (polling) have their
keys compared with the xref every `deletes.check_seconds`.
"""

from __future__ import annotations

import datetime as dt
import graphlib
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from patchbay import scope as scopes
from patchbay.connectors.base import Connector
from patchbay.cron import Cron
from patchbay.elements.noticing import change_cursor, pushed
from patchbay.elements.shape import Shape
from patchbay.elements.threeway import FieldRule, last_sent, merge, pending, with_sent
from patchbay.errors import SpecError
from patchbay.model import Change, ChangeKind, Record, Status
from patchbay.patterns.context import TRANSIENT, RunContext, spec_of
from patchbay.patterns.registry import Pattern, Report
from patchbay.patterns.sync_target import BY_EXTERNAL, EXPECT, GID, WRITE, SyncTarget
from patchbay.patterns.sync_verify import verify
from patchbay.scope import BoundScope
from patchbay.spec import IntegrationSpec, load
from patchbay.spec.broadcast import TriggerSpec
from patchbay.spec.sync import ParticipantObjectSpec, SyncObjectSpec, SyncSpec
from patchbay.store import Store
from patchbay.store.conflicts import NewConflict
from patchbay.store.outbox import NewDelivery
from patchbay.store.secrets import CURSOR_DIGESTS
from patchbay.store.shadow import Shadow
from patchbay.store.xref import Link, Waiting, key_text

log = logging.getLogger(__name__)

UNCHECKED_TYPES = ("number", "datetime")
"""Shared types a conditional write does not compare: a participant may keep finer digits
than the shared value (a timestamp's microseconds), which would never match."""
LANDED_MARGIN = dt.timedelta(seconds=1)
"""A write counts as landed in what a participant read only if it was delivered this much
before the read began (the engine state's clock may be another machine's)."""
_MISSING = object()


_merging: dict[str, threading.RLock] = {}
_merging_guard = threading.Lock()


def merging(name: str) -> threading.RLock:
    """Held while a sync merges in this process: a round of its serving loop and a push to
    its API merge one at a time, so neither overwrites what the other read."""
    with _merging_guard:
        return _merging.setdefault(name, threading.RLock())


def new_gid() -> str:
    """A new global id: a UUID of version 7 (milliseconds since the epoch, then random
    bits), as 32 hex digits. Ordered by time, the records of one batch sit together in the
    state's indexes, which a batch's commit then rewrites a few pages of; random ids spread
    each batch over every page, so that an initial load's commits grew with the table."""
    random = int.from_bytes(os.urandom(10), "big")
    value = (time.time_ns() // 1_000_000 & (1 << 48) - 1) << 80 | 0x7 << 76 \
        | (random >> 68) << 64 | 0b10 << 62 | random & (1 << 62) - 1
    return f"{value:032x}"


def match_key(shared: Mapping[str, Any], fields: Sequence[str]) -> str | None:
    """The normalised match fields of a record (trimmed, case-folded); None if one is empty."""
    parts = []
    for name in fields:
        value = shared.get(name)
        if value is None or str(value).strip() == "":
            return None
        parts.append(" ".join(str(value).split()).casefold())
    return "\x1f".join(parts) if parts else None


@dataclass
class Held:
    """One participant's copy of one shared object."""

    participant: str
    object: SyncObjectSpec
    spec: ParticipantObjectSpec
    shape: Shape
    connector: Connector
    trigger: TriggerSpec
    scope: BoundScope | None
    in_scope: Callable[[Record], bool]
    also_read: tuple[str, ...] = ()
    """Fields read with its records that are not shared (a correlation's compared fields)."""

    @property
    def destination(self) -> str:
        return f"{self.participant}/{self.object.name}"

    def read_fields(self) -> list[str]:
        """The fields its records are read with: the mapping's, those its scope tests (a
        change is kept only when its record is in scope), and `also_read`."""
        return list(dict.fromkeys([*self.shape.read_fields(),
                                   *sorted(scopes.fields_of(self.scope)), *self.also_read]))


@dataclass
class Tally:
    """What the sync did, per participant, since it was last taken."""

    counts: dict[str, Counter[str]] = field(default_factory=dict)

    def add(self, participant: str, what: str, n: int = 1) -> None:
        if n:
            self.counts.setdefault(participant, Counter())[what] += n

    def take(self) -> dict[str, dict[str, int]]:
        taken = {p: dict(c) for p, c in self.counts.items()}
        self.counts = {}
        return taken


@dataclass
class _Work:
    """One batch of one participant's changes as it is merged: everything its unit of work
    writes."""

    shadows: dict[str, Shadow]
    links: dict[str, dict[str, Link]]
    dirty: set[str] = field(default_factory=set)
    """gids whose shadow changed: saved, and enqueued to whoever lacks it."""
    resend: set[str] = field(default_factory=set)
    """gids enqueued to whoever lacks them, their shadow unchanged (a join, a released wait)."""
    touched: set[tuple[str, str]] = field(default_factory=set)
    """(gid, participant) whose link changed."""
    conflicts: list[NewConflict] = field(default_factory=list)
    removals: dict[str, set[str]] = field(default_factory=dict)
    """participant -> gids whose record is to be deleted there."""
    unstamped: set[tuple[str, str]] = field(default_factory=set)
    """(gid, participant) whose external-id field does not hold the gid yet (a record that
    was there before the sync): it is written, so that identity survives an xref rebuild."""
    landed: set[str] = field(default_factory=set)
    """gids whose last write to this batch's participant was delivered before it was read."""
    overtaken: set[tuple[str, str]] = field(default_factory=set)
    """(gid, participant) whose pending write an edit there overtook: it is replaced by one
    with the record's difference now, or by none."""
    stale: dict[str, dict[str, Any]] = field(default_factory=dict)
    """gid -> the shared values of a write to this batch's participant that found the record
    changed there (not written): the record's difference is sent anew."""
    unchecked: set[tuple[str, str]] = field(default_factory=set)
    """(gid, participant) whose next write goes without expectation: the write before it
    was stale while the record holds what was last seen (a value the participant keeps in
    another form, or changed and changed back), so an expectation would never hold."""

    def link(self, gid: str, participant: str) -> Link | None:
        return self.links.get(gid, {}).get(participant)

    def put(self, link: Link) -> None:
        self.links.setdefault(link.gid, {})[link.participant] = link
        self.touched.add((link.gid, link.participant))


class Sync:
    """One sync integration: notice every participant's changes, merge them, enqueue each
    participant's difference; the runtime delivers the outbox (patchbay.runtime.serving)."""

    settle_rounds = 5
    """A run repeats noticing and delivering up to this many times, until a round notices
    nothing new (the echoes of its own writes included)."""

    creates_records = True
    """Whether a record one participant holds is created in those that lack it (a
    correlation's never is)."""

    keeps_read_position = True
    """Whether a participant's first read whole keeps its position (the last key read) in
    the engine state, so that a run killed during it resumes there. A correlation's does
    not: that key may be a record the other system does not share, and nothing of such a
    record may leave its system; a killed first read starts over."""

    def __init__(self, ctx: RunContext, spec: SyncSpec | None = None) -> None:
        self.ctx = ctx
        self.sinks: dict[str, SyncTarget] = {}
        """Per participant and object, what the runtime's deliverer writes through; changed
        in place when the file is edited, so the running loop sees the new participants."""
        self.tally = Tally()
        self._checked_deletes: dict[str, float] = {}
        self._stale: dict[str, dict[str, dict[str, Any]]] = {}
        """destination -> gid -> the shared values of a write found stale, to re-read."""
        self._stale_lock = threading.Lock()
        self._build(spec or spec_of(ctx, SyncSpec))
        self._file_stamp = self._stamp()

    def _build(self, spec: SyncSpec) -> None:
        self.spec, self.name = spec, spec.name
        self.order = [p.name for p in spec.participants]
        self.objects = _parents_first(spec.objects)
        self.held: dict[tuple[str, str], Held] = {}
        self.rules: dict[str, dict[str, FieldRule]] = {}
        for obj in self.objects:
            self.rules[obj.name] = {
                name: FieldRule(shared.conflict or spec.conflicts, shared.owner,
                                frozenset(shared.writers) if shared.writers else None)
                for name, shared in obj.fields.items()}
            for participant in self.order:
                if participant not in obj.participants:
                    continue
                held_spec = obj.participants[participant]
                bound = scopes.bind(held_spec.scope, self.ctx.params)
                held = Held(participant, obj, held_spec, Shape(held_spec, obj.fields),
                            self.ctx.systems[spec.participant(participant).system],
                            spec.trigger_of(participant), bound, scopes.to_predicate(bound),
                            self._also_read(participant))
                self.held[(obj.name, participant)] = held
        targets = {held.destination: held for held in self.held.values()}
        for gone in set(self.sinks) - set(targets):
            del self.sinks[gone]
        for destination, held in targets.items():
            self.sinks[destination] = SyncTarget(self, held)
        self._cron = Cron.parse(spec.trigger.cron) if spec.trigger.cron is not None else None

    def _also_read(self, participant: str) -> tuple[str, ...]:
        """Fields of `participant` to read with its changes beyond the shared ones (none)."""
        return ()

    def _stamp(self) -> int | None:
        path = self.ctx.spec_path
        try:
            return path.stat().st_mtime_ns if path is not None else None
        except OSError:
            return None

    def _definition(self, integration: IntegrationSpec) -> SyncSpec:
        """The sync an integration of the edited file declares (a subclass carries out
        another pattern as a sync)."""
        if not isinstance(integration, SyncSpec):
            raise SpecError(f"'{self.name}' is no longer a sync")
        return integration

    def _reload(self) -> None:
        """Take the file's edits to this sync (participants added or removed, mappings) while
        it runs. An edit that does not load is logged and the sync goes on as it was."""
        stamp = self._stamp()
        if stamp is None or stamp == self._file_stamp:
            return
        self._file_stamp = stamp
        assert self.ctx.spec_path is not None
        try:
            file = load(self.ctx.spec_path)
            spec = self._definition(next(i for i in file.integrations if i.name == self.name))
        except (SpecError, StopIteration) as exc:
            log.error("%s: the edited file is not taken, the sync goes on as it was: %s",
                      self.name, exc)
            return
        if spec != self.spec:
            self.ctx.systems.declare(file.systems)
            self._build(spec)
            log.info("%s: the edited definition is taken: participants %s", self.name,
                     ", ".join(self.order))

    @property
    def store(self) -> Store:
        return self.ctx.store

    # -- noticing -------------------------------------------------------------------------------

    def poll(self, enqueued: Callable[[], None] | None = None) -> int:
        """Notice every participant's changes since its cursor, merge them and enqueue what
        each participant lacks; how many changes there were."""
        with merging(self.name):
            self._reload()
            self._retire_removed()
            self._apply_choices()
            total = 0
            for obj in self.objects:
                for participant in self.order:
                    held = self.held.get((obj.name, participant))
                    if held is None:
                        continue
                    total += self._recheck(held)
                    total += self._notice(held, enqueued)
                    total += self._check_deletes(held)
                self._release_waiting(obj)
            return total

    def accept(self, body: Mapping[str, Any], received_at: str,
               message: tuple[str, str] | None = None, source: str | None = None) -> int:
        """Merge changes a participant pushed (`source`; a webhook's X-Patchbay-Source, or
        the participant an Outbound Message's org and object name), as `pushed` reads the
        body; `"object"` names the participant's object when it holds several. Returns once
        they are merged and what follows is in the outbox (`message` recorded with it)."""
        holds = [h for h in self.held.values() if h.participant == source]
        if not holds:
            raise SpecError(f"a push to sync '{self.name}' names one of its participants "
                            f"({', '.join(self.order)}), not {source!r}")
        wanted = body.get("object")
        held = holds[0] if wanted is None and len(holds) == 1 else \
            next((h for h in holds if h.spec.object == wanted), None)
        if held is None:
            raise SpecError(f"a push from {source} names its object in 'object': one of "
                            + ", ".join(h.spec.object for h in holds))
        changes = pushed(held.connector, held.spec.object, held.spec.key,
                         held.read_fields(),
                         {name: value for name, value in body.items() if name != "object"})
        with merging(self.name):
            self._merge(held, changes, message=message)
        return len(changes)

    def _notice(self, held: Held, enqueued: Callable[[], None] | None) -> int:
        joining = not self._joined(held)
        if joining and held.trigger.changes == "cdc":
            return self._join_by_reading(held, enqueued)
        total, batch = 0, self.spec.options.batch_size
        while True:
            read_at = dt.datetime.now(dt.UTC) - LANDED_MARGIN
            stored = self.store.cursors.get(self.name, held.participant, held.spec.object)
            cursor = change_cursor(stored, key=held.spec.key, watermark=held.spec.watermark,
                                   trigger=held.trigger, consumer=self.name)
            changes, after = held.connector.changes(
                held.spec.object, cursor, held.read_fields(), limit=batch,
                digest_key=self.store.secrets.key(CURSOR_DIGESTS))
            self._merge(held, changes, cursor_after=after, read_at=read_at, loading=joining)
            total += len(changes)
            if changes and enqueued is not None:
                enqueued()
            if len(changes) < batch:
                break
        if joining:
            self._join(held)
            if enqueued is not None:
                enqueued()
        return total

    def _join_by_reading(self, held: Held, enqueued: Callable[[], None] | None) -> int:
        """A participant whose changes come from change capture is read whole first (capture
        holds only what changed since it was installed); the read resumes where it stopped."""
        marker = f"join:{held.spec.object}"
        state = self.store.cursors.get(self.name, held.participant, marker) or {}
        total = 0
        pages = held.connector.read(held.spec.object, scopes.bind(held.spec.scope, self.ctx.params),
                                    key=held.spec.key, fields=held.read_fields(),
                                    after=state.get("after"), page_size=self.spec.options.batch_size)
        for page in pages:
            changes = [Change(held.participant, held.spec.object, r[held.spec.key],
                              ChangeKind.UPDATED, r) for r in page.records]
            position = page.position if self.keeps_read_position else None
            self._merge(held, changes, marker=(marker, {"after": position}), loading=True)
            total += len(changes)
            if enqueued is not None:
                enqueued()
        self._join(held)
        return total

    def stale(self, held: Held, written: Mapping[str, dict[str, Any]]) -> None:
        """Writes to `held` that found the record changed there (gid -> the shared values
        written): the next poll reads those records again (`_recheck`)."""
        with self._stale_lock:
            self._stale.setdefault(held.destination, {}).update(written)

    def _recheck(self, held: Held) -> int:
        """Read again the records whose write was stale and merge them as they are now: the
        edit that made the write stale is merged field by field (a conflict where it is the
        field written), and what still differs is sent anew with a new expectation. (Kept in
        memory: after a restart the edit is noticed as any change is.)"""
        with self._stale_lock:
            stale = self._stale.pop(held.destination, {})
        if not stale:
            return 0
        links = self.store.xref.of(self.name, held.object.name, list(stale))
        live = [link for by in links.values()
                if (link := by.get(held.participant)) is not None and link.state == "live"]
        found = list(held.connector.get(held.spec.object, held.spec.key,
                                        [link.key for link in live if link.key is not None],
                                        held.read_fields()).values())
        unkeyed = [link.gid for link in live if link.key is None]
        if unkeyed and held.spec.external_id:  # a create: its key is learnt from the record
            found += held.connector.get(held.spec.object, held.spec.external_id, unkeyed,
                                        held.read_fields()).values()
        changes = [Change(held.participant, held.spec.object, record[held.spec.key],
                          ChangeKind.UPDATED, record) for record in found]
        self._merge(held, changes, stale=stale)
        return len(changes)

    def _joined(self, held: Held) -> bool:
        state = self.store.cursors.get(self.name, held.participant, f"join:{held.spec.object}")
        return bool(state and state.get("done"))

    def _join(self, held: Held) -> None:
        """The participant has been read whole: the initial load creates on it, and on every
        other participant read whole, the records they lack (each participant in a thread
        of its own); then it has joined. A run killed before resumes the load."""
        if self.creates_records:
            loading = [h for h in self.held.values() if h.object.name == held.object.name
                       and (h is held or self._joined(h))]
            with ThreadPoolExecutor(max_workers=len(loading), thread_name_prefix="load") as pool:
                for _ in pool.map(self._load, loading):
                    pass
        self.store.cursors.set(self.name, held.participant, f"join:{held.spec.object}",
                               {"done": True})

    def _load(self, held: Held) -> None:
        """Create on `held`'s participant every record it lacks, through its bulk path (a
        COPY, a Bulk 2.0 job), `load_batch_size` records at a time: each batch is written,
        then one unit of work records it (xref rows with the keys given and the values
        sent, so that their echo is known). That unit is the checkpoint: a run killed
        before it finds the batch still lacking and writes it again, and a create is an
        upsert on the external id (or keyed by the gid), so that makes no duplicate.
        Records the write did not take go to the outbox, retried from there as any
        delivery."""
        obj, target = held.object, self.sinks[held.destination]
        after, batch = "", self.spec.options.load_batch_size
        while gids := self.store.shadows.lacking(self.name, obj.name, held.participant,
                                                 after=after, limit=batch):
            after = gids[-1]
            work = _Work(self.store.shadows.get(self.name, obj.name, gids),
                         self.store.xref.of(self.name, obj.name, gids))
            work.resend.update(gids)
            deliveries, waits, _ = self._deliveries(obj, work, {held.participant},
                                                    only=held.participant)
            keys: dict[str, Any] = {}
            retried = self._attempted(target, deliveries, created=keys)
            for gid, key in keys.items():
                # Written at once and found there (its key given or read back): it landed,
                # as a delivery does, so that a person's delete of it before the sync reads
                # it back is noticed by the deletes check (which takes only creates known
                # to have landed as once there).
                link = work.links[gid][held.participant]
                link.key = key_text(key)
                link.known, link.sent = {**link.known, **last_sent(link.sent)}, {}
            touched = [work.links[g][p] for g, p in sorted(work.touched)]
            with self.store.transaction(serial=f"sync:{self.name}") as tx:
                tx.xref.save(self.name, obj.name, touched)
                tx.outbox.add(self.name, retried)
                if waits:
                    tx.xref.wait(self.name, obj.name, waits)

    def _merge(self, held: Held, changes: Sequence[Change], *, cursor_after: Any = _MISSING,
               marker: tuple[str, Any] | None = None,
               message: tuple[str, str] | None = None,
               read_at: dt.datetime | None = None, loading: bool = False,
               stale: Mapping[str, dict[str, Any]] | None = None) -> None:
        """Merge one batch of a participant's changes, and enqueue what follows, in one unit
        of work with the cursor moved past them. `read_at`: when the batch was read (before
        it), so that a write delivered earlier is known to be in what was read. `loading`:
        the batch is of the participant's first read, whose records the others lack are
        created by the initial load at its end (`_load`), not enqueued one by one. `stale`:
        the records were read again because a write to them was stale (gid -> its values)."""
        stale = stale or {}
        obj, participant = held.object, held.participant
        keyed = [c for c in changes if c.key is not None and c.key != ""]
        if len(keyed) < len(changes):
            log.warning("%s: %d record(s) of %s.%s without a key are left out", self.name,
                        len(changes) - len(keyed), participant, held.spec.object)
            self.tally.add(participant, "left out: no key", len(changes) - len(keyed))
        kept = [c for c in keyed if c.kind is ChangeKind.DELETED or held.in_scope(c.record)]
        keys = [key_text(c.key) for c in kept]
        by_key = self.store.xref.by_keys(self.name, obj.name, participant, keys)
        parents = self._parent_gids(held, kept)
        if self._caught_up_parents(held, kept, parents):
            parents = self._parent_gids(held, kept)
        # Echoes and re-reads of what a participant is known to hold (most changes while
        # writes come back) touch only its xref row: no shadow is read, nothing is enqueued.
        unchanged: set[str] = set()
        quiet = {key_text(c.key): by_key[key_text(c.key)] for c in kept
                 if not (by_key.get(key_text(c.key)) and by_key[key_text(c.key)].gid in stale)
                 and self._quiet(held, c, by_key.get(key_text(c.key)), parents, unchanged)}
        if quiet:
            kept = [c for c in kept if key_text(c.key) not in quiet]
            by_key = {k: link for k, link in by_key.items() if k not in quiet}
        gids: dict[str, str] = {k: link.gid for k, link in by_key.items()}
        external = held.spec.external_id
        if external:
            for change in kept:
                value = change.record.get(external)
                if key_text(change.key) not in gids and value:
                    gids[key_text(change.key)] = str(value)
        known_shadows = self.store.shadows.get(self.name, obj.name, list(set(gids.values())))
        gids = {k: g for k, g in gids.items() if g in known_shadows or k in by_key}
        work = _Work(known_shadows, self.store.xref.of(self.name, obj.name, list(set(gids.values()))),
                     stale=dict(stale))
        unmatched = [c for c in kept if c.kind is not ChangeKind.DELETED
                     and key_text(c.key) not in gids]
        gids.update(self._identify(held, unmatched, work))
        sending = [g for g in gids.values() if (link := work.link(g, participant)) and link.sent]
        if read_at is not None and sending:
            work.landed = self.store.outbox.landed(self.name, held.destination, sending, read_at)
        for link in quiet.values():
            if link.gid not in unchanged:
                work.put(link)
        for change in kept:
            gid = gids.get(key_text(change.key))
            if gid is None:
                continue
            if change.kind is ChangeKind.DELETED:
                self._deleted(held, gid, work)
            else:
                self._changed(held, gid, change, work, parents)
        self._commit(obj, work, cursor=(participant, held.spec.object, cursor_after)
                     if cursor_after is not _MISSING else None, marker=(participant, *marker)
                     if marker else None, message=message, loading=loading)
        self.tally.add(participant, "changes", len(changes))

    def _identify(self, held: Held, changes: Sequence[Change], work: _Work) -> dict[str, str]:
        """Global ids for records the xref does not know: matched to a record of another
        participant by the match fields, or new (where this participant originates records)."""
        obj, found = held.object, {}
        shared = {key_text(c.key): held.shape.to_shared(c.record) for c in changes}
        keys = {k: match_key(v, obj.match) for k, v in shared.items()}
        candidates = self.store.shadows.matching(self.name, obj.name,
                                                 [m for m in keys.values() if m is not None])
        taken_links = self.store.xref.of(self.name, obj.name,
                                         [g for gs in candidates.values() for g in gs])
        claimed: set[str] = set()
        for change in changes:
            key = key_text(change.key)
            free = [g for g in candidates.get(keys[key] or "", [])
                    if _creatable(taken_links.get(g, {}).get(held.participant))
                    and g not in claimed]
            if len(free) == 1:
                found[key] = free[0]
                claimed.add(free[0])
                links = work.links.setdefault(free[0], taken_links.get(free[0], {}))
                if held.participant in links:
                    # A create is on its way there and this record is it: the create is
                    # given up (another sync, or a person, made the record first).
                    links[held.participant] = Link(free[0], held.participant)
                    work.overtaken.add((free[0], held.participant))
                self.tally.add(held.participant, "matched")
            elif len(free) > 1:
                work.conflicts.append(NewConflict(
                    obj.name, f"{held.participant}:{key}", None, "match", "manual",
                    {"participant": held.participant, "key": key, "gids": free}, None, "held"))
                self.tally.add(held.participant, "held for review")
            elif self.spec.participant(held.participant).creates:
                gid = new_gid()
                found[key] = gid
                work.shadows[gid] = Shadow(gid, match_key=keys[key])
                work.links[gid] = {}
            else:
                self.tally.add(held.participant, "not originated")
        work.shadows.update(self.store.shadows.get(self.name, obj.name, sorted(claimed)))
        return found

    def _parent_gids(self, held: Held, changes: Sequence[Change]) -> dict[str, dict[str, str]]:
        """For each lookup field, the parent gids of the parent keys these records hold."""
        found: dict[str, dict[str, str]] = {}
        for name, shared in held.object.fields.items():
            mapping = held.spec.fields.get(name)
            if shared.lookup is None or mapping is None:
                continue
            values = [c.record.get(mapping.field) for c in changes]
            links = self.store.xref.by_keys(self.name, shared.lookup, held.participant,
                                            [v for v in values if v is not None])
            found[name] = {k: link.gid for k, link in links.items()}
        return found

    def _caught_up_parents(self, held: Held, changes: Sequence[Change],
                           parents: Mapping[str, Mapping[str, str]]) -> bool:
        """Read the newer changes of the parents these records point at that the xref does
        not know yet; whether any were read. A parent and its child made in one transaction
        may commit after the sync read the parents' changes and before it reads the
        children's: the parent is then new, not outside the sync, and reading it first keeps
        the child's lookup (dropped otherwise, and the child created without its parent)."""
        caught_up = False
        for name, by_key in parents.items():
            lookup, mapping = held.object.fields[name].lookup, held.spec.fields[name]
            parent = self.held.get((lookup or "", held.participant))
            if parent is None or parent.object is held.object:
                continue
            # The state's join cursor is asked only when a parent is unknown (seldom).
            if any(key_text(value) not in by_key for c in changes
                   if (value := c.record.get(mapping.field)) is not None) \
                    and self._joined(parent):
                self._notice(parent, None)
                caught_up = True
        return caught_up

    def _changed(self, held: Held, gid: str, change: Change, work: _Work,
                 parents: Mapping[str, Mapping[str, str]]) -> None:
        participant = held.participant
        shadow = work.shadows.setdefault(gid, Shadow(gid))
        link = work.link(gid, participant) or Link(gid, participant)
        first_sight = not link.known or link.state != "live"
        current = self._current(held, change, parents)
        if shadow.state == "deleted":
            if link.state == "deleting":
                self.tally.add(participant, "dropped: deleted elsewhere")
                return
            if self.spec.deletes.undelete == "ignore":
                self.tally.add(participant, "undelete ignored")
                return
            shadow.state = "live"  # revived where it came back: the others get it anew
            for other in work.links.get(gid, {}).values():
                if other.participant != participant:
                    work.put(Link(gid, other.participant, None, "live", anew=True))
            link = Link(gid, participant)
            first_sight = True
            self.tally.add(participant, "revived")
        link.key, link.state = key_text(change.key), "live"
        external = held.spec.external_id
        if external and str(change.record.get(external) or "") != gid:
            work.unstamped.add((gid, participant))
        if gid in work.landed:
            link.known, link.sent = {**link.known, **last_sent(link.sent)}, {}
        written = work.stale.get(gid)
        if written is not None:
            # What it wrote stays in `sent`: a later delivery of the same value may be on
            # its way, and its echo must be known as one.
            work.overtaken.add((gid, participant))
            work.dirty.add(gid)
            # Only the newest write tells: an older one (its worker killed, taken up late)
            # is stale because of values seen since, which the next write expects.
            newest = last_sent(link.sent)
            if all(current.get(n, _MISSING) == link.known.get(n, _MISSING)
                   and newest.get(n, _MISSING) == v for n, v in written.items()):
                work.unchecked.add((gid, participant))
        merged = merge(participant, current, shared=shadow.shared, origins=shadow.origins,
                       held=shadow.held, known=link.known, sent=link.sent,
                       rules=self.rules[held.object.name], order=self.order)
        link.known, link.sent = merged.known, merged.sent
        shadow.shared, shadow.origins, shadow.held = merged.shared, merged.origins, sorted(merged.held)
        if shadow.match_key is None or merged.changed & set(held.object.match):
            shadow.match_key = match_key(shadow.shared, held.object.match)
        if merged.overtaken:
            work.overtaken.add((gid, participant))
        work.put(link)
        self.tally.add(participant, "echoes dropped", merged.echoes)
        self.tally.add(participant, "edits", merged.edits)
        for found in merged.conflicts:
            work.conflicts.append(NewConflict(held.object.name, gid, found.field, "field",
                                              found.policy, found.candidates, found.winner,
                                              "held" if found.winner is None else "settled"))
            self.tally.add(participant, f"conflicts ({found.policy})")
        # An echo, or a value it already had, changes nothing elsewhere: only the xref row.
        if merged.changed or merged.undone or merged.conflicts or merged.overtaken \
                or first_sight or (gid, participant) in work.unstamped:
            work.dirty.add(gid)

    def _current(self, held: Held, change: Change,
                 parents: Mapping[str, Mapping[str, str]]) -> dict[str, Any]:
        """A changed record's shared values, its lookups as parent gids."""
        current = held.shape.to_shared(change.record)
        for name, by_key in parents.items():
            if current.get(name) is not None:
                parent = by_key.get(key_text(change.record[held.spec.fields[name].field]))
                if parent is None:
                    del current[name]  # a parent outside the sync: nothing to translate
                else:
                    current[name] = parent
        return current

    def _quiet(self, held: Held, change: Change, link: Link | None,
               parents: Mapping[str, Mapping[str, str]], unchanged: set[str]) -> bool:
        """Whether a change only confirms what the participant is known to hold or was sent
        (every value its known one or one on its way); if so, its link takes it in, and its
        gid goes into `unchanged` when that changes nothing (the echo of a write already
        known landed, as the initial load's are: its xref row is not written again)."""
        if change.kind is ChangeKind.DELETED or link is None or link.state != "live" \
                or not (link.known or link.sent):
            return False
        external = held.spec.external_id
        if external and str(change.record.get(external) or "") != link.gid:
            return False  # its external id is to be written
        current = self._current(held, change, parents)
        if any(value != link.known.get(name, _MISSING) and value not in pending(link.sent, name)
               # an empty field never seen nor sent (one the others do not hold): no news
               and not (value is None and name not in link.known and name not in link.sent)
               for name, value in current.items()):
            return False
        merged = merge(held.participant, current, shared={}, origins={}, held=[],
                       known=link.known, sent=link.sent, rules={}, order=self.order)
        if (key_text(change.key), merged.known, merged.sent) == (link.key, link.known, link.sent):
            unchanged.add(link.gid)
        link.key, link.known, link.sent = key_text(change.key), merged.known, merged.sent
        self.tally.add(held.participant, "echoes dropped", merged.echoes)
        return True

    def _deleted(self, held: Held, gid: str, work: _Work) -> None:
        participant, policy = held.participant, self.spec.deletes
        shadow = work.shadows.get(gid)
        link = work.link(gid, participant)
        if shadow is None or link is None or link.state == "deleted":
            return
        was_deleting = link.state == "deleting"
        work.put(Link(gid, participant, link.key, "deleted"))
        if was_deleting or shadow.state == "deleted":
            self.tally.add(participant, "deletes confirmed")
            return
        self.tally.add(participant, "deletes")
        if policy.policy == "ignore":
            return
        if policy.policy == "flag":
            assert policy.flag is not None
            shadow.shared[policy.flag] = True
            shadow.origins[policy.flag] = participant
            work.dirty.add(gid)
            return
        behind = bool(link.sent) or any(
            link.known.get(name, _MISSING) != value for name, value in shadow.shared.items()
            if held.shape.reads(name))
        if behind:
            work.conflicts.append(NewConflict(
                held.object.name, gid, None, "delete", policy.wins,
                {participant: None, "shadow": dict(shadow.shared)},
                participant if policy.wins == "delete" else "shadow", "settled"))
            self.tally.add(participant, f"conflicts (delete {policy.wins} wins)")
            if policy.wins == "update":
                work.put(Link(gid, participant, None, "live", anew=True))  # created there again
                work.dirty.add(gid)
                return
        shadow.state = "deleted"
        work.dirty.add(gid)
        for other, other_link in work.links.get(gid, {}).items():
            if other != participant and other_link.state == "live":
                work.put(Link(gid, other, other_link.key, "deleting"))
                work.removals.setdefault(other, set()).add(gid)

    # -- enqueueing -----------------------------------------------------------------------------

    def _commit(self, obj: SyncObjectSpec, work: _Work, *,
                cursor: tuple[str, str, Any] | None = None,
                marker: tuple[str, str, Any] | None = None,
                joined: set[str] | None = None,
                message: tuple[str, str] | None = None, loading: bool = False) -> None:
        """Write the batch's unit of work: xref, shadow, conflicts, deliveries, waits, cursor."""
        deliveries, waits, supersede = self._deliveries(obj, work, joined or set(),
                                                        loading=loading)
        if loading:
            deliveries = self._written_now(deliveries)
        touched = [work.links[g][p] for g, p in sorted(work.touched)]
        with self.store.transaction(serial=f"sync:{self.name}") as tx:
            tx.shadows.save(self.name, obj.name, [work.shadows[g] for g in sorted(work.dirty)
                                                  if g in work.shadows])
            tx.xref.save(self.name, obj.name, touched)
            if work.conflicts:
                tx.conflicts.add(self.name, work.conflicts)
            for destination, gids in supersede.items():
                tx.outbox.supersede(self.name, destination, gids)
            tx.outbox.add(self.name, deliveries)
            if waits:
                tx.xref.wait(self.name, obj.name, waits)
            if cursor is not None:
                tx.cursors.set(self.name, *cursor)
            if marker is not None:
                tx.cursors.set(self.name, *marker)
            if message is not None:
                tx.seen.first_sight(self.name, *message)

    def _written_now(self, deliveries: Sequence[NewDelivery]) -> list[NewDelivery]:
        """A first read's writes (the gid stamped into the external-id field of the records
        a participant held before the sync; updates of records matched), written at once
        through each participant's bulk path rather than one by one through the outbox,
        before the unit of work that records them: written again if it never commits,
        which an update by key bears. Returns those left to the outbox: deletes, and writes
        not taken."""
        left = [d for d in deliveries if d.operation != "upsert"]
        by_destination: dict[str, list[NewDelivery]] = {}
        for delivery in deliveries:
            if delivery.operation == "upsert":
                by_destination.setdefault(delivery.destination, []).append(delivery)
        for destination, group in by_destination.items():
            left += self._attempted(self.sinks[destination], group)
        return left

    def _attempted(self, target: SyncTarget, deliveries: Sequence[NewDelivery],
                   created: dict[str, Any] | None = None) -> list[NewDelivery]:
        """Write deliveries' records at once (as creates whose keys go into `created`, or as
        the outbox would); those not written (all of them when the write fails) are
        returned, for the outbox to write again later as it does any delivery. Stale ones
        are not: the target hands them to be read again (`stale`), as the outbox does."""
        if not deliveries:
            return []
        records = [dict(d.payload or {}) for d in deliveries]
        try:
            if created is None:
                outcomes = target.write(records).outcomes
            else:
                outcomes, keys = target.create(records)
                created.update(keys)
        except Exception:
            log.exception("%s: writing %d records to %s at once failed; they go to the outbox",
                          self.name, len(deliveries), target.held.destination)
            return list(deliveries)
        return [d for d, o in zip(deliveries, outcomes, strict=True)
                if not (o.status.is_delivered or o.status is Status.STALE)]

    def _deliveries(self, obj: SyncObjectSpec, work: _Work, joined: set[str], *,
                    loading: bool = False, only: str | None = None
                    ) -> tuple[list[NewDelivery], list[Waiting], dict[str, list[str]]]:
        """Each participant's difference from the shadow of the records changed (`only`:
        that participant's); creates none while `loading` (the initial load does)."""
        deliveries: list[NewDelivery] = []
        waits: list[Waiting] = []
        supersede: dict[str, list[str]] = {}
        version = dt.datetime.now(dt.UTC).isoformat()
        ready = {p for p in self.order if p in joined or self._is_joined(obj, p)}
        for participant, gids in work.removals.items():
            deleting = self.held[(obj.name, participant)]
            for gid in sorted(gids):
                key = work.links[gid][participant].key
                payload = {deleting.spec.key: key, GID: gid} if key is not None \
                    else {BY_EXTERNAL: gid}
                supersede.setdefault(deleting.destination, []).append(gid)
                deliveries.append(NewDelivery(deleting.destination, gid, version, "delete",
                                              payload))
                self.tally.add(participant, "deletes sent")
        lookups = self._lookup_keys(obj, work)
        for gid in sorted(work.dirty | work.resend):
            shadow = work.shadows.get(gid)
            if shadow is None or shadow.state != "live" or not shadow.shared:
                continue
            for participant in self.order:
                held = self.held.get((obj.name, participant))
                link = work.link(gid, participant)
                if only is not None and participant != only:
                    continue
                if held is None or (participant not in ready and (link is None or link.key is None)):
                    # Nothing is created in a participant before it has been read whole (it
                    # may hold the record still unread); a record it is known to hold is
                    # updated at once.
                    continue
                if link is not None and link.state != "live":
                    continue  # it deleted the record (policy ignore), or is deleting it
                values = {n: v for n, v in shadow.shared.items()
                          if held.shape.writes(n) and n not in shadow.held}
                known = link.known if link is not None else {}
                sent = {n: v for n, v in (link.sent if link is not None else {}).items()
                        if n not in shadow.held}
                pending = last_sent(sent)
                # A field it holds as the shadow does, but with another value on its way
                # there (the shadow went back to its value meanwhile), is written again:
                # the value on its way would land and stay.
                differ = {n: v for n, v in values.items()
                          if known.get(n, _MISSING) != v or pending.get(n, v) != v}
                creating = link is None or link.key is None
                # A delivery on its way whose values no longer stand (a field held for a
                # person since, or the participant's own edit came first) is superseded by
                # one with the record's difference now, or by none. (What is on its way
                # stays in `sent`: a write already under way may land, and its echo is known.)
                withheld = not creating and (len(sent) < len(link.sent if link else {})
                                             or (gid, participant) in work.overtaken)
                unstamped = (gid, participant) in work.unstamped
                if not withheld and not creating and not unstamped and all(
                        pending.get(n, _MISSING) == v for n, v in differ.items()):
                    continue  # it holds the shadow, or has been sent it
                if withheld and not differ and not unstamped:
                    assert link is not None
                    link.sent = sent
                    work.put(link)
                    supersede.setdefault(held.destination, []).append(gid)
                    continue
                if creating and (not self.creates_records or loading
                                 or (link is not None and values == pending)):
                    continue  # not created here; or the create is on its way (its key follows)
                record, missing = self._record_for(held, gid, differ if not creating else values,
                                                   lookups)
                if missing is not None:
                    waits.append(Waiting(gid, participant, *missing))
                    self.tally.add(participant, "waiting for a parent")
                    continue
                if creating:
                    link = link or Link(gid, participant)
                    if not held.spec.external_id:
                        link.key = gid  # created with the gid as its key
                        record = {**record, held.spec.key: gid}
                    record = {**record, WRITE: "create"}
                    if held.spec.external_id:
                        # Written once already (a worker killed before it marked it), the
                        # record may hold a person's edit since: it is not written over.
                        record[EXPECT] = _expected(held, link, values, creating=True)
                    self.tally.add(participant, "creates sent")
                else:
                    assert link is not None
                    record = {**record, held.spec.key: link.key, WRITE: "update"}
                    if (gid, participant) not in work.unchecked:
                        record[EXPECT] = _expected(held, link, differ)
                    self.tally.add(participant, "updates sent")
                link.sent = with_sent(sent, differ if not creating else values)
                work.put(link)
                supersede.setdefault(held.destination, []).append(gid)
                deliveries.append(NewDelivery(held.destination, gid, version, "upsert",
                                              {**record, GID: gid}))
        return deliveries, waits, supersede

    def _lookup_keys(self, obj: SyncObjectSpec, work: _Work) -> dict[str, dict[str, dict[str, Link]]]:
        """For each lookup field, the parent records' links (parent gid -> participant -> link)."""
        found: dict[str, dict[str, dict[str, Link]]] = {}
        for name, shared in obj.fields.items():
            if shared.lookup is None:
                continue
            gids = [str(s.shared[name]) for s in work.shadows.values()
                    if s.shared.get(name) is not None]
            found[name] = self.store.xref.of(self.name, shared.lookup, gids)
        return found

    def _record_for(self, held: Held, gid: str, values: Mapping[str, Any],
                    lookups: Mapping[str, Mapping[str, Mapping[str, Link]]]
                    ) -> tuple[Record, tuple[str, str] | None]:
        """The participant's record for these shared values, lookups translated to its keys;
        or the parent (object, gid) it must wait for."""
        translated = dict(values)
        for name, parents in lookups.items():
            parent = translated.get(name)
            if parent is None:
                continue
            link = parents.get(str(parent), {}).get(held.participant)
            if link is None or link.key is None or link.state != "live":
                lookup = held.object.fields[name].lookup
                assert lookup is not None
                return {}, (lookup, str(parent))
            translated[name] = link.key
        record = held.shape.from_shared(translated)
        if held.spec.external_id:
            record[held.spec.external_id] = gid
        return record, None

    def _is_joined(self, obj: SyncObjectSpec, participant: str) -> bool:
        held = self.held.get((obj.name, participant))
        return held is not None and self._joined(held)

    # -- what else a round does -----------------------------------------------------------------

    def _release_waiting(self, obj: SyncObjectSpec) -> None:
        """Enqueue the records whose parent has now reached the participant they wait for."""
        ready = self.store.xref.ready(self.name, obj.name)
        if not ready:
            return
        gids = sorted({w.gid for w in ready})
        work = _Work(self.store.shadows.get(self.name, obj.name, gids),
                     self.store.xref.of(self.name, obj.name, gids))
        work.resend.update(gids)
        self.store.xref.release(self.name, obj.name, ready)
        self._commit(obj, work)

    def _check_deletes(self, held: Held) -> int:
        """For a polled participant: keys the xref holds that it no longer has are deletes;
        how many."""
        every = self.spec.deletes.check_seconds
        if held.trigger.changes == "cdc" or every is None or not self._joined(held):
            return 0
        last = self._checked_deletes.get(held.destination)
        if last is not None and time.monotonic() - last < every:
            return 0
        self._checked_deletes[held.destination] = time.monotonic()
        read_at = dt.datetime.now(dt.UTC) - LANDED_MARGIN
        present: set[str] = set()
        for page in held.connector.read(held.spec.object,
                                        scopes.bind(held.spec.scope, self.ctx.params),
                                        key=held.spec.key, fields=[held.spec.key],
                                        page_size=5000):
            present.update(key_text(r[held.spec.key]) for r in page.records)
        name, obj = self.name, held.object.name
        seen: set[str] = set()
        unseen: dict[str, str] = {}  # gid -> key
        # Where keys are learnt only from the participant (by its external id), a create
        # whose key was learnt before the keys were read had landed, even if its worker was
        # killed before marking it delivered and the sync never saw the record since.
        learnt = read_at if held.spec.external_id else None
        for key, gid, known in self.store.xref.live_keys(name, obj, held.participant, learnt):
            if key in present:
                continue
            if known:
                seen.add(key)
            else:
                unseen[gid] = key
        # A create never seen back was made there all the same if its delivery landed
        # before the keys were read: a person may have deleted it before the sync saw it.
        made = self.store.outbox.landed(name, held.destination, list(unseen), read_at) \
            if unseen else set()
        gone = sorted(seen | {unseen[gid] for gid in made})
        batch = self.spec.options.batch_size
        for start in range(0, len(gone), batch):
            changes = [Change(held.participant, held.spec.object, key, ChangeKind.DELETED,
                              {held.spec.key: key}) for key in gone[start:start + batch]]
            self._merge(held, changes)
        return len(gone)

    def _apply_choices(self) -> None:
        """Apply what people chose for held conflicts: the value everywhere."""
        chosen = self.store.conflicts.chosen(self.name)
        for conflict in chosen:
            if conflict.kind != "field" or conflict.field is None:
                continue
            obj = next((o for o in self.objects if o.name == conflict.object), None)
            if obj is None:
                continue
            work = _Work(self.store.shadows.get(self.name, obj.name, [conflict.gid]),
                         self.store.xref.of(self.name, obj.name, [conflict.gid]))
            shadow = work.shadows.get(conflict.gid)
            if shadow is not None:
                shadow.shared[conflict.field] = conflict.chosen
                shadow.origins[conflict.field] = "person"
                shadow.held = [f for f in shadow.held if f != conflict.field]
                work.dirty.add(conflict.gid)
                self._commit(obj, work)
        if chosen:
            self.store.conflicts.resolved([c.id for c in chosen])

    def _retire_removed(self) -> None:
        """Participants no longer declared leave: their xref rows go, the others stay."""
        for participant in sorted(self.store.xref.participants(self.name) - set(self.order)):
            retired = self.store.xref.retire(self.name, participant)
            log.info("%s: participant %s left the sync; %d links retired", self.name,
                     participant, retired)

    # -- what the runtime's loop needs -------------------------------------------------------

    def next_poll(self, now: dt.datetime, first: bool = False) -> dt.datetime:
        if self._cron is not None:
            return self._cron.next_after(now)
        return now if first else now + dt.timedelta(seconds=self.spec.trigger.poll_seconds)

    def purge(self) -> int:
        keep = self.spec.options.keep_delivered_hours
        if keep is None:
            return 0
        try:
            return int(self.store.outbox.purge(dt.timedelta(hours=keep), self.name))
        except TRANSIENT as exc:
            log.warning("%s: purging the outbox failed, trying later: %s", self.name, exc)
            return 0

    def crossed(self, held: Held, records: Sequence[Record]) -> None:
        """Records written to `held`'s participant (a correlation keeps a ledger of them)."""

    def report(self, changes: int, delivered: int, retried: int, dead: int) -> SyncReport:
        return SyncReport(self.ctx.integration.pattern, self.name, changes, delivered, retried,
                          dead, self.tally.take(), self.store.conflicts.counts(self.name),
                          self.store.xref.waiting_count(self.name),
                          self.store.outbox.counts(self.name), self._reported())

    def _reported(self) -> dict[str, Any]:
        """What a subclass adds to the report."""
        return {}


def _expected(held: Held, link: Link, values: Mapping[str, Any], *,
              creating: bool = False) -> dict[str, list[Any]]:
    """What a write of these shared values expects the participant's record to hold, per
    participant field: the value last seen there, one written there and not seen back yet,
    or the value being written (a write landed once and written again). Fields of an
    update neither seen there nor written there, lookups (the participant's key of the parent) and fields
    whose type a participant may keep more finely are not compared."""
    expected: dict[str, list[Any]] = {}
    for name, value in values.items():
        shared = held.object.fields[name]
        if (name not in link.known and not pending(link.sent, name) and not creating) \
                or shared.lookup is not None or shared.type in UNCHECKED_TYPES:
            continue
        accepted: list[Any] = []
        seen = [link.known[name]] if name in link.known else []
        for candidate in (*seen, *pending(link.sent, name), value):
            for theirs in (held.shape.from_shared({name: candidate}).values()):
                # An empty text is null in the shared shape: either may be there.
                for form in ((theirs, "") if theirs is None else (theirs,)):
                    if form not in accepted:
                        accepted.append(form)
        expected[held.spec.fields[name].field] = accepted
    return expected


def _creatable(link: Link | None) -> bool:
    """Whether a participant lacks the record: no link, or only a create not seen back."""
    return link is None or (link.key is None and link.state == "live")


def _parents_first(objects: Sequence[SyncObjectSpec]) -> list[SyncObjectSpec]:
    """Objects ordered so that an object comes after those its lookups point to."""
    by_name = {o.name: o for o in objects}
    graph = {o.name: {f.lookup for f in o.fields.values()
                      if f.lookup is not None and f.lookup != o.name} for o in objects}
    return [by_name[name] for name in graphlib.TopologicalSorter(graph).static_order()]


@dataclass(frozen=True)
class SyncReport:
    """One round (or run) of a sync: changes noticed, what each participant saw and was
    sent, deliveries made, conflicts by status and policy, records waiting for a parent,
    and the outbox per participant and status."""

    pattern: str
    integration: str
    changes: int
    delivered: int
    retried: int
    dead: int
    participants: dict[str, dict[str, int]]
    conflicts: dict[str, dict[str, int]]
    waiting: int
    outbox: dict[str, dict[str, int]]
    more: dict[str, Any] = field(default_factory=dict)
    """What the pattern adds (a correlation: its pairs)."""

    def to_json(self) -> dict[str, Any]:
        return {"integration": self.integration, "pattern": self.pattern,
                "changes": self.changes, "delivered": self.delivered, "retried": self.retried,
                "dead": self.dead, "participants": self.participants,
                "conflicts": self.conflicts, "waiting_for_parent": self.waiting,
                "outbox": self.outbox, **self.more}


class SyncPattern(Pattern):
    """A sync as a plug-in: kept going by the runtime's outbox loop (notice, deliver); a run
    is rounds of it until nothing new is noticed; a verification compares the participants
    (patterns/sync_verify.py)."""

    loop = "outbox"

    def watched(self) -> Sync:
        return Sync(self.ctx)

    def accept(self, body: Mapping[str, Any], received_at: str,
               message: tuple[str, str] | None = None, source: str | None = None) -> int:
        return Sync(self.ctx).accept(body, received_at, message, source)

    def verify(self) -> Report:
        return verify(Sync(self.ctx)).to_json()
