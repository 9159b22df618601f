"""``$status`` (type or instance) and ``$events`` (instance) of the Subscriptions Backport IG:
parameters in the query, or in a Parameters body (POST)."""
from __future__ import annotations

from gateway.errors import BadRequest
from gateway.fhir.canonical import parse_json
from gateway.operations.registry import (
    INSTANCE, TYPE, Operation, OperationRequest, OperationResponse, parameters_body,
)

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/OperationDefinition/"
ONLY = frozenset({"Subscription"})
BOTH = frozenset({"GET", "POST"})


def subscription_operations(server) -> list[Operation]:
    service, depth = server.subscriptions, server.settings.max_json_depth

    def params(req: OperationRequest) -> list[tuple[str, str]]:
        body = parameters_body(parse_json(req.body, depth)) if req.body is not None else []
        return req.params + body

    async def status(req: OperationRequest) -> OperationResponse:
        return OperationResponse(await service.status(req.rid, params(req), req.ctx))

    async def events(req: OperationRequest) -> OperationResponse:
        if req.rid is None:
            raise BadRequest("$events is an instance operation: Subscription/[id]/$events.")
        return OperationResponse(await service.events(req.rid, params(req), req.ctx))

    return [Operation("status", BACKPORT + "backport-subscription-status", frozenset({TYPE, INSTANCE}), status,
                      ONLY, BOTH),
            Operation("events", BACKPORT + "backport-subscription-events", frozenset({TYPE, INSTANCE}), events,
                      ONLY, BOTH, parameters=(("eventsSinceNumber", "integer", "First event number."),
                                              ("eventsUntilNumber", "integer", "Last event number.")))]
