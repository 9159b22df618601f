"""Red team, second round (issue 12): the classes of hole found from outside, each through every
path it could take — PUT, PATCH, conditional update, transaction and batch entries, ``$validate``
and notifications — named after the principle that closes it.

The world is the red-team one (``test_access_redteam``): REGION authored everything about the
first patient; KOMMUN is the municipality it shares the plan with; OTHER is a third
organisation that must never see the region's data.
"""
from __future__ import annotations

import json as jsonlib

import pytest
from conftest import PNR_SYSTEM, TEST_PNR, patient, task
from test_access_redteam import (
    KOMMUN, OTHER, PATCH_TYPE, REGION, assert_no_leak, binary_patch, care_team, consent, entry_keys, logical,
    provision,
    shared, world,  # noqa: F401  (fixtures)
)

LABELS = "http://hl7.se/fhir/ig/base/CodeSystem/SecurityLabel"
STREET = "Hemliga gatan 7"
SD = "https://samverkan.example.se/fhir/StructureDefinition/"
KOMMUNKOD = "https://samverkan.example.se/fhir/sid/kommunkod"
CONFIRMATION = {"coding": [{"system": "https://samverkan.example.se/fhir/CodeSystem/samverkan-provenance-activity",
                            "code": "custodian-confirmation"}]}


def protected_patient(pnr: str = "199001012385") -> dict:
    address = {"use": "home", "line": [STREET], "city": "Halmstad", "extension": [
        {"url": SD + "folkbokforingskommun", "valueCoding": {"system": KOMMUNKOD, "code": "1380"}}]}
    return patient(pnr, family="Skyddad", address=[address],
                   meta={"security": [{"system": LABELS, "code": "sekretessmarkering"}]})


async def share_person(w, pid: str) -> None:
    await w.make(REGION, care_team(pid, [{"member": w.ref(REGION)}, {"member": w.ref(KOMMUN)}]))
    await w.make(REGION, consent(pid, provision("deny", purpose=(), nested=[provision("permit", w.ref(KOMMUN))])))


def confirmation(*targets: str) -> dict:
    return {"resourceType": "Provenance", "target": [{"reference": t} for t in targets],
            "recorded": "2026-12-01T10:00:00Z", "activity": CONFIRMATION,
            "agent": [{"who": {"display": "the confirming organisation"}}]}


def transaction(kind: str, *entries: dict) -> dict:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def outcomes(r) -> list[str]:
    """The status of each entry of a batch/transaction answer, or of the answer itself."""
    body = r.json() if r.content else {}
    if r.status_code != 200 or body.get("resourceType") != "Bundle":
        return [str(r.status_code)]
    return [e["response"]["status"].split()[0] for e in body["entry"]]


# =========================================================================================
# 1. A patch applies to what the caller may change — it never tests or copies hidden elements.
# =========================================================================================
@pytest.fixture
async def protected(shared):
    w = shared
    w.ids["protected"] = (await w.make(REGION, protected_patient()))["id"]
    await share_person(w, w.ids["protected"])
    assert (await w.get(KOMMUN, f"Patient/{w.ids['protected']}")).status_code == 200  # redacted, but seen
    return w


def _patch_paths(w, rid: str, ops: list[dict]) -> list[tuple[str, str, str, dict | list]]:
    """(name, method, path, body) of every way to send this patch."""
    entry = {"resource": binary_patch(ops), "request": {"method": "PATCH", "url": f"Patient/{rid}"}}
    return [("PATCH", "PATCH", f"Patient/{rid}", ops),
            ("transaction", "POST", "", transaction("transaction", entry)),
            ("batch", "POST", "", transaction("batch", entry))]


