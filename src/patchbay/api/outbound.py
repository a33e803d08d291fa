"""Salesforce Outbound Messages: the SOAP 1.1 `notifications` a workflow rule posts to
`POST /outbound/{integration}`, acknowledged only once their changes are in the outbox.

Salesforce cannot send the API's bearer token, so the route is open (BearerAuth.SIGNED)
and checks instead: the integration is a broadcast declaring `trigger.outbound_messages`,
the sending org is the declared one, and the URL carries `?secret=` (required unless the
trigger says `allow_unauthenticated: true`).

Only the record ids of a message are used, in their 18-character form: the engine fetches
the records' current values from the broadcast's source, as for a webhook's
`{"ids": [...]}` (a record the org does not have is a delete only when the org holds it as
deleted). Salesforce delivers at least once and out of order, so the values inside a
notification may be older than what the source holds now; fetching makes late and
repeated notifications harmless.

Anything but an Ack is a SOAP fault, which Salesforce answers by sending the message again
later (for up to 24 hours): what we want when the source or the engine state is down.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hmac
import logging
import os
import re
import weakref
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from xml.sax.saxutils import escape

from anyio import CapacityLimiter, to_thread
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from patchbay.api.http import Redactor, capped_body
from patchbay.api.runs import Runs
from patchbay.errors import ApiError, ConnectionFailed, PatchbayError
from patchbay.runtime.runner import Invocation
from patchbay.sfid import to18
from patchbay.spec import IntegrationFile, IntegrationSpec, OutboundMessagesSpec, PushPoint

log = logging.getLogger("patchbay.api")

SOAP_ENV = "http://schemas.xmlsoap.org/soap/envelope/"
OUTBOUND = "http://soap.sforce.com/2005/09/outbound"
SOBJECT = "urn:sobject.enterprise.soap.sforce.com"
XSI = "http://www.w3.org/2001/XMLSchema-instance"

PATH = "/outbound/"
MAX_BODY = 5 * 1024 * 1024
MAX_NOTIFICATIONS = 100
MAX_ELEMENTS = 100_000
"""Far more than 100 notifications of every field of an object take."""
PARSE_SLICE = 16 * 1024
MEDIA_TYPES = frozenset({"text/xml", "application/soap+xml"})

_FORBIDDEN = re.compile(r"<!DOCTYPE|<!ENTITY", re.IGNORECASE)

_ACK = ('<?xml version="1.0" encoding="UTF-8"?>'
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}"><soapenv:Body>'
        f'<notificationsResponse xmlns="{OUTBOUND}"><Ack>true</Ack></notificationsResponse>'
        "</soapenv:Body></soapenv:Envelope>")


class Fault(ApiError):
    """A notification not recorded: the HTTP status, and who is at fault (the sender, or
    this server, whose faults a redelivery may get past). Malformed messages are 400, not
    the 500 of SOAP 1.1's HTTP binding: a 500 is this server's fault, and Salesforce sends
    the message again whatever the status."""

    def __init__(self, status: int, message: str, *, server: bool = False) -> None:
        super().__init__(status, message)
        self.server = server


@dataclass(frozen=True)
class Notification:
    object: str
    """The sObject type, from the sObject element's xsi:type."""
    record_id: str


@dataclass(frozen=True)
class Notifications:
    """What this server uses of a `notifications` message. The SessionId is never read: it
    is a live session of the sending user, which nothing here needs and no log may show."""

    organization_id: str
    action_id: str | None
    items: tuple[Notification, ...]

    @property
    def record_ids(self) -> list[str]:
        """Each record once, in the order of the notifications."""
        return list(dict.fromkeys(n.record_id for n in self.items))


def parse(text: str) -> Notifications:
    """The notifications of a SOAP envelope; a Fault says what is wrong with it."""
    # expat would expand internal entities: with no DOCTYPE there can be none to expand.
    if _FORBIDDEN.search(text):
        raise Fault(400, "DOCTYPE and ENTITY declarations are not accepted")
    try:
        root = _tree(text)
    except ElementTree.ParseError as exc:
        raise Fault(400, f"the body is not well-formed XML: {exc}") from None
    body = root.find(f"{{{SOAP_ENV}}}Body") if root.tag == f"{{{SOAP_ENV}}}Envelope" else None
    if body is None:
        raise Fault(400, f"the body is not a SOAP 1.1 envelope ({SOAP_ENV}) with a Body")
    message = body.find(f"{{{OUTBOUND}}}notifications")
    if message is None:
        raise Fault(400, f"the SOAP body holds no notifications element of {OUTBOUND}")
    organization_id = _text(message, f"{{{OUTBOUND}}}OrganizationId")
    if organization_id is None:
        raise Fault(400, "the notifications carry no OrganizationId")
    elements = message.findall(f"{{{OUTBOUND}}}Notification")
    if not 1 <= len(elements) <= MAX_NOTIFICATIONS:
        raise Fault(400, f"a message holds 1 to {MAX_NOTIFICATIONS} Notification elements, "
                         f"not {len(elements)}")
    return Notifications(organization_id, _text(message, f"{{{OUTBOUND}}}ActionId"),
                         tuple(_notification(n, i) for i, n in enumerate(elements, 1)))


