"""patch with JSON Patch (RFC 6902, application/json-patch+json), honouring If-Match."""
from __future__ import annotations

from conftest import FHIR, FHIR_JSON, PATCH_JSON, assert_outcome, create, history, task


async def _patch(client, rid: str, ops, **headers):
    return await client.patch(f"{FHIR}/Task/{rid}", json=ops, headers={**PATCH_JSON, **headers})


async def _version(client, rid: str) -> str:
    return (await client.get(f"{FHIR}/Task/{rid}")).json()["meta"]["versionId"]


async def test_json_patch_is_applied_as_a_new_version(client):
    v1 = await create(client, task(status="requested"))
    r = await _patch(client, v1["id"], [
        {"op": "replace", "path": "/status", "value": "accepted"},
        {"op": "add", "path": "/note", "value": [{"text": "Hemtjänst tar över"}]},
    ])
    assert r.status_code == 200, r.text
    assert r.headers["ETag"] == 'W/"2"'
    body = r.json()
    assert body["status"] == "accepted" and body["note"][0]["text"] == "Hemtjänst tar över"
    assert body["meta"]["versionId"] == "2" and body["intent"] == "order"
    stored = (await client.get(f"{FHIR}/Task/{v1['id']}")).json()
    assert stored == body
    assert (await client.get(f"{FHIR}/Task/{v1['id']}/_history/1")).json()["status"] == "requested"


async def test_patched_resource_is_reindexed_for_search(client):
    v1 = await create(client, task(status="requested"))
    await _patch(client, v1["id"], [{"op": "replace", "path": "/status", "value": "completed"}])
    found = (await client.get(f"{FHIR}/Task?status=completed")).json()
    assert [e["resource"]["id"] for e in found.get("entry", [])] == [v1["id"]]
    assert (await client.get(f"{FHIR}/Task?status=requested")).json()["total"] == 0


async def test_patch_with_current_if_match_succeeds(client):
    v1 = await create(client, task())
    r = await _patch(client, v1["id"], [{"op": "replace", "path": "/status", "value": "accepted"}],
                     **{"If-Match": 'W/"1"'})
    assert r.status_code == 200, r.text


async def test_patch_with_stale_if_match_is_412_and_leaves_the_resource_unchanged(client):
    v1 = await create(client, task())
    await _patch(client, v1["id"], [{"op": "replace", "path": "/status", "value": "accepted"}])
    r = await _patch(client, v1["id"], [{"op": "replace", "path": "/status", "value": "rejected"}],
                     **{"If-Match": 'W/"1"'})
    assert_outcome(r, 412, "version 2")
    current = (await client.get(f"{FHIR}/Task/{v1['id']}")).json()
    assert current["status"] == "accepted" and current["meta"]["versionId"] == "2"


async def test_patch_needs_the_json_patch_media_type(client):
    v1 = await create(client, task())
    r = await client.patch(f"{FHIR}/Task/{v1['id']}", json=[{"op": "remove", "path": "/status"}], headers=FHIR_JSON)
    assert_outcome(r, 415, "application/json-patch+json")
    assert await _version(client, v1["id"]) == "1"


async def test_patch_that_is_not_an_array_of_operations_is_400(client):
    v1 = await create(client, task())
    r = await _patch(client, v1["id"], {"op": "replace", "path": "/status", "value": "accepted"})
    assert_outcome(r, 400, "array")
    assert await _version(client, v1["id"]) == "1"


async def test_patch_with_unknown_operation_is_400(client):
    v1 = await create(client, task())
    assert_outcome(await _patch(client, v1["id"], [{"op": "frobnicate", "path": "/status"}]), 400)
    assert await _version(client, v1["id"]) == "1"


async def test_patch_whose_test_operation_fails_is_422_and_changes_nothing(client):
    v1 = await create(client, task(status="requested"))
    r = await _patch(client, v1["id"], [
        {"op": "test", "path": "/status", "value": "draft"},
        {"op": "replace", "path": "/status", "value": "accepted"},
    ])
    assert_outcome(r, 422)
    assert await _version(client, v1["id"]) == "1"


async def test_patch_on_a_path_that_does_not_exist_is_422(client):
    v1 = await create(client, task())
    r = await _patch(client, v1["id"], [{"op": "remove", "path": "/note/0"}])
    assert_outcome(r, 422)
    assert (await history(client, f"Task/{v1['id']}/_history"))["total"] == 1


async def test_patch_may_not_change_id_or_resource_type(client):
    v1 = await create(client, task())
    assert_outcome(await _patch(client, v1["id"], [{"op": "replace", "path": "/id", "value": "x"}]), 422, "id")
    assert_outcome(await _patch(client, v1["id"], [{"op": "replace", "path": "/resourceType", "value": "Goal"}]),
                   422, "resourceType")
    assert await _version(client, v1["id"]) == "1"


async def test_patch_that_makes_the_resource_invalid_is_422_naming_the_element(client):
    v1 = await create(client, task())
    r = await _patch(client, v1["id"], [{"op": "add", "path": "/flavour", "value": "sweet"}])
    body = assert_outcome(r, 422, "Task.flavour")
    assert any("Task.flavour" in i.get("expression", []) for i in body["issue"])
    r = await _patch(client, v1["id"], [{"op": "remove", "path": "/status"}])
    assert_outcome(r, 422, "Task.status")
    assert await _version(client, v1["id"]) == "1"


async def test_patch_of_unknown_resource_is_404_and_of_deleted_resource_is_410(client):
    assert_outcome(await _patch(client, "nope", [{"op": "remove", "path": "/status"}]), 404)
    v1 = await create(client, task())
    await client.delete(f"{FHIR}/Task/{v1['id']}")
    assert_outcome(await _patch(client, v1["id"], [{"op": "remove", "path": "/note"}]), 410, "deleted")


async def test_patch_cannot_rewrite_version_metadata(client):
    v1 = await create(client, task())
    r = await _patch(client, v1["id"], [{"op": "replace", "path": "/meta/versionId", "value": "99"}])
    assert r.status_code == 200
    assert r.json()["meta"]["versionId"] == "2"