@pytest.mark.parametrize("ops", [
    [{"op": "copy", "from": "/address/0/line/0", "path": "/name/0/text"}],
    [{"op": "move", "from": "/address", "path": "/contact"}],
    [{"op": "remove", "path": "/meta/security"}],
    [{"op": "replace", "path": "/meta/security", "value": []}],
], ids=["copy-address-into-name", "move-address", "remove-security-labels", "empty-security-labels"])
async def test_patch_never_reaches_what_the_caller_may_not_change(protected, ops):
    w = protected
    rid = w.ids["protected"]
    for name, method, path, body in _patch_paths(w, rid, ops):
        r = await w.call(KOMMUN, method, path, json=body, headers=PATCH_TYPE if method == "PATCH" else None)
        assert outcomes(r) == ["403"] or set(outcomes(r)) == {"403"}, (name, r.text)
        assert_no_leak(r, {STREET})
    stored = await w.current("Patient", rid)
    assert stored["meta"]["versionId"] == "1" and stored["address"][0]["line"] == [STREET]
    assert STREET not in (await w.get(KOMMUN, f"Patient/{rid}")).text


async def test_patch_test_op_is_no_oracle_for_a_hidden_address(protected):
    """A right guess and a wrong guess get the same answer, whatever path carries them."""
    w = protected
    rid = w.ids["protected"]
    for guess in (STREET, "Fel gata 1"):
        ops = [{"op": "test", "path": "/address/0/line/0", "value": guess},
               {"op": "replace", "path": "/gender", "value": "other"}]
        answers = []
        for name, method, path, body in _patch_paths(w, rid, ops):
            r = await w.call(KOMMUN, method, path, json=body, headers=PATCH_TYPE if method == "PATCH" else None)
            answers.append((name, outcomes(r), r.json().get("issue", r.json().get("entry"))))
        if guess == STREET:
            right = answers
        else:
            assert answers == right  # identical, issue texts included


async def test_a_full_replacement_is_no_oracle_for_a_hidden_address(protected):
    """PUT, conditional update, transaction PUT and $validate mode=update of a resource the caller
    did not create: refused before the body is compared, so a right guess looks like a wrong one."""
    w = protected
    rid = w.ids["protected"]
    stored = await w.current("Patient", rid)  # what KOMMUN would have to guess
    answers = {}
    for guess in (STREET, "Fel gata 1"):
        body = jsonlib.loads(jsonlib.dumps(stored))
        body["address"][0]["line"] = [guess]
        del body["meta"]
        paths = [("PUT", "PUT", f"Patient/{rid}", body),
                 ("conditional", "PUT", f"Patient?identifier={PNR_SYSTEM}|199001012385", body),
                 ("transaction", "POST", "", transaction("transaction", {
                     "resource": body, "request": {"method": "PUT", "url": f"Patient/{rid}"}})),
                 ("validate", "POST", f"Patient/{rid}/$validate?mode=update", body)]
        answers[guess] = []
        for name, method, path, payload in paths:
            r = await w.call(KOMMUN, method, path, json=payload)
            answers[guess].append((name, outcomes(r), r.text.replace(guess, "GUESS")))
            assert outcomes(r)[0] == "403", (name, r.text)
    assert answers[STREET] == answers["Fel gata 1"]
    assert (await w.current("Patient", rid))["meta"]["versionId"] == "1"


# =========================================================================================
# 2. The write rule: the author changes its resources; others only what their role allows.
# =========================================================================================
async def _attempt_everywhere(w, who: str, resource: dict, patch: list[dict]) -> list[tuple[str, str]]:
    """The same change through PUT, PATCH, conditional update, transaction and batch, and $validate."""
    rtype, rid = resource["resourceType"], resource["id"]
    body = {k: v for k, v in resource.items() if k != "meta"}
    put_entry = {"resource": body, "request": {"method": "PUT", "url": f"{rtype}/{rid}"}}
    patch_entry = {"resource": binary_patch(patch), "request": {"method": "PATCH", "url": f"{rtype}/{rid}"}}
    attempts = [("PUT", "PUT", f"{rtype}/{rid}", body, None),
                ("PATCH", "PATCH", f"{rtype}/{rid}", patch, PATCH_TYPE),
                ("conditional", "PUT", f"{rtype}?_id={rid}", body, None),
                ("transaction-PUT", "POST", "", transaction("transaction", put_entry), None),
                ("transaction-PATCH", "POST", "", transaction("transaction", patch_entry), None),
                ("batch-PUT", "POST", "", transaction("batch", put_entry), None),
                ("validate", "POST", f"{rtype}/{rid}/$validate?mode=update", body, None)]
    out = []
    for name, method, path, payload, headers in attempts:
        r = await w.call(who, method, path, json=payload, headers=headers)
        out.append((name, outcomes(r)[0]))
    return out


