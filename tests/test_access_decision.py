"""The access rule as a pure function (gateway/access/decision.py), rule by rule.

Organisations are HSA-ids; references resolve through a fixed table, as the policy's
resolution against stored Organization resources would.
"""
from __future__ import annotations

from gateway.access.decision import FOREVER, Source, grant_intervals, may_see, period_range
from gateway.search.dates import date_range

REGION, KOMMUN, OTHER = "SE2321000016-REG1", "SE2120000803-KOM1", "SE2120001231-OTH1"
ORGS = {"Organization/region": [REGION], "Organization/kommun": [KOMMUN], "Organization/other": [OTHER]}
TREAT = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}
AT = date_range("2025-03-01T12:00:00Z")[0]


def hsa_of(ref):
    return ORGS.get(ref.get("reference", ""), []) if isinstance(ref, dict) else []


def team(*orgs, status="active", period=None, participant_period=None):
    t = {"resourceType": "CareTeam", "status": status,
         "participant": [{"member": {"reference": f"Organization/{o}"}} for o in orgs]}
    if period:
        t["period"] = period
    if participant_period:
        for p in t["participant"]:
            p["period"] = participant_period
    return t


def consent(*nested, root="deny", status="active", period=None):
    provision = {"type": root, "provision": list(nested)}
    if period:
        provision["period"] = period
    return {"resourceType": "Consent", "status": status, "provision": provision}


def permit(org, purpose=(TREAT,), period=None, kind="permit"):
    p = {"type": kind, "actor": [{"reference": {"reference": f"Organization/{org}"}}], "purpose": list(purpose)}
    if period:
        p["period"] = period
    return p


def test_care_team_member_with_permitting_consent_may_see():
    assert may_see(KOMMUN, [team("region", "kommun")], [consent(permit("kommun"))], AT, hsa_of)


def test_consent_without_care_team_membership_is_not_enough():
    assert not may_see(KOMMUN, [team("region")], [consent(permit("kommun"))], AT, hsa_of)


def test_care_team_membership_without_consent_is_not_enough():
    assert not may_see(KOMMUN, [team("region", "kommun")], [], AT, hsa_of)


def test_consent_permitting_someone_else_does_not_permit_this_organisation():
    assert not may_see(OTHER, [team("region", "kommun", "other")], [consent(permit("kommun"))], AT, hsa_of)


def test_deny_provision_wins_over_permit_in_the_same_consent():
    c = consent(permit("kommun"), permit("kommun", kind="deny"))
    assert not may_see(KOMMUN, [team("kommun")], [c], AT, hsa_of)


def test_deny_in_one_consent_wins_over_permit_in_another():
    assert not may_see(KOMMUN, [team("kommun")], [consent(permit("kommun")), consent(root="deny",
                       *[permit("kommun", kind="deny")])], AT, hsa_of)


def test_root_permit_is_an_opt_out_consent_for_everyone_in_the_team():
    assert may_see(OTHER, [team("other")], [consent(root="permit")], AT, hsa_of)
    assert not may_see(OTHER, [team("other")], [consent(permit("other", kind="deny"), root="permit")], AT, hsa_of)


def test_inactive_consent_permits_nothing():
    assert not may_see(KOMMUN, [team("kommun")], [consent(permit("kommun"), status="inactive")], AT, hsa_of)


def test_inactive_care_team_gives_no_membership():
    assert not may_see(KOMMUN, [team("kommun", status="inactive")], [consent(permit("kommun"))], AT, hsa_of)


def test_participant_period_ended_gives_no_membership():
    ended = {"start": "2024-01-01", "end": "2025-02-01"}
    assert not may_see(KOMMUN, [team("kommun", participant_period=ended)], [consent(permit("kommun"))], AT, hsa_of)


def test_consent_period_respected_before_during_after():
    c = consent(permit("kommun"), period={"start": "2025-02-01", "end": "2025-04-01"})
    assert may_see(KOMMUN, [team("kommun")], [c], AT, hsa_of)
    assert not may_see(KOMMUN, [team("kommun")], [c], date_range("2025-01-15")[0], hsa_of)
    assert not may_see(KOMMUN, [team("kommun")], [c], date_range("2025-04-02")[0], hsa_of)


def test_permit_for_another_purpose_than_treatment_does_not_apply():
    research = {"system": TREAT["system"], "code": "HRESCH"}
    assert not may_see(KOMMUN, [team("kommun")], [consent(permit("kommun", purpose=(research,)))], AT, hsa_of)


def test_unreadable_period_grants_nothing():
    assert period_range({"start": "not a date"}) == (0, 0)
    c = consent(permit("kommun", period={"start": "igår"}))
    assert not may_see(KOMMUN, [team("kommun")], [c], AT, hsa_of)


def test_grant_intervals_are_the_decision_between_period_boundaries():
    feb, apr = "2025-02-01T00:00:00Z", "2025-04-01T00:00:00Z"
    c = consent(permit("kommun", period={"start": feb, "end": apr}))
    grants = grant_intervals({REGION: ([Source(team("region", "kommun"))], [Source(c)])}, hsa_of)
    # the end counts to the end of its precision (here: the whole second 00:00:00)
    assert grants == [(REGION, KOMMUN, date_range(feb)[0], date_range(apr)[0] + 1_000_000)]


def test_grant_intervals_open_ended_consent_lasts_forever_and_names_no_outsider():
    teams, consents = [Source(team("region", "kommun"))], [Source(consent(permit("kommun"), permit("region")))]
    grants = grant_intervals({REGION: (teams, consents), KOMMUN: (teams, consents)}, hsa_of)
    # each custodian discloses to the others, never to itself
    assert sorted(grants) == sorted([(REGION, KOMMUN, 0, FOREVER), (KOMMUN, REGION, 0, FOREVER)])
    assert all(org != OTHER for _, org, _, _ in grants)


def test_a_confirmed_consent_counts_only_as_far_as_both_versions_permit():
    """A restriction the author makes later takes effect at once; an extension waits for the confirmation."""
    both = Source(consent(permit("kommun"), permit("other")), confirmed=consent(permit("kommun")))
    teams = [Source(team("region", "kommun", "other"))]
    assert may_see(KOMMUN, teams, [both], AT, hsa_of)
    assert not may_see(OTHER, teams, [both], AT, hsa_of)  # added after the confirmation: not yet
    withdrawn = Source(consent(permit("kommun", kind="deny")), confirmed=consent(permit("kommun")))
    assert not may_see(KOMMUN, teams, [withdrawn], AT, hsa_of)


def test_a_confirmed_team_counts_only_for_members_in_both_versions():
    teams = [Source(team("region", "kommun", "other"), confirmed=team("region", "kommun"))]
    c = [consent(permit("kommun"), permit("other"))]
    assert may_see(KOMMUN, teams, c, AT, hsa_of)
    assert not may_see(OTHER, teams, c, AT, hsa_of)
