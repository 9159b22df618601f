"""/fhir/api-docs: an OpenAPI 3 description generated from the CapabilityStatement, so that standard
API fuzzers can run; and schemathesis run against it (authenticated, over a real socket), finding
no 5xx and no error that is not an OperationOutcome."""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, Phase, given, settings as hsettings, strategies as st

from conftest import FHIR, running_gateway, serve_in_thread, token_over_http
from gateway.settings import Settings

SCHEMATHESIS_EXAMPLES = 1000  # ~20 s on the CI machine; the seed is fixed (derandomize)


@pytest.fixture
async def anon(settings):
    async with running_gateway(settings, authorised=False) as client:
        yield client


async def test_api_docs_describes_every_type_interaction_and_search_parameter_of_the_capability_statement(anon):
    capability = (await anon.get(f"{FHIR}/metadata")).json()
    r = await anon.get(f"{FHIR}/api-docs")  # public, like /metadata
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    doc = r.json()
    assert doc["openapi"].startswith("3.") and doc["servers"] == [{"url": "http://test/fhir"}]
    paths = doc["paths"]
    where = {"read": ("/{id}", "get"), "vread": ("/{id}/_history/{vid}", "get"), "update": ("/{id}", "put"),
             "patch": ("/{id}", "patch"), "delete": ("/{id}", "delete"), "history-instance": ("/{id}/_history", "get"),
             "history-type": ("/_history", "get"), "create": ("", "post"), "search-type": ("", "get")}
    for resource in capability["rest"][0]["resource"]:
        rtype = resource["type"]
        for interaction in resource["interaction"]:
            suffix, method = where[interaction["code"]]
            assert method in paths[f"/{rtype}{suffix}"], (rtype, interaction)
        if {"code": "search-type"} in resource["interaction"]:
            query = {p["name"] for p in paths[f"/{rtype}"]["get"]["parameters"] if p["in"] == "query"}
            assert {p["name"] for p in resource["searchParam"]} | {"_count", "_include"} <= query
        for operation in resource.get("operation", []):
            assert any(f"${operation['name']}" in path for path in paths if path.startswith(f"/{rtype}/")), operation
    assert "post" in paths["/"] and "get" in paths["/_history"]
    create = paths["/Patient"]["post"]
    assert create["requestBody"]["content"]["application/fhir+json"]["schema"] == {
        "$ref": "#/components/schemas/Patient"}
    assert create["responses"]["default"] == {"$ref": "#/components/responses/Error"}
    error = doc["components"]["responses"]["Error"]["content"]["application/fhir+json"]["schema"]
    assert error == {"$ref": "#/components/schemas/OperationOutcome"}


async def test_api_docs_describes_translate_at_type_level_get_and_post_and_at_instance_level(anon):
    paths = (await anon.get(f"{FHIR}/api-docs")).json()["paths"]
    assert {"get", "post"} <= set(paths["/ConceptMap/$translate"])
    query = {p["name"] for p in paths["/ConceptMap/$translate"]["get"]["parameters"]}
    assert {"url", "system", "code", "source", "target", "targetsystem", "reverse"} <= query
    assert "get" in paths["/ConceptMap/{id}/$translate"]


async def test_api_docs_names_the_bearer_scheme_and_the_token_endpoint(anon):
    doc = (await anon.get(f"{FHIR}/api-docs")).json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["bearerAuth"] == {**schemes["bearerAuth"], "type": "http", "scheme": "bearer"}
    assert schemes["smartBackendServices"]["flows"]["clientCredentials"]["tokenUrl"] == "http://test/fhir/auth/token"
    assert doc["security"] == [{"bearerAuth": []}]
    token = doc["paths"]["/auth/token"]["post"]
    assert token["security"] == [] and "application/x-www-form-urlencoded" in token["requestBody"]["content"]
    for public in ("/metadata", "/api-docs", "/.well-known/smart-configuration"):
        assert doc["paths"][public]["get"]["security"] == []


async def test_api_docs_is_built_once_per_base_and_served_as_bytes(anon):
    server = anon.app.state.fhir
    first = (await anon.get(f"{FHIR}/api-docs")).content
    assert server.openapi("http://test/fhir") is server.openapi("http://test/fhir")
    assert first == server.openapi("http://test/fhir")


async def test_api_docs_without_security_has_no_security_scheme(trusted_client):
    doc = (await trusted_client.get(f"{FHIR}/api-docs")).json()
    assert "securitySchemes" not in doc["components"] and "/auth/token" not in doc["paths"]


def test_schemathesis_finds_no_server_error_and_every_error_is_an_operation_outcome(tmp_path):
    import schemathesis
    from schemathesis.checks import not_a_server_error
    from schemathesis.generation.modes import GenerationMode
    from schemathesis.specs.openapi.checks import (
        content_type_conformance, response_schema_conformance, status_code_conformance,
    )

    settings = Settings(db_path=str(tmp_path / "g.sqlite"))
    statuses: dict[int, int] = {}
    with serve_in_thread(settings) as (base, _server):
        auth = {"Authorization": f"Bearer {token_over_http(base, settings.db_path)}"}
        schema = schemathesis.openapi.from_url(f"{base}{FHIR}/api-docs")
        cases = st.one_of(schema.as_strategy(GenerationMode.POSITIVE), schema.as_strategy(GenerationMode.NEGATIVE))

        @hsettings(max_examples=SCHEMATHESIS_EXAMPLES, deadline=None, derandomize=True, database=None,
                   phases=[Phase.generate], suppress_health_check=list(HealthCheck))
        @given(case=cases)
        def fuzz(case):
            response = case.call(headers=auth)
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            checks = [not_a_server_error, status_code_conformance, content_type_conformance,
                      response_schema_conformance]
            if "minimal" in str((case.headers or {}).get("Prefer", "")):  # no body, as asked
                checks = [not_a_server_error, status_code_conformance]
            case.validate_response(response, headers=auth, checks=checks)
            if response.status_code >= 400:  # OAuth errors from the token endpoint are OperationOutcomes too
                assert response.json()["resourceType"] == "OperationOutcome", (case.operation.label, response.text)

        fuzz()
    assert sum(statuses.values()) == SCHEMATHESIS_EXAMPLES
    assert not any(code >= 500 for code in statuses), statuses
    assert sum(n for code, n in statuses.items() if code < 300) > 20, statuses  # it got past the 401 gate
