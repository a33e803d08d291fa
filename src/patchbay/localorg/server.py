"""The local org's HTTP face: Salesforce's REST paths, SOAP login, OAuth token endpoint,
the CometD streaming endpoint (`streaming.py`) and the control API under `/_emulator/`
(which also stands in for the SOAP calls REST lacks: undelete).

Requests under `/services/data` are dispatched on the raw path, split into segments and
each one percent-decoded, because an external id may hold an encoded `/`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import json
import re
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, unquote, unquote_plus
from xml.etree import ElementTree
from xml.sax.saxutils import escape

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from patchbay import sfid
from patchbay.localorg import bulk, query, streaming
from patchbay.localorg.org import ORG_ID, MultipleMatches, Org, OrgError, Session, same_secret
from patchbay.localorg.storage import create_tables
from patchbay.localorg.values import parse_datetime, stored_datetime

# Every version Salesforce still serves: 31.0 (Summer '14) to 62.0 (Winter '25).
VERSIONS = [f"{major}.0" for major in range(31, 63)]
COLLECTION_LIMIT = 200

Handler = Callable[["Call"], Awaitable[Response]]


class Call:
    """One authenticated REST call: the org, the session, the version and the segments."""

    def __init__(self, org: Org, request: Request, session: Session, version: str,
                 segments: list[str], raw_segments: list[str]) -> None:
        self.org, self.request, self.session = org, request, session
        self.version, self.segments, self.raw_segments = version, segments, raw_segments

    @property
    def method(self) -> str:
        return self.request.method

    def query(self, name: str) -> str | None:
        values = parse_qs(self.request.url.query, keep_blank_values=True).get(name)
        return values[0] if values else None

    async def json(self) -> Any:
        body = await self.request.body()
        if not body.strip():
            return {}
        try:
            return json.loads(body)
        except ValueError as exc:
            raise OrgError(400, "JSON_PARSER_ERROR", f"Unexpected character: {exc}") from None

    def url(self, obj_name: str, record_id: str) -> str:
        return f"/services/data/v{self.version}/sobjects/{obj_name}/{record_id}"


def create_app(org: Org | None = None) -> Starlette:
    """The ASGI application of a local org (a new in-memory org unless one is given)."""
    org = org or Org()

    async def versions(request: Request) -> Response:
        return JSONResponse([{"label": _release(v), "url": f"/services/data/v{v}",
                              "version": v} for v in VERSIONS])

    async def data(request: Request) -> Response:
        raw_path = request.scope.get("raw_path", request.url.path.encode()).decode("latin-1")
        raw_path = raw_path.split("?", 1)[0]
        raw = [s for s in raw_path.removeprefix("/services/data/").split("/") if s]
        if not raw or not raw[0].startswith("v") or raw[0][1:] not in VERSIONS:
            return _errors(OrgError(404, "NOT_FOUND", "The requested resource does not exist"))
        version = raw[0][1:]
        try:
            session = org.session(_token(request))
            org.count_request()
        except OrgError as exc:
            return _errors(exc, org if exc.code == "REQUEST_LIMIT_EXCEEDED" else None)
        call = Call(org, request, session, version, [unquote(s) for s in raw[1:]], raw[1:])
        try:
            response = await _dispatch(call)
        except MultipleMatches as exc:
            response = JSONResponse([call.url(exc.obj.name, i) for i in exc.record_ids],
                                    status_code=300)
        except OrgError as exc:
            response = _errors(exc)
        response.headers["Sforce-Limit-Info"] = \
            f"api-usage={org.limits.used}/{org.limits.max_requests}"
        return response

    async def soap_login(request: Request) -> Response:
        try:
            root = ElementTree.fromstring(await request.body())
        except ElementTree.ParseError:
            return _soap_fault("INVALID_LOGIN", "Invalid request")
        username = _xml_text(root, "username")
        password = _xml_text(root, "password")
        try:
            session = org.login(username or "", password or "")
        except OrgError as exc:
            return _soap_fault(exc.code, exc.message)
        version = request.path_params["version"]
        return Response(_soap_login_body(org, session, version, username or ""),
                        media_type="text/xml")

    async def oauth_token(request: Request) -> Response:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode(errors="replace")).items()}
        grant = form.get("grant_type")
        client_id, client_secret = form.get("client_id"), form.get("client_secret")
        try:
            basic = _basic_credentials(request)
            if basic is not None:
                client_id, client_secret = basic
            if grant == "password":
                if not org.app_accepts(client_id or "", client_secret or ""):
                    raise OrgError(400, "invalid_client", "invalid client credentials")
                try:
                    session = org.login(form.get("username", ""), form.get("password", ""))
                except OrgError:
                    raise OrgError(400, "invalid_grant", "authentication failure") from None
            elif grant == "client_credentials":
                session = org.client_credentials(client_id or "", client_secret or "")
            else:
                raise OrgError(400, "unsupported_grant_type", "grant type not supported")
        except OrgError as exc:
            return JSONResponse({"error": exc.code, "error_description": exc.message},
                                status_code=400)
        issued = str(int(org.clock.now().timestamp() * 1000))
        identity = f"{org.config.public_url}/id/{ORG_ID}/{session.user_id}"
        signature = base64.b64encode(hmac.new((client_secret or "").encode(),
                                              (identity + issued).encode(),
                                              hashlib.sha256).digest()).decode()
        return JSONResponse({"access_token": session.token, "instance_url": org.config.public_url,
                             "id": identity, "token_type": "Bearer", "issued_at": issued,
                             "signature": signature, "scope": "api"})

    async def control(request: Request) -> Response:
        action = request.path_params["action"]
        try:
            payload = _control_payload(await request.body())
            return _control(org, action, payload)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            # A malformed control document (a wrong type, a missing name) is the caller's error.
            return JSONResponse({"error": f"malformed {action} request: {exc}"}, status_code=400)

    async def identity(request: Request) -> Response:
        """The identity URL an OAuth answer names (`id`): who the session's user is."""
        try:
            session = org.session(_token(request))
        except OrgError:
            return JSONResponse({"error": "Bad_OAuth_Token"}, status_code=401)
        # (emu) An identity URL of another user or org is refused as Salesforce refuses a
        # token that does not belong to it.
        if sfid.to18(request.path_params["org_id"]) != ORG_ID or \
                sfid.to18(request.path_params["user_id"]) != session.user_id:
            return JSONResponse({"error": "Bad_Id"}, status_code=403)
        return JSONResponse(_identity(org, session))

    async def userinfo(request: Request) -> Response:
        """OpenID Connect user info of the session's user."""
        try:
            session = org.session(_token(request))
        except OrgError:
            return JSONResponse({"error": "invalid_token", "error_description":
                                 "Session expired or invalid"}, status_code=401)
        return JSONResponse(_userinfo(org, session))

    methods = ["GET", "POST", "PATCH", "PUT", "DELETE", "HEAD"]
    routes = [
        Route("/services/data", versions, methods=["GET"]),
        Route("/services/data/", versions, methods=["GET"]),
        Route("/services/data/{rest:path}", data, methods=methods),
        Route("/services/Soap/u/{version}", soap_login, methods=["POST"]),
        Route("/services/Soap/u/{version}/", soap_login, methods=["POST"]),
        Route("/services/oauth2/token", oauth_token, methods=["POST"]),
        Route("/services/oauth2/userinfo", userinfo, methods=["GET", "POST"]),
        Route("/id/{org_id}/{user_id}", identity, methods=["GET", "POST"]),
        *streaming.Streaming(org).routes(),
        Route("/_emulator/{action:path}", control, methods=["POST"]),
    ]
    app = Starlette(routes=routes, middleware=[
        Middleware(SingleSlashes), Middleware(ControlGuard, token=org.config.control_token)])
    app.state.org = org
    return app


