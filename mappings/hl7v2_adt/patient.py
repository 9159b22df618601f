"""PID and PD1 → Patient, after the HL7 V2-to-FHIR IG's segment map (PID[Patient]).

What the message states replaces what the Patient said about it (identifiers, name, gender,
birth date, addresses, telecom, death, protection, listing); everything else the Patient holds is
kept. Swedish additions:

- PID-11 XAD-9 (county/parish code, the IG's ``district``) carries the kommunkod in a Swedish
  address; an address with one (four digits) gets the ``folkbokforingskommun`` extension, and when it is the legal address (XAD-7 ``L``) it is marked
  as the folkbokföringsadress (HL7 Sweden's address-type extension, SNOMED 63381000052101).
- PD1-12 protection indicator ``Y`` → the ``sekretessmarkering`` security label.
- PD1-3 patient primary facility (XON, organisation identifier in XON-10 as an HSA-id) → the
  vårdcentral the person is listed at (``generalPractitioner``), by HSA-id.
"""
from __future__ import annotations

from gateway.validation.identifiers import HSA_ID

from mappings.hl7v2_adt.identifiers import identifiers
from mappings.hl7v2_adt.message import Location, V2Message, error, fhir_date

SD = "https://samverkan.example.se/fhir/StructureDefinition/"
KOMMUNKOD = "https://samverkan.example.se/fhir/sid/kommunkod"
SE_ADDRESS_TYPE = "http://hl7.se/fhir/ig/base/StructureDefinition/SEBaseAddressPersonExtension"
FOLKBOKFORINGSADRESS = {"system": "http://snomed.info/sct", "code": "63381000052101"}
PROTECTION = {"system": "http://hl7.se/fhir/ig/base/CodeSystem/SecurityLabel", "code": "sekretessmarkering"}
GENDER = {"M": "male", "F": "female", "O": "other", "A": "other", "U": "unknown", "N": "unknown"}
NAME_USE = {"L": "official", "D": "usual", "M": "maiden", "N": "nickname", "A": "anonymous", "B": "old"}
ADDRESS_USE = {"H": "home", "B": "work", "O": "work", "C": "temp", "BA": "old", "M": "home", "L": "home"}
TELECOM_USE = {"PRN": "home", "ORN": "home", "WPN": "work", "PRS": "mobile", "VHN": "home", "EMR": "home"}
# Elements this map owns: a message replaces them; others stay as the Patient has them.
OWNED = ("identifier", "name", "gender", "birthDate", "address", "telecom", "deceasedBoolean",
         "deceasedDateTime", "generalPractitioner")


def patient_from(msg: V2Message, sender: str, existing: dict | None) -> dict:
    ids = identifiers(msg, "PID", 3, sender)
    if not ids:
        raise error("PID-3 has no identifier: send the personnummer (OID 1.2.752.129.2.1.3.1) or a local id.",
                    "101", Location("PID", 1, 3))
    patient = {k: v for k, v in (existing or {"resourceType": "Patient"}).items() if k not in OWNED}
    kept = [i for i in (existing or {}).get("identifier", []) if i.get("system") not in {n["system"] for n in ids}]
    patient["identifier"] = ids + kept
    names = [_name(msg, xpn) for xpn in msg.repetitions("PID", 5)]
    if any(names):
        patient["name"] = [n for n in names if n]
    gender = GENDER.get(msg.get("PID", 8).upper())
    if gender:
        patient["gender"] = gender
    birth = fhir_date(msg.get("PID", 7))
    if msg.get("PID", 7) and birth is None:
        raise error(f"PID-7 '{msg.get('PID', 7)}' is not a date.", "102", Location("PID", 1, 7))
    if birth:
        patient["birthDate"] = birth
    addresses = [a for a in (_address(msg, xad) for xad in msg.repetitions("PID", 11)) if a]
    if addresses:
        patient["address"] = addresses
    telecom = [t for f in (13, 14) for t in (_telecom(msg, xtn, f) for xtn in msg.repetitions("PID", f)) if t]
    if telecom:
        patient["telecom"] = telecom
    died = msg.timestamp("PID", 29)
    if died is not None:
        patient["deceasedDateTime"] = died.isoformat(timespec="seconds")
    elif msg.get("PID", 30).upper() == "Y":
        patient["deceasedBoolean"] = True
    listed = _listed_at(msg)
    if listed:
        patient["generalPractitioner"] = listed
    elif (existing or {}).get("generalPractitioner"):
        patient["generalPractitioner"] = existing["generalPractitioner"]
    _protection(msg, patient)
    return patient


