"""A sync's conflicts (`patchbay_conflicts`): every value that lost to another, or waits for
a person, with what each participant had.

    kind       field (one field changed differently in two participants since the shadow),
               delete (a delete against an update made elsewhere), match (a first sync
               found several candidates for a record)
    candidates participant -> the value it had (a field, a delete), or for a match:
               {"participant": ..., "key": ..., "gids": [...]}
    status     settled (by the policy, `winner` names whose value stands), held (waiting
               for a person), chosen (a person chose `chosen`; the sync applies it on its
               next round), resolved (applied)
"""

from __future__ import annotations

import builtins
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from patchbay.model import jsonable
from patchbay.store.schema import conflicts
from patchbay.store.unit import Repository, chunks

STATUSES = ("settled", "held", "chosen", "resolved")


@dataclass(frozen=True)
class NewConflict:
    object: str
    gid: str
    field: str | None
    kind: str
    policy: str
    candidates: dict[str, Any]
    winner: str | None
    status: str


@dataclass(frozen=True)
class ConflictRecord:
    id: int
    integration: str
    object: str
    gid: str
    field: str | None
    kind: str
    policy: str
    candidates: dict[str, Any]
    winner: str | None
    chosen: Any
    status: str
    created_at: dt.datetime
    resolved_at: dt.datetime | None
    resolved_by: str | None

    def to_json(self) -> dict[str, Any]:
        return {name: jsonable(getattr(self, name)) for name in self.__dataclass_fields__}


class Conflicts(Repository):
    def add(self, integration: str, found: Sequence[NewConflict]) -> None:
        now = dt.datetime.now(dt.UTC)
        rows = [dict(integration=integration, object=c.object, gid=c.gid, field=c.field,
                     kind=c.kind, policy=c.policy, candidates=jsonable(c.candidates),
                     winner=c.winner, status=c.status, created_at=now,
                     resolved_at=now if c.status == "settled" else None) for c in found]
        with self._db.begin("conflicts.add") as conn:
            for chunk in chunks(rows, 500):
                conn.execute(sa.insert(conflicts), chunk)

    def list(self, integration: str | None = None, status: str | None = None,
             limit: int = 100, offset: int = 0) -> list[ConflictRecord]:
        """Newest first."""
        stmt = sa.select(conflicts).order_by(conflicts.c.id.desc()).limit(limit).offset(offset)
        if integration is not None:
            stmt = stmt.where(conflicts.c.integration == integration)
        if status is not None:
            stmt = stmt.where(conflicts.c.status == status)
        with self._db.read("conflicts.list") as conn:
            return [_record(row) for row in conn.execute(stmt)]

    def get(self, id: int) -> ConflictRecord | None:
        with self._db.read("conflicts.get") as conn:
            row = conn.execute(sa.select(conflicts).where(conflicts.c.id == id)).first()
        return _record(row) if row is not None else None

    def choose(self, id: int, value: Any, by: str) -> bool:
        """A person's choice for a held conflict (the sync applies it on its next round);
        False if the conflict is not held."""
        with self._db.begin("conflicts.choose") as conn:
            return bool(conn.execute(sa.update(conflicts).where(
                conflicts.c.id == id, conflicts.c.status == "held").values(
                status="chosen", chosen=jsonable(value), resolved_by=by)).rowcount)

    def chosen(self, integration: str) -> builtins.list[ConflictRecord]:
        """The choices made and not yet applied, oldest first."""
        with self._db.read("conflicts.chosen") as conn:
            return [_record(row) for row in conn.execute(sa.select(conflicts).where(
                conflicts.c.integration == integration, conflicts.c.status == "chosen")
                .order_by(conflicts.c.id))]

    def resolved(self, ids: Sequence[int]) -> None:
        """Mark choices as applied."""
        with self._db.begin("conflicts.resolved") as conn:
            conn.execute(sa.update(conflicts).where(conflicts.c.id.in_(list(ids))).values(
                status="resolved", resolved_at=dt.datetime.now(dt.UTC)))

    def counts(self, integration: str) -> dict[str, dict[str, int]]:
        """Per status, how many conflicts under each policy."""
        with self._db.read("conflicts.counts") as conn:
            rows = conn.execute(sa.select(conflicts.c.status, conflicts.c.policy, sa.func.count())
                                .where(conflicts.c.integration == integration)
                                .group_by(conflicts.c.status, conflicts.c.policy))
            found: dict[str, dict[str, int]] = {}
            for status, policy, count in rows:
                found.setdefault(status, {})[policy] = int(count)
            return found


def _record(row: Any) -> ConflictRecord:
    return ConflictRecord(int(row.id), row.integration, row.object, row.gid, row.field, row.kind,
                          row.policy, dict(row.candidates or {}), row.winner, row.chosen,
                          row.status, row.created_at, row.resolved_at, row.resolved_by)
