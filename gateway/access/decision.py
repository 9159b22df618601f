"""The one access decision: may custodian C disclose its data about person P to organisation O at time t?

Region and municipality are separate huvudmän under Swedish secrecy law, each the custodian of
what it records. O may see C's information about a person only if it **takes part in an active
CareTeam** for that person **and an active Consent permits disclosure** to it for the purpose
(treatment / care coordination) — a CareTeam and a Consent that *speak for C*: recorded by C, or
confirmed by C (``gateway.access.custodians`` decides which, and with which version). Deny
provisions win over permits; periods are respected. What an organisation authored it may always
see (checked by the caller of this module, which knows the author).

A team or consent C confirmed counts with both its current version and the version C confirmed:
a restriction its author makes later takes effect at once, an extension only once C confirms it.

Consent follows IHE PCF: the root provision's type is the base rule (``deny`` + nested
``permit`` for named organisations = opt-in; ``permit`` + nested ``deny`` = opt-out for some).
A provision applies to O if it names no actors or names O, its period covers t, and its
purposes (if any) include TREAT. Organisations are compared by HSA-id; references to
Organization / PractitionerRole resources are resolved to HSA-ids by the caller
(``hsa_of``), so this module stays pure and is easy to test rule by rule.

``grant_intervals`` turns the decision into [from, to) intervals per (custodian, organisation):
the decision is evaluated between every pair of consecutive period boundaries found in the
CareTeams and Consents, so the stored grants are exactly this function, sampled.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from gateway.search.dates import date_range

PURPOSE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
PURPOSE = "TREAT"
FOREVER = 2**62

HsaOf = Callable[[Any], list[str]]  # a Reference (dict) → the HSA-ids it stands for


@dataclass(frozen=True)
class Source:
    """A CareTeam or Consent as it counts for one custodian: its current version, and the
    version the custodian confirmed (None: the custodian recorded it; the current one counts)."""

    current: dict
    confirmed: dict | None = None

    @property
    def versions(self) -> tuple[dict, ...]:
        return (self.current,) if self.confirmed is None else (self.current, self.confirmed)


def _sources(items: list[Source | dict]) -> list[Source]:
    """A bare resource counts as recorded by the custodian itself."""
    return [i if isinstance(i, Source) else Source(i) for i in items]


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


def _in_team(org: str, team: dict, at: int, hsa_of: HsaOf) -> bool:
    if team.get("status") != "active" or not _covers(team.get("period"), at):
        return False
    for participant in team.get("participant") or []:
        if not _covers(participant.get("period"), at):
            continue
        if org in hsa_of(participant.get("member")) + hsa_of(participant.get("onBehalfOf")):
            return True
    return False


def in_care_team(org: str, careteams: list[Source | dict], at: int, hsa_of: HsaOf) -> bool:
    """O takes part in one of the teams, as every counted version of it says."""
    return any(all(_in_team(org, v, at, hsa_of) for v in team.versions) for team in _sources(careteams))


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


def _source_decision(source: Source, org: str, at: int, hsa_of: HsaOf) -> str | None:
    """A confirmed consent permits only if both versions permit; either one's deny denies."""
    decisions = [_root_decision(v, org, at, hsa_of) for v in source.versions]
    if "deny" in decisions:
        return "deny"
    return "permit" if all(d == "permit" for d in decisions) else None


def consent_permits(org: str, consents: list[Source | dict], at: int, hsa_of: HsaOf) -> bool:
    """Deny wins across consents too: one active consent denying O outweighs another permitting it."""
    decisions = {_source_decision(c, org, at, hsa_of) for c in _sources(consents)}
    return "permit" in decisions and "deny" not in decisions


def may_see(org: str, careteams: list[Source | dict], consents: list[Source | dict], at: int, hsa_of: HsaOf) -> bool:
    """The rule, for one custodian's data: an active CareTeam membership **and** a permitting,
    not denying, consent at ``at`` — both among what speaks for that custodian."""
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


def grant_intervals(by_custodian: dict[str, tuple[list[Source], list[Source]]],
                    hsa_of: HsaOf) -> list[tuple[str, str, int, int]]:
    """(custodian, organisation, from_us, to_us) for every organisation named in the teams that
    speak for each custodian (``by_custodian``: custodian → (CareTeams, Consents)), merged."""
    grants = []
    for custodian, (careteams, consents) in sorted(by_custodian.items()):
        orgs = {h for team in careteams for v in team.versions for p in v.get("participant") or []
                for h in hsa_of(p.get("member")) + hsa_of(p.get("onBehalfOf"))} - {custodian}
        points = {0, FOREVER}
        _boundaries([v for s in careteams + consents for v in s.versions], points)
        edges = sorted(p for p in points if 0 <= p <= FOREVER)
        for org in sorted(orgs):
            start = None
            for low, high in zip(edges, edges[1:]):
                if may_see(org, careteams, consents, low, hsa_of):
                    start = low if start is None else start
                    end = high
                elif start is not None:
                    grants.append((custodian, org, start, end))
                    start = None
            if start is not None:
                grants.append((custodian, org, start, end))
    return grants
