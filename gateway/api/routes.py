"""FHIR REST routes under ``/fhir``. Each handler: negotiate, call the FHIR server, shape the response.

Handlers take the raw ``Request`` (no FastAPI parameter parsing on the hot path) and are
``async``: reads are served from stored bytes on the event loop.
"""
from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.http import (
    FORM_TYPES, PATCH_TYPES, check_accept, context, fhir_response, read_body, read_json,
    resource_headers,
)
from gateway.errors import BadRequest, information_outcome
from gateway.fhir.canonical import dumps, parse_json
from gateway.fhir.interactions import WriteResult, parse_etag
from gateway.fhir.server import FhirServer


def build_router(server: FhirServer) -> APIRouter:
    router = APIRouter(prefix="/fhir")
    core, search, settings = server.core, server.search, server.settings
    limit = settings.max_body_bytes

    def write_response(request: Request, result: WriteResult) -> Response:
        stored = result.stored
        ctx = context(request, settings.base_url)
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

    @router.get("/metadata")
    async def metadata(request: Request) -> Response:
        check_accept(request)
        return fhir_response(server.capability(context(request, settings.base_url).base_url))

    @router.get("/")
    @router.get("")
    async def system_get(request: Request) -> Response:
        check_accept(request)
        params = parse_qsl(request.url.query, keep_blank_values=True)
        if not any(k == "_getpages" for k, _ in params):
            raise BadRequest("Search across all types is not supported; search a resource type, e.g. /fhir/Task.")
        return fhir_response(await search.page(params, context(request, settings.base_url)))

    @router.post("/")
    @router.post("")
    async def transaction_or_batch(request: Request) -> Response:
        check_accept(request)
        data = await read_json(request, limit)
        return fhir_response(await server.bundles.process(data, context(request, settings.base_url)))

    @router.get("/_history")
    async def system_history(request: Request) -> Response:
        check_accept(request)
        params = parse_qsl(request.url.query, keep_blank_values=True)
        return fhir_response(await search.history(None, None, params, context(request, settings.base_url)))

    @router.get("/{rtype}")
    async def search_type(request: Request) -> Response:
        check_accept(request)
        params = parse_qsl(request.url.query, keep_blank_values=True)
        ctx = context(request, settings.base_url)
        return fhir_response(await search.search(request.path_params["rtype"], params, ctx))

    @router.post("/{rtype}/_search")
    async def search_post(request: Request) -> Response:
        check_accept(request)
        body = await read_body(request, limit, FORM_TYPES)
        try:
            form = parse_qsl(body.decode("utf-8"), keep_blank_values=True)
        except UnicodeDecodeError:
            raise BadRequest("The _search form body is not UTF-8.") from None
        params = parse_qsl(request.url.query, keep_blank_values=True) + form
        ctx = context(request, settings.base_url)
        return fhir_response(await search.search(request.path_params["rtype"], params, ctx))

    @router.post("/{rtype}")
    async def create(request: Request) -> Response:
        check_accept(request)
        resource = await read_json(request, limit)
        result = await core.create(request.path_params["rtype"], resource, request.headers.get("if-none-exist"))
        return write_response(request, result)

    @router.put("/{rtype}")
    async def conditional_update(request: Request) -> Response:
        check_accept(request)
        if not request.url.query:
            raise BadRequest("PUT to a type needs search criteria (conditional update) or an id in the URL.")
        resource = await read_json(request, limit)
        return write_response(request, await core.conditional_update(request.path_params["rtype"],
                                                                     request.url.query, resource))

    @router.get("/{rtype}/_history")
    async def type_history(request: Request) -> Response:
        check_accept(request)
        params = parse_qsl(request.url.query, keep_blank_values=True)
        ctx = context(request, settings.base_url)
        return fhir_response(await search.history(request.path_params["rtype"], None, params, ctx))

    @router.get("/{rtype}/{rid}")
    async def read(request: Request) -> Response:
        check_accept(request)
        stored = await core.read(request.path_params["rtype"], request.path_params["rid"])
        headers = resource_headers(stored)
        none_match = request.headers.get("if-none-match")
        if none_match and _etag_matches(none_match, stored.vid):
            return Response(status_code=304, headers=headers)
        return fhir_response(stored.body, 200, headers)

    @router.put("/{rtype}/{rid}")
    async def update(request: Request) -> Response:
        check_accept(request)
        resource = await read_json(request, limit)
        p = request.path_params
        return write_response(request, await core.update(p["rtype"], p["rid"], resource,
                                                         request.headers.get("if-match")))

    @router.patch("/{rtype}/{rid}")
    async def patch(request: Request) -> Response:
        check_accept(request)
        patch_doc = parse_json(await read_body(request, limit, PATCH_TYPES))
        p = request.path_params
        return write_response(request, await core.patch(p["rtype"], p["rid"], patch_doc,
                                                        request.headers.get("if-match")))

    @router.delete("/{rtype}/{rid}")
    async def delete(request: Request) -> Response:
        check_accept(request)
        p = request.path_params
        result = await core.delete(p["rtype"], p["rid"])
        headers = resource_headers(result.stored) if result else {}
        return Response(status_code=204, headers=headers)

    @router.get("/{rtype}/{rid}/_history")
    async def instance_history(request: Request) -> Response:
        check_accept(request)
        p = request.path_params
        params = parse_qsl(request.url.query, keep_blank_values=True)
        return fhir_response(await search.history(p["rtype"], p["rid"], params, context(request, settings.base_url)))

    @router.get("/{rtype}/{rid}/_history/{vid}")
    async def vread(request: Request) -> Response:
        check_accept(request)
        p = request.path_params
        stored = await core.vread(p["rtype"], p["rid"], p["vid"])
        return fhir_response(stored.body, 200, resource_headers(stored))

    return router


def _etag_matches(header: str, vid: int) -> bool:
    try:
        return any(parse_etag(tag) == vid for tag in header.split(",") if tag.strip() != "*")
    except BadRequest:
        return False
