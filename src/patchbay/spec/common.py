"""What every integration file is made of, whatever the pattern: systems (and keeping their
secrets out of sight), values given as run parameters, scopes, transforms, sources and
destinations, parameter declarations, and the base every pattern's spec extends."""

from __future__ import annotations

import base64
import datetime as dt
import difflib
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, quote, quote_plus, unquote, unquote_plus, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from patchbay.model import FieldType, Operation

if TYPE_CHECKING:
    from patchbay.spec.broadcast import PushPoint


class SpecModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


# -- values that may come from run parameters ---------------------------------------------------


class ParamRef(SpecModel):
    """A value given when the run starts: `{param: country}`."""

    param: str = Field(description="The name of a parameter the integration declares.")


Scalar = str | int | float | bool | dt.date | dt.datetime | None
Value = Scalar | ParamRef


def _as_param_ref(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"param"}:
        return ParamRef(param=value["param"])
    return value


# -- systems ------------------------------------------------------------------------------------


class SystemSpec(SpecModel):
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


class Scope(SpecModel):
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


class Lookup(SpecModel):
    """Find a value in another object: the `returns` field of the record whose `key` equals
    this record's `value` field (e.g. the destination id of an account by its legacy id)."""

    system: str = Field(description="The system to look in.")
    object: str = Field(description="The object to look in.")
    key: str = Field(description="Field of the looked-up object to match on.")
    value: str = Field(description="Field of the source record holding the value to look for.")
    returns: str = Field(description="Field of the looked-up record to use.")
    on_missing: Literal["reject", "null"] = Field(
        default="reject", description="When no record has the value: set the record aside, or null.")


class FieldMapping(SpecModel):
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


class TransformSpec(SpecModel):
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


class SourceSpec(SpecModel):
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


class DestinationSpec(SpecModel):
    system: str = Field(description="A system declared under `systems`.")
    object: str = Field(description="Table, file, sObject, queue or subject, as the system calls it.")
    operation: Operation = Operation.UPSERT
    key: str = Field(description="Destination field that identifies a record (external id).")



class ParameterSpec(SpecModel):
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




# -- notifications ------------------------------------------------------------------------------


class NotifyWhen(SpecModel):
    """The conditions a notification is sent on. A condition that holds is told once, and
    again only after it has cleared (a later run without it; an outbox that has caught up)."""

    finished: bool = Field(default=False, description="Every run that finishes, whatever its "
                                                      "verdict (a report comes with it).")
    failed: bool = Field(default=True, description="A run that stopped on an error, or whose "
                                                   "destination does not match (incomplete).")
    rejects_above: float | None = Field(
        default=None, ge=0, le=1,
        description="A run that set aside (or failed) more than this share of what it read "
                    "(a broadcast: of what it delivered), e.g. 0.01.")
    dead_letters: bool = Field(default=False,
                               description="The outbox holds dead letters (a broadcast, a sync).")
    outbox_older_than_seconds: float | None = Field(
        default=None, gt=0, description="A destination's oldest pending delivery is older "
                                        "than this.")
    api_allowance_below: float | None = Field(
        default=None, ge=0, le=1,
        description="A Salesforce system's API calls left are below this share of its "
                    "allowance, e.g. 0.1 (from the org's Sforce-Limit-Info answers).")

    @property
    def reads_outbox(self) -> bool:
        """Whether a condition is read from the outbox (dead letters, its oldest delivery)."""
        return self.dead_letters or self.outbox_older_than_seconds is not None

    @property
    def watches_state(self) -> bool:
        """Whether a condition can come or clear between runs (`patchbay serve` checks it
        every `check_seconds`): the outbox's, or an org's API allowance."""
        return self.reads_outbox or self.api_allowance_below is not None


class WebhookNotifySpec(SpecModel):
    """An HTTP POST of a JSON body with a Slack-compatible `text`, signed like patchbay's
    HTTP destination: X-Patchbay-Timestamp, and X-Patchbay-Signature: sha256=HMAC-SHA256
    of `<timestamp>.<body>`."""

    url: str = Field(description="Where to post; may hold `${ENV}` (a Slack webhook URL is a "
                                 "secret: the whole URL is never shown).")
    secret_env: str | None = Field(default=None, description="Environment variable holding "
                                                             "the signing secret.")
    timeout_seconds: float = Field(default=10.0, gt=0, description="Per attempt.")

    @field_validator("url")
    @classmethod
    def _http(cls, value: str) -> str:
        if urlsplit(value).scheme.lower() not in ("http", "https") or not urlsplit(value).netloc:
            raise ValueError("a webhook URL is http://host/... or https://host/...")
        return value


