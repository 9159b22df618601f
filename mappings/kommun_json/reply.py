"""The JSON reply a municipal case system gets for a message.

``{"result": "ok", "messageId": …, "written": ["Task/…/_history/1", …], "plan": "shared" | "own"}``
(with ``note`` when the Tasks went to the municipality's own plan, or when the message was older
than what is stored about its case and changed nothing), or
``{"result": "error", "messageId": …, "status": 422, "error": {"code", "path", "message"}, "errors": […]}``
with that HTTP status: 400 not JSON, 422 a field to fix (``path`` is its JSON path), 403 the access
rule refused the write, 409 the plan kept changing under the message (send it again); any other
status of the FHIR core passes through. A repeat of a message gets the first reply, byte for byte
(the gateway stores it with the write).
"""
from __future__ import annotations

import json

from gateway.errors import FhirError
from gateway.mapping import Outcome, Reply, Translation

from mappings.kommun_json.message import MessageError

MEDIA_TYPE = "application/json"
MAX_MESSAGE = 1000


def _body(data: dict) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def reply(message_id: str | None, translation: Translation | None, outcome: Outcome) -> Reply:
    if outcome.ok:
        out: dict = {"result": "ok", "messageId": message_id, "written": list(outcome.written)}
        context = (translation.context if translation else None) or {}
        if outcome.note:
            out["note"] = outcome.note
        elif context:
            out["plan"] = context["plan"]
            if context.get("note"):
                out["note"] = context["note"]
        return Reply(_body(out), MEDIA_TYPE)
    status, error, errors = _error(outcome.error)
    return Reply(_body({"result": "error", "messageId": message_id, "status": status, "error": error,
                        "errors": errors}), MEDIA_TYPE, status=status)


def _error(exc: Exception | None) -> tuple[int, dict, list[dict]]:
    if isinstance(exc, MessageError):
        return exc.status, {"code": exc.code, "path": exc.location, "message": str(exc)}, exc.errors
    if isinstance(exc, FhirError):  # the gateway refused the write: the access rule, validation, a busy store
        status = 409 if exc.status == 412 else exc.status
        errors = [{"path": "$", "message": i.diagnostics[:MAX_MESSAGE],
                   **({"fhirPath": i.expression[0]} if i.expression else {})} for i in exc.issues]
        message = "; ".join(e["message"] for e in errors)[:MAX_MESSAGE]
        if exc.status == 412:
            message = "The shared plan kept changing while the message was written; send it again. " + message
        return status, {"code": exc.code, "path": "$", "message": message}, errors
    text = str(exc)[:MAX_MESSAGE] if exc else "unknown error"
    return 422, {"code": "invalid", "path": "$", "message": text}, [{"path": "$", "message": text}]
