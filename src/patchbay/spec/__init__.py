"""Integration files: the pydantic models, and loading YAML with errors that name file, line and field.

An integration file declares systems once and integrations that refer to them:

    systems:
      legacy: sqlite:///legacy_crm.db
      warehouse: postgresql://app:${PG_PASSWORD}@db.internal/crm
    integrations:
      - name: Legacy CRM to warehouse - Account - migration
        pattern: migration
        source: {system: legacy, object: accounts, key: acct_id, scope: {...}}
        transform: {fields: {...}}
        destination: {system: warehouse, object: accounts, operation: upsert, key: legacy_id}

The models are the documentation: `patchbay schema` prints their JSON Schema.
"""

from __future__ import annotations

import base64
import datetime as dt
import difflib
import os
import re
import zoneinfo
from collections.abc import Callable, Iterable, Mapping
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal, Union, get_args, get_origin
from urllib.parse import parse_qsl, quote, quote_plus, unquote, unquote_plus, urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from patchbay.cron import Cron
from patchbay.errors import ParameterError, SpecError
from patchbay.model import FieldType, Operation


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# -- values that may come from run parameters ---------------------------------------------------


class ParamRef(_Model):
    """A value given when the run starts: `{param: country}`."""

    param: str = Field(description="The name of a parameter the integration declares.")


Scalar = str | int | float | bool | dt.date | dt.datetime | None
Value = Scalar | ParamRef


def _as_param_ref(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"param"}:
        return ParamRef(param=value["param"])
    return value


# -- systems ------------------------------------------------------------------------------------


class SystemSpec(_Model):
    """A named connection to one application. Secrets come from `${ENV_VARS}`."""

    url: str = Field(description="Connection URL; the scheme chooses the connector.")
    options: dict[str, Any] = Field(default_factory=dict, description="Connector options.")
    name: str = Field(default="", description="Filled in from the key under `systems`.")

    @model_validator(mode="before")
    @classmethod
    def _from_url_shorthand(cls, value: Any) -> Any:
        return {"url": value} if isinstance(value, str) else value

    @field_validator("url")
    @classmethod
    def _port_is_a_number(cls, value: str) -> str:
        # The drivers would fail on it later with a traceback (int() of the port). Read
        # redacted: an unencoded '/', '?' or '#' in a password would split the URL elsewhere.
        redacted = redact_url(value)
        try:
            _ = urlsplit(redacted).port
        except ValueError:
            raise ValueError(f"the port of {redacted} is not a number from 0 to 65535") from None
        return value

    @property
    def scheme(self) -> str:
        return self.url.split(":", 1)[0].lower()

    @property
    def redacted_url(self) -> str:
        return redact_url(self.url)

    @property
    def secrets(self) -> list[str]:
        """What this system's declaration holds that must never be shown: the URL's password
        (and its Basic authorization form), secret query arguments, and options under
        secret names."""
        try:
            parts = urlsplit(self.url)
            password = parts.password
        except ValueError:
            return [self.url, *_secret_values(self.options)]
        found = [password] if password else []
        # a Basic authorization header carries user and password together, in base64 (the
        # user alone is no secret, so `user:password` is not searched for as text)
        found += [base64.b64encode(f"{parts.username or ''}:{plain}".encode()).decode()
                  for plain in {password, unquote(password)}] if password else []
        found += [value for name, value in parse_qsl(parts.query) if is_secret_name(name) and value]
        found += [match["value"] for match in _QUERY_ARGUMENT.finditer("?" + parts.query)
                  if is_secret_name(match["name"]) and match["value"]]
        return found + _secret_values(self.options)

    def scrub(self, text: str) -> str:
        """`text` (a driver's error, say) with this system's secrets and every URL redacted."""
        return scrub(text, self.secrets)

    def __repr__(self) -> str:
        return f"SystemSpec(name={self.name!r}, url={self.redacted_url!r})"

    __str__ = __repr__


_USERINFO_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^:/@?#]*:)[^@]*@")
_SECRET_NAME = re.compile(
    r"pass|pwd|secret|token|credential|authori[sz]ation|^auth$|private|signature|^sig$"
    r"|^key$|(api|access|ssl|sign|signing|master|encryption)[_-]?key",  # not routing_key
    re.IGNORECASE)
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
_NEXT_URL = re.compile(r",(?=[A-Za-z][A-Za-z0-9+.-]*://)")
_QUERY_ARGUMENT = re.compile(r"(?P<lead>[?&;])(?P<name>[^=&;#]*)=(?P<value>[^&;#]*)")
SECRET_MIN_LENGTH = 4
"""Secrets shorter than this are not searched for in free text: replacing them everywhere
would garble messages more than it would protect."""


def is_secret_name(name: str) -> bool:
    """Whether an option or URL query argument of this name (percent-encoded or not) holds
    a secret: password, passwd, pwd, secret, token, access_token, client_secret,
    sslpassword, api_key, key, authorization, ..."""
    return bool(_SECRET_NAME.search(unquote_plus(name)))


def redact_url(url: str) -> str:
    """The URL with its password and the values of secret query arguments replaced, for logs
    and reports. A comma-separated list of URLs (NATS servers) is redacted URL by URL."""
    if _NEXT_URL.search(url):
        return ",".join(redact_url(part) for part in _NEXT_URL.split(url))
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparseable url>"
    if password is None:
        # an unencoded '/', '?' or '#' in the password hides it from urlsplit, not from
        # SQLAlchemy, which reads everything up to the '@' as the password
        url = _USERINFO_PASSWORD.sub(r"\1***@", url, count=1)
    else:
        netloc = parts.netloc.replace(f":{password}@", ":***@", 1)
        url = urlunsplit(parts._replace(netloc=netloc))
    return _QUERY_ARGUMENT.sub(_redact_argument, url)


def _redact_argument(match: re.Match[str]) -> str:
    if not is_secret_name(match["name"]):
        return match[0]
    return f"{match['lead']}{match['name']}=***"


def redact_urls(text: str) -> str:
    """`text` (an error message, say) with every URL in it redacted."""
    return _URL_IN_TEXT.sub(lambda match: redact_url(match[0]), text)


def secret_forms(secret: str) -> set[str]:
    """The ways a secret may be written out: as is, percent-encoded (both ways, and decoded
    when it came encoded), and base64 (as in a Basic authorization header)."""
    forms = set()
    for plain in {secret, unquote_plus(secret), unquote(secret)}:
        forms |= {plain, quote(plain, safe=""), quote_plus(plain),
                  base64.b64encode(plain.encode()).decode().rstrip("=")}
    return {form for form in forms if len(form) >= SECRET_MIN_LENGTH}


def scrub(text: str, secrets: Iterable[str]) -> str:
    """`text` with its URLs redacted and every form of the given secrets replaced by ***."""
    text = redact_urls(text)
    for form in sorted({f for s in secrets for f in secret_forms(s)}, key=len, reverse=True):
        text = text.replace(form, "***")
    return text


def _secret_values(value: Any, secret: bool = False) -> list[str]:
    """Values under secret names, however deep in an option (headers, nested maps)."""
    if isinstance(value, Mapping):
        return [found for key, item in value.items()
                for found in _secret_values(item, secret or is_secret_name(str(key)))]
    if isinstance(value, (list, tuple)):
        return [found for item in value for found in _secret_values(item, secret)]
    if secret and value is not None and not isinstance(value, bool):
        return [str(value)]
    return []