class EmailNotifySpec(SpecModel):
    """An e-mail over SMTP: a summary, with the run's report attached as report.json."""

    smtp: str = Field(description="smtp://[user:password@]host[:port] (port 25 by default) "
                                  "or smtps://... (TLS from the start, 465); credentials as "
                                  "`${ENV}`.")
    starttls: bool = Field(default=False, description="Upgrade an smtp:// connection with "
                                                      "STARTTLS before logging in.")
    sender: str = Field(alias="from", description="The From address.")
    to: list[str] = Field(min_length=1, description="Recipients.")
    timeout_seconds: float = Field(default=30.0, gt=0, description="Per attempt.")

    @field_validator("smtp")
    @classmethod
    def _smtp(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme.lower() not in ("smtp", "smtps") or not parts.hostname:
            raise ValueError(f"an SMTP URL is smtp://host:port or smtps://host:port, not "
                             f"{redact_url(value)}")
        try:
            _ = parts.port
        except ValueError:
            raise ValueError(f"the port of {redact_url(value)} is not a number") from None
        return value


class NotifySpec(SpecModel):
    """Who is told what: conditions (`when`) and where to (`webhook`, `email`, or both)."""

    when: NotifyWhen = Field(default_factory=NotifyWhen,
                             description="The conditions (default: a failed run).")
    webhook: WebhookNotifySpec | None = Field(default=None, description="Post to this URL.")
    email: EmailNotifySpec | None = Field(default=None, description="Mail through this server.")
    check_seconds: float = Field(
        default=60.0, gt=0, description="How often `patchbay serve` checks the outbox, dead "
                                        "letters and API allowance of what it serves.")

    @model_validator(mode="after")
    def _somewhere(self) -> NotifySpec:
        if self.webhook is None and self.email is None:
            raise ValueError("give a webhook, an email, or both")
        return self

    @property
    def secrets(self) -> list[str]:
        """The webhook's whole URL and the SMTP URL's password, never to be shown."""
        found = [self.webhook.url] if self.webhook else []
        return found + (SystemSpec(url=self.email.smtp).secrets if self.email else [])


class IntegrationSpec(SpecModel):
    """What every integration has, whatever its pattern."""

    if TYPE_CHECKING:
        # each pattern's spec declares it as `Literal["<name>"]`: the tag files are read by
        pattern: str

    name: str = Field(description="Unique in the file; commands and the API choose it by this.")
    description: str | None = None
    parameters: dict[str, ParameterSpec] = Field(
        default_factory=dict, description="Parameter name -> declaration (`name:` alone: a "
                                          "required string).")
    notify: list[NotifySpec] = Field(
        default_factory=list, description="Notifications of this integration (besides the "
                                          "file's own `notify`).")

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

    def objects_written(self) -> set[tuple[str, str]]:
        """The (system, object) pairs this integration writes."""
        return set()

    def captured(self) -> list[tuple[str, str]]:
        """The (system, object) pairs whose changes this integration reads through change
        capture (`patchbay cdc` installs it, for a consumer named as the integration)."""
        return []

    def push_points(self) -> list[PushPoint]:
        """Where this integration takes pushed changes (`POST /hooks/...`, `POST
        /outbound/...` of `patchbay serve`); none by default."""
        return []

    def systems_used(self) -> list[tuple[str, tuple[Any, ...]]]:
        """(system name, location in the document) for every system this integration names."""
        used: list[tuple[str, tuple[Any, ...]]] = []
        for transform, loc in self.transforms():
            for target, mapping in transform.fields.items():
                if mapping.lookup is not None:
                    used.append((mapping.lookup.system, (*loc, "fields", target, "lookup", "system")))
        return used


def suggest(word: str, options: Any) -> str:
    close = difflib.get_close_matches(word, list(options), n=1, cutoff=0.6)
    return f"; did you mean '{close[0]}'?" if close else ""
