"""A sync's shadow (`patchbay_shadow`): the last synced shared values of every record.

    shared      field -> value, as every participant should hold it
    origins     field -> the participant whose change set it (or "person")
    held        fields a person must settle (conflict: manual); they are not written
    state       live, deleted (a tombstone: a late update never revives it), or review
                (matched ambiguously on a first sync: nothing is written until a person
                links it)
    match_key   the normalised match fields a first sync finds the record by
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from patchbay.store.schema import shadow, xref
from patchbay.store.unit import Repository, chunks, insert_or_skip

_CHUNK = 1000


@dataclass
class Shadow:
    gid: str
    state: str = "live"
    shared: dict[str, Any] = field(default_factory=dict)
    origins: dict[str, str] = field(default_factory=dict)
    held: list[str] = field(default_factory=list)
    match_key: str | None = None


class Shadows(Repository):
    def get(self, integration: str, object: str, gids: Sequence[str]) -> dict[str, Shadow]:
        found: dict[str, Shadow] = {}
        with self._db.read("shadow.get") as conn:
            for chunk in chunks(sorted(set(gids)), _CHUNK):
                for row in conn.execute(sa.select(shadow).where(
                        shadow.c.integration == integration, shadow.c.object == object,
                        shadow.c.gid.in_(chunk))):
                    found[row.gid] = _shadow(row)
        return found

    def matching(self, integration: str, object: str,
                 match_keys: Sequence[str]) -> dict[str, list[str]]:
        """The live records by match key: match key -> gids, in gid order."""
        found: dict[str, list[str]] = {}
        with self._db.read("shadow.matching") as conn:
            for chunk in chunks(sorted(set(match_keys)), _CHUNK):
                rows = conn.execute(sa.select(shadow.c.match_key, shadow.c.gid).where(
                    shadow.c.integration == integration, shadow.c.object == object,
                    shadow.c.state == "live", shadow.c.match_key.in_(chunk))
                    .order_by(shadow.c.gid))
                for match_key, gid in rows:
                    found.setdefault(match_key, []).append(gid)
        return found

    def save(self, integration: str, object: str, shadows: Sequence[Shadow]) -> None:
        """Write these records' shadows whole; their values are JSON already."""
        now = dt.datetime.now(dt.UTC)
        rows = [dict(integration=integration, object=object, gid=s.gid, state=s.state,
                     shared=s.shared, origins=s.origins, held=sorted(s.held),
                     match_key=s.match_key, updated_at=now) for s in shadows]
        if not rows:
            return
        with self._db.begin("shadow.save") as conn:
            # One statement, compiled once, executed for every row: a multi-row VALUES of a
            # whole batch costs more to compile than to run.
            stmt = insert_or_skip(conn, shadow)
            conn.execute(stmt.on_conflict_do_update(
                index_elements=[shadow.c.integration, shadow.c.object, shadow.c.gid],
                set_={name: stmt.excluded[name] for name in
                      ("state", "shared", "origins", "held", "match_key", "updated_at")}), rows)

    def forget(self, integration: str, object: str, gids: Sequence[str]) -> None:
        with self._db.begin("shadow.forget") as conn:
            for chunk in chunks(sorted(set(gids)), _CHUNK):
                conn.execute(sa.delete(shadow).where(
                    shadow.c.integration == integration, shadow.c.object == object,
                    shadow.c.gid.in_(chunk)))

    def lacking(self, integration: str, object: str, participant: str, *, after: str = "",
                limit: int = _CHUNK) -> list[str]:
        """Up to `limit` live records `participant` has no link of (what a joining one
        lacks), by gid, from after `after`: a page at a time, so that a table of millions
        is never held whole."""
        linked = sa.select(xref.c.gid).where(
            xref.c.integration == integration, xref.c.object == object,
            xref.c.participant == participant, xref.c.gid == shadow.c.gid)
        with self._db.read("shadow.lacking") as conn:
            return list(conn.execute(sa.select(shadow.c.gid).where(
                shadow.c.integration == integration, shadow.c.object == object,
                shadow.c.state == "live", shadow.c.gid > after, ~linked.exists())
                .order_by(shadow.c.gid).limit(limit)).scalars())

    def each(self, integration: str, object: str, state: str = "live") -> Iterator[Shadow]:
        """Every record in `state`, in gid order, a chunk at a time."""
        after = ""
        while True:
            with self._db.read("shadow.each") as conn:
                rows = conn.execute(sa.select(shadow).where(
                    shadow.c.integration == integration, shadow.c.object == object,
                    shadow.c.state == state, shadow.c.gid > after)
                    .order_by(shadow.c.gid).limit(_CHUNK)).all()
            yield from (_shadow(row) for row in rows)
            if len(rows) < _CHUNK:
                return
            after = rows[-1].gid


def _shadow(row: Any) -> Shadow:
    return Shadow(row.gid, row.state, dict(row.shared or {}), dict(row.origins or {}),
                  list(row.held or []), row.match_key)
