"""NATS JetStream destinations (nats-py): each record is one message published to a
subject and stored by the JetStream stream that covers it.

    events:
      url: nats://127.0.0.1:4222          # nats://user:${PASSWORD}@host:4222, nats://${TOKEN}@host
      options:
        stream: CUSTOMERS      # make sure this stream exists and covers the subject (optional)
        duplicate_window: 600  # seconds JetStream remembers message ids, for a stream created here
        timeout: 10            # seconds to wait for a publish ack (default 10)
        connect_timeout: 10    # seconds to connect (default 10)
        ack_wait: 60           # consuming: seconds before JetStream redelivers a message
                               # taken and not acked (default 60)

An integration's `object` is the subject (no wildcards). Each message has the JSON body of
every message destination (see `rabbitmq.message_for`) and the headers

    Nats-Msg-Id   the message id: the same for every redelivery of one change, so JetStream
                  stores a redelivery once when it comes within the stream's duplicate window
                  (two minutes unless the stream says otherwise)
    Content-Type  application/json

With `stream`, the first publish to a subject creates the stream (file storage, the
subject, `duplicate_window` if given) or, if it exists but none of its subjects covers the
subject, adds the subject to it. Without it, a stream must already cover the subject.

Every publish waits for JetStream's ack, one after the other, in batch order. An ack that
does not come within `timeout`, a subject no stream covers, a server that cannot be reached
raise RetriableError for the batch (messages acked before it are stored once: their retry
is a duplicate). A message larger than the server's max_payload is rejected
(MESSAGE_TOO_LARGE). A duplicate the stream dropped is a success, with a reason saying so.

nats-py is asyncio only: the connector runs its client on a private event loop in a
background thread (started on first use, stopped by `close()`), and `write` waits for the
batch there. A lost connection is not re-established by the client: the next batch
connects afresh.

Consuming (`subscribe(subject, consumer)`, for stream aggregations): a client of its own
on the same loop, and a durable pull consumer on the stream that holds the subject (with
`stream`, that stream, made to cover the subject as publishing does; else the stream
JetStream finds for the subject, RetriableError naming the subject when there is none).
The consumer is named after `consumer` and the subject (sanitised, plus a digest of both,
so that two subjects of one stream get consumers of their own), delivers the whole stream
the first time, acks explicitly, and leaves unacked messages to the caller without limit
(max_ack_pending -1: the caller bounds what it holds). A message taken and not acked comes
back after `ack_wait`: long enough to outlast one fetch-record-ack cycle of the caller (a
message that comes back while still held is recognised by its id), short enough that a
crashed consumer's messages are not held up for long. A message's id is its Nats-Msg-Id
header, else "seq:<stream sequence>". Acks go out on the subscription's current client
(a JetStream ack is a publish to the message's reply subject), and are flushed before
`ack` returns.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import re
import threading
from collections.abc import Coroutine, Sequence
from contextlib import suppress
from typing import Any, ClassVar, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StreamConfig
from pydantic import Field

from patchbay.connectors.base import Capability, ConnectorOptions, Received, Subscription, message_body
from patchbay.connectors.messages import Message, MessageDestination
from patchbay.errors import ConnectionFailed, RetriableError, SpecError
from patchbay.model import Outcome
from patchbay.spec import SystemSpec

T = TypeVar("T")

MSG_ID_HEADER = "Nats-Msg-Id"


def subject_matches(pattern: str, subject: str) -> bool:
    """Whether a stream subject (with `*` and `>` wildcards) covers a literal subject."""
    wanted, given = pattern.split("."), subject.split(".")
    for index, token in enumerate(wanted):
        if token == ">":
            return len(given) > index
        if index >= len(given) or (token != "*" and token != given[index]):
            return False
    return len(wanted) == len(given)


async def _shut_down(client: Client | None) -> None:
    """Close the client and end what is left on the loop (a batch given up on)."""
    if client is not None and not client.is_closed:
        with suppress(Exception):
            await asyncio.wait_for(client.close(), 5)
    current = asyncio.current_task()
    left = [t for t in asyncio.all_tasks() if t is not current]
    for task in left:
        task.cancel()
    await asyncio.wait(left, timeout=5) if left else None


class NatsOptions(ConnectorOptions):
    stream: str | None = Field(None, description="Make sure this stream exists and covers the "
                               "subject; without it, a stream must already cover it.")
    duplicate_window: float | None = Field(None, gt=0, description="Seconds JetStream remembers "
                                           "message ids, for a stream created here.")
    timeout: float = Field(10.0, gt=0, description="Seconds to wait for a publish ack.")
    connect_timeout: float = Field(10.0, gt=0, description="Seconds connecting may take.")
    ack_wait: float = Field(60.0, gt=0, description="Consuming: seconds before JetStream "
                            "redelivers a message taken and not acked.")


class NatsConnector(MessageDestination):
    """Publishes each record as a JetStream message to a subject, de-duplicated by id."""

    schemes: ClassVar[tuple[str, ...]] = ("nats",)
    capabilities: ClassVar[frozenset[Capability]] = (
        MessageDestination.capabilities | {Capability.CONSUME})
    options_model: ClassVar[type[ConnectorOptions]] = NatsOptions
    object_kind: ClassVar[str] = "subject"

    def __init__(self, system: SystemSpec) -> None:
        super().__init__(system)
        self.stream = self._text("stream")
        self.duplicate_window: float | None = (
            self._option("duplicate_window", 120.0, float)
            if "duplicate_window" in system.options else None)
        self.timeout: float = self._option("timeout", 10.0, float)
        self.connect_timeout: float = self._option("connect_timeout", 10.0, float)
        self.ack_wait: float = self._option("ack_wait", 60.0, float)
        self._servers = [s.strip() for s in system.url.split(",") if s.strip()]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._client: Client | None = None
        self._covered: set[str] = set()

    # -- the private event loop -----------------------------------------------------------------

    def _run(self, work: Coroutine[Any, Any, T], limit: float) -> T:
        """Run a coroutine on the connector's event loop and wait for it, `limit` seconds at
        most (the coroutine's own timeouts come first)."""
        if self._loop is None:
            loop = asyncio.new_event_loop()
            thread = threading.Thread(target=loop.run_forever, name=f"patchbay-nats-{self.name}",
                                      daemon=True)
            thread.start()
            self._loop, self._thread = loop, thread
        future = asyncio.run_coroutine_threadsafe(work, self._loop)
        try:
            return future.result(limit)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise self._retriable(f"no answer within {limit:g}s") from None

    async def _connect(self) -> Client:
        if self._client is None or self._client.is_closed:
            self._covered.clear()
            self._client = await self._new_client("patchbay")
        return self._client

    async def _new_client(self, name: str) -> Client:
        async def quiet(_: Exception) -> None:
            """The client reports errors here too; they reach the caller as exceptions."""

        # Each server is tried twice, half a second apart (max_reconnect_attempts also
        # bounds the first connect; 0 would mean trying for ever).
        return await nats.connect(
            self._servers, name=name, connect_timeout=max(1, round(self.connect_timeout)),
            allow_reconnect=False, max_reconnect_attempts=1, reconnect_time_wait=0.5,
            error_cb=quiet)

    # -- the seam -------------------------------------------------------------------------------

    def check(self) -> None:
        with self._lock:
            try:
                self._run(self._connect(), self.connect_timeout * 2 + 5)
            except RetriableError as exc:
                raise ConnectionFailed(str(exc)) from None
            except Exception as exc:
                raise self._unreachable(exc) from None

    def close(self) -> None:
        with self._lock:
            loop, thread, client = self._loop, self._thread, self._client
            self._loop = self._thread = self._client = None
            if loop is None:
                return
            future = asyncio.run_coroutine_threadsafe(_shut_down(client), loop)
            try:
                future.result(10)
            except Exception:
                future.cancel()
            loop.call_soon_threadsafe(loop.stop)
            if thread is not None:
                thread.join(5)
            if not loop.is_running():
                loop.close()

    def subscribe(self, object: str, consumer: str) -> Subscription:
        self._check_subject(object, "consume from")
        return _SubjectSubscription(self, object, consumer)

    def _check_subject(self, object: str, use: str) -> None:
        if any(c in object for c in " \t\r\n*>") or object.startswith(".") or object.endswith(".") \
                or ".." in object or not object:
            raise SpecError(f"system '{self.name}': '{object}' is not a subject to {use} "
                            "(no wildcards, spaces or empty tokens)")

    def _publish(self, object: str, messages: Sequence[Message]) -> list[Outcome]:
        self._check_subject(object, "publish to")
        limit = self.connect_timeout * 2 + 5 + (self.timeout + 1) * (len(messages) + 2)
        try:
            return self._run(self._send(object, messages), limit)
        except (RetriableError, SpecError):
            raise
        except nats.errors.NoServersError as exc:
            self._drop()
            raise self._unreachable(exc) from None
        except (nats.errors.NoRespondersError, nats.js.errors.NoStreamResponseError):
            hint = "" if self.stream else " (create one, or set the option stream)"
            raise self._retriable(f"no JetStream stream takes subject '{object}'{hint}") from None
        except nats.errors.TimeoutError as exc:
            raise self._retriable(f"a message to subject '{object}' was not acked within "
                                  f"{self.timeout:g}s", exc) from None
        except nats.js.errors.BadRequestError as exc:
            raise SpecError(f"system '{self.name}': JetStream refused stream '{self.stream}' "
                            f"for subject '{object}': {exc.description}") from None
        except nats.js.errors.APIError as exc:
            raise self._retriable(f"JetStream refused a message to subject '{object}'",
                                  exc) from None
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            self._drop()
            raise self._retriable(f"publishing to subject '{object}' failed", exc) from None

    def _drop(self) -> None:
        """Forget the client (closed or not), so the next batch connects afresh."""
        client, self._client = self._client, None
        if client is not None and self._loop is not None and not client.is_closed:
            asyncio.run_coroutine_threadsafe(client.close(), self._loop)

    async def _send(self, object: str, messages: Sequence[Message]) -> list[Outcome]:
        client = await self._connect()
        if client.is_closed or not client.is_connected:
            raise nats.errors.ConnectionClosedError()
        js = client.jetstream(timeout=self.timeout)
        if self.stream is not None and object not in self._covered:
            await self._cover(js, self.stream, object)
            self._covered.add(object)
        outcomes: list[Outcome] = []
        for message in messages:
            try:
                ack = await js.publish(object, message.body, timeout=self.timeout,
                                       headers={MSG_ID_HEADER: message.id,
                                                "Content-Type": "application/json"})
            except nats.errors.MaxPayloadError:
                outcomes.append(message.rejected(
                    "MESSAGE_TOO_LARGE", f"the message ({len(message.body)} bytes) is larger "
                    f"than the server's max_payload ({client.max_payload} bytes)"))
                continue
            outcomes.append(message.published(
                f"already in stream {ack.stream}: a redelivery JetStream dropped"
                if ack.duplicate else None))
        return outcomes

    async def _cover(self, js: JetStreamContext, stream: str, subject: str) -> None:
        """Make sure `stream` exists and one of its subjects covers `subject`."""
        try:
            info = await js.stream_info(stream)
        except nats.js.errors.NotFoundError:
            config = StreamConfig(name=stream, subjects=[subject])
            if self.duplicate_window is not None:
                config.duplicate_window = self.duplicate_window
            await js.add_stream(config)
            return
        subjects = list(info.config.subjects or [])
        if not any(subject_matches(s, subject) for s in subjects):
            info.config.subjects = [*subjects, subject]
            await js.update_stream(info.config)


def consumer_name(consumer: str, subject: str) -> str:
    """The durable consumer of `consumer` (an integration) on `subject`: readable, within
    JetStream's rules (no dots, spaces, wildcards or slashes), and one per pair."""
    readable = re.sub(r"[^A-Za-z0-9_-]+", "_", f"{consumer}_{subject}").strip("_")[:48]
    digest = hashlib.sha256(f"{consumer}\0{subject}".encode()).hexdigest()[:10]
    return f"{readable}-{digest}"


class _SubjectSubscription(Subscription):
    """A subject's messages through a durable pull consumer (see the module)."""

    def __init__(self, connector: NatsConnector, subject: str, consumer: str) -> None:
        self.connector, self.subject, self.consumer = connector, subject, consumer
        self.durable = consumer_name(consumer, subject)
        self._client: Client | None = None
        self._pull: JetStreamContext.PullSubscription | None = None

    def _call(self, work: Coroutine[Any, Any, T], wait: float = 0.0) -> T:
        connector = self.connector
        limit = connector.connect_timeout * 2 + 5 + connector.timeout * 3 + wait
        with connector._lock:
            try:
                return connector._run(work, limit)
            except (RetriableError, SpecError):
                raise
            except nats.errors.NoServersError as exc:
                raise connector._unreachable(exc) from None
            except nats.js.errors.NotFoundError:
                hint = "" if connector.stream else " (create one, or set the option stream)"
                raise connector._retriable(f"no JetStream stream takes subject "
                                           f"'{self.subject}'{hint}") from None
            except nats.js.errors.BadRequestError as exc:
                raise SpecError(f"system '{connector.name}': JetStream refused consumer "
                                f"'{self.durable}' of subject '{self.subject}': "
                                f"{exc.description}") from None
            except (TimeoutError, nats.errors.Error, OSError) as exc:
                self._forget()
                raise connector._retriable(f"consuming subject '{self.subject}' failed",
                                           exc) from None

    async def _bound(self) -> tuple[Client, JetStreamContext.PullSubscription]:
        client, pull = self._client, self._pull
        if client is not None and pull is not None and client.is_connected:
            return client, pull
        await self._let_go()
        client = await self.connector._new_client(f"patchbay {self.consumer}")
        try:
            js = client.jetstream(timeout=self.connector.timeout)
            if self.connector.stream is not None:
                await self.connector._cover(js, self.connector.stream, self.subject)
                stream = self.connector.stream
            else:
                stream = await js.find_stream_name_by_subject(self.subject)
            # Creating a consumer that exists with the same settings changes nothing; one
            # whose ack_wait changed in the file is updated.
            await js.add_consumer(stream, ConsumerConfig(
                name=self.durable, durable_name=self.durable, filter_subject=self.subject,
                deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.EXPLICIT,
                ack_wait=self.connector.ack_wait, max_ack_pending=-1))
            pull = await js.pull_subscribe_bind(durable=self.durable, stream=stream)
        except BaseException:
            with suppress(Exception):
                await client.close()
            raise
        self._client, self._pull = client, pull
        return client, pull

    def fetch(self, max_messages: int, timeout_seconds: float) -> list[Received]:
        wait = max(timeout_seconds, 0.05)  # a pull request must expire after some time
        return self._call(self._fetch(max_messages, wait), wait)

    async def _fetch(self, max_messages: int, wait: float) -> list[Received]:
        _, pull = await self._bound()
        try:
            messages = await pull.fetch(max_messages, wait)
        except nats.errors.TimeoutError:
            return []
        return [Received(_id_of(m), message_body(m.data), m) for m in messages]

    def ack(self, received: Sequence[Received]) -> None:
        if received:
            self._call(self._ack([r.token for r in received]))

    async def _ack(self, messages: Sequence[Msg]) -> None:
        client, _ = await self._bound()
        for message in messages:
            await client.publish(message.reply, Msg.Ack.Ack)
        await client.flush(max(1, round(self.connector.timeout)))

    def close(self) -> None:
        if self._client is not None and self.connector._loop is not None:
            with suppress(Exception):
                self._call(self._let_go())

    def _forget(self) -> None:
        """Drop the client after a failure; the next call connects afresh."""
        client, self._client, self._pull = self._client, None, None
        if client is not None and self.connector._loop is not None and not client.is_closed:
            asyncio.run_coroutine_threadsafe(client.close(), self.connector._loop)

    async def _let_go(self) -> None:
        client, pull = self._client, self._pull
        self._client = self._pull = None
        if pull is not None:
            with suppress(Exception):
                await pull.unsubscribe()  # the durable consumer stays, with its position
        if client is not None and not client.is_closed:
            with suppress(Exception):
                await asyncio.wait_for(client.close(), 5)


def _id_of(message: Msg) -> str:
    given = (message.headers or {}).get(MSG_ID_HEADER)
    return given if given else f"seq:{message.metadata.sequence.stream}"
