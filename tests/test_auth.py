"""SMART Backend Services: the token endpoint's rejections, and bearer checks on FHIR requests.

Each token-endpoint test breaks exactly one thing in an otherwise valid client assertion and
asserts the RFC 6749 error; each FHIR test presents one kind of bad token and asserts a 401
OperationOutcome with a WWW-Authenticate challenge.
"""
from __future__ import annotations

import time

import jwt
import pytest
from conftest import FHIR, FHIR_JSON, TEST_ORG, get_token, patient, register_client, running_gateway

from gateway.auth.keys import client_assertion, generate_key
from gateway.auth.registry import ClientRegistry
from gateway.auth.tokens import ASSERTION_TYPE, ISSUER

TOKEN_URL = f"http://test{FHIR}/auth/token"


@pytest.fixture
async def anon(settings):
    async with running_gateway(settings, authorised=False) as client:
        yield client


def form(assertion: str, scope: str = "system/*.cruds", **changes) -> dict:
    return {"grant_type": "client_credentials", "scope": scope, "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": assertion, **changes}


async def token_error(client, data: dict) -> tuple[int, dict]:
    """(status, the OAuth error fields); a refusal is also an OperationOutcome saying the same."""
    r = await client.post(f"{FHIR}/auth/token", data=data)
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    if r.status_code != 200:
        assert body["resourceType"] == "OperationOutcome"
        assert body["issue"][0]["diagnostics"] == body["error_description"]
        assert body["issue"][0]["code"] == ("login" if r.status_code == 401 else "invalid")
        body = {k: body[k] for k in ("error", "error_description")}
    return r.status_code, body


# -- discovery and public endpoints ----------------------------------------------------------
async def test_smart_configuration_names_the_token_endpoint_and_algorithms(anon):
    r = await anon.get(f"{FHIR}/.well-known/smart-configuration")
    assert r.status_code == 200
    config = r.json()
    assert config["token_endpoint"] == TOKEN_URL
    assert config["token_endpoint_auth_methods_supported"] == ["private_key_jwt"]
    assert set(config["token_endpoint_auth_signing_alg_values_supported"]) == {"RS384", "ES384"}
    assert "client-confidential-asymmetric" in config["capabilities"]


async def test_metadata_needs_no_token_but_everything_else_does(anon):
    assert (await anon.get(f"{FHIR}/metadata")).status_code == 200
    for method, path in [("GET", "/Patient"), ("GET", "/Patient/x"), ("POST", "/Patient"), ("GET", "/_history"),
                         ("POST", ""), ("GET", "/Task/x/_history/1"), ("POST", "/Task/$validate")]:
        r = await anon.request(method, f"{FHIR}{path}", headers=FHIR_JSON, content=b"{}")
        assert r.status_code == 401, (method, path, r.text)
        assert r.json()["resourceType"] == "OperationOutcome"
        assert r.headers["www-authenticate"].startswith('Bearer error="invalid_token"')


# -- the token endpoint ------------------------------------------------------------------------
@pytest.mark.parametrize("alg", ["ES384", "RS384"])
async def test_valid_assertion_gets_a_token_that_works(anon, settings, alg):
    client_id, pem, kid = register_client(settings.db_path, alg=alg)
    status, body = await token_error(anon, form(client_assertion(client_id, pem, TOKEN_URL, kid, alg)))
    assert status == 200, body
    assert body["token_type"] == "bearer" and body["expires_in"] == 300 and body["scope"] == "system/*.cruds"
    r = await anon.post(f"{FHIR}/Patient", json=patient(), headers={**FHIR_JSON,
                                                                    "Authorization": f"Bearer {body['access_token']}"})
    assert r.status_code == 201, r.text


async def test_expired_assertion_is_refused(anon, settings):
    client_id, pem, kid = register_client(settings.db_path)
    assertion = client_assertion(client_id, pem, TOKEN_URL, kid, exp=int(time.time()) - 120)
    assert await token_error(anon, form(assertion)) == (401, {"error": "invalid_client",
                                                               "error_description": "client_assertion has expired"})


