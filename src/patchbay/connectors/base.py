"""The connector seam: what every system adapter offers, and the registry that finds them.

A connector is one class in one module. It states its capabilities rather than faking them:

    read(object, scope, after)  -> iterator of Pages     (streaming; memory flat)
    count(object, scope)        -> number of records in scope
    get(object, key, values)    -> records by key         (lookups, matching, verification)
    write(object, records, op, key) -> one Outcome per record, in order
    write_if(object, records, op, key, expected) -> the same, each record written only
                                where the system still holds what the writer expects
    describe(object)            -> ObjectSchema
    subscribe(object, consumer) -> Subscription           (messages of a queue or subject:
                                                          fetch, ack, close; at least once)

Each connector declares its `options` (a system's `options:` in the integration file) as
a pydantic model, `options_model`: loading a file validates every system's options through
the registry by URL scheme, so a misspelt option is an error with its line and a "did you
mean", and `patchbay schema` describes them.

Connectors register by URL scheme. Third-party packages add theirs through the
`patchbay.connectors` entry point group (name = scheme, value = "module:Class").
"""

from __future__ import annotations

import hashlib
import importlib
import json
import secrets
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from importlib.metadata import entry_points
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from sqlalchemy import exc as sa_exc

from patchbay.errors import SpecError
from patchbay.extras import driver_needed
from patchbay.model import (
    ERROR_FIELD,
    RAW_FIELD,
    Change,
    KeyValue,
    ObjectSchema,
    Operation,
    Outcome,
    Page,
    Position,
    Record,
    Status,
)
from patchbay.scope import BoundScope
from patchbay.spec import SystemSpec, suggest, use_connector_options


class Capability(StrEnum):
    READ = "read"
    WRITE = "write"
    GET = "get"
    DESCRIBE = "describe"
    CHANGES = "changes"
    COLUMNAR = "columnar"
    CONSUME = "consume"
    COUNT = "count"
    """`count(scope)` is cheap: the system answers it without reading the records out."""
    WRITE_IF = "write_if"
    """`write_if`: updates and deletes conditional on the values the record holds."""


DRIVER_UNREACHABLE: tuple[type[Exception], ...] = (sa_exc.OperationalError, sa_exc.InterfaceError)
"""What a database driver raises while its database cannot be reached or is busy, where a
connector has not turned it into an error of the tree: the serving loops try again later.
(The engine state raises EngineStateUnavailable instead.)"""


@dataclass(frozen=True, slots=True)
class Received:
    """One message taken from a queue or subject and not yet acknowledged."""

    id: str
    """Stable across redeliveries of the message: what a consumer de-duplicates by."""
    body: Mapping[str, Any]
    token: Any
    """What the subscription needs to acknowledge the message; opaque to everyone else."""


class Subscription(ABC):
    """Messages of one queue or subject, taken at least once: a message not acknowledged
    comes back (after its connection dies, or the broker's ack wait), so a consumer must
    record its effects before `ack` and recognise a message it has seen by its id."""

    @abstractmethod
    def fetch(self, max_messages: int, timeout_seconds: float) -> list[Received]:
        """Up to `max_messages` messages, waiting up to `timeout_seconds` for the first;
        an empty list when none came."""

    @abstractmethod
    def ack(self, received: Sequence[Received]) -> None:
        """Acknowledge messages: the broker forgets them."""

    @abstractmethod
    def close(self) -> None:
        """Let go; messages taken and not acknowledged go back to the broker (at once, or
        when its ack wait runs out)."""


def message_body(data: bytes) -> dict[str, Any]:
    """A message's JSON object, or {ERROR_FIELD: why, RAW_FIELD: text} when it is not one.
    Numbers with a fraction become Decimals: a float would make totals drift."""
    text = data.decode("utf-8", errors="replace")
    try:
        value = json.loads(text, parse_float=Decimal)
    except ValueError as exc:
        return {ERROR_FIELD: f"the body is not JSON: {exc}", RAW_FIELD: text[:2000]}
    if not isinstance(value, dict):
        return {ERROR_FIELD: f"the body is JSON but not an object (a {type(value).__name__})",
                RAW_FIELD: text[:2000]}
    return value


