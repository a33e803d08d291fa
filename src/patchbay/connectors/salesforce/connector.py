"""Salesforce through its REST and Bulk 2.0 APIs (httpx), for real orgs and the local org.

A system is `salesforce://login.salesforce.com` (a real org; https) or
`salesforce+http://127.0.0.1:8299` (the local org). Credentials come from options, each
of which may be `${ENV}`:

    crm:
      url: salesforce://login.salesforce.com
      options: {client_id: "${SF_CLIENT_ID}", client_secret: "${SF_CLIENT_SECRET}"}   # client credentials
      # or: {username, password, security_token}                 (SOAP login)
      # or: {username, password, client_id, client_secret}       (OAuth password flow)
      # or: {instance_url, access_token}                          (an existing session)

Reads use SOQL through REST pages, or a Bulk 2.0 query job when COUNT() says the scope is
large; writes use sObject Collections (200 records a call), or a Bulk 2.0 ingest job for
large batches. Every record gets its own outcome. A session that expires is renewed once;
REQUEST_LIMIT_EXCEEDED and 5xx answers are retried with backoff, then raised as retriable.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import time
from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any, ClassVar
from urllib.parse import quote, urlsplit
from xml.etree import ElementTree
from xml.sax.saxutils import escape

import httpx
from pydantic import Field

from patchbay import metrics
from patchbay.compare import same_values
from patchbay.connectors.base import (
    DIGEST_BYTES,
    Capability,
    Connector,
    ConnectorOptions,
    completed,
    keyed_digest,
    last_per_key,
)
from patchbay.connectors.salesforce.cdc import ChangeStream
from patchbay.connectors.salesforce.cometd import CometdClient
from patchbay.connectors.salesforce.soql import soql_literal, to_soql
from patchbay.errors import ConnectionFailed, RetriableError, SalesforceError, SpecError
from patchbay.model import (
    Change,
    ChangeKind,
    FieldSchema,
    FieldType,
    KeyValue,
    ObjectSchema,
    Operation,
    Outcome,
    Page,
    Position,
    Record,
    Status,
)
from patchbay.retry import RetryPolicy
from patchbay.scope import BoundScope, Condition, Group, fields_of
from patchbay.sfid import to18
from patchbay.spec import SystemSpec, suggest

API_VERSION = "59.0"
COLLECTION_SIZE = 200
RETRIABLE_CODES = frozenset({"UNABLE_TO_LOCK_ROW", "REQUEST_LIMIT_EXCEEDED", "SERVER_UNAVAILABLE"})
_TYPES = {"boolean": FieldType.BOOLEAN, "int": FieldType.INTEGER, "double": FieldType.NUMBER,
          "currency": FieldType.NUMBER, "percent": FieldType.NUMBER, "date": FieldType.DATE,
          "datetime": FieldType.DATETIME}


class SalesforceOptions(ConnectorOptions):
    """Credentials: client_id + client_secret (client credentials), username + password +
    security_token (SOAP login), username + password + client_id + client_secret (OAuth
    password flow), or instance_url + access_token (an existing session)."""

    client_id: str | None = Field(None, description="The connected app's consumer key.")
    client_secret: str | None = Field(None, description="The connected app's consumer secret.")
    username: str | None = Field(None, description="The integration user's username.")
    password: str | None = Field(None, description="The integration user's password.")
    security_token: str | None = Field(None, description="The user's security token (SOAP login).")
    instance_url: str | None = Field(None, description="The org's URL, with access_token.")
    access_token: str | None = Field(None, description="A session id of the org.")
    api_version: str = Field(API_VERSION, description="The REST API version.")
    bulk_threshold: int = Field(10_000, ge=0, description="Reads of more records go through a Bulk "
                                "2.0 query job, writes of batches over a tenth of it an ingest job.")
    retries: int = Field(5, ge=0, description="Retries of a call refused for a limit or a 5xx.")
    backoff_seconds: float = Field(1.0, ge=0, description="The first retry's wait; doubled each time.")
    timeout: float = Field(60, gt=0, description="Seconds per HTTP request.")


class _Unanswered(RetriableError):
    """A call the org did not answer (unreachable, a 5xx, REQUEST_LIMIT_EXCEEDED): tried
    again with backoff, then raised. Not a login refused, which no retry mends."""


class SalesforceConnector(Connector):
    schemes: ClassVar[tuple[str, ...]] = ("salesforce",)
    capabilities: ClassVar[frozenset[Capability]] = frozenset(
        {Capability.READ, Capability.WRITE, Capability.GET, Capability.DESCRIBE,
         Capability.CHANGES, Capability.COUNT})
    options_model: ClassVar[type[ConnectorOptions]] = SalesforceOptions

    def __init__(self, system: SystemSpec) -> None:
        super().__init__(system)
        self.options = options = self._options_as(SalesforceOptions)
        scheme, _, rest = system.url.partition("://")
        self.transport = "http" if scheme.lower().endswith("+http") else "https"
        self.login_host = rest.strip("/") or "login.salesforce.com"
        self.version = options.api_version
        self.bulk_threshold = options.bulk_threshold
        # `retries` after the first attempt, with the engine's one policy of backoff
        self.retry = RetryPolicy(max_attempts=options.retries + 1,
                                 backoff_seconds=options.backoff_seconds,
                                 retry_on=(_Unanswered,))
        self.api_calls = 0
        self._http = httpx.Client(timeout=options.timeout)
        self._instance: str | None = options.instance_url
        self._token: str | None = options.access_token
        self._described: dict[str, dict[str, Any]] = {}
        self._stream: ChangeStream | None = None

    def close(self) -> None:
        if self._stream is not None:
            self._stream.close()
            self._stream = None
        self._http.close()

    def usage(self) -> dict[str, int]:
        return {"api_calls": self.api_calls}

    # -- authentication -------------------------------------------------------------------------

    @property
    def _can_login(self) -> bool:
        return bool(self.options.username or self.options.client_id)

    def _login(self) -> None:
        options = self.options
        base = f"{self.transport}://{self.login_host}"
        username, password = options.username, options.password
        client_id, secret = options.client_id, options.client_secret
        token = options.security_token or ""
        try:
            if username and password and not client_id:
                self._soap_login(base, str(username), str(password) + token)
                return
            if client_id and secret:
                form = ({"grant_type": "password", "client_id": client_id, "client_secret": secret,
                         "username": username, "password": str(password) + token} if username
                        else {"grant_type": "client_credentials"})
                url = f"{base}/services/oauth2/token"
                response = (self._http.post(url, data=form) if username else
                            self._http.post(url, data=form,
                                            auth=httpx.BasicAuth(str(client_id), str(secret))))
                self.api_calls += 1
                if response.status_code != 200:
                    detail = response.json() if response.headers.get(
                        "content-type", "").startswith("application/json") else {}
                    reason = detail.get("error_description") or response.text[:200]
                    raise ConnectionFailed(f"Salesforce system '{self.name}' refused the "
                                           f"credentials: {reason}", system=self.name)
                body = response.json()
                self._token, self._instance = body["access_token"], body["instance_url"]
                return
        except httpx.HTTPError as exc:
            raise ConnectionFailed(f"cannot reach Salesforce system '{self.name}' at {base}: "
                                   f"{self.system.scrub(str(exc))}", system=self.name) from None
        if not self._token:
            raise SpecError(f"Salesforce system '{self.name}' needs credentials: client_id and "
                            "client_secret, username and password (and security_token), or "
                            "instance_url and access_token")

    def _soap_login(self, base: str, username: str, password: str) -> None:
        envelope = (
            '<?xml version="1.0" encoding="utf-8" ?><env:Envelope '
            'xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
            'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
            'xmlns:env="http://schemas.xmlsoap.org/soap/envelope/" '
            'xmlns:urn="urn:partner.soap.sforce.com"><env:Body><urn:login>'
            f"<urn:username>{escape(username)}</urn:username>"
            f"<urn:password>{escape(password)}</urn:password>"
            "</urn:login></env:Body></env:Envelope>")
        response = self._http.post(f"{base}/services/Soap/u/{self.version}", content=envelope,
                                   headers={"content-type": "text/xml", "SOAPAction": "login"})
        self.api_calls += 1
        root = ElementTree.fromstring(response.content)
        texts = {e.tag.rsplit("}", 1)[-1]: (e.text or "") for e in root.iter()}
        if response.status_code != 200:
            raise ConnectionFailed(f"Salesforce system '{self.name}' refused the login: "
                                   f"{texts.get('faultstring', response.status_code)}",
                                   system=self.name)
        server = urlsplit(texts["serverUrl"])
        self._token = texts["sessionId"]
        self._instance = f"{server.scheme}://{server.netloc}"

    # -- requests -------------------------------------------------------------------------------

    def request(self, method: str, path: str, *, expect_json: bool = True, **kwargs: Any) -> Any:
        """One REST call under /services/data/vXX.X (or an absolute path), with renewal of
        an expired session and backoff on limits and server errors."""
        if self._token is None or self._instance is None:
            self._login()
        url = path if path.startswith("/services/") else \
            f"/services/data/v{self.version}/{path.lstrip('/')}"
        headers = kwargs.pop("headers", {})
        renewed = False

        def attempt() -> httpx.Response:
            nonlocal renewed
            response = self._send(method, url, headers, kwargs)
            if response.status_code == 401 and not renewed and self._can_login:
                renewed = True
                self._token = None
                self._login()
                response = self._send(method, url, headers, kwargs)
            if response.status_code >= 500 or _error_code(response) == "REQUEST_LIMIT_EXCEEDED":
                # the message of the last attempt is the one raised: it counts them all
                raise _Unanswered(f"Salesforce system '{self.name}': {_error_code(response)} "
                                     f"after {self.retry.max_attempts} tries")
            return response

        response = self.retry.call(attempt)
        if response.status_code >= 300 and response.status_code != 300:
            raise SalesforceError(response.status_code, _error_code(response),
                                  _error_message(response), system=self.name)
        if not expect_json:
            return response
        return response.json() if response.content else None

    def _send(self, method: str, url: str, headers: Mapping[str, str],
              kwargs: Mapping[str, Any]) -> httpx.Response:
        """One HTTP request with the session's token; a transport failure is retriable."""
        try:
            response = self._http.request(method, f"{self._instance}{url}", headers={
                "Authorization": f"Bearer {self._token}", **headers}, **kwargs)
        except httpx.TransportError as exc:
            raise _Unanswered(f"Salesforce system '{self.name}' unreachable: "
                              f"{self.system.scrub(str(exc))}") from None
        self.api_calls += 1
        limits = response.headers.get("Sforce-Limit-Info")
        if limits:
            metrics.api_usage(self.name, limits)
        return response

    # -- describe -------------------------------------------------------------------------------

    def _describe(self, object: str) -> dict[str, Any]:
        if object not in self._described:
            try:
                self._described[object] = self.request("GET", f"sobjects/{object}/describe")
            except SalesforceError as exc:
                if exc.status == 404:
                    names = [o["name"] for o in self.request("GET", "sobjects")["sobjects"]]
                    raise SpecError(f"Salesforce system '{self.name}' has no object "
                                    f"'{object}'{suggest(object, names)}") from None
                raise
        return self._described[object]

    def describe(self, object: str) -> ObjectSchema:
        fields = {}
        for f in self._describe(object)["fields"]:
            kind = _TYPES.get(f["type"], FieldType.STRING)
            choices = tuple(p["value"] for p in f.get("picklistValues") or []) \
                if f.get("restrictedPicklist") else None
            writable = f.get("createable") or f.get("updateable")
            fields[f["name"]] = FieldSchema(
                f["name"], kind, nullable=bool(f["nillable"]),
                max_length=f.get("length") or None if kind is FieldType.STRING else None,
                has_default=bool(f.get("defaultedOnCreate")) or not writable,
                choices=choices or None)
        return ObjectSchema(object, fields, "Id")

    def _field_types(self, object: str) -> dict[str, str]:
        return {f["name"].lower(): f["type"] for f in self._describe(object)["fields"]}

    # -- read -----------------------------------------------------------------------------------

    def _soql(self, object: str, fields: Sequence[str], where: str, order: str | None = None) -> str:
        text = f"SELECT {', '.join(fields)} FROM {object}"
        if where:
            text += f" WHERE {where}"
        if order:
            text += f" ORDER BY {order}"
        return text

    def count(self, object: str, scope: BoundScope | None = None) -> int:
        self._known_fields(object, sorted(fields_of(scope)))
        where = to_soql(scope, self._field_types(object))
        deleted = "isdeleted" in {f.lower() for f in fields_of(scope)}
        body = self.request("GET", "queryAll" if deleted else "query",
                            params={"q": f"SELECT COUNT() FROM {object}"
                                         + (f" WHERE {where}" if where else "")})
        return int(body["totalSize"])

    def _known_fields(self, object: str, names: Sequence[str]) -> None:
        types = self._field_types(object)
        unknown = [n for n in names if n.lower() not in types and "." not in n]
        if unknown:
            known = [f["name"] for f in self._describe(object)["fields"]]
            raise SpecError(f"Salesforce object '{object}' of system '{self.name}' has no field "
                            f"'{unknown[0]}'{suggest(unknown[0], known)}")

    def read(self, object: str, scope: BoundScope | None = None, *, key: str | None = None,
             fields: Sequence[str] | None = None, after: Position = None,
             page_size: int = 1000, columnar: bool = False) -> Iterator[Page]:
        types = self._field_types(object)
        key = key or "Id"
        names = list(dict.fromkeys([*(fields or [f["name"] for f in self._describe(object)["fields"]
                                       if f["type"] not in ("address", "location")]), key]))
        # the scope's fields too: the org would refuse the query, without a suggestion
        self._known_fields(object, [*names, *sorted(fields_of(scope))])
        where = to_soql(scope, types)
        if after is not None:
            boundary = to_soql(Condition(key, "gt", after), types)
            where = f"({where}) AND {boundary}" if where else boundary
        query = self._soql(object, names, where, key)
        # Deleted records are only visible through queryAll: asking for IsDeleted means it.
        deleted = "isdeleted" in {f.lower() for f in fields_of(scope)}
        if self.count(object, scope) > self.bulk_threshold:
            yield from self._bulk_query(object, query, names, key, page_size, deleted)
            return
        headers = {"Sforce-Query-Options": f"batchSize={min(max(page_size, 200), 2000)}"}
        body = self.request("GET", "queryAll" if deleted else "query", params={"q": query},
                            headers=headers)
        while True:
            records = [self._record(r, names, types) for r in body["records"]]
            if records:
                yield Page(records, records[-1][key])
            if body.get("done", True):
                return
            body = self.request("GET", body["nextRecordsUrl"], headers=headers)

    def changes(self, object: str, cursor: Mapping[str, Any] | None,
                fields: Sequence[str] | None = None, limit: int = 2000, *,
                digest_key: bytes | None = None) -> tuple[list[Change], dict[str, Any]]:
        """Records created, updated or deleted since `cursor`, and the cursor after them:
        from the object's Change Data Capture events when the cursor says `cdc`
        (`cdc.py`), else polled (`poll_changes`)."""
        if cursor is not None and cursor.get("cdc"):
            if self._stream is None:
                self._stream = ChangeStream(self)
            return self._stream.changes(object, cursor, self._change_fields(object, fields), limit)
        return self.poll_changes(object, cursor, fields, limit,
                                 digest_key=self.digest_key if digest_key is None else digest_key)

    def cometd_client(self) -> CometdClient:
        """A new Streaming API client on this connector's session."""
        if self._token is None or self._instance is None:
            self._login()
        return CometdClient(self._http, f"{self._instance}/cometd/{self.version}",
                            lambda: {"Authorization": f"Bearer {self._token}"})

    def forget_session(self) -> None:
        """The session expired: log in again on the next call (when there is a login)."""
        if self._can_login:
            self._token = None

    def _change_fields(self, object: str, fields: Sequence[str] | None) -> list[str]:
        """The fields a change carries: those asked for (all but compound ones by default),
        and what the change itself needs."""
        return list(dict.fromkeys([*(fields or [f["name"] for f in self._describe(object)["fields"]
                                              if f["type"] not in ("address", "location")]),
                                   "Id", "CreatedDate", "SystemModstamp"]))

    def poll_changes(self, object: str, cursor: Mapping[str, Any] | None,
                     fields: Sequence[str] | None = None, limit: int = 2000, *,
                     digest_key: bytes | None = None) -> tuple[list[Change], dict[str, Any]]:
        """Records created, updated or deleted since `cursor`, polled, and the cursor after them.

        Changes are read by SystemModstamp with `>=`, not `>`: many records can share the
        cursor's timestamp, and a transaction may commit late with it. The ids already
        delivered at that timestamp travel in the cursor and are skipped, so nothing is
        delivered twice and nothing sharing a timestamp is ever skipped. Deletes come from
        getDeleted, whose windows are whole minutes; the deletions (id and time) delivered in
        the cursor's minute are remembered the same way. A record undeleted since is no
        longer in getDeleted: its new SystemModstamp brings it back as an update. The cursor
        remembers ids and deletions as digests keyed by `digest_key` (`keyed_digest`), never
        as they are; a cursor stored before reads its plain ones as their digests.
        """
        secret = self.digest_key if digest_key is None else digest_key
        cursor = {"since": "2000-01-01T00:00:00.000Z", "seen": [], "deleted_since": None,
                  "deleted_seen": [], **(cursor or {})}
        types = self._field_types(object)
        names = self._change_fields(object, fields)
        since = _typed(cursor["since"], "datetime")
        where = f"SystemModstamp >= {soql_literal(since, 'datetime')}"
        body = self.request("GET", "query", params={
            "q": self._soql(object, names, where, "SystemModstamp, Id")})
        seen = {_sealed(secret, entry) for entry in cursor["seen"]}
        found: list[Change] = []
        last_stamp, at_last = since, list(seen)
        while True:
            for raw in body["records"]:
                record = self._record(raw, names, types)
                stamp = record["SystemModstamp"]
                sealed = keyed_digest(secret, record["Id"])
                if stamp == since and sealed in seen:
                    continue
                kind = ChangeKind.CREATED if record.get("CreatedDate") == stamp \
                    else ChangeKind.UPDATED
                found.append(Change(self.name, object, record["Id"], kind, record, at=stamp))
                at_last = [*at_last, sealed] if stamp == last_stamp else [sealed]
                last_stamp = stamp
                if len(found) >= limit:
                    break
            if len(found) >= limit or body.get("done", True):
                break
            body = self.request("GET", body["nextRecordsUrl"])
        deleted, cursor["deleted_since"], cursor["deleted_seen"] = self._deleted_since(
            object, cursor.get("deleted_since") or cursor["since"],
            [_sealed(secret, entry) for entry in cursor.get("deleted_seen", [])], secret)
        found += deleted
        cursor["since"] = soql_literal(last_stamp, "datetime")
        cursor["seen"] = at_last
        return found, cursor

    def _deleted_since(self, object: str, since: str, seen: Sequence[str], secret: bytes
                       ) -> tuple[list[Change], str, list[str]]:
        start = _typed(since, "datetime").replace(second=0, microsecond=0)
        end = max(start + dt.timedelta(minutes=2),
                  dt.datetime.now(dt.UTC).replace(second=0, microsecond=0) + dt.timedelta(minutes=2))
        body = self.request("GET", f"sobjects/{object}/deleted/", params={
            "start": start.isoformat(), "end": end.isoformat()})
        known = set(seen)
        listed = [Change(self.name, object, d["id"], ChangeKind.DELETED, {"Id": d["id"]},
                         at=_typed(d["deletedDate"], "datetime"))
                  for d in body.get("deletedRecords", [])]
        changes = [c for c in listed if keyed_digest(secret, _deletion(c)) not in known]
        if not changes:
            return [], since, list(seen)
        newest = max(c.at for c in changes if c.at is not None)
        minute = newest.replace(second=0, microsecond=0)
        in_minute = [keyed_digest(secret, _deletion(c)) for c in changes
                     if c.at is not None and c.at >= minute]
        carried = list(known) if minute == start else []
        return changes, soql_literal(minute, "datetime"), [*carried, *in_minute]

    def _record(self, raw: Mapping[str, Any], names: Sequence[str], types: Mapping[str, str]) -> Record:
        record: Record = {}
        for name in names:
            value: Any = raw
            for part in name.split("."):
                value = value.get(part) if isinstance(value, Mapping) else None
            record[name] = _typed(value, types.get(name.lower()))
        return record

    def _bulk_query(self, object: str, query: str, names: Sequence[str], key: str,
                    page_size: int, deleted: bool) -> Iterator[Page]:
        job = self.request("POST", "jobs/query", json={
            "operation": "queryAll" if deleted else "query", "query": query})
        job = self._wait(f"jobs/query/{job['id']}")
        types = self._field_types(object)
        locator: str | None = None
        while True:
            params: dict[str, Any] = {"maxRecords": max(page_size, 1)}
            if locator:
                params["locator"] = locator
            response = self.request("GET", f"jobs/query/{job['id']}/results", params=params,
                                    expect_json=False)
            rows = list(csv.DictReader(io.StringIO(response.text)))
            records = [{n: _typed(row.get(n) or None, types.get(n.lower())) for n in names}
                       for row in rows]
            if records:
                yield Page(records, records[-1][key])
            locator = response.headers.get("Sforce-Locator")
            if not locator or locator == "null":
                return

    def _wait(self, path: str) -> dict[str, Any]:
        delay = 0.05
        while True:
            job: dict[str, Any] = self.request("GET", path)
            if job["state"] in ("JobComplete", "Failed", "Aborted"):
                if job["state"] != "JobComplete":
                    raise SalesforceError(400, job["state"].upper(), job.get("errorMessage") or job["state"],
                                          system=self.name)
                return job
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def get(self, object: str, key: str, values: Sequence[KeyValue],
            fields: Sequence[str] | None = None) -> dict[KeyValue, Record]:
        types = self._field_types(object)
        names = list(dict.fromkeys([*(fields or ["Id"]), key]))
        found: dict[KeyValue, Record] = {}
        distinct = [v for v in dict.fromkeys(values) if v is not None]
        for start in range(0, len(distinct), COLLECTION_SIZE):
            chunk = distinct[start:start + COLLECTION_SIZE]
            where = to_soql(Condition(key, "in", chunk), types)
            body = self.request("GET", "query", params={"q": self._soql(object, names, where)})
            while True:
                for raw in body["records"]:
                    record = self._record(raw, names, types)
                    found[record[key]] = record
                if body.get("done", True):
                    break
                body = self.request("GET", body["nextRecordsUrl"])
        same = _same_key(key)
        by_text = {same(k): r for k, r in found.items()}
        return {v: by_text[same(v)] for v in distinct if same(v) in by_text}

    def deleted(self, object: str, key: str, values: Sequence[KeyValue]) -> dict[KeyValue, KeyValue]:
        """Of `values`, the records the org holds as deleted (IsDeleted, in its recycle bin,
        found by queryAll). One the org does not know at all is not taken for deleted."""
        types = self._field_types(object)
        same = _same_key(key)
        gone: dict[str, KeyValue] = {}
        distinct = [v for v in dict.fromkeys(values) if v is not None]
        for start in range(0, len(distinct), COLLECTION_SIZE):
            where = to_soql(Group("and", (Condition(key, "in", distinct[start:start + COLLECTION_SIZE]),
                                          Condition("IsDeleted", "eq", True))), types)
            body = self.request("GET", "queryAll", params={"q": self._soql(object, [key], where)})
            while True:
                for raw in body["records"]:
                    record = self._record(raw, [key], types)
                    gone[same(record[key])] = record[key]
                if body.get("done", True):
                    break
                body = self.request("GET", body["nextRecordsUrl"])
        return {v: gone[same(v)] for v in distinct if same(v) in gone}

    # -- write ----------------------------------------------------------------------------------

    def write(self, object: str, records: Sequence[Record], operation: Operation,
              key: str) -> list[Outcome]:
        todo, outcomes = last_per_key(records, key, same=lambda v: str(v).lower())
        bulk = len(todo) > self.bulk_threshold // 10 and operation is not Operation.DELETE
        if operation in (Operation.UPSERT, Operation.UPDATE) and todo and not bulk:
            # For a batch small enough for collections, reading it first costs fewer calls
            # than writing what did not change; a bulk job writes it all in a few calls.
            todo = self._skip_unchanged(object, records, todo, key, outcomes)
        record_ids: dict[int, str] = {}
        by_id = bulk and key.lower() == "id"
        if by_id:
            # A bulk job's row says itself that its record is gone (deleted, or no such id):
            # the ids are not read first, at a query per 200 records.
            record_ids = {i: str(records[i][key]) for i in todo}
        elif operation in (Operation.UPDATE, Operation.DELETE) and todo:
            todo, record_ids = self._resolve_ids(object, records, todo, key, outcomes)
        payload = [_payload(object, records[i], operation, key, record_ids.get(i)) for i in todo]
        if bulk:
            results = self._bulk_write(object, payload, operation, key)
        else:
            results = []
            for start in range(0, len(payload), COLLECTION_SIZE):
                results += self._collection(object, payload[start:start + COLLECTION_SIZE],
                                            operation, key)
        for index, result in zip(todo, results, strict=True):
            outcomes[index] = _outcome(records[index].get(key), result, operation, key)
            if by_id and _gone(result):
                outcomes[index] = Outcome(records[index].get(key), Status.SKIPPED,
                                          "no record with this key", "NOT_FOUND")
        return completed(records, key, outcomes)

    def _skip_unchanged(self, object: str, records: Sequence[Record], todo: list[int], key: str,
                        outcomes: list[Outcome | None]) -> list[int]:
        """Writing a record equal to the org's costs API calls and a modstamp: skip it."""
        fields = sorted({f for i in todo for f in records[i]})
        current = self.get(object, key, [records[i][key] for i in todo], fields)
        remaining = []
        for index in todo:
            held = current.get(records[index][key])
            if held is not None and same_values(_plain_values(records[index]),
                                                _plain_values(held)):
                outcomes[index] = Outcome(records[index][key], Status.UNCHANGED)
            else:
                remaining.append(index)
        return remaining

    def _resolve_ids(self, object: str, records: Sequence[Record], todo: list[int], key: str,
                     outcomes: list[Outcome | None]) -> tuple[list[int], dict[int, str]]:
        """Record ids for an update or delete by another key; missing keys are skipped."""
        found = self.get(object, key, [records[i][key] for i in todo], ["Id"])
        remaining, record_ids = [], {}
        for index in todo:
            held = found.get(records[index][key])
            if held is None:
                outcomes[index] = Outcome(records[index][key], Status.SKIPPED,
                                          "no record with this key", "NOT_FOUND")
            else:
                remaining.append(index)
                record_ids[index] = str(held["Id"])
        return remaining, record_ids

    def _collection(self, object: str, payload: list[dict[str, Any]], operation: Operation,
                    key: str) -> list[dict[str, Any]]:
        body = {"allOrNone": False, "records": payload}
        if operation is Operation.INSERT:
            return list(self.request("POST", "composite/sobjects", json=body))
        if operation is Operation.UPSERT:
            return list(self.request("PATCH", f"composite/sobjects/{object}/{quote(key)}",
                                     json=body))
        if operation is Operation.UPDATE:
            return list(self.request("PATCH", "composite/sobjects", json=body))
        ids = ",".join(str(r["id"]) for r in payload)
        return list(self.request("DELETE", "composite/sobjects",
                                 params={"ids": ids, "allOrNone": "false"}))

    def _bulk_write(self, object: str, payload: list[dict[str, Any]], operation: Operation,
                    key: str) -> list[dict[str, Any]]:
        """A Bulk 2.0 ingest job; results are joined back to the records by their row, which
        the result files carry (sf__ columns first, then the uploaded columns)."""
        columns = list(dict.fromkeys(c for r in payload for c in r if c != "attributes"))
        columns = ["Id" if c == "id" else c for c in columns]
        job_spec: dict[str, Any] = {"object": object, "operation": operation.value,
                                    "contentType": "CSV", "lineEnding": "LF"}
        if operation is Operation.UPSERT:
            job_spec["externalIdFieldName"] = key
        text = io.StringIO()
        writer = csv.writer(text, lineterminator="\n")
        writer.writerow(columns)
        for record in payload:
            writer.writerow([_csv_value(record.get("id" if c == "Id" else c)) for c in columns])
        job = self.request("POST", "jobs/ingest", json=job_spec)
        self.request("PUT", f"jobs/ingest/{job['id']}/batches", content=text.getvalue().encode(),
                     headers={"Content-Type": "text/csv"}, expect_json=False)
        self.request("PATCH", f"jobs/ingest/{job['id']}", json={"state": "UploadComplete"})
        self._wait(f"jobs/ingest/{job['id']}")
        by_row: dict[tuple[str, ...], dict[str, Any]] = {}
        for kind in ("successfulResults", "failedResults", "unprocessedrecords"):
            response = self.request("GET", f"jobs/ingest/{job['id']}/{kind}", expect_json=False)
            for row in csv.DictReader(io.StringIO(response.text)):
                identity = tuple(row.get(c, "") for c in columns)
                if kind == "successfulResults":
                    result = {"success": True, "id": row.get("sf__Id"),
                              "created": row.get("sf__Created") == "true"}
                else:
                    result = {"success": False, "errors": [_bulk_error(row.get("sf__Error"))]}
                by_row[identity] = result
        missing = {"success": False, "errors": [{"statusCode": "UNKNOWN_EXCEPTION",
                                                 "message": "no result for this row"}]}
        return [by_row.get(tuple(_csv_value(r.get("id" if c == "Id" else c)) for c in columns),
                           missing) for r in payload]


