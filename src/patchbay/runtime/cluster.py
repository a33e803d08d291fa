"""This process among the `serve` and `worker` processes sharing an engine state.

    with Member(store, role="serve", lease_seconds=15) as member:   registered; a heartbeat
        lease = member.lease("notice:items")                         thread beats and renews
        if lease.held():                  held, or taken now: free, expired, holder ended
            with store.fenced(lease.fence):
                ...                       committed only while the lease is still ours
        if member.claim("nightly", due):  a scheduled run, once across all processes
            ...

A Member registers the process (host, pid, role, version) in `patchbay_processes` and beats
every third of the lease time, renewing the leases it holds in the same beat; a lease not
renewed (the process killed, paused, cut off from the state) expires and another process
takes it over (store/leases.py). It marks gone the processes of the state that stopped
beating, and forgets old rows. `cluster_status` is what `patchbay cluster` and GET /cluster
show: the processes, their leases, heartbeats and deliveries in flight.

Why a lease row rather than PostgreSQL's advisory locks: a lock held by a paused process
(or one whose connection lingers) is never taken over, and a lock carries no fencing token
to refuse that process's late commit; a row expires by itself, carries the token, works on
an SQLite state as well, and is a row `patchbay cluster` can show.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import logging
import os
import secrets
import threading
import time
from types import TracebackType
from typing import Any

from patchbay.errors import LeaseLost, PatchbayError
from patchbay.processes import owner_gone, this_host
from patchbay.store import Store
from patchbay.store.leases import Fence
from patchbay.store.processes import GONE, RUNNING

log = logging.getLogger(__name__)

DEFAULT_LEASE_SECONDS = 15.0
GONE_AFTER = dt.timedelta(seconds=60)
"""A process without a heartbeat for this long is gone (its leases expired long before)."""
FORGET_AFTER = dt.timedelta(days=1)
"""Rows of ended processes, and claimed ticks, are kept this long."""
HOUSEKEEPING_SECONDS = 60.0


def notice_lease(integration: str) -> str:
    """The name of the lease on noticing an integration's changes."""
    return f"notice:{integration}"


class Lease:
    """One lease as this process sees it: `fence` while it holds it."""

    def __init__(self, member: Member, name: str) -> None:
        self.name = name
        self._member = member
        self._lock = threading.Lock()
        self._fence: Fence | None = None
        self._valid_until = 0.0
        """Monotonic time until which the lease is surely ours: from before the take or
        renewal that the state's clock counted from."""

    @property
    def fence(self) -> Fence:
        """The take this process holds; LeaseLost if the heartbeat found it taken over."""
        with self._lock:
            if self._fence is None:
                raise LeaseLost(f"lease '{self.name}' was taken over by another process",
                                holder=self._member.id)
            return self._fence

    def held(self) -> bool:
        """Whether this process holds the lease, taking it if it is free, expired or held by
        an ended process of this machine. Engine state errors are raised."""
        with self._lock:
            if self._fence is not None and time.monotonic() < self._valid_until:
                return True
            began = time.monotonic()
            fence = self._member.store.leases.take(self.name, self._member.id,
                                                   self._member.lease_seconds)
            if fence is not None and fence != self._fence:
                log.info("%s took lease '%s' (token %d)", self._member.id, self.name, fence.token)
            self._fence = fence
            self._valid_until = began + self._member.lease_seconds
            return fence is not None

    def renew(self) -> None:
        """Push the lease's expiry on, if held; a lease taken over meanwhile is let go."""
        with self._lock:
            if self._fence is None:
                return
            began = time.monotonic()
            if self._member.store.leases.renew(self._fence):
                self._valid_until = began + self._member.lease_seconds
            else:
                log.warning("%s lost lease '%s' to another process", self._member.id, self.name)
                self._fence = None

    def lost(self) -> None:
        """The state refused a commit under this lease: it is another process's now."""
        with self._lock:
            self._fence = None

    def release(self) -> None:
        with self._lock:
            if self._fence is not None:
                self._member.store.leases.release(self._fence)
                self._fence = None