class ConnectorOptions(BaseModel):
    """The options of a connector's systems: subclass it with one field per option, each
    with its type, default and description. Unknown options are refused."""

    # YAML reads `password: 12345` or `api_version: 59.0` as numbers; they are text here.
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


OptionsT = TypeVar("OptionsT", bound=ConnectorOptions)

Expected = Mapping[str, Sequence[Any]]
"""A conditional write's expectation of one record: field -> the values it may hold (None
for empty)."""


class Connector:
    """One connection to one system. Subclasses implement what their capabilities promise."""

    schemes: ClassVar[tuple[str, ...]] = ()
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    options_model: ClassVar[type[ConnectorOptions] | None] = None
    """The options this connector takes; None (a connector that declares none) leaves
    them unchecked."""

    def __init__(self, system: SystemSpec) -> None:
        self.system = system
        # The key of the digests in the cursors of callers that pass none to `changes`: a
        # cursor stored then recognises the records it remembers on this connector only.
        self.digest_key = secrets.token_bytes(32)
        self._refuse_unknown_options()

    def _refuse_unknown_options(self) -> None:
        """Options are checked when the file is loaded; a connector made from a SystemSpec
        in code checks their names here (their values where it reads them)."""
        if self.options_model is None:
            return
        known = [f.alias or n for n, f in self.options_model.model_fields.items()]
        for option in self.system.options:
            if option not in known:
                raise SpecError(f"system '{self.name}': unknown option '{option}'"
                                f"{suggest(option, known)}; known options: {', '.join(known)}")

    def _options_as(self, model: type[OptionsT]) -> OptionsT:
        """The system's options as `model` says, typed; SpecError naming each bad value."""
        try:
            return model.model_validate(self.system.options)
        except ValidationError as exc:
            problems = [f"option {'.'.join(str(p) for p in error['loc'])}: {error['msg']}"
                        for error in exc.errors()]
            raise SpecError(f"system '{self.name}': invalid options", problems) from None

    @property
    def name(self) -> str:
        return self.system.name

    def read(self, object: str, scope: BoundScope | None = None, *, key: str | None = None,
             fields: Sequence[str] | None = None, after: Position = None,
             page_size: int = 1000, columnar: bool = False) -> Iterator[Page]:
        """Stream the records in scope, ordered by `key` when given, starting after `after`.

        With `columnar`, a connector with the COLUMNAR capability hands pages over as Arrow
        tables where it can.
        """
        raise self._cannot("read")

    def count(self, object: str, scope: BoundScope | None = None) -> int:
        raise self._cannot("count")

    def get(self, object: str, key: str, values: Sequence[KeyValue],
            fields: Sequence[str] | None = None) -> dict[KeyValue, Record]:
        """The records whose `key` field is one of `values`, by key value."""
        raise self._cannot("get")

    def boundaries(self, object: str, scope: BoundScope | None, key: str,
                   parts: int) -> list[KeyValue]:
        """At most `parts - 1` ascending key values that cut the records in scope into
        `parts` ranges of about equal size (fewer when there are fewer distinct keys; none
        when the scope is empty). A partitioned run splits its work at them."""
        raise self._cannot("split its records into key ranges")

    def deleted(self, object: str, key: str, values: Sequence[KeyValue]) -> dict[KeyValue, KeyValue]:
        """Of `values`, which `get` did not find, those the system says were deleted, each
        with its key as the system spells it. A system that keeps nothing of a deleted
        record (a table row, a line of a file) says so by not having it: the default."""
        return {value: value for value in values}

    def write(self, object: str, records: Sequence[Record], operation: Operation,
              key: str) -> list[Outcome]:
        """Write a batch; one Outcome per record, in order. A bad record fails alone."""
        raise self._cannot("write")

    def write_if(self, object: str, records: Sequence[Record], operation: Operation,
                 key: str, expected: Sequence[Expected]) -> list[Outcome]:
        """Update (or delete) each record by key only while the system still holds, in each
        field of its expectation (`expected`, by position), one of the values listed: what
        the writer last saw there or wrote there itself. A record that holds another value
        is left as it is, with a STALE outcome; a missing one is SKIPPED, as `write` does.
        The check and the write are one step at the system (a person's edit never lands
        between them)."""
        raise self._cannot("write conditionally")

    def describe(self, object: str) -> ObjectSchema:
        raise self._cannot("describe")

    def changes(self, object: str, cursor: Mapping[str, Any] | None,
                fields: Sequence[str] | None = None, limit: int = 2000, *,
                digest_key: bytes | None = None) -> tuple[list[Change], dict[str, Any]]:
        """Changes since `cursor` (None: from the beginning), and the cursor after them.
        `digest_key`, the engine state's secret, keys the digests by which a cursor
        remembers records it has seen, where it must: a stored cursor holds no record's
        key or values."""
        raise self._cannot("list changes")

    def subscribe(self, object: str, consumer: str) -> Subscription:
        """The messages of queue or subject `object`; `consumer` names the durable consumer
        (the integration) where the broker keeps one."""
        raise self._cannot("consume messages")

    def accepts_tables(self, object: str, operation: Operation, key: str) -> bool:
        """Whether `write_table` and `get_table` work for this object and operation."""
        return False

    def write_table(self, object: str, table: Any, operation: Operation,
                    key: str) -> dict[Status, int] | None:
        """Write an Arrow table of conformed records; return how many records got each
        status, all of them successes. None has the batch written record by record instead
        (the connector cannot, or the system refused something)."""
        return None

    def get_table(self, object: str, key: str, values: Sequence[KeyValue], schema: Any) -> Any:
        """The records whose `key` is one of `values`, as an Arrow table of `schema`, or None."""
        return None

    def usage(self) -> dict[str, int]:
        """What the run has used of the system's allowances (API calls, ...)."""
        return {}

    def check(self) -> None:
        """Raise ConnectionFailed when the system cannot be reached."""

    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> Connector:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _cannot(self, what: str) -> NotImplementedError:
        return NotImplementedError(
            f"system '{self.name}' ({type(self).__name__}) cannot {what}")