def _tree(text: str) -> ElementTree.Element:
    """The parsed document, fed to the parser a slice at a time and refused past
    MAX_ELEMENTS. The C parser keeps the interpreter's lock for as long as one call lasts:
    a whole 5 MB body dense with elements held it for seconds, stalling the event loop's
    thread even while this ran in a worker thread; a slice holds it for milliseconds."""
    parser: ElementTree.XMLPullParser[ElementTree.Element] = ElementTree.XMLPullParser(("start",))
    root: ElementTree.Element | None = None
    elements = 0
    for start in range(0, len(text) + 1, PARSE_SLICE):
        if start < len(text):
            parser.feed(text[start:start + PARSE_SLICE])
        else:
            parser.close()
        for event in parser.read_events():
            # ("start", element): the only events asked for
            if root is None and isinstance(event, tuple) and len(event) == 2 \
                    and isinstance(event[1], ElementTree.Element):
                root = event[1]
            elements += 1
        if elements > MAX_ELEMENTS:
            raise Fault(400, f"a message holds at most {MAX_ELEMENTS} XML elements")
    assert root is not None  # close() raised ParseError for a document without one
    return root


def _notification(element: ElementTree.Element, number: int) -> Notification:
    sobject = element.find(f"{{{OUTBOUND}}}sObject")
    declared = sobject.get(f"{{{XSI}}}type") if sobject is not None else None
    if sobject is None or not declared:
        raise Fault(400, f"Notification {number} has no sObject with an xsi:type")
    given = _text(sobject, f"{{{SOBJECT}}}Id")
    record_id = to18(given) if given is not None else None
    if record_id is None:
        raise Fault(400, f"Notification {number}: its sObject has no Id of 15 or 18 letters "
                         f"and digits ({SOBJECT})")
    # ElementTree keeps no namespace declarations to resolve the type's prefix with;
    # the local part is the object's name either way. The id in its 18-character form:
    # a 15-character one names the same record, and the source answers with the 18.
    return Notification(declared.rpartition(":")[2], record_id)


def _text(parent: ElementTree.Element, tag: str) -> str | None:
    element = parent.find(tag)
    text = (element.text or "").strip() if element is not None else ""
    return text or None


def same_org(declared: str, sent: str) -> bool:
    """Whether two org ids name the same org: the 18-character form is the 15-character
    one (case-sensitive) plus a checksum of its case, so the first 15 decide."""
    return len(declared) in (15, 18) and len(sent) in (15, 18) and declared[:15] == sent[:15]


def ack() -> Response:
    return Response(_ACK, 200, media_type="text/xml")


def fault(exc: Fault, redact: Redactor) -> Response:
    code = "soapenv:Server" if exc.server else "soapenv:Client"
    envelope = ('<?xml version="1.0" encoding="UTF-8"?>'
                f'<soapenv:Envelope xmlns:soapenv="{SOAP_ENV}"><soapenv:Body><soapenv:Fault>'
                f"<faultcode>{code}</faultcode><faultstring>{escape(redact(exc.message))}"
                "</faultstring></soapenv:Fault></soapenv:Body></soapenv:Envelope>")
    return Response(envelope, exc.status, media_type="text/xml")


