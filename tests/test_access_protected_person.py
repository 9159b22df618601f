"""Sekretessmarkering and skyddad folkbokföring: the person's address is never disclosed to
another organisation — not by read, vread, history, search, include or a search on the address
— even one that may otherwise see the person's data. The organisation that registered the
person keeps seeing it.
"""
from __future__ import annotations

import pytest
from conftest import FHIR, FHIR_JSON, TEST_PNR, TEST_PNR_2, get_token, organization, patient, running_gateway, task
from test_access_redteam import care_team, consent, logical, provision

REGION, KOMMUN = "SE2321000016-REG1", "SE2120000803-KOM1"
LABELS = "http://hl7.se/fhir/ig/base/CodeSystem/SecurityLabel"
STREET = "Hemliga gatan 7"
ADDRESS = [{"use": "home", "line": [STREET], "postalCode": "302 50", "city": "Halmstad"}]


@pytest.fixture(params=["sekretessmarkering", "skyddadFolkbokforing"])
async def world(request, settings):
    async with running_gateway(settings, authorised=False) as http:
        h = {org: {**FHIR_JSON, "Authorization": f"Bearer {await get_token(http, settings.db_path, organization=org)}"}
             for org in (REGION, KOMMUN)}

        async def make(resource):
            r = await http.post(f"{FHIR}/{resource['resourceType']}", json=resource, headers=h[REGION])
            assert r.status_code == 201, r.text
            return r.json()["id"]

        await make(organization("Testkommun", KOMMUN))
        protected = await make(patient(TEST_PNR, address=ADDRESS,
                                       meta={"security": [{"system": LABELS, "code": request.param}]}))
        open_pid = await make(patient(TEST_PNR_2, family="Öppen", address=ADDRESS))
        for pid in (protected, open_pid):
            await make(care_team(pid, [{"member": logical(REGION)}, {"member": logical(KOMMUN)}]))
            await make(consent(pid, provision("deny", nested=[provision("permit", logical(KOMMUN))])))
        tid = await make(task(f"Patient/{protected}"))
        yield http, h, protected, open_pid, tid


def has_street(body: dict | str) -> bool:
    return STREET in (body if isinstance(body, str) else str(body))


async def test_the_region_that_registered_the_person_sees_the_address(world):
    http, h, pid, _, _ = world
    assert has_street((await http.get(f"{FHIR}/Patient/{pid}", headers=h[REGION])).json())


async def test_another_organisation_reads_the_person_without_the_address(world):
    http, h, pid, _, _ = world
    r = await http.get(f"{FHIR}/Patient/{pid}", headers=h[KOMMUN])
    assert r.status_code == 200  # CareTeam + consent: it may see the person …
    body = r.json()
    assert "address" not in body and not has_street(r.text)  # … but not where the person lives
    assert body["identifier"][0]["value"] == TEST_PNR
    assert {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "REDACTED"} in \
        body["meta"]["security"]


@pytest.mark.parametrize("path", [
    "Patient/{pid}/_history/1", "Patient/{pid}/_history", "Patient?_id={pid}", "Patient/_history",
    "Task?_id={tid}&_include=Task:patient", "Patient?identifier=" + TEST_PNR,
])
async def test_no_other_path_discloses_the_address(world, path):
    http, h, pid, _, tid = world
    r = await http.get(f"{FHIR}/{path.format(pid=pid, tid=tid)}", headers=h[KOMMUN])
    assert r.status_code == 200, r.text
    body = r.json()
    shown = [e["resource"] for e in body.get("entry", []) if e.get("resource", {}).get("id") == pid] \
        if body["resourceType"] == "Bundle" else [body]
    assert shown and not any(has_street(res) or "address" in res for res in shown)


@pytest.mark.parametrize("query", ["address-city=Halmstad", "address=Hemliga", "address-postalcode=302 50",
                                   "address:contains=liga", "address-use=home"])
async def test_a_search_on_the_address_does_not_find_the_protected_person(world, query):
    http, h, pid, open_pid, _ = world
    found = (await http.get(f"{FHIR}/Patient?{query}", headers=h[KOMMUN])).json()
    ids = {e["resource"]["id"] for e in found.get("entry", [])}
    assert ids == {open_pid} and found["total"] == 1  # the unprotected person matches; no count leak
    mine = (await http.get(f"{FHIR}/Patient?{query}", headers=h[REGION])).json()
    assert {e["resource"]["id"] for e in mine["entry"]} == {pid, open_pid}


async def test_an_unprotected_person_s_address_is_shared_as_usual(world):
    http, h, _, open_pid, _ = world
    assert has_street((await http.get(f"{FHIR}/Patient/{open_pid}", headers=h[KOMMUN])).json())


async def test_a_label_added_later_also_hides_the_address_of_older_versions(world):
    """Found by the LUSEN red-team review: redaction looked at each version's own labels, so
    the version before the label still showed the address in vread and history."""
    http, h, _, open_pid, _ = world
    person = (await http.get(f"{FHIR}/Patient/{open_pid}", headers=h[REGION])).json()
    person["meta"]["security"] = [{"system": LABELS, "code": "skyddadFolkbokforing"},
                                  {"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]
    r = await http.put(f"{FHIR}/Patient/{open_pid}", json=person, headers=h[REGION])
    assert r.status_code == 200, r.text
    for path in (f"Patient/{open_pid}/_history/1", f"Patient/{open_pid}/_history", "Patient/_history"):
        r = await http.get(f"{FHIR}/{path}", headers=h[KOMMUN])
        assert r.status_code == 200 and not has_street(r.text), path
    assert has_street((await http.get(f"{FHIR}/Patient/{open_pid}/_history/1", headers=h[REGION])).text)
