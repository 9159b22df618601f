"""The published SubscriptionTopics (profiles/subscription-topics/): each is a valid R4B
SubscriptionTopic, and its trigger fires for exactly the change it names."""
from __future__ import annotations

import copy
import json

import pytest
from fhir.resources.R4B.subscriptiontopic import SubscriptionTopic

from gateway.events.topics import TopicCatalog, TopicError, parse_topic
from gateway.settings import REPO_PROFILES

TOPICS = REPO_PROFILES / "subscription-topics"
SD = "https://samverkan.example.se/fhir/StructureDefinition/"
CATALOG = TopicCatalog.load(TOPICS)
ENCOUNTER = json.loads((REPO_PROFILES.parent / "fixtures/profiles/lusen-encounter-example.json").read_text("utf-8"))


def fired(rtype: str, interaction: str, previous: dict | None, current: dict | None) -> list[str]:
    return [t.id for t in CATALOG.fired(rtype, interaction, previous, current)]


@pytest.mark.parametrize("path", sorted(TOPICS.glob("*.json")), ids=lambda p: p.stem)
def test_every_topic_is_a_valid_subscription_topic(path):
    SubscriptionTopic.model_validate(json.loads(path.read_text("utf-8")))


def test_the_issue_s_topics_are_all_published():
    assert {t.rsplit("/", 1)[1] for t in CATALOG.by_url} == {
        "task-created", "task-status-changed", "task-owner-changed", "careplan-changed", "careteam-membership",
        "consent-given", "consent-withdrawn", "encounter-admission", "encounter-planned-discharge",
        "encounter-utskrivningsklar", "encounter-utskrivningsklar-revoked", "encounter-discharged",
        "communication-created"}


def test_task_created_status_and_owner_changes_are_distinct_events():
    t = {"resourceType": "Task", "status": "requested", "owner": {"reference": "Organization/1"}}
    assert fired("Task", "create", None, t) == ["task-created"]
    assert fired("Task", "update", t, {**t, "status": "accepted"}) == ["task-status-changed"]
    assert fired("Task", "update", t, {**t, "owner": {"reference": "Organization/2"}}) == ["task-owner-changed"]
    assert fired("Task", "update", {k: v for k, v in t.items() if k != "owner"}, t) == ["task-owner-changed"]
    assert fired("Task", "update", t, copy.deepcopy(t)) == []


def test_lusen_admission_is_an_inpatient_stay_starting():
    assert "encounter-admission" in fired("Encounter", "create", None, ENCOUNTER)
    planned = {**ENCOUNTER, "status": "planned"}
    assert "encounter-admission" not in fired("Encounter", "create", None, planned)
    assert "encounter-admission" in fired("Encounter", "update", planned, ENCOUNTER)
    outpatient = {**ENCOUNTER, "class": {**ENCOUNTER["class"], "code": "AMB"}}
    assert "encounter-admission" not in fired("Encounter", "create", None, outpatient)


def test_lusen_every_planned_discharge_date_revision_is_an_event():
    moved = copy.deepcopy(ENCOUNTER)
    moved["extension"].append({"url": SD + "planned-discharge-date", "extension": [
        {"url": "date", "valueDateTime": "2024-05-12"}, {"url": "recorded", "valueDateTime": "2024-05-10T08:00:00+02:00"}]})
    assert fired("Encounter", "update", ENCOUNTER, moved) == ["encounter-planned-discharge"]


def test_lusen_utskrivningsklar_and_its_revocation_are_separate_events():
    bare = copy.deepcopy(ENCOUNTER)
    bare["extension"] = [e for e in bare["extension"] if e["url"] != SD + "utskrivningsklar"]
    ready = copy.deepcopy(bare)
    ready["extension"].append({"url": SD + "utskrivningsklar", "extension": [
        {"url": "time", "valueDateTime": "2024-05-10T09:00:00+02:00"}]})
    assert fired("Encounter", "update", bare, ready) == ["encounter-utskrivningsklar"]
    revoked = copy.deepcopy(ready)
    revoked["extension"][-1]["extension"].append({"url": "revoked", "valueDateTime": "2024-05-10T15:00:00+02:00"})
    assert fired("Encounter", "update", ready, revoked) == ["encounter-utskrivningsklar-revoked"]


def test_lusen_discharge_is_the_stay_finishing():
    assert fired("Encounter", "update", ENCOUNTER, {**ENCOUNTER, "status": "finished"}) == ["encounter-discharged"]


def test_consent_given_and_withdrawn():
    c = {"resourceType": "Consent", "status": "active"}
    assert fired("Consent", "create", None, c) == ["consent-given"]
    assert fired("Consent", "create", None, {**c, "status": "draft"}) == []
    assert fired("Consent", "update", c, {**c, "status": "inactive"}) == ["consent-withdrawn"]
    assert fired("Consent", "delete", c, None) == ["consent-withdrawn"]


def test_careteam_membership_changes_are_events_and_other_edits_are_not():
    team = {"resourceType": "CareTeam", "status": "active", "participant": [{"member": {"reference": "Organization/1"}}]}
    joined = copy.deepcopy(team)
    joined["participant"].append({"member": {"reference": "Organization/2"}})
    assert fired("CareTeam", "update", team, joined) == ["careteam-membership"]
    assert fired("CareTeam", "update", team, {**team, "name": "Team Tolvan"}) == []


def test_a_topic_with_a_broken_trigger_is_refused_at_start():
    with pytest.raises(TopicError, match="does not parse"):
        parse_topic({"url": "x", "resourceTrigger": [{"resource": "http://hl7.org/fhir/StructureDefinition/Task",
                                                      "fhirPathCriteria": "%current.status =="}]})
