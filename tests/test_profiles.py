"""The Samverkan profiles (profiles/StructureDefinition-*.json) against their examples.

Every example under fixtures/profiles/ is valid; every rule of every profile has an invalid
variant of that example which breaks exactly that rule: the test asserts the exact issue
path(s) and that the diagnostics name the rule (element id or invariant key; for pattern,
binding and target-type rules, which the engine reports without the element id, the pattern,
value set or allowed target). Test names say the rule.

All people and identifiers are synthetic; personnummer are Skatteverket's test numbers.
"""
from __future__ import annotations

import copy
import json
import logging
from functools import lru_cache

import pytest
from conftest import FHIR, FHIR_JSON

from gateway.settings import REPO_PROFILES
from gateway.validation.validator import Validator

V = Validator.load(REPO_PROFILES)
FIXTURES = REPO_PROFILES.parent / "fixtures" / "profiles"
BASE = "https://samverkan.example.se/fhir"
SD = f"{BASE}/StructureDefinition/"
RESOURCE_PROFILES = ["se-patient", "se-organization", "lusen-encounter", "sip-careplan", "discharge-careplan",
                     "five-step-careplan", "samverkan-careteam", "samverkan-consent", "samverkan-task"]
EXTENSIONS = ["planned-discharge-date", "utskrivningsklar", "may-need-services", "overall-responsibility",
              "best-interest", "folkbokforingskommun"]

PNR = "http://electronichealth.se/identifier/personnummer"
SNR = "http://electronichealth.se/identifier/samordningsnummer"
RES = "http://electronichealth.se/identifier/nationelltReservnummer"
HSA = "urn:oid:1.2.752.29.4.19"
ORGNR = "urn:oid:2.5.4.97"
KOMMUNKOD = f"{BASE}/sid/kommunkod"
SEC = "http://hl7.se/fhir/ig/base/CodeSystem/SecurityLabel"
CONF = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
CS_HUV = f"{BASE}/CodeSystem/samverkan-huvudman"
CS_UNIT = f"{BASE}/CodeSystem/samverkan-unit-kind"
CS_ROLE = f"{BASE}/CodeSystem/samverkan-careteam-role"
CS_PC = f"{BASE}/CodeSystem/samverkan-plan-category"
CS_ACT = f"{BASE}/CodeSystem/samverkan-activity"
VS_HUV = f"{BASE}/ValueSet/samverkan-huvudman"
VS_ROLE = f"{BASE}/ValueSet/samverkan-careteam-role"
VS_ACT = f"{BASE}/ValueSet/samverkan-activity"
VS_TASK = f"{BASE}/ValueSet/samverkan-task-code"
SAMORDNINGSNUMMER = "191212721219"  # 19121212-1212 with day + 60 and its Luhn digit


# -- helpers -------------------------------------------------------------------------------
# An invariant that raises is reported (and logged); every rule here must evaluate cleanly,
# including on invalid variants (sam-enc-5 leaves repeated times to the cardinality rules).
EVALUATION_MAY_FAIL: set[str] = set()


@pytest.fixture(autouse=True)
def _every_invariant_evaluates(request, caplog):
    caplog.set_level(logging.WARNING, logger="gateway.validation.profiles")
    yield
    if request.node.originalname not in EVALUATION_MAY_FAIL:
        failed = [r.getMessage() for r in caplog.get_records("call") if "could not be evaluated" in r.getMessage()]
        assert not failed, failed


@lru_cache(maxsize=None)
def _example_text(profile_id: str) -> str:
    return (FIXTURES / f"{profile_id}-example.json").read_text(encoding="utf-8")


def example(profile_id: str) -> dict:
    """A fresh copy of the profile's example instance."""
    return json.loads(_example_text(profile_id))


def errors(resource: dict) -> list:
    return [i for i in V.issues(resource, resource["resourceType"]) if i.severity in ("error", "fatal")]


def assert_valid(resource: dict) -> None:
    errs = errors(resource)
    assert errs == [], [i.diagnostics for i in errs]


def assert_breaks(resource: dict, rule: str, *paths: str) -> None:
    """The resource fails with error issue(s) at exactly ``paths``, each naming ``rule`` (and the profile)."""
    errs = errors(resource)
    assert sorted(p for i in errs for p in i.expression) == sorted(paths), [i.diagnostics for i in errs]
    for issue in errs:
        assert rule in issue.diagnostics, issue.diagnostics
        assert SD in issue.diagnostics, issue.diagnostics


def assert_breaks_each(resource: dict, *expected: tuple[str, str]) -> None:
    """The resource fails with exactly one error issue per (rule, path) pair."""
    errs = errors(resource)
    assert sorted(p for i in errs for p in i.expression) == sorted(p for _, p in expected), \
        [i.diagnostics for i in errs]
    for rule, path in expected:
        issue = next(i for i in errs if path in i.expression)
        assert rule in issue.diagnostics and SD in issue.diagnostics, issue.diagnostics


def ext(resource: dict, url_tail: str) -> list[dict]:
    return [e for e in resource.get("extension", []) if e["url"] == SD + url_tail]


def drop_sub(extension: dict, name: str) -> None:
    extension["extension"] = [s for s in extension["extension"] if s["url"] != name]


def sub(extension: dict, name: str) -> dict:
    return next(s for s in extension["extension"] if s["url"] == name)


def coding(system: str, code: str) -> dict:
    return {"coding": [{"system": system, "code": code}]}


