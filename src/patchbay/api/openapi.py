"""The OpenAPI 3.1 description of the API, written by hand (GET /openapi.json serves it)."""

from __future__ import annotations

from typing import Any


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict[str, Any]:
    return _json(_ref("Error"), description)


def _soap(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/xml": {"schema": {"type": "string"}}}}


_UNAUTHORIZED = {"401": {"$ref": "#/components/responses/Unauthorized"}}
_BAD_REQUEST = {"400": _error("Bad input; `problems` lists every problem found.")}
_JSON_BODY = {"413": _error("A body over 1 MiB."),
              "415": _error("A body not sent as Content-Type: application/json.")}


def _nullable(kind: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(kind, str):
        return {"type": [kind, "null"]}
    return {"anyOf": [kind, {"type": "null"}]}


def _query(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema}


def _limit(default: int) -> dict[str, Any]:
    return _query("limit", "How many at most.",
                  {"type": "integer", "minimum": 1, "maximum": 1000, "default": default})


_IDS_BODY = {"required": True, "content": {"application/json": {"schema": _ref("Ids")}}}

_TIME = {"type": "string", "format": "date-time"}

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object", "required": ["error"],
        "properties": {
            "error": {"type": "string", "description": "What went wrong, in a sentence."},
            "problems": {"type": "array", "items": {"type": "string"},
                         "description": "Every problem of bad input (400), each on its own."},
            "run": {"type": "string", "description": "409: the run already going."},
            "url": {"type": "string", "description": "409: where to follow that run."}},
    },
    "Health": {"type": "object", "required": ["ok"], "properties": {"ok": {"const": True}}},
    "Parameter": {
        "type": "object", "required": ["type", "required"],
        "properties": {
            "type": {"enum": ["string", "integer", "number", "boolean", "date", "datetime", "list"]},
            "required": {"type": "boolean"},
            "default": {"description": "Used when the parameter is not given."},
            "description": _nullable("string"),
            "choices": _nullable({"type": "array"})},
    },
    "Integration": {
        "type": "object", "required": ["name", "pattern", "parameters"],
        "properties": {
            "name": {"type": "string"},
            "pattern": {"enum": ["migration", "broadcast"]},
            "description": _nullable("string"),
            "parameters": {"type": "object", "additionalProperties": _ref("Parameter")},
            "destinations": {"type": "array", "items": {"type": "string"},
                             "description": "Broadcasts: the names of their destinations."},
            "served": {"type": "boolean",
                       "description": "Broadcasts: whether this server keeps it going."}},
    },
    "Integrations": {
        "type": "object", "required": ["integrations"],
        "properties": {"integrations": {"type": "array", "items": _ref("Integration")}},
    },
    "StartRun": {
        "type": "object", "required": ["integration"], "additionalProperties": False,
        "properties": {
            "integration": {"type": "string", "description": "The integration's name."},
            "params": {"type": "object", "description": "Run parameters by name; a value of "
                       "the parameter's JSON type, or text the parameter parses "
                       "(dates as ISO 8601, lists also as comma-separated text)."},
            "full": {"type": "boolean", "default": False,
                     "description": "Migrations: ignore the incremental watermark."},
            "fresh": {"type": "boolean", "default": False,
                      "description": "Migrations: start a new run even if an unfinished one "
                                     "with these parameters could be resumed."}},
    },
    "RunStarted": {
        "type": "object", "required": ["run", "integration", "status", "url"],
        "properties": {"run": {"type": "string"}, "integration": {"type": "string"},
                       "status": {"const": "running"}, "url": {"type": "string"}},
    },
    "BroadcastSummary": {
        "type": "object", "required": ["integration", "pattern", "changes", "delivered", "retried",
                                       "dead", "outbox"],
        "properties": {
            "integration": {"type": "string"}, "pattern": {"const": "broadcast"},
            "changes": {"type": "integer", "description": "Changes polled from the source."},
            "delivered": {"type": "integer"}, "retried": {"type": "integer"},
            "dead": {"type": "integer", "description": "Deliveries that became dead letters."},
            "outbox": _ref("OutboxCounts")},
    },
    "RunStatus": {"enum": ["running", "interrupted", "failed", "complete",
                           "complete_with_rejects", "incomplete"]},
    "RunSummary": {
        "type": "object",
        "required": ["run", "integration", "pattern", "status", "counters", "started_at", "url"],
        "properties": {
            "run": {"type": "string"}, "integration": {"type": "string"},
            "pattern": {"type": "string"}, "status": _ref("RunStatus"),
            "counters": {"type": "object", "additionalProperties": {"type": "integer"},
                         "description": "read, created, updated, unchanged, rejected, ..."},
            "started_at": _TIME, "finished_at": _nullable(_TIME),
            "error": _nullable("string"), "url": {"type": "string"}},
    },
    "Runs": {
        "type": "object", "required": ["runs"],
        "properties": {"runs": {"type": "array", "items": _ref("RunSummary")}},
    },
    "Run": {
        "allOf": [_ref("RunSummary"), {
            "type": "object",
            "required": ["params", "full", "batches", "active", "report"],
            "properties": {
                "params": {"type": "object"}, "full": {"type": "boolean"},
                "batches": {"type": "integer"}, "heartbeat_at": _nullable(_TIME),
                "active": {"type": "boolean",
                           "description": "Whether this server is carrying the run now."},
                "report": _nullable({"type": "object", "description": "The run's report (verdict, "
                                     "counts, comparison with the destination); once finished."})}}],
    },
    "DeadLetter": {
        "type": "object",
        "required": ["id", "integration", "destination", "record_key", "operation", "status",
                     "attempts", "created_at"],
        "properties": {
            "id": {"type": "integer"}, "integration": {"type": "string"},
            "destination": {"type": "string"}, "record_key": {"type": "string"},
            "version": _nullable("string"), "operation": {"enum": ["upsert", "delete"]},
            "status": {"enum": ["pending", "delivered", "dead", "discarded"]},
            "attempts": {"type": "integer"}, "last_error": _nullable("string"),
            "created_at": _TIME, "next_attempt_at": _nullable(_TIME),
            "delivered_at": _nullable(_TIME)},
    },
    "DeadLetters": {
        "type": "object", "required": ["dead_letters"],
        "properties": {"dead_letters": {"type": "array", "items": _ref("DeadLetter")}},
    },
    "Delivery": {
        "allOf": [_ref("DeadLetter"), {
            "type": "object", "required": ["payload"],
            "properties": {"payload": _nullable({"type": "object",
                                                 "description": "The record to write."})}}],
    },
    "Ids": {
        "type": "object", "required": ["ids"], "additionalProperties": False,
        "properties": {"ids": {"type": "array", "minItems": 1, "maxItems": 10000,
                               "items": {"type": "integer", "minimum": 1,
                                         "maximum": 2 ** 63 - 1}}},
    },
    "Replayed": {
        "type": "object", "required": ["replayed", "requested"],
        "properties": {"replayed": {"type": "integer", "description": "How many were dead letters "
                                    "and are pending again."},
                       "requested": {"type": "integer"}},
    },
    "Discarded": {
        "type": "object", "required": ["discarded", "requested"],
        "properties": {"discarded": {"type": "integer", "description": "How many were dead "
                                     "letters and are given up on."},
                       "requested": {"type": "integer"}},
    },
    "OutboxCounts": {
        "type": "object", "description": "Per destination, deliveries per status.",
        "additionalProperties": {
            "type": "object", "properties": {s: {"type": "integer"} for s in
                                             ("pending", "delivered", "dead", "discarded")}},
    },
    "Cluster": {
        "type": "object", "required": ["processes", "leases"],
        "properties": {
            "processes": {"type": "array", "items": {
                "type": "object",
                "required": ["id", "host", "pid", "role", "version", "status", "started_at",
                             "heartbeat_at", "heartbeat_age_seconds", "ended_at", "leases",
                             "delivering"],
                "properties": {
                    "id": {"type": "string", "description": "host:pid:random"},
                    "host": {"type": "string"}, "pid": {"type": "integer"},
                    "role": {"enum": ["serve", "worker"]}, "version": {"type": "string"},
                    "status": {"enum": ["running", "stopped", "gone"]},
                    "started_at": {"type": "string", "format": "date-time"},
                    "heartbeat_at": {"type": "string", "format": "date-time"},
                    "heartbeat_age_seconds": {"type": "number"},
                    "ended_at": {"type": ["string", "null"], "format": "date-time"},
                    "leases": {"type": "array", "items": {"type": "string"},
                               "description": "The leases it holds now."},
                    "delivering": {"type": "integer",
                                   "description": "Deliveries it holds leased now."}}}},
            "leases": {"type": "array", "items": {
                "type": "object",
                "required": ["name", "holder", "token", "acquired_at", "renewed_at",
                             "expires_at", "expired"],
                "properties": {
                    "name": {"type": "string"}, "holder": {"type": ["string", "null"]},
                    "token": {"type": "integer", "description": "The fencing token: raised "
                                                                "at every change of holder."},
                    "acquired_at": {"type": "string", "format": "date-time"},
                    "renewed_at": {"type": "string", "format": "date-time"},
                    "expires_at": {"type": "string", "format": "date-time"},
                    "expired": {"type": "boolean"}}}}},
    },
    "Outbox": {
        "type": "object", "required": ["integration", "destinations"],
        "properties": {"integration": {"type": "string"}, "destinations": _ref("OutboxCounts")},
    },
    "Conflict": {
        "type": "object",
        "required": ["id", "integration", "object", "gid", "kind", "policy", "candidates",
                     "status", "created_at", "url"],
        "properties": {
            "id": {"type": "integer"}, "integration": {"type": "string"},
            "object": {"type": "string", "description": "The shared object (customer)."},
            "gid": {"type": "string", "description": "The record's global id."},
            "field": _nullable("string"),
            "kind": {"enum": ["field", "delete", "match"]},
            "policy": {"type": "string", "description": "latest, priority, owner, manual; "
                                                        "delete or update for a delete."},
            "candidates": {"type": "object", "description": "Participant -> the value it had."},
            "winner": _nullable("string"),
            "chosen": {"description": "The value a person chose (chosen, resolved)."},
            "status": {"enum": ["settled", "held", "chosen", "resolved"]},
            "created_at": _TIME, "resolved_at": _nullable(_TIME),
            "resolved_by": _nullable("string"), "url": {"type": "string"},
            "applied": {"type": "string", "description": "After a choice: when it is applied."}},
    },
    "Conflicts": {
        "type": "object", "required": ["conflicts"],
        "properties": {"conflicts": {"type": "array", "items": _ref("Conflict")}},
    },
    "Resolve": {
        "type": "object", "additionalProperties": False,
        "description": "`value` or `pick`, one of them.",
        "properties": {
            "value": {"description": "The value to write to every participant (any JSON)."},
            "pick": {"type": "string", "minLength": 1, "maxLength": 255,
                     "description": "The participant whose value stands."},
            "by": {"type": "string", "minLength": 1, "maxLength": 255,
                   "description": "Who chose (default: api)."}},
    },
    "Pair": {
        "type": "object", "required": ["left", "right", "status"],
        "description": "Two keys, one of each side, and their scores: no value of either record.",
        "properties": {
            "integration": _nullable("string"),
            "left": {"type": "string", "description": "The first side's record key."},
            "right": {"type": "string", "description": "The second side's record key."},
            "status": {"enum": ["link", "review", "accepted", "rejected", "dropped"]},
            "gid": _nullable("string"), "weight": _nullable("number"),
            "probability": _nullable("number"), "decided_by": _nullable("string"),
            "applied": {"type": "string", "description": "After a decision: when it is applied."}},
    },
    "Pairs": {
        "type": "object", "required": ["pairs"],
        "properties": {"pairs": {"type": "array", "items": _ref("Pair")}},
    },
    "Decide": {
        "type": "object", "additionalProperties": False,
        "required": ["left", "right", "decision"],
        "properties": {
            "left": {"type": "string", "minLength": 1, "maxLength": 1000},
            "right": {"type": "string", "minLength": 1, "maxLength": 1000},
            "decision": {"enum": ["accepted", "rejected"]},
            "by": {"type": "string", "minLength": 1, "maxLength": 255,
                   "description": "Who decided (default: api)."}},
    },
    "Ledger": {
        "type": "object", "required": ["integration", "ledger"],
        "properties": {
            "integration": {"type": "string"},
            "ledger": {"type": "array", "items": {
                "type": "object",
                "description": "One field that crossed (the value itself stays in the "
                               "systems), or a pair linked or its link dropped.",
                "properties": {
                    "id": {"type": "integer"}, "gid": {"type": "string"},
                    "source": {"type": "string"}, "source_key": _nullable("string"),
                    "target": {"type": "string"}, "target_key": _nullable("string"),
                    "field": {"type": "string"}, "weight": _nullable("number"), "at": _TIME,
                    "event": {"enum": ["crossed", "linked", "dropped"]}}}}},
    },
}

