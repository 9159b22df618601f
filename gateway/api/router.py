"""The FHIR URL grammar as a lookup, mounted at ``/fhir``.

FHIR URLs have a handful of shapes (``[type]``, ``[type]/[id]``, ``[type]/[id]/_history/[vid]``
…), so the route is found by splitting the path and one dict lookup on (shape, method) instead
of trying a regex per route: FastAPI's per-route matching cost more than the read itself
(see bench/README.md). Errors the handlers raise become OperationOutcomes here.
"""
from __future__ import annotations

import logging

from starlette.requests import ClientDisconnect, Request
from starlette.types import Receive, Scope, Send

from gateway.api.auth import SMART_CONFIG_PATH, TOKEN_PATH, AuthGate
from gateway.api.http import error_response, fhir_base
from gateway.access.trail import AuditTrail
from gateway.api.routes import FhirHandlers
from gateway.errors import FhirError, MethodNotAllowed, NotFound

log = logging.getLogger("gateway.api")

PREFIX = "/fhir"
API_DOCS_PATH = "/api-docs"  # OpenAPI, public like /metadata (lower case: cannot be a resource type)
# Literal path segments; anything else in their place is a type, id or version.
_LITERALS = frozenset({"metadata", "_history", "_search"})


def _shape(segments: list[str]) -> tuple[str, list[str]]:
    """('T/I/_history/V', [type, id, vid]) — the pattern of the path and its variable parts."""
    pattern, args = [], []
    for seg in segments:
        if seg in _LITERALS:
            pattern.append(seg)
        elif seg.startswith("$"):  # an operation: its name is an argument
            pattern.append("$")
            args.append(seg[1:])
        else:
            pattern.append("TIV"[len(args)] if len(args) < 3 else "?")
            args.append(seg)
    return "/".join(pattern), args


def fhir_path(scope: Scope) -> str:
    """The request path below any ``root_path`` the server runs under."""
    path, root = scope["path"], scope.get("root_path", "")
    return path[len(root):] if root and path.startswith(root) else path


class FhirMount:
    """ASGI middleware: ``/fhir…`` goes straight to the FHIR router, everything else to the app."""

    def __init__(self, app, router: "FhirRouter"):
        self.app = app
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = fhir_path(scope)
            if path == PREFIX or path.startswith(PREFIX + "/"):
                await self.router(scope, receive, send)
                return
        await self.app(scope, receive, send)


_INTERACTIONS = {
    ("T/I", "GET"): "read", ("T/I", "PUT"): "update", ("T/I", "PATCH"): "patch", ("T/I", "DELETE"): "delete",
    ("T/I/_history/V", "GET"): "vread", ("T/I/_history", "GET"): "history-instance",
    ("T/_history", "GET"): "history-type", ("_history", "GET"): "history-system",
    ("T", "GET"): "search-type", ("T/_search", "POST"): "search-type", ("", "GET"): "search-type",
    ("T", "POST"): "create", ("T", "PUT"): "update", ("", "POST"): "transaction",
}


def _interaction(pattern: str, method: str) -> str:
    """The FHIR restful-interaction code of a request, for its access-log entry."""
    return _INTERACTIONS.get((pattern, "GET" if method == "HEAD" else method), "operation")


class FhirRouter:
    def __init__(self, handlers: FhirHandlers, gate: AuthGate):
        self.gate = gate
        self.audit = handlers.server.audit
        self.base_url = handlers.base_url
        self.api_docs = handlers.api_docs
        self.memory = handlers.server.memory
        self.offload = handlers.server.offload
        self.max_page_bytes = handlers.server.settings.max_page_bytes
        h = handlers
        self.table = {
            "": {"GET": h.system_get, "POST": h.transaction_or_batch},
            "$": {"POST": h.system_operation, "GET": h.system_operation},
            "metadata": {"GET": h.metadata},
            "_history": {"GET": h.system_history},
            "T": {"GET": h.search_type, "POST": h.create, "PUT": h.conditional_update},
            "T/_search": {"POST": h.search_post},
            "T/_history": {"GET": h.type_history},
            "T/I": {"GET": h.read, "PUT": h.update, "PATCH": h.patch, "DELETE": h.delete},
            "T/I/_history": {"GET": h.instance_history},
            "T/I/_history/V": {"GET": h.vread},
            "T/$": {"POST": h.type_operation, "GET": h.type_operation},
            "T/I/$": {"POST": h.instance_operation, "GET": h.instance_operation},
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        # What this request holds in memory (its body, its response's pages), until it is sent.
        memory = scope["gateway.memory"] = self.memory.reservation(self.max_page_bytes)
        scope["gateway.offload"] = self.offload
        try:
            try:
                response = await self._dispatch(request, scope)
            except FhirError as exc:
                response = error_response(exc)
            except ClientDisconnect:  # gone before its body arrived: nobody to answer, nothing done
                return
            except Exception as exc:  # a bug: answer without detail, log without patient data
                log.error("unhandled %s on %s %s", type(exc).__name__, scope["method"], scope["path"])
                response = error_response(FhirError("The server failed to process the request; it has been "
                                                    "logged.", status=500))
            if "gateway.interaction" in scope and self.gate.enabled:  # the access log (patientdatalagen)
                self.audit.record_request(scope.get("gateway.caller"), scope.get("gateway.audit"),
                                          scope["gateway.interaction"], response.status_code,
                                          scope.get("query_string", b"").decode("latin-1"))
            await response(scope, receive, send)
        finally:
            memory.release()

    async def _dispatch(self, request: Request, scope: Scope):
        relative = fhir_path(scope)[len(PREFIX):]
        if relative == TOKEN_PATH:
            return await self.gate.token(request, fhir_base(request, self.base_url))
        if relative == SMART_CONFIG_PATH:
            return self.gate.smart_configuration(fhir_base(request, self.base_url))
        if relative == API_DOCS_PATH and scope["method"] in ("GET", "HEAD"):
            return await self.api_docs(request)
        segments = [s for s in relative.split("/") if s]
        pattern, args = _shape(segments)
        if pattern != "metadata":  # the CapabilityStatement is public; everything else needs a token
            scope["gateway.interaction"] = _interaction(pattern, scope["method"])
            scope["gateway.audit"] = AuditTrail()
            scope["gateway.caller"] = self.gate.caller(request, fhir_base(request, self.base_url))
        methods = self.table.get(pattern)
        if methods is None:
            raise NotFound(f"No FHIR interaction at {scope['path']}; /fhir/metadata lists what this server does.")
        method = scope["method"]
        handler = methods.get("GET" if method == "HEAD" else method)
        if handler is None:
            allowed = ", ".join(sorted(methods))
            raise MethodNotAllowed(f"{method} is not supported on this URL; use {allowed}.")
        return await handler(request, *args)
