"""Signed webhooks: changes a broadcast's source, or a sync's participant, pushes to
`POST /hooks/{integration}` (a sync's participant names itself in X-Patchbay-Source).

The sender cannot hold the API's bearer token, so the route is open (BearerAuth.SIGNED)
and the request proves itself instead, checked in this order so that nothing costly is
done for a stranger:

    headers   the secret is configured; X-Patchbay-Timestamp is Unix seconds within
              `max_age_seconds` of now; X-Patchbay-Signature looks like one; the
              X-Patchbay-Source is accepted                        (400, 401, 403)
    body      read while streaming, cut off past MAX_BODY          (413)
    signature HMAC-SHA256 of `<timestamp>.<body>` with the secret  (401)
    once      the signature is recorded as seen in the same transaction that queues the
              changes (patchbay_seen_messages): the same request sent again, within the
              age window, is refused                                (409)

A signature is kept for twice `max_age_seconds` (a timestamp may be that far either side of
now when it is checked); past that the timestamp check refuses it anyway.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import threading
import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request

from patchbay.api.http import capped_body, json_body
from patchbay.connectors.http import SIGNATURE_PREFIX, verify_signature
from patchbay.errors import ApiError
from patchbay.spec import WebhookSpec
from patchbay.store import Store

MAX_BODY = 5 * 1024 * 1024
SOURCE = "webhook"
"""The source of webhook signatures in patchbay_seen_messages."""
SOURCE_HEADER = "x-patchbay-source"
PURGE_EVERY_SECONDS = 60.0

_TIMESTAMP = re.compile(r"[0-9]{1,12}")
_SIGNATURE = re.compile(re.escape(SIGNATURE_PREFIX) + r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Push:
    """A verified push: its JSON object, when it was signed, and its signature (its id)."""

    body: dict[str, Any]
    received_at: str
    signature: str


async def verified_push(request: Request, webhook: WebhookSpec) -> Push:
    """The push of a request whose headers, size and signature check out."""
    secret = os.environ.get(webhook.secret_env)
    if not secret:
        raise ApiError(500, f"the webhook's secret is not set (environment variable "
                            f"{webhook.secret_env})")
    timestamp = request.headers.get("x-patchbay-timestamp", "").strip()
    signature = request.headers.get("x-patchbay-signature", "").strip()
    if not timestamp or not signature:
        raise ApiError(401, "the webhook is not signed: send X-Patchbay-Timestamp and "
                            "X-Patchbay-Signature")
    if not _TIMESTAMP.fullmatch(timestamp):
        raise ApiError(400, "X-Patchbay-Timestamp must be Unix seconds (at most 12 digits)")
    if abs(time.time() - int(timestamp)) > webhook.max_age_seconds:
        raise ApiError(401, f"the webhook's timestamp is more than {webhook.max_age_seconds} "
                            "seconds away from now")
    if not _SIGNATURE.fullmatch(signature):
        raise ApiError(401, "the webhook's signature is not 'sha256=' and 64 hex digits")
    if webhook.sources is not None and \
            request.headers.get(SOURCE_HEADER) not in webhook.sources:
        raise ApiError(403, "the webhook's source is not one this integration accepts")
    body = await capped_body(request, MAX_BODY)
    if body is None:
        raise ApiError(413, f"the webhook's body exceeds {MAX_BODY} bytes")
    if not verify_signature(secret, timestamp, body, signature,
                            max_age_seconds=webhook.max_age_seconds):
        raise ApiError(401, "the webhook's signature is wrong")
    try:
        payload = json_body(body)
    except ValueError as exc:
        raise ApiError(400, f"the webhook's body is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "the webhook's body must be an object")
    received_at = dt.datetime.fromtimestamp(int(timestamp), dt.UTC).isoformat()
    return Push(payload, received_at, signature.removeprefix(SIGNATURE_PREFIX))


class SeenSignatures:
    """Forgets the signatures of each integration once they are too old to be accepted,
    at most once a minute per integration."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lock = threading.Lock()
        self._purged_at: dict[str, float] = {}

    def forget_old(self, integration: str, webhook: WebhookSpec) -> None:
        with self._lock:
            now = time.monotonic()
            if now - self._purged_at.get(integration, -PURGE_EVERY_SECONDS) < PURGE_EVERY_SECONDS:
                return
            self._purged_at[integration] = now
        self.store.seen.purge(integration, dt.timedelta(seconds=2 * webhook.max_age_seconds + 60))
