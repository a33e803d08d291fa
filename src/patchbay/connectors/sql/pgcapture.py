"""PostgreSQL change capture: a trigger writes every row change into a capture table.

`patchbay cdc install` (`install`) creates, in the capture schema (system option
`capture_schema`, default "public"), once per database:

    patchbay_capture            seq bigserial, consumer, table_name, operation (INSERT | UPDATE |
                                DELETE), row_key jsonb (the primary key columns), row_data jsonb
                                (the whole new row; null for a delete), captured_at
    patchbay_capture_consumers  which consumer (a broadcast integration) reads which table
    patchbay_capture_row()      the trigger function

and, per captured table, an AFTER INSERT OR UPDATE OR DELETE row trigger that writes one
capture row per consumer registered for the table, so that every consumer gets every change
whatever the others have read. An update that changes the primary key is captured as a delete
of the old key followed by an insert of the new one: to a destination keyed by it, they are
two records. An update that changes nothing is not captured. TRUNCATE is not captured, and
changes made before the install are not either (a migration brings a table's current rows).

Reading consumes: a reader never keeps a position in the sequence, because a transaction that
commits late can hold a lower seq than rows already read, and a "seq > last" cursor would skip
it for ever. Instead a row is deleted once the engine has durably recorded its change. The
cursor lists the seqs of the rows it was returned with (`recorded`); the engine stores that
cursor in the same transaction as the deliveries made of those rows; the next `changes` call
receives the stored cursor, deletes the rows it lists, then reads the oldest rows left:

- crash after a read, before the engine stored the cursor: the stored cursor does not list the
  rows, they are still in the table and are read again; nothing was recorded, so no duplicate.
- crash after the engine stored the cursor: the next call deletes them before reading; they
  were recorded once, and are not read again.
- a late commit: its row is still in the table when it becomes visible, and the next read
  finds it, whatever seqs were consumed meanwhile.

Per record, order holds: two writes of one row are serialised by the row's lock, so the later
one takes its seq after the earlier one committed; a read that sees the later capture row sees
the earlier one too, and returns it first. (Reads of one consumer must not run concurrently:
two would read, and deliver, the same rows.)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from psycopg import sql
from sqlalchemy.engine import Connection

from patchbay.connectors.sql.capture import (
    CAPTURE_TABLE,
    CONSUMERS_TABLE,
    KINDS,
    CaptureState,
    Installed,
    Removed,
    no_primary_key,
    not_installed,
    reading,
)
from patchbay.errors import SpecError
from patchbay.model import Change, ChangeKind
from patchbay.spec import SystemSpec

__all__ = ["CaptureState", "Installed", "Removed", "changes", "install", "relation_name",
           "remove", "schema_of", "status"]

DEFAULT_SCHEMA = "public"
FUNCTION = "patchbay_capture_row"
TRIGGER = "patchbay_capture"

# Installs and removes take this transaction-level lock: concurrent ones would race on
# CREATE ... IF NOT EXISTS, and a remove dropping a table's trigger must not miss a consumer
# another install is registering. ("patchcdc" in ASCII.)
_LOCK = 0x7061746368636463

_SETUP = """
CREATE TABLE IF NOT EXISTS {capture} (
    seq bigserial PRIMARY KEY,
    consumer text NOT NULL,
    table_name text NOT NULL,
    operation text NOT NULL CHECK (operation IN ('INSERT', 'UPDATE', 'DELETE')),
    row_key jsonb NOT NULL,
    row_data jsonb,
    captured_at timestamptz NOT NULL DEFAULT clock_timestamp());
CREATE INDEX IF NOT EXISTS {capture_index} ON {capture} (consumer, table_name, seq);
CREATE TABLE IF NOT EXISTS {consumers} (
    table_name text NOT NULL,
    consumer text NOT NULL,
    registered_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (table_name, consumer));
CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql
-- As its owner: the roles writing to a captured table need no rights on the capture tables.
-- Every name it uses is qualified or in pg_catalog, and the search path cannot redirect one.
SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $patchbay$
DECLARE
    -- The name as quote_ident gives it: unambiguous, and what to_regclass reads back.
    relation text := quote_ident(TG_TABLE_SCHEMA) || '.' || quote_ident(TG_TABLE_NAME);
    old_row jsonb;
    new_row jsonb;
    old_key jsonb;
    new_key jsonb;
