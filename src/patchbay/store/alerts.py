"""The notification conditions that hold and were told (`patchbay_alerts`).

    raise_   record that a condition holds; True only for the call that recorded it, so of
             several processes noticing it at once exactly one tells it
    clear    forget the conditions that no longer hold (they are told again next time)
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa

from patchbay.store.schema import alerts
from patchbay.store.unit import Repository, clock, insert_or_skip


class Alerts(Repository):
    def raise_(self, integration: str, condition: str) -> bool:
        """Record that `condition` holds; whether it was not recorded already."""
        with self._db.begin("alerts.raise") as conn:
            stmt = (insert_or_skip(conn, alerts)
                    .values(integration=integration, condition=condition, raised_at=clock(conn))
                    .on_conflict_do_nothing().returning(alerts.c.condition))
            return conn.execute(stmt).first() is not None

    def clear(self, integration: str, conditions: Iterable[str]) -> None:
        """These conditions no longer hold."""
        names = sorted(set(conditions))
        if not names:
            return
        with self._db.begin("alerts.clear") as conn:
            conn.execute(sa.delete(alerts).where(alerts.c.integration == integration,
                                                 alerts.c.condition.in_(names)))

    def raised(self, integration: str) -> set[str]:
        """The conditions recorded as holding for `integration`."""
        with self._db.read("alerts.raised") as conn:
            return set(conn.execute(sa.select(alerts.c.condition).where(
                alerts.c.integration == integration)).scalars())
