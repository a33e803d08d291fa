"""A sync's xref (`patchbay_xref`): which record of each participant is which real-world
record, and what each participant is known to hold; and the records waiting for a parent
(`patchbay_waiting`).

One row per (integration, object, gid, participant):

    record_key   the participant's key of the record; null while a create sent to it has
                 not landed (its key is not known yet). Where the participant has an
                 external-id field, a key is only ever learnt from the participant (seen,
                 or read back by the delivering side right after the create landed), so a
                 key there means the record was there once
    state        live, or deleted (the participant no longer holds the record)
    known        the shared values the participant was last seen holding
    sent         the shared values written to it (enqueued) and not yet seen back: a change
                 whose values equal these is the echo of patchbay's own write

The noticing side of a sync reads and writes `known` and `sent` in the unit of work that
advances its cursor; the delivering side only ever sets `record_key` (`set_key`), so the
two never overwrite each other's columns.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from patchbay.store.schema import waiting, xref
from patchbay.store.unit import Repository, aware, chunks, insert_or_skip

_CHUNK = 1000


@dataclass
class Link:
    """One participant's copy of one record."""

    gid: str
    participant: str
    key: str | None = None
    state: str = "live"
    known: dict[str, Any] = field(default_factory=dict)
    sent: dict[str, Any] = field(default_factory=dict)
    anew: bool = False
    """The participant's record of it is gone (deleted there) and is to be made anew: saved,
    the link's old key is cleared, not kept as a link without one keeps it."""


@dataclass(frozen=True)
class Waiting:
    gid: str
    participant: str
    parent_object: str
    parent_gid: str


def key_text(value: Any) -> str:
    """A record key as the xref keeps it: text (1 and "1" are one key)."""
    return str(value)


