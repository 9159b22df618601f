"""The resource types this gateway stores, and what a FHIR id looks like."""
from __future__ import annotations

import re

from gateway.errors import BadRequest

# The resources that make up a shared care plan, its parties and its audit trail.
SUPPORTED_TYPES: tuple[str, ...] = (
    "Patient", "RelatedPerson", "Practitioner", "PractitionerRole", "Organization",
    "Encounter", "CarePlan", "CareTeam", "Consent", "Task", "ServiceRequest", "Goal",
    "Condition", "Observation", "Communication", "Provenance", "AuditEvent", "Subscription",
    "PlanDefinition", "ActivityDefinition", "Questionnaire", "QuestionnaireResponse",
    "Parameters", "Bundle",
)
SUPPORTED = frozenset(SUPPORTED_TYPES)

ID_RE = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
TYPE_RE = re.compile(r"^[A-Z][A-Za-z]+$")


_UINT_RE = re.compile(r"^[0-9]{1,15}$")  # ASCII digits only; str.isdigit() accepts '²'


def is_valid_id(value: str) -> bool:
    return bool(ID_RE.match(value))


def parse_uint(value: str) -> int | None:
    """A non-negative integer small enough for any store column, else None."""
    return int(value) if isinstance(value, str) and _UINT_RE.match(value) else None


def require_uint(value: str, name: str) -> int:
    """``parse_uint`` for a request parameter: a 400 naming the parameter when it is not one."""
    number = parse_uint(value)
    if number is None:
        raise BadRequest(f"{name} must be a non-negative integer, not '{value}'.")
    return number