# -- the profiles as files -------------------------------------------------------------------
def load_sd(profile_id: str) -> dict:
    return json.loads((REPO_PROFILES / f"StructureDefinition-{profile_id}.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("profile_id", RESOURCE_PROFILES + EXTENSIONS)
def test_structure_definition_metadata_follows_the_conventions(profile_id):
    sd = load_sd(profile_id)
    assert (sd["id"], sd["url"], sd["version"]) == (profile_id, SD + profile_id, "0.1.0")
    assert sd["status"] == "active" and sd["fhirVersion"] == "4.0.1" and sd["derivation"] == "constraint"
    assert sd["abstract"] is False and sd["name"][0].isupper() and " " not in sd["name"] and sd["description"]
    if profile_id in EXTENSIONS:
        assert (sd["kind"], sd["type"]) == ("complex-type", "Extension") and sd["context"]
    else:
        assert sd["kind"] == "resource"
    assert sd["baseDefinition"] == f"http://hl7.org/fhir/StructureDefinition/{sd['type']}"
    for element in sd["differential"]["element"]:
        assert element["id"] and element["path"].split(".")[0] == sd["type"]
        for c in element.get("constraint", []):
            assert c["key"].startswith("sam-") and c["severity"] == "error" and c["human"] and c["expression"]


@pytest.mark.parametrize("profile_id", RESOURCE_PROFILES + EXTENSIONS)
def test_required_bindings_point_at_value_sets_the_server_holds(profile_id):
    for element in load_sd(profile_id)["differential"]["element"]:
        binding = element.get("binding", {})
        if binding.get("strength") == "required":
            assert V.terminology.expansion(binding["valueSet"]) is not None, binding["valueSet"]


@pytest.mark.parametrize("profile_id", RESOURCE_PROFILES)
def test_the_example_is_valid_and_claims_its_profile(profile_id):
    resource = example(profile_id)
    assert resource["meta"]["profile"] == [SD + profile_id]
    assert V.profiles[SD + profile_id].rtype == resource["resourceType"]
    assert V.issues(resource, resource["resourceType"]) == []  # no errors, no warnings


# -- Patient (SE) ---------------------------------------------------------------------------
def patient(**changes) -> dict:
    res = example("se-patient")
    res.update(changes)
    return res


def test_patient_identified_by_samordningsnummer_or_reservnummer_is_valid():
    assert_valid(patient(identifier=[{"system": SNR, "value": SAMORDNINGSNUMMER}]))
    assert_valid(patient(identifier=[{"system": RES, "value": "8000000001"}]))


def test_patient_personnummer_alias_system_counts_as_the_personnummer_slice():
    res = patient(identifier=[{"system": "urn:oid:1.2.752.129.2.1.3.1", "value": "19121212-1212"}])
    assert_valid(res)
    assert res["identifier"] == [{"system": PNR, "value": "191212121212"}]


def test_patient_is_identified_by_a_national_person_identifier():
    local = {"system": "urn:oid:1.2.752.97.3.1.3", "value": "991212XXXX12"}  # a regional reservnummer
    assert_breaks(patient(identifier=[local]), "sam-patient-1", "Patient")


def test_patient_has_at_most_one_personnummer():
    res = patient(identifier=[{"system": PNR, "value": "191212121212"}, {"system": PNR, "value": "199006212386"}])
    assert_breaks(res, "Patient.identifier:personnummer", "Patient.identifier")


def test_patient_personnummer_has_a_value():
    assert_breaks(patient(identifier=[{"system": PNR}]), "Patient.identifier:personnummer.value",
                  "Patient.identifier[0].value")


def test_patient_has_at_most_one_samordningsnummer():
    snr = {"system": SNR, "value": SAMORDNINGSNUMMER}
    assert_breaks(patient(identifier=[snr, snr]), "Patient.identifier:samordningsnummer", "Patient.identifier")


def test_patient_samordningsnummer_has_a_value():
    res = patient()
    res["identifier"].append({"system": SNR})
    assert_breaks(res, "Patient.identifier:samordningsnummer.value", "Patient.identifier[1].value")


def test_patient_has_at_most_one_nationellt_reservnummer():
    res = patient()
    res["identifier"] += [{"system": RES, "value": "8000000001"}, {"system": RES, "value": "8000000002"}]
    assert_breaks(res, "Patient.identifier:nationelltReservnummer", "Patient.identifier")


def test_patient_nationellt_reservnummer_has_a_value():
    res = patient()
    res["identifier"].append({"system": RES})
    assert_breaks(res, "Patient.identifier:nationelltReservnummer.value", "Patient.identifier[1].value")


def test_patient_has_a_name():
    res = patient()
    del res["name"]
    assert_breaks(res, "Patient.name", "Patient.name")


SEKRETESS = {"system": SEC, "code": "sekretessmarkering"}
SKYDDAD = {"system": SEC, "code": "skyddadFolkbokforing"}
RESTRICTED = {"system": CONF, "code": "R"}


def test_patient_with_protection_labels_and_restricted_confidentiality_is_valid():
    res = patient()
    res["meta"]["security"] = [SEKRETESS, SKYDDAD, RESTRICTED]
    assert_valid(res)


def test_patient_protected_personal_data_is_also_labelled_restricted():
    for label in (SEKRETESS, SKYDDAD):
        res = patient()
        res["meta"]["security"] = [label]
        assert_breaks(res, "sam-patient-2", "Patient")


def test_patient_has_at_most_one_sekretessmarkering_label():
    res = patient()
    res["meta"]["security"] = [SEKRETESS, SEKRETESS, RESTRICTED]
    assert_breaks(res, "Patient.meta.security:sekretessmarkering", "Patient.meta.security")


def test_patient_has_at_most_one_skyddad_folkbokforing_label():
    res = patient()
    res["meta"]["security"] = [SKYDDAD, RESTRICTED, SKYDDAD]
    assert_breaks(res, "Patient.meta.security:skyddadFolkbokforing", "Patient.meta.security")


# -- Organization (SE) ----------------------------------------------------------------------
def municipality() -> dict:
    return example("se-organization")  # Halmstads kommun: orgnr, HSA-id, kommunkod 1380, huvudman kommun


def unit(kind: str = "hemtjanst", huvudman: str = "kommun") -> dict:
    res = example("se-organization")
    res.update(id="halmstad-hemtjanst-centrum", name="Hemtjänst Centrum, Halmstads kommun",
               identifier=[{"system": HSA, "value": "SE2120009903-HTCENTRUM"}],
               type=[{"coding": [{"system": CS_HUV, "code": huvudman}, {"system": CS_UNIT, "code": kind}]}],
               partOf={"reference": "Organization/halmstads-kommun"})
    return res


def test_organization_unit_with_kind_and_part_of_is_valid():
    assert_valid(unit())
    vc = unit("vardcentral", "region")
    vc["partOf"] = {"reference": "Organization/region-halland"}
    assert_valid(vc)


def test_organization_region_needs_no_kommunkod():
    res = municipality()
    res.update(name="Region Halland", identifier=[{"system": ORGNR, "value": "2321000909"}],
               type=[coding(CS_HUV, "region")])
    assert_valid(res)


def test_organization_is_identified_by_hsa_id_or_organisationsnummer():
    res = municipality()
    res["identifier"] = [i for i in res["identifier"] if i["system"] == KOMMUNKOD]
    assert_breaks(res, "sam-org-1", "Organization")


def test_organization_has_at_most_one_hsa_id():
    res = municipality()
    res["identifier"].append({"system": HSA, "value": "SE2120009903-ANNAT"})
    assert_breaks(res, "Organization.identifier:hsaid", "Organization.identifier")


def test_organization_hsa_id_has_a_value():
    res = municipality()
    del res["identifier"][1]["value"]
    assert_breaks(res, "Organization.identifier:hsaid.value", "Organization.identifier[1].value")


def test_organization_has_at_most_one_organisationsnummer():
    res = municipality()
    res["identifier"].append({"system": ORGNR, "value": "2120009911"})
    assert_breaks(res, "Organization.identifier:organizationIdentifier", "Organization.identifier")


def test_organization_organisationsnummer_has_a_value():
    res = municipality()
    del res["identifier"][0]["value"]
    assert_breaks(res, "Organization.identifier:organizationIdentifier.value", "Organization.identifier[0].value")


def test_organization_has_at_most_one_kommunkod():
    res = municipality()
    res["identifier"].append({"system": KOMMUNKOD, "value": "1384"})
    assert_breaks(res, "Organization.identifier:kommunkod", "Organization.identifier")


def test_organization_kommunkod_has_a_value():
    res = municipality()
    del res["identifier"][2]["value"]
    assert_breaks(res, "Organization.identifier:kommunkod.value", "Organization.identifier[2].value")


def test_organization_kommunkod_is_four_digits():
    res = municipality()
    res["identifier"][2]["value"] = "138"
    assert_breaks(res, "sam-org-5", "Organization.identifier[2].value")


def test_organization_municipality_carries_its_kommunkod():
    res = municipality()
    del res["identifier"][2]
    assert_breaks(res, "sam-org-3", "Organization")


def test_organization_has_a_name():
    res = municipality()
    del res["name"]
    assert_breaks(res, "Organization.name", "Organization.name")


def test_organization_states_its_huvudman():
    res = municipality()
    del res["type"]
    assert_breaks(res, "sam-org-2", "Organization")


def test_organization_states_exactly_one_huvudman():
    res = unit()
    res["type"].append(coding(CS_HUV, "region"))
    assert_breaks(res, "sam-org-2", "Organization")


def test_organization_huvudman_is_region_or_kommun():
    res = municipality()
    res["type"] = [coding(CS_HUV, "landsting")]
    assert_breaks(res, VS_HUV, "Organization.type[0].coding[0]")


def test_organization_unit_points_to_its_huvudman_organisation():
    res = unit()
    del res["partOf"]
    assert_breaks(res, "sam-org-4", "Organization")


def test_organization_unit_kind_is_one_of_the_coordination_unit_kinds():
    assert_breaks(unit("akutmottagning"), "ValueSet/samverkan-unit-kind", "Organization.type[0].coding[1]")


# -- Encounter under LUSEN --------------------------------------------------------------------
def encounter() -> dict:
    """Extensions: [0] may-need-services, [1] planned date, [2] its revision, [3] revoked UK, [4] UK in force."""
    return example("lusen-encounter")


def test_encounter_without_judgement_or_dates_is_valid():
    res = encounter()
    del res["extension"]
    assert_valid(res)


def test_encounter_is_an_inpatient_stay():
    res = encounter()
    res["class"] = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}
    assert_breaks(res, "must match", "Encounter.class")


def test_encounter_has_a_subject():
    res = encounter()
    del res["subject"]
    assert_breaks(res, "Encounter.subject", "Encounter.subject")


def test_encounter_subject_is_a_patient():
    res = encounter()
    res["subject"] = {"reference": "Group/avdelning-1"}
    assert_breaks(res, "must reference Patient", "Encounter.subject")


def test_encounter_has_an_admission_time():
    res = encounter()
    del res["period"]
    assert_breaks(res, "Encounter.period", "Encounter.period")
    res = encounter()
    res["period"] = {"end": "2024-05-11T11:00:00+02:00"}
    assert_breaks(res, "Encounter.period.start", "Encounter.period.start")


def test_encounter_names_the_inpatient_unit():
    res = encounter()
    del res["serviceProvider"]
    assert_breaks(res, "Encounter.serviceProvider", "Encounter.serviceProvider")


def test_encounter_inpatient_unit_is_an_organization():
    res = encounter()
    res["serviceProvider"] = {"reference": "Location/medicin-1"}
    assert_breaks(res, "must reference Organization", "Encounter.serviceProvider")


def test_encounter_at_most_one_utskrivningsklar_notice_in_force():
    res = encounter()
    drop_sub(res["extension"][3], "revoked")
    assert_breaks(res, "sam-enc-1", "Encounter")


def test_encounter_new_notice_after_revocation_is_valid():
    res = encounter()
    assert len(ext(res, "utskrivningsklar")) == 2  # the example: revoked, then notified again
    assert_valid(res)


def test_encounter_may_need_services_requires_a_planned_discharge_date():
    res = encounter()
    res["extension"] = [e for e in res["extension"] if e["url"] != SD + "planned-discharge-date"]
    assert_breaks(res, "sam-enc-2", "Encounter")
    for name in ("municipality", "primaryCare"):
        sub(res["extension"][0], name)["valueBoolean"] = False
    assert_valid(res)  # judged not to need services: no planned date is required


@pytest.mark.parametrize("name", ["date", "recorded"])
def test_encounter_planned_discharge_date_has_date_and_recorded_time(name):
    res = encounter()
    drop_sub(res["extension"][1], name)
    assert_breaks(res, f"Encounter.extension:plannedDischargeDate.extension:{name}", "Encounter.extension[1].extension")


@pytest.mark.parametrize("index,name,position", [(1, "date", 0), (1, "recorded", 1), (2, "reason", 2)])
def test_encounter_planned_discharge_date_parts_have_values(index, name, position):
    res = encounter()
    sub_ext = sub(res["extension"][index], name)
    for key in [k for k in sub_ext if k.startswith("value")]:
        del sub_ext[key]
    assert_breaks(res, f"Encounter.extension:plannedDischargeDate.extension:{name}.value[x]",
                  f"Encounter.extension[{index}].extension[{position}].value")


def test_encounter_planned_discharge_date_is_a_date_time():
    res = encounter()
    date = sub(res["extension"][1], "date")
    date["valueString"] = date.pop("valueDateTime")
    # the extension's own definition restricts the type; the Encounter profile's invariant agrees
    assert_breaks_each(res, ("sam-enc-3", "Encounter.extension[1]"),
                       ("Extension.extension:date.value[x] must be of type dateTime",
                        "Encounter.extension[1].extension[0].valueString"))


def test_encounter_utskrivningsklar_has_its_time():
    res = encounter()
    drop_sub(res["extension"][3], "time")  # the revoked notice: its revocation remains
    assert_breaks(res, "Encounter.extension:utskrivningsklar.extension:time", "Encounter.extension[3].extension")


def test_encounter_utskrivningsklar_time_has_a_value():
    res = encounter()
    del sub(res["extension"][4], "time")["valueDateTime"]
    assert_breaks(res, "Encounter.extension:utskrivningsklar.extension:time.value[x]",
                  "Encounter.extension[4].extension[0].value")


@pytest.mark.parametrize("index,slice_,name", [
    (1, "plannedDischargeDate", "date"), (1, "plannedDischargeDate", "recorded"), (2, "plannedDischargeDate", "reason"),
    (4, "utskrivningsklar", "time"), (3, "utskrivningsklar", "revoked"),
    (0, "mayNeedServices", "municipality"), (0, "mayNeedServices", "primaryCare"), (0, "mayNeedServices", "judged"),
])
def test_encounter_extension_parts_occur_at_most_once(index, slice_, name):
    res = encounter()
    res["extension"][index]["extension"].append(copy.deepcopy(sub(res["extension"][index], name)))
    assert_breaks(res, f"Encounter.extension:{slice_}.extension:{name}", f"Encounter.extension[{index}].extension")


def test_encounter_utskrivningsklar_revocation_has_a_value():
    res = encounter()
    del sub(res["extension"][3], "revoked")["valueDateTime"]
    assert_breaks(res, "Encounter.extension:utskrivningsklar.extension:revoked.value[x]",
                  "Encounter.extension[3].extension[1].value")


def test_encounter_utskrivningsklar_time_is_a_date_time():
    res = encounter()
    time = sub(res["extension"][4], "time")
    time["valueDate"] = time.pop("valueDateTime")[:10]
    assert_breaks_each(res, ("sam-enc-4", "Encounter.extension[4]"),
                       ("Extension.extension:time.value[x] must be of type dateTime",
                        "Encounter.extension[4].extension[0].valueDate"))


def test_encounter_utskrivningsklar_revocation_is_not_before_the_notice():
    res = encounter()
    sub(res["extension"][3], "revoked")["valueDateTime"] = "2024-05-09T09:00:00+02:00"
    assert_breaks(res, "sam-enc-5", "Encounter.extension[3]")


def test_encounter_has_at_most_one_may_need_services_judgement():
    res = encounter()
    res["extension"].append(copy.deepcopy(res["extension"][0]))
    assert_breaks(res, "Encounter.extension:mayNeedServices", "Encounter.extension")


@pytest.mark.parametrize("name", ["municipality", "primaryCare", "judged"])
def test_encounter_may_need_services_states_municipality_primary_care_and_time(name):
    res = encounter()
    drop_sub(res["extension"][0], name)
    assert_breaks(res, f"Encounter.extension:mayNeedServices.extension:{name}", "Encounter.extension[0].extension")


@pytest.mark.parametrize("name,position", [("municipality", 0), ("primaryCare", 1), ("judged", 2)])
def test_encounter_may_need_services_parts_have_values(name, position):
    res = encounter()
    sub_ext = sub(res["extension"][0], name)
    for key in [k for k in sub_ext if k.startswith("value")]:
        del sub_ext[key]
    assert_breaks(res, f"Encounter.extension:mayNeedServices.extension:{name}.value[x]",
                  f"Encounter.extension[0].extension[{position}].value")


def test_encounter_may_need_services_judgements_are_booleans():
    res = encounter()
    municipality_ = sub(res["extension"][0], "municipality")
    del municipality_["valueBoolean"]
    municipality_["valueString"] = "ja"
    assert_breaks_each(res, ("sam-enc-6", "Encounter.extension[0]"),
                       ("Extension.extension:municipality.value[x] must be of type boolean",
                        "Encounter.extension[0].extension[0].valueString"))


# -- Task ---------------------------------------------------------------------------------------
def task(**changes) -> dict:
    res = example("samverkan-task")
    res.update(changes)
    return {k: v for k, v in res.items() if v is not None}


@pytest.mark.parametrize("status", ["rejected", "cancelled", "on-hold", "failed"])
def test_task_status_reason_required_when_rejected_cancelled_on_hold_or_failed(status):
    assert_breaks(task(status=status), "sam-task-1", "Task")
    assert_valid(task(status=status, statusReason={"text": "Patienten avböjer SIP-möte"}))


def test_task_in_progress_or_completed_needs_no_status_reason():
    assert_valid(task(status="in-progress"))
    assert_valid(task(status="completed"))


def test_task_has_a_code():
    assert_breaks(task(code=None), "Task.code", "Task.code")


def test_task_code_is_from_the_activity_code_system():
    assert_breaks(task(code=coding(CS_ACT, "fika")), VS_TASK, "Task.code")
    assert_breaks(task(code=coding("http://snomed.info/sct", "308335008")), VS_TASK, "Task.code")


def test_task_is_for_a_person():
    assert_breaks(task(**{"for": None}), "Task.for", "Task.for")
    assert_breaks(task(**{"for": {"reference": "Group/avdelning-1"}}), "must reference Patient", "Task.for")


def test_task_has_an_owner():
    assert_breaks(task(owner=None), "Task.owner", "Task.owner")


def test_task_owner_is_the_responsible_organisation():
    assert_breaks(task(owner={"reference": "PractitionerRole/anna"}), "must reference Organization", "Task.owner")


def test_task_has_a_deadline_in_restriction_period_end():
    assert_breaks(task(restriction=None), "Task.restriction", "Task.restriction")
    assert_breaks(task(restriction={"repetitions": 1}), "Task.restriction.period", "Task.restriction.period")
    assert_breaks(task(restriction={"period": {"start": "2024-05-10"}}), "Task.restriction.period.end",
                  "Task.restriction.period.end")


# -- CarePlan: SIP ------------------------------------------------------------------------------
def sip() -> dict:
    """Activities: [0] hemtjänst, [1] hemsjukvård, [2] vårdcentral (details), [3] a Task."""
    return example("sip-careplan")


def test_sip_responsible_organisation_may_be_a_logical_or_absolute_reference():
    res = sip()
    res["activity"][0]["detail"]["performer"] = [{"type": "Organization", "identifier": {
        "system": HSA, "value": "SE2120009903-HTCENTRUM"}}]
    res["activity"][1]["detail"]["performer"] = [{"reference": "https://kommun.example.se/fhir/Organization/hsv"}]
    assert_valid(res)


def test_sip_is_categorised_as_sip():
    res = sip()
    res["category"] = [coding(CS_PC, "samordnad-utskrivningsplanering")]
    assert_breaks(res, "sam-sip-1", "CarePlan")


def test_sip_states_the_huvudman_with_overall_responsibility():
    res = sip()
    del res["extension"]
    assert_breaks(res, "CarePlan.extension:overallResponsibility", "CarePlan.extension")


def test_sip_states_one_huvudman_with_overall_responsibility():
    res = sip()
    res["extension"].append({"url": SD + "overall-responsibility", "valueCodeableConcept": coding(CS_HUV, "region")})
    assert_breaks(res, "CarePlan.extension:overallResponsibility", "CarePlan.extension")


def test_sip_overall_responsibility_has_a_value():
    res = sip()
    del res["extension"][0]["valueCodeableConcept"]
    assert_breaks(res, "CarePlan.extension:overallResponsibility.value[x]", "CarePlan.extension[0].value")


def test_sip_overall_responsibility_is_region_or_kommun():
    res = sip()
    res["extension"][0]["valueCodeableConcept"] = coding(CS_HUV, "privat-utforare")
    assert_breaks(res, VS_HUV, "CarePlan.extension[0].valueCodeableConcept")


def test_sip_intent_is_plan():
    res = sip()
    res["intent"] = "proposal"
    assert_breaks(res, "must be exactly", "CarePlan.intent")


def test_sip_subject_is_a_patient():
    res = sip()
    res["subject"] = {"reference": "Group/familjen"}
    assert_breaks(res, "must reference Patient", "CarePlan.subject")


def test_sip_references_a_care_team():
    res = sip()
    del res["careTeam"]
    assert_breaks(res, "CarePlan.careTeam", "CarePlan.careTeam")


def test_sip_references_a_consent():
    res = sip()
    del res["supportingInfo"]
    assert_breaks(res, "CarePlan.supportingInfo:consent", "CarePlan.supportingInfo")


def test_sip_consent_reference_is_marked_with_type_consent():
    res = sip()
    del res["supportingInfo"][0]["type"]
    assert_breaks(res, "CarePlan.supportingInfo:consent", "CarePlan.supportingInfo")


def test_sip_consent_reference_points_to_a_consent():
    res = sip()
    res["supportingInfo"] = [{"reference": "DocumentReference/samtycke-pdf", "type": "Consent"}]
    assert_breaks(res, "must reference Consent", "CarePlan.supportingInfo[0]")


def test_sip_states_the_services_needed():
    res = sip()
    del res["activity"]
    assert_breaks(res, "CarePlan.activity", "CarePlan.activity")


def test_sip_every_activity_has_a_responsible_organisation():
    res = sip()
    res["activity"][0]["detail"]["performer"] = [{"reference": "RelatedPerson/tuva-tolvansson"}]
    assert_breaks(res, "sam-sip-2", "CarePlan.activity[0]")
    del res["activity"][0]["detail"]["performer"]
    assert_breaks(res, "sam-sip-2", "CarePlan.activity[0]")


def test_sip_every_activity_says_what_is_to_be_done():
    res = sip()
    del res["activity"][1]["detail"]["description"]
    assert_breaks(res, "sam-sip-3", "CarePlan.activity[1]")


def test_sip_activity_reference_is_a_task():
    res = sip()
    res["activity"][3]["reference"] = {"reference": "ServiceRequest/hemtjanst"}
    assert_breaks(res, "must reference Task", "CarePlan.activity[3].reference")


# -- CarePlan: discharge planning ------------------------------------------------------------------
def discharge() -> dict:
    """Activities: [0] inskrivningsmeddelande, [1] fast vårdkontakt, [2] utskrivningsklar (details), [3] a Task."""
    return example("discharge-careplan")


def test_discharge_plan_is_categorised_as_discharge_planning():
    res = discharge()
    res["category"] = [coding(CS_PC, "sip")]
    assert_breaks(res, "sam-dis-1", "CarePlan")


def test_discharge_plan_intent_is_plan():
    res = discharge()
    res["intent"] = "order"
    assert_breaks(res, "must be exactly", "CarePlan.intent")


def test_discharge_plan_subject_is_a_patient():
    res = discharge()
    res["subject"] = {"reference": "Group/avdelning-1"}
    assert_breaks(res, "must reference Patient", "CarePlan.subject")


def test_discharge_plan_belongs_to_the_inpatient_stay():
    res = discharge()
    del res["encounter"]
    assert_breaks(res, "CarePlan.encounter", "CarePlan.encounter")
    res["encounter"] = {"reference": "EpisodeOfCare/tolvan-2024"}
    assert_breaks(res, "must reference Encounter", "CarePlan.encounter")


def test_discharge_plan_every_activity_has_a_responsible_organisation():
    res = discharge()
    res["activity"][0]["detail"]["performer"] = [{"reference": "PractitionerRole/lakare-medicin-1"}]
    assert_breaks(res, "sam-dis-2", "CarePlan.activity[0]")


def test_discharge_plan_activity_reference_is_a_task():
    res = discharge()
    res["activity"][3]["reference"] = {"reference": "Appointment/sip-mote"}
    assert_breaks(res, "must reference Task", "CarePlan.activity[3].reference")


def test_discharge_plan_activity_is_coded():
    res = discharge()
    del res["activity"][1]["detail"]["code"]
    assert_breaks(res, "CarePlan.activity.detail.code", "CarePlan.activity[1].detail.code")


def test_discharge_plan_activity_code_is_from_the_activity_code_system():
    res = discharge()
    res["activity"][1]["detail"]["code"] = coding(CS_ACT, "fika")
    assert_breaks(res, VS_ACT, "CarePlan.activity[1].detail.code")


# -- CarePlan: five-step collaboration plan ------------------------------------------------------------
def five_step() -> dict:
    """Activities: [0]–[3] details, [4] a Task."""
    return example("five-step-careplan")


def test_five_step_plan_is_categorised_as_five_step_plan():
    res = five_step()
    res["category"] = [coding(CS_PC, "sip")]
    assert_breaks(res, "sam-five-1", "CarePlan")


def test_five_step_plan_intent_is_plan():
    res = five_step()
    res["intent"] = "proposal"
    assert_breaks(res, "must be exactly", "CarePlan.intent")


def test_five_step_plan_subject_is_a_patient():
    res = five_step()
    res["subject"] = {"reference": "Group/x"}
    assert_breaks(res, "must reference Patient", "CarePlan.subject")


def test_five_step_plan_author_is_the_fast_vardkontakt():
    res = five_step()
    del res["author"]
    assert_breaks(res, "CarePlan.author", "CarePlan.author")
    res["author"] = {"reference": "Organization/vardcentralen-sodra-halmstad"}
    assert_breaks(res, "must reference PractitionerRole", "CarePlan.author")


def test_five_step_plan_references_the_team():
    res = five_step()
    del res["careTeam"]
    assert_breaks(res, "CarePlan.careTeam", "CarePlan.careTeam")


def test_five_step_plan_references_the_consent():
    res = five_step()
    res["supportingInfo"] = [{"reference": "DocumentReference/kartlaggning"}]
    assert_breaks(res, "CarePlan.supportingInfo:consent", "CarePlan.supportingInfo")


def test_five_step_plan_consent_reference_points_to_a_consent():
    res = five_step()
    res["supportingInfo"][0]["reference"] = "QuestionnaireResponse/samtycke"
    assert_breaks(res, "must reference Consent", "CarePlan.supportingInfo[0]")


def test_five_step_plan_says_who_does_what():
    res = five_step()
    del res["activity"]
    assert_breaks(res, "CarePlan.activity", "CarePlan.activity")


def test_five_step_plan_every_activity_has_a_responsible_organisation():
    res = five_step()
    del res["activity"][2]["detail"]["performer"]
    assert_breaks(res, "sam-five-2", "CarePlan.activity[2]")


def test_five_step_plan_activity_reference_is_a_task():
    res = five_step()
    res["activity"][4]["reference"] = {"reference": "Appointment/uppfoljning"}
    assert_breaks(res, "must reference Task", "CarePlan.activity[4].reference")


def test_five_step_plan_activity_is_coded_from_the_activity_code_system():
    res = five_step()
    del res["activity"][2]["detail"]["code"]
    assert_breaks(res, "CarePlan.activity.detail.code", "CarePlan.activity[2].detail.code")
    res["activity"][2]["detail"]["code"] = {"text": "promenad"}
    assert_breaks(res, VS_ACT, "CarePlan.activity[2].detail.code")


# -- CareTeam -------------------------------------------------------------------------------------------
def careteam() -> dict:
    """Participants: [0] the person, [1] anhörig, [2] fast vårdkontakt + SIP-samordnare, [3] läkare,
    [4] biståndshandläggare, [5] kommunal hälso- och sjukvård, [6] hemtjänst."""
    return example("samverkan-careteam")


def test_careteam_is_about_a_person():
    res = careteam()
    del res["subject"]
    assert_breaks(res, "CareTeam.subject", "CareTeam.subject")
    res["subject"] = {"reference": "Group/x"}
    assert_breaks(res, "must reference Patient", "CareTeam.subject")


def test_careteam_has_participants():
    res = careteam()
    del res["participant"]
    assert_breaks(res, "CareTeam.participant", "CareTeam.participant")


def test_careteam_participant_has_a_role():
    res = careteam()
    del res["participant"][3]["role"]
    assert_breaks(res, "CareTeam.participant.role", "CareTeam.participant[3].role")


def test_careteam_participant_role_is_from_the_careteam_role_code_system():
    res = careteam()
    res["participant"][3]["role"] = [coding(CS_ROLE, "kurator")]
    assert_breaks(res, VS_ROLE, "CareTeam.participant[3].role[0]")


def test_careteam_participant_has_a_member():
    res = careteam()
    del res["participant"][3]["member"]
    assert_breaks(res, "CareTeam.participant.member", "CareTeam.participant[3].member")


def test_careteam_member_is_a_practitioner_role_organization_related_person_or_the_patient():
    res = careteam()
    res["participant"][3]["member"] = {"reference": "Practitioner/erik"}
    assert_breaks(res, "must reference PractitionerRole or Organization or RelatedPerson or Patient",
                  "CareTeam.participant[3].member")


def test_careteam_the_person_is_the_patient():
    res = careteam()
    res["participant"][0]["member"] = {"reference": "RelatedPerson/tuva-tolvansson"}
    assert_breaks(res, "sam-team-1", "CareTeam.participant[0]")


def test_careteam_relatives_and_representatives_are_related_persons():
    res = careteam()
    res["participant"][1]["member"] = {"reference": "PractitionerRole/tuva"}
    assert_breaks(res, "sam-team-2", "CareTeam.participant[1]")


def test_careteam_fast_vardkontakt_is_a_named_person():
    res = careteam()
    res["participant"][2]["member"] = {"reference": "Organization/vardcentralen-sodra-halmstad"}
    assert_breaks(res, "sam-team-3", "CareTeam.participant[2]")


# -- Consent --------------------------------------------------------------------------------------------
def consent() -> dict:
    """Root provision deny with period and purpose TREAT; one nested permit for five organisations."""
    return example("samverkan-consent")


def best_interest() -> dict:
    res = consent()
    res["extension"] = [{"url": SD + "best-interest",
                         "valueString": "Kognitiv svikt; kan inte uttrycka önskemål. Ingen anhörig kan föra talan."}]
    res["performer"] = [{"reference": "PractitionerRole/anna-distriktsskoterska-vc-sodra"}]
    return res


def test_consent_given_by_a_representative_is_valid():
    res = consent()
    res["performer"] = [{"reference": "RelatedPerson/tuva-tolvansson"}]
    assert_valid(res)


def test_consent_permit_with_a_denied_organisation_is_valid():
    res = consent()
    res["provision"]["type"] = "permit"
    res["provision"]["provision"][0].update(type="deny", actor=res["provision"]["provision"][0]["actor"][:1])
    assert_valid(res)


def test_consent_best_interest_case_documented_by_staff_is_valid():
    assert_valid(best_interest())


def test_consent_scope_is_patient_privacy():
    res = consent()
    res["scope"] = coding("http://terminology.hl7.org/CodeSystem/consentscope", "treatment")
    assert_breaks(res, "must match", "Consent.scope")


def test_consent_names_the_person():
    res = consent()
    del res["patient"]
    assert_breaks(res, "Consent.patient", "Consent.patient")


def test_consent_has_a_date():
    res = consent()
    del res["dateTime"]
    assert_breaks(res, "Consent.dateTime", "Consent.dateTime")


def test_consent_says_who_gave_it():
    res = consent()
    del res["performer"]
    assert_breaks(res, "Consent.performer", "Consent.performer")


def test_consent_performer_is_a_person_representative_or_documenting_staff():
    res = best_interest()
    res["performer"] = [{"reference": "Device/surfplatta"}]
    errs = errors(res)
    assert sorted(p for i in errs for p in i.expression) == ["Consent", "Consent.performer[0]"]
    assert {("must reference" in i.diagnostics, "sam-consent-2" in i.diagnostics) for i in errs} == \
        {(True, False), (False, True)}


def test_consent_is_given_by_the_person_or_a_representative():
    res = consent()
    res["performer"] = [{"reference": "PractitionerRole/anna-distriktsskoterska-vc-sodra"}]
    assert_breaks(res, "sam-consent-1", "Consent")


def test_consent_best_interest_case_is_not_given_by_the_person():
    res = best_interest()
    res["performer"] = [{"reference": "Patient/tolvan"}]
    assert_breaks(res, "sam-consent-2", "Consent")


def test_consent_best_interest_marked_once():
    res = best_interest()
    res["extension"].append(copy.deepcopy(res["extension"][0]))
    assert_breaks(res, "Consent.extension:bestInterest", "Consent.extension")


def test_consent_best_interest_states_why():
    res = best_interest()
    del res["extension"][0]["valueString"]
    assert_breaks(res, "Consent.extension:bestInterest.value[x]", "Consent.extension[0].value")


def test_consent_has_a_provision():
    res = consent()
    del res["provision"]
    assert_breaks(res, "Consent.provision", "Consent.provision")


def test_consent_provision_says_permit_or_deny():
    res = consent()
    del res["provision"]["type"]
    assert_breaks(res, "Consent.provision.type", "Consent.provision.type")


def test_consent_provision_has_a_period_with_start():
    res = consent()
    del res["provision"]["period"]
    assert_breaks(res, "Consent.provision.period", "Consent.provision.period")
    res["provision"]["period"] = {"end": "2025-05-11"}
    assert_breaks(res, "Consent.provision.period.start", "Consent.provision.period.start")


def test_consent_purpose_is_treatment():
    res = consent()
    res["provision"]["purpose"] = [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "HRESCH"}]
    assert_breaks(res, "sam-consent-3", "Consent.provision")


