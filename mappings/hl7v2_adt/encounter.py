"""PV1, PV2 and ZLU → the stay (Encounter), event by event; after the IG's PV1[Encounter] map.

The stay is found by its visit number (PV1-19). What an event says is applied to the stay as it
is stored — a transfer adds to the location history, a revised planned discharge date adds a
revision — so every event is a new version of one Encounter, in the style of MedCom's
HospitalNotification. LUSEN's facts travel in the ZLU segment (``mappings/README.md``):

| field | content | FHIR |
|---|---|---|
| ZLU-1 | may need municipal services (Y/N) | may-need-services.municipality |
| ZLU-2 | may need primary-care services (Y/N) | may-need-services.primaryCare |
| ZLU-3 | when the doctor judged it (TS) | may-need-services.judged |
| ZLU-4 | utskrivningsklar since (TS) | utskrivningsklar.time (a new notice) |
| ZLU-5 | utskrivningsklar revoked at (TS) | utskrivningsklar.revoked (of the notice in force) |
| ZLU-6 | why the planned discharge date moved (ST) | planned-discharge-date.reason |

PV2-9 (expected discharge date) is the planned discharge date; a changed one is recorded as a
revision with the event's time (EVN-2, else MSH-7).
"""
from __future__ import annotations

from datetime import datetime

from gateway.validation.identifiers import HSA_ID

from mappings.hl7v2_adt.identifiers import identifiers
from mappings.hl7v2_adt.message import STOCKHOLM, Location, V2Message, error, fhir_datetime

SD = "https://samverkan.example.se/fhir/StructureDefinition/"
MAY_NEED, PLANNED, UK = SD + "may-need-services", SD + "planned-discharge-date", SD + "utskrivningsklar"
LUSEN_PROFILE = SD + "lusen-encounter"
ACT = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
# HL7 table 0004 patient class → v3 ActCode (the IG's table-hl70004 map).
CLASS = {"I": ("IMP", "inpatient encounter"), "O": ("AMB", "ambulatory"), "E": ("EMER", "emergency"),
         "P": ("PRENC", "pre-admission"), "R": ("AMB", "ambulatory"), "B": ("IMP", "inpatient encounter"),
         "C": ("AMB", "ambulatory"), "N": ("AMB", "ambulatory"), "U": ("AMB", "ambulatory")}
# What each event makes of the stay's status (None: unchanged).
STATUS = {"A01": "in-progress", "A02": "in-progress", "A03": "finished", "A04": "in-progress", "A05": "planned",
          "A06": "in-progress", "A07": "in-progress", "A08": None, "A11": "entered-in-error", "A12": "in-progress",
          "A13": "in-progress", "A21": "onleave", "A22": "in-progress"}


def stay_identifier(msg: V2Message, sender: str) -> dict:
    found = identifiers(msg, "PV1", 19, sender)
    if not found:
        raise error("PV1-19 (visit number) is empty: the stay is found by it.", "101", Location("PV1", 1, 19))
    return found[0]


def encounter_from(msg: V2Message, event: str, at: datetime, sender: str, organization: str,
                   existing: dict | None, patient_ref: dict) -> dict:
    enc = dict(existing or {"resourceType": "Encounter", "status": "in-progress"})
    visit = stay_identifier(msg, sender)
    enc["identifier"] = [visit] + [i for i in enc.get("identifier", []) if i.get("system") != visit["system"]]
    enc["subject"] = patient_ref
    patient_class = msg.get("PV1", 2).upper()
    if patient_class:
        if patient_class not in CLASS:
            raise error(f"PV1-2 patient class '{patient_class}' is not in HL7 table 0004.", "103",
                        Location("PV1", 1, 2))
        code, display = CLASS[patient_class]
        enc["class"] = {"system": ACT, "code": code, "display": display}
    enc.setdefault("class", {"system": ACT, "code": "IMP", "display": "inpatient encounter"})
    status = STATUS.get(event)
    if status:
        enc["status"] = status
    _period(msg, event, at, enc)
    _locations(msg, event, at, enc)
    service = _hospital_service(msg)
    if service:
        enc["serviceType"] = service
    enc["serviceProvider"] = _unit(msg, organization) or enc.get("serviceProvider") or _hsa(organization)
    if enc["class"]["code"] == "IMP":
        enc["meta"] = {**(enc.get("meta") or {}), "profile": [LUSEN_PROFILE]}
    _lusen(msg, at, enc)
    return enc


def _period(msg: V2Message, event: str, at: datetime, enc: dict) -> None:
    period = dict(enc.get("period") or {})
    admitted = msg.timestamp("PV1", 44)
    if admitted is not None:
        period["start"] = fhir_datetime(admitted)
    elif "start" not in period and event in ("A01", "A04", "A06", "A07", "A02", "A03", "A08"):
        period["start"] = fhir_datetime(at)
    if event == "A03":
        period["end"] = fhir_datetime(msg.timestamp("PV1", 45) or at)
    elif event in ("A13", "A11"):
        period.pop("end", None)
    if "end" in period and "start" in period and _when(period["end"]) < _when(period["start"]):
        raise error("PV1-45 (discharge) is before PV1-44 (admission).", "102", Location("PV1", 1, 45))
    if period:
        enc["period"] = period


