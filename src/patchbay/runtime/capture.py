"""PostgreSQL change capture for the broadcasts of a file (`patchbay cdc`): which broadcasts
read a captured table, and installing, removing and reading the state of their capture.
The CLI shows what these return; the SQL lives in connectors/sql/pgcapture.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from patchbay.errors import SpecError
from patchbay.patterns.context import Systems
from patchbay.spec import BroadcastSpec, load, resolve_parameters

if TYPE_CHECKING:
    from patchbay.connectors.sql import SqlConnector
    from patchbay.connectors.sql.pgcapture import CaptureState, Installed, Removed

Skipped = Callable[[str], None]
"""Hears why a broadcast of the file was left out (its source is not PostgreSQL)."""


def install(file: Path, integration: str | None, given: Mapping[str, str], skipped: Skipped
            ) -> Iterator[tuple[BroadcastSpec, SqlConnector, Installed]]:
    """Capture the source table of each cdc broadcast (or the one named), one at a time;
    every broadcast's parameters are checked before anything is installed."""
    from patchbay.connectors.sql import pgcapture

    with _capture_sources(file, integration, skipped) as sources:
        for spec, _ in sources:
            resolve_parameters(spec, given)
        for spec, connector in sources:
            connector.table(spec.source.object)  # names a missing table with a suggestion
            with connector.capture_setup() as conn:
                [done] = pgcapture.install(conn, [spec.source.object], spec.name,
                                           pgcapture.schema_of(connector.system))
            yield spec, connector, done


def remove(file: Path, integration: str | None, skipped: Skipped
           ) -> Iterator[tuple[BroadcastSpec, Removed]]:
    """Stop capturing for each cdc broadcast (or the one named), one at a time."""
    from patchbay.connectors.sql import pgcapture

    with _capture_sources(file, integration, skipped) as sources:
        for spec, connector in sources:
            with connector.capture_setup() as conn:
                [done] = pgcapture.remove(conn, [spec.source.object], spec.name,
                                          pgcapture.schema_of(connector.system))
            yield spec, done


def status(file: Path, skipped: Skipped
           ) -> Iterator[tuple[BroadcastSpec, str | None, CaptureState | None]]:
    """For each cdc broadcast: its source table's name in the database (None: no such
    table) and the state of its capture (None: not installed)."""
    from patchbay.connectors.sql import pgcapture

    with _capture_sources(file, None, skipped) as sources:
        for spec, connector in sources:
            with connector.capture_setup() as conn:
                name = pgcapture.relation_name(conn, spec.source.object)
                states = pgcapture.status(conn, pgcapture.schema_of(connector.system))
            yield spec, name, next((s for s in states
                                    if s.consumer == spec.name and s.table == name), None)


@contextmanager
def _capture_sources(file: Path, integration: str | None, skipped: Skipped
                     ) -> Iterator[list[tuple[BroadcastSpec, SqlConnector]]]:
    """The broadcasts of the file with trigger.changes: cdc (or the one named), each with its
    source's connector; those whose source is not PostgreSQL are skipped, or refused if named."""
    from patchbay.connectors.sql import SqlConnector

    loaded = load(file)
    if integration is not None:
        named = loaded.integration(integration)
        if not isinstance(named, BroadcastSpec) or named.trigger.changes != "cdc":
            raise SpecError(f"'{integration}' is not a broadcast with trigger.changes: cdc")
    chosen = [i for i in loaded.integrations if isinstance(i, BroadcastSpec)
              and i.trigger.changes == "cdc" and integration in (None, i.name)]
    if not chosen:
        raise SpecError(f"{file} has no broadcast with trigger.changes: cdc")
    systems = Systems(loaded.systems)
    try:
        sources = []
        for spec in chosen:
            connector = systems[spec.source.system]
            if isinstance(connector, SqlConnector) and connector.dialect == "postgresql":
                sources.append((spec, connector))
                continue
            message = (f"the source of '{spec.name}', system '{spec.source.system}', is not "
                       "PostgreSQL: `patchbay cdc` sets up PostgreSQL change capture")
            if integration is not None:
                raise SpecError(message)
            skipped(message)
        if not sources:
            raise SpecError(f"no broadcast of {file} with trigger.changes: cdc reads PostgreSQL")
        yield sources
    finally:
        systems.close()