async def receive(request: Request, file: IntegrationFile, runs: Runs, redact: Redactor) -> Response:
    """The answer to one Outbound Message: an Ack once its changes are durably queued,
    else a fault (every one, so that the caller always gets SOAP back)."""
    name = request.path_params["integration"]
    try:
        integration, points = _receiving(file, name)
        points = _with_secret(request, points)
        # Parsing takes a while for a large body: off the event loop, which goes on
        # answering every other request meanwhile; one at a time, so that parses do not
        # crowd the loop's thread out of the interpreter's lock.
        notifications = await to_thread.run_sync(parse_body, await _raw_body(request),
                                                 limiter=_parsing())
        points = [p for p in points if p.outbound_messages is not None
                  and same_org(p.outbound_messages.organization_id, notifications.organization_id)]
        if not points:
            raise Fault(403, f"notifications from org {notifications.organization_id!r} are not "
                             f"accepted by '{name}'")
        objects = {n.object.casefold() for n in notifications.items}
        point = next((p for p in points if {p.object.casefold()} >= objects), None)
        if point is None:
            raise Fault(400, f"'{name}' takes notifications of "
                             + " or ".join(sorted({p.object for p in points}))
                             + ", not of " + ", ".join(sorted({n.object for n in notifications.items})))
        received_at = dt.datetime.now(dt.UTC).isoformat()
        try:
            await run_in_threadpool(runs.push, Invocation(file, integration, {}),
                                    {"ids": notifications.record_ids}, received_at, None,
                                    point.source)
        except Exception as exc:
            raise _not_recorded(name, exc, redact) from None
    except Fault as exc:
        log.warning("outbound message for '%s' refused (%d): %s", name, exc.status,
                    redact(exc.message))
        return fault(exc, redact)
    log.info("outbound message %s for '%s': %d record(s) queued", notifications.action_id or "",
             name, len(notifications.record_ids))
    return ack()


def _not_recorded(name: str, exc: Exception, redact: Redactor) -> Fault:
    """The fault of changes that could not be queued. Its text says what kind of trouble,
    never the error itself, which may name the server's files (a SQLite path) or
    addresses: those go to the log only."""
    log.error("outbound message for '%s' not recorded: %s", name,
              redact(str(exc)) if isinstance(exc, PatchbayError) else type(exc).__name__)
    reason = ("a system the broadcast reads cannot be reached now"
              if isinstance(exc, ConnectionFailed) else "the changes could not be recorded now")
    return Fault(500, f"{reason}; the server's log has the details", server=True)


_limiters: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, CapacityLimiter] = \
    weakref.WeakKeyDictionary()


def _parsing() -> CapacityLimiter:
    """The one-at-a-time limiter of parses, of the running event loop (a limiter belongs
    to the loop that first uses it)."""
    return _limiters.setdefault(asyncio.get_running_loop(), CapacityLimiter(1))


def _receiving(file: IntegrationFile, name: str) -> tuple[IntegrationSpec, list[PushPoint]]:
    """The integration `name` and where it takes Outbound Messages (a broadcast's source, a
    sync's participants; those of one org share its secret)."""
    integration = next((i for i in file.integrations if i.name == name), None)
    points = [p for p in integration.push_points() if p.outbound_messages is not None] \
        if integration is not None else []
    if integration is None or not points:
        raise Fault(404, f"no broadcast or sync '{name}' takes Outbound Messages")
    return integration, points


def _with_secret(request: Request, points: list[PushPoint]) -> list[PushPoint]:
    """The push points whose secret the request's URL carries; the first one's refusal when
    none does."""
    passed, refusal = [], None
    for point in points:
        assert point.outbound_messages is not None
        try:
            _check_secret(request, point.outbound_messages)
        except Fault as exc:
            refusal = refusal or exc
        else:
            passed.append(point)
    if not passed:
        assert refusal is not None
        raise refusal
    return passed


def _check_secret(request: Request, declared: OutboundMessagesSpec) -> None:
    if declared.secret_env is None:
        return
    expected = os.environ.get(declared.secret_env)
    if not expected:
        raise Fault(500, f"the Outbound Messages secret is not set (environment variable "
                         f"{declared.secret_env})", server=True)
    given = request.query_params.get("secret", "")
    if not hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8")):
        raise Fault(401, "the endpoint URL's secret is missing or wrong")


async def _raw_body(request: Request) -> bytes:
    """The body, refused above MAX_BODY bytes before it is all read."""
    media_type, _, parameters = request.headers.get("content-type", "").partition(";")
    if media_type.strip().lower() not in MEDIA_TYPES:
        raise Fault(415, "the body must be text/xml or application/soap+xml")
    charset = next((value.strip().strip('"').lower() for key, _, value in
                    (p.partition("=") for p in parameters.split(";"))
                    if key.strip().lower() == "charset"), "utf-8")
    if charset not in ("utf-8", "utf8"):
        raise Fault(415, f"the body must be UTF-8, not {charset!r}")
    raw = await capped_body(request, MAX_BODY)
    if raw is None:
        raise Fault(413, f"the body exceeds {MAX_BODY} bytes")
    return raw


def parse_body(raw: bytes) -> Notifications:
    """The notifications of a body read as UTF-8."""
    try:
        return parse(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise Fault(400, "the body is not valid UTF-8") from None