BEGIN
    -- The trigger's arguments name the primary key columns.
    IF TG_OP <> 'INSERT' THEN
        old_row := to_jsonb(OLD);
        SELECT jsonb_object_agg(k, old_row -> k) INTO old_key FROM unnest(TG_ARGV) AS k;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        new_row := to_jsonb(NEW);
        SELECT jsonb_object_agg(k, new_row -> k) INTO new_key FROM unnest(TG_ARGV) AS k;
    END IF;
    IF TG_OP = 'UPDATE' AND new_row = old_row THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND old_key IS DISTINCT FROM new_key) THEN
        INSERT INTO {capture} (consumer, table_name, operation, row_key)
        SELECT consumer, relation, 'DELETE', old_key FROM {consumers} WHERE table_name = relation;
    END IF;
    IF TG_OP <> 'DELETE' THEN
        INSERT INTO {capture} (consumer, table_name, operation, row_key, row_data)
        SELECT consumer, relation,
               CASE WHEN old_key IS DISTINCT FROM new_key THEN 'INSERT' ELSE TG_OP END,
               new_key, new_row
        FROM {consumers} WHERE table_name = relation;
    END IF;
    RETURN NULL;
END
$patchbay$;
"""


@dataclass(frozen=True, slots=True)
class _Relation:
    schema: str
    name: str
    qualified: str
    kind: str

    @property
    def identifier(self) -> sql.Identifier:
        return sql.Identifier(self.schema, self.name)


def schema_of(system: SystemSpec) -> str:
    """The capture schema of a system (its option `capture_schema`)."""
    return str(system.options.get("capture_schema") or DEFAULT_SCHEMA)


def install(conn: Connection, tables: Sequence[str], consumer: str,
            schema: str = DEFAULT_SCHEMA) -> list[Installed]:
    """Capture the changes of `tables` for `consumer`; what was done per table.

    Creates the capture tables and function if missing, a trigger per table if missing, and
    registers the consumer. Installing again changes nothing. A table without a primary key
    is refused. Runs in the caller's transaction: commit it to install.
    """
    if not consumer:
        raise SpecError("change capture needs a consumer name")
    _lock(conn)
    if _missing_schema(conn, schema):
        _execute(conn, sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    names = _names(schema)
    _execute(conn, sql.SQL(_SETUP).format(
        capture_index=sql.Identifier(f"{CAPTURE_TABLE}_consumer_seq"), **names))
    done = []
    for table in tables:
        relation = _existing(conn, table)
        key = _primary_key(conn, relation)
        if not key:
            raise no_primary_key(table)
        trigger = _install_trigger(conn, relation, key, names["function"])
        added = conn.exec_driver_sql(
            _text(conn, sql.SQL("INSERT INTO {consumers} (table_name, consumer) VALUES "
                                "(%(table)s, %(consumer)s) ON CONFLICT DO NOTHING").format(**names)),
            {"table": relation.qualified, "consumer": consumer}).rowcount
        done.append(Installed(relation.qualified, key, trigger, bool(added)))
    return done


def remove(conn: Connection, tables: Sequence[str], consumer: str,
           schema: str = DEFAULT_SCHEMA) -> list[Removed]:
    """Stop capturing `tables` for `consumer`: unregister it, drop the changes it has not
    consumed, and drop a table's trigger once no consumer is left. A table that no longer
    exists is unregistered all the same. Runs in the caller's transaction."""
    _lock(conn)
    names = _names(schema)
    installed = _installed(conn, schema)
    done = []
    for table in tables:
        relation = _relation(conn, table)
        qualified = relation.qualified if relation else _qualified_guess(conn, table)
        if not installed:
            done.append(Removed(qualified, False, 0, 0, False))
            continue
        params = {"table": qualified, "consumer": consumer}
        unregistered = conn.exec_driver_sql(_text(conn, sql.SQL(
            "DELETE FROM {consumers} WHERE table_name = %(table)s AND consumer = %(consumer)s"
        ).format(**names)), params).rowcount
        dropped = conn.exec_driver_sql(_text(conn, sql.SQL(
            "DELETE FROM {capture} WHERE consumer = %(consumer)s AND table_name = %(table)s"
        ).format(**names)), params).rowcount
        left = conn.exec_driver_sql(_text(conn, sql.SQL(
            "SELECT count(*) FROM {consumers} WHERE table_name = %(table)s").format(**names)),
            params).scalar_one()
        trigger_dropped = False
        if not left and relation is not None and _trigger_args(conn, relation) is not None:
            _execute(conn, sql.SQL("DROP TRIGGER {} ON {}").format(sql.Identifier(TRIGGER),
                                                                     relation.identifier))
            trigger_dropped = True
        done.append(Removed(qualified, bool(unregistered), dropped, int(left), trigger_dropped))
    return done


