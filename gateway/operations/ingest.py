"""``$ingest?mapping=<name>`` (system level): a source message in its own media type, through its
mapping and the one FHIR core (``gateway.mapping.ingest``), answered in the source's reply format."""
from __future__ import annotations

from gateway.errors import BadRequest
from gateway.operations.registry import SYSTEM, Operation, OperationRequest, OperationResponse

DEFINITION = "https://samverkan.example.se/fhir/OperationDefinition/ingest"


def ingest_operation(server) -> Operation:
    ingest, mappings = server.ingest, server.mappings

    async def handle(req: OperationRequest) -> OperationResponse:
        if req.body is None or not req.body:
            raise BadRequest("$ingest takes the source message as the request body.")
        reply = await ingest.ingest(req.param("mapping"), req.body, req.media_type, req.ctx)
        return OperationResponse(reply.body, reply.status, reply.media_type, dict(reply.headers))

    infos = mappings.infos()
    media = tuple(dict.fromkeys(t for info in infos for t in info.media_types))
    listed = "; ".join(f"{i.name} {i.version} ({', '.join(i.media_types)})" for i in infos) or "none"
    return Operation("ingest", DEFINITION, frozenset({SYSTEM}), handle, request_types=media, affects_state=True,
                     answers_fhir=False,
                     documentation=f"A source message through a mapping module: ?mapping=<name>. Mappings: {listed}.",
                     parameters=(("mapping", "string", "The mapping: " + ", ".join(i.name for i in infos)),))