@pytest.mark.parametrize("change", ["general-practitioner", "security-label", "name"])
async def test_a_party_to_the_plan_cannot_change_the_regions_patient(shared, change):
    w = shared
    current = await w.current("Patient", w.ids["pid"])
    if change == "general-practitioner":
        edited = {**current, "generalPractitioner": [w.ref(KOMMUN)]}
        patch = [{"op": "add", "path": "/generalPractitioner", "value": [w.ref(OTHER)]}]
    elif change == "security-label":
        edited = {**current, "meta": {"security": [{"system": LABELS, "code": "sekretessmarkering"}]}}
        patch = [{"op": "add", "path": "/meta/security", "value": []}]
    else:
        edited = {**current, "name": [{"family": "Annan"}]}
        patch = [{"op": "replace", "path": "/name/0/family", "value": "Annan"}]
    results = await _attempt_everywhere(w, KOMMUN, edited, patch)
    assert all(status == "403" for _, status in results), results
    await w.assert_untouched()


async def test_a_party_to_the_plan_cannot_flip_the_may_need_services_judgement(shared):
    w = shared
    enc = await w.current("Encounter", w.ids["encounter"])
    flags = {"url": SD + "may-need-services", "extension": [{"url": "municipality", "valueBoolean": True},
                                                             {"url": "primaryCare", "valueBoolean": True}]}
    edited = {**enc, "extension": [flags]}
    results = await _attempt_everywhere(w, KOMMUN, edited, [{"op": "add", "path": "/extension", "value": [flags]}])
    assert all(status == "403" for _, status in results), results
    await w.assert_untouched()


async def test_the_task_owner_moves_its_task_along_and_nothing_more(shared):
    w = shared
    tid = w.ids["task"]
    r = await w.call(KOMMUN, "PATCH", f"Task/{tid}", headers=PATCH_TYPE, json=[
        {"op": "replace", "path": "/status", "value": "in-progress"},
        {"op": "add", "path": "/businessStatus", "value": {"text": "hembesök bokat"}},
        {"op": "add", "path": "/note", "value": [{"text": "ringt anhörig"}]}])
    assert r.status_code == 200, r.text
    current = await w.current("Task", tid)
    for element, value in (("priority", "urgent"), ("owner", w.ref(OTHER)), ("description", "ändrad"),
                           ("focus", {"reference": f"CarePlan/{w.ids['careplan']}"})):
        results = await _attempt_everywhere(w, KOMMUN, {**current, element: value},
                                            [{"op": "add", "path": f"/{element}", "value": value}])
        assert all(status == "403" for _, status in results), (element, results)
        r = await w.call(KOMMUN, "PUT", f"Task/{tid}", json={**current, element: value})
        assert r.json()["issue"][0]["expression"] == [f"Task.{element}"], r.text
    labelled = {**current, "meta": {"security": [{"system": LABELS, "code": "sekretessmarkering"}]}}
    r = await w.call(KOMMUN, "PUT", f"Task/{tid}", json=labelled)
    assert r.status_code == 403 and r.json()["issue"][0]["expression"] == ["Task.meta.security"]
    assert (await w.current("Task", tid))["meta"]["versionId"] == "2"


