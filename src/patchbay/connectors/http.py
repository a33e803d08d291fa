"""HTTP destinations (webhooks): one JSON request per record, signed, with an idempotency key.

A system is the base URL of a receiver; an integration's `object` is the path appended
to it (`/orders` on `https://api.example.com/v1` is `https://api.example.com/v1/orders`):

    hooks:
      url: https://api.example.com/v1
      options:
        secret: ${HOOK_SECRET}                          # sign every request (optional)
        headers: {Authorization: Bearer ${HOOK_TOKEN}}  # static headers, never logged
        method: POST                                    # or PUT
        timeout: 10                                     # seconds per request
        concurrency: 1                                  # requests in flight at once
        ordered: true                                   # false allows concurrency > 1

Each record is one request with this JSON body (UTF-8, compact, dates, datetimes and
decimals as ISO / plain text):

    {"object": "/orders", "operation": "upsert" | "delete", "key": <key value>,
     "version": <the change's version text, or null>, "record": {...fields...}}

The reserved payload field `__version__` (the change's version, which the broadcast puts
in every delivery) becomes `version`; it is not sent as a field of `record`. Insert,
update and upsert are all sent as "upsert".

Headers of every request:

    Content-Type: application/json
    Idempotency-Key: <64 hex digits>   SHA-256 of the JSON text [object, key as text,
                                       version]; the same for every redelivery of one
                                       change, different for the next version. A record
                                       without a version has "content:<SHA-256 of
                                       operation and record>" in place of the version.
    X-Patchbay-Timestamp: <unix seconds>                  } only with option `secret`
    X-Patchbay-Signature: sha256=<hex>                    }

    signature = hex(HMAC-SHA256(key=secret, msg=f"{timestamp}.".encode() + body))

where `body` is the exact bytes sent. A receiver checks it with `verify_signature`, which
also refuses timestamps more than five minutes off (replays). The static `headers` come
first; the ones above override any of the same name.

Answers, per record:

    2xx                          CREATED (DELETED for a delete)
    409                          delivered: the receiver has seen the Idempotency-Key
    408, 425, 429, 5xx           FAILED, code HTTP_<status> (the outbox retries with backoff;
                                 a Retry-After is quoted in the reason)
    other 4xx, 3xx               REJECTED, code HTTP_<status>, the start of the answer's body
    timeout, broken connection   FAILED
    connection refused / connect timeout on the first record: ConnectionFailed (retriable)
    for the whole batch; later in a batch, that record and the ones not sent yet are FAILED.

Requests go one at a time, in batch order. With `ordered: false`, `concurrency` requests
may be in flight at once; records of one key are still sent one after the other.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import httpx
from pydantic import Field

from patchbay.connectors.base import Capability, Connector, ConnectorOptions
from patchbay.connectors.messages import key_text, message_for
from patchbay.errors import ConnectionFailed, SpecError
from patchbay.model import ObjectSchema, Operation, Outcome, Record, Status
from patchbay.spec import SystemSpec, redact_url

SIGNATURE_HEADER = "X-Patchbay-Signature"
TIMESTAMP_HEADER = "X-Patchbay-Timestamp"
IDEMPOTENCY_HEADER = "Idempotency-Key"
SIGNATURE_PREFIX = "sha256="

RETRIABLE_STATUSES = frozenset({408, 425, 429})
REASON_LENGTH = 200
METHODS = ("POST", "PUT")
_UNSUBSTITUTED = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::-[^}]*)?\}")


# -- signatures ---------------------------------------------------------------------------------


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header value: `sha256=` and the hex HMAC-SHA256, keyed with `secret`,
    of the timestamp, a dot and the exact body bytes."""
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return SIGNATURE_PREFIX + digest.hexdigest()


def verify_signature(secret: str, timestamp: str, body: bytes, signature: str, *,
                     max_age_seconds: float = 300, now: float | None = None) -> bool:
    """Whether `signature` (the X-Patchbay-Signature header) signs `body` with `secret` at
    `timestamp` (the X-Patchbay-Timestamp header, unix seconds), and the timestamp is no
    more than `max_age_seconds` away from `now` (unix seconds; default the clock), in
    either direction. The comparison takes constant time. An empty secret verifies nothing.
    """
    if not secret or not timestamp.isascii() or not timestamp.isdigit():
        return False
    current = time.time() if now is None else now
    if abs(current - int(timestamp)) > max_age_seconds:
        return False
    expected = sign(secret, timestamp, body).encode()
    return hmac.compare_digest(expected, signature.strip().encode("utf-8", "replace"))


# -- bodies and keys ----------------------------------------------------------------------------


# -- the connector ------------------------------------------------------------------------------


class _Unreachable(Exception):
    """The receiver could not be connected to (refused, unknown host, connect timeout)."""