class SingleSlashes:
    """Reads `//services/data` as `/services/data`, as Salesforce does: clients that join an
    instance URL ending in `/` with an absolute path (the Salesforce CLI) send such paths."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and "//" in scope["path"]:
            scope = {**scope, "path": re.sub("/{2,}", "/", scope["path"])}
            if "raw_path" in scope:
                scope["raw_path"] = re.sub(b"/{2,}", b"/", scope["raw_path"])
        await self.app(scope, receive, send)


class ControlGuard:
    """Lets a request under /_emulator/ (the control API, the change list) through only with
    `Authorization: Bearer <control token>`: the org's test controls must not be open to
    whoever can reach its port."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/_emulator/"):
            given = _token(Request(scope)) or ""
            if not same_secret(given, self.token):
                response = JSONResponse({"error": "the control API needs the org's control "
                                                  "token as a Bearer token"}, status_code=401)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _control_payload(body: bytes) -> dict[str, Any]:
    payload = json.loads(body) if body.strip() else {}
    if not isinstance(payload, dict):
        raise ValueError("the body must be a JSON object")
    return payload


def _control(org: Org, action: str, payload: dict[str, Any]) -> Response:
    """One control action; raises ValueError, TypeError, KeyError or AttributeError on a
    malformed payload."""
    if action == "reset":
        org.reset()
    elif action == "schema":
        org.schema.extend(payload)
        with org.storage.lock:
            create_tables(org.storage.db, org.schema)
    elif action == "clock":
        if payload.get("real"):
            org.clock.real()
        elif "now" in payload:
            when = parse_datetime(str(payload["now"]))
            if when is None:
                raise ValueError("now must be an ISO datetime")
            org.clock.set(when)
        else:
            org.clock.advance(float(payload.get("advance_seconds", 0)))
    elif action == "sessions/expire":
        org.expire_sessions()
    elif action == "limits":
        daily = payload.get("DailyApiRequests", {})
        org.limits.max_requests = int(daily.get("Max", org.limits.max_requests))
        org.limits.used = int(daily.get("used", org.limits.used))
    elif action == "seed":
        records = payload.get("records", {})
        if not isinstance(records, dict):
            raise ValueError("records must map object names to lists of records")
        try:
            created = org.seed(records)
        except OrgError as exc:
            return JSONResponse([exc.body()], status_code=exc.status)
        return JSONResponse({"ok": True, "ids": created})
    elif action == "undelete":
        return JSONResponse(_undelete(org, payload["ids"]))
    else:
        return JSONResponse({"error": f"unknown control action {action}"}, status_code=404)
    return JSONResponse({"ok": True, "now": stored_datetime(org.clock.now())})


