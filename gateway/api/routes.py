"""FHIR REST handlers: negotiate, call the FHIR server, shape the response.

Each handler takes the raw ``Request`` plus the path parts the router found, and is
``async``: reads are served from stored bytes on the event loop.
"""
from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.http import (
    FORM_TYPES, PATCH_TYPES, check_accept, context, fhir_response, media_type, read_body, read_json,
    resource_headers,
)
from gateway.budget import LARGE_BODY
from gateway.errors import BadRequest, information_outcome
from gateway.fhir.canonical import dumps
from gateway.fhir.interactions import WriteResult, parse_etag
from gateway.fhir.server import FhirServer
from gateway.operations.registry import INSTANCE, SYSTEM, TYPE, OperationRequest


def _raw_query(request: Request) -> str:
    # From the scope, as Starlette does, without building a URL object on every request.
    return request.scope.get("query_string", b"").decode("latin-1")


def _query(request: Request) -> list[tuple[str, str]]:
    return parse_qsl(_raw_query(request), keep_blank_values=True)


class FhirHandlers:
    def __init__(self, server: FhirServer):
        self.server = server
        self.core = server.core
        self.search = server.search
        self.base_url = server.settings.base_url
        self.limit = server.settings.max_body_bytes
        self.depth = server.settings.max_json_depth
        self.offload = server.offload  # large bodies are parsed on its worker

    def _write_response(self, request: Request, result: WriteResult) -> Response:
        stored = result.stored
        ctx = context(request, self.base_url)
        headers = resource_headers(stored)
        status = 201 if result.created else 200
        if result.created:
            headers["Location"] = f"{ctx.base_url}/{stored.rtype}/{stored.rid}/_history/{stored.vid}"
        if ctx.prefer_return == "minimal":
            return Response(status_code=status, headers=headers)
        if ctx.prefer_return == "operationoutcome":
            note = "created" if result.created else "updated" if result.changed else "matched an existing resource"
            return fhir_response(dumps(information_outcome(f"{stored.rtype}/{stored.rid} {note}.")), status, headers)
        return fhir_response(stored.body, status, headers)

    # -- system level ------------------------------------------------------------------
    async def metadata(self, request: Request) -> Response:
        check_accept(request)
        return fhir_response(self.server.capability(context(request, self.base_url).base_url))

    async def api_docs(self, request: Request) -> Response:
        """OpenAPI 3 for API tooling (public, like /metadata it is generated from)."""
        return Response(self.server.openapi(context(request, self.base_url).base_url), media_type="application/json")

    async def system_get(self, request: Request) -> Response:
        check_accept(request)
        params = _query(request)
        if not any(k == "_getpages" for k, _ in params):
            raise BadRequest("Search across all types is not supported; search a resource type, e.g. /fhir/Task.")
        return fhir_response(await self.search.page(params, context(request, self.base_url)))

    async def transaction_or_batch(self, request: Request) -> Response:
        check_accept(request)
        data = await read_json(request, self.limit, self.depth, self.offload)
        return fhir_response(await self.server.bundles.process(data, context(request, self.base_url)))

    async def system_history(self, request: Request) -> Response:
        check_accept(request)
        return fhir_response(await self.search.history(None, None, _query(request), context(request, self.base_url)))

    # -- type level --------------------------------------------------------------------
    async def search_type(self, request: Request, rtype: str) -> Response:
        check_accept(request)
        return fhir_response(await self.search.search(rtype, _query(request), context(request, self.base_url)))

    async def search_post(self, request: Request, rtype: str) -> Response:
        check_accept(request)
        body = await read_body(request, self.limit, FORM_TYPES)
        try:
            form = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            raise BadRequest("The _search form body is not UTF-8.") from None
        ctx = context(request, self.base_url)
        return fhir_response(await self.search.search(rtype, _query(request) + form, ctx))

    async def create(self, request: Request, rtype: str) -> Response:
        check_accept(request)
        resource = await read_json(request, self.limit, self.depth, self.offload)
        result = await self.core.create(rtype, resource, request.headers.get("if-none-exist"),
                                        context(request, self.base_url))
        return self._write_response(request, result)

    async def conditional_update(self, request: Request, rtype: str) -> Response:
        check_accept(request)
        query = _raw_query(request)
        if not query:
            raise BadRequest("PUT to a type needs search criteria (conditional update) or an id in the URL.")
        resource = await read_json(request, self.limit, self.depth, self.offload)
        ctx = context(request, self.base_url)
        return self._write_response(request, await self.core.conditional_update(rtype, query, resource, ctx))

    async def type_history(self, request: Request, rtype: str) -> Response:
        check_accept(request)
        return fhir_response(await self.search.history(rtype, None, _query(request), context(request, self.base_url)))

    # -- instance level ----------------------------------------------------------------
    async def read(self, request: Request, rtype: str, rid: str) -> Response:
        check_accept(request)
        stored = await self.core.read(rtype, rid, context(request, self.base_url))
        await _hold(request, stored.body)
        headers = resource_headers(stored)
        none_match = request.headers.get("if-none-match")
        if none_match and _etag_matches(none_match, stored.vid):
            return Response(status_code=304, headers=headers)
        return fhir_response(stored.body, 200, headers)

    async def update(self, request: Request, rtype: str, rid: str) -> Response:
        check_accept(request)
        resource = await read_json(request, self.limit, self.depth, self.offload)
        result = await self.core.update(rtype, rid, resource, request.headers.get("if-match"),
                                        context(request, self.base_url))
        return self._write_response(request, result)

    async def patch(self, request: Request, rtype: str, rid: str) -> Response:
        check_accept(request)
        patch_doc = await read_json(request, self.limit, self.depth, self.offload, PATCH_TYPES)
        result = await self.core.patch(rtype, rid, patch_doc, request.headers.get("if-match"),
                                       context(request, self.base_url))
        return self._write_response(request, result)

    async def delete(self, request: Request, rtype: str, rid: str) -> Response:
        check_accept(request)
        result = await self.core.delete(rtype, rid, context(request, self.base_url))
        return Response(status_code=204, headers=resource_headers(result.stored) if result else {})

    async def instance_history(self, request: Request, rtype: str, rid: str) -> Response:
        check_accept(request)
        ctx = context(request, self.base_url)
        return fhir_response(await self.search.history(rtype, rid, _query(request), ctx))

    # -- operations (gateway.operations: one registry) ----------------------------------
    async def system_operation(self, request: Request, op: str) -> Response:
        return await self._operation(request, None, None, op)

    async def type_operation(self, request: Request, rtype: str, op: str) -> Response:
        return await self._operation(request, rtype, None, op)

    async def instance_operation(self, request: Request, rtype: str, rid: str, op: str) -> Response:
        return await self._operation(request, rtype, rid, op)

    async def _operation(self, request: Request, rtype: str | None, rid: str | None, op: str) -> Response:
        level = INSTANCE if rid is not None else TYPE if rtype is not None else SYSTEM
        method = "GET" if request.method == "HEAD" else request.method
        operation = self.server.operations.find(op, level, rtype, method)
        if operation.answers_fhir:  # a FHIR operation answers FHIR JSON; $ingest the source's own format
            check_accept(request)
        body = await read_body(request, self.limit, frozenset(operation.request_types)) if method == "POST" else None
        call = OperationRequest(op, level, method, rtype, rid, _query(request), body,
                                media_type(request) if body is not None else "", context(request, self.base_url))
        result = await operation.handler(call)
        return Response(result.body, result.status, headers=result.headers, media_type=result.media_type)

    async def vread(self, request: Request, rtype: str, rid: str, vid: str) -> Response:
        check_accept(request)
        stored = await self.core.vread(rtype, rid, vid, context(request, self.base_url))
        await _hold(request, stored.body)
        return fhir_response(stored.body, 200, resource_headers(stored))


async def _hold(request: Request, body: bytes | None) -> None:
    """A large resource read counts against the memory all requests may hold (gateway.budget)
    until it has been sent; small ones are bounded by the number of connections."""
    memory = request.scope.get("gateway.memory")
    if memory is not None and body is not None and len(body) >= LARGE_BODY:
        await memory.take(len(body))


def _etag_matches(header: str, vid: int) -> bool:
    try:
        return any(parse_etag(tag) == vid for tag in header.split(",") if tag.strip() != "*")
    except BadRequest:
        return False
