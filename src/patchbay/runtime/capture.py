"""Change capture for the integrations of a file (`patchbay cdc`): which tables they read
through it (`IntegrationSpec.captured`), and installing, removing and reading the state of
their capture, each integration being the consumer of its tables. The CLI shows what these
return; the SQL lives in connectors/sql/pgcapture.py (PostgreSQL) and mycapture.py (MySQL,
MariaDB)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from patchbay.errors import SpecError
from patchbay.patterns.context import Systems
from patchbay.spec import IntegrationSpec, load, resolve_parameters

if TYPE_CHECKING:
    from patchbay.connectors.sql import SqlConnector
    from patchbay.connectors.sql.capture import CaptureState, Installed, Removed

Skipped = Callable[[str], None]
"""Hears why a captured table of the file was left out (its database has no change capture)."""


@dataclass(frozen=True, slots=True)
class Captured:
    """One table an integration reads through change capture."""

    integration: IntegrationSpec
    connector: SqlConnector
    object: str


def install(file: Path, integration: str | None, given: Mapping[str, str], skipped: Skipped
            ) -> Iterator[tuple[Captured, Installed]]:
    """Capture each table the integrations (or the one named) read through change capture,
    one at a time; every integration's parameters are checked before anything is installed."""
    with _captured(file, integration, skipped) as found:
        for spec in {c.integration.name: c.integration for c in found}.values():
            resolve_parameters(spec, given)
        for target in found:
            target.connector.table(target.object)  # names a missing table with a suggestion
            capture = target.connector.capture()
            with target.connector.capture_setup() as conn:
                [done] = capture.install(conn, [target.object], target.integration.name,
                                         capture.schema_of(target.connector.system))
            yield target, done


def remove(file: Path, integration: str | None, skipped: Skipped
           ) -> Iterator[tuple[Captured, Removed]]:
    """Stop capturing for each integration (or the one named), one table at a time."""
    with _captured(file, integration, skipped) as found:
        for target in found:
            capture = target.connector.capture()
            with target.connector.capture_setup() as conn:
                [done] = capture.remove(conn, [target.object], target.integration.name,
                                        capture.schema_of(target.connector.system))
            yield target, done


def status(file: Path, skipped: Skipped
           ) -> Iterator[tuple[Captured, str | None, CaptureState | None]]:
    """For each captured table: its name in the database (None: no such table) and the
    state of its capture (None: not installed)."""
    with _captured(file, None, skipped) as found:
        for target in found:
            capture = target.connector.capture()
            with target.connector.capture_setup() as conn:
                name = capture.relation_name(conn, target.object)
                states = capture.status(conn, capture.schema_of(target.connector.system))
            yield target, name, next((s for s in states if s.consumer == target.integration.name
                                      and s.table == name), None)


@contextmanager
def _captured(file: Path, integration: str | None, skipped: Skipped
              ) -> Iterator[list[Captured]]:
    """The tables the integrations of the file (or the one named) read through change
    capture, each with its system's connector; those of a database without change capture
    are skipped, or refused if the integration is named."""
    from patchbay.connectors.sql import SqlConnector

    loaded = load(file)
    if integration is not None and not loaded.integration(integration).captured():
        raise SpecError(f"'{integration}' reads nothing through change capture (a broadcast "
                        "does with trigger.changes: cdc)")
    chosen = [i for i in loaded.integrations if i.captured() and integration in (None, i.name)]
    if not chosen:
        raise SpecError(f"{file} has no integration reading through change capture (a "
                        "broadcast does with trigger.changes: cdc)")
    systems = Systems(loaded.systems)
    try:
        found = []
        for spec in chosen:
            others = []
            for system, object in spec.captured():
                connector = systems[system]
                if isinstance(connector, SqlConnector) and connector.captures:
                    found.append(Captured(spec, connector, object))
                    continue
                others.append(f"'{spec.name}' reads system '{system}', which is not "
                              "PostgreSQL, MySQL or MariaDB: `patchbay cdc` sets up their "
                              "change capture")
            # A sync may follow Salesforce CDC on one side and database capture on another:
            # a named integration is refused only when none of its tables can be captured.
            if others and integration is not None and not found:
                raise SpecError(others[0])
            for message in others:
                skipped(message)
        if not found:
            raise SpecError(f"no integration of {file} reading through change capture reads "
                            "PostgreSQL, MySQL or MariaDB")
        yield found
    finally:
        systems.close()
