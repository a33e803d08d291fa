"""How a sync's deliveries reach one participant's object (`SyncTarget`), and the reserved
fields of a delivery's payload that say how: the write side of patterns/sync.py, which the
runtime's deliverer drives like any destination's sink."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from patchbay.connectors.base import Capability
from patchbay.elements.sink import Shaped, Sink, Written
from patchbay.model import Operation, Outcome, Record, Status

if TYPE_CHECKING:
    from patchbay.patterns.sync import Held, Sync
    from patchbay.store.xref import Link

GID = "__gid__"
WRITE = "__write__"
"""Reserved payload fields: the record's global id, and how to write it (create, update)."""
BY_EXTERNAL = "__external__"
"""A delete's payload field: delete by the external id (the key is not known yet)."""
EXPECT = "__expect__"
"""An update's payload field: per participant field, the values the record may hold for the
write to land (what was last seen there, or written there); see SyncTarget."""
_RESERVED = (GID, WRITE, BY_EXTERNAL, EXPECT)


class SyncTarget:
    """How deliveries reach one participant's object: a create is an upsert on the external
    id (or an insert keyed by the gid), so writing it twice makes one record; an update and
    a delete go by the participant's key (by the external id while the key is unknown).
    Keys the participant gives created records go into the xref.

    An update is conditional where the participant's connector can write so (`write_if`):
    it lands only while the record still holds, in each field written, what the sync last
    saw there or wrote there itself. One that finds a person's edit there (stale) writes
    nothing and is neither delivered nor a dead letter: the sync reads the record again and
    merges the edit (`Sync.stale`). The same expectation fences a late write of an old
    version (a killed worker's lease taken over): the record no longer holds what it
    expected. Where the connector cannot, an update is written as it is (an edit made
    there between the sync's read and its write is overwritten)."""

    def __init__(self, sync: Sync, held: Held) -> None:
        self.sync, self.held = sync, held
        spec = held.spec
        self.object, self.key, self.operation = spec.object, spec.key, Operation.UPSERT
        self.updates = Sink(held.connector, spec.object, Operation.UPDATE, spec.key,
                            conform_every_field=True, broken_code=None)
        self.creates = Sink(held.connector, spec.object, Operation.UPSERT,
                            spec.external_id or spec.key, conform_every_field=True,
                            broken_code=None)
        self.seen = Sink(held.connector, spec.object, Operation.UPDATE,
                         spec.external_id or spec.key, conform_every_field=True,
                         broken_code=None)
        """Creates of records seen there since they were sent: updates by the same key."""
        self.conditional = Capability.WRITE_IF in held.connector.capabilities

    def _links(self, gids: Sequence[str]) -> dict[str, Link]:
        """This participant's links of these records, as the noticing side left them."""
        if not gids:
            return {}
        found = self.sync.store.xref.of(self.sync.name, self.held.object.name, gids)
        return {gid: by[self.held.participant] for gid, by in found.items()
                if self.held.participant in by}

    def write(self, batch: Sequence[Record], operation: Operation | None = None) -> Written:
        outcomes: list[Outcome] = [Outcome(None, Status.FAILED, "not written")] * len(batch)
        groups: dict[tuple[Sink, Operation], list[int]] = {}
        links = self._links([str(r.get(GID)) for r in batch if r.get(WRITE) == "create"]) \
            if operation is not Operation.DELETE else {}
        for position, record in enumerate(batch):
            if operation is Operation.DELETE:
                sink = self.creates if BY_EXTERNAL in record else self.updates
                groups.setdefault((sink, Operation.DELETE), []).append(position)
            elif record.get(WRITE) == "create":
                # A create taken up again (its first writer was killed before it marked it)
                # never makes anew a record seen there since, which a person may have
                # deleted: it only updates it, if it is there.
                link = links.get(str(record.get(GID)))
                if link is None or link.state != "live":
                    outcomes[position] = Outcome(None, Status.SKIPPED, "deleted there since")
                elif link.known or (self.held.spec.external_id and link.key is not None):
                    # Seen there, or its key learnt there (read back once it landed).
                    groups.setdefault((self.seen, Operation.UPDATE), []).append(position)
                else:
                    groups.setdefault((self.creates, Operation.UPSERT), []).append(position)
            else:
                groups.setdefault((self.updates, Operation.UPDATE), []).append(position)
        deleted: list[str] = []
        stale: dict[str, dict[str, Any]] = {}
        xref, name = self.sync.store.xref, self.sync.name
        for (sink, op), positions in groups.items():
            records = [_plain(batch[p], sink.key, op) for p in positions]
            if op is Operation.DELETE:
                # Deletes are written as given (not shaped): the xref's key text is made the
                # key's type here (an integer id), as an update's key is by its shaping.
                keys = [{sink.key: r[sink.key]} for r in records]
                sink.conformer.conform_batch(keys)
                records = [{**r, sink.key: k[sink.key]} for r, k in zip(records, keys, strict=True)]
            expected = [batch[p].get(EXPECT) or {} for p in positions] \
                if op is not Operation.DELETE and self.conditional else None
            written = sink.write(records, op, expected)
            made: list[tuple[str, Outcome]] = []
            for record, position, outcome in zip(records, positions, written.outcomes,
                                                 strict=True):
                outcomes[position] = outcome
                gid = str(batch[position].get(GID) or batch[position].get(BY_EXTERNAL) or "")
                if outcome.status is Status.STALE:
                    stale[gid] = self.held.shape.to_shared(record)
                elif op is Operation.DELETE and outcome.status in (Status.DELETED, Status.SKIPPED):
                    deleted.append(gid)
                elif op is Operation.UPSERT:
                    made.append((gid, outcome))
            # The creates' keys are recorded as soon as they have landed, before the batch's
            # other writes: a worker killed after this point leaves creates known to have
            # landed (taken up again, they never make anew a record deleted there since).
            if created := self._created(made):
                xref.set_key(name, self.held.object.name, self.held.participant, created)
        if deleted:
            xref.deleted(name, self.held.object.name, self.held.participant, deleted)
        if stale:
            self.sync.stale(self.held, stale)
            self.sync.tally.add(self.held.participant, "stale writes", len(stale))
        self._landed(batch, outcomes, crossing=operation is not Operation.DELETE)
        return Written(Shaped([], [], {}, {}), outcomes)

    def create(self, batch: Sequence[Record]) -> tuple[list[Outcome], dict[str, Any]]:
        """Write creates (deliveries' records) in one write, by the participant's bulk path
        for a large batch; the outcomes by position, and the keys the participant gave the
        records created (gid -> key). The initial load's write (Sync._load), which records
        the keys itself. Conditional as a create delivered is: a batch written again (its
        run killed before its checkpoint) never writes over an edit made there since; such
        a record is stale, and read again (`Sync.stale`)."""
        records = [_plain(r, self.creates.key, Operation.UPSERT) for r in batch]
        expected = [r.get(EXPECT) or {} for r in batch] if self.conditional else None
        written = self.creates.write(records, Operation.UPSERT, expected)
        created = self._created([(str(record[GID]), outcome)
                                 for record, outcome in zip(batch, written.outcomes, strict=True)])
        stale = {str(record[GID]): self.held.shape.to_shared(plain)
                 for record, plain, outcome in zip(batch, records, written.outcomes, strict=True)
                 if outcome.status is Status.STALE}
        if stale:
            self.sync.stale(self.held, stale)
            self.sync.tally.add(self.held.participant, "stale writes", len(stale))
        self._landed(batch, written.outcomes, crossing=True)
        return written.outcomes, created

    def _created(self, made: Sequence[tuple[str, Outcome]]) -> dict[str, Any]:
        """The keys of the records of these creates (gid, outcome) that landed (gid -> key):
        as the write says them (or the gid, where it is the key), else read back."""
        created: dict[str, Any] = {}
        unkeyed: list[str] = []
        for gid, outcome in made:
            if not outcome.status.is_success:
                continue
            key = outcome.destination_id or (gid if not self.held.spec.external_id else None)
            if key is not None:
                created[gid] = key
            else:
                unkeyed.append(gid)
        if unkeyed:
            created.update(self._keys_of(unkeyed))
        return created

    def _landed(self, batch: Sequence[Record], outcomes: Sequence[Outcome], *,
                crossing: bool) -> None:
        """Count the records written, and (`crossing`: not deletes) note them crossed."""
        landed = [r for r, o in zip(batch, outcomes, strict=True) if o.status.is_success]
        self.sync.tally.add(self.held.participant, "written", len(landed))
        if landed and crossing:
            self.sync.crossed(self.held, landed)

    def _keys_of(self, gids: Sequence[str]) -> dict[str, Any]:
        """The keys the participant gave records just created by external id, where the
        write does not say (a table's generated id): read back by the external id, so that
        a later change is an update by key, which never brings back a record deleted
        meanwhile (an upsert would)."""
        spec = self.held.spec
        assert spec.external_id is not None
        found = self.held.connector.get(spec.object, spec.external_id, list(gids),
                                        [spec.key, spec.external_id])
        return {str(gid): record[spec.key] for gid, record in found.items()
                if record.get(spec.key) is not None}


def _plain(record: Record, key: str, operation: Operation) -> Record:
    """A delivery's record as the participant takes it: reserved fields out, and a delete by
    external id keyed by it."""
    if operation is Operation.DELETE and BY_EXTERNAL in record:
        return {key: record[BY_EXTERNAL]}
    return {k: v for k, v in record.items() if k not in _RESERVED}
