"""What every pattern run is given: the integration, its systems, parameters and the store."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar, get_args

from patchbay.connectors.base import DRIVER_UNREACHABLE, Connector, connect
from patchbay.errors import RetriableError, SpecError
from patchbay.model import KeyValue
from patchbay.spec import IntegrationFile, IntegrationSpec, Lookup, NotifySpec, SystemSpec, suggest
from patchbay.store import Store

S = TypeVar("S", bound=IntegrationSpec)

TRANSIENT: tuple[type[Exception], ...] = (RetriableError, *DRIVER_UNREACHABLE)
"""A source, destination or engine state that cannot be reached now: tried again later."""

ProgressCallback = Callable[[str, Mapping[str, int]], None]
"""Called with an event name ("batch", "start", "verify") and the run's counters."""


class Systems:
    """The connectors of one run, opened on first use and closed together."""

    def __init__(self, specs: Mapping[str, SystemSpec],
                 overrides: Mapping[str, Connector] | None = None) -> None:
        self._specs = specs
        self._open: dict[str, Connector] = dict(overrides or {})

    def __getitem__(self, name: str) -> Connector:
        if name not in self._open:
            self._open[name] = connect(self.spec(name))
        return self._open[name]

    def declare(self, specs: Mapping[str, SystemSpec]) -> None:
        """Systems of an edited file: new ones are added, a changed one is connected anew."""
        merged = dict(self._specs)
        for name, system in specs.items():
            if merged.get(name) != system and name in self._open:
                self._open.pop(name).close()
            merged[name] = system
        self._specs = merged

    def spec(self, name: str) -> SystemSpec:
        """The declaration of a system, without connecting to it."""
        if name not in self._specs:
            raise SpecError(f"unknown system '{name}'{suggest(name, self._specs)}")
        return self._specs[name]

    def close(self) -> None:
        for connector in self._open.values():
            connector.close()
        self._open.clear()


class LookupCache:
    """Resolves transform lookups through the systems, remembering what it found."""

    def __init__(self, systems: Systems, limit: int = 200_000) -> None:
        self.systems = systems
        self.limit = limit
        self._found: dict[tuple[str, str, str, str], dict[Any, Any]] = {}

    def __call__(self, lookup: Lookup, values: set[Any]) -> Mapping[Any, Any]:
        cache = self._found.setdefault(
            (lookup.system, lookup.object, lookup.key, lookup.returns), {})
        wanted = {v for v in values if _as_key(v) not in cache}
        if wanted:
            if len(cache) + len(wanted) > self.limit:
                cache.clear()
            connector = self.systems[lookup.system]
            query = list(wanted) + [str(v) for v in wanted if not isinstance(v, str)]
            hits = connector.get(lookup.object, lookup.key, query, [lookup.key, lookup.returns])
            by_text = {_as_key(k): r.get(lookup.returns) for k, r in hits.items()}
            for value in wanted:
                cache[_as_key(value)] = by_text.get(_as_key(value), _MISSING)
        return {v: cache[_as_key(v)] for v in values if cache.get(_as_key(v), _MISSING) is not _MISSING}


_MISSING = object()


def _as_key(value: KeyValue) -> str:
    return str(value)


@dataclass
class RunContext:
    """Everything a pattern needs to run one integration once."""

    integration: IntegrationSpec
    systems: Systems
    store: Store
    params: Mapping[str, Any]
    spec_path: Path | None = None
    reports_dir: Path = Path(".patchbay") / "runs"
    stop: threading.Event = field(default_factory=threading.Event)
    progress: ProgressCallback | None = None
    notifications: Sequence[NotifySpec] = ()
    """Who is told about this integration's runs and state (the file's and its own `notify`)."""

    @classmethod
    def create(cls, file: IntegrationFile, integration: IntegrationSpec, store: Store,
               params: Mapping[str, Any], **kwargs: Any) -> RunContext:
        return cls(integration, Systems(file.systems), store, params, spec_path=file.path,
                   notifications=file.notifications(integration), **kwargs)

    def notify(self, event: str, counters: Mapping[str, int]) -> None:
        if self.progress is not None:
            self.progress(event, counters)


def spec_of(ctx: RunContext, model: type[S], what: str = "",
            accepts: Callable[[S], bool] = lambda _: True) -> S:
    """The integration of `ctx` as `model`, or a SpecError saying what it is instead; `what`
    names what `accepts` further requires (an aggregation of sources, say)."""
    integration = ctx.integration
    if isinstance(integration, model) and accepts(integration):
        return integration
    [pattern] = get_args(model.model_fields["pattern"].annotation)
    if isinstance(integration, model):
        raise SpecError(f"'{integration.name}' is not {what}")
    article = "an" if integration.pattern[:1] in "aeiou" else "a"
    raise SpecError(f"'{integration.name}' is {article} {integration.pattern}, not "
                    f"{what or f'a {pattern}'}")
