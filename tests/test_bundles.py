"""transaction (all-or-nothing, urn:uuid: references, conditional entries) and batch
(independent entries) Bundles, POSTed to the FHIR base."""
from __future__ import annotations

import base64
import json

from conftest import (
    FHIR, FHIR_JSON, PNR_SYSTEM, TEST_PNR, TEST_PNR_2, TEST_PNR_3, assert_outcome, careplan, create, history, patient, put,
    search, search_ids, task, total,
)

P_URN = "urn:uuid:7b1c2e4a-0000-4000-8000-000000000001"
CP_URN = "urn:uuid:7b1c2e4a-0000-4000-8000-000000000002"
T_URN = "urn:uuid:7b1c2e4a-0000-4000-8000-000000000003"


def entry(method: str, url: str, resource: dict | None = None, full_url: str | None = None, **request) -> dict:
    e: dict = {"request": {"method": method, "url": url, **request}}
    if resource is not None:
        e["resource"] = resource
    if full_url:
        e["fullUrl"] = full_url
    return e


def bundle(btype: str, *entries: dict) -> dict:
    return {"resourceType": "Bundle", "type": btype, "entry": list(entries)}


async def post_bundle(client, b: dict):
    return await client.post(FHIR, json=b, headers=FHIR_JSON)


def location_id(response_entry: dict) -> str:
    """'Type/id/_history/n' → id."""
    return response_entry["response"]["location"].split("/")[1]


async def assert_store_empty(client) -> None:
    system = await history(client, "_history")
    assert system["total"] == 0 and not system.get("entry"), "a failed transaction left data behind"


# -- transaction: success ----------------------------------------------------------------
async def test_transaction_creates_everything_and_resolves_urn_uuid_references(client):
    # the Task comes first and points at resources created later in the same Bundle
    b = bundle("transaction",
               entry("POST", "Task", task(P_URN, basedOn=[{"reference": CP_URN}],
                                          note=[{"text": "se vårdplan"}]), T_URN),
               entry("POST", "CarePlan", careplan(P_URN), CP_URN),
               entry("POST", "Patient", patient(), P_URN))
    r = await post_bundle(client, b)
    assert r.status_code == 200, r.text
    resp = r.json()
    assert resp["resourceType"] == "Bundle" and resp["type"] == "transaction-response"
    assert [e["response"]["status"].split()[0] for e in resp["entry"]] == ["201", "201", "201"]
    assert [e["response"]["location"].split("/")[0] for e in resp["entry"]] == ["Task", "CarePlan", "Patient"]
    tid, cpid, pid = (location_id(e) for e in resp["entry"])
    assert all(e["response"]["etag"] == 'W/"1"' for e in resp["entry"])

    stored_task = (await client.get(f"{FHIR}/Task/{tid}")).json()
    assert stored_task["for"]["reference"] == f"Patient/{pid}"
    assert stored_task["basedOn"][0]["reference"] == f"CarePlan/{cpid}"
    assert (await client.get(f"{FHIR}/CarePlan/{cpid}")).json()["subject"]["reference"] == f"Patient/{pid}"
    # and the rewritten references are what the index knows
    assert await search_ids(client, f"Task?patient={pid}") == {tid}
    assert await search_ids(client, f"CarePlan?subject=Patient/{pid}") == {cpid}
    assert "urn:uuid" not in json.dumps(stored_task)


async def test_transaction_rewrites_urn_references_wherever_they_occur(client):
    deep = task(P_URN, restriction={"recipient": [{"reference": P_URN}]},
                input=[{"type": {"text": "patient"}, "valueReference": {"reference": P_URN}}])
    r = await post_bundle(client, bundle("transaction", entry("POST", "Patient", patient(), P_URN),
                                         entry("POST", "Task", deep)))
    assert r.status_code == 200, r.text
    pid, tid = (location_id(e) for e in r.json()["entry"])
    stored = (await client.get(f"{FHIR}/Task/{tid}")).json()
    assert stored["restriction"]["recipient"][0]["reference"] == f"Patient/{pid}"
    assert stored["input"][0]["valueReference"]["reference"] == f"Patient/{pid}"


