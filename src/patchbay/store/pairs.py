"""A correlation's pairs (`patchbay_pairs`) and its audit ledger (`patchbay_audit`).

A pair is two keys, one of each side, and what is known of them:

    link       the matcher links them; `gid` names the pair in the xref and the shadow
    review     the matcher is unsure: a person decides (`decide`)
    accepted   a person linked them; no later match undoes it
    rejected   a person said they differ; no later match links them
    dropped    they were linked, and a later match no longer links them

Only keys and scores are kept: nothing of either record's values.
"""

from __future__ import annotations

import builtins
import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from patchbay.model import jsonable
from patchbay.store.schema import audit, pairs
from patchbay.store.unit import Repository, chunks, insert_or_skip

LINKED = ("link", "accepted")
DECIDED = ("accepted", "rejected")
STATUSES = ("link", "review", "accepted", "rejected", "dropped")


@dataclass
class Pair:
    left: str
    right: str
    status: str
    gid: str | None = None
    weight: float | None = None
    probability: float | None = None
    decided_by: str | None = None
    integration: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {name: jsonable(getattr(self, name)) for name in self.__dataclass_fields__}


@dataclass(frozen=True)
class Crossed:
    """One field that crossed from one record to its pair; or (`event` linked, dropped, with
    no field) the pair linked or its link dropped, source the left side."""

    gid: str
    source: str
    source_key: str | None
    target: str
    target_key: str | None
    field: str
    weight: float | None
    event: str = "crossed"


class Pairs(Repository):
    def all(self, integration: str) -> builtins.list[Pair]:
        with self._db.read("pairs.all") as conn:
            return [_pair(row) for row in conn.execute(sa.select(pairs).where(
                pairs.c.integration == integration))]

    def list(self, integration: str | None, status: str | None = None, limit: int = 100,
             offset: int = 0) -> builtins.list[Pair]:
        """The pairs of one correlation (None: of every one), best weight first."""
        stmt = (sa.select(pairs)
                .order_by(pairs.c.integration, pairs.c.weight.desc(), pairs.c.left_key,
                          pairs.c.right_key)
                .limit(limit).offset(offset))
        if integration is not None:
            stmt = stmt.where(pairs.c.integration == integration)
        if status is not None:
            stmt = stmt.where(pairs.c.status == status)
        with self._db.read("pairs.list") as conn:
            return [_pair(row) for row in conn.execute(stmt)]

    def get(self, integration: str, left: str, right: str) -> Pair | None:
        with self._db.read("pairs.get") as conn:
            row = conn.execute(sa.select(pairs).where(
                pairs.c.integration == integration, pairs.c.left_key == left,
                pairs.c.right_key == right)).first()
        return _pair(row) if row is not None else None

    def save(self, integration: str, found: Sequence[Pair]) -> None:
        """A match's pairs. A person's decision made while the match ran (between its read
        of the pairs and this write) stands: only a decision replaces a decision."""
        now = dt.datetime.now(dt.UTC)
        rows = [dict(integration=integration, left_key=p.left, right_key=p.right,
                     status=p.status, gid=p.gid, weight=p.weight, probability=p.probability,
                     decided_by=p.decided_by, updated_at=now) for p in found]
        with self._db.begin("pairs.save") as conn:
            for chunk in chunks(rows, 1000):
                stmt = insert_or_skip(conn, pairs).values(chunk)
                conn.execute(stmt.on_conflict_do_update(
                    index_elements=[pairs.c.integration, pairs.c.left_key, pairs.c.right_key],
                    set_={name: stmt.excluded[name] for name in
                          ("status", "gid", "weight", "probability", "decided_by",
                           "updated_at")},
                    where=sa.or_(pairs.c.status.not_in(DECIDED), stmt.excluded.status.in_(DECIDED))))

    def touching(self, integration: str, left: Sequence[str], right: Sequence[str]
                 ) -> builtins.list[Pair]:
        """The pairs with one of these left keys or one of these right keys."""
        found: dict[tuple[str, str], Pair] = {}
        with self._db.read("pairs.touching") as conn:
            for column, keys in ((pairs.c.left_key, left), (pairs.c.right_key, right)):
                for chunk in chunks(sorted(set(keys)), 1000):
                    for row in conn.execute(sa.select(pairs).where(
                            pairs.c.integration == integration, column.in_(chunk))):
                        found[(row.left_key, row.right_key)] = _pair(row)
        return builtins.list(found.values())

    def decide(self, integration: str, left: str, right: str, decision: str, by: str) -> bool:
        """A person's decision on a pair (accepted, rejected), kept over every later match;
        False when there is no such pair."""
        with self._db.begin("pairs.decide") as conn:
            return bool(conn.execute(sa.update(pairs).where(
                pairs.c.integration == integration, pairs.c.left_key == left,
                pairs.c.right_key == right).values(
                status=decision, decided_by=by, updated_at=dt.datetime.now(dt.UTC))).rowcount)

    def by_gid(self, integration: str, gids: Sequence[str]) -> dict[str, Pair]:
        """The linked pairs known by these gids."""
        found: dict[str, Pair] = {}
        with self._db.read("pairs.by_gid") as conn:
            for chunk in chunks(sorted(set(gids)), 1000):
                for row in conn.execute(sa.select(pairs).where(
                        pairs.c.integration == integration, pairs.c.gid.in_(chunk),
                        pairs.c.status.in_(LINKED))):
                    found[row.gid] = _pair(row)
        return found

    def counts(self, integration: str) -> dict[str, int]:
        with self._db.read("pairs.counts") as conn:
            return {status: int(n) for status, n in conn.execute(
                sa.select(pairs.c.status, sa.func.count()).where(
                    pairs.c.integration == integration).group_by(pairs.c.status))}

    # -- the audit ledger -----------------------------------------------------------------------

    def crossed(self, integration: str, found: Sequence[Crossed]) -> None:
        now = dt.datetime.now(dt.UTC)
        rows = [dict(integration=integration, gid=c.gid, source=c.source,
                     source_key=c.source_key, target=c.target, target_key=c.target_key,
                     field=c.field, weight=c.weight, at=now, event=c.event) for c in found]
        with self._db.begin("pairs.crossed") as conn:
            for chunk in chunks(rows, 1000):
                conn.execute(sa.insert(audit), chunk)

    def ledger(self, integration: str, *, key: str | None = None, field: str | None = None,
               since: dt.datetime | None = None, limit: int = 100) -> builtins.list[dict[str, Any]]:
        """The ledger, newest first: of one record (its key on either side), one field, since
        a time."""
        stmt = sa.select(audit).where(audit.c.integration == integration)
        if key is not None:
            stmt = stmt.where(sa.or_(audit.c.source_key == key, audit.c.target_key == key))
        if field is not None:
            stmt = stmt.where(audit.c.field == field)
        if since is not None:
            stmt = stmt.where(audit.c.at >= since)
        stmt = stmt.order_by(audit.c.id.desc()).limit(limit)
        with self._db.read("pairs.ledger") as conn:
            return [{name: jsonable(value) for name, value in row._mapping.items()
                     if name != "integration"} for row in conn.execute(stmt)]


def _pair(row: Any) -> Pair:
    return Pair(row.left_key, row.right_key, row.status, row.gid, row.weight, row.probability,
                row.decided_by, row.integration)