class Xref(Repository):
    def by_keys(self, integration: str, object: str, participant: str,
                keys: Sequence[Any]) -> dict[str, Link]:
        """The links of these keys of `participant`, by key text."""
        found: dict[str, Link] = {}
        with self._db.read("xref.by_keys") as conn:
            for chunk in chunks(sorted({key_text(k) for k in keys}), _CHUNK):
                rows = conn.execute(sa.select(xref).where(
                    xref.c.integration == integration, xref.c.object == object,
                    xref.c.participant == participant, xref.c.record_key.in_(chunk)))
                for row in rows:
                    found[row.record_key] = _link(row)
        return found

    def of(self, integration: str, object: str,
           gids: Sequence[str]) -> dict[str, dict[str, Link]]:
        """Every participant's link of these records: gid -> participant -> link."""
        found: dict[str, dict[str, Link]] = {}
        with self._db.read("xref.of") as conn:
            for chunk in chunks(sorted(set(gids)), _CHUNK):
                rows = conn.execute(sa.select(xref).where(
                    xref.c.integration == integration, xref.c.object == object,
                    xref.c.gid.in_(chunk)))
                for row in rows:
                    found.setdefault(row.gid, {})[row.participant] = _link(row)
        return found

    def save(self, integration: str, object: str, links: Sequence[Link]) -> None:
        """Write these links whole (insert or replace), keeping a key the delivering side set
        when the link has none (unless it is made `anew`). `known` and `sent` hold shared
        values, JSON already (elements/shape.canonical)."""
        now = dt.datetime.now(dt.UTC)
        rows = [dict(integration=integration, object=object, gid=link.gid,
                     participant=link.participant, record_key=link.key, state=link.state,
                     known=link.known, sent=link.sent, updated_at=now)
                for link in links]
        if not rows:
            return
        with self._db.begin("xref.save") as conn:
            # Compiled once, executed for every row (as shadow.save).
            stmt = insert_or_skip(conn, xref)
            conn.execute(stmt.on_conflict_do_update(
                index_elements=[xref.c.integration, xref.c.object, xref.c.gid,
                                xref.c.participant],
                set_=dict(record_key=sa.func.coalesce(stmt.excluded.record_key,
                                                      xref.c.record_key),
                          state=stmt.excluded.state, known=stmt.excluded.known,
                          sent=stmt.excluded.sent, updated_at=stmt.excluded.updated_at)), rows)
            anew: dict[str, list[str]] = {}
            for link in links:
                if link.anew:
                    anew.setdefault(link.participant, []).append(link.gid)
            for participant, gids in anew.items():
                for chunk in chunks(gids, _CHUNK):
                    conn.execute(sa.update(xref).where(
                        xref.c.integration == integration, xref.c.object == object,
                        xref.c.participant == participant, xref.c.gid.in_(chunk))
                        .values(record_key=None))

    def set_key(self, integration: str, object: str, participant: str,
                keys: Mapping[str, Any]) -> None:
        """The keys a participant gave records patchbay created there (gid -> key)."""
        if not keys:
            return
        now = dt.datetime.now(dt.UTC)
        with self._db.begin("xref.set_key") as conn:
            conn.execute(sa.update(xref).where(
                xref.c.integration == integration, xref.c.object == object,
                xref.c.participant == participant, xref.c.gid == sa.bindparam("b_gid"),
                xref.c.record_key.is_(None)).values(record_key=sa.bindparam("b_key"),
                                                    updated_at=now),
                [{"b_gid": gid, "b_key": key_text(key)} for gid, key in keys.items()])

    def deleted(self, integration: str, object: str, participant: str,
                gids: Sequence[str]) -> None:
        """Deletes patchbay sent that the participant carried out: those links are deleted."""
        now = dt.datetime.now(dt.UTC)
        with self._db.begin("xref.deleted") as conn:
            for chunk in chunks(sorted(set(gids)), _CHUNK):
                conn.execute(sa.update(xref).where(
                    xref.c.integration == integration, xref.c.object == object,
                    xref.c.participant == participant, xref.c.gid.in_(chunk),
                    xref.c.state == "deleting").values(state="deleted", updated_at=now))

    def live_keys(self, integration: str, object: str, participant: str,
                  learnt_before: dt.datetime | None = None) -> Iterator[tuple[str, str, bool]]:
        """(key, gid, seen) of every record the participant is known to hold, in key order;
        `seen`: whether it was seen holding it (not only a create sent to it and never seen
        back, which a failed write may have left undone). With `learnt_before`, a key
        written into the link before then counts as seen: where keys are only ever learnt
        from the participant (read back after a create landed), the record was there."""
        after = ""
        while True:
            with self._db.read("xref.live_keys") as conn:
                rows = conn.execute(sa.select(xref.c.record_key, xref.c.gid, xref.c.known,
                                              xref.c.updated_at).where(
                    xref.c.integration == integration, xref.c.object == object,
                    xref.c.participant == participant, xref.c.state == "live",
                    xref.c.record_key > after).order_by(xref.c.record_key).limit(_CHUNK)).all()
            yield from ((str(k), str(g), bool(known) or (
                learnt_before is not None and aware(at) < learnt_before))
                for k, g, known, at in rows)
            if len(rows) < _CHUNK:
                return
            after = str(rows[-1][0])

    def forget(self, integration: str, object: str, gids: Sequence[str]) -> None:
        """Forget these records' links everywhere (a correlation's link that no longer holds)."""
        with self._db.begin("xref.forget") as conn:
            for chunk in chunks(sorted(set(gids)), _CHUNK):
                conn.execute(sa.delete(xref).where(
                    xref.c.integration == integration, xref.c.object == object,
                    xref.c.gid.in_(chunk)))

    def participants(self, integration: str) -> set[str]:
        """The participants the xref holds records of."""
        with self._db.read("xref.participants") as conn:
            return set(conn.execute(sa.select(xref.c.participant).distinct().where(
                xref.c.integration == integration)).scalars())

    def retire(self, integration: str, participant: str) -> int:
        """Forget a participant that left the sync; how many links it had."""
        with self._db.begin("xref.retire") as conn:
            conn.execute(sa.delete(waiting).where(waiting.c.integration == integration,
                                                  waiting.c.participant == participant))
            return int(conn.execute(sa.delete(xref).where(
                xref.c.integration == integration, xref.c.participant == participant)).rowcount)

    def wait(self, integration: str, object: str, waits: Sequence[Waiting]) -> None:
        """Hold these records until their parent reaches the participant."""
        now = dt.datetime.now(dt.UTC)
        rows = [dict(integration=integration, object=object, gid=w.gid, participant=w.participant,
                     parent_object=w.parent_object, parent_gid=w.parent_gid, since=now)
                for w in waits]
        with self._db.begin("xref.wait") as conn:
            for chunk in chunks(rows, _CHUNK):
                conn.execute(insert_or_skip(conn, waiting).values(chunk).on_conflict_do_nothing())

    def ready(self, integration: str, object: str) -> list[Waiting]:
        """The waiting records of `object` whose parent the participant now holds (with a key)."""
        parent = xref.alias("parent")
        stmt = (sa.select(waiting).join(parent, sa.and_(
            parent.c.integration == waiting.c.integration,
            parent.c.object == waiting.c.parent_object, parent.c.gid == waiting.c.parent_gid,
            parent.c.participant == waiting.c.participant, parent.c.record_key.is_not(None)))
            .where(waiting.c.integration == integration, waiting.c.object == object))
        with self._db.read("xref.ready") as conn:
            return [Waiting(r.gid, r.participant, r.parent_object, r.parent_gid)
                    for r in conn.execute(stmt)]

    def release(self, integration: str, object: str, waits: Sequence[Waiting]) -> None:
        with self._db.begin("xref.release") as conn:
            for w in waits:
                conn.execute(sa.delete(waiting).where(
                    waiting.c.integration == integration, waiting.c.object == object,
                    waiting.c.gid == w.gid, waiting.c.participant == w.participant,
                    waiting.c.parent_gid == w.parent_gid))

    def waiting_list(self, integration: str, limit: int = 100) -> list[dict[str, Any]]:
        """The records waiting for a parent, longest waiting first."""
        stmt = (sa.select(waiting.c.object, waiting.c.gid, waiting.c.participant,
                          waiting.c.parent_object, waiting.c.parent_gid, waiting.c.since)
                .where(waiting.c.integration == integration)
                .order_by(waiting.c.since, waiting.c.gid).limit(limit))
        with self._db.read("xref.waiting_list") as conn:
            return [dict(row) for row in conn.execute(stmt).mappings()]

    def waiting_count(self, integration: str) -> int:
        with self._db.read("xref.waiting_count") as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(waiting).where(
                waiting.c.integration == integration)).scalar() or 0)


def _link(row: Any) -> Link:
    return Link(row.gid, row.participant, row.record_key, row.state, dict(row.known or {}),
                dict(row.sent or {}))
