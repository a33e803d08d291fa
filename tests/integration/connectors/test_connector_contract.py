"""The shared connector tests: what every connector claiming a capability must do.

Each test runs once for every subject (a real system: SQLite, PostgreSQL, MariaDB, CSV,
JSON Lines and Parquet files, the local org through REST and through Bulk 2.0 jobs,
RabbitMQ, NATS JetStream, Redis, an HTTP receiver) whose
connector class claims the capability the test is about, and uses the connector's public
methods only. A new connector joins by adding its subject to conftest.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from patchbay.connectors.base import Capability
from patchbay.model import Change, Operation, Position, Record, Status
from patchbay.scope import BoundScope, Condition, Group, to_predicate

from .conftest import SEED, Subject, claiming

KEYS = [key for key, _, _ in SEED]


def every(subjects: list[str]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("subject", subjects, indirect=True)


def read_all(subject: Subject, scope: BoundScope | None = None, *, after: Position = None,
             columnar: bool = False, page_size: int = 1000) -> list[Record]:
    pages = subject.connector.read(subject.object, scope, key=subject.key, after=after,
                                   fields=[subject.key, subject.name, subject.amount],
                                   columnar=columnar, page_size=page_size)
    return [record for page in pages for record in page.records]


def keys_of(records: list[Record], subject: Subject) -> list[str]:
    return [record[subject.key] for record in records]


def in_read_order(subject: Subject, keys: list[str]) -> list[str]:
    """`keys` in the order a read yields them: by key, or as stored where that is documented."""
    return sorted(keys) if subject.orders_by_key else [k for k in KEYS if k in keys]


def scopes(subject: Subject) -> dict[str, BoundScope]:
    name, amount, key = subject.name, subject.amount, subject.key
    return {
        "eq": Condition(name, "eq", "Alpha"),
        "ne, null amount left out": Condition(amount, "ne", 20),
        "gt": Condition(amount, "gt", 20),
        "lte": Condition(amount, "lte", 20),
        "in, one key missing": Condition(key, "in", ["k02", "k05", "k99"]),
        "in, with null": Condition(amount, "in", [10, None]),
        "in, only null": Condition(amount, "in", [None]),
        "not_in": Condition(amount, "not_in", [10, 20]),
        "not_in, with null": Condition(amount, "not_in", [10, None]),
        "not of in, with null": Group("not", (Condition(amount, "in", [10, None]),)),
        "not_like": Condition(name, "not_like", "Al%"),
        "normalized eq": Condition(name, "eq", "alpha", normalize=True),
        "normalized in": Condition(name, "in", ["bravo", "echo"], normalize=True),
        "gt on text": Condition(name, "gt", "Charlie"),
        "and": Group("and", (Condition(amount, "gte", 20), Condition(name, "lt", "E"))),
        "like": Condition(name, "like", "Al%"),
        "is null": Condition(amount, "is_null", True),
        "or": Group("or", (Condition(name, "eq", "Bravo"), Condition(amount, "gte", 50))),
        "not": Group("not", (Condition(amount, "eq", 20),)),
    }


# -- read ---------------------------------------------------------------------------------------


@every(claiming(Capability.READ))
def test_read_yields_every_record_ordered_by_key(subject: Subject) -> None:
    records = read_all(subject)
    assert keys_of(records, subject) == in_read_order(subject, KEYS)
    assert {r[subject.key]: r[subject.name] for r in records} == {k: n for k, n, _ in SEED}


@every(claiming(Capability.READ))
def test_read_resumes_after_every_position_it_gave(subject: Subject) -> None:
    pages = list(subject.connector.read(subject.object, key=subject.key, page_size=2,
                                        fields=[subject.key, subject.name]))
    read_so_far: list[str] = []
    for page in pages:
        read_so_far += keys_of(page.records, subject)
        rest = keys_of(read_all(subject, after=page.position), subject)
        assert read_so_far + rest == in_read_order(subject, KEYS), f"after {page.position!r}"


@every(claiming(Capability.READ))
def test_a_scope_keeps_exactly_the_records_to_predicate_keeps(subject: Subject) -> None:
    everything = read_all(subject)
    for label, scope in scopes(subject).items():
        kept = [r[subject.key] for r in everything if to_predicate(scope)(r)]
        assert keys_of(read_all(subject, scope), subject) == kept, label


@every(claiming(Capability.COLUMNAR))
def test_a_columnar_read_yields_the_records_a_record_read_yields(subject: Subject) -> None:
    scope = Condition(subject.amount, "gte", 20)
    assert read_all(subject, scope, columnar=True, page_size=3) == read_all(subject, scope)


# -- count --------------------------------------------------------------------------------------


@every(claiming(Capability.COUNT))
def test_count_is_the_number_of_records_a_read_yields(subject: Subject) -> None:
    assert subject.connector.count(subject.object) == len(SEED)
    for label, scope in scopes(subject).items():
        assert subject.connector.count(subject.object, scope) == len(read_all(subject, scope)), label


# -- get ----------------------------------------------------------------------------------------


@every(claiming(Capability.GET))
def test_get_finds_records_by_key_and_leaves_out_the_missing(subject: Subject) -> None:
    found = subject.connector.get(subject.object, subject.key, ["k05", "k99", "k01"],
                                  fields=[subject.key, subject.name])
    assert {k: (r[subject.key], r[subject.name]) for k, r in found.items()} == {
        "k05": ("k05", "Alder"), "k01": ("k01", "Alpha")}


# -- write --------------------------------------------------------------------------------------


def written(subject: Subject, records: list[Record], operation: Operation) -> list[tuple[str, Status]]:
    outcomes = subject.connector.write(subject.object, records, operation, subject.key)
    return [(o.key, o.status) for o in outcomes]


def names_by_key(subject: Subject, keys: list[str]) -> dict[str, str]:
    found = subject.connector.get(subject.object, subject.key, keys, fields=[subject.key, subject.name])
    return {k: r[subject.name] for k, r in found.items()}


STORES = [s for s in claiming(Capability.WRITE) if s in claiming(Capability.GET)]
MESSAGES = [s for s in claiming(Capability.WRITE) if s not in STORES]


@every(STORES)
def test_insert_creates_new_records_and_skips_existing_ones(subject: Subject) -> None:
    records = [subject.record("k10", "New one", 1, 10), subject.record("k01", "Not Alpha", 1, 11),
               subject.record("k11", "New two", 2, 12)]
    existing = Status.SKIPPED if subject.insert_looks_up_keys else Status.CREATED
    assert written(subject, records, Operation.INSERT) == [
        ("k10", Status.CREATED), ("k01", existing), ("k11", Status.CREATED)]
    assert names_by_key(subject, ["k10", "k11"]) == {"k10": "New one", "k11": "New two"}
    if subject.insert_looks_up_keys:
        assert names_by_key(subject, ["k01"]) == {"k01": "Alpha"}


@every(STORES)
def test_upsert_updates_existing_records_and_creates_new_ones(subject: Subject) -> None:
    records = [subject.record("k02", "Bravo changed", 20, 10), subject.record("k12", "New", None, 11)]
    assert written(subject, records, Operation.UPSERT) == [
        ("k02", Status.UPDATED), ("k12", Status.CREATED)]
    assert names_by_key(subject, ["k02", "k12"]) == {"k02": "Bravo changed", "k12": "New"}


@every(STORES)
def test_writing_a_record_as_it_stands_leaves_it_unchanged(subject: Subject) -> None:
    position = KEYS.index("k01")
    same = subject.record(*SEED[position], revision=position + 1)
    status = Status.UNCHANGED if subject.compares_before_writing else Status.UPDATED
    assert written(subject, [same], Operation.UPSERT) == [("k01", status)]
    assert written(subject, [same], Operation.UPDATE) == [("k01", status)]
    assert names_by_key(subject, ["k01"]) == {"k01": "Alpha"}


@every(STORES)
def test_update_updates_existing_records_and_skips_missing_ones(subject: Subject) -> None:
    records = [subject.record("k13", "Missing", 1, 10), subject.record("k03", "Charlie changed", None, 11)]
    assert written(subject, records, Operation.UPDATE) == [
        ("k13", Status.SKIPPED), ("k03", Status.UPDATED)]
    assert names_by_key(subject, ["k13", "k03"]) == {"k03": "Charlie changed"}


@every(STORES)
def test_delete_deletes_existing_records_and_skips_missing_ones(subject: Subject) -> None:
    records = [{subject.key: "k04"}, {subject.key: "k14"}, {subject.key: "k06"}]
    assert written(subject, records, Operation.DELETE) == [
        ("k04", Status.DELETED), ("k14", Status.SKIPPED), ("k06", Status.DELETED)]
    assert sorted(names_by_key(subject, KEYS)) == ["k01", "k02", "k03", "k05", "k07"]


@every(claiming(Capability.WRITE))
def test_a_record_without_a_key_fails_alone_in_its_place(subject: Subject) -> None:
    records = [subject.record("k20", "First", 1, 10), subject.record("", "No key", 1, 11),
               subject.record("k21", "Last", 1, 12)]
    made = Status.CREATED
    assert written(subject, records, Operation.UPSERT) == [
        ("k20", made), (None, Status.REJECTED), ("k21", made)]


@every(STORES)
def test_of_a_key_repeated_in_a_batch_the_last_record_is_written(subject: Subject) -> None:
    records = [subject.record("k30", "First", 1, 10), subject.record("k31", "Other", 1, 11),
               subject.record("k30", "Second", 1, 12)]
    assert written(subject, records, Operation.UPSERT) == [
        ("k30", Status.SKIPPED), ("k31", Status.CREATED), ("k30", Status.CREATED)]
    assert names_by_key(subject, ["k30", "k31"]) == {"k30": "Second", "k31": "Other"}


@every(MESSAGES)
def test_a_message_destination_takes_every_record_in_order(subject: Subject) -> None:
    records = [subject.record(k, n, a) for k, n, a in SEED]
    assert written(subject, records, Operation.UPSERT) == [(k, Status.CREATED) for k in KEYS]
    deletes = [{subject.key: "k01"}, {subject.key: "k02"}]
    assert written(subject, deletes, Operation.DELETE) == [
        ("k01", Status.DELETED), ("k02", Status.DELETED)]


# -- describe -----------------------------------------------------------------------------------


@every(claiming(Capability.DESCRIBE))
def test_describe_names_the_object_and_the_fields_it_has(subject: Subject) -> None:
    described = subject.connector.describe(subject.object)
    assert described.name == subject.object
    if subject.stores_records:
        assert {subject.key, subject.name, subject.amount} <= set(described.fields)
    else:
        assert dict(described.fields) == {}, "a message destination is schemaless"


# -- changes ------------------------------------------------------------------------------------


def changed(subject: Subject, cursor: dict[str, object] | None) -> tuple[list[Change], dict[str, object]]:
    return subject.connector.changes(subject.object, cursor, [subject.key, subject.name])


@every(claiming(Capability.CHANGES))
def test_changes_from_the_start_then_only_what_changed_since(subject: Subject) -> None:
    first, cursor = changed(subject, subject.changes_cursor)
    assert sorted(c.record[subject.key] for c in first) == sorted(KEYS)
    assert written(subject, [subject.record("k02", "Bravo changed", 20, 100)], Operation.UPDATE) == [
        ("k02", Status.UPDATED)]
    second, cursor = changed(subject, cursor)
    assert [(c.record[subject.key], c.record[subject.name]) for c in second] == [("k02", "Bravo changed")]
    third, _ = changed(subject, cursor)
    assert third == [], "nothing is delivered twice"


# -- consume ------------------------------------------------------------------------------------


@every(claiming(Capability.CONSUME))
def test_messages_not_acked_come_back_and_acked_ones_do_not(subject: Subject) -> None:
    assert subject.queue is not None
    records = [subject.record(k, n, a) for k, n, a in SEED[:3]]
    assert [s for _, s in written(subject, records, Operation.UPSERT)] == [Status.CREATED] * 3

    taken = subject.connector.subscribe(subject.queue, "contract")
    first = taken.fetch(10, 5)
    assert [m.body["key"] for m in first] == KEYS[:3]
    taken.close()  # without acking: every message comes back

    again = subject.connector.subscribe(subject.queue, "contract")
    second = again.fetch(10, 10)
    assert [m.id for m in second] == [m.id for m in first]
    again.ack(second)
    again.close()

    last = subject.connector.subscribe(subject.queue, "contract")
    assert last.fetch(10, 2) == []
    last.close()


# -- write_if -----------------------------------------------------------------------------------


@every(claiming(Capability.WRITE_IF))
def test_a_conditional_write_lands_only_where_the_record_holds_what_is_expected(
        subject: Subject) -> None:
    key, name, amount = subject.key, subject.name, subject.amount
    updated = subject.connector.write_if(subject.object, [
        {key: "k01", name: "Alpha two"},    # holds one of the values expected: written
        {key: "k02", name: "Bravo two"},    # holds another (a person's edit): stale
        {key: "k03", amount: 30},           # null expected, null held: written
        {key: "k99", name: "Nobody"},       # no such record: skipped
    ], Operation.UPDATE, key, [{name: ["Alpha", "Alpha two"]}, {name: ["Someone"]},
                               {amount: [None]}, {name: ["Nobody"]}])
    assert [o.status for o in updated] == [Status.UPDATED, Status.STALE, Status.UPDATED,
                                           Status.SKIPPED]
    deleted = subject.connector.write_if(subject.object, [{key: "k04"}, {key: "k06"}],
                                         Operation.DELETE, key,
                                         [{name: ["Someone"]}, {name: ["Echo"]}])
    assert [o.status for o in deleted] == [Status.STALE, Status.DELETED]
    assert names_by_key(subject, ["k01", "k02", "k04", "k06"]) == {
        "k01": "Alpha two", "k02": "Bravo", "k04": "Delta"}


def test_every_capability_has_shared_tests() -> None:
    """A capability a connector may claim is promised by tests here: one added without them
    would let a connector claim it untested."""
    tree = ast.parse(Path(__file__).read_text(encoding="utf-8"))
    tested = {node.args[0].attr for node in ast.walk(tree)
              if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "claiming"
              and node.args and isinstance(node.args[0], ast.Attribute)}
    assert tested == {capability.name for capability in Capability}