def _undelete(org: Org, record_ids: Any) -> list[dict[str, Any]]:
    """The SOAP undelete call, which REST lacks: one transaction, one result per id in order
    (`{"id", "success", "errors"}` as sObject Collections answer), a refused id failing
    alone."""
    if not isinstance(record_ids, list) or not all(isinstance(i, str) for i in record_ids):
        raise ValueError("ids must be a list of record ids")
    if len(record_ids) > COLLECTION_LIMIT:
        raise ValueError(f"at most {COLLECTION_LIMIT} ids per call")
    results: list[dict[str, Any]] = []
    with org.storage.transaction():
        for raw in record_ids:
            record_id = sfid.to18(raw)
            try:
                with org.storage.transaction():
                    # A malformed id (record_id None) is refused by _object_of_id.
                    org.undelete(_object_of_id(org, raw), record_id or raw)
                results.append({"id": record_id, "success": True, "errors": []})
            except OrgError as exc:
                results.append({"id": record_id, "success": False, "errors": [_status(exc)]})
    return results


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    """Client id and secret from an `Authorization: Basic` header; OrgError when it is malformed."""
    header = request.headers.get("authorization", "")
    if not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (ValueError, UnicodeDecodeError):
        raise OrgError(400, "invalid_client", "malformed Basic authorization header") from None
    client_id, colon, client_secret = decoded.partition(":")
    if not colon:
        raise OrgError(400, "invalid_client", "malformed Basic authorization header")
    return client_id, client_secret


