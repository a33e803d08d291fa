"""Database URLs as SQLAlchemy takes them: a base module, so that the SQL connector and the
engine state (store/) both open databases from a system's URL without importing each other."""

from __future__ import annotations

_DRIVERS = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg",
            "mysql": "mysql+pymysql", "mariadb": "mysql+pymysql"}


def sqlalchemy_url(url: str) -> str:
    """The URL with the driver patchbay uses for its scheme (psycopg 3, PyMySQL)."""
    scheme, sep, rest = url.partition("://")
    return _DRIVERS.get(scheme.lower(), scheme) + sep + rest
