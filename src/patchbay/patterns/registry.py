"""Patterns as plug-ins: what every pattern implements, and the pattern of an integration.

A pattern is a subclass of `Pattern`: it reads its integration's spec (`spec_of`), runs it
once (`run`), and may plan, verify, record a run before it runs (`start`), accept pushed
changes, answer live, or be kept going by one of the runtime's loops (`loop`, `watched`).
What it lacks raises NotSupported, a clear refusal, never an AttributeError. Which class
carries out which pattern is declared once, in patchbay.spec.registry: the runtime, the CLI
and the API find it here (through the runner), and never test an integration's type to
choose what to call.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from patchbay.errors import SpecError
from patchbay.patterns.context import RunContext
from patchbay.spec import IntegrationSpec, registry
from patchbay.store import RunRecord

if TYPE_CHECKING:
    from patchbay.patterns.partitioned import Partitioned

Loop = Literal["outbox", "schedule", "stream"]
"""The runtime loops that keep an integration going under `patchbay serve`: poll a source
into an outbox and deliver it, run on a schedule, consume and flush a stream."""

Report = dict[str, Any]
"""A report as JSON: what the CLI prints (`--json`), the API answers and the store keeps."""


class RunReport(Protocol):
    """A run's typed report (each pattern has its own); its JSON is the run's Report."""

    def to_json(self) -> Report: ...


class NotSupported(SpecError):
    """The integration's pattern does not do what was asked (plan a broadcast, say)."""


@dataclass
class Started:
    """A run recorded before it runs (the API answers with its id at once): `carry` runs
    it to its end and returns its report."""

    record: RunRecord
    notice: str | None
    carry: Callable[[], RunReport]


class Pattern:
    """One integration of a pattern, for one run (or one serving loop)."""

    loop: ClassVar[Loop | None] = None
    """The loop that keeps integrations of this pattern going, if any (see `loop_of`)."""
    records_runs: ClassVar[bool] = False
    """Whether it records a run before it runs it (`start`), so the API answers at once."""
    holds_data_set: ClassVar[bool] = False
    """Whether a run holds a whole data set in memory (the API bounds how many at once)."""
    splits: ClassVar[bool] = False
    """Whether a run can be split into key ranges that several workers work (`ranges`)."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx

    @classmethod
    def loop_of(cls, integration: IntegrationSpec) -> Loop | None:
        """The loop that keeps `integration` going under `patchbay serve`; None: it only runs."""
        return cls.loop

    @property
    def name(self) -> str:
        return self.ctx.integration.name

    def run(self, *, resume: str | None = None, fresh: bool = False, full: bool = False,
            say: Callable[[str], None] | None = None) -> RunReport:
        raise self.not_supported("run")

    def start(self, *, resume: str | None = None, fresh: bool = False,
              full: bool = False) -> Started:
        raise self.not_supported("record a run before it runs")

    def ranges(self) -> Partitioned:
        """Its run split into key ranges: the steps the workers of `--workers` take."""
        raise self.not_supported("split a run into key ranges for workers")

    def plan(self, examples: int) -> Report:
        raise self.not_supported("plan: it has no run to preview")

    def verify(self) -> Report:
        raise self.not_supported("verify: it keeps no destination to compare with its source")

    def accept(self, body: Mapping[str, Any], received_at: str,
               message: tuple[str, str] | None = None, source: str | None = None) -> int:
        """Take pushed changes; how many. `message`: (where it came from, its id), refused
        as MessageSeen when pushed again; `source`: which of the integration's systems
        pushed (a sync's participant), None where it has one source."""
        raise self.not_supported("take pushed changes")

    def answer(self, limit: int | None = None) -> Any:
        raise self.not_supported("answer live")

    def watched(self) -> Any:
        """What this pattern's `loop` drives (the runtime's loops name what they need)."""
        raise self.not_supported("keep going under serve")

    def not_supported(self, what: str) -> NotSupported:
        pattern = self.ctx.integration.pattern
        return NotSupported(f"'{self.name}' is a {pattern}: the {pattern} pattern does not {what}")


def pattern_class(integration: IntegrationSpec) -> type[Pattern]:
    """The class that carries out `integration`'s pattern (imported on first use)."""
    entry = registry.registered(integration.pattern)
    if entry is None:  # only a spec built outside a file can name an unregistered pattern
        raise SpecError(f"'{integration.name}': no pattern '{integration.pattern}' is registered")
    found = entry.implementation
    if isinstance(found, str):
        module, _, attribute = found.partition(":")
        found = getattr(importlib.import_module(module), attribute)
    if not (isinstance(found, type) and issubclass(found, Pattern)):
        raise TypeError(f"{entry.implementation!r} is not a Pattern")
    return found


def pattern_of(ctx: RunContext) -> Pattern:
    """The pattern that carries out `ctx`'s integration."""
    return pattern_class(ctx.integration)(ctx)
