"""The one step that writes to a destination, for every pattern.

    batch ──► set aside broken records ──► transform ──► conform ──► connector.write
                      (described once, on first use, and checked then)
          ──► one Outcome per record of the batch, by position

A Sink is one destination object of one integration: its connector, object, operation
and key, the transform that makes its records (none when the records come made, as a
broadcast's outbox payloads do) and, for a run that retries in process, the retry
policy. Migration, broadcast (through the outbox's deliverer), aggregation and stream
aggregation all write through it; sync and correlation are meant to as well.

- Describe once: the destination is described on the first call that needs it (a
  destination not reachable yet is described at a later write), and the fields the
  records carry are checked then: each must exist, and so must the key, which the
  records must carry. `strict` (a migration) also refuses a destination with no fields
  and one with a field every new record needs (not null, no default) that the records
  lack: every record would be refused. A destination without fields (a message
  destination) is otherwise not checked.
- Outcomes by position: a record set aside (marked broken by its source, refused by the
  transform or the conform step, skipped by `skip_if`) gets its REJECTED or SKIPPED
  outcome at its own position; the others get the connector's.
- Retry: with a policy, a write that raises a retriable error is tried again, and the
  records whose outcome is FAILED are written again, alone, after the policy's delay;
  records still failing when it gives up stop the run (FatalRunError). Without one, a
  write is tried once (the outbox retries a delivery later, by the same policy).
- The columnar lane: `shape_table` transforms and conforms an Arrow table with Arrow's
  kernels (None: the record lane must take the batch), `write_table` writes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from patchbay.connectors.base import Connector, Expected
from patchbay.elements.conform import Conformer
from patchbay.elements.transform import Transform
from patchbay.errors import FatalRunError, PatchbayError, SpecError
from patchbay.model import (
    ERROR_FIELD,
    VERSION_FIELD,
    KeyValue,
    ObjectSchema,
    Operation,
    Outcome,
    Record,
    Status,
)
from patchbay.retry import RetryPolicy
from patchbay.spec import suggest

T = TypeVar("T")

MALFORMED = "MALFORMED_RECORD"


class UnevenOutcomes(PatchbayError):
    """A connector returned another number of outcomes than it was given records."""


@dataclass(slots=True)
class Shaped:
    """A batch made ready for the destination."""

    records: list[Record]
    """Transformed and conformed: what is written."""
    positions: list[int]
    """Where each record stands in the batch given."""
    aside: dict[int, Outcome]
    """By position, in the order found: records marked broken or refused by the transform
    (REJECTED, no key) and those skipped by `skip_if` (SKIPPED)."""
    refused: dict[int, Outcome]
    """By position: records the conform step refused (REJECTED, with the record's key)."""


@dataclass(slots=True)
class Written:
    """What one write did."""

    shaped: Shaped
    outcomes: list[Outcome]
    """One per record of the batch given, by position."""


class Sink:
    """One destination object written by one integration."""

    def __init__(self, connector: Connector, object: str, operation: Operation, key: str, *,
                 transform: Transform | None = None,
                 fields: Sequence[str] | None = None,
                 passed: Sequence[str] = (),
                 conform_every_field: bool = False,
                 strict: bool = False,
                 unfit: Callable[[list[str]], SpecError] | None = None,
                 leave_out: Collection[str] = (),
                 broken_code: str | None = MALFORMED,
                 retry: RetryPolicy | None = None) -> None:
        """`fields`: those the records carry, checked against the destination (None: not
        known, a pass-through's, so not checked); `passed`: a pass-through transform's
        source fields, of which those the destination has are carried too.
        `conform_every_field`: conform every field the destination has, not only
        `fields` (records made elsewhere may carry others); with neither, records are
        written as they come and the destination is never described. `unfit` makes the
        error that refuses a destination the records do not fit. `leave_out`: fields
        taken out of every record after the transform. `broken_code`: the code of a
        record marked broken; None when the mark says its own ("CODE: reason")."""
        self.connector, self.object, self.operation, self.key = connector, object, operation, key
        self.transform = transform
        self.fields = None if fields is None else list(fields)
        self.passed, self.conform_every_field, self.strict = passed, conform_every_field, strict
        self.unfit = unfit or self._unfit
        self.leave_out = frozenset(leave_out)
        self.broken_code, self.retry = broken_code, retry
        self.describes = fields is not None or conform_every_field
        self._schema: ObjectSchema | None = None
        self._conformer: Conformer | None = None

    # -- describe once --------------------------------------------------------------------------

    @property
    def schema(self) -> ObjectSchema:
        """The destination's describe, taken once."""
        if self._schema is None:
            self._schema = self.connector.describe(self.object)
        return self._schema

    @property
    def conformer(self) -> Conformer:
        """The conform step, made when the records' fields are checked against the schema
        (the first time it is asked for); SpecError made by `unfit` when they do not fit."""
        if self._conformer is None:
            schema = self.schema
            if self.fields is not None and self.passed:
                self.fields = list(dict.fromkeys(
                    [*self.fields, *(f for f in self.passed if f in schema)]))
            creates = self.operation in (Operation.INSERT, Operation.UPSERT)
            conformed = list(schema.fields) if self.conform_every_field or self.fields is None \
                else self.fields
            conformer = Conformer(schema, conformed, creates=creates)
            problems = self._problems(schema, conformer)
            if problems:
                raise self.unfit(problems)
            self._conformer = conformer
        return self._conformer

    def check(self) -> None:
        """Describe the destination and check the records' fields against it now."""
        _ = self.conformer

    def _problems(self, schema: ObjectSchema, conformer: Conformer) -> list[str]:
        if self.fields is None or not (schema.fields or self.strict):
            return []
        system = self.connector.name
        problems = misfits(schema, self.fields, system=system, object=self.object, key=self.key)
        if self.strict:
            problems += [f"'{self.object}' of system '{system}' requires field '{name}' (not "
                         "null, no default), which the transform does not produce"
                         for name in conformer.missing_required]
        return problems

    def _unfit(self, problems: list[str]) -> SpecError:
        return SpecError(f"the records do not fit {self.connector.name}/{self.object}", problems)

    # -- the record lane ------------------------------------------------------------------------

    def shape(self, batch: Sequence[Record]) -> Shaped:
        """Set aside the broken records, transform and conform the others."""
        conformer = self.conformer if self.describes else None
        aside: dict[int, Outcome] = {}
        kept = list(range(len(batch)))
        given = batch
        if any(ERROR_FIELD in record for record in batch):  # `in` first: the common case is fast
            aside = {p: self._broken(r) for p, r in enumerate(batch) if r.get(ERROR_FIELD) is not None}
            kept = [p for p in kept if p not in aside]
            given = [batch[p] for p in kept]
        records, positions, skipped = self._transformed(given, kept, aside)
        if self.leave_out:
            records = [{k: v for k, v in r.items() if k not in self.leave_out} for r in records]
        records = self._unversioned(records)
        problems = conformer.conform_batch(records) if conformer is not None else {}
        refused = {positions[at]: Outcome(records[at].get(self.key), Status.REJECTED,
                                          problem.reason, problem.code)
                   for at, problem in problems.items()}
        if problems:
            records = [r for at, r in enumerate(records) if at not in problems]
            positions = [p for at, p in enumerate(positions) if at not in problems]
        aside.update(skipped)
        return Shaped(records, positions, aside, refused)

    def _transformed(self, given: Sequence[Record], kept: list[int], aside: dict[int, Outcome]
                     ) -> tuple[list[Record], list[int], dict[int, Outcome]]:
        """The records the transform made, their positions, and the skipped ones; the
        rejected ones go into `aside`."""
        if self.transform is None:
            return list(given), kept, {}
        result = self.transform.apply(given)
        for refused in result.rejected:
            aside[kept[refused.index]] = Outcome(None, Status.REJECTED, refused.reason, refused.code)
        skipped = {kept[s.index]: Outcome(None, Status.SKIPPED, s.reason, s.code)
                   for s in result.skipped}
        if len(result.records) == len(given):
            return result.records, kept, skipped
        at = {id(source): kept[index] for index, source in enumerate(given)}
        return result.records, [at[id(source)] for source in result.sources], skipped

    def _broken(self, record: Record) -> Outcome:
        reason = str(record[ERROR_FIELD])
        if self.broken_code is not None:
            return Outcome(record.get(self.key), Status.REJECTED, reason, self.broken_code)
        code, _, message = reason.partition(": ")
        return Outcome(record.get(self.key), Status.REJECTED, message, code)

    def write(self, batch: Sequence[Record], operation: Operation | None = None,
              expected: Sequence[Expected] | None = None) -> Written:
        """Shape the batch and write what is left of it. An `operation` other than the
        sink's own is a delete by key (the outbox's): its records are written as given.
        With `expected` (one per record), each record is written only where the destination
        still holds what it lists (Connector.write_if); those values are conformed as the
        records are."""
        if operation is None or operation is self.operation:
            shaped, operation = self.shape(batch), self.operation
        else:
            shaped = self._as_given(batch)
        outcomes: list[Outcome] = [Outcome(None, Status.FAILED, "not written")] * len(batch)
        for position, outcome in (*shaped.aside.items(), *shaped.refused.items()):
            outcomes[position] = outcome
        if shaped.records:
            written = self._write(shaped.records, operation) if expected is None else \
                self._write_if(shaped.records, operation,
                               self._conformed([expected[p] for p in shaped.positions]))
            for position, outcome in zip(shaped.positions, written, strict=True):
                outcomes[position] = outcome
        return Written(shaped, outcomes)

    def _conformed(self, expected: Sequence[Expected]) -> list[dict[str, list[Any]]]:
        """Expected values in the destination's types, as the records written are (a value
        that does not convert is left as it is: the destination never holds it)."""
        flat = [(at, name, {name: value}) for at, expect in enumerate(expected)
                for name, values in expect.items() for value in values]
        if self.describes:
            self.conformer.conform_batch([record for *_, record in flat])
        conformed: list[dict[str, list[Any]]] = [{name: [] for name in e} for e in expected]
        for at, name, record in flat:
            conformed[at][name].append(record[name])
        return conformed

    def _write_if(self, records: list[Record], operation: Operation,
                  expected: Sequence[Expected]) -> list[Outcome]:
        outcomes = self.retried(lambda: self.connector.write_if(self.object, records, operation,
                                                                self.key, expected))
        if len(outcomes) != len(records):
            raise UnevenOutcomes(f"the connector returned {len(outcomes)} outcomes for "
                                 f"{len(records)} records")
        return outcomes

    def _as_given(self, batch: Sequence[Record]) -> Shaped:
        return Shaped(self._unversioned(list(batch)), list(range(len(batch))), {}, {})

    def _unversioned(self, records: list[Record]) -> list[Record]:
        """Records made elsewhere (no transform: the outbox's payloads) may carry a version,
        which is for message destinations' ids: a destination with fields never sees it."""
        if self.transform is None and self.describes and self.conformer.schema.fields and \
                any(VERSION_FIELD in r for r in records):
            return [{k: v for k, v in r.items() if k != VERSION_FIELD} for r in records]
        return records

    def _write(self, records: list[Record], operation: Operation) -> list[Outcome]:
        """One write; with a policy, records that failed transiently are written again, alone."""
        def write(batch: list[Record]) -> list[Outcome]:
            outcomes = self.connector.write(self.object, batch, operation, self.key)
            if len(outcomes) != len(batch):
                raise UnevenOutcomes(f"the connector returned {len(outcomes)} outcomes for "
                                     f"{len(batch)} records")
            return outcomes

        outcomes = self.retried(lambda: write(records))
        if self.retry is None:
            return outcomes
        attempts = 1
        while failed := [i for i, o in enumerate(outcomes) if o.status is Status.FAILED]:
            if self.retry.gives_up(attempts):
                raise FatalRunError(f"{len(failed)} records keep failing at "
                                    f"{self.connector.name}.{self.object}: "
                                    f"{outcomes[failed[0]].reason}")
            time.sleep(self.retry.next_delay(attempts))
            attempts += 1
            again = self.retried(lambda: write([records[i] for i in failed]))
            for i, outcome in zip(failed, again, strict=True):
                outcomes[i] = outcome
        return outcomes

    def retried(self, action: Callable[[], T]) -> T:
        """`action` under the sink's retry policy, or once without one."""
        return action() if self.retry is None else self.retry.call(action)

    def get(self, values: Sequence[KeyValue], fields: Sequence[str] | None) -> dict[KeyValue, Record]:
        """The destination's records of these keys (a written batch read back)."""
        return self.retried(lambda: self.connector.get(self.object, self.key, values, fields))

    # -- the columnar lane ----------------------------------------------------------------------

    def accepts_tables(self) -> bool:
        return self.connector.accepts_tables(self.object, self.operation, self.key)

    def shape_table(self, table: Any) -> Any:
        """An Arrow table transformed and conformed by Arrow's kernels, or None when it
        holds anything the record lane must handle."""
        shaped = table if self.transform is None else self.transform.apply_table(table)
        return None if shaped is None else self.conformer.conform_table(shaped)

    def write_table(self, table: Any) -> dict[Status, int] | None:
        """Write a shaped table: counts by status, or None when the destination refused
        something, which the record lane then finds; nothing is written then."""
        return self.retried(lambda: self.connector.write_table(self.object, table,
                                                               self.operation, self.key))

    def get_table(self, values: Sequence[KeyValue], schema: Any) -> Any:
        return self.retried(lambda: self.connector.get_table(self.object, self.key, values,
                                                             schema))


def misfits(schema: ObjectSchema, fields: Sequence[str], *, system: str, object: str,
            key: str) -> list[str]:
    """What keeps records of these fields from being written to `object` by `key`: fields the
    object lacks, a key it lacks, or a key the records do not carry."""
    problems = [f"'{object}' of system '{system}' has no field '{name}'{suggest(name, schema.fields)}"
                for name in fields if name not in schema]
    if key not in schema:
        problems.append(f"destination key '{key}' is not a field of '{object}'"
                        f"{suggest(key, schema.fields)}")
    elif key not in fields:
        problems.append(f"the transform does not produce the destination key '{key}'")
    return problems
