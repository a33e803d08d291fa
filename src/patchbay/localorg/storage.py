"""The local org's records in SQLite: one table per object, one column per field.

Tables are named after the object (`"Account"`, `"Invoice__c"`), columns after the field
(`"Id"`, `"Name"`), values encoded as `values.py` says. A record's deletion time is kept in
`"_DeletedAt"` (IsDeleted is 1 from then on). Every create, update and delete appends a row
to `"_Changes"`, the change log that getUpdated/getDeleted read and that Change Data Capture
will stream.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from patchbay.localorg import ids
from patchbay.localorg.schema import OrgSchema, SField, SObject

_SQL_TYPES = {"boolean": "INTEGER", "int": "INTEGER", "double": "REAL", "currency": "REAL",
              "percent": "REAL"}


def quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def column_type(field: SField) -> str:
    return _SQL_TYPES.get(field.type, "TEXT")


def create_tables(db: sqlite3.Connection, schema: OrgSchema) -> None:
    """Create every object's table (and the change log and id counters) if missing."""
    for obj in schema:
        columns = ", ".join(f"{quote(f.name)} {column_type(f)}"
                            + (" PRIMARY KEY" if f.name == "Id" else "") for f in obj)
        db.execute(f"CREATE TABLE IF NOT EXISTS {quote(obj.name)} ({columns}, "
                   f'"_DeletedAt" TEXT)')
        existing = {row[1] for row in db.execute(f"PRAGMA table_info({quote(obj.name)})")}
        for f in obj:
            if f.name not in existing:
                db.execute(f"ALTER TABLE {quote(obj.name)} ADD COLUMN {quote(f.name)} "
                           f"{column_type(f)}")
        db.execute(f"CREATE INDEX IF NOT EXISTS {quote('ix_' + obj.name + '_modstamp')} "
                   f"ON {quote(obj.name)} (\"SystemModstamp\")")
        for f in obj:
            if f.external_id or f.unique or f.type == "reference":
                db.execute(f"CREATE INDEX IF NOT EXISTS {quote('ix_' + obj.name + '_' + f.name)} "
                           f"ON {quote(obj.name)} ({quote(f.name)} COLLATE NOCASE)")
    db.execute('CREATE TABLE IF NOT EXISTS "_Changes" (seq INTEGER PRIMARY KEY AUTOINCREMENT, '
               "object TEXT NOT NULL, record_id TEXT NOT NULL, kind TEXT NOT NULL, "
               "fields TEXT NOT NULL, at TEXT NOT NULL, origin TEXT NOT NULL)")
    db.execute('CREATE INDEX IF NOT EXISTS "ix_changes_at" ON "_Changes" (object, at)')
    db.execute('CREATE TABLE IF NOT EXISTS "_Counters" (prefix TEXT PRIMARY KEY, n INTEGER)')


class Storage:
    """Records of one org. Thread-safe: one connection, serialised by a lock."""

    def __init__(self, schema: OrgSchema, path: str = ":memory:") -> None:
        self.schema = schema
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL" if path != ":memory:" else "PRAGMA journal_mode=MEMORY")
        self.db.execute("PRAGMA synchronous=OFF")
        self.lock = threading.RLock()
        self._depth = 0
        create_tables(self.db, schema)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic unit of work; nested calls join the outer one through savepoints."""
        with self.lock:
            self._depth += 1
            name = f"sp{self._depth}"
            self.db.execute(f"SAVEPOINT {name}")
            try:
                yield self.db
            except BaseException:
                self.db.execute(f"ROLLBACK TO {name}")
                self.db.execute(f"RELEASE {name}")
                raise
            else:
                self.db.execute(f"RELEASE {name}")
            finally:
                self._depth -= 1

    def new_id(self, obj: SObject) -> str:
        with self.transaction() as db:
            row = db.execute('SELECT n FROM "_Counters" WHERE prefix = ?', (obj.key_prefix,)).fetchone()
            counter = (row[0] if row else 0) + 1
            db.execute('INSERT INTO "_Counters" (prefix, n) VALUES (?, ?) '
                       "ON CONFLICT(prefix) DO UPDATE SET n = excluded.n", (obj.key_prefix, counter))
        return ids.make(obj.key_prefix, counter)

    def get(self, obj: SObject, record_id: str) -> dict[str, Any] | None:
        """A record's stored values by field name, deleted ones included (see IsDeleted)."""
        with self.lock:
            cursor = self.db.execute(f"SELECT * FROM {quote(obj.name)} WHERE \"Id\" = ?", (record_id,))
            row = cursor.fetchone()
            if row is None:
                return None
            return dict(zip((c[0] for c in cursor.description), row, strict=True))

    def find(self, obj: SObject, field: SField, value: Any,
             include_deleted: bool = False) -> list[str]:
        """Ids of the records whose `field` equals `value` (text case-insensitively, unless
        the field is case-sensitive)."""
        collate = "" if field.case_sensitive or not isinstance(value, str) else " COLLATE NOCASE"
        deleted = "" if include_deleted else ' AND "IsDeleted" = 0'
        with self.lock:
            return [r[0] for r in self.db.execute(
                f"SELECT \"Id\" FROM {quote(obj.name)} WHERE {quote(field.name)} = ?{collate}"
                f"{deleted} ORDER BY \"Id\"", (value,))]

    def insert(self, obj: SObject, values: Mapping[str, Any]) -> None:
        names = list(values)
        with self.transaction() as db:
            db.execute(f"INSERT INTO {quote(obj.name)} ({', '.join(map(quote, names))}) "
                       f"VALUES ({', '.join('?' * len(names))})", [values[n] for n in names])

    def update(self, obj: SObject, record_id: str, values: Mapping[str, Any]) -> None:
        if not values:
            return
        assignments = ", ".join(f"{quote(n)} = ?" for n in values)
        with self.transaction() as db:
            db.execute(f"UPDATE {quote(obj.name)} SET {assignments} WHERE \"Id\" = ?",
                       [*values.values(), record_id])

    def log(self, obj: SObject, record_id: str, kind: str, fields: Sequence[str], at: str,
            origin: str) -> None:
        with self.transaction() as db:
            db.execute('INSERT INTO "_Changes" (object, record_id, kind, fields, at, origin) '
                       "VALUES (?, ?, ?, ?, ?, ?)",
                       (obj.name, record_id, kind, json.dumps(list(fields)), at, origin))

    def changes(self, obj: SObject, kind: str, start: str, end: str) -> list[tuple[str, str]]:
        """(record id, time) of the changes of one kind to an object in [start, end)."""
        with self.lock:
            return [(r[0], r[1]) for r in self.db.execute(
                'SELECT record_id, max(at) FROM "_Changes" WHERE object = ? AND kind IN ('
                + ", ".join("?" * len(kind.split(","))) + ") AND at >= ? AND at < ? "
                "GROUP BY record_id ORDER BY max(at), record_id",
                (obj.name, *kind.split(","), start, end))]

    def reset(self) -> None:
        with self.lock:
            for obj in self.schema:
                self.db.execute(f"DROP TABLE IF EXISTS {quote(obj.name)}")
            self.db.execute('DROP TABLE IF EXISTS "_Changes"')
            self.db.execute('DROP TABLE IF EXISTS "_Counters"')
            create_tables(self.db, self.schema)
