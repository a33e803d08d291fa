"""Bulk API 2.0: ingest jobs (insert, update, upsert, delete, hardDelete from CSV) and query jobs
(SOQL results as CSV pages behind locators), kept in memory per org.

Ingest jobs run synchronously when the client closes them (`PATCH {"state": "UploadComplete"}`),
so the next job-info request already shows JobComplete. Every row goes through the org's own
`create`/`update`/`upsert`/`delete` with origin "bulkapi", so bulk writes are validated and
change-logged exactly as REST writes are. All rows of a job run in one storage transaction, each
row in a savepoint of its own, so that a failing row rolls back alone.

Query jobs snapshot the Ids their SOQL matches when they are created. Each results page reads
those records by Id (with their values at the time the page is read), as REST query cursors do.
A locator is an opaque encoding of an offset into that snapshot, valid for the life of the job.

Choices of ours where Salesforce's behaviour is not documented (emu):
- One upload per job; a second PUT is refused with 400 INVALIDJOBSTATE.
- Closing a job that received no data fails it (`InvalidBatch : No data was uploaded for this job`).
- A row whose cell count differs from the header's fails alone (INVALID_FIELD).
- Upsert by a custom external id fails every row of an internal batch of 10,000 rows whose
  external id value occurs more than once in it (DUPLICATE_VALUE), as Salesforce's batches do.
- hardDelete soft-deletes through the org (change log, CDC) and then removes the row.
- `Jobs.in_progress_polls` (or `OrgConfig.bulk_in_progress_polls`, if present) makes a finished
  job show `InProgress` to that many job-info requests, to test polling.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse, Response

from patchbay import sfid
from patchbay.localorg import soql
from patchbay.localorg.org import MultipleMatches, Org, OrgError, Session
from patchbay.localorg.schema import SField, SObject
from patchbay.localorg.storage import quote
from patchbay.localorg.values import FieldValueError, output_datetime, stored_datetime

if TYPE_CHECKING:
    from patchbay.localorg.server import Call

DELIMITERS = {"COMMA": ",", "TAB": "\t", "PIPE": "|", "SEMICOLON": ";", "CARET": "^",
              "BACKQUOTE": "`"}
LINE_ENDINGS = {"LF": "\n", "CRLF": "\r\n"}
INGEST_OPERATIONS = {"insert": "insert", "update": "update", "upsert": "upsert",
                     "delete": "delete", "harddelete": "hardDelete"}
QUERY_OPERATIONS = {"query": "query", "queryall": "queryAll"}
TERMINAL = frozenset({"JobComplete", "Failed", "Aborted"})
ORIGIN = "bulkapi"
NULL_CELL = "#N/A"
MAX_UPLOAD_BYTES = 150 * 1024 * 1024 * 3 // 4  # 150 MB once base64-encoded, as Salesforce counts
DEFAULT_MAX_RECORDS = 50_000  # (emu) a results page when the client sends no maxRecords
INTERNAL_BATCH = 10_000  # Bulk 2.0 processes ingest data in internal batches of this many rows

IngestResult = tuple[str, str, list[str]]  # sf__Id, sf__Created ("true"/"false") or sf__Error, row


@dataclass
class Job:
    """One Bulk 2.0 job, ingest or query. `state` is the real state; `hold` job-info polls
    still see `InProgress` (see `Jobs.in_progress_polls`)."""

    id: str
    kind: str  # "ingest" | "query"
    operation: str
    obj: SObject
    created_by: str
    created_at: str  # stored datetime
    api_version: str
    column_delimiter: str
    line_ending: str
    state: str
    modstamp: str
    external_id: SField | None = None
    error_message: str | None = None
    processed: int = 0
    failed: int = 0
    processing_ms: int = 0
    hold: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)
    # ingest
    data: str | None = None
    header: list[str] = field(default_factory=list)
    successes: list[IngestResult] = field(default_factory=list)
    failures: list[IngestResult] = field(default_factory=list)
    unprocessed: list[list[str]] = field(default_factory=list)
    # query
    compiled: soql.CompiledQuery | None = None
    matched: list[str] = field(default_factory=list)

    @property
    def visible_state(self) -> str:
        return "InProgress" if self.hold > 0 else self.state

    def touch(self, org: Org) -> None:
        self.modstamp = stored_datetime(org.clock.now())


class Jobs:
    """The Bulk 2.0 jobs of one org."""

    def __init__(self, org: Org) -> None:
        self._jobs: dict[str, Job] = {}
        self._counter = 0
        self._lock = threading.Lock()
        self.in_progress_polls = int(getattr(org.config, "bulk_in_progress_polls", 0) or 0)
        self.max_upload_bytes = MAX_UPLOAD_BYTES

    def new_id(self) -> str:
        with self._lock:
            self._counter += 1
            return sfid.make("750", self._counter)

    def add(self, job: Job) -> None:
        with self._lock:
            self._jobs[job.id] = job

    def get(self, raw: str, kind: str) -> Job:
        key = sfid.to18(raw)
        job = self._jobs.get(key) if key else None
        if job is None or job.kind != kind:
            raise _not_found()
        return job

    def remove(self, job: Job) -> None:
        with self._lock:
            self._jobs.pop(job.id, None)

    def of_kind(self, kind: str) -> list[Job]:
        with self._lock:
            return [j for j in self._jobs.values() if j.kind == kind]


_REGISTRY: weakref.WeakKeyDictionary[Org, Jobs] = weakref.WeakKeyDictionary()
_REGISTRY_LOCK = threading.Lock()


def jobs_of(org: Org) -> Jobs:
    """The jobs of `org` (created on first use; they go when the org goes)."""
    with _REGISTRY_LOCK:
        found = _REGISTRY.get(org)
        if found is None:
            found = _REGISTRY[org] = Jobs(org)
        return found


# -- routing ------------------------------------------------------------------------------------

async def handle(call: Call, rest: list[str]) -> Response:
    """Every request under `/services/data/vXX.X/jobs/`; `rest` are the segments after `jobs`."""
    if not rest or rest[0].lower() not in ("ingest", "query"):
        raise _not_found()
    kind = rest[0].lower()
    jobs = jobs_of(call.org)
    method = call.method
    if len(rest) == 1:
        if method == "POST":
            return await (_create_ingest(call, jobs) if kind == "ingest" else _create_query(call, jobs))
        if method == "GET":
            return JSONResponse({"done": True, "records": [_info(j) for j in jobs.of_kind(kind)],
                                 "nextRecordsUrl": None})
        raise _method_not_allowed(method, "GET, POST")
    job = jobs.get(rest[1], kind)
    if len(rest) == 2:
        if method == "GET":
            info = _info(job)
            if job.hold > 0:
                job.hold -= 1
            return JSONResponse(info)
        if method == "PATCH":
            return await _patch(call, jobs, job)
        if method == "DELETE":
            _delete(jobs, job)
            return Response(status_code=204)
        raise _method_not_allowed(method, "GET, PATCH, DELETE")
    if len(rest) == 3:
        part = rest[2].lower()
        if kind == "ingest" and part == "batches":
            if method != "PUT":
                raise _method_not_allowed(method, "PUT")
            return await _upload(call, jobs, job)
        if kind == "ingest" and part in ("successfulresults", "failedresults", "unprocessedrecords"):
            if method != "GET":
                raise _method_not_allowed(method, "GET")
            return _ingest_results(job, part)
        if kind == "query" and part == "results":
            if method != "GET":
                raise _method_not_allowed(method, "GET")
            return _query_results(call, job)
    raise _not_found()


def _not_found() -> OrgError:
    return OrgError(404, "NOT_FOUND", "The requested resource does not exist")


def _method_not_allowed(method: str, allowed: str) -> OrgError:
    return OrgError(405, "METHOD_NOT_ALLOWED", f"HTTP Method '{method}' not allowed. Allowed are {allowed}")


def _invalid_job(message: str) -> OrgError:
    return OrgError(400, "INVALIDJOB", f"InvalidJob : {message}")


def _invalid_state(message: str) -> OrgError:
    return OrgError(400, "INVALIDJOBSTATE", message)


# -- job info -----------------------------------------------------------------------------------

def _info(job: Job, state: str | None = None) -> dict[str, Any]:
    info: dict[str, Any] = {
        "id": job.id, "operation": job.operation, "object": job.obj.name,
        "createdById": job.created_by, "createdDate": output_datetime(job.created_at),
        "systemModstamp": output_datetime(job.modstamp), "state": state or job.visible_state,
    }
    if job.external_id is not None:
        info["externalIdFieldName"] = job.external_id.name
    info.update({"concurrencyMode": "Parallel", "contentType": "CSV",
                 "apiVersion": float(job.api_version)})
    if job.kind == "ingest":
        info["jobType"] = "V2Ingest"
        info["contentUrl"] = f"services/data/v{job.api_version}/jobs/ingest/{job.id}/batches"
    else:
        info["jobType"] = "V2Query"
    info.update({"lineEnding": job.line_ending, "columnDelimiter": job.column_delimiter,
                 "numberRecordsProcessed": job.processed})
    if job.kind == "ingest":
        info["numberRecordsFailed"] = job.failed
    info.update({"retries": 0, "totalProcessingTime": job.processing_ms})
    if job.kind == "ingest":
        info.update({"apiActiveProcessingTime": job.processing_ms, "apexProcessingTime": 0})
    if job.error_message is not None:
        info["errorMessage"] = job.error_message
    return info


def _format(body: dict[str, Any]) -> tuple[str, str]:
    """The job's columnDelimiter and lineEnding names, checked (defaults COMMA and LF)."""
    content_type = body.get("contentType") or "CSV"
    if content_type != "CSV":
        raise _invalid_job(f"contentType {content_type} is not supported; use CSV")
    delimiter = body.get("columnDelimiter") or "COMMA"
    if delimiter not in DELIMITERS:
        raise _invalid_job(f"columnDelimiter must be one of {', '.join(DELIMITERS)}: {delimiter}")
    line_ending = body.get("lineEnding") or "LF"
    if line_ending not in LINE_ENDINGS:
        raise _invalid_job(f"lineEnding must be LF or CRLF: {line_ending}")
    return str(delimiter), str(line_ending)