async def test_transaction_response_entries_follow_request_order(trusted_client):
    client = trusted_client  # PUT Patient/fixed-id creates: trusted callers only
    existing = await create(client, patient(TEST_PNR_2))
    b = bundle("transaction",
               entry("POST", "Patient", patient()),
               entry("DELETE", f"Patient/{existing['id']}"),
               entry("PUT", "Patient/fixed-id", {**patient(TEST_PNR_3), "id": "fixed-id"}))
    r = await post_bundle(client, b)
    assert r.status_code == 200, r.text
    statuses = [e["response"]["status"].split()[0] for e in r.json()["entry"]]
    assert statuses[0] == "201" and statuses[1] in ("200", "204") and statuses[2] == "201"
    assert r.json()["entry"][2]["response"]["location"].startswith("Patient/fixed-id/_history/1")
    assert (await client.get(f"{FHIR}/Patient/{existing['id']}")).status_code == 410


async def test_transaction_update_with_current_if_match_entry_succeeds(client):
    v1 = await create(client, task())
    r = await post_bundle(client, bundle("transaction", entry("PUT", f"Task/{v1['id']}", {**v1, "status": "accepted"},
                                                              ifMatch='W/"1"')))
    assert r.status_code == 200, r.text
    assert r.json()["entry"][0]["response"]["etag"] == 'W/"2"'


async def test_transaction_patch_entry_with_binary_json_patch(client):
    v1 = await create(client, task())
    ops = [{"op": "replace", "path": "/status", "value": "accepted"}]
    binary = {"resourceType": "Binary", "contentType": "application/json-patch+json",
              "data": base64.b64encode(json.dumps(ops).encode()).decode()}
    r = await post_bundle(client, bundle("transaction", entry("PATCH", f"Task/{v1['id']}", binary)))
    assert r.status_code == 200, r.text
    assert (await client.get(f"{FHIR}/Task/{v1['id']}")).json()["status"] == "accepted"


async def test_transaction_get_entries_see_the_transactions_own_writes(client):
    b = bundle("transaction",
               entry("POST", "Patient", patient(), P_URN),
               entry("GET", f"Patient?identifier={PNR_SYSTEM}|{TEST_PNR}"))
    r = await post_bundle(client, b)
    assert r.status_code == 200, r.text
    created, found = r.json()["entry"]
    assert found["response"]["status"].startswith("200")
    assert found["resource"]["type"] == "searchset"
    assert [e["resource"]["id"] for e in found["resource"]["entry"]] == [location_id(created)]


# -- transaction: conditional entries ---------------------------------------------------
async def test_transaction_if_none_exist_reuses_the_existing_resource_and_its_id(client):
    existing = await create(client, patient())
    b = bundle("transaction",
               entry("POST", "Patient", patient(family="Dubblett"), P_URN,
                     ifNoneExist=f"identifier={PNR_SYSTEM}|{TEST_PNR}"),
               entry("POST", "Task", task(P_URN)))
    r = await post_bundle(client, b)
    assert r.status_code == 200, r.text
    p_entry, t_entry = r.json()["entry"]
    assert p_entry["response"]["status"].startswith("200")
    assert location_id(p_entry) == existing["id"]
    assert await total(client, "Patient") == 1
    assert (await client.get(f"{FHIR}/Patient/{existing['id']}")).json()["name"][0]["family"] == "Tolvansson"
    stored_task = (await client.get(f"{FHIR}/Task/{location_id(t_entry)}")).json()
    assert stored_task["for"]["reference"] == f"Patient/{existing['id']}"


async def test_transaction_if_none_exist_creates_when_nothing_matches(client):
    b = bundle("transaction", entry("POST", "Patient", patient(), P_URN,
                                    ifNoneExist=f"identifier={PNR_SYSTEM}|{TEST_PNR}"))
    r = await post_bundle(client, b)
    assert r.status_code == 200 and r.json()["entry"][0]["response"]["status"].startswith("201")
    assert await total(client, "Patient") == 1


async def test_transaction_conditional_update_entry_updates_the_match_or_creates(client):
    existing = await create(client, patient())
    b = bundle("transaction",
               entry("PUT", f"Patient?identifier={PNR_SYSTEM}|{TEST_PNR}", patient(family="Uppdaterad"), P_URN),
               entry("PUT", f"Patient?identifier={PNR_SYSTEM}|{TEST_PNR_2}", patient(TEST_PNR_2), CP_URN),
               entry("POST", "Task", task(P_URN, focus={"reference": CP_URN})))
    r = await post_bundle(client, b)
    assert r.status_code == 200, r.text
    updated, created, t = r.json()["entry"]
    assert updated["response"]["status"].startswith("200") and location_id(updated) == existing["id"]
    assert created["response"]["status"].startswith("201")
    assert (await client.get(f"{FHIR}/Patient/{existing['id']}")).json()["name"][0]["family"] == "Uppdaterad"
    stored_task = (await client.get(f"{FHIR}/Task/{location_id(t)}")).json()
    assert stored_task["for"]["reference"] == f"Patient/{existing['id']}"
    assert stored_task["focus"]["reference"] == f"Patient/{location_id(created)}"
    assert await total(client, "Patient") == 2