class Member:
    """This process in the cluster of an engine state; see the module's docstring."""

    def __init__(self, store: Store, role: str, lease_seconds: float = DEFAULT_LEASE_SECONDS) -> None:
        self.store = store
        self.role = role
        self.lease_seconds = lease_seconds
        self.id = f"{this_host()}:{os.getpid()}:{secrets.token_hex(4)}"
        self._leases: dict[str, Lease] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beating: threading.Thread | None = None

    @property
    def heartbeat_seconds(self) -> float:
        return self.lease_seconds / 3

    def start(self) -> None:
        """Register, and beat in a thread of its own until `stop`."""
        self.store.processes.register(self.id, this_host(), os.getpid(), self.role, _version())
        self._beating = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        self._beating.start()

    def stop(self) -> None:
        """Stop beating, give up every lease held (another process takes them at once), and
        say this process stopped."""
        self._stop.set()
        if self._beating is not None:
            self._beating.join(timeout=30)
        try:
            for lease in self._all():
                lease.release()
            self.store.processes.stopped(self.id)
        except PatchbayError as exc:  # they expire, and the process is marked gone, by itself
            log.warning("%s: could not say it stopped: %s", self.id, exc)

    def __enter__(self) -> Member:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.stop()

    def lease(self, name: str) -> Lease:
        with self._lock:
            return self._leases.setdefault(name, Lease(self, name))

    def claim(self, integration: str, due: dt.datetime) -> bool:
        """Claim the scheduled run (or poll) of `integration` due at `due`: True in the one
        process that gets it."""
        return self.store.ticks.claim(integration, due, self.id)

    def worker_name(self) -> str:
        """A name for one of this process's delivering workers (outbox leases), which
        `cluster_status` counts as this process's."""
        return f"{self.id}:{secrets.token_hex(4)}"

    def _all(self) -> list[Lease]:
        with self._lock:
            return list(self._leases.values())

    def _beat(self) -> None:
        tidied = time.monotonic()
        while not self._stop.wait(self.heartbeat_seconds):
            try:
                self.store.processes.beat(self.id)
                for lease in self._all():
                    lease.renew()
                if time.monotonic() - tidied >= HOUSEKEEPING_SECONDS:
                    self.store.processes.mark_gone(GONE_AFTER)
                    self.store.processes.forget(FORGET_AFTER)
                    self.store.ticks.forget(FORGET_AFTER)
                    tidied = time.monotonic()
            except PatchbayError as exc:  # the state is down: beat again next time
                log.warning("%s: heartbeat failed, trying again: %s", self.id, exc)


def _version() -> str:
    try:
        return importlib.metadata.version("patchbay")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "unknown"


def cluster_status(store: Store) -> dict[str, Any]:
    """The processes sharing the engine state, newest first (each with its leases, its
    heartbeat's age, and the deliveries it is writing now), and every lease."""
    processes = store.processes.list()
    leases = store.leases.list()
    leased_by = store.outbox.leased_by()
    now = store.processes.now()
    shown = []
    for process in processes:
        age = (now - process.heartbeat_at).total_seconds()
        status = process.status
        if status == RUNNING and (age > GONE_AFTER.total_seconds() or owner_gone(process.id)):
            status = GONE
        shown.append({
            "id": process.id, "host": process.host, "pid": process.pid, "role": process.role,
            "version": process.version, "status": status,
            "started_at": process.started_at.isoformat(),
            "heartbeat_at": process.heartbeat_at.isoformat(),
            "heartbeat_age_seconds": round(max(age, 0.0), 1),
            "ended_at": process.ended_at.isoformat() if process.ended_at else None,
            "leases": [lease.name for lease in leases
                       if lease.holder == process.id and not lease.expired],
            "delivering": sum(n for owner, n in leased_by.items()
                              if owner.startswith(process.id + ":")),
        })
    return {"processes": shown, "leases": [{
        "name": lease.name, "holder": lease.holder, "token": lease.token,
        "acquired_at": lease.acquired_at.isoformat(), "renewed_at": lease.renewed_at.isoformat(),
        "expires_at": lease.expires_at.isoformat(), "expired": lease.expired} for lease in leases]}
