"""Transform: what source records become at the destination.

A TransformSpec compiles once per run into a Transform whose `apply(batch)` returns the
transformed records and the records set aside, each with its reason. Lookups into other
objects are resolved once per batch, not once per record.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from patchbay.elements.conform import converter
from patchbay.elements.expressions import Expression
from patchbay.errors import CoercionError, RecordRejected
from patchbay.model import FieldType, Record
from patchbay.spec import FieldMapping, Lookup, ParamRef, TransformSpec


class LookupResolver(Protocol):
    """Finds records of another object by the values of one of its fields."""

    def __call__(self, lookup: Lookup, values: set[Any]) -> Mapping[Any, Any]:
        """Map each value found to the looked-up record's `returns` field."""
        ...


@dataclass(frozen=True, slots=True)
class SetAside:
    """A source record that did not make it through the transform."""

    index: int
    source: Record
    code: str
    reason: str


@dataclass(slots=True)
class TransformResult:
    records: list[Record]
    sources: list[Record]
    """The source record of each transformed record, in the same order."""
    rejected: list[SetAside]
    skipped: list[SetAside]


Step = Callable[[Record, Record], Any]
"""(source record, record being built) -> value of one destination field."""


class Transform:
    def __init__(self, spec: TransformSpec, params: Mapping[str, Any] | None = None,
                 resolve: LookupResolver | None = None) -> None:
        self.spec = spec
        params = params or {}
        self._resolve = resolve
        self._renames: list[tuple[str, str]] = []
        self._steps: list[tuple[str, Step]] = []
        self._lookups: list[tuple[str, FieldMapping, Lookup]] = []
        for target, mapping in spec.fields.items():
            if _is_plain_copy(mapping):
                self._renames.append((target, mapping.from_ or target))
            elif mapping.lookup is not None:
                self._lookups.append((target, mapping, mapping.lookup))
            else:
                self._steps.append((target, _compile(target, mapping, params)))
        sources = [s for _, s in self._renames]
        self._get = operator.itemgetter(*sources) if len(sources) > 1 else None
        self._targets = tuple(t for t, _ in self._renames)
        self._skip_if = Expression(spec.skip_if, params) if spec.skip_if else None
        if self._lookups and resolve is None:
            raise ValueError("a transform with lookups needs a resolver")
        self._params = params
        simple = not (self.passes_through or self._skip_if or self._lookups) and all(
            _is_columnar(m) for m in spec.fields.values())
        self._columnar = [(t, m) for t, m in spec.fields.items()] if simple else None

    @property
    def passes_through(self) -> bool:
        """Source fields not named in the transform are copied as they are."""
        return self.spec.keep_unmapped or not self.spec.fields

    @property
    def output_fields(self) -> list[str]:
        return [*self._targets, *(t for t, _ in self._steps), *(t for t, _, _ in self._lookups)]

    @property
    def source_fields(self) -> set[str] | None:
        """Fields the transform reads, or None when it passes everything through."""
        if self.passes_through:
            return None
        needed = {s for _, s in self._renames} | {m.value for _, _, m in self._lookups}
        for target, mapping in self.spec.fields.items():
            if mapping.from_:
                needed.add(mapping.from_)
            elif mapping.expr:
                needed.update(Expression(mapping.expr).fields)
            elif mapping.value is None and mapping.lookup is None and not mapping.expr:
                needed.add(target)
        if self._skip_if is not None:
            needed.update(self._skip_if.fields)
        return needed

    def apply(self, batch: Sequence[Record]) -> TransformResult:
        result = TransformResult([], [], [], [])
        lookups = self._resolve_lookups(batch)
        renames, get, targets = self._renames, self._get, self._targets
        for index, source in enumerate(batch):
            if self._skip_if is not None:
                try:
                    skip = self._skip_if.evaluate(source)
                except Exception as exc:  # the expression fails on this record's data only
                    result.rejected.append(SetAside(index, source, "TRANSFORM_FAILED",
                                                    f"skip_if: {type(exc).__name__}: {exc}"))
                    continue
                if skip:
                    result.skipped.append(SetAside(index, source, "SKIPPED",
                                                   f"skip_if: {self.spec.skip_if}"))
                    continue
            if self.passes_through:
                record = dict(source)
                for target, name in renames:
                    record[target] = source.get(name)
            elif get is not None:
                try:
                    record = dict(zip(targets, get(source), strict=True))
                except KeyError:
                    record = {t: source.get(s) for t, s in renames}
            else:
                record = {t: source.get(s) for t, s in renames}
            try:
                for target, step in self._steps:
                    record[target] = step(source, record)
                for target, mapping, lookup in self._lookups:
                    record[target] = _finish_lookup(target, mapping, lookup, source, lookups)
            except RecordRejected as exc:
                code = str(exc.context.get("code", "TRANSFORM_FAILED"))
                result.rejected.append(SetAside(index, source, code, exc.message))
                continue
            except Exception as exc:  # an expression may fail on one record's data
                result.rejected.append(SetAside(index, source, "TRANSFORM_FAILED",
                                                f"{type(exc).__name__}: {exc}"))
                continue
            result.records.append(record)
            result.sources.append(source)
        return result

    @property
    def columnar(self) -> bool:
        """Whether `apply_table` can do this transform (copies, constants, trims, defaults,
        types); value maps, expressions, lookups and patterns go record by record."""
        return self._columnar is not None

    def apply_table(self, table: Any) -> Any:
        """The transformed Arrow table, or None if the batch needs the record lane."""
        assert self._columnar is not None
        import pyarrow as pa

        from patchbay.elements import columnar

        rows = table.num_rows
        columns, names = [], []
        for target, mapping in self._columnar:
            if mapping.from_ is None and "value" in mapping.model_fields_set:
                value = mapping.value
                constant = self._params[value.param] if isinstance(value, ParamRef) else value
                try:
                    column = pa.array([constant] * rows)
                except (pa.ArrowInvalid, pa.ArrowTypeError):
                    return None
            else:
                source = mapping.from_ or target
                if source not in table.column_names:
                    return None
                column = table[source]
            column = columnar.finish(column, mapping.trim, mapping.default, mapping.type,
                                     mapping.required)
            if column is None:
                return None
            columns.append(column)
            names.append(target)
        return pa.Table.from_arrays(columns, names=names)

    def _resolve_lookups(self, batch: Sequence[Record]) -> dict[str, Mapping[Any, Any]]:
        found: dict[str, Mapping[Any, Any]] = {}
        for target, _, lookup in self._lookups:
            values = {r.get(lookup.value) for r in batch} - {None, ""}
            assert self._resolve is not None
            found[target] = self._resolve(lookup, values) if values else {}
        return found


