"""The region-fhir mapping: a region EHR's R4 (OID systems, its own ids, local ward and task codes)
through ``$ingest?mapping=region-fhir`` into our profiles, through the ConceptMaps.

Golden tests compare what is stored with the expected FHIR, element by element; then unmapped
codes, repeats, lost updates, the access rule (the mapping writes as the sending client) and the
errors a region gets back. The input is ``fixtures/region-fhir/admission-transaction.json``.
"""
from __future__ import annotations

import copy
import json
import random
from dataclasses import replace
from pathlib import Path

import pytest

from conftest import FHIR, FHIR_JSON, TEST_ORG, assert_outcome, get_token, patient, running_gateway, search
from gateway.mapping import ingest as ingest_module

FIXTURE = json.loads((Path(__file__).parent.parent / "fixtures/region-fhir/admission-transaction.json")
                     .read_text(encoding="utf-8"))
INGEST = f"{FHIR}/$ingest?mapping=region-fhir"
SOURCE = f"urn:samverkan:mapping:region-fhir:{TEST_ORG}"
HSA = "urn:oid:1.2.752.29.4.19"
PNR = "http://electronichealth.se/identifier/personnummer"
WARD = "https://region-halland.example/fhir/CodeSystem/vardenhet"
LOCAL_ACTIVITY = "https://region-halland.example/fhir/CodeSystem/aktivitet"
ACTIVITY = "https://samverkan.example.se/fhir/CodeSystem/samverkan-activity"
SD = "https://samverkan.example.se/fhir/StructureDefinition/"
OTHER_ORG = "SE2120001355-KOMMUN"


def message(*, without_identifier: bool = False) -> dict:
    body = copy.deepcopy(FIXTURE)
    if without_identifier:
        del body["identifier"]
    return body


def entry(body: dict, rtype: str) -> dict:
    return next(e["resource"] for e in body["entry"] if e["resource"]["resourceType"] == rtype)


async def ingest(client, body: dict | bytes, content_type: str = "application/fhir+json"):
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await client.post(INGEST, content=content, headers={"Content-Type": content_type})


async def ingested(client, body: dict) -> dict:
    r = await ingest(client, body)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/fhir+json")
    reply = r.json()
    assert reply["resourceType"] == "Bundle" and reply["type"] == "transaction-response"
    return reply


async def stored(client, rtype: str) -> list[dict]:
    """What the mapping keeps for the sending organisation."""
    return [e["resource"] for e in (await search(client, f"{rtype}?_source={SOURCE}")).get("entry", [])]


def without_server_meta(resource: dict) -> dict:
    meta = {k: v for k, v in resource["meta"].items() if k not in ("versionId", "lastUpdated")}
    return {k: v for k, v in {**resource, "meta": meta}.items() if k != "id"}


def sender_id(rtype: str, value: str) -> dict:
    return {"system": f"urn:samverkan:region-fhir:{TEST_ORG}:{rtype}", "value": value}


def warnings(reply: dict, index: int) -> list[dict]:
    outcome = reply["entry"][index]["response"].get("outcome") or {"issue": []}
    return [i for i in outcome["issue"] if i["severity"] == "warning"]


# -- golden: input resource → stored FHIR --------------------------------------------------------
async def test_patient_with_an_oid_personnummer_is_stored_in_the_base_system_and_claims_se_patient(client):
    await ingested(client, message())
    [stored_patient] = await stored(client, "Patient")
    assert without_server_meta(stored_patient) == {
        "resourceType": "Patient",
        "meta": {"source": SOURCE, "profile": [SD + "se-patient"]},  # the region's own profile claim is dropped
        "identifier": [{"system": PNR, "value": "191212121212"},  # urn:oid:1.2.752.129.2.1.3.1, hyphen removed
                       {"system": "urn:oid:1.2.752.9999.1.2", "value": "P-000123"},  # local OID systems stay
                       sender_id("Patient", "pat-1")],  # the region's id, so later messages may refer to it
        "name": [{"use": "official", "family": "Tolvansson", "given": ["Tolvan"]}],
        "gender": "male", "birthDate": "1912-12-12",
        "address": [entry(FIXTURE, "Patient")["address"][0]],
    }