def test_consent_nested_provision_says_permit_or_deny():
    res = consent()
    del res["provision"]["provision"][0]["type"]
    assert_breaks(res, "Consent.provision.provision.type", "Consent.provision.provision[0].type")


def test_consent_nested_provision_names_organisations():
    res = consent()
    del res["provision"]["provision"][0]["actor"]
    assert_breaks(res, "Consent.provision.provision.actor", "Consent.provision.provision[0].actor")


def test_consent_permit_or_deny_is_per_organisation():
    res = consent()
    res["provision"]["provision"][0]["actor"][1]["reference"] = {"reference": "PractitionerRole/erik"}
    assert_breaks(res, "must reference Organization", "Consent.provision.provision[0].actor[1].reference")
    res = consent()
    res["provision"]["actor"] = [{"role": coding("http://terminology.hl7.org/CodeSystem/v3-ParticipationType",
                                                 "IRCP"), "reference": {"reference": "RelatedPerson/tuva"}}]
    assert_breaks(res, "must reference Organization", "Consent.provision.actor[0].reference")


# -- extension definitions, wherever the extension is used --------------------------------------------
def test_complex_extension_slicing_is_closed_unknown_part_is_refused():
    res = encounter()
    res["extension"][3]["extension"].append({"url": "comment", "valueString": "ring först"})
    assert_breaks(res, "Extension.extension is closed", "Encounter.extension[3].extension[2]")


