"""A PostgreSQL participant's table as the sync tests make it: keyed by a serial id, with a
`patchbay_id` external id and an `updated_at` the database stamps on every insert and update
(the polled watermark), dropped after the test."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg


@contextlib.contextmanager
def stamped_table(pg_url: str, prefix: str, columns: str) -> Iterator[str]:
    """A new table named `prefix_<random>` with `columns` (SQL column definitions) between
    its id and its external id; its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"""CREATE TABLE {name} (id bigserial PRIMARY KEY, {columns},
            patchbay_id text UNIQUE, updated_at timestamptz NOT NULL DEFAULT
            clock_timestamp())""")
        conn.execute(f"""CREATE FUNCTION {name}_stamp() RETURNS trigger AS $$ BEGIN
            NEW.updated_at := clock_timestamp(); RETURN NEW; END $$ LANGUAGE plpgsql""")
        conn.execute(f"CREATE TRIGGER {name}_stamp BEFORE UPDATE ON {name} "
                     f"FOR EACH ROW EXECUTE FUNCTION {name}_stamp()")
    try:
        yield name
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f"DROP TABLE IF EXISTS {name}")
            conn.execute(f"DROP FUNCTION IF EXISTS {name}_stamp()")


def pg(pg_url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        cursor = conn.execute(sql, params)
        return cursor.fetchall() if cursor.description else []