# -- scope --------------------------------------------------------------------------------------

COMPARISONS = ("eq", "ne", "gt", "gte", "lt", "lte", "like", "not_like")
NORMALIZABLE = ("eq", "ne", "in", "not_in", "like", "not_like")
"""The operators a condition with `normalize: true` may use: text compared for equality or a pattern."""

SCOPE_OPERATORS: dict[str, str] = {
    "eq": "equal to the value",
    "ne": "not equal to the value (null is not in scope, as in SQL)",
    "gt": "greater than the value",
    "gte": "greater than or equal to the value",
    "lt": "less than the value",
    "lte": "less than or equal to the value",
    "like": "matches the SQL pattern: `%` any text, `_` one character",
    "not_like": "does not match the SQL pattern (null is not in scope)",
    "in": "one of a list of values, or a `list` parameter",
    "not_in": "none of a list of values (null is not in scope)",
    "is_null": "`true`: the field is null; `false`: it is not",
}
"""The operators of a condition on a field, with what they mean (the reference lists them)."""


class Scope(_Model):
    """Which records: one condition on a field, or `and` / `or` / `not` of scopes.

    `{field: country, in: [DE, AT]}`, `{field: email, is_null: false}`,
    `{and: [{field: status, eq: active}, {field: updated_at, gte: {param: since}}]}`.
    """

    field: str | None = Field(default=None, description="The field the condition is on.")
    eq: Value = None
    ne: Value = None
    gt: Value = None
    gte: Value = None
    lt: Value = None
    lte: Value = None
    like: Value = None
    not_like: Value = None
    in_: list[Value] | ParamRef | None = Field(default=None, alias="in")
    not_in: list[Value] | ParamRef | None = None
    is_null: bool | None = None
    and_: list[Scope] | None = Field(default=None, alias="and",
                                     description="Every one of these scopes.")
    or_: list[Scope] | None = Field(default=None, alias="or",
                                    description="At least one of these scopes.")
    not_: Scope | None = Field(default=None, alias="not", description="Not this scope.")
    optional: bool = Field(
        default=False, description="Drop this condition when the parameter it names is not "
                                   "given (null): one scope serves 'all' and 'just these'.")
    normalize: bool = Field(
        default=False, description="Compare the field's text and the value(s) trimmed of "
                                   "surrounding whitespace and in lower case, as a match key "
                                   "made with lower(strip(...)) is: `{field: email, eq: {param: "
                                   "email}, normalize: true}` finds 'Ada@Example.com ' for "
                                   "ada@example.com. For eq, ne, in, not_in, like and not_like; "
                                   "pushed down to SQL databases (lower(trim(field))) and to "
                                   "Salesforce (whose text comparisons ignore case).")

    @model_validator(mode="before")
    @classmethod
    def _params(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: _as_param_ref(v) for k, v in value.items()}
        return value

    @model_validator(mode="after")
    def _one_form(self) -> Scope:
        given = [name for name in self.operators_given()]
        groups = [g for g in ("and", "or", "not") if getattr(self, g + "_") is not None]
        if self.field is not None:
            if groups:
                raise ValueError(f"a condition on a field cannot also hold '{groups[0]}'")
            if len(given) != 1:
                ops = ", ".join(SCOPE_OPERATORS)
                raise ValueError(
                    f"a condition on '{self.field}' needs exactly one operator "
                    f"({ops}); found {len(given)}: {', '.join(given) or 'none'}"
                )
        elif len(groups) != 1 or given:
            raise ValueError("a scope is either {field: ..., <operator>: ...} or one of and/or/not")
        if self.normalize and (self.field is None or given[0] not in NORMALIZABLE):
            raise ValueError(f"normalize compares text: it goes with a field and one of "
                             f"{', '.join(NORMALIZABLE)}")
        return self

    def operators_given(self) -> list[str]:
        found = [op for op in COMPARISONS if op in self.model_fields_set]
        found += [op for op, attr in (("in", "in_"), ("not_in", "not_in"), ("is_null", "is_null"))
                  if attr in self.model_fields_set]
        return found


# -- transform ----------------------------------------------------------------------------------


class Lookup(_Model):
    """Find a value in another object: the `returns` field of the record whose `key` equals
    this record's `value` field (e.g. the destination id of an account by its legacy id)."""

    system: str = Field(description="The system to look in.")
    object: str = Field(description="The object to look in.")
    key: str = Field(description="Field of the looked-up object to match on.")
    value: str = Field(description="Field of the source record holding the value to look for.")
    returns: str = Field(description="Field of the looked-up record to use.")
    on_missing: Literal["reject", "null"] = Field(
        default="reject", description="When no record has the value: set the record aside, or null.")


