"""Fixtures for the integration tests: real PostgreSQL, MariaDB and SQLite databases.

The services are used for real. Their URLs come from PATCHBAY_TEST_PG and
PATCHBAY_TEST_MYSQL (defaults: the local services CI starts). A service that cannot be
reached fails the tests that need it, with a message saying which URL was tried; it is
never skipped, so a CI without its databases cannot pass silently.

Every test creates its tables with a unique suffix and drops them afterwards, so parallel
runs against the same databases do not collide.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import nats
import pika
import pika.exceptions
import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from patchbay.spec import redact_url
from patchbay.urls import sqlalchemy_url

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_MYSQL = "mysql://root@127.0.0.1:3306/test"
STRICT_MODE = "STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION"

PATCHBAY = [sys.executable, "-m", "patchbay.cli"]


def _unreachable(service: str, url: str, variable: str, exc: BaseException) -> None:
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    pytest.fail(
        f"{service} is not reachable at {redact_url(url)}: {reason}\n"
        f"Start the service (CI runs .ci/run, which does) or point {variable} at one.",
        pytrace=False,
    )


def _engine(url: str) -> Engine:
    connect_args: dict[str, Any] = {}
    if not url.startswith("sqlite"):
        connect_args["connect_timeout"] = 5
    return sa.create_engine(sqlalchemy_url(url), connect_args=connect_args)


def _try_connect(url: str, query: str) -> Any:
    """The query's result, or the error that kept it from running."""
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(sa.text(query)).scalar()
    except sa.exc.DBAPIError as exc:
        return exc
    finally:
        engine.dispose()


@pytest.fixture(scope="session")
def pg_url() -> str:
    url = os.environ.get("PATCHBAY_TEST_PG", DEFAULT_PG)
    problem = _try_connect(url, "SELECT 1")
    if isinstance(problem, BaseException):
        _unreachable("PostgreSQL", url, "PATCHBAY_TEST_PG", problem)
    return url


@pytest.fixture(scope="session")
def mysql_url() -> str:
    """The MariaDB URL, with strict mode set per session.

    Outside strict mode MariaDB truncates a too-long value with a warning instead of
    refusing it, and the connector could not report STRING_TOO_LONG. The connector passes
    URL query arguments to PyMySQL, whose `sql_mode` argument sets the session's mode.
    """
    url = os.environ.get("PATCHBAY_TEST_MYSQL", DEFAULT_MYSQL)
    if "sql_mode" not in parse_qs(urlsplit(url).query):
        url += ("&" if "?" in url else "?") + "sql_mode=" + quote(STRICT_MODE)
    mode = _try_connect(url, "SELECT @@SESSION.sql_mode")
    if isinstance(mode, BaseException):
        _unreachable("MariaDB", url, "PATCHBAY_TEST_MYSQL", mode)
    mode = str(mode)
    if "STRICT_ALL_TABLES" not in mode and "STRICT_TRANS_TABLES" not in mode:
        pytest.fail(
            f"MariaDB at {redact_url(url)} is not in strict mode (sql_mode={mode!r})", pytrace=False
        )
    return url


# -- one database, with tables that clean up after themselves ----------------------------------


@dataclass
class Database:
    """A database under test: its URL, an engine for setting up and checking, its tables."""

    kind: str
    url: str
    engine: Engine
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    created: list[str] = field(default_factory=list)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def autoid(self) -> str:
        """DDL of an integer primary key the database fills in."""
        return {
            "postgresql": "SERIAL PRIMARY KEY",
            "mysql": "INTEGER AUTO_INCREMENT PRIMARY KEY",
            "sqlite": "INTEGER PRIMARY KEY AUTOINCREMENT",
        }[self.dialect]

    def name(self, prefix: str) -> str:
        """A table name no other test (or parallel run) uses."""
        return f"{prefix}_{self.suffix}"

    def create(self, prefix: str, columns: str) -> str:
        """CREATE TABLE <prefix>_<suffix> (<columns>); `{t}` in columns is the new name.

        Tables are dropped in reverse order of creation, so children go before parents.
        """
        table = self.name(prefix)
        self.execute(f"CREATE TABLE {table} ({columns.format(t=table)})")
        self.created.append(table)
        return table

    def execute(self, sql: str, params: Any = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.text(sql), params or {})

    def rows(self, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(sa.text(sql), params or {})]

    def scalar(self, sql: str, params: Any = None) -> Any:
        with self.engine.connect() as conn:
            return conn.execute(sa.text(sql), params or {}).scalar()

    def insert(self, table: str, records: Sequence[dict[str, Any]]) -> None:
        if not records:
            return
        columns = list(records[0])
        sql = (
            f"INSERT INTO {table} ({', '.join(columns)}) "
            f"VALUES ({', '.join(':' + c for c in columns)})"
        )
        with self.engine.begin() as conn:
            conn.execute(sa.text(sql), list(records))

    def drop_all(self) -> None:
        for table in reversed(self.created):
            self.execute(f"DROP TABLE IF EXISTS {table}")
        self.created.clear()