async def test_only_the_owner_may_move_a_task_it_can_see(shared):
    """KOMMUN sees the region's Task owned by the region itself: seeing is not owning."""
    w = shared
    own = await w.make(REGION, task(f"Patient/{w.ids['pid']}", owner=w.ref(REGION)))
    results = await _attempt_everywhere(w, KOMMUN, {**own, "status": "cancelled",
                                                    "statusReason": {"text": "ej aktuellt"}},
                                        [{"op": "replace", "path": "/status", "value": "cancelled"}])
    assert all(status == "403" for _, status in results), results


async def test_a_party_adds_its_own_activities_to_the_plan_and_nothing_else(shared):
    w = shared
    cp = await w.current("CarePlan", w.ids["careplan"])
    own = await w.make(KOMMUN, task(f"Patient/{w.ids['pid']}", description="hemtjänst"))
    mine = {"reference": {"reference": f"Task/{own['id']}"}}
    theirs = {"reference": {"reference": f"Task/{w.ids['task']}"}}
    planned = {"detail": {"status": "scheduled", "description": "något annat"}}
    for bad in (theirs, planned):
        results = await _attempt_everywhere(w, KOMMUN, {**cp, "activity": [*cp.get("activity", []), bad]},
                                            [{"op": "add", "path": "/activity", "value": [bad]}])
        assert all(status == "403" for _, status in results), (bad, results)
    r = await w.call(KOMMUN, "PUT", f"CarePlan/{cp['id']}", json={**cp, "activity": [mine],
                                                                    "note": [{"text": "SIP bokad"}]})
    assert r.status_code == 200, r.text
    cp = r.json()
    r = await w.call(KOMMUN, "PUT", f"CarePlan/{cp['id']}", json={**cp, "activity": [theirs]})  # replace, not add
    assert r.status_code == 403 and r.json()["issue"][0]["expression"] == ["CarePlan.activity"]


# =========================================================================================
# 4. A consent speaks for its custodian: nobody extends another organisation's data to anyone.
# =========================================================================================
async def test_a_granted_organisation_cannot_extend_the_regions_data_to_a_third(shared):
    w = shared
    pid = w.ids["pid"]
    await w.make(KOMMUN, care_team(pid, [{"member": logical(KOMMUN)}, {"member": logical(OTHER)}]))
    await w.make(KOMMUN, consent(pid, provision("permit", purpose=())))  # permits everyone
    kommun_task = await w.make(KOMMUN, task(f"Patient/{pid}", description="KOMMUNS-EGEN"))
    for key, rtype in (("task", "Task"), ("pid", "Patient"), ("careplan", "CarePlan"), ("encounter", "Encounter")):
        assert (await w.get(OTHER, f"{rtype}/{w.ids[key]}")).status_code == 404
    r = await w.get(OTHER, f"Task?patient={pid}")
    assert entry_keys(r) == {f"Task/{kommun_task['id']}"}  # KOMMUN may share what it recorded itself
    assert_no_leak(r, w.first_patient_secrets - {pid})


async def test_a_broad_consent_opens_the_regions_data_only_to_teams_the_region_vouches_for(world):
    """The region's consent permits everyone in the care team; KOMMUN's own team adds OTHER."""
    w = world
    pid = w.ids["pid"]
    await w.add_careteam()
    await w.make(REGION, consent(pid, provision("permit")))  # whoever is in the team, for treatment
    assert (await w.get(KOMMUN, f"Task/{w.ids['task']}")).status_code == 200
    await w.make(KOMMUN, care_team(pid, [{"member": logical(KOMMUN)}, {"member": logical(OTHER)}]))
    assert (await w.get(OTHER, f"Task/{w.ids['task']}")).status_code == 404
    await w.make(REGION, care_team(pid, [{"member": w.ref(REGION)}, {"member": w.ref(OTHER)}]))
    assert (await w.get(OTHER, f"Task/{w.ids['task']}")).status_code == 200  # the region's own team: yes


