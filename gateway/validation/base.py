"""Base validation of a resource against the FHIR R4 structure (``fhir.resources.R4B``).

Profile validation (Swedish profiles, FHIRPath invariants) will run after this, against the
same parsed dict, so a resource is parsed once per write.
"""
from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal
from functools import lru_cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class
from pydantic import ValidationError

from gateway.errors import InvalidResource, Issue
from gateway.fhir.canonical import check_json_shape
from gateway.validation.bindings import check_required_bindings
from gateway.validation.identifiers import normalise_identifiers


@lru_cache(maxsize=None)
def _model(rtype: str) -> Any:
    return get_fhir_model_class(rtype)


def _expression(root: str, loc: tuple) -> str:
    path = root
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part and part != "__root__":
            path += f".{part}"
    return path


def _messages(exc: ValidationError, root: str) -> list[Issue]:
    issues = []
    for err in exc.errors(include_url=False):
        path = _expression(root, tuple(err.get("loc", ())))
        kind = err.get("type", "")
        msg = err.get("msg", "invalid value")
        if kind == "extra_forbidden":
            msg = "is not an element of this resource type; remove it or check its spelling"
        code = "required" if "missing" in kind else "structure" if kind == "extra_forbidden" else "value"
        issues.append(Issue(code, f"{path}: {msg}", expression=[path]))
    return issues


def _missing_required(model: Any, resource: dict, rtype: str) -> list[Issue]:
    """Required primitive elements that are absent.

    The models check these only after every field validated, so a resource with another error
    would not hear about them; a client should learn every problem from one answer.
    """
    try:
        required = model.get_required_fields(None)  # generated per class; does not use self
    except Exception:
        return []
    issues = []
    for name, _ in required:
        field = model.model_fields.get(name)
        key = field.alias if field is not None and field.alias else name
        if key not in resource and f"_{key}" not in resource:
            path = f"{rtype}.{key}"
            issues.append(Issue("required", f"{path}: is required (minimum cardinality 1)", expression=[path]))
    return issues


def base_issues(resource: dict, rtype: str) -> list[Issue]:
    """Every problem against the base R4 resource, after normalising Swedish identifiers in
    place (alias systems → HL7 Sweden base form, personnummer without hyphen), so that what
    is validated is what will be stored."""
    try:
        issues = normalise_identifiers(resource, rtype)
        issues += check_json_shape(resource, rtype)
    except RecursionError:
        return [Issue("structure", "The resource is nested too deeply to be valid FHIR.", expression=[rtype])]
    model = _model(rtype)
    try:
        issues.extend(json_types(resource, model.model_validate(resource), rtype))
    except ValidationError as exc:
        issues.extend(_messages(exc, rtype))
        issues.extend(i for i in _missing_required(model, resource, rtype)
                      if i.expression not in [j.expression for j in issues])
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        # The model library raises plain errors on some malformed shapes; still the client's fault.
        issues.append(Issue("structure", f"{rtype}: {exc}", expression=[rtype]))
    issues.extend(check_required_bindings(resource, rtype))
    return issues


@lru_cache(maxsize=None)
def _fields(cls: type) -> dict[str, str]:
    """JSON name → attribute name of a model class's elements."""
    return {(f.alias or name): name for name, f in getattr(cls, "model_fields", {}).items()}


def json_types(resource: dict, parsed: Any, rtype: str) -> list[Issue]:
    """FHIR JSON's own primitive types, which the models coerce: a boolean is JSON true/false, an
    integer or decimal a JSON number, everything else (dates and times included) a JSON string.
    The models would read ``"true"`` as a boolean and a number as a dateTime (seconds since 1970),
    storing a resource no other FHIR server reads the same way."""
    issues: list[Issue] = []
    stack = [(resource, parsed, rtype)]
    while stack:
        node, model, path = stack.pop()
        if isinstance(node, dict):
            names = _fields(type(model))
            for key, value in node.items():
                attr = names.get(key)
                if attr is not None and not key.startswith("_"):
                    stack.append((value, getattr(model, attr, None), f"{path}.{key}"))
        elif isinstance(node, list):
            if isinstance(model, list):
                stack.extend((item, m, f"{path}[{i}]") for i, (item, m) in enumerate(zip(node, model)))
        elif model is not None and node is not None:
            wanted = _json_type(model)
            if wanted is not None and not _is_json_type(node, wanted):
                issues.append(Issue("value", f"{path}: must be a JSON {wanted} in FHIR JSON, not "
                                             f"{type(node).__name__} {str(node)[:40]!r}", expression=[path]))
    return issues


def _json_type(value: Any) -> str | None:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float, Decimal)):
        return "number"
    if isinstance(value, (str, datetime, date, time)):
        return "string"
    return None


def _is_json_type(node: Any, wanted: str) -> bool:
    if wanted == "boolean":
        return isinstance(node, bool)
    if wanted == "number":
        return isinstance(node, (int, float, Decimal)) and not isinstance(node, bool)
    return isinstance(node, str)


def raise_if_errors(issues: list[Issue], rtype: str) -> None:
    errors = [i for i in issues if i.severity in ("error", "fatal")]
    if errors:
        summary = f"{rtype} is not valid: " + "; ".join(i.diagnostics for i in errors[:5])
        raise InvalidResource(summary, issues=issues)


def validate_resource(resource: dict, rtype: str) -> None:
    """Base validation only; raise ``InvalidResource`` (422) naming every element path that is wrong."""
    raise_if_errors(base_issues(resource, rtype), rtype)
