"""The Starlette application of the API; `create_app` builds it for one integration file.

Routes (all but GET /health need `Authorization: Bearer <token>` when a token is set):

    GET  /health                    {"ok": true}
    GET  /integrations              names, patterns, declared parameters
    POST /runs                      start a migration (202, its run id) or run one round
                                    of a broadcast (200, its summary)
    GET  /runs                      runs, newest first (?integration=&limit=)
    GET  /runs/{run_id}             one run: status, counters, error, report when finished
    GET  /dead-letters              dead letters, oldest first (?integration=&destination=&limit=)
    GET  /dead-letters/{id}         one delivery, payload included
    POST /dead-letters/replay       {"ids": [...]}: send again
    POST /dead-letters/discard      {"ids": [...]}: give up for good
    GET  /outbox/{integration}      deliveries per destination and status
    GET  /conflicts                 a sync's conflicts, newest first (?integration=&status=
                                    &limit=&offset=)
    GET  /conflicts/{id}            one conflict: candidates, policy, winner, choice
    POST /conflicts/{id}/resolve    {"value": ...} or {"pick": "participant"} (and "by"):
                                    settle a held conflict; the sync applies it next round
    GET  /reviews                   a correlation's pairs, best weight first: keys and scores
                                    only (?integration=&status=&limit=&offset=)
    POST /reviews/{integration}/decide  {"left": key, "right": key, "decision": "accepted" or
                                    "rejected"} (and "by"): a person's decision on a pair,
                                    kept over every later match; applied at the next match
    GET  /audit/{integration}       a correlation's audit ledger, newest first (?key=&field=
                                    &since=&limit=)
    POST /hooks/{integration}       changes a broadcast's source pushes (no token: signed,
                                    see api/webhooks.py)
    POST /outbound/{integration}    Salesforce Outbound Messages (SOAP; no token: checked by
                                    the sending org and the URL's secret, see api/outbound.py)
    GET  /openapi.json              the OpenAPI 3.1 description of all of this
    GET  /metrics                   Prometheus' text format: this process's counts (runs,
                                    records, deliveries, Salesforce API usage, notifications)
                                    and the engine state's (outboxes, conflicts, review items)
    /ui/...                         the web console (HTML; its own sign-in, see api/console.py)

Answers are JSON, errors too: {"error": "...", "problems": [...]} (problems for bad input).
No traceback is ever sent; known secrets (system passwords and secret options, the token)
are replaced by *** in every body.
"""

from __future__ import annotations

import itertools
import logging
import string
import threading
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.types import Receive, Scope, Send

from patchbay import metrics, spec
from patchbay.api import console, outbound, webhooks
from patchbay.api.http import (
    JSON,
    BearerAuth,
    NestedTooDeep,
    Redactor,
    capped_body,
    json_body,
    refuse_nul,
    secrets_of,
)
from patchbay.api.openapi import OPENAPI
from patchbay.api.runs import Runs
from patchbay.elements import reports
from patchbay.errors import (
    ApiError,
    ChoiceRefused,
    ConflictNotHeld,
    ConnectionFailed,
    MessageSeen,
    ParameterError,
    PatchbayError,
    RunNotResumable,
    SpecError,
    UnknownConflict,
    UnknownPair,
)
from patchbay.model import given_params, jsonable
from patchbay.patterns import aggregation
from patchbay.runtime import conflicts, observed, reviews, runner
from patchbay.runtime.cluster import cluster_status
from patchbay.runtime.runner import Invocation
from patchbay.spec import (
    AggregationSpec,
    BroadcastSpec,
    CorrelationSpec,
    IntegrationFile,
    IntegrationSpec,
    ParameterSpec,
)
from patchbay.store import RunRecord, Store, open_state
from patchbay.store.conflicts import STATUSES, ConflictRecord
from patchbay.store.outbox import Delivery, DeliveryStatus
from patchbay.store.pairs import DECIDED
from patchbay.store.pairs import STATUSES as PAIR_STATUSES
from patchbay.store.runs import RunStatus

log = logging.getLogger("patchbay.api")