async def test_assertion_for_another_audience_is_refused(anon, settings):
    client_id, pem, kid = register_client(settings.db_path)
    status, body = await token_error(anon, form(client_assertion(client_id, pem, "https://other.example/token", kid)))
    assert (status, body["error"]) == (401, "invalid_client")
    assert "aud must be the token endpoint" in body["error_description"]


async def test_replayed_jti_is_refused(anon, settings):
    client_id, pem, kid = register_client(settings.db_path)
    assertion = client_assertion(client_id, pem, TOKEN_URL, kid)
    assert (await token_error(anon, form(assertion)))[0] == 200
    status, body = await token_error(anon, form(assertion))
    assert (status, body["error"]) == (401, "invalid_client")
    assert "replay" in body["error_description"]


async def test_unknown_client_is_refused(anon):
    pem, jwk = generate_key()
    status, body = await token_error(anon, form(client_assertion("no-such-client", pem, TOKEN_URL, jwk["kid"])))
    assert (status, body) == (401, {"error": "invalid_client", "error_description": "unknown client"})


async def test_assertion_signed_with_another_key_is_refused(anon, settings):
    client_id, _, kid = register_client(settings.db_path)
    other_pem, _ = generate_key()
    status, body = await token_error(anon, form(client_assertion(client_id, other_pem, TOKEN_URL, kid)))
    assert (status, body["error"]) == (401, "invalid_client")
    assert "signature does not verify" in body["error_description"]


async def test_symmetric_or_unsigned_assertion_is_refused(anon, settings):
    client_id, _, _ = register_client(settings.db_path)
    claims = {"iss": client_id, "sub": client_id, "aud": TOKEN_URL, "exp": int(time.time()) + 60, "jti": "x"}
    for assertion in (jwt.encode(claims, "a-guessable-shared-secret-of-32-bytes", algorithm="HS256"),
                      jwt.encode(claims, None, algorithm="none")):
        status, body = await token_error(anon, form(assertion))
        assert (status, body["error"]) == (401, "invalid_client")
        assert "RS384 or ES384" in body["error_description"]


async def test_assertion_valid_for_too_long_is_refused(anon, settings):
    client_id, pem, kid = register_client(settings.db_path)
    assertion = client_assertion(client_id, pem, TOKEN_URL, kid, exp=int(time.time()) + 3600)
    status, body = await token_error(anon, form(assertion))
    assert (status, body["error"]) == (401, "invalid_client")
    assert "five minutes" in body["error_description"]


async def test_assertion_with_iss_other_than_sub_is_refused(anon, settings):
    client_id, pem, kid = register_client(settings.db_path)
    status, body = await token_error(anon, form(client_assertion(client_id, pem, TOKEN_URL, kid, sub="someone-else")))
    assert (status, body["error"]) == (401, "invalid_client")


async def test_revoked_client_gets_no_token_and_its_tokens_stop_working(anon, settings):
    client_id, pem, kid = register_client(settings.db_path)
    body = (await token_error(anon, form(client_assertion(client_id, pem, TOKEN_URL, kid))))[1]
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    assert (await anon.get(f"{FHIR}/Patient", headers=headers)).status_code == 200
    registry = ClientRegistry(settings.db_path)  # as `gateway clients revoke` does, from another process
    registry.revoke(client_id)
    registry.close()
    status, body = await token_error(anon, form(client_assertion(client_id, pem, TOKEN_URL, kid)))
    assert (status, body["error_description"]) == (401, "this client has been revoked")
    anon._transport.app.state.auth.registry._revoked_at = 0.0  # skip the ≤2 s re-read interval
    r = await anon.get(f"{FHIR}/Patient", headers=headers)
    assert r.status_code == 401 and "revoked" in r.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize("data,error", [
    ({"grant_type": "password"}, "unsupported_grant_type"),
    ({"client_assertion_type": "urn:other"}, "invalid_request"),
    ({"client_assertion": ""}, "invalid_request"),
    ({"scope": "patient/*.read"}, "invalid_scope"),
    ({"scope": "system/Observation.rs?category=vital-signs"}, "invalid_scope"),
])
async def test_malformed_token_requests_get_the_oauth_error(anon, settings, data, error):
    client_id, pem, kid = register_client(settings.db_path)
    status, body = await token_error(anon, form(client_assertion(client_id, pem, TOKEN_URL, kid), **data))
    assert (status, body["error"]) == (400, error), body