class FieldMapping(_Model):
    """How one destination field is made. Exactly one of from / value / expr / lookup.

    A plain string is shorthand for `{from: <string>}`.
    """

    from_: str | None = Field(default=None, alias="from", description="Source field to copy.")
    value: Any = Field(default=None, description="A constant, or {param: name}.")
    expr: str | None = Field(default=None, description="An expression over the record's fields.")
    lookup: Lookup | None = Field(default=None, description="A field of a record of another object.")
    type: FieldType | None = Field(default=None, description="Coerce the value to this type.")
    formats: list[str] | None = Field(
        default=None, description="strptime formats tried for date and datetime strings."
    )
    map: dict[str, Any] | None = Field(default=None, description="Value map (picklists).")
    unmapped: Literal["keep", "null", "reject"] = Field(
        default="keep", description="What to do with a value the map does not list."
    )
    default: Any = Field(default=None, description="Used when the value is null or empty.")
    required: bool = Field(default=False, description="Reject the record if still null.")
    trim: bool = Field(default=False, description="Strip surrounding spaces from strings.")
    pattern: str | None = Field(
        default=None, description="Regular expression the final value must match, or be rejected.")

    @field_validator("pattern")
    @classmethod
    def _valid_pattern(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        return value

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return {"from": value}
        if isinstance(value, dict) and "value" in value:
            return {**value, "value": _as_param_ref(value["value"])}
        return value

    @model_validator(mode="after")
    def _one_source(self) -> FieldMapping:
        given = [n for n in ("from", "value", "expr", "lookup")
                 if (n == "from" and self.from_ is not None)
                 or (n == "value" and "value" in self.model_fields_set)
                 or (n in ("expr", "lookup") and getattr(self, n) is not None)]
        if len(given) > 1:
            raise ValueError(f"give only one of from / value / expr / lookup, not {' and '.join(given)}")
        return self


class TransformSpec(_Model):
    """What source records become."""

    fields: dict[str, FieldMapping] = Field(
        default_factory=dict, description="Destination field -> how it is made."
    )
    keep_unmapped: bool = Field(
        default=False, description="Also pass source fields not named in `fields` through as-is."
    )
    skip_if: str | None = Field(
        default=None, description="Expression; records for which it is true are skipped, counted."
    )

    @field_validator("fields", mode="before")
    @classmethod
    def _none_is_empty(cls, value: Any) -> Any:
        return {} if value is None else value


# -- elements of an integration -----------------------------------------------------------------


class SourceSpec(_Model):
    system: str = Field(description="A system declared under `systems`.")
    object: str = Field(description="Table, file, sObject, queue or subject, as the system calls it.")
    scope: Scope | None = Field(default=None, description="Which records; all when not given.")
    key: str | None = Field(
        default=None, description="Unique, orderable field: reads are ordered by it to resume."
    )
    watermark: str | None = Field(
        default=None, description="Incremental field: each run reads only what changed since."
    )
    fields: list[str] | None = Field(default=None, description="Read only these fields.")


class DestinationSpec(_Model):
    system: str = Field(description="A system declared under `systems`.")
    object: str = Field(description="Table, file, sObject, queue or subject, as the system calls it.")
    operation: Operation = Operation.UPSERT
    key: str = Field(description="Destination field that identifies a record (external id).")


class Options(_Model):
    batch_size: int = Field(default=2000, ge=1, le=1_000_000)
    concurrency: int = Field(
        default=2, ge=1, le=16, description="Batches read ahead while one is written."
    )
    max_rejects: int | str | None = Field(
        default=None, description="Stop the run, failed, when it sets aside more records than "
                                  "this: a count (100) or a share of the records read (\"5%\", "
                                  "judged from the first 1,000 on). Without it, a run stops when "
                                  "its first 1,000 records are all set aside.")
    verify: Literal["full", "counts", "off"] = Field(
        default="full", description="How the report compares the destination with the source."
    )
    sample_size: int = Field(default=20, ge=0, le=1000)
    write_attempts: int = Field(
        default=5, ge=1, le=50, description="Tries of a batch while the destination fails "
                                            "transiently, before the run stops resumable.")
    retry_backoff_seconds: float = Field(
        default=1.0, ge=0, description="First pause between tries; it doubles each time.")
    columnar: bool = Field(
        default=True, description="Move clean batches as Arrow tables where source, transform "
                                  "and destination allow; batches with anything to set aside go "
                                  "record by record either way.")

    @field_validator("max_rejects", mode="before")
    @classmethod
    def _rejects_limit(cls, value: Any) -> Any:
        if value is None:
            return None
        plain = isinstance(value, (int, str)) and not isinstance(value, bool)
        text = str(value).strip() if plain else ""
        share = re.fullmatch(r"(\d+(?:\.\d+)?)\s*%", text)
        if text.isdigit():
            return int(text)
        if share is not None and float(share.group(1)) <= 100:
            return f"{share.group(1)}%"
        raise ValueError(f"max_rejects takes a count (100) or a share of the records read "
                         f"(\"5%\"), not {value!r}")

    def rejects_allowed(self, read: int) -> float:
        """How many set-aside records `max_rejects` allows after `read` records (no limit:
        all of them)."""
        if self.max_rejects is None:
            return float(read)
        if isinstance(self.max_rejects, int):
            return float(self.max_rejects)
        return read * float(self.max_rejects.rstrip("%")) / 100


class ParameterSpec(_Model):
    """A value given when a run starts (`-p name=value`, or `params` of `POST /runs`)."""

    type: Literal["string", "integer", "number", "boolean", "date", "datetime", "list"] = Field(
        default="string", description="What the given text is converted to; a list is comma-separated.")
    default: Any = Field(default=None, description="Used when the parameter is not given.")
    required: bool | None = Field(
        default=None, description="Whether a run must give it (default: when it has no default).")
    description: str | None = Field(default=None, description="Shown when it is missing.")
    choices: list[Any] | None = Field(default=None, description="The values allowed.")

    @property
    def is_required(self) -> bool:
        return self.default is None if self.required is None else self.required


PATTERNS = ("migration", "broadcast", "aggregation", "sync", "correlation")
PLANNED_PATTERNS = ("sync", "correlation")
"""Patterns of the design that integration files cannot declare yet."""


class _Integration(_Model):
    """What every integration has, whatever its pattern."""

    name: str = Field(description="Unique in the file; commands and the API choose it by this.")
    description: str | None = None
    parameters: dict[str, ParameterSpec] = Field(
        default_factory=dict, description="Parameter name -> declaration (`name:` alone: a "
                                          "required string).")

    @field_validator("parameters", mode="before")
    @classmethod
    def _shorthand_params(cls, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: ({} if v is None else v) for k, v in value.items()}
        return value

    def scopes(self) -> list[tuple[Scope, tuple[Any, ...]]]:
        """Every scope or filter of the integration, with its location in the document."""
        return []

    def transforms(self) -> list[tuple[TransformSpec, tuple[Any, ...]]]:
        return []

    def systems_used(self) -> list[tuple[str, tuple[Any, ...]]]:
        """(system name, location in the document) for every system this integration names."""
        used: list[tuple[str, tuple[Any, ...]]] = []
        for transform, loc in self.transforms():
            for target, mapping in transform.fields.items():
                if mapping.lookup is not None:
                    used.append((mapping.lookup.system, (*loc, "fields", target, "lookup", "system")))
        return used


class MigrationSpec(_Integration):
    """Move a scoped set of records once, or on demand: `<source> to <destination> - <object>
    - migration`."""

    pattern: Literal["migration"]
    source: SourceSpec
    transform: TransformSpec = Field(default_factory=TransformSpec)
    destination: DestinationSpec
    options: Options = Field(default_factory=Options)

    def scopes(self) -> list[tuple[Scope, tuple[Any, ...]]]:
        return [(self.source.scope, ("source", "scope"))] if self.source.scope else []

    def transforms(self) -> list[tuple[TransformSpec, tuple[Any, ...]]]:
        return [(self.transform, ("transform",))]

    def systems_used(self) -> list[tuple[str, tuple[Any, ...]]]:
        return [(self.source.system, ("source", "system")),
                (self.destination.system, ("destination", "system")), *super().systems_used()]


class WebhookSpec(_Model):
    """Changes pushed to `POST /hooks/<integration>` of `patchbay serve`, signed with HMAC."""

    secret_env: str = Field(description="Environment variable holding the shared secret.")
    sources: list[str] | None = Field(
        default=None, description="Accepted values of the X-Patchbay-Source header (any if unset).")
    max_age_seconds: int = Field(default=300, ge=1,
                                 description="Older (or future) signatures are refused.")


class OutboundMessagesSpec(_Model):
    """Salesforce Outbound Messages (SOAP notifications) posted to
    `POST /outbound/<integration>` of `patchbay serve`."""

    organization_id: str = Field(
        description="The sending org's id (00D...); notifications from any other org are refused.")
    secret_env: str | None = Field(
        default=None, description="Environment variable holding a secret that the endpoint URL "
                                  "configured in Salesforce carries as `?secret=`. Required "
                                  "unless allow_unauthenticated is true.")
    allow_unauthenticated: bool = Field(
        default=False, description="Accept notifications without a secret: anyone who knows "
                                   "the org id can then make the broadcast fetch records.")

    @model_validator(mode="after")
    def _authenticated(self) -> OutboundMessagesSpec:
        if self.secret_env is None and not self.allow_unauthenticated:
            raise ValueError("give secret_env (an environment variable holding the secret the "
                             "endpoint URL carries as ?secret=), or allow_unauthenticated: true")
        return self


class TriggerSpec(_Model):
    """How changes are noticed."""

    changes: Literal["poll", "cdc"] = Field(
        default="poll",
        description="poll: read the source by its watermark every `poll_seconds`; cdc: follow "
                    "the source's own change stream (Salesforce Change Data Capture; a "
                    "PostgreSQL capture table added by `patchbay cdc install`).")
    poll_seconds: float = Field(default=5.0, gt=0, description="Poll the source this often.")
    cron: str | None = Field(
        default=None, description='Poll at these times instead (UTC cron, e.g. "*/15 * * * *" '
                                  'or "@hourly"); deliveries and retries go on in between.')
    webhook: WebhookSpec | None = Field(
        default=None, description="Also accept changes pushed by the source (signed webhooks).")
    outbound_messages: OutboundMessagesSpec | None = Field(
        default=None, description="Also accept Salesforce Outbound Messages.")
    overlap_seconds: float | None = Field(
        default=None, ge=0, description="Re-read this far behind the last change seen, for "
                                        "transactions that commit late with an earlier time. "
                                        "Default: 0 on PostgreSQL, which also re-reads from the "
                                        "oldest open transaction; 60 on SQLite and MySQL.")


    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        if value is not None:
            Cron.parse(value)
        return value


class BroadcastDestinationSpec(_Model):
    """One destination of a broadcast, with its own filter and transform."""

    name: str = Field(description="Names the destination in the outbox and in dead letters.")
    system: str
    object: str
    operation: Operation = Operation.UPSERT
    key: str
    filter: Scope | None = Field(
        default=None, description="Only changes whose source record is in this scope go here.")
    transform: TransformSpec = Field(default_factory=TransformSpec)


class BroadcastOptions(_Model):
    batch_size: int = Field(default=500, ge=1, le=100_000)
    max_attempts: int = Field(default=8, ge=1, le=100,
                              description="Tries of a delivery before it becomes a dead letter.")
    backoff_seconds: float = Field(default=1.0, ge=0)
    backoff_max_seconds: float = Field(default=300.0, ge=0)
    lease_seconds: float = Field(default=60.0, gt=0,
                                 description="A worker that holds a delivery longer loses it.")
    keep_delivered_hours: float | None = Field(
        default=168.0, ge=0, description="`serve` purges deliveries made (and dead letters "
                                         "discarded) longer ago than this; null keeps them all.")


class BroadcastSpec(_Integration):
    """Every change in one source reaches every destination: `<source> to <destinations> -
    <object> - broadcast`."""

    pattern: Literal["broadcast"]
    source: SourceSpec
    trigger: TriggerSpec = Field(default_factory=TriggerSpec)
    destinations: list[BroadcastDestinationSpec] = Field(min_length=1)
    options: BroadcastOptions = Field(default_factory=BroadcastOptions)

    @model_validator(mode="after")
    def _distinct_names(self) -> BroadcastSpec:
        names = [d.name for d in self.destinations]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"destination names must differ; used twice: {', '.join(twice)}")
        return self

    def scopes(self) -> list[tuple[Scope, tuple[Any, ...]]]:
        found = [(self.source.scope, ("source", "scope"))] if self.source.scope else []
        return found + [(d.filter, ("destinations", i, "filter"))
                        for i, d in enumerate(self.destinations) if d.filter is not None]

    def transforms(self) -> list[tuple[TransformSpec, tuple[Any, ...]]]:
        return [(d.transform, ("destinations", i, "transform"))
                for i, d in enumerate(self.destinations)]

    def systems_used(self) -> list[tuple[str, tuple[Any, ...]]]:
        return [(self.source.system, ("source", "system")),
                *((d.system, ("destinations", i, "system")) for i, d in enumerate(self.destinations)),
                *super().systems_used()]


