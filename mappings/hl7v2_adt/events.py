"""ADT events → one transaction Bundle each: the Patient, the stay, and a Provenance of the message.

| event | what happens |
|---|---|
| A01 / A04 / A05 | admit / register / pre-admit: the stay in progress (A05 planned) |
| A02 | transfer: the location history grows |
| A03 | discharge: finished, period.end |
| A06 / A07 | outpatient ↔ inpatient: the class from PV1-2 |
| A08 | update: Patient and stay as the message states them |
| A11 | cancel admit: entered-in-error (the IG says cancelled; issue 14 and MedCom say void) |
| A12 | cancel transfer: in progress at the location PV1-3 names |
| A13 | cancel discharge: back in progress, no end |
| A21 / A22 | leave of absence / return: onleave / in progress |
| A28 / A31 | add / update person: the Patient only |
| A40 | merge: the MRG-1 Patient is replaced by the PID one (``link``), the survivor keeps everything |

Every stay event creates the stay when it is not known yet (an A08 or A03 may be the first the
gateway hears of it, and a cancel that arrives before its admission must win over it). Resources
the mapping maintains carry ``meta.source`` = ``urn:samverkan:mapping:hl7v2-adt:<organisation>``
and are found again by it: another organisation's Patient for the same person is never touched.
"""
from __future__ import annotations

import uuid
from datetime import datetime
from urllib.parse import urlencode

from gateway.mapping import Lookup, Translation
from gateway.validation.identifiers import HSA_ID

from mappings.hl7v2_adt.encounter import encounter_from, stay_identifier
from mappings.hl7v2_adt.identifiers import identifiers, national, search_token
from mappings.hl7v2_adt.message import Location, V2Message, error, fhir_datetime
from mappings.hl7v2_adt.patient import patient_from

STAY_EVENTS = frozenset({"A01", "A02", "A03", "A04", "A05", "A06", "A07", "A08", "A11", "A12", "A13", "A21", "A22"})
PERSON_EVENTS = frozenset({"A28", "A31"})
EVENTS = STAY_EVENTS | PERSON_EVENTS | {"A40"}
SOURCE = "urn:samverkan:mapping:hl7v2-adt:"
EVENT_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0003"


class _Bundle:
    def __init__(self) -> None:
        self.entries: list[dict] = []

    def save(self, resource: dict, found: dict | None, query: str) -> dict:
        """Update what was found (If-Match: no lost update) unless the message changes nothing of
        it (no new version, no notification), else create it unless it appeared meanwhile."""
        rtype = resource["resourceType"]
        if found is not None:
            resource["id"] = found["id"]
            if _unchanged(resource, found):
                return {"reference": f"{rtype}/{found['id']}"}
            self.entries.append({"resource": resource, "request": {
                "method": "PUT", "url": f"{rtype}/{found['id']}", "ifMatch": f'W/"{found["meta"]["versionId"]}"'}})
            return {"reference": f"{rtype}/{found['id']}"}
        full_url = f"urn:uuid:{uuid.uuid4()}"
        self.entries.append({"fullUrl": full_url, "resource": resource,
                             "request": {"method": "POST", "url": rtype, "ifNoneExist": query}})
        return {"reference": full_url}

    def add(self, resource: dict) -> None:
        self.entries.append({"resource": resource, "request": {"method": "POST", "url": resource["resourceType"]}})

    def transaction(self) -> dict:
        return {"resourceType": "Bundle", "type": "transaction", "entry": self.entries}


def _unchanged(new: dict, stored: dict) -> bool:
    def comparable(resource: dict) -> dict:
        meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
        return {**resource, "meta": meta}
    return comparable(new) == comparable(stored)