async def _body(call: Call) -> dict[str, Any]:
    body = await call.json()
    if not isinstance(body, dict):
        raise OrgError(400, "JSON_PARSER_ERROR", "The request body must be a JSON object")
    return body


# -- ingest jobs --------------------------------------------------------------------------------

async def _create_ingest(call: Call, jobs: Jobs) -> Response:
    body = await _body(call)
    operation = INGEST_OPERATIONS.get(str(body.get("operation", "")).lower())
    if operation is None:
        raise _invalid_job(f"operation must be one of {', '.join(INGEST_OPERATIONS.values())}: "
                           f"{body.get('operation')}")
    name = body.get("object")
    if not isinstance(name, str) or not name:
        raise _invalid_job("object is required")
    obj = call.org.schema.get(name)
    if obj is None:
        raise _invalid_job(f"Unable to find object: {name}")
    if obj.readonly:
        raise _invalid_job(f"Entity '{obj.name}' is not supported by the Bulk API for {operation}")
    delimiter, line_ending = _format(body)
    external_id = None
    if operation == "upsert":
        key = body.get("externalIdFieldName")
        if not isinstance(key, str) or not key:
            raise _invalid_job("externalIdFieldName is required for upsert")
        external_id = obj.field(key)
        if external_id is None or not external_id.id_lookup:
            raise _invalid_job(f"Field {key} on {obj.name} is not an external id field")
    now = stored_datetime(call.org.clock.now())
    job = Job(jobs.new_id(), "ingest", operation, obj, call.session.user_id, now, call.version,
              delimiter, line_ending, "Open", now, external_id=external_id)
    jobs.add(job)
    return JSONResponse(_info(job))


