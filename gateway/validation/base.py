"""Base validation of a resource against the FHIR R4 structure (``fhir.resources.R4B``).

Profile validation (Swedish profiles, FHIRPath invariants) will run after this, against the
same parsed dict, so a resource is parsed once per write.
"""
from __future__ import annotations

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
        model.model_validate(resource)
    except ValidationError as exc:
        issues.extend(_messages(exc, rtype))
        issues.extend(i for i in _missing_required(model, resource, rtype)
                      if i.expression not in [j.expression for j in issues])
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        # The model library raises plain errors on some malformed shapes; still the client's fault.
        issues.append(Issue("structure", f"{rtype}: {exc}", expression=[rtype]))
    issues.extend(check_required_bindings(resource, rtype))
    return issues


def raise_if_errors(issues: list[Issue], rtype: str) -> None:
    errors = [i for i in issues if i.severity in ("error", "fatal")]
    if errors:
        summary = f"{rtype} is not valid: " + "; ".join(i.diagnostics for i in errors[:5])
        raise InvalidResource(summary, issues=issues)


def validate_resource(resource: dict, rtype: str) -> None:
    """Base validation only; raise ``InvalidResource`` (422) naming every element path that is wrong."""
    raise_if_errors(base_issues(resource, rtype), rtype)
