"""The web console of `patchbay serve`, under /ui on the API's port: pages rendered on the
server (Jinja2, every value escaped), readable without JavaScript; a few lines of the
package's own JavaScript follow a running run.

Pages (NAV lists them; a page is a handler, a template, a route and a NAV entry):

    /ui/                     integrations: pattern, systems, schedule or trigger, last run,
                             next run, throughput, "run now" with its parameters
    /ui/runs, /ui/runs/{id}  runs; one run: counts, verdict, per-field differences and
                             checksums, samples, key ranges (--workers), set-aside records
                             (filtered, paged, CSV)
    /ui/broadcast            outboxes per destination, dead letters: show, replay, discard
    /ui/aggregation          each source's status of the last answer, report downloads
    /ui/sync                 conflicts held for a person, records waiting for a parent
    /ui/correlation          the review queue (a pair explained, accepted or rejected), the
                             audit ledger searched
    /ui/cluster              the processes sharing the engine state (`patchbay cluster`):
                             heartbeats, leases held, deliveries being written; every lease

Signing in: the API token (operator) or the viewer token (PATCHBAY_VIEWER_TOKEN: every page,
no action) is typed into a form; the session is a signed cookie (itsdangerous, through
Starlette's SessionMiddleware: HttpOnly, SameSite=Strict, path /ui) holding the role and a
CSRF token, never a token of the server. Its key is derived from the tokens, so changing a
token signs everyone out, and every `serve` sharing the tokens accepts the others' sessions.
Without an API token (loopback only) everyone is an operator. Every action is a POST form
carrying the session's CSRF token; a viewer's, or one without the token, is refused (403).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode

from jinja2 import Environment, PackageLoader
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from patchbay import spec
from patchbay.api.http import JSON, capped_body, refuse_nul
from patchbay.errors import (
    ApiError,
    ChoiceRefused,
    ConflictNotHeld,
    ConnectionFailed,
    ParameterError,
    PatchbayError,
    RunNotResumable,
    SpecError,
    UnknownConflict,
    UnknownPair,
)
from patchbay.model import given_params, jsonable
from patchbay.runtime import conflicts, reviews, runner
from patchbay.runtime.cluster import cluster_status
from patchbay.runtime.runner import Invocation
from patchbay.spec import (
    AggregationSpec,
    CorrelationSpec,
    IntegrationSpec,
    SyncSpec,
)
from patchbay.store import RunRecord
from patchbay.store.outbox import Backlog
from patchbay.store.runs import RunStatus

if TYPE_CHECKING:
    from patchbay.api.app import Api

log = logging.getLogger("patchbay.api")

ROOT = "/ui"
COOKIE = "patchbay_console"
SESSION_SECONDS = 12 * 3600
OPERATOR, VIEWER = "operator", "viewer"
MAX_FORM = 64 * 1024
"""The largest form body taken (a resolve's typed value is the largest field)."""
MAX_FIELDS = 2000
"""The most fields a form may carry (the dead letters' checkboxes)."""
PAGE_SIZE = 50
MAX_PAGE = 20_000
MAX_TEXT = 1000
"""The longest search text or key a query takes."""
HEADERS = {
    # Nothing but the package's own files: no inline script, nothing from elsewhere.
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; "
                               "base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Page:
    path: str
    label: str


NAV = [
    Page(f"{ROOT}/", "Integrations"),
    Page(f"{ROOT}/runs", "Runs"),
    Page(f"{ROOT}/broadcast", "Broadcast"),
    Page(f"{ROOT}/aggregation", "Aggregation"),
    Page(f"{ROOT}/sync", "Sync"),
    Page(f"{ROOT}/correlation", "Correlation"),
    Page(f"{ROOT}/cluster", "Cluster"),
]
"""The console's pages, in the navigation's order: a new page adds itself here."""


class ConsoleError(ApiError):
    """A request the console refuses: rendered as a page with its status (an API error, so
    the error tree holds it; its problems are a list, empty when there are none)."""

    problems: list[str]

    def __init__(self, status: int, message: str, problems: list[str] | None = None) -> None:
        super().__init__(status, message, problems or [])


Handler = Callable[[Request], Awaitable[Response]]


def session_key(token: str | None, viewer: str | None) -> str:
    """The key sessions are signed with: derived from the tokens (a new token, new sessions),
    or, without a token, random for this process."""
    if not token:
        return secrets.token_hex(32)
    return hmac.new(token.encode("utf-8"), b"patchbay console session\x00" + (viewer or "").encode("utf-8"),
                    hashlib.sha256).hexdigest()


def console_app(api: Api, token: str | None, viewer: str | None) -> Starlette:
    """The console, to be mounted at ROOT of the API's application."""
    console = Console(api, token, viewer)
    return Starlette(
        routes=console.routes(),
        middleware=[Middleware(SessionMiddleware, secret_key=session_key(token, viewer),
                               session_cookie=COOKIE, max_age=SESSION_SECONDS, path=ROOT,
                               same_site="strict")],
        exception_handlers={HTTPException: console.http_error, Exception: console.internal_error},
    )


class Console:
    def __init__(self, api: Api, token: str | None, viewer: str | None) -> None:
        self.api = api
        self._tokens = [(t.encode("utf-8"), role) for t, role in ((token, OPERATOR), (viewer, VIEWER)) if t]
        self.open = not token
        self.templates = Environment(loader=PackageLoader("patchbay.api", "templates"),
                                     autoescape=True,
                                     trim_blocks=True, lstrip_blocks=True)
        self.templates.filters.update(when=_when, age=_age, show=_show, seconds=_seconds)

    @property
    def integrations(self) -> list[IntegrationSpec]:
        return list(self.api.file.integrations)

    def of(self, kind: type[IntegrationSpec]) -> list[Any]:
        return [i for i in self.integrations if isinstance(i, kind)]

    def routes(self) -> list[BaseRoute]:
        def page(path: str, handler: Handler) -> Route:
            return Route(path, self._guarded(handler), methods=["GET"])

        def action(path: str, handler: Handler) -> Route:
            return Route(path, self._guarded(handler, action=True), methods=["POST"])

        return [
            Mount("/static", StaticFiles(packages=[("patchbay.api", "static")]), name="static"),
            Route("/signin", self._guarded(self.signin_form, public=True), methods=["GET"]),
            Route("/signin", self._guarded(self.signin, public=True), methods=["POST"]),
            Route("/signout", self._guarded(self.signout, public=True), methods=["POST"]),
            page("/", self.integrations_page),
            action("/integrations/{name:path}/run", self.run_now),
            page("/runs", self.runs_page),
            page("/runs/{run_id}", self.run_page),
            page("/runs/{run_id}/progress", self.run_progress),
            page("/runs/{run_id}/rejects.csv", self.rejects_csv),
            page("/broadcast", self.broadcast_page),
            page("/dead-letters/{delivery_id:int}", self.dead_letter_page),
            action("/dead-letters/replay", self.replay),
            action("/dead-letters/discard", self.discard),
            page("/aggregation", self.aggregation_page),
            page("/aggregation/{index:int}/reports/{report:int}", self.report_file),
            page("/sync", self.sync_page),
            action("/conflicts/{conflict_id:int}/resolve", self.resolve),
            page("/correlation", self.correlation_page),
            page("/correlation/pair", self.pair_page),
            action("/reviews/decide", self.decide),
            page("/cluster", self.cluster_page),
        ]

    # -- sessions, actions, answers -------------------------------------------------------------

    def _guarded(self, handler: Handler, *, action: bool = False, public: bool = False) -> Handler:
        """The handler behind the sign-in (pages), the operator's role and the CSRF token
        (actions); the errors it raises on purpose rendered as pages."""
        async def guarded(request: Request) -> Response:
            try:
                try:
                    refuse_nul(request)
                except ApiError as exc:
                    raise ConsoleError(400, exc.message) from None
                if self.open and request.session.get("role") != OPERATOR:
                    request.session.update(role=OPERATOR, csrf=secrets.token_urlsafe(32))
                if not public and request.session.get("role") not in (OPERATOR, VIEWER):
                    if action:
                        raise ConsoleError(403, "not signed in: sign in, then send the form again")
                    return RedirectResponse(f"{ROOT}/signin?" + urlencode({"next": _local(request)}), 303)
                if action:
                    form = await self.form(request)
                    self.check_action(request, form)
                    request.state.form = form
                return await handler(request)
            except ConsoleError as exc:
                return self.render(request, "error.html", exc.status, error=exc.message,
                                   problems=exc.problems)
            except ApiError as exc:
                return self.render(request, "error.html", exc.status, error=exc.message,
                                   problems=exc.problems or [])
            except SpecError as exc:
                return self.render(request, "error.html", 400, error=exc.message,
                                   problems=exc.problems)
            except ConnectionFailed as exc:
                return self.render(request, "error.html", 502, error=str(exc), problems=[])
            except PatchbayError as exc:
                return self.render(request, "error.html", 500, error=str(exc), problems=[])
        guarded.__name__ = handler.__name__
        return guarded

    def check_action(self, request: Request, form: Mapping[str, list[str]]) -> None:
        if request.session.get("role") != OPERATOR:
            raise ConsoleError(403, "signed in with the viewer token, which only reads: sign in "
                                    "with the operator token (the API token) to act")
        if not _same_csrf(request, form):
            raise ConsoleError(403, "the form's CSRF token is missing or is not this session's: "
                                    "open the page again and send the form from it")

    async def form(self, request: Request) -> dict[str, list[str]]:
        """A posted form's fields (application/x-www-form-urlencoded, capped while read)."""
        media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != "application/x-www-form-urlencoded":
            raise ConsoleError(415, "the console takes forms (application/x-www-form-urlencoded)")
        raw = await capped_body(request, MAX_FORM)
        if raw is None:
            raise ConsoleError(413, f"the form is larger than {MAX_FORM} bytes")
        try:
            fields = parse_qs(raw.decode("utf-8"), keep_blank_values=True, max_num_fields=MAX_FIELDS,
                              errors="strict")
        except (UnicodeDecodeError, ValueError):
            raise ConsoleError(400, f"the form is not UTF-8 form data of at most {MAX_FIELDS} "
                                    "fields") from None
        if any("\x00" in k or any("\x00" in v for v in vs) for k, vs in fields.items()):
            raise ConsoleError(400, "a form's fields cannot hold NUL characters")
        return fields

    def render(self, request: Request, template: str, status: int = 200, **context: Any) -> Response:
        session = request.session
        role = session.get("role")
        text = self.templates.get_template(template).render(
            root=ROOT, nav=NAV, here=request.url.path, role=role, operator=role == OPERATOR,
            open=self.open, csrf=session.get("csrf", ""), flash=session.pop("flash", None),
            **context)
        return HTMLResponse(self.api.redact.html(text), status, headers=HEADERS)

    def done(self, request: Request, message: str, to: str) -> Response:
        """After an action: its outcome said on the next page (Post/Redirect/Get)."""
        request.session["flash"] = message
        return RedirectResponse(to, 303)

    async def http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = {404: "no such page", 405: "this page does not take that method"}.get(
            exc.status_code, str(exc.detail))
        return self.render(request, "error.html", exc.status_code, error=message, problems=[])

    async def internal_error(self, request: Request, exc: Exception) -> Response:
        log.error("console %s %s failed: %s", request.method, request.url.path, type(exc).__name__)
        return self.render(request, "error.html", 500,
                           error="internal error; the server's log has the details", problems=[])

    # -- signing in -----------------------------------------------------------------------------

    async def signin_form(self, request: Request) -> Response:
        if "csrf" not in request.session:
            request.session["csrf"] = secrets.token_urlsafe(32)
        return self.render(request, "signin.html", next=_next(request.query_params.get("next")),
                           error=None)

    async def signin(self, request: Request) -> Response:
        form = await self.form(request)
        following = _next((form.get("next") or [""])[0])
        if not _same_csrf(request, form):
            raise ConsoleError(403, "the sign-in form's CSRF token is missing or is not this "
                                    "session's: open the sign-in page again")
        given = (form.get("token") or [""])[0].encode("utf-8")
        # Every token is compared, in constant time, whichever matches.
        matched = [role for token, role in self._tokens if hmac.compare_digest(given, token)]
        if not matched:
            return self.render(request, "signin.html", 401, next=following,
                               error="that token is neither the API token nor the viewer token")
        request.session.clear()
        request.session.update(role=matched[0], csrf=secrets.token_urlsafe(32),
                               flash=f"signed in as {matched[0]}")
        return RedirectResponse(following, 303)

    async def signout(self, request: Request) -> Response:
        if not _same_csrf(request, await self.form(request)):
            raise ConsoleError(403, "the form's CSRF token is missing or is not this session's")
        request.session.clear()
        return RedirectResponse(f"{ROOT}/signin", 303)

    # -- integrations and runs ------------------------------------------------------------------

    async def integrations_page(self, request: Request) -> Response:
        def gather() -> list[dict[str, Any]]:
            # every outbox's pending and dead at once, from the index of the rows waiting
            waiting: dict[str, list[Backlog]] = {}
            for backlog in self.api.store.outbox.backlog():
                waiting.setdefault(backlog.integration, []).append(backlog)
            return [self._integration(i, waiting.get(i.name, [])) for i in self.integrations]
        return self.render(request, "integrations.html", integrations=await run_in_threadpool(gather))

    def _integration(self, integration: IntegrationSpec, waiting: list[Backlog]) -> dict[str, Any]:
        latest = self.api.store.runs.latest(integration.name, 1)
        last = latest[0] if latest else None
        report = (last.report or {}) if last else {}
        described: dict[str, Any] = {
            "name": integration.name, "pattern": integration.pattern,
            "description": integration.description,
            "systems": sorted({name for name, _ in integration.systems_used()}),
            "when": _when_it_runs(integration), "next": None, "status": None,
            "last": last, "last_at": None, "verdict": report.get("verdict"), "throughput": None,
            "parameters": integration.parameters,
            "recorded": runner.records_runs(integration),
            "served": integration.name in self.api.runs.serving}
        if last is not None:
            described["status"] = last.status
            rate = report.get("records_per_second")
            described["throughput"] = f"{rate:g} records/s" if isinstance(rate, (int, float)) else None
        if isinstance(integration, AggregationSpec):
            answer = self.api.runs.last_answer(integration.name)
            if answer is not None:
                described["status"] = answer.get("status")
                described["last_at"] = answer["at"]
                seconds = answer.get("seconds")
                if isinstance(seconds, (int, float)) and seconds > 0:
                    described["throughput"] = f"{answer.get('rows', 0) / seconds:.1f} rows/s"
            if integration.schedule is not None:
                from patchbay.patterns.aggregation import next_run  # DuckDB: only when used

                described["next"] = next_run(integration.schedule)
        elif runner.keeps_outbox(integration):
            pending, dead = sum(b.pending for b in waiting), sum(b.dead for b in waiting)
            described["status"] = ("served here" if described["served"] else "not served here") \
                + f"; {pending} pending, {dead} dead"
            described["next"] = "continuously" if described["served"] else None
        return described

    async def run_now(self, request: Request) -> Response:
        name = request.path_params["name"]
        integration = next((i for i in self.integrations if i.name == name), None)
        if integration is None:
            raise ConsoleError(404, f"no integration '{name}'")
        form: dict[str, list[str]] = request.state.form
        given = {p: form[p][0] for p in integration.parameters if form.get(p, [""])[0] != ""}
        try:
            params = spec.resolve_parameters(integration, given)
        except ParameterError as exc:
            raise ConsoleError(400, exc.message, exc.problems) from None
        launched = await self.api.launch(Invocation(self.api.file, integration, params),
                                         full="full" in form, fresh="fresh" in form)
        if launched is None:
            raise ConsoleError(503, "busy: as many aggregations as this server computes at once "
                                    "are being computed; try again in a few seconds")
        if isinstance(launched, RunRecord):
            return self.done(request, f"run {launched.id} of '{name}' started",
                             f"{ROOT}/runs/{launched.id}")
        return self.render(request, "summary.html", name=name, summary=launched)

    async def runs_page(self, request: Request) -> Response:
        name = request.query_params.get("integration") or None
        records = await run_in_threadpool(self.api.store.runs.latest, name, 100)
        return self.render(request, "runs.html", runs=records, integration=name,
                           names=[i.name for i in self.integrations])

    async def _run(self, request: Request) -> RunRecord:
        run_id = request.path_params["run_id"]
        try:
            return await run_in_threadpool(self.api.store.runs.get, run_id)
        except RunNotResumable:
            raise ConsoleError(404, f"no run '{run_id}'") from None

    async def run_page(self, request: Request) -> Response:
        record = await self._run(request)
        query = request.query_params
        code = _text(query, "code")
        containing = _text(query, "q")
        number = _whole(query, "page", 1, MAX_PAGE)
        rows = await run_in_threadpool(lambda: self.api.store.outcomes.of(
            record.id, limit=PAGE_SIZE + 1, offset=(number - 1) * PAGE_SIZE, code=code,
            containing=containing))
        report = record.report or {}
        codes = sorted(report.get("set_aside_by_code") or {})
        link = f"{ROOT}/runs/{record.id}?"
        keep = {k: v for k, v in (("code", code), ("q", containing)) if v}
        return self.render(
            request, "run.html", run=record, report=report, running=record.status == RunStatus.RUNNING,
            params=given_params(record.params),
            rejects=rows[:PAGE_SIZE], codes=codes, code=code or "", q=containing or "",
            page=number, previous=link + urlencode({**keep, "page": number - 1}) if number > 1 else None,
            following=link + urlencode({**keep, "page": number + 1}) if len(rows) > PAGE_SIZE else None,
            csv_url=f"{ROOT}/runs/{record.id}/rejects.csv" if _rejects_file(report) else None)

    async def run_progress(self, request: Request) -> Response:
        """A run's progress, for the run page's script."""
        record = await self._run(request)
        return JSON({"status": record.status, "counters": record.counters, "batches": record.batches},
                    200, self.api.redact, HEADERS)

    async def rejects_csv(self, request: Request) -> Response:
        record = await self._run(request)
        path = _rejects_file(record.report or {})
        if path is None:
            raise ConsoleError(404, f"run {record.id} has no rejects file: it is written when "
                                    "the run finishes")
        lines = _lines(path)
        return StreamingResponse(map(self.api.redact.html, lines), media_type="text/csv; charset=utf-8",
                                 headers={**HEADERS, "Content-Disposition":
                                          f'attachment; filename="rejects-{record.id}.csv"'})

    # -- broadcast ------------------------------------------------------------------------------

    async def broadcast_page(self, request: Request) -> Response:
        def gather() -> list[dict[str, Any]]:
            now = dt.datetime.now(dt.UTC)
            found = []
            for integration in filter(runner.keeps_outbox, self.integrations):
                counts = self.api.store.outbox.counts(integration.name)
                ages = self.api.store.outbox.ages(integration.name)
                destinations = [{"name": name, **counts.get(name, {}), **ages.get(name, {})}
                                for name in sorted(set(counts) | set(ages))]
                for destination in destinations:
                    at = destination.get("oldest_pending_at")
                    destination["oldest_pending_age"] = (now - at).total_seconds() if at else None
                found.append({"name": integration.name, "pattern": integration.pattern,
                              "destinations": destinations,
                              "dead": self.api.store.outbox.dead_letters(integration.name, None, 200)})
            return found
        return self.render(request, "broadcast.html", integrations=await run_in_threadpool(gather))

    async def dead_letter_page(self, request: Request) -> Response:
        delivery_id = request.path_params["delivery_id"]
        found = await run_in_threadpool(self.api.store.outbox.get, delivery_id) \
            if delivery_id < 2 ** 63 else None
        if found is None:
            raise ConsoleError(404, f"no delivery {delivery_id}")
        return self.render(request, "dead_letter.html", letter=found,
                           payload=json.dumps(jsonable(found.payload), indent=2, ensure_ascii=False))

    def _ids(self, request: Request) -> list[int]:
        given = request.state.form.get("id", [])
        if not given:
            raise ConsoleError(400, "no dead letter chosen: tick at least one")
        if not all(i.isascii() and i.isdigit() and len(i) < 19 for i in given):
            raise ConsoleError(400, "a delivery id is a whole number")
        return list(dict.fromkeys(int(i) for i in given))

    async def replay(self, request: Request) -> Response:
        ids = self._ids(request)
        count = await run_in_threadpool(self.api.store.outbox.replay, ids)
        return self.done(request, f"{count} of {len(ids)} dead letters sent again",
                         f"{ROOT}/broadcast")

    async def discard(self, request: Request) -> Response:
        ids = self._ids(request)
        count = await run_in_threadpool(self.api.store.outbox.discard, ids)
        return self.done(request, f"{count} of {len(ids)} dead letters discarded",
                         f"{ROOT}/broadcast")

    # -- aggregation ----------------------------------------------------------------------------

    async def aggregation_page(self, request: Request) -> Response:
        found = []
        for index, integration in enumerate(self.integrations):
            if not isinstance(integration, AggregationSpec):
                continue
            files = []
            for number, report in enumerate(integration.reports):
                path = self._report_path(integration, number)
                files.append({"file": report.file, "number": number,
                              "exists": path is not None and path.is_file(),
                              "size": path.stat().st_size if path is not None and path.is_file() else None,
                              "by_parameters": path is None})
            found.append({"name": integration.name, "index": index, "stream": integration.stream is not None,
                          "last": self.api.runs.last_answer(integration.name), "reports": files})
        return self.render(request, "aggregation.html", integrations=found)

    def _report_path(self, integration: AggregationSpec, number: int) -> Path | None:
        """A declared report file's path; None for one named by the run's parameters (which
        file is a run's, not a page's, to say)."""
        file = integration.reports[number].file
        if "{" in file:
            return None
        base = Path(self.api.file.path).parent if self.api.file.path else Path.cwd()
        return base / file

    async def report_file(self, request: Request) -> Response:
        index, number = request.path_params["index"], request.path_params["report"]
        integration = self.integrations[index] if index < len(self.integrations) else None
        if not isinstance(integration, AggregationSpec) or number >= len(integration.reports):
            raise ConsoleError(404, "no such report")
        path = self._report_path(integration, number)
        if path is None or not path.is_file():
            raise ConsoleError(404, f"report {integration.reports[number].file!r} has not been "
                                    "written yet")
        binary = path.suffix.lower() in (".parquet", ".xlsx")
        content: Iterator[Any] = _chunks(path) if binary else map(self.api.redact.html, _lines(path))
        return StreamingResponse(content, media_type="application/octet-stream",
                                 headers={**HEADERS, "Content-Disposition":
                                          f'attachment; filename="{_ascii_name(path.name)}"'})

    # -- sync -----------------------------------------------------------------------------------

    async def sync_page(self, request: Request) -> Response:
        def gather() -> list[dict[str, Any]]:
            store = self.api.store
            return [{"name": i.name, "participants": [p.name for p in i.participants],
                     "held": store.conflicts.list(i.name, "held", 100, 0),
                     "recent": [c for c in store.conflicts.list(i.name, None, 20, 0)
                                if c.status != "held"],
                     "waiting": store.xref.waiting_list(i.name, 100),
                     "waiting_count": store.xref.waiting_count(i.name)}
                    for i in self.of(SyncSpec)]
        return self.render(request, "sync.html", syncs=await run_in_threadpool(gather))

    async def resolve(self, request: Request) -> Response:
        conflict_id = request.path_params["conflict_id"]
        form = request.state.form
        choice = (form.get("choice") or [""])[0]
        pick, value = None, None
        if choice.startswith("pick:"):
            pick = choice.removeprefix("pick:")
        elif choice == "value":
            value = conflicts.value_of((form.get("value") or [""])[0])
        else:
            raise ConsoleError(400, "choose a participant's value, or type another")
        by = f"console ({request.session.get('role')})"
        try:
            chosen = await run_in_threadpool(lambda: conflicts.choose(
                self.api.store, conflict_id, value=value, pick=pick, by=by))
        except UnknownConflict as exc:
            raise ConsoleError(404, exc.message) from None
        except ConflictNotHeld as exc:
            raise ConsoleError(409, exc.message) from None
        except ChoiceRefused as exc:
            raise ConsoleError(400, exc.message) from None
        return self.done(request, f"conflict {chosen.id} chosen: {conflicts.APPLIED_LATER}",
                         f"{ROOT}/sync")

    # -- correlation ----------------------------------------------------------------------------

    async def correlation_page(self, request: Request) -> Response:
        query = request.query_params
        names = [i.name for i in self.of(CorrelationSpec)]
        searched = query.get("integration") or None
        if searched is not None and searched not in names:
            raise ConsoleError(404, f"no correlation '{searched}'{spec.suggest(searched, names)}")
        try:
            since = reviews.since_of(_text(query, "since"))
        except SpecError as exc:
            raise ConsoleError(400, exc.message) from None
        key, field = _text(query, "key"), _text(query, "field")

        def gather() -> dict[str, Any]:
            store = self.api.store
            queues = [{"name": n, "counts": store.pairs.counts(n),
                       "review": store.pairs.list(n, "review", 100, 0)} for n in names]
            ledger = store.pairs.ledger(searched, key=key, field=field, since=since, limit=200) \
                if searched is not None else None
            return {"queues": queues, "ledger": ledger}
        return self.render(request, "correlation.html", names=names, searched=searched or "",
                           key=key or "", field=field or "", since=query.get("since") or "",
                           **await run_in_threadpool(gather))

    async def pair_page(self, request: Request) -> Response:
        query = request.query_params
        name, left, right = _text(query, "integration"), _text(query, "left"), _text(query, "right")
        integration = next((i for i in self.of(CorrelationSpec) if i.name == name), None)
        if integration is None or left is None or right is None:
            raise ConsoleError(404, "name a correlation and a pair: ?integration=&left=&right=")
        try:
            pair = await run_in_threadpool(reviews.find, self.api.store, integration.name, left, right)
        except UnknownPair as exc:
            raise ConsoleError(404, exc.message) from None
        explanation, unexplained = None, None
        ctx = Invocation(self.api.file, integration, {}).context(self.api.store, self.api.runs.reports_dir)
        try:
            explanation = (await run_in_threadpool(reviews.explain, ctx, left, right)).to_json()
        except (SpecError, ConnectionFailed) as exc:  # a record gone, a system down
            unexplained = str(exc)
        return self.render(request, "pair.html", name=integration.name, pair=pair,
                           explanation=explanation, unexplained=unexplained)

    async def decide(self, request: Request) -> Response:
        form = request.state.form
        name, left, right, decision = ((form.get(f) or [""])[0]
                                       for f in ("integration", "left", "right", "decision"))
        if name not in [i.name for i in self.of(CorrelationSpec)]:
            raise ConsoleError(404, f"no correlation '{name}'")
        by = f"console ({request.session.get('role')})"
        try:
            pair = await run_in_threadpool(
                lambda: reviews.decide(self.api.store, name, left, right, decision, by))
        except UnknownPair as exc:
            raise ConsoleError(404, exc.message) from None
        except ChoiceRefused as exc:
            raise ConsoleError(400, exc.message) from None
        return self.done(request, f"pair {pair.left} / {pair.right} {pair.status}: "
                                  f"{reviews.APPLIED_LATER}", f"{ROOT}/correlation")

    # -- cluster --------------------------------------------------------------------------------

    async def cluster_page(self, request: Request) -> Response:
        status = await run_in_threadpool(cluster_status, self.api.store)
        # cluster_status speaks JSON (ISO times); the page shows times as every page does.
        for process in status["processes"]:
            process["started_at"] = dt.datetime.fromisoformat(process["started_at"])
        for lease in status["leases"]:
            lease["expires_at"] = dt.datetime.fromisoformat(lease["expires_at"])
        return self.render(request, "cluster.html", **status)


# -- helpers ------------------------------------------------------------------------------------


def _local(request: Request) -> str:
    query = request.url.query
    return request.url.path + (f"?{query}" if query else "")


def _same_csrf(request: Request, form: Mapping[str, list[str]]) -> bool:
    """Whether the form carries its session's CSRF token (a session without one has none
    to match: an empty field does not)."""
    sent = (form.get("csrf") or [""])[0].encode("utf-8")
    expected = str(request.session.get("csrf", "")).encode("utf-8")
    return bool(expected) and hmac.compare_digest(sent, expected)


def _next(target: str | None) -> str:
    """Where to go after signing in: a console page only (never another site)."""
    if target and target.startswith(f"{ROOT}/") and not target.startswith("//") and "\\" not in target:
        return target
    return f"{ROOT}/"


def _text(query: Mapping[str, str], name: str) -> str | None:
    value = query.get(name) or None
    if value is not None and len(value) > MAX_TEXT:
        raise ConsoleError(400, f"'{name}' is longer than {MAX_TEXT} characters")
    return value


def _whole(query: Mapping[str, str], name: str, low: int, high: int) -> int:
    raw = query.get(name) or str(low)
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9 and low <= int(raw) <= high):
        raise ConsoleError(400, f"'{name}' is a whole number from {low} to {high}, not {raw!r}")
    return int(raw)


def _rejects_file(report: Mapping[str, Any]) -> Path | None:
    path = (report.get("files") or {}).get("rejects")
    return Path(path) if isinstance(path, str) and Path(path).is_file() else None


def _lines(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8", newline="") as handle:
        yield from handle


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(64 * 1024):
            yield chunk


def _ascii_name(name: str) -> str:
    return "".join(c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in name)


def _when_it_runs(integration: IntegrationSpec) -> str:
    if isinstance(integration, AggregationSpec):
        schedule = integration.schedule
        if integration.stream is not None:
            return "continuously, from a stream"
        if schedule is None:
            return "on demand"
        if schedule.every_seconds is not None:
            return f"every {schedule.every_seconds:g} s"
        if schedule.daily_at is not None:
            return "daily at " + ", ".join(schedule.daily_at) + " UTC"
        return f"cron {schedule.cron} (UTC)"
    trigger = getattr(integration, "trigger", None)
    if trigger is None:
        return "on demand"
    said = "capture (CDC)" if trigger.changes == "cdc" else (
        f"cron {trigger.cron}" if trigger.cron else f"polled every {trigger.poll_seconds:g} s")
    pushes = [name for name, on in (("webhook", trigger.webhook),
                                    ("Outbound Messages", trigger.outbound_messages)) if on]
    return said + ("; " + ", ".join(pushes) if pushes else "")


def _when(value: Any) -> str:
    if not isinstance(value, dt.datetime):
        return "" if value is None else str(value)
    aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
    return aware.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def _seconds(value: Any) -> str:
    return "—" if value is None else f"{value:.3f} s"


def _show(value: Any) -> str:
    """A value of the data as text: strings as they are, anything else as JSON."""
    if value is None:
        return "null"
    if isinstance(value, str):
        return value
    return json.dumps(jsonable(value), ensure_ascii=False)