class HttpOptions(ConnectorOptions):
    secret: str | None = Field(None, description="Sign every request (HMAC-SHA256) with it.")
    headers: dict[str, str] | None = Field(None, description="Static headers of every request, "
                                           "never logged.")
    method: str = Field("POST", description="POST or PUT.")
    timeout: float = Field(10.0, gt=0, description="Seconds per request.")
    concurrency: int = Field(1, gt=0, description="Requests in flight at once.")
    ordered: bool = Field(True, description="Send records in batch order; false allows "
                          "concurrency above 1.")


class HttpConnector(Connector):
    """Writes each record as a JSON request to `<base url><object>`. Schemaless."""

    schemes: ClassVar[tuple[str, ...]] = ("http", "https")
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.WRITE, Capability.DESCRIBE})
    options_model: ClassVar[type[ConnectorOptions]] = HttpOptions

    def __init__(self, system: SystemSpec) -> None:
        super().__init__(system)
        options = system.options
        self.method = str(options.get("method", "POST")).upper()
        if self.method not in METHODS:
            raise SpecError(f"system '{self.name}': option method must be POST or PUT, "
                            f"not {options.get('method')!r}")
        self.timeout = _positive(self.name, "timeout", options.get("timeout", 10.0), float)
        self.concurrency = int(_positive(self.name, "concurrency",
                                         options.get("concurrency", 1), int))
        ordered = options.get("ordered", True)
        if not isinstance(ordered, bool):
            raise SpecError(f"system '{self.name}': option ordered is true or false")
        if self.concurrency > 1 and ordered:
            raise SpecError(f"system '{self.name}': concurrency {self.concurrency} sends records "
                            "out of order; set ordered: false as well if the receiver does not "
                            "depend on their order")
        secret = options.get("secret")
        if secret is not None and (not isinstance(secret, str) or not secret):
            raise SpecError(f"system '{self.name}': option secret is empty or not text")
        self._secret: str | None = secret
        self._headers = _static_headers(self.name, options.get("headers"))
        parts = urlsplit(system.url)
        if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
            raise SpecError(f"system '{self.name}': {system.redacted_url} is not an http(s) URL "
                            "with a host")
        self._base = parts
        self.requests = 0
        self._count = threading.Lock()
        self._http = httpx.Client(timeout=self.timeout, follow_redirects=False,
                                  limits=httpx.Limits(max_connections=max(self.concurrency, 10)))

    # -- the seam -------------------------------------------------------------------------------

    def describe(self, object: str) -> ObjectSchema:
        return ObjectSchema(object, {}, None)

    def usage(self) -> dict[str, int]:
        return {"http_requests": self.requests}

    def close(self) -> None:
        self._http.close()

    def check(self) -> None:
        """Any answer to a HEAD of the base URL means the receiver can be reached."""
        try:
            self._http.head(urlunsplit(self._base))
        except httpx.HTTPError as exc:
            raise self._unreachable(urlunsplit(self._base), exc) from None

    def url_of(self, object: str) -> str:
        """The base URL with `object` appended to its path (its query string kept)."""
        path = self._base.path.rstrip("/")
        tail = object.strip().lstrip("/")
        return urlunsplit(self._base._replace(path=f"{path}/{tail}" if tail else path or "/"))

    def write(self, object: str, records: Sequence[Record], operation: Operation,
              key: str) -> list[Outcome]:
        url = self.url_of(object)
        outcomes: list[Outcome | None] = [None] * len(records)
        chains: dict[str, list[int]] = {}
        for index, record in enumerate(records):
            value = record.get(key)
            if value is None or value == "":
                outcomes[index] = Outcome(None, Status.REJECTED, f"key field {key} is empty",
                                          "REQUIRED_FIELD_MISSING")
            else:
                chains.setdefault(key_text(value), []).append(index)
        pending = sorted(i for chain in chains.values() for i in chain)
        if not pending:
            return [o for o in outcomes if o is not None]
        down = threading.Event()

        def send(index: int) -> None:
            if down.is_set():
                outcomes[index] = Outcome(records[index].get(key), Status.FAILED,
                                          "not sent: the receiver could not be reached")
                return
            try:
                outcomes[index] = self._send(url, object, records[index], operation, key)
            except _Unreachable as exc:
                down.set()
                outcomes[index] = Outcome(records[index].get(key), Status.FAILED, str(exc))

        first = pending[0]
        try:
            outcomes[first] = self._send(url, object, records[first], operation, key)
        except _Unreachable as exc:
            raise ConnectionFailed(str(exc), system=self.name) from None
        if self.concurrency == 1:
            for index in pending[1:]:
                send(index)
        else:
            def run_chain(chain: list[int]) -> None:
                for index in chain:
                    if index != first:
                        send(index)

            with ThreadPoolExecutor(self.concurrency, thread_name_prefix="patchbay-http") as pool:
                for done in [pool.submit(run_chain, chain) for chain in chains.values()]:
                    done.result()
        return [o if o is not None else Outcome(records[i].get(key), Status.FAILED, "not sent")
                for i, o in enumerate(outcomes)]

    # -- one request ----------------------------------------------------------------------------

    def _send(self, url: str, object: str, record: Record, operation: Operation,
              key: str) -> Outcome:
        message = message_for(object, record, operation, key)
        if isinstance(message, Outcome):
            return message
        value, body = message.key, message.body
        headers = dict(self._headers)
        headers.update({"Content-Type": "application/json",
                        IDEMPOTENCY_HEADER: message.id})
        if self._secret is not None:
            timestamp = str(int(time.time()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = sign(self._secret, timestamp, body)
        with self._count:
            self.requests += 1
        try:
            response = self._http.request(self.method, url, content=body, headers=headers)
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise self._unreachable(url, exc) from None
        except httpx.TimeoutException as exc:
            return Outcome(value, Status.FAILED, f"no answer from {_shown(url)} within "
                           f"{self.timeout:g}s ({type(exc).__name__})", "TIMEOUT")
        except httpx.HTTPError as exc:
            return Outcome(value, Status.FAILED, f"{self.method} {_shown(url)} failed: "
                           f"{type(exc).__name__}: {self.system.scrub(str(exc))}", "TRANSPORT_ERROR")
        return self._outcome(value, operation, response)

    def _outcome(self, value: Any, operation: Operation, response: httpx.Response) -> Outcome:
        status = response.status_code
        delivered = Status.DELETED if operation is Operation.DELETE else Status.CREATED
        if 200 <= status < 300:
            return Outcome(value, delivered)
        if status == 409:
            return Outcome(value, delivered, "the receiver had already seen this Idempotency-Key "
                           "(409)")
        code = f"HTTP_{status}"
        text = _start(response)
        if status in RETRIABLE_STATUSES or status >= 500:
            after = response.headers.get("Retry-After")
            reason = text + (f" (Retry-After: {after.strip()[:40]})" if after else "")
            return Outcome(value, Status.FAILED, reason, code)
        if 300 <= status < 400:
            return Outcome(value, Status.REJECTED, f"redirected ({status}); point the system URL "
                           "at where the receiver answers", code)
        return Outcome(value, Status.REJECTED, text, code)

    def _unreachable(self, url: str, exc: Exception) -> _Unreachable:
        return _Unreachable(f"cannot reach HTTP system '{self.name}' at {_shown(url)}: "
                            f"{type(exc).__name__}: {self.system.scrub(str(exc))}")


# -- helpers ------------------------------------------------------------------------------------


def _positive(system: str, option: str, value: Any, kind: type[float] | type[int]) -> float:
    try:
        number = kind(value)
    except (TypeError, ValueError):
        raise SpecError(f"system '{system}': option {option} must be a number, not {value!r}"
                        ) from None
    if isinstance(value, bool) or number <= 0 or (kind is int and number != float(value)):
        raise SpecError(f"system '{system}': option {option} must be a positive "
                        f"{'whole number' if kind is int else 'number'}, not {value!r}")
    return float(number)


def _static_headers(system: str, given: Any) -> dict[str, str]:
    """The `headers` option checked; problems name the header, never its value."""
    if given is None:
        return {}
    if not isinstance(given, Mapping):
        raise SpecError(f"system '{system}': option headers is a mapping of name to value")
    headers: dict[str, str] = {}
    for name, value in given.items():
        if not isinstance(name, str) or not re.fullmatch(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+", name):
            raise SpecError(f"system '{system}': {name!r} is not a valid header name")
        if isinstance(value, Mapping | list) or value is None:
            raise SpecError(f"system '{system}': header {name} needs a text value")
        text = str(value)
        if "\r" in text or "\n" in text:
            raise SpecError(f"system '{system}': the value of header {name} holds a line break")
        try:
            text.encode("latin-1")
        except UnicodeEncodeError:
            raise SpecError(f"system '{system}': the value of header {name} is not latin-1 text"
                            ) from None
        if _UNSUBSTITUTED.search(text):
            raise SpecError(f"system '{system}': the value of header {name} holds an "
                            "unsubstituted ${...} environment variable")
        headers[name] = text
    return headers


def _shown(url: str) -> str:
    """A URL for messages: no password, no query string (it may hold a token)."""
    parts = urlsplit(redact_url(url))
    return urlunsplit(parts._replace(query="", fragment=""))


def _start(response: httpx.Response) -> str:
    """The start of an answer's body on one line, or its status line when it has none."""
    try:
        text = " ".join(response.text.split())
    except (UnicodeDecodeError, LookupError):
        text = ""
    if not text:
        return f"{response.status_code} {response.reason_phrase}".strip()
    return text if len(text) <= REASON_LENGTH else text[:REASON_LENGTH] + "…"
