"""Change Data Capture through aiosfstream-ng (on aiocometd-ng), unmodified, against the local
org. Its authenticators post to login.salesforce.com; a subclass points the token request at
the org, whose answer's instance_url then leads the client to the org's CometD endpoint."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import requests
from aiosfstream_ng import Client, PasswordAuthenticator, ReplayMarker, ReplayOption

from patchbay.localorg.running import LocalOrg
from tests.contract.conftest import KEY, PASSWORD, SECRET, USERNAME

CHANNEL = "/data/AccountChangeEvent"
WAIT_SECONDS = 15.0
"""Far below the 110 s a held connect lasts: whatever waits for one misses this."""


class LocalOrgAuthenticator(PasswordAuthenticator):
    """The OAuth 2.0 password flow against the local org's token endpoint."""

    def __init__(self, org: LocalOrg) -> None:
        super().__init__(consumer_key=KEY, consumer_secret=SECRET, username=USERNAME,
                         password=PASSWORD)
        self.org_url = org.url

    @property
    def _token_url(self) -> str:
        return f"{self.org_url}/services/oauth2/token"


def create_account(org: LocalOrg, name: str) -> str:
    token = requests.post(f"{org.url}/services/oauth2/token", data={
        "grant_type": "password", "client_id": KEY, "client_secret": SECRET, "username": USERNAME,
        "password": PASSWORD}, timeout=10).json()["access_token"]
    response = requests.post(f"{org.url}/services/data/v59.0/sobjects/Account", json={"Name": name},
                             headers={"Authorization": f"Bearer {token}"}, timeout=10)
    response.raise_for_status()
    return str(response.json()["id"])


def record_ids(events: list[dict[str, Any]]) -> list[str]:
    return [e["data"]["payload"]["ChangeEventHeader"]["recordIds"][0] for e in events]


async def receive(client: Client, count: int) -> list[dict[str, Any]]:
    return [await asyncio.wait_for(client.receive(), WAIT_SECONDS) for _ in range(count)]


def test_open_returns_promptly_then_stored_and_live_events_arrive(local_org: LocalOrg) -> None:
    stored = [create_account(local_org, "Acme"), create_account(local_org, "Globex")]

    async def follow() -> tuple[float, list[dict[str, Any]], list[dict[str, Any]], str]:
        client = Client(LocalOrgAuthenticator(local_org), replay=ReplayOption.ALL_EVENTS)
        started = time.monotonic()
        # open() handshakes and waits for the first connect's answer.
        await asyncio.wait_for(client.open(), WAIT_SECONDS)
        opened = time.monotonic() - started
        try:
            await client.subscribe(CHANNEL)
            # Subscribed while the client's connect is held: the replay comes all the same.
            replayed = await receive(client, 2)
            live_id = await asyncio.to_thread(create_account, local_org, "Initech")
            live = await receive(client, 1)
        finally:
            await client.close()
        return opened, replayed, live, live_id

    opened, replayed, live, live_id = asyncio.run(follow())
    assert opened < 5
    assert record_ids(replayed) == stored
    assert {e["channel"] for e in replayed} == {CHANNEL}
    assert record_ids(live) == [live_id]
    assert live[0]["data"]["event"]["replayId"] > replayed[-1]["data"]["event"]["replayId"]


def test_a_client_resumes_from_the_replay_ids_it_stored(local_org: LocalOrg) -> None:
    # The clients' replay storage: a mapping they fill as events arrive.
    markers: dict[str, ReplayMarker] = {}

    async def follow(count: int, write: str | None) -> list[dict[str, Any]]:
        client = Client(LocalOrgAuthenticator(local_org), replay=markers)
        await asyncio.wait_for(client.open(), WAIT_SECONDS)
        try:
            await client.subscribe(CHANNEL)
            if write is not None:
                await asyncio.to_thread(create_account, local_org, write)
            return await receive(client, count)
        finally:
            await client.close()

    create_account(local_org, "Before anyone listened")
    # No stored replay id: the subscription is for new events only.
    [heard] = asyncio.run(follow(1, "Acme"))
    assert heard["data"]["payload"]["Name"] == "Acme"
    assert markers[CHANNEL].replay_id == heard["data"]["event"]["replayId"]
    missed = [create_account(local_org, "Globex"), create_account(local_org, "Initech")]
    assert record_ids(asyncio.run(follow(2, None))) == missed
