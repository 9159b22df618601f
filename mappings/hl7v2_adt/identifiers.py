"""Identifiers in CX fields (PID-3, PV1-19, MRG-1): Swedish national ids by their OID, the rest local.

Swedish hospital systems send the personnummer in PID-3 with the OID of its issuer as the
assigning authority: bare in CX-4.1 (``191212121212^^^1.2.752.129.2.1.3.1^PI``) or as a
universal id (``…^^^&1.2.752.129.2.1.3.1&ISO^PI``). …3.1 is a personnummer, …3.3 a
samordningsnummer; both are normalised to the HL7 Sweden base systems and their date and Luhn
check digit are checked (AE naming the field when wrong). Anything else — a hospital's own
number, a local reservnummer — stays a local identifier of its assigning authority: ``urn:oid:``
when that is an OID, else a URN naming the sending organisation and the authority's namespace.
"""
from __future__ import annotations

import re

from gateway.validation.identifiers import PERSONNUMMER, SAMORDNINGSNUMMER, check_person_number

from mappings.hl7v2_adt.message import Location, V2Message, error

NATIONAL = {"1.2.752.129.2.1.3.1": PERSONNUMMER, "1.2.752.129.2.1.3.3": SAMORDNINGSNUMMER}
LOCAL_PREFIX = "urn:samverkan:hl7v2:"  # + <sending organisation>:<assigning authority namespace or id type>
_OID = re.compile(r"^[0-2](\.(0|[1-9][0-9]*))+$")


def authority(msg: V2Message, cx) -> tuple[str, str]:
    """(OID or '', namespace) of a CX's assigning authority (CX-4: namespace ^ universal id ^ type)."""
    namespace, universal, kind = msg.part(cx, 4, 1), msg.part(cx, 4, 2), msg.part(cx, 4, 3)
    if universal and (kind.upper() == "ISO" or _OID.match(universal)):
        return universal, namespace
    if _OID.match(namespace):
        return namespace, ""
    return "", namespace


def cx_identifier(msg: V2Message, cx, where: Location, sender: str) -> dict | None:
    """One CX as a FHIR Identifier (None if it has no value); AE for a bad national id."""
    value = msg.part(cx, 1).strip()
    if not value:
        return None
    oid, namespace = authority(msg, cx)
    system = NATIONAL.get(oid)
    if system is not None:
        normal, problem = check_person_number(value, samordning=system == SAMORDNINGSNUMMER)
        if problem:
            raise error(f"{where}: {problem}.", "102", where)
        return {"system": system, "value": normal}
    identifier = {"system": f"urn:oid:{oid}" if oid else f"{LOCAL_PREFIX}{sender}:{namespace or msg.part(cx, 5) or 'local'}",
                  "value": value}
    id_type = msg.part(cx, 5)
    if id_type:
        identifier["type"] = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": id_type}]}
    return identifier


def identifiers(msg: V2Message, segment: str, field: int, sender: str, seq: int = 1) -> list[dict]:
    where = Location(segment, seq, field)
    found = [cx_identifier(msg, cx, where, sender) for cx in msg.repetitions(segment, field, seq)]
    return [i for i in found if i is not None]


def national(ids: list[dict]) -> dict | None:
    """The identifier the person is known by nationally (personnummer before samordningsnummer)."""
    for system in (PERSONNUMMER, SAMORDNINGSNUMMER):
        for identifier in ids:
            if identifier["system"] == system:
                return identifier
    return None


def search_token(identifier: dict) -> str:
    """``system|value`` for a FHIR token search (| and , escaped)."""
    def esc(text: str) -> str:
        return text.replace("\\", "\\\\").replace("|", "\\|").replace(",", "\\,").replace("$", "\\$")
    return f"{esc(identifier['system'])}|{esc(identifier['value'])}"
