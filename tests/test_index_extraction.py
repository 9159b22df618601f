"""Index extraction shortcuts must agree with the FHIRPath engine.

Plain member paths are walked directly (``member_path``) and expressions whose first element
is absent are skipped (``element_names``); both are speed-ups only. For every standard and
project SearchParameter, on resources that exercise lists, choice types and nesting, the
values must equal what fhirpathpy computes for the same expression.
"""
import fhirpathpy
import pytest
from fhirpathpy.models import models

from gateway.fhir.types import SUPPORTED_TYPES
from gateway.search.extract import index_resource
from gateway.search.registry import SearchRegistry, element_names, member_path, split_union
from gateway.settings import REPO_PROFILES

REGISTRY = SearchRegistry.load(REPO_PROFILES, SUPPORTED_TYPES)
MODEL = models["r4"]

SAMPLES = [
    {"resourceType": "Observation", "status": "final", "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
     "subject": {"reference": "Patient/p1"}, "effectivePeriod": {"start": "2024-01-01", "end": "2024-01-02"},
     "valueString": "stabil", "performer": [{"reference": "Practitioner/a"}, {"reference": "Organization/o"}],
     "category": [{"coding": [{"code": "vital-signs"}]}, {"text": "x"}]},
    {"resourceType": "Task", "status": "requested", "intent": "order", "for": {"reference": "Patient/p1"},
     "owner": {"reference": "Organization/kommun"}, "restriction": {"period": {"end": "2024-05-04"},
     "recipient": [{"reference": "Organization/a"}]}, "input": [{"type": {"text": "t"}, "valueString": "v"}],
     "basedOn": [{"reference": "CarePlan/c1"}], "authoredOn": "2024-05-01T10:00:00+02:00",
     "meta": {"tag": [{"system": "urn:x", "code": "y"}], "profile": ["urn:p"]}},
    {"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": "Patient/p1"},
     "activity": [{"reference": {"reference": "Task/t1"}},
                  {"detail": {"status": "scheduled", "scheduledPeriod": {"start": "2024-02-01"},
                              "code": {"coding": [{"code": "a"}]}, "performer": [{"reference": "Organization/o"}]}}],
     "careTeam": [{"reference": "CareTeam/ct"}], "period": {"start": "2024-01-01"}},
    {"resourceType": "Patient", "name": [{"family": "Ström", "given": ["Åsa", "Li"]}], "birthDate": "1912-12-12",
     "identifier": [{"system": "http://electronichealth.se/identifier/personnummer", "value": "191212121212"}],
     "address": [{"line": ["Storgatan 1"], "city": "Halmstad", "postalCode": "30250"}],
     "telecom": [{"system": "phone", "value": "+4635000000"}], "deceasedBoolean": False},
    {"resourceType": "Consent", "status": "active", "scope": {"text": "x"}, "category": [{"text": "x"}],
     "patient": {"reference": "Patient/p1"}, "dateTime": "2024-01-01",
     "provision": {"type": "permit", "period": {"start": "2024-01-01"},
                   "actor": [{"role": {"text": "r"}, "reference": {"reference": "Organization/kommun"}}]}},
]


@pytest.mark.parametrize("resource", SAMPLES, ids=[s["resourceType"] for s in SAMPLES])
def test_member_path_walk_equals_fhirpath_for_every_plain_expression(resource):
    rtype = resource["resourceType"]
    checked = 0
    for ext in REGISTRY.extractors(rtype):
        for part in split_union(ext.param.expression):
            walk = member_path(part, rtype, MODEL)
            if walk is None:
                continue
            checked += 1
            assert [str(v) for v in walk(resource)] == [str(v) for v in fhirpathpy.compile(part, MODEL)(resource)], part
    assert checked > 5  # the shortcut is actually in use for this type


@pytest.mark.parametrize("resource", SAMPLES, ids=[s["resourceType"] for s in SAMPLES])
def test_skipping_absent_elements_never_drops_a_value(resource):
    """Index rows with the pre-check equal index rows with every expression evaluated."""
    rtype = resource["resourceType"]
    present = element_names(resource)
    for ext in REGISTRY.extractors(rtype):
        if not ext.may_apply(present):
            assert ext.evaluate(resource) == [], ext.param.code
    rows = index_resource(REGISTRY, rtype, resource)
    assert rows.tokens or rows.references or rows.dates or rows.strings


def test_choice_element_counts_as_present_through_its_typed_name():
    assert {"effective", "value", "deceased"} <= element_names({"effectivePeriod": 1, "valueString": 1,
                                                               "deceasedBoolean": 1})