class AggregationSourceSpec(SourceSpec):
    """One source of an aggregation, transformed into the common shape."""

    name: str = Field(description="Names the source in provenance, flags, precedence and status.")
    transform: TransformSpec = Field(default_factory=TransformSpec)
    required: bool = Field(
        default=False, description="Without this source there is no answer (no report, no "
                                   "destination written; `patchbay run` exits 1, the API answers "
                                   "503). Otherwise a failing source makes the answer partial: "
                                   "it names the source, leaves null (never 0) and names under "
                                   "`incomplete` the columns it would have decided, writes "
                                   "destinations without the fields made from them, and "
                                   "`patchbay run` exits 3.")
    timeout_seconds: float | None = Field(
        default=None, gt=0, description="Give up on this source after this long (default: "
                                        "the integration's options.timeout_seconds).")
    timezone: str | None = Field(
        default=None, description="The time zone of this source's timestamps that carry none "
                                  "(as its transform gives them), e.g. Europe/Berlin: they are "
                                  "read as wall-clock times there and merged as instants. "
                                  "Without it they are read as UTC; the merge never uses the "
                                  "machine's time zone.")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                zoneinfo.ZoneInfo(value)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {value!r}: name one of the IANA "
                                 "database, such as UTC or Europe/Berlin") from None
        return value


Rule = Literal["order", "non_empty", "most_recent"]


class PrecedenceSpec(_Model):
    """Which source's value a merged row takes when its sources disagree.

    Each source takes part with one row per key: of several rows of one key in a source,
    only the latest by `recent_by` (or, without it, the last read) counts, for every rule;
    an older row of the same source is not looked at, unless `older_rows: non_empty`."""

    default: Rule = Field(
        default="non_empty",
        description="order: the value of the first source (in `order`) that has the entity, "
                    "even null or empty; non_empty: the first value in that order that is "
                    "neither null nor empty text; most_recent: the value of the source whose "
                    "`recent_by` is latest (nulls last, ties by `order`), even null or empty.")
    order: list[str] | None = Field(default=None, description="Source order (default: `union`).")
    recent_by: str | None = Field(default=None, description="The field most_recent compares, and "
                                                            "that picks a source's latest row of a "
                                                            "key. Timestamps compare as instants "
                                                            "(see the source's `timezone`).")
    fields: dict[str, Rule] = Field(default_factory=dict, description="Rules for single fields.")
    older_rows: Literal["ignore", "non_empty"] = Field(
        default="ignore", description="ignore: of a source's rows of one key only the latest "
                                      "takes part. non_empty: for the fields under the "
                                      "non_empty rule, a latest row with the field empty takes "
                                      "the latest non-empty value of the same source's older "
                                      "rows of the key, before the next source is asked.")


class AggregateSpec(_Model):
    """One aggregate column: exactly one of count, sum, min, max, latest (with `by`)."""

    count: str | None = Field(default=None, description='A field (non-null values), or "*".')
    count_distinct: str | None = None
    sum: str | None = None
    min: str | None = None
    max: str | None = None
    avg: str | None = None
    latest: str | None = Field(default=None, description="The value of the row whose `by` is latest.")
    by: str | None = None

    @model_validator(mode="after")
    def _one(self) -> AggregateSpec:
        chosen = [n for n in ("count", "count_distinct", "sum", "min", "max", "avg", "latest")
                  if getattr(self, n) is not None]
        if len(chosen) != 1:
            raise ValueError("an aggregate is exactly one of count, count_distinct, sum, min, max, "
                             "avg, latest")
        if (self.latest is None) != (self.by is None):
            raise ValueError("latest needs by (the field that orders the rows), and by goes with latest")
        return self

    @property
    def function(self) -> tuple[str, str]:
        """(function, field)."""
        for name in ("count", "count_distinct", "sum", "min", "max", "avg", "latest"):
            value = getattr(self, name)
            if value is not None:
                return name, value
        raise AssertionError("validated: one function")


