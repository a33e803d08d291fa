"""What every message destination shares (RabbitMQ, NATS JetStream, Redis streams):
the message body, its id, and the base class that turns records into messages.

A message body is compact JSON: {"object", "operation": "upsert"|"delete", "key",
"version", "record"}. Its id is a digest of (object, key, version), so a redelivery of
the same change carries the same id on every channel (the HTTP connector's
Idempotency-Key is the same digest).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import threading
import uuid
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, ClassVar, NamedTuple

from patchbay.connectors.base import Capability, Connector
from patchbay.errors import ConnectionFailed, RetriableError, SpecError
from patchbay.model import VERSION_FIELD, KeyValue, ObjectSchema, Operation, Outcome, Record, Status
from patchbay.spec import SystemSpec

# -- messages -----------------------------------------------------------------------------------


class Message(NamedTuple):
    """One record as a message: its id, key, operation, fields and JSON body."""

    id: str
    key: KeyValue
    operation: str
    """"upsert" or "delete"."""
    record: Record
    """The record's fields, without the version."""
    body: bytes

    def published(self, reason: str | None = None) -> Outcome:
        status = Status.DELETED if self.operation == "delete" else Status.CREATED
        return Outcome(self.key, status, reason)

    def rejected(self, code: str, reason: str) -> Outcome:
        return Outcome(self.key, Status.REJECTED, reason, code)


class _NotJson(TypeError):
    """A value JSON cannot hold."""


def _plain(value: Any) -> Any:
    """A JSON-ready form of a value json cannot write: dates, datetimes, times and decimals
    as text, bytes as base64, sets and tuples as lists; anything else is refused."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(bytes(value)).decode("ascii")
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise _NotJson(f"a {type(value).__name__} value cannot be written as JSON")


def to_json(value: Any) -> bytes:
    """Compact UTF-8 JSON; NaN and infinities are refused (ValueError)."""
    return json.dumps(value, default=_plain, ensure_ascii=False, separators=(",", ":"),
                      allow_nan=False).encode("utf-8")


def key_text(value: Any) -> str:
    """A key value as text, so that 42 and "42" make the same message id."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    plain = _plain(value)
    return plain if isinstance(plain, str) else to_json(plain).decode("utf-8")


def message_id(object: str, key: KeyValue, version: str) -> str:
    """The id of one change of one record: hex SHA-256 of the JSON text
    `[object, key as text, version]` (the HTTP destinations' Idempotency-Key)."""
    material = json.dumps([object, key_text(key), version], ensure_ascii=False,
                          separators=(",", ":"))
    return hashlib.sha256(material.encode("utf-8")).hexdigest()


def message_for(object: str, record: Record, operation: Operation, key: str) -> Message | Outcome:
    """The message of one record, or the outcome rejecting it. The body is

        {"object": <object>, "operation": "upsert" | "delete", "key": <key value>,
         "version": <the change's version text, or null>, "record": {...fields...}}

    compact UTF-8 JSON with dates, datetimes and decimals as ISO / plain text; the
    reserved field `__version__` becomes `version` and is not a field of `record`.
    Insert, update and upsert are all "upsert". A record without a version gets the id of
    its content: "content:<SHA-256 of [operation, fields]>" stands in for the version."""
    value = record.get(key)
    if value is None or value == "":
        return Outcome(None, Status.REJECTED, f"key field {key} is empty", "REQUIRED_FIELD_MISSING")
    fields = {k: v for k, v in record.items() if k != VERSION_FIELD}
    version = record.get(VERSION_FIELD)
    version = str(version) if version not in (None, "") else None
    kind = "delete" if operation is Operation.DELETE else "upsert"
    try:
        body = to_json({"object": object, "operation": kind, "key": value, "version": version,
                        "record": fields})
        identity = version if version is not None else \
            "content:" + hashlib.sha256(to_json([kind, fields])).hexdigest()
        return Message(message_id(object, value, identity), value, kind, fields, body)
    except _NotJson:
        code, reason = "INVALID_TYPE", _unwritable(fields)
    except ValueError as exc:  # NaN or infinity, a circular structure, a lone surrogate
        code, reason = "INVALID_VALUE", _unwritable(fields) or f"cannot be written as JSON: {exc}"
    return Outcome(value, Status.REJECTED, reason, code)


