"""Which CareTeams and Consents speak for which custodian, and which organisations a reference names.

A custodian is the organisation that recorded a resource (its author): region and municipality
are each responsible for disclosing what they record. A CareTeam or Consent speaks for

- its author, as it stands now; and
- an organisation it names (``Consent.organization``; a CareTeam's participant or
  ``managingOrganization``) that has **confirmed** it: written a ``Provenance`` whose activity
  is ``custodian-confirmation`` and whose ``target`` names the version it confirms
  (``Consent/123/_history/2``). One SIP consent recorded by the coordinator thus covers every
  party that confirms it, without a copy per party. The confirmed version and the current one
  must both agree (``gateway.access.decision.Source``); deleting the Provenance withdraws the
  confirmation.

So a team or consent written by an organisation that may see others' data opens nothing of
theirs to anyone: it speaks only for its author until the others confirm it.

References to organisations are resolved to HSA-ids **as the custodian can vouch for them**:
for custodian C's data, an Organization or PractitionerRole resource stands for the HSA-id it
names only if that organisation wrote it itself, the operator did (no author), or C did. A
directory entry someone else keeps cannot be turned into a grant of C's data for a third party by
editing it (a team that names organisations by HSA-id, a logical reference, needs no entry).
"""
from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from gateway.access.decision import Source
from gateway.fhir.canonical import parse_json
from gateway.fhir.references import iter_references, parse_reference
from gateway.store import StoredResource, Transaction
from gateway.store.plan import ReferenceClause, SearchPlan
from gateway.validation.identifiers import HSA_ID as HSA_SYSTEM

CONFIRMATION_SYSTEM = "https://samverkan.example.se/fhir/CodeSystem/samverkan-provenance-activity"
CONFIRMATION_CODE = "custodian-confirmation"
CONFIRMABLE = frozenset({"CareTeam", "Consent"})
HSA_KEY = "__hsa"  # resolved HSA-ids, added to a Reference of a parsed body (never stored)
_VERSIONED = re.compile(r"^(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})/_history/(?P<vid>[0-9]{1,15})$")


def identifier_hsa(node: Any) -> list[str]:
    """HSA-ids in ``identifier`` of a resource or a logical reference (aliases are normalised on write)."""
    if not isinstance(node, dict):
        return []
    ids = node.get("identifier")
    ids = ids if isinstance(ids, list) else [ids] if isinstance(ids, dict) else []
    return [i["value"] for i in ids if isinstance(i, dict) and i.get("system") == HSA_SYSTEM and i.get("value")]


def hsa_of(ref: Any) -> list[str]:
    """The HSA-ids a Reference of an annotated body stands for."""
    if not isinstance(ref, dict):
        return []
    return list(ref.get(HSA_KEY, ())) + identifier_hsa(ref)


def is_confirmation(provenance: dict) -> bool:
    activity = provenance.get("activity") if isinstance(provenance, dict) else None
    return isinstance(activity, dict) and any(
        isinstance(c, dict) and (c.get("system"), c.get("code")) == (CONFIRMATION_SYSTEM, CONFIRMATION_CODE)
        for c in activity.get("coding") or [])


def confirmed_targets(provenance: dict, local_base: str | None) -> list[tuple[str, str, int | None]]:
    """(type, id, version) of each CareTeam or Consent a confirmation names (version None: the
    reference names no version, which a confirmation must)."""
    out = []
    for target in provenance.get("target") or []:
        text = target.get("reference") if isinstance(target, dict) else None
        if not isinstance(text, str):
            continue
        relative = text[len(local_base) + 1:] if local_base and text.startswith(local_base + "/") else text
        m = _VERSIONED.match(relative)
        if m and m.group("type") in CONFIRMABLE:
            out.append((m.group("type"), m.group("id"), int(m.group("vid"))))
        else:
            parsed = parse_reference(text, (local_base,))
            if parsed and parsed[0] in CONFIRMABLE:
                out.append((parsed[0], parsed[1], None))
    return out