class EnrichSpec(_Model):
    """Join a source onto the merged entities, reduced to aggregates per entity.

    An entity no row of the source matches gets 0 for count and count_distinct and null for
    the others (sum, min, max, avg, latest). If the source failed, every aggregate is null
    for every entity and named in the answer's `incomplete`: unknown, not zero."""

    source: str
    join: dict[str, str] = Field(description="{source field: entity field} equalities. (Not "
                                             "`on`, which YAML 1.1 reads as true.)")
    aggregate: dict[str, AggregateSpec] = Field(min_length=1,
                                                description="{new column: aggregate} per entity.")


class MergeSpec(_Model):
    """How the sources become one data set (run in DuckDB over Arrow tables)."""

    union: list[str] = Field(min_length=1, description="Sources merged into one row per entity.")
    key: str = Field(description="The field (after each source's transform) that says two rows "
                                 "are one entity, e.g. a normalised email. A null or empty key "
                                 "matches nothing: its row is an entity of its own.")
    precedence: PrecedenceSpec = Field(default_factory=PrecedenceSpec)
    provenance: bool = Field(default=False, description="Add `<field>__source` columns: the source "
                                                        "whose row the field's rule took the value "
                                                        "from, even when that value is empty (order "
                                                        "and most_recent may take it); null when no "
                                                        "source had a non-empty value.")
    flags: bool = Field(default=True, description="Add `_sources` (the sources holding the entity, "
                                                  "'|'-separated in union order) and `_differs` "
                                                  "(the fields, '|'-separated, whose non-empty "
                                                  "values differ between the entity's sources, "
                                                  "each source's latest row of the key: compared "
                                                  "exactly in the merged type, so text differing "
                                                  "in case or spaces differs; null and empty text "
                                                  "are no value and differ from nothing).")
    enrich: list[EnrichSpec] = Field(default_factory=list)
    group_by: list[str] | None = Field(
        default=None, description="Reduce the merged rows to one per group (with `aggregate`).")
    aggregate: dict[str, AggregateSpec] = Field(default_factory=dict)
    sql: str | None = Field(
        default=None, description="A final DuckDB SELECT over `merged` and the sources by name, "
                                  "for what the rest cannot say; parameters as $name.")


class ReportFileSpec(_Model):
    """A report file, written atomically (a temporary file renamed over the old one)."""

    file: str = Field(description="Path, relative to the integration file; may use {param}.")
    format: Literal["csv", "json", "jsonl", "parquet", "xlsx"] | None = Field(
        default=None, description="Default: from the file's extension.")
    sheet: str = Field(default="report", description="The XLSX sheet's name.")


class AggregationDestinationSpec(_Model):
    """A system the merged data set is written to (e.g. roll-up fields on Accounts)."""

    system: str
    object: str
    operation: Operation = Operation.UPSERT
    key: str
    transform: TransformSpec = Field(default_factory=TransformSpec)


class StreamSourceSpec(_Model):
    """Messages of one queue (RabbitMQ) or subject (NATS JetStream) to aggregate."""

    system: str
    object: str = Field(description="The RabbitMQ queue, or the NATS subject.")
    transform: TransformSpec = Field(default_factory=TransformSpec)


class FlushSpec(_Model):
    every_seconds: float = Field(default=5.0, gt=0)
    every_messages: int = Field(default=1000, ge=1)


class StreamSpec(_Model):
    """Keep aggregates up to date from messages: counted once each, across restarts."""

    sources: list[StreamSourceSpec] = Field(min_length=1)
    group_by: list[str] = Field(min_length=1)
    aggregate: dict[str, AggregateSpec] = Field(min_length=1)
    flush: FlushSpec = Field(default_factory=FlushSpec)


class ScheduleSpec(_Model):
    """When `patchbay serve` runs an aggregation by itself: every so often, or at set times."""

    every_seconds: float | None = Field(default=None, gt=0,
                                        description="At start, then this often.")
    daily_at: list[str] | None = Field(
        default=None, description='Times of day, UTC, as "HH:MM" (e.g. ["02:00"]).')
    cron: str | None = Field(default=None, description='A UTC cron expression, e.g. "0 2 * * 1-5".')

    @model_validator(mode="after")
    def _one(self) -> ScheduleSpec:
        if sum(v is not None for v in (self.every_seconds, self.daily_at, self.cron)) != 1:
            raise ValueError("a schedule is one of every_seconds, daily_at or cron")
        if self.cron is not None:
            Cron.parse(self.cron)
        for time in self.daily_at or []:
            hours, _, minutes = time.partition(":")
            if not (hours.isdigit() and minutes.isdigit() and len(minutes) == 2
                    and int(hours) < 24 and int(minutes) < 60):
                raise ValueError(f'daily_at takes times as "HH:MM", not {time!r}')
        return self


class AggregationOptions(_Model):
    timeout_seconds: float = Field(default=60.0, gt=0, description="Per source, unless it says.")
    batch_size: int = Field(default=2000, ge=1, le=1_000_000)


class AggregationSpec(_Integration):
    """Many systems merged into one data set: a report, a destination, an API answer
    (`GET /aggregations/<name>`); or, with `stream`, aggregates kept up to date from messages."""

    pattern: Literal["aggregation"]
    sources: list[AggregationSourceSpec] = Field(default_factory=list)
    merge: MergeSpec | None = None
    stream: StreamSpec | None = None
    reports: list[ReportFileSpec] = Field(default_factory=list)
    destinations: list[AggregationDestinationSpec] = Field(default_factory=list)
    schedule: ScheduleSpec | None = Field(
        default=None, description="Run by itself under `patchbay serve` (sources with merge).")
    options: AggregationOptions = Field(default_factory=AggregationOptions)

    @model_validator(mode="after")
    def _consistent(self) -> AggregationSpec:
        if (self.stream is None) == (self.merge is None):
            raise ValueError("an aggregation has either sources with merge, or stream")
        if self.stream is not None and self.schedule is not None:
            raise ValueError("a stream aggregation runs continuously: it takes no schedule")
        if self.merge is not None:
            names = [s.name for s in self.sources]
            twice = sorted({n for n in names if names.count(n) > 1})
            if twice:
                raise ValueError(f"source names must differ; used twice: {', '.join(twice)}")
            named = [*self.merge.union, *(e.source for e in self.merge.enrich),
                     *(self.merge.precedence.order or [])]
            unknown = [n for n in named if n not in names]
            if unknown:
                raise ValueError(f"merge names source '{unknown[0]}', which is not one of the "
                                 f"sources{suggest(unknown[0], names)}")
            if self.merge.group_by is None and self.merge.aggregate:
                raise ValueError("merge.aggregate needs merge.group_by")
        return self

    def scopes(self) -> list[tuple[Scope, tuple[Any, ...]]]:
        return [(s.scope, ("sources", i, "scope")) for i, s in enumerate(self.sources) if s.scope]

    def transforms(self) -> list[tuple[TransformSpec, tuple[Any, ...]]]:
        found: list[tuple[TransformSpec, tuple[Any, ...]]] = [
            (s.transform, ("sources", i, "transform")) for i, s in enumerate(self.sources)]
        found += [(d.transform, ("destinations", i, "transform"))
                  for i, d in enumerate(self.destinations)]
        if self.stream is not None:
            found += [(s.transform, ("stream", "sources", i, "transform"))
                      for i, s in enumerate(self.stream.sources)]
        return found

    def systems_used(self) -> list[tuple[str, tuple[Any, ...]]]:
        used: list[tuple[str, tuple[Any, ...]]] = [
            (s.system, ("sources", i, "system")) for i, s in enumerate(self.sources)]
        used += [(d.system, ("destinations", i, "system")) for i, d in enumerate(self.destinations)]
        if self.stream is not None:
            used += [(s.system, ("stream", "sources", i, "system"))
                     for i, s in enumerate(self.stream.sources)]
        return [*used, *super().systems_used()]


