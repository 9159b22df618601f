"""ConceptMaps served read-only from profiles/conceptmaps/, and ``ConceptMap/$translate`` per R4
(http://hl7.org/fhir/R4/conceptmap-operation-translate.html): type and instance level, GET and
POST, matches with equivalence, concept and source, unmatched and unmapped codes, reverse, and an
OperationOutcome with the right 4xx for every mistake."""
from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
from fhir.resources.R4B import get_fhir_model_class

from conftest import FHIR, FHIR_JSON, assert_outcome
from gateway.app import create_app
from gateway.settings import REPO_PROFILES
from gateway.terminology.conceptmaps import ConceptMapError

WARDS = "https://samverkan.example.se/fhir/ConceptMap/region-halland-vardenhet-hsa"
ACTIVITIES = "https://samverkan.example.se/fhir/ConceptMap/region-halland-aktivitet"
WARD = "https://region-halland.example/fhir/CodeSystem/vardenhet"
LOCAL_ACTIVITY = "https://region-halland.example/fhir/CodeSystem/aktivitet"
HSA = "urn:oid:1.2.752.29.4.19"
ACTIVITY = "https://samverkan.example.se/fhir/CodeSystem/samverkan-activity"
TRANSLATE = f"{FHIR}/ConceptMap/$translate"


def _out(body: dict) -> tuple[bool, str, list[dict]]:
    """(result, message, matches as {part name: value}) of a $translate answer, checked as an R4 Parameters."""
    get_fhir_model_class("Parameters").model_validate(body)
    params = body["parameter"]
    result = next(p["valueBoolean"] for p in params if p["name"] == "result")
    message = next((p["valueString"] for p in params if p["name"] == "message"), "")
    matches = [{part["name"]: next(v for k, v in part.items() if k.startswith("value") or k == "part")
                for part in p["part"]} for p in params if p["name"] == "match"]
    return result, message, matches


async def _translate(client, **params) -> tuple[bool, str, list[dict]]:
    r = await client.get(TRANSLATE, params=params)
    assert r.status_code == 200, r.text
    return _out(r.json())


async def _post(client, parameters: list[dict], path: str = TRANSLATE):
    return await client.post(path, json={"resourceType": "Parameters", "parameter": parameters}, headers=FHIR_JSON)


def _inline(group: dict, url: str = "https://example.org/fhir/ConceptMap/inline") -> dict:
    """A one-group map (R4 needs an element in every group: a placeholder unless the group has its own)."""
    group = {"element": [{"code": "PLACEHOLDER", "target": [{"code": "P", "equivalence": "equal"}]}], **group}
    return {"resourceType": "ConceptMap", "id": "inline", "url": url, "status": "draft", "group": [group]}


# -- ConceptMap as a conformance resource -------------------------------------------------------
async def test_conceptmaps_from_profiles_are_readable_by_id_and_searchable_by_url_and_systems(client):
    r = await client.get(f"{FHIR}/ConceptMap/region-halland-vardenhet-hsa")
    assert r.status_code == 200 and r.json()["url"] == WARDS
    by_url = (await client.get(f"{FHIR}/ConceptMap", params={"url": ACTIVITIES})).json()
    assert [e["resource"]["id"] for e in by_url["entry"]] == ["region-halland-aktivitet"]
    by_source = (await client.get(f"{FHIR}/ConceptMap", params={"source-system": WARD})).json()
    assert [e["resource"]["id"] for e in by_source["entry"]] == ["region-halland-vardenhet-hsa"]
    by_target = (await client.get(f"{FHIR}/ConceptMap", params={"target-system": ACTIVITY})).json()
    assert [e["resource"]["id"] for e in by_target["entry"]] == ["region-halland-aktivitet"]
    by_scope = (await client.get(f"{FHIR}/ConceptMap", params={
        "target-uri": "https://samverkan.example.se/fhir/ValueSet/samverkan-task-code"})).json()
    assert by_scope["total"] == 1