async def _upload(call: Call, jobs: Jobs, job: Job) -> Response:
    if job.state != "Open":
        raise _invalid_state(f"Job {job.id} is not Open (state {job.visible_state}); it takes no data")
    if job.data is not None:
        raise _invalid_state(f"Job {job.id} already has its data: Bulk API 2.0 takes one upload per job")
    raw = await call.request.body()
    if len(raw) > jobs.max_upload_bytes:
        raise OrgError(413, "REQUEST_TOO_LARGE", f"The upload is {len(raw)} bytes; at most "
                                                 f"{jobs.max_upload_bytes} bytes are accepted")
    try:
        job.data = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise OrgError(400, "INVALIDBATCH", f"InvalidBatch : The CSV data is not UTF-8: {exc}") from None
    job.touch(call.org)
    return Response(status_code=201)


async def _patch(call: Call, jobs: Jobs, job: Job) -> Response:
    target = (await _body(call)).get("state")
    org = call.org
    if target == "UploadComplete":
        if job.kind != "ingest" or job.state != "Open":
            raise _invalid_state(f"Job {job.id} is {job.visible_state}; only an Open ingest job can "
                                 "be set to UploadComplete")
        with job.lock:
            if job.state != "Open":  # aborted meanwhile
                raise _invalid_state(f"Job {job.id} is {job.visible_state}")
            job.state = "InProgress"  # processing starts at once
        job.touch(org)
        await run_in_threadpool(_run_ingest, org, job, call.session)
        if job.state != "Aborted":
            job.hold = jobs.in_progress_polls
        return JSONResponse(_info(job, "UploadComplete"))
    if target == "Aborted":
        with job.lock:
            if job.visible_state in TERMINAL:
                raise _invalid_state(f"Job {job.id} is {job.visible_state} and can no longer be aborted")
            if job.state == "Open" and job.data is not None:
                try:
                    job.header, *job.unprocessed = _parse(job.data, DELIMITERS[job.column_delimiter])
                except (csv.Error, ValueError):
                    job.unprocessed = []
            job.state, job.hold = "Aborted", 0
        job.touch(org)
        return JSONResponse(_info(job))
    raise _invalid_state(f"A job's state can be set to UploadComplete or Aborted, not {target}")


