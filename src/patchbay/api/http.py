"""JSON responses and errors of the API, with secrets taken out of every body it sends."""

from __future__ import annotations

import hmac
import json
from collections.abc import Iterable, Mapping
from typing import Any

from markupsafe import escape
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from patchbay.errors import ApiError
from patchbay.model import jsonable
from patchbay.spec import IntegrationFile, secret_forms


class Redactor:
    """Replaces known secrets (those of the integration file, the API token) in response
    bodies, in every form a secret may take (spec.secret_forms). URLs in the bodies are left
    as they are: messages redact theirs where they are made, and an answer's data may hold
    URLs of its own."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        found = {form for secret in secrets for form in secret_forms(secret)}
        # as they appear inside a JSON string, longest first (a secret may contain another)
        self._escaped = sorted({json.dumps(s)[1:-1] for s in found}, key=len, reverse=True)
        # as they appear in HTML text or attributes (the console escapes every value), or
        # as they are (a CSV download)
        self._html = sorted({str(escape(s)) for s in found} | found, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        return self._replace(text, self._escaped)

    def html(self, text: str) -> str:
        """The same for an HTML page, or text that is not JSON."""
        return self._replace(text, self._html)

    @staticmethod
    def _replace(text: str, forms: list[str]) -> str:
        for secret in forms:
            text = text.replace(secret, "***")
        return text


def secrets_of(file: IntegrationFile) -> list[str]:
    """The secrets an integration file resolved: URL passwords, and the values of options and
    URL query arguments whose names say they are secret."""
    return file.secrets


class JSON(Response):
    """A JSON response whose body went through the app's Redactor."""

    media_type = "application/json"

    def __init__(self, content: Any, status_code: int = 200, redact: Redactor | None = None,
                 headers: Mapping[str, str] | None = None) -> None:
        self._redact = redact or Redactor()
        super().__init__(content, status_code, headers)

    def render(self, content: Any) -> bytes:
        text = json.dumps(content, default=jsonable, ensure_ascii=False, separators=(",", ":"))
        return self._redact(text).encode("utf-8")


class BearerAuth:
    """Every request needs `Authorization: Bearer <token>`, except the public routes.

    The token is compared in constant time (hmac.compare_digest), as bytes. With no token
    configured every request passes: the server refuses to start that way unless it listens
    on loopback only (see patchbay.api.server). A web page the machine's browser opens can
    still reach loopback: given `hosts` (the names this server is reached by), a request
    without a token must name one of them as its Host, which a page of another site whose
    name was made to point at 127.0.0.1 (DNS rebinding) cannot; and a state-changing
    request must be `application/json` (see app._body), which a page cannot send to another
    site without the browser asking first (a CORS preflight, never answered here)."""

    PUBLIC = frozenset({("GET", "/health"), ("HEAD", "/health")})
    CONSOLE = "/ui"
    """The web console signs its users in itself (a session cookie, see api/console.py): a
    browser cannot send the bearer token."""
    SIGNED = ("/hooks/", "/outbound/")
    """Routes that check their caller themselves, for senders that cannot send the token:
    webhooks carry an HMAC signature, Salesforce Outbound Messages come from a known org
    with the URL's secret."""

    def __init__(self, app: ASGIApp, token: str | None, hosts: Iterable[str] | None = None) -> None:
        self.app = app
        self._token = token.encode("utf-8") if token else None
        self._hosts = None if hosts is None else frozenset(h.lower() for h in hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._token is None:
            host = host_name(Headers(scope=scope).get("host", ""))
            if self._hosts is not None and host not in self._hosts:
                response = JSON({"error": f"Host {host!r} is not this server's name: without a "
                                          "token the API answers requests to "
                                          + ", ".join(sorted(self._hosts)) + " only"}, 403)
                await response(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        if ((scope["method"], scope["path"]) in self.PUBLIC
                or (scope["method"] == "POST" and scope["path"].startswith(self.SIGNED))
                or scope["path"] == self.CONSOLE or scope["path"].startswith(self.CONSOLE + "/")):
            await self.app(scope, receive, send)
            return
        if not self._allowed(Headers(scope=scope)):
            response = JSON({"error": "authentication required: send 'Authorization: Bearer "
                                      "<token>' (the server's PATCHBAY_API_TOKEN)"},
                            401, headers={"WWW-Authenticate": 'Bearer realm="patchbay"'})
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _allowed(self, headers: Headers) -> bool:
        assert self._token is not None
        for name, value in headers.raw:
            if name == b"authorization":
                scheme, _, credentials = value.strip().partition(b" ")
                if scheme.lower() == b"bearer":
                    return hmac.compare_digest(credentials.strip(), self._token)
                return False
        return False


async def capped_body(request: Request, limit: int) -> bytes | None:
    """The request's body, or None once it is larger than `limit` bytes: a Content-Length
    over the limit is refused before anything is read, and the stream is cut as soon as
    it passes the limit, so no more than `limit` bytes (and a chunk) are ever held."""
    length = request.headers.get("content-length", "")
    if length.isascii() and length.isdigit() and (len(length) > 18 or int(length) > limit):
        return None
    raw = bytearray()
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > limit:
            return None
    return bytes(raw)


def refuse_nul(request: Request) -> None:
    """NUL characters in the path or the query are refused: no name holds one, and a
    PostgreSQL engine state cannot even be asked about one."""
    if "\x00" in request.scope["path"] or any("\x00" in key or "\x00" in value
                                         for key, value in request.query_params.multi_items()):
        raise ApiError(400, "the path and the query cannot hold NUL characters")


def host_name(host: str) -> str:
    """The name of a Host header, without its port, lower-case ("[::1]:8877" -> "[::1]")."""
    host = host.strip().lower()
    if host.startswith("["):
        return host.partition("]")[0] + "]"
    return host.rpartition(":")[0] if host.count(":") == 1 else host


MAX_NESTING = 64
"""How deep JSON bodies may nest: deeper ones are refused before anything recurses into
them (a body of a million brackets would exhaust the interpreter's stack)."""


class NestedTooDeep(ValueError):
    """A JSON body nested deeper than MAX_NESTING."""


def json_body(raw: bytes) -> Any:
    """The JSON value of a body; ValueError when it is not JSON, NestedTooDeep when it
    nests too deep."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise NestedTooDeep(f"nested deeper than {MAX_NESTING} levels") from None
    level: list[Any] = [value]
    for _ in range(MAX_NESTING):
        level = [item for parent in level if isinstance(parent, (dict, list))
                 for item in (parent.values() if isinstance(parent, dict) else parent)]
        if not level:
            return value
    raise NestedTooDeep(f"nested deeper than {MAX_NESTING} levels")
