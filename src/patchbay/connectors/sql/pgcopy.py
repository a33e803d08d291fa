"""PostgreSQL writes by COPY: straight into the table when no key of the batch exists yet,
else into a temporary staging table applied by one INSERT ... ON CONFLICT, UPDATE ... FROM
or DELETE ... USING (created / updated / unchanged per key)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from patchbay.connectors.sql import pgtables
from patchbay.connectors.sql.types import binary_copy_type, quote_name, quoted_table
from patchbay.model import (
    KeyValue,
    Operation,
    Record,
    Status,
)


class PostgresCopyWriter:
    """COPY the batch into a temporary staging table, then apply it with one statement."""

    def __init__(self, conn: Connection, table: sa.Table, key: str) -> None:
        self.conn = conn
        self.table = table
        self.key = key

    def write(self, batch: list[Record], operation: Operation) -> list[tuple[Status, str | None]]:
        """Records of different columns are written as one group per set of columns: a
        column a record lacks is left as it is, never set to NULL (a sync's update carries
        only the fields that changed)."""
        groups: dict[tuple[str, ...], list[int]] = {}
        for index, record in enumerate(batch):
            groups.setdefault(tuple(record), []).append(index)
        statuses: list[tuple[Status, str | None]] = [(Status.UNCHANGED, None)] * len(batch)
        for names, indexes in groups.items():
            columns, group = list(names), [batch[i] for i in indexes]
            written = self._apply(columns, [r[self.key] for r in group], operation,
                                  partial(self._copy, columns=columns, batch=group))
            for index, status in zip(indexes, written, strict=True):
                statuses[index] = status
        return statuses

    def write_table(self, table: Any, operation: Operation) -> list[tuple[Status, str | None]]:
        """The same for an Arrow table: one COPY, binary when every column's type and values
        allow (pgtables.copy_rows), else of its CSV rendering, both written by Arrow."""
        types = [binary_copy_type(self.table.c[c], self.conn.dialect) for c in table.column_names]
        binary = pgtables.copy_rows(table, types)
        return self._apply(list(table.column_names), table[self.key].to_pylist(), operation,
                           lambda cur, target: _copy_binary(cur, target, table.column_names, binary)
                           if binary is not None else _copy_csv(cur, target, table))

    def _apply(self, columns: list[str], keys: list[KeyValue], operation: Operation,
               load: Callable[[Any, str], None]) -> list[tuple[Status, str | None]]:
        """Load the batch (into the table, or a staging table) and apply the operation."""
        target = quoted_table(self.table)
        q = quote_name
        col_list = ", ".join(q(c) for c in columns)
        raw = self.conn.connection.driver_connection
        assert raw is not None
        with raw.cursor() as cur:
            if operation in (Operation.UPSERT, Operation.INSERT):
                where, params = key_condition(q(self.key), keys)
                cur.execute(f"SELECT 1 FROM {target} WHERE {where} LIMIT 1", params)
                if cur.fetchone() is None:
                    # None of the keys exist yet (a first migration): COPY straight into the
                    # table, skipping the staging table and the conflict checks.
                    load(cur, target)
                    return [(Status.CREATED, None)] * len(keys)
            # Only the columns written, with their types but not their NOT NULL constraints:
            # a column the batch leaves to its default (a serial id) must not fail the COPY.
            cur.execute(f"CREATE TEMP TABLE IF NOT EXISTS _patchbay_stage ON COMMIT DROP AS "
                        f"SELECT {col_list} FROM {target} WITH NO DATA")
            load(cur, "_patchbay_stage")
            key = q(self.key)
            changed = " OR ".join(f"t.{q(c)} IS DISTINCT FROM s.{q(c)}" for c in columns if c != self.key)
            assignments = ", ".join(f"{q(c)} = s.{q(c)}" for c in columns if c != self.key)
            if operation is Operation.UPSERT:
                excluded = " OR ".join(f"t.{q(c)} IS DISTINCT FROM EXCLUDED.{q(c)}"
                                       for c in columns if c != self.key) or "false"
                sets = ", ".join(f"{q(c)} = EXCLUDED.{q(c)}" for c in columns if c != self.key)
                conflict = (f"DO UPDATE SET {sets} WHERE {excluded}" if sets else "DO NOTHING")
                cur.execute(f"INSERT INTO {target} AS t ({col_list}) SELECT {col_list} "
                            f"FROM _patchbay_stage ON CONFLICT ({key}) {conflict} "
                            f"RETURNING t.{key}, (xmax = 0)")
                written = {k: (Status.CREATED if created else Status.UPDATED)
                           for k, created in cur.fetchall()}
                default: tuple[Status, str | None] = (Status.UNCHANGED, None)
            elif operation is Operation.INSERT:
                cur.execute(f"INSERT INTO {target} AS t ({col_list}) SELECT {col_list} "
                            f"FROM _patchbay_stage ON CONFLICT ({key}) DO NOTHING RETURNING t.{key}")
                written = {k: Status.CREATED for (k,) in cur.fetchall()}
                default = (Status.SKIPPED, None)
            elif operation is Operation.UPDATE:
                cur.execute(f"SELECT s.{key} FROM _patchbay_stage s JOIN {target} t USING ({key})")
                found = {k for (k,) in cur.fetchall()}
                written = {}
                if assignments:
                    cur.execute(f"UPDATE {target} AS t SET {assignments} FROM _patchbay_stage s "
                                f"WHERE t.{key} = s.{key} AND ({changed}) RETURNING t.{key}")
                    written = {k: Status.UPDATED for (k,) in cur.fetchall()}
                written.update({k: Status.UNCHANGED for k in found if k not in written})
                default = (Status.SKIPPED, "no record with this key")
            else:
                cur.execute(f"DELETE FROM {target} AS t USING _patchbay_stage s "
                            f"WHERE t.{key} = s.{key} RETURNING t.{key}")
                written = {k: Status.DELETED for (k,) in cur.fetchall()}
                default = (Status.SKIPPED, "no record with this key")
            cur.execute("DROP TABLE _patchbay_stage")
        return [(written[k], None) if k in written else default for k in keys]


    def _copy(self, cur: Any, target: str, columns: list[str], batch: list[Record]) -> None:
        """COPY the batch; binary when every column has a plain type (half the cost of text)."""
        dialect = self.conn.dialect
        types = [binary_copy_type(self.table.c[c], dialect) for c in columns]
        binary = all(types)
        rows: Any = (tuple(r.values()) for r in batch)  # each record holds `columns`, in order
        if not binary:
            json_columns = [i for i, c in enumerate(columns)
                            if isinstance(self.table.c[c].type, sa.JSON)]
            if json_columns:
                rows = (_json_encoded(row, json_columns) for row in rows)
        col_list = ", ".join(quote_name(c) for c in columns)
        with cur.copy(f"COPY {target} ({col_list}) FROM STDIN"
                      + (" (FORMAT BINARY)" if binary else "")) as copy:
            if binary:
                copy.set_types(types)
            for row in rows:
                copy.write_row(row)


def key_condition(key: str, values: Sequence[KeyValue]) -> tuple[str, tuple[Any, ...]]:
    """A condition matching (at least) the rows with these keys. Integer keys take a
    range, which costs one index range scan and two parameters instead of an array of
    thousands; the caller filters out rows of the range that are not in the batch."""
    if set(map(type, values)) == {int}:  # not bool, a subclass
        return f"{key} BETWEEN %s AND %s", (min(values), max(values))
    return f"{key} = ANY(%s)", (list(values),)


def _copy_csv(cur: Any, target: str, table: Any) -> None:
    import pyarrow.csv as arrow_csv

    col_list = ", ".join(quote_name(c) for c in table.column_names)
    sink = io.BytesIO()
    # Arrow writes null as an empty field and the empty string as "", as PostgreSQL reads them.
    arrow_csv.write_csv(table, sink, arrow_csv.WriteOptions(include_header=False))
    with cur.copy(f"COPY {target} ({col_list}) FROM STDIN (FORMAT csv)") as copy:
        copy.write(sink.getbuffer())


def _copy_binary(cur: Any, target: str, columns: Sequence[str], data: Iterable[Any]) -> None:
    col_list = ", ".join(quote_name(c) for c in columns)
    with cur.copy(f"COPY {target} ({col_list}) FROM STDIN (FORMAT BINARY)") as copy:
        for block in data:
            copy.write(block)


def _json_encoded(row: Sequence[Any], positions: list[int]) -> list[Any]:
    values = list(row)
    for i in positions:
        if values[i] is not None:
            values[i] = json.dumps(values[i], default=str)
    return values