async def test_transaction_conditional_reference_is_resolved_to_the_match(client):
    existing = await create(client, patient())
    b = bundle("transaction", entry("POST", "Task", task(f"Patient?identifier={PNR_SYSTEM}|{TEST_PNR}")))
    r = await post_bundle(client, b)
    assert r.status_code == 200, r.text
    stored = (await client.get(f"{FHIR}/Task/{location_id(r.json()['entry'][0])}")).json()
    assert stored["for"]["reference"] == f"Patient/{existing['id']}"


# -- transaction: all or nothing --------------------------------------------------------
async def test_transaction_with_an_invalid_entry_leaves_no_data(client):
    b = bundle("transaction",
               entry("POST", "Patient", patient(), P_URN),
               entry("POST", "CarePlan", careplan(P_URN), CP_URN),
               entry("POST", "Task", {**task(P_URN), "flavour": "sweet"}))
    r = await post_bundle(client, b)
    body = assert_outcome(r, 422, "entry[2]", "Task.flavour")
    assert body["issue"]
    for rtype in ("Patient", "CarePlan", "Task"):
        assert await total(client, rtype) == 0
    await assert_store_empty(client)


async def test_transaction_with_a_stale_if_match_rolls_back_every_other_entry(client):
    p = await create(client, patient())
    t = await create(client, task(f"Patient/{p['id']}"))
    await put(client, {**t, "status": "accepted"})  # t is at version 2 now
    b = bundle("transaction",
               entry("PUT", f"Patient/{p['id']}", {**p, "name": [{"family": "Ändrad"}]}),
               entry("DELETE", f"Patient/{p['id']}-other"),
               entry("POST", "CarePlan", careplan(f"Patient/{p['id']}")),
               entry("PUT", f"Task/{t['id']}", {**t, "status": "rejected"}, ifMatch='W/"1"'))
    r = await post_bundle(client, b)
    assert_outcome(r, 412, "entry[3]")
    assert (await client.get(f"{FHIR}/Patient/{p['id']}")).json()["meta"]["versionId"] == "1"
    assert (await history(client, f"Patient/{p['id']}/_history"))["total"] == 1
    assert (await client.get(f"{FHIR}/Task/{t['id']}")).json()["status"] == "accepted"
    assert await total(client, "CarePlan") == 0


async def test_transaction_failure_also_undoes_deletes(client):
    p = await create(client, patient())
    b = bundle("transaction",
               entry("DELETE", f"Patient/{p['id']}"),
               entry("POST", "Task", {"resourceType": "Task", "intent": "order"}))  # no status: invalid
    assert_outcome(await post_bundle(client, b), 422, "Task.status")
    r = await client.get(f"{FHIR}/Patient/{p['id']}")
    assert r.status_code == 200 and r.json()["meta"]["versionId"] == "1"


async def test_transaction_with_unresolvable_conditional_reference_fails_whole(client):
    b = bundle("transaction",
               entry("POST", "Task", task(f"Patient?identifier={PNR_SYSTEM}|{TEST_PNR}")),
               entry("POST", "Organization", {"resourceType": "Organization", "name": "Vårdcentral"}))
    assert_outcome(await post_bundle(client, b), 412, "identifier")
    await assert_store_empty(client)


async def test_transaction_with_ambiguous_if_none_exist_fails_whole(client):
    await create(client, patient(TEST_PNR, family="Svensson"))
    await create(client, patient(TEST_PNR_2, family="Svensson"))
    b = bundle("transaction",
               entry("POST", "Task", task()),
               entry("POST", "Patient", patient(TEST_PNR_3, family="Svensson"), ifNoneExist="family=Svensson"))
    assert_outcome(await post_bundle(client, b), 412)
    assert await total(client, "Task") == 0 and await total(client, "Patient") == 2


async def test_transaction_that_changes_one_resource_twice_is_400_and_leaves_no_data(client):
    p = await create(client, patient())
    b = bundle("transaction",
               entry("POST", "Task", task()),
               entry("PUT", f"Patient/{p['id']}", {**p, "active": True}),
               entry("PUT", f"Patient/{p['id']}", {**p, "active": False}))
    assert_outcome(await post_bundle(client, b), 400, "more than once")
    assert await total(client, "Task") == 0
    assert (await client.get(f"{FHIR}/Patient/{p['id']}")).json()["meta"]["versionId"] == "1"


