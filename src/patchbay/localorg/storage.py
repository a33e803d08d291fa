"""The local org's records in SQLite: one table per object, one column per field.

Tables are named after the object (`"Account"`, `"Invoice__c"`), columns after the field
(`"Id"`, `"Name"`), values encoded as `values.py` says. A record's deletion time is kept in
`"_DeletedAt"` (IsDeleted is 1 from then on, until an undelete). Every create, update,
delete and undelete appends a row to `"_Changes"`, the change log that getUpdated/getDeleted
read and that Change Data Capture streams: with the new values in their API form (JSON), the
user, and the transaction key and sequence number of the write call that made the change.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from patchbay import sfid
from patchbay.localorg.schema import OrgSchema, SField, SObject

_SQL_TYPES = {"boolean": "INTEGER", "int": "INTEGER", "double": "REAL", "currency": "REAL",
              "percent": "REAL"}
# Added after the first release of the change log: org files made before get them by ALTER.
_CHANGE_COLUMNS = {"snapshot": "TEXT NOT NULL DEFAULT '{}'", "commit_user": "TEXT",
                   "transaction_key": "TEXT", "sequence_number": "INTEGER"}


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
               "fields TEXT NOT NULL, at TEXT NOT NULL, origin TEXT NOT NULL, "
               + ", ".join(f"{name} {kind}" for name, kind in _CHANGE_COLUMNS.items()) + ")")
    logged = {row[1] for row in db.execute('PRAGMA table_info("_Changes")')}
    for name, kind in _CHANGE_COLUMNS.items():
        if name not in logged:
            db.execute(f'ALTER TABLE "_Changes" ADD COLUMN {name} {kind}')
    db.execute('CREATE INDEX IF NOT EXISTS "ix_changes_at" ON "_Changes" (object, at)')
    # getDeleted looks for a later undelete of each deletion it lists.
    db.execute('CREATE INDEX IF NOT EXISTS "ix_changes_record" ON "_Changes" (record_id, kind)')
    db.execute('CREATE TABLE IF NOT EXISTS "_Counters" (prefix TEXT PRIMARY KEY, n INTEGER)')


@dataclass(frozen=True)
class ChangeRow:
    """One change-log row, as Change Data Capture reads it."""

    seq: int
    object: str
    record_id: str
    kind: str
    at: str
    origin: str
    snapshot: dict[str, Any]
    commit_user: str | None
    transaction_key: str | None
    sequence_number: int | None


class Storage:
    """Records of one org. Thread-safe: one connection, serialised by a lock."""

    def __init__(self, schema: OrgSchema, path: str = ":memory:") -> None:
        self.schema = schema
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL" if path != ":memory:" else "PRAGMA journal_mode=MEMORY")
        self.db.execute("PRAGMA synchronous=OFF")
        self.lock = threading.RLock()
        self._depth = 0
        self._transaction_key: str | None = None
        self._logged = 0
        self._watchers: list[Callable[[], None]] = []
        create_tables(self.db, schema)

    def watch(self, callback: Callable[[], None]) -> None:
        """Call `callback` after every committed transaction that logged a change.

        It runs in the writing thread, so it must only hand the news on, never block."""
        self._watchers.append(callback)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic unit of work; nested calls join the outer one through savepoints.

        The outermost transaction is one Salesforce transaction: its changes share a
        transaction key and are numbered in order."""
        with self.lock:
            outermost = self._depth == 0
            self._depth += 1
            name = f"sp{self._depth}"
            logged_before = self._logged
            self.db.execute(f"SAVEPOINT {name}")
            try:
                yield self.db
            except BaseException:
                self.db.execute(f"ROLLBACK TO {name}")
                self.db.execute(f"RELEASE {name}")
                # Rolled-back rows are gone, so their sequence numbers are free again.
                self._logged = logged_before
                raise
            else:
                self.db.execute(f"RELEASE {name}")
            finally:
                self._depth -= 1
                committed = self._logged
                if outermost:
                    self._transaction_key, self._logged = None, 0
        if outermost and committed:
            for callback in self._watchers:
                callback()

    @contextmanager
    def _statements(self) -> Iterator[sqlite3.Connection]:
        """For a helper whose statements leave nothing behind when one fails (SQLite undoes
        a failed statement whole): within a transaction it joins it without a savepoint of
        its own (a bulk job's rows made one each, a quarter of its time), else it is one."""
        with self.lock:  # the depth is this thread's once the lock is held
            if self._depth:
                yield self.db
            else:
                with self.transaction() as db:
                    yield db

    def new_id(self, obj: SObject) -> str:
        with self._statements() as db:
            row = db.execute('SELECT n FROM "_Counters" WHERE prefix = ?', (obj.key_prefix,)).fetchone()
            counter = (row[0] if row else 0) + 1
            db.execute('INSERT INTO "_Counters" (prefix, n) VALUES (?, ?) '
                       "ON CONFLICT(prefix) DO UPDATE SET n = excluded.n", (obj.key_prefix, counter))
        return sfid.make(obj.key_prefix, counter)

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
        with self._statements() as db:
            db.execute(f"INSERT INTO {quote(obj.name)} ({', '.join(map(quote, names))}) "
                       f"VALUES ({', '.join('?' * len(names))})", [values[n] for n in names])

    def update(self, obj: SObject, record_id: str, values: Mapping[str, Any]) -> None:
        if not values:
            return
        assignments = ", ".join(f"{quote(n)} = ?" for n in values)
        with self._statements() as db:
            db.execute(f"UPDATE {quote(obj.name)} SET {assignments} WHERE \"Id\" = ?",
                       [*values.values(), record_id])

    def log(self, obj: SObject, record_id: str, kind: str, fields: Sequence[str], at: str,
            origin: str, snapshot: Mapping[str, Any], user_id: str) -> None:
        """Append a change: `fields` as getUpdated knows them, `snapshot` the new values in
        their API form, `user_id` the committing user."""
        with self._statements() as db:
            if self._transaction_key is None:
                self._transaction_key = str(uuid.uuid4())
            self._logged += 1
            db.execute('INSERT INTO "_Changes" (object, record_id, kind, fields, at, origin, snapshot, '
                       "commit_user, transaction_key, sequence_number) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (obj.name, record_id, kind, json.dumps(list(fields)), at, origin,
                        json.dumps(snapshot), user_id, self._transaction_key, self._logged))

    def changes(self, obj: SObject, kind: str, start: str, end: str) -> list[tuple[str, str]]:
        """(record id, time) of the changes of one kind to an object in [start, end)."""
        with self.lock:
            return [(r[0], r[1]) for r in self.db.execute(
                'SELECT record_id, max(at) FROM "_Changes" WHERE object = ? AND kind IN ('
                + ", ".join("?" * len(kind.split(","))) + ") AND at >= ? AND at < ? "
                "GROUP BY record_id ORDER BY max(at), record_id",
                (obj.name, *kind.split(","), start, end))]

    def deletions(self, obj: SObject, start: str, end: str) -> list[tuple[str, str]]:
        """(record id, time) of the deletions of an object in [start, end) that no later
        undelete took back: what getDeleted lists."""
        with self.lock:
            return [(r[0], r[1]) for r in self.db.execute(
                'SELECT d.record_id, max(d.at) FROM "_Changes" d WHERE d.object = ? '
                "AND d.kind = 'deleted' AND d.at >= ? AND d.at < ? AND NOT EXISTS ("
                'SELECT 1 FROM "_Changes" u WHERE u.object = d.object AND u.record_id = d.record_id '
                "AND u.kind = 'undeleted' AND u.seq > d.seq) "
                "GROUP BY d.record_id ORDER BY max(d.at), d.record_id", (obj.name, start, end))]

    def newest_change(self) -> int:
        """The seq of the last change logged, 0 if there is none."""
        with self.lock:
            return int(self.db.execute('SELECT coalesce(max(seq), 0) FROM "_Changes"').fetchone()[0])

    def oldest_change_since(self, at: str) -> int | None:
        """The seq of the first change logged at or after `at`."""
        with self.lock:
            found = self.db.execute('SELECT min(seq) FROM "_Changes" WHERE at >= ?', (at,)).fetchone()[0]
        return None if found is None else int(found)

    def change_rows(self, after: int, upto: int, objects: Collection[str] | None, since: str,
                    limit: int) -> list[ChangeRow]:
        """Changes with `after` < seq <= `upto` logged at or after `since`, in seq order,
        to the given objects (to all when None)."""
        where = "seq > ? AND seq <= ? AND at >= ?"
        params: list[Any] = [after, upto, since]
        if objects is not None:
            where += f" AND object IN ({', '.join('?' * len(objects))})"
            params.extend(objects)
        with self.lock:
            rows = self.db.execute(
                "SELECT seq, object, record_id, kind, at, origin, snapshot, commit_user, "
                f'transaction_key, sequence_number FROM "_Changes" WHERE {where} ORDER BY seq LIMIT ?',
                [*params, limit]).fetchall()
        return [ChangeRow(r[0], r[1], r[2], r[3], r[4], r[5], json.loads(r[6]), *r[7:]) for r in rows]

    def reset(self) -> None:
        with self.lock:
            for obj in self.schema:
                self.db.execute(f"DROP TABLE IF EXISTS {quote(obj.name)}")
            self.db.execute('DROP TABLE IF EXISTS "_Changes"')
            self.db.execute('DROP TABLE IF EXISTS "_Counters"')
            create_tables(self.db, self.schema)