async def test_conceptmaps_are_read_only(client):
    stored = (await client.get(f"{FHIR}/ConceptMap/region-halland-aktivitet")).json()
    r = await client.put(f"{FHIR}/ConceptMap/region-halland-aktivitet", json=stored, headers=FHIR_JSON)
    assert_outcome(r, 405, "read-only")


def _profiles_with(tmp_path, name: str, content: str):
    profiles = tmp_path / "profiles"
    shutil.copytree(REPO_PROFILES, profiles)
    (profiles / "conceptmaps" / name).write_text(content, encoding="utf-8")
    return profiles


BAD_MAPS = {
    "not JSON": "{\"resourceType\": \"ConceptMap\",",
    "group without target": json.dumps(_inline({"source": WARD, "element": [{"code": "A", "target": [
        {"code": "B", "equivalence": "equal"}]}]})),
    "narrower without comment (cmd-1)": json.dumps(_inline({"source": WARD, "target": HSA, "element": [
        {"code": "A", "target": [{"code": "B", "equivalence": "narrower"}]}]})),
    "an equivalence R4 does not have": json.dumps(_inline({"source": WARD, "target": HSA, "element": [
        {"code": "A", "target": [{"code": "B", "equivalence": "same"}]}]})),
    "dependsOn": json.dumps(_inline({"source": WARD, "target": HSA, "element": [{"code": "A", "target": [
        {"code": "B", "equivalence": "equal", "dependsOn": [{"property": "http://x", "value": "y"}]}]}]})),
    "a url already held": json.dumps({**_inline({"source": WARD, "target": HSA}), "url": WARDS,
                                      "version": "0.1.0"}),
    "other-map to a map not held": json.dumps(_inline({"source": WARD, "target": HSA, "unmapped": {
        "mode": "other-map", "url": "https://example.org/ConceptMap/missing"}})),
}


@pytest.mark.parametrize("problem", sorted(BAD_MAPS))
def test_a_malformed_conceptmap_stops_start_up_naming_its_file(tmp_path, settings, problem):
    profiles = _profiles_with(tmp_path, "ConceptMap-broken.json", BAD_MAPS[problem])
    with pytest.raises(ConceptMapError, match="ConceptMap-broken.json"):
        create_app(replace(settings, profiles_dir=profiles))


# -- $translate: the answer -----------------------------------------------------------------------
async def test_translate_by_url_system_and_code_answers_the_match_with_equivalence_concept_and_source(client):
    result, message, matches = await _translate(client, url=WARDS, system=WARD, code="MED1")
    assert result is True and "MED1" in message
    assert matches == [{"equivalence": "equivalent", "source": WARDS, "concept": {
        "system": HSA, "code": "SE2321000115-EXMED1", "display": "Medicinavdelning 1 HSH (exempel)"}}]


async def test_translate_at_instance_level_uses_that_map_only(client):
    r = await client.get(f"{FHIR}/ConceptMap/region-halland-aktivitet/$translate",
                         params={"system": LOCAL_ACTIVITY, "code": "UK"})
    result, _, matches = _out(r.json())
    assert result and matches[0]["concept"]["code"] == "utskrivningsklar" and matches[0]["source"] == ACTIVITIES
    r = await client.get(f"{FHIR}/ConceptMap/region-halland-vardenhet-hsa/$translate",
                         params={"system": LOCAL_ACTIVITY, "code": "UK"})
    result, message, matches = _out(r.json())
    assert result is False and matches == [] and "No ConceptMap" in message


async def test_translate_without_a_map_searches_every_map_by_system_and_targetsystem(client):
    result, _, matches = await _translate(client, system=WARD, code="GER", targetsystem=HSA)
    assert result and [m["concept"]["code"] for m in matches] == ["SE2321000115-EXGER1"]
    result, message, matches = await _translate(client, system=WARD, code="GER", targetsystem=ACTIVITY)
    assert result is False and matches == [] and ACTIVITY in message


