"""The spec of a correlation: two systems (or two groups of records in one) exchange data
about the records they both hold, and only those.

    participants   the two sides: system, object, key, scope, trigger, and how their fields
                   map to the shared names (compared ones and exchanged ones)
    match          the definition of "same" over the shared names (spec/match.py)
    share          the shared fields that cross between matched records, each with who may
                   write it and its conflict policy; every other field stays where it is
    rematch_seconds how often both sides are matched again in full (and the model fitted
                   again); in between, records that change are re-matched as noticed

A correlation never creates or deletes a record, and nothing of a record without a match
leaves its system. It is carried out as a sync restricted to the linked pairs (`as_sync`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from patchbay.spec.broadcast import PushPoint, TriggerSpec
from patchbay.spec.common import IntegrationSpec, Scope
from patchbay.spec.match import MatchSpec
from patchbay.spec.sync import (
    ConflictPolicy,
    DeletesSpec,
    HeldObjectSpec,
    ParticipantObjectSpec,
    ParticipantSpec,
    SharedFieldSpec,
    SyncObjectSpec,
    SyncOptions,
    SyncSpec,
    shared_fields_shorthand,
)


class CorrelationSideSpec(HeldObjectSpec):
    """One side of a correlation: a system and the object it holds (two groups of one
    object are two sides on one system, with their scopes)."""

    name: str = Field(description="Names the side in reviews, conflicts and the audit ledger.")
    system: str = Field(description="A system declared under `systems`.")
    trigger: TriggerSpec | None = Field(default=None, description="How its changes are noticed; "
                                                                  "default: the correlation's.")


class CorrelationSpec(IntegrationSpec):
    """Two systems exchange data about the records both hold: `<system> and <system> -
    <object> - correlation`."""

    pattern: Literal["correlation"]
    participants: list[CorrelationSideSpec] = Field(min_length=2, max_length=2)
    match: MatchSpec
    share: dict[str, SharedFieldSpec] = Field(
        description="The shared fields exchanged between matched records (a compared field "
                    "not listed here never crosses).")
    trigger: TriggerSpec = Field(default_factory=TriggerSpec)
    conflicts: ConflictPolicy = Field(default="latest", description="The default conflict "
                                                                    "policy of every shared field.")
    rematch_seconds: float = Field(
        default=300.0, gt=0, description="Match both sides in full again (and fit the model "
                                         "again) this often under `serve`, as at every run; in "
                                         "between, the records that change are re-matched as "
                                         "they are noticed.")
    options: SyncOptions = Field(default_factory=SyncOptions)

    @field_validator("share", mode="before")
    @classmethod
    def _share_shorthand(cls, value: Any) -> Any:
        return shared_fields_shorthand(value)

    @model_validator(mode="after")
    def _consistent(self) -> CorrelationSpec:
        names = [p.name for p in self.participants]
        problems = [] if len(set(names)) == 2 else ["the two participants need different names"]
        for side in self.participants:
            unmapped = [n for n in [*self.match.fields, *self.share] if n not in side.fields]
            if unmapped:
                problems.append(f"participant '{side.name}' does not map "
                                + ", ".join(f"'{n}'" for n in dict.fromkeys(unmapped)))
        for name, shared in self.share.items():
            if shared.lookup is not None:
                problems.append(f"share '{name}': a correlation has no lookups")
            for who in [*([shared.owner] if shared.owner else []), *(shared.writers or [])]:
                if who not in names:
                    problems.append(f"share '{name}': unknown participant '{who}'")
            if (shared.conflict or self.conflicts) == "owner" and shared.owner is None:
                problems.append(f"share '{name}': conflict: owner needs `owner`")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def as_sync(self) -> SyncSpec:
        """The sync that carries the exchange out: one shared object of the `share` fields,
        participants that never create, deletes that are never passed on."""
        held = {side.name: ParticipantObjectSpec(
            object=side.object, key=side.key, watermark=side.watermark, scope=side.scope,
            fields={n: m for n, m in side.fields.items() if n in self.share})
            for side in self.participants}
        return SyncSpec(
            pattern="sync", name=self.name, description=self.description,
            parameters=self.parameters,
            participants=[ParticipantSpec(name=s.name, system=s.system, trigger=s.trigger,
                                          creates=False) for s in self.participants],
            objects=[SyncObjectSpec(name="record", fields=self.share, participants=held)],
            trigger=self.trigger, conflicts=self.conflicts,
            deletes=DeletesSpec(policy="ignore"), options=self.options)

    def side(self, name: str) -> CorrelationSideSpec:
        return next(p for p in self.participants if p.name == name)

    def scopes(self) -> list[tuple[Scope, tuple[Any, ...]]]:
        return [(side.scope, ("participants", i, "scope"))
                for i, side in enumerate(self.participants) if side.scope is not None]

    def objects_written(self) -> set[tuple[str, str]]:
        return {(side.system, side.object) for side in self.participants}

    def captured(self) -> list[tuple[str, str]]:
        return self.as_sync().captured()

    def push_points(self) -> list[PushPoint]:
        return self.as_sync().push_points()

    def systems_used(self) -> list[tuple[str, tuple[Any, ...]]]:
        return [(side.system, ("participants", i, "system"))
                for i, side in enumerate(self.participants)]