def _delete(jobs: Jobs, job: Job) -> None:
    state = job.visible_state
    if state == "Open" or state == "InProgress":
        raise _invalid_state(f"Job {job.id} is {state}; close or abort it before deleting it")
    jobs.remove(job)


def _ingest_results(job: Job, part: str) -> Response:
    if job.visible_state not in TERMINAL:
        raise _invalid_state(f"Job {job.id} is {job.visible_state}; its results exist once it is "
                             "JobComplete, Failed or Aborted")
    rows: Iterable[Sequence[str]]
    if part == "successfulresults":
        header = ["sf__Id", "sf__Created", *job.header]
        rows = ([sf_id, created, *row] for sf_id, created, row in job.successes)
    elif part == "failedresults":
        header = ["sf__Id", "sf__Error", *job.header]
        rows = ([sf_id, error, *row] for sf_id, error, row in job.failures)
    else:
        header = job.header
        rows = job.unprocessed
    return _csv_response(header, rows, ",", "\n")


def _csv_response(header: Sequence[str], rows: Iterable[Sequence[str]], delimiter: str,
                  line_ending: str, headers: dict[str, str] | None = None) -> Response:
    buffer = io.StringIO()
    if header:
        writer = csv.writer(buffer, delimiter=delimiter, lineterminator=line_ending,
                            quoting=csv.QUOTE_ALL)
        writer.writerow(header)
        writer.writerows(rows)
    return Response(buffer.getvalue(), media_type="text/csv", headers=headers)


