"""The one access decision: may organisation O see patient P's data at time t?

Region and municipality are separate huvudmän under Swedish secrecy law: one may see the
other's information about a person only if it **takes part in an active CareTeam** for that
person **and an active Consent permits disclosure** to it for the purpose (treatment /
care coordination). Deny provisions win over permits; periods are respected. What an
organisation authored it may always see (checked by the caller of this module, which knows
the author).

Consent follows IHE PCF: the root provision's type is the base rule (``deny`` + nested
``permit`` for named organisations = opt-in; ``permit`` + nested ``deny`` = opt-out for some).
A provision applies to O if it names no actors or names O, its period covers t, and its
purposes (if any) include TREAT. Organisations are compared by HSA-id; references to
Organization / PractitionerRole resources are resolved to HSA-ids by the caller
(``hsa_of``), so this module stays pure and is easy to test rule by rule.

``grant_intervals`` turns the decision into [from, to) intervals per organisation: the
decision is evaluated between every pair of consecutive period boundaries found in the
CareTeams and Consents, so the stored grants are exactly this function, sampled.
"""
from __future__ import annotations

from typing import Any, Callable

from gateway.search.dates import date_range

PURPOSE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
PURPOSE = "TREAT"
FOREVER = 2**62

HsaOf = Callable[[Any], list[str]]  # a Reference (dict) → the HSA-ids it stands for


def period_range(period: Any) -> tuple[int, int]:
    """[start, end) in µs; an absent start/end is open; an unparseable value closes the period
    (a consent or team membership we cannot read grants nothing)."""
    if not isinstance(period, dict):
        return 0, FOREVER
    try:
        low = date_range(period["start"])[0] if "start" in period else 0
        high = date_range(period["end"])[1] + 1 if "end" in period else FOREVER  # the end's whole precision counts
    except (ValueError, TypeError):
        return 0, 0
    return low, high


def _covers(period: Any, at: int) -> bool:
    low, high = period_range(period)
    return low <= at < high


def in_care_team(org: str, careteams: list[dict], at: int, hsa_of: HsaOf) -> bool:
    for team in careteams:
        if team.get("status") != "active" or not _covers(team.get("period"), at):
            continue
        for participant in team.get("participant") or []:
            if not _covers(participant.get("period"), at):
                continue
            members = hsa_of(participant.get("member")) + hsa_of(participant.get("onBehalfOf"))
            if org in members:
                return True
    return False


def _purpose_ok(provision: dict) -> bool:
    purposes = provision.get("purpose") or []
    return not purposes or any(p.get("code") == PURPOSE and p.get("system") in (None, PURPOSE_SYSTEM)
                               for p in purposes)


def _applies(provision: dict, org: str, at: int, hsa_of: HsaOf) -> bool:
    actors = provision.get("actor") or []
    if actors and not any(org in hsa_of(a.get("reference")) for a in actors):
        return False
    return _covers(provision.get("period"), at) and _purpose_ok(provision)


def _provision_decision(provision: dict, org: str, at: int, hsa_of: HsaOf) -> str | None:
    """'permit', 'deny' or None (says nothing about O at t); nested provisions override their
    parent for whom they apply, and among them deny wins."""
    if not _applies(provision, org, at, hsa_of):
        return None
    nested = [d for d in (_provision_decision(p, org, at, hsa_of) for p in provision.get("provision") or []) if d]
    if nested:
        return "deny" if "deny" in nested else "permit"
    kind = provision.get("type")
    return kind if kind in ("permit", "deny") else None


def _root_decision(consent: dict, org: str, at: int, hsa_of: HsaOf) -> str | None:
    root = consent.get("provision")
    if consent.get("status") != "active" or not isinstance(root, dict):
        return None
    if not _covers(root.get("period"), at):
        return None
    # The root's own actors restrict it; its nested exceptions are judged even if O is not a root actor.
    nested = [d for d in (_provision_decision(p, org, at, hsa_of) for p in root.get("provision") or []) if d]
    if nested:
        return "deny" if "deny" in nested else "permit"
    if not _applies(root, org, at, hsa_of):
        return None
    kind = root.get("type")
    return kind if kind in ("permit", "deny") else None


def consent_permits(org: str, consents: list[dict], at: int, hsa_of: HsaOf) -> bool:
    """Deny wins across consents too: one active consent denying O outweighs another permitting it."""
    decisions = {_root_decision(c, org, at, hsa_of) for c in consents}
    return "permit" in decisions and "deny" not in decisions


def may_see(org: str, careteams: list[dict], consents: list[dict], at: int, hsa_of: HsaOf) -> bool:
    """The rule: an active CareTeam membership **and** a permitting, not denying, consent at ``at``."""
    return in_care_team(org, careteams, at, hsa_of) and consent_permits(org, consents, at, hsa_of)


def _boundaries(node: Any, out: set[int]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "period" and isinstance(value, dict):
                out.update(period_range(value))
            else:
                _boundaries(value, out)
    elif isinstance(node, list):
        for item in node:
            _boundaries(item, out)


def grant_intervals(careteams: list[dict], consents: list[dict], hsa_of: HsaOf) -> list[tuple[str, int, int]]:
    """(organisation, from_us, to_us) for every organisation named in the CareTeams, merged."""
    orgs = {h for t in careteams for p in t.get("participant") or []
            for h in hsa_of(p.get("member")) + hsa_of(p.get("onBehalfOf"))}
    points = {0, FOREVER}
    _boundaries(careteams, points)
    _boundaries(consents, points)
    edges = sorted(p for p in points if 0 <= p <= FOREVER)
    grants = []
    for org in sorted(orgs):
        start = None
        for low, high in zip(edges, edges[1:]):
            if may_see(org, careteams, consents, low, hsa_of):
                start = low if start is None else start
                end = high
            elif start is not None:
                grants.append((org, start, end))
                start = None
        if start is not None:
            grants.append((org, start, end))
    return grants
