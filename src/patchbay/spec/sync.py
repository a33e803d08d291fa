"""The spec of a bi-directional sync: several systems keep their own copy of the same
records, and the sync makes them behave as one.

    participants   the systems taking part, in priority order: how each one's changes are
                   noticed, and whether records made there are created everywhere
    objects        each shared object (account, contact): its shared fields with who may
                   write them and how a conflict is settled, the fields a first sync
                   matches existing records by, and per participant the object, key,
                   external-id field, scope and field mapping (both directions)
    deletes        what a delete does: propagate, ignore, or flag a shared field
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from patchbay.spec.broadcast import BroadcastOptions, PushPoint, TriggerSpec
from patchbay.spec.common import IntegrationSpec, Scope, SpecModel

ConflictPolicy = Literal["latest", "priority", "owner", "manual"]
SharedType = Literal["auto", "text", "number", "integer", "boolean", "date", "datetime"]


def shared_fields_shorthand(value: Any) -> Any:
    """Shared fields as written: a list of names, or names with nothing after them, take
    every default (a sync's objects, a correlation's `share`)."""
    if isinstance(value, list):
        return {name: {} for name in value}
    if isinstance(value, dict):
        return {k: ({} if v is None else v) for k, v in value.items()}
    return value


class SharedFieldSpec(SpecModel):
    """One field of the shared shape: its type (how values of different systems compare),
    who may write it and how a conflict on it is settled."""

    type: SharedType = Field(
        default="auto", description="How values compare across systems: auto takes each "
                                    "value's own kind; number compares 100.0 and 100.00 equal; "
                                    "datetime compares to the millisecond in UTC; text treats "
                                    "an empty string as null (Salesforce stores no empty text).")
    conflict: ConflictPolicy | None = Field(
        default=None, description="When two systems changed this field differently since the "
                                  "last sync: latest (the change patchbay observed last), "
                                  "priority (the participant listed first), owner (the `owner` "
                                  "participant; between two others, the one listed first), "
                                  "manual (held for a person; the rest of the "
                                  "record still syncs). Default: the sync's `conflicts`.")
    owner: str | None = Field(default=None, description="The participant that wins conflicts "
                                                        "on this field (with conflict: owner).")
    writers: list[str] | None = Field(
        default=None, description="The participants whose edits of this field count; an edit "
                                  "anywhere else is undone by the shared value. Default: all.")
    lookup: str | None = Field(
        default=None, description="The field refers to a record of this shared object: its "
                                  "value is translated through the xref between systems' keys.")


class FieldMapSpec(SpecModel):
    """How one shared field appears in one participant. A plain string is shorthand for
    `{field: <string>}`."""

    field: str = Field(description="The participant's field.")
    values: dict[str, Any] | None = Field(
        default=None, description="The participant's values -> shared values (picklists); "
                                  "inverted for writing, so two values may not map to one "
                                  "unless the field is one way.")
    direction: Literal["both", "in", "out"] = Field(
        default="both", description="both; in: only read from this participant (never "
                                    "written to it); out: only written to it (its edits are "
                                    "not read).")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"field": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _invertible(self) -> FieldMapSpec:
        if self.values is not None and self.direction != "in":
            shared = [repr(v) for v in self.values.values()]
            twice = sorted({v for v in shared if shared.count(v) > 1})
            if twice:
                raise ValueError(f"values cannot be inverted for writing: several values map "
                                 f"to {', '.join(twice)}; make the field `direction: in`")
        return self


class HeldObjectSpec(SpecModel):
    """An object as one participant holds it: where, its key, how its changes are polled,
    which of its records take part, and how its fields map to the shared names."""

    object: str = Field(description="Table, sObject or file, as the system calls it.")
    key: str = Field(description="The participant's own record key (Id, id).")
    watermark: str | None = Field(
        default=None, description="The field polling reads changes by (SystemModstamp, "
                                  "updated_at); not needed with change capture.")
    scope: Scope | None = Field(default=None, description="Which of its records take part.")
    fields: dict[str, FieldMapSpec] = Field(
        description="Shared name -> this participant's field (a list: the same names).")

    @field_validator("fields", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, list):
            return {name: name for name in value}
        return value


class ParticipantObjectSpec(HeldObjectSpec):
    """A shared object as one participant of a sync holds it."""

    external_id: str | None = Field(
        default=None, description="A field that holds patchbay's global id (Salesforce "
                                  "Patchbay_Id__c, a column): records are created by upsert on "
                                  "it, so a create written twice is one record, and identity "
                                  "survives an xref rebuild. Without it, records patchbay "
                                  "creates here get the global id as their key.")


class SyncObjectSpec(SpecModel):
    """One shared object: its shared fields and how each participant holds it."""

    name: str = Field(description="The shared object's name (account, contact).")
    fields: dict[str, SharedFieldSpec] = Field(description="The shared shape.")
    match: list[str] = Field(
        default_factory=list, description="Shared fields that together identify a record "
                                          "when systems already hold data: compared trimmed "
                                          "and case-folded. Several candidates are held for "
                                          "review, never guessed.")
    participants: dict[str, ParticipantObjectSpec] = Field(
        description="Participant name -> how it holds this object.")

    @field_validator("fields", mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return shared_fields_shorthand(value)

    @model_validator(mode="after")
    def _fields_known(self) -> SyncObjectSpec:
        problems = [f"match field '{m}' is not a shared field" for m in self.match
                    if m not in self.fields]
        for name, held in self.participants.items():
            problems += [f"participant '{name}' maps '{f}', which is not a shared field"
                         for f in held.fields if f not in self.fields]
        if problems:
            raise ValueError("; ".join(problems))
        return self


class ParticipantSpec(SpecModel):
    """One system taking part in the sync."""

    name: str = Field(description="Names the participant in objects, conflicts and reports.")
    system: str = Field(description="A system declared under `systems`.")
    trigger: TriggerSpec | None = Field(
        default=None, description="How its changes are noticed; default: the sync's trigger.")
    creates: bool = Field(default=True, description="Records made here are created in the "
                                                    "other participants.")


class DeletesSpec(SpecModel):
    """What a delete in one participant does."""

    policy: Literal["propagate", "ignore", "flag"] = Field(
        default="propagate", description="propagate: delete everywhere; ignore: the others "
                                         "keep the record (it is not re-created where it was "
                                         "deleted); flag: set the shared field `flag` true "
                                         "everywhere else.")
    flag: str | None = Field(default=None, description="The shared field a delete sets true "
                                                       "(policy: flag).")
    wins: Literal["delete", "update"] = Field(
        default="delete", description="A delete against an update made elsewhere since the "
                                      "last sync: the delete stands, or the record is revived "
                                      "where it was deleted. Recorded as a conflict either way.")
    undelete: Literal["revive", "ignore"] = Field(
        default="revive", description="A deleted record that comes back (a Salesforce undelete, "
                                      "a re-insert with the same key): revive it everywhere, "
                                      "or leave it alone.")
    check_seconds: float | None = Field(
        default=300.0, gt=0, description="For participants whose trigger cannot see deletes "
                                         "(polling): compare their keys with the xref this "
                                         "often; a key that disappeared is a delete. null: never.")


class SyncOptions(BroadcastOptions):
    """A broadcast's delivery options; a sync reads and merges in larger batches (each is
    one unit of work of xref, shadow and outbox)."""

    batch_size: int = Field(default=2000, ge=1, le=100_000)
    load_batch_size: int = Field(
        default=5000, ge=1, le=100_000,
        description="Records a participant that has just been read whole is sent per write "
                    "of the initial load (a COPY, a Bulk 2.0 job); each batch is a checkpoint, "
                    "and what a batch holds in memory (about 5 KB a record) bounds its peak.")


class SyncSpec(IntegrationSpec):
    """Several systems behave as one: `<systems> - <objects> - sync`."""

    pattern: Literal["sync"]
    participants: list[ParticipantSpec] = Field(min_length=2)
    objects: list[SyncObjectSpec] = Field(min_length=1)
    trigger: TriggerSpec = Field(default_factory=TriggerSpec)
    conflicts: ConflictPolicy = Field(default="latest", description="The default conflict "
                                                                    "policy of every field.")
    deletes: DeletesSpec = Field(default_factory=DeletesSpec)
    options: SyncOptions = Field(default_factory=SyncOptions)

    @model_validator(mode="after")
    def _consistent(self) -> SyncSpec:
        names = [p.name for p in self.participants]
        problems = [f"participant names must differ; '{n}' is used twice"
                    for n in sorted({n for n in names if names.count(n) > 1})]
        objects = [o.name for o in self.objects]
        problems += [f"object names must differ; '{n}' is used twice"
                     for n in sorted({n for n in objects if objects.count(n) > 1})]
        for obj in self.objects:
            problems += [f"object '{obj.name}': unknown participant '{p}'"
                         for p in obj.participants if p not in names]
            if len(obj.participants) < 2:
                problems.append(f"object '{obj.name}': needs two or more participants")
            for field_name, shared in obj.fields.items():
                where = f"object '{obj.name}', field '{field_name}'"
                policy = shared.conflict or self.conflicts
                if policy == "owner" and shared.owner is None:
                    problems.append(f"{where}: conflict: owner needs `owner`")
                for who in [*([shared.owner] if shared.owner else []), *(shared.writers or [])]:
                    if who not in names:
                        problems.append(f"{where}: unknown participant '{who}'")
                if shared.lookup is not None and shared.lookup not in objects:
                    problems.append(f"{where}: lookup names unknown object '{shared.lookup}'")
            if self.deletes.policy == "flag" and self.deletes.flag not in obj.fields:
                problems.append(f"object '{obj.name}': deletes.flag must name a shared field")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def participant(self, name: str) -> ParticipantSpec:
        return next(p for p in self.participants if p.name == name)

    def trigger_of(self, name: str) -> TriggerSpec:
        return self.participant(name).trigger or self.trigger

    def scopes(self) -> list[tuple[Scope, tuple[Any, ...]]]:
        return [(held.scope, ("objects", i, "participants", name, "scope"))
                for i, obj in enumerate(self.objects)
                for name, held in obj.participants.items() if held.scope is not None]

    def objects_written(self) -> set[tuple[str, str]]:
        return {(self.participant(name).system, held.object)
                for obj in self.objects for name, held in obj.participants.items()}

    def captured(self) -> list[tuple[str, str]]:
        return [(self.participant(name).system, held.object)
                for obj in self.objects for name, held in obj.participants.items()
                if self.trigger_of(name).changes == "cdc"]

    def push_points(self) -> list[PushPoint]:
        points = []
        for obj in self.objects:
            for name, held in obj.participants.items():
                trigger = self.trigger_of(name)
                if trigger.webhook is not None or trigger.outbound_messages is not None:
                    points.append(PushPoint(name, held.object, trigger.webhook,
                                            trigger.outbound_messages))
        return points

    def systems_used(self) -> list[tuple[str, tuple[Any, ...]]]:
        return [(p.system, ("participants", i, "system")) for i, p in enumerate(self.participants)]
