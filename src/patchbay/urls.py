"""Database URLs as SQLAlchemy takes them: the scheme a person writes (postgresql://,
mysql://) gains the driver patchbay installs. Both the SQL connector and the engine state
open databases by URL, so this sits below both."""

from __future__ import annotations

_DRIVERS = {"postgresql": "postgresql+psycopg", "postgres": "postgresql+psycopg",
            "mysql": "mysql+pymysql", "mariadb": "mysql+pymysql"}


def sqlalchemy_url(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    return _DRIVERS.get(scheme.lower(), scheme) + sep + rest