def _parse(text: str, delimiter: str) -> list[list[str]]:
    """CSV rows (RFC 4180 quoting, LF or CRLF line ends); blank lines are skipped."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quotechar='"',
                        doublequote=True)
    return [row for row in reader if row]


class _JobFailure(Exception):
    """A problem with the whole job: it ends Failed with this errorMessage."""


def _run_ingest(org: Org, job: Job, session: Session) -> None:
    """Process a closed ingest job: every row through the org, one savepoint each. An abort
    that arrives meanwhile stops it; the rows not reached are then unprocessed."""
    started = time.perf_counter()
    data: list[list[str]] = []
    try:
        if job.data is None:
            raise _JobFailure("InvalidBatch : No data was uploaded for this job")
        try:
            rows = _parse(job.data, DELIMITERS[job.column_delimiter])
        except csv.Error as exc:
            raise _JobFailure(f"InvalidBatch : Failed to parse the CSV data: {exc}") from None
        if not rows:
            raise _JobFailure("InvalidBatch : No data was uploaded for this job")
        job.header, data = rows[0], rows[1:]
        plan = _plan(org, job, session)
        try:
            with org.storage.transaction():
                reached = _apply_rows(org, job, data, plan)
        except Exception as exc:  # the job's writes are undone as a whole
            job.successes, job.failures = [], []
            raise _JobFailure(f"UNKNOWN_EXCEPTION : {type(exc).__name__}: {exc}") from exc
    except _JobFailure as exc:
        with job.lock:
            if job.state != "Aborted":
                job.state, job.error_message = "Failed", str(exc)
        job.unprocessed = data
    else:
        with job.lock:
            if job.state != "Aborted":
                job.state = "JobComplete"
        job.unprocessed = data[reached:]
        job.processed = reached
        job.failed = len(job.failures)
    job.processing_ms = int((time.perf_counter() - started) * 1000)
    job.touch(org)


RowApply = Callable[[list[str]], tuple[str, bool]]


@dataclass
class _Plan:
    """How to apply one row (returns its id and whether it was created), the sf__Id to report
    for a row that failed, and the upsert key's column."""

    apply: RowApply
    failed_id: Callable[[list[str]], str]
    key_index: int | None = None


def _plan(org: Org, job: Job, session: Session) -> _Plan:
    """Check the header against the job and say how to apply its rows. Raises _JobFailure for
    a header the job can't use."""
    obj, operation = job.obj, job.operation
    fields: list[SField] = []
    for name in job.header:
        found = obj.field(name.strip())
        if found is None:
            raise _JobFailure(f"InvalidBatch : Field name not found : {name.strip()}")
        if any(f.name == found.name for f in fields):
            raise _JobFailure(f"InvalidBatch : Duplicate field name: {found.name}")
        fields.append(found)
    names = [f.name for f in fields]
    id_index = names.index("Id") if "Id" in names else None

    def body_columns(*skip: int | None) -> list[tuple[int, str]]:
        return [(i, n) for i, n in enumerate(names) if i not in skip]

    def no_id(row: list[str]) -> str:
        return ""

    def given_id(row: list[str]) -> str:
        if id_index is None:
            return ""
        return org.record_id(obj, row[id_index]) or ""

    def record_id_of(row: list[str]) -> str:
        raw = row[id_index] if id_index is not None else ""
        if not raw or raw == NULL_CELL:
            raise OrgError(400, "MISSING_ARGUMENT", "Id not specified in an update call"
                           if operation == "update" else "Id not specified")
        record_id = org.record_id(obj, raw)
        if record_id is None:
            raise OrgError(400, "MALFORMED_ID", f"{obj.label or obj.name} ID: id value of incorrect "
                                                f"type: {raw}", ["Id"])
        return record_id

    if operation == "insert":
        columns = body_columns()

        def insert(row: list[str]) -> tuple[str, bool]:
            return org.create(obj, _body_of(row, columns), session, ORIGIN), True

        return _Plan(insert, no_id)
    if operation == "update":
        columns = body_columns(id_index)

        def update(row: list[str]) -> tuple[str, bool]:
            record_id = record_id_of(row)
            org.update(obj, record_id, _body_of(row, columns), session, ORIGIN)
            return record_id, False

        return _Plan(update, given_id)
    if operation in ("delete", "hardDelete"):
        if names != ["Id"]:
            extra = next((n for n in names if n != "Id"), "Id")
            raise _JobFailure(f"InvalidBatch : A {operation} job takes only the Id column, not {extra}"
                              if extra != "Id" else f"InvalidBatch : A {operation} job needs an Id column")
        hard = operation == "hardDelete"

        def delete(row: list[str]) -> tuple[str, bool]:
            record_id = record_id_of(row)
            current = org.storage.get(obj, record_id)
            if not (hard and current is not None and current["IsDeleted"]):
                org.delete(obj, record_id, ORIGIN, session=session)
            if hard:
                org.storage.db.execute(f'DELETE FROM {quote(obj.name)} WHERE "Id" = ?', (record_id,))
            return record_id, False

        return _Plan(delete, given_id)
    key = job.external_id
    assert key is not None
    if key.name not in names:
        raise _JobFailure(f"InvalidBatch : The external id field {key.name} is not in the header")
    key_index = names.index(key.name)
    columns = body_columns(key_index)
    if key.name == "Id":
        def upsert_by_id(row: list[str]) -> tuple[str, bool]:
            value = row[key_index]
            if not value or value == NULL_CELL:
                return org.create(obj, _body_of(row, columns), session, ORIGIN), True
            return org.upsert(obj, "Id", value, _body_of(row, columns), session, ORIGIN)

        return _Plan(upsert_by_id, given_id, key_index)

    def upsert(row: list[str]) -> tuple[str, bool]:
        value = row[key_index]
        if not value or value == NULL_CELL:
            raise OrgError(400, "MISSING_ARGUMENT", f"{key.name} not specified")
        try:
            return org.upsert(obj, key.name, value, _body_of(row, columns), session, ORIGIN)
        except MultipleMatches as exc:
            raise OrgError(400, "DUPLICATE_EXTERNAL_ID", f"{key.label or key.name}: more than one "
                           f"record found for external id field: [{', '.join(exc.record_ids)}]") from None

    return _Plan(upsert, no_id, key_index)