def _release(version: str) -> str:
    """The release that brought an API version: three a year, 62.0 is Winter '25."""
    steps = int(float(version)) - 62
    return f"{('Winter', 'Spring', 'Summer')[steps % 3]} '{25 + steps // 3:02d}"


async def _dispatch(call: Call) -> Response:
    head = call.segments[0].lower() if call.segments else ""
    rest = call.segments[1:]
    if not call.segments:
        base = f"/services/data/v{call.version}"
        return JSONResponse({name: f"{base}/{name}" for name in
                             ("sobjects", "query", "queryAll", "composite", "limits", "jobs")})
    if head == "sobjects":
        return await _sobjects(call, rest)
    if head in ("query", "queryall"):
        return await query.handle(call, include_deleted=head == "queryall", rest=rest)
    if head == "composite" and rest and rest[0].lower() == "sobjects":
        return await _collections(call, rest[1:])
    if head == "limits":
        return _limits(call.org)
    if head == "jobs":
        return await bulk.handle(call, rest)
    raise OrgError(404, "NOT_FOUND", "The requested resource does not exist")


async def _sobjects(call: Call, rest: list[str]) -> Response:
    org = call.org
    if not rest:
        return JSONResponse({"encoding": "UTF-8", "maxBatchSize": 200,
                             "sobjects": [o.entry(call.version) for o in org.schema]})
    obj = org.sobject(rest[0])
    if len(rest) == 1:
        if call.method == "POST":
            record_id = org.create(obj, await call.json(), call.session)
            return JSONResponse({"id": record_id, "success": True, "errors": []}, status_code=201)
        return JSONResponse({"objectDescribe": obj.entry(call.version), "recentItems": []})
    second = rest[1]
    if len(rest) == 2 and second.lower() == "describe":
        return JSONResponse(obj.describe(call.version, org.schema.children_of(obj)))
    if len(rest) == 2 and second.lower() in ("updated", "deleted"):
        return _replication(call, obj, second.lower())
    if len(rest) == 2:
        found = org.record_id(obj, second)
        if found is None:
            if call.method == "POST" and second.lower() == "id":
                created = org.create(obj, await call.json(), call.session)
                return JSONResponse({"id": created, "success": True, "errors": []}, status_code=201)
            raise OrgError(404, "NOT_FOUND", "Provided external ID field does not exist or is "
                                             f"not accessible: {second}")
        if call.method == "GET":
            fields = call.query("fields")
            return JSONResponse(org.read(obj, found, fields.split(",") if fields else None,
                                         call.version))
        if call.method == "PATCH":
            org.update(obj, found, await call.json(), call.session)
            return Response(status_code=204)
        if call.method == "DELETE":
            org.delete(obj, found, session=call.session)
            return Response(status_code=204)
        raise OrgError(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{call.method}' not allowed.")
    if len(rest) == 3:
        key = org.external_id_field(obj, second)
        value = rest[2]
        if call.method == "GET":
            matches = org.matches(obj, key, value) if key.name != "Id" else \
                [i for i in [org.record_id(obj, value)] if i]
            if not matches and "+" in call.raw_segments[3]:
                matches = org.matches(obj, key, unquote_plus(call.raw_segments[3]))
            if not matches:
                raise OrgError(404, "NOT_FOUND", "The requested resource does not exist")
            if len(matches) > 1:
                raise MultipleMatches(obj, matches)
            return JSONResponse(org.read(obj, matches[0], None, call.version))
        if call.method == "PATCH":
            upserted, was_created = org.upsert(obj, second, value, await call.json(), call.session)
            return JSONResponse({"id": upserted, "success": True, "errors": [],
                                 "created": was_created}, status_code=201 if was_created else 200)
        if call.method == "DELETE":
            matches = org.matches(obj, key, value)
            if len(matches) != 1:
                raise OrgError(404, "NOT_FOUND", "The requested resource does not exist")
            org.delete(obj, matches[0], session=call.session)
            return Response(status_code=204)
    raise OrgError(404, "NOT_FOUND", "The requested resource does not exist")


def _replication(call: Call, obj: Any, kind: str) -> Response:
    start_text, end_text = call.query("start"), call.query("end")
    start = parse_datetime(start_text or "")
    end = parse_datetime(end_text or "")
    if start is None or end is None:
        raise OrgError(400, "INVALID_REPLICATION_DATE", "start and end must be datetimes")
    start, end = start.replace(second=0, microsecond=0), end.replace(second=0, microsecond=0)
    if end - start <= dt.timedelta(minutes=1) and end != start + dt.timedelta(minutes=1):
        raise OrgError(400, "INVALID_REPLICATION_DATE", "start must be before end")
    latest = stored_datetime(end)[:-1] + "+0000"
    window = (stored_datetime(start), stored_datetime(end))
    storage = call.org.storage
    if kind == "updated":
        changed = {i for i, _ in storage.changes(obj, "created,updated,undeleted", *window)}
        gone = {i for i, _ in storage.deletions(obj, stored_datetime(start),
                                                "9999-12-31T00:00:00.000Z")}
        return JSONResponse({"ids": sorted(changed - gone), "latestDateCovered": latest})
    # An undeleted record is no longer deleted: getDeleted leaves it out.
    deleted = storage.deletions(obj, *window)
    earliest = storage.deletions(obj, "0000", "9999")
    return JSONResponse({
        "deletedRecords": [{"id": i, "deletedDate": at[:-1] + "+0000"} for i, at in deleted],
        "earliestDateAvailable": (earliest[0][1][:-1] + "+0000") if earliest else latest,
        "latestDateCovered": latest})


async def _collections(call: Call, rest: list[str]) -> Response:
    """sObject Collections: up to 200 records per call, one result per record, in order."""
    org = call.org
    method = call.method
    if method == "DELETE":
        record_ids = (call.query("ids") or "").split(",")
        all_or_none = (call.query("allOrNone") or "false").lower() == "true"
        records: list[Any] = record_ids
    elif rest and method in ("GET", "POST") and len(rest) == 1:
        return await _retrieve(call, org.sobject(rest[0]))
    else:
        body = await call.json()
        records = body.get("records", [])
        all_or_none = bool(body.get("allOrNone", False))
    if len(records) > COLLECTION_LIMIT:
        raise OrgError(400, "EXCEEDED_ID_LIMIT", "record limit reached. cannot submit more than "
                                                 "200 records into this call")
    key_field = org.external_id_field(org.sobject(rest[0]), rest[1]) if len(rest) == 2 else None
    results: list[dict[str, Any]] = []
    try:
        with org.storage.transaction():
            for item in records:
                try:
                    with org.storage.transaction():
                        results.append(_collection_item(call, method, item, rest, key_field))
                except OrgError as exc:
                    results.append({"id": item if isinstance(item, str) else None,
                                    "success": False, "errors": [_status(exc)]})
            if all_or_none and not all(r["success"] for r in results):
                raise _RolledBack
    except _RolledBack:
        rolled_back = {"statusCode": "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                       "message": "Record rolled back because not all records were valid and "
                                  "the request was using AllOrNone header", "fields": []}
        results = [r if not r["success"] else {"id": None, "success": False,
                                                "errors": [rolled_back]} for r in results]
    return JSONResponse(results)


class _RolledBack(Exception):
    """allOrNone: undo the whole collection call."""


def _collection_item(call: Call, method: str, item: Any, rest: list[str],
                     key_field: Any) -> dict[str, Any]:
    org = call.org
    if method == "DELETE":
        found = _object_of_id(org, item)
        org.delete(found, sfid.to18(item) or item, session=call.session)
        return {"id": sfid.to18(item), "success": True, "errors": []}
    if not isinstance(item, dict):
        raise OrgError(400, "JSON_PARSER_ERROR", "each record must be an object")
    body = {k: v for k, v in item.items() if k not in ("attributes", "id", "Id")}
    if key_field is not None:
        obj = org.sobject(rest[0])
        value = item.get(key_field.name) if key_field.name != "Id" else item.get("Id")
        if value is None:
            raise OrgError(400, "REQUIRED_FIELD_MISSING", f"{key_field.name} is required for an "
                                                          "upsert by it", [key_field.name])
        value = str(value)
        body = {k: v for k, v in body.items() if k.lower() != key_field.name.lower()}
        record_id, created = org.upsert(obj, key_field.name, value, body, call.session)
        return {"id": record_id, "success": True, "errors": [], "created": created}
    type_name = (item.get("attributes") or {}).get("type")
    if method == "POST":
        if not type_name:
            raise OrgError(400, "INVALID_TYPE", "Must specify a type in the attributes")
        return {"id": org.create(org.sobject(type_name), body, call.session), "success": True,
                "errors": []}
    given = str(item.get("id") or item.get("Id"))
    obj = org.sobject(type_name) if type_name else _object_of_id(org, given)
    normalised = org.record_id(obj, given)
    if normalised is None:
        raise OrgError(400, "MALFORMED_ID", f"malformed id {given}")
    org.update(obj, normalised, body, call.session)
    return {"id": normalised, "success": True, "errors": []}


def _object_of_id(org: Org, raw: str) -> Any:
    value = sfid.to18(raw)
    obj = org.schema.by_prefix(value[:3]) if value else None
    if obj is None:
        raise OrgError(400, "MALFORMED_ID", f"malformed id {raw}")
    return obj


async def _retrieve(call: Call, obj: Any) -> Response:
    if call.method == "POST":
        body = await call.json()
        wanted, fields = body.get("ids", []), body.get("fields", [])
    else:
        wanted = (call.query("ids") or "").split(",")
        fields = (call.query("fields") or "Id").split(",")
    records: list[Any] = []
    for raw in wanted:
        record_id = call.org.record_id(obj, raw)
        try:
            records.append(call.org.read(obj, record_id, fields, call.version)
                           if record_id else None)
        except OrgError as exc:
            if exc.code == "INVALID_FIELD":
                raise
            records.append(None)
    return JSONResponse(records)


def _status(exc: OrgError) -> dict[str, Any]:
    return {"statusCode": exc.code, "message": exc.message, "fields": exc.fields or []}


def _identity(org: Org, session: Session) -> dict[str, Any]:
    user = org.read(org.sobject("User"), session.user_id)
    base = org.config.public_url
    return {
        "id": f"{base}/id/{ORG_ID}/{session.user_id}", "asserted_user": True,
        "user_id": session.user_id, "organization_id": ORG_ID, "username": user["Username"],
        "nick_name": user["Alias"], "display_name": user["Name"], "email": user["Email"],
        "email_verified": True, "first_name": user["FirstName"], "last_name": user["LastName"],
        "timezone": "GMT", "active": user["IsActive"], "user_type": "STANDARD",
        "language": "en_US", "locale": "en_US", "utcOffset": 0,
        "last_modified_date": user["LastModifiedDate"], "is_app_installed": True,
        "urls": _service_urls(base), "photos": {}, "status": {"created_date": None, "body": None},
        "addr_street": None, "addr_city": None, "addr_state": None, "addr_country": None,
        "addr_zip": None, "mobile_phone": None, "mobile_phone_verified": False,
    }


def _userinfo(org: Org, session: Session) -> dict[str, Any]:
    who = _identity(org, session)
    return {
        "sub": who["id"], "user_id": who["user_id"], "organization_id": ORG_ID,
        "preferred_username": who["username"], "nickname": who["nick_name"],
        "name": who["display_name"], "email": who["email"], "email_verified": True,
        "given_name": who["first_name"], "family_name": who["last_name"], "zoneinfo": "GMT",
        "photos": {}, "profile": f"{org.config.public_url}/{session.user_id}", "picture": None,
        "address": {}, "urls": who["urls"], "active": who["active"], "user_type": "STANDARD",
        "language": "en_US", "locale": "en_US", "utcOffset": 0,
        "updated_at": who["last_modified_date"], "is_app_installed": True,
    }


def _service_urls(base: str) -> dict[str, str]:
    """The identity answer's `urls`, with `{version}` left for the client to fill in."""
    data = f"{base}/services/data/v{{version}}"
    return {"enterprise": f"{base}/services/Soap/c/{{version}}/{ORG_ID[:15]}",
            "partner": f"{base}/services/Soap/u/{{version}}/{ORG_ID[:15]}",
            "metadata": f"{base}/services/Soap/m/{{version}}/{ORG_ID[:15]}",
            "rest": f"{data}/", "sobjects": f"{data}/sobjects/", "search": f"{data}/search/",
            "query": f"{data}/query/", "recent": f"{data}/recent/"}


def _limits(org: Org) -> Response:
    remaining = max(org.limits.max_requests - org.limits.used, 0)
    big = {"Max": 1_000_000, "Remaining": 1_000_000}
    return JSONResponse({
        "DailyApiRequests": {"Max": org.limits.max_requests, "Remaining": remaining},
        "DailyBulkApiBatches": {"Max": 15000, "Remaining": 15000},
        "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000},
        "DailyBulkV2QueryFileStorageMB": {"Max": 976562, "Remaining": 976562},
        "DataStorageMB": {"Max": 1024, "Remaining": 1024}, "FileStorageMB": big,
        "DailyStreamingApiEvents": {"Max": 1_000_000, "Remaining": 1_000_000},
    })


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() in ("bearer", "oauth") else None


def _errors(exc: OrgError, org: Org | None = None) -> Response:
    response = JSONResponse([exc.body()], status_code=exc.status)
    if org is not None:
        response.headers["Sforce-Limit-Info"] = \
            f"api-usage={org.limits.used}/{org.limits.max_requests}"
    return response


def _xml_text(root: ElementTree.Element, tag: str) -> str | None:
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] == tag:
            return element.text or ""
    return None


