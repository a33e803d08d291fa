"""Following a Salesforce object's Change Data Capture events (Streaming API, CometD).

The cursor, kept by the engine with the work it covers, is

    {"cdc": true, "replay_id": 1207 | null, "caught_up": true | false, "poll": {...}}

- `replay_id` is the last event handed over: after a restart the subscription resumes
  right after it, so no event is missed and none comes twice.
- With no replay id to resume from (the first start, a restart before any event came), or
  one the org no longer keeps (events are retained 72 hours), the stream catches up by
  polling (SystemModstamp and getDeleted, as `trigger.changes: poll` does, with the polling
  cursor `poll`), subscribed for new events before the poll starts; once the poll is caught
  up, events take over. A change made during the catch-up may come from the poll and from
  its event: both carry its commit time as version, so a destination sees one change.
- Events carry only the fields that changed; the current values of the records created or
  updated are fetched, one query per batch, so every destination gets whole records.
  Several events of one record in a batch make one change, the last. An UNDELETE (a
  record restored from the recycle bin) is an update with the record's current values.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from patchbay.connectors.salesforce.cometd import CometdClient
from patchbay.connectors.salesforce.soql import soql_literal
from patchbay.errors import ReplayIdInvalid, SessionExpired, StreamingError
from patchbay.model import Change, ChangeKind, KeyValue, Record

NEW_EVENTS = -1
_DELETES = frozenset({"DELETE", "GAP_DELETE"})
"""Change types that take a record away (an UNDELETE brings it back: an update)."""
LONGEST_WAIT = 25.0
"""Seconds a connect may wait for events: the engine delivers between two waits."""


@dataclass
class _Subscription:
    client: CometdClient
    position: int | None
    """The replay id of the last event handed over; None: only new events, none yet."""


def channel_of(object: str) -> str:
    """The change event channel of an object: AccountChangeEvent, Invoice__ChangeEvent."""
    name = object[:-3] + "__" if object.endswith("__c") else object
    return f"/data/{name}ChangeEvent"


class Org(Protocol):
    """What the stream needs of the Salesforce connector (which owns the session), so
    that this module does not import it."""

    @property
    def name(self) -> str: ...

    def cometd_client(self) -> CometdClient: ...

    def forget_session(self) -> None: ...

    def poll_changes(self, object: str, cursor: Mapping[str, Any] | None,
                     fields: Sequence[str] | None = None, limit: int = 2000
                     ) -> tuple[list[Change], dict[str, Any]]: ...

    def get(self, object: str, key: str, values: Sequence[KeyValue],
            fields: Sequence[str] | None = None) -> dict[KeyValue, Record]: ...


class ChangeStream:
    """The CDC subscriptions of one Salesforce connector, one per object."""

    def __init__(self, connector: Org) -> None:
        self.connector = connector
        self._subscriptions: dict[str, _Subscription] = {}

    def changes(self, object: str, cursor: Mapping[str, Any], fields: Sequence[str],
                limit: int) -> tuple[list[Change], dict[str, Any]]:
        """The changes after `cursor`, and the cursor after them. Connection trouble raises
        StreamingError (retriable): the next call subscribes again from the cursor."""
        try:
            return self._follow(object, cursor, fields, limit)
        except StreamingError as exc:
            self._drop(object)
            if isinstance(exc, SessionExpired):
                self.connector.forget_session()
            raise

    def _follow(self, object: str, cursor: Mapping[str, Any], fields: Sequence[str],
                limit: int) -> tuple[list[Change], dict[str, Any]]:
        state: dict[str, Any] = {"replay_id": None, "caught_up": False, "poll": {}, **cursor}
        live = self._subscriptions.get(object)
        replay = state["replay_id"]
        if state["caught_up"] and not (live is not None and live.position == replay):
            if replay is None:
                state["caught_up"] = False  # nothing to resume from: catch up again
            else:
                try:
                    live = self._subscribe(object, replay)
                except ReplayIdInvalid:
                    state["replay_id"], state["caught_up"] = None, False
        if not state["caught_up"]:
            return self._catch_up(object, state, fields, limit)
        assert live is not None
        wait = min(float(state.get("wait_seconds", 2.0)), LONGEST_WAIT)
        try:
            events = live.client.connect(wait)
        except ReplayIdInvalid:  # the server forgot us, and can no longer replay from here
            self._subscriptions.pop(object, None)
            state["caught_up"], state["replay_id"] = False, None
            return [], state
        if not events:
            return [], state
        changes, last, overflow = self._changes_of(object, events, fields)
        live.position = state["replay_id"] = last
        if changes:
            since = max(c.at for c in changes if c.at is not None)
            state["poll"] = {**state["poll"], "since": soql_literal(since, "datetime"), "seen": []}
        if overflow:
            # Too many changes at once for events: the org says poll for them.
            state["caught_up"], state["replay_id"] = False, None
        return changes, state

    def close(self) -> None:
        for object in list(self._subscriptions):
            self._drop(object)

    def _drop(self, object: str) -> None:
        """Forget an object's subscription, telling the server if it still listens."""
        dropped = self._subscriptions.pop(object, None)
        if dropped is not None:
            with contextlib.suppress(StreamingError):
                dropped.client.disconnect()

    def _catch_up(self, object: str, state: dict[str, Any], fields: Sequence[str],
                  limit: int) -> tuple[list[Change], dict[str, Any]]:
        live = self._subscriptions.get(object)
        if live is None or live.position is not None:
            self._subscribe(object, NEW_EVENTS)
        found, after = self.connector.poll_changes(object, state["poll"] or None, fields, limit)
        state["poll"] = after
        if len(found) < limit:
            state["caught_up"], state["replay_id"] = True, None
        return found, state

    def _subscribe(self, object: str, replay_id: int) -> _Subscription:
        self._drop(object)
        client = self.connector.cometd_client()
        client.handshake()
        client.subscribe(channel_of(object), replay_id)
        subscription = _Subscription(client, None if replay_id == NEW_EVENTS else replay_id)
        self._subscriptions[object] = subscription
        return subscription

    def _changes_of(self, object: str, events: Sequence[Mapping[str, Any]],
                    fields: Sequence[str]) -> tuple[list[Change], int, bool]:
        """The changes the events tell of, the last replay id, and whether one was a
        GAP_OVERFLOW (changes the org could not make events of)."""
        last_event: dict[str, tuple[str, dt.datetime]] = {}
        replay, overflow = 0, False
        for event in events:
            data = event.get("data", {})
            replay = max(replay, int(data.get("event", {}).get("replayId", 0)))
            header = data.get("payload", {}).get("ChangeEventHeader", {})
            at = _from_epoch_ms(int(header.get("commitTimestamp", 0)))
            overflow = overflow or header.get("changeType") == "GAP_OVERFLOW"
            for record_id in header.get("recordIds", []):
                last_event.pop(record_id, None)  # keep the order of each record's last event
                last_event[record_id] = (str(header.get("changeType", "UPDATE")), at)
        # A GAP_ event says a record changed without saying how, an UNDELETE that it is back:
        # its current values tell.
        wanted = [i for i, (kind, _) in last_event.items() if kind not in _DELETES]
        current = self.connector.get(object, "Id", wanted, fields) if wanted else {}
        changes: list[Change] = []
        for record_id, (kind, at) in last_event.items():
            if kind in _DELETES:
                changes.append(Change(self.connector.name, object, record_id, ChangeKind.DELETED,
                                      {"Id": record_id}, at=at))
            elif record_id in current:  # gone since: its delete event follows
                changes.append(Change(self.connector.name, object, record_id,
                                      ChangeKind.CREATED if kind == "CREATE" else ChangeKind.UPDATED,
                                      current[record_id], at=at))
        return changes, replay, overflow


def _from_epoch_ms(ms: int) -> dt.datetime:
    # Whole milliseconds, exactly as SystemModstamp has them (a float would round).
    return dt.datetime.fromtimestamp(ms // 1000, dt.UTC).replace(microsecond=(ms % 1000) * 1000)

