"""Run, plan or verify a declared integration: the one entry point the CLI and API share."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from patchbay import spec
from patchbay.errors import SpecError
from patchbay.patterns import broadcast, migration
from patchbay.patterns.context import ProgressCallback, RunContext
from patchbay.spec import AggregationSpec, BroadcastSpec, IntegrationFile, IntegrationSpec
from patchbay.store import Store

if TYPE_CHECKING:
    from patchbay.patterns.aggregation import Answer


@dataclass
class Invocation:
    """An integration chosen from a file, with the parameters of this run."""

    file: IntegrationFile
    integration: IntegrationSpec
    params: dict[str, Any]

    @classmethod
    def load(cls, path: str | Path, name: str | None, given: Mapping[str, Any]) -> Invocation:
        file = spec.load(path)
        integration = file.integration(name)
        return cls(file, integration, spec.resolve_parameters(integration, given))

    def context(self, store: Store, reports_dir: Path, *, progress: ProgressCallback | None = None,
                stop: threading.Event | None = None) -> RunContext:
        ctx = RunContext.create(self.file, self.integration, store, self.params,
                                reports_dir=reports_dir, progress=progress)
        if stop is not None:
            ctx.stop = stop
        return ctx


def in_dependency_order(file: IntegrationFile) -> list[IntegrationSpec]:
    """Every integration of the file, each after those whose destination it looks records
    up in (accounts before the contacts that look up their account ids); otherwise in the
    file's order."""
    integrations = file.integrations
    written = [i.objects_written() for i in integrations]
    needs = {index: {other for other, objects in enumerate(written)
                     if other != index and objects & _lookups(integration)}
             for index, integration in enumerate(integrations)}
    ordered: list[int] = []
    while len(ordered) < len(integrations):
        ready = [i for i in range(len(integrations))
                 if i not in ordered and needs[i] <= set(ordered)]
        if not ready:
            stuck = ", ".join(f"'{integrations[i].name}'" for i in needs if i not in ordered)
            raise SpecError(f"{file.path or 'the integration file'}: {stuck} look up each "
                            "other's destinations, so no order runs each after what it needs; "
                            "run them one by one with --integration")
        ordered.append(ready[0])
    return [integrations[i] for i in ordered]


def _lookups(integration: IntegrationSpec) -> set[tuple[str, str]]:
    """The (system, object) pairs an integration's transforms look records up in."""
    return {(m.lookup.system, m.lookup.object) for transform, _ in integration.transforms()
            for m in transform.fields.values() if m.lookup is not None}


def run(ctx: RunContext, *, resume: str | None = None, fresh: bool = False,
        full: bool = False, say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) a migration to its end, a broadcast once (poll everything new,
    deliver everything due), or an aggregation (answer and write its outputs); return its
    report. `say` hears which run a migration resumes, or why it did not resume one."""
    try:
        if isinstance(ctx.integration, BroadcastSpec):
            return broadcast.Broadcast(ctx).run_once()
        if isinstance(ctx.integration, AggregationSpec) and ctx.integration.stream is not None:
            from patchbay.patterns import aggregation_stream  # brokers' clients: only when used

            return aggregation_stream.StreamAggregation(ctx).run_once()
        if isinstance(ctx.integration, AggregationSpec) and ctx.integration.stream is None:
            from patchbay.patterns import aggregation  # DuckDB: only when used

            return aggregation.Aggregation(ctx).run()
        runner = migration.Migration(ctx)
        record = runner.start(resume=resume, fresh=fresh, full=full)
        if runner.notice is not None and say is not None:
            say(runner.notice)
        return runner.run(record)
    finally:
        ctx.systems.close()


def accept(ctx: RunContext, body: Mapping[str, Any], received_at: str,
           message: tuple[str, str] | None = None) -> int:
    """Queue changes pushed to a broadcast (a webhook, an Outbound Message); how many.
    `message`: (where it came from, its id), refused as MessageSeen when pushed again."""
    return broadcast.Broadcast(ctx).accept(body, received_at, message)


def serve(ctx: RunContext, stop: threading.Event, poll: bool = True) -> None:
    """Until `stop` is set, keep a broadcast going (poll, unless `poll` is false, and
    deliver), a stream aggregation (consume and flush), or a scheduled aggregation."""
    try:
        if isinstance(ctx.integration, AggregationSpec) and ctx.integration.stream is not None:
            from patchbay.patterns import aggregation_stream

            aggregation_stream.StreamAggregation(ctx).serve(stop)
        elif isinstance(ctx.integration, AggregationSpec):
            from patchbay.patterns import aggregation

            aggregation.Aggregation(ctx).serve(stop)
        else:
            broadcast.Broadcast(ctx).serve(stop, poll)
    finally:
        ctx.systems.close()


def answer(ctx: RunContext, limit: int | None = None) -> Answer:
    """An aggregation's merged data set, at most `limit` rows, and each source's status (the
    API's live answer)."""
    from patchbay.patterns import aggregation

    try:
        return aggregation.Aggregation(ctx).answer(limit)
    finally:
        ctx.systems.close()


def plan(ctx: RunContext, examples: int = 5) -> dict[str, Any]:
    try:
        return migration.plan(ctx, examples=examples)
    finally:
        ctx.systems.close()


def verify(ctx: RunContext) -> dict[str, Any]:
    try:
        return migration.verify(ctx)
    finally:
        ctx.systems.close()


# -- the same, from Python ---------------------------------------------------------------------


def _context(path: str | Path, name: str | None, params: Mapping[str, Any] | None,
             state: str | Path | None) -> RunContext:
    invocation = Invocation.load(path, name, params or {})
    if state is not None and "://" in str(state):
        store, reports = Store.open(str(state)), Path(".patchbay") / "runs"
    else:
        directory = Path(state) if state is not None else Path(".patchbay")
        store, reports = Store.open(directory=directory), directory / "runs"
    return invocation.context(store, reports)


def run_integration(path: str | Path, name: str | None = None,
                    params: Mapping[str, Any] | None = None, *, state: str | Path | None = None,
                    resume: str | None = None, fresh: bool = False) -> dict[str, Any]:
    """Run one integration of a file, as `patchbay run` does; return its report."""
    return run(_context(path, name, params, state), resume=resume, fresh=fresh)


def plan_integration(path: str | Path, name: str | None = None,
                     params: Mapping[str, Any] | None = None, *,
                     state: str | Path | None = None) -> dict[str, Any]:
    """What a run would do, writing nothing."""
    return plan(_context(path, name, params, state))


def verify_integration(path: str | Path, name: str | None = None,
                       params: Mapping[str, Any] | None = None, *,
                       state: str | Path | None = None) -> dict[str, Any]:
    """Compare the destination with the source scope now."""
    return verify(_context(path, name, params, state))
