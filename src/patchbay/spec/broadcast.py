"""The spec of a broadcast: every change of one source delivered to several destinations."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from patchbay.cron import Cron
from patchbay.model import Operation
from patchbay.spec.common import (
    IntegrationSpec,
    Scope,
    SourceSpec,
    SpecModel,
    TransformSpec,
)


class WebhookSpec(SpecModel):
    """Changes pushed to `POST /hooks/<integration>` of `patchbay serve`, signed with HMAC."""

    secret_env: str = Field(description="Environment variable holding the shared secret.")
    sources: list[str] | None = Field(
        default=None, description="Accepted values of the X-Patchbay-Source header (any if unset).")
    max_age_seconds: int = Field(default=300, ge=1,
                                 description="Older (or future) signatures are refused.")


class OutboundMessagesSpec(SpecModel):
    """Salesforce Outbound Messages (SOAP notifications) posted to
    `POST /outbound/<integration>` of `patchbay serve`."""

    organization_id: str = Field(
        description="The sending org's id (00D...); notifications from any other org are refused.")
    secret_env: str | None = Field(
        default=None, description="Environment variable holding a secret that the endpoint URL "
                                  "configured in Salesforce carries as `?secret=`. Required "
                                  "unless allow_unauthenticated is true.")
    allow_unauthenticated: bool = Field(
        default=False, description="Accept notifications without a secret: anyone who knows "
                                   "the org id can then make the broadcast fetch records.")

    @model_validator(mode="after")
    def _authenticated(self) -> OutboundMessagesSpec:
        if self.secret_env is None and not self.allow_unauthenticated:
            raise ValueError("give secret_env (an environment variable holding the secret the "
                             "endpoint URL carries as ?secret=), or allow_unauthenticated: true")
        return self


@dataclass(frozen=True)
class PushPoint:
    """Where an integration takes pushed changes: from which of its systems (a sync's
    participant; None for a broadcast's one source), of which object, and how the pushes
    prove themselves (a signed webhook, Salesforce Outbound Messages)."""

    source: str | None
    object: str
    webhook: WebhookSpec | None
    outbound_messages: OutboundMessagesSpec | None


class TriggerSpec(SpecModel):
    """How changes are noticed."""

    changes: Literal["poll", "cdc"] = Field(
        default="poll",
        description="poll: read the source by its watermark every `poll_seconds`; cdc: follow "
                    "the source's own change stream (Salesforce Change Data Capture; a "
                    "PostgreSQL or MySQL/MariaDB capture table added by `patchbay cdc install`).")
    poll_seconds: float = Field(default=5.0, gt=0, description="Poll the source this often.")
    cron: str | None = Field(
        default=None, description='Poll at these times instead (UTC cron, e.g. "*/15 * * * *" '
                                  'or "@hourly"); deliveries and retries go on in between.')
    webhook: WebhookSpec | None = Field(
        default=None, description="Also accept changes pushed by the source (signed webhooks).")
    outbound_messages: OutboundMessagesSpec | None = Field(
        default=None, description="Also accept Salesforce Outbound Messages.")
    overlap_seconds: float | None = Field(
        default=None, ge=0, description="Re-read this far behind the last change seen, for "
                                        "transactions that commit late with an earlier time. "
                                        "Default: 0 on PostgreSQL, which also re-reads from the "
                                        "oldest open transaction; 60 on SQLite and MySQL.")


    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            Cron.parse(value)
        return value


class BroadcastDestinationSpec(SpecModel):
    """One destination of a broadcast, with its own filter and transform."""

    name: str = Field(description="Names the destination in the outbox and in dead letters.")
    system: str
    object: str
    operation: Operation = Operation.UPSERT
    key: str
    filter: Scope | None = Field(
        default=None, description="Only changes whose source record is in this scope go here.")
    transform: TransformSpec = Field(default_factory=TransformSpec)


class BroadcastOptions(SpecModel):
    batch_size: int = Field(default=500, ge=1, le=100_000)
    max_attempts: int = Field(default=8, ge=1, le=100,
                              description="Tries of a delivery before it becomes a dead letter.")
    backoff_seconds: float = Field(default=1.0, ge=0)
    backoff_max_seconds: float = Field(default=300.0, ge=0)
    lease_seconds: float = Field(default=60.0, gt=0,
                                 description="A worker that holds a delivery longer loses it.")
    keep_delivered_hours: float | None = Field(
        default=168.0, ge=0, description="`serve` purges deliveries made (and dead letters "
                                         "discarded) longer ago than this; null keeps them all.")


class BroadcastSpec(IntegrationSpec):
    """Every change in one source reaches every destination: `<source> to <destinations> -
    <object> - broadcast`."""

    pattern: Literal["broadcast"]
    source: SourceSpec
    trigger: TriggerSpec = Field(default_factory=TriggerSpec)
    destinations: list[BroadcastDestinationSpec] = Field(min_length=1)
    options: BroadcastOptions = Field(default_factory=BroadcastOptions)

    @model_validator(mode="after")
    def _distinct_names(self) -> BroadcastSpec:
        names = [d.name for d in self.destinations]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"destination names must differ; used twice: {', '.join(twice)}")
        return self

    def scopes(self) -> list[tuple[Scope, tuple[Any, ...]]]:
        found = [(self.source.scope, ("source", "scope"))] if self.source.scope else []
        return found + [(d.filter, ("destinations", i, "filter"))
                        for i, d in enumerate(self.destinations) if d.filter is not None]

    def transforms(self) -> list[tuple[TransformSpec, tuple[Any, ...]]]:
        return [(d.transform, ("destinations", i, "transform"))
                for i, d in enumerate(self.destinations)]

    def objects_written(self) -> set[tuple[str, str]]:
        return {(d.system, d.object) for d in self.destinations}

    def captured(self) -> list[tuple[str, str]]:
        return [(self.source.system, self.source.object)] if self.trigger.changes == "cdc" else []

    def push_points(self) -> list[PushPoint]:
        trigger = self.trigger
        if trigger.webhook is None and trigger.outbound_messages is None:
            return []
        return [PushPoint(None, self.source.object, trigger.webhook, trigger.outbound_messages)]

    def systems_used(self) -> list[tuple[str, tuple[Any, ...]]]:
        return [(self.source.system, ("source", "system")),
                *((d.system, ("destinations", i, "system")) for i, d in enumerate(self.destinations)),
                *super().systems_used()]