def _unwritable(fields: Mapping[str, Any]) -> str:
    """Which field keeps a record from being written as JSON, and why."""
    for name, value in fields.items():
        try:
            to_json(value)
        except (TypeError, ValueError) as exc:
            return f"field {name}: {exc}"
    return ""


class MessageDestination(Connector):
    """A schemaless destination that publishes each record as a message to `object` (an
    exchange, a subject, a stream). Subclasses implement `_publish`; calls are serialised."""

    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.WRITE, Capability.DESCRIBE})
    object_kind: ClassVar[str] = "destination"
    """What `object` names, for messages: exchange, subject, stream."""

    def __init__(self, system: SystemSpec) -> None:
        super().__init__(system)
        self._lock = threading.Lock()

    def describe(self, object: str) -> ObjectSchema:
        return ObjectSchema(object, {}, None)

    def write(self, object: str, records: Sequence[Record], operation: Operation,
              key: str) -> list[Outcome]:
        """Publish each record, in order. A record that cannot be a message is rejected;
        a broker that cannot take the batch raises RetriableError."""
        if not object:
            raise SpecError(f"system '{self.name}': no {self.object_kind} to publish to")
        outcomes: list[Outcome | None] = [None] * len(records)
        messages: list[tuple[int, Message]] = []
        for index, record in enumerate(records):
            made = message_for(object, record, operation, key)
            if isinstance(made, Message):
                messages.append((index, made))
            else:
                outcomes[index] = made
        if messages:
            with self._lock:
                published = self._publish(object, [m for _, m in messages])
            for (index, _), outcome in zip(messages, published, strict=True):
                outcomes[index] = outcome
        return [o if o is not None else Outcome(records[i].get(key), Status.FAILED, "not published")
                for i, o in enumerate(outcomes)]

    def _publish(self, object: str, messages: Sequence[Message]) -> list[Outcome]:
        """Publish the messages in order; one outcome each. Raise RetriableError when the
        broker cannot be reached or does not confirm them."""
        raise NotImplementedError

    # -- helpers for subclasses -------------------------------------------------------------------

    def _option(self, name: str, default: Any, kind: type[float] | type[int]) -> Any:
        """A positive number option."""
        value = self.system.options.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0 \
                or (kind is int and not isinstance(value, int)):
            noun = "a whole number" if kind is int else "a number"
            raise SpecError(f"system '{self.name}': option {name} must be {noun} above 0, "
                            f"not {value!r}")
        return kind(value)

    def _flag(self, name: str, default: bool) -> bool:
        value = self.system.options.get(name, default)
        if not isinstance(value, bool):
            raise SpecError(f"system '{self.name}': option {name} is true or false, not {value!r}")
        return value

    def _text(self, name: str) -> str | None:
        value = self.system.options.get(name)
        if value is not None and (not isinstance(value, str) or not value.strip()):
            raise SpecError(f"system '{self.name}': option {name} must be non-empty text, "
                            f"not {value!r}")
        return value

    def _scrubbed(self, text: str) -> str:
        """`text` with the system's secrets, should a library quote them, replaced by ***."""
        return self.system.scrub(text)

    def _reason(self, exc: BaseException) -> str:
        text = str(exc).strip()
        first = text.splitlines()[0] if text else ""
        return self._scrubbed(f"{type(exc).__name__}: {first}" if first else type(exc).__name__)

    def _unreachable(self, exc: BaseException) -> ConnectionFailed:
        return ConnectionFailed(f"cannot reach system '{self.name}' at "
                                f"{self.system.redacted_url}: {self._reason(exc)}")

    def _retriable(self, what: str, exc: BaseException | None = None) -> RetriableError:
        detail = f": {self._reason(exc)}" if exc is not None else ""
        return RetriableError(self._scrubbed(f"system '{self.name}' ({self.system.redacted_url}): "
                                             f"{what}{detail}"))


# -- RabbitMQ -----------------------------------------------------------------------------------