async def translate(msg: V2Message, event: str, at: datetime, lookup: Lookup, key: str) -> Translation:
    org = lookup.organization
    source = SOURCE + org
    bundle = _Bundle()
    patient, patient_query = await _find_patient(msg, "PID", 3, org, source, lookup)
    resource = patient_from(msg, org, patient)
    resource["meta"] = {**(resource.get("meta") or {}), "source": source}
    prior = await _prior(msg, org, source, lookup, patient) if event == "A40" else None
    if prior is not None:  # the survivor replaces the MRG-1 Patient; both keep what they hold
        prior_ref = {"reference": f"Patient/{prior['id']}"}
        resource["link"] = [lk for lk in resource.get("link") or [] if lk.get("other") != prior_ref] + \
            [{"other": prior_ref, "type": "replaces"}]
    patient_ref = bundle.save(resource, patient, patient_query)
    targets = [patient_ref]
    subject = f"person:{patient_query}"
    if prior is not None:
        links = [lk for lk in prior.get("link") or [] if lk.get("type") != "replaced-by"]
        bundle.save({**prior, "active": False, "link": links + [{"other": patient_ref, "type": "replaced-by"}]},
                    prior, "")
        targets.append({"reference": f"Patient/{prior['id']}"})
    elif event in STAY_EVENTS and msg.has("PV1") and msg.get("PV1", 19):
        visit = stay_identifier(msg, org)
        query = urlencode({"identifier": search_token(visit), "_source": source})
        found = await lookup.search("Encounter", query)
        stay = encounter_from(msg, event, at, org, org, found[0] if found else None, patient_ref)
        stay["meta"] = {**(stay.get("meta") or {}), "source": source}
        targets.append(bundle.save(stay, found[0] if found else None, query))
        subject = f"stay:{search_token(visit)}"
    elif event in STAY_EVENTS and event != "A08":
        raise error(f"{event} is about a stay: PV1-19 (visit number) is needed.", "101", Location("PV1", 1, 19))
    bundle.add(_provenance(msg, event, at, org, key, targets))
    return Translation(bundle.transaction(), key=key, subject=subject,
                       occurred_us=int(at.timestamp() * 1_000_000))


async def _find_patient(msg: V2Message, segment: str, field: int, org: str, source: str,
                        lookup: Lookup) -> tuple[dict | None, str]:
    """The Patient this organisation's feed keeps for the person (national id first), and its query."""
    ids = identifiers(msg, segment, field, org)
    if not ids:
        raise error(f"{segment}-{field} has no identifier: send the personnummer (OID 1.2.752.129.2.1.3.1) "
                    "or a local id.", "101", Location(segment, 1, field))
    key = national(ids) or ids[0]
    query = urlencode({"identifier": search_token(key), "_source": source})
    found = await lookup.search("Patient", query)
    return (found[0] if found else None), query


async def _prior(msg: V2Message, org: str, source: str, lookup: Lookup, survivor: dict | None) -> dict:
    """A40: the Patient MRG-1 names, which the survivor (PID) replaces."""
    prior, _ = await _find_patient(msg, "MRG", 1, org, source, lookup)
    if prior is None:
        raise error("MRG-1 names no Patient this feed has sent: nothing to merge.", "204", Location("MRG", 1, 1))
    if survivor is not None and prior["id"] == survivor["id"]:
        raise error("MRG-1 names the same Patient as PID-3.", "205", Location("MRG", 1, 1))
    return prior


def _provenance(msg: V2Message, event: str, at: datetime, org: str, key: str, targets: list[dict]) -> dict:
    """EVN / MSH → Provenance (the IG's EVN[Provenance], MSH[Provenance-Source]): which message, when, from whom."""
    provenance = {"resourceType": "Provenance", "target": targets, "recorded": fhir_datetime(at),
                  "activity": {"coding": [{"system": EVENT_SYSTEM, "code": event}]},
                  "agent": [{"type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/"
                                                            "provenance-participant-type", "code": "author"}]},
                             "who": {"identifier": {"system": HSA_ID, "value": org}}}],
                  "entity": [{"role": "source", "what": {"identifier": {
                      "system": f"urn:samverkan:hl7v2:{org}:message", "value": key}}}]}
    occurred = msg.timestamp("EVN", 6) if msg.has("EVN") else None
    if occurred is not None:
        provenance["occurredDateTime"] = fhir_datetime(occurred)
    return provenance
