"""Driver packages are extras of the distribution (`pip install 'patchbay[rabbitmq]'`):
a system's driver is imported when a system of its kind is first used, and a missing one
is a clear error naming the extra that brings it, not a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from patchbay.errors import MissingDriver

EXTRAS: dict[str, str] = {
    "psycopg": "postgres",
    "adbc_driver_postgresql": "postgres",
    "pymysql": "mysql",
    "adbc_driver_sqlite": "sqlite",
    "pika": "rabbitmq",
    "nats": "nats",
    "redis": "redis",
    "openpyxl": "xlsx",
    "duckdb": "aggregation",
    "rapidfuzz": "matching",
    "phonenumbers": "matching",
}
"""Top-level module of each optional driver -> the extra that installs it (pyproject.toml)."""


@contextmanager
def driver_needed(what: str) -> Iterator[None]:
    """Imports inside the block that fail for want of an optional driver raise
    MissingDriver, saying what needs it and which extra to install."""
    try:
        yield
    except ModuleNotFoundError as exc:
        package = (exc.name or "").partition(".")[0]
        extra = EXTRAS.get(package)
        if extra is None:
            raise
        raise MissingDriver(f"{what} needs {package}, which is not installed: "
                            f"pip install 'patchbay[{extra}]'", extra=extra) from None
