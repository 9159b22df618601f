"""The operation registry (see the package docstring)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Awaitable, Callable

from gateway.errors import BadRequest, MethodNotAllowed, NotFound
from gateway.fhir.context import RequestContext

FHIR_JSON = "application/fhir+json"
SYSTEM, TYPE, INSTANCE = "system", "type", "instance"


@dataclass(frozen=True)
class OperationRequest:
    name: str
    level: str  # system | type | instance
    method: str
    rtype: str | None
    rid: str | None
    params: list[tuple[str, str]]  # the query (and, for a Parameters body, its primitive values)
    body: bytes | None  # as received, within the body limit; None for GET
    media_type: str  # of the body ('' none)
    ctx: RequestContext

    def param(self, name: str) -> str | None:
        return next((v for k, v in self.params if k == name), None)


@dataclass(frozen=True)
class OperationResponse:
    body: bytes
    status: int = 200
    media_type: str = FHIR_JSON
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[OperationRequest], Awaitable[OperationResponse]]


@dataclass(frozen=True)
class Operation:
    name: str  # without $
    definition: str  # canonical URL of its OperationDefinition
    levels: frozenset[str]
    handler: Handler
    types: frozenset[str] | None = None  # type/instance levels: these types only (None: every type)
    methods: frozenset[str] = frozenset({"POST"})
    request_types: tuple[str, ...] = (FHIR_JSON, "application/json", "application/json+fhir")
    affects_state: bool = False
    documentation: str = ""
    parameters: tuple[tuple[str, str, str], ...] = ()  # (name, JSON type, description) in the query
    answers_fhir: bool = True  # its answer is FHIR JSON (Accept is checked); $ingest answers in the source's format

    def capability(self) -> dict:
        entry = {"name": self.name, "definition": self.definition}
        if self.documentation:
            entry["documentation"] = self.documentation
        return entry


class OperationRegistry:
    def __init__(self) -> None:
        self._ops: dict[str, Operation] = {}

    def add(self, operation: Operation) -> None:
        if operation.name in self._ops:
            raise ValueError(f"operation ${operation.name} is registered twice")
        self._ops[operation.name] = operation

    def find(self, name: str, level: str, rtype: str | None, method: str) -> Operation:
        op = self._ops.get(name)
        if op is None or level not in op.levels or (level != SYSTEM and op.types is not None
                                                    and rtype not in op.types):
            where = f"on {rtype}" if rtype else "at the system level"
            raise NotFound(f"Operation ${name} is not supported {where}; /fhir/metadata lists the operations.")
        if method not in op.methods:
            raise MethodNotAllowed(f"${name} takes {' or '.join(sorted(op.methods))}, not {method}.")
        return op

    def for_type(self, rtype: str) -> list[Operation]:
        return [op for op in self._ops.values() if op.levels - {SYSTEM} and (op.types is None or rtype in op.types)]

    def system(self) -> list[Operation]:
        return [op for op in self._ops.values() if SYSTEM in op.levels]

    def all(self) -> list[Operation]:
        return list(self._ops.values())


def parameters_body(body: object) -> list[tuple[str, str]]:
    """A Parameters body as (name, value) pairs of its primitive values."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise BadRequest("The operation's body must be a Parameters resource.")
    if not isinstance(body.get("parameter") or [], list):
        raise BadRequest("Parameters.parameter must be an array of {\"name\": ..., \"value[x]\": ...}.")
    out = []
    for p in body.get("parameter") or []:
        if isinstance(p, dict) and isinstance(p.get("name"), str):
            value = next((v for k, v in p.items() if k.startswith("value")), None)
            if isinstance(value, (str, int)) and not isinstance(value, bool):
                out.append((p["name"], str(value)))
    return out
