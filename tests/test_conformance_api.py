"""Conformance resources (SearchParameter, CodeSystem, ValueSet, StructureDefinition) are
readable and searchable over the API, served from profiles/."""
from conftest import FHIR

ACTIVITY = "https://samverkan.example.se/fhir/CodeSystem/samverkan-activity"


async def test_search_parameter_is_readable_by_id(client):
    r = await client.get(f"{FHIR}/SearchParameter/Task-deadline")
    assert r.status_code == 200
    assert r.json()["expression"] == "Task.restriction.period"


async def test_code_system_is_found_by_url_and_lists_its_concepts(client):
    bundle = (await client.get(f"{FHIR}/CodeSystem", params={"url": ACTIVITY})).json()
    assert bundle["total"] == 1
    codes = {c["code"] for c in bundle["entry"][0]["resource"]["concept"]}
    assert {"inskrivningsmeddelande", "utskrivningsklar", "kallelse-sip"} <= codes


async def test_search_parameters_are_searchable_by_base_and_code(client):
    bundle = (await client.get(f"{FHIR}/SearchParameter", params={"base": "Task", "code": "owner"})).json()
    assert [e["resource"]["expression"] for e in bundle["entry"]] == ["Task.owner"]


async def test_name_search_is_a_case_insensitive_prefix(client):
    bundle = (await client.get(f"{FHIR}/ValueSet", params={"name": "samverkan"})).json()
    assert bundle["total"] >= 4


async def test_unknown_conformance_id_is_404(client):
    r = await client.get(f"{FHIR}/ValueSet/does-not-exist")
    assert r.status_code == 404 and r.json()["resourceType"] == "OperationOutcome"
