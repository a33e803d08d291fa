"""The patterns integration files can declare: for each, its spec model and where its
implementation lives.

A pattern is one spec module (its model, with `pattern: Literal["<name>"]`), one pattern
module (its implementation, see patchbay.patterns.registry) and one `register` line below.
The implementation is named by its import path, imported when a run first needs it: the
spec layer never imports the patterns above it, and a pattern's heavy drivers (DuckDB, a
broker's client) load only when it runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, get_args

from patchbay.spec.aggregation import AggregationSpec
from patchbay.spec.broadcast import BroadcastSpec
from patchbay.spec.common import IntegrationSpec
from patchbay.spec.correlation import CorrelationSpec
from patchbay.spec.migration import MigrationSpec
from patchbay.spec.sync import SyncSpec


@dataclass(frozen=True)
class Registered:
    """One pattern: its name, its spec model and its implementation ("module:Class", or
    the class itself)."""

    name: str
    spec: type[IntegrationSpec]
    implementation: str | type[Any]


_registered: dict[str, Registered] = {}


def register(spec: type[IntegrationSpec], implementation: str | type[Any]) -> None:
    """Make integration files accept `spec`'s pattern, carried out by `implementation`."""
    names = get_args(spec.model_fields["pattern"].annotation) if "pattern" in spec.model_fields else ()
    if len(names) != 1 or not isinstance(names[0], str):
        raise TypeError(f"{spec.__name__} needs a field `pattern: Literal[\"<name>\"]`")
    _registered[names[0]] = Registered(names[0], spec, implementation)


def registered(name: str) -> Registered | None:
    return _registered.get(name)


def spec_models() -> tuple[type[IntegrationSpec], ...]:
    return tuple(entry.spec for entry in _registered.values())


def pattern_names() -> tuple[str, ...]:
    """Every pattern name a file may mention: those registered."""
    return tuple(_registered)


register(MigrationSpec, "patchbay.patterns.migration:MigrationPattern")
register(BroadcastSpec, "patchbay.patterns.broadcast:BroadcastPattern")
register(AggregationSpec, "patchbay.patterns.aggregation:AggregationPattern")
register(SyncSpec, "patchbay.patterns.sync:SyncPattern")
register(CorrelationSpec, "patchbay.patterns.correlation:CorrelationPattern")
