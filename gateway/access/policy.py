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

from gateway.access import notice
from gateway.access.decision import grant_intervals
from gateway.errors import Forbidden, InvalidResource, NotFound
from gateway.fhir.canonical import dumps, parse_json
from gateway.fhir.context import RequestContext
from gateway.fhir.references import iter_references, parse_reference
from gateway.search.dates import now_us
from gateway.store import Store, StoredResource, Transaction
from gateway.store.plan import ReferenceClause, SearchPlan, TokenClause
from gateway.store.records import AccessFilter
from gateway.validation.identifiers import HSA_ID as HSA_SYSTEM

OPEN_TYPES = frozenset({"Organization", "Practitioner", "PractitionerRole", "Location", "HealthcareService",
                        "Endpoint"})
GRANT_TYPES = frozenset({"CareTeam", "Consent"})  # writes that change who may see a patient
GRANT_SOURCES = frozenset({"Organization", "PractitionerRole"})  # grants depend on their HSA-ids
NOTICE_SOURCES = frozenset({"Patient", "Encounter"})  # LUSEN notice rows depend on them (and on GRANT_SOURCES)
_PATIENT_ELEMENTS = ("subject", "patient", "for", "beneficiary")
_LETTER_NAMES = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}
# Sekretessmarkering and skyddad folkbokföring (HL7 Sweden security labels, as in se-patient):
# the person's address is never disclosed to another organisation.
PROTECTION_SYSTEM = "http://hl7.se/fhir/ig/base/CodeSystem/SecurityLabel"
PROTECTION_CODES = ("sekretessmarkering", "skyddadFolkbokforing")
ADDRESS_PARAMS = frozenset({"address", "address-city", "address-country", "address-postalcode", "address-state",
                            "address-use"})
_REDACTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "REDACTED"}