async def test_translate_chooses_maps_by_their_source_and_target_value_sets(client):
    result, _, matches = await _translate(
        client, source="https://region-halland.example/fhir/ValueSet/aktiviteter",
        target="https://samverkan.example.se/fhir/ValueSet/samverkan-task-code", system=LOCAL_ACTIVITY, code="SIP")
    assert result and matches[0]["concept"]["code"] == "sip-mote"
    result, _, matches = await _translate(client, source="https://example.org/ValueSet/other",
                                          system=LOCAL_ACTIVITY, code="SIP")
    assert result is False and matches == []


async def test_post_takes_the_parameters_in_a_parameters_body(client):
    r = await _post(client, [{"name": "url", "valueUri": ACTIVITIES}, {"name": "system", "valueUri": LOCAL_ACTIVITY},
                             {"name": "code", "valueCode": "FVK"}])
    assert r.status_code == 200, r.text
    result, _, matches = _out(r.json())
    assert result and matches[0]["concept"]["code"] == "fast-vardkontakt-utsedd"


async def test_post_translates_a_coding_and_each_coding_of_a_codeable_concept(client):
    r = await _post(client, [{"name": "coding", "valueCoding": {"system": WARD, "code": "ORT3"}}])
    assert _out(r.json())[2][0]["concept"]["code"] == "SE2321000115-EXORT3"
    r = await _post(client, [{"name": "codeableConcept", "valueCodeableConcept": {"coding": [
        {"system": "http://snomed.info/sct", "code": "1"}, {"system": LOCAL_ACTIVITY, "code": "PLU"}]}}])
    result, _, matches = _out(r.json())
    assert result and [m["concept"]["code"] for m in matches] == ["planerat-utskrivningsdatum"]


async def test_a_code_the_map_says_is_unmatched_is_a_match_without_concept_and_result_false(client):
    result, message, matches = await _translate(client, url=WARDS, system=WARD, code="KIR4")
    assert result is False
    assert matches == [{"equivalence": "unmatched", "source": WARDS}]
    assert "stängdes" in message  # the map's comment says why


async def test_a_code_not_in_the_map_is_result_false_with_a_message_and_no_match(client):
    result, message, matches = await _translate(client, url=WARDS, system=WARD, code="NOSUCH")
    assert result is False and matches == [] and "not mapped" in message


async def test_wider_and_narrower_maps_say_so(client):
    _, _, matches = await _translate(client, system=WARD, code="AKUTOBS")
    assert [m["equivalence"] for m in matches] == ["wider"]
    _, _, matches = await _translate(client, system=LOCAL_ACTIVITY, code="HEMBES")
    assert [(m["equivalence"], m["concept"]["code"]) for m in matches] == [("narrower", "enstaka-hembesok")]


async def test_reverse_answers_the_source_codes_with_the_equivalence_turned_around(client):
    result, _, matches = await _translate(client, system=HSA, code="SE2321000115-EXAKM", reverse="true")
    assert result and matches == [{"equivalence": "narrower", "source": WARDS, "concept": {
        "system": WARD, "code": "AKUTOBS", "display": "Akutens observationsplatser, Halmstad"}}]


# -- unmapped modes (inline maps: POST conceptMap) -------------------------------------------------
async def _inline_translate(client, group: dict, code: str) -> tuple[bool, str, list[dict]]:
    r = await _post(client, [{"name": "conceptMap", "resource": _inline(group)},
                             {"name": "system", "valueUri": WARD}, {"name": "code", "valueCode": code}])
    assert r.status_code == 200, r.text
    return _out(r.json())


async def test_unmapped_mode_provided_answers_the_code_itself_in_the_target_system(client):
    result, _, matches = await _inline_translate(client, {"source": WARD, "target": HSA,
                                                          "unmapped": {"mode": "provided"}}, "SE2321000115-EXMED1")
    assert result and matches[0]["concept"] == {"system": HSA, "code": "SE2321000115-EXMED1"}