IntegrationSpec = Annotated[MigrationSpec | BroadcastSpec | AggregationSpec,
                            Field(discriminator="pattern")]
"""One integration of a file; its `pattern` says which model applies."""
AnyIntegration = MigrationSpec | BroadcastSpec | AggregationSpec


class Document(_Model):
    """An integration file."""

    version: Literal[1] = 1
    systems: dict[str, SystemSpec] = Field(description="System name -> URL, or URL and options.")
    integrations: list[IntegrationSpec] = Field(
        min_length=1, description="Each with a `pattern` saying which of these it is.")

    @model_validator(mode="after")
    def _name_systems(self) -> Document:
        for name, system in self.systems.items():
            object.__setattr__(system, "name", name)
        return self


# -- the loaded file ----------------------------------------------------------------------------


class IntegrationFile:
    """A validated integration file, with where it came from."""

    def __init__(self, document: Document, path: Path | None = None) -> None:
        self.document = document
        self.path = path

    @property
    def systems(self) -> dict[str, SystemSpec]:
        return self.document.systems

    @property
    def integrations(self) -> list[AnyIntegration]:
        return self.document.integrations

    @property
    def secrets(self) -> list[str]:
        """Every secret the file's systems resolved (see SystemSpec.secrets)."""
        return [secret for system in self.systems.values() for secret in system.secrets]

    def scrub(self, text: str) -> str:
        """`text` with every URL redacted and every secret of the file replaced by ***."""
        return scrub(text, self.secrets)

    def integration(self, name: str | None) -> AnyIntegration:
        """The integration called `name`, or the only one when `name` is None."""
        by_name = {i.name: i for i in self.integrations}
        if name is None:
            if len(by_name) == 1:
                return self.integrations[0]
            raise SpecError(
                f"{self._where()} declares {len(by_name)} integrations; choose one with "
                f"--integration: {', '.join(by_name)}"
            )
        if name in by_name:
            return by_name[name]
        raise SpecError(f"{self._where()} has no integration '{name}'{suggest(name, by_name)}")

    def _where(self) -> str:
        return str(self.path) if self.path else "the integration file"


def load(path: str | Path, environ: Mapping[str, str] | None = None) -> IntegrationFile:
    """Read and validate an integration file. Raises SpecError listing every problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read integration file {path}: {exc.strerror or exc}") from exc
    return loads(text, path=path, environ=environ)


def loads(text: str, path: Path | None = None, environ: Mapping[str, str] | None = None) -> IntegrationFile:
    """Validate an integration file's text; `path` names it in errors and anchors relative paths."""
    where = str(path) if path else "<integration>"
    data, lines = parse_yaml(text, where)
    if not isinstance(data, dict):
        raise SpecError(f"{where}:{lines[()]}: expected a mapping with 'systems' and 'integrations' "
                        "at the top")
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    systems = data.get("systems")
    if isinstance(systems, dict):
        base = path.parent if path else Path.cwd()
        data["systems"] = {
            name: _resolve_system(name, value, environ, base, where, lines, problems)
            for name, value in systems.items()
        }
    if problems:
        raise SpecError(f"{where}: invalid integration file", problems)
    try:
        document = Document.model_validate(data)
    except ValidationError as exc:
        problems = _describe(exc, where, lines) + _read_as_suggested(exc, data, where, lines)
        raise SpecError(f"{where}: invalid integration file", problems) from None
    _check_references(document, where, lines)
    return IntegrationFile(document, path)


def _check_references(document: Document, where: str, lines: dict[tuple[Any, ...], int]) -> None:
    problems: list[str] = []
    names = [i.name for i in document.integrations]
    for index, integration in enumerate(document.integrations):
        if names.count(integration.name) > 1 and names.index(integration.name) != index:
            problems.append(_at(where, lines, ("integrations", index, "name"))
                            + f"integration name '{integration.name}' is used twice")
        for system, loc in integration.systems_used():
            if system not in document.systems:
                problems.append(
                    _at(where, lines, ("integrations", index, *loc))
                    + f"unknown system '{system}'{suggest(system, document.systems)}"
                )
        for pname, loc in _param_refs(integration):
            if pname not in integration.parameters:
                problems.append(
                    _at(where, lines, ("integrations", index, *loc))
                    + f"parameter '{pname}' is not declared under 'parameters'"
                    + suggest(pname, integration.parameters)
                )
    if problems:
        raise SpecError(f"{where}: invalid integration file", problems)


def _param_refs(integration: AnyIntegration) -> list[tuple[str, tuple[Any, ...]]]:
    found: list[tuple[str, tuple[Any, ...]]] = []

    def walk_scope(scope: Scope | None, loc: tuple[Any, ...]) -> None:
        if scope is None:
            return
        for op in (*COMPARISONS, "in_", "not_in"):
            value = getattr(scope, op)
            alias = op.rstrip("_")
            if isinstance(value, ParamRef):
                found.append((value.param, (*loc, alias)))
            elif isinstance(value, list):
                found.extend((v.param, (*loc, alias, i)) for i, v in enumerate(value)
                             if isinstance(v, ParamRef))
        for group in ("and_", "or_"):
            for i, child in enumerate(getattr(scope, group) or []):
                walk_scope(child, (*loc, group.rstrip("_"), i))
        walk_scope(scope.not_, (*loc, "not"))

    for scope, loc in integration.scopes():
        walk_scope(scope, loc)
    for transform, loc in integration.transforms():
        for target, mapping in transform.fields.items():
            if isinstance(mapping.value, ParamRef):
                found.append((mapping.value.param, (*loc, "fields", target, "value")))
            if mapping.expr:
                found.extend((name, (*loc, "fields", target, "expr"))
                             for name in re.findall(r"\bparams\.([A-Za-z_]\w*)", mapping.expr))
    return found


# -- environment variables in systems -----------------------------------------------------------

_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


