"""The access rows a write changes, recomputed inside the write's own store transaction.

Two kinds of rows decide who besides the author may see a person's data:

- **grants** (``access_grants``): an organisation in the person's active CareTeam that an
  active Consent permits (``gateway.access.decision``). Recomputed on CareTeam and Consent
  writes, and on Organization / PractitionerRole writes, since grants name HSA-ids that those
  resources stand for.
- **LUSEN notice rows** (``notice_access``): the admission notice for the person's
  municipality and primary care (``gateway.access.notice``). Recomputed on Patient and
  Encounter writes, and on Organization / PractitionerRole writes (a municipality registered
  later, a unit moved, a GP practice renamed).

Being in the same transaction, a withdrawn consent or a void stay closes access the moment it
commits.
"""
from __future__ import annotations

from typing import Any

from gateway.access import notice
from gateway.access.decision import grant_intervals
from gateway.fhir.canonical import parse_json
from gateway.fhir.references import iter_references, parse_reference
from gateway.store import StoredResource, Transaction
from gateway.store.plan import ReferenceClause, SearchPlan, TokenClause
from gateway.validation.identifiers import HSA_ID as HSA_SYSTEM

GRANT_TYPES = frozenset({"CareTeam", "Consent"})  # writes that change who may see a patient
GRANT_SOURCES = frozenset({"Organization", "PractitionerRole"})  # grants depend on their HSA-ids
NOTICE_SOURCES = frozenset({"Patient", "Encounter"})  # LUSEN notice rows depend on them (and on GRANT_SOURCES)