def _body_of(row: list[str], columns: list[tuple[int, str]]) -> dict[str, Any]:
    """A record body from a row: empty cells are left out (unchanged on update, null on insert),
    `#N/A` is null."""
    body: dict[str, Any] = {}
    for index, name in columns:
        value = row[index]
        if value:
            body[name] = None if value == NULL_CELL else value
    return body


def _apply_rows(org: Org, job: Job, data: list[list[str]], plan: _Plan) -> int:
    """Apply the rows in order; the number of rows reached (all of them unless aborted)."""
    width = len(job.header)
    apply, failed_id = plan.apply, plan.failed_id
    duplicates = _duplicate_keys(job, data, plan.key_index)
    transaction = org.storage.transaction
    succeeded, failed = job.successes.append, job.failures.append
    for number, row in enumerate(data):
        if job.state == "Aborted":
            return number
        if len(row) != width:
            failed(("", f"INVALID_FIELD:The row has {len(row)} columns and the header {width}:--", row))
            continue
        if number in duplicates:
            failed((failed_id(row), duplicates[number], row))
            continue
        try:
            with transaction():
                record_id, created = apply(row)
        except OrgError as exc:
            failed((failed_id(row), _error_text(exc.code, exc.message, exc.fields), row))
        except FieldValueError as exc:
            # to_storage refusing an external id value before the org turned it into an OrgError
            key = job.external_id.name if job.external_id is not None else None
            failed((failed_id(row), _error_text(exc.code, str(exc), [key] if key else None), row))
        except Exception as exc:  # an emulator bug: this row fails, the rest go on
            failed((failed_id(row), _error_text("UNKNOWN_EXCEPTION", f"{type(exc).__name__}: {exc}",
                                                None), row))
        else:
            succeeded((record_id, "true" if created else "false", row))
    return len(data)


def _duplicate_keys(job: Job, data: list[list[str]], index: int | None) -> dict[int, str]:
    """Rows of an upsert by a custom external id (in column `index`) whose value occurs more than
    once in the same internal batch, with their error: Salesforce fails all of them."""
    key = job.external_id
    if key is None or key.name == "Id" or index is None:
        return {}
    width = len(job.header)
    found: dict[int, str] = {}
    for start in range(0, len(data), INTERNAL_BATCH):
        values = [row[index] if len(row) == width and row[index] not in ("", NULL_CELL) else None
                  for row in data[start:start + INTERNAL_BATCH]]
        keys = [v if v is None or key.case_sensitive else v.lower() for v in values]
        counts = Counter(k for k in keys if k is not None)
        for offset, k in enumerate(keys):
            if k is not None and counts[k] > 1:
                found[start + offset] = _error_text(
                    "DUPLICATE_VALUE", f"Duplicate external id specified: {values[offset]}", None)
    return found


