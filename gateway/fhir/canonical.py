"""FHIR JSON in and out: strict parsing and the canonical bytes we store and serve.

Canonical form: UTF-8, no insignificant whitespace, ``resourceType``, ``id`` and ``meta``
first, every other element in the order the client sent it. Decimals keep their exact
text (FHIR requires ``1.50`` to stay ``1.50``), which is why floats are re-parsed as
``Decimal`` and written back through ``orjson.Fragment``.

Nesting depth: a request body may nest arrays and objects at most ``max_depth`` levels
(``GATEWAY_MAX_JSON_DEPTH``, 64). It is checked here, without recursion, before any recursive
code (validation, FHIRPath, JSON Patch, ``orjson.dumps`` with its limit of 254) sees the data:
JSON nested a few hundred levels deep used to end in a RecursionError and a 500. Real FHIR
resources stay far below it: our fixtures reach 9 (a Consent), and a QuestionnaireResponse whose
answers nest ten groups deep, inside a transaction Bundle, reaches 49.
"""
from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

import orjson

from gateway.errors import Issue, MalformedBody


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


DEFAULT_MAX_JSON_DEPTH = 64
MAX_JSON_DEPTH_CEILING = 200  # orjson.dumps refuses 255 levels; bundles and notifications wrap resources
_NO_CHECK = 1 << 30


def parse_json(body: bytes, max_depth: int | None = None) -> Any:
    """Parse JSON; raise ``MalformedBody`` (400) with what is wrong. ``max_depth``: the nesting
    limit of a request body; None for bytes this server stored (checked when they were written)."""
    if not body or not body.strip():
        raise MalformedBody("The request body is empty; send a FHIR JSON resource.")
    try:
        data = orjson.loads(body)  # C, with its own bound on nesting (1024)
        strict = True
    except orjson.JSONDecodeError:
        data, strict = None, False  # may still be JSON orjson refuses (integers beyond 64 bits): retry
        if max_depth is not None and _raw_depth_over(body, max_depth):
            raise too_deep("The request body", max_depth) from None
    too_deep_now, has_float = _scan(data, max_depth if max_depth is not None else _NO_CHECK)
    if too_deep_now:
        raise too_deep("The request body", max_depth)
    if data is None or has_float:
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


def too_deep(what: str, limit: int) -> MalformedBody:
    return MalformedBody(f"{what} nests arrays and objects more than {limit} levels deep, the limit of this "
                         "server (GATEWAY_MAX_JSON_DEPTH); FHIR resources are far shallower: send a flatter "
                         "structure.")


def check_depth(value: Any, limit: int, what: str) -> None:
    """400 when ``value`` nests deeper than ``limit`` (iteratively: safe at any depth)."""
    if _scan(value, limit)[0]:
        raise too_deep(what, limit)


def _scan(value: Any, limit: int) -> tuple[bool, bool]:
    """(nests deeper than ``limit``, holds a float), walking with a stack instead of recursion.
    The top-level object or array is level 1."""
    if type(value) is float:
        return False, True
    if type(value) is not dict and type(value) is not list:
        return False, False
    has_float = False
    stack = [(value, 1)]
    pop, push = stack.pop, stack.append
    while stack:
        node, depth = pop()
        if depth > limit:
            return True, has_float
        for child in (node.values() if type(node) is dict else node):
            kind = type(child)
            if kind is dict or kind is list:
                push((child, depth + 1))
            elif kind is float:
                has_float = True
    return False, has_float


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = bytes(b for b in range(256) if b not in b"[]{}")


def _raw_depth_over(body: bytes, limit: int) -> bool:
    """Nesting of text orjson refused, counted on the bytes (brackets outside strings), so that the
    lenient fallback parser never meets a depth it would recurse into."""
    depth = 0
    for byte in _JSON_STRING.sub(b'""', body).translate(None, _NOT_BRACKET):
        depth += 1 if byte in (0x5B, 0x7B) else -1
        if depth > limit:
            return True
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
