"""``hl7v2-adt``: how Swedish hospital EHRs announce stays — HL7 v2 ADT, versions 2.3 to 2.8.

Inbound only: an ADT message becomes the stay (Encounter), the person (Patient) and a Provenance
of the message, written by the sending client (``events``); the reply is an original-mode ACK
(``ack``). Field by field, and the LUSEN Z-segment ZLU: ``mappings/README.md``.
"""
from __future__ import annotations

from datetime import datetime, timezone

from gateway.errors import FhirError
from gateway.mapping import Lookup, Mapping, MappingError, Outcome, Reply, Translation

from mappings.hl7v2_adt.ack import Header, ack
from mappings.hl7v2_adt.events import EVENTS, translate
from mappings.hl7v2_adt.message import Location, V2Message, error, reject

MEDIA_TYPE = "x-application/hl7-v2+er7"
VERSIONS = ("2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1", "2.8", "2.8.1", "2.8.2")


class Hl7v2AdtMapping(Mapping):
    name = "hl7v2-adt"
    version = "1.0.0"
    title = "HL7 v2 ADT (2.3-2.8) with the LUSEN segment ZLU: stays, persons, merges"
    media_types = (MEDIA_TYPE, "application/hl7-v2+er7", "application/hl7-v2")

    async def translate(self, message: bytes, lookup: Lookup) -> Translation:
        msg = V2Message(message)
        kind, event = msg.get("MSH", 9, 1).upper(), msg.get("MSH", 9, 2).upper() or msg.get("EVN", 1).upper()
        if kind != "ADT":
            raise reject(f"MSH-9 message type '{kind}' is not ADT; this listener takes ADT only.", "200",
                         Location("MSH", 1, 9))
        if event not in EVENTS:
            raise reject(f"ADT^{event} is not an event this gateway maps ({', '.join(sorted(EVENTS))}).", "201",
                         Location("MSH", 1, 9))
        version = msg.get("MSH", 12)
        if version not in VERSIONS:
            raise reject(f"MSH-12 version '{version}' is not supported; send 2.3 to 2.8.", "203",
                         Location("MSH", 1, 12))
        control_id = msg.get("MSH", 10)
        if not control_id:
            raise reject("MSH-10 (message control id) is empty: it identifies the message.", "101",
                         Location("MSH", 1, 10))
        if msg.get("MSH", 11, 1).upper() not in ("P", "T", "D", ""):
            raise reject(f"MSH-11 processing id '{msg.get('MSH', 11)}' is not P, T or D.", "202",
                         Location("MSH", 1, 11))
        at = (msg.timestamp("EVN", 2) if msg.has("EVN") else None) or msg.timestamp("MSH", 7)
        if at is None:
            raise error("Neither EVN-2 nor MSH-7 says when the event happened.", "101", Location("MSH", 1, 7))
        if not msg.has("PID"):
            raise error("The message has no PID segment.", "100", Location("PID", 1))
        key = f"{_facility(msg)}|{control_id}"
        return await translate(msg, event, at, lookup, key)

    def reply(self, message: bytes, translation: Translation | None, outcome: Outcome) -> Reply:
        header = Header.read(message)
        now = datetime.now(timezone.utc)
        if outcome.ok:
            return Reply(ack(header, "AA", outcome.note, now=now), MEDIA_TYPE)
        exc = outcome.error
        if isinstance(exc, MappingError):
            code, location, kind = exc.code, exc.location, "AR" if exc.reject else "AE"
        elif isinstance(exc, FhirError):  # the gateway refused the write: what the sender must fix
            code, location = ("206" if exc.status == 412 else "207" if exc.status in (403, 404, 409) else "102"), ""
            kind = "AR" if exc.status >= 500 else "AE"  # 503/507: the sender may send it again later
        else:
            code, location, kind = "207", "", "AR"
        return Reply(ack(header, kind, _text(exc), code, location, now=now), MEDIA_TYPE)

    def refuse(self, partial: bytes, reason: str) -> bytes:
        """An AR for a message the transport refused before it was complete (MLLP: too large)."""
        return ack(Header.read(partial), "AR", reason, "207", "MSH^1")


def _facility(msg: V2Message) -> str:
    return "^".join(p for p in (msg.get("MSH", 4, 1), msg.get("MSH", 4, 2)) if p) or msg.get("MSH", 3, 1)


def _text(exc: Exception | None) -> str:
    if isinstance(exc, FhirError) and exc.issues:
        return "; ".join(i.diagnostics for i in exc.issues)[:400]
    return str(exc) if exc else ""
