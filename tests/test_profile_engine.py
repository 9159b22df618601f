"""The profile engine: each differential rule kind, checked on small inline StructureDefinitions."""
import pytest

from gateway.validation.profiles import compile_profile
from gateway.validation.terminology import Terminology

CS = "https://samverkan.example.se/fhir/CodeSystem/test-activity"
VS = "https://samverkan.example.se/fhir/ValueSet/test-activity"
PNR = "http://electronichealth.se/identifier/personnummer"
TERMINOLOGY = Terminology([
    {"resourceType": "CodeSystem", "url": CS, "content": "complete",
     "concept": [{"code": "kallelse-sip"}, {"code": "sip-mote"}]},
    {"resourceType": "ValueSet", "url": VS, "compose": {"include": [{"system": CS}]}},
])

TASK = compile_profile({
    "url": "urn:test:task", "type": "Task", "differential": {"element": [
        {"id": "Task", "path": "Task", "constraint": [{
            "key": "sam-task-1", "severity": "error", "human": "statusReason is required when the task is rejected",
            "expression": "status = 'rejected' implies statusReason.exists()"}]},
        {"id": "Task.code", "path": "Task.code", "min": 1, "binding": {"strength": "required", "valueSet": VS}},
        {"id": "Task.owner", "path": "Task.owner", "min": 1,
         "type": [{"code": "Reference", "targetProfile": ["http://hl7.org/fhir/StructureDefinition/Organization"]}]},
        {"id": "Task.restriction.period", "path": "Task.restriction.period", "min": 1},
        {"id": "Task.input", "path": "Task.input", "max": "2"},
    ]}})
PATIENT = compile_profile({
    "url": "urn:test:patient", "type": "Patient", "differential": {"element": [
        {"id": "Patient.identifier", "path": "Patient.identifier", "slicing": {
            "discriminator": [{"type": "value", "path": "system"}], "rules": "open"}},
        {"id": "Patient.identifier:personnummer", "path": "Patient.identifier", "sliceName": "personnummer",
         "min": 1, "max": "1"},
        {"id": "Patient.identifier:personnummer.system", "path": "Patient.identifier.system", "fixedUri": PNR},
        {"id": "Patient.identifier:personnummer.use", "path": "Patient.identifier.use", "min": 1},
        {"id": "Patient.gender", "path": "Patient.gender", "patternCode": "female"},
    ]}})


def good_task(**changes):
    task = {"resourceType": "Task", "status": "requested", "intent": "order",
            "code": {"coding": [{"system": CS, "code": "kallelse-sip"}]},
            "owner": {"reference": "Organization/kommun"}, "restriction": {"period": {"end": "2024-05-04"}}}
    task.update(changes)
    return {k: v for k, v in task.items() if v is not None}


def paths(issues):
    return sorted(p for i in issues for p in i.expression)


def test_a_conforming_task_has_no_issues():
    assert TASK.validate(good_task(), TERMINOLOGY) == []


def test_min_cardinality_names_the_missing_element():
    assert paths(TASK.validate(good_task(owner=None), TERMINOLOGY)) == ["Task.owner"]


def test_min_cardinality_inside_a_present_parent_only():
    """restriction.period is required where restriction exists; a missing restriction is a
    different element's business."""
    assert paths(TASK.validate(good_task(restriction={"repetitions": 1}), TERMINOLOGY)) == ["Task.restriction.period"]


def test_max_cardinality():
    task = good_task(input=[{"type": {"text": "x"}, "valueString": str(i)} for i in range(3)])
    issues = TASK.validate(task, TERMINOLOGY)
    assert paths(issues) == ["Task.input"] and "at most 2" in issues[0].diagnostics


def test_required_binding_rejects_a_code_outside_the_value_set():
    task = good_task(code={"coding": [{"system": CS, "code": "fika"}]})
    issues = TASK.validate(task, TERMINOLOGY)
    assert paths(issues) == ["Task.code"] and VS in issues[0].diagnostics


def test_reference_target_type_is_checked():
    issues = TASK.validate(good_task(owner={"reference": "Patient/p1"}), TERMINOLOGY)
    assert paths(issues) == ["Task.owner"] and "Organization" in issues[0].diagnostics


def test_fhirpath_invariant_on_the_resource_names_its_key():
    issues = TASK.validate(good_task(status="rejected"), TERMINOLOGY)
    assert [i.diagnostics.split(":")[1].strip() for i in issues] == ["sam-task-1"]
    assert TASK.validate(good_task(status="rejected", statusReason={"text": "ej aktuellt"}), TERMINOLOGY) == []


PNR_ID = {"system": PNR, "value": "191212121212", "use": "official"}
OTHER_ID = {"system": "urn:oid:1.2.752.29.4.19", "value": "SE2321000016-15CQ"}


@pytest.mark.parametrize("identifiers,expected", [
    ([PNR_ID, OTHER_ID], []),
    ([OTHER_ID], ["Patient.identifier"]),  # slice min 1: no personnummer
    ([PNR_ID, {**PNR_ID, "value": "199006212386"}], ["Patient.identifier"]),  # slice max 1
])
def test_slice_cardinality_counts_only_matching_members(identifiers, expected):
    assert paths(PATIENT.validate({"resourceType": "Patient", "identifier": identifiers}, TERMINOLOGY)) == expected


