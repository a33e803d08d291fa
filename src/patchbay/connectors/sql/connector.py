"""SQL databases through SQLAlchemy Core: SQLite, PostgreSQL (psycopg 3), MySQL/MariaDB (PyMySQL).

A system is a database URL:

    legacy: sqlite:///legacy.db                       # relative to the integration file
    archive: sqlite:////var/data/archive.db           # absolute
    crm: postgresql://app:${PG_PASSWORD}@db.internal:5432/crm?sslmode=require
    erp: mysql://app:${MYSQL_PASSWORD}@erp.internal/erp    # or mariadb://

Query arguments go to the driver. An object is a table, or `schema.table`. Options:
`connect_timeout` (seconds, default 10) and, for change capture, `capture_schema`
(PostgreSQL: default "public"; MySQL, MariaDB: the database holding the capture tables,
default the URL's).

Reads stream one server-side query in pages ordered by the key, so a page's last key is the
position to resume after. Columnar reads of PostgreSQL and SQLite run the same query through
an ADBC driver, which returns Arrow, and hand over to the row stream where the driver cannot
give what the row stream gives (see `_read_arrow`).

Writes classify each record against what the table holds (insert / update / unchanged),
write in one transaction per batch, and when the database refuses the batch, split it until
the refused records stand alone with the database's reason. PostgreSQL takes a fast path:
COPY into a temporary staging table, then one INSERT ... ON CONFLICT (or UPDATE / DELETE)
from it.

Changes are polled by a watermark column (an updated-at timestamp or an increasing number),
or read from the capture table of `pgcapture` (PostgreSQL) or `mycapture` (MySQL, MariaDB);
see `SqlConnector.changes`.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections import Counter
from collections.abc import Callable, Generator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, ClassVar
from urllib.parse import quote, urlencode

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from pydantic import Field
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine

from patchbay.compare import same_values
from patchbay.connectors.base import (
    Capability,
    Connector,
    ConnectorOptions,
    Expected,
    completed,
    even_cuts,
    last_per_key,
)
from patchbay.connectors.sql import arrow as arrow_reads
from patchbay.connectors.sql.arrow import (
    ArrowQuery,
    Refused,
    arrow_pages,
    postgres_column,
    rows_to_table,
    sqlite_column,
)
from patchbay.connectors.sql.capture import Capture
from patchbay.connectors.sql.changes import (
    CURSOR_ENTRIES,
    DEFAULT_OVERLAP_SECONDS,
    from_json,
    key_from_json,
    late_floor,
    minus,
    remembered_rows,
    row_digest,
    seal,
    to_json,
    updated_marks,
    watermark_time,
)
from patchbay.connectors.sql.types import (
    binary_copy_type,
    error_code,
    field_type,
    first_line,
    is_connection_error,
    lost_connection,
    python_type,
    quote_name,
    quoted_table,
)
from patchbay.connectors.sql.where import to_sql
from patchbay.errors import ConnectionFailed, PatchbayError, RetriableError, SpecError
from patchbay.extras import driver_needed
from patchbay.model import (
    Change,
    ChangeKind,
    FieldSchema,
    FieldType,
    KeyValue,
    ObjectSchema,
    Operation,
    Outcome,
    Page,
    Position,
    Record,
    Status,
)
from patchbay.scope import BoundScope
from patchbay.spec import SystemSpec, suggest
from patchbay.urls import sqlalchemy_url

log = logging.getLogger(__name__)


class SqlOptions(ConnectorOptions):
    connect_timeout: int = Field(10, gt=0, description="Seconds connecting may take (PostgreSQL, MySQL).")
    schema_: str | None = Field(None, alias="schema", description="The schema of tables named "
                                "without one (`schema.table` names its own).")
    pool_size: int | None = Field(None, gt=0, description="Connections kept open (PostgreSQL, "
                                  "MySQL; SQLAlchemy's default 5).")
    capture_schema: str | None = Field(None, description="Change capture: the schema (MySQL: the "
                                       "database) of patchbay's capture tables (default: public "
                                       "on PostgreSQL, the URL's database on MySQL).")


class SqlConnector(Connector):
    schemes: ClassVar[tuple[str, ...]] = ("sqlite", "postgresql", "postgres", "mysql", "mariadb")
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.READ, Capability.WRITE, Capability.GET, Capability.DESCRIBE,
         Capability.CHANGES, Capability.COLUMNAR, Capability.COUNT, Capability.WRITE_IF})
    options_model: ClassVar[type[ConnectorOptions]] = SqlOptions

    def __init__(self, system: SystemSpec) -> None:
        super().__init__(system)
        self.options = self._options_as(SqlOptions)
        self._engine: Engine | None = None
        self._tables: dict[str, sa.Table] = {}
        self._warned_hidden = False

    # -- connection -----------------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            url = sqlalchemy_url(self.system.url)
            connect_args: dict[str, Any] = {}
            pool: dict[str, Any] = {}
            if url.startswith(("postgresql", "mysql")):
                connect_args["connect_timeout"] = self.options.connect_timeout
                if self.options.pool_size is not None:
                    pool["pool_size"] = self.options.pool_size
            if url.startswith("mysql"):
                connect_args.setdefault("charset", "utf8mb4")
            try:
                # No pre-ping: it costs a round trip per batch, and a write on a dead pooled
                # connection fails as retriable, is retried on a fresh one.
                with driver_needed(f"system '{self.name}'"):
                    self._engine = sa.create_engine(url, connect_args=connect_args, **pool)
            except (sa_exc.ArgumentError, ImportError) as exc:
                raise SpecError(f"system '{self.name}': bad database URL "
                                f"{self.system.redacted_url}: {self.system.scrub(str(exc))}") from None
            if self._engine.dialect.name == "sqlite":
                sa.event.listen(self._engine, "connect", _sqlite_foreign_keys)
        return self._engine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def check(self) -> None:
        try:
            with self.engine.connect() as conn:
                conn.execute(sa.text("SELECT 1"))
        except sa_exc.DBAPIError as exc:
            raise self._connection_failed(exc) from None

    def _connection_failed(self, exc: sa_exc.DBAPIError) -> ConnectionFailed:
        reason = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        # drivers may echo the connection string, or the part of it they failed on
        return ConnectionFailed(f"cannot reach system '{self.name}' at "
                                f"{self.system.redacted_url}: {self.system.scrub(reason)}",
                                system=self.name)

    def close(self) -> None:
        if self._engine is not None:
            self._engine.dispose()
            self._engine = None

    def table(self, object: str) -> sa.Table:
        if object not in self._tables:
            schema, _, name = object.rpartition(".")
            schema = schema or self.options.schema_ or ""
            try:
                self._tables[object] = sa.Table(name, sa.MetaData(), schema=schema or None,
                                                autoload_with=self.engine)
            except sa_exc.NoSuchTableError:
                known = sa.inspect(self.engine).get_table_names(schema=schema or None)
                raise SpecError(f"system '{self.name}' has no table '{object}'"
                                f"{suggest(name, known)}") from None
            except sa_exc.OperationalError as exc:
                raise self._connection_failed(exc) from None
        return self._tables[object]

    def _column(self, table: sa.Table, name: str) -> sa.Column[Any]:
        if name not in table.c:
            raise SpecError(f"table '{table.fullname}' of system '{self.name}' has no column "
                            f"'{name}'{suggest(name, table.c.keys())}")
        return table.c[name]

    # -- describe -------------------------------------------------------------------------------

    def describe(self, object: str) -> ObjectSchema:
        table = self.table(object)
        fields = {}
        for column in table.columns:
            kind, length = field_type(column.type)
            generated = (column.server_default is not None or column.default is not None
                         or (column.primary_key and column.autoincrement is True)
                         or (column.primary_key and kind is FieldType.INTEGER
                             and len(table.primary_key.columns) == 1))
            numeric = column.type if isinstance(column.type, sa.Numeric) else None
            fields[column.name] = FieldSchema(
                column.name, kind, nullable=bool(column.nullable), max_length=length,
                has_default=generated,
                precision=getattr(numeric, "precision", None) if kind is FieldType.DECIMAL else None,
                scale=getattr(numeric, "scale", None) if kind is FieldType.DECIMAL else None,
                timezone=bool(getattr(column.type, "timezone", False)))
        key = table.primary_key.columns[0].name if len(table.primary_key.columns) == 1 else None
        return ObjectSchema(object, fields, key)

    # -- read -----------------------------------------------------------------------------------

    def _select(self, object: str, scope: BoundScope | None,
                fields: Sequence[str] | None) -> tuple[sa.Table, sa.Select[Any]]:
        table = self.table(object)
        columns = [self._column(table, f) for f in fields] if fields else list(table.columns)
        stmt = sa.select(*columns)
        where = to_sql(scope, dict(table.c.items()), f"table '{object}'")
        if where is not None:
            stmt = stmt.where(where)
        return table, stmt

    def count(self, object: str, scope: BoundScope | None = None) -> int:
        _, stmt = self._select(object, scope, None)
        with self._reading() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(stmt.subquery())).scalar_one())

    def boundaries(self, object: str, scope: BoundScope | None, key: str,
                   parts: int) -> list[Any]:
        """An integer key is cut evenly between its lowest and highest value in scope (two
        aggregates, which an index answers from its ends); any other key at every
        (count / parts)-th record in key order (an ordered offset each: an index scan)."""
        table, stmt = self._select(object, scope, [key])
        column = self._column(table, key)
        inner = stmt.subquery()
        with self._reading() as conn:
            if field_type(column.type)[0] is FieldType.INTEGER:
                low, high = conn.execute(sa.select(sa.func.min(inner.c[key]),
                                                   sa.func.max(inner.c[key]))).one()
                return list(even_cuts(low, high, parts))
            total = int(conn.execute(sa.select(sa.func.count()).select_from(inner)).scalar_one())
            ordered = stmt.order_by(column).limit(1)
            found = [conn.execute(ordered.offset(total * k // parts)).scalar()
                     for k in range(1, parts) if total * k // parts > 0]
        return [value for n, value in enumerate(found) if n == 0 or value != found[n - 1]]

    def read(self, object: str, scope: BoundScope | None = None, *, key: str | None = None,
             fields: Sequence[str] | None = None, after: Position = None,
             page_size: int = 1000, columnar: bool = False) -> Iterator[Page]:
        key = key or self.describe(object).key
        row_type = None
        if columnar and self.dialect in ("postgresql", "sqlite"):
            # A columnar read that stopped after giving pages starts again from there; one that
            # gives none leaves the rest to the row path. SQLite's driver types a column by
            # its first batch, so a column null all through it fails at its first value, and
            # asked again from there reads on.
            while True:
                start = after
                finished, after, row_type = yield from self._read_arrow(
                    object, scope, key, fields, after, page_size, row_type)
                if finished:
                    return
                if after == start:
                    break
        yield from self._read_rows(object, scope, key, fields, after, page_size, columnar, row_type)

    def _ordered(self, object: str, scope: BoundScope | None, key: str | None,
                 fields: Sequence[str] | None, after: Position) -> tuple[sa.Select[Any], int]:
        """The read's statement: rows after `after` in key order, or without a key from the
        offset `after`; and that offset."""
        table, stmt = self._select(object, scope, fields)
        if key is None:
            offset = int(after or 0)
            return (stmt.offset(offset) if offset else stmt), offset
        key_column = self._column(table, key)
        if fields and key not in fields:
            stmt = stmt.add_columns(key_column)
        stmt = stmt.order_by(key_column)
        if after is not None:
            stmt = stmt.where(key_column > after)
        return stmt, 0

    def _read_rows(self, object: str, scope: BoundScope | None, key: str | None,
                   fields: Sequence[str] | None, after: Position, page_size: int,
                   columnar: bool, row_type: pa.StructType | None = None) -> Iterator[Page]:
        """The read by rows; a columnar one types its pages by `row_type`, or until a page
        has a value in every column, by their values (see arrow.rows_to_table)."""
        stmt, offset = self._ordered(object, scope, key, fields, after)
        key_index = None
        with self._reading() as conn:
            cursor, names = self._stream(conn, stmt)
            if key is not None:
                key_index = names.index(key)
            try:
                while rows := cursor.fetchmany(page_size):
                    offset += len(rows)
                    position = rows[-1][key_index] if key_index is not None else offset
                    if columnar:
                        arrow, row_type = rows_to_table(rows, names, row_type)
                        if arrow is not None:
                            yield Page(None, position, arrow)
                            continue
                    yield Page([dict(zip(names, row, strict=True)) for row in rows], position)
            finally:
                cursor.close()

    def _read_arrow(self, object: str, scope: BoundScope | None, key: str | None,
                    fields: Sequence[str] | None, after: Position, page_size: int,
                    row_type: pa.StructType | None
                    ) -> Generator[Page, None, tuple[bool, Position, pa.StructType | None]]:
        """The columnar read of PostgreSQL and SQLite: the same query run by an ADBC driver,
        whose Arrow batches come without a Python object per value (2-3 times faster) and
        without holding the GIL (sources read in threads read in parallel), converted to the
        types the row path gives and cut into its pages.

        Returns (True, ...) once every row is read, or (False, position, row type) for the row
        path to go on from: at once when ADBC cannot open the database or give a column or a
        parameter as the row path does; later when the driver fails or a batch holds a value
        the row path gives otherwise (NaN in a numeric, an infinite date, text in an INTEGER
        column of SQLite). A batch is converted whole before any of its pages is given out,
        so nothing is given twice. The row type is the one the row path would have taken from
        the pages given (`row_type` from before), so that it types the rest as it would have.
        """
        stmt, offset = self._ordered(object, scope, key, fields, after)
        names = [c.name for c in stmt.selected_columns]
        if len(set(names)) < len(names):
            return False, after, row_type
        query = self._postgres_arrow_query(stmt) if self.dialect == "postgresql" \
            else self._sqlite_arrow_query(object, stmt, page_size)
        if query is None:
            return False, after, row_type
        import adbc_driver_manager

        key_index = names.index(key) if key is not None else None
        position = after
        try:
            with query.connect() as adbc, adbc.cursor() as cursor:
                cursor.adbc_statement.set_options(**query.options)
                cursor.execute(query.sql, query.parameters)
                batches = (query.convert(batch, names) for batch in cursor.fetch_record_batch())
                for table in arrow_pages(batches, page_size):
                    offset += table.num_rows
                    position = offset if key_index is None else table.column(key_index)[-1].as_py()
                    if row_type is None and all(c.null_count < len(c) for c in table.columns):
                        row_type = pa.struct(table.schema)
                    yield Page(None, position, table)
        # The driver's errors come as its own, or as Arrow's (OSError) from the batch stream.
        except (adbc_driver_manager.Error, pa.ArrowException, OSError, Refused):
            return False, position, row_type
        return True, position, row_type

    def _postgres_arrow_query(self, stmt: sa.Select[Any]) -> ArrowQuery | None:
        uri = self._postgres_uri()
        if uri is None:
            return None
        import adbc_driver_postgresql.dbapi
        import psycopg

        with self._reading() as conn:
            driver = conn.connection.driver_connection
            assert driver is not None
            if driver.info.parameter_status("server_encoding") == b"SQL_ASCII":
                return None  # bytes in no known encoding, which only the row path decodes
            # Instants are typed with the session's zone, as the row path's values are.
            zone = pa.array([dt.datetime(2000, 1, 1, tzinfo=driver.info.timezone)]).type.tz
            found = [postgres_column(c.type, zone) for c in stmt.selected_columns]
            plans = [plan for plan in found if plan is not None]
            if len(plans) < len(found):
                return None
            columns = [sa.cast(c, sa.Text).label(c.name) if as_text else c
                       for c, (as_text, _) in zip(stmt.selected_columns, plans, strict=True)]
            sql, bound = self._compiled(stmt.with_only_columns(*columns, maintain_column_froms=True))
            # Parameters are bound into the text, quoted by psycopg's own literal adaptation
            # (that of psycopg.sql.Literal): their meaning is the row path's, where ADBC would
            # type them by their Python type (text compared with a date fails).
            with psycopg.ClientCursor(driver) as binding:
                literal = binding.mogrify(sql, bound)
        return ArrowQuery(
            functools.partial(adbc_driver_postgresql.dbapi.connect, uri, autocommit=True),
            literal, None,
            {"adbc.postgresql.batch_size_hint_bytes": str(arrow_reads.POSTGRES_BATCH_BYTES)},
            [convert for _, convert in plans], checked=False)

    def _postgres_uri(self) -> str | None:
        """The libpq URI of the connection the row path opens (SQLAlchemy's arguments for
        psycopg), or None when they are not all libpq's. It holds the password: never shown."""
        import psycopg

        _, arguments = self.engine.dialect.create_connect_args(self.engine.url)
        arguments.pop("context", None)  # psycopg's adapters, not a connection parameter
        arguments["connect_timeout"] = self.options.connect_timeout
        arguments["client_encoding"] = "UTF8"  # Arrow's text is UTF-8, whatever the database's
        known = {option.keyword.decode() for option in psycopg.pq.Conninfo.get_defaults()}
        if not known.issuperset(arguments):
            return None
        return "postgresql://?" + urlencode({k: str(v) for k, v in arguments.items()}, quote_via=quote)

    def _sqlite_arrow_query(self, object: str, stmt: sa.Select[Any],
                            page_size: int) -> ArrowQuery | None:
        url = self.engine.url
        path = url.database
        # Only a plain file: one in memory, named by a URI or opened with options is SQLAlchemy's
        # driver's alone. Nor a view, whose columns need not hold their declared types.
        if url.get_driver_name() != "pysqlite" or url.query or not path or path == ":memory:" \
                or path.startswith("file:"):
            return None
        schema, _, name = object.rpartition(".")
        if name in sa.inspect(self.engine).get_view_names(schema=schema or None):
            return None
        found = [sqlite_column(c.type) for c in stmt.selected_columns]
        converts = [convert for convert in found if convert is not None]
        if len(converts) < len(found):
            return None
        texts = [c for c in stmt.selected_columns if isinstance(c.type, sa.String)]
        if texts:
            # The driver reads a blob in a TEXT column as text: a last column flags the rows
            # holding one (a blob sorts after every text, and x'' before every blob).
            stmt = stmt.add_columns(sa.case((sa.or_(*[c >= sa.literal_column("x''") for c in texts]),
                                             1)).label("blob"))
        sql, bound = self._compiled(stmt)
        parameters = []
        for value in bound:
            value = int(value) if type(value) is bool else value  # as sqlite3 binds it
            if type(value) not in (int, float, str):
                return None  # sqlite3 and ADBC bind other types differently
            parameters.append(value)
        try:
            import adbc_driver_sqlite
            import adbc_driver_sqlite.dbapi
        except ModuleNotFoundError:
            return None  # without the `sqlite` extra, SQLite reads take the row path

        # Read-only: a file that is gone is not created anew.
        uri = Path(path).absolute().as_uri() + "?mode=ro"
        # Batches of a page at least: the driver types each column by the first one.
        options = {adbc_driver_sqlite.StatementOptions.BATCH_ROWS.value: str(max(page_size, 1024))}
        return ArrowQuery(functools.partial(adbc_driver_sqlite.dbapi.connect, uri, autocommit=True),
                           sql, tuple(parameters) or None, options, converts, checked=bool(texts))

    def _compiled(self, stmt: sa.Select[Any]) -> tuple[str, Any]:
        """The statement's SQL for the driver, and its parameters in the driver's style."""
        compiled = stmt.compile(dialect=self.engine.dialect,
                                compile_kwargs={"render_postcompile": True})
        params = compiled.construct_params()
        if compiled.positional:
            return str(compiled), tuple(params[name] for name in compiled.positiontup or ())
        return str(compiled), params

    def _stream(self, conn: Connection, stmt: sa.Select[Any]) -> tuple[Any, list[str]]:
        """A driver cursor streaming the statement's rows, and the column names.

        Rows come straight from the driver: SQLAlchemy's per-row result processing costs more
        than the rest of a migration, and the transform and conform steps type the values.
        """
        sql, bound = self._compiled(stmt)
        driver = conn.connection.driver_connection
        assert driver is not None
        if self.dialect == "postgresql":
            cursor = driver.cursor(name=f"patchbay_read_{id(stmt):x}")
        elif self.dialect == "mysql":
            import pymysql.cursors

            cursor = driver.cursor(pymysql.cursors.SSCursor)
        else:
            cursor = driver.cursor()
        cursor.execute(sql, bound)
        return cursor, [c[0] for c in cursor.description]

    def get(self, object: str, key: str, values: Sequence[KeyValue],
            fields: Sequence[str] | None = None) -> dict[KeyValue, Record]:
        table = self.table(object)
        key_column = self._column(table, key)
        columns = [self._column(table, f) for f in fields] if fields else list(table.columns)
        if fields and key not in fields:
            columns.append(key_column)
        found: dict[KeyValue, Record] = {}
        distinct = list(dict.fromkeys(v for v in values if v is not None))
        names = [c.name for c in columns]
        with self._reading() as conn:
            driver = conn.connection.driver_connection
            assert driver is not None
            position = names.index(key)
            if self.dialect == "postgresql" and _fits_one_array(distinct, key_column):
                # One array parameter instead of thousands of placeholders to render and parse,
                # and rows straight from the driver (see _stream).
                with driver.cursor() as cursor:
                    cursor.execute(f"SELECT {', '.join(quote_name(n) for n in names)} FROM "
                                   f"{quoted_table(table)} WHERE {quote_name(key)} = ANY(%s)",
                                   (distinct,))
                    for row in cursor.fetchall():
                        found[row[position]] = dict(zip(names, row, strict=True))
                return found
            stmt = sa.select(*columns).where(key_column.in_(sa.bindparam("keys", expanding=True)))
            for start in range(0, len(distinct), 5000):
                chunk = distinct[start:start + 5000]
                for row in conn.execute(stmt, {"keys": chunk}):
                    found[row[position]] = dict(zip(names, row, strict=True))
        return found

    def _connect(self) -> Connection:
        try:
            return self.engine.connect()
        except sa_exc.DBAPIError as exc:
            raise self._connection_failed(exc) from None

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        """A connection for reads; losing it mid-way is a retriable error, not a crash."""
        dbapi_error = self.engine.dialect.loaded_dbapi.Error
        try:
            with self._connect() as conn:
                yield conn
        except (sa_exc.DBAPIError, dbapi_error) as exc:
            lost = is_connection_error(exc) if isinstance(exc, sa_exc.DBAPIError) \
                else lost_connection(exc)
            if lost:
                reason = str(exc.orig if isinstance(exc, sa_exc.DBAPIError) else exc)
                raise RetriableError(f"system '{self.name}' lost its connection: "
                                     f"{reason.strip().splitlines()[0]}", system=self.name) from exc
            raise

    @property
    def captures(self) -> bool:
        """The system's database has change capture (`capture`)."""
        return self.dialect in ("postgresql", "mysql")

    def capture(self) -> Capture:
        """The change capture of the system's database: `pgcapture` or `mycapture`."""
        from patchbay.connectors.sql import mycapture, pgcapture

        captures: dict[str, Capture] = {"postgresql": pgcapture, "mysql": mycapture}
        if not self.captures:
            raise SpecError(f"system '{self.name}' is not PostgreSQL, MySQL or MariaDB: change "
                            "capture needs one of them; use trigger.changes: poll with a "
                            "watermark")
        return captures[self.dialect]

    @contextmanager
    def capture_setup(self) -> Iterator[Connection]:
        """A transaction for installing or removing change capture (`capture`), committed
        when the block ends without an error; a refusal of the database is a PatchbayError."""
        self.capture()  # refuses a database without change capture
        try:
            with self._reading() as conn:
                yield conn
                conn.commit()
        except sa_exc.DBAPIError as exc:
            raise PatchbayError(f"system '{self.name}': {first_line(exc)}") from exc

    # -- changes --------------------------------------------------------------------------------

    def changes(self, object: str, cursor: Mapping[str, Any] | None,
                fields: Sequence[str] | None = None, limit: int = 2000, *,
                digest_key: bytes | None = None) -> tuple[list[Change], dict[str, Any]]:
        """Rows inserted or updated since `cursor`, in watermark order, and the cursor after them.

        A table says nothing of its changes, so they are polled by a watermark column: an
        updated-at timestamp, or a number that only grows (an identity column, a version).
        The cursor carries that configuration as well as the position, and every cursor
        returned keeps it; the first call passes only the configuration:

            {"watermark": "updated_at", "key": "id"}              (key: default the primary key)
            {"watermark": "updated_at", "key": "id", "overlap_seconds": 1, "created": "created_at"}
            {"watermark": "id", "key": "id"}                       (new rows by increasing id)

        The returned cursor adds `position` (the watermark value of the last row read in order:
        ISO text for a timestamp or date, a number as is, a decimal as text; null until a row is
        read) and `taken` (how many rows of that value, in key order, were read), `late_from`
        (where the next re-read of the late window starts) and `seen`, what it remembers of the
        rows already delivered from `late_from` on: for each, keyed digests of its key and
        watermark value, and of those and its values ("pair:row", see `changes.seal`), never the
        row's key or values, so a cursor says nothing of a record (one a correlation never shares,
        say) to whoever reads it without `digest_key`. The engine passes its state's key
        (store/secrets.py); a caller that passes none gets this connector's own, drawn at random,
        and a cursor it stored then recognises its rows only on this connector (on another, the
        rows of its window are delivered once more). Everything in the cursor is JSON, to be
        stored and handed back as it is.

        Each call reads the rows ahead of where the last stopped (the position's rows after
        the first `taken`, then the rows after the position), in watermark then key order,
        each once. Then, once those have been read to the end (a page with room left), or
        when the window has grown past two overlaps during a long drain (with half of each
        page), it re-reads the late window: the rows from `late_from` up to the position's
        last. A row there whose key and watermark value are in `seen` with the same
        values is skipped; one not in it was committed late, and one with other values is a
        second change sharing its timestamp with the first, delivered with a version of its
        own (`<watermark value>#<row digest>`, so message ids differ). So a burst of rows
        drained page by page is read about twice (in order, then the window once), not once per page,
        and each change is delivered exactly once.

        Late commits: a transaction can stamp a row, then commit after rows stamped later were
        read. `overlap_seconds` (a number of the watermark's own units for a numeric
        watermark) keeps the window that far behind the position of every call since the
        window was last read whole (`late_from`): a row that was not visible to a call is
        stamped after that call's position less the overlap, so the next re-read finds it.
        On PostgreSQL each call also asks `pg_stat_activity` when the oldest transaction open
        in the database began (the call's own time when none is), and the window reaches back
        to where such a transaction could still commit (see `late_floor`): for a timestamp or
        date, to that start, as anything it or a later transaction commits is stamped at or
        after it when the database's clock stamps it (now(), a default, a trigger); for a
        number taken from a sequence, to the highest number visible before it began
        (`open_since`, `marks`). So nothing committed late is lost, whatever the overlap. A
        user that cannot see other users' sessions (neither superuser nor pg_read_all_stats)
        takes the oldest one for DEFAULT_OVERLAP_SECONDS older than what it sees, and logs a
        warning. Without `overlap_seconds` the overlap is 0 on PostgreSQL and for numbers,
        and DEFAULT_OVERLAP_SECONDS for a timestamp or date watermark elsewhere (SQLite,
        MySQL: they cannot say which transactions are open). `seen` holds the rows of the
        window: a bulk update stamping a million rows alike, or a transaction left open for
        an hour, makes it large.

        Every change is UPDATED, unless the cursor names a `created` column: a row whose
        created value equals its watermark value is then CREATED (`"created": "id"` with an
        id watermark makes every change CREATED). `at` is the watermark value when it is a
        timestamp. The record holds the row, or `fields` plus the key and the watermark.
        The key must be unique. Rows whose watermark is null are never delivered, and
        deletes cannot be seen by polling a table.

        A cursor with `"cdc": true` (and a `consumer`) reads the table's capture instead, on
        PostgreSQL, MySQL or MariaDB once `patchbay cdc install` has set it up: inserts,
        updates and deletes, with no watermark column; see `pgcapture.changes` for its cursor.
        """
        if cursor and cursor.get("cdc"):
            capture = self.capture()
            table = self.table(object)
            with self._reading() as conn:
                captured = capture.changes(conn, self.name, object, table, cursor, fields,
                                           limit, capture.schema_of(self.system))
                conn.commit()
            return captured
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        table = self.table(object)
        config = dict(cursor or {})
        for entry in config:
            if entry not in CURSOR_ENTRIES:
                raise SpecError(f"changes of table '{object}' of system '{self.name}': unknown "
                                f"cursor entry '{entry}'{suggest(entry, CURSOR_ENTRIES)}; "
                                f"known entries: {', '.join(CURSOR_ENTRIES)}")
        watermark_name = config.get("watermark")
        if not watermark_name:
            raise SpecError(f"changes of table '{object}' of system '{self.name}' need a cursor "
                            'naming the watermark column, such as {"watermark": "updated_at", '
                            '"key": "id"}')
        key_name = config.get("key") or self.describe(object).key
        if not key_name:
            raise SpecError(f"table '{object}' of system '{self.name}' has no single-column "
                            "primary key: name the key column in the changes cursor")
        watermark = self._column(table, str(watermark_name))
        key = self._column(table, str(key_name))
        created_name = config.get("created") or None
        if created_name is not None:
            self._column(table, str(created_name))
        kind = python_type(watermark)
        timed, numbered = kind in (dt.datetime, dt.date), kind in (int, float, Decimal)
        overlap = config.get("overlap_seconds")
        if overlap is None:
            overlap = DEFAULT_OVERLAP_SECONDS if timed and self.dialect != "postgresql" else 0
        if isinstance(overlap, bool) or not isinstance(overlap, int | float) or overlap < 0 \
                or (overlap and kind not in (dt.datetime, dt.date, int, float, Decimal)):
            raise SpecError(f"changes of table '{object}' of system '{self.name}': overlap_seconds "
                            f"must be a number of at least 0 (and 0 unless the watermark "
                            f"'{watermark_name}' is a timestamp, a date or a number), not {overlap!r}")
        position = from_json(config.get("position"), kind)
        # The last read in order stopped after the first `taken` rows (in key order) of those
        # stamped `position`: a count, not the last row's key, which the cursor must not hold.
        # (A row of the position that moved or went since makes the next read skip one it has
        # not read; the late window, which reaches the position, reads that one.) A cursor
        # from before `taken` names the last row (`after_key`): its rank is counted once. One
        # from before after_key goes on from the position's first row, skipping what it
        # remembers: each remembered row takes one more row of the read.
        taken = int(config.get("taken") or 0)
        after_key = key_from_json(config["after_key"], python_type(key)) \
            if position is not None and "taken" not in config and "after_key" in config else None
        if "late_from" in config:
            late_from = from_json(config["late_from"], kind)
        elif position is not None:  # a cursor from before late_from: where it would re-read
            late_from = minus(position, overlap)
            held, floor = late_floor(config, kind)
            if held:
                late_from = None if floor is None else min(late_from, floor)
        else:
            late_from = None
        if late_from is not None and position is not None:  # an overlap given anew counts
            late_from = min(late_from, minus(position, overlap))
        secret = self.digest_key if digest_key is None else digest_key
        remembered = remembered_rows(config.get("seen") or (), secret, kind)
        hidden = len(remembered) if position is not None and not {"taken", "after_key"} & config.keys() \
            else 0

        names = list(dict.fromkeys([*(fields or table.c.keys()), key.name, watermark.name,
                                    *([str(created_name)] if created_name else [])]))
        shown = names if not fields or created_name in (None, *fields) \
            else [n for n in names if n != created_name]
        in_order = sa.select(*[self._column(table, n) for n in names]) \
            .where(watermark.is_not(None)).order_by(watermark, key)
        # The late window is re-read once the reads in order have caught up (so a burst of
        # rows is read about once, not once per page), and during a long drain whenever it
        # has grown past two overlaps (then with half of each page). Without an overlap
        # (PostgreSQL) the window reaches back to the oldest transaction open, which another
        # application may hold open for long: it is read once the drain has caught up.
        late_due = position is not None and late_from is not None and bool(overlap) and \
            minus(minus(position, overlap), overlap) > late_from
        budget = max(1, limit // 2) if late_due else limit
        wanted = budget + hidden
        at_position = None if position is None else \
            sa.and_(watermark >= self._watermark_bound(position),
                    watermark <= self._watermark_bound(position, last=True))
        after_position = in_order if position is None else \
            in_order.where(watermark > self._watermark_bound(position, last=True))

        with self._reading() as conn:
            # A mark, before the transactions open are asked for: when none began before it,
            # the next read may start from it.
            mark = tuple(conn.execute(sa.select(sa.func.max(watermark),
                                                sa.func.clock_timestamp())).one()) \
                if numbered and self.dialect == "postgresql" else None
            # Asked before the rows are read: a transaction that commits after the read was
            # open then, or began later.
            since = self._open_since(conn) if timed or numbered else None
            rows: list[Any] = []
            if at_position is not None:
                if after_key is not None:
                    taken = conn.execute(sa.select(sa.func.count()).select_from(table).where(
                        at_position, key <= after_key)).scalar_one()
                # The rest of the position's rows, then those after it.
                rows = list(conn.execute(in_order.where(at_position).offset(taken)
                                         .limit(wanted)).all())
            if len(rows) < wanted:
                rows += conn.execute(after_position.limit(wanted - len(rows))).all()
            caught_up = len(rows) < wanted
            late_rows: Sequence[Any] = ()
            late_limit = limit + len(remembered) + len(rows)
            reading_late = position is not None and (late_due or caught_up)
            if reading_late:
                # The rows at or before where the last read stopped that it did not see:
                # committed late, or changed again without their watermark moving. Read
                # after the rows ahead, so a row committed in between is in one or the other.
                # Rows of the position read in order by this call are in both: taken once.
                late = in_order.where(watermark <= self._watermark_bound(position, last=True))
                if late_from is not None:
                    late = late.where(watermark >= self._watermark_bound(late_from))
                late_rows = conn.execute(late.limit(late_limit)).all()

        found: list[Change] = []
        # The rows read by this call, delivered or skipped: pair digest -> (row digest,
        # watermark value). Only these are known to be within the window still.
        read: dict[str, tuple[str | None, Any]] = {}
        top = position

        def take(row: Any, found: list[Change]) -> Any:
            values = dict(zip(names, row, strict=True))
            version = values[watermark.name]
            pair, digest = seal(secret, values[key.name], version, row_digest(values))
            known = pair in read or pair in remembered
            before = read[pair][0] if pair in read else remembered.get(pair)
            read[pair] = (digest, version)
            if known and before in (None, digest):
                return version
            created = created_name is not None and values[str(created_name)] == version
            record = values if shown is names else {n: values[n] for n in shown}
            found.append(Change(
                self.name, object, values[key.name],
                ChangeKind.CREATED if created else ChangeKind.UPDATED, record,
                at=version if isinstance(version, dt.datetime) else None,
                # The same row changed again without its watermark moving.
                version=f"{to_json(version)}#{digest}" if known else None))
            return version

        for row in rows:
            version = take(row, found)
            taken = taken + 1 if version == top else 1
            top = version
            if len(found) >= budget:
                break
        # Read whole: every row of the window is delivered or remembered.
        late_read = reading_late and len(late_rows) < late_limit
        late_found: list[Change] = []
        for row in late_rows:
            if len(found) + len(late_found) >= limit:
                late_read = False
                break
            take(row, late_found)
        found = late_found + found  # in watermark order: the late rows are all before

        after: dict[str, Any] = {"watermark": watermark.name, "key": key.name,
                                 "overlap_seconds": overlap}
        if created_name is not None:
            after["created"] = created_name
        # Where a row not visible to this call can still commit: an overlap behind the
        # position, or (PostgreSQL) where the oldest transaction open could stamp it.
        window = None if top is None else minus(top, overlap)
        if since is not None and timed:
            horizon = watermark_time(since, watermark)
            if window is not None and horizon < window:
                window = horizon
        elif since is not None and mark is not None:
            after["open_since"] = since[0].isoformat()
            after["marks"] = updated_marks(config, since[0], mark)
            floor = late_floor(after, kind)[1]
            window = None if floor is None or window is None else min(window, floor)
        if position is not None and not late_read:
            # The late window was not read whole: what it holds is still to be read.
            window = None if late_from is None or window is None else min(window, late_from)
        after["position"] = to_json(top)
        if top is not None:
            after["taken"] = taken
            after["late_from"] = to_json(window)
        # Everything delivered from where the next late read starts (from the first row: all).
        # A remembered row is kept by its watermark value, which the cursor does not hold:
        # the rows this call read are kept by theirs. A late window read whole (up to the
        # position, so every remembered row lies in it) read every remembered row that still
        # holds its watermark value; one it did not read has moved on, and is forgotten.
        # Otherwise those not read are kept: they lie after `late_from`, where the next
        # late read starts.
        kept = {pair: digest for pair, (digest, version) in read.items()
                if window is None or version >= window}
        if not late_read:
            kept = {**{pair: remembered[pair] for pair in remembered.keys() - read.keys()}, **kept}
        after["seen"] = [pair if digest is None else f"{pair}:{digest}"
                         for pair, digest in kept.items()]
        return found, after

    def _open_since(self, conn: Connection) -> tuple[dt.datetime, dt.datetime] | None:
        """When the oldest transaction open in the database began (now, when none is), by the
        database's clock: aware, and as a timestamp without time zone in the session's time
        zone (as now() is stored in such a column); None where that cannot be known (not
        PostgreSQL)."""
        if self.dialect != "postgresql":
            return None
        # Sessions of other users hide their times from a user without pg_read_all_stats.
        aware, local, hidden = conn.execute(sa.text(
            "SELECT h, h::timestamp, hidden FROM (SELECT least(statement_timestamp(), "
            "min(xact_start) FILTER (WHERE backend_type = 'client backend' "
            "AND state <> 'idle in transaction (aborted)')) AS h, "
            "count(*) FILTER (WHERE query = '<insufficient privilege>') AS hidden "
            "FROM pg_stat_activity WHERE datname = current_database() "
            "AND pid <> pg_backend_pid()) AS open")).one()
        if hidden:
            if not self._warned_hidden:
                log.warning("system '%s': the polling user cannot see other users' transactions "
                            "(grant it pg_read_all_stats); re-reading %s s behind the ones it "
                            "sees", self.name, DEFAULT_OVERLAP_SECONDS)
                self._warned_hidden = True
            behind = dt.timedelta(seconds=DEFAULT_OVERLAP_SECONDS)
            aware, local = aware - behind, local - behind
        return aware, local

    def _watermark_bound(self, value: Any, last: bool = False) -> Any:
        """A bound of a changes query. SQLite keeps timestamps as text, with or without a
        fraction of a second ('2024-05-01 10:00:00', '... 10:00:00.000000'): the bound is the
        shortest text of the instant, which sorts before every other text of it, or with
        `last` the longest (six digits of fraction), which sorts after every other."""
        if self.dialect != "sqlite" or not isinstance(value, dt.datetime):
            return value
        text = f"{value:%Y-%m-%d %H:%M:%S}"
        if last:
            text += f".{value.microsecond:06d}"
        elif value.microsecond:
            text += f".{value.microsecond:06d}".rstrip("0")
        return sa.literal(text, sa.String())

    # -- write ----------------------------------------------------------------------------------

    def write(self, object: str, records: Sequence[Record], operation: Operation,
              key: str) -> list[Outcome]:
        table = self.table(object)
        self._column(table, key)
        if not records:
            return []
        todo, outcomes = last_per_key(records, key)
        unknown = [c for c in records[todo[0]] if c not in table.c] if todo else []
        if unknown:
            raise SpecError(f"table '{object}' of system '{self.name}' has no column "
                            f"'{unknown[0]}'{suggest(unknown[0], table.c.keys())}")

        def write(conn: Connection, indexes: list[int]) -> list[Outcome]:
            statuses = self._write_batch(conn, table, [records[i] for i in indexes], operation, key)
            return [Outcome(records[i].get(key), status, reason,
                            "NOT_FOUND" if reason and status is Status.SKIPPED else None)
                    for i, (status, reason) in zip(indexes, statuses, strict=True)]

        self._isolating(table, records, todo, key, outcomes, write)
        return completed(records, key, outcomes)

    def write_if(self, object: str, records: Sequence[Record], operation: Operation,
                 key: str, expected: Sequence[Expected]) -> list[Outcome]:
        """One UPDATE (or DELETE) per record, `WHERE key = :k AND` each expected field holds
        one of its values, in one transaction: no row matched means the record changed since
        (STALE) or is gone (SKIPPED). An upsert inserts the records no row has the key of
        yet (as `write` does, in bulk) and updates the others so. A batch the database
        refuses is halved until a bad record fails alone, as `write` does."""
        if operation not in (Operation.UPDATE, Operation.DELETE, Operation.UPSERT):
            raise ValueError(f"a conditional write updates or deletes, not {operation.value}s")
        table = self.table(object)
        key_column = self._column(table, key)
        unknown = [c for r, e in zip(records, expected, strict=True) for c in (*r, *e)
                   if c not in table.c]
        if unknown:
            raise SpecError(f"table '{object}' of system '{self.name}' has no column "
                            f"'{unknown[0]}'{suggest(unknown[0], table.c.keys())}")
        outcomes: list[Outcome | None] = [None] * len(records)
        todo = list(range(len(records)))
        if operation is Operation.UPSERT:
            # A record no row has the key of is inserted: only this writer's own delivery of
            # it could be making it (its key is the sync's), so there is nothing to expect.
            with self._reading() as conn:
                present = {row[0] for chunk in range(0, len(records), 5000)
                           for row in conn.execute(sa.select(key_column).where(key_column.in_(
                               [r[key] for r in records[chunk:chunk + 5000]])))}
            absent = [at for at in todo if records[at][key] not in present]
            if absent:
                for at, outcome in zip(absent, self.write(object, [records[at] for at in absent],
                                                          Operation.UPSERT, key), strict=True):
                    outcomes[at] = outcome
            todo, operation = [at for at in todo if records[at][key] in present], Operation.UPDATE

        def one(conn: Connection, record: Record, expect: Expected) -> Outcome:
            held = [sa.or_(*(table.c[name].is_(None) if value is None
                             else table.c[name] == value for value in values))
                    for name, values in expect.items()]
            where = (key_column == record[key], *held)
            values = {name: value for name, value in record.items() if name != key}
            if operation is Operation.DELETE:
                matched = conn.execute(sa.delete(table).where(*where)).rowcount
            elif values:
                matched = conn.execute(sa.update(table).where(*where).values(values)).rowcount
            else:
                matched = len(conn.execute(sa.select(key_column).where(*where)).all())
            if matched:
                return Outcome(record[key], Status.DELETED if operation is Operation.DELETE
                               else Status.UPDATED)
            there = conn.execute(sa.select(key_column).where(key_column == record[key])).first()
            if there is None:
                return Outcome(record[key], Status.SKIPPED, "no record with this key",
                               "NOT_FOUND")
            return Outcome(record[key], Status.STALE, "the record changed there since it was "
                           "read", "STALE")

        def each(conn: Connection, ats: list[int]) -> list[Outcome]:
            if self.dialect != "postgresql":
                return [one(conn, records[at], expected[at]) for at in ats]
            return self._conditional_together(conn, table, key, operation, records, expected,
                                              ats, one)

        self._isolating(table, records, todo, key, outcomes, each)
        return [o if o is not None else Outcome(None, Status.FAILED, "not written")
                for o in outcomes]

    @staticmethod
    def _conditional_together(conn: Connection, table: sa.Table, key: str,
                              operation: Operation, records: Sequence[Record],
                              expected: Sequence[Expected], ats: list[int],
                              one: Callable[[Connection, Record, Expected], Outcome]
                              ) -> list[Outcome]:
        """`write_if`'s statements on PostgreSQL: the records that set and expect the same
        fields go in one UPDATE (or DELETE) joined to them as arrays (`unnest`, one
        parameter a column), which returns those that matched: a statement per record costs
        a round trip each, the most of an initial sync's stamping. A record unmatched, one
        whose key recurs in the batch (a join updates a row once), that sets nothing, or of
        a column type no array carries, is written alone."""
        key_column = table.c[key]
        found: dict[int, Outcome] = {}
        groups: dict[tuple[tuple[str, ...], tuple[str, ...]], list[int]] = {}
        alone: list[int] = []
        counted = Counter(records[at][key] for at in ats)
        for at in ats:
            record, expect = records[at], expected[at]
            setting = tuple(sorted(n for n in record if n != key))
            if counted[record[key]] > 1 or any(not values for values in expect.values()) \
                    or (not setting and operation is not Operation.DELETE) \
                    or not all(_arrayable(table.c[n].type) for n in (key, *setting, *expect)):
                alone.append(at)
            else:
                groups.setdefault((setting, tuple(sorted(expect))), []).append(at)
        for (setting, expecting), group in groups.items():
            # Each expected field takes as many columns as its longest list of values (a
            # shorter list repeats its last value).
            width = {n: max(len(expected[at][n]) for at in group) for n in expecting}
            columns: dict[str, tuple[Any, list[Any]]] = {
                "n": (sa.Integer(), group), "k": (key_column.type, [records[at][key] for at in group])}
            for i, name in enumerate(setting):
                columns[f"v{i}"] = (table.c[name].type, [records[at][name] for at in group])
            for i, name in enumerate(expecting):
                for j in range(width[name]):
                    columns[f"e{i}_{j}"] = (table.c[name].type, [
                        values[min(j, len(values) - 1)]
                        for values in (expected[at][name] for at in group)])
            given = sa.func.unnest(*(sa.bindparam(c, values, type_=postgresql.ARRAY(kind))
                                     for c, (kind, values) in columns.items())
                                   ).table_valued(*columns, name="given").render_derived()
            where = [key_column == given.c.k,
                     *(sa.or_(*(table.c[n].is_not_distinct_from(given.c[f"e{i}_{j}"])
                                for j in range(width[n]))) for i, n in enumerate(expecting))]
            statement = sa.delete(table).where(*where) if operation is Operation.DELETE \
                else sa.update(table).where(*where).values(
                    {n: given.c[f"v{i}"] for i, n in enumerate(setting)})
            matched = {row[0] for row in conn.execute(statement.returning(given.c.n))}
            for at in group:
                if at in matched:
                    found[at] = Outcome(records[at][key], Status.DELETED
                                        if operation is Operation.DELETE else Status.UPDATED)
                else:
                    alone.append(at)  # stale or gone: the record alone says which
        for at in alone:
            found[at] = one(conn, records[at], expected[at])
        return [found[at] for at in ats]

    def accepts_tables(self, object: str, operation: Operation, key: str) -> bool:
        return (self.dialect == "postgresql" and operation is Operation.UPSERT
                and self._has_unique(self.table(object), key))

    def write_table(self, object: str, table: Any, operation: Operation,
                    key: str) -> dict[Status, int] | None:
        """Upsert an Arrow table into PostgreSQL in one COPY; None hands the batch back to
        the record path, which isolates whatever the database refused."""
        if not self.accepts_tables(object, operation, key):
            return None
        target = self.table(object)
        keys = table[key]
        if keys.null_count or pc.count_distinct(keys).as_py() != len(keys):
            return None
        from patchbay.connectors.sql.pgcopy import PostgresCopyWriter

        dbapi_error = self.engine.dialect.loaded_dbapi.Error
        try:
            with self.engine.begin() as conn:
                statuses = PostgresCopyWriter(conn, target, key).write_table(table, operation)
        except (sa_exc.DBAPIError, dbapi_error):
            return None
        counts: Counter[Status] = Counter()
        for (status, _), count in Counter(statuses).items():  # counted whole, in C
            counts[status] += count
        return dict(counts)

    def get_table(self, object: str, key: str, values: Sequence[KeyValue], schema: Any) -> Any:
        """Read back records as an Arrow table; PostgreSQL only."""
        if self.dialect != "postgresql":
            return None
        from patchbay.connectors.sql import pgtables
        from patchbay.connectors.sql.pgcopy import key_condition

        target = self.table(object)
        where, params = key_condition(quote_name(key), values)
        # One row back, one aggregate per column (see pgtables.ReadBack). The aggregates of one
        # query take the rows in one order, whichever it is, so the columns line up; the rows
        # are not sorted (a third of the query's cost): the comparison matches them by key.
        with self._reading() as conn:
            # One statement needs no transaction: without one, no BEGIN before it and no
            # ROLLBACK when the connection goes back to the pool (two round trips a batch).
            conn.execution_options(isolation_level="AUTOCOMMIT")
            driver = conn.connection.driver_connection
            assert driver is not None
            columns = [target.c[name] for name in schema.names]
            read_back = pgtables.ReadBack(schema, [
                pgtables.Column(quote_name(c.name), binary_copy_type(c, conn.dialect), bool(c.nullable))
                for c in columns], driver.info.encoding)
            with driver.cursor(binary=True) as cursor:
                cursor.adapters.register_loader("bytea", pgtables.RawLoader)
                cursor.adapters.register_loader("text", pgtables.RawLoader)
                cursor.execute(f"SELECT count(*), {', '.join(read_back.aggregates)} "
                               f"FROM {quoted_table(target)} WHERE {where}", params)
                row = cursor.fetchone()
        assert row is not None
        count = row[0]
        if not count:
            return schema.empty_table()
        table = read_back.table(count, row[1:])
        if table is not None and where.startswith(quote_name(key) + " BETWEEN"):
            table = table.filter(pc.is_in(table[key], value_set=pa.array(values, table[key].type)))
        return table

    def _isolating(self, table: sa.Table, records: Sequence[Record], indexes: list[int], key: str,
                   outcomes: list[Outcome | None],
                   write: Callable[[Connection, list[int]], list[Outcome]]) -> None:
        """Write `indexes` in one transaction; if the database refuses, halve until the bad
        records stand alone."""
        if not indexes:
            return
        try:
            with self.engine.begin() as conn:
                written = write(conn, indexes)
        except sa_exc.DBAPIError as exc:
            if is_connection_error(exc):
                raise RetriableError(f"system '{self.name}' connection lost while writing "
                                     f"{table.name}: {first_line(exc)}", system=self.name,
                                     object=table.name) from exc
            if len(indexes) == 1:
                index = indexes[0]
                outcomes[index] = Outcome(records[index].get(key), Status.REJECTED,
                                          first_line(exc), error_code(exc))
                return
            middle = len(indexes) // 2
            self._isolating(table, records, indexes[:middle], key, outcomes, write)
            self._isolating(table, records, indexes[middle:], key, outcomes, write)
            return
        for index, outcome in zip(indexes, written, strict=True):
            outcomes[index] = outcome

    def _write_batch(self, conn: Connection, table: sa.Table, batch: list[Record],
                     operation: Operation, key: str) -> list[tuple[Status, str | None]]:
        if self.dialect == "postgresql" and self._has_unique(table, key):
            from patchbay.connectors.sql.pgcopy import PostgresCopyWriter

            dbapi_error = self.engine.dialect.loaded_dbapi.Error
            try:
                return PostgresCopyWriter(conn, table, key).write(batch, operation)
            except dbapi_error as exc:  # raised by the raw driver cursor, not wrapped by SQLAlchemy
                raw = conn.connection.driver_connection
                lost = bool(getattr(raw, "closed", False) or getattr(raw, "broken", False))
                raise sa_exc.DBAPIError.instance(None, None, exc, dbapi_error,
                                                 connection_invalidated=lost) from exc
        return self._write_generic(conn, table, batch, operation, key)

    def _has_unique(self, table: sa.Table, key: str) -> bool:
        if [c.name for c in table.primary_key.columns] == [key]:
            return True
        for constraint in table.constraints:
            if isinstance(constraint, sa.UniqueConstraint) and [c.name for c in constraint.columns] == [key]:
                return True
        return any(index.unique and [c.name for c in index.columns] == [key] for index in table.indexes)

    def _write_generic(self, conn: Connection, table: sa.Table, batch: list[Record],
                       operation: Operation, key: str) -> list[tuple[Status, str | None]]:
        key_column = table.c[key]
        existing: dict[KeyValue, Record] = {}
        keys = [r[key] for r in batch]
        for start in range(0, len(keys), 5000):
            chunk = keys[start:start + 5000]
            for row in conn.execute(sa.select(table).where(key_column.in_(chunk))).mappings():
                existing[row[key]] = dict(row)
        statuses: list[tuple[Status, str | None]] = []
        inserts: list[Record] = []
        updates: list[Record] = []
        deletes: list[KeyValue] = []
        for record in batch:
            current = existing.get(record[key])
            if operation is Operation.DELETE:
                if current is None:
                    statuses.append((Status.SKIPPED, "no record with this key"))
                else:
                    deletes.append(record[key])
                    statuses.append((Status.DELETED, None))
            elif current is None:
                if operation is Operation.UPDATE:
                    statuses.append((Status.SKIPPED, "no record with this key"))
                else:
                    inserts.append(record)
                    statuses.append((Status.CREATED, None))
            elif operation is Operation.INSERT:
                statuses.append((Status.SKIPPED, None) if not same_values(record, current)
                                else (Status.UNCHANGED, None))
            elif same_values(record, current):
                statuses.append((Status.UNCHANGED, None))
            else:
                updates.append(record)
                statuses.append((Status.UPDATED, None))
        for _, group in _by_columns(inserts):
            conn.execute(sa.insert(table), group)
        if updates:
            for columns, group in _by_columns(updates):
                stmt = (sa.update(table).where(key_column == sa.bindparam("_key"))
                        .values({c: sa.bindparam(c) for c in columns if c != key}))
                conn.execute(stmt, [{**r, "_key": r[key]} for r in group])
        if deletes:
            conn.execute(sa.delete(table).where(key_column.in_(deletes)))
        return statuses


def _by_columns(records: list[Record]) -> Iterator[tuple[tuple[str, ...], list[Record]]]:
    groups: dict[tuple[str, ...], list[Record]] = {}
    for record in records:
        groups.setdefault(tuple(record), []).append(record)
    yield from groups.items()


def _fits_one_array(values: Sequence[Any], column: sa.Column[Any]) -> bool:
    """Whether `values` can be sent as one PostgreSQL array of the column's type.

    psycopg cannot send a list of mixed types (lookups ask for 42 and "42" at once), nor
    compare a text array with an integer column; such values take the IN (...) path, where
    each text parameter is untyped and PostgreSQL reads it as the column's type.
    """
    try:
        expected = column.type.python_type
    except NotImplementedError:
        return False
    return len({type(v) for v in values}) <= 1 and all(isinstance(v, expected) for v in values)


def _sqlite_foreign_keys(dbapi_connection: Any, _record: Any) -> None:
    """SQLite enforces declared foreign keys only when asked, once per connection."""
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _arrayable(kind: Any) -> bool:
    """Whether values of a column of this type go in a PostgreSQL array parameter: not of a
    type the reflection did not know, nor arrays themselves."""
    return not isinstance(kind, (sa.types.NullType, sa.ARRAY))
