"""FHIR JSON in and out: strict parsing and the canonical bytes we store and serve.

Canonical form: UTF-8, no insignificant whitespace, ``resourceType``, ``id`` and ``meta``
first, every other element in the order the client sent it. Decimals keep their exact
text (FHIR requires ``1.50`` to stay ``1.50``), which is why floats are re-parsed as
``Decimal`` and written back through ``orjson.Fragment``.
"""
from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import orjson

from gateway.errors import Issue, MalformedBody


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def parse_json(body: bytes) -> Any:
    """Parse a request body; raise ``MalformedBody`` (400) with what is wrong."""
    if not body or not body.strip():
        raise MalformedBody("The request body is empty; send a FHIR JSON resource.")
    try:
        data = orjson.loads(body)
        strict = True
    except orjson.JSONDecodeError:
        data, strict = None, False  # may still be JSON orjson refuses (integers beyond 64 bits): retry
    if data is None or _has_float(data):
        try:
            data = json.loads(body, parse_float=Decimal, parse_int=_parse_int, parse_constant=_reject_constant)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            raise MalformedBody(f"The request body is not valid JSON: {exc}") from None
        if not strict:  # the lenient parser lets lone surrogates (\ud800) through; FHIR text is Unicode
            try:
                dumps(data)
            except (TypeError, orjson.JSONEncodeError) as exc:
                raise MalformedBody(f"The request body is not valid FHIR JSON: {exc}") from None
    return data


def _parse_int(text: str) -> int | Decimal:
    # Beyond 64 bits orjson cannot write an int back; as a Decimal it round-trips exactly.
    value = int(text)
    return value if -(2**63) <= value < 2**63 else Decimal(text)


def _has_float(value: Any) -> bool:
    if isinstance(value, float):
        return True
    if isinstance(value, dict):
        return any(_has_float(v) for v in value.values())
    if isinstance(value, list):
        return any(_has_float(v) for v in value)
    return False


def check_json_shape(resource: dict, root: str) -> list[Issue]:
    """FHIR JSON rules the models do not enforce: no nulls, no empty objects or arrays."""
    issues: list[Issue] = []

    def walk(value: Any, path: str, in_array: bool) -> None:
        if value is None and not in_array:  # nulls inside arrays align with `_x` extensions
            issues.append(Issue("structure", f"{path} is null; leave the element out instead.", expression=[path]))
        elif isinstance(value, dict):
            if not value:
                issues.append(Issue("structure", f"{path} is an empty object; leave it out.", expression=[path]))
            for key, child in value.items():
                walk(child, f"{path}.{key}", False)
        elif isinstance(value, list):
            if not value:
                issues.append(Issue("structure", f"{path} is an empty array; leave it out.", expression=[path]))
            for i, child in enumerate(value):
                walk(child, f"{path}[{i}]", True)
        elif isinstance(value, str) and value.strip() == "":
            issues.append(Issue("structure", f"{path} is an empty string; leave it out.", expression=[path]))

    for key, child in resource.items():
        walk(child, f"{root}.{key}", False)
    return issues


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value).encode())
    raise TypeError(f"cannot serialise {type(value).__name__}")


def dumps(value: Any) -> bytes:
    """Compact JSON bytes; Decimals written exactly as they were received."""
    return orjson.dumps(value, default=_default)


def canonical_resource(resource: dict, rid: str, meta: dict) -> dict:
    """The resource as stored: resourceType, id, meta first, the rest in received order."""
    out = {"resourceType": resource["resourceType"], "id": rid, "meta": meta}
    for key, value in resource.items():
        if key not in out:
            out[key] = value
    return out
