"""$validate (type and instance level, modes create/update/delete): an OperationOutcome with
severity, code and FHIRPath expression for every issue; nothing is stored."""
from conftest import FHIR, FHIR_JSON, assert_outcome, patient, task

PNR = "http://electronichealth.se/identifier/personnummer"


async def count(client, rtype):
    return (await client.get(f"{FHIR}/{rtype}", params={"_summary": "count"})).json()["total"]


async def test_type_level_validate_reports_every_issue_with_expression_and_stores_nothing(client):
    bad = {"resourceType": "Task", "status": "done", "intent": "order",
           "for": {"identifier": {"system": PNR, "value": "191212121213"}}}
    r = await client.post(f"{FHIR}/Task/$validate", json=bad, headers=FHIR_JSON)
    assert r.status_code == 200
    issues = r.json()["issue"]
    assert {tuple(i["expression"]) for i in issues} >= {("Task.status",), ("Task.for.identifier.value",)}
    assert all(i["severity"] == "error" and i["code"] for i in issues)
    assert await count(client, "Task") == 0


async def test_valid_resource_validates_with_an_information_outcome(client):
    r = await client.post(f"{FHIR}/Patient/$validate", json=patient(), headers=FHIR_JSON)
    assert r.status_code == 200
    assert [i["severity"] for i in r.json()["issue"]] == ["information"]


async def test_parameters_form_with_mode_update_checks_the_id(client):
    body = {"resourceType": "Parameters", "parameter": [
        {"name": "resource", "resource": task()}, {"name": "mode", "valueCode": "update"}]}
    r = await client.post(f"{FHIR}/Task/t1/$validate", json=body, headers=FHIR_JSON)
    assert ["Task.id"] in [i.get("expression") for i in r.json()["issue"]]


async def test_instance_level_validate_without_body_checks_the_stored_version(client):
    created = (await client.post(f"{FHIR}/Task", json=task(), headers=FHIR_JSON)).json()
    r = await client.get(f"{FHIR}/Task/{created['id']}/$validate")
    assert r.status_code == 200 and r.json()["issue"][0]["severity"] == "information"


async def test_mode_delete_of_a_missing_resource_is_404(client):
    r = await client.post(f"{FHIR}/Task/nope/$validate?mode=delete", json=task(), headers=FHIR_JSON)
    assert_outcome(r, 404)


async def test_claimed_unknown_profile_is_a_warning_not_a_refusal(client):
    body = patient(meta={"profile": ["http://example.org/StructureDefinition/other-guide"]})
    r = await client.post(f"{FHIR}/Patient/$validate", json=body, headers=FHIR_JSON)
    assert [i["severity"] for i in r.json()["issue"]] == ["warning"]
    created = await client.post(f"{FHIR}/Patient", json=body, headers=FHIR_JSON)
    assert created.status_code == 201


async def test_unknown_operation_and_bad_mode_are_client_errors(client):
    assert_outcome(await client.post(f"{FHIR}/Task/$frobnicate", json=task(), headers=FHIR_JSON), 404)
    assert_outcome(await client.post(f"{FHIR}/Task/$validate?mode=sideways", json=task(), headers=FHIR_JSON), 400)


async def test_capability_statement_lists_validate(client):
    meta = (await client.get(f"{FHIR}/metadata")).json()
    task_entry = next(r for r in meta["rest"][0]["resource"] if r["type"] == "Task")
    assert [o["name"] for o in task_entry["operation"]] == ["validate"]