def _name(msg: V2Message, xpn) -> dict | None:
    family, given, middle = msg.part(xpn, 1), msg.part(xpn, 2), msg.part(xpn, 3)
    name: dict = {}
    use = NAME_USE.get(msg.part(xpn, 7).upper())
    if use:
        name["use"] = use
    if family:
        name["family"] = family
    givens = [g for g in (given, middle) if g]
    if givens:
        name["given"] = givens
    if msg.part(xpn, 4):
        name["suffix"] = [msg.part(xpn, 4)]
    if msg.part(xpn, 5):
        name["prefix"] = [msg.part(xpn, 5)]
    return name if family or givens else None


def _address(msg: V2Message, xad) -> dict | None:
    line = [p for p in (msg.part(xad, 1), msg.part(xad, 2)) if p]
    address: dict = {}
    kind = msg.part(xad, 7).upper()
    district = msg.part(xad, 9)  # county/parish: in Sweden the kommunkod (4 digits)
    kommunkod = district if len(district) == 4 and district.isdigit() and msg.part(xad, 6) in ("", "SE", "SWE") \
        else ""
    extensions = []
    if kind == "L" or (kommunkod and kind in ("", "H")):
        extensions.append({"url": SE_ADDRESS_TYPE, "valueCoding": FOLKBOKFORINGSADRESS})
    if kommunkod:
        extensions.append({"url": SD + "folkbokforingskommun", "valueCoding": {"system": KOMMUNKOD,
                                                                              "code": kommunkod}})
    if extensions:
        address["extension"] = extensions
    if ADDRESS_USE.get(kind):
        address["use"] = ADDRESS_USE[kind]
    for key, value in (("line", line), ("city", msg.part(xad, 3)), ("district", district), ("state", msg.part(xad, 4)),
                       ("postalCode", msg.part(xad, 5)), ("country", msg.part(xad, 6))):
        if value:
            address[key] = value
    return address if len(address) > (1 if "use" in address else 0) else None


def _telecom(msg: V2Message, xtn, field: int) -> dict | None:
    value = msg.part(xtn, 1) or msg.part(xtn, 12) or msg.part(xtn, 4)
    if not value:
        return None
    equipment = msg.part(xtn, 3).upper()
    system = "email" if equipment == "INTERNET" or "@" in value else "fax" if equipment == "FX" else "phone"
    telecom = {"system": system, "value": value}
    use = TELECOM_USE.get(msg.part(xtn, 2).upper()) or ("work" if field == 14 else None)
    if use:
        telecom["use"] = use
    return telecom


def _listed_at(msg: V2Message) -> list[dict]:
    """PD1-3 (XON): the organisations the person is listed at, by HSA-id (XON-10) where given."""
    out = []
    for xon in msg.repetitions("PD1", 3):
        hsa, name = msg.part(xon, 10), msg.part(xon, 1)
        ref: dict = {}
        if hsa.startswith("SE") and "-" in hsa:
            ref["identifier"] = {"system": HSA_ID, "value": hsa}
        if name:
            ref["display"] = name
        if "identifier" in ref:
            out.append(ref)
    return out


def _protection(msg: V2Message, patient: dict) -> None:
    flag = msg.get("PD1", 12).upper()
    if flag not in ("Y", "N"):
        return
    meta = dict(patient.get("meta") or {})
    labels = [label for label in meta.get("security") or [] if label != PROTECTION]
    if flag == "Y":
        labels.append(PROTECTION)
    if labels:
        meta["security"] = labels
    else:
        meta.pop("security", None)
    patient["meta"] = meta