def _soap_login_body(org: Org, session: Session, version: str, username: str) -> str:
    base = org.config.public_url
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns="urn:partner.soap.sforce.com" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><loginResponse>'
        "<result>"
        f"<metadataServerUrl>{base}/services/Soap/m/{version}/{ORG_ID[:15]}</metadataServerUrl>"
        "<passwordExpired>false</passwordExpired><sandbox>false</sandbox>"
        f"<serverUrl>{base}/services/Soap/u/{version}/{ORG_ID[:15]}</serverUrl>"
        f"<sessionId>{session.token}</sessionId><userId>{session.user_id}</userId>"
        f"<userInfo><organizationId>{ORG_ID}</organizationId>"
        f"<organizationName>patchbay local org</organizationName>"
        f"<userId>{session.user_id}</userId><userName>{escape(username)}</userName>"
        f"<userEmail>{escape(username)}</userEmail><userFullName>Integration User</userFullName>"
        f"<sessionSecondsValid>{org.config.session_seconds}</sessionSecondsValid>"
        "<userTimeZone>UTC</userTimeZone></userInfo>"
        "</result></loginResponse></soapenv:Body></soapenv:Envelope>")


def _soap_fault(code: str, message: str) -> Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" '
        'xmlns:sf="urn:fault.partner.soap.sforce.com" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault>'
        f"<faultcode>sf:{code}</faultcode><faultstring>{code}: {escape(message)}</faultstring>"
        f'<detail><sf:LoginFault xsi:type="sf:LoginFault"><sf:exceptionCode>{code}'
        f"</sf:exceptionCode><sf:exceptionMessage>{escape(message)}</sf:exceptionMessage>"
        "</sf:LoginFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>")
    return Response(body, status_code=500, media_type="text/xml")

