"""Swedish identifiers: aliases normalised on write, values checked (Luhn, day + 60, HSA-id format)."""
import pytest

from conftest import FHIR, FHIR_JSON, assert_outcome
from gateway.validation.identifiers import (
    HSA_ID, PERSONNUMMER, SAMORDNINGSNUMMER, base_system, check_person_number, check_value, luhn_ok,
)

SKATTEVERKET_TEST_PERSONS = ["191212121212", "199006212386", "201007142381"]


@pytest.mark.parametrize("value", SKATTEVERKET_TEST_PERSONS)
def test_skatteverkets_test_personnummer_pass_the_luhn_check(value):
    assert check_person_number(value, samordning=False) == (value, None)


def test_personnummer_with_hyphen_is_stored_as_twelve_digits():
    assert check_person_number("19121212-1212", samordning=False) == ("191212121212", None)


@pytest.mark.parametrize("value,problem", [
    ("191212121213", "check digit"),  # Luhn over the last ten digits fails
    ("19121312-1212", "valid date"),  # month 13
    ("1212121212", "12 digits"),  # ten-digit form: the century is ambiguous
    ("19121212+1212", "12 digits"),
])
def test_invalid_personnummer_names_what_is_wrong(value, problem):
    normal, message = check_person_number(value, samordning=False)
    assert normal is None and problem in message


def test_samordningsnummer_has_day_plus_sixty():
    body = "19121272121"  # 1912-12-12 with day + 60 → 72, then 121; find its check digit
    check = next(d for d in "0123456789" if luhn_ok(body[2:] + d))
    assert check_person_number(body + check, samordning=True)[1] is None
    # The same digits are not a personnummer (day 72 does not exist) ...
    assert "valid date" in check_person_number(body + check, samordning=False)[1]
    # ... and a personnummer is not a samordningsnummer.
    assert "valid date" in check_person_number("191212121212", samordning=True)[1]


@pytest.mark.parametrize("value,ok", [("SE2321000016-15CQ", True), ("SE2321000016-", False),
                                      ("2321000016-15CQ", False), ("SE232100001-15CQ", False)])
def test_hsa_id_format_is_se_plus_organisation_number_dash_local_part(value, ok):
    assert (check_value(HSA_ID, value)[1] is None) is ok


@pytest.mark.parametrize("alias,base", [
    ("urn:oid:1.2.752.129.2.1.3.1", PERSONNUMMER),
    ("https://terminology.hl7.se/sid/se-personnummer", PERSONNUMMER),
    ("urn:oid:1.2.752.129.2.1.3.3", SAMORDNINGSNUMMER),
    ("urn:oid:1.2.752.129.2.1.4.1", HSA_ID),
])
def test_alias_systems_map_to_the_hl7_sweden_base_form(alias, base):
    assert base_system(alias) == base


async def test_alias_system_is_stored_in_base_form_and_found_by_either(client):
    body = {"resourceType": "Patient", "identifier": [
        {"system": "urn:oid:1.2.752.129.2.1.3.1", "value": "19121212-1212"}]}
    r = await client.post(f"{FHIR}/Patient", json=body, headers=FHIR_JSON)
    assert r.status_code == 201, r.text
    assert r.json()["identifier"] == [{"system": PERSONNUMMER, "value": "191212121212"}]
    for query in (f"{PERSONNUMMER}|191212121212", "urn:oid:1.2.752.129.2.1.3.1|19121212-1212"):
        found = (await client.get(f"{FHIR}/Patient", params={"identifier": query})).json()
        assert found["total"] == 1, query


async def test_invalid_personnummer_is_rejected_with_the_element_path(client):
    body = {"resourceType": "Patient", "identifier": [{"system": PERSONNUMMER, "value": "191212121213"}]}
    r = await client.post(f"{FHIR}/Patient", json=body, headers=FHIR_JSON)
    out = assert_outcome(r, 422, "check digit")
    assert ["Patient.identifier[0].value"] in [i.get("expression") for i in out["issue"]]


async def test_hsa_id_inside_a_reference_identifier_is_normalised(client):
    body = {"resourceType": "Task", "status": "requested", "intent": "order",
            "owner": {"identifier": {"system": "urn:oid:1.2.752.129.2.1.4.1", "value": "SE2321000016-15CQ"}}}
    r = await client.post(f"{FHIR}/Task", json=body, headers=FHIR_JSON)
    assert r.status_code == 201, r.text
    assert r.json()["owner"]["identifier"]["system"] == HSA_ID
