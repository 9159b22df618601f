"""create / read / vread / update / delete, conditional create and update, and their headers
(FHIR R4 RESTful API §3.1.0)."""
from __future__ import annotations

from email.utils import parsedate_to_datetime
from datetime import datetime

from conftest import (
    FHIR, FHIR_JSON, PNR_SYSTEM, TEST_PNR, TEST_PNR_2, TEST_PNR_3, assert_outcome, create, history, patient, put,
    search_ids, task, tick, total,
)


def _instant(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- create -----------------------------------------------------------------------------
async def test_create_assigns_a_server_id_and_answers_201_with_location_etag_last_modified(client):
    r = await client.post(f"{FHIR}/Patient", json={**patient(), "id": "client-chosen"}, headers=FHIR_JSON)
    assert r.status_code == 201, r.text
    body = r.json()
    rid = body["id"]
    assert rid and rid != "client-chosen"  # the server assigns ids on create
    assert body["meta"]["versionId"] == "1"
    assert r.headers["Location"] == f"http://test/fhir/Patient/{rid}/_history/1"
    assert r.headers["ETag"] == 'W/"1"'
    modified = parsedate_to_datetime(r.headers["Last-Modified"])
    assert modified.replace(microsecond=0) == _instant(body["meta"]["lastUpdated"]).replace(microsecond=0)
    assert r.headers["content-type"].startswith("application/fhir+json")
    # the client's id went nowhere
    assert (await client.get(f"{FHIR}/Patient/client-chosen")).status_code == 404


async def test_create_ignores_client_supplied_version_and_last_updated(client):
    stored = await create(client, {**patient(), "meta": {"versionId": "7", "lastUpdated": "2001-01-01T00:00:00Z",
                                                         "source": "urn:test:region"}})
    assert stored["meta"]["versionId"] == "1"
    assert not stored["meta"]["lastUpdated"].startswith("2001")
    assert stored["meta"]["source"] == "urn:test:region"  # other meta elements are kept


async def test_created_resource_is_readable_with_same_content_and_etag(client):
    stored = await create(client, patient())
    r = await client.get(f"{FHIR}/Patient/{stored['id']}")
    assert r.status_code == 200
    assert r.json() == stored
    assert r.headers["ETag"] == 'W/"1"'
    assert "Last-Modified" in r.headers


async def test_stored_decimals_keep_their_exact_text(client):
    r = await client.post(f"{FHIR}/Observation", content=b'{"resourceType":"Observation","status":"final",'
                          b'"code":{"text":"vikt"},"valueQuantity":{"value":70.50,"unit":"kg"}}', headers=FHIR_JSON)
    assert r.status_code == 201, r.text
    assert b'"value":70.50' in (await client.get(f"{FHIR}/Observation/{r.json()['id']}")).content


# -- read / vread -----------------------------------------------------------------------
async def test_read_of_unknown_id_is_404_operation_outcome(client):
    assert_outcome(await client.get(f"{FHIR}/Patient/does-not-exist"), 404, "Patient/does-not-exist")


async def test_read_with_matching_if_none_match_is_304_and_stale_one_is_200(client):
    stored = await create(client, patient())
    url = f"{FHIR}/Patient/{stored['id']}"
    r = await client.get(url, headers={"If-None-Match": 'W/"1"'})
    assert r.status_code == 304 and r.content == b""
    await put(client, {**stored, "active": True})
    r = await client.get(url, headers={"If-None-Match": 'W/"1"'})
    assert r.status_code == 200 and r.json()["active"] is True


async def test_vread_returns_each_version_as_it_was(client):
    v1 = await create(client, patient(family="Tolvansson"))
    r = await put(client, {**v1, "name": [{"family": "Andersson"}]})
    assert r.status_code == 200
    first = await client.get(f"{FHIR}/Patient/{v1['id']}/_history/1")
    second = await client.get(f"{FHIR}/Patient/{v1['id']}/_history/2")
    assert first.status_code == second.status_code == 200
    assert first.json()["name"][0]["family"] == "Tolvansson" and first.json()["meta"]["versionId"] == "1"
    assert second.json()["name"][0]["family"] == "Andersson" and second.json()["meta"]["versionId"] == "2"
    assert first.headers["ETag"] == 'W/"1"' and second.headers["ETag"] == 'W/"2"'


async def test_vread_of_unknown_version_is_404(client):
    stored = await create(client, patient())
    assert_outcome(await client.get(f"{FHIR}/Patient/{stored['id']}/_history/2"), 404, "version")
    assert_outcome(await client.get(f"{FHIR}/Patient/{stored['id']}/_history/abc"), 404)


# -- update -----------------------------------------------------------------------------
async def test_update_makes_a_new_version_and_answers_200_with_etag(client):
    v1 = await create(client, patient())
    r = await put(client, {**v1, "active": False})
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == 'W/"2"'
    assert r.json()["meta"]["versionId"] == "2" and r.json()["active"] is False
    assert "Last-Modified" in r.headers
    current = (await client.get(f"{FHIR}/Patient/{v1['id']}")).json()
    assert current["active"] is False and current["meta"]["versionId"] == "2"
    assert _instant(current["meta"]["lastUpdated"]) >= _instant(v1["meta"]["lastUpdated"])


async def test_update_of_unknown_id_creates_it_with_201_and_location(trusted_client):
    client = trusted_client  # update-as-create: trusted callers only (authenticated ones get 404)
    r = await put(client, {**patient(), "id": "plan-owner-1"})
    assert r.status_code == 201, r.text
    assert r.headers["Location"] == "http://test/fhir/Patient/plan-owner-1/_history/1"
    assert r.headers["ETag"] == 'W/"1"'
    assert (await client.get(f"{FHIR}/Patient/plan-owner-1")).status_code == 200


async def test_update_with_current_if_match_succeeds(client):
    v1 = await create(client, task())
    r = await put(client, {**v1, "status": "accepted"}, **{"If-Match": 'W/"1"'})
    assert r.status_code == 200, r.text
    assert r.json()["meta"]["versionId"] == "2"


async def test_stale_if_match_is_rejected_with_412_and_no_version_lost(client):
    """Region and municipality both read version 1 of a plan task; the region saves first.
    The municipality's save, still based on version 1, must fail, not overwrite the region's."""
    v1 = await create(client, task(status="requested"))
    region = await put(client, {**v1, "status": "accepted", "businessStatus": {"text": "region"}},
                       **{"If-Match": 'W/"1"'})
    assert region.status_code == 200
    municipality = await put(client, {**v1, "status": "rejected", "businessStatus": {"text": "kommun"}},
                             **{"If-Match": 'W/"1"'})
    assert_outcome(municipality, 412, "version 2")
    current = (await client.get(f"{FHIR}/Task/{v1['id']}")).json()
    assert current["status"] == "accepted" and current["businessStatus"]["text"] == "region"
    hist = await history(client, f"Task/{v1['id']}/_history")
    assert sorted(e["resource"]["meta"]["versionId"] for e in hist["entry"]) == ["1", "2"]


async def test_if_match_on_a_resource_that_does_not_exist_is_412_and_creates_nothing(trusted_client):
    client = trusted_client
    r = await put(client, {**patient(), "id": "never-made"}, **{"If-Match": 'W/"1"'})
    assert_outcome(r, 412)
    assert (await client.get(f"{FHIR}/Patient/never-made")).status_code == 404


async def test_update_keeps_only_what_the_body_says(client):
    v1 = await create(client, patient(active=True))
    body = {k: v for k, v in v1.items() if k != "active"}
    r = await put(client, body)
    assert r.status_code == 200
    assert "active" not in (await client.get(f"{FHIR}/Patient/{v1['id']}")).json()


# -- delete -----------------------------------------------------------------------------
async def test_delete_answers_success_and_read_of_deleted_resource_is_410(client):
    stored = await create(client, patient())
    r = await client.delete(f"{FHIR}/Patient/{stored['id']}")
    assert r.status_code in (200, 204)
    assert_outcome(await client.get(f"{FHIR}/Patient/{stored['id']}"), 410, "deleted")


async def test_delete_is_versioned_earlier_versions_stay_readable(client):
    stored = await create(client, patient())
    await client.delete(f"{FHIR}/Patient/{stored['id']}")
    assert (await client.get(f"{FHIR}/Patient/{stored['id']}/_history/1")).status_code == 200
    assert_outcome(await client.get(f"{FHIR}/Patient/{stored['id']}/_history/2"), 410)
    hist = await history(client, f"Patient/{stored['id']}/_history")
    assert hist["total"] == 2
    newest = hist["entry"][0]
    assert newest["request"]["method"] == "DELETE" and "resource" not in newest


async def test_deleted_resource_disappears_from_search(client):
    keep = await create(client, patient(TEST_PNR))
    gone = await create(client, patient(TEST_PNR_2))
    await client.delete(f"{FHIR}/Patient/{gone['id']}")
    assert await search_ids(client, "Patient") == {keep["id"]}
    assert await search_ids(client, f"Patient?identifier={PNR_SYSTEM}|{TEST_PNR_2}") == set()


async def test_update_after_delete_brings_resource_back_as_next_version(client):
    stored = await create(client, patient())
    await client.delete(f"{FHIR}/Patient/{stored['id']}")
    r = await put(client, stored)
    assert r.status_code == 201, r.text
    assert r.json()["meta"]["versionId"] == "3"
    assert (await client.get(f"{FHIR}/Patient/{stored['id']}")).status_code == 200


async def test_update_of_deleted_resource_with_if_match_is_412(client):
    stored = await create(client, patient())
    await client.delete(f"{FHIR}/Patient/{stored['id']}")
    assert_outcome(await put(client, stored, **{"If-Match": 'W/"2"'}), 412)


async def test_delete_of_unknown_type_is_404(client):
    assert_outcome(await client.delete(f"{FHIR}/Spaceship/1"), 404, "Spaceship")


# -- conditional create ----------------------------------------------------------------
async def test_conditional_create_without_match_creates(client):
    r = await client.post(f"{FHIR}/Patient", json=patient(), headers={
        **FHIR_JSON, "If-None-Exist": f"identifier={PNR_SYSTEM}|{TEST_PNR}"})
    assert r.status_code == 201
    assert await total(client, "Patient") == 1


async def test_conditional_create_with_one_match_returns_the_existing_resource_and_creates_nothing(client):
    existing = await create(client, patient())
    r = await client.post(f"{FHIR}/Patient", json=patient(family="Dubblett"), headers={
        **FHIR_JSON, "If-None-Exist": f"identifier={PNR_SYSTEM}|{TEST_PNR}"})
    assert r.status_code == 200, r.text
    assert r.json()["id"] == existing["id"]
    assert r.json()["name"][0]["family"] == "Tolvansson"  # the existing one, untouched
    assert await total(client, "Patient") == 1
    assert (await history(client, f"Patient/{existing['id']}/_history"))["total"] == 1


async def test_conditional_create_with_several_matches_is_412_and_creates_nothing(client):
    await create(client, patient(TEST_PNR, family="Svensson"))
    await create(client, patient(TEST_PNR_2, family="Svensson"))
    r = await client.post(f"{FHIR}/Patient", json=patient(TEST_PNR_3, family="Svensson"),
                          headers={**FHIR_JSON, "If-None-Exist": "family=Svensson"})
    assert_outcome(r, 412, "specific")
    assert await total(client, "Patient") == 2


async def test_conditional_create_with_unknown_parameter_is_400(client):
    r = await client.post(f"{FHIR}/Patient", json=patient(), headers={**FHIR_JSON, "If-None-Exist": "nonsense=1"})
    assert_outcome(r, 400, "nonsense")
    assert await total(client, "Patient") == 0


# -- conditional update ----------------------------------------------------------------
async def test_conditional_update_without_match_creates(client):
    r = await client.put(f"{FHIR}/Patient?identifier={PNR_SYSTEM}|{TEST_PNR}", json=patient(), headers=FHIR_JSON)
    assert r.status_code == 201, r.text
    assert "Location" in r.headers
    assert await total(client, "Patient") == 1


async def test_conditional_update_with_one_match_updates_that_resource(client):
    existing = await create(client, patient())
    await create(client, patient(TEST_PNR_2))
    r = await client.put(f"{FHIR}/Patient?identifier={PNR_SYSTEM}|{TEST_PNR}",
                         json=patient(family="Nyttnamn"), headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    assert r.json()["id"] == existing["id"] and r.json()["meta"]["versionId"] == "2"
    assert (await client.get(f"{FHIR}/Patient/{existing['id']}")).json()["name"][0]["family"] == "Nyttnamn"
    assert await total(client, "Patient") == 2


async def test_conditional_update_with_several_matches_is_412_and_changes_nothing(client):
    a = await create(client, patient(TEST_PNR, family="Svensson"))
    b = await create(client, patient(TEST_PNR_2, family="Svensson"))
    r = await client.put(f"{FHIR}/Patient?family=Svensson", json=patient(family="Ny"), headers=FHIR_JSON)
    assert_outcome(r, 412)
    for p in (a, b):
        assert (await client.get(f"{FHIR}/Patient/{p['id']}")).json()["meta"]["versionId"] == "1"


async def test_conditional_update_whose_body_id_differs_from_the_match_is_400(client):
    existing = await create(client, patient())
    r = await client.put(f"{FHIR}/Patient?identifier={PNR_SYSTEM}|{TEST_PNR}",
                         json={**patient(), "id": "other-id"}, headers=FHIR_JSON)
    assert_outcome(r, 400, "other-id")
    assert (await client.get(f"{FHIR}/Patient/{existing['id']}")).json()["meta"]["versionId"] == "1"


async def test_put_to_a_type_without_criteria_is_400(client):
    assert_outcome(await client.put(f"{FHIR}/Patient", json=patient(), headers=FHIR_JSON), 400, "criteria")


# -- Prefer: return --------------------------------------------------------------------
async def test_prefer_return_minimal_sends_headers_but_no_body(client):
    r = await client.post(f"{FHIR}/Patient", json=patient(), headers={**FHIR_JSON, "Prefer": "return=minimal"})
    assert r.status_code == 201 and r.content == b""
    assert r.headers["ETag"] == 'W/"1"' and "/Patient/" in r.headers["Location"]


async def test_prefer_return_operation_outcome_sends_an_outcome(client):
    r = await client.post(f"{FHIR}/Patient", json=patient(),
                          headers={**FHIR_JSON, "Prefer": "return=OperationOutcome"})
    assert r.status_code == 201
    assert r.json()["resourceType"] == "OperationOutcome"


async def test_consecutive_writes_get_increasing_last_updated(client):
    v1 = await create(client, task())
    await tick()
    v2 = (await put(client, {**v1, "status": "accepted"})).json()
    assert _instant(v2["meta"]["lastUpdated"]) > _instant(v1["meta"]["lastUpdated"])