def search_param_names(params: list[tuple[str, str]]) -> set[str]:
    """The parameter names of a query without modifiers, plus the fields it sorts by: both say
    which elements the query can test (an identifier search other than for a national person id
    gets its own name, see ``notice.identifier_name``)."""
    names = {k.split(":")[0] for k, _ in params if not k.startswith("identifier")}
    for key, value in params:
        if key == "_sort":
            names |= {field.strip().lstrip("-") for field in value.split(",") if field.strip()}
        elif key.split(":")[0] == "identifier":
            names.add(notice.identifier_name(key, value))
    return names


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
        # History has no parameters; a search finds notice-only resources only on what the notice shows.
        lusen = notice.searchable(rtype, params) if rtype is not None else True
        return AccessFilter(caller.organization, now_us(), OPEN_TYPES, protected, lusen)

    async def release(self, ctx: RequestContext | None, resources: list[StoredResource]) -> list[StoredResource]:
        """What a read, search or history hands the caller: recorded for the access log, reduced
        to the LUSEN notice where that is all the caller may see, then redacted. Every path that
        serves resources goes through here."""
        if ctx is not None and ctx.audit is not None:
            ctx.audit.saw([r for r in resources if not r.deleted])
        caller = ctx.caller if ctx else None
        # A Patient or Encounter of another organisation may have been admitted as a notice only.
        others = [r for r in resources if r.rtype in notice.NOTICE_TYPES and r.body and r.patient
                  and r.author != caller.organization] if caller is not None else []
        if others:
            granted = await self.store.has_grant(caller.organization, sorted({r.patient for r in others}), now_us())
            viewed = {id(r) for r in others if r.patient not in granted}
            resources = [_notice_view(r) if id(r) in viewed else r for r in resources]
        return await self.redact(ctx, resources)

    async def redact(self, ctx: RequestContext | None, resources: list[StoredResource]) -> list[StoredResource]:
        """What may leave for this caller: a protected person's Patient without its address
        (marked REDACTED) unless the caller registered it. Protection is judged by the person's
        current version, so a label added later also hides the address of older versions."""
        caller = ctx.caller if ctx else None
        if caller is None:
            return resources
        addressed = {r.rid for r in resources if r.rtype == "Patient" and r.body and r.author != caller.organization
                     and b'"address"' in r.body}
        if not addressed:
            return resources
        current = await self.store.read_many([("Patient", rid) for rid in sorted(addressed)])
        protected = {c.rid for c in current if c.body and _protected(parse_json(c.body))}
        return [_without_address(r) if r.rtype == "Patient" and r.rid in addressed and r.body
                and r.author != caller.organization and (r.rid in protected or _labelled(r)) else r
                for r in resources]

    async def read_current(self, ctx: RequestContext | None, rtype: str, rid: str) -> StoredResource | None:
        """A read: the current version if the caller may see it (LUSEN notice included), else None.
        The grant for its patient comes with the row, so a read costs one statement."""
        caller = ctx.caller if ctx else None
        if caller is None:
            return await self.store.read(rtype, rid)
        found, granted = await self.store.read_granted(rtype, rid, caller.organization, now_us())
        if found is None or granted or await self.can_read(ctx, found):
            return found
        return None

    async def notice_only(self, ctx: RequestContext | None, resources: list[StoredResource]) -> set[tuple[str, str]]:
        """(type, id) of those the caller may see only as a LUSEN notice."""
        candidates = [r for r in resources if r.rtype in notice.NOTICE_TYPES]
        if not candidates or ctx is None or ctx.caller is None:
            return set()
        full = {(r.rtype, r.rid) for r in await self.visible(ctx, candidates)}
        return {(r.rtype, r.rid) for r in await self.visible(ctx, candidates, lusen=True)} - full

    @staticmethod
    def may_follow(rtype: str, param: str | None) -> bool:
        """May _include/_revinclude use ``param`` of a resource seen only as a LUSEN notice? Only
        if a search on it could find the resource: a reference the view hides (an Encounter's
        participant, a Patient's generalPractitioner) must not be followed or tested."""
        return param is not None and notice.searchable(rtype, {param})

    async def can_read(self, ctx: RequestContext | None, stored: StoredResource) -> bool:
        """Read, vread, history: what the caller may see, LUSEN notice included."""
        return bool(await self.visible(ctx, [stored], lusen=True))

    async def can_see(self, ctx: RequestContext | None, stored: StoredResource) -> bool:
        """Writes: what the caller may see under the ordinary rule. A resource it may only read
        as a LUSEN notice is refused (403: it knows the resource exists), never changed."""
        if await self.visible(ctx, [stored]):
            return True
        if await self.visible(ctx, [stored], lusen=True):
            raise Forbidden(f"{stored.rtype}/{stored.rid} is shared with you only as LUSEN's admission notice, "
                            "which is read-only; changing it or writing about this person needs the person's "
                            "consent and a place in their CareTeam.")
        return False

    async def visible(self, ctx: RequestContext | None, resources: list[StoredResource],
                      lusen: bool = False) -> list[StoredResource]:
        """Those of ``resources`` the caller may see, in order (``lusen``: LUSEN notices too)."""
        caller = ctx.caller if ctx else None
        if caller is None:
            return resources
        org = caller.organization
        patients = {r.patient for r in resources
                    if r.rtype not in OPEN_TYPES and r.author != org and r.patient}
        granted = await self.store.has_grant(org, sorted(patients), now_us()) if patients else set()
        seen = [r.rtype in OPEN_TYPES or r.author == org or bool(r.patient and r.patient in granted) for r in resources]
        if lusen and not all(seen):
            keys = [(r.rtype, r.rid) for r, ok in zip(resources, seen) if not ok and r.rtype in notice.NOTICE_TYPES]
            noticed = await self.store.notice_visible(org, keys) if keys else set()
            seen = [ok or (r.rtype, r.rid) in noticed for r, ok in zip(resources, seen)]
        return [r for r, ok in zip(resources, seen) if ok]

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


def _notice_view(stored: StoredResource) -> StoredResource:
    return replace(stored, body=dumps(notice.notice_view(stored.rtype, parse_json(stored.body))))


def _protected(patient: dict) -> bool:
    labels = (patient.get("meta") or {}).get("security") or []
    return any(isinstance(l, dict) and l.get("system") == PROTECTION_SYSTEM and l.get("code") in PROTECTION_CODES
               for l in labels)


def _labelled(stored: StoredResource) -> bool:
    """This version itself carries a protection label (its person may since have been deleted)."""
    return any(c.encode() in stored.body for c in PROTECTION_CODES) and _protected(parse_json(stored.body))


def _without_address(stored: StoredResource) -> StoredResource:
    body = parse_json(stored.body)
    if "address" not in body:
        return stored
    body.pop("address")
    meta = body.get("meta") or {}
    body["meta"] = {**meta, "security": [*(meta.get("security") or []), _REDACTED]}
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
