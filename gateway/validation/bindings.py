"""Required code bindings of the base R4 resources (the models check structure, not codes).

FHIR R4 binds these elements *required*: a code outside the value set makes the resource
invalid. Without this check ``Task.status = "done"`` would be stored and then never found by
``status`` searches. Data, not logic: element path → allowed codes (R4 4.0.1 value sets).
"""
from __future__ import annotations

from typing import Any, Iterator

from gateway.errors import Issue

_GENDER = ("male", "female", "other", "unknown")
_REQUEST_PRIORITY = ("routine", "urgent", "asap", "stat")
_REQUEST_STATUS = ("draft", "active", "on-hold", "revoked", "completed", "entered-in-error", "unknown")
_REQUEST_INTENT = ("proposal", "plan", "directive", "order", "original-order", "reflex-order", "filler-order",
                   "instance-order", "option")
_PUBLICATION_STATUS = ("draft", "active", "retired", "unknown")
_EVENT_STATUS = ("preparation", "in-progress", "not-done", "on-hold", "stopped", "completed", "entered-in-error",
                 "unknown")

REQUIRED: dict[str, tuple[str, ...]] = {
    "Patient.gender": _GENDER,
    "Practitioner.gender": _GENDER,
    "RelatedPerson.gender": _GENDER,
    "Encounter.status": ("planned", "arrived", "triaged", "in-progress", "onleave", "finished", "cancelled",
                         "entered-in-error", "unknown"),
    "Encounter.statusHistory.status": ("planned", "arrived", "triaged", "in-progress", "onleave", "finished",
                                       "cancelled", "entered-in-error", "unknown"),
    "CarePlan.status": _REQUEST_STATUS,
    "CarePlan.intent": ("proposal", "plan", "order", "option"),
    "CarePlan.activity.detail.status": ("not-started", "scheduled", "in-progress", "on-hold", "completed",
                                        "cancelled", "stopped", "unknown", "entered-in-error"),
    "CarePlan.activity.detail.kind": ("Appointment", "CommunicationRequest", "DeviceRequest", "MedicationRequest",
                                      "NutritionOrder", "Task", "ServiceRequest", "VisionPrescription"),
    "CareTeam.status": ("proposed", "active", "suspended", "inactive", "entered-in-error"),
    "Consent.status": ("draft", "proposed", "active", "rejected", "inactive", "entered-in-error"),
    "Consent.provision.type": ("deny", "permit"),
    "Consent.provision.provision.type": ("deny", "permit"),
    "Task.status": ("draft", "requested", "received", "accepted", "rejected", "ready", "cancelled", "in-progress",
                    "on-hold", "failed", "completed", "entered-in-error"),
    "Task.intent": ("unknown", "proposal", "plan", "order", "original-order", "reflex-order", "filler-order",
                    "instance-order", "option"),
    "Task.priority": _REQUEST_PRIORITY,
    "ServiceRequest.status": _REQUEST_STATUS,
    "ServiceRequest.intent": _REQUEST_INTENT,
    "ServiceRequest.priority": _REQUEST_PRIORITY,
    "Goal.lifecycleStatus": ("proposed", "planned", "accepted", "active", "on-hold", "completed", "cancelled",
                             "entered-in-error", "rejected"),
    "Observation.status": ("registered", "preliminary", "final", "amended", "corrected", "cancelled",
                           "entered-in-error", "unknown"),
    "Communication.status": _EVENT_STATUS,
    "Communication.priority": _REQUEST_PRIORITY,
    "Provenance.entity.role": ("derivation", "revision", "quotation", "source", "removal"),
    "AuditEvent.action": ("C", "R", "U", "D", "E"),
    "AuditEvent.outcome": ("0", "4", "8", "12"),
    "Subscription.status": ("requested", "active", "error", "off"),
    "Subscription.channel.type": ("rest-hook", "websocket", "email", "sms", "message"),
    "PlanDefinition.status": _PUBLICATION_STATUS,
    "ActivityDefinition.status": _PUBLICATION_STATUS,
    "Questionnaire.status": _PUBLICATION_STATUS,
    "QuestionnaireResponse.status": ("in-progress", "completed", "amended", "entered-in-error", "stopped"),
    "Bundle.type": ("document", "message", "transaction", "transaction-response", "batch", "batch-response",
                    "history", "searchset", "collection"),
}

_BY_TYPE: dict[str, list[tuple[list[str], frozenset[str], str]]] = {}
for _path, _codes in REQUIRED.items():
    _rtype, *_steps = _path.split(".")
    _BY_TYPE.setdefault(_rtype, []).append((_steps, frozenset(_codes), _path))


def values_at(node: Any, steps: list[str] | tuple[str, ...], path: str) -> Iterator[tuple[str, Any]]:
    """(concrete path, value) of each element at member ``steps`` below ``node``, lists expanded:
    (["contact", "name"], "Patient") → ("Patient.contact[0].name", {...}), …"""
    if not steps:
        yield path, node
        return
    value = node.get(steps[0]) if isinstance(node, dict) else None
    if isinstance(value, list):
        for i, item in enumerate(value):
            yield from values_at(item, steps[1:], f"{path}.{steps[0]}[{i}]")
    elif value is not None:
        yield from values_at(value, steps[1:], f"{path}.{steps[0]}")


def check_required_bindings(resource: dict, rtype: str) -> list[Issue]:
    issues = []
    for steps, codes, element in _BY_TYPE.get(rtype, ()):
        for path, value in values_at(resource, steps, rtype):
            if isinstance(value, str) and value not in codes:
                allowed = ", ".join(sorted(codes))
                issues.append(Issue("code-invalid", f"{path}: '{value}' is not allowed for {element}; use one of "
                                                    f"{allowed}.", expression=[path]))
    return issues