def even_cuts(low: int | None, high: int | None, parts: int) -> list[int]:
    """The integers that cut [low, high] into `parts` ranges of equal width (fewer when it
    holds fewer integers than that), ascending; none when there is nothing between."""
    if low is None or high is None or parts < 2:
        return []
    width = high - low + 1
    return sorted({low + width * k // parts for k in range(1, parts)} - {low})


def last_per_key(records: Sequence[Record], key: str, same: Callable[[Any], Any] = lambda v: v
                 ) -> tuple[list[int], list[Outcome | None]]:
    """Which records of a batch to write: the last one of each key, in order. The others
    get their outcome here: an empty key is rejected, an earlier record of a key that
    comes again is skipped. `same` maps a key value to what makes two keys the same."""
    outcomes: list[Outcome | None] = [None] * len(records)
    last: dict[Any, int] = {}
    for index, record in enumerate(records):
        value = record.get(key)
        if value is None or value == "":
            outcomes[index] = Outcome(None, Status.REJECTED, f"key field {key} is empty",
                                      "REQUIRED_FIELD_MISSING")
            continue
        identity = same(value)
        if identity in last:
            earlier = last[identity]
            outcomes[earlier] = Outcome(records[earlier].get(key), Status.SKIPPED,
                                        "a later record in the batch has the same key",
                                        "DUPLICATE_KEY_IN_BATCH")
        last[identity] = index
    return sorted(last.values()), outcomes


def completed(records: Sequence[Record], key: str, outcomes: list[Outcome | None]) -> list[Outcome]:
    """The outcomes of a batch, any record left without one marked as failed (not written)."""
    return [o if o is not None else Outcome(records[i].get(key), Status.FAILED, "not written")
            for i, o in enumerate(outcomes)]


_BUILTIN: dict[str, str] = {
    "sqlite": "patchbay.connectors.sql:SqlConnector",
    "postgresql": "patchbay.connectors.sql:SqlConnector",
    "postgres": "patchbay.connectors.sql:SqlConnector",
    "mysql": "patchbay.connectors.sql:SqlConnector",
    "mariadb": "patchbay.connectors.sql:SqlConnector",
    "file": "patchbay.connectors.files:FileConnector",
    "salesforce": "patchbay.connectors.salesforce:SalesforceConnector",
    "amqp": "patchbay.connectors.rabbitmq:RabbitMqConnector",
    "nats": "patchbay.connectors.nats:NatsConnector",
    "redis": "patchbay.connectors.redis:RedisConnector",
    "http": "patchbay.connectors.http:HttpConnector",
    "https": "patchbay.connectors.http:HttpConnector",
}
_registered: dict[str, type[Connector]] = {}


def register(connector: type[Connector]) -> type[Connector]:
    """Register a connector class for its schemes; usable as a decorator."""
    for scheme in connector.schemes:
        _registered[scheme] = connector
    return connector


def connector_class(scheme: str) -> type[Connector]:
    scheme = scheme.split("+", 1)[0].lower()
    if scheme in _registered:
        return _registered[scheme]
    target = _BUILTIN.get(scheme)
    if target is None:
        plugins = {ep.name: ep for ep in entry_points(group="patchbay.connectors")}
        if scheme in plugins:
            cls: type[Connector] = plugins[scheme].load()
            return cls
        known = sorted({*_BUILTIN, *_registered, *plugins})
        raise SpecError(f"no connector for '{scheme}://' URLs{suggest(scheme, known)}; "
                        f"known schemes: {', '.join(known)}")
    module, _, name = target.partition(":")
    with driver_needed(f"the {scheme}:// connector"):
        loaded: type[Connector] = getattr(importlib.import_module(module), name)
    return loaded


def options_model(scheme: str) -> type[ConnectorOptions] | None:
    """The options model of a scheme's connector; None for a scheme no connector serves
    (reported when the system is used) or whose driver is not installed (likewise)."""
    try:
        return connector_class(scheme).options_model
    except SpecError:
        return None


def options_models() -> dict[str, type[ConnectorOptions]]:
    """The options model of each built-in scheme, for `patchbay schema` (schemes whose
    driver is not installed are left out)."""
    found = {scheme: options_model(scheme) for scheme in _BUILTIN}
    return {scheme: model for scheme, model in found.items() if model is not None}


use_connector_options(options_model, options_models)


def connect(system: SystemSpec, **options: Any) -> Connector:
    """The connector for a declared system, not yet connected (connections open lazily)."""
    return connector_class(system.scheme)(system, **options)


DIGEST_BYTES = 8
"""Of a keyed digest a cursor keeps: two of one cursor agree by chance about once in 2**64
pairs."""


def keyed_digest(secret: bytes, *parts: str) -> str:
    """What a cursor keeps of a record it has seen: a digest of `parts` (its key, its
    timestamp, ...) under the engine state's secret. Keyed BLAKE2b is a MAC: without the key
    the digest cannot be recomputed from a guess (a key, a phone number), so a stored cursor
    says nothing of the records it remembers, a correlation's unshared ones included."""
    return hashlib.blake2b("\0".join(parts).encode(), key=secret,
                           digest_size=DIGEST_BYTES).hexdigest()
