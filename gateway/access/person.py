"""One person, however many Patient resources: the key the access rule is kept by.

Region and municipality each register "their" Patient for the same person, often before any
consent exists (a conditional create must not tell one of the other's: that would be an
existence signal). So the access rule, and through it the shared plan, keys on the **person**,
not on a Patient resource: the national identity (personnummer, samordningsnummer, nationellt
reservnummer, in that order of preference) when the Patient carries one, else the Patient
itself. Every resource about a Patient is stored with that Patient's person, so a grant for a
person covers each organisation's own Patient for it and what is written about it.

A Patient whose national identity is corrected moves, with everything about it, to the new
person (``Transaction.rekey_person``); only its author may change it (the write rule).
"""
from __future__ import annotations

from typing import Any

PERSONNUMMER = "http://electronichealth.se/identifier/personnummer"
SAMORDNINGSNUMMER = "http://electronichealth.se/identifier/samordningsnummer"
RESERVNUMMER = "http://electronichealth.se/identifier/nationelltReservnummer"
NATIONAL_IDS = (PERSONNUMMER, SAMORDNINGSNUMMER, RESERVNUMMER)  # order of preference


def person_key(patient_id: str, patient: Any) -> str:
    """The person a Patient stands for: ``system|value`` of its national id (identifiers are
    normalised to these systems on write), else ``Patient/<id>``."""
    identifiers = patient.get("identifier") if isinstance(patient, dict) else None
    found = {i.get("system"): i.get("value") for i in identifiers or []
             if isinstance(i, dict) and isinstance(i.get("value"), str) and i.get("value")}
    for system in NATIONAL_IDS:
        if system in found:
            return f"{system}|{found[system]}"
    return f"Patient/{patient_id}"