async def test_encounter_ward_codes_become_hsa_id_references_and_an_inpatient_stay_claims_lusen_encounter(client):
    await ingested(client, message())
    [stored_patient] = await stored(client, "Patient")
    [stay] = await stored(client, "Encounter")
    sent = entry(FIXTURE, "Encounter")
    assert without_server_meta(stay) == {
        "resourceType": "Encounter",
        "meta": {"source": SOURCE, "profile": [SD + "lusen-encounter"]},
        "identifier": [sent["identifier"][0], sender_id("Encounter", "enc-77")],
        "status": "in-progress", "class": sent["class"], "period": sent["period"], "extension": sent["extension"],
        "subject": {"reference": f"Patient/{stored_patient['id']}"},  # Patient/pat-1 → ours
        "location": [{"location": {"identifier": {"system": HSA, "value": "SE2321000115-EXMED1"},  # ward MED1
                                   "display": "Medicin 1"},  # the region's display is kept
                      "status": "active", "period": {"start": "2024-05-02T14:20:00+02:00"}}],
        "serviceProvider": {"identifier": {"system": HSA, "value": "SE2321000115-EXHSH"},  # ward HSH
                            "display": "Hallands sjukhus Halmstad (exempel)"},  # none sent: the map's
    }


async def test_task_local_code_becomes_our_activity_code_with_the_original_kept_beside_it(client):
    await ingested(client, message())
    [stored_patient], [stay], [task] = (await stored(client, "Patient"), await stored(client, "Encounter"),
                                        await stored(client, "Task"))
    sent = entry(FIXTURE, "Task")
    assert without_server_meta(task) == {
        "resourceType": "Task",
        "meta": {"source": SOURCE, "profile": [SD + "samverkan-task"]},
        "identifier": [sent["identifier"][0], sender_id("Task", "task-5")],
        "status": "requested", "intent": "order", "authoredOn": sent["authoredOn"], "restriction": sent["restriction"],
        "code": {"coding": [{"system": ACTIVITY, "code": "kallelse-sip", "display": "Kallelse till SIP"},
                            {"system": LOCAL_ACTIVITY, "code": "SIP-KALL", "display": "Kallelse SIP"}]},
        "for": {"reference": f"Patient/{stored_patient['id']}"},  # an absolute reference at the region's base
        "focus": {"reference": f"Encounter/{stay['id']}"},  # a urn:uuid fullUrl
        "requester": {"identifier": {"system": HSA, "value": "SE2321000115-EXMED1"},
                      "display": "Medicinavdelning 1 HSH (exempel)"},
        "owner": {"identifier": {"system": HSA, "value": "SE2120001355-EXVC1"},  # HSA OID alias normalised
                  "display": "Vårdcentralen Exempel, Halmstad"},
    }


async def test_careplan_activity_codes_become_ours_and_its_references_point_at_our_resources(client):
    body = message()
    plan = {"resourceType": "CarePlan", "id": "vp-9", "status": "active", "intent": "plan",
            "identifier": [{"system": "urn:oid:1.2.752.9999.1.5", "value": "VP-9"}],
            "subject": {"reference": "Patient/pat-1"},
            "author": {"identifier": {"system": WARD, "value": "GER"}},
            "activity": [{"reference": {"reference": "Task/task-5"}},
                         {"detail": {"status": "scheduled", "code": {"coding": [
                             {"system": LOCAL_ACTIVITY, "code": "SIP", "display": "SIP-möte"}]}}}]}
    body["entry"].append({"fullUrl": "urn:uuid:9b0c7d1e-0000-4000-8000-000000000009", "resource": plan})
    reply = await ingested(client, body)
    [stored_patient], [task], [stored_plan] = (await stored(client, "Patient"), await stored(client, "Task"),
                                               await stored(client, "CarePlan"))
    assert without_server_meta(stored_plan) == {
        "resourceType": "CarePlan", "meta": {"source": SOURCE},  # no one profile: it depends on the plan's kind
        "identifier": [plan["identifier"][0], sender_id("CarePlan", "vp-9")],
        "status": "active", "intent": "plan", "subject": {"reference": f"Patient/{stored_patient['id']}"},
        "author": {"identifier": {"system": HSA, "value": "SE2321000115-EXGER1"}, "display": "Geriatriken HSH (exempel)"},
        "activity": [{"reference": {"reference": f"Task/{task['id']}"}},
                     {"detail": {"status": "scheduled", "code": {"coding": [
                         {"system": ACTIVITY, "code": "sip-mote", "display": "SIP-möte"},
                         {"system": LOCAL_ACTIVITY, "code": "SIP", "display": "SIP-möte"}]}}}],
    }
    assert reply["entry"][3]["response"]["location"] == f"CarePlan/{stored_plan['id']}/_history/1"