def _sealed(secret: bytes, entry: str) -> str:
    """An entry of a stored polling cursor as the cursor now keeps it: a cursor stored before
    entries were digested holds ids (15 or 18 characters) and deletions (`_deletion`), never
    a digest's 2 * DIGEST_BYTES hexadecimal digits."""
    return entry if len(entry) == 2 * DIGEST_BYTES and "@" not in entry \
        else keyed_digest(secret, entry)


def _deletion(change: Change) -> str:
    """A deletion as the polling cursor remembers it: the id and when it was deleted, so that
    a record deleted again after an undelete in the same minute is not taken for seen."""
    return f"{change.key}@{soql_literal(change.at, 'datetime')}"


def _same_key(key: str) -> Any:
    """How two values of `key` are compared: record ids by their 18-character form (the
    15-character one names the same record), other keys without regard to case."""
    if key.lower() == "id":
        return lambda value: to18(str(value)) or str(value).lower()
    return lambda value: str(value).lower()


def _payload(object: str, record: Record, operation: Operation, key: str,
             record_id: str | None) -> dict[str, Any]:
    body = {"attributes": {"type": object}, **_plain_values(record)}
    if operation in (Operation.UPDATE, Operation.DELETE):
        if key != "Id":
            body.pop(key, None)
        body.pop("Id", None)
        body["id"] = record_id
    return body


