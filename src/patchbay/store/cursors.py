"""Cursors: the watermark each integration reached in one system's object (`patchbay_cursors`)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from patchbay.model import jsonable
from patchbay.store.schema import cursors
from patchbay.store.unit import Repository


class Cursors(Repository):
    def get(self, integration: str, system: str, object: str) -> Any:
        """The watermark an integration reached in one system's object, or None."""
        stmt = sa.select(cursors.c.value).where(cursors.c.integration == integration,
                                                cursors.c.system == system,
                                                cursors.c.object == object)
        with self._db.read("cursors.get") as conn:
            return conn.execute(stmt).scalar()

    def objects(self, integration: str, system: str) -> list[str]:
        """The objects of one system an integration keeps a cursor for, in order."""
        stmt = (sa.select(cursors.c.object).where(cursors.c.integration == integration,
                                                  cursors.c.system == system)
                .order_by(cursors.c.object))
        with self._db.read("cursors.objects") as conn:
            return list(conn.execute(stmt).scalars())

    def set(self, integration: str, system: str, object: str, value: Any) -> None:
        """Move the watermark (stored as JSON: dates and decimals become text)."""
        values = dict(integration=integration, system=system, object=object,
                      value=jsonable(value), updated_at=dt.datetime.now(dt.UTC))
        with self._db.begin("cursors.set") as conn:
            updated = conn.execute(sa.update(cursors).where(
                cursors.c.integration == integration, cursors.c.system == system,
                cursors.c.object == object).values(value=values["value"],
                                                   updated_at=values["updated_at"]))
            if updated.rowcount == 0:
                conn.execute(sa.insert(cursors).values(**values))