async def test_transaction_entry_with_wrong_type_for_url_fails_whole(client):
    b = bundle("transaction",
               entry("POST", "Patient", patient()),
               entry("POST", "Task", patient(TEST_PNR_2)))
    assert_outcome(await post_bundle(client, b), 400, "entry[1]", "Patient", "Task")
    await assert_store_empty(client)


async def test_transaction_entry_without_request_is_400(client):
    b = bundle("transaction", entry("POST", "Patient", patient()), {"resource": patient(TEST_PNR_2)})
    assert_outcome(await post_bundle(client, b), 400, "entry[1]", "request")
    await assert_store_empty(client)


# -- batch ------------------------------------------------------------------------------
async def test_batch_entries_succeed_or_fail_independently(client):
    existing = await create(client, task())
    b = bundle("batch",
               entry("POST", "Patient", patient()),
               entry("POST", "Task", {**task(), "flavour": "sweet"}),
               entry("GET", "Patient/no-such-patient"),
               entry("PUT", f"Task/{existing['id']}", {**existing, "status": "accepted"}),
               entry("PUT", f"Task/{existing['id']}", {**existing, "status": "rejected"}, ifMatch='W/"1"'))
    r = await post_bundle(client, b)
    assert r.status_code == 200, r.text
    resp = r.json()
    assert resp["type"] == "batch-response"
    codes = [e["response"]["status"].split()[0] for e in resp["entry"]]
    assert codes == ["201", "422", "404", "200", "412"]
    for failed in (resp["entry"][1], resp["entry"][2], resp["entry"][4]):
        assert failed["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert "Task.flavour" in json.dumps(resp["entry"][1]["response"]["outcome"])
    # the successes were kept, the failures left nothing
    assert await total(client, "Patient") == 1
    assert await total(client, "Task") == 1
    assert (await client.get(f"{FHIR}/Task/{existing['id']}")).json()["status"] == "accepted"


async def test_batch_get_entries_read_and_search(client):
    p = await create(client, patient())
    b = bundle("batch",
               entry("GET", f"Patient/{p['id']}"),
               entry("GET", f"Patient?identifier={PNR_SYSTEM}|{TEST_PNR}"),
               entry("GET", f"Patient/{p['id']}/_history/1"),
               entry("GET", "Patient?nonsense=1"))
    r = await post_bundle(client, b)
    assert r.status_code == 200, r.text
    read, found, vread, bad = r.json()["entry"]
    assert read["resource"]["id"] == p["id"] and read["response"]["etag"] == 'W/"1"'
    assert [e["resource"]["id"] for e in found["resource"]["entry"]] == [p["id"]]
    assert vread["resource"]["meta"]["versionId"] == "1"
    assert bad["response"]["status"].startswith("400")
    assert "nonsense" in json.dumps(bad["response"]["outcome"])


# -- wrong Bundle -----------------------------------------------------------------------
async def test_bundle_of_other_type_posted_to_base_is_400(client):
    r = await post_bundle(client, {"resourceType": "Bundle", "type": "collection", "entry": []})
    assert_outcome(r, 400, "transaction", "batch")


async def test_non_bundle_posted_to_base_is_400(client):
    assert_outcome(await post_bundle(client, patient()), 400, "Bundle")


async def test_empty_transaction_answers_an_empty_response(client):
    r = await post_bundle(client, {"resourceType": "Bundle", "type": "transaction"})
    assert r.status_code == 200 and r.json()["type"] == "transaction-response"
    assert not r.json().get("entry")


async def test_search_after_transaction_sees_all_or_nothing(client):
    good = bundle("transaction", entry("POST", "Patient", patient(), P_URN), entry("POST", "Task", task(P_URN)))
    bad = bundle("transaction", entry("POST", "Patient", patient(TEST_PNR_2), P_URN),
                 entry("POST", "Task", {**task(P_URN), "status": ""}))
    assert (await post_bundle(client, good)).status_code == 200
    assert (await post_bundle(client, bad)).status_code in (400, 422)
    found = await search(client, f"Patient?identifier={PNR_SYSTEM}|{TEST_PNR_2}")
    assert found["total"] == 0
    assert await total(client, "Task") == 1
