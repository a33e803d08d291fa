"""RabbitMQ destinations (AMQP 0-9-1, through pika's blocking API): each record is one
persistent message published to an exchange; nothing counts as written before the broker
has taken responsibility for it.

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

A batch is published on a transactional channel and committed at once: RabbitMQ takes
responsibility for (and persists) every message of it on commit-ok, as a publisher confirm
says of one message, in one round trip. A batch holding a message over the broker's size
limit is published again one message at a time, each confirmed, so that only that message
is rejected. A nack, a mandatory message no queue takes, an exchange that does not exist,
a commit or confirm that does not come within `timeout`, a broker that cannot be reached
or blocks the connection longer than `timeout` (a resource alarm) raise RetriableError for
the batch: the outbox retries it with backoff, then dead-letters
it. Messages of the batch published before the failure are published again by the retry,
with the same message id: RabbitMQ does not de-duplicate, its consumers do, by message id.

This module also holds what every message destination shares (RabbitMQ, NATS, Redis):
the message body, the message id and `MessageDestination`.

Consuming (`subscribe(queue, consumer)`, for stream aggregations): a connection of its own
(named "patchbay <consumer>" in the management UI), manual acks. `fetch` takes messages
with basic.get, one round trip each, until it has `max_messages` or the queue is empty;
on an empty queue it polls (20 ms, doubling to 250 ms) until `timeout_seconds`. basic.get
rather than a consumer with a prefetch: a consumer's prefetch is fixed when it starts and
counts every message held unacknowledged, so a caller that holds several fetches until it
acks them all would stall at the first prefetch's worth; basic.get hands over exactly what
was asked for and nothing waits in a client buffer. A message's id is its `message_id`
property, else "sha256:" + the digest of its body (two messages with equal bodies and no
message_id are then one: producers that can send equal bodies should set message_id).
Messages not acked go back to the queue when the connection dies, at once: what makes a
consumer that records before it acks safe against crashes. Acks of messages taken on a
connection that has died since are dropped (the broker has put those back already).
"""

from __future__ import annotations

import copy
import hashlib
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import ClassVar
from urllib.parse import parse_qs, urlsplit

import pika
import pika.exceptions as amqp_errors
from pika.adapters.blocking_connection import BlockingChannel
from pydantic import Field

from patchbay.connectors.base import Capability, ConnectorOptions, Received, Subscription, message_body
from patchbay.connectors.messages import Message, MessageDestination, key_text
from patchbay.errors import SpecError
from patchbay.model import Outcome
from patchbay.spec import SystemSpec

_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
_MAX_ROUTING_KEY = 255


class _NotConfirmed(Exception):
    """The broker did not confirm a publish in time."""


class RabbitMqOptions(ConnectorOptions):
    routing_key: str | None = Field(None, description="The routing key, with {field} "
                                    "placeholders from the record; by default the object.")
    declare: bool = Field(False, description="Declare the exchange as a durable topic exchange.")
    mandatory: bool = Field(True, description="An unroutable message is an error.")
    timeout: float = Field(30.0, gt=0, description="Seconds to wait for a publish to be confirmed.")
    connect_timeout: float = Field(10.0, gt=0, description="Seconds connecting may take.")


