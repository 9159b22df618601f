"""The region's local codes made ours, through the gateway's ConceptMaps (``profiles/conceptmaps/``).

The lookup is the one service behind ``ConceptMap/$translate`` (``gateway.terminology.conceptmaps``),
so what the API says a code means is what the mapping does with it:

- a reference by identifier in a system that some map translates into HSA-ids — a ward code in
  ``Encounter.location``, ``serviceProvider``, ``Task.owner`` or wherever the region puts one —
  becomes a reference by the unit's HSA-id (the sender's display is kept, else the map's);
- ``Task.code`` and ``CarePlan.activity.detail.code``: our samverkan-activity coding first, the
  region's own coding kept beside it, so nothing the region said is lost;
- a code with no counterpart — not in the map, or the map says ``unmatched`` — is **kept as sent**
  and the reply says so: a warning (``code-invalid``) naming the element, with the map's reason.
  An admission must not be refused because a ward is missing from a map (LUSEN's clocks run from
  it); a Task whose code is not ours does not claim ``samverkan-task``, so where the operator
  requires that profile for every Task (``GATEWAY_REQUIRED_PROFILES``) the write is refused (422,
  naming ``Task.code``), and the warning says which code to add to the map.
"""
from __future__ import annotations

from gateway.errors import Issue
from gateway.terminology.conceptmaps import ConceptMaps
from gateway.validation.identifiers import HSA_ID

from mappings.region_fhir.message import Item
from mappings.region_fhir.references import reference_nodes

ACTIVITY = "https://samverkan.example.se/fhir/CodeSystem/samverkan-activity"


def normalise_codes(item: Item, maps: ConceptMaps) -> None:
    resource = item.resource
    for key, value in resource.items():
        if key not in ("contained", "identifier"):
            for node, path in list(reference_nodes(value, f"{item.rtype}.{key}")):
                _unit(node, path, maps, item.warnings)
    if item.rtype == "Task" and isinstance(resource.get("code"), dict):
        resource["code"] = _activity(resource["code"], "Task.code", maps, item.warnings)
    if item.rtype == "CarePlan" and isinstance(resource.get("activity"), list):
        for i, activity in enumerate(resource["activity"]):
            detail = activity.get("detail") if isinstance(activity, dict) else None
            if isinstance(detail, dict) and isinstance(detail.get("code"), dict):
                detail["code"] = _activity(detail["code"], f"CarePlan.activity[{i}].detail.code", maps,
                                           item.warnings)


def is_ours(concept: object) -> bool:
    """Whether a CodeableConcept carries one of our activity codes."""
    return isinstance(concept, dict) and any(isinstance(c, dict) and c.get("system") == ACTIVITY
                                             for c in concept.get("coding") or [])


def _unit(node: dict, path: str, maps: ConceptMaps, warnings: list[Issue]) -> None:
    identifier = node.get("identifier")
    if "reference" in node or not isinstance(identifier, dict):
        return
    system, value = identifier.get("system"), identifier.get("value")
    if not isinstance(system, str) or not isinstance(value, str) or not maps.covers(system, HSA_ID):
        return  # not a code a map knows (an HSA-id already, an organisationsnummer …): as sent
    found = maps.translate(system, value, target_system=HSA_ID)
    best = found.best()
    if best is None:
        warnings.append(Issue("code-invalid", f"{path}: {found.message} Kept as sent (no HSA-id); add the code to "
                              "the ConceptMap.", severity="warning", expression=[path]))
        return
    node["identifier"] = {"system": HSA_ID, "value": best.concept["code"]}
    if not node.get("display") and best.concept.get("display"):
        node["display"] = best.concept["display"]


def _activity(concept: dict, path: str, maps: ConceptMaps, warnings: list[Issue]) -> dict:
    codings = [c for c in concept.get("coding") or [] if isinstance(c, dict)]
    if is_ours(concept):
        return concept
    known = False
    for coding in codings:
        system, code = coding.get("system"), coding.get("code")
        if not isinstance(system, str) or not isinstance(code, str) or not maps.covers(system, ACTIVITY):
            continue
        known = True
        found = maps.translate(system, code, target_system=ACTIVITY,
                               version=coding.get("version") if isinstance(coding.get("version"), str) else None)
        best = found.best()
        if best is not None:
            return {**concept, "coding": [best.concept, *concept.get("coding", [])]}
        reason = found.message
    if not known:
        shown = ", ".join(f"{c.get('system')}|{c.get('code')}" for c in codings) or "no coding"
        reason = f"No ConceptMap here translates {shown} into {ACTIVITY}."
    warnings.append(Issue("code-invalid", f"{path}: {reason} Kept as sent, without our activity code.",
                          severity="warning", expression=[path]))
    return concept