MAX_LIMIT = 1000
MAX_IDS = 10_000
MAX_ID = 2 ** 63 - 1
"""The largest delivery id (a signed 64-bit column)."""
MAX_BODY = 1024 * 1024
"""The largest JSON body of POST /runs and the dead-letter routes."""
MAX_ANSWER_ROWS = 100_000
"""A live aggregation answer larger than this is refused: a report file is the way. The
merge stops at one row more, so a larger answer costs no more than that."""
MAX_CONCURRENT_ANSWERS = 4
"""Aggregations computed at once, live answers (until sent) and POST /runs alike: each holds
its data set in memory."""
ANSWER_RETRY_SECONDS = 5
"""The Retry-After of an answer refused because MAX_CONCURRENT_ANSWERS are under way."""
RUN_FIELDS = ("integration", "params", "full", "fresh")
RESOLVE_FIELDS = ("value", "pick", "by")
DECIDE_FIELDS = ("left", "right", "decision", "by")
MAX_KEY = 1000
"""The longest record key a decision names."""
MAX_OFFSET = 1_000_000
"""The furthest a list of conflicts pages: a filter finds older ones faster."""
MAX_NAME = 255
"""The longest participant name (`pick`) or person's name (`by`) taken."""
_FINISHED = (RunStatus.COMPLETE, RunStatus.COMPLETE_WITH_REJECTS, RunStatus.INCOMPLETE)

Handler = Callable[[Request], Awaitable[Response]]


def create_app(spec_path: Path, state: str | None, token: str | None, *,
               viewer: str | None = None, serving: Iterable[str] = (),
               hosts: Iterable[str] | None = None) -> Starlette:
    """The API over the integrations of `spec_path` and the engine state `state`, and the
    web console under /ui (api/console.py).

    `token`: the bearer token every route but GET /health requires; None leaves the app
    open (serve_api allows that on loopback only). `viewer`: the token that signs in to the
    console to read only. `serving`: the broadcasts this process
    already keeps going, which POST /runs then refuses to run a round of (409). `hosts`:
    without a token, the only Host names answered (serve_api gives the loopback ones).
    The file is loaded (and its `${VARS}` resolved) once, here: a SpecError says why not.
    """
    file = spec.load(Path(spec_path).resolve())
    store, reports_dir = open_state(state)
    api = Api(file, store, reports_dir,
              Redactor([*secrets_of(file), *(t for t in (token, viewer) if t)]),
              Runs(store, reports_dir, serving))
    app = Starlette(
        routes=[*api.routes(), Mount(console.ROOT, app=console.console_app(api, token, viewer))],
        middleware=[Middleware(BearerAuth, token=token, hosts=hosts)],
        exception_handlers={HTTPException: api.http_error, Exception: api.internal_error},
    )
    app.state.runs = api.runs
    app.state.store = store
    return app


def close_app(app: Starlette, timeout: float = 30.0) -> None:
    """Stop the runs the app carries (resumable after their current batch), close its store."""
    app.state.runs.close(timeout)
    app.state.store.close()


