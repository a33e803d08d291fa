"""RabbitMQ destinations (AMQP 0-9-1, through pika's blocking API): each record is one
persistent message published to an exchange, with publisher confirms.

    events:
      url: amqp://guest:${RABBIT_PASSWORD}@127.0.0.1:5672/      # vhost after the slash (%2F: /)
      options:
        routing_key: "customers.{country}"  # {field} placeholders from the record; default the object
        declare: true        # declare the exchange as a durable topic exchange (default false)
        mandatory: true      # an unroutable message is an error (default true)
        timeout: 30          # seconds to wait for a publish to be confirmed (default 30)
        connect_timeout: 10  # seconds to connect (default 10)

An integration's `object` is the exchange name. Each message has the JSON body of every
message destination (see `message_for`), and the properties

    content_type  application/json
    delivery_mode 2 (persistent)
    message_id    the message id: the same for every redelivery of one change
    type          "upsert" or "delete"
    app_id        patchbay

A routing key placeholder whose field a record lacks (or holds null) rejects the record
(REQUIRED_FIELD_MISSING), except in a delete, which carries only the key: there it is
replaced by nothing. A routing key longer than 255 bytes rejects the record
(STRING_TOO_LONG), and so does a message the broker refuses as larger than its
`max_message_size` (MESSAGE_TOO_LARGE).

Every publish waits for the broker's confirm. A nack, a mandatory message no queue takes,
an exchange that does not exist, a confirm that does not come within `timeout`, a broker
that cannot be reached or blocks the connection longer than `timeout` (a resource alarm)
raise RetriableError for the batch: the outbox retries it with backoff, then dead-letters
it. Messages of the batch published before the failure are published again by the retry,
with the same message id: RabbitMQ does not de-duplicate, its consumers do, by message id.

This module also holds what every message destination shares (RabbitMQ, NATS, Redis):
the message body, the message id and `MessageDestination`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

import pika
import pika.exceptions as amqp_errors
from pika.adapters.blocking_connection import BlockingChannel

from patchbay.connectors.messages import Message, MessageDestination, key_text
from patchbay.errors import SpecError
from patchbay.model import Outcome
from patchbay.spec import SystemSpec

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_MAX_ROUTING_KEY = 255


class _NotConfirmed(Exception):
    """The broker did not confirm a publish in time."""


class RabbitMqConnector(MessageDestination):
    """Publishes each record as a persistent, confirmed message to an exchange."""

    schemes: ClassVar[tuple[str, ...]] = ("amqp",)
    option_names: ClassVar[tuple[str, ...]] = ("routing_key", "declare", "mandatory", "timeout",
                                               "connect_timeout")
    object_kind: ClassVar[str] = "exchange"

    def __init__(self, system: SystemSpec) -> None:
        super().__init__(system)
        self.routing_key = self._text("routing_key")
        if self.routing_key is not None:
            names = _PLACEHOLDER.findall(self.routing_key)
            rest = _PLACEHOLDER.sub("", self.routing_key)
            if "{" in rest or "}" in rest or any(not n.strip() for n in names):
                raise SpecError(f"system '{self.name}': option routing_key {self.routing_key!r} "
                                "has a brace that is not part of a {field} placeholder")
        self.declare = self._flag("declare", False)
        self.mandatory = self._flag("mandatory", True)
        self.timeout: float = self._option("timeout", 30.0, float)
        connect_timeout: float = self._option("connect_timeout", 10.0, float)
        try:
            self._parameters = pika.URLParameters(system.url)
            given = parse_qs(urlsplit(system.url).query)
        except (ValueError, TypeError) as exc:
            raise SpecError(f"system '{self.name}': bad AMQP URL {system.redacted_url}: "
                            f"{self._scrubbed(str(exc))}") from None
        if "connection_attempts" not in given:
            self._parameters.connection_attempts = 1
        if "socket_timeout" not in given or "connect_timeout" in system.options:
            self._parameters.socket_timeout = connect_timeout
        if "stack_timeout" not in given or "connect_timeout" in system.options:
            self._parameters.stack_timeout = connect_timeout + 5
        if "blocked_connection_timeout" not in given or "timeout" in system.options:
            self._parameters.blocked_connection_timeout = self.timeout
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._declared: set[str] = set()

    # -- connection -----------------------------------------------------------------------------

    def _open(self) -> BlockingChannel:
        """The confirm-mode channel, connecting first if need be."""
        if self._connection is None or not self._connection.is_open:
            self._discard()
            try:
                self._connection = pika.BlockingConnection(self._parameters)
            except amqp_errors.AMQPError as exc:
                raise self._unreachable(exc) from None
        if self._channel is None or not self._channel.is_open:
            self._channel = None
            self._declared.clear()
            with self._deadline():
                channel = self._connection.channel()
                channel.confirm_delivery()
            self._channel = channel
        return self._channel

    @contextmanager
    def _deadline(self, seconds: float | None = None) -> Iterator[None]:
        """Raise _NotConfirmed from a wait on the broker that lasts longer than `seconds`
        (default `timeout`).

        pika's blocking connection waits for a confirm as long as the connection lives; a
        timer of the connection underneath (the adapter interface that every pika connection
        implements) breaks the wait. The connection is discarded after that."""
        limit = self.timeout if seconds is None else seconds
        impl = getattr(self._connection, "_impl", None)
        call_later = getattr(impl, "_adapter_call_later", None)
        remove = getattr(impl, "_adapter_remove_timeout", None)
        if call_later is None or remove is None:  # no adapter interface: heartbeats only
            yield
            return

        def expire() -> None:
            raise _NotConfirmed(f"the broker did not answer within {limit:g}s")

        timer = call_later(limit, expire)
        try:
            yield
        finally:
            with suppress(Exception):
                remove(timer)

    def _discard(self) -> None:
        """Drop the connection; a broker that does not answer holds up the close 5s at most."""
        try:
            if self._connection is not None and self._connection.is_open:
                with suppress(Exception), self._deadline(min(self.timeout, 5.0)):
                    self._connection.close()
        finally:
            self._connection, self._channel = None, None
            self._declared.clear()

    def check(self) -> None:
        with self._lock:
            try:
                self._open()
            except _NotConfirmed as exc:
                self._discard()
                raise self._unreachable(exc) from None
            except amqp_errors.AMQPError as exc:
                self._discard()
                raise self._unreachable(exc) from None

    def close(self) -> None:
        with self._lock:
            self._discard()

    # -- publishing -----------------------------------------------------------------------------

    def routing_key_of(self, object: str, message: Message) -> str | Outcome:
        """The routing key of a message, or the outcome rejecting it."""
        if self.routing_key is None:
            key = object
        else:
            missing: list[str] = []

            def fill(match: re.Match[str]) -> str:
                name = match.group(1)
                value = message.record.get(name)
                if value is None:
                    if message.operation != "delete":
                        missing.append(name)
                    return ""
                return key_text(value)

            key = _PLACEHOLDER.sub(fill, self.routing_key)
            if missing:
                return message.rejected("REQUIRED_FIELD_MISSING", f"the routing key needs field "
                                        f"{missing[0]}, which the record does not have")
        if len(key.encode("utf-8")) > _MAX_ROUTING_KEY:
            return message.rejected("STRING_TOO_LONG", f"routing key {key[:60]!r}... is longer "
                                    f"than {_MAX_ROUTING_KEY} bytes")
        return key

    def _publish(self, object: str, messages: Sequence[Message]) -> list[Outcome]:
        outcomes: list[Outcome] = []
        routing_key = ""
        try:
            channel = self._open()
            for message in messages:
                chosen = self.routing_key_of(object, message)
                if isinstance(chosen, Outcome):
                    outcomes.append(chosen)
                    continue
                routing_key = chosen
                if self.declare and object not in self._declared:
                    with self._deadline():
                        channel.exchange_declare(object, "topic", durable=True)
                    self._declared.add(object)
                properties = pika.BasicProperties(
                    content_type="application/json", delivery_mode=pika.DeliveryMode.Persistent,
                    message_id=message.id, type=message.operation, app_id="patchbay")
                try:
                    with self._deadline():
                        channel.basic_publish(object, routing_key, message.body, properties,
                                              mandatory=self.mandatory)
                except amqp_errors.ChannelClosedByBroker as exc:
                    if exc.reply_code != 406 or "max size" not in str(exc.reply_text):
                        raise
                    outcomes.append(message.rejected("MESSAGE_TOO_LARGE", self._scrubbed(
                        f"the broker refused the message: {exc.reply_text}")))
                    channel = self._open()
                    continue
                outcomes.append(message.published())
        except amqp_errors.UnroutableError:
            raise self._retriable(f"no queue took a message for exchange '{object}' (routing key "
                                  f"{routing_key!r}); bind a queue, or set mandatory: false "
                                  f"to let such messages go") from None
        except amqp_errors.NackError:
            raise self._retriable(f"the broker refused (nack) a message for exchange "
                                  f"'{object}'") from None
        except amqp_errors.ChannelClosedByBroker as exc:
            self._channel = None
            if exc.reply_code == 404:
                hint = "" if self.declare else " (declare it, or set the option declare: true)"
                raise self._retriable(f"exchange '{object}' does not exist{hint}") from None
            raise self._retriable(f"the broker closed the channel publishing to exchange "
                                  f"'{object}': {exc.reply_code} {exc.reply_text}") from None
        except _NotConfirmed as exc:
            self._discard()
            raise self._retriable(f"a message for exchange '{object}' was not confirmed in time",
                                  exc) from None
        except amqp_errors.AMQPError as exc:
            self._discard()
            if isinstance(exc, amqp_errors.AMQPConnectionError):
                raise self._retriable(f"lost the connection publishing to exchange '{object}'",
                                      exc) from None
            raise self._retriable(f"publishing to exchange '{object}' failed", exc) from None
        return outcomes
