"""The engine state's tables, and the versioned migrations that create and evolve them.

A new version appends a function to MIGRATIONS; a store opened by a newer patchbay
applies the missing ones in order, each in its own transaction.
"""

from __future__ import annotations

from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from patchbay.errors import EngineStateError

metadata = sa.MetaData()

meta = sa.Table(
    "patchbay_meta", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
)

runs = sa.Table(
    "patchbay_runs", metadata,
    sa.Column("id", sa.String(40), primary_key=True),
    sa.Column("integration", sa.String(255), nullable=False, index=True),
    sa.Column("pattern", sa.String(32), nullable=False),
    sa.Column("spec_path", sa.Text),
    sa.Column("params", sa.JSON, nullable=False),
    sa.Column("status", sa.String(32), nullable=False, index=True),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True)),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True)),
    sa.Column("owner", sa.String(255)),
    sa.Column("batches", sa.Integer, nullable=False, default=0),
    sa.Column("counters", sa.JSON, nullable=False),
    sa.Column("checkpoint", sa.JSON),
    sa.Column("report", sa.JSON),
    sa.Column("error", sa.Text),
    sa.Column("fingerprint", sa.String(64)),
)

outcomes = sa.Table(
    "patchbay_outcomes", metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(40), sa.ForeignKey("patchbay_runs.id", ondelete="CASCADE"),
              nullable=False),
    sa.Column("batch", sa.Integer, nullable=False),
    sa.Column("record_key", sa.Text),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("code", sa.String(64)),
    sa.Column("reason", sa.Text),
    sa.Column("source", sa.JSON),
    sa.Column("key_range", sa.Integer),
    sa.Index("ix_patchbay_outcomes_run", "run_id", "status"),
)

cursors = sa.Table(
    "patchbay_cursors", metadata,
    sa.Column("integration", sa.String(255), primary_key=True),
    sa.Column("system", sa.String(255), primary_key=True),
    sa.Column("object", sa.String(255), primary_key=True),
    sa.Column("value", sa.JSON),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)


outbox = sa.Table(
    "patchbay_outbox", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("integration", sa.String(255), nullable=False),
    sa.Column("destination", sa.String(255), nullable=False),
    sa.Column("record_key", sa.Text, nullable=False),
    sa.Column("version", sa.Text),
    sa.Column("operation", sa.String(16), nullable=False),
    sa.Column("payload", sa.JSON),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, default=0),
    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("lease_owner", sa.String(255)),
    sa.Column("lease_expires_at", sa.DateTime(timezone=True)),
    sa.Column("last_error", sa.Text),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("delivered_at", sa.DateTime(timezone=True)),
    # leasing: the due pending deliveries of one destination
    sa.Index("ix_patchbay_outbox_due", "integration", "destination", "status", "next_attempt_at"),
    # per-key order: is there an earlier delivery of this record still to go?
    sa.Index("ix_patchbay_outbox_key", "integration", "destination", "record_key", "id"),
)
"""The broadcast outbox: one delivery per destination per change (see store/outbox.py)."""