def status(conn: Connection, schema: str = DEFAULT_SCHEMA) -> list[CaptureState]:
    """Every registered consumer of every table: trigger in place, changes not yet consumed."""
    if not _installed(conn, schema):
        return []
    names = _names(schema)
    rows = conn.exec_driver_sql(_text(conn, sql.SQL(
        "SELECT r.consumer, r.table_name, "
        "       EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = to_regclass(r.table_name) "
        "               AND t.tgname = %(trigger)s), "
        "       count(c.seq), min(c.captured_at) "
        "FROM {consumers} r LEFT JOIN {capture} c "
        "  ON c.consumer = r.consumer AND c.table_name = r.table_name "
        "GROUP BY r.consumer, r.table_name ORDER BY r.consumer, r.table_name").format(**names)),
        {"trigger": TRIGGER}).all()
    return [CaptureState(consumer, table, bool(installed), int(pending), oldest)
            for consumer, table, installed, pending, oldest in rows]


def relation_name(conn: Connection, table: str) -> str | None:
    """The name capture rows give `table` (schema-qualified), or None if there is no such table."""
    relation = _relation(conn, table)
    return relation.qualified if relation else None


def changes(conn: Connection, system: str, object: str, table: sa.Table,
            cursor: Mapping[str, Any], fields: Sequence[str] | None = None, limit: int = 2000,
            schema: str = DEFAULT_SCHEMA) -> tuple[list[Change], dict[str, Any]]:
    """The oldest captured changes of `table` for the cursor's consumer, and the cursor after
    them; see the module's docstring for why it is safe. The caller commits `conn`.

    The cursor, JSON as the engine stores it:

        {"cdc": true, "consumer": "<integration>", "key": "id", "recorded": [41, 42]}

    `key` (default: the single-column primary key) must be a primary key column: a deleted
    row is captured by its primary key alone. `recorded` lists the seqs of the changes the
    cursor was returned with; they are deleted before reading, so a cursor must be handed
    back only once the changes returned with it are durably recorded. The returned cursor is
    the given one with `key` and `recorded` set.

    A created or updated record holds the row (or `fields` and the key), with the values
    typed as the table's columns, as a read gives them; a deleted one holds the primary key
    columns. `at` is the capture's time and `version` its seq.
    """
    checked = reading(system, object, table, cursor, fields, limit)
    consumer, recorded, key = checked.consumer, checked.recorded, checked.key
    primary, shown = checked.primary, checked.shown
    relation = _existing(conn, object)
    if not _registered(conn, schema, relation, consumer):
        raise not_installed(checked.where, consumer)
    names = _names(schema)
    params = {"consumer": consumer, "table": relation.qualified}
    if recorded:
        conn.exec_driver_sql(_text(conn, sql.SQL(
            "DELETE FROM {capture} WHERE consumer = %(consumer)s AND table_name = %(table)s "
            "AND seq = ANY(%(seqs)s)").format(**names)), {**params, "seqs": recorded})
    # jsonb_populate_record gives each value its column's type back (jsonb holds timestamps
    # and decimals as text and numbers), so records are typed as a read of the table types them.
    query = sql.SQL(
        "SELECT c.seq, c.operation, c.captured_at, {keys}, {values} FROM {capture} AS c "
        "CROSS JOIN LATERAL jsonb_populate_record(NULL::{table}, c.row_key) AS k "
        "CROSS JOIN LATERAL jsonb_populate_record(NULL::{table}, c.row_data) AS r "
        "WHERE c.consumer = %(consumer)s AND c.table_name = %(table)s ORDER BY c.seq "
        "LIMIT %(limit)s").format(
            keys=sql.SQL(", ").join(sql.Identifier("k", n) for n in primary),
            values=sql.SQL(", ").join(sql.Identifier("r", n) for n in shown),
            table=relation.identifier, **names)
    rows = conn.exec_driver_sql(_text(conn, query), {**params, "limit": limit}).all()

    found = []
    for row in rows:
        seq, operation, captured_at = row[0], row[1], row[2]
        keys = dict(zip(primary, row[3:3 + len(primary)], strict=True))
        kind = KINDS[operation]
        record = keys if kind is ChangeKind.DELETED else \
            dict(zip(shown, row[3 + len(primary):], strict=True))
        found.append(Change(system, object, record[key], kind, record, at=captured_at,
                            version=str(seq)))
    return found, {**cursor, "key": key, "recorded": [int(row[0]) for row in rows]}


# -- helpers --------------------------------------------------------------------------------------


def _names(schema: str) -> dict[str, sql.Composable]:
    return {"capture": sql.Identifier(schema, CAPTURE_TABLE),
            "consumers": sql.Identifier(schema, CONSUMERS_TABLE),
            "function": sql.Identifier(schema, FUNCTION)}


def _text(conn: Connection, statement: sql.Composable) -> str:
    return statement.as_string(conn.connection.driver_connection)


def _execute(conn: Connection, statement: sql.Composable) -> None:
    """A statement without parameters (DDL cannot take any; its names are quoted by psycopg)."""
    conn.exec_driver_sql(_text(conn, statement))


