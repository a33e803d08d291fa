"""The shared shape: values of different systems compare as one, mappings invert, and a
mapping that cannot be inverted is refused at load with its line."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from patchbay.elements.shape import Shape, canonical
from patchbay.errors import SpecError
from patchbay.patterns.sync import new_gid
from patchbay.spec import ParticipantObjectSpec, SharedFieldSpec, loads


def test_representations_of_one_value_are_one_value() -> None:
    assert canonical(Decimal("100.00")) == canonical(100.0) == canonical(100) == 100
    assert canonical(Decimal("12.50"), "number") == canonical(12.5) == "12.5"
    assert canonical("", "text") is None and canonical("") is None
    assert canonical(dt.datetime(2026, 1, 2, 3, 4, 5, 678901), "datetime") == \
        canonical("2026-01-02T03:04:05.678Z", "datetime") == "2026-01-02T03:04:05.678Z"
    assert canonical(dt.datetime(2026, 1, 2, 5, 0, tzinfo=dt.timezone(dt.timedelta(hours=2))),
                     "datetime") == "2026-01-02T03:00:00.000Z"
    assert canonical("true", "boolean") is True and canonical(0, "boolean") is False
    assert canonical(dt.date(2026, 1, 2)) == canonical("2026-01-02T00:00:00", "date") == "2026-01-02"


def test_a_mapping_reads_and_writes_with_value_maps() -> None:
    held = ParticipantObjectSpec.model_validate({
        "object": "clients", "key": "cid", "external_id": "patchbay_id",
        "fields": {"name": "full_name", "tier": {"field": "level", "values": {"G": "gold"}},
                   "audit": {"field": "audit_note", "direction": "in"}}})
    shape = Shape(held, {"name": SharedFieldSpec(), "tier": SharedFieldSpec(),
                         "audit": SharedFieldSpec()})
    assert shape.to_shared({"cid": 1, "full_name": "Ada", "level": "G", "audit_note": "x"}) == \
        {"name": "Ada", "tier": "gold", "audit": "x"}
    assert shape.from_shared({"name": "Ada", "tier": "gold", "audit": "x"}) == \
        {"full_name": "Ada", "level": "G"}
    assert shape.read_fields() == ["cid", "patchbay_id", "full_name", "level", "audit_note"]


SPEC = """
systems:
  a: sqlite:///a.db
  b: sqlite:///b.db
integrations:
  - name: s
    pattern: sync
    participants: [{name: a, system: a}, {name: b, system: b}]
    objects:
      - name: thing
        fields: [name, tier]
        participants:
          a: {object: t, key: id, fields: [name, tier]}
          b:
            object: t
            key: id
            fields:
              name: name
              tier: {field: level, values: {G: gold, Gold: gold}}
"""


def test_a_value_map_that_cannot_be_inverted_is_refused_at_load() -> None:
    with pytest.raises(SpecError) as refused:
        loads(SPEC, path=Path("sync.yaml"))
    [problem] = refused.value.problems
    assert problem.startswith("sync.yaml:")
    assert "cannot be inverted" in problem and "'gold'" in problem


def test_a_one_way_value_map_loads() -> None:
    text = SPEC.replace("values: {G: gold, Gold: gold}}", "values: {G: gold, Gold: gold}, "
                        "direction: in}")
    [integration] = loads(text, path=Path("sync.yaml")).integrations
    assert integration.pattern == "sync"


def test_unknown_participants_and_fields_are_named() -> None:
    fixed = SPEC.replace("values: {G: gold, Gold: gold}}", "values: {G: gold}}")
    with pytest.raises(SpecError) as field:
        loads(fixed.replace("fields: [name, tier]}", "fields: [nam]}"), path=Path("sync.yaml"))
    assert field.value.problems == ["sync.yaml:10: integrations[0].objects[0]: participant 'a' "
                                    "maps 'nam', which is not a shared field"]
    with pytest.raises(SpecError) as participant:
        loads(fixed.replace("a: {object", "c: {object"), path=Path("sync.yaml"))
    assert "object 'thing': unknown participant 'c'" in " ".join(participant.value.problems)


def test_global_ids_are_distinct_and_ordered_by_time() -> None:
    earlier = [new_gid() for _ in range(1000)]
    time.sleep(0.002)
    later = new_gid()
    assert len(set(earlier)) == 1000
    assert all(len(g) == 32 and uuid.UUID(g).version == 7 for g in earlier)
    # A batch's records sit together in the state's indexes: a later id sorts after.
    assert max(earlier) < later
