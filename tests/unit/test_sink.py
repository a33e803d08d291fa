"""The destination-write step every pattern uses, and the one retry policy, against a real
SQLite destination."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from patchbay.connectors.sql import SqlConnector
from patchbay.elements.sink import Sink, UnevenOutcomes
from patchbay.elements.transform import Transform
from patchbay.errors import ConnectionFailed, FatalRunError, RetriableError, SpecError
from patchbay.model import VERSION_FIELD, ObjectSchema, Operation, Outcome, Record, Status
from patchbay.retry import RetryPolicy
from patchbay.spec import SystemSpec, TransformSpec

QUICK = RetryPolicy(max_attempts=3, backoff_seconds=0.01, jitter=0.0)


def destination(tmp_path: Path) -> str:
    path = tmp_path / "crm.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE contacts (id TEXT PRIMARY KEY, name TEXT NOT NULL, "
                   "staff INTEGER, city TEXT NOT NULL)")
    return f"sqlite:///{path}"


class Counted(SqlConnector):
    """A real SQLite connector that counts its describes and can fail its first writes."""

    def __init__(self, url: str, failing_writes: int = 0, failing_records: int = 0) -> None:
        super().__init__(SystemSpec(name="crm", url=url))
        self.describes = self.writes = 0
        self.failing_writes, self.failing_records = failing_writes, failing_records

    def describe(self, object: str) -> ObjectSchema:
        self.describes += 1
        return super().describe(object)

    def write(self, object: str, records: Sequence[Record], operation: Operation,
              key: str) -> list[Outcome]:
        self.writes += 1
        if self.failing_writes:
            self.failing_writes -= 1
            raise RetriableError("the database is restarting")
        outcomes = super().write(object, records, operation, key)
        if self.failing_records:
            self.failing_records -= 1
            return [Outcome(o.key, Status.FAILED, "lock timeout") for o in outcomes]
        return outcomes


def transform(spec: dict[str, Any]) -> Transform:
    return Transform(TransformSpec.model_validate(spec), {}, None)


MAPPED = transform({"fields": {"id": {"from": "legacy"}, "name": {"from": "full_name",
                                                                  "required": True},
                               "staff": {"from": "employees"}, "city": {"value": "Lyon"}},
                    "skip_if": "legacy == 'skip-me'"})


def rows(url: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        return db.execute("SELECT id, name, staff, city FROM contacts ORDER BY id").fetchall()


def test_outcomes_come_by_position_for_every_record_of_the_batch(tmp_path: Path) -> None:
    url = destination(tmp_path)
    sink = Sink(Counted(url), "contacts", Operation.UPSERT, "id", transform=MAPPED,
                fields=MAPPED.output_fields)
    batch: list[Record] = [
        {"legacy": "a", "full_name": "Ann", "employees": "12"},
        {"__error__": "file line 3: unbalanced quote", "__raw__": '"x'},
        {"legacy": "b", "full_name": None, "employees": 1},
        {"legacy": "skip-me", "full_name": "Sam", "employees": 1},
        {"legacy": "c", "full_name": "Cy", "employees": "many"},
        {"legacy": "d", "full_name": "Di", "employees": None},
    ]
    written = sink.write(batch)
    assert [(o.key, o.status, o.code) for o in written.outcomes] == [
        ("a", Status.CREATED, None),
        (None, Status.REJECTED, "MALFORMED_RECORD"),
        (None, Status.REJECTED, "REQUIRED_FIELD_MISSING"),
        (None, Status.SKIPPED, "SKIPPED"),
        ("c", Status.REJECTED, "INVALID_TYPE"),
        ("d", Status.CREATED, None),
    ]
    assert written.outcomes[1].reason == "file line 3: unbalanced quote"
    assert written.shaped.positions == [0, 5]
    assert list(written.shaped.aside) == [1, 2, 3] and list(written.shaped.refused) == [4]
    assert rows(url) == [("a", "Ann", 12, "Lyon"), ("d", "Di", None, "Lyon")]


def test_the_destination_is_described_once_and_checked_then(tmp_path: Path) -> None:
    connector = Counted(destination(tmp_path))
    sink = Sink(connector, "contacts", Operation.UPSERT, "id", transform=MAPPED,
                fields=MAPPED.output_fields)
    assert connector.describes == 0  # not before it is needed: it may not be reachable yet
    for n in range(3):
        sink.write([{"legacy": f"k{n}", "full_name": "N", "employees": n}])
    assert connector.describes == 1


def test_fields_the_destination_lacks_are_refused_with_every_problem(tmp_path: Path) -> None:
    made = transform({"fields": {"ident": {"from": "legacy"}, "nmae": {"from": "full_name"}}})
    sink = Sink(Counted(destination(tmp_path)), "contacts", Operation.UPSERT, "id",
                transform=made, fields=made.output_fields,
                unfit=lambda problems: SpecError("does not fit", problems))
    with pytest.raises(SpecError, match="does not fit") as refused:
        sink.check()
    assert refused.value.problems == [
        "'contacts' of system 'crm' has no field 'ident'",
        "'contacts' of system 'crm' has no field 'nmae'; did you mean 'name'?",
        "the transform does not produce the destination key 'id'",
    ]


def test_strict_refuses_a_required_field_without_default_that_no_record_carries(
        tmp_path: Path) -> None:
    made = transform({"fields": {"id": {"from": "legacy"}, "name": {"from": "full_name"}}})
    url = destination(tmp_path)

    def sink(strict: bool, operation: Operation = Operation.UPSERT) -> Sink:
        return Sink(Counted(url), "contacts", operation, "id", transform=made,
                    fields=made.output_fields, strict=strict,
                    unfit=lambda problems: SpecError("does not fit", problems))
    with pytest.raises(SpecError, match="does not fit") as refused:
        sink(strict=True).check()
    assert refused.value.problems == ["'contacts' of system 'crm' requires field 'city' (not "
                                      "null, no default), which the transform does not produce"]
    sink(strict=True, operation=Operation.UPDATE).check()  # an update creates nothing
    lenient = sink(strict=False)
    lenient.check()  # refused record by record instead
    outcome = lenient.write([{"legacy": "a", "full_name": "Ann"}]).outcomes[0]
    assert (outcome.status, outcome.code) == (Status.REJECTED, "REQUIRED_FIELD_MISSING")


def test_transient_failures_are_retried_by_the_policy_then_stop_the_run(tmp_path: Path) -> None:
    url = destination(tmp_path)
    record = {"legacy": "a", "full_name": "Ann", "employees": 1}
    raising = Counted(url, failing_writes=2)
    sink = Sink(raising, "contacts", Operation.UPSERT, "id", transform=MAPPED,
                fields=MAPPED.output_fields, retry=QUICK)
    assert [o.status for o in sink.write([dict(record)]).outcomes] == [Status.CREATED]
    assert raising.writes == 3
    failing = Counted(url, failing_records=1)
    sink = Sink(failing, "contacts", Operation.UPSERT, "id", transform=MAPPED,
                fields=MAPPED.output_fields, retry=QUICK)
    assert [o.status for o in sink.write([dict(record)]).outcomes] == [Status.UNCHANGED]
    assert failing.writes == 2  # the failed record written again, alone
    stuck = Sink(Counted(url, failing_records=3), "contacts", Operation.UPSERT, "id",
                 transform=MAPPED, fields=MAPPED.output_fields, retry=QUICK)
    with pytest.raises(FatalRunError, match=r"^1 records keep failing at crm.contacts: lock "):
        stuck.write([dict(record)])
    once = Sink(Counted(url, failing_writes=1), "contacts", Operation.UPSERT, "id",
                transform=MAPPED, fields=MAPPED.output_fields)
    with pytest.raises(RetriableError, match="restarting"):  # no policy: the caller retries
        once.write([dict(record)])


def test_a_connector_owing_outcomes_is_caught(tmp_path: Path) -> None:
    class Short(SqlConnector):
        def write(self, object: str, records: Sequence[Record], operation: Operation,
                  key: str) -> list[Outcome]:
            return super().write(object, records, operation, key)[1:]
    sink = Sink(Short(SystemSpec(name="crm", url=destination(tmp_path))), "contacts",
                Operation.UPSERT, "id")
    with pytest.raises(UnevenOutcomes, match=r"^the connector returned 1 outcomes for 2 records$"):
        sink.write([{"id": "a", "name": "A", "city": "x"}, {"id": "b", "name": "B", "city": "y"}])


def test_payloads_made_elsewhere_lose_the_version_and_a_delete_by_key_is_not_conformed(
        tmp_path: Path) -> None:
    url = destination(tmp_path)
    sink = Sink(Counted(url), "contacts", Operation.UPSERT, "id", conform_every_field=True,
                broken_code=None)
    written = sink.write([{"id": "a", "name": "Ann", "staff": "3", "city": "x", VERSION_FIELD: "7"},
                          {"__error__": "TRANSFORM_FAILED: no such field"}])
    assert [(o.status, o.code, o.reason) for o in written.outcomes] == [
        (Status.CREATED, None, None), (Status.REJECTED, "TRANSFORM_FAILED", "no such field")]
    assert rows(url) == [("a", "Ann", 3, "x")]
    deleted = sink.write([{"id": "a", VERSION_FIELD: "8"}], Operation.DELETE)
    assert [o.status for o in deleted.outcomes] == [Status.DELETED]
    assert rows(url) == []


def test_the_policy_retries_only_what_it_is_told_to() -> None:
    calls: list[float] = []

    def flaky() -> str:
        calls.append(time.monotonic())
        if len(calls) < 3:
            raise RetriableError("busy")
        return "done"
    assert RetryPolicy(max_attempts=3, backoff_seconds=0.05, jitter=0.0).call(flaky) == "done"
    assert calls[2] - calls[1] >= 0.1 > calls[1] - calls[0] >= 0.05  # exponential
    calls.clear()
    with pytest.raises(RetriableError, match="busy"):
        RetryPolicy(max_attempts=2, backoff_seconds=0.0).call(flaky)
    assert len(calls) == 2

    def refused() -> None:
        calls.append(0.0)
        raise ConnectionFailed("password refused")
    calls.clear()
    with pytest.raises(ConnectionFailed, match="refused"):
        RetryPolicy(max_attempts=5, backoff_seconds=0.0, retry_on=(TimeoutError,)).call(refused)
    assert len(calls) == 1
