"""Fault tests use the real services; an unreachable one fails the test, never skips it."""

from __future__ import annotations

import os

import psycopg
import pytest

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def pg_url() -> str:
    url = os.environ.get("PATCHBAY_TEST_PG", DEFAULT_PG)
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL is not reachable for the fault tests: {exc}", pytrace=False)
    return url


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every fault test is slow (it stops, kills or waits out a real process), so `make check`
    and `pytest -m "not slow"` leave this folder out without each test saying so."""
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.path).startswith(here + os.sep):
            item.add_marker(pytest.mark.slow)