def test_extension_definition_applies_where_the_profile_does_not_restate_it():
    # The Consent profile does not describe best-interest's value; the extension's own definition does.
    res = best_interest()
    res["extension"][0]["valueBoolean"] = True
    del res["extension"][0]["valueString"]
    assert_breaks(res, "Extension.value[x] must be of type string", "Consent.extension[0].valueBoolean")


def test_extension_definition_applies_on_a_resource_without_a_profile():
    res = {"resourceType": "Encounter", "status": "in-progress",
           "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
           "extension": [{"url": SD + "utskrivningsklar", "valueDateTime": "2024-05-10T09:00:00+02:00"}]}
    # a complex extension: its parts (at least one, and `time`) are missing and it may have no value
    assert_breaks(res, "utskrivningsklar", "Encounter.extension[0].extension", "Encounter.extension[0].extension",
                  "Encounter.extension[0].valueDateTime")


def test_extension_is_refused_outside_its_context():
    res = task()
    res["extension"] = [{"url": SD + "overall-responsibility", "valueCodeableConcept": coding(CS_HUV, "kommun")}]
    assert_breaks(res, "may only be used on CarePlan, not on Task", "Task.extension[0]")


def test_extension_value_bound_to_a_value_set_is_checked_by_its_definition():
    plan = sip()
    del plan["meta"]  # no claimed profile: only the extension's own definition speaks
    plan["extension"][0]["valueCodeableConcept"] = coding(CS_HUV, "privat-utforare")
    errs = [i for i in V.issues(plan, "CarePlan") if i.severity == "error"]
    assert [i.expression for i in errs if VS_HUV in i.diagnostics] == [["CarePlan.extension[0].valueCodeableConcept"]]


