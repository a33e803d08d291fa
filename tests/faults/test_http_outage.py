"""An HTTP receiver, one destination of a broadcast, answers 500 to everything for half a
minute while changes flow, then 200 again: the PostgreSQL table and the JSON Lines audit
keep up during that time, the refused requests are retried until accepted, and
afterwards what the receiver accepted, de-duplicated by Idempotency-Key, is the source's
current state. Nothing becomes a dead letter.

Delivery is at least once: a request whose answer is lost (a client timeout) is sent again
with the same Idempotency-Key, which is how a receiver recognises it. The receiver may
therefore accept a key twice, but only with the same body; such copies are counted.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from patchbay import run_integration
from patchbay.connectors.http import IDEMPOTENCY_HEADER
from patchbay.connectors.messages import message_id
from tests.faults.broadcast_outage import (
    ChangingSource,
    assert_alive,
    assert_final_state,
    assert_kept_up,
    audit_last_qty,
    create_table,
    delivered_changes,
    drop_table,
    outbox,
    serving,
    wait_drained,
    warehouse,
    write_spec,
)

ROWS = 400
PER_SECOND = 40
OUTAGE_SECONDS = 30.0
LAG = 5.0
"""How far behind the source a healthy destination may be: a few poll and delivery rounds,
with room for a busy machine; a destination held up by the outage lags by all of it."""


class Receiver:
    """Answers 500 while failing, else 200; remembers every attempt and what it accepted."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failing_until = 0.0
        self.attempts: Counter[str] = Counter()
        self.refusals: list[float] = []
        """When each 500 was answered (time.monotonic())."""
        self.accepted: list[tuple[str, bytes]] = []
        """(Idempotency-Key, body) of each request answered 200, in the order answered."""

    def fail_for(self, seconds: float) -> None:
        with self._lock:
            self._failing_until = time.monotonic() + seconds

    def answer(self, key: str, body: bytes) -> int:
        with self._lock:
            self.attempts[key] += 1
            now = time.monotonic()
            if now < self._failing_until:
                self.refusals.append(now)
                return 500
            self.accepted.append((key, body))
            return 200


@pytest.fixture
def receiver() -> Iterator[tuple[Receiver, str]]:
    """The receiver and its base URL: a threading http.server on a free port."""
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: the connector reuses its connections
        # Headers and body in one send, without Nagle: unbuffered, each answer waited ~40 ms
        # for a delayed ACK, and the receiver, not patchbay, set the pace.
        wbufsize = -1
        disable_nagle_algorithm = True

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            status = state.answer(self.headers.get(IDEMPOTENCY_HEADER, ""), body)
            reply = b'{"ok":true}' if status == 200 else b"database unavailable"
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def do_HEAD(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # thousands of requests; the test's assertions say what matters

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="http-receiver", daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def table(pg_url: str) -> Iterator[str]:
    name = f"fault_http_{uuid.uuid4().hex[:8]}"
    create_table(pg_url, name)
    yield name
    drop_table(pg_url, name)


@pytest.mark.slow
def test_half_a_minute_of_http_500_loses_nothing_and_stalls_no_other_destination(
        tmp_path: Path, pg_url: str, receiver: tuple[Receiver, str], table: str) -> None:
    hooks, url = receiver
    source = ChangingSource(tmp_path / "source.db", ROWS, PER_SECOND)
    spec = write_spec(tmp_path, pg_url, table, systems=f"  hooks: {{url: '{url}', options: "
                      "{timeout: 5}}", destinations="""\
      - {name: hooks, system: hooks, object: /items, key: item_id,
          transform: {fields: {item_id: id, label: label, qty: qty}}}""")
    with serving(tmp_path, spec) as process:
        source.start()
        try:
            time.sleep(6)
            assert_alive(process, tmp_path)
            assert hooks.accepted, "the receiver accepted nothing before the outage"
            hooks.fail_for(OUTAGE_SECONDS)
            start = time.monotonic()
            # Read the healthy destinations just before the 500s end.
            time.sleep(OUTAGE_SECONDS - 1)
            end = time.monotonic()
            healthy = {"warehouse": {i: qty for i, (_, qty) in warehouse(pg_url, table).items()},
                       "audit": audit_last_qty(tmp_path)}
            stuck = outbox(tmp_path)["hooks"]["pending"]
            assert_alive(process, tmp_path)
            made = assert_kept_up(source, start, end, LAG, healthy)
            time.sleep(6)  # the receiver answers 200 again; changes go on flowing
        finally:
            source.stop()
        counts = wait_drained(tmp_path, process, source, timeout=60)
    assert process.returncode == 0, "patchbay serve did not stop cleanly on Ctrl-C"

    assert all(c["dead"] == 0 for c in counts.values()), f"the outage made dead letters: {counts}"
    report = run_integration(spec, state=tmp_path / ".patchbay")
    assert report["changes"] == 0 and report["delivered"] == 0 and report["dead"] == 0, report
    # Enough flowed to mean something: changes go on at about PER_SECOND throughout.
    flowing = OUTAGE_SECONDS * PER_SECOND
    assert made >= 0.4 * flowing and len(source.log) >= 0.8 * flowing, (made, len(source.log))
    assert_final_state(tmp_path, source, pg_url, table)

    assert stuck > 0, "nothing waited for the receiver: it was not really refusing"
    assert hooks.refusals and hooks.refusals[-1] - hooks.refusals[0] >= OUTAGE_SECONDS - 6, \
        "the receiver was tried throughout its 500s"
    retried = [key for key, n in hooks.attempts.items() if n > 1]
    assert len(retried) >= 100, f"only {len(retried)} Idempotency-Keys were tried more than once"

    first: dict[str, bytes] = {}
    copies = 0
    versions: dict[int, list[str]] = {}
    last: dict[int, dict[str, Any]] = {}
    for key, body in hooks.accepted:
        if key in first:
            assert body == first[key], f"Idempotency-Key {key} was accepted with two bodies"
            copies += 1
        first[key] = body
        request = json.loads(body)
        item = int(request["key"])
        assert key == message_id(request["object"], item, request["version"]), \
            "the Idempotency-Key is the digest of (object, key, version)"
        versions.setdefault(item, []).append(request["version"])
        last[item] = request
    assert set(hooks.attempts) == set(first), "every change refused with a 500 was accepted later"
    out_of_order = [k for k, seen in versions.items() if seen != sorted(seen)]
    assert not out_of_order, f"changes of items {out_of_order[:5]} arrived out of version order"

    accepted = {(str(k), v) for k, seen in versions.items() for v in seen}
    assert accepted == set(delivered_changes(tmp_path, "hooks")), \
        "the receiver accepted exactly the changes the outbox delivered to it"
    current = source.current()
    effect = {k: (r["record"]["label"], r["record"]["qty"], r["version"]) for k, r in last.items()}
    assert effect == current, (f"de-duplicated by Idempotency-Key, the receiver's last request of "
                               f"each item is its current state ({copies} accepted twice of "
                               f"{len(hooks.accepted)} accepted)")
