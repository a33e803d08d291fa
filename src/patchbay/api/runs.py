"""Runs started through the API, each in a thread of its own.

A pattern that records its runs (a migration) is started through `runner.start`: it creates
(or claims, to resume) the run's record in the store, in the request, so the answer carries
the run id at once; `Started.carry` then runs it to its end in a background thread, and
`GET /runs/{id}` reads its progress from the store, where the run checkpoints. Any other
pattern runs in the request (`runner.run`: a broadcast's round, an aggregation) and its
summary is the answer.

Every run gets its own RunContext (its own connectors and stop event). Two runs of the same
migration with the same parameters, or two rounds of the same broadcast, never overlap
here: the second is refused (409). Runs of other processes are covered by the store: a
migration whose unfinished run with these parameters still has a live owner cannot start.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from patchbay.errors import ApiError, RunNotResumable
from patchbay.model import jsonable
from patchbay.patterns import aggregation
from patchbay.patterns.context import RunContext
from patchbay.patterns.registry import Started
from patchbay.runtime import observed, runner
from patchbay.runtime.runner import Invocation
from patchbay.store import RunRecord, Store
from patchbay.store.runs import RunStatus

log = logging.getLogger("patchbay.api")


@dataclass
class _Active:
    ctx: RunContext
    run_id: str | None = None
    thread: threading.Thread | None = None


class Runs:
    """The runs this API process carries."""

    def __init__(self, store: Store, reports_dir: Path, serving: Iterable[str] = ()) -> None:
        self.store, self.reports_dir = store, reports_dir
        self.serving = frozenset(serving)
        """Broadcasts this process already keeps going (`patchbay serve`'s loops)."""
        self._lock = threading.Lock()
        self._active: dict[tuple[str, str], _Active] = {}
        self._last_answers: dict[str, dict[str, Any]] = {}
        self._closed = False

    def is_active(self, run_id: str) -> bool:
        with self._lock:
            return any(a.run_id == run_id for a in self._active.values())

    # -- recorded runs (migrations) ---------------------------------------------------------------

    def start(self, invocation: Invocation, *, full: bool = False,
              fresh: bool = False) -> RunRecord:
        """Record the run (or claim the unfinished one with these parameters, to resume it)
        and carry it on in a background thread; return its record."""
        ctx = invocation.context(self.store, self.reports_dir)
        key = (invocation.integration.name, _canonical(invocation.params))
        started = False
        try:
            active = self._reserve(key, ctx)
            try:
                try:
                    begun = runner.start(ctx, fresh=fresh, full=full)
                except RunNotResumable as exc:
                    raise ApiError(409, str(exc)) from None
                record = begun.record
                if begun.notice is not None:
                    log.info("'%s': %s", invocation.integration.name, begun.notice)
                thread = threading.Thread(target=self._carry, args=(key, begun, ctx),
                                          name=f"patchbay-api-run-{record.id}", daemon=True)
                with self._lock:
                    active.run_id, active.thread = record.id, thread
                thread.start()
                started = True
                return record
            finally:
                if not started:
                    self._release(key)
        finally:
            if not started:
                ctx.systems.close()

    def _carry(self, key: tuple[str, str], begun: Started, ctx: RunContext) -> None:
        record = begun.record
        began = time.monotonic()
        try:
            report = begun.carry().to_json()
            log.info("run %s of '%s': %s", record.id, record.integration,
                     report.get("verdict") or report.get("status"))
            observed.ran(ctx, report, time.monotonic() - began)
        except BaseException as exc:
            log.warning("run %s of '%s' failed: %s", record.id, record.integration,
                        type(exc).__name__)
            self._mark_failed(record.id, exc)
            if isinstance(exc, Exception):
                observed.ran(ctx, {"run": record.id}, time.monotonic() - began, exc)
        finally:
            ctx.systems.close()
            self._release(key)

    def _mark_failed(self, run_id: str, exc: BaseException) -> None:
        """A run that stopped on an error the migration did not record stays resumable."""
        try:
            if self.store.runs.get(run_id).status == RunStatus.RUNNING:
                self.store.runs.finish(run_id, RunStatus.FAILED, error=str(exc) or type(exc).__name__)
        except Exception:  # the store itself is failing; the record stays as it was
            log.warning("run %s: could not record its failure", run_id)

    # -- runs in the request ------------------------------------------------------------------

    def round(self, invocation: Invocation) -> dict[str, Any]:
        """One run (a broadcast's round) in this thread, never two at once: its summary."""
        name = invocation.integration.name
        if name in self.serving:
            raise ApiError(409, f"'{name}' is kept going by this server already: its changes "
                                "are polled and delivered continuously")
        ctx = invocation.context(self.store, self.reports_dir)
        key = (name, "")
        try:
            self._reserve(key, ctx)
        except BaseException:
            ctx.systems.close()
            raise
        try:
            return runner.run(ctx)  # closes the connectors
        finally:
            self._release(key)

    def aggregate(self, invocation: Invocation) -> dict[str, Any]:
        """Run an aggregation now (answer, reports, destinations); its summary."""
        summary = runner.run(invocation.context(self.store, self.reports_dir))
        self._answered(invocation.integration.name, summary)
        return summary

    def answer(self, invocation: Invocation, limit: int | None = None) -> aggregation.Answer:
        """An aggregation's live answer, at most `limit` rows."""
        name = invocation.integration.name
        try:
            answer = runner.answer(invocation.context(self.store, self.reports_dir), limit)
        except aggregation.RequiredSourceFailed as refused:
            self._answered(name, {**refused.answer.summary(), "status": "failed",
                                  "error": str(refused)})
            raise
        self._answered(name, {**answer.summary(), "status": "partial" if answer.partial else "ok"})
        return answer

    def last_answer(self, integration: str) -> dict[str, Any] | None:
        """The summary of the last answer (or run) of an aggregation this process computed,
        with its time (`at`): each source's status, the rows, whether partial."""
        with self._lock:
            return self._last_answers.get(integration)

    def _answered(self, integration: str, summary: Mapping[str, Any]) -> None:
        with self._lock:
            self._last_answers[integration] = {**summary, "at": dt.datetime.now(dt.UTC)}

    def push(self, invocation: Invocation, body: Mapping[str, Any], received_at: str,
             message: tuple[str, str] | None = None, source: str | None = None) -> int:
        """Queue the changes a broadcast's source pushed; the broadcast's loop delivers them
        (at once, when it serves in this process). `message`: see runner.accept."""
        ctx = invocation.context(self.store, self.reports_dir)
        try:
            return runner.accept(ctx, body, received_at, message, source)
        finally:
            ctx.systems.close()

    # -- bookkeeping ----------------------------------------------------------------------------

    def _reserve(self, key: tuple[str, str], ctx: RunContext) -> _Active:
        with self._lock:
            if self._closed:
                raise ApiError(503, "the server is shutting down")
            found = self._active.get(key)
            if found is not None:
                extra: dict[str, Any] = {}
                if found.run_id is not None:
                    extra = {"run": found.run_id, "url": f"/runs/{found.run_id}"}
                raise ApiError(409, f"'{key[0]}' is already running"
                                    + (" with these parameters" if key[1] else ""), **extra)
            active = self._active[key] = _Active(ctx)
            return active

    def _release(self, key: tuple[str, str]) -> None:
        with self._lock:
            self._active.pop(key, None)

    def close(self, timeout: float = 30.0) -> None:
        """Start nothing more; ask the running migrations to stop after their current batch
        (they stay resumable) and wait for them up to `timeout` seconds."""
        with self._lock:
            self._closed = True
            active = list(self._active.values())
        for item in active:
            item.ctx.stop.set()
        deadline = time.monotonic() + timeout
        for item in active:
            if item.thread is not None and item.thread is not threading.current_thread():
                item.thread.join(max(0.0, deadline - time.monotonic()))


def _canonical(params: Any) -> str:
    return json.dumps(jsonable(params), sort_keys=True)
