"""Access enforcement for the FHIR core: scopes, authorship, grants — one place for every path.

``FhirCore`` and ``SearchService`` call this for each interaction; with no caller
(``ctx.caller`` None: an internal call, or GATEWAY_SECURITY=off) everything is allowed.

- Scopes limit resource types and interactions (403: the caller knows its own token).
- Directory types (Organization, Practitioner, …) carry no patient data: every
  authenticated caller may read them; only their author may change them.
- Patient data: the author organisation (the custodian), or one the custodian discloses the
  person's data to now (``gateway.access.decision``: a CareTeam **and** a Consent that speak for
  that custodian, ``gateway.access.custodians``). Grants are per (custodian, recipient, person),
  the person being the national identity behind each organisation's own Patient
  (``gateway.access.person``). Anything else looks missing (404).
- Grants and LUSEN notice rows are recomputed inside the transaction of every write they
  depend on (``gateway.access.recompute``), so a withdrawn consent closes access the moment
  it commits. Which organisations a notice route reaches is the operator's directory (``routes``).
- Writes: the author changes its resources; others only what the write rule lets their role
  change (``gateway.access.write_rule``: a Task's owner its progress, a party to a CarePlan adds
  its own activities), checked element by element, 403 naming the element. Writes about a
  person need that person to be visible; a resource never moves to another person.
- Ids are the server's for authenticated callers: a PUT cannot create (its answer would
  tell whether someone else's resource holds that id).
"""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

from gateway.access import notice
from gateway.access.person import person_key
from gateway.access.recompute import AccessRows
from gateway.access.write_checks import OPEN_TYPES, WriteChecks
from gateway.errors import Forbidden, InvalidResource, NotFound
from gateway.fhir.canonical import dumps, parse_json
from gateway.fhir.context import RequestContext
from gateway.fhir.references import iter_references, parse_reference
from gateway.search.dates import now_us
from gateway.store import Store, StoredResource, Transaction
from gateway.store.records import AccessFilter

_PATIENT_ELEMENTS = ("subject", "patient", "for", "beneficiary")
_LETTER_NAMES = {"c": "create", "r": "read", "u": "update", "d": "delete", "s": "search"}
# Sekretessmarkering and skyddad folkbokföring (HL7 Sweden security labels, as in se-patient):
# the person's address is never disclosed to another organisation.
PROTECTION_SYSTEM = "http://hl7.se/fhir/ig/base/CodeSystem/SecurityLabel"
PROTECTION_CODES = ("sekretessmarkering", "skyddadFolkbokforing")
# Search parameters on the address, the folkbokföringskommun included: a protected person must
# not be found (nor counted) by where they live.
ADDRESS_PARAMS = frozenset({"address", "address-city", "address-country", "address-postalcode", "address-state",
                            "address-use", "folkbokforingskommun"})
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


Routes = Callable[[str], tuple[str, ...]]  # an organisation's HSA-id → the notice routes it reads


def _no_routes(organization: str) -> tuple[str, ...]:
    return ()


