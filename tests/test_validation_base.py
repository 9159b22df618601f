"""Base R4 validation on write: structure (fhir.resources), JSON shape rules, required bindings."""
from decimal import Decimal

import pytest

from gateway.errors import InvalidResource
from gateway.fhir.canonical import dumps, parse_json
from gateway.validation import validate_resource


def issues_of(resource: dict) -> list:
    with pytest.raises(InvalidResource) as info:
        validate_resource(resource, resource["resourceType"])
    return info.value.issues


def test_required_binding_rejects_task_status_outside_r4_value_set():
    issues = issues_of({"resourceType": "Task", "status": "done", "intent": "order"})
    assert [i.expression for i in issues] == [["Task.status"]]
    assert "requested" in issues[0].diagnostics  # the message lists what is allowed


def test_required_binding_inside_a_list_names_the_indexed_path():
    plan = {"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": "Patient/1"},
            "activity": [{"detail": {"status": "scheduled"}}, {"detail": {"status": "bogus"}}]}
    assert [i.expression for i in issues_of(plan)] == [["CarePlan.activity[1].detail.status"]]


def test_valid_codes_pass_required_bindings():
    validate_resource({"resourceType": "Consent", "status": "active", "scope": {"text": "x"},
                       "category": [{"text": "x"}], "provision": {"type": "permit"}}, "Consent")


@pytest.mark.parametrize("element,value", [("category", []), ("description", ""), ("for", {})])
def test_json_shape_rules_reject_empty_arrays_strings_and_objects(element, value):
    issues = issues_of({"resourceType": "Task", "status": "requested", "intent": "order", element: value})
    assert [f"Task.{element}"] in [i.expression for i in issues]


def test_unknown_element_is_named_with_its_path():
    issues = issues_of({"resourceType": "Task", "status": "requested", "intent": "order",
                        "restriction": {"deadline": "2024-01-01"}})
    assert ["Task.restriction.deadline"] in [i.expression for i in issues]


def test_decimals_keep_their_exact_text_through_parse_and_dump():
    body = b'{"resourceType":"Observation","valueQuantity":{"value":1.50},"big":123456789012345678901234}'
    assert dumps(parse_json(body)) == body
    assert parse_json(body)["valueQuantity"]["value"] == Decimal("1.50")


@pytest.mark.parametrize("body,path", [
    ({"resourceType": "Patient", "active": "true"}, "Patient.active"),
    ({"resourceType": "Patient", "active": 1}, "Patient.active"),
    ({"resourceType": "Patient", "multipleBirthInteger": "3"}, "Patient.multipleBirthInteger"),
    ({"resourceType": "Patient", "deceasedDateTime": 1.5}, "Patient.deceasedDateTime"),
    ({"resourceType": "Encounter", "status": "planned", "class": {"code": "IMP"}, "period": {"start": -1}},
     "Encounter.period.start"),
    ({"resourceType": "Task", "status": "requested", "intent": "order", "authoredOn": 5}, "Task.authoredOn"),
])
async def test_fhir_json_primitive_types_are_not_coerced(client, body, path):
    """FHIR JSON: booleans are true/false, integers and decimals numbers, everything else strings;
    the models would coerce "true" to a boolean and a number to a dateTime (seconds since 1970)."""
    r = await client.post(f"/fhir/{body['resourceType']}", json=body, headers={"Content-Type": "application/fhir+json"})
    assert r.status_code == 422, r.text
    assert path in [e for i in r.json()["issue"] for e in i.get("expression", [])]