def _gone(result: Mapping[str, Any]) -> bool:
    """Whether a write's result says its record is not there (deleted, or no such id)."""
    return not result.get("success") and \
        (result.get("errors") or [{}])[0].get("statusCode") in ("ENTITY_IS_DELETED", "NOT_FOUND")


def _csv_value(value: Any) -> str:
    if value is None:
        return "#N/A"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _bulk_error(text: str | None) -> dict[str, Any]:
    """An sf__Error cell (`CODE:message:Field1 Field2 --`, or `CODE:message:--` without
    fields) as the error of a REST result."""
    code, _, rest = (text or "UNPROCESSED:not processed").partition(":")
    fields: list[str] = []
    if rest.endswith("--"):
        rest, _, names = rest[:-2].rstrip().rpartition(":")
        fields = names.split()
    return {"statusCode": code, "message": rest.rstrip(" -:"), "fields": fields}


def _outcome(key: KeyValue, result: Mapping[str, Any], operation: Operation,
             key_field: str) -> Outcome:
    if result.get("success"):
        if operation is Operation.DELETE:
            status = Status.DELETED
        elif operation is Operation.INSERT or result.get("created"):
            status = Status.CREATED
        else:
            status = Status.UPDATED
        return Outcome(key, status, destination_id=result.get("id"))
    error = (result.get("errors") or [{}])[0]
    code = error.get("statusCode") or "UNKNOWN_EXCEPTION"
    status = Status.FAILED if code in RETRIABLE_CODES else Status.REJECTED
    fields = error.get("fields") or []
    reason = error.get("message", code) + (f" ({', '.join(fields)})" if fields else "")
    if operation is Operation.INSERT and code == "DUPLICATE_VALUE" and key_field in fields:
        # An insert leaves a record that has the key alone, as every connector's insert does.
        return Outcome(key, Status.SKIPPED, reason, code)
    return Outcome(key, status, reason, code)


