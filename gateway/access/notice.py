"""LUSEN's exception to secrecy: the admission notice, without consent, and nothing more.

Lag (2017:612) om samverkan vid utskrivning lets inpatient care send the *inskrivningsmeddelande*
to the person's municipality (folkbokföringskommun) and primary care without consent when the
doctor judges the person may need their services after discharge. Its content is name,
personnummer, folkbokföringsadress, planned discharge time; the *utskrivningsklar* notice and
the discharge follow. So, without consent:

- **Who**: for an inpatient Encounter (class IMP) that has begun, whose ``may-need-services``
  judgement says municipality → the route ``kommun:<kommunkod>`` of the person's
  folkbokföringskommun; says primary care → the route ``vc:<HSA-id>`` of each organisation of the
  Patient's ``generalPractitioner`` (the vårdcentral the person is listed at). Which organisations
  a route reaches is the operator's word, never a resource a client wrote: the directory
  (``gateway.auth.directory``) names the municipality (and units) registered for a kommunkod and
  the organisations registered as primary care.
- **What**: that Encounter and the Patient, each reduced by ``notice_view`` to the notice's
  content and tagged SUBSETTED. Nothing else about the person (no Task, CarePlan, other
  Encounter), and no search on elements the view does not show (``searchable``).
- Read-only: writing about the person still needs the ordinary rule (``gateway.access.decision``).

This module is pure: the policy resolves references to HSA-ids and stores the rows.
"""
from __future__ import annotations

from typing import Any

SD = "https://samverkan.example.se/fhir/StructureDefinition/"
MAY_NEED_SERVICES = SD + "may-need-services"
PLANNED_DISCHARGE = SD + "planned-discharge-date"
NOTICE_EXTENSIONS = frozenset({MAY_NEED_SERVICES, PLANNED_DISCHARGE, SD + "utskrivningsklar"})
FOLKBOKFORINGSKOMMUN = SD + "folkbokforingskommun"
KOMMUNKOD = "https://samverkan.example.se/fhir/sid/kommunkod"
SE_ADDRESS_TYPE = "http://hl7.se/fhir/ig/base/StructureDefinition/SEBaseAddressPersonExtension"
FOLKBOKFORINGSADRESS = ("http://snomed.info/sct", "63381000052101")
PERSON_ID_SYSTEMS = frozenset({"http://electronichealth.se/identifier/personnummer",
                               "http://electronichealth.se/identifier/samordningsnummer",
                               "http://electronichealth.se/identifier/nationelltReservnummer"})
INPATIENT = ("http://terminology.hl7.org/CodeSystem/v3-ActCode", "IMP")
# The stay has begun (the notice is due within 24 h of admission) and is not void.
ADMITTED = frozenset({"arrived", "triaged", "in-progress", "onleave", "finished"})
NOTICE_TYPES = frozenset({"Patient", "Encounter"})
NOTICE_LABEL_SYSTEMS = frozenset({"http://hl7.se/fhir/ig/base/CodeSystem/SecurityLabel",
                                  "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"})
SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
# Search parameters on what the views show; any other parameter (or a sort on it) could test
# hidden elements, so a search using one finds notice-only resources nowhere.
_SEARCHABLE = {
    "Patient": frozenset({"_id", "identifier", "name", "family", "given"}),
    "Encounter": frozenset({"_id", "patient", "subject", "status", "class", "date", "service-provider"}),
}
_RESULT_PARAMS = frozenset({"_count", "_total", "_summary", "_elements", "_include", "_revinclude", "_sort",
                            "_format", "_pretty"})


def identifier_name(key: str, value: str) -> str:
    """``identifier`` when the query asks only for national person ids (what the view shows),
    else a name no notice search allows: other identifiers are not in the view."""
    if ":" in key or not value:
        return "identifier:other"
    systems = {v.split("|", 1)[0] if "|" in v else None for v in value.split(",")}
    return "identifier" if systems <= PERSON_ID_SYSTEMS else "identifier:other"


def searchable(rtype: str | None, params: set[str]) -> bool:
    """May a search with these parameter names (sort fields included) find notice-only resources?"""
    if rtype not in _SEARCHABLE:
        return False
    return params <= _SEARCHABLE[rtype] | _RESULT_PARAMS


