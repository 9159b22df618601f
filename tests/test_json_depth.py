"""JSON nesting: every parser path refuses a body nested deeper than GATEWAY_MAX_JSON_DEPTH with a
400 that names the limit (it used to be a 500 from a RecursionError at ~400 levels), and nothing
in the write or read path breaks on data at the limit, up to the highest limit one may set."""
from __future__ import annotations

import base64
import json
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from conftest import FHIR, FHIR_JSON, PATCH_JSON, assert_outcome, create, patient, running_gateway, search
from gateway.errors import MalformedBody
from gateway.fhir.canonical import DEFAULT_MAX_JSON_DEPTH, MAX_JSON_DEPTH_CEILING, check_depth, parse_json
from gateway.settings import Settings


def depth_of(value: object) -> int:
    """Reference nesting depth (recursive: test data stays shallow enough)."""
    if isinstance(value, dict):
        return 1 + max((depth_of(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((depth_of(v) for v in value), default=0)
    return 0


def nested_extension(total_depth: int) -> dict:
    """A valid extension that makes a Patient exactly ``total_depth`` levels deep (extensions nest
    extensions: the one legitimate unbounded shape in FHIR)."""
    inner: dict = {"url": "http://example.org/e", "valueCodeableConcept": {"coding": [{"system": "http://x",
                                                                                        "code": "c"}]}}
    for _ in range((total_depth - 6) // 2):
        inner = {"url": "http://example.org/e", "extension": [inner]}
    return inner


def deep_patient(total_depth: int) -> dict:
    resource = {**patient(), "extension": [nested_extension(total_depth)]}
    assert depth_of(resource) == total_depth
    return resource


def brackets(levels: int, inner: bytes = b"") -> bytes:
    return b"[" * levels + inner + b"]" * levels


def deep_body(levels: int, inner: bytes = b"1") -> bytes:
    """A Patient whose ``extension`` holds ``levels`` nested arrays."""
    return b'{"resourceType":"Patient","extension":' + brackets(levels, inner) + b"}"


# -- the limit on every parser path ---------------------------------------------------------
@pytest.mark.parametrize("levels", [DEFAULT_MAX_JSON_DEPTH, 450, 100_000])
@pytest.mark.parametrize("inner", [b"1", b"1.5", b"123456789012345678901234567890"],
                         ids=["int", "float", "bigint"])  # float and big int take the exact-decimal parser
async def test_json_nested_beyond_the_limit_is_400_naming_the_limit_on_every_write_path(client, levels, inner):
    p = await create(client, patient())
    body = deep_body(levels, inner)
    deep_doc = b'[{"op":"add","path":"/extension","value":' + brackets(levels, inner) + b"}]"
    bundle = (b'{"resourceType":"Bundle","type":"transaction","entry":[{"request":{"method":"POST","url":"Patient"},'
              b'"resource":' + body + b"}]}")
    binary = base64.b64encode(deep_doc).decode()
    patch_entry = json.dumps({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "PATCH", "url": f"Patient/{p['id']}"},
         "resource": {"resourceType": "Binary", "contentType": "application/json-patch+json", "data": binary}}]})
    parameters = b'{"resourceType":"Parameters","parameter":[{"name":"resource","resource":' + body + b"}]}"
    attempts = [
        ("create", client.post(f"{FHIR}/Patient", content=body, headers=FHIR_JSON)),
        ("update", client.put(f"{FHIR}/Patient/{p['id']}", content=body, headers=FHIR_JSON)),
        ("conditional update", client.put(f"{FHIR}/Patient?identifier=x|y", content=body, headers=FHIR_JSON)),
        ("patch", client.patch(f"{FHIR}/Patient/{p['id']}", content=deep_doc, headers=PATCH_JSON)),
        ("transaction", client.post(FHIR, content=bundle, headers=FHIR_JSON)),
        ("$validate", client.post(f"{FHIR}/Patient/$validate", content=parameters, headers=FHIR_JSON)),
        ("$status", client.post(f"{FHIR}/Subscription/$status", content=parameters, headers=FHIR_JSON)),
    ]
    for name, request in attempts:
        r = await request
        assert_outcome(r, 400, "levels deep", str(DEFAULT_MAX_JSON_DEPTH), "GATEWAY_MAX_JSON_DEPTH"), name
    r = await client.post(FHIR, content=patch_entry.encode(), headers=FHIR_JSON)  # the patch inside a Binary
    assert r.status_code == 200, r.text
    entry = r.json()["entry"][0]["response"]
    assert entry["status"].startswith("400") and "GATEWAY_MAX_JSON_DEPTH" in json.dumps(entry["outcome"])
    assert (await client.get(f"{FHIR}/Patient/{p['id']}")).json()["meta"]["versionId"] == "1"


async def test_a_resource_at_the_limit_is_stored_read_searched_patched_and_bundled(client):
    deep = deep_patient(DEFAULT_MAX_JSON_DEPTH)
    stored = await create(client, deep)
    assert (await client.get(f"{FHIR}/Patient/{stored['id']}")).json()["extension"] == deep["extension"]
    assert (await search(client, f"Patient?_id={stored['id']}&_elements=extension"))["entry"]
    r = await client.patch(f"{FHIR}/Patient/{stored['id']}", json=[{"op": "add", "path": "/active", "value": True}],
                           headers=PATCH_JSON)
    assert r.status_code == 200, r.text
    r = await client.post(f"{FHIR}/Patient/$validate", json=deep, headers=FHIR_JSON)
    assert r.status_code == 200, r.text


async def test_a_patch_that_would_nest_the_resource_beyond_the_limit_is_400(client):
    stored = await create(client, deep_patient(DEFAULT_MAX_JSON_DEPTH - 2))
    value = nested_extension(DEFAULT_MAX_JSON_DEPTH)  # each part within the limit, together beyond it
    r = await client.patch(f"{FHIR}/Patient/{stored['id']}",
                           json=[{"op": "add", "path": "/extension/0/extension/-", "value": value}],
                           headers=PATCH_JSON)
    assert_outcome(r, 400, "as patched", "GATEWAY_MAX_JSON_DEPTH")
    assert (await client.get(f"{FHIR}/Patient/{stored['id']}")).json()["meta"]["versionId"] == "1"


async def test_the_highest_configurable_limit_is_safe_for_every_write_and_read_path(tmp_path):
    """At MAX_JSON_DEPTH_CEILING, validation, FHIRPath indexing, JSON Patch, bundles and orjson
    still work: no recursion anywhere is closer to its bound than the setting allows."""
    settings = Settings(db_path=str(tmp_path / "g.sqlite"), max_json_depth=MAX_JSON_DEPTH_CEILING)
    async with running_gateway(settings) as client:
        deep = deep_patient(MAX_JSON_DEPTH_CEILING)
        stored = await create(client, deep)
        assert (await client.get(f"{FHIR}/Patient/{stored['id']}")).status_code == 200
        r = await client.patch(f"{FHIR}/Patient/{stored['id']}", json=[{"op": "add", "path": "/active",
                                                                          "value": True}], headers=PATCH_JSON)
        assert r.status_code == 200, r.text
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
            {"request": {"method": "POST", "url": "Patient"}, "resource": deep_patient(MAX_JSON_DEPTH_CEILING - 4)}]}
        r = await client.post(FHIR, json=bundle, headers=FHIR_JSON)
        assert r.status_code == 200, r.text
        r = await client.get(f"{FHIR}/Patient/{stored['id']}/_history")
        assert r.status_code == 200
        r = await client.post(f"{FHIR}/Patient", content=deep_body(MAX_JSON_DEPTH_CEILING + 1), headers=FHIR_JSON)
        assert_outcome(r, 400, str(MAX_JSON_DEPTH_CEILING))