# -- over HTTP ------------------------------------------------------------------------------------------
async def test_posting_a_sip_without_overall_responsibility_is_refused_with_the_issue_path(client):
    bad = sip()
    del bad["id"], bad["extension"]
    r = await client.post(f"{FHIR}/CarePlan", json=bad, headers=FHIR_JSON)
    assert r.status_code == 422, r.text
    issues = r.json()["issue"]
    assert [i["expression"] for i in issues if i["severity"] == "error"] == [["CarePlan.extension"]]
    assert "CarePlan.extension:overallResponsibility" in issues[0]["diagnostics"]


async def test_posting_the_sip_example_is_accepted(trusted_client):
    client = trusted_client  # the example refers to fixed ids of other examples, not stored here
    good = sip()
    del good["id"]
    r = await client.post(f"{FHIR}/CarePlan", json=good, headers=FHIR_JSON)
    assert r.status_code == 201, r.text


# -- folkbokforingskommun (extension on Address) ------------------------------------------------
FBK = SD + "folkbokforingskommun"


def _fbk(patient: dict) -> dict:
    return next(e for e in patient["address"][0]["extension"] if e["url"] == FBK)


def test_folkbokforingskommun_may_be_used_on_any_address_element():
    """Its context is the datatype Address: Patient.address and Patient.contact.address alike."""
    res = example("se-patient")
    res["contact"] = [{"name": {"family": "Tolvansson"}, "address": {
        "extension": [copy.deepcopy(_fbk(res))], "city": "Halmstad"}}]
    assert errors(res) == []


def test_folkbokforingskommun_is_four_digits():
    res = example("se-patient")
    _fbk(res)["valueCoding"]["code"] = "138"
    assert_breaks(res, "sam-fbk-1", "Patient.address[0].extension[1].valueCoding")


def test_folkbokforingskommun_uses_the_kommunkod_system():
    res = example("se-patient")
    _fbk(res)["valueCoding"]["system"] = "urn:oid:1.2.752.129.2.2.1.18"
    assert_breaks(res, "must be exactly", "Patient.address[0].extension[1].valueCoding.system")


def test_folkbokforingskommun_is_refused_outside_an_address():
    res = example("se-patient")
    res["extension"] = [copy.deepcopy(_fbk(res))]
    assert_breaks(res, "may only be used on Address, not on Patient", "Patient.extension[0]")
