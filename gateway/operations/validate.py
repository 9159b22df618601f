"""``$validate`` (type and instance): the checks a write would make, nothing stored."""
from __future__ import annotations

from gateway.fhir.canonical import dumps, parse_json
from gateway.fhir.interactions import unpack_validate_parameters
from gateway.operations.registry import INSTANCE, TYPE, Operation, OperationRequest, OperationResponse

DEFINITION = "http://hl7.org/fhir/OperationDefinition/Resource-validate"


def validate_operation(server) -> Operation:
    core, depth = server.core, server.settings.max_json_depth

    async def handle(req: OperationRequest) -> OperationResponse:
        body = parse_json(req.body, depth) if req.body is not None else None
        resource, mode = unpack_validate_parameters(body, req.param("mode"))
        return OperationResponse(dumps(await core.validate(req.rtype, resource, mode, req.rid, req.ctx)))

    return Operation("validate", DEFINITION, frozenset({TYPE, INSTANCE}), handle, methods=frozenset({"GET", "POST"}),
                     parameters=(("mode", "string", "create, update, delete or profile"),))
