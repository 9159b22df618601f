"""What a request must satisfy before the app trusts it: a Host this server answers to, and a
body that arrives in time.

``Host``: without ``GATEWAY_BASE_URL`` the FHIR base in ``Location``, ``fullUrl`` and links is
taken from the request's Host, so a forged Host would be echoed into them (and into caches or
logs downstream). Hosts are checked for syntax and against the names the server is configured
with; this sits in front of the ``/fhir`` mount, which bypasses FastAPI's routing, so both are
covered. Starlette's ``TrustedHostMiddleware`` answers in plain text and does not check syntax
under ``*``; this one answers with an OperationOutcome.

Body: ``GATEWAY_BODY_TIMEOUT`` seconds after the request's head has arrived, its body must be
complete; a slow or stalled upload is answered 408 instead of holding a task and a connection
for as long as the client likes. Enforced on ``receive`` so that every reader is covered.
"""
from __future__ import annotations

import asyncio
import re
from urllib.parse import urlsplit

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.api.http import error_response
from gateway.errors import BadRequest, FhirError
from gateway.settings import Settings

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "[::1]")
_WILDCARD_ADDRESSES = frozenset({"", "0.0.0.0", "::", "[::]"})
# RFC 3986 host (reg-name, IPv4, or IP literal) with an optional port.
_HOST_RE = re.compile(r"^(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}"
                      r"[A-Za-z0-9])?)*\.?|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?$")


class RequestTimeout(FhirError):
    status, code = 408, "timeout"


def allowed_hosts(settings: Settings) -> tuple[frozenset[str], tuple[str, ...], bool]:
    """(exact names, ``*.suffix`` suffixes, any): loopback names, the address ``gateway serve``
    listens on, the host of ``GATEWAY_BASE_URL``, and what ``GATEWAY_ALLOWED_HOSTS`` adds."""
    names = set(LOOPBACK_NAMES)
    host = settings.host.strip().lower()
    if host not in _WILDCARD_ADDRESSES:
        names.add(f"[{host}]" if ":" in host and not host.startswith("[") else host)
    if settings.base_url:
        base_host = urlsplit(settings.base_url).hostname
        if base_host:
            names.add(f"[{base_host}]" if ":" in base_host else base_host.lower())
    suffixes, any_host = [], False
    for item in (part.strip().lower() for part in settings.allowed_hosts.split(",")):
        if item == "*":
            any_host = True
        elif item.startswith("*."):
            suffixes.append(item[1:])
        elif item:
            names.add(item)
    return frozenset(names), tuple(suffixes), any_host


class EdgeGuard:
    """ASGI middleware, outermost of the app's own: Host check and body deadline."""

    def __init__(self, app: ASGIApp, settings: Settings):
        self.app = app
        self.names, self.suffixes, self.any_host = allowed_hosts(settings)
        self.body_timeout = settings.body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = _header(scope, b"host")
        if host is not None and not self.host_allowed(host):
            await error_response(BadRequest(
                "The Host header does not name this server; use the name it is configured with "
                "(the operator lists extra names in GATEWAY_ALLOWED_HOSTS).")) (scope, receive, send)
            return
        await self.app(scope, self._in_time(receive), send)

    def host_allowed(self, host: str) -> bool:
        if not _HOST_RE.match(host):
            return False
        name = host.lower().rstrip(".") if not host.startswith("[") else host.lower()
        if name.startswith("["):
            name = name[: name.index("]") + 1]
        else:
            name = name.rsplit(":", 1)[0].rstrip(".")
        return self.any_host or name in self.names or any(name.endswith(s) for s in self.suffixes)

    def _in_time(self, receive: Receive) -> Receive:
        limit = self.body_timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        complete = False

        async def receive_in_time() -> Message:
            nonlocal complete
            if complete:  # body done: later calls only wait for a disconnect, which may take long
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise RequestTimeout(f"The request body did not arrive within {limit:g} seconds "
                                     "(GATEWAY_BODY_TIMEOUT); send it without pauses, or in smaller requests."
                                     ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                complete = True
            return message

        return receive_in_time


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None