async def test_the_reply_is_a_transaction_response_with_our_locations_in_the_order_of_the_message(client):
    reply = await ingested(client, message())
    ours = [f"{rtype}/{(await stored(client, rtype))[0]['id']}/_history/1" for rtype in ("Patient", "Encounter", "Task")]
    assert [e["response"] for e in reply["entry"]] == [
        {"status": "201 Created", "location": location, "etag": 'W/"1"'} for location in ours]


async def test_reply_entries_follow_the_message_order_whatever_order_the_gateway_writes_in(client):
    body = message()
    body["entry"].reverse()  # Task, Encounter, Patient: the gateway writes the Patient first
    reply = await ingested(client, body)
    assert [e["response"]["location"].split("/")[0] for e in reply["entry"]] == ["Task", "Encounter", "Patient"]


async def test_single_resources_refer_to_what_the_same_organisation_sent_before_by_its_own_id(client):
    await ingested(client, entry(FIXTURE, "Patient"))
    task = copy.deepcopy(entry(FIXTURE, "Task"))
    del task["focus"]  # its Encounter was never sent
    task["for"] = {"reference": "Patient/pat-1"}
    reply = await ingested(client, task)
    [stored_patient], [stored_task] = await stored(client, "Patient"), await stored(client, "Task")
    assert stored_task["for"] == {"reference": f"Patient/{stored_patient['id']}"}
    assert reply["entry"][0]["response"]["location"] == f"Task/{stored_task['id']}/_history/1"


async def test_a_collection_refers_to_its_patient_logically_by_personnummer(client):
    body = message()
    body["type"] = "collection"
    for e in body["entry"]:
        del e["request"]
    entry(body, "Task")["for"] = {"identifier": {"system": "urn:oid:1.2.752.129.2.1.3.1", "value": "191212121212"}}
    await ingested(client, body)
    [stored_patient], [task] = await stored(client, "Patient"), await stored(client, "Task")
    assert task["for"] == {"reference": f"Patient/{stored_patient['id']}"}