def _plain_values(record: Record) -> dict[str, Any]:
    """A record as Salesforce's JSON takes it: ISO dates, numbers as numbers."""
    out: dict[str, Any] = {}
    for name, value in record.items():
        if isinstance(value, dt.datetime):
            aware = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
            out[name] = aware.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + \
                f"{aware.microsecond // 1000:03d}Z"
        elif isinstance(value, dt.date):
            out[name] = value.isoformat()
        elif isinstance(value, Decimal):
            out[name] = float(value)
        else:
            out[name] = value
    return out


def _typed(value: Any, kind: str | None) -> Any:
    """A value read from Salesforce (JSON or CSV text) as the Python type of its field."""
    if value is None or value == "":
        return None
    if kind == "datetime" and isinstance(value, str):
        text = value.replace("Z", "+00:00")
        if len(text) > 5 and text[-5] in "+-" and text[-3] != ":":
            text = text[:-2] + ":" + text[-2:]
        return dt.datetime.fromisoformat(text)
    if kind == "date" and isinstance(value, str):
        return dt.date.fromisoformat(value[:10])
    if kind == "boolean" and isinstance(value, str):
        return value.lower() == "true"
    if kind == "int" and isinstance(value, str):
        return int(float(value))
    if kind in ("double", "currency", "percent") and isinstance(value, str):
        return float(value)
    return value


def _error_code(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return f"HTTP_{response.status_code}"
    if isinstance(body, list) and body and isinstance(body[0], dict):
        return str(body[0].get("errorCode", f"HTTP_{response.status_code}"))
    return f"HTTP_{response.status_code}"


def _error_message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    if isinstance(body, list) and body and isinstance(body[0], dict):
        return str(body[0].get("message", ""))
    return response.text[:300]