async def test_unmapped_mode_fixed_answers_the_fixed_code(client):
    group = {"source": WARD, "target": HSA, "unmapped": {"mode": "fixed", "code": "SE2321000115-EXHSH",
                                                         "display": "Sjukhuset"}}
    result, _, matches = await _inline_translate(client, group, "ANY")
    assert result and matches[0]["equivalence"] == "inexact"
    assert matches[0]["concept"] == {"system": HSA, "code": "SE2321000115-EXHSH", "display": "Sjukhuset"}


async def test_unmapped_mode_other_map_answers_what_that_map_says(client):
    result, _, matches = await _inline_translate(client, {"source": WARD, "target": HSA, "unmapped": {
        "mode": "other-map", "url": WARDS}}, "MED2")
    assert result and matches[0]["concept"]["code"] == "SE2321000115-EXMED2" and matches[0]["source"] == WARDS


async def test_unmapped_does_not_apply_to_a_code_the_map_says_is_unmatched(client):
    group = {"source": WARD, "target": HSA, "element": [{"code": "OLD", "target": [{"equivalence": "unmatched"}]}],
             "unmapped": {"mode": "fixed", "code": "SE2321000115-EXHSH"}}
    result, _, matches = await _inline_translate(client, group, "OLD")
    assert result is False and [m["equivalence"] for m in matches] == ["unmatched"]


# -- errors -------------------------------------------------------------------------------------
async def test_an_unknown_map_is_404(client):
    assert_outcome(await client.get(TRANSLATE, params={"url": "https://example.org/nope", "system": WARD,
                                                       "code": "MED1"}), 404, "https://example.org/nope")
    assert_outcome(await client.get(f"{FHIR}/ConceptMap/nope/$translate", params={"system": WARD, "code": "MED1"}),
                   404, "ConceptMap/nope")
    assert_outcome(await client.get(TRANSLATE, params={"url": WARDS, "conceptMapVersion": "9", "system": WARD,
                                                       "code": "MED1"}), 404, "version 9")


async def test_a_missing_code_is_400(client):
    assert_outcome(await client.get(TRANSLATE, params={"url": WARDS, "system": WARD}), 400, "code")
    assert_outcome(await client.get(TRANSLATE, params={"url": WARDS, "code": "MED1"}), 400, "system")
    assert_outcome(await _post(client, [{"name": "coding", "valueCoding": {"code": "MED1"}}]), 400, "system")


@pytest.mark.parametrize("query, words", [
    ("code=MED1&code=MED2&system=s", ("more than once",)),
    ("code=MED1&system=s&colour=red", ("colour",)),
    ("code=MED1&system=s&reverse=maybe", ("reverse",)),
    ("conceptMapVersion=1&code=MED1&system=s", ("url",)),
])
async def test_malformed_parameters_are_400_saying_what_to_fix(client, query, words):
    assert_outcome(await client.get(f"{TRANSLATE}?{query}"), 400, *words)


async def test_an_unknown_parameter_is_ignored_with_handling_lenient(client):
    r = await client.get(f"{TRANSLATE}?code=MED1&system={WARD}&colour=red", headers={"Prefer": "handling=lenient"})
    assert r.status_code == 200 and _out(r.json())[0] is True


async def test_a_body_that_is_not_usable_parameters_is_400(client):
    r = await client.post(TRANSLATE, json={"resourceType": "Patient"}, headers=FHIR_JSON)
    assert_outcome(r, 400, "Parameters")
    r = await _post(client, [{"name": "code", "valueString": 7}])
    assert_outcome(r, 400, "valueCode")
    r = await _post(client, [{"name": "conceptMap", "resource": _inline({"source": WARD})},
                             {"name": "system", "valueUri": WARD}, {"name": "code", "valueCode": "A"}])
    assert_outcome(r, 400, "conceptMap", "target")


async def test_translate_is_a_conceptmap_operation_only(client):
    assert_outcome(await client.get(f"{FHIR}/Task/$translate", params={"system": WARD, "code": "MED1"}), 404,
                   "$translate")