def _resolve_system(name: str, value: Any, environ: Mapping[str, str], base: Path, where: str,
                    lines: dict[tuple[Any, ...], int], problems: list[str]) -> Any:
    def substitute(text: str, loc: tuple[Any, ...]) -> str:
        def one(match: re.Match[str]) -> str:
            var, fallback = match.group(1), match.group(2)
            if var in environ:
                return environ[var]
            if fallback is not None:
                return fallback
            problems.append(_at(where, lines, loc) + f"environment variable {var} is not set")
            return ""
        return _ENV.sub(one, text)

    def url(text: str, loc: tuple[Any, ...]) -> str:
        resolved = substitute(text, loc)
        if "\x00" in resolved:
            # no driver or path takes one, and pathlib raises a bare ValueError on it
            problems.append(_at(where, lines, loc) + "the URL holds a NUL character")
            return resolved
        return _anchor_relative(resolved, base)

    if isinstance(value, str):
        return url(value, ("systems", name))
    if isinstance(value, dict):
        resolved = dict(value)
        if isinstance(value.get("url"), str):
            resolved["url"] = url(value["url"], ("systems", name, "url"))
        if isinstance(value.get("options"), dict):
            resolved["options"] = _substitute_all(value["options"], ("systems", name, "options"),
                                                  substitute)
        return resolved
    return value


def _substitute_all(value: Any, loc: tuple[Any, ...],
                    substitute: Callable[[str, tuple[Any, ...]], str]) -> Any:
    """`${ENV}` filled in every string of an option, however deep (headers, nested maps)."""
    if isinstance(value, str):
        return substitute(value, loc)
    if isinstance(value, dict):
        return {k: _substitute_all(v, (*loc, k), substitute) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute_all(v, (*loc, i), substitute) for i, v in enumerate(value)]
    return value


def _anchor_relative(url: str, base: Path) -> str:
    """Relative file paths in sqlite:/// and file: URLs are relative to the integration file."""
    for prefix in ("sqlite:///", "file:"):
        if url.startswith(prefix):
            rest = url[len(prefix):]
            if prefix == "file:" and rest.startswith("//"):
                rest = rest[2:]
            if rest and not rest.startswith(("/", ":memory:")) and not rest.startswith("?"):
                return prefix + str((base / rest).resolve())
    return url


# -- YAML with line numbers ---------------------------------------------------------------------

MAX_DEPTH = 64
"""Mappings and lists nested deeper than this are refused (the composer recurses per level)."""
MAX_VALUES = 200_000
"""Values a document may hold once its aliases are expanded (a few anchors can otherwise
expand to billions)."""


class _Loader(yaml.SafeLoader):
    """The safe loader, with every value that cannot be built reported at its line."""

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except yaml.YAMLError:
            raise
        except Exception as exc:
            # `!!int abc`, `!!int ''`, `!!timestamp 2024-13-01`: a tag's constructor fails with
            # whatever its conversion raises, and without the line
            raise yaml.constructor.ConstructorError(
                None, None, f"cannot read {node.value!r} as {node.tag.rsplit(':', 1)[-1]} "
                            f"({type(exc).__name__}: {exc})", node.start_mark) from None


def parse_yaml(text: str, where: str) -> tuple[Any, dict[tuple[Any, ...], int]]:
    """The document, and the line of every path in it. Raises SpecError naming `where` and
    the line for anything that is not well-formed YAML, and for every key given twice."""
    try:
        _check_depth(text, where)
        node = yaml.compose(text, Loader=_Loader)
        if node is None:
            raise SpecError(f"{where}:1: the file is empty")
        problems = _duplicate_keys(node, where)
        if problems:
            raise SpecError(f"{where}: invalid integration file", problems)
        data = _Loader(text).construct_document(node)
    except yaml.YAMLError as exc:
        raise _malformed(where, getattr(exc, "problem_mark", None),
                         getattr(exc, "problem", None) or str(exc)) from None
    lines: dict[tuple[Any, ...], int] = {}
    _index_lines(node, (), lines, set())
    return data, lines


def _malformed(where: str, mark: Any, problem: str) -> SpecError:
    """`mark` is where the YAML reader stopped (of its C or its Python implementation)."""
    at = f"{where}:{mark.line + 1}:{mark.column + 1}" if mark is not None else f"{where}:1"
    return SpecError(f"{at}: malformed YAML: {problem}")