def test_rules_inside_a_slice_apply_to_its_members_only():
    """identifier:personnummer.use is required; the HSA identifier without use is fine."""
    no_use = {k: v for k, v in PNR_ID.items() if k != "use"}
    issues = PATIENT.validate({"resourceType": "Patient", "identifier": [OTHER_ID, no_use]}, TERMINOLOGY)
    assert paths(issues) == ["Patient.identifier[1].use"]


def test_pattern_value():
    assert paths(PATIENT.validate({"resourceType": "Patient", "identifier": [PNR_ID], "gender": "male"},
                                  TERMINOLOGY)) == ["Patient.gender"]


def test_extension_slices_are_selected_by_the_extension_url():
    url = "https://samverkan.example.se/fhir/StructureDefinition/planned-discharge"
    enc = compile_profile({"url": "urn:test:enc", "type": "Encounter", "differential": {"element": [
        {"id": "Encounter.extension:planned", "path": "Encounter.extension", "sliceName": "planned",
         "min": 1, "max": "1", "type": [{"code": "Extension", "profile": [url]}]},
        {"id": "Encounter.extension:planned.value[x]", "path": "Encounter.extension.value[x]", "min": 1},
    ]}})
    base = {"resourceType": "Encounter", "status": "in-progress", "class": {"code": "IMP"}}
    assert paths(enc.validate(base, TERMINOLOGY)) == ["Encounter.extension"]
    other = {"url": "urn:other", "valueString": "x"}
    ok = {**base, "extension": [other, {"url": url, "valueDateTime": "2024-05-03"}]}
    assert enc.validate(ok, TERMINOLOGY) == []
    assert paths(enc.validate({**base, "extension": [other, {"url": url}]}, TERMINOLOGY)) == \
        ["Encounter.extension[1].value"]


def test_a_value_set_over_a_fragment_code_system_accepts_codes_outside_the_fragment():
    ksi = "https://samverkan.example.se/fhir/CodeSystem/ksi"
    term = Terminology([
        {"resourceType": "CodeSystem", "url": ksi, "content": "fragment", "concept": [{"code": "A"}]},
        {"resourceType": "CodeSystem", "url": CS, "content": "complete", "concept": [{"code": "kallelse-sip"}]},
        {"resourceType": "ValueSet", "url": "urn:vs:ksi", "compose": {"include": [{"system": ksi}]}},
        {"resourceType": "ValueSet", "url": "urn:vs:ours", "compose": {"include": [{"system": CS}]}},
    ])
    assert term.expansion("urn:vs:ksi").contains(ksi, "B")
    assert not term.expansion("urn:vs:ours").contains(CS, "fika")


def test_versioned_and_absolute_references_are_typed_by_their_resource_type():
    for ref in ("Organization/kommun/_history/3", "https://other.example/fhir/Organization/kommun"):
        assert TASK.validate(good_task(owner={"reference": ref}), TERMINOLOGY) == [], ref


def test_invariants_can_use_percent_resource_and_one_that_fails_to_evaluate_is_an_error():
    prof = compile_profile({"url": "urn:test:t2", "type": "Task", "differential": {"element": [
        {"id": "Task.restriction", "path": "Task.restriction", "constraint": [
            {"key": "t-1", "severity": "error", "human": "owner set when restricted",
             "expression": "%resource.owner.exists()"},
            {"key": "t-2", "severity": "error", "human": "broken", "expression": "period.frobnicate()"}]}]}})
    issues = prof.validate(good_task(owner=None), TERMINOLOGY)
    keys = sorted(i.diagnostics.split(":")[1].strip().split(" ")[0] for i in issues)
    assert keys == ["t-1", "t-2"]


@pytest.mark.parametrize("discriminator", [
    {"type": "value", "path": "type.coding.system"},  # nested path
    {"type": "value", "path": "$this"},
    {"type": "profile", "path": "$this"},
    {"type": "type", "path": "value"},
    {"type": "value", "path": "resolve().name"},
])
def test_a_profile_with_slicing_the_engine_cannot_evaluate_is_refused_at_load(discriminator):
    """Validating such a slice loosely would let invalid resources through without a word."""
    sd = {"url": "urn:test:unsupported", "type": "Patient", "differential": {"element": [
        {"id": "Patient.identifier", "path": "Patient.identifier",
         "slicing": {"discriminator": [discriminator], "rules": "open"}}]}}
    with pytest.raises(ValueError, match="urn:test:unsupported Patient.identifier: discriminator"):
        compile_profile(sd)


def test_a_pattern_on_the_slice_itself_is_refused_at_load():
    sd = {"url": "urn:test:slice-pattern", "type": "Patient", "differential": {"element": [
        {"id": "Patient.identifier", "path": "Patient.identifier",
         "slicing": {"discriminator": [{"type": "pattern", "path": "system"}], "rules": "open"}},
        {"id": "Patient.identifier:pnr", "path": "Patient.identifier", "sliceName": "pnr",
         "patternIdentifier": {"system": PNR}}]}}
    with pytest.raises(ValueError, match="Patient.identifier:pnr: a pattern or fixed value on the slice itself"):
        compile_profile(sd)