class Api:
    def __init__(self, file: IntegrationFile, store: Store, reports_dir: Path, redact: Redactor,
                 runs: Runs) -> None:
        self.file, self.store, self.reports_dir = file, store, reports_dir
        self.redact, self.runs = redact, runs
        self.answering = threading.BoundedSemaphore(MAX_CONCURRENT_ANSWERS)
        self.seen_signatures = webhooks.SeenSignatures(store)
        self.state_metrics = CollectorRegistry(auto_describe=False)
        self.state_metrics.register(observed.StateCollector(store, (i.name for i in file.integrations)))

    def routes(self) -> list[Route]:
        def route(path: str, handler: Handler, method: str) -> Route:
            return Route(path, self._guarded(handler), methods=[method])

        return [
            route("/health", self.health, "GET"),
            route("/openapi.json", self.openapi, "GET"),
            route("/metrics", self.metrics, "GET"),
            route("/integrations", self.integrations, "GET"),
            route("/runs", self.list_runs, "GET"),
            route("/runs", self.start_run, "POST"),
            route("/runs/{run_id}", self.show_run, "GET"),
            route("/dead-letters", self.dead_letters, "GET"),
            route("/dead-letters/replay", self.replay, "POST"),
            route("/dead-letters/discard", self.discard, "POST"),
            route("/dead-letters/{delivery_id:int}", self.dead_letter, "GET"),
            route("/outbox/{integration:path}", self.outbox, "GET"),
            route("/cluster", self.cluster, "GET"),
            route("/conflicts", self.conflicts, "GET"),
            route("/conflicts/{conflict_id:int}", self.conflict, "GET"),
            route("/conflicts/{conflict_id:int}/resolve", self.resolve, "POST"),
            route("/reviews", self.reviews, "GET"),
            route("/reviews/{integration:path}/decide", self.decide, "POST"),
            route("/audit/{integration:path}", self.audit, "GET"),
            route("/hooks/{integration:path}", self.push, "POST"),
            route("/aggregations/{integration:path}", self.aggregation, "GET"),
            # Not _guarded: Salesforce gets SOAP back, faults included.
            Route("/outbound/{integration:path}", self.outbound_message, methods=["POST"]),
        ]

    # -- answers and errors ---------------------------------------------------------------------

    def json(self, content: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> JSON:
        return JSON(content, status, self.redact, headers)

    def _guarded(self, handler: Handler) -> Handler:
        """The handler, with the errors it raises on purpose turned into JSON answers."""
        async def guarded(request: Request) -> Response:
            try:
                refuse_nul(request)
                return await handler(request)
            except ApiError as exc:
                return self.json(exc.body(), exc.status)
            except SpecError as exc:
                return self.json({"error": exc.message, "problems": exc.problems}, 400)
            except ConnectionFailed as exc:
                return self.json({"error": str(exc)}, 502)
            except PatchbayError as exc:
                return self.json({"error": str(exc)}, 500)
        guarded.__name__ = handler.__name__
        return guarded

    async def http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = {404: "no such route", 405: "method not allowed"}.get(exc.status_code, exc.detail)
        return self.json({"error": message}, exc.status_code, exc.headers)

    async def internal_error(self, request: Request, exc: Exception) -> Response:
        log.error("%s %s failed: %s", request.method, request.url.path, type(exc).__name__)
        return self.json({"error": "internal error; the server's log has the details"}, 500)

    # -- routes ---------------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        return self.json({"ok": True})

    async def openapi(self, request: Request) -> Response:
        return self.json(OPENAPI)

    async def metrics(self, request: Request) -> Response:
        body = await run_in_threadpool(self._scrape)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    def _scrape(self) -> bytes:
        """What this process counted, then what the engine state holds now."""
        return generate_latest(metrics.REGISTRY) + generate_latest(self.state_metrics)

    async def integrations(self, request: Request) -> Response:
        return self.json({"integrations": [self._integration(i) for i in self.file.integrations]})

    def _integration(self, integration: IntegrationSpec) -> dict[str, Any]:
        described: dict[str, Any] = {
            "name": integration.name, "pattern": integration.pattern,
            "description": integration.description,
            "parameters": {name: _parameter(p) for name, p in integration.parameters.items()}}
        if isinstance(integration, BroadcastSpec):
            described["destinations"] = [d.name for d in integration.destinations]
            described["served"] = integration.name in self.runs.serving
        return described

    async def start_run(self, request: Request) -> Response:
        body = await _body(request)
        takes = "; it takes " + ", ".join(RUN_FIELDS)
        problems = [f"unknown field '{k}'{spec.suggest(k, RUN_FIELDS) or takes}"
                    for k in body if k not in RUN_FIELDS]
        name, params = body.get("integration"), body.get("params", {})
        if not isinstance(name, str) or not name:
            problems.append("'integration' is required: the name of one of "
                            + ", ".join(repr(i.name) for i in self.file.integrations))
        if params is None:
            params = {}
        if not isinstance(params, dict):
            problems.append("'params' must be an object: {\"name\": value, ...}")
        options = {k: body.get(k, False) for k in ("full", "fresh")}
        problems += [f"'{k}' must be true or false" for k, v in options.items()
                     if not isinstance(v, bool)]
        if problems:
            raise ApiError(400, "invalid request", problems)
        assert isinstance(name, str) and isinstance(params, dict)
        integration = self._find(name)
        invocation = Invocation(self.file, integration,
                                spec.resolve_parameters(integration, _json_params(integration, params)))
        launched = await self.launch(invocation, full=bool(options["full"]),
                                     fresh=bool(options["fresh"]))
        if launched is None:
            return self._busy()
        if isinstance(launched, RunRecord):
            url = f"/runs/{launched.id}"
            return self.json({"run": launched.id, "integration": launched.integration,
                              "status": launched.status, "url": url}, 202, {"Location": url})
        return self.json(launched)

    async def launch(self, invocation: Invocation, *, full: bool = False,
                     fresh: bool = False) -> RunRecord | dict[str, Any] | None:
        """Start a run, for POST /runs and the console's "run now": a recorded run (a
        migration) is started and its record returned at once; any other is done here and
        its summary returned (an aggregation's run, a broadcast's round). None: busy (an
        aggregation's run holds its data set, as a live answer does: the same bound)."""
        integration = invocation.integration
        if runner.records_runs(integration):
            return await run_in_threadpool(self.runs.start, invocation, full=full, fresh=fresh)
        aggregating = runner.holds_data_set(integration)
        once = self.runs.aggregate if aggregating else self.runs.round
        if aggregating and not self.answering.acquire(blocking=False):
            return None
        try:
            summary: dict[str, Any] = await run_in_threadpool(once, invocation)
            return summary
        except ParameterError as exc:  # a value the run refuses (a report path, say)
            raise ApiError(400, exc.message, exc.problems) from None
        except SpecError as exc:
            raise ApiError(500, f"'{integration.name}' cannot run: {exc.message}",
                           exc.problems) from None
        finally:
            if aggregating:
                self.answering.release()

    def _find(self, name: str) -> IntegrationSpec:
        by_name = {i.name: i for i in self.file.integrations}
        if name in by_name:
            return by_name[name]
        hint = spec.suggest(name, by_name) or "; the file declares " + ", ".join(
            repr(n) for n in by_name)
        message = f"no integration '{name}'"
        raise ApiError(400, message, [message + hint])

    async def list_runs(self, request: Request) -> Response:
        integration = request.query_params.get("integration") or None
        limit = _limit(request, 50)
        records = await run_in_threadpool(self.store.runs.latest, integration, limit)
        return self.json({"runs": [_run_summary(r) for r in records]})

    async def show_run(self, request: Request) -> Response:
        run_id = request.path_params["run_id"]
        try:
            record = await run_in_threadpool(self.store.runs.get, run_id)
        except RunNotResumable:
            raise ApiError(404, f"no run '{run_id}'") from None
        return self.json({
            **_run_summary(record),
            "params": given_params(record.params),
            "full": bool(record.params.get("__full__")),
            "batches": record.batches, "heartbeat_at": record.heartbeat_at,
            "active": self.runs.is_active(record.id),
            "report": record.report if record.status in _FINISHED else None})

    async def dead_letters(self, request: Request) -> Response:
        query = request.query_params
        letters = await run_in_threadpool(
            self.store.outbox.dead_letters, query.get("integration") or None,
            query.get("destination") or None, _limit(request, 100))
        return self.json({"dead_letters": [_letter(d) for d in letters]})

    async def dead_letter(self, request: Request) -> Response:
        delivery_id = request.path_params["delivery_id"]
        found = await run_in_threadpool(self.store.outbox.get, delivery_id) \
            if delivery_id <= MAX_ID else None
        if found is None:
            raise ApiError(404, f"no delivery {delivery_id}")
        return self.json({**_letter(found), "payload": found.payload})

    async def replay(self, request: Request) -> Response:
        ids = _ids(await _body(request))
        count = await run_in_threadpool(self.store.outbox.replay, ids)
        return self.json({"replayed": count, "requested": len(ids)})

    async def discard(self, request: Request) -> Response:
        ids = _ids(await _body(request))
        count = await run_in_threadpool(self.store.outbox.discard, ids)
        return self.json({"discarded": count, "requested": len(ids)})

    async def conflicts(self, request: Request) -> Response:
        query = request.query_params
        status = query.get("status") or None
        if status is not None and status not in STATUSES:
            raise ApiError(400, "invalid query", [f"'status' is one of {', '.join(STATUSES)}, "
                                                  f"not {status!r}{spec.suggest(status, STATUSES)}"])
        found = await run_in_threadpool(self.store.conflicts.list, query.get("integration") or None,
                                        status, _limit(request, 100), _offset(request))
        return self.json({"conflicts": [_conflict(c) for c in found]})

    async def conflict(self, request: Request) -> Response:
        conflict_id = request.path_params["conflict_id"]
        found = await run_in_threadpool(self.store.conflicts.get, conflict_id) \
            if conflict_id <= MAX_ID else None
        if found is None:
            raise ApiError(404, f"no conflict {conflict_id}")
        return self.json(_conflict(found))

    async def resolve(self, request: Request) -> Response:
        """A person's choice for a held conflict; the sync applies it on its next round."""
        conflict_id = request.path_params["conflict_id"]
        choice = _choice(await _body(request))
        if conflict_id > MAX_ID:
            raise ApiError(404, f"no conflict {conflict_id}")
        try:
            chosen = await run_in_threadpool(lambda: conflicts.choose(self.store, conflict_id,
                                                                      **choice))
        except UnknownConflict as exc:
            raise ApiError(404, exc.message) from None
        except ConflictNotHeld as exc:
            raise ApiError(409, exc.message) from None
        except ChoiceRefused as exc:
            raise ApiError(400, exc.message, [exc.message]) from None
        return self.json({**_conflict(chosen), "applied": conflicts.APPLIED_LATER})

    def _correlation(self, name: str) -> None:
        """ApiError unless the file declares `name` as a correlation (404: no such name)."""
        declared = {i.name: i for i in self.file.integrations}
        if name not in declared:
            raise ApiError(404, f"no integration '{name}'{spec.suggest(name, declared)}")
        if not isinstance(declared[name], CorrelationSpec):
            raise ApiError(400, f"'{name}' is a {declared[name].pattern}; only correlations "
                                "have pairs")

    async def reviews(self, request: Request) -> Response:
        query = request.query_params
        integration, status = query.get("integration") or None, query.get("status") or None
        if status is not None and status not in PAIR_STATUSES:
            raise ApiError(400, "invalid query", [
                f"'status' is one of {', '.join(PAIR_STATUSES)}, not {status!r}"
                f"{spec.suggest(status, PAIR_STATUSES)}"])
        limit, offset = _limit(request, 100), _offset(request)
        if integration is not None:
            self._correlation(integration)
        found = await run_in_threadpool(self.store.pairs.list, integration, status, limit, offset)
        return self.json({"pairs": [p.to_json() for p in found]})

    async def decide(self, request: Request) -> Response:
        """A person's decision on a pair; the correlation applies it at its next match."""
        name = request.path_params["integration"]
        decision = _decision(await _body(request))
        self._correlation(name)
        try:
            pair = await run_in_threadpool(lambda: reviews.decide(self.store, name, **decision))
        except UnknownPair as exc:
            raise ApiError(404, exc.message) from None
        return self.json({**pair.to_json(), "applied": reviews.APPLIED_LATER})

    async def audit(self, request: Request) -> Response:
        name = request.path_params["integration"]
        query = request.query_params
        try:
            since = reviews.since_of(query.get("since") or None)
        except SpecError as exc:
            raise ApiError(400, "invalid query", [exc.message]) from None
        limit = _limit(request, 100)
        self._correlation(name)
        entries = await run_in_threadpool(lambda: self.store.pairs.ledger(
            name, key=query.get("key") or None, field=query.get("field") or None, since=since,
            limit=limit))
        return self.json({"integration": name, "ledger": entries})

    async def push(self, request: Request) -> Response:
        """Changes a broadcast's source, or a sync's participant, pushes: verified, then
        durably queued (once). A sync's participant names itself in X-Patchbay-Source."""
        name = request.path_params["integration"]
        integration = next((i for i in self.file.integrations if i.name == name), None)
        source = request.headers.get(webhooks.SOURCE_HEADER)
        points = [p for p in (integration.push_points() if integration else [])
                  if p.webhook is not None and p.source in (None, source)]
        if integration is None or not points:
            named = f" from {source!r}" if source and integration is not None else ""
            raise ApiError(404, f"no broadcast or sync '{name}' takes webhooks{named}")
        webhook = points[0].webhook
        assert webhook is not None
        push = await webhooks.verified_push(request, webhook)
        try:
            accepted = await run_in_threadpool(
                self.runs.push, Invocation(self.file, integration, {}), push.body,
                push.received_at, (webhooks.SOURCE, push.signature), points[0].source)
        except MessageSeen:
            raise ApiError(409, "this signed request was accepted already; a change is sent "
                                "again with a new timestamp and signature") from None
        await run_in_threadpool(self.seen_signatures.forget_old, name, webhook)
        return self.json({"accepted": accepted}, 202)

    async def aggregation(self, request: Request) -> Response:
        """An aggregation's live answer, with each source's status: JSON, or CSV with
        `?format=csv` or `Accept: text/csv`, streamed out a batch of rows at a time. A source
        down makes the answer partial (said in the body, or the X-Patchbay-Partial header;
        the columns it left null in `incomplete` or X-Patchbay-Incomplete-Columns), a
        required one 503. At most MAX_CONCURRENT_ANSWERS are computed at once: past that,
        503 with Retry-After."""
        name = request.path_params["integration"]
        integration = next((i for i in self.file.integrations if i.name == name), None)
        if not isinstance(integration, AggregationSpec) or integration.merge is None:
            known = [i.name for i in self.file.integrations
                     if isinstance(i, AggregationSpec) and i.merge is not None]
            raise ApiError(404, f"no aggregation '{name}'{spec.suggest(name, known)}")
        query = dict(request.query_params)
        wanted = query.pop("format", None) or ("csv" if "text/csv" in request.headers.get("accept", "")
                                               else "json")
        if wanted not in ("csv", "json"):
            raise ApiError(400, f"format is json or csv, not {wanted!r}")
        try:
            params = spec.resolve_parameters(integration, query)
        except ParameterError as exc:
            raise ApiError(400, exc.message, exc.problems) from None
        if not self.answering.acquire(blocking=False):
            return self._busy()
        try:
            return await self._answer(name, integration, params, wanted)
        except BaseException:
            self.answering.release()
            raise

    def _busy(self) -> Response:
        return self.json({"error": f"busy: {MAX_CONCURRENT_ANSWERS} aggregations are being "
                                   f"computed, the most this server computes at once; retry in "
                                   f"{ANSWER_RETRY_SECONDS} seconds",
                          "retry_after_seconds": ANSWER_RETRY_SECONDS},
                         503, {"Retry-After": str(ANSWER_RETRY_SECONDS)})

    async def _answer(self, name: str, integration: AggregationSpec, params: dict[str, Any],
                      wanted: str) -> Response:
        """The answer, streamed; it releases `answering` once sent."""
        try:
            # One row more than the cap tells an answer over it from one exactly at it.
            answer = await run_in_threadpool(self.runs.answer, Invocation(self.file, integration, params),
                                             MAX_ANSWER_ROWS + 1)
        except aggregation.RequiredSourceFailed as refused:
            self.answering.release()
            return self.json({"integration": name, "error": str(refused),
                              **refused.answer.summary()}, 503)
        except SpecError as exc:
            raise ApiError(500, f"'{name}' cannot answer: {exc.message}", exc.problems) from None
        if answer.table.num_rows > MAX_ANSWER_ROWS:
            raise ApiError(413, f"the answer has more than {MAX_ANSWER_ROWS} rows; narrow it with "
                                "parameters, or write a report")
        failed = [n for n, s in answer.sources.items() if s.status != "ok"]
        headers = {"X-Patchbay-Partial": "true" if answer.partial else "false",
                   **({"X-Patchbay-Failed-Sources": _header_list(failed)} if failed else {}),
                   **({"X-Patchbay-Incomplete-Columns": _header_list(answer.incomplete)}
                      if answer.incomplete else {})}
        if wanted == "csv":
            pieces = reports.csv_chunks(answer.table)
            media_type = "text/csv; charset=utf-8"
        else:
            # The summary's JSON object, opened again for the records streamed after it.
            head = bytes(JSON({"integration": name, **answer.summary()}).body).decode("utf-8")
            pieces = itertools.chain([head[:-1] + ',"records":'], reports.json_chunks(answer.table), ["}"])
            media_type = "application/json"
        return _Streamed(map(self.redact, pieces), headers=headers, media_type=media_type,
                         done=self.answering.release)

    async def outbound_message(self, request: Request) -> Response:
        return await outbound.receive(request, self.file, self.runs, self.redact)

    async def cluster(self, request: Request) -> Response:
        return self.json(await run_in_threadpool(cluster_status, self.store))

    async def outbox(self, request: Request) -> Response:
        name = request.path_params["integration"]
        counts = await run_in_threadpool(self.store.outbox.counts, name)
        declared = {i.name: i for i in self.file.integrations}
        if not counts:
            if name not in declared:
                raise ApiError(404, f"no integration '{name}'{spec.suggest(name, declared)}")
            if not runner.keeps_outbox(declared[name]):
                raise ApiError(400, f"'{name}' is a {declared[name].pattern}, which keeps no "
                                    "outbox")
        return self.json({"integration": name, "destinations": counts})


# -- helpers ------------------------------------------------------------------------------------


def _header_list(names: Iterable[str]) -> str:
    """Names as a header's comma-separated list: percent-encoded where a name holds a comma,
    a percent sign, or a character a header cannot carry (beyond printable ASCII)."""
    return ",".join(quote(name, safe=_HEADER_SAFE) for name in names)


_HEADER_SAFE = "".join(c for c in string.punctuation if c not in ",%") + " "


class _Streamed(StreamingResponse):
    """A streamed answer that calls `done` once sent, or once the client has gone."""

    def __init__(self, pieces: Iterator[str], *, headers: Mapping[str, str], media_type: str,
                 done: Callable[[], None]) -> None:
        super().__init__(pieces, headers=headers, media_type=media_type)
        self._done = done

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._done()


async def _body(request: Request) -> dict[str, Any]:
    """The JSON object of a state-changing request. Only `application/json` is taken: a
    web page can post text/plain or a form to any site without asking (CSRF)."""
    media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if media_type != "application/json":
        raise ApiError(415, "the body must be JSON, sent as Content-Type: application/json")
    raw = await capped_body(request, MAX_BODY)
    if raw is None:
        raise ApiError(413, f"the body exceeds {MAX_BODY} bytes")
    try:
        data = json_body(raw) if raw.strip() else None
    except NestedTooDeep as exc:
        raise ApiError(400, f"the body is {exc}") from None
    except ValueError:
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the body must be a JSON object")
    return data


def _limit(request: Request, default: int) -> int:
    raw = request.query_params.get("limit")
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_LIMIT:
        raise ApiError(400, "invalid query", [f"'limit' must be a whole number from 1 to "
                                              f"{MAX_LIMIT}, not {raw!r}"])
    return value


def _offset(request: Request) -> int:
    raw = request.query_params.get("offset") or "0"
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_OFFSET:
        raise ApiError(400, "invalid query", [f"'offset' must be a whole number from 0 to "
                                              f"{MAX_OFFSET}, not {raw!r}"])
    return value


def _choice(body: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments of conflicts.choose from a resolve request's body."""
    problems = [f"unknown field '{k}'{spec.suggest(k, RESOLVE_FIELDS) or '; it takes value, pick, by'}"
                for k in body if k not in RESOLVE_FIELDS]
    if ("value" in body) == ("pick" in body):
        problems.append("give 'value' (the value to write everywhere) or 'pick' (the "
                        "participant whose value stands), one of them")
    for name in ("pick", "by"):
        given = body.get(name)
        if name in body and not (isinstance(given, str) and 1 <= len(given) <= MAX_NAME):
            problems.append(f"'{name}' must be a name of 1 to {MAX_NAME} characters")
    if _holds_nul(body):
        problems.append("values cannot hold NUL characters")
    if problems:
        raise ApiError(400, "invalid request", problems)
    return {"value": body.get("value"), "pick": body.get("pick"), "by": body.get("by") or "api"}


def _decision(body: Mapping[str, Any]) -> dict[str, Any]:
    """The arguments of reviews.decide from a decide request's body."""
    takes = "; it takes " + ", ".join(DECIDE_FIELDS)
    problems = [f"unknown field '{k}'{spec.suggest(k, DECIDE_FIELDS) or takes}"
                for k in body if k not in DECIDE_FIELDS]
    for name in ("left", "right"):
        given = body.get(name)
        if not (isinstance(given, str) and 1 <= len(given) <= MAX_KEY):
            problems.append(f"'{name}' must be a record key of 1 to {MAX_KEY} characters")
    if body.get("decision") not in DECIDED:
        problems.append(f"'decision' is one of {', '.join(DECIDED)}")
    given = body.get("by")
    if "by" in body and not (isinstance(given, str) and 1 <= len(given) <= MAX_NAME):
        problems.append(f"'by' must be a name of 1 to {MAX_NAME} characters")
    if _holds_nul(body):
        problems.append("values cannot hold NUL characters")
    if problems:
        raise ApiError(400, "invalid request", problems)
    return {"left": body["left"], "right": body["right"], "decision": body["decision"],
            "by": body.get("by") or "api"}


def _holds_nul(value: Any) -> bool:
    """Whether a JSON value holds a NUL character anywhere (a PostgreSQL engine state keeps
    none); json_body has bounded its nesting."""
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_holds_nul(k) or _holds_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    return False


def _ids(body: Mapping[str, Any]) -> list[int]:
    problems = [f"unknown field '{k}'; it takes ids" for k in body if k != "ids"]
    ids = body.get("ids")
    if (not isinstance(ids, list) or not ids
            or any(isinstance(i, bool) or not isinstance(i, int) or not 1 <= i <= MAX_ID
                   for i in ids)):
        problems.append(f"'ids' must be a non-empty list of delivery ids (whole numbers from 1 "
                        f"to {MAX_ID})")
    elif len(ids) > MAX_IDS:
        problems.append(f"at most {MAX_IDS} ids at once, not {len(ids)}")
    if problems:
        raise ApiError(400, "invalid request", problems)
    assert isinstance(ids, list)
    return list(dict.fromkeys(ids))


_NATIVE: dict[str, tuple[type, ...]] = {
    "string": (str,), "integer": (int,), "number": (int, float), "boolean": (bool,),
    "list": (list, str)}


def _json_params(integration: IntegrationSpec, given: Mapping[str, Any]) -> dict[str, Any]:
    """JSON values as resolve_parameters takes them: a value of its parameter's JSON type
    as is, any other scalar as text, for the parameter's own parsing (and its message)."""
    converted: dict[str, Any] = {}
    problems = []
    for name, value in given.items():
        declared = integration.parameters.get(name)
        if declared is None or value is None:
            converted[name] = value
        elif isinstance(value, (dict, list)) and declared.type != "list":
            problems.append(f"parameter '{name}': expected a {declared.type}, not a JSON "
                            f"{'object' if isinstance(value, dict) else 'array'}")
        elif isinstance(value, dict):
            problems.append(f"parameter '{name}': expected a list, not a JSON object")
        elif isinstance(value, _NATIVE.get(declared.type, ())) and not (
                isinstance(value, bool) and declared.type in ("integer", "number")):
            converted[name] = value
        elif isinstance(value, bool):
            converted[name] = "true" if value else "false"
        else:
            converted[name] = str(value)
    if problems:
        raise ParameterError(f"cannot start '{integration.name}'", problems)
    return converted


def _parameter(declared: ParameterSpec) -> dict[str, Any]:
    return {"type": declared.type, "required": declared.is_required,
            "default": jsonable(declared.default), "description": declared.description,
            "choices": None if declared.choices is None else [jsonable(c) for c in declared.choices]}


def _run_summary(record: RunRecord) -> dict[str, Any]:
    return {"run": record.id, "integration": record.integration, "pattern": record.pattern,
            "status": record.status, "counters": record.counters,
            "started_at": record.started_at, "finished_at": record.finished_at,
            "error": record.error, "url": f"/runs/{record.id}"}


def _letter(delivery: Delivery) -> dict[str, Any]:
    return {"id": delivery.id, "integration": delivery.integration,
            "destination": delivery.destination, "record_key": delivery.record_key,
            "version": delivery.version, "operation": delivery.operation,
            "status": DeliveryStatus(delivery.status).value, "attempts": delivery.attempts,
            "last_error": delivery.last_error, "created_at": delivery.created_at,
            "next_attempt_at": delivery.next_attempt_at, "delivered_at": delivery.delivered_at}


def _conflict(conflict: ConflictRecord) -> dict[str, Any]:
    return {**conflict.to_json(), "url": f"/conflicts/{conflict.id}"}
