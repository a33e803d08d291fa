"""Change Data Capture: the change log as change events (spec §6.2), streamed over a CometD
long-polling endpoint, `POST /cometd/{version}`, and listed by `GET /_emulator/changes`.

A change event's replayId is the change log's seq. CometD clients (a handshake, its
subscriptions and how far each has been delivered) live in memory; a held `/meta/connect`
waits on an asyncio event that the storage's commit hook sets, and every read of the change
log runs in a worker thread, because a bulk job may hold the storage lock for a while.

Choices of ours where Salesforce's behaviour is not documented or not checked (emu):
- Every object that can be written has change events; there is no selection of entities.
- changeOrigin carries the API version of the subscriber's endpoint, not the writer's: the
  change log does not know which version wrote. Seeded records have an empty changeOrigin.
- A replay id is valid from the seq before the oldest retained event up to the newest seq.
- The `schema` id is a hash of the object's field names.
- A client's own `advice.timeout` on `/meta/connect` shortens the hold (never lengthens it);
  the first connect after a handshake is never held, as on Salesforce.
- `commitNumber` is the seq of the transaction's first change; `nulledFields` lists the fields
  an update set to null; `diffFields` is always empty (no field is sent as a diff).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import hashlib
import json
import math
import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from patchbay.localorg.org import Org, OrgError
from patchbay.localorg.schema import SObject
from patchbay.localorg.storage import ChangeRow
from patchbay.localorg.values import parse_datetime, stored_datetime

ALL_CHANGES = "/data/ChangeEvents"
HOLD_MS = 110_000
"""Salesforce holds a /meta/connect this long when nothing happens."""
RECONNECT_SECONDS = 40
"""A client that does not come back this long after a reply is forgotten (Salesforce: 40 s)."""
BATCH = 1000
"""Events per /meta/connect reply, and the default page of /_emulator/changes."""
MAX_PAGE = 10_000
DEFAULT_VERSION = "59.0"
INVALID_REPLAY = ("400::The replayId {} you provided was invalid.  Please provide a valid ID, -2 to "
                  "replay all events, or -1 to replay only new events.")

_CHANGE_TYPES = {"created": "CREATE", "updated": "UPDATE", "deleted": "DELETE",
                 "undeleted": "UNDELETE"}
_LEFT_OUT = frozenset({"Id", "IsDeleted", "SystemModstamp"})
# Objects whose Name is compound (FirstName + LastName): events nest its parts under "Name".
_COMPOUND_NAMES = frozenset({"Contact", "Lead", "User"})
_NAME_PARTS = ("FirstName", "LastName")
_VERSION = re.compile(r"\d{2,3}\.0")
_IDLE_CHECK_SECONDS = 1.0
"""How often a held connect checks whether its HTTP client has gone away."""


def channel_of(obj: SObject) -> str:
    """The object's change event channel: /data/AccountChangeEvent, /data/Invoice__ChangeEvent."""
    name = obj.name[:-1] if obj.name.endswith("__c") else obj.name
    return f"/data/{name}ChangeEvent"


def change_event(row: ChangeRow, channel: str, version: str, obj: SObject | None) -> dict[str, Any]:
    """A change-log row as the change event Salesforce delivers over CometD."""
    change_type = _CHANGE_TYPES[row.kind]
    body = {} if change_type == "DELETE" else {
        name: _event_value(obj, name, value) for name, value in row.snapshot.items()
        if name not in _LEFT_OUT and (value is not None or change_type == "UPDATE")}
    nulled = [name for name, value in body.items() if value is None]
    body, changed = _nest_name(row.object, body)
    when = parse_datetime(row.at)
    sequence = row.sequence_number or 1
    header = {
        "entityName": row.object, "recordIds": [row.record_id], "changeType": change_type,
        "changedFields": changed if change_type == "UPDATE" else [],
        "changeOrigin": f"com/salesforce/api/{row.origin}/{version}"
        if row.origin in ("rest", "bulkapi", "soap") else "",
        "transactionKey": row.transaction_key or "", "sequenceNumber": sequence,
        "commitTimestamp": int(when.timestamp() * 1000) if when else 0,
        # A transaction's changes are logged one after the other under the storage lock, so
        # the seq of its first change numbers the commit: shared by its events, increasing.
        "commitNumber": row.seq - sequence + 1,
        "commitUser": row.commit_user or "", "nulledFields": _nested_names(row.object, nulled),
        "diffFields": []}
    return {"channel": channel, "data": {"schema": _schema_id(obj, row.object),
                                         "event": {"replayId": row.seq},
                                         "payload": {"ChangeEventHeader": header, **body}}}