def _is_columnar(mapping: FieldMapping) -> bool:
    return (mapping.expr is None and mapping.lookup is None and mapping.map is None
            and mapping.pattern is None and mapping.formats is None
            and mapping.type not in (FieldType.DECIMAL, FieldType.JSON))


def _is_plain_copy(mapping: FieldMapping) -> bool:
    return (mapping.value is None and mapping.expr is None and mapping.lookup is None
            and mapping.type is None and mapping.map is None and mapping.default is None
            and not mapping.required and not mapping.trim and mapping.pattern is None)


def _compile(target: str, mapping: FieldMapping, params: Mapping[str, Any]) -> Step:
    """Compose one field's steps: get, trim, map, default, coerce, require, match."""
    if mapping.expr is not None:
        expression = Expression(mapping.expr, params)

        def get(source: Record, built: Record) -> Any:
            return expression.evaluate(source)
    elif "value" in mapping.model_fields_set:
        constant = params[mapping.value.param] if isinstance(mapping.value, ParamRef) else mapping.value

        def get(source: Record, built: Record) -> Any:
            return constant
    else:
        name = mapping.from_ or target

        def get(source: Record, built: Record) -> Any:
            return source.get(name)

    trim = mapping.trim
    table = mapping.map
    unmapped = mapping.unmapped
    default = mapping.default
    coerce = converter(mapping.type, mapping.formats) if mapping.type else None
    required = mapping.required
    pattern = re.compile(mapping.pattern) if mapping.pattern else None

    def step(source: Record, built: Record) -> Any:
        value = get(source, built)
        if trim and isinstance(value, str):
            value = value.strip()
        if table is not None and value is not None:
            lookup_key = value if isinstance(value, str) else str(value)
            if lookup_key in table:
                value = table[lookup_key]
            elif unmapped == "null":
                value = None
            elif unmapped == "reject":
                raise RecordRejected(f"{target}: {value!r} is not in the value map",
                                     code="UNMAPPED_VALUE")
        if (value is None or value == "") and default is not None:
            value = default
        if coerce is not None:
            try:
                value = coerce(value)
            except CoercionError as exc:
                raise RecordRejected(f"{target}: {exc}", code="INVALID_TYPE") from None
        if required and (value is None or value == ""):
            raise RecordRejected(f"{target} is required but empty", code="REQUIRED_FIELD_MISSING")
        if pattern is not None and value is not None and not pattern.fullmatch(str(value)):
            raise RecordRejected(f"{target}: {value!r} does not match {pattern.pattern!r}",
                                 code="INVALID_FORMAT")
        return value
    return step


def _finish_lookup(target: str, mapping: FieldMapping, lookup: Lookup, source: Record,
                   found: Mapping[str, Mapping[Any, Any]]) -> Any:
    value = source.get(lookup.value)
    if value is None or value == "":
        if mapping.required:
            raise RecordRejected(f"{target}: {lookup.value} is empty", code="REQUIRED_FIELD_MISSING")
        return None
    hits = found[target]
    if value in hits:
        return hits[value]
    if lookup.on_missing == "null":
        return None
    raise RecordRejected(
        f"{target}: no {lookup.object} with {lookup.key} = {value!r} in {lookup.system}",
        code="LOOKUP_FAILED")