async def test_one_sip_consent_covers_every_party_that_confirms_it(world):
    """The municipality records the SIP consent and team naming the region as custodian too;
    the region's data opens once the region confirms, the municipality's at once."""
    w = world
    pid = w.ids["pid"]
    own = await w.call(KOMMUN, "POST", "Patient", json=patient(TEST_PNR, family="Tolvansson"),
                       headers={"If-None-Exist": f"identifier={PNR_SYSTEM}|{TEST_PNR}"})
    assert own.status_code == 201  # KOMMUN cannot see the region's Patient: it gets its own
    kpid = own.json()["id"]
    ktask = await w.make(KOMMUN, task(f"Patient/{kpid}", description="KOMMUN-SIP"))
    team = await w.make(KOMMUN, care_team(kpid, [{"member": w.ref(KOMMUN)}, {"member": w.ref(REGION)}]))
    sip = consent(kpid, provision("deny", purpose=(), nested=[provision("permit", w.ref(KOMMUN), w.ref(REGION))]))
    sip["organization"] = [w.ref(KOMMUN), w.ref(REGION)]
    sip = await w.make(KOMMUN, sip)
    assert (await w.get(REGION, f"Task/{ktask['id']}")).status_code == 200  # the municipality's consent, its data
    assert (await w.get(KOMMUN, f"Task/{w.ids['task']}")).status_code == 404  # not yet the region's
    r = await w.call(REGION, "POST", "Provenance", json=confirmation(f"Consent/{sip['id']}/_history/1",
                                                                     f"CareTeam/{team['id']}/_history/1"))
    assert r.status_code == 201, r.text
    assert (await w.get(KOMMUN, f"Task/{w.ids['task']}")).status_code == 200
    # One person: each sees both Patients, and the plan's Tasks of both, by the person's number.
    for who in (REGION, KOMMUN):
        found = await w.get(who, f"Patient?identifier={PNR_SYSTEM}|{TEST_PNR}")
        assert entry_keys(found) == {f"Patient/{pid}", f"Patient/{kpid}"}
    # An extension of the consent waits for the region's confirmation; the municipality's data opens at once.
    extended = {**sip, "provision": provision("deny", purpose=(), nested=[
        provision("permit", w.ref(KOMMUN), w.ref(REGION), logical(OTHER))])}
    assert (await w.update(KOMMUN, extended)).status_code == 200
    r = await w.update(KOMMUN, {**team, "participant": [*team["participant"], {"member": logical(OTHER)}]})
    assert r.status_code == 200, r.text
    assert (await w.get(OTHER, f"Task/{ktask['id']}")).status_code == 200
    assert (await w.get(OTHER, f"Task/{w.ids['task']}")).status_code == 404
    # A withdrawal takes effect at once for every custodian.
    current = (await w.get(KOMMUN, f"Consent/{sip['id']}")).json()
    assert (await w.update(KOMMUN, {**current, "status": "inactive"})).status_code == 200
    assert (await w.get(KOMMUN, f"Task/{w.ids['task']}")).status_code == 404
    assert (await w.get(REGION, f"Task/{ktask['id']}")).status_code == 404


async def test_withdrawing_a_confirmation_closes_the_confirmers_data(world):
    """KOMMUN confirmed the region's SIP consent and team; deleting its Provenance takes its own
    records out of the plan again (the region's stay shared: that is the region's consent)."""
    w = world
    pid = w.ids["pid"]
    team = await w.add_careteam()
    cons = consent(pid, provision("deny", purpose=(), nested=[provision("permit", w.ref(KOMMUN), w.ref(REGION))]))
    cons = await w.make(REGION, {**cons, "organization": [w.ref(REGION), w.ref(KOMMUN)]})
    ktask = await w.make(KOMMUN, task(f"Patient/{pid}", description="KOMMUN-NOTE"))
    assert (await w.get(REGION, f"Task/{ktask['id']}")).status_code == 404
    prov = await w.make(KOMMUN, confirmation(f"Consent/{cons['id']}/_history/1", f"CareTeam/{team['id']}/_history/1"))
    assert (await w.get(REGION, f"Task/{ktask['id']}")).status_code == 200
    assert (await w.call(KOMMUN, "DELETE", f"Provenance/{prov['id']}")).status_code == 204
    assert (await w.get(REGION, f"Task/{ktask['id']}")).status_code == 404
    assert (await w.get(KOMMUN, f"Task/{w.ids['task']}")).status_code == 200


