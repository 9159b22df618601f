"""GET /metadata: a CapabilityStatement that lists exactly what is supported, nothing more.

Each claim is checked against the running server: listed types, interactions, search
parameters and includes work; standard parameters that are not listed are refused."""
from __future__ import annotations

import json

import pytest
from fhir.resources.R4B import get_fhir_model_class

from conftest import FHIR, FHIR_JSON, PATCH_JSON, assert_outcome, create, patient, task, tick
from gateway.settings import REPO_PROFILES

CARE_PLAN_TYPES = {"Patient", "Practitioner", "PractitionerRole", "Organization", "RelatedPerson", "Encounter",
                   "CarePlan", "CareTeam", "Consent", "Task", "ServiceRequest", "Goal", "Condition",
                   "Observation", "Communication", "Provenance", "AuditEvent"}
SAMPLE_VALUE = {"token": "x", "reference": "x", "date": "2024", "string": "x", "uri": "http://example.org/x",
                "number": "1", "quantity": "1", "composite": "x$y", "special": "x"}


@pytest.fixture
async def capability(client) -> dict:
    r = await client.get(f"{FHIR}/metadata")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/fhir+json")
    return r.json()


def _resources(cs: dict) -> dict[str, dict]:
    return {r["type"]: r for r in cs["rest"][0]["resource"]}