def _lock(conn: Connection) -> None:
    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(%(lock)s)", {"lock": _LOCK})


def _missing_schema(conn: Connection, schema: str) -> bool:
    # Checked first: CREATE SCHEMA IF NOT EXISTS needs the CREATE privilege on the database
    # even when the schema exists.
    return conn.exec_driver_sql("SELECT to_regnamespace(%(schema)s) IS NULL",
                                {"schema": _text(conn, sql.Identifier(schema))}).scalar_one() is True


def _installed(conn: Connection, schema: str) -> bool:
    return conn.exec_driver_sql(
        "SELECT to_regclass(%(capture)s) IS NOT NULL AND to_regclass(%(consumers)s) IS NOT NULL",
        {"capture": _text(conn, sql.Identifier(schema, CAPTURE_TABLE)),
         "consumers": _text(conn, sql.Identifier(schema, CONSUMERS_TABLE))}).scalar_one() is True


def _registered(conn: Connection, schema: str, relation: _Relation, consumer: str) -> bool:
    if not _installed(conn, schema):
        return False
    return conn.exec_driver_sql(_text(conn, sql.SQL(
        "SELECT EXISTS (SELECT 1 FROM {consumers} WHERE table_name = %(table)s "
        "AND consumer = %(consumer)s)").format(**_names(schema))),
        {"table": relation.qualified, "consumer": consumer}).scalar_one() is True


def _identifier(table: str) -> sql.Identifier:
    """`table` as the connector reads it: "schema.name" or "name" (found by the search path)."""
    schema, _, name = table.rpartition(".")
    return sql.Identifier(schema, name) if schema else sql.Identifier(name)


def _relation(conn: Connection, table: str) -> _Relation | None:
    row = conn.exec_driver_sql(
        "SELECT n.nspname, c.relname, quote_ident(n.nspname) || '.' || quote_ident(c.relname), "
        "c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE c.oid = to_regclass(%(table)s)",
        {"table": _text(conn, _identifier(table))}).first()
    return None if row is None else _Relation(*row)


def _existing(conn: Connection, table: str) -> _Relation:
    relation = _relation(conn, table)
    if relation is None:
        raise SpecError(f"there is no table '{table}'")
    if relation.kind != "r":
        # A partitioned table's rows live in its partitions, whose names the trigger would see.
        raise SpecError(f"'{table}' is not a plain table (a view or a partitioned table): "
                        "change capture needs one")
    return relation


def _qualified_guess(conn: Connection, table: str) -> str:
    """The name capture rows gave a table that is gone: in the current schema if unqualified."""
    schema, _, name = table.rpartition(".")
    qualified: str = conn.exec_driver_sql(
        "SELECT quote_ident(coalesce(%(schema)s, current_schema())) || '.' || quote_ident(%(name)s)",
        {"schema": schema or None, "name": name}).scalar_one()
    return qualified


def _primary_key(conn: Connection, relation: _Relation) -> tuple[str, ...]:
    rows = conn.exec_driver_sql(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a "
        "  ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = to_regclass(%(table)s) AND i.indisprimary "
        "ORDER BY array_position(i.indkey, a.attnum)", {"table": relation.qualified}).all()
    return tuple(str(name) for (name,) in rows)


def _trigger_args(conn: Connection, relation: _Relation) -> tuple[str, ...] | None:
    """The arguments of the table's capture trigger (its key columns), or None without one."""
    found = conn.exec_driver_sql(
        "SELECT tgargs FROM pg_trigger WHERE tgrelid = to_regclass(%(table)s) AND tgname = %(name)s",
        {"table": relation.qualified, "name": TRIGGER}).first()
    if found is None:
        return None
    # tgargs holds each argument followed by a NUL byte.
    return tuple(part.decode() for part in bytes(found[0]).split(b"\x00")[:-1])


def _install_trigger(conn: Connection, relation: _Relation, key: tuple[str, ...],
                     function: sql.Composable) -> str:
    existing = _trigger_args(conn, relation)
    if existing == key:
        return "kept"
    if existing is not None:
        _execute(conn, sql.SQL("DROP TRIGGER {} ON {}").format(sql.Identifier(TRIGGER),
                                                                 relation.identifier))
    _execute(conn, sql.SQL(
        "CREATE TRIGGER {trigger} AFTER INSERT OR UPDATE OR DELETE ON {table} FOR EACH ROW "
        "EXECUTE FUNCTION {function}({key})").format(
            trigger=sql.Identifier(TRIGGER), table=relation.identifier, function=function,
            key=sql.SQL(", ").join(sql.Literal(c) for c in key)))
    return "created" if existing is None else "replaced"