def _check_depth(text: str, where: str) -> None:
    """Refuse deep nesting from the parser's events, which need no recursion to read."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise _malformed(where, event.start_mark, f"nested more than {MAX_DEPTH} levels deep")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _duplicate_keys(root: yaml.Node, where: str) -> list[str]:
    """Every key given twice in one mapping (YAML loaders keep the last one silently), and
    every alias that refers to itself or expands the document beyond MAX_VALUES."""
    problems: list[str] = []
    sizes: dict[int, int] = {}
    keys = _Loader("")

    def walk(node: yaml.Node, path: tuple[Any, ...], open_: set[int]) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in open_:
            raise yaml.MarkedYAMLError(problem="an alias refers to the value that contains it",
                                       problem_mark=node.start_mark)
        open_.add(id(node))
        size = 1
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, yaml.Node] = {}
            for key_node, value_node in node.value:
                if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
                    # keys as the loader builds them: `yes` and `true`, `1` and `0x1` are one key
                    seen = first.setdefault(keys.construct_object(key_node), key_node)
                    if seen is not key_node:
                        problems.append(f"{where}:{key_node.start_mark.line + 1}: "
                                        f"{_dotted((*path, key_node.value))}: given "
                                        f"{_twice(seen.start_mark, key_node.start_mark)}; "
                                        "YAML would keep only the second")
                size += walk(key_node, path, open_)
                size += walk(value_node, (*path, _key_of(key_node)), open_)
        elif isinstance(node, yaml.SequenceNode):
            size += sum(walk(item, (*path, index), open_) for index, item in enumerate(node.value))
        open_.discard(id(node))
        sizes[id(node)] = size
        if size > MAX_VALUES:
            raise yaml.MarkedYAMLError(problem=f"holds more than {MAX_VALUES} values once its "
                                               "aliases are expanded", problem_mark=node.start_mark)
        return size

    walk(root, (), set())
    return problems


def _twice(first: Any, second: Any) -> str:
    """Where a key is given twice: its lines, or its columns when both are on one line."""
    if first.line == second.line:
        return f"twice on line {first.line + 1} (columns {first.column + 1} and {second.column + 1})"
    return f"twice, on lines {first.line + 1} and {second.line + 1}"


def _key_of(node: yaml.Node) -> Any:
    """A mapping key as a path part: its text, or its line for a key that is a list or mapping."""
    return node.value if isinstance(node, yaml.ScalarNode) else f"<key on line {node.start_mark.line + 1}>"


def _index_lines(node: yaml.Node, loc: tuple[Any, ...], lines: dict[tuple[Any, ...], int],
                 seen: set[int]) -> None:
    lines.setdefault(loc, node.start_mark.line + 1)
    if id(node) in seen:
        # an alias: its contents are indexed where the anchor is (problems inside it fall
        # back to the alias's own line)
        return
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = (*loc, _key_of(key_node))
            lines[key] = key_node.start_mark.line + 1
            _index_lines(value_node, key, lines, seen)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index_lines(item, (*loc, index), lines, seen)


def _at(where: str, lines: dict[tuple[Any, ...], int], loc: tuple[Any, ...]) -> str:
    probe = tuple(loc)
    while probe and probe not in lines:
        probe = probe[:-1]
    line = lines.get(probe)
    dotted = _dotted(loc)
    return f"{where}:{line}: {dotted}: " if line else f"{where}: {dotted}: "


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top)"


def _describe(exc: ValidationError, where: str, lines: dict[tuple[Any, ...], int],
              prefix: tuple[Any, ...] = (), root: type[BaseModel] | None = None) -> list[str]:
    problems = []
    for error in exc.errors():
        # `tagged` keeps the pattern name pydantic puts after an integration's index, which
        # says which model applies; `loc` drops it, as it is not in the file.
        tagged = (*prefix, *(p for p in error["loc"]
                             if not (isinstance(p, str) and p.startswith("function-"))))
        loc = tuple(p for i, p in enumerate(tagged)
                    if not (i == 2 and tagged[0] == "integrations" and p in PATTERNS))
        kind = error["type"]
        if kind == "extra_forbidden":
            allowed = _fields_at(root, tagged[len(prefix):-1]) if root else \
                _fields_at(Document, tagged[:-1])
            message = f"unknown field '{loc[-1]}'{suggest(str(loc[-1]), allowed)}"
        elif kind == "missing":
            message = "this field is required"
        elif kind in ("union_tag_invalid", "union_tag_not_found"):
            loc = (*loc, "pattern")
            tag = error.get("ctx", {}).get("tag")
            known = ", ".join(PATTERNS)
            if tag in PATTERNS:  # a pattern of the design that has no model yet
                message = (f"the {tag} pattern is not available yet; available: "
                           + ", ".join(p for p in PATTERNS if p not in PLANNED_PATTERNS))
            elif tag is not None:
                message = f"'{tag}' is not a pattern; one of {known}{suggest(str(tag), PATTERNS)}"
            else:
                message = f"say which pattern: one of {known}"
        elif kind == "literal_error":
            expected = error.get("ctx", {}).get("expected", "")
            options = re.findall(r"'([^']*)'", expected)
            message = f"'{error['input']}' is not one of {expected}{suggest(str(error['input']), options)}"
        elif kind == "enum":
            options = re.findall(r"'([^']*)'", error.get("ctx", {}).get("expected", ""))
            message = f"'{error['input']}' is not one of {', '.join(options)}" + suggest(
                str(error["input"]), options)
        else:
            message = error["msg"].removeprefix("Value error, ")
        problems.append(_at(where, lines, loc) + message)
    return problems


def _read_as_suggested(exc: ValidationError, data: dict[str, Any], where: str,
                       lines: dict[tuple[Any, ...], int]) -> list[str]:
    """The other problems of an integration whose pattern is misspelt, read as the pattern
    it most likely means, so that every problem of the file is still reported at once."""
    problems: list[str] = []
    for error in exc.errors():
        if error["type"] != "union_tag_invalid" or len(error["loc"]) != 2:
            continue
        index = error["loc"][1]
        close = difflib.get_close_matches(str(error.get("ctx", {}).get("tag")), PATTERNS, n=1)
        model = _tagged_member(IntegrationSpec, close[0]) if close else None
        item = data["integrations"][index]
        if model is None or not isinstance(item, dict):
            continue
        try:
            model.model_validate({**item, "pattern": close[0]})
        except ValidationError as inner:
            problems += _describe(inner, where, lines, ("integrations", index), model)
    return problems


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """Field names (aliases) valid at `loc` inside `model`, for did-you-mean suggestions."""
    current: Any = model
    parts = list(loc)
    while parts:
        part = parts.pop(0)
        member = _tagged_member(current, part)
        if member is not None:
            current = member
            continue
        current = _unwrap(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            field = next((f for n, f in current.model_fields.items() if (f.alias or n) == part), None)
            if field is None:
                return []
            current = field.annotation
        else:
            origin = get_origin(current)
            args = get_args(current)
            if origin in (list, tuple) and args:
                current = args[0]
            elif origin is dict and args:
                current = args[1]
            else:
                return []
    current = _unwrap(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return [f.alias or n for n, f in current.model_fields.items() if n != "name" or f.alias]
    return []


def _tagged_member(annotation: Any, tag: Any) -> Any:
    """The member of a discriminated union whose `pattern` is `tag`, if `annotation` is one."""
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    members = get_args(annotation) if get_origin(annotation) in (Union, type(int | None)) else ()
    for member in members:
        if (isinstance(member, type) and issubclass(member, BaseModel)
                and "pattern" in member.model_fields
                and get_args(member.model_fields["pattern"].annotation) == (tag,)):
            return member
    return None


def _unwrap(annotation: Any) -> Any:
    if get_origin(annotation) is Annotated:
        annotation = get_args(annotation)[0]
    if get_origin(annotation) in (Union, type(int | None)):
        members = [a for a in get_args(annotation) if a is not type(None)]
        models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)
                  and m is not ParamRef]
        structured = [m for m in members if get_origin(m) in (list, dict)]
        return models[0] if models else (structured[0] if structured else annotation)
    return annotation


def suggest(word: str, options: Any) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""


# -- run parameters -----------------------------------------------------------------------------


def resolve_parameters(integration: AnyIntegration, given: Mapping[str, Any]) -> dict[str, Any]:
    """Check and convert the parameters of one run; every problem is reported at once."""
    problems = []
    declared = integration.parameters
    for name in given:
        if name not in declared:
            hint = suggest(name, declared) or (
                f"; it declares {', '.join(declared)}" if declared else "; it declares none")
            problems.append(f"unknown parameter '{name}' for '{integration.name}'{hint}")
    values: dict[str, Any] = {}
    for name, param in declared.items():
        raw = given.get(name, param.default)
        if raw is None:
            if param.is_required:
                problems.append(f"parameter '{name}' is required: pass --param {name}=<{param.type}>"
                                + (f" ({param.description})" if param.description else ""))
            values[name] = None
            continue
        try:
            value = _convert_parameter(raw, param.type)
        except (ValueError, InvalidOperation) as exc:
            problems.append(f"parameter '{name}': {exc}")
            continue
        items = value if param.type == "list" else [value]
        if param.choices is not None and any(v not in param.choices for v in items):
            problems.append(f"parameter '{name}' must be one of {param.choices}, not {value!r}")
        values[name] = value
    if problems:
        raise ParameterError(f"cannot start '{integration.name}'", problems)
    return values


def _convert_parameter(raw: Any, kind: str) -> Any:
    if kind == "list":
        return [p.strip() for p in raw.split(",")] if isinstance(raw, str) else list(raw)
    if not isinstance(raw, str):
        return raw
    try:
        if kind == "integer":
            return int(raw)
        if kind == "number":
            return Decimal(raw) if "." in raw else int(raw)
        if kind == "boolean":
            if raw.lower() in ("true", "yes", "1", "y"):
                return True
            if raw.lower() in ("false", "no", "0", "n"):
                return False
            raise ValueError
        if kind == "date":
            return dt.date.fromisoformat(raw)
        if kind == "datetime":
            return dt.datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(f"{raw!r} is not a valid {kind}") from None
    return raw


def json_schema() -> dict[str, Any]:
    """JSON Schema of integration files, for editors."""
    return Document.model_json_schema(by_alias=True)
