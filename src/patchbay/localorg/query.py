"""query, queryMore and queryAll: SOQL through `soql.compile`, paged through cursors;
`columns=true` answers the query's column metadata instead of its records.

A query snapshots the ids it matches when it runs; its pages are then read by id, so a
cursor sees the records that matched, with their values at the time each page is read.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from starlette.responses import JSONResponse, Response

from patchbay.localorg import soql
from patchbay.localorg.cursors import Cursor, InvalidLocator
from patchbay.localorg.org import OrgError

if TYPE_CHECKING:
    from patchbay.localorg.server import Call

DEFAULT_PAGE = 2000


async def handle(call: Call, include_deleted: bool, rest: list[str]) -> Response:
    org = call.org
    cursors = org.cursors
    if rest:
        locator, _, offset = rest[0].rpartition("-")
        try:
            cursor = cursors.get(locator, org.clock.now())
        except InvalidLocator:
            raise OrgError(400, "INVALID_QUERY_LOCATOR", "invalid query locator") from None
        return _page(call, cursor, locator, int(offset) if offset.isdigit() else 0)
    text = call.query("q")
    if not text:
        raise OrgError(400, "MALFORMED_QUERY", "A query string must be provided.")
    try:
        compiled = soql.compile(text, org.schema, include_deleted=include_deleted,
                                now=org.clock.now())
    except soql.SoqlError as exc:
        raise OrgError(400, exc.code, str(exc)) from None
    if (call.query("columns") or "").lower() == "true":
        # Column metadata only (what the Salesforce CLI asks for to lay out its table).
        return JSONResponse(compiled.column_metadata())
    db = org.storage.db
    with org.storage.lock:
        if compiled.count_only:
            (total,) = db.execute(compiled.count_sql, compiled.params).fetchone()
            return JSONResponse({"totalSize": total, "done": True, "records": []})
        if compiled.aggregates:
            records = compiled.fetch_aggregates(db)
            return JSONResponse({"totalSize": len(records), "done": True, "records": records})
        matched = [row[0] for row in db.execute(compiled.ids_sql, compiled.params)]
    cursor = Cursor(compiled, matched, _page_size(call), org.clock.now())
    locator = cursors.open(cursor) if len(matched) > cursor.page_size else ""
    return _page(call, cursor, locator, 0)


def _page(call: Call, cursor: Cursor, locator: str, offset: int) -> Response:
    org = call.org
    page = cursor.ids[offset:offset + cursor.page_size]
    with org.storage.lock:
        records = cursor.compiled.fetch_records(org.storage.db, page, call.version)
    done = offset + len(page) >= len(cursor.ids)
    body: dict[str, Any] = {"totalSize": len(cursor.ids), "done": done, "records": records}
    if not done:
        body["nextRecordsUrl"] = (f"/services/data/v{call.version}/query/"
                                  f"{locator}-{offset + len(page)}")
    return JSONResponse(body)


def _page_size(call: Call) -> int:
    options = call.request.headers.get("sforce-query-options", "")
    for part in options.split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "batchsize" and value.strip().isdigit():
            return min(max(int(value), 200), DEFAULT_PAGE)
    return DEFAULT_PAGE