class AccessRows:
    def __init__(self, local_base: str | None = None):
        self.local_base = local_base

    async def after_write(self, tx: Transaction, rtype: str, rid: str, patients: set[str],
                          previous: StoredResource | None = None) -> None:
        """Recompute the grants of the patients a CareTeam or Consent write concerns, or that
        may depend on an Organization or PractitionerRole that changed: those whose CareTeams /
        Consents name it, and those its previous HSA-ids held grants for."""
        await self._after_write_notices(tx, rtype, rid, patients, previous)
        if rtype in GRANT_SOURCES:
            patients = set()
            for source, param in (("CareTeam", "participant"), ("Consent", "actor")):
                matches = await tx.search(SearchPlan(source, (ReferenceClause(param, ((rtype, rid),)),)))
                patients |= {r.patient or "" for r in await tx.read_seqs(matches.seqs)}
            if previous is not None and previous.body is not None:
                ref = f"{rtype}/{rid}"
                old = await self._resolve_organizations(tx, [{"x": {"reference": ref}}], {ref: previous.body})
                patients |= await tx.grant_patients(old.get(ref, []))
        elif rtype not in GRANT_TYPES:
            return
        for patient in sorted(p for p in patients if p):
            careteams = await self._about(tx, "CareTeam", patient)
            consents = await self._about(tx, "Consent", patient)
            hsa = await self._resolve_organizations(tx, careteams + consents)
            await tx.replace_grants(patient, grant_intervals(careteams, consents, lambda ref: _hsa_of(ref, hsa)))

    async def _after_write_notices(self, tx: Transaction, rtype: str, rid: str, patients: set[str],
                                   previous: StoredResource | None) -> None:
        """Recompute LUSEN notice rows: for the patient of a Patient or Encounter write; for an
        Organization or PractitionerRole, the patients whose rows its old HSA-ids hold, who are
        registered in its municipality, or who are listed with it (generalPractitioner)."""
        if rtype in NOTICE_SOURCES:
            affected = set(patients)
        elif rtype in GRANT_SOURCES:
            ref = f"{rtype}/{rid}"
            affected = await self._patients_referencing(tx, "general-practitioner", rtype, rid)
            if previous is not None and previous.body is not None:
                old = await self._resolve_organizations(tx, [{"x": {"reference": ref}}], {ref: previous.body})
                affected |= await tx.notice_patients(old.get(ref, []))
                affected |= await self._registered_in(tx, parse_json(previous.body))
            current = await tx.read(rtype, rid)
            if current is not None and current.body is not None:
                affected |= await self._registered_in(tx, parse_json(current.body))
        else:
            return
        for patient in sorted(p for p in affected if p):
            await self._recompute_notices(tx, patient)

    async def _recompute_notices(self, tx: Transaction, patient: str) -> None:
        found = await tx.read("Patient", patient)
        encounters = await self._about(tx, "Encounter", patient) if found is not None and found.body else []
        if not any(any(notice.needs(e)) for e in encounters):
            await tx.replace_notice_access(patient, [])
            return
        body = parse_json(found.body)
        kommun = notice.folkbokforingskommun(body)
        municipality = await self._municipality_hsa(tx, kommun) if kommun else []
        gps = [{"x": ref} for ref in body.get("generalPractitioner") or [] if isinstance(ref, dict)]
        resolved = await self._resolve_organizations(tx, gps)
        primary_care = sorted({h for g in gps for h in _hsa_of(g["x"], resolved)})
        await tx.replace_notice_access(patient, notice.notice_rows(patient, encounters, municipality, primary_care))

    async def _municipality_hsa(self, tx: Transaction, kommunkod: str) -> list[str]:
        """HSA-ids of the municipality with this kommunkod and of its units (partOf, 3 levels).

        Anyone may write an Organization, so a claim counts only if it cannot be a pretender's:
        the municipality's Organization was registered by that organisation itself (or by the
        operator: no author), it is the only such claim of the kommunkod (two claims route to
        nobody), and a unit counts only if the municipality's registrant also registered it."""
        plan = SearchPlan("Organization", (TokenClause("identifier", ((notice.KOMMUNKOD, kommunkod),)),))
        claims = [r for r in await tx.read_seqs((await tx.search(plan)).seqs)
                  if r.body and (not r.author or r.author in _identifier_hsa(parse_json(r.body)))]
        if len(claims) != 1:
            return []
        owner, level, hsa = claims[0].author, claims, set()
        for _ in range(3):
            hsa |= {h for r in level for h in _identifier_hsa(parse_json(r.body))}
            parents = tuple(("Organization", r.rid) for r in level)
            level = [r for r in await tx.read_seqs((await tx.search(SearchPlan(
                "Organization", (ReferenceClause("partof", parents),)))).seqs) if r.body and r.author == owner]
            if not level:
                break
        return sorted(hsa)

    async def _registered_in(self, tx: Transaction, organization: dict) -> set[str]:
        """Patients registered in the municipality this Organization is (or is a unit of)."""
        codes, body = [], organization
        for _ in range(4):  # the organisation, then up to three levels of partOf
            codes = [i["value"] for i in body.get("identifier") or []
                     if isinstance(i, dict) and i.get("system") == notice.KOMMUNKOD and i.get("value")]
            parent = parse_reference(body.get("partOf"), (self.local_base,))
            if codes or not parent or parent[0] != "Organization":
                break
            found = await tx.read("Organization", parent[1])
            body = parse_json(found.body) if found is not None and found.body else {}
        patients: set[str] = set()
        for code in codes:
            plan = SearchPlan("Patient", (TokenClause("folkbokforingskommun", ((notice.KOMMUNKOD, code),)),))
            patients |= {r.rid for r in await tx.read_seqs((await tx.search(plan)).seqs)}
        return patients

    @staticmethod
    async def _patients_referencing(tx: Transaction, param: str, rtype: str, rid: str) -> set[str]:
        matches = await tx.search(SearchPlan("Patient", (ReferenceClause(param, ((rtype, rid),)),)))
        return {r.rid for r in await tx.read_seqs(matches.seqs)}

    @staticmethod
    async def _about(tx: Transaction, rtype: str, patient: str) -> list[dict]:
        plan = SearchPlan(rtype, (ReferenceClause("patient", (("Patient", patient),)),))
        matches = await tx.search(plan)
        return [parse_json(r.body) for r in await tx.read_seqs(matches.seqs)]

    async def _resolve_organizations(self, tx: Transaction, resources: list[dict],
                                     bodies: dict[str, bytes] | None = None) -> dict[str, list[str]]:
        """'Organization/x' and 'PractitionerRole/y' references → the HSA-ids they stand for
        (``bodies``: use these versions instead of the stored ones, e.g. the one just replaced)."""
        out: dict[str, list[str]] = {}
        pending = [ref for r in resources for ref in iter_references(r)]
        for ref in pending:
            if ref in out:
                continue
            parsed = parse_reference(ref, (self.local_base,))
            if not parsed or parsed[0] not in ("Organization", "PractitionerRole"):
                continue
            raw = (bodies or {}).get(ref)
            if raw is None:
                found = await tx.read(parsed[0], parsed[1])
                raw = found.body if found is not None else None
            if raw is None:
                out[ref] = []
                continue
            body = parse_json(raw)
            if parsed[0] == "PractitionerRole":
                org_ref = (body.get("organization") or {}).get("reference")
                hsa = _identifier_hsa(body.get("organization"))
                if org_ref:
                    org_parsed = parse_reference(org_ref, (self.local_base,))
                    if org_parsed and org_parsed[0] == "Organization":
                        org = await tx.read("Organization", org_parsed[1])
                        if org is not None and not org.deleted:
                            hsa += _identifier_hsa(parse_json(org.body))
                out[ref] = hsa
            else:
                out[ref] = _identifier_hsa(body)
        return out



def _identifier_hsa(node: Any) -> list[str]:
    """HSA-ids in ``identifier`` of a resource or a logical reference (aliases are normalised on write)."""
    if not isinstance(node, dict):
        return []
    ids = node.get("identifier")
    ids = ids if isinstance(ids, list) else [ids] if isinstance(ids, dict) else []
    return [i["value"] for i in ids if isinstance(i, dict) and i.get("system") == HSA_SYSTEM and i.get("value")]


def _hsa_of(ref: Any, resolved: dict[str, list[str]]) -> list[str]:
    if not isinstance(ref, dict):
        return []
    return resolved.get(ref.get("reference", ""), []) + _identifier_hsa(ref)