async def test_security_labels_the_region_sends_are_kept(client):
    body = message()
    labels = [{"system": "http://hl7.se/fhir/ig/base/CodeSystem/SecurityLabel", "code": "sekretessmarkering"},
              {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]
    entry(body, "Patient")["meta"]["security"] = labels
    await ingested(client, body)
    assert (await stored(client, "Patient"))[0]["meta"]["security"] == labels
    body = message(without_identifier=True)  # a later message without labels does not lift the protection
    entry(body, "Patient")["name"][0]["given"] = ["Tolvan", "Tolv"]
    await ingested(client, body)
    [again] = await stored(client, "Patient")
    assert again["meta"]["security"] == labels and again["meta"]["versionId"] == "2"


# -- codes without a mapping: kept as sent, and said so -------------------------------------------
async def test_a_ward_the_map_says_is_unmatched_is_kept_as_sent_with_a_warning_naming_the_element(client):
    body = message()
    entry(body, "Encounter")["location"][0]["location"] = {"identifier": {"system": WARD, "value": "KIR4"}}
    reply = await ingested(client, body)
    [stay] = await stored(client, "Encounter")
    assert stay["location"][0]["location"] == {"identifier": {"system": WARD, "value": "KIR4"}}
    [warning] = warnings(reply, 1)
    assert warning["code"] == "code-invalid" and warning["expression"] == ["Encounter.location[0].location"]
    assert "KIR4" in warning["diagnostics"] and "stängdes" in warning["diagnostics"]  # the map's reason
    assert not warnings(reply, 0) and not warnings(reply, 2)


async def test_a_ward_code_missing_from_the_map_is_kept_as_sent_with_a_warning(client):
    body = message()
    entry(body, "Task")["owner"] = {"identifier": {"system": WARD, "value": "NY-AVD"}}
    reply = await ingested(client, body)
    assert (await stored(client, "Task"))[0]["owner"] == {"identifier": {"system": WARD, "value": "NY-AVD"}}
    [warning] = warnings(reply, 2)
    assert warning["expression"] == ["Task.owner"] and "not mapped" in warning["diagnostics"]


async def test_a_task_code_without_counterpart_is_kept_without_our_profile_and_warned(client):
    body = message()
    local = {"system": LOCAL_ACTIVITY, "code": "ADM-BREV", "display": "Administrativt brev"}
    entry(body, "Task")["code"] = {"coding": [local]}
    reply = await ingested(client, body)
    [task] = await stored(client, "Task")
    assert task["code"] == {"coding": [local]} and "profile" not in task["meta"]
    [warning] = warnings(reply, 2)
    assert warning["expression"] == ["Task.code"] and "ADM-BREV" in warning["diagnostics"]


async def test_a_task_code_in_a_system_no_map_knows_is_warned(client):
    body = message()
    entry(body, "Task")["code"] = {"coding": [{"system": "http://snomed.info/sct", "code": "183444007"}]}
    reply = await ingested(client, body)
    [warning] = warnings(reply, 2)
    assert "No ConceptMap" in warning["diagnostics"] and "183444007" in warning["diagnostics"]


async def test_where_the_operator_requires_samverkan_task_an_unmapped_task_code_refuses_the_whole_message(
        settings):
    required = replace(settings, required_profiles=f"Task={SD}samverkan-task")
    async with running_gateway(required) as client:
        body = message()
        entry(body, "Task")["code"] = {"coding": [{"system": LOCAL_ACTIVITY, "code": "ADM-BREV"}]}
        assert_outcome(await ingest(client, body), 422, "Task.code")
        assert await stored(client, "Patient") == []  # all or nothing
        assert (await ingest(client, message())).status_code == 200  # a mapped code meets the profile


# -- repeats and changes ---------------------------------------------------------------------------
async def test_a_repeat_of_a_message_with_an_identifier_gets_the_same_reply_and_changes_nothing(client):
    first = await ingest(client, message())
    again = await ingest(client, message())
    assert again.status_code == 200 and again.content == first.content
    for rtype in ("Patient", "Encounter", "Task"):
        assert [r["meta"]["versionId"] for r in await stored(client, rtype)] == ["1"]


async def test_a_repeat_without_an_identifier_changes_nothing_and_names_the_same_versions(client):
    first = await ingested(client, message(without_identifier=True))
    again = await ingested(client, message(without_identifier=True))
    assert [e["response"]["location"] for e in again["entry"]] == [e["response"]["location"] for e in first["entry"]]
    assert {e["response"]["status"] for e in again["entry"]} == {"200 OK"}
    assert all("unchanged" in e["response"]["outcome"]["issue"][0]["diagnostics"] for e in again["entry"])
    for rtype in ("Patient", "Encounter", "Task"):
        assert [r["meta"]["versionId"] for r in await stored(client, rtype)] == ["1"]


async def test_a_changed_message_updates_what_it_states_and_keeps_what_it_leaves_out(client):
    await ingested(client, message(without_identifier=True))
    [task] = await stored(client, "Task")
    noted = {**task, "note": [{"text": "Ring anhörig först"}]}  # added at the gateway by the region itself
    assert (await client.put(f"{FHIR}/Task/{task['id']}", json=noted, headers=FHIR_JSON)).status_code == 200
    body = message(without_identifier=True)
    entry(body, "Encounter")["location"][0]["location"] = {"identifier": {"system": WARD, "value": "GER"}}
    entry(body, "Task")["description"] = "Kalla till SIP"
    reply = await ingested(client, body)
    assert [e["response"]["status"] for e in reply["entry"]] == ["200 OK", "200 OK", "200 OK"]
    [stay], [task] = await stored(client, "Encounter"), await stored(client, "Task")
    assert stay["meta"]["versionId"] == "2" and stay["location"][0]["location"]["identifier"]["value"] == \
        "SE2321000115-EXGER1"
    assert task["meta"]["versionId"] == "3" and task["description"] == "Kalla till SIP"
    assert task["note"] == [{"text": "Ring anhörig först"}]  # not in the message: kept
    assert reply["entry"][2]["response"]["location"] == f"Task/{task['id']}/_history/3"


async def test_a_corrected_personnummer_updates_the_same_patient(client):
    await ingested(client, entry(FIXTURE, "Patient"))
    corrected = copy.deepcopy(entry(FIXTURE, "Patient"))
    corrected["identifier"][0]["value"] = "201212121212"  # found by the region's own number for it
    reply = await ingested(client, corrected)
    [stored_patient] = await stored(client, "Patient")
    assert stored_patient["identifier"][0] == {"system": PNR, "value": "201212121212"}
    assert reply["entry"][0]["response"]["location"] == f"Patient/{stored_patient['id']}/_history/2"


async def test_no_update_is_lost_when_the_resource_changes_between_the_read_and_the_write(client, monkeypatch):
    await ingested(client, message(without_identifier=True))
    [task] = await stored(client, "Task")
    core = client.app.state.fhir.core
    search = ingest_module._Lookup.search
    raced = []

    async def search_then_race(self, rtype, query):
        found = await search(self, rtype, query)
        if rtype == "Task" and not raced:  # another writer changes the Task after the mapping read it
            raced.append(True)
            await core.update("Task", task["id"], {**found[0], "note": [{"text": "samtidig ändring"}]},
                              ctx=self.ctx)
        return found

    monkeypatch.setattr(ingest_module._Lookup, "search", search_then_race)
    body = message(without_identifier=True)
    entry(body, "Task")["description"] = "Kalla till SIP"
    await ingested(client, body)
    [task] = await stored(client, "Task")
    assert raced and task["meta"]["versionId"] == "3"  # 412 on the stale ifMatch, translated again
    assert task["note"] == [{"text": "samtidig ändring"}] and task["description"] == "Kalla till SIP"


# -- the access rule: the mapping writes as the sending client --------------------------------------
async def test_another_organisations_patient_for_the_same_person_is_never_changed(client, settings):
    other = {"Authorization": f"Bearer {await get_token(client, settings.db_path, organization=OTHER_ORG)}"}
    r = await client.post(f"{FHIR}/Patient", json=patient(family="Kommunens"), headers={**FHIR_JSON, **other})
    theirs = r.json()
    await ingested(client, message())
    [ours] = await stored(client, "Patient")
    assert ours["id"] != theirs["id"]
    r = await client.get(f"{FHIR}/Patient/{theirs['id']}", headers=other)
    assert r.json()["meta"]["versionId"] == "1" and r.json()["name"][0]["family"] == "Kommunens"


async def test_a_reference_to_a_resource_the_sender_never_sent_is_refused(client, settings):
    other = {"Authorization": f"Bearer {await get_token(client, settings.db_path, organization=OTHER_ORG)}"}
    theirs = (await client.post(f"{FHIR}/Patient", json=patient(), headers={**FHIR_JSON, **other})).json()
    task = copy.deepcopy(entry(FIXTURE, "Task"))
    del task["focus"]
    task["for"] = {"reference": f"Patient/{theirs['id']}"}
    assert_outcome(await ingest(client, task), 422, "Task.for", f"Patient/{theirs['id']}")
    assert await stored(client, "Task") == []


async def test_a_sender_without_write_scopes_is_refused_and_nothing_is_written(client, settings):
    token = await get_token(client, settings.db_path, scope="system/*.rs")
    r = await client.post(INGEST, content=json.dumps(message()).encode(),
                          headers={"Content-Type": "application/fhir+json", "Authorization": f"Bearer {token}"})
    assert_outcome(r, 403)
    assert await stored(client, "Patient") == []


# -- what the region gets back for what cannot be taken -------------------------------------------
@pytest.mark.parametrize("change, status, words", [
    (lambda b: b"{not json", 400, ("JSON",)),
    (lambda b: {**b, "type": "searchset"}, 400, ("searchset",)),
    (lambda b: b'{"resourceType": "Patient", "extension": ' + b"[" * 500 + b"]" * 500 + b"}", 400, ("levels deep",)),
    (lambda b: {**b, "entry": b["entry"] + [{"resource": {"resourceType": "Observation", "status": "final"}}]},
     422, ("Observation", "Bundle.entry[3]")),
    (lambda b: {**b, "entry": [*b["entry"][:2], {**b["entry"][2], "request": {"method": "DELETE", "url": "Task/t"}}]},
     422, ("DELETE",)),
    (lambda b: {**b, "entry": [b["entry"][0], copy.deepcopy(b["entry"][0])]}, 422, ("same Patient",)),
])
async def test_a_message_that_cannot_be_taken_is_an_operation_outcome_saying_what_to_fix(client, change, status,
                                                                                        words):
    body = change(message())
    assert_outcome(await ingest(client, body), status, *words)
    assert await stored(client, "Patient") == []


async def test_a_bad_personnummer_is_422_naming_the_element_in_the_message(client):
    body = message()
    entry(body, "Patient")["identifier"][0]["value"] = "191212121213"
    outcome = assert_outcome(await ingest(client, body), 422, "check digit")
    assert outcome["issue"][0]["expression"] == ["Bundle.entry[0].resource.identifier[0].value"]


async def test_a_resource_with_neither_identifier_nor_id_is_refused(client):
    task = copy.deepcopy(entry(FIXTURE, "Task"))
    for key in ("id", "identifier", "focus"):
        del task[key]
    task["for"] = {"identifier": {"system": PNR, "value": "191212121212"}}
    await ingested(client, entry(FIXTURE, "Patient"))
    assert_outcome(await ingest(client, task), 422, "identifier")


async def test_a_message_in_another_media_type_is_415(client):
    r = await ingest(client, message(), content_type="application/json")
    assert_outcome(r, 415, "application/fhir+json")


async def test_region_fhir_is_listed_under_ingest_in_the_capability_statement(client):
    capability = (await client.get(f"{FHIR}/metadata")).json()
    ingest_op = next(op for op in capability["rest"][0]["operation"] if op["name"] == "ingest")
    assert "region-fhir 1.0.0 (application/fhir+json)" in ingest_op["documentation"]


async def test_an_hl7_sender_asking_for_its_own_reply_format_is_not_refused_406(client):
    """$ingest answers in the source's format: Accept is the mapping's business, not FHIR JSON's."""
    r = await client.post(f"{FHIR}/$ingest?mapping=hl7v2-adt", content=b"MSH|^~\\&|X|Y\rPID|1",
                          headers={"Content-Type": "x-application/hl7-v2+er7", "Accept": "x-application/hl7-v2+er7"})
    assert r.status_code == 200 and r.content.startswith(b"MSH")


# No JSON numbers or booleans: where FHIR wants a string (a dateTime) the core itself answers 500 today
# (test_a_number_where_a_date_belongs_is_a_4xx below).
JUNK = [None, "", [], {}, "x", [{}], [None], {"reference": "Patient/nope"}, {"identifier": {}},
        {"identifier": {"system": WARD, "value": 7}}, "Patient/pat-1", {"coding": [{}]}, {"coding": {}},
        [{"system": "urn:oid:1.2.752.129.2.1.3.1", "value": "1"}], {"resourceType": "Task"}]


def _value_paths(node, path=()):
    yield path
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        yield from _value_paths(child, (*path, key))


async def test_mangled_messages_never_get_a_server_error_and_every_error_is_an_operation_outcome(client):
    """Seeded mutations of the fixture (any element replaced by junk): a 2xx reply or an
    OperationOutcome with a 4xx, never a 5xx."""
    rng = random.Random(14)
    paths = [p for p in _value_paths(FIXTURE) if p]
    for _ in range(150):
        body = message(without_identifier=rng.random() < 0.5)
        for _ in range(rng.randint(1, 3)):
            *parent, last = rng.choice(paths)
            node = body
            try:
                for key in parent:
                    node = node[key]
                node[last] = copy.deepcopy(rng.choice(JUNK))
            except (KeyError, IndexError, TypeError):  # an earlier mutation removed the way there
                continue
        r = await ingest(client, body)
        assert r.status_code < 500, (r.status_code, r.text)
        kind = r.json()["resourceType"]
        assert kind == ("Bundle" if r.status_code == 200 else "OperationOutcome"), r.text


async def test_a_number_where_a_date_belongs_is_a_4xx(client):
    body = message()
    entry(body, "Encounter")["period"]["start"] = -1
    assert (await ingest(client, body)).status_code == 422