def test_the_limit_setting_is_bounded_by_what_the_serialiser_can_write():
    with pytest.raises(ValueError, match="GATEWAY_MAX_JSON_DEPTH"):
        Settings(max_json_depth=MAX_JSON_DEPTH_CEILING + 1)


# -- the parser itself, fuzzed --------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**80), max_value=2**80)
    | st.decimals(min_value=-10**9, max_value=10**9, places=3) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=40)


def _to_json(value: object) -> str:
    return json.dumps(value, default=lambda d: float(d) if isinstance(d, Decimal) else d)


@hsettings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=json_values, limit=st.integers(min_value=2, max_value=12))
def test_parse_json_accepts_exactly_the_documents_within_the_depth_limit(value, limit):
    body = _to_json(value).encode()
    if depth_of(value) > limit:
        with pytest.raises(MalformedBody, match="levels deep"):
            parse_json(body, limit)
    else:
        parse_json(body, limit)  # no error, whatever the mix of floats, big ints and nesting


@hsettings(max_examples=600, deadline=None)
@given(body=st.binary(max_size=200) | st.text(alphabet='[]{}":,0123456789.eE-+ntrufalse\\u', max_size=200)
       .map(str.encode))
def test_parse_json_answers_any_bytes_with_a_value_or_a_400(body):
    try:
        parse_json(body, 8)
    except MalformedBody:
        pass


@hsettings(max_examples=200, deadline=None)
@given(levels=st.integers(min_value=1, max_value=5000), opener=st.sampled_from(["[", '{"a":']),
       tail=st.sampled_from(["1", "1.5", "99999999999999999999999", "tru"]))
def test_parse_json_never_recurses_into_deep_text(levels, opener, tail):
    closer = "]" if opener == "[" else "}"
    body = (opener * levels + tail + closer * levels).encode()
    try:
        parse_json(body, DEFAULT_MAX_JSON_DEPTH)
    except MalformedBody as exc:
        assert levels > DEFAULT_MAX_JSON_DEPTH or tail == "tru", exc


def test_check_depth_walks_any_depth_without_recursion():
    value: list = []
    for _ in range(100_000):
        value = [value]
    with pytest.raises(MalformedBody):
        check_depth(value, DEFAULT_MAX_JSON_DEPTH, "This")