class AccessPolicy(WriteChecks):
    def __init__(self, store: Store, local_base: str | None = None, routes: Routes | None = None):
        """``routes``: the operator's directory (``gateway.auth.directory.Directory.routes``)."""
        self.store = store
        self.local_base = local_base
        self.rows = AccessRows(local_base)
        self.routes = routes or _no_routes

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
    def filter(self, ctx: RequestContext | None, rtype: str | None = None,
               params: set[str] = frozenset()) -> AccessFilter | None:
        """The access condition of a search; ``params`` (names without modifiers) decide whether
        protected patients must be kept out of a Patient search on their address."""
        caller = ctx.caller if ctx else None
        if caller is None:
            return None
        protected = (PROTECTION_SYSTEM, PROTECTION_CODES) if rtype == "Patient" and params & ADDRESS_PARAMS else None
        # History has no parameters; a search finds notice-only resources only on what the notice shows.
        lusen = notice.searchable(rtype, params) if rtype is not None else True
        routes = self.routes(caller.organization) if lusen else ()
        return AccessFilter(caller.organization, now_us(), OPEN_TYPES, protected, routes)

    async def release(self, ctx: RequestContext | None, resources: list[StoredResource]) -> list[StoredResource]:
        """What a read, search or history hands the caller: recorded for the access log, reduced
        to the LUSEN notice where that is all the caller may see, then redacted. Every path that
        serves resources goes through here."""
        if ctx is not None and ctx.audit is not None:
            ctx.audit.saw([r for r in resources if not r.deleted])
        caller = ctx.caller if ctx else None
        if caller is None or not any(r.rtype in notice.NOTICE_TYPES for r in resources):
            return resources  # views and redaction concern Patients and Encounters only
        # A Patient or Encounter of another organisation may have been admitted as a notice only.
        others = [r for r in resources if r.rtype in notice.NOTICE_TYPES and r.body and r.author != caller.organization]
        if others:
            pairs = sorted({_custody(r) for r in others if r.person})
            granted = await self.store.has_grant(caller.organization, pairs, now_us()) if pairs else set()
            viewed = {id(r) for r in others if _custody(r) not in granted}
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
        if found is None or granted or _own_or_open(found, caller.organization):
            return found
        return found if await self.can_read(ctx, found) else None

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
                      lusen: bool = False, reader: Store | Transaction | None = None) -> list[StoredResource]:
        """Those of ``resources`` the caller may see, in order (``lusen``: LUSEN notices too);
        ``reader``: a transaction, to judge by what it has written (notification events)."""
        caller = ctx.caller if ctx else None
        if caller is None:
            return resources
        reader = reader or self.store
        org = caller.organization
        pairs = {_custody(r) for r in resources if r.person and not _own_or_open(r, org)}
        granted = await reader.has_grant(org, sorted(pairs), now_us()) if pairs else set()
        seen = [_own_or_open(r, org) or bool(r.person and _custody(r) in granted) for r in resources]
        if lusen and not all(seen):
            keys = [(r.rtype, r.rid) for r, ok in zip(resources, seen) if not ok and r.rtype in notice.NOTICE_TYPES]
            routes = self.routes(org) if keys else ()
            noticed = await reader.notice_visible(routes, keys) if routes else set()
            seen = [ok or (r.rtype, r.rid) in noticed for r, ok in zip(resources, seen)]
        return [r for r, ok in zip(resources, seen) if ok]

    @staticmethod
    def check_client_id(ctx: RequestContext | None, rtype: str, rid: str) -> None:
        """An authenticated caller cannot create with an id of its choosing: whether the id is
        free or held by a resource it may not see, the answer is the same."""
        if ctx is not None and ctx.caller is not None:
            raise NotFound(f"{rtype}/{rid} is not known. Ids are assigned by the server: create with POST "
                           "(or a conditional update without an id).")

    async def check_subject(self, ctx: RequestContext | None, tx: Transaction, rtype: str, patient: str,
                            person: str, current: StoredResource | None) -> None:
        """Data about a person may be written only by a caller who may see that person, and a
        resource stays with its person (older versions stay readable to exactly the same parties)."""
        caller = ctx.caller if ctx else None
        if caller is None or not patient or rtype == "Patient":
            return
        # Also across a deletion: the older versions stay readable by the person's parties, judged
        # by the resource's person, so bringing it back about someone else would hand them over.
        if current is not None and (current.person or "") != person:
            raise InvalidResource(f"{rtype}/{current.rid} is about another person; a resource cannot be moved "
                                  "to another patient: create a new one.")
        found = await tx.read("Patient", patient)  # a Patient created earlier in the same transaction counts
        if found is None or found.deleted or not await self.can_see(ctx, found):
            raise InvalidResource(f"Patient/{patient} is not known; data can only be written about a patient "
                                  "you may see.")

    async def check_references(self, ctx: RequestContext | None, tx: Transaction, resource: dict,
                               patient: str) -> None:
        """A write may not point at a Patient or Encounter the caller sees only as a LUSEN notice
        (a Task for the admission, a focus on the person): that is writing about the person, which
        needs consent. Raises Forbidden, as ``can_see`` does for the notice itself."""
        caller = ctx.caller if ctx else None
        if caller is None:
            return
        for ref in dict.fromkeys(iter_references(resource)):
            parsed = parse_reference(ref, (self.local_base,))
            if not parsed or parsed[0] not in notice.NOTICE_TYPES or parsed[0] == "Patient" and parsed[1] == patient:
                continue  # the subject itself was checked by check_subject
            found = await tx.read(parsed[0], parsed[1])
            if found is not None and not found.deleted and found.author != caller.organization:
                await self.can_see(ctx, found)

    async def without_notice_history(self, ctx: RequestContext | None,
                                     versions: list[StoredResource]) -> list[StoredResource]:
        """History and vread: a resource the caller sees only as a LUSEN notice shows its current
        version only. The notice tells who is admitted now; an earlier version could hold the
        person's earlier folkbokföringsadress."""
        noticed = await self.notice_only(ctx, versions)
        if not noticed:
            return versions
        current = {(r.rtype, r.rid): r.vid for r in await self.store.read_many(sorted(noticed))}
        return [v for v in versions if (v.rtype, v.rid) not in noticed or current.get((v.rtype, v.rid)) == v.vid]

    @staticmethod
    def check_delete(ctx: RequestContext | None, current: StoredResource, what: str) -> None:
        caller = ctx.caller if ctx else None
        if caller is not None and current.author != caller.organization:
            raise Forbidden(f"{what} was created by another organisation; only it may delete it.")

    # -- writes ----------------------------------------------------------------------------
    async def access_row(self, ctx: RequestContext | None, tx: Transaction, rtype: str, rid: str,
                         resource: dict | None) -> tuple[str, str, str]:
        """(author, Patient id, person) of a version about to be stored (``gateway.access.person``)."""
        author = ctx.caller.organization if ctx and ctx.caller else ""
        patient = patient_of(rtype, rid, resource, self.local_base) if resource else ""
        if rtype == "Patient":
            return author, patient, person_key(rid, resource)
        if not patient:
            return author, "", ""
        found = await tx.read("Patient", patient)
        if found is not None and found.person:
            return author, patient, found.person
        body = parse_json(found.body) if found is not None and found.body else None
        return author, patient, person_key(patient, body)

    async def after_write(self, tx: Transaction, rtype: str, rid: str, persons: set[str],
                          previous: StoredResource | None = None) -> None:
        """Grants and LUSEN notice rows the write changes, in its transaction (``recompute``)."""
        await self.rows.after_write(tx, rtype, rid, persons, previous)


def _custody(stored: StoredResource) -> tuple[str, str]:
    """(custodian, person): what a grant must name for another organisation to see ``stored``."""
    return stored.author or "", stored.person or ""


def _own_or_open(stored: StoredResource, organization: str) -> bool:
    """Visible without a grant: the organisation's own data, or a directory resource."""
    return stored.author == organization or stored.rtype in OPEN_TYPES


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
