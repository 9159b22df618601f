"""search (GET and POST _search): every parameter type the issue names, date prefixes,
modifiers, paging that stays consistent while data changes, sorting, _include/_revinclude
(incl. :iterate), _summary=count, _total and _elements."""
from __future__ import annotations

from types import SimpleNamespace
from urllib.parse import quote

import pytest

from conftest import (
    FHIR, FHIR_JSON, FORM, HSA_SYSTEM, PNR_SYSTEM, TEST_PNR, TEST_PNR_2, TEST_PNR_3, assert_outcome, careplan, careteam, coding,
    create, ids, link, local, ordered_ids, organization, patient, put, search, search_ids, task, tick, typed_ids,
)

SCT = "http://snomed.info/sct"
INSATS = "urn:samverkan:insats"
TASK_ID = "urn:samverkan:task"


@pytest.fixture
async def plan(client):
    """A shared care plan: patient, region and municipality, care team, plan, tasks.
    Writes are spaced so every resource has its own lastUpdated millisecond."""
    async def make(resource):
        stored = await create(client, resource)
        await tick()
        return stored

    p1 = await make(patient(TEST_PNR, family="Åberg", given="Tolvan"))
    p2 = await make(patient(TEST_PNR_2, family="Abrahamsson", given="Tolva"))
    region = await make(organization("Region Västerbotten", "SE2321000222-1000"))
    kommun = await make(organization("Umeå kommun", "SE2120002627-2000"))
    prac = await make({"resourceType": "Practitioner", "name": [{"family": "Läkare"}]})
    enc = await make({"resourceType": "Encounter", "status": "finished",
                      "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                      "subject": {"reference": f"Patient/{p1['id']}"}})
    ct = await make(careteam(f"Patient/{p1['id']}", [f"Practitioner/{prac['id']}", f"Organization/{region['id']}"],
                             managingOrganization=[{"reference": f"Organization/{region['id']}"}]))
    # the municipality takes part on behalf of itself (custom participant-organization parameter)
    ct = (await put(client, {**ct, "participant": ct["participant"] + [
        {"member": {"reference": f"Practitioner/{prac['id']}"},
         "onBehalfOf": {"reference": f"Organization/{kommun['id']}"}}]})).json()
    cp1 = await make(careplan(f"Patient/{p1['id']}", careTeam=[{"reference": f"CareTeam/{ct['id']}"}],
                              category=[coding(SCT, "736271009")],
                              period={"start": "2024-01-01", "end": "2024-06-30"},
                              author={"reference": f"Organization/{region['id']}"},
                              encounter={"reference": f"Encounter/{enc['id']}"}))
    cp2 = await make(careplan(f"Patient/{p2['id']}", status="draft", category=[coding(SCT, "735985000")]))
    t1 = await make(task(f"Patient/{p1['id']}", status="requested",
                         identifier=[{"system": TASK_ID, "value": "T-1"}],
                         basedOn=[{"reference": f"CarePlan/{cp1['id']}"}],
                         focus={"reference": f"CarePlan/{cp1['id']}"},
                         owner={"reference": f"Organization/{kommun['id']}"},
                         requester={"reference": f"Organization/{region['id']}"},
                         encounter={"reference": f"Encounter/{enc['id']}"},
                         code=coding(INSATS, "hemtjanst"),
                         authoredOn="2024-03-05T10:00:00Z",
                         executionPeriod={"start": "2024-03-01"},
                         restriction={"period": {"end": "2024-03-31"},
                                      "recipient": [{"reference": f"Organization/{kommun['id']}"}]}))
    t2 = await make(task(f"Patient/{p1['id']}", status="completed",
                         partOf=[{"reference": f"Task/{t1['id']}"}],
                         owner={"reference": f"Organization/{region['id']}"},
                         code=coding(INSATS, "hemsjukvard"),
                         authoredOn="2024-04-01T09:00:00Z",
                         executionPeriod={"start": "2024-04-01", "end": "2024-04-15"}))
    t3 = await make(task(f"Patient/{p2['id']}", status="in-progress",
                         authoredOn="2024-05-20T08:00:00+02:00"))  # 06:00 UTC
    t4 = await make(task("Group/g1", status="requested"))  # about a group, not a patient
    return SimpleNamespace(**{k: v["id"] for k, v in locals().items() if isinstance(v, dict) and "id" in v},
                           resources={k: v for k, v in locals().items() if isinstance(v, dict) and "id" in v})


# -- basics -----------------------------------------------------------------------------
async def test_search_without_parameters_returns_every_current_resource_of_the_type(client, plan):
    bundle = await search(client, "Task")
    assert ids(bundle) == {plan.t1, plan.t2, plan.t3, plan.t4}
    assert bundle["total"] == 4
    assert link(bundle, "self").startswith("http://test/fhir/Task")
    for entry in bundle["entry"]:
        assert entry["fullUrl"] == f"http://test/fhir/Task/{entry['resource']['id']}"
        assert entry["search"]["mode"] == "match"


async def test_search_sees_the_current_version_only(client, plan):
    t3 = plan.resources["t3"]
    await put(client, {**t3, "status": "completed"})
    assert await search_ids(client, "Task?status=in-progress") == set()
    assert plan.t3 in await search_ids(client, "Task?status=completed")


async def test_id_matches_one_or_several_ids(client, plan):
    assert await search_ids(client, f"Task?_id={plan.t1}") == {plan.t1}
    assert await search_ids(client, f"Task?_id={plan.t1},{plan.t3}") == {plan.t1, plan.t3}
    assert await search_ids(client, "Task?_id=unknown") == set()
    assert await search_ids(client, f"Task?_id:not={plan.t1}") == {plan.t2, plan.t3, plan.t4}


async def test_last_updated_honours_every_prefix(client, plan):
    at = quote(plan.resources["t2"]["meta"]["lastUpdated"])
    assert await search_ids(client, f"Task?_lastUpdated=eq{at}") == {plan.t2}
    assert await search_ids(client, f"Task?_lastUpdated={at}") == {plan.t2}
    assert await search_ids(client, f"Task?_lastUpdated=ne{at}") == {plan.t1, plan.t3, plan.t4}
    assert await search_ids(client, f"Task?_lastUpdated=lt{at}") == {plan.t1}
    assert await search_ids(client, f"Task?_lastUpdated=le{at}") == {plan.t1, plan.t2}
    assert await search_ids(client, f"Task?_lastUpdated=gt{at}") == {plan.t3, plan.t4}
    assert await search_ids(client, f"Task?_lastUpdated=ge{at}") == {plan.t2, plan.t3, plan.t4}


async def test_id_and_last_updated_are_never_missing_because_every_resource_has_them(client, plan):
    everything = {plan.t1, plan.t2, plan.t3, plan.t4}
    for param in ("_lastUpdated", "_id"):
        r = await client.get(f"{FHIR}/Task?{param}:missing=true")
        if param == "_id" and r.status_code == 400:
            continue  # refusing _id:missing as meaningless is also fine
        assert r.status_code == 200 and ids(r.json()) == set(), param
        assert await search_ids(client, f"Task?{param}:missing=false") == everything


# -- token ------------------------------------------------------------------------------
async def test_identifier_system_and_value(client, plan):
    assert await search_ids(client, f"Task?identifier={TASK_ID}|T-1") == {plan.t1}
    assert await search_ids(client, "Task?identifier=T-1") == {plan.t1}  # any system
    assert await search_ids(client, f"Task?identifier={TASK_ID}|") == {plan.t1}  # any value in the system
    assert await search_ids(client, "Task?identifier=urn:other|T-1") == set()
    assert await search_ids(client, "Task?identifier=|T-1") == set()  # only identifiers without a system
    assert await search_ids(client, f"Patient?identifier={PNR_SYSTEM}|{TEST_PNR}") == {plan.p1}
    assert await search_ids(client, f"Organization?identifier={HSA_SYSTEM}|SE2120002627-2000") == {plan.kommun}


async def test_identifier_without_system_matches_only_by_explicit_empty_system(client):
    bare = await create(client, task(identifier=[{"value": "T-9"}]))
    await create(client, task(identifier=[{"system": TASK_ID, "value": "T-9"}]))
    assert await search_ids(client, "Task?identifier=|T-9") == {bare["id"]}
    assert len(await search_ids(client, "Task?identifier=T-9")) == 2


async def test_status_single_several_and_and(client, plan):
    assert await search_ids(client, "Task?status=requested") == {plan.t1, plan.t4}
    assert await search_ids(client, "Task?status=requested,completed") == {plan.t1, plan.t2, plan.t4}
    assert await search_ids(client, "Task?status=requested&status=completed") == set()  # repeated = AND
    assert await search_ids(client, "CarePlan?status=draft") == {plan.cp2}


async def test_token_not_modifier_excludes_the_value(client, plan):
    assert await search_ids(client, "Task?status:not=requested") == {plan.t2, plan.t3}
    assert await search_ids(client, "Task?status:not=requested,completed") == {plan.t3}


async def test_category_with_and_without_system(client, plan):
    assert await search_ids(client, f"CarePlan?category={SCT}|736271009") == {plan.cp1}
    assert await search_ids(client, "CarePlan?category=736271009") == {plan.cp1}
    assert await search_ids(client, "CarePlan?category=http://loinc.org|736271009") == set()


async def test_code(client, plan):
    assert await search_ids(client, f"Task?code={INSATS}|hemtjanst") == {plan.t1}
    assert await search_ids(client, f"Task?code={INSATS}|") == {plan.t1, plan.t2}
    obs = await create(client, {"resourceType": "Observation", "status": "final",
                                "code": coding("http://loinc.org", "29463-7"),
                                "subject": {"reference": f"Patient/{plan.p1}"}})
    assert await search_ids(client, "Observation?code=http://loinc.org|29463-7") == {obs["id"]}


async def test_token_codes_are_case_sensitive(client, plan):
    assert await search_ids(client, "Task?status=REQUESTED") == set()


# -- reference --------------------------------------------------------------------------
async def test_patient_by_relative_reference_bare_id_and_absolute_url(client, plan):
    expected = {plan.t1, plan.t2}
    assert await search_ids(client, f"Task?patient=Patient/{plan.p1}") == expected
    assert await search_ids(client, f"Task?patient={plan.p1}") == expected
    assert await search_ids(client, f"Task?patient=http://test/fhir/Patient/{plan.p1}") == expected


async def test_patient_only_matches_references_to_patients_but_subject_matches_any(client, plan):
    assert await search_ids(client, "Task?patient=g1") == set()
    assert await search_ids(client, "Task?subject=Group/g1") == {plan.t4}
    assert await search_ids(client, "Task?subject=g1") == {plan.t4}
    assert await search_ids(client, f"Task?subject:Patient={plan.p2}") == {plan.t3}
    assert await search_ids(client, f"Task?subject:Organization={plan.p2}") == set()


async def test_type_modifier_accepts_any_target_type_of_the_parameter(client, plan):
    """Group is a target of Task.subject; `subject=Group/g1` works, so `subject:Group=g1` must too,
    even though this server does not store Groups itself."""
    assert await search_ids(client, "Task?subject:Group=g1") == {plan.t4}


async def test_reference_to_another_servers_patient_is_not_a_local_patient(trusted_client, plan):
    client = trusted_client  # Patient/p-1 is created with its id by PUT
    """A municipality's Patient/p-1 is not the region's Patient/p-1: a search for the local
    patient must not return tasks about the remote one (nor the other way round)."""
    remote = await create(client, task("https://kommun.example/fhir/Patient/p-1"))
    local_p1 = await put(client, {**patient(TEST_PNR_3), "id": "p-1"})
    assert local_p1.status_code == 201
    local = await create(client, task("Patient/p-1"))
    assert await search_ids(client, "Task?patient=p-1") == {local["id"]}
    assert await search_ids(client, "Task?subject=Patient/p-1") == {local["id"]}
    assert await search_ids(client, "Task?subject=http://test/fhir/Patient/p-1") == {local["id"]}
    assert remote["id"] not in await search_ids(client, "Task?subject=https://other.example/fhir/Patient/p-1")
    assert await search_ids(client, "Task?subject=https://kommun.example/fhir/Patient/p-1") == {remote["id"]}


async def test_encounter(client, plan):
    assert await search_ids(client, f"Task?encounter=Encounter/{plan.enc}") == {plan.t1}
    assert await search_ids(client, f"CarePlan?encounter={plan.enc}") == {plan.cp1}


async def test_owner_and_requester(client, plan):
    assert await search_ids(client, f"Task?owner=Organization/{plan.kommun}") == {plan.t1}
    assert await search_ids(client, f"Task?owner={plan.region}") == {plan.t2}
    assert await search_ids(client, f"Task?requester=Organization/{plan.region}") == {plan.t1}
    assert await search_ids(client, f"Task?requester=Organization/{plan.kommun}") == set()


async def test_focus_based_on_and_part_of(client, plan):
    assert await search_ids(client, f"Task?focus=CarePlan/{plan.cp1}") == {plan.t1}
    assert await search_ids(client, f"Task?based-on=CarePlan/{plan.cp1}") == {plan.t1}
    assert await search_ids(client, f"Task?part-of=Task/{plan.t1}") == {plan.t2}
    assert await search_ids(client, f"Task?part-of={plan.t1}") == {plan.t2}


async def test_care_team_and_participant(client, plan):
    assert await search_ids(client, f"CarePlan?care-team=CareTeam/{plan.ct}") == {plan.cp1}
    assert await search_ids(client, f"CareTeam?participant=Practitioner/{plan.prac}") == {plan.ct}
    assert await search_ids(client, f"CareTeam?participant=Organization/{plan.region}") == {plan.ct}
    assert await search_ids(client, f"CareTeam?participant=Organization/{plan.kommun}") == set()
    assert await search_ids(client, f"CareTeam?patient={plan.p1}") == {plan.ct}
    assert await search_ids(client, f"CarePlan?subject=Patient/{plan.p2}") == {plan.cp2}


async def test_reference_missing_modifier(client, plan):
    assert await search_ids(client, "Task?owner:missing=true") == {plan.t3, plan.t4}
    assert await search_ids(client, "Task?owner:missing=false") == {plan.t1, plan.t2}


async def test_several_parameters_are_combined_with_and(client, plan):
    assert await search_ids(client, f"Task?patient={plan.p1}&status=completed") == {plan.t2}
    assert await search_ids(client, f"Task?patient={plan.p2}&owner:missing=false") == set()


# -- date -------------------------------------------------------------------------------
async def test_authored_on_with_every_prefix(client, plan):
    t1, t2, t3 = plan.t1, plan.t2, plan.t3
    assert await search_ids(client, "Task?authored-on=2024-03-05") == {t1}
    assert await search_ids(client, "Task?authored-on=eq2024-03") == {t1}
    assert await search_ids(client, "Task?authored-on=eq2024") == {t1, t2, t3}
    assert await search_ids(client, "Task?authored-on=ne2024-03-05") == {t2, t3}
    assert await search_ids(client, "Task?authored-on=lt2024-04-01") == {t1}
    assert await search_ids(client, "Task?authored-on=le2024-04-01") == {t1, t2}
    assert await search_ids(client, "Task?authored-on=gt2024-04-01") == {t3}
    assert await search_ids(client, "Task?authored-on=ge2024-04-01") == {t2, t3}


async def test_date_values_or_and_and(client, plan):
    assert await search_ids(client, "Task?authored-on=2024-03-05,2024-05-20") == {plan.t1, plan.t3}
    assert await search_ids(client, "Task?authored-on=ge2024-03-06&authored-on=le2024-05-01") == {plan.t2}


async def test_date_search_honours_timezones(client, plan):
    # t3 was authored 2024-05-20T08:00:00+02:00, i.e. 06:00 UTC
    assert await search_ids(client, "Task?authored-on=2024-05-20T06:00Z") == {plan.t3}
    assert await search_ids(client, "Task?authored-on=2024-05-20T08:00Z") == set()
    assert await search_ids(client, f"Task?authored-on=lt{quote('2024-05-20T07:30:00+01:00')}") >= {plan.t3}
    assert plan.t3 not in await search_ids(client, f"Task?authored-on=gt{quote('2024-05-20T08:30:00+02:00')}")


async def test_date_precision_of_the_search_value(client, plan):
    # 10:00:00Z is inside the minute 10:00 and the hour-less day, but not inside the second 10:00:01
    assert await search_ids(client, "Task?authored-on=2024-03-05T10:00Z") == {plan.t1}
    assert await search_ids(client, "Task?authored-on=2024-03-05T10:00:01Z") == set()
    assert await search_ids(client, "Task?authored-on=2024-03-05T10:00:00Z") == {plan.t1}


async def test_period_dates_and_open_ended_periods(client, plan):
    # CarePlan.period 2024-01-01..2024-06-30
    assert await search_ids(client, "CarePlan?date=eq2024") == {plan.cp1}
    assert await search_ids(client, "CarePlan?date=eq2024-03") == set()  # period not inside March
    assert await search_ids(client, "CarePlan?date=ge2024-06-01") == {plan.cp1}
    assert await search_ids(client, "CarePlan?date=gt2024-06-30") == set()
    assert await search_ids(client, "CarePlan?date=lt2024-01-01") == set()
    assert await search_ids(client, "CarePlan?date=le2024-01-01") == {plan.cp1}
    # Task.executionPeriod: t1 started 2024-03-01 and has no end, t2 ran 2024-04-01..15
    assert await search_ids(client, "Task?period=ge2030-01-01") == {plan.t1}
    assert await search_ids(client, "Task?period=lt2024-03-15") == {plan.t1}
    assert await search_ids(client, "Task?period=ge2024-04-10") == {plan.t1, plan.t2}


async def test_date_missing_modifier(client, plan):
    assert await search_ids(client, "Task?authored-on:missing=true") == {plan.t4}
    assert await search_ids(client, "Task?authored-on:missing=false") == {plan.t1, plan.t2, plan.t3}


async def test_dates_far_in_the_future_can_be_stored_and_searched(client):
    """9999-12-31 is the usual 'no end date' in Swedish source systems; it is a valid FHIR date."""
    r = await client.post(f"{FHIR}/Task", json=task(executionPeriod={"start": "2024-01-01", "end": "9999-12-31"}),
                          headers=FHIR_JSON)
    assert r.status_code == 201, r.text
    assert await search_ids(client, "Task?period=ge2999-01-01") == {r.json()["id"]}
    assert await search_ids(client, "Task?period=le9999-12-31") == {r.json()["id"]}


# -- string ------------------------------------------------------------------------------
async def test_string_default_is_case_and_accent_insensitive_prefix(client, plan):
    assert await search_ids(client, "Patient?family=aberg") == {plan.p1}
    assert await search_ids(client, "Patient?family=ÅBERG") == {plan.p1}
    assert await search_ids(client, "Patient?family=ab") == {plan.p1, plan.p2}
    assert await search_ids(client, "Patient?family=berg") == set()  # prefix, not substring
    assert await search_ids(client, "Organization?name=umea") == {plan.kommun}


async def test_string_exact_modifier_is_case_and_accent_sensitive(client, plan):
    assert await search_ids(client, "Patient?family:exact=Åberg") == {plan.p1}
    assert await search_ids(client, "Patient?family:exact=åberg") == set()
    assert await search_ids(client, "Patient?family:exact=Aberg") == set()
    assert await search_ids(client, "Patient?family:exact=Åber") == set()


async def test_string_contains_modifier(client, plan):
    assert await search_ids(client, "Patient?family:contains=BERG") == {plan.p1}


async def test_modifiers_that_do_not_apply_to_the_type_are_400(client, plan):
    assert_outcome(await client.get(f"{FHIR}/Task?status:exact=requested"), 400, "exact")
    assert_outcome(await client.get(f"{FHIR}/Task?authored-on:not=2024"), 400, "not")
    assert_outcome(await client.get(f"{FHIR}/Task?owner:exact=x"), 400, "exact")
    assert_outcome(await client.get(f"{FHIR}/Task?status:missing=maybe"), 400, "true or false")


# -- SearchParameters from profiles/ and FHIRPath ---------------------------------------
async def test_our_own_search_parameters_from_profiles_work(client, plan):
    assert await search_ids(client, "Task?deadline=le2024-03-31") == {plan.t1}
    assert await search_ids(client, "Task?deadline=gt2024-04-01") == set()
    assert await search_ids(client, f"Task?restriction-recipient=Organization/{plan.kommun}") == {plan.t1}
    assert await search_ids(client, f"CarePlan?author=Organization/{plan.region}") == {plan.cp1}
    assert await search_ids(client, f"CareTeam?managing-organization={plan.region}") == {plan.ct}
    assert await search_ids(client, f"CareTeam?participant-organization=Organization/{plan.kommun}") == {plan.ct}


async def test_search_parameter_expressions_are_evaluated_as_fhirpath(client):
    """Patient.email is Patient.telecom.where(system='email'): the same value under another
    telecom system must not match it, while telecom matches both."""
    mail = await create(client, patient(telecom=[{"system": "email", "value": "tolvan@example.se"}]))
    other = await create(client, patient(TEST_PNR_2, telecom=[{"system": "other", "value": "tolvan@example.se"}]))
    assert await search_ids(client, "Patient?email=tolvan@example.se") == {mail["id"]}
    assert await search_ids(client, "Patient?telecom=tolvan@example.se") == {mail["id"], other["id"]}
    dead = await create(client, patient(TEST_PNR_3, deceasedDateTime="2024-02-01"))
    alive = await create(client, patient("199006212386", deceasedBoolean=False))  # 19900621-2386
    assert await search_ids(client, "Patient?deceased=true") == {dead["id"]}
    assert await search_ids(client, "Patient?deceased=false") == {alive["id"]}


async def test_index_follows_updates(client, plan):
    t1 = plan.resources["t1"]
    await put(client, {**t1, "owner": {"reference": f"Organization/{plan.region}"}})
    assert await search_ids(client, f"Task?owner=Organization/{plan.kommun}") == set()
    assert await search_ids(client, f"Task?owner=Organization/{plan.region}") == {plan.t1, plan.t2}


# -- paging -----------------------------------------------------------------------------
async def _pages(client, first: dict) -> list[dict]:
    pages = [first]
    while (nxt := link(pages[-1], "next")) is not None:
        r = await client.get(local(nxt))
        assert r.status_code == 200, r.text
        pages.append(r.json())
        assert len(pages) < 50
    return pages


async def test_count_pages_through_every_match_once_with_next_and_previous_links(client):
    made = [(await create(client, task(code=coding(INSATS, "paged"))))["id"] for _ in range(7)]
    first = await search(client, f"Task?code={INSATS}|paged&_count=3&_sort=_lastUpdated")
    assert len(first["entry"]) == 3 and first["total"] == 7
    assert link(first, "previous", "prev") is None
    pages = await _pages(client, first)
    assert [len(p["entry"]) for p in pages] == [3, 3, 1]
    seen = [i for p in pages for i in ordered_ids(p)]
    assert sorted(seen) == sorted(made) and len(set(seen)) == 7
    assert all(p["total"] == 7 for p in pages)
    back = await client.get(local(link(pages[1], "previous", "prev")))
    assert ordered_ids(back.json()) == ordered_ids(first)
    assert link(pages[-1], "next") is None
    if link(pages[1], "last"):  # optional in R4; when offered they must be right
        assert ordered_ids((await client.get(local(link(pages[1], "last")))).json()) == ordered_ids(pages[-1])
    if link(pages[2], "first"):
        assert ordered_ids((await client.get(local(link(pages[2], "first")))).json()) == ordered_ids(first)


async def test_pages_stay_consistent_while_data_changes(client):
    """Between page fetches others create, update (moving resources to the top of a
    -_lastUpdated sort) and delete matching resources; the pages still show every resource
    that matched when the search ran exactly once, and nothing twice."""
    made = []
    for _ in range(6):
        made.append(await create(client, task(code=coding(INSATS, "live"))))
        await tick()
    first = await search(client, f"Task?code={INSATS}|live&_count=2&_sort=-_lastUpdated")
    assert ordered_ids(first) == [made[5]["id"], made[4]["id"]]
    # writes between page 1 and page 2
    for t in made[:2]:  # the two on the last page jump to the top of the sort order
        await tick()
        await put(client, {**t, "status": "accepted"})
    await create(client, task(code=coding(INSATS, "live")))  # a new match at the top
    await client.delete(f"{FHIR}/Task/{made[3]['id']}")  # one from page 2 goes away
    pages = await _pages(client, first)
    seen = [i for p in pages for i in ordered_ids(p)]
    assert len(seen) == len(set(seen)), f"a resource was shown twice: {seen}"
    still_there = {t["id"] for t in made} - {made[3]["id"]}
    assert still_there <= set(seen), "a resource that matched was skipped"
    assert all(p["total"] == first["total"] for p in pages)


async def test_later_pages_keep_includes(client, plan):
    first = await search(client, f"Task?patient={plan.p1}&_count=1&_sort=_lastUpdated&_include=Task:patient")
    second = (await client.get(local(link(first, "next")))).json()
    assert ids(second) == {plan.t2}
    assert typed_ids(second, "include") == {f"Patient/{plan.p1}"}


async def test_unknown_page_is_an_operation_outcome(client):
    r = await client.get(f"{FHIR}?_getpages=no-such-page&_getpagesoffset=0&_count=2")
    assert r.status_code in (404, 410)
    assert r.json()["resourceType"] == "OperationOutcome"


# -- sort -------------------------------------------------------------------------------
async def test_sort_by_last_updated_both_directions(client, plan):
    await put(client, {**plan.resources["t1"], "status": "accepted"})  # t1 is now the most recently updated
    order = [plan.t2, plan.t3, plan.t4, plan.t1]
    assert ordered_ids(await search(client, "Task?_sort=_lastUpdated")) == order
    assert ordered_ids(await search(client, "Task?_sort=-_lastUpdated")) == order[::-1]


async def test_sort_by_date_parameter_puts_missing_values_last(client, plan):
    oldest = await create(client, task(authoredOn="2023-12-24"))  # written last, authored first
    assert ordered_ids(await search(client, "Task?_sort=authored-on")) == [oldest["id"], plan.t1, plan.t2,
                                                                           plan.t3, plan.t4]
    assert ordered_ids(await search(client, "Task?_sort=-authored-on")) == [plan.t3, plan.t2, plan.t1,
                                                                            oldest["id"], plan.t4]


async def test_sort_by_date_then_paging_keeps_the_order(client, plan):
    first = await search(client, "Task?_sort=-authored-on&_count=2")
    pages = await _pages(client, first)
    assert [i for p in pages for i in ordered_ids(p)] == [plan.t3, plan.t2, plan.t1, plan.t4]


async def test_sort_by_period_date_on_care_plans(client, plan):
    later = await create(client, careplan(f"Patient/{plan.p2}", period={"start": "2025-01-01"}))
    assert ordered_ids(await search(client, "CarePlan?_sort=date")) == [plan.cp1, later["id"], plan.cp2]
    assert ordered_ids(await search(client, "CarePlan?_sort=-date"))[:2] == [later["id"], plan.cp1]


async def test_sort_by_unsortable_parameter_is_400(client, plan):
    assert_outcome(await client.get(f"{FHIR}/Task?_sort=status"), 400, "status")
    assert_outcome(await client.get(f"{FHIR}/Task?_sort=nonsense"), 400, "nonsense")


# -- _include / _revinclude -------------------------------------------------------------
async def test_include_adds_referenced_resources_marked_include_and_not_counted(client, plan):
    bundle = await search(client, f"Task?_id={plan.t1}&_include=Task:patient")
    assert ids(bundle) == {plan.t1}
    assert typed_ids(bundle, "include") == {f"Patient/{plan.p1}"}
    assert bundle["total"] == 1


async def test_include_with_target_type_and_several_includes(client, plan):
    bundle = await search(client, f"Task?_id={plan.t1}&_include=Task:owner:Organization")
    assert typed_ids(bundle, "include") == {f"Organization/{plan.kommun}"}
    bundle = await search(client, f"Task?_id={plan.t1}&_include=Task:owner:Practitioner")
    assert typed_ids(bundle, "include") == set()
    bundle = await search(client, f"Task?_id={plan.t1}&_include=Task:based-on&_include=Task:requester")
    assert typed_ids(bundle, "include") == {f"CarePlan/{plan.cp1}", f"Organization/{plan.region}"}


async def test_included_resource_appears_once_even_if_referenced_twice(client, plan):
    bundle = await search(client, f"Task?patient={plan.p1}&_include=Task:patient")
    includes = [e for e in bundle["entry"] if e["search"]["mode"] == "include"]
    assert [e["resource"]["id"] for e in includes] == [plan.p1]


async def test_revinclude_adds_resources_that_point_at_the_matches(client, plan):
    bundle = await search(client, f"Patient?_id={plan.p1}&_revinclude=Task:patient")
    assert ids(bundle) == {plan.p1}
    assert typed_ids(bundle, "include") == {f"Task/{plan.t1}", f"Task/{plan.t2}"}


async def test_include_iterate_follows_one_level_more(client, plan):
    bundle = await search(client, f"Task?_id={plan.t1}&_include=Task:based-on&_include:iterate=CarePlan:care-team")
    assert typed_ids(bundle, "include") == {f"CarePlan/{plan.cp1}", f"CareTeam/{plan.ct}"}
    without = await search(client, f"Task?_id={plan.t1}&_include=Task:based-on")
    assert typed_ids(without, "include") == {f"CarePlan/{plan.cp1}"}


async def test_revinclude_iterate_follows_one_level_more(client, plan):
    bundle = await search(client, f"Patient?_id={plan.p1}&_revinclude=CarePlan:subject"
                                  "&_revinclude:iterate=Task:based-on")
    assert typed_ids(bundle, "include") == {f"CarePlan/{plan.cp1}", f"Task/{plan.t1}"}


async def test_include_does_not_return_deleted_targets(client, plan):
    await client.delete(f"{FHIR}/Organization/{plan.kommun}")
    bundle = await search(client, f"Task?_id={plan.t1}&_include=Task:owner")
    assert typed_ids(bundle, "include") == set()


async def test_invalid_includes_are_400(client, plan):
    assert_outcome(await client.get(f"{FHIR}/Task?_include=Task:status"), 400, "status")
    assert_outcome(await client.get(f"{FHIR}/Task?_include=Task:nonsense"), 400, "nonsense")
    assert_outcome(await client.get(f"{FHIR}/Task?_include=CarePlan:subject"), 400, "iterate")
    assert_outcome(await client.get(f"{FHIR}/Task?_include=garbage"), 400)


# -- _summary, _total, _elements --------------------------------------------------------
async def test_summary_count_gives_the_total_and_no_entries(client, plan):
    bundle = await search(client, "Task?status=requested&_summary=count")
    assert bundle["total"] == 2 and "entry" not in bundle


async def test_total_none_leaves_out_the_total_and_accurate_gives_it(client, plan):
    none = await search(client, "Task?_total=none")
    assert "total" not in none and len(none["entry"]) == 4
    accurate = await search(client, "Task?_total=accurate&_count=1")
    assert accurate["total"] == 4 and len(accurate["entry"]) == 1


async def test_elements_returns_only_the_asked_elements_marked_subsetted(client, plan):
    bundle = await search(client, f"Task?_id={plan.t1}&_elements=status,owner")
    resource = bundle["entry"][0]["resource"]
    assert set(resource) == {"resourceType", "id", "meta", "status", "owner"}
    assert resource["owner"] == {"reference": f"Organization/{plan.kommun}"}
    assert any(t.get("code") == "SUBSETTED" for t in resource["meta"].get("tag", []))
    # the stored resource is untouched
    stored = (await client.get(f"{FHIR}/Task/{plan.t1}")).json()
    assert "code" in stored and not any(t.get("code") == "SUBSETTED" for t in stored["meta"].get("tag", []))


# -- POST _search, lenient handling -----------------------------------------------------
async def test_post_search_with_form_body_gives_the_same_result_as_get(client, plan):
    r = await client.post(f"{FHIR}/Task/_search", content=f"status=requested&patient=Patient/{plan.p1}",
                          headers=FORM)
    assert r.status_code == 200, r.text
    assert r.json()["type"] == "searchset"
    assert ids(r.json()) == {plan.t1}
    assert ids(r.json()) == await search_ids(client, f"Task?status=requested&patient=Patient/{plan.p1}")


async def test_post_search_combines_url_and_body_parameters(client, plan):
    r = await client.post(f"{FHIR}/Task/_search?status=completed", content=f"patient={plan.p1}", headers=FORM)
    assert r.status_code == 200 and ids(r.json()) == {plan.t2}


async def test_post_search_pages_like_get(client, plan):
    r = await client.post(f"{FHIR}/Task/_search", content="_count=2&_sort=_lastUpdated", headers=FORM)
    first = r.json()
    pages = await _pages(client, first)
    assert [i for p in pages for i in ordered_ids(p)] == [plan.t1, plan.t2, plan.t3, plan.t4]


async def test_post_search_rejects_unknown_parameters_too(client, plan):
    r = await client.post(f"{FHIR}/Task/_search", content="nonsense=1", headers=FORM)
    assert_outcome(r, 400, "nonsense")


async def test_unknown_parameter_is_ignored_under_prefer_handling_lenient(client, plan):
    assert_outcome(await client.get(f"{FHIR}/Task?nonsense=1&status=completed"), 400, "nonsense")
    r = await client.get(f"{FHIR}/Task?nonsense=1&status=completed", headers={"Prefer": "handling=lenient"})
    assert r.status_code == 200
    assert ids(r.json()) == {plan.t2}  # the known parameter still applies
    self_link = link(r.json(), "self")
    assert "nonsense" not in self_link and "status=completed" in self_link


async def test_prefer_handling_strict_rejects_unknown_parameters(client, plan):
    r = await client.get(f"{FHIR}/Task?nonsense=1", headers={"Prefer": "handling=strict"})
    assert_outcome(r, 400, "nonsense")
