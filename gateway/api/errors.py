"""Every error leaves as an OperationOutcome: client errors with their 4xx, bugs as a bare 500.

The 500 handler logs the exception type and request path only — never bodies or query
strings, which can carry personnummer.
"""
from __future__ import annotations

import logging

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from gateway.api.http import error_response
from gateway.errors import FhirError, MethodNotAllowed, NotFound

log = logging.getLogger("gateway.errors")


async def _http_error(request: Request, exc: Exception) -> Response:
    status = getattr(exc, "status_code", 500)
    if status == 405:
        return error_response(MethodNotAllowed(f"{request.method} is not supported on {request.url.path}."))
    if status == 404:
        return error_response(NotFound(f"No FHIR endpoint at {request.url.path}; the FHIR base is /fhir."))
    return error_response(FhirError(str(getattr(exc, "detail", "request failed")), status=status))


async def _unexpected(request: Request, exc: Exception) -> Response:
    log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
    return error_response(FhirError("The server failed to process the request; it has been logged.", status=500))


def install(app: FastAPI) -> None:
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _http_error)
    app.add_exception_handler(Exception, _unexpected)
