"""Redis Streams destinations (redis-py): each record is one entry added to a stream, once.

    events:
      url: redis://:${REDIS_PASSWORD}@127.0.0.1:6379/0     # database after the slash
      options:
        dedupe_ttl: 604800    # seconds a message id is remembered (default 7 days)
        maxlen: 100000        # trim the stream to about this many entries (default: no trim)
        timeout: 10           # seconds to wait for an answer (default 10)
        connect_timeout: 10   # seconds to connect (default 10)

An integration's `object` is the stream's key. Each entry has two fields:

    id     the message id: the same for every redelivery of one change
    body   the JSON body of every message destination (see `rabbitmq.message_for`)

A redelivery does not add a second entry: one Lua script per batch (atomic on the server)
adds each message whose marker key `<stream>:patchbay-dedupe:<message id>` does not exist
and sets that marker, holding the entry's id, for `dedupe_ttl` seconds (SET NX EX); a
message whose marker exists is not added. The marker is set after the XADD, so a batch
the server fails half-way leaves no marker without its entry. A redelivery after the TTL
adds the entry again. A duplicate that was not added is a success, with a reason saying so.

A server that cannot be reached or does not answer within `timeout` raises RetriableError
for the batch (entries added before it are not added again by the retry). A key that is
not a stream (WRONGTYPE) or a command the user may not run (NOPERM) raise SpecError.
Redis Cluster is not supported (the markers are not in the stream's hash slot).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import redis
import redis.exceptions
from pydantic import Field
from redis.backoff import NoBackoff
from redis.retry import Retry

from patchbay.connectors.base import ConnectorOptions
from patchbay.connectors.messages import Message, MessageDestination
from patchbay.errors import SpecError
from patchbay.model import Outcome
from patchbay.spec import SystemSpec

MARKER = "{stream}:patchbay-dedupe:{id}"
"""The key remembering a message id added to a stream."""

_ADD_ONCE = """
-- KEYS[1]: the stream; KEYS[2..]: one marker key per message
-- ARGV[1]: marker TTL in seconds; ARGV[2]: MAXLEN (0: no trimming); then id, body per message
local ttl, maxlen = ARGV[1], tonumber(ARGV[2])
local results = {}
for i = 2, #KEYS do
  local marker, id, body = KEYS[i], ARGV[2 * i - 1], ARGV[2 * i]
  local entry = redis.call('GET', marker)
  if entry then
    results[#results + 1] = {0, entry}
  else
    if maxlen > 0 then
      entry = redis.call('XADD', KEYS[1], 'MAXLEN', '~', maxlen, '*', 'id', id, 'body', body)
    else
      entry = redis.call('XADD', KEYS[1], '*', 'id', id, 'body', body)
    end
    redis.call('SET', marker, entry, 'NX', 'EX', ttl)
    results[#results + 1] = {1, entry}
  end
end
return results
"""


def marker_key(stream: str, message_id: str) -> str:
    return MARKER.format(stream=stream, id=message_id)


class RedisOptions(ConnectorOptions):
    dedupe_ttl: int = Field(7 * 24 * 3600, gt=0, description="Seconds a message id is remembered.")
    maxlen: int | None = Field(None, gt=0, description="Trim the stream to about this many "
                               "entries (default: no trim).")
    timeout: float = Field(10.0, gt=0, description="Seconds to wait for an answer.")
    connect_timeout: float = Field(10.0, gt=0, description="Seconds connecting may take.")


class RedisConnector(MessageDestination):
    """Adds each record as an entry of a Redis stream, once per message id."""

    schemes: ClassVar[tuple[str, ...]] = ("redis",)
    options_model: ClassVar[type[ConnectorOptions]] = RedisOptions
    object_kind: ClassVar[str] = "stream"

    def __init__(self, system: SystemSpec) -> None:
        super().__init__(system)
        self.dedupe_ttl: int = self._option("dedupe_ttl", 7 * 24 * 3600, int)
        self.maxlen: int | None = self._option("maxlen", 1, int) \
            if "maxlen" in system.options else None
        self.timeout: float = self._option("timeout", 10.0, float)
        self.connect_timeout: float = self._option("connect_timeout", 10.0, float)
        self._client: redis.Redis | None = None
        self._script: Any = None

    def _connect(self) -> redis.Redis:
        if self._client is None:
            try:
                # One immediate retry: a pooled connection the server closed is replaced.
                client = redis.Redis.from_url(
                    self.system.url, socket_timeout=self.timeout,
                    socket_connect_timeout=self.connect_timeout, retry=Retry(NoBackoff(), 1))
            except ValueError as exc:
                raise SpecError(f"system '{self.name}': bad Redis URL {self.system.redacted_url}: "
                                f"{self._scrubbed(str(exc))}") from None
            self._client, self._script = client, client.register_script(_ADD_ONCE)
        return self._client

    def check(self) -> None:
        with self._lock:
            try:
                self._connect().ping()
            except redis.exceptions.RedisError as exc:
                raise self._unreachable(exc) from None

    def close(self) -> None:
        with self._lock:
            client, self._client, self._script = self._client, None, None
            if client is not None:
                client.close()

    def _publish(self, object: str, messages: Sequence[Message]) -> list[Outcome]:
        client = self._connect()
        keys = [object, *(marker_key(object, m.id) for m in messages)]
        args: list[Any] = [self.dedupe_ttl, self.maxlen or 0]
        for message in messages:
            args += [message.id, message.body]
        try:
            results = self._script(keys=keys, args=args, client=client)
        except redis.exceptions.ConnectionError as exc:  # refused, lost, credentials refused
            raise self._unreachable(exc) from None
        except redis.exceptions.TimeoutError as exc:
            raise self._retriable(f"no answer within {self.timeout:g}s adding to stream "
                                  f"'{object}'", exc) from None
        except redis.exceptions.ResponseError as exc:
            text = str(exc)
            if "WRONGTYPE" in text or "NOPERM" in text or isinstance(
                    exc, redis.exceptions.NoPermissionError):
                raise SpecError(f"system '{self.name}': cannot add to stream '{object}': "
                                f"{self._scrubbed(text.splitlines()[0])}") from None
            raise self._retriable(f"the server refused adding to stream '{object}'", exc) from None
        except redis.exceptions.RedisError as exc:
            raise self._retriable(f"adding to stream '{object}' failed", exc) from None
        outcomes: list[Outcome] = []
        for message, (added, entry) in zip(messages, results, strict=True):
            shown = entry.decode() if isinstance(entry, bytes) else str(entry)
            outcomes.append(message.published(
                None if added else f"already in the stream as entry {shown}: a redelivery "
                                   "Redis did not add"))
        return outcomes
