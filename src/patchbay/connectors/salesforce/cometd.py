"""A small synchronous Bayeux (CometD) long-polling client for Salesforce's Streaming API:
handshake, subscribe with a replay id, connect, disconnect; for Change Data Capture channels
of a real org or of the local org.

    StreamingError (a ConnectionFailed)  the streaming connection failed: retry later
    └── SessionExpired                   the session token was refused: renew it, then retry
    ReplayIdInvalid                      the replay id is too old or unknown: poll instead

(all in the error tree of `patchbay.errors`).

The client remembers, per subscribed channel, the replay id of the last event it returned
(or, before the first event, the one it subscribed with). When the server has forgotten the
client (`403::Unknown client`, advice `handshake`: a restart, or a client that came back too
late) or the session was renewed, the client handshakes again and subscribes from those
replay ids, so that no event is repeated, and none is missed unless a channel subscribed
with -1 had had no event yet.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NoReturn

import httpx

from patchbay.errors import ReplayIdInvalid, SessionExpired, StreamingError

HOLD_SECONDS = 110.0
"""How long Salesforce holds a connect until its advice says otherwise."""
SLACK_SECONDS = 10.0
"""Added to the hold for the HTTP read timeout, so a held connect is never cut short."""


class CometdClient:
    """One Bayeux client on `endpoint` (`{instance_url}/cometd/{api_version}`)."""

    def __init__(self, http: httpx.Client, endpoint: str,
                 headers: Callable[[], Mapping[str, str]]) -> None:
        self._http, self._endpoint, self._headers = http, endpoint, headers
        self._client_id: str | None = None
        self._replay: dict[str, int] = {}
        self._hold = HOLD_SECONDS
        self._sent = 0

    @property
    def client_id(self) -> str | None:
        """The server's id for this client since the last handshake."""
        return self._client_id

    def handshake(self) -> None:
        """Start a new client on the server, subscribed again to this client's channels."""
        self._client_id = None
        reply = self._call({"channel": "/meta/handshake", "version": "1.0", "minimumVersion": "1.0",
                            "supportedConnectionTypes": ["long-polling"], "ext": {"replay": True}})
        if not reply.get("successful"):
            reason = str(((reply.get("ext") or {}).get("sfdc") or {}).get("failureReason")
                         or reply.get("error") or "refused")
            error = SessionExpired if reason.startswith("401") else StreamingError
            raise error(f"Salesforce streaming at {self._endpoint} refused the handshake: {reason}")
        self._client_id = str(reply["clientId"])
        self._advised(reply)
        # Salesforce answers the first connect after a handshake at once: made here, before
        # any subscription, so that it can carry no event and every later connect is held.
        first = self._call({"channel": "/meta/connect", "clientId": self._client_id,
                            "connectionType": "long-polling", "advice": {"timeout": 0}})
        if not first.get("successful"):
            self._refused(first)
        self._advised(first)
        for channel, replay_id in list(self._replay.items()):
            if replay_id == -1:
                # Subscribed for new events and none came yet: subscribing for new events
                # again would miss those of the gap, so the caller must catch up.
                self._replay.pop(channel)
                raise ReplayIdInvalid(channel, replay_id, "the server forgot this client before "
                                                          "its first event; the gap is unknown")
            self._check_subscribed(self._subscribe(channel, replay_id), channel, replay_id)

    def subscribe(self, channel: str, replay_id: int) -> None:
        """Subscribe to `channel` from `replay_id`: -1 new events only, -2 every retained
        event, N the events after N."""
        if self._client_id is None:
            self.handshake()
        reply = self._subscribe(channel, replay_id)
        if _must_handshake(reply):
            self.handshake()
            reply = self._subscribe(channel, replay_id)
        self._check_subscribed(reply, channel, replay_id)

    def connect(self, timeout_seconds: float) -> list[dict[str, Any]]:
        """The events that arrive within about `timeout_seconds` (the server may hold longer),
        as the server sent them; possibly none. Raises ReplayIdInvalid when a handshake it
        had to make finds a channel's replay id gone from the server's retention."""
        if self._client_id is None:
            self.handshake()
        for retry in (False, True):
            messages = self._send(
                {"channel": "/meta/connect", "clientId": self._client_id,
                 "connectionType": "long-polling", "advice": {"timeout": int(timeout_seconds * 1000)}},
                httpx.Timeout(max(timeout_seconds, self._hold) + SLACK_SECONDS))
            events = [m for m in messages if not str(m.get("channel", "")).startswith("/meta/")]
            for event in events:
                self._delivered(event)
            reply = _reply(messages, "/meta/connect", self._endpoint)
            if reply.get("successful"):
                self._advised(reply)
                return events
            if not _must_handshake(reply) or retry:
                self._refused(reply)
            self.handshake()
            if events:
                return events
        raise AssertionError("unreachable")

    def disconnect(self) -> None:
        """End the client and forget its subscriptions."""
        client_id, self._client_id = self._client_id, None
        self._replay.clear()
        if client_id is not None:
            self._send({"channel": "/meta/disconnect", "clientId": client_id})

    # -- internals --------------------------------------------------------------------------

    def _subscribe(self, channel: str, replay_id: int) -> dict[str, Any]:
        return self._call({"channel": "/meta/subscribe", "clientId": self._client_id,
                           "subscription": channel, "ext": {"replay": {channel: replay_id}}})

    def _check_subscribed(self, reply: dict[str, Any], channel: str, replay_id: int) -> None:
        if reply.get("successful"):
            self._replay[channel] = replay_id
            return
        error = str(reply.get("error") or "")
        if error.startswith("400::The replayId"):
            # Forgotten, so that the caller can subscribe the channel again from a fresh id.
            self._replay.pop(channel, None)
            raise ReplayIdInvalid(channel, replay_id, error)
        self._refused(reply)

    def _delivered(self, event: Mapping[str, Any]) -> None:
        channel = event.get("channel")
        replay_id = ((event.get("data") or {}).get("event") or {}).get("replayId")
        if channel in self._replay and isinstance(replay_id, int):
            self._replay[str(channel)] = replay_id

    def _advised(self, reply: Mapping[str, Any]) -> None:
        timeout = (reply.get("advice") or {}).get("timeout")
        if isinstance(timeout, int | float) and timeout >= 0:
            self._hold = timeout / 1000

    def _refused(self, reply: Mapping[str, Any]) -> NoReturn:
        error = str(reply.get("error") or "refused")
        if error.startswith("401::"):
            # The server dropped this client with the session: the next call handshakes anew.
            self._client_id = None
            raise SessionExpired(f"Salesforce streaming at {self._endpoint} refused the session: {error}")
        raise StreamingError(f"Salesforce streaming at {self._endpoint}: {reply.get('channel')} "
                             f"failed: {error}")

    def _call(self, message: dict[str, Any]) -> dict[str, Any]:
        return _reply(self._send(message), str(message["channel"]), self._endpoint)

    def _send(self, message: dict[str, Any],
              timeout: httpx.Timeout | None = None) -> list[dict[str, Any]]:
        self._sent += 1
        try:
            response = self._http.post(
                self._endpoint, json=[{**message, "id": str(self._sent)}], headers=dict(self._headers()),
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT)
        except httpx.TransportError as exc:
            raise StreamingError(f"Salesforce streaming at {self._endpoint} unreachable: {exc}") from None
        if response.status_code == 401:
            self._client_id = None
            raise SessionExpired(f"Salesforce streaming at {self._endpoint} refused the session "
                                 "(HTTP 401)")
        if response.status_code != 200:
            raise StreamingError(f"Salesforce streaming at {self._endpoint} answered HTTP "
                                 f"{response.status_code}: {response.text[:200]}")
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, list):
            raise StreamingError(f"Salesforce streaming at {self._endpoint} answered something other "
                                 "than a JSON array of Bayeux messages")
        return [m for m in body if isinstance(m, dict)]


def _reply(messages: list[dict[str, Any]], channel: str, endpoint: str) -> dict[str, Any]:
    found = next((m for m in messages if m.get("channel") == channel), None)
    if found is None:
        raise StreamingError(f"Salesforce streaming at {endpoint} sent no reply on {channel}")
    return found


def _must_handshake(reply: Mapping[str, Any]) -> bool:
    """Whether the server has forgotten the client and wants a new handshake."""
    return (not reply.get("successful") and
            ((reply.get("advice") or {}).get("reconnect") == "handshake"
             or str(reply.get("error") or "").startswith("403::Unknown client")))