def needs(encounter: dict) -> tuple[bool, bool]:
    """(municipality, primary care): whom this Encounter's admission notice goes to."""
    cls = encounter.get("class") or {}
    if encounter.get("status") not in ADMITTED or (cls.get("system"), cls.get("code")) != INPATIENT:
        return False, False
    municipality = primary_care = False
    for ext in encounter.get("extension") or []:
        if isinstance(ext, dict) and ext.get("url") == MAY_NEED_SERVICES:
            parts = {p.get("url"): p.get("valueBoolean") for p in ext.get("extension") or [] if isinstance(p, dict)}
            municipality |= parts.get("municipality") is True
            primary_care |= parts.get("primaryCare") is True
    return municipality, primary_care


def _is_folkbokforingsadress(address: Any) -> bool:
    if not isinstance(address, dict):
        return False
    for ext in address.get("extension") or []:
        if not isinstance(ext, dict):
            continue
        if ext.get("url") == FOLKBOKFORINGSKOMMUN:
            return True
        coding = ext.get("valueCoding") or {}
        if ext.get("url") == SE_ADDRESS_TYPE and (coding.get("system"), coding.get("code")) == FOLKBOKFORINGSADRESS:
            return True
    return False


def folkbokforingskommun(patient: dict) -> str | None:
    """The kommunkod of the person's folkbokföringsadress, if stated."""
    for address in patient.get("address") or []:
        for ext in (address.get("extension") or []) if isinstance(address, dict) else []:
            coding = ext.get("valueCoding") if isinstance(ext, dict) and ext.get("url") == FOLKBOKFORINGSKOMMUN else None
            if isinstance(coding, dict) and coding.get("system") == KOMMUNKOD and coding.get("code"):
                return coding["code"]
    return None


def kommun_route(kommunkod: str) -> str:
    return f"kommun:{kommunkod}"


def primary_care_route(hsa: str) -> str:
    return f"vc:{hsa}"


def notice_rows(patient_id: str, encounters: list[dict], municipality: list[str],
                primary_care: list[str]) -> list[tuple[str, str, str]]:
    """(route, type, id) rows: the Patient and each Encounter its recipients may read."""
    rows: set[tuple[str, str, str]] = set()
    for encounter in encounters:
        to_municipality, to_primary_care = needs(encounter)
        recipients = (municipality if to_municipality else []) + (primary_care if to_primary_care else [])
        for org in recipients:
            rows.add((org, "Encounter", encounter["id"]))
            rows.add((org, "Patient", patient_id))
    return sorted(rows)


def notice_view(rtype: str, body: dict) -> dict:
    """The notice's content of a Patient or an Encounter, tagged SUBSETTED."""
    meta = {k: v for k, v in (body.get("meta") or {}).items() if k in ("versionId", "lastUpdated")}
    # Only the labels that say how to handle the person (protection, confidentiality): others,
    # such as a psychiatry sensitivity code, would tell more than the notice.
    labels = [l for l in (body.get("meta") or {}).get("security") or []
              if isinstance(l, dict) and l.get("system") in NOTICE_LABEL_SYSTEMS]
    if labels:
        meta["security"] = labels
    meta["tag"] = [SUBSETTED]
    view: dict[str, Any] = {"resourceType": rtype, "id": body.get("id"), "meta": meta}
    if rtype == "Patient":
        ids = [i for i in body.get("identifier") or [] if isinstance(i, dict) and i.get("system") in PERSON_ID_SYSTEMS]
        addresses = [a for a in body.get("address") or [] if _is_folkbokforingsadress(a)]
        for key, value in (("identifier", ids), ("name", body.get("name")), ("address", addresses)):
            if value:
                view[key] = value
    else:
        extensions = [_notice_part(e) for e in body.get("extension") or []
                      if isinstance(e, dict) and e.get("url") in NOTICE_EXTENSIONS]
        if extensions:
            view["extension"] = extensions
        for key in ("status", "class", "subject", "period", "serviceProvider"):
            if key in body:
                view[key] = body[key]
    return view


def _notice_part(extension: dict) -> dict:
    """A planned discharge date without the clinical reason its revision may give."""
    if extension.get("url") != PLANNED_DISCHARGE:
        return extension
    return {**extension, "extension": [p for p in extension.get("extension") or []
                                       if isinstance(p, dict) and p.get("url") != "reason"]}
