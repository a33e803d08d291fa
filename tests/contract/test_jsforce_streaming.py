"""Change Data Capture through jsforce's streaming client (faye over CometD long-polling, with
jsforce's Replay and AuthFailure extensions), unmodified, against the local org.

Each test runs `node/streaming.js` in a subprocess and reads what it reports line by line.
"""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from patchbay.localorg.running import LocalOrg
from tests.contract.conftest import KEY, PASSWORD, SECRET, USERNAME

SCRIPT = Path(__file__).parent / "node" / "streaming.js"
WAIT_SECONDS = 15.0
"""Far below the 110 s a held connect lasts: an event that waits for one misses this."""
HEADER_FIELDS = {"entityName", "recordIds", "changeType", "changeOrigin", "transactionKey",
                 "sequenceNumber", "commitTimestamp", "commitNumber", "commitUser", "nulledFields",
                 "diffFields", "changedFields"}


class Rest:
    """The integration user's REST calls, to make the changes the client should hear of."""

    def __init__(self, org: LocalOrg) -> None:
        self.url = org.url
        response = requests.post(f"{org.url}/services/oauth2/token", data={
            "grant_type": "password", "client_id": KEY, "client_secret": SECRET,
            "username": USERNAME, "password": PASSWORD}, timeout=10)
        response.raise_for_status()
        self.token = str(response.json()["access_token"])

    def create(self, obj: str, **fields: Any) -> str:
        response = requests.post(f"{self.url}/services/data/v59.0/sobjects/{obj}", json=fields,
                                 headers={"Authorization": f"Bearer {self.token}"}, timeout=10)
        response.raise_for_status()
        return str(response.json()["id"])


class Subscriber:
    """A running `streaming.js`: its report lines, as they come."""

    def __init__(self, org: LocalOrg, token: str, channel: str, replay_id: int, when: str) -> None:
        self.process = subprocess.Popen(
            ["node", str(SCRIPT), org.url, token, channel, str(replay_id), when],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        """Every report so far, in order."""
        self._unread: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(json.loads(line))

    def _arrived(self, seconds: float) -> dict[str, Any] | None:
        try:
            report = self.lines.get(timeout=max(0.0, seconds))
        except queue.Empty:
            return None
        self.seen.append(report)
        return report

    def next(self, kind: str, seconds: float = WAIT_SECONDS) -> dict[str, Any]:
        """The first report of this kind not yet taken, waiting for it if need be."""
        for report in self._unread:
            if report["kind"] == kind:
                self._unread.remove(report)
                return report
        deadline = time.monotonic() + seconds
        while (report := self._arrived(deadline - time.monotonic())) is not None:
            if report["kind"] == kind:
                return report
            self._unread.append(report)
        raise AssertionError(f"no {kind!r} within {seconds} s; saw {self.seen}")

    def later(self, seconds: float) -> list[dict[str, Any]]:
        """The reports that arrive within `seconds`."""
        deadline = time.monotonic() + seconds
        arrived = []
        while (report := self._arrived(deadline - time.monotonic())) is not None:
            arrived.append(report)
        return arrived

    def events(self, count: int) -> list[dict[str, Any]]:
        return [self.next("event")["message"] for _ in range(count)]

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        self.process.wait(10)


@pytest.fixture
def rest(local_org: LocalOrg) -> Rest:
    return Rest(local_org)


@pytest.fixture
def subscribers() -> Iterator[list[Subscriber]]:
    started: list[Subscriber] = []
    yield started
    for subscriber in started:
        subscriber.stop()


def subscribe(org: LocalOrg, token: str, channel: str, replay_id: int,
              started: list[Subscriber], when: str = "at-once") -> Subscriber:
    """A jsforce subscriber; `when="late"` subscribes while its client's connect is held."""
    subscriber = Subscriber(org, token, channel, replay_id, when)
    started.append(subscriber)
    return subscriber


def record_ids(events: list[dict[str, Any]]) -> list[str]:
    return [e["payload"]["ChangeEventHeader"]["recordIds"][0] for e in events]


@pytest.mark.parametrize(("channel", "when"), [("/data/ChangeEvents", "at-once"),
                                              ("/data/AccountChangeEvent", "at-once"),
                                              ("/data/AccountChangeEvent", "late")])
def test_replayed_and_live_events_arrive(local_org: LocalOrg, rest: Rest, channel: str, when: str,
                                         subscribers: list[Subscriber]) -> None:
    before = [rest.create("Account", Name="Acme"), rest.create("Account", Name="Globex")]
    subscriber = subscribe(local_org, rest.token, channel, -2, subscribers, when)
    # Replayed events come at once, even to a subscription made while a connect is held.
    replayed = subscriber.events(2)
    assert record_ids(replayed) == before
    subscriber.next("subscribed")
    header = replayed[0]["payload"]["ChangeEventHeader"]
    assert set(header) == HEADER_FIELDS
    assert (header["entityName"], header["changeType"]) == ("Account", "CREATE")
    assert replayed[0]["payload"]["CreatedDate"].endswith("Z")

    live = rest.create("Account", Name="Initech")
    assert record_ids(subscriber.events(1)) == [live]
    replay_ids = [e["event"]["replayId"] for e in replayed]
    assert replay_ids == sorted(replay_ids)


def test_a_replay_id_replays_the_events_after_it(local_org: LocalOrg, rest: Rest,
                                                 subscribers: list[Subscriber]) -> None:
    first = rest.create("Account", Name="First")
    everything = subscribe(local_org, rest.token, "/data/AccountChangeEvent", -2, subscribers)
    [seen] = everything.events(1)
    assert record_ids([seen]) == [first]
    later = [rest.create("Account", Name="Second"), rest.create("Account", Name="Third")]
    resumed = subscribe(local_org, rest.token, "/data/AccountChangeEvent",
                        seen["event"]["replayId"], subscribers)
    assert record_ids(resumed.events(2)) == later


def test_a_bad_token_fires_the_auth_failure_hook_and_stops(local_org: LocalOrg,
                                                           subscribers: list[Subscriber]) -> None:
    subscriber = subscribe(local_org, "not-a-session", "/data/AccountChangeEvent", -2, subscribers)
    failure = subscriber.next("auth-failure")["message"]
    assert (failure["channel"], failure["successful"], failure["error"]) == \
        ("/meta/handshake", False, "403::Handshake denied")
    assert failure["ext"]["sfdc"]["failureReason"] == "401::Authentication invalid"
    # faye would handshake again after its retry interval (5 s) had the hook not stopped it.
    assert subscriber.later(7) == []
    assert [r["channel"] for r in subscriber.seen if r["kind"] == "sent"] == ["/meta/handshake"]