class RabbitMqConnector(MessageDestination):
    """Publishes each record as a persistent, confirmed message to an exchange."""

    schemes: ClassVar[tuple[str, ...]] = ("amqp",)
    capabilities: ClassVar[frozenset[Capability]] = (
        MessageDestination.capabilities | {Capability.CONSUME})
    options_model: ClassVar[type[ConnectorOptions]] = RabbitMqOptions
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
        self._transaction: BlockingChannel | None = None
        self._returned: list[str] = []
        self._declared: set[str] = set()

    # -- connection -----------------------------------------------------------------------------

    def _open(self) -> BlockingChannel:
        """The confirm-mode channel, connecting first if need be."""
        connection = self._connection_open()
        if self._channel is None or not self._channel.is_open:
            self._channel = None
            self._declared.clear()
            with self._deadline():
                channel = connection.channel()
                channel.confirm_delivery()
            self._channel = channel
        return self._channel

    def _connection_open(self) -> pika.BlockingConnection:
        if self._connection is None or not self._connection.is_open:
            self._discard()
            try:
                self._connection = pika.BlockingConnection(self._parameters)
            except amqp_errors.AMQPError as exc:
                raise self._unreachable(exc) from None
        return self._connection

    def _open_transaction(self) -> BlockingChannel:
        """The transactional channel (batches), on the same connection."""
        connection = self._connection_open()
        if self._transaction is None or not self._transaction.is_open:
            self._transaction = None
            with self._deadline():
                channel = connection.channel()
                channel.tx_select()
                channel.add_on_return_callback(
                    lambda _channel, method, _properties, _body: self._returned.append(
                        str(method.routing_key)))
            self._transaction = channel
        return self._transaction

    @contextmanager
    def _deadline(self, seconds: float | None = None,
                  connection: pika.BlockingConnection | None = None) -> Iterator[None]:
        """Raise _NotConfirmed from a wait on the broker that lasts longer than `seconds`
        (default `timeout`), on `connection` (default the publishing one).

        pika's blocking connection waits for a confirm as long as the connection lives; a
        timer of the connection underneath (the adapter interface that every pika connection
        implements) breaks the wait. The connection is discarded after that."""
        limit = self.timeout if seconds is None else seconds
        impl = getattr(connection or self._connection, "_impl", None)
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
            self._connection, self._channel, self._transaction = None, None, None
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

    def subscribe(self, object: str, consumer: str) -> Subscription:
        if not object:
            raise SpecError(f"system '{self.name}': no queue to consume from")
        return _QueueSubscription(self, object, consumer)

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
        routing = [self.routing_key_of(object, message) for message in messages]
        try:
            if self.declare and object not in self._declared:
                with self._deadline():
                    self._open().exchange_declare(object, "topic", durable=True)
                self._declared.add(object)
            try:
                self._publish_in_transaction(object, messages, routing)
            except amqp_errors.ChannelClosedByBroker as exc:
                if not _too_large(exc):
                    raise
                # Some message is over the broker's size limit, and the channel closed on it
                # (nothing of the batch was committed): publish one at a time to tell which.
                self._transaction = None
                return self._publish_each(object, messages, routing)
        except _Unroutable as exc:
            raise self._retriable(f"no queue took a message for exchange '{object}' (routing key "
                                  f"{exc.routing_key!r}); bind a queue, or set mandatory: false "
                                  f"to let such messages go") from None
        except amqp_errors.NackError:
            raise self._retriable(f"the broker refused (nack) a message for exchange "
                                  f"'{object}'") from None
        except amqp_errors.ChannelClosedByBroker as exc:
            self._channel = self._transaction = None
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
        return [chosen if isinstance(chosen, Outcome) else message.published()
                for message, chosen in zip(messages, routing, strict=True)]

    def _publish_in_transaction(self, object: str, messages: Sequence[Message],
                                routing: Sequence[str | Outcome]) -> None:
        """Publish a batch on the transactional channel and commit it: on commit-ok the
        broker has taken responsibility for every message (persisted it), as a confirm
        would say of one. One round trip for the batch, not one per message."""
        channel = self._open_transaction()
        del self._returned[:]
        for message, chosen in zip(messages, routing, strict=True):
            if not isinstance(chosen, Outcome):
                channel.basic_publish(object, chosen, message.body, self._properties(message),
                                      mandatory=self.mandatory)
        with self._deadline():
            channel.tx_commit()
            # The broker sends a mandatory message's return before the commit-ok; this
            # hands the returns received to their callback.
            self._connection_open().process_data_events(time_limit=0)
        if self._returned:
            raise _Unroutable(self._returned[0])

    def _publish_each(self, object: str, messages: Sequence[Message],
                      routing: Sequence[str | Outcome]) -> list[Outcome]:
        """Publish one message at a time, each confirmed; a message over the broker's size
        limit is rejected alone."""
        outcomes: list[Outcome] = []
        channel = self._open()
        for message, chosen in zip(messages, routing, strict=True):
            if isinstance(chosen, Outcome):
                outcomes.append(chosen)
                continue
            try:
                with self._deadline():
                    channel.basic_publish(object, chosen, message.body, self._properties(message),
                                          mandatory=self.mandatory)
            except amqp_errors.UnroutableError:
                raise _Unroutable(chosen) from None
            except amqp_errors.ChannelClosedByBroker as exc:
                if not _too_large(exc):
                    raise
                outcomes.append(message.rejected("MESSAGE_TOO_LARGE", self._scrubbed(
                    f"the broker refused the message: {exc.reply_text}")))
                channel = self._open()
                continue
            outcomes.append(message.published())
        return outcomes

    @staticmethod
    def _properties(message: Message) -> pika.BasicProperties:
        return pika.BasicProperties(
            content_type="application/json", delivery_mode=pika.DeliveryMode.Persistent,
            message_id=message.id, type=message.operation, app_id="patchbay")


