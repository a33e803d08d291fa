"""Between SQL column types and error codes and patchbay's: field types, outcome codes, quoting,
and which driver errors mean a lost connection."""

from __future__ import annotations

import functools
from typing import Any

import sqlalchemy as sa
from sqlalchemy import exc as sa_exc

from patchbay.model import (
    FieldType,
)

# Database error codes (SQLSTATE, MySQL errno) -> the outcome codes patchbay reports.
_SQLSTATE_CODES = {
    "23502": "REQUIRED_FIELD_MISSING", "22001": "STRING_TOO_LONG", "23505": "DUPLICATE_VALUE",
    "23503": "INVALID_CROSS_REFERENCE_KEY", "23514": "FIELD_CUSTOM_VALIDATION_EXCEPTION",
    "22P02": "INVALID_TYPE", "22007": "INVALID_TYPE", "22008": "INVALID_TYPE",
    "22003": "NUMBER_OUTSIDE_VALID_RANGE",
}


_MYSQL_CODES = {1048: "REQUIRED_FIELD_MISSING", 1364: "REQUIRED_FIELD_MISSING",
                1406: "STRING_TOO_LONG", 1062: "DUPLICATE_VALUE",
                1452: "INVALID_CROSS_REFERENCE_KEY", 1366: "INVALID_TYPE", 1292: "INVALID_TYPE",
                1264: "NUMBER_OUTSIDE_VALID_RANGE", 3819: "FIELD_CUSTOM_VALIDATION_EXCEPTION"}


def python_type(column: sa.Column[Any]) -> type | None:
    try:
        kind: type = column.type.python_type
    except NotImplementedError:
        return None
    return kind


# Column types whose values the conform step guarantees to be of one Python type, so that
# psycopg's binary dumpers can write them without guessing. timestamptz is left to the text
# format, which accepts naive datetimes in the session's time zone.
_BINARY_COPY_TYPES = {
    "BIGINT": "int8", "INTEGER": "int4", "SMALLINT": "int2", "DOUBLE PRECISION": "float8",
    "REAL": "float4", "NUMERIC": "numeric", "TEXT": "text", "VARCHAR": "varchar",
    "DATE": "date", "BOOLEAN": "bool", "TIMESTAMP WITHOUT TIME ZONE": "timestamp",
    "TIMESTAMP": "timestamp",
}


@functools.lru_cache(maxsize=4096)  # asked per column of every batch; compiling a type is slow
def binary_copy_type(column: sa.Column[Any], dialect: sa.Dialect) -> str | None:
    name = column.type.compile(dialect=dialect).split("(", 1)[0].strip().upper()
    return _BINARY_COPY_TYPES.get(name)


def quote_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quoted_table(table: sa.Table) -> str:
    return (f"{quote_name(table.schema)}." if table.schema else "") + quote_name(table.name)


def field_type(kind: sa.types.TypeEngine[Any]) -> tuple[FieldType, int | None]:
    if isinstance(kind, sa.Boolean):
        return FieldType.BOOLEAN, None
    if isinstance(kind, sa.Integer):
        return FieldType.INTEGER, None
    if isinstance(kind, sa.Float):
        return FieldType.NUMBER, None
    if isinstance(kind, sa.Numeric):
        return FieldType.DECIMAL, None
    if isinstance(kind, sa.DateTime):
        return FieldType.DATETIME, None
    if isinstance(kind, sa.Date):
        return FieldType.DATE, None
    if isinstance(kind, sa.JSON):
        return FieldType.JSON, None
    if isinstance(kind, sa.String):
        return FieldType.STRING, kind.length
    return FieldType.STRING, None


def first_line(exc: sa_exc.DBAPIError) -> str:
    text = str(exc.orig) if exc.orig is not None else str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def error_code(exc: sa_exc.DBAPIError) -> str:
    orig = exc.orig
    args = getattr(orig, "args", ())
    errno = args[0] if args and isinstance(args[0], int) else None
    if errno in _MYSQL_CODES:  # before SQLSTATE: MySQL gives 23000 to every integrity error
        return _MYSQL_CODES[errno]
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate:
        return _SQLSTATE_CODES.get(sqlstate, f"SQLSTATE_{sqlstate}")
    if errno is not None:
        return f"MYSQL_{errno}"
    message = str(orig).lower()
    if "not null" in message:
        return "REQUIRED_FIELD_MISSING"
    if "unique" in message:
        return "DUPLICATE_VALUE"
    if "foreign key" in message:
        return "INVALID_CROSS_REFERENCE_KEY"
    return "DATABASE_ERROR"


def is_connection_error(exc: sa_exc.DBAPIError) -> bool:
    return exc.connection_invalidated or lost_connection(exc.orig)


def lost_connection(error: BaseException | None) -> bool:
    """Whether a driver error means the connection is gone (the server stopped, the network
    dropped), not that the statement was refused."""
    sqlstate = getattr(error, "sqlstate", None) or ""
    if sqlstate.startswith("08") or sqlstate in ("57P01", "57P02", "57P03"):
        return True
    if type(error).__name__ == "OperationalError" and not sqlstate \
            and type(error).__module__.startswith("psycopg"):
        return True  # psycopg's client-side "server closed the connection unexpectedly"
    args: tuple[Any, ...] = tuple(getattr(error, "args", ()))
    return bool(args) and isinstance(args[0], int) and args[0] in (2002, 2003, 2006, 2013)
