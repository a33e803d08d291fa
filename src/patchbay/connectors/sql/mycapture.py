"""MySQL and MariaDB change capture: triggers write every row change into a capture table.

The same tables, cursor and changes as PostgreSQL's (see pgcapture's docstring for the
protocol and why consuming by delete is safe), built from what MySQL offers. `install`
creates, in the capture database (system option `capture_schema`, default the URL's
database), once:

    patchbay_capture            seq bigint auto_increment, consumer, table_name, operation
                                (INSERT | UPDATE | DELETE), row_key JSON (the primary key
                                columns), row_data JSON (the whole new row; null for a delete),
                                captured_at
    patchbay_capture_consumers  which consumer reads which table

and, per captured table, three triggers (AFTER INSERT, UPDATE, DELETE), each writing one
capture row per consumer registered for the table (an INSERT ... SELECT from the consumers
table). A trigger body cannot read a row's columns by name at run time, so each one names the
table's columns as they were when it was installed: install again after adding a column, and
the triggers are generated anew. As on PostgreSQL, an update that changes nothing is not
captured, and one that changes the primary key is a delete of the old key then an insert of
the new one.

JSON has no dates, decimals or bytes: the triggers write binary columns in base64 and
TIMESTAMP columns as seconds since the epoch (the writer's session time zone must not shape
them), and `changes` gives each value back the type a read of the table gives it (PyMySQL's).

MySQL commits DDL as it goes, so an install is not one transaction: it checks every table
before changing anything, and installing again finishes one that failed half-way.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, make_url

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
from patchbay.urls import sqlalchemy_url

__all__ = ["CaptureState", "Installed", "Removed", "changes", "install", "relation_name",
           "remove", "schema_of", "status"]

TRIGGER_PREFIX = "patchbay_capture_"
_OPERATIONS = ("INSERT", "UPDATE", "DELETE")

# Installs and removes hold this named lock: concurrent ones would race on CREATE ... IF NOT
# EXISTS, and a remove dropping a table's triggers must not miss a consumer being registered.
_LOCK = "patchbay_capture"
_LOCK_SECONDS = 60

_BINARY = {"binary", "varbinary", "tinyblob", "blob", "mediumblob", "longblob"}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)

_SETUP = (
    """CREATE TABLE IF NOT EXISTS {capture} (
    seq bigint NOT NULL AUTO_INCREMENT PRIMARY KEY,
    consumer varchar(255) NOT NULL,
    table_name varchar(255) NOT NULL,
    operation enum('INSERT', 'UPDATE', 'DELETE') NOT NULL,
    row_key json NOT NULL,
    row_data json,
    captured_at timestamp(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    KEY patchbay_capture_consumer_seq (consumer, table_name, seq)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""",
    """CREATE TABLE IF NOT EXISTS {consumers} (
    table_name varchar(255) NOT NULL,
    consumer varchar(255) NOT NULL,
    registered_at timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP,
    PRIMARY KEY (table_name, consumer)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin""")


@dataclass(frozen=True, slots=True)
class _Relation:
    schema: str
    name: str
    plain: bool = True
    """A table, not a view."""

    @property
    def qualified(self) -> str:
        """The name capture rows give the table: `database.table`, each part quoted if needed."""
        return f"{_shown(self.schema)}.{_shown(self.name)}"

    @property
    def identifier(self) -> str:
        return f"{_quote(self.schema)}.{_quote(self.name)}"

    def trigger(self, operation: str) -> str:
        # Trigger names are per database and at most 64 characters: a digest of the table's
        # name keeps them short and distinct.
        digest = hashlib.sha256(self.qualified.encode()).hexdigest()[:16]
        return f"{TRIGGER_PREFIX}{operation[0].lower()}_{digest}"


@dataclass(frozen=True, slots=True)
class _Column:
    name: str
    data_type: str

    def json_value(self, row: str) -> str:
        """The column of `row` (NEW or OLD) as the triggers put it in JSON."""
        value = f"{row}.{_quote(self.name)}"
        if self.data_type in _BINARY:
            return f"TO_BASE64({value})"
        if self.data_type == "timestamp":
            return f"UNIX_TIMESTAMP({value})"
        return value


def _quote(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _shown(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z0-9_$]+", name) else _quote(name)


def schema_of(system: SystemSpec) -> str:
    """The capture database of a system: its option `capture_schema`, or the URL's database."""
    named = system.options.get("capture_schema") or make_url(sqlalchemy_url(system.url)).database
    if not named:
        raise SpecError(f"system '{system.name}' names no database: change capture needs one "
                        "in its URL, or the option capture_schema")
    return str(named)


def install(conn: Connection, tables: Sequence[str], consumer: str,
            schema: str) -> list[Installed]:
    """Capture the changes of `tables` for `consumer`; what was done per table.

    Creates the capture tables if missing, generates each table's triggers from its columns
    (kept when they are the same), and registers the consumer. A table without a primary
    key is refused before anything is done. DDL commits at once; the registrations are
    committed with the caller's transaction.
    """
    if not consumer:
        raise SpecError("change capture needs a consumer name")
    with _locked(conn):
        found = []
        for table in tables:
            relation = _existing(conn, table)
            key = _primary_key(conn, relation)
            if not key:
                raise no_primary_key(table)
            found.append((relation, key))
        conn.exec_driver_sql(f"CREATE DATABASE IF NOT EXISTS {_quote(schema)}")
        names = _names(schema)
        for statement in _SETUP:
            conn.exec_driver_sql(statement.format(**names))
        done = []
        for relation, key in found:
            trigger = _install_triggers(conn, relation, key, names)
            added = conn.exec_driver_sql(
                f"INSERT IGNORE INTO {names['consumers']} (table_name, consumer) "
                "VALUES (%(table)s, %(consumer)s)",
                {"table": relation.qualified, "consumer": consumer}).rowcount
            done.append(Installed(relation.qualified, key, trigger, bool(added)))
        return done


def remove(conn: Connection, tables: Sequence[str], consumer: str,
           schema: str) -> list[Removed]:
    """Stop capturing `tables` for `consumer`: unregister it, drop the changes it has not
    consumed, and drop a table's triggers once no consumer is left. A table that no longer
    exists is unregistered all the same."""
    with _locked(conn):
        names = _names(schema)
        installed = _installed(conn, schema)
        done = []
        for table in tables:
            relation = _relation(conn, table) or _guess(conn, table)
            if not installed:
                done.append(Removed(relation.qualified, False, 0, 0, False))
                continue
            params = {"table": relation.qualified, "consumer": consumer}
            unregistered = conn.exec_driver_sql(
                f"DELETE FROM {names['consumers']} WHERE table_name = %(table)s "
                "AND consumer = %(consumer)s", params).rowcount
            dropped = conn.exec_driver_sql(
                f"DELETE FROM {names['capture']} WHERE consumer = %(consumer)s "
                "AND table_name = %(table)s", params).rowcount
            left = int(conn.exec_driver_sql(
                f"SELECT count(*) FROM {names['consumers']} WHERE table_name = %(table)s",
                params).scalar_one())
            triggers_dropped = False
            if not left and _triggers(conn, relation):
                for operation in _OPERATIONS:
                    conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS "
                                         f"{_quote(relation.schema)}.{relation.trigger(operation)}")
                triggers_dropped = True
            done.append(Removed(relation.qualified, bool(unregistered), dropped, left,
                                triggers_dropped))
        return done


def status(conn: Connection, schema: str) -> list[CaptureState]:
    """Every registered consumer of every table: triggers in place, changes not yet consumed."""
    if not _installed(conn, schema):
        return []
    names = _names(schema)
    rows = conn.exec_driver_sql(
        f"SELECT r.consumer, r.table_name, count(c.seq), UNIX_TIMESTAMP(min(c.captured_at)) "
        f"FROM {names['consumers']} r LEFT JOIN {names['capture']} c "
        "  ON c.consumer = r.consumer AND c.table_name = r.table_name "
        "GROUP BY r.consumer, r.table_name ORDER BY r.consumer, r.table_name").all()
    triggers = {str(name) for (name,) in conn.exec_driver_sql(
        "SELECT TRIGGER_NAME FROM information_schema.TRIGGERS WHERE TRIGGER_NAME LIKE %(prefix)s",
        {"prefix": TRIGGER_PREFIX.replace("_", "\\_") + "%"})}
    states = []
    for consumer, table, pending, oldest in rows:
        relation = _relation(conn, table) or _guess(conn, table)
        installed = {relation.trigger(o) for o in _OPERATIONS} <= triggers
        states.append(CaptureState(consumer, table, installed, int(pending),
                                   None if oldest is None else _instant(oldest)))
    return states


def relation_name(conn: Connection, table: str) -> str | None:
    """The name capture rows give `table` (`database.table`), or None if there is no such table."""
    relation = _relation(conn, table)
    return relation.qualified if relation else None


def changes(conn: Connection, system: str, object: str, table: sa.Table,
            cursor: Mapping[str, Any], fields: Sequence[str] | None, limit: int,
            schema: str) -> tuple[list[Change], dict[str, Any]]:
    """The oldest captured changes of `table` for the cursor's consumer, and the cursor after
    them: the cursor and the changes of pgcapture.changes. The caller commits `conn`."""
    checked = reading(system, object, table, cursor, fields, limit)
    relation = _existing(conn, object)
    names = _names(schema)
    params = {"consumer": checked.consumer, "table": relation.qualified}
    if not _installed(conn, schema) or not conn.exec_driver_sql(
            f"SELECT count(*) FROM {names['consumers']} WHERE table_name = %(table)s "
            "AND consumer = %(consumer)s", params).scalar_one():
        raise not_installed(checked.where, checked.consumer)
    if checked.recorded:
        conn.exec_driver_sql(
            f"DELETE FROM {names['capture']} WHERE consumer = %(consumer)s "
            "AND table_name = %(table)s AND seq IN %(seqs)s",
            {**params, "seqs": tuple(checked.recorded)})
    # TIMESTAMP values were written as epoch seconds: the database gives them back in this
    # session's time zone, as a read of the table does.
    wanted = list(dict.fromkeys([*checked.primary, *checked.shown]))
    instants = [n for n in wanted if isinstance(table.c[n].type, sa.TIMESTAMP)]
    converted = "".join(
        f", FROM_UNIXTIME(CAST(JSON_VALUE(COALESCE(row_data, row_key), %(path_{i})s) "
        "AS DECIMAL(20, 6)))" for i in range(len(instants)))
    rows = conn.exec_driver_sql(
        f"SELECT seq, operation, UNIX_TIMESTAMP(captured_at), row_key, row_data{converted} "
        f"FROM {names['capture']} WHERE consumer = %(consumer)s AND table_name = %(table)s "
        "ORDER BY seq LIMIT %(limit)s",
        {**params, "limit": limit,
         **{f"path_{i}": _path(n) for i, n in enumerate(instants)}}).all()

    # As a query of the table through SQLAlchemy, the poll path's, gives each column's values.
    processors = {n: table.c[n].type.result_processor(conn.dialect, None) for n in wanted}
    found = []
    for row in rows:
        seq, operation, captured_at = int(row[0]), str(row[1]), row[2]
        given = dict(zip(instants, row[5:], strict=True))
        kind = KINDS[operation]
        values = _loaded(row[3] if kind is ChangeKind.DELETED else row[4])
        shown = checked.primary if kind is ChangeKind.DELETED else checked.shown
        record = {}
        for n in shown:
            value = given[n] if n in given else _driven(values.get(n), table.c[n])
            process = processors[n]
            record[n] = value if process is None or value is None else process(value)
        found.append(Change(system, object, record[checked.key], kind, record,
                            at=_instant(captured_at), version=str(seq)))
    return found, {**cursor, "key": checked.key, "recorded": [int(row[0]) for row in rows]}


# -- helpers --------------------------------------------------------------------------------------


def _names(schema: str) -> dict[str, str]:
    return {"capture": f"{_quote(schema)}.{_quote(CAPTURE_TABLE)}",
            "consumers": f"{_quote(schema)}.{_quote(CONSUMERS_TABLE)}"}


@contextmanager
def _locked(conn: Connection) -> Iterator[None]:
    """The capture lock, held by this connection for an install or remove."""
    got = conn.exec_driver_sql("SELECT GET_LOCK(%(lock)s, %(seconds)s)",
                               {"lock": _LOCK, "seconds": _LOCK_SECONDS}).scalar_one()
    if got != 1:
        raise SpecError(f"another change capture install or remove held the database for "
                        f"{_LOCK_SECONDS} s; try again")
    try:
        yield
    finally:
        conn.exec_driver_sql("SELECT RELEASE_LOCK(%(lock)s)", {"lock": _LOCK})


def _installed(conn: Connection, schema: str) -> bool:
    count = conn.exec_driver_sql(
        "SELECT count(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = %(schema)s "
        "AND TABLE_NAME IN (%(capture)s, %(consumers)s)",
        {"schema": schema, "capture": CAPTURE_TABLE, "consumers": CONSUMERS_TABLE}).scalar_one()
    return int(count) == 2


def _split(table: str) -> tuple[str | None, str]:
    """`table` as the connector reads it: "database.name", or "name" in the current database;
    either part may be quoted as capture rows show it."""
    parts = re.findall(r"`((?:[^`]|``)*)`|([^.`]+)", table)
    names = [quoted.replace("``", "`") if quoted else plain for quoted, plain in parts]
    if len(names) == 2:
        return names[0], names[1]
    return None, names[0] if len(names) == 1 else table


def _relation(conn: Connection, table: str) -> _Relation | None:
    schema, name = _split(table)
    row = conn.exec_driver_sql(
        "SELECT TABLE_SCHEMA, TABLE_NAME, TABLE_TYPE FROM information_schema.TABLES "
        "WHERE TABLE_SCHEMA = COALESCE(%(schema)s, DATABASE()) AND TABLE_NAME = %(name)s",
        {"schema": schema, "name": name}).first()
    return None if row is None else _Relation(str(row[0]), str(row[1]), row[2] == "BASE TABLE")


def _existing(conn: Connection, table: str) -> _Relation:
    relation = _relation(conn, table)
    if relation is None:
        raise SpecError(f"there is no table '{table}'")
    if not relation.plain:
        raise SpecError(f"'{table}' is not a plain table (a view): change capture needs one")
    return relation


def _guess(conn: Connection, table: str) -> _Relation:
    """The relation of a table that is gone: in the current database if unqualified."""
    schema, name = _split(table)
    return _Relation(schema or str(conn.exec_driver_sql("SELECT DATABASE()").scalar_one()), name)


def _primary_key(conn: Connection, relation: _Relation) -> tuple[str, ...]:
    rows = conn.exec_driver_sql(
        "SELECT COLUMN_NAME FROM information_schema.KEY_COLUMN_USAGE "
        "WHERE TABLE_SCHEMA = %(schema)s AND TABLE_NAME = %(name)s AND CONSTRAINT_NAME = 'PRIMARY' "
        "ORDER BY ORDINAL_POSITION", {"schema": relation.schema, "name": relation.name}).all()
    return tuple(str(name) for (name,) in rows)


def _columns(conn: Connection, relation: _Relation) -> list[_Column]:
    rows = conn.exec_driver_sql(
        "SELECT COLUMN_NAME, DATA_TYPE FROM information_schema.COLUMNS "
        "WHERE TABLE_SCHEMA = %(schema)s AND TABLE_NAME = %(name)s ORDER BY ORDINAL_POSITION",
        {"schema": relation.schema, "name": relation.name}).all()
    return [_Column(str(name), str(kind).lower()) for name, kind in rows]


def _triggers(conn: Connection, relation: _Relation) -> dict[str, str]:
    """The table's capture triggers: name -> body."""
    rows = conn.exec_driver_sql(
        "SELECT TRIGGER_NAME, ACTION_STATEMENT FROM information_schema.TRIGGERS "
        "WHERE EVENT_OBJECT_SCHEMA = %(schema)s AND EVENT_OBJECT_TABLE = %(name)s "
        "AND TRIGGER_NAME LIKE %(prefix)s",
        {"schema": relation.schema, "name": relation.name,
         "prefix": TRIGGER_PREFIX.replace("_", "\\_") + "%"}).all()
    return {str(name): str(body) for name, body in rows}


def _literal(conn: Connection, text: str) -> str:
    """`text` as an SQL string literal, quoted by the driver (DDL takes no parameters)."""
    driver = conn.connection.driver_connection
    assert driver is not None
    return str(driver.escape(text))


def _bodies(conn: Connection, relation: _Relation, key: tuple[str, ...],
            names: Mapping[str, str]) -> dict[str, str]:
    """The body of each trigger of the table, by operation."""
    columns = _columns(conn, relation)
    keyed = [c for c in columns if c.name in key]

    def json_of(row: str, of: Sequence[_Column]) -> str:
        pairs = ", ".join(f"{_literal(conn, c.name)}, {c.json_value(row)}" for c in of)
        return f"JSON_OBJECT({pairs})"

    table = _literal(conn, relation.qualified)

    def capture(operation: str, row_key: str, row_data: str) -> str:
        return (f"INSERT INTO {names['capture']} (consumer, table_name, operation, row_key, "
                f"row_data) SELECT consumer, {table}, '{operation}', {row_key}, {row_data} "
                f"FROM {names['consumers']} WHERE table_name = {table}")

    # Compared as bytes (utf8mb4_bin): a change of case or of trailing spaces is a change.
    variables = "LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
    return {
        "INSERT": capture("INSERT", json_of("NEW", keyed), json_of("NEW", columns)),
        "DELETE": capture("DELETE", json_of("OLD", keyed), "NULL"),
        "UPDATE": (
            f"BEGIN\n"
            f"  DECLARE old_row, new_row, old_key, new_key {variables};\n"
            f"  SET old_row = {json_of('OLD', columns)}, new_row = {json_of('NEW', columns)},\n"
            f"      old_key = {json_of('OLD', keyed)}, new_key = {json_of('NEW', keyed)};\n"
            f"  IF NOT old_row <=> new_row THEN\n"
            f"    IF old_key <=> new_key THEN\n"
            f"      {capture('UPDATE', 'new_key', 'new_row')};\n"
            f"    ELSE\n"
            f"      {capture('DELETE', 'old_key', 'NULL')};\n"
            f"      {capture('INSERT', 'new_key', 'new_row')};\n"
            f"    END IF;\n"
            f"  END IF;\n"
            f"END"),
    }


def _install_triggers(conn: Connection, relation: _Relation, key: tuple[str, ...],
                      names: Mapping[str, str]) -> str:
    existing = _triggers(conn, relation)
    bodies = _bodies(conn, relation, key, names)
    if existing == {relation.trigger(o): body for o, body in bodies.items()}:
        return "kept"
    # MariaDB replaces a trigger in one statement; MySQL drops it first, and changes made
    # in between are not captured.
    mariadb = bool(getattr(conn.dialect, "is_mariadb", False))
    for operation, body in bodies.items():
        name = f"{_quote(relation.schema)}.{relation.trigger(operation)}"
        if not mariadb:
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}")
        conn.exec_driver_sql(
            f"CREATE {'OR REPLACE ' if mariadb else ''}TRIGGER {name} AFTER {operation} "
            f"ON {relation.identifier} FOR EACH ROW {body}")
    return "replaced" if existing else "created"


def _path(column: str) -> str:
    return '$."' + column.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _loaded(document: Any) -> dict[str, Any]:
    """A JSON column's value; decimals as Decimal, to keep their digits."""
    text = document.decode() if isinstance(document, bytes) else document
    loaded: dict[str, Any] = json.loads(text, parse_float=Decimal)
    return loaded


def _instant(epoch: Any) -> dt.datetime:
    """Seconds since the epoch (a Decimal with microseconds), as an aware time."""
    return _EPOCH + dt.timedelta(microseconds=int(Decimal(epoch) * 1_000_000))


def _driven(value: Any, column: sa.Column[Any]) -> Any:
    """A value from the capture's JSON as PyMySQL gives the column's values."""
    kind = column.type
    if value is None:
        return None
    if isinstance(kind, sa.LargeBinary | sa.BINARY | sa.VARBINARY):
        return base64.b64decode(value)
    if isinstance(kind, sa.Float):
        return float(value)
    if isinstance(kind, sa.Numeric):
        return Decimal(str(value))
    if isinstance(kind, sa.DateTime):
        return dt.datetime.fromisoformat(value)
    if isinstance(kind, sa.Date):
        return dt.date.fromisoformat(value)
    if isinstance(kind, sa.Time):
        return _duration(value)
    if isinstance(kind, sa.Integer):
        return int(value)
    if isinstance(kind, sa.String) and isinstance(value, dict | list):
        return json.dumps(value)  # a JSON column, which MariaDB nests as JSON
    return value


def _duration(text: str) -> dt.timedelta | str:
    """A TIME value ('-838:59:59.000000'), as PyMySQL gives it: a timedelta."""
    parts = re.fullmatch(r"(-?)(\d+):(\d+):([\d.]+)", text)
    if parts is None:
        return text
    sign, hours, minutes, seconds = parts.groups()
    duration = dt.timedelta(hours=int(hours), minutes=int(minutes),
                            microseconds=int(Decimal(seconds) * 1_000_000))
    return -duration if sign else duration
