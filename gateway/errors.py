"""Errors a client can cause, as types.

Every layer raises these; only the HTTP layer (and bundle processing) turns them into an
``OperationOutcome`` with the status carried here. Anything else that escapes is a bug and is
answered with a generic 500 that reveals nothing.
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Issue:
    """One ``OperationOutcome.issue``."""

    code: str  # IssueType: invalid, structure, required, value, not-found, conflict, ...
    diagnostics: str
    severity: str = "error"
    expression: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        out: dict = {"severity": self.severity, "code": self.code, "diagnostics": self.diagnostics}
        if self.expression:
            out["expression"] = self.expression
        return out


class FhirError(Exception):
    """Base: an HTTP status plus the issues that explain it."""

    status: int = 400
    code: str = "invalid"
    headers: dict[str, str] = {}  # response headers the status needs (Retry-After)

    def __init__(self, message: str, *, issues: list[Issue] | None = None, status: int | None = None):
        super().__init__(message)
        if status is not None:
            self.status = status
        self.issues = issues or [Issue(self.code, message)]

    def outcome(self) -> dict:
        return operation_outcome(self.issues)


class BadRequest(FhirError):
    status, code = 400, "invalid"


class MalformedBody(FhirError):
    status, code = 400, "structure"


class InvalidResource(FhirError):
    status, code = 422, "processing"


class Unauthorized(FhirError):
    """No valid bearer token: the response carries ``WWW-Authenticate``."""
    status, code = 401, "login"


class Forbidden(FhirError):
    """The token is valid but its scopes do not allow this interaction on this type."""
    status, code = 403, "forbidden"


class NotFound(FhirError):
    status, code = 404, "not-found"


class Gone(FhirError):
    status, code = 410, "deleted"


class MethodNotAllowed(FhirError):
    status, code = 405, "not-supported"


class NotAcceptable(FhirError):
    status, code = 406, "not-supported"


class Conflict(FhirError):
    status, code = 409, "conflict"


class PreconditionFailed(FhirError):
    status, code = 412, "conflict"


class PayloadTooLarge(FhirError):
    status, code = 413, "too-costly"


class UnsupportedMediaType(FhirError):
    status, code = 415, "not-supported"


class UnprocessablePatch(FhirError):
    status, code = 422, "processing"


class TooCostly(FhirError):
    """The answer would exceed what one response may hold (``GATEWAY_MAX_PAGE_BYTES``)."""
    status, code = 400, "too-costly"


class ServiceUnavailable(FhirError):
    """The server cannot serve this now but will soon: the store's write lock or the memory for
    the request was not had in time. Nothing was changed; the client retries after ``Retry-After``."""
    status, code = 503, "transient"

    def __init__(self, message: str, *, retry_after: int = 1, code: str = "transient"):
        super().__init__(message, issues=[Issue(code, message)])
        self.headers = {"Retry-After": str(retry_after)}


class InsufficientStorage(FhirError):
    """The store's disk (or its size limit) is full: nothing was stored. Writes succeed again,
    without a restart, once the operator frees space."""
    status, code = 507, "no-store"

    def __init__(self, message: str, *, retry_after: int = 30):
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after)}


def operation_outcome(issues: list[Issue]) -> dict:
    return {"resourceType": "OperationOutcome", "issue": [i.to_json() for i in issues]}


def information_outcome(message: str) -> dict:
    return operation_outcome([Issue("informational", message, severity="information")])