def _definitions() -> list[dict]:
    """Every SearchParameter shipped under profiles/ (standard R4 and our own)."""
    out = []
    for path in sorted((REPO_PROFILES / "search-parameters").glob("*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("resourceType") == "Bundle":
            out += [e["resource"] for e in data.get("entry", [])]
        else:
            out.append(data)
    return [d for d in out if d.get("resourceType") == "SearchParameter"]


async def test_capability_statement_is_a_valid_r4_instance_statement(capability):
    get_fhir_model_class("CapabilityStatement").model_validate(capability)
    assert capability["resourceType"] == "CapabilityStatement"
    assert capability["fhirVersion"] == "4.0.1"
    assert capability["kind"] == "instance" and capability["status"] == "active"
    assert capability["implementation"]["url"] == "http://test/fhir"
    assert "application/fhir+json" in capability["format"]
    assert not any("xml" in f for f in capability["format"])
    assert capability["patchFormat"] == ["application/json-patch+json"]
    assert capability["rest"][0]["mode"] == "server"


async def test_lists_the_care_plan_types_and_each_listed_type_is_served(client, capability):
    listed = set(_resources(capability))
    assert CARE_PLAN_TYPES <= listed
    for rtype in listed - {"AuditEvent"}:  # the access log: administrators only (tests/test_audit.py)
        r = await client.get(f"{FHIR}/{rtype}?_summary=count")
        assert r.status_code == 200, f"{rtype} is listed but not searchable: {r.text}"


async def test_types_not_listed_are_not_served(client, capability):
    listed = set(_resources(capability))
    for rtype in ("Medication", "Appointment", "Group", "Binary", "Location"):
        if rtype not in listed:
            assert_outcome(await client.get(f"{FHIR}/{rtype}"), 404, rtype)


async def test_every_listed_interaction_works(client, capability):
    """Exercise each listed interaction on Task, and each system interaction; an interaction
    code this test does not know means the statement claims something unverified."""
    rest = capability["rest"][0]
    claimed = {i["code"] for i in _resources(capability)["Task"]["interaction"]}
    system = {i["code"] for i in rest.get("interaction", [])}
    checks = {}
    r = await client.post(f"{FHIR}/Task", json=task(), headers=FHIR_JSON)
    checks["create"] = r.status_code == 201
    tid = r.json()["id"]
    checks["read"] = (await client.get(f"{FHIR}/Task/{tid}")).status_code == 200
    checks["update"] = (await client.put(f"{FHIR}/Task/{tid}", json={**r.json(), "status": "accepted"},
                                         headers=FHIR_JSON)).status_code == 200
    checks["vread"] = (await client.get(f"{FHIR}/Task/{tid}/_history/1")).status_code == 200
    checks["patch"] = (await client.patch(f"{FHIR}/Task/{tid}", json=[{"op": "replace", "path": "/status",
                                                                       "value": "ready"}],
                                          headers=PATCH_JSON)).status_code == 200
    checks["history-instance"] = (await client.get(f"{FHIR}/Task/{tid}/_history")).json()["total"] == 3
    checks["history-type"] = (await client.get(f"{FHIR}/Task/_history")).status_code == 200
    checks["search-type"] = (await client.get(f"{FHIR}/Task?status=ready")).json()["total"] == 1
    checks["delete"] = (await client.delete(f"{FHIR}/Task/{tid}")).status_code in (200, 204)
    checks["history-system"] = (await client.get(f"{FHIR}/_history")).json()["total"] == 4
    checks["batch"] = (await client.post(FHIR, json={"resourceType": "Bundle", "type": "batch"},
                                         headers=FHIR_JSON)).status_code == 200
    checks["transaction"] = (await client.post(FHIR, json={"resourceType": "Bundle", "type": "transaction"},
                                               headers=FHIR_JSON)).status_code == 200
    unknown = (claimed | system) - set(checks)
    assert not unknown, f"claimed but not verified: {unknown}"
    assert all(checks[c] for c in claimed | system), {c: checks[c] for c in claimed | system}
    # and what is not claimed is indeed refused
    if "search-system" not in system:
        assert (await client.get(f"{FHIR}?_id=x")).status_code == 400


READ_ONLY = {"StructureDefinition", "SearchParameter", "CodeSystem", "ValueSet", "ConceptMap"}  # served from profiles/


async def test_every_resource_uses_the_same_claimed_interactions(capability):
    sets = {r["type"]: tuple(sorted(i["code"] for i in r["interaction"])) for r in capability["rest"][0]["resource"]
            if r["type"] not in READ_ONLY | {"AuditEvent"}}  # the access log: administrators read it
    assert len(set(sets.values())) == 1, sets


async def test_conformance_resources_are_listed_read_only_and_refuse_writes(client, capability):
    listed = {r["type"]: {i["code"] for i in r["interaction"]} for r in capability["rest"][0]["resource"]}
    for rtype in READ_ONLY:
        assert listed[rtype] == {"read", "vread", "search-type"}
        r = await client.post(f"{FHIR}/{rtype}", json={"resourceType": rtype}, headers=FHIR_JSON)
        assert r.status_code == 405 and "read-only" in r.text


async def test_conceptmap_is_listed_with_translate_and_other_conformance_types_with_no_operation(capability):
    listed = _resources(capability)
    concept_map = listed["ConceptMap"]
    assert concept_map["operation"] == [{**concept_map["operation"][0], "name": "translate",
                                         "definition": "http://hl7.org/fhir/OperationDefinition/ConceptMap-translate"}]
    assert {"url", "source-system", "target-system"} <= {p["name"] for p in concept_map["searchParam"]}
    assert not any(listed[t].get("operation") for t in READ_ONLY - {"ConceptMap"})  # $validate: stored types only


async def test_every_listed_search_parameter_is_accepted_with_a_value_of_its_type(client, capability):
    broken = []
    for rtype, res in _resources(capability).items():
        if rtype == "AuditEvent":  # administrators only; its parameters: tests/test_audit.py
            continue
        for sp in res.get("searchParam", []):
            for query in (f"{sp['name']}={SAMPLE_VALUE[sp['type']]}", f"{sp['name']}:missing=true"):
                r = await client.get(f"{FHIR}/{rtype}?{query}&_summary=count")
                if r.status_code != 200:
                    broken.append(f"{rtype}?{query} → {r.status_code}")
    assert not broken, broken


async def test_search_parameters_listed_are_exactly_the_ones_accepted(client, capability):
    """For every SearchParameter shipped under profiles/ whose base is a served type: listed
    ⇔ accepted. A standard parameter of an unsupported type (number, quantity, composite,
    special) must be neither listed nor silently accepted."""
    resources = _resources(capability)
    mismatches = []
    for d in _definitions():
        for rtype in d.get("base", []):
            bases = resources if rtype == "Resource" else ({rtype: resources[rtype]} if rtype in resources else {})
            for t, res in bases.items():
                if t == "AuditEvent":  # administrators only: tests/test_audit.py
                    continue
                listed = {p["name"] for p in res.get("searchParam", [])}
                value = SAMPLE_VALUE.get(d["type"], "x")
                r = await client.get(f"{FHIR}/{t}?{d['code']}={value}&_summary=count")
                if (d["code"] in listed) != (r.status_code == 200):
                    mismatches.append(f"{t}.{d['code']} ({d['type']}): listed={d['code'] in listed}, "
                                      f"answer={r.status_code}")
                if d["code"] not in listed and r.status_code == 400:
                    assert r.json()["resourceType"] == "OperationOutcome"
    assert not mismatches, mismatches


async def test_standard_task_and_care_plan_parameters_of_the_issue_are_listed(capability):
    res = _resources(capability)
    names = {t: {p["name"] for p in res[t]["searchParam"]} for t in res}
    assert {"_id", "_lastUpdated", "identifier", "patient", "subject", "encounter", "owner", "requester", "focus",
            "based-on", "part-of", "status", "code", "authored-on", "period"} <= names["Task"]
    assert {"care-team", "category", "date", "subject", "patient", "status"} <= names["CarePlan"]
    assert {"participant", "patient", "status"} <= names["CareTeam"]
    assert {"code", "category", "date", "subject", "encounter", "based-on"} <= names["Observation"]


async def test_our_own_search_parameters_are_listed_with_their_definitions(capability):
    ours = {d["code"]: d["url"] for d in _definitions()
            if "samverkan" in d.get("url", "") or d.get("publisher", "").lower().startswith("samverkan")}
    res = _resources(capability)
    task_params = {p["name"]: p for p in res["Task"]["searchParam"]}
    assert task_params["deadline"]["type"] == "date"
    assert task_params["restriction-recipient"]["type"] == "reference"
    for code in ("deadline", "restriction-recipient"):
        assert task_params[code]["definition"] != "", code
        if code in ours:
            assert task_params[code]["definition"] == ours[code]
    assert "participant-organization" in {p["name"] for p in res["CareTeam"]["searchParam"]}


async def test_parameters_not_listed_are_refused(client, capability):
    task_params = {p["name"] for p in _resources(capability)["Task"]["searchParam"]}
    for name in ("_text", "_content", "_list", "_query", "_filter", "colour"):
        assert name not in task_params
        assert_outcome(await client.get(f"{FHIR}/Task?{name}=x"), 400, name)
    obs = {p["name"] for p in _resources(capability)["Observation"]["searchParam"]}
    for name, value in (("value-quantity", "5"), ("code-value-quantity", "x$5")):
        assert name not in obs
        assert_outcome(await client.get(f"{FHIR}/Observation?{name}={value}"), 400, name)


async def test_every_listed_include_and_revinclude_is_accepted(client, capability):
    broken = []
    for rtype, res in _resources(capability).items():
        for inc in res.get("searchInclude", []):
            r = await client.get(f"{FHIR}/{rtype}?_include={inc}&_summary=count")
            if r.status_code != 200:
                broken.append(f"{rtype}?_include={inc} → {r.status_code}")
        for rev in res.get("searchRevInclude", []):
            r = await client.get(f"{FHIR}/{rtype}?_revinclude={rev}&_summary=count")
            if r.status_code != 200:
                broken.append(f"{rtype}?_revinclude={rev} → {r.status_code}")
    assert not broken, broken


async def test_listed_reference_parameters_of_a_type_are_exactly_its_includes(capability):
    for rtype, res in _resources(capability).items():
        if rtype == "AuditEvent":  # the access log offers no includes
            continue
        refs = {f"{rtype}:{p['name']}" for p in res["searchParam"] if p["type"] == "reference"}
        assert set(res["searchInclude"]) - {"*"} == refs, rtype


async def test_revinclude_list_names_parameters_that_can_point_at_the_type(client, capability):
    res = _resources(capability)
    assert "Task:patient" in res["Patient"]["searchRevInclude"]
    assert "CarePlan:care-team" in res["CareTeam"]["searchRevInclude"]
    assert "Task:patient" not in res["Organization"]["searchRevInclude"]  # Task.patient targets Patient only
    p = await create(client, patient())
    t = await create(client, task(f"Patient/{p['id']}"))
    bundle = (await client.get(f"{FHIR}/Patient?_id={p['id']}&_revinclude=Task:patient")).json()
    assert {e["resource"]["id"] for e in bundle["entry"] if e["search"]["mode"] == "include"} == {t["id"]}


async def test_documented_search_features_work(client, capability):
    """The rest.documentation promises _sort on _id and string parameters, :contains, and the
    sa/eb prefixes; each must do what it says."""
    doc = capability["rest"][0].get("documentation", "")
    a = await create(client, patient(family="Björk"))
    await tick()
    b = await create(client, patient("201212121212", family="Andersson"))
    if "_id" in doc:
        got = (await client.get(f"{FHIR}/Patient?_sort=_id")).json()
        assert [e["resource"]["id"] for e in got["entry"]] == sorted([a["id"], b["id"]])
    if "string" in doc:
        got = (await client.get(f"{FHIR}/Patient?_sort=family")).json()
        assert [e["resource"]["id"] for e in got["entry"]] == [b["id"], a["id"]]
    if ":contains" in doc:
        got = (await client.get(f"{FHIR}/Patient?family:contains=jör")).json()
        assert [e["resource"]["id"] for e in got["entry"]] == [a["id"]]
    if " sa " in doc or " sa" in doc:
        early = await create(client, task(authoredOn="2024-03-05"))
        late = await create(client, task(authoredOn="2024-04-02"))
        got = (await client.get(f"{FHIR}/Task?authored-on=sa2024-03-31")).json()
        assert [e["resource"]["id"] for e in got["entry"]] == [late["id"]]
        got = (await client.get(f"{FHIR}/Task?authored-on=eb2024-03-31")).json()
        assert [e["resource"]["id"] for e in got["entry"]] == [early["id"]]


async def test_claimed_conditional_and_versioning_behaviour(trusted_client):
    """With security off (trusted callers) the server lets clients choose ids; see the next test."""
    client = trusted_client
    capability = (await client.get(f"{FHIR}/metadata")).json()
    task_res = _resources(capability)["Task"]
    assert task_res["versioning"] == "versioned-update"
    assert task_res["conditionalCreate"] is True and task_res["conditionalUpdate"] is True
    assert task_res["conditionalDelete"] == "not-supported"
    assert task_res["updateCreate"] is True
    # updateCreate: PUT to a new id creates
    r = await client.put(f"{FHIR}/Task/new-by-put", json={**task(), "id": "new-by-put"}, headers=FHIR_JSON)
    assert r.status_code == 201
    # conditionalRead not-match: If-None-Match is honoured
    assert task_res["conditionalRead"] == "not-match"
    assert (await client.get(f"{FHIR}/Task/new-by-put", headers={"If-None-Match": 'W/"1"'})).status_code == 304
    # conditionalDelete not-supported: it does not delete
    await client.delete(f"{FHIR}/Task?_id=new-by-put")
    assert (await client.get(f"{FHIR}/Task/new-by-put")).status_code == 200


async def test_secured_server_claims_smart_security_and_no_update_create(client, capability):
    task_res = _resources(capability)["Task"]
    assert task_res["updateCreate"] is False
    security = capability["rest"][0]["security"]
    assert security["service"][0]["coding"][0]["code"] == "SMART-on-FHIR"
    assert security["extension"][0]["extension"][0] == {"url": "token", "valueUri": f"http://test{FHIR}/auth/token"}
    # an authenticated client cannot choose ids: PUT to a free id is not a create
    r = await client.put(f"{FHIR}/Task/new-by-put", json={**task(), "id": "new-by-put"}, headers=FHIR_JSON)
    assert r.status_code == 404 and "assigned by the server" in r.json()["issue"][0]["diagnostics"]


async def test_profiles_held_are_listed_as_supported_profiles_of_their_type(tmp_path):
    """Every StructureDefinition in profiles/ appears as supportedProfile of its type, and a
    required profile is the type's `profile`."""
    from conftest import running_gateway
    from gateway.settings import Settings

    sds = [json.loads(p.read_text(encoding="utf-8")) for p in REPO_PROFILES.glob("StructureDefinition-*.json")]
    resource_sds = [sd for sd in sds if sd.get("kind") == "resource"]
    required = {sd["type"]: sd["url"] for sd in resource_sds[:1]}
    settings = Settings(db_path=str(tmp_path / "g.sqlite"),
                        required_profiles=";".join(f"{t}={u}" for t, u in required.items()))
    async with running_gateway(settings) as client:
        statement = (await client.get(f"{FHIR}/metadata")).json()
    listed = {r["type"]: r for r in statement["rest"][0]["resource"]}
    for sd in resource_sds:
        assert sd["url"] in listed[sd["type"]]["supportedProfile"]
    for rtype, url in required.items():
        assert listed[rtype]["profile"] == url