@pytest.mark.parametrize("target", ["unversioned", "hidden", "missing"])
async def test_a_confirmation_names_a_version_the_confirmer_can_see(shared, target):
    w = shared
    ref = {"unversioned": f"Consent/{w.ids['consent']}", "hidden": f"Consent/{w.ids['consent']}/_history/1",
           "missing": "Consent/00000000-0000-4000-8000-000000000009/_history/1"}[target]
    r = await w.call(OTHER, "POST", "Provenance", json=confirmation(ref))
    assert r.status_code == 422, r.text
    if target != "unversioned":
        assert "is not known" in r.text
    assert_no_leak(r, w.secrets)


async def test_a_third_party_added_by_a_granted_organisation_is_notified_of_its_data_only(settings):
    """The notification path: OTHER, added by KOMMUN's own team and consent, is told of KOMMUN's
    Tasks about the person and never of the region's."""
    from dataclasses import replace

    from conftest import running_gateway
    from receiver import Receiver
    from test_access_redteam import build_world
    receiver = Receiver()
    async with running_gateway(replace(settings, notify_tick=0.05), authorised=False,
                               notify_sender=receiver) as http:
        w = await build_world(http, settings.db_path)
        await w.share()
        pid = w.ids["pid"]
        await w.make(KOMMUN, care_team(pid, [{"member": logical(KOMMUN)}, {"member": logical(OTHER)}]))
        await w.make(KOMMUN, consent(pid, provision("permit", purpose=())))
        hook = "https://other.example.se/hook"
        sub = {"resourceType": "Subscription", "status": "requested", "reason": "red team",
               "criteria": "https://samverkan.example.se/fhir/SubscriptionTopic/task-created",
               "channel": {"type": "rest-hook", "endpoint": hook, "payload": "application/fhir+json",
                           "_payload": {"extension": [{"url": "http://hl7.org/fhir/uv/subscriptions-backport/"
                                                       "StructureDefinition/backport-payload-content",
                                                       "valueCode": "full-resource"}]}}}
        assert (await w.call(OTHER, "POST", "Subscription", json=sub)).status_code == 201
        await receiver.wait(lambda: receiver.at(hook, "handshake"))
        await w.make(REGION, task(f"Patient/{pid}", description="REGIONENS-NYA"))
        kommun_task = await w.make(KOMMUN, task(f"Patient/{pid}", description="KOMMUNENS"))
        await receiver.wait(lambda: any(r.numbers for r in receiver.at(hook, "event-notification")))
        sent = receiver.at(hook, "event-notification")
        assert [n for r in sent for n in r.numbers] == [1]
        assert kommun_task["id"] in sent[0].body.decode() and "REGIONENS-NYA" not in sent[0].body.decode()


# =========================================================================================
# 5. A protected person is not found by where they live — folkbokföringskommun included.
# =========================================================================================
@pytest.mark.parametrize("query", ["folkbokforingskommun=1380", f"folkbokforingskommun={KOMMUNKOD}|1380",
                                   "folkbokforingskommun=1380&_summary=count", "address-city=Halmstad",
                                   "folkbokforingskommun:missing=false", "_sort=folkbokforingskommun"])
