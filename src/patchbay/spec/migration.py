"""The spec of a migration: move a scoped set of records once, or on demand."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

from patchbay.spec.common import DestinationSpec, IntegrationSpec, Scope, SourceSpec, SpecModel, TransformSpec


class Options(SpecModel):
    batch_size: int = Field(default=2000, ge=1, le=1_000_000)
    concurrency: int = Field(
        default=2, ge=1, le=16, description="Batches read ahead while one is written."
    )
    max_rejects: int | str | None = Field(
        default=None, description="Stop the run, failed, when it sets aside more records than "
                                  "this: a count (100) or a share of the records read (\"5%\", "
                                  "judged from the first 1,000 on). Without it, a run stops when "
                                  "its first 1,000 records are all set aside.")
    verify: Literal["full", "counts", "off"] = Field(
        default="full", description="How the report compares the destination with the source."
    )
    sample_size: int = Field(default=20, ge=0, le=1000)
    write_attempts: int = Field(
        default=5, ge=1, le=50, description="Tries of a batch while the destination fails "
                                            "transiently, before the run stops resumable.")
    retry_backoff_seconds: float = Field(
        default=1.0, ge=0, description="First pause between tries; it doubles each time.")
    lease_seconds: float = Field(
        default=30.0, gt=0, le=3600,
        description="A run with workers (`patchbay run --workers N`): how long a worker holds a "
                    "key range without renewing its lease (it renews every third of this); "
                    "another worker takes over a range whose holder stopped after this long.")
    columnar: bool = Field(
        default=True, description="Move clean batches as Arrow tables where source, transform "
                                  "and destination allow; batches with anything to set aside go "
                                  "record by record either way.")

    @field_validator("max_rejects", mode="before")
    @classmethod
    def _rejects_limit(cls, value: Any) -> Any:
        if value is None:
            return None
        plain = isinstance(value, (int, str)) and not isinstance(value, bool)
        text = str(value).strip() if plain else ""
        share = re.fullmatch(r"(\d+(?:\.\d+)?)\s*%", text)
        if text.isdigit():
            return int(text)
        if share is not None and float(share.group(1)) <= 100:
            return f"{share.group(1)}%"
        raise ValueError(f"max_rejects takes a count (100) or a share of the records read "
                         f"(\"5%\"), not {value!r}")

    def rejects_allowed(self, read: int) -> float:
        """How many set-aside records `max_rejects` allows after `read` records (no limit:
        all of them)."""
        if self.max_rejects is None:
            return float(read)
        if isinstance(self.max_rejects, int):
            return float(self.max_rejects)
        return read * float(self.max_rejects.rstrip("%")) / 100


class MigrationSpec(IntegrationSpec):
    """Move a scoped set of records once, or on demand: `<source> to <destination> - <object>
    - migration`."""

    pattern: Literal["migration"]
    source: SourceSpec
    transform: TransformSpec = Field(default_factory=TransformSpec)
    destination: DestinationSpec
    options: Options = Field(default_factory=Options)

    def scopes(self) -> list[tuple[Scope, tuple[Any, ...]]]:
        return [(self.source.scope, ("source", "scope"))] if self.source.scope else []

    def transforms(self) -> list[tuple[TransformSpec, tuple[Any, ...]]]:
        return [(self.transform, ("transform",))]

    def objects_written(self) -> set[tuple[str, str]]:
        return {(self.destination.system, self.destination.object)}

    def systems_used(self) -> list[tuple[str, tuple[Any, ...]]]:
        return [(self.source.system, ("source", "system")),
                (self.destination.system, ("destination", "system")), *super().systems_used()]