aggregates = sa.Table(
    "patchbay_aggregates", metadata,
    sa.Column("integration", sa.String(255), primary_key=True),
    sa.Column("group_key", sa.Text, primary_key=True),
    sa.Column("state", sa.JSON, nullable=False),
    sa.Column("revision", sa.BigInteger, nullable=False),
    sa.Column("dirty", sa.Boolean, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # flushing: the groups of an integration still to write
    sa.Index("ix_patchbay_aggregates_dirty", "integration", "dirty"),
)
"""A stream aggregation's groups: the JSON of the group values, the accumulators, and
whether the destinations lack the current values (see store/aggregates.py)."""

seen_messages = sa.Table(
    "patchbay_seen_messages", metadata,
    sa.Column("integration", sa.String(255), primary_key=True),
    sa.Column("source", sa.Text, primary_key=True),
    sa.Column("message_id", sa.Text, primary_key=True),
    sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_patchbay_seen_messages_age", "integration", "seen_at"),
)
"""The messages a stream aggregation has counted, so that a redelivery is not counted again."""


xref = sa.Table(
    "patchbay_xref", metadata,
    sa.Column("integration", sa.String(255), primary_key=True),
    sa.Column("object", sa.String(255), primary_key=True),
    sa.Column("gid", sa.String(64), primary_key=True),
    sa.Column("participant", sa.String(255), primary_key=True),
    sa.Column("record_key", sa.Text),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("known", sa.JSON, nullable=False),
    sa.Column("sent", sa.JSON, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    # a participant's change: which record is it?
    sa.Index("ix_patchbay_xref_key", "integration", "object", "participant", "record_key"),
)
"""A sync's identity: one row per real-world record (gid) per participant holding it, with
the participant's key, the shared values it is known to hold and those sent to it."""

shadow = sa.Table(
    "patchbay_shadow", metadata,
    sa.Column("integration", sa.String(255), primary_key=True),
    sa.Column("object", sa.String(255), primary_key=True),
    sa.Column("gid", sa.String(64), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("shared", sa.JSON, nullable=False),
    sa.Column("origins", sa.JSON, nullable=False),
    sa.Column("held", sa.JSON, nullable=False),
    sa.Column("match_key", sa.Text),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_patchbay_shadow_match", "integration", "object", "match_key"),
)
"""A sync's shadow: the last synced shared values of every record, who set each field, the
fields held for a person, and the match key a first sync finds it by."""

conflicts = sa.Table(
    "patchbay_conflicts", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("integration", sa.String(255), nullable=False),
    sa.Column("object", sa.String(255), nullable=False),
    sa.Column("gid", sa.String(64), nullable=False),
    sa.Column("field", sa.String(255)),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("policy", sa.String(16), nullable=False),
    sa.Column("candidates", sa.JSON, nullable=False),
    sa.Column("winner", sa.String(255)),
    sa.Column("chosen", sa.JSON),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("resolved_at", sa.DateTime(timezone=True)),
    sa.Column("resolved_by", sa.String(255)),
    sa.Index("ix_patchbay_conflicts_status", "integration", "status"),
)
"""A sync's conflicts: every value that lost (or waits for a person), with the values each
participant had, the policy, the winner and how it was resolved."""

waiting = sa.Table(
    "patchbay_waiting", metadata,
    sa.Column("integration", sa.String(255), primary_key=True),
    sa.Column("object", sa.String(255), primary_key=True),
    sa.Column("gid", sa.String(64), primary_key=True),
    sa.Column("participant", sa.String(255), primary_key=True),
    sa.Column("parent_object", sa.String(255), nullable=False),
    sa.Column("parent_gid", sa.String(64), nullable=False),
    sa.Column("since", sa.DateTime(timezone=True), nullable=False),
)
"""A sync's records waiting for a parent to reach a participant before they can be written."""


pairs = sa.Table(
    "patchbay_pairs", metadata,
    sa.Column("integration", sa.String(255), primary_key=True),
    sa.Column("left_key", sa.Text, primary_key=True),
    sa.Column("right_key", sa.Text, primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("gid", sa.String(64)),
    sa.Column("weight", sa.Float),
    sa.Column("probability", sa.Float),
    sa.Column("decided_by", sa.String(255)),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_patchbay_pairs_status", "integration", "status"),
)
"""A correlation's pairs: linked (with the gid the xref knows them by), waiting for review,
accepted or rejected by a person (kept over any later match), or dropped. Keys only: no
value of either record."""

audit = sa.Table(
    "patchbay_audit", metadata,
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True,
              autoincrement=True),
    sa.Column("integration", sa.String(255), nullable=False),
    sa.Column("gid", sa.String(64), nullable=False),
    sa.Column("source", sa.String(255), nullable=False),
    sa.Column("source_key", sa.Text),
    sa.Column("target", sa.String(255), nullable=False),
    sa.Column("target_key", sa.Text),
    sa.Column("field", sa.String(255), nullable=False),
    sa.Column("weight", sa.Float),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("event", sa.String(16), nullable=False, server_default="crossed"),
    sa.Index("ix_patchbay_audit_pair", "integration", "gid"),
    sa.Index("ix_patchbay_audit_at", "integration", "at"),
)
"""A correlation's audit ledger: every field that crossed, from which record to which,
when, under which match weight (the value itself stays in the two systems); and when a
pair was linked or its link dropped (`event`: crossed, linked, dropped; field empty)."""

alerts = sa.Table(
    "patchbay_alerts", metadata,
    sa.Column("integration", sa.String(255), primary_key=True),
    sa.Column("condition", sa.String(255), primary_key=True),
    sa.Column("raised_at", sa.DateTime(timezone=True), nullable=False),
)
"""The notification conditions that hold now and were told: a row while the condition holds,
so it is told once (by one process of many) until it clears and the row goes."""


_NULLABLE_JSON = sa.JSON(none_as_null=True)
"""None as SQL NULL, not JSON's null: `position IS NULL` says a range has no checkpoint."""

key_ranges = sa.Table(
    "patchbay_key_ranges", metadata,
    sa.Column("run_id", sa.String(40), sa.ForeignKey("patchbay_runs.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("number", sa.Integer, primary_key=True),
    sa.Column("low", _NULLABLE_JSON),
    sa.Column("high", _NULLABLE_JSON),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("holder", sa.String(255)),
    sa.Column("lease_expires_at", sa.DateTime(timezone=True)),
    sa.Column("token", sa.BigInteger, nullable=False),
    sa.Column("position", _NULLABLE_JSON),
    sa.Column("batches", sa.Integer, nullable=False),
    sa.Column("counters", sa.JSON, nullable=False),
    sa.Column("comparison", _NULLABLE_JSON),
    sa.Column("high_water", _NULLABLE_JSON),
    sa.Column("takeovers", sa.Integer, nullable=False),
    sa.Column("resumed", sa.Integer, nullable=False),
    sa.Column("error", sa.Text),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Index("ix_patchbay_key_ranges_status", "status", "run_id"),
)
"""A partitioned run's key ranges (see store/ranges.py): each with its lease (holder, expiry,
fencing token) and its checkpoint (position within the range, counters, comparison)."""


leases = sa.Table(
    "patchbay_leases", metadata,
    sa.Column("name", sa.String(255), primary_key=True),
    sa.Column("holder", sa.String(255)),
    sa.Column("token", sa.BigInteger, nullable=False),
    sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("renewed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
)
"""Work one process at a time does (noticing an integration's changes): who holds it, until
when, and the fencing token, raised at every change of holder (see store/leases.py)."""

processes = sa.Table(
    "patchbay_processes", metadata,
    sa.Column("id", sa.String(255), primary_key=True),
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("version", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("ended_at", sa.DateTime(timezone=True)),
)
"""The registry of `serve` and `worker` processes sharing the state (see store/processes.py)."""

ticks = sa.Table(
    "patchbay_ticks", metadata,
    sa.Column("integration", sa.String(255), primary_key=True),
    sa.Column("tick", sa.String(64), primary_key=True),
    sa.Column("process", sa.String(255), nullable=False),
    sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=False),
)
"""Scheduled runs and polls claimed: one row per integration and due time, so that each
fires in one process only (see store/ticks.py)."""

secrets = sa.Table(
    "patchbay_secrets", metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(255), nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)
"""Keys drawn once for the state (see store/secrets.py), in a table of their own: never in
a cursor, a report or an answer of the API, and a grant or a dump can leave them out."""


def _v1(conn: Connection) -> None:
    for table in (runs, outcomes, cursors):
        table.create(conn, checkfirst=True)


def _v2(conn: Connection) -> None:
    outbox.create(conn, checkfirst=True)


def _v3(conn: Connection) -> None:
    for table in (aggregates, seen_messages):
        table.create(conn, checkfirst=True)


def _v4(conn: Connection) -> None:
    # A run remembers the definition it ran (see migration.fingerprint), so that only a run
    # of the same definition is resumed. A store created by this version has the column
    # already (runs.create in _v1); an older one gets it added, empty for its old runs.
    if "fingerprint" not in {c["name"] for c in sa.inspect(conn).get_columns("patchbay_runs")}:
        conn.execute(sa.text("ALTER TABLE patchbay_runs ADD COLUMN fingerprint VARCHAR(64)"))


def _v5(conn: Connection) -> None:
    for table in (xref, shadow, conflicts, waiting):
        table.create(conn, checkfirst=True)


def _v6(conn: Connection) -> None:
    for table in (pairs, audit):
        table.create(conn, checkfirst=True)


WAITING = sa.text("status IN ('pending', 'dead')")
"""The outbox rows still to deliver or dead: what metrics and notifications count."""
outbox_waiting = sa.Index("ix_patchbay_outbox_waiting", outbox.c.integration,
                          outbox.c.destination, outbox.c.status, outbox.c.created_at,
                          postgresql_where=WAITING, sqlite_where=WAITING)
"""The few rows waiting among a week of delivered ones, for a scrape every few seconds."""


def _v7(conn: Connection) -> None:
    alerts.create(conn, checkfirst=True)
    outbox_waiting.create(conn, checkfirst=True)


def _v8(conn: Connection) -> None:
    # The ledger also records links made and dropped (event); entries before are crossings.
    if "event" not in {c["name"] for c in sa.inspect(conn).get_columns("patchbay_audit")}:
        conn.execute(sa.text("ALTER TABLE patchbay_audit ADD COLUMN event VARCHAR(16) "
                             "NOT NULL DEFAULT 'crossed'"))


def _v9(conn: Connection) -> None:
    # A run split into key ranges (patchbay run --workers): the ranges, and which range each
    # set-aside record came from (so a range started again forgets only its own).
    key_ranges.create(conn, checkfirst=True)
    if "key_range" not in {c["name"] for c in sa.inspect(conn).get_columns("patchbay_outcomes")}:
        conn.execute(sa.text("ALTER TABLE patchbay_outcomes ADD COLUMN key_range INTEGER"))


def _v10(conn: Connection) -> None:
    for table in (leases, processes, ticks):
        table.create(conn, checkfirst=True)


def _v11(conn: Connection) -> None:
    secrets.create(conn, checkfirst=True)


MIGRATIONS: list[Callable[[Connection], None]] = [_v1, _v2, _v3, _v4, _v5, _v6, _v7, _v8, _v9,
                                                  _v10, _v11]
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: Connection) -> int:
    """Bring the schema to SCHEMA_VERSION; return the version found before."""
    meta.create(conn, checkfirst=True)
    found = conn.execute(sa.select(meta.c.value).where(meta.c.name == "schema_version")).scalar()
    version = int(found) if found is not None else 0
    if version > SCHEMA_VERSION:
        raise EngineStateError(f"the engine state has schema version {version}, newer than "
                               f"this patchbay knows ({SCHEMA_VERSION}); upgrade patchbay",
                               operation="migrate")
    for number in range(version, SCHEMA_VERSION):
        MIGRATIONS[number](conn)
    if version == 0:
        conn.execute(sa.insert(meta).values(name="schema_version", value=str(SCHEMA_VERSION)))
    elif version < SCHEMA_VERSION:
        conn.execute(sa.update(meta).where(meta.c.name == "schema_version")
                     .values(value=str(SCHEMA_VERSION)))
    return version