async def test_scopes_are_narrowed_to_what_the_client_may_have(anon, settings):
    client_id, pem, kid = register_client(settings.db_path, scopes="system/Patient.rs system/Task.cruds")
    status, body = await token_error(anon, form(client_assertion(client_id, pem, TOKEN_URL, kid),
                                               scope="system/*.cruds system/CarePlan.rs"))
    assert status == 200
    assert set(body["scope"].split()) == {"system/Patient.rs", "system/Task.cruds"}


async def test_scope_the_client_may_not_have_is_refused(anon, settings):
    client_id, pem, kid = register_client(settings.db_path, scopes="system/Patient.rs")
    status, body = await token_error(anon, form(client_assertion(client_id, pem, TOKEN_URL, kid),
                                               scope="system/Task.c"))
    assert (status, body["error"]) == (400, "invalid_scope")


# -- bearer tokens on FHIR requests ----------------------------------------------------------
async def test_expired_access_token_gets_401(anon, settings):
    secret = ClientRegistry(settings.db_path).signing_secret()
    now = int(time.time())
    expired = jwt.encode({"iss": ISSUER, "sub": "c", "aud": f"http://test{FHIR}", "exp": now - 10, "iat": now - 310,
                          "org": TEST_ORG, "scope": "system/*.cruds"}, secret, algorithm="HS256")
    r = await anon.get(f"{FHIR}/Patient", headers={"Authorization": f"Bearer {expired}"})
    assert r.status_code == 401 and "expired" in r.json()["issue"][0]["diagnostics"]


async def test_access_token_for_another_server_gets_401(anon, settings):
    token = await get_token(anon, settings.db_path)
    r = await anon.get(f"{FHIR}/Patient", headers={"Authorization": f"Bearer {token}", "Host": "localhost"})
    assert r.status_code == 401 and "audience" in r.json()["issue"][0]["diagnostics"]


async def test_forged_access_token_gets_401(anon, settings):
    token = await get_token(anon, settings.db_path, organization="SE2120000803-KOM1")
    claims = jwt.decode(token, options={"verify_signature": False})
    forged = jwt.encode({**claims, "org": "SE2321000016-REG1"}, "not-the-secret-but-32-bytes-long!", algorithm="HS256")
    r = await anon.get(f"{FHIR}/Patient", headers={"Authorization": f"Bearer {forged}"})
    assert r.status_code == 401 and "bad signature" in r.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer", "Bearer not-a-jwt", "token abc"])
async def test_malformed_authorization_header_gets_401(anon, header):
    r = await anon.get(f"{FHIR}/Patient", headers={"Authorization": header})
    assert r.status_code == 401
    assert r.json()["resourceType"] == "OperationOutcome"


async def test_scope_limits_types_and_interactions_with_403(anon, settings):
    token = await get_token(anon, settings.db_path, scope="system/Patient.rs")
    headers = {**FHIR_JSON, "Authorization": f"Bearer {token}"}
    assert (await anon.get(f"{FHIR}/Patient", headers=headers)).status_code == 200
    r = await anon.post(f"{FHIR}/Patient", json=patient(), headers=headers)
    assert r.status_code == 403 and "system/Patient.c" in r.json()["issue"][0]["diagnostics"]
    assert (await anon.get(f"{FHIR}/Task", headers=headers)).status_code == 403
    assert (await anon.get(f"{FHIR}/_history", headers=headers)).status_code == 403  # needs system/*.s