async def test_a_protected_person_is_not_found_by_folkbokforingskommun(protected, query):
    w = protected
    r = await w.get(KOMMUN, f"Patient?{query}")
    assert r.status_code in (200, 400), r.text
    if r.status_code == 200:
        assert w.ids["protected"] not in r.text and r.json().get("total", 0) == 0, r.text
    mine = await w.get(REGION, f"Patient?{query}")
    assert mine.status_code != 200 or "_sort" in query or mine.json()["total"] >= 1


# =========================================================================================
# 9. One person, several Patient resources: linked by the person, without an existence signal.
# =========================================================================================
async def test_two_organisations_that_each_registered_the_person_share_one_plan(world):
    w = world
    pid = w.ids["pid"]
    before = await w.call(KOMMUN, "POST", "Patient", json=patient(TEST_PNR, family="Tolvansson"),
                          headers={"If-None-Exist": f"identifier={PNR_SYSTEM}|{TEST_PNR}"})
    never = await w.call(KOMMUN, "POST", "Patient", json=patient("199001012385", family="Annan"),
                         headers={"If-None-Exist": f"identifier={PNR_SYSTEM}|199001012385"})
    assert before.status_code == never.status_code == 201  # the region's Patient is not betrayed
    kpid = before.json()["id"]
    ktask = await w.make(KOMMUN, task(f"Patient/{kpid}", description="hemtjänst"))
    await w.share()  # the region's team and consent, about its own Patient
    # KOMMUN sees the region's data about the person; the region sees nothing of KOMMUN's yet.
    assert (await w.get(KOMMUN, f"Task/{w.ids['task']}")).status_code == 200
    assert (await w.get(REGION, f"Task/{ktask['id']}")).status_code == 404
    # KOMMUN confirms the region's team and consent: its data about the person opens to the region.
    team, cons = w.ids["careteam"], w.ids["consent"]
    both = provision("deny", purpose=(), nested=[provision("permit", w.ref(KOMMUN), w.ref(REGION))])
    r = await w.update(REGION, {**await w.current("Consent", cons), "provision": both,
                                "organization": [w.ref(REGION), w.ref(KOMMUN)]})
    assert r.status_code == 200, r.text
    r = await w.call(KOMMUN, "POST", "Provenance", json=confirmation(f"Consent/{cons}/_history/2",
                                                                     f"CareTeam/{team}/_history/1"))
    assert r.status_code == 201, r.text
    assert (await w.get(REGION, f"Task/{ktask['id']}")).status_code == 200
    assert (await w.get(REGION, f"Patient/{kpid}")).status_code == 200
    # The shared plan points at both: KOMMUN adds its own Task to the region's CarePlan.
    cp = (await w.get(KOMMUN, f"CarePlan/{w.ids['careplan']}")).json()
    r = await w.update(KOMMUN, {**cp, "activity": [{"reference": {"reference": f"Task/{ktask['id']}"}}]})
    assert r.status_code == 200, r.text
    plan = await w.get(REGION, f"CarePlan?_id={w.ids['careplan']}&_include=CarePlan:activity-reference")
    assert f"Task/{ktask['id']}" in entry_keys(plan)
    # OTHER still sees nothing of either.
    for path in (f"Task/{ktask['id']}", f"Patient/{kpid}", f"Task/{w.ids['task']}"):
        assert (await w.get(OTHER, path)).status_code == 404


async def test_a_corrected_personnummer_moves_what_is_about_the_patient_to_the_new_person(shared):
    w = shared
    current = await w.current("Patient", w.ids["pid2"])  # the second person: KOMMUN has no grant for them
    assert (await w.get(KOMMUN, f"Task/{w.ids['task3']}")).status_code == 404
    await w.update(REGION, {**current, "identifier": [{"system": PNR_SYSTEM, "value": TEST_PNR}]})  # the same person
    assert (await w.get(KOMMUN, f"Task/{w.ids['task3']}")).status_code == 200
    await w.update(REGION, {**await w.current("Patient", w.ids["pid2"]), "identifier": current["identifier"]})
    assert (await w.get(KOMMUN, f"Task/{w.ids['task3']}")).status_code == 404