@pytest.fixture(scope="session")
def pg_engine(pg_url: str) -> Iterator[Engine]:
    engine = _engine(pg_url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def mysql_engine(mysql_url: str) -> Iterator[Engine]:
    engine = _engine(mysql_url)
    yield engine
    engine.dispose()


def open_database(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> Database:
    if kind == "postgresql":
        return Database(
            kind, request.getfixturevalue("pg_url"), request.getfixturevalue("pg_engine")
        )
    if kind == "mariadb":
        return Database(
            kind, request.getfixturevalue("mysql_url"), request.getfixturevalue("mysql_engine")
        )
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    engine = _engine(url)
    sa.event.listen(engine, "connect", _sqlite_foreign_keys)
    return Database(kind, url, engine)


def _sqlite_foreign_keys(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA foreign_keys=ON")


@pytest.fixture(scope="session")
def open_db() -> Any:
    """`open_db(kind, request, directory)`: a Database of that kind, for wider-scoped fixtures."""
    return open_database


@contextmanager
def _database_of(request: pytest.FixtureRequest, directory: Path) -> Iterator[Database]:
    """The database of a parametrised fixture (`request.param`), its tables dropped after."""
    database = open_database(request.param, request, directory)
    try:
        yield database
    finally:
        database.drop_all()
        if database.kind == "sqlite":
            database.engine.dispose()


@pytest.fixture(params=["postgresql", "mariadb", "sqlite"])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """Each of the three databases the SQL connector serves, with per-test tables."""
    with _database_of(request, tmp_path) as database:
        yield database


@pytest.fixture(scope="session")
def database_of() -> Any:
    """`with database_of(request, directory) as database:` for modules that parametrise
    their own choice of databases."""
    return _database_of


# -- the command line --------------------------------------------------------------------------


@dataclass
class Result:
    args: list[str]
    code: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return self.stdout + self.stderr

    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def log(self) -> str:
        """Everything about the call, for assertion messages."""
        return (
            f"patchbay {' '.join(self.args)} -> exit {self.code}\n"
            f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
        )


def run_patchbay(
    *args: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120
) -> Result:
    """Run the `patchbay` command in `cwd` (so its engine state lands in cwd/.patchbay)."""
    argv = [str(a) for a in args]
    environ = {k: v for k, v in os.environ.items() if k != "PATCHBAY_STATE"}
    environ.update(COLUMNS="200", NO_COLOR="1", PYTHONIOENCODING="utf-8")
    environ.update(env or {})  # a test may narrow the terminal (COLUMNS)
    done = subprocess.run(
        [*PATCHBAY, *argv],
        cwd=cwd,
        env=environ,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return Result(argv, done.returncode, done.stdout, done.stderr)


@pytest.fixture(scope="session")
def patchbay() -> Any:
    """`patchbay(*args, cwd=...)` runs the command line in a child process; returns a Result."""
    return run_patchbay


# -- message brokers ----------------------------------------------------------------------------

DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_NATS = "nats://127.0.0.1:4222"
DEFAULT_REDIS = "redis://127.0.0.1:6379/0"


def _fail_unreachable(service: str, url: str, variable: str, exc: BaseException) -> None:
    reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    pytest.fail(f"{service} is not reachable at {redact_url(url)}: {reason}\n"
                f"Start the service (CI runs .ci/run, which does) or point {variable} at one.",
                pytrace=False)


@pytest.fixture(scope="session")
def amqp_url() -> str:
    url = os.environ.get("PATCHBAY_TEST_AMQP", DEFAULT_AMQP)
    try:
        pika.BlockingConnection(pika.URLParameters(url)).close()
    except pika.exceptions.AMQPError as exc:
        _fail_unreachable("RabbitMQ", url, "PATCHBAY_TEST_AMQP", exc)
    return url


@pytest.fixture(scope="session")
def nats_url() -> str:
    url = os.environ.get("PATCHBAY_TEST_NATS", DEFAULT_NATS)

    async def probe() -> None:
        client = await nats.connect(url, connect_timeout=5, allow_reconnect=False)
        try:
            await client.jetstream().account_info()  # JetStream must be enabled
        finally:
            await client.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        _fail_unreachable("NATS with JetStream", url, "PATCHBAY_TEST_NATS", exc)
    return url


@pytest.fixture(scope="session")
def redis_url() -> str:
    url = os.environ.get("PATCHBAY_TEST_REDIS", DEFAULT_REDIS)
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=5) as client:
            client.ping()
    except redis.exceptions.RedisError as exc:
        _fail_unreachable("Redis", url, "PATCHBAY_TEST_REDIS", exc)
    return url