def _locations(msg: V2Message, event: str, at: datetime, enc: dict) -> None:
    """PV1-3 (PL): the bed, room and ward; a new one closes the one before (A02 transfer)."""
    pl = msg.repetitions("PV1", 3)
    if not pl:
        return
    where = _location(msg, pl[0])
    history = [dict(h) for h in enc.get("location") or []]
    current = next((h for h in reversed(history) if h.get("status") == "active"), None)
    if current is not None and current.get("location") == where:
        return
    if current is not None:
        current["status"] = "completed"
        current["period"] = {**current.get("period", {}), "end": fhir_datetime(at)}
    history.append({"location": where, "status": "active", "period": {"start": fhir_datetime(at)}})
    enc["location"] = history


def _location(msg: V2Message, pl) -> dict:
    ward, room, bed, facility = msg.part(pl, 1), msg.part(pl, 2), msg.part(pl, 3), msg.part(pl, 4)
    display = " ".join(p for p in (ward, f"rum {room}" if room else "", f"säng {bed}" if bed else "") if p)
    ref: dict = {"display": display or facility or "okänd plats"}
    hsa = msg.part(pl, 10) if msg.part(pl, 10).startswith("SE") else facility if facility.startswith("SE") else ""
    if hsa and "-" in hsa:
        ref["identifier"] = {"system": HSA_ID, "value": hsa}
    return ref


def _hospital_service(msg: V2Message) -> dict | None:
    code = msg.get("PV1", 10)
    if not code:
        return None
    return {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0069", "code": code}]}


def _unit(msg: V2Message, organization: str) -> dict | None:
    """The inpatient unit: an HSA-id in PV1-3 (PL-4 facility or PL-10), else the sending organisation."""
    pl = msg.repetitions("PV1", 3)
    if pl:
        for candidate in (msg.part(pl[0], 10), msg.part(pl[0], 4)):
            if candidate.startswith("SE") and "-" in candidate:
                return _hsa(candidate)
    return None


def _hsa(hsa: str) -> dict:
    return {"identifier": {"system": HSA_ID, "value": hsa}}


def _lusen(msg: V2Message, at: datetime, enc: dict) -> None:
    """PV2-9 and ZLU: the judgement, the planned date and its revisions, utskrivningsklar."""
    ext = [dict(e) for e in enc.get("extension") or []]
    recorded = fhir_datetime(at)
    if msg.has("ZLU") and msg.get("ZLU", 1).upper() in ("Y", "N") and msg.get("ZLU", 2).upper() in ("Y", "N"):
        judged = msg.timestamp("ZLU", 3) or at
        ext = [e for e in ext if e.get("url") != MAY_NEED] + [{"url": MAY_NEED, "extension": [
            {"url": "municipality", "valueBoolean": msg.get("ZLU", 1).upper() == "Y"},
            {"url": "primaryCare", "valueBoolean": msg.get("ZLU", 2).upper() == "Y"},
            {"url": "judged", "valueDateTime": fhir_datetime(judged)}]}]
    elif msg.has("ZLU") and (msg.get("ZLU", 1) or msg.get("ZLU", 2)):
        raise error("ZLU-1 and ZLU-2 are Y or N, both.", "103", Location("ZLU", 1, 1))
    planned = msg.timestamp("PV2", 9)
    if planned is not None:
        in_force = _latest(ext, PLANNED, "recorded")
        value = fhir_datetime(planned)
        if in_force is None or _part(in_force, "date") != value:
            parts = [{"url": "date", "valueDateTime": value}, {"url": "recorded", "valueDateTime": recorded}]
            if msg.get("ZLU", 6) and in_force is not None:
                parts.append({"url": "reason", "valueString": msg.get("ZLU", 6)})
            ext.append({"url": PLANNED, "extension": parts})
    ready = msg.timestamp("ZLU", 4)
    if ready is not None and not any(e.get("url") == UK and _part(e, "time") == fhir_datetime(ready) for e in ext):
        ext.append({"url": UK, "extension": [{"url": "time", "valueDateTime": fhir_datetime(ready)}]})
    revoked = msg.timestamp("ZLU", 5)
    if revoked is not None:
        notice = next((e for e in reversed(ext) if e.get("url") == UK and _part(e, "revoked") is None), None)
        if notice is None:
            raise error("ZLU-5 revokes an utskrivningsklar notice, but none is in force.", "207",
                        Location("ZLU", 1, 5))
        notice["extension"] = [*notice["extension"], {"url": "revoked", "valueDateTime": fhir_datetime(revoked)}]
    if ext:
        enc["extension"] = ext


def _part(extension: dict, url: str) -> str | None:
    return next((p.get("valueDateTime") for p in extension.get("extension") or [] if p.get("url") == url), None)


def _latest(ext: list[dict], url: str, by: str) -> dict | None:
    occurrences = [e for e in ext if e.get("url") == url and _part(e, by)]
    return max(occurrences, key=lambda e: _when(_part(e, by))) if occurrences else None


def _when(text: str) -> datetime:
    """A FHIR dateTime for comparison (a date alone is its midnight, Stockholm time)."""
    parsed = datetime.fromisoformat(text if "T" in text else f"{text}T00:00:00")
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=STOCKHOLM)
