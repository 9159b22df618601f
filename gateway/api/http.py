"""Content negotiation, request bodies, and FHIR responses built from stored bytes."""
from __future__ import annotations

from email.utils import format_datetime

from starlette.requests import Request
from starlette.responses import Response

from gateway.api.encoding import decode_body
from gateway.budget import LARGE_BODY
from gateway.errors import FhirError, NotAcceptable, PayloadTooLarge, UnsupportedMediaType
from gateway.fhir.canonical import dumps, parse_json
from gateway.fhir.context import RequestContext
from gateway.offload import Offload
from gateway.store import StoredResource

FHIR_JSON = "application/fhir+json; charset=utf-8"
JSON_TYPES = frozenset({"application/fhir+json", "application/json", "application/json+fhir"})
PATCH_TYPES = frozenset({"application/json-patch+json"})
FORM_TYPES = frozenset({"application/x-www-form-urlencoded"})
_FORMATS_OK = frozenset({"json", "application/json", "application/fhir+json", "application/json+fhir"})


def fhir_response(body: bytes | list[bytes], status: int = 200, headers: dict | None = None) -> Response:
    """``body``: bytes, or a Bundle in pieces (``bundle_bytes.bundle_pieces``), sent as they are."""
    if isinstance(body, list):
        return PiecesResponse(body, status, headers)
    return Response(body, status, headers=headers, media_type=FHIR_JSON)


class PiecesResponse(Response):
    """A body made of pieces — mostly stored resources — sent in chunks of at most ``CHUNK``
    bytes without ever being joined: the response holds what the page holds, once. Small
    pieces are gathered into one chunk (a send per tiny piece would cost more than a join);
    large ones are sliced, so the socket's buffer holds at most a chunk beyond its high-water
    mark. Content-Length is the sum, so clients see an ordinary response."""

    CHUNK = 256 * 1024

    def __init__(self, pieces: list[bytes], status: int = 200, headers: dict | None = None):
        self.pieces = pieces
        size = sum(len(p) for p in pieces)
        super().__init__(None, status, {**(headers or {}), "content-length": str(size)}, FHIR_JSON)

    async def __call__(self, scope, receive, send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        chunk, gathered = [], 0
        for piece in self.pieces:
            if gathered + len(piece) <= self.CHUNK:
                chunk.append(piece)
                gathered += len(piece)
                continue
            if chunk:
                await send({"type": "http.response.body", "body": b"".join(chunk), "more_body": True})
                chunk, gathered = [], 0
            for start in range(0, len(piece), self.CHUNK):
                part = piece[start:start + self.CHUNK]
                if len(part) == self.CHUNK:
                    await send({"type": "http.response.body", "body": part, "more_body": True})
                else:
                    chunk, gathered = [part], len(part)
        await send({"type": "http.response.body", "body": b"".join(chunk), "more_body": False})


def error_response(exc: FhirError) -> Response:
    headers = dict(exc.headers) or None
    if exc.status == 401:
        text = exc.issues[0].diagnostics if exc.issues else ""
        description = text.replace('"', "'").encode("ascii", "replace").decode()  # header values are latin-1
        headers = {"WWW-Authenticate": f'Bearer error="invalid_token", error_description="{description}"'}
    elif exc.status == 408:  # the rest of the body may still come: start the next request on a new connection
        headers = {"Connection": "close"}
    return fhir_response(dumps(exc.outcome()), exc.status, headers)


def resource_headers(stored: StoredResource) -> dict[str, str]:
    return {"ETag": stored.etag, "Last-Modified": format_datetime(stored.last_updated, usegmt=True)}


def media_type(request: Request) -> str:
    return request.headers.get("content-type", "").split(";")[0].strip().lower()


def check_accept(request: Request) -> None:
    """406 when the client asks only for a format we do not produce (XML, RDF)."""
    if b"_format" in request.scope["query_string"]:  # parse the query only when it can matter
        fmt = request.query_params.get("_format")
        if fmt is not None and fmt.split(";")[0].strip().lower() not in _FORMATS_OK:
            raise NotAcceptable(f"_format={fmt} is not supported; this server speaks FHIR JSON only.")
    accept = request.headers.get("accept")
    if not accept:
        return
    kinds = {part.split(";")[0].strip().lower() for part in accept.split(",")}
    if kinds & (JSON_TYPES | {"*/*", "application/*"}):
        return
    raise NotAcceptable(f"Accept: {accept} cannot be served; ask for application/fhir+json.")


async def read_body(request: Request, limit: int, allowed: frozenset[str]) -> bytes:
    kind = media_type(request)
    if kind not in allowed:
        wanted = " or ".join(sorted(allowed))
        raise UnsupportedMediaType(f"Content-Type '{kind or '(none)'}' is not accepted here; send {wanted}.")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"The body is {declared} bytes; the limit is {limit} bytes.")
    # Memory for the body is taken as it arrives (a client that declares 10 MB and sends nothing
    # holds nothing), and for its parsed form once it is complete (gateway.budget).
    memory = request.scope.get("gateway.memory")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The body exceeds the limit of {limit} bytes.")
        if memory is not None:
            await memory.take_body(len(chunk))
        chunks.append(chunk)
    body = decode_body(b"".join(chunks), request.headers.get("content-encoding"), limit)
    if memory is not None:
        if len(body) > size:  # decompressed: what it inflated to is held too
            await memory.take_body(len(body) - size)
        await memory.take_parsed()
        offload = request.scope.get("gateway.offload")
        if len(body) >= LARGE_BODY and offload is not None:
            await offload.admit(memory)  # large bodies are parsed and validated a few at a time
    return body


async def read_json(request: Request, limit: int, max_depth: int, offload: Offload | None = None,
                    allowed: frozenset[str] = JSON_TYPES) -> object:
    """The body, parsed; a large one on the ``offload`` worker, so the event loop stays free."""
    body = await read_body(request, limit, allowed)
    if offload is not None and len(body) >= LARGE_BODY:
        return await offload.run(parse_json, body, max_depth)
    return parse_json(body, max_depth)


def prefer(request: Request) -> dict[str, str]:
    out = {}
    for part in request.headers.get("prefer", "").split(";"):
        for item in part.split(","):
            key, _, value = item.strip().partition("=")
            if key:
                out[key.lower()] = value.strip().strip('"').lower()
    return out


def fhir_base(request: Request, base_url: str | None) -> str:
    """The configured public FHIR base, or the one the client used."""
    if base_url is not None:
        return base_url
    host = request.headers.get("host", "localhost")
    return f"{request.scope.get('scheme', 'http')}://{host}{request.scope.get('root_path', '')}/fhir"


def context(request: Request, base_url: str | None) -> RequestContext:
    base_url = fhir_base(request, base_url)
    p = prefer(request)
    return RequestContext(base_url, lenient=p.get("handling") == "lenient", prefer_return=p.get("return"),
                          caller=request.scope.get("gateway.caller"), audit=request.scope.get("gateway.audit"),
                          memory=request.scope.get("gateway.memory"))
