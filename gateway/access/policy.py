"""Access enforcement for the FHIR core: scopes, authorship, grants — one place for every path.

``FhirCore`` and ``SearchService`` call this for each interaction; with no caller
(``ctx.caller`` None: an internal call, or GATEWAY_SECURITY=off) everything is allowed.

- Scopes limit resource types and interactions (403: the caller knows its own token).
- Directory types (Organization, Practitioner, …) carry no patient data: every
  authenticated caller may read them; only their author may change them.
- Patient data: the author organisation, or one holding a grant for the patient now
  (``gateway.access.decision``: CareTeam **and** Consent). Anything else looks missing (404).
- Grants are recomputed inside the same store transaction as any CareTeam or Consent write
  (and any Organization / PractitionerRole write they may depend on), so a withdrawn consent
  closes access the moment it commits.
- Writes about a person need that person to be visible; a resource never moves to another
  person; CareTeam and Consent — the sources of grants — change only by their author.
- Ids are the server's for authenticated callers: a PUT cannot create (its answer would
  tell whether someone else's resource holds that id).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from gateway.access.decision import grant_intervals
from gateway.errors import Forbidden, InvalidResource, NotFound
from gateway.fhir.canonical import dumps, parse_json
from gateway.fhir.context import RequestContext
from gateway.fhir.references import iter_references, parse_reference
from gateway.search.dates import now_us
from gateway.store import Store, StoredResource, Transaction
from gateway.store.plan import ReferenceClause, SearchPlan
from gateway.store.records import AccessFilter
from gateway.validation.identifiers import HSA_ID as HSA_SYSTEM

OPEN_TYPES = frozenset({"Organization", "Practitioner", "PractitionerRole", "Location", "HealthcareService",
                        "Endpoint"})
GRANT_TYPES = frozenset({"CareTeam", "Consent"})  # writes that change who may see a patient
GRANT_SOURCES = frozenset({"Organization", "PractitionerRole"})  # grants depend on their HSA-ids
_PATIENT_ELEMENTS = ("subject", "patient", "for", "beneficiary")
_LETTER_NAMES = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}
# Sekretessmarkering and skyddad folkbokföring (HL7 Sweden security labels, as in se-patient):
# the person's address is never disclosed to another organisation.
PROTECTION_SYSTEM = "http://hl7.se/fhir/ig/base/CodeSystem/SecurityLabel"
PROTECTION_CODES = ("sekretessmarkering", "skyddadFolkbokforing")
ADDRESS_PARAMS = frozenset({"address", "address-city", "address-country", "address-postalcode", "address-state",
                            "address-use"})
_REDACTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "REDACTED"}


def patient_of(rtype: str, rid: str, resource: dict, local_base: str | None) -> str:
    """The id of the Patient a resource is about ('' if none we can tell): the patient itself,
    or the first local Patient reference in subject / patient / for / beneficiary."""
    if rtype == "Patient":
        return rid
    for key in _PATIENT_ELEMENTS:
        parsed = parse_reference(resource.get(key), (local_base,))
        if parsed and parsed[0] == "Patient":
            return parsed[1]
    return ""


class AccessPolicy:
    def __init__(self, store: Store, local_base: str | None = None):
        self.store = store
        self.local_base = local_base

    # -- scopes ----------------------------------------------------------------------------
    @staticmethod
    def check_scope(ctx: RequestContext | None, rtype: str, letter: str) -> None:
        caller = ctx.caller if ctx else None
        if caller is not None and not caller.scopes.allows(rtype, letter):
            raise Forbidden(f"The access token's scopes ({caller.scopes}) do not allow {_LETTER_NAMES[letter]} "
                            f"on {rtype}; request system/{rtype}.{letter} (or wider) from the token endpoint.")

    @staticmethod
    def may_read_type(ctx: RequestContext | None, rtype: str) -> bool:
        """Included resources: only types the token may read or search."""
        caller = ctx.caller if ctx else None
        return caller is None or caller.scopes.allows(rtype, "r") or caller.scopes.allows(rtype, "s")

    # -- visibility ------------------------------------------------------------------------
    @staticmethod
    def filter(ctx: RequestContext | None, rtype: str | None = None, params: set[str] = frozenset()) -> AccessFilter | None:
        """The access condition of a search; ``params`` (names without modifiers) decide whether
        protected patients must be kept out of a Patient search on their address."""
        caller = ctx.caller if ctx else None
        if caller is None:
            return None
        protected = (PROTECTION_SYSTEM, PROTECTION_CODES) if rtype == "Patient" and params & ADDRESS_PARAMS else None
        return AccessFilter(caller.organization, now_us(), OPEN_TYPES, protected)

    def release(self, ctx: RequestContext | None, resources: list[StoredResource]) -> list[StoredResource]:
        """What a read, search or history hands the caller: recorded for the access log, then
        redacted. Every path that serves resources goes through here."""
        if ctx is not None and ctx.audit is not None:
            ctx.audit.saw([r for r in resources if not r.deleted])
        return self.redact(ctx, resources)

    @staticmethod
    def redact(ctx: RequestContext | None, resources: list[StoredResource]) -> list[StoredResource]:
        """What may leave for this caller: a protected person's Patient without its address
        (marked REDACTED) unless the caller registered it. Bytes are parsed only for Patients
        that carry both an address and a protection label."""
        caller = ctx.caller if ctx else None
        if caller is None:
            return resources
        return [_without_address(r) if r.rtype == "Patient" and r.body and r.author != caller.organization
                and b'"address"' in r.body and any(c.encode() in r.body for c in PROTECTION_CODES) else r
                for r in resources]

    async def can_see(self, ctx: RequestContext | None, stored: StoredResource) -> bool:
        return bool(await self.visible(ctx, [stored]))

    async def visible(self, ctx: RequestContext | None, resources: list[StoredResource]) -> list[StoredResource]:
        """Those of ``resources`` the caller may see, in order."""
        caller = ctx.caller if ctx else None
        if caller is None:
            return resources
        org = caller.organization
        patients = {r.patient for r in resources
                    if r.rtype not in OPEN_TYPES and r.author != org and r.patient}
        granted = await self.store.has_grant(org, sorted(patients), now_us()) if patients else set()
        return [r for r in resources if r.rtype in OPEN_TYPES or r.author == org or (r.patient and r.patient in granted)]

    async def check_write(self, ctx: RequestContext | None, current: StoredResource | None, what: str) -> None:
        """Update/patch: patient data the caller may see (the shared plan is edited by its
        parties); directory resources, CareTeams and Consents only by their author. Raises Forbidden."""
        caller = ctx.caller if ctx else None
        if caller is None or current is None or current.author == caller.organization:
            return
        if current.rtype in OPEN_TYPES or current.rtype in GRANT_TYPES or not current.author:
            raise Forbidden(f"{what} was registered by another organisation; only it may change it.")

    @staticmethod
    def check_client_id(ctx: RequestContext | None, rtype: str, rid: str) -> None:
        """An authenticated caller cannot create with an id of its choosing: whether the id is
        free or held by a resource it may not see, the answer is the same."""
        if ctx is not None and ctx.caller is not None:
            raise NotFound(f"{rtype}/{rid} is not known. Ids are assigned by the server: create with POST "
                           "(or a conditional update without an id).")

    async def check_subject(self, ctx: RequestContext | None, tx: Transaction, rtype: str, patient: str,
                            current: StoredResource | None) -> None:
        """Data about a person may be written only by a caller who may see that person, and a
        resource stays with its person (older versions stay readable to exactly the same parties)."""
        caller = ctx.caller if ctx else None
        if caller is None or not patient or rtype == "Patient":
            return
        if current is not None and not current.deleted and (current.patient or "") != patient:
            raise InvalidResource(f"{rtype}/{current.rid} is about another person; a resource cannot be moved "
                                  "to another patient: create a new one.")
        found = await tx.read("Patient", patient)  # a Patient created earlier in the same transaction counts
        if found is None or found.deleted or not await self.can_see(ctx, found):
            raise InvalidResource(f"Patient/{patient} is not known; data can only be written about a patient "
                                  "you may see.")

    @staticmethod
    def check_delete(ctx: RequestContext | None, current: StoredResource, what: str) -> None:
        caller = ctx.caller if ctx else None
        if caller is not None and current.author != caller.organization:
            raise Forbidden(f"{what} was created by another organisation; only it may delete it.")

    # -- writes ----------------------------------------------------------------------------
    def access_row(self, ctx: RequestContext | None, rtype: str, rid: str, resource: dict | None) -> tuple[str, str]:
        author = ctx.caller.organization if ctx and ctx.caller else ""
        patient = patient_of(rtype, rid, resource, self.local_base) if resource else ""
        return author, patient

    async def after_write(self, tx: Transaction, rtype: str, rid: str, patients: set[str],
                          previous: StoredResource | None = None) -> None:
        """Recompute the grants of the patients a CareTeam or Consent write concerns, or that
        may depend on an Organization or PractitionerRole that changed: those whose CareTeams /
        Consents name it, and those its previous HSA-ids held grants for."""
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


def _without_address(stored: StoredResource) -> StoredResource:
    body = parse_json(stored.body)
    labels = (body.get("meta") or {}).get("security") or []
    if not any(isinstance(l, dict) and l.get("system") == PROTECTION_SYSTEM and l.get("code") in PROTECTION_CODES
               for l in labels):
        return stored
    body.pop("address", None)
    body["meta"] = {**body["meta"], "security": [*labels, _REDACTED]}
    return replace(stored, body=dumps(body))


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
