"""The access rows a write changes, recomputed inside the write's own store transaction.

Two kinds of rows decide who besides the author may see a person's data:

- **grants** (``access_grants``): custodian C discloses its data about person P to organisation
  O (``gateway.access.decision`` over the teams and consents that speak for C,
  ``gateway.access.custodians``). Recomputed on CareTeam, Consent and Provenance
  (confirmation) writes, on Organization / PractitionerRole writes (grants name HSA-ids those
  resources stand for), and when a Patient moves to another person.
- **LUSEN notice rows** (``notice_access``): the admission notice for the person's
  municipality and primary care, as routes (``gateway.access.notice``); the operator's
  directory says at read time which organisations a route reaches. Recomputed on Patient and
  Encounter writes, and on Organization / PractitionerRole writes (a listed vårdcentral's
  entry changed).

Being in the same transaction, a withdrawn consent or a void stay closes access the moment it
commits.
"""
from __future__ import annotations

from gateway.access import notice
from gateway.access.custodians import CONFIRMABLE, Resolver, confirmed_targets, hsa_of, is_confirmation
from gateway.access.decision import grant_intervals
from gateway.access.person import person_key
from gateway.fhir.canonical import parse_json
from gateway.store import StoredResource, Transaction
from gateway.store.plan import ReferenceClause, SearchPlan

GRANT_TYPES = frozenset({"CareTeam", "Consent"})  # writes that change who may see a person
GRANT_SOURCES = frozenset({"Organization", "PractitionerRole"})  # grants depend on their HSA-ids
NOTICE_SOURCES = frozenset({"Patient", "Encounter"})  # LUSEN notice rows depend on them (and on GRANT_SOURCES)
# Where CareTeams and Consents name organisations (their grants change when those entries do).
_NAMING_PARAMS = (("CareTeam", "participant"), ("CareTeam", "participant-organization"),
                  ("CareTeam", "managing-organization"), ("Consent", "actor"), ("Consent", "organization"))


class AccessRows:
    def __init__(self, local_base: str | None = None):
        self.local_base = local_base

    async def after_write(self, tx: Transaction, rtype: str, rid: str, persons: set[str],
                          previous: StoredResource | None = None) -> None:
        """Recompute the rows of the persons this write concerns (``persons``: the one the
        resource is about now and before)."""
        persons = {p for p in persons if p}
        if rtype == "Patient":  # a corrected national id moves what is about the Patient along
            found = await tx.read("Patient", rid)
            if found is not None and found.person:
                persons |= await tx.rekey_person(rid, found.person)
        if rtype in NOTICE_SOURCES:
            await self._notices(tx, persons)
        if rtype in GRANT_SOURCES:
            ref = f"{rtype}/{rid}"
            await self._notices(tx, await self._listed_with(tx, rtype, rid, ref, previous))
            await self._grants(tx, await self._naming(tx, rtype, rid, ref, previous))
        elif rtype in GRANT_TYPES or rtype == "Patient":
            await self._grants(tx, persons)
        elif rtype == "Provenance":
            await self._grants(tx, await self._confirmed(tx, rid, previous))

    async def rebuild(self, tx: Transaction) -> int:
        """Every person's rows afresh (after an upgrade that reshaped them); returns how many persons."""
        persons = set()
        for patient, _ in await tx.persons():
            found = await tx.read("Patient", patient)
            key = person_key(patient, parse_json(found.body)) if found is not None and found.body \
                else f"Patient/{patient}"
            persons |= await tx.rekey_person(patient, key) | {key}
        await self._grants(tx, persons)
        await self._notices(tx, persons)
        return len(persons)

    async def _grants(self, tx: Transaction, persons: set[str]) -> None:
        resolver = Resolver(tx, self.local_base)
        for person in sorted(p for p in persons if p):
            await tx.replace_grants(person, grant_intervals(await resolver.sources(person), hsa_of))

    async def _notices(self, tx: Transaction, persons: set[str]) -> None:
        resolver = Resolver(tx, self.local_base)
        for person in sorted(p for p in persons if p):
            rows: list[tuple[str, str, str]] = []
            encounters = await tx.about_person("Encounter", person)
            for pid in sorted({e.patient for e in encounters if e.patient}):
                found = await tx.read("Patient", pid)
                if found is None or found.deleted:
                    continue
                body = await resolver.annotate(parse_json(found.body), found.author)
                about = [parse_json(e.body) for e in encounters if e.patient == pid]
                kommun = notice.folkbokforingskommun(body)
                primary_care = sorted({h for ref in body.get("generalPractitioner") or [] for h in hsa_of(ref)})
                rows += notice.notice_rows(pid, about, [notice.kommun_route(kommun)] if kommun else [],
                                           [notice.primary_care_route(h) for h in primary_care])
            await tx.replace_notice_access(person, rows)

    async def _listed_with(self, tx: Transaction, rtype: str, rid: str, ref: str,
                           previous: StoredResource | None) -> set[str]:
        """Persons whose notice may go to this organisation entry: listed with it (generalPractitioner),
        or holding a notice row for a primary-care route its previous version stood for."""
        matches = await tx.search(SearchPlan("Patient", (ReferenceClause("general-practitioner", ((rtype, rid),)),)))
        persons = {r.person or "" for r in await tx.read_seqs(matches.seqs)}
        if previous is not None and previous.body is not None:
            old = await Resolver(tx, self.local_base).organizations(ref, previous.author or "", previous.body)
            persons |= await tx.notice_persons([notice.primary_care_route(h) for h in old])
        return persons

    async def _naming(self, tx: Transaction, rtype: str, rid: str, ref: str,
                      previous: StoredResource | None) -> set[str]:
        """Persons whose grants may depend on this organisation entry: their CareTeams or Consents
        name it, or a recipient its previous version stood for holds a grant about them."""
        persons: set[str] = set()
        for source, param in _NAMING_PARAMS:
            matches = await tx.search(SearchPlan(source, (ReferenceClause(param, ((rtype, rid),)),)))
            persons |= {r.person or "" for r in await tx.read_seqs(matches.seqs)}
        if previous is not None and previous.body is not None:
            old = await Resolver(tx, self.local_base).organizations(ref, previous.author or "", previous.body)
            persons |= await tx.grant_persons(old)
        return persons

    async def _confirmed(self, tx: Transaction, rid: str, previous: StoredResource | None) -> set[str]:
        """Persons of the teams and consents a confirmation (now or before) names."""
        bodies = [previous.body if previous is not None else None]
        current = await tx.read("Provenance", rid)
        bodies.append(current.body if current is not None else None)
        persons = set()
        for body in bodies:
            provenance = parse_json(body) if body else {}
            if not is_confirmation(provenance):
                continue
            for rtype, target, _ in confirmed_targets(provenance, self.local_base):
                found = await tx.read(rtype, target) if rtype in CONFIRMABLE else None
                if found is not None:
                    persons.add(found.person or "")
        return persons