_INTEGRATION = {"name": "integration", "in": "path", "required": True, "schema": {"type": "string"}}

PATHS: dict[str, Any] = {
    "/health": {"get": {
        "summary": "Whether the server answers", "operationId": "health", "security": [],
        "responses": {"200": _json(_ref("Health"), "The server is up.")}}},
    "/openapi.json": {"get": {
        "summary": "This document", "operationId": "openapi",
        "responses": {"200": _json({"type": "object"}, "The OpenAPI document."), **_UNAUTHORIZED}}},
    "/metrics": {"get": {
        "summary": "Metrics in Prometheus' text format", "operationId": "metrics",
        "description": "This process's counts (records read, written, set aside and failed; "
                       "run durations; delivery latency; Salesforce API usage; notifications) "
                       "and the engine state's figures read now (outbox pending, dead and "
                       "oldest per destination; a sync's conflicts; a correlation's pairs). "
                       "Scrapers send the API token as a bearer token.",
        "responses": {"200": {"description": "The metrics.", "content": {
            "text/plain": {"schema": {"type": "string"}}}}, **_UNAUTHORIZED}}},
    "/integrations": {"get": {
        "summary": "The integrations of the served file", "operationId": "listIntegrations",
        "responses": {"200": _json(_ref("Integrations"), "Names, patterns, parameters."),
                      **_UNAUTHORIZED}}},
    "/runs": {
        "get": {
            "summary": "Runs, newest first", "operationId": "listRuns",
            "parameters": [_query("integration", "Only runs of this integration.",
                                  {"type": "string"}), _limit(50)],
            "responses": {"200": _json(_ref("Runs"), "The runs."), **_BAD_REQUEST,
                          **_UNAUTHORIZED}},
        "post": {
            "summary": "Start a migration, or run one round of a broadcast",
            "description": "A migration is recorded and started (or its unfinished run with "
                           "the same parameters resumed, unless `fresh`) and carried on in the "
                           "background: 202 with the run's id; follow it at GET /runs/{run_id}. "
                           "A broadcast polls everything new and delivers everything due, then "
                           "answers 200 with the summary.",
            "operationId": "startRun",
            "requestBody": {"required": True,
                            "content": {"application/json": {"schema": _ref("StartRun")}}},
            "responses": {
                "200": _json(_ref("BroadcastSummary"), "The broadcast round, done."),
                "202": {**_json(_ref("RunStarted"), "The migration started."),
                        "headers": {"Location": {"schema": {"type": "string"},
                                                 "description": "The run's URL."}}},
                **_BAD_REQUEST, **_UNAUTHORIZED, **_JSON_BODY,
                "409": _error("A run of this integration with these parameters is going."),
                "500": _error("The integration cannot run (its file does not fit its systems)."),
                "502": _error("A system of the broadcast could not be reached."),
                "503": _error("The server is shutting down, or (an aggregation) is computing as "
                              "many aggregations as it may: retry after Retry-After seconds.")}},
    },
    "/runs/{run_id}": {"get": {
        "summary": "One run: status, counters, error; its report once finished",
        "operationId": "getRun",
        "parameters": [{"name": "run_id", "in": "path", "required": True,
                        "schema": {"type": "string"}}],
        "responses": {"200": _json(_ref("Run"), "The run."), **_UNAUTHORIZED,
                      "404": _error("No such run.")}}},
    "/dead-letters": {"get": {
        "summary": "Dead letters, oldest first", "operationId": "listDeadLetters",
        "parameters": [_query("integration", "Only this integration's.", {"type": "string"}),
                       _query("destination", "Only this destination's.", {"type": "string"}),
                       _limit(100)],
        "responses": {"200": _json(_ref("DeadLetters"), "The dead letters (without payloads)."),
                      **_BAD_REQUEST, **_UNAUTHORIZED}}},
    "/dead-letters/{delivery_id}": {"get": {
        "summary": "One delivery, payload included", "operationId": "getDeadLetter",
        "parameters": [{"name": "delivery_id", "in": "path", "required": True,
                        "schema": {"type": "integer"}}],
        "responses": {"200": _json(_ref("Delivery"), "The delivery, whatever its status."),
                      **_UNAUTHORIZED, "404": _error("No such delivery.")}}},
    "/dead-letters/replay": {"post": {
        "summary": "Send dead letters again", "operationId": "replayDeadLetters",
        "description": "They become pending, attempts reset; the next delivery round (the "
                       "server's broadcast loop, or POST /runs) delivers them first.",
        "requestBody": _IDS_BODY,
        "responses": {"200": _json(_ref("Replayed"), "How many were replayed."),
                      **_BAD_REQUEST, **_UNAUTHORIZED, **_JSON_BODY}}},
    "/dead-letters/discard": {"post": {
        "summary": "Give up on dead letters for good", "operationId": "discardDeadLetters",
        "description": "Final; unblocks later changes of the same records.",
        "requestBody": _IDS_BODY,
        "responses": {"200": _json(_ref("Discarded"), "How many were discarded."),
                      **_BAD_REQUEST, **_UNAUTHORIZED, **_JSON_BODY}}},
    "/outbox/{integration}": {"get": {
        "summary": "An integration's deliveries per destination and status (a broadcast, "
                   "a sync, a correlation)",
        "operationId": "getOutbox",
        "parameters": [{"name": "integration", "in": "path", "required": True,
                        "schema": {"type": "string"}}],
        "responses": {"200": _json(_ref("Outbox"), "The counts."),
                      "400": _error("The integration keeps no outbox."), **_UNAUTHORIZED,
                      "404": _error("No such integration.")}}},
    "/cluster": {"get": {
        "summary": "The serve and worker processes sharing the engine state, and the leases",
        "description": "Each process with its heartbeat, the leases it holds and the "
                       "deliveries it is writing; a running process silent for a minute is "
                       "shown gone. Then every lease, with its holder, token and expiry.",
        "operationId": "getCluster",
        "responses": {"200": _json(_ref("Cluster"), "The processes and leases."),
                      **_UNAUTHORIZED}}},
    "/conflicts": {"get": {
        "summary": "A sync's conflicts, newest first", "operationId": "listConflicts",
        "parameters": [_query("integration", "Only this integration's.", {"type": "string"}),
                       _query("status", "Only conflicts in this status.",
                              {"enum": ["settled", "held", "chosen", "resolved"]}),
                       _limit(100),
                       _query("offset", "How many to skip.",
                              {"type": "integer", "minimum": 0, "maximum": 1000000,
                               "default": 0})],
        "responses": {"200": _json(_ref("Conflicts"), "The conflicts."),
                      **_BAD_REQUEST, **_UNAUTHORIZED}}},
    "/conflicts/{conflict_id}": {"get": {
        "summary": "One conflict: every candidate value, the policy, the winner or the choice",
        "operationId": "getConflict",
        "parameters": [{"name": "conflict_id", "in": "path", "required": True,
                        "schema": {"type": "integer"}}],
        "responses": {"200": _json(_ref("Conflict"), "The conflict."),
                      **_UNAUTHORIZED, "404": _error("No such conflict.")}}},
    "/conflicts/{conflict_id}/resolve": {"post": {
        "summary": "Settle a conflict held for a person", "operationId": "resolveConflict",
        "description": "Only a conflict held for a person (policy manual) takes a choice: "
                       "the value given, or the value the picked participant had. The sync "
                       "writes it to every participant on its next round.",
        "parameters": [{"name": "conflict_id", "in": "path", "required": True,
                        "schema": {"type": "integer"}}],
        "requestBody": {"required": True,
                        "content": {"application/json": {"schema": _ref("Resolve")}}},
        "responses": {"200": _json(_ref("Conflict"), "The choice is recorded."),
                      **_BAD_REQUEST, **_UNAUTHORIZED, **_JSON_BODY,
                      "404": _error("No such conflict."),
                      "409": _error("The conflict is not held for a person (settled by its "
                                    "policy, or chosen already).")}}},
    "/reviews": {"get": {
        "summary": "A correlation's pairs, best weight first (keys and scores only)",
        "operationId": "listReviews",
        "parameters": [_query("integration", "Only this correlation's.", {"type": "string"}),
                       _query("status", "Only pairs in this status (review: waiting for a person).",
                              {"enum": ["link", "review", "accepted", "rejected", "dropped"]}),
                       _limit(100),
                       _query("offset", "How many to skip.",
                              {"type": "integer", "minimum": 0, "maximum": 1000000,
                               "default": 0})],
        "responses": {"200": _json(_ref("Pairs"), "The pairs."),
                      "400": _error("Bad input, or the integration is not a correlation."),
                      **_UNAUTHORIZED, "404": _error("No such integration.")}}},
    "/reviews/{integration}/decide": {"post": {
        "summary": "A person's decision on a correlation's pair", "operationId": "decidePair",
        "description": "accepted links the pair's records, rejected never links them; the "
                       "decision is kept over every later match, and the correlation applies "
                       "it at its next match (a run, or serve's next rematch).",
        "parameters": [_INTEGRATION],
        "requestBody": {"required": True,
                        "content": {"application/json": {"schema": _ref("Decide")}}},
        "responses": {"200": _json(_ref("Pair"), "The decision is recorded."),
                      "400": _error("Bad input, or the integration is not a correlation."),
                      **_UNAUTHORIZED, **_JSON_BODY,
                      "404": _error("No such integration, or no such pair.")}}},
    "/audit/{integration}": {"get": {
        "summary": "A correlation's audit ledger, newest first", "operationId": "getAudit",
        "parameters": [_INTEGRATION,
                       _query("key", "Only what crossed to or from this record.", {"type": "string"}),
                       _query("field", "Only this shared field.", {"type": "string"}),
                       _query("since", "Only since this time (ISO 8601; UTC unless it says).",
                              {"type": "string"}),
                       _limit(100)],
        "responses": {"200": _json(_ref("Ledger"), "What crossed."),
                      "400": _error("Bad input, or the integration is not a correlation."),
                      **_UNAUTHORIZED, "404": _error("No such integration.")}}},
    "/aggregations/{integration}": {"get": {
        "summary": "An aggregation's live answer",
        "description": "Reads every source of the aggregation now (in parallel, each with its "
                       "timeout), merges them and answers. The integration's declared "
                       "parameters are query parameters (e.g. ?email=...). A failed or slow "
                       "source makes the answer partial (`partial`, and the headers "
                       "X-Patchbay-Partial and X-Patchbay-Failed-Sources); the columns it left "
                       "null are named in `incomplete` and X-Patchbay-Incomplete-Columns; a "
                       "required one makes it 503. JSON by default; CSV with ?format=csv or "
                       "Accept: text/csv; streamed. At most 4 answers are computed at once: "
                       "past that, 503 with Retry-After.",
        "operationId": "getAggregation",
        "parameters": [
            {"name": "integration", "in": "path", "required": True, "schema": {"type": "string"}},
            {"name": "format", "in": "query", "schema": {"enum": ["json", "csv"]}}],
        "responses": {
            "200": {"description": "The merged records and each source's status.",
                    "content": {
                        "application/json": {"schema": {"type": "object", "properties": {
                            "integration": {"type": "string"}, "rows": {"type": "integer"},
                            "partial": {"type": "boolean"},
                            "incomplete": {"type": "object", "additionalProperties": {
                                "type": "array", "items": {"type": "string"}}},
                            "sources": {"type": "object", "additionalProperties": {
                                "type": "object"}},
                            "records": {"type": "array", "items": {"type": "object"}}}}},
                        "text/csv": {"schema": {"type": "string"}}}},
            "400": _error("A parameter is missing or invalid, or an unknown format."),
            **_UNAUTHORIZED,
            "404": _error("No such aggregation."),
            "413": _error("More rows than a live answer holds: write a report instead."),
            "503": _json({"type": "object"}, "A required source failed: no answer, the "
                                             "sources' statuses say why. Or the server is "
                                             "computing as many answers as it may: retry "
                                             "after the Retry-After header's seconds.")}}},
    "/hooks/{integration}": {"post": {
        "summary": "Changes pushed by a broadcast's source or a sync's participant (signed "
                   "webhook)",
        "description": "No bearer token: the request is signed instead. Headers "
                       "X-Patchbay-Timestamp (Unix seconds, within the trigger's "
                       "max_age_seconds of now) and X-Patchbay-Signature (`sha256=` + hex "
                       "HMAC-SHA256 of `<timestamp>.<body>` with the secret named by the "
                       "integration's trigger.webhook.secret_env); X-Patchbay-Source when the "
                       "integration lists its sources, and for a sync always: it names the "
                       "participant pushing (whose trigger declares the webhook; a body of a "
                       "participant holding several objects names one in \"object\"). The "
                       "headers are checked before the "
                       "body is read; the body, at most 5 MB, is {\"changes\": [{\"kind\", "
                       "\"record\"}]} or {\"ids\": [...]} (current values are fetched; an id "
                       "the source does not have is a delete only when the source says it was "
                       "deleted). A signed request is taken once: sent again it is 409. A "
                       "change older than one of the same record already queued is left out. "
                       "Answered once the changes are in the outbox; a server that keeps the "
                       "broadcast going delivers them at once.",
        "operationId": "pushChanges",
        "security": [],
        "parameters": [
            {"name": "integration", "in": "path", "required": True, "schema": {"type": "string"}},
            {"name": "X-Patchbay-Timestamp", "in": "header", "required": False,
             "schema": {"type": "string", "pattern": "^[0-9]{1,12}$"}},
            {"name": "X-Patchbay-Signature", "in": "header", "required": False,
             "schema": {"type": "string", "pattern": "^sha256=[0-9a-f]{64}$"}},
            {"name": "X-Patchbay-Source", "in": "header", "required": False,
             "schema": {"type": "string"}}],
        "requestBody": {"required": True, "content": {"application/json": {"schema": {
            "type": "object", "additionalProperties": False, "properties": {
                "changes": {"type": "array", "maxItems": 10000, "items": {
                    "type": "object", "required": ["record"], "properties": {
                        "kind": {"enum": ["created", "updated", "deleted"]},
                        "record": {"type": "object"}}}},
                "ids": {"type": "array", "maxItems": 10000, "items": {"anyOf": [
                    {"type": "string", "minLength": 1, "maxLength": 255},
                    {"type": "integer", "minimum": -(2 ** 63), "maximum": 2 ** 63 - 1}]}}}}}}},
        "responses": {"202": _json({"type": "object", "properties": {
                          "accepted": {"type": "integer"}}}, "The changes are durably queued."),
                      "400": _error("A malformed timestamp or body; `problems` says what."),
                      "401": _error("Missing, wrong or stale signature."),
                      "403": _error("A source that is not accepted."),
                      "404": _error("No broadcast with a webhook trigger of that name."),
                      "409": _error("This signed request was accepted already (a replay)."),
                      "413": _error("A body over 5 MB."),
                      "500": _error("The webhook's secret is not set on the server."),
                      "502": _error("The source could not be reached to fetch the ids.")}}},
    "/outbound/{integration}": {"post": {
        "summary": "Salesforce Outbound Messages for a broadcast or a sync's participant "
                   "(SOAP 1.1 notifications)",
        "description": "No bearer token: Salesforce cannot send one. The integration's "
                       "trigger.outbound_messages names the org whose notifications are "
                       "accepted (15- or 18-character id) and, with secret_env, a secret the "
                       "endpoint URL configured in Salesforce carries as `?secret=` (required "
                       "unless the trigger says allow_unauthenticated). Only the "
                       "notifications' record ids are used (15- and 18-character ids name the "
                       "same record): current values are fetched from the source, and an id it "
                       "does not have is a delete only when it holds the record as deleted. "
                       "The Ack is sent once the changes are in the outbox; any other answer "
                       "is a SOAP fault, after which Salesforce sends the message again.",
        "operationId": "receiveOutboundMessage",
        "security": [],
        "parameters": [{"name": "integration", "in": "path", "required": True,
                        "schema": {"type": "string"}},
                       _query("secret", "The secret of trigger.outbound_messages.secret_env.",
                              {"type": "string"})],
        "requestBody": {"required": True, "description": "A `notifications` SOAP envelope "
                        "(namespace http://soap.sforce.com/2005/09/outbound), at most 5 MB and "
                        "100,000 elements, UTF-8, without DOCTYPE or ENTITY declarations.",
                        "content": {t: {"schema": {"type": "string"}}
                                    for t in ("text/xml", "application/soap+xml")}},
        "responses": {"200": _soap("`notificationsResponse` with `Ack` true: the changes are "
                                   "durably queued."),
                      "400": _soap("Fault (soapenv:Client): a malformed message, or one of "
                                   "another object."),
                      "401": _soap("Fault: the URL's secret missing or wrong."),
                      "403": _soap("Fault: a notification from another org."),
                      "404": _soap("Fault: no broadcast with trigger.outbound_messages of that "
                                   "name."),
                      "413": _soap("Fault: a body over 5 MB."),
                      "415": _soap("Fault: a body that is not UTF-8 text/xml or "
                                   "application/soap+xml."),
                      "500": _soap("Fault (soapenv:Server): the changes could not be recorded "
                                   "now, a system or the engine state being unreachable, or "
                                   "the secret not set on the server; Salesforce retries.")}}},
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {
        "title": "patchbay",
        "version": "1",
        "description": "Run the integrations of one file on demand, follow their runs, and "
                       "handle broadcast dead letters, a sync's conflicts and a correlation's "
                       "reviews. Every route but GET /health "
                       "needs `Authorization: Bearer <token>`, the server's PATCHBAY_API_TOKEN. "
                       "A server without a token listens on loopback only and answers only "
                       "requests whose Host is a loopback name (403 otherwise). Bodies of "
                       "POST /runs, /dead-letters/*, /conflicts/*/resolve and /reviews/*/decide are "
                       "application/json only. "
                       "Errors are JSON: {\"error\": ..., \"problems\": [...]}.",
    },
    "security": [{"bearer": []}],
    "paths": PATHS,
    "components": {
        "securitySchemes": {"bearer": {
            "type": "http", "scheme": "bearer",
            "description": "The token the server was started with (PATCHBAY_API_TOKEN)."}},
        "responses": {"Unauthorized": {
            **_error("No token, or the wrong one."),
            "headers": {"WWW-Authenticate": {"schema": {"type": "string"}}}}},
        "schemas": SCHEMAS,
    },
}
