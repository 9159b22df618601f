"""Where the municipality's Tasks go: the person's shared plan when the municipality can see one,
else its own plan — and the reply says which.

The lookup searches as the sending client, so the region's plan is found only when the region
shares the person's data with the municipality (an active CareTeam and a Consent that speak for
the region: the access rule in README.md). A CarePlan is changed only by its author; a party adds
``activity`` entries that point at its own resources (``gateway/access/write_rule.py``). So:

- **a shared plan is visible**: every Task of the case that it does not list yet is appended as
  ``activity.reference`` (nothing else of the plan is touched; ``ifMatch`` on the version read).
  Tasks kept in the municipality's own plan before the region shared its plan come along with
  the next message about the case;
- **none is visible**: the municipality keeps its own plan for the person (``meta.source`` of this
  mapping, one per person and organisation): its Tasks as activities, its needs as ``addresses``.

Which shared plan, when several are visible: a SIP before a five-step plan before a discharge plan
before any other; among equals the one changed last.
"""
from __future__ import annotations

import uuid

from gateway.mapping import Lookup

from mappings.kommun_json.message import Message
from mappings.kommun_json.resources import identifier, meta_for, unit

PLAN_CATEGORY = "https://samverkan.example.se/fhir/CodeSystem/samverkan-plan-category"
PREFERENCE = ("sip", "samverkansplan-fem-steg", "samordnad-utskrivningsplanering")
OWN_PLAN_TITLE = "Kommunens insatser"
NOT_SHARED = ("No shared plan for the person is visible to {org} (the region's plan is shown to the municipality "
              "only with a CareTeam and a Consent for it); the Tasks are kept in the municipality's own CarePlan.")


def own_plan_identifier(msg: Message, org: str) -> dict:
    """One own plan per person and organisation, named without the national id itself."""
    value = uuid.uuid5(uuid.NAMESPACE_URL, f"{org}|{msg.person_system}|{msg.person_value}")
    return identifier(org, "plan", str(value))


async def visible_plans(lookup: Lookup, patients: list[dict]) -> list[dict]:
    ids = [p["id"] for p in patients if p.get("id")]
    if not ids:
        return []
    return await lookup.search("CarePlan", f"patient={','.join(ids)}&status=active&_count=100")


def shared_plan(plans: list[dict], source: str) -> dict | None:
    others = [p for p in plans if (p.get("meta") or {}).get("source") != source]
    if not others:
        return None

    def rank(plan: dict) -> int:
        codes = {c.get("code") for cat in plan.get("category") or [] for c in cat.get("coding") or []
                 if c.get("system") == PLAN_CATEGORY}
        return min((PREFERENCE.index(c) for c in codes if c in PREFERENCE), default=len(PREFERENCE))
    newest_first = sorted(others, key=lambda p: (p.get("meta") or {}).get("lastUpdated", ""), reverse=True)
    return min(newest_first, key=rank)  # the first of the best rank: the newest


def with_activities(plan: dict, refs: list[dict]) -> dict | None:
    """The plan with ``refs`` appended as activities where it does not list them yet; None if it lists all."""
    listed = {_tail(((a.get("reference") or {}).get("reference") or "")) for a in plan.get("activity") or []}
    new = []
    for ref in refs:
        if _tail(ref["reference"]) not in listed:
            listed.add(_tail(ref["reference"]))
            new.append({"reference": ref})
    if not new:
        return None
    return {**plan, "activity": list(plan.get("activity") or []) + new}


def own_plan(msg: Message, org: str, source: str, patient_ref: dict, existing: dict | None, tasks: list[dict],
             needs: list[dict]) -> dict:
    plan = dict(existing or {"resourceType": "CarePlan", "status": "active", "intent": "plan",
                             "title": OWN_PLAN_TITLE})
    plan["meta"] = meta_for(existing, source)
    mine = own_plan_identifier(msg, org)
    plan["identifier"] = [mine] + [i for i in plan.get("identifier") or [] if i.get("system") != mine["system"]]
    plan["subject"] = patient_ref
    plan["author"] = unit(org)
    plan = with_activities(plan, tasks) or plan
    listed = {_tail(a.get("reference") or "") for a in plan.get("addresses") or []}
    addresses = list(plan.get("addresses") or []) + [r for r in needs if _tail(r["reference"]) not in listed]
    if addresses:
        plan["addresses"] = addresses
    return plan


def _tail(reference: str) -> str:
    """``Task/1`` of a relative, absolute or versioned reference (a urn:uuid stays as it is)."""
    if reference.startswith("urn:"):
        return reference
    parts = reference.split("/_history/")[0].rstrip("/").split("/")
    return "/".join(parts[-2:])
