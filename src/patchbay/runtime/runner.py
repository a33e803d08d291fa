"""Run, plan or verify a declared integration: the one entry point the CLI and API share."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from patchbay import logs, spec
from patchbay.errors import SpecError
from patchbay.patterns.context import ProgressCallback, RunContext
from patchbay.patterns.registry import Report, Started, pattern_class, pattern_of
from patchbay.runtime import observed, serving
from patchbay.spec import IntegrationFile, IntegrationSpec
from patchbay.store import Store, open_state

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
        full: bool = False, say: Callable[[str], None] | None = None) -> Report:
    """Run an integration once with its pattern (a migration to its end, resuming; a
    broadcast's round: poll everything new, deliver everything due; an aggregation); return
    its report. `say` hears which run a migration resumes, or why it did not resume one."""
    started = time.monotonic()
    try:
        with logs.context(integration=ctx.integration.name):
            pattern = pattern_of(ctx)
            report = serving.round_of(pattern)
            if report is None:
                report = pattern.run(resume=resume, fresh=fresh, full=full, say=say)
            answer = report.to_json()
    except Exception as exc:
        observed.ran(ctx, None, time.monotonic() - started, exc)
        raise
    else:
        observed.ran(ctx, answer, time.monotonic() - started)
        return answer
    finally:
        ctx.systems.close()


def start(ctx: RunContext, *, fresh: bool = False, full: bool = False) -> Started:
    """Record a run before it runs (a migration: the API answers with its id at once); the
    caller carries it on (`Started.carry`) and closes `ctx.systems` once it ends."""
    return pattern_of(ctx).start(fresh=fresh, full=full)


def records_runs(integration: IntegrationSpec) -> bool:
    """Whether runs of `integration` are recorded before they run (see `start`)."""
    return pattern_class(integration).records_runs


def splits(integration: IntegrationSpec) -> bool:
    """Whether a run of `integration` can be split into key ranges for workers."""
    return pattern_class(integration).splits


def holds_data_set(integration: IntegrationSpec) -> bool:
    """Whether a run of `integration` holds a whole data set in memory."""
    return pattern_class(integration).holds_data_set


def serves(integration: IntegrationSpec, *, poll: bool = True) -> bool:
    """Whether `patchbay serve` keeps `integration` going (`patchbay worker`, without
    polling, when `poll` is false)."""
    loop = pattern_class(integration).loop_of(integration)
    return loop is not None and (poll or loop in serving.WITHOUT_POLLING)


def keeps_outbox(integration: IntegrationSpec) -> bool:
    """Whether `integration` is kept going by the outbox loop, so that it has deliveries
    (a broadcast, a sync, a correlation: whatever its pattern says)."""
    return pattern_class(integration).loop_of(integration) == "outbox"


def accept(ctx: RunContext, body: Mapping[str, Any], received_at: str,
           message: tuple[str, str] | None = None, source: str | None = None) -> int:
    """Queue changes pushed to an integration (a webhook, an Outbound Message); how many.
    `message`: (where it came from, its id), refused as MessageSeen when pushed again;
    `source`: which system pushed (a sync's participant). The delivering threads serving
    it in this process are woken at once."""
    accepted = pattern_of(ctx).accept(body, received_at, message, source)
    serving.wake(ctx.integration.name)
    return accepted


def serve(ctx: RunContext, stop: threading.Event, poll: bool = True) -> None:
    """Until `stop` is set, keep an integration going with its pattern's loop (a broadcast:
    poll, unless `poll` is false, and deliver; a stream aggregation: consume and flush; a
    scheduled aggregation: run when due)."""
    try:
        with logs.context(integration=ctx.integration.name):
            serving.serve(ctx, stop, poll)
    finally:
        ctx.systems.close()


def answer(ctx: RunContext, limit: int | None = None) -> Answer:
    """An aggregation's merged data set, at most `limit` rows, and each source's status (the
    API's live answer)."""
    try:
        answered: Answer = pattern_of(ctx).answer(limit)
        return answered
    finally:
        ctx.systems.close()


def plan(ctx: RunContext, examples: int = 5) -> Report:
    try:
        return pattern_of(ctx).plan(examples)
    finally:
        ctx.systems.close()


def verify(ctx: RunContext) -> Report:
    try:
        return pattern_of(ctx).verify()
    finally:
        ctx.systems.close()


# -- the same, from Python ---------------------------------------------------------------------


def _context(path: str | Path, name: str | None, params: Mapping[str, Any] | None,
             state: str | Path | None) -> RunContext:
    invocation = Invocation.load(path, name, params or {})
    return invocation.context(*open_state(state))


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