def _error_text(code: str, message: str, fields: Sequence[str] | None) -> str:
    """sf__Error: `CODE:message:Field1 Field2 --`, or `CODE:message:--` without fields."""
    names = " ".join(f for f in fields or () if f)
    return f"{code}:{message}:{names} --" if names else f"{code}:{message}:--"


# -- query jobs ---------------------------------------------------------------------------------

async def _create_query(call: Call, jobs: Jobs) -> Response:
    body = await _body(call)
    operation = QUERY_OPERATIONS.get(str(body.get("operation", "")).lower())
    if operation is None:
        raise _invalid_job(f"operation must be query or queryAll: {body.get('operation')}")
    text = body.get("query")
    if not isinstance(text, str) or not text.strip():
        raise _invalid_job("query is required")
    delimiter, line_ending = _format(body)
    org = call.org
    try:
        compiled = soql.compile(text, org.schema, include_deleted=operation == "queryAll",
                                now=org.clock.now())
    except soql.SoqlError as exc:
        raise OrgError(400, exc.code, exc.message) from None
    if compiled.count_only or compiled.aggregates:
        raise OrgError(400, "API_ERROR", "Bulk query does not support COUNT() or aggregate functions")
    if compiled.offset:
        raise OrgError(400, "API_ERROR", "Bulk query does not support OFFSET")
    if compiled.has_subqueries:
        raise OrgError(400, "API_ERROR", "Bulk query does not support relationship subqueries")
    started = time.perf_counter()

    def snapshot() -> list[str]:
        with org.storage.lock:
            return compiled.fetch_ids(org.storage.db)

    matched = await run_in_threadpool(snapshot)
    now = stored_datetime(org.clock.now())
    job = Job(jobs.new_id(), "query", operation, compiled.object, call.session.user_id, now,
              call.version, delimiter, line_ending, "JobComplete", now, compiled=compiled,
              matched=matched, processed=len(matched), hold=jobs.in_progress_polls,
              processing_ms=int((time.perf_counter() - started) * 1000))
    jobs.add(job)
    return JSONResponse(_info(job, "UploadComplete"))


def _query_results(call: Call, job: Job) -> Response:
    state = job.visible_state
    if state in ("Aborted", "Failed"):
        raise _invalid_state(f"Job {job.id} is {state}; it has no results")
    if state != "JobComplete":
        raise OrgError(412, "JOB_NOT_COMPLETE", f"Job {job.id} is {state}; its results are not ready")
    assert job.compiled is not None
    locator = call.query("locator")
    offset = _decode_locator(locator, len(job.matched)) if locator else 0
    size_text = call.query("maxRecords")
    size = DEFAULT_MAX_RECORDS
    if size_text:
        if not size_text.isdigit() or int(size_text) <= 0:
            raise OrgError(400, "INVALID_PARAMETER_VALUE", f"maxRecords must be a positive integer: "
                                                           f"{size_text}")
        size = int(size_text)
    page = job.matched[offset:offset + size]
    org = call.org
    with org.storage.lock:
        rows = job.compiled.fetch_rows(org.storage.db, page)
    end = offset + len(page)
    headers = {"Sforce-Locator": _encode_locator(end) if end < len(job.matched) else "null",
               "Sforce-NumberOfRecords": str(len(rows))}
    return _csv_response(job.compiled.csv_header, rows, DELIMITERS[job.column_delimiter],
                         LINE_ENDINGS[job.line_ending], headers)


def _encode_locator(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode().rstrip("=")


def _decode_locator(locator: str, total: int) -> int:
    try:
        text = base64.urlsafe_b64decode(locator + "=" * (-len(locator) % 4)).decode()
        prefix, _, number = text.partition(":")
        offset = int(number)
        if prefix != "offset" or not 0 <= offset <= total:
            raise ValueError(text)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise OrgError(400, "INVALID_QUERY_LOCATOR", f"Invalid locator: {locator}") from None
    return offset