class _Unroutable(Exception):
    """A mandatory message no queue took."""

    def __init__(self, routing_key: str) -> None:
        super().__init__(routing_key)
        self.routing_key = routing_key


def _too_large(exc: amqp_errors.ChannelClosedByBroker) -> bool:
    return exc.reply_code == 406 and "max size" in str(exc.reply_text)


_FIRST_PAUSE, _LONGEST_PAUSE = 0.02, 0.25
"""How long an empty queue is left before it is asked again, doubling up to the longest."""


class _QueueSubscription(Subscription):
    """A queue's messages through basic.get on a connection of its own (see the module)."""

    def __init__(self, connector: RabbitMqConnector, queue: str, consumer: str) -> None:
        self.connector, self.queue = connector, queue
        self._parameters = copy.copy(connector._parameters)
        self._parameters.client_properties = {"connection_name": f"patchbay {consumer}"}
        self._connection: pika.BlockingConnection | None = None
        self._channel: BlockingChannel | None = None
        self._generation = 0
        """Counts connections: a delivery tag means something only on its own channel."""

    def _open(self) -> tuple[pika.BlockingConnection, BlockingChannel]:
        if self._connection is None or self._channel is None or not self._channel.is_open:
            self._discard()
            try:
                connection = pika.BlockingConnection(self._parameters)
            except amqp_errors.AMQPError as exc:
                raise self.connector._unreachable(exc) from None
            try:
                with self.connector._deadline(connection=connection):
                    channel = connection.channel()
            except BaseException:
                with suppress(Exception):
                    connection.close()
                raise
            self._connection, self._channel = connection, channel
            self._generation += 1
        return self._connection, self._channel

    def _discard(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            with suppress(Exception), self.connector._deadline(
                    min(self.connector.timeout, 5.0), connection):
                connection.close()

    def fetch(self, max_messages: int, timeout_seconds: float) -> list[Received]:
        got: list[Received] = []
        try:
            connection, channel = self._open()
            deadline = time.monotonic() + timeout_seconds
            pause = _FIRST_PAUSE
            while len(got) < max_messages:
                with self.connector._deadline(connection=connection):
                    method, properties, body = channel.basic_get(self.queue, auto_ack=False)
                if method is None or body is None:
                    left = deadline - time.monotonic()
                    if got or left <= 0:
                        break
                    connection.sleep(min(pause, left))
                    pause = min(pause * 2, _LONGEST_PAUSE)
                    continue
                given = properties.message_id if properties is not None else None
                identity = given or "sha256:" + hashlib.sha256(body).hexdigest()
                got.append(Received(str(identity), message_body(body),
                                    (self._generation, method.delivery_tag)))
        except amqp_errors.ChannelClosedByBroker as exc:
            self._discard()
            if exc.reply_code == 404:
                raise self.connector._retriable(f"queue '{self.queue}' does not exist") from None
            raise self.connector._retriable(f"the broker closed the channel consuming queue "
                                            f"'{self.queue}': {exc.reply_code} "
                                            f"{exc.reply_text}") from None
        except (_NotConfirmed, amqp_errors.AMQPError) as exc:
            # The messages taken so far go back to the queue with the connection.
            self._discard()
            raise self.connector._retriable(f"consuming queue '{self.queue}' failed",
                                            exc) from None
        return got

    def ack(self, received: Sequence[Received]) -> None:
        current = [tag for generation, tag in (r.token for r in received)
                   if generation == self._generation]
        if not current or self._channel is None or not self._channel.is_open:
            return  # the broker has put them back: they come again and are recognised
        try:
            with self.connector._deadline(connection=self._connection):
                for tag in current:
                    self._channel.basic_ack(tag)
        except (_NotConfirmed, amqp_errors.AMQPError) as exc:
            self._discard()
            raise self.connector._retriable(f"acknowledging messages of queue '{self.queue}' "
                                            "failed", exc) from None

    def close(self) -> None:
        self._discard()