def _event_value(obj: SObject | None, name: str, value: Any) -> Any:
    """A snapshot value as events carry it: datetimes end in `Z` there (`+0000` in REST)."""
    field = obj.field(name) if obj is not None else None
    if field is None or field.type != "datetime" or not isinstance(value, str):
        return value
    when = parse_datetime(value)
    return value if when is None else stored_datetime(when)


def _nest_name(entity: str, body: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The body with a compound Name's parts nested, and the changed fields as
    Salesforce names them (`Name.LastName`)."""
    if entity not in _COMPOUND_NAMES:
        return body, list(body)
    parts = {p: body[p] for p in _NAME_PARTS if p in body}
    # The full name is derived from its parts, which the event carries instead.
    rest = {k: v for k, v in body.items() if k not in parts and k != "Name"}
    return ({"Name": parts, **rest} if parts else rest), _nested_names(entity, list(body))


def _nested_names(entity: str, names: list[str]) -> list[str]:
    """Field names as an event's header lists them: a compound Name's parts as `Name.LastName`,
    the derived full name left out."""
    if entity not in _COMPOUND_NAMES:
        return names
    return [f"Name.{n}" if n in _NAME_PARTS else n for n in names if n != "Name"]


def _schema_id(obj: SObject | None, entity: str) -> str:
    names = ",".join(f.name for f in obj) if obj is not None else ""
    digest = hashlib.sha256(f"{entity}:{names}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode()[:22]


@dataclass
class _Subscription:
    objects: tuple[str, ...] | None
    """The objects of the channel; None for all of them."""
    position: int
    """The last replay id delivered, or skipped as not this channel's."""


@dataclass
class _Client:
    id: str
    subscriptions: dict[str, _Subscription] = field(default_factory=dict)
    connects: int = 0
    """Counts /meta/connect requests: a held connect gives way when a newer one arrives."""
    expires: float = math.inf


class Streaming:
    """The CometD clients of one org and the routes that serve them."""

    def __init__(self, org: Org) -> None:
        self.org = org
        self.clients: dict[str, _Client] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._changed = asyncio.Event()
        org.storage.watch(self._committed)

    def routes(self) -> list[Route]:
        return [Route("/cometd/{version}", self.cometd, methods=["POST"]),
                # CometD clients may append the message type to the URL (/cometd/59.0/connect).
                Route("/cometd/{version}/{kind}", self.cometd, methods=["POST"]),
                Route("/_emulator/changes", self.changes, methods=["GET"])]

    # -- waking held connects -------------------------------------------------------------------

    def _committed(self) -> None:
        """Storage hook, in the writing thread: wake the held connects in the server's loop."""
        loop = self._loop
        if loop is None:
            return
        # A loop that has just closed has no connect left to wake.
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _bind(self) -> None:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            # An asyncio.Event belongs to the first loop that waits on it.
            self._loop, self._changed = loop, asyncio.Event()

    # -- reading the change log ---------------------------------------------------------------

    def _cutoff(self) -> str:
        retention = dt.timedelta(hours=self.org.config.cdc_retention_hours)
        return stored_datetime(self.org.clock.now() - retention)

    def _objects(self, channel: str) -> tuple[str, ...] | None:
        """The objects a channel carries (None: all); KeyError for a channel that does not exist."""
        if channel == ALL_CHANGES:
            return None
        for obj in self.org.schema:
            if not obj.readonly and channel_of(obj) == channel:
                return (obj.name,)
        raise KeyError(channel)

    def _start(self, replay: Any) -> int | None:
        """The position a subscription with this replay id starts after; None if invalid."""
        storage = self.org.storage
        newest = storage.newest_change()
        if replay == -1:
            return newest
        if replay == -2:
            return 0
        if not isinstance(replay, int) or isinstance(replay, bool) or replay < 0:
            return None
        oldest = storage.oldest_change_since(self._cutoff())
        first = oldest if oldest is not None else newest + 1
        return replay if first - 1 <= replay <= newest else None

    def _events(self, channel: str, objects: tuple[str, ...] | None, after: int, upto: int,
                limit: int, version: str) -> list[dict[str, Any]]:
        rows = self.org.storage.change_rows(after, upto, objects, self._cutoff(), limit)
        return [change_event(r, channel, version, self.org.schema.get(r.object)) for r in rows]

    def _pending(self, positions: dict[str, tuple[tuple[str, ...] | None, int]], version: str
                 ) -> tuple[list[dict[str, Any]], dict[str, int]]:
        """Events after each channel's position, and the positions after them."""
        newest = self.org.storage.newest_change()
        events: list[dict[str, Any]] = []
        moved: dict[str, int] = {}
        for channel, (objects, position) in positions.items():
            room = BATCH - len(events)
            if room <= 0:
                break
            found = self._events(channel, objects, position, newest, room, version)
            events.extend(found)
            # Reading fewer than asked for means every change up to `newest` has been seen.
            moved[channel] = found[-1]["data"]["event"]["replayId"] if len(found) == room else newest
        return events, moved

    # -- routes -------------------------------------------------------------------------------

    async def changes(self, request: Request) -> Response:
        """GET /_emulator/changes?after=<seq>&entity=<Name>&limit=<n>: events after a seq."""
        params = request.query_params
        try:
            after, limit = int(params.get("after", "0")), int(params.get("limit", str(BATCH)))
        except ValueError:
            return JSONResponse({"error": "after and limit must be integers"}, status_code=400)
        entity = params.get("entity")
        objects, channel = None, ALL_CHANGES
        if entity:
            obj = self.org.schema.get(entity)
            if obj is None:
                return JSONResponse({"error": f"unknown entity {entity}"}, status_code=404)
            objects, channel = (obj.name,), channel_of(obj)
        newest = await run_in_threadpool(self.org.storage.newest_change)
        events = await run_in_threadpool(self._events, channel, objects, after, newest,
                                         max(1, min(limit, MAX_PAGE)), DEFAULT_VERSION)
        return JSONResponse(events)

    async def cometd(self, request: Request) -> Response:
        self._bind()
        version = request.path_params["version"]
        if not _VERSION.fullmatch(version) or float(version) < 37:
            return JSONResponse([{"successful": False, "error": "400::Unsupported API version. Only "
                                  "API versions '37.0' and later are supported."}], status_code=400)
        try:
            messages = json.loads(await request.body())
        except ValueError:
            messages = None
        if isinstance(messages, dict):
            messages = [messages]
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            return JSONResponse([{"successful": False, "error": "400::Bad request: the body must be "
                                  "a JSON array of Bayeux messages"}], status_code=400)
        token = _token(request)
        replies: list[dict[str, Any]] = []
        for message in messages:
            replies.extend(await self._answer(message, token, version, request))
        return JSONResponse(replies)

    async def _answer(self, message: dict[str, Any], token: str | None, version: str,
                      request: Request) -> list[dict[str, Any]]:
        channel = message.get("channel")
        reply: dict[str, Any] = {"channel": channel}
        if "id" in message:
            reply["id"] = message["id"]
        if channel == "/meta/handshake":
            return [self._handshake(token, reply)]
        reply["clientId"] = message.get("clientId")
        try:
            self.org.session(token)
        except OrgError:
            reason = "401::Authentication invalid" if token else "401::Request requires authentication"
            return [{**reply, "successful": False, "error": reason,
                     "advice": {"reconnect": "none", "interval": 0}}]
        client = self.clients.get(str(message.get("clientId")))
        if client is None:
            return [{**reply, "successful": False, "error": "403::Unknown client",
                     "advice": {"reconnect": "handshake", "interval": 0}}]
        client.expires = time.monotonic() + RECONNECT_SECONDS
        if channel == "/meta/subscribe":
            return [await self._subscribe(client, message, reply)]
        if channel == "/meta/unsubscribe":
            client.subscriptions.pop(str(message.get("subscription")), None)
            return [{**reply, "subscription": message.get("subscription"), "successful": True}]
        if channel == "/meta/connect":
            return await self._connect(client, message, reply, version, request)
        if channel == "/meta/disconnect":
            self.clients.pop(client.id, None)
            return [{**reply, "successful": True}]
        return [{**reply, "successful": False, "error": f"403::Publishing to {channel} is not allowed"}]

    def _handshake(self, token: str | None, reply: dict[str, Any]) -> dict[str, Any]:
        try:
            self.org.session(token)
        except OrgError:
            # Advice "none": a client must not handshake again with a token that was refused.
            return {**reply, "successful": False, "error": "403::Handshake denied",
                    "ext": {"sfdc": {"failureReason": "401::Authentication invalid"}, "replay": True},
                    "advice": {"reconnect": "none"}}
        now = time.monotonic()
        for gone in [c.id for c in self.clients.values() if c.expires < now]:
            del self.clients[gone]
        client = _Client(secrets.token_urlsafe(18), expires=now + RECONNECT_SECONDS)
        self.clients[client.id] = client
        return {**reply, "successful": True, "clientId": client.id, "version": "1.0",
                "minimumVersion": "1.0", "supportedConnectionTypes": ["long-polling"],
                "ext": {"replay": True, "payload.format": True},
                "advice": {"reconnect": "retry", "interval": 0, "timeout": HOLD_MS}}

    async def _subscribe(self, client: _Client, message: dict[str, Any],
                         reply: dict[str, Any]) -> dict[str, Any]:
        channel = message.get("subscription")
        reply["subscription"] = channel
        if not isinstance(channel, str) or not channel:
            return {**reply, "successful": False, "error": "400::Channel name not specified"}
        try:
            objects = self._objects(channel)
        except KeyError:
            return {**reply, "successful": False,
                    "error": f"400::The channel you requested to subscribe to does not exist {channel}"}
        replay = ((message.get("ext") or {}).get("replay") or {}).get(channel, -1)
        start = await run_in_threadpool(self._start, replay)
        if start is None:
            return {**reply, "successful": False, "error": INVALID_REPLAY.format(replay)}
        client.subscriptions[channel] = _Subscription(objects, start)
        # A connect held meanwhile delivers the replayed events now, not when its wait ends.
        self._wake()
        return {**reply, "successful": True}

    async def _connect(self, client: _Client, message: dict[str, Any], reply: dict[str, Any],
                       version: str, request: Request) -> list[dict[str, Any]]:
        asked = (message.get("advice") or {}).get("timeout")
        # The first connect after a handshake is answered at once, with the hold that later
        # connects get as advice (a client's `timeout: 0` there asks for no hold).
        first = client.connects == 0
        hold_ms = min(int(asked), HOLD_MS) if isinstance(asked, int | float) and asked >= 0 \
            and not first else HOLD_MS
        client.connects += 1
        mine = client.connects
        client.expires = math.inf
        self._wake()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (0 if first else hold_ms / 1000)
        events: list[dict[str, Any]] = []
        woken = True
        while client.connects == mine and self.clients.get(client.id) is client:
            changed = self._changed
            if woken:
                positions = {c: (s.objects, s.position) for c, s in client.subscriptions.items()}
                events, moved = await run_in_threadpool(self._pending, positions, version)
                if client.connects != mine:
                    # A newer connect took over while this one read: it delivers these events.
                    events = []
                    break
                for channel, position in moved.items():
                    if channel in client.subscriptions:
                        client.subscriptions[channel].position = position
            remaining = deadline - loop.time()
            if events or remaining <= 0 or await request.is_disconnected():
                break
            try:
                await asyncio.wait_for(changed.wait(), min(remaining, _IDLE_CHECK_SECONDS))
                woken = True
            except TimeoutError:
                woken = False
        if client.connects == mine:
            client.expires = time.monotonic() + RECONNECT_SECONDS
        return [*events, {**reply, "successful": True,
                          "advice": {"reconnect": "retry", "interval": 0, "timeout": hold_ms}}]


def _token(request: Request) -> str | None:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() in ("bearer", "oauth") else None
