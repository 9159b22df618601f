"""Snapshots: base elements from the R4 models, the differential laid over them, and the
committed StructureDefinitions in step with their differentials."""
import json

import pytest

from gateway.fhir.types import SUPPORTED_TYPES
from gateway.profiles_cli import with_snapshot
from gateway.settings import REPO_PROFILES
from gateway.validation.snapshot import base_elements, generate_snapshot

PROFILE_FILES = sorted(REPO_PROFILES.glob("StructureDefinition-*.json"))


def by_id(elements):
    return {e["id"]: e for e in elements}


def test_base_snapshot_has_r4_cardinality_types_and_backbone_children():
    task = by_id(base_elements("Task"))
    assert (task["Task.status"]["min"], task["Task.status"]["max"]) == (1, "1")
    assert task["Task.input"]["max"] == "*" and task["Task.input"]["type"] == [{"code": "BackboneElement"}]
    assert task["Task.restriction.period"]["type"] == [{"code": "Period"}]
    assert task["Task.id"]["base"]["path"] == "Resource.id"
    assert "http://hl7.org/fhir/StructureDefinition/Organization" in task["Task.owner"]["type"][0]["targetProfile"]
    obs = by_id(base_elements("Observation"))
    assert {t["code"] for t in obs["Observation.effective[x]"]["type"]} == {"dateTime", "Period", "Timing", "instant"}


def test_recursive_backbone_elements_use_content_reference():
    q = by_id(base_elements("Questionnaire"))
    assert q["Questionnaire.item.item"]["contentReference"] == "#Questionnaire.item"


@pytest.mark.parametrize("rtype", SUPPORTED_TYPES)
def test_every_stored_type_has_a_base_snapshot_with_typed_elements(rtype):
    elements = base_elements(rtype)
    assert elements[0]["id"] == rtype
    assert all("type" in e or "contentReference" in e for e in elements[1:])


def test_differential_overrides_base_and_slices_follow_their_sliced_element():
    sd = {"type": "Patient", "differential": {"element": [
        {"id": "Patient.identifier", "path": "Patient.identifier", "slicing": {"rules": "open"}},
        {"id": "Patient.identifier:pnr", "path": "Patient.identifier", "sliceName": "pnr", "min": 1, "max": "1"},
        {"id": "Patient.identifier:pnr.system", "path": "Patient.identifier.system", "fixedUri": "urn:x"},
        {"id": "Patient.gender", "path": "Patient.gender", "min": 1}]}}
    ids = [e["id"] for e in generate_snapshot(sd)]
    assert ids.index("Patient.identifier") < ids.index("Patient.identifier:pnr") < \
        ids.index("Patient.identifier:pnr.system") < ids.index("Patient.active")
    snap = by_id(generate_snapshot(sd))
    assert snap["Patient.gender"]["min"] == 1 and snap["Patient.gender"]["base"]["min"] == 0
    assert snap["Patient.identifier:pnr"]["type"] == [{"code": "Identifier"}]
    assert "slicing" not in snap["Patient.identifier:pnr"]
    assert snap["Patient.identifier:pnr.system"]["type"] == [{"code": "uri"}]


@pytest.mark.parametrize("path", PROFILE_FILES, ids=[p.stem for p in PROFILE_FILES])
def test_committed_snapshot_is_generated_from_the_differential(path):
    """Run `gateway profiles snapshot` after editing a differential."""
    sd = json.loads(path.read_text(encoding="utf-8"))
    assert sd.get("snapshot") == with_snapshot(sd)["snapshot"]


def test_sub_extensions_of_an_extension_slice_are_typed_and_url_is_required():
    sd = {"type": "Encounter", "differential": {"element": [
        {"id": "Encounter.extension:planned", "path": "Encounter.extension", "sliceName": "planned",
         "type": [{"code": "Extension", "profile": ["urn:ext"]}]},
        {"id": "Encounter.extension:planned.extension:date", "path": "Encounter.extension.extension",
         "sliceName": "date", "min": 1, "max": "1"},
        {"id": "Encounter.extension:planned.extension:date.url", "path": "Encounter.extension.extension.url",
         "fixedUri": "date"},
        {"id": "Encounter.extension:planned.extension:date.value[x]",
         "path": "Encounter.extension.extension.value[x]", "min": 1}]}}
    snap = by_id(generate_snapshot(sd))
    assert snap["Encounter.extension:planned.extension:date"]["type"] == [{"code": "Extension"}]
    url = snap["Encounter.extension:planned.extension:date.url"]
    assert (url["min"], url["max"], url["type"]) == (1, "1", [{"code": "uri"}])
    codes = {t["code"] for t in snap["Encounter.extension:planned.extension:date.value[x]"]["type"]}
    assert {"dateTime", "base64Binary", "uuid", "CodeableConcept"} <= codes
    assert not codes & {"encodedBytes", "uuidVersion", "CodeableReference"}  # model names, R4B-only types