class Resolver:
    """Resolves organisation references inside a transaction (what it has written counts)."""

    def __init__(self, tx: Transaction, local_base: str | None):
        self.tx = tx
        self.local_base = local_base

    async def annotate(self, body: dict, custodian: str | None) -> dict:
        """Add the HSA-ids each Organization / PractitionerRole reference of ``body`` stands for
        (``HSA_KEY``), as ``custodian`` can vouch for them."""
        cache: dict[str, list[str]] = {}
        for ref in dict.fromkeys(iter_references(body)):
            cache[ref] = await self.organizations(ref, custodian or "")
        _mark(body, cache)
        return body

    async def organizations(self, ref: str, custodian: str, body: bytes | None = None) -> list[str]:
        """The HSA-ids an 'Organization/x' or 'PractitionerRole/y' reference stands for, for
        ``custodian``'s data (``body``: this version of the target instead of the stored one)."""
        parsed = parse_reference(ref, (self.local_base,))
        if not parsed or parsed[0] not in ("Organization", "PractitionerRole"):
            return []
        stored = await self.tx.read(parsed[0], parsed[1])
        if body is None:
            if stored is None or stored.deleted:
                return []
            body = stored.body
        author = stored.author or "" if stored is not None else ""
        resource = parse_json(body)
        if parsed[0] == "Organization":
            return [h for h in identifier_hsa(resource) if _trusted(author, h, custodian)]
        org = resource.get("organization")
        hsa = [h for h in identifier_hsa(org) if _trusted(author, h, custodian)]
        target = parse_reference(org, (self.local_base,))
        if target and target[0] == "Organization":
            found = await self.tx.read("Organization", target[1])
            if found is not None and not found.deleted:
                hsa += [h for h in identifier_hsa(parse_json(found.body))
                        if _trusted(author, h, custodian) and _trusted(found.author or "", h, custodian)]
        return hsa

    async def sources(self, person: str) -> dict[str, tuple[list[Source], list[Source]]]:
        """custodian → (CareTeams, Consents) that speak for it about ``person``."""
        out: dict[str, tuple[list[Source], list[Source]]] = defaultdict(lambda: ([], []))
        for kind, rtype in enumerate(("CareTeam", "Consent")):
            for stored in await self.tx.about_person(rtype, person):
                author = stored.author or ""
                as_recorded = await self.annotate(parse_json(stored.body), author)
                out[author][kind].append(Source(as_recorded))
                named = _named(rtype, as_recorded)  # the parties its author names
                for confirmer, vid in (await self._confirmations(stored)).items():
                    version = await self._version(stored, vid) if confirmer != author and confirmer in named else None
                    if version is not None:  # both versions, as the confirmer can vouch for their references
                        current = await self.annotate(parse_json(stored.body), confirmer)
                        out[confirmer][kind].append(Source(current, await self.annotate(version, confirmer)))
        return out

    async def _confirmations(self, stored: StoredResource) -> dict[str, int]:
        """Confirming organisation → the latest version of ``stored`` it confirmed."""
        plan = SearchPlan("Provenance", (ReferenceClause("target", ((stored.rtype, stored.rid),)),))
        found: dict[str, int] = {}
        for prov in await self.tx.read_seqs((await self.tx.search(plan)).seqs):
            body = parse_json(prov.body) if prov.body else {}
            if not prov.author or not is_confirmation(body):
                continue
            for rtype, rid, vid in confirmed_targets(body, self.local_base):
                if (rtype, rid) == (stored.rtype, stored.rid) and vid is not None:
                    found[prov.author] = max(found.get(prov.author, 0), vid)
        return found

    async def _version(self, stored: StoredResource, vid: int) -> dict | None:
        if vid == stored.vid:
            return parse_json(stored.body)
        version = await self.tx.read_version(stored.rtype, stored.rid, vid)
        return parse_json(version.body) if version is not None and version.body else None


def _named(rtype: str, body: dict) -> set[str]:
    """The organisations a team or consent names as its parties (who may confirm it)."""
    if rtype == "Consent":
        return {h for ref in body.get("organization") or [] for h in hsa_of(ref)}
    named: set[str] = set()
    for ref in body.get("managingOrganization") or []:
        named |= set(hsa_of(ref))
    for p in body.get("participant") or []:
        if isinstance(p, dict):
            named |= set(hsa_of(p.get("member"))) | set(hsa_of(p.get("onBehalfOf")))
    return named


def _trusted(resource_author: str, hsa: str, custodian: str) -> bool:
    """A directory entry stands for ``hsa`` if that organisation, the operator or the custodian wrote it."""
    return resource_author in ("", hsa, custodian)


def _mark(node: Any, resolved: dict[str, list[str]]) -> None:
    if isinstance(node, dict):
        ref = node.get("reference")
        if isinstance(ref, str) and resolved.get(ref):
            node[HSA_KEY] = resolved[ref]
        for key, value in list(node.items()):
            if key != HSA_KEY:
                _mark(value, resolved)
    elif isinstance(node, list):
        for item in node:
            _mark(item, resolved)
