"""``region-fhir``: a region EHR's own FHIR R4, normalised to the shared plan through ConceptMaps.

Region EHRs that speak FHIR still speak their own dialect: OID identifier systems
(``urn:oid:1.2.752.129.2.1.3.1`` for the personnummer), their own ids, their own ward codes and
task codes. This mapping takes one resource or a Bundle (collection, transaction, batch) of
Patient, Encounter, Task and CarePlan (``message``), and writes our form of it as one transaction
through the FHIR core as the sending client (``transaction``): identifiers normalised, references
made ours (``references``), local codes through the gateway's ConceptMaps — the same service as
``ConceptMap/$translate`` (``codes``) — and our profiles claimed. It answers a FHIR
``transaction-response`` (``reply``). ``mappings/README.md`` says what it accepts and how a
region adds its own map.
"""
from __future__ import annotations

from gateway.mapping import Lookup, Mapping, Outcome, Reply, Translation

from mappings.region_fhir.message import read_message
from mappings.region_fhir.reply import MEDIA_TYPE, build_reply
from mappings.region_fhir.transaction import translate


class RegionFhirMapping(Mapping):
    name = "region-fhir"
    version = "1.0.0"
    title = ("A region EHR's FHIR R4 (Patient, Encounter, Task, CarePlan) with OID systems and local codes, "
             "normalised through the ConceptMaps")
    media_types = (MEDIA_TYPE,)

    async def translate(self, message: bytes, lookup: Lookup) -> Translation:
        return await translate(read_message(message), lookup)

    def reply(self, message: bytes, translation: Translation | None, outcome: Outcome) -> Reply:
        return build_reply(translation, outcome)
