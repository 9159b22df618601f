"""Red team: try every path to another organisation's patient data and assert that nothing leaks.

The rule (gateway/access): an organisation reads and writes what it authored; it sees another
organisation's data about a person (the Patient, and resources whose subject / patient / for /
beneficiary is that Patient) only while it takes part in an active CareTeam for the person
**and** an active Consent permits disclosure to it for TREAT. Directory types are readable by
all, changeable by their author. A forbidden read looks exactly like a missing resource.

One gateway per test (a fresh SQLite file), three organisations with their own tokens:

- REGION authors everything: Organizations, two patients, Tasks, a CarePlan, an Encounter,
  and (for most tests) the CareTeam {REGION, KOMMUN} and a Consent (deny all, permit KOMMUN, TREAT).
- KOMMUN is the municipality the rule is about; its state varies per test.
- OTHER is a third municipality that must never see anything.

"Nothing leaks" is checked three ways: no secret string (ids, personnummer, names, a marker
in every clinical resource) appears in a response unless the request itself carried it; a
probe for a hidden resource gets a response identical to the probe for a never-existing one
(status, headers, body modulo the ids); and the region's data is unchanged afterwards.
"""
from __future__ import annotations

import base64
import json as jsonlib
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlencode

import httpx
import pytest

from conftest import (
    FHIR, HSA_SYSTEM, PNR_SYSTEM, TEST_PNR, TEST_PNR_2, TEST_PNR_3, careplan, coding, get_token, link, local,
    organization, patient, running_gateway, task,
)

REGION, KOMMUN, OTHER = "SE2321000016-REG1", "SE2120000803-KOM1", "SE2120001231-OTH1"
KOMMUN_NEW_UNIT = "SE2120000803-KOM2"
BASE_HSA = "urn:oid:1.2.752.29.4.19"  # what HSA_SYSTEM (the alias) is normalised to on write
ACT_REASON = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
TREAT = {"system": ACT_REASON, "code": "TREAT"}
HRESCH = {"system": ACT_REASON, "code": "HRESCH"}  # research: not the purpose that opens access
IRCP = coding("http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "IRCP")
CONSENT_SCOPE = coding("http://terminology.hl7.org/CodeSystem/consentscope", "patient-privacy")
CONSENT_CATEGORY = [coding("http://loinc.org", "59284-0")]
OPT_IN = coding("http://terminology.hl7.org/CodeSystem/v3-ActCode", "OPTIN")
DIRECTORY = frozenset({"Organization", "Practitioner", "PractitionerRole", "Location", "HealthcareService",
                       "Endpoint"})

FAMILY, FAMILY_2 = "Tolvansson", "Tvåsson"
SECRET = "SECRET-REGION-NOTE-7f3a"  # in every clinical resource about the first patient
SECRET_2 = "SECRET-SECOND-PATIENT-91c2"  # in every clinical resource about the second patient

ENDED = {"start": "2020-01-01", "end": "2021-01-01"}
FUTURE = {"start": "2999-01-01"}
NOW_COVERED = {"start": "2020-01-01", "end": "2999-12-31"}

PATCH_TYPE = {"Content-Type": "application/json-patch+json"}
MISSING = {  # never-existing stand-ins, one per id a probe may name
    "pid": "00000000-0000-4000-8000-000000000001", "pid2": "00000000-0000-4000-8000-000000000002",
    "task": "00000000-0000-4000-8000-000000000003", "task2": "00000000-0000-4000-8000-000000000004",
    "task3": "00000000-0000-4000-8000-000000000005", "careplan": "00000000-0000-4000-8000-000000000006",
    "encounter": "00000000-0000-4000-8000-000000000007", "careteam": "00000000-0000-4000-8000-000000000008",
    "consent": "00000000-0000-4000-8000-000000000009", "pnr": TEST_PNR_3,
}


# -- builders ----------------------------------------------------------------------------
def provision(kind: str, *actors: dict, purpose=(TREAT,), period: dict | None = None, nested=()) -> dict:
    p: dict[str, Any] = {"type": kind}
    if actors:
        p["actor"] = [{"role": IRCP, "reference": a} for a in actors]
    if purpose:
        p["purpose"] = list(purpose)
    if period:
        p["period"] = period
    if nested:
        p["provision"] = list(nested)
    return p


def consent(pid: str, root: dict, status: str = "active") -> dict:
    return {"resourceType": "Consent", "status": status, "scope": CONSENT_SCOPE, "category": CONSENT_CATEGORY,
            "patient": {"reference": f"Patient/{pid}"}, "policyRule": OPT_IN, "provision": root}


def care_team(pid: str, participants: list[dict], status: str = "active", **extra) -> dict:
    return {"resourceType": "CareTeam", "status": status, "subject": {"reference": f"Patient/{pid}"},
            "participant": participants, **extra}


def logical(hsa: str) -> dict:
    """A logical reference to an organisation by HSA-id (alias system: normalised on write)."""
    return {"identifier": {"system": HSA_SYSTEM, "value": hsa}}


def binary_patch(ops: list[dict]) -> dict:
    return {"resourceType": "Binary", "contentType": "application/json-patch+json",
            "data": base64.b64encode(jsonlib.dumps(ops).encode()).decode()}


# -- the world ---------------------------------------------------------------------------
class World:
    """One gateway, three organisations, the region's data about two patients."""

    def __init__(self, http: httpx.AsyncClient, db_path: str):
        self.http = http
        self.db_path = db_path
        self.headers: dict[str, dict] = {}
        self.org: dict[str, str] = {}  # HSA-id → id of the region's Organization resource for it
        self.ids: dict[str, str] = {}

    # requests
    async def login(self, hsa: str, scope: str = "system/*.cruds") -> dict:
        token = await get_token(self.http, self.db_path, scope=scope, organization=hsa)
        return {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}

    async def call(self, who: str | dict, method: str, path: str, *, json: Any = None, form: dict | None = None,
                   headers: dict | None = None) -> httpx.Response:
        h = dict(who if isinstance(who, dict) else self.headers[who])
        content = None
        if form is not None:
            h["Content-Type"] = "application/x-www-form-urlencoded"
            content = urlencode(form)
        elif json is not None:
            content = jsonlib.dumps(json)
        h.update(headers or {})
        url = path if path.startswith("/") else f"{FHIR}/{path}" if path else FHIR
        return await self.http.request(method, url, content=content, headers=h)

    async def get(self, who: str | dict, path: str, **kw) -> httpx.Response:
        return await self.call(who, "GET", path, **kw)

    async def make(self, who: str, resource: dict) -> dict:
        r = await self.call(who, "POST", resource["resourceType"], json=resource)
        assert r.status_code == 201, r.text
        return r.json()

    async def update(self, who: str, resource: dict) -> httpx.Response:
        return await self.call(who, "PUT", f"{resource['resourceType']}/{resource['id']}", json=resource)

    async def current(self, rtype: str, rid: str) -> dict:
        """The region's view of its own resource (it always sees what it authored)."""
        r = await self.get(REGION, f"{rtype}/{rid}")
        assert r.status_code == 200, r.text
        return r.json()

    def ref(self, hsa: str) -> dict:
        return {"reference": f"Organization/{self.org[hsa]}"}

    # grants
    async def add_careteam(self, members=(REGION, KOMMUN), *, pid: str | None = None, status: str = "active",
                           participants: list[dict] | None = None, who: str = REGION, **extra) -> dict:
        participants = participants or [{"member": self.ref(m)} for m in members]
        stored = await self.make(who, care_team(pid or self.ids["pid"], participants, status, **extra))
        self.ids.setdefault("careteam", stored["id"])
        return stored

    async def add_consent(self, *nested: dict, root: str = "deny", status: str = "active",
                          period: dict | None = None, pid: str | None = None, who: str = REGION) -> dict:
        nested = nested or (provision("permit", self.ref(KOMMUN)),)
        stored = await self.make(who, consent(pid or self.ids["pid"],
                                              provision(root, purpose=(), period=period, nested=nested), status))
        self.ids.setdefault("consent", stored["id"])
        return stored

    async def share(self) -> None:
        """The standard shared plan: CareTeam {REGION, KOMMUN} and an opt-in Consent for KOMMUN."""
        await self.add_careteam()
        await self.add_consent()

    # secrets
    @property
    def first_patient_secrets(self) -> set[str]:
        keys = ("pid", "task", "task2", "careplan", "encounter", "careteam", "consent")
        return {self.ids[k] for k in keys if k in self.ids} | {TEST_PNR, FAMILY, SECRET}

    @property
    def second_patient_secrets(self) -> set[str]:
        return {self.ids["pid2"], self.ids["task3"], TEST_PNR_2, FAMILY_2, SECRET_2}

    @property
    def secrets(self) -> set[str]:
        return self.first_patient_secrets | self.second_patient_secrets

    def fill(self, template: Any, ids: dict[str, str] | None = None) -> Any:
        ids = self.ids if ids is None else ids
        if callable(template):
            return template(ids)
        return template.format(**ids) if isinstance(template, str) else template

    async def assert_untouched(self) -> None:
        """The region's resources are all still at version 1 with their original content."""
        for key, rtype in (("pid", "Patient"), ("pid2", "Patient"), ("task", "Task"), ("task2", "Task"),
                           ("task3", "Task"), ("careplan", "CarePlan"), ("encounter", "Encounter"),
                           ("careteam", "CareTeam"), ("consent", "Consent")):
            if key in self.ids:
                body = await self.current(rtype, self.ids[key])
                assert body["meta"]["versionId"] == "1", f"{rtype}/{self.ids[key]} was changed: {body}"
        assert (await self.current("Patient", self.ids["pid"]))["name"][0]["family"] == FAMILY
        assert (await self.current("Task", self.ids["task"]))["description"] == SECRET


async def build_world(http: httpx.AsyncClient, db_path: str) -> World:
    w = World(http, db_path)
    for hsa in (REGION, KOMMUN, OTHER):
        w.headers[hsa] = await w.login(hsa)
    for hsa, name in ((REGION, "Region Testland"), (KOMMUN, "Testkommun"), (OTHER, "Annan kommun")):
        w.org[hsa] = (await w.make(REGION, organization(name, hsa)))["id"]
    pid = (await w.make(REGION, patient(TEST_PNR, family=FAMILY, managingOrganization=w.ref(REGION))))["id"]
    pid2 = (await w.make(REGION, patient(TEST_PNR_2, family=FAMILY_2, given="Tvåan")))["id"]
    about = {"owner": w.ref(KOMMUN), "requester": w.ref(REGION)}
    t1 = await w.make(REGION, task(f"Patient/{pid}", description=SECRET, **about))
    t2 = await w.make(REGION, task(f"Patient/{pid}", status="in-progress", description=SECRET, **about))
    t3 = await w.make(REGION, task(f"Patient/{pid2}", description=SECRET_2, **about))
    cp = await w.make(REGION, careplan(f"Patient/{pid}", description=SECRET, author=w.ref(REGION)))
    enc = await w.make(REGION, {"resourceType": "Encounter", "status": "finished",
                                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
                                "subject": {"reference": f"Patient/{pid}"}, "reasonCode": [{"text": SECRET}],
                                "serviceProvider": w.ref(REGION)})
    w.ids = {"pid": pid, "pid2": pid2, "task": t1["id"], "task2": t2["id"], "task3": t3["id"],
             "careplan": cp["id"], "encounter": enc["id"], "pnr": TEST_PNR}
    return w


@pytest.fixture
async def world(settings):
    """The region's data, no CareTeam and no Consent yet."""
    async with running_gateway(settings, authorised=False) as http:
        yield await build_world(http, settings.db_path)


@pytest.fixture
async def shared(world):
    """The standard shared plan: KOMMUN may see the first patient's data, OTHER nothing."""
    await world.share()
    return world


# -- assertions --------------------------------------------------------------------------
def _request_text(r: httpx.Response) -> str:
    content = r.request.content.decode("utf-8", "replace") if r.request.content else ""
    return f"{r.request.url} {content}"


def assert_no_leak(r: httpx.Response, secrets: set[str]) -> None:
    """No secret the request did not itself carry appears anywhere in the response."""
    asked = _request_text(r)
    shown = r.text + " " + " ".join(f"{k}: {v}" for k, v in r.headers.items())
    leaked = sorted(s for s in secrets if s not in asked and s in shown)
    assert not leaked, f"{r.request.method} {r.request.url} leaked {leaked}: {r.status_code} {r.text[:800]}"


def _strip(node: Any) -> Any:
    """Drop what differs between any two responses: Bundle ids and timestamps."""
    if isinstance(node, dict):
        skip = {"id", "meta"} if node.get("resourceType") == "Bundle" else set()
        return {k: _strip(v) for k, v in node.items() if k not in skip and k != "lastModified"}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _shape(r: httpx.Response, mapping: dict[str, str]) -> tuple:
    text = r.text
    heads = {k: r.headers.get(k) for k in ("etag", "location", "last-modified", "content-location")}
    for old, new in mapping.items():
        text = text.replace(old, new)
        heads = {k: v.replace(old, new) if v else v for k, v in heads.items()}
    body = _strip(jsonlib.loads(text)) if text.strip() else None
    return r.status_code, heads, body


def assert_indistinguishable(w: World, hidden: httpx.Response, missing: httpx.Response) -> None:
    """The answer about a hidden resource equals the answer about a never-existing one."""
    mapping = {w.ids[k]: MISSING[k] for k in MISSING if k in w.ids}
    got, want = _shape(hidden, mapping), _shape(missing, {})
    assert got == want, (f"{hidden.request.method} {hidden.request.url} differs from the probe for a missing "
                         f"resource:\n hidden:  {got}\n missing: {want}")


def entries(r: httpx.Response) -> list[dict]:
    assert r.status_code == 200, r.text
    return r.json().get("entry", [])


def entry_types(r: httpx.Response) -> set[str]:
    return {e["resource"]["resourceType"] for e in entries(r) if "resource" in e}


def entry_keys(r: httpx.Response) -> set[str]:
    return {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in entries(r) if "resource" in e}


async def assert_empty_search(w: World, who: str | dict, path: str, secrets: set[str] | None = None) -> None:
    r = await w.get(who, path)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body.get("total", 0) == 0 and not body.get("entry"), f"{path}: {r.text[:800]}"
    assert not any(li["relation"] == "next" for li in body.get("link", [])), body
    assert_no_leak(r, w.secrets if secrets is None else secrets)


async def assert_sees_nothing_of_first_patient(w: World, who: str) -> None:
    """Reads look like misses, searches and histories are empty, counts are zero."""
    for key, rtype in (("pid", "Patient"), ("task", "Task"), ("careplan", "CarePlan"), ("encounter", "Encounter"),
                       ("careteam", "CareTeam"), ("consent", "Consent")):
        if key not in w.ids:
            continue
        hidden = await w.get(who, f"{rtype}/{w.ids[key]}")
        missing = await w.get(who, f"{rtype}/{MISSING[key]}")
        assert hidden.status_code == 404, f"{who} reads {rtype}/{w.ids[key]}: {hidden.status_code} {hidden.text}"
        assert_indistinguishable(w, hidden, missing)
        assert_no_leak(hidden, w.secrets)
    for path in (f"Task?patient={w.ids['pid']}", f"Patient?identifier={PNR_SYSTEM}|{TEST_PNR}",
                 "Patient?_summary=count", "Task?_total=accurate", "CarePlan", "Encounter", "CareTeam", "Consent",
                 "Task/_history", "Patient/_history", f"Task?patient={w.ids['pid']}&_summary=count"):
        await assert_empty_search(w, who, path)


async def assert_sees_first_patient(w: World, who: str) -> None:
    for key, rtype in (("pid", "Patient"), ("task", "Task"), ("task2", "Task"), ("careplan", "CarePlan"),
                       ("encounter", "Encounter")):
        r = await w.get(who, f"{rtype}/{w.ids[key]}")
        assert r.status_code == 200, f"{who} should read {rtype}/{w.ids[key]}: {r.text}"
    r = await w.get(who, f"Task?patient={w.ids['pid']}")
    assert r.json()["total"] == 2 and entry_keys(r) == {f"Task/{w.ids['task']}", f"Task/{w.ids['task2']}"}
    # ... and still nothing of the second patient: a grant is per person.
    hidden = await w.get(who, f"Task/{w.ids['task3']}")
    assert hidden.status_code == 404
    assert (await w.get(who, "Task?_summary=count")).json()["total"] == 2
    assert (await w.get(who, "Patient?_summary=count")).json()["total"] == 1


# =========================================================================================
# 1. Every read path, probed by an organisation that may not see: OTHER (in no CareTeam,
#    no consent) and KOMMUN in the CareTeam without a consent. Hidden must equal missing.
# =========================================================================================
@dataclass(frozen=True)
class Probe:
    name: str
    method: str
    path: str | Callable
    json: Any = None
    form: Any = None
    headers: dict = field(default_factory=dict)


def _tx(kind: str, *items: dict) -> Callable:
    """A transaction/batch Bundle template: request strings and resource builders get the ids."""
    def build(i: dict) -> dict:
        out = []
        for item in items:
            entry: dict = {"request": {k: v.format(**i) if isinstance(v, str) else v
                                       for k, v in item["request"].items()}}
            if "resource" in item:
                entry["resource"] = item["resource"](i) if callable(item["resource"]) else item["resource"]
            if "fullUrl" in item:
                entry["fullUrl"] = item["fullUrl"]
            out.append(entry)
        return {"resourceType": "Bundle", "type": kind, "entry": out}
    return build


def _get(url: str) -> dict:
    return {"request": {"method": "GET", "url": url}}


READ_ENTRIES = (_get("Patient/{pid}"), _get("Task/{task}"), _get("Task/{task}/_history/1"),
                _get("Task/{task}/_history"), _get("Task?patient={pid}"), _get("Task?patient={pid}&_summary=count"),
                _get(f"Patient?identifier={PNR_SYSTEM}|{{pnr}}"), _get("Consent/{consent}"))
PATCH_OPS = [{"op": "replace", "path": "/status", "value": "cancelled"}]

PROBES = [
    # read and vread
    Probe("read-Patient", "GET", "Patient/{pid}"),
    Probe("read-Task", "GET", "Task/{task}"),
    Probe("read-CarePlan", "GET", "CarePlan/{careplan}"),
    Probe("read-Encounter", "GET", "Encounter/{encounter}"),
    Probe("read-CareTeam", "GET", "CareTeam/{careteam}"),
    Probe("read-Consent", "GET", "Consent/{consent}"),
    Probe("head-Patient", "HEAD", "Patient/{pid}"),
    Probe("read-Task-if-none-match-etag", "GET", "Task/{task}", headers={"If-None-Match": 'W/"1"'}),
    Probe("vread-Patient", "GET", "Patient/{pid}/_history/1"),
    Probe("vread-Task", "GET", "Task/{task}/_history/1"),
    Probe("vread-Consent", "GET", "Consent/{consent}/_history/1"),
    # instance history (with _cursor the existence check is skipped: the filter must still hold)
    Probe("history-instance-Patient", "GET", "Patient/{pid}/_history"),
    Probe("history-instance-Task", "GET", "Task/{task}/_history"),
    Probe("history-instance-Task-since", "GET", "Task/{task}/_history?_since=2000-01-01T00:00:00Z"),
    Probe("history-instance-Task-with-cursor", "GET", "Task/{task}/_history?_cursor=9999999"),
    # search
    Probe("search-Patient-by-id", "GET", "Patient?_id={pid}"),
    Probe("search-Patient-by-personnummer", "GET", f"Patient?identifier={PNR_SYSTEM}|{{pnr}}"),
    Probe("search-Patient-by-personnummer-alias-system", "GET", "Patient?identifier=urn:oid:1.2.752.129.2.1.3.1|{pnr}"),
    Probe("search-Patient-by-personnummer-value-only", "GET", "Patient?identifier={pnr}"),
    Probe("search-Patient-by-personnummer-count", "GET", f"Patient?identifier={PNR_SYSTEM}|{{pnr}}&_summary=count"),
    Probe("search-Task-by-patient", "GET", "Task?patient={pid}"),
    Probe("search-Task-by-subject-total-accurate", "GET", "Task?subject=Patient/{pid}&_total=accurate"),
    Probe("search-Task-by-patient-summary-count", "GET", "Task?patient={pid}&_summary=count"),
    Probe("search-Task-by-patient-count-0", "GET", "Task?patient={pid}&_count=0"),
    Probe("search-Task-by-patient-count-1-paging", "GET", "Task?patient={pid}&_count=1&_total=accurate"),
    Probe("search-Task-by-id-not-cancelled", "GET", "Task?_id={task}&status:not=cancelled"),
    Probe("search-CarePlan-by-patient", "GET", "CarePlan?patient={pid}"),
    Probe("search-Encounter-by-subject", "GET", "Encounter?subject=Patient/{pid}"),
    Probe("search-CareTeam-by-patient", "GET", "CareTeam?patient={pid}"),
    Probe("search-Consent-by-patient", "GET", "Consent?patient={pid}"),
    Probe("search-Patient-revinclude-Task", "GET", "Patient?_id={pid}&_revinclude=Task:patient"),
    Probe("search-Task-include-Patient", "GET", "Task?_id={task}&_include=Task:patient"),
    Probe("search-Patient-revinclude-iterate", "GET",
          "Patient?_id={pid}&_revinclude=CarePlan:patient&_revinclude:iterate=Task:patient"),
    Probe("post-search-Task-by-patient", "POST", "Task/_search", form=lambda i: {"patient": i["pid"]}),
    Probe("post-search-Patient-by-personnummer", "POST", "Patient/_search",
          form=lambda i: {"identifier": f"{PNR_SYSTEM}|{i['pnr']}", "_total": "accurate"}),
    # $validate on an instance reads it
    Probe("validate-instance-GET", "GET", "Patient/{pid}/$validate"),
    Probe("validate-instance-mode-delete", "POST", "Task/{task}/$validate",
          json={"resourceType": "Parameters", "parameter": [{"name": "mode", "valueCode": "delete"}]}),
    # writes that must neither change nor reveal
    Probe("patch-Task", "PATCH", "Task/{task}", json=PATCH_OPS, headers=PATCH_TYPE),
    Probe("patch-Patient", "PATCH", "Patient/{pid}",
          json=[{"op": "replace", "path": "/name/0/family", "value": "Hacked"}], headers=PATCH_TYPE),
    Probe("patch-Consent-to-permit-all", "PATCH", "Consent/{consent}",
          json=[{"op": "replace", "path": "/provision/type", "value": "permit"}], headers=PATCH_TYPE),
    Probe("delete-Task", "DELETE", "Task/{task}"),
    Probe("delete-Patient", "DELETE", "Patient/{pid}"),
    Probe("delete-Consent", "DELETE", "Consent/{consent}"),
    # writes about the hidden person: refused exactly as for a person who does not exist
    Probe("create-Task-about-hidden-patient", "POST", "Task", json=lambda i: task(f"Patient/{i['pid']}")),
    Probe("create-CareTeam-naming-self-about-hidden-patient", "POST", "CareTeam",
          json=lambda i: care_team(i["pid"], [{"member": logical(OTHER)}, {"member": logical(KOMMUN)}])),
    Probe("create-Consent-permit-all-about-hidden-patient", "POST", "Consent",
          json=lambda i: consent(i["pid"], provision("permit", purpose=()))),
    Probe("conditional-update-Task-about-hidden-patient", "PUT", "Task?patient={pid}",
          json=lambda i: task(f"Patient/{i['pid']}", status="cancelled")),
    Probe("conditional-create-Encounter-about-hidden-patient", "POST", "Encounter",
          json=lambda i: {"resourceType": "Encounter", "status": "planned", "subject": {"reference": f"Patient/{i['pid']}"},
                          "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"}},
          headers={"If-None-Exist": "patient={pid}"}),
    # transaction and batch entries
    Probe("transaction-GET-entries", "POST", "", json=_tx("transaction", *READ_ENTRIES)),
    Probe("batch-GET-entries", "POST", "", json=_tx("batch", *READ_ENTRIES)),
    Probe("transaction-PATCH-entry", "POST", "", json=_tx(
        "transaction", {"resource": lambda i: binary_patch(PATCH_OPS), "request": {"method": "PATCH", "url": "Task/{task}"}})),
    Probe("batch-PATCH-and-DELETE-entries", "POST", "", json=_tx(
        "batch", {"resource": lambda i: binary_patch(PATCH_OPS), "request": {"method": "PATCH", "url": "Task/{task}"}},
        {"request": {"method": "DELETE", "url": "CarePlan/{careplan}"}})),
    Probe("transaction-DELETE-entries", "POST", "", json=_tx(
        "transaction", {"request": {"method": "DELETE", "url": "Patient/{pid}"}},
        {"request": {"method": "DELETE", "url": "Consent/{consent}"}})),
    Probe("transaction-conditional-reference-to-Patient", "POST", "", json=_tx(
        "transaction", {"fullUrl": "urn:uuid:5b0c1cde-3a5e-4c36-9d6b-1e4b0a1e0001",
                        "resource": lambda i: task(f"Patient?identifier={PNR_SYSTEM}|{i['pnr']}"),
                        "request": {"method": "POST", "url": "Task"}})),
    Probe("batch-conditional-reference-to-Patient", "POST", "", json=_tx(
        "batch", {"resource": lambda i: task(f"Patient?identifier={PNR_SYSTEM}|{i['pnr']}"),
                  "request": {"method": "POST", "url": "Task"}})),
    Probe("transaction-POST-CareTeam-and-Consent-about-hidden-patient", "POST", "", json=_tx(
        "transaction", {"resource": lambda i: care_team(i["pid"], [{"member": logical(OTHER)}]),
                        "request": {"method": "POST", "url": "CareTeam"}},
        {"resource": lambda i: consent(i["pid"], provision("permit", purpose=())),
         "request": {"method": "POST", "url": "Consent"}})),
    Probe("batch-PUT-conditional-Task-about-hidden-patient", "POST", "", json=_tx(
        "batch", {"resource": lambda i: task(f"Patient/{i['pid']}"), "request": {"method": "PUT", "url": "Task?patient={pid}"}})),
]


@pytest.fixture(params=["other-org-not-in-careteam", "kommun-in-careteam-without-consent",
                        "kommun-with-consent-without-careteam"])
async def attacker(request, world) -> tuple[World, str]:
    if request.param == "other-org-not-in-careteam":
        await world.share()
        return world, OTHER
    if request.param == "kommun-in-careteam-without-consent":
        await world.add_careteam()
        world.ids["consent"] = (await world.make(REGION, consent(world.ids["pid2"], provision("permit"))))["id"]
        return world, KOMMUN
    await world.add_careteam(members=(REGION,))
    await world.add_consent()
    return world, KOMMUN


async def _run_probe(w: World, who: str, probe: Probe, ids: dict[str, str]) -> httpx.Response:
    json = w.fill(probe.json, ids) if probe.json is not None else None
    form = w.fill(probe.form, ids) if probe.form is not None else None
    headers = {k: v.format(**ids) for k, v in probe.headers.items()}
    return await w.call(who, probe.method, w.fill(probe.path, ids), json=json, form=form, headers=headers)


@pytest.mark.parametrize("probe", PROBES, ids=[p.name for p in PROBES])
async def test_unauthorised_probe_reveals_nothing_and_changes_nothing(attacker, probe):
    """The attacker gets exactly what it would get for ids and personnummer that never existed."""
    w, who = attacker
    hidden = await _run_probe(w, who, probe, w.ids)
    missing = await _run_probe(w, who, probe, {**w.ids, **MISSING})
    assert hidden.status_code != 403, f"403 reveals existence: {hidden.text}"
    assert_no_leak(hidden, w.secrets)
    assert_indistinguishable(w, hidden, missing)
    await w.assert_untouched()


# =========================================================================================
# 2. Paths that are not about one id: type/system history, directory pivots, paging links.
# =========================================================================================
@pytest.mark.parametrize("who", [OTHER, KOMMUN])
async def test_type_history_of_patient_data_is_empty_for_unauthorised(world, who):
    await world.add_careteam(members=(REGION, OTHER))  # OTHER in the team, but no consent for anyone
    for rtype in ("Patient", "Task", "CarePlan", "Encounter", "CareTeam", "Consent"):
        await assert_empty_search(world, who, f"{rtype}/_history")
        await assert_empty_search(world, who, f"{rtype}/_history?_since=2000-01-01T00:00:00Z&_count=1")


async def test_other_system_history_shows_only_directory_resources(shared):
    r = await shared.get(OTHER, "_history")
    assert_no_leak(r, shared.secrets)
    body = r.json()
    assert entry_types(r) == {"Organization"}
    assert body["total"] == len(body["entry"]) == 3  # the count is of what OTHER may see, not of everything


async def test_system_history_needs_star_search_scope(shared):
    narrow = await shared.login(OTHER, "system/Organization.rs system/Task.rs")
    r = await shared.get(narrow, "_history")
    assert r.status_code == 403 and "system/*.s" in r.text
    assert_no_leak(r, shared.secrets)


DIRECTORY_PIVOTS = [
    ("revinclude-Task-owner", "Organization?_revinclude=Task:owner"),
    ("revinclude-Task-requester", "Organization?_revinclude=Task:requester"),
    ("revinclude-CareTeam-participant", "Organization?_revinclude=CareTeam:participant"),
    ("revinclude-Consent-actor", "Organization?_revinclude=Consent:actor"),
    ("revinclude-Patient-organization", "Organization?_revinclude=Patient:organization"),
    ("revinclude-CarePlan-author", "Organization?_revinclude=CarePlan:author"),
    ("revinclude-Encounter-service-provider", "Organization?_revinclude=Encounter:service-provider"),
    ("revinclude-then-include-iterate-Patient",
     "Organization?_revinclude=Task:owner&_include:iterate=Task:patient"),
    ("revinclude-then-revinclude-iterate",
     "Organization?_revinclude=Patient:organization&_revinclude:iterate=Task:patient"),
    ("revinclude-all-Task-refs-count-1", "Organization?_revinclude=Task:owner&_count=1"),
    ("revinclude-hidden-Encounter-then-include-iterate-subject",
     "Organization?_id={region_org}&_revinclude=Encounter:service-provider&_include:iterate=Encounter:subject"),
]
# Hidden resources must not serve as stepping stones: the only way from one Organization to the
# other below is through the region's hidden Tasks / CareTeam, so nothing may be included. (At
# commit 25a441b these leaked: :iterate followed links out of hidden first-level includes.)
DIRECTORY_PIVOTS = [pytest.param(path, id=name) for name, path in DIRECTORY_PIVOTS] + [
    pytest.param("Organization?_id={kommun_org}&_revinclude=Task:owner&_include:iterate=Task:requester",
                 id="stepping-stone-hidden-Task-then-include-iterate-requester"),
    pytest.param("Organization?_id={region_org}&_revinclude=CareTeam:participant"
                 "&_include:iterate=CareTeam:participant",
                 id="stepping-stone-hidden-CareTeam-then-include-iterate-participant"),
]


@pytest.mark.parametrize("path", DIRECTORY_PIVOTS)
async def test_other_cannot_pivot_from_open_directory_to_patient_data(shared, path):
    """Organizations are readable by all; what references them is not, nor what only it leads to."""
    r = await shared.get(OTHER, path.format(kommun_org=shared.org[KOMMUN], region_org=shared.org[REGION]))
    assert_no_leak(r, shared.secrets)
    assert entry_types(r) <= {"Organization"}
    assert all(e["search"]["mode"] == "match" for e in entries(r))


async def test_kommun_pivot_from_directory_includes_only_the_granted_patient(shared):
    r = await shared.get(KOMMUN, "Organization?_revinclude=Task:owner&_include:iterate=Task:patient")
    included = {k for k in entry_keys(r) if not k.startswith("Organization/")}
    assert included == {f"Task/{shared.ids['task']}", f"Task/{shared.ids['task2']}", f"Patient/{shared.ids['pid']}"}
    assert_no_leak(r, shared.second_patient_secrets)


async def test_getpages_link_of_region_is_useless_to_other_and_kommun(shared):
    r = await shared.get(REGION, f"Task?patient={shared.ids['pid']}&_count=1")
    nxt = link(r.json(), "next")
    assert nxt and r.json()["total"] == 2
    bogus = nxt.split("_getpages=")[0] + "_getpages=00000000-0000-4000-8000-0000000000ff&_getpagesoffset=1&_count=1"
    for who in (OTHER, KOMMUN):  # even KOMMUN, who may see these Tasks, may not reuse the region's search
        stolen = await shared.get(who, local(nxt))
        never = await shared.get(who, local(bogus))
        assert stolen.status_code == never.status_code == 404
        assert stolen.json()["issue"] == never.json()["issue"]
        assert_no_leak(stolen, shared.secrets)


async def test_other_paging_counts_only_its_own_resources(shared):
    other_patient = await shared.make(OTHER, patient(TEST_PNR_3, family="Annansson"))
    mine = [await shared.make(OTHER, task(f"Patient/{other_patient['id']}", description="other's own"))
            for _ in range(2)]
    r = await shared.get(OTHER, "Task?_count=1&_total=accurate")
    assert r.json()["total"] == 2
    seen = entry_keys(r)
    page = r.json()
    while link(page, "next"):
        page = (await shared.get(OTHER, local(link(page, "next")))).json()
        seen |= {f"Task/{e['resource']['id']}" for e in page.get("entry", [])}
    assert seen == {f"Task/{t['id']}" for t in mine}
    assert (await shared.get(OTHER, "Task?_summary=count")).json()["total"] == 2
    r = await shared.get(OTHER, "Task?_include=Task:patient&_revinclude:iterate=Task:patient")
    assert entry_keys(r) == {f"Task/{t['id']}" for t in mine} | {f"Patient/{other_patient['id']}"}
    assert_no_leak(r, shared.secrets)


# =========================================================================================
# 3. Writes by OTHER: conditional create/update, PUT of a hidden id, transactions.
# =========================================================================================
IF_NONE_EXIST = [
    ("Patient-by-personnummer", "Patient", f"identifier={PNR_SYSTEM}|{{pnr}}",
     lambda i: patient(i["pnr"], family="Someone")),
    ("Patient-by-id", "Patient", "_id={pid}", lambda i: patient(TEST_PNR_3, family="Someone")),
    ("Task-by-id", "Task", "_id={task}", lambda i: task(description="other's")),
    ("Task-by-patient", "Task", "patient={pid}", lambda i: task(description="other's")),
    ("Consent-by-actor", "Consent", "actor=Organization/{kommun_org}",
     lambda i: consent(i["other_pid"], provision("permit", purpose=()), status="draft")),
]


@pytest.mark.parametrize("via", ["http-if-none-exist", "transaction-ifNoneExist", "batch-ifNoneExist"])
@pytest.mark.parametrize("rtype,criteria,body", [c[1:] for c in IF_NONE_EXIST], ids=[c[0] for c in IF_NONE_EXIST])
async def test_other_conditional_create_does_not_match_region_resource(shared, via, rtype, criteria, body):
    """Criteria matching only what OTHER may not see match nothing: a new resource is created,
    the hidden one is neither returned nor named."""
    w = shared
    own = await w.make(OTHER, {"resourceType": "Patient", "name": [{"family": "Annansson"}]})  # OTHER's own

    async def attempt(ids: dict) -> tuple[int, str, httpx.Response]:
        ids = {**ids, "kommun_org": w.org[KOMMUN], "other_pid": own["id"]}
        crit, res = criteria.format(**ids), body(ids)
        if via == "http-if-none-exist":
            r = await w.call(OTHER, "POST", rtype, json=res, headers={"If-None-Exist": crit})
            return r.status_code, r.headers.get("location", ""), r
        bundle = {"resourceType": "Bundle", "type": via.split("-")[0], "entry": [
            {"fullUrl": "urn:uuid:0c8d7a34-7e0f-4b1a-9c55-2d1f4f7a0001", "resource": res,
             "request": {"method": "POST", "url": rtype, "ifNoneExist": crit}}]}
        r = await w.call(OTHER, "POST", "", json=bundle)
        assert r.status_code == 200, r.text
        resp = r.json()["entry"][0]["response"]
        return int(resp["status"].split()[0]), resp.get("location", ""), r

    status, location, r = await attempt(w.ids)
    missing_status, _, _ = await attempt({**w.ids, **MISSING})
    assert status == missing_status == 201, r.text
    assert not any(w.ids[k] in location for k in ("pid", "task", "consent"))
    assert_no_leak(r, w.secrets)
    await w.assert_untouched()


async def test_other_put_on_hidden_ids_neither_overwrites_nor_reveals(shared):
    w = shared
    for rtype, key, res in (("Patient", "pid", patient(TEST_PNR_3, family="Hacked")),
                            ("Task", "task", task(status="cancelled")),
                            ("Consent", "consent", consent(w.ids["pid"], provision("permit", purpose=())))):
        r = await w.call(OTHER, "PUT", f"{rtype}/{w.ids[key]}", json={**res, "id": w.ids[key]})
        assert r.status_code == 404, r.text
        assert_no_leak(r, w.secrets)
    await w.assert_untouched()
    await assert_sees_nothing_of_first_patient(w, OTHER)  # the permit-all consent did not land


@pytest.mark.parametrize("via", ["http", "transaction", "batch"])
async def test_other_conditional_update_does_not_touch_region_patient(shared, via):
    w = shared
    query = f"identifier={PNR_SYSTEM}|{TEST_PNR}"
    body = patient(TEST_PNR, family="Hacked")
    if via == "http":
        r = await w.call(OTHER, "PUT", f"Patient?{query}", json=body)
        status, location = r.status_code, r.headers.get("location", "")
    else:
        r = await w.call(OTHER, "POST", "", json={"resourceType": "Bundle", "type": via, "entry": [
            {"resource": body, "request": {"method": "PUT", "url": f"Patient?{query}"}}]})
        resp = r.json()["entry"][0]["response"]
        status, location = int(resp["status"].split()[0]), resp.get("location", "")
    assert status == 201, r.text  # nothing OTHER may see matched: it created its own Patient
    assert w.ids["pid"] not in location
    assert_no_leak(r, w.secrets - {TEST_PNR})
    await w.assert_untouched()


async def test_other_conditional_update_by_id_criteria_creates_instead_of_overwriting(shared):
    w = shared
    r = await w.call(OTHER, "PUT", f"Task?_id={w.ids['task']}", json=task(status="cancelled"))
    assert r.status_code == 201 and w.ids["task"] not in r.headers["location"], r.text
    assert_no_leak(r, w.secrets)
    await w.assert_untouched()


@pytest.mark.parametrize("via", ["transaction", "batch"])
async def test_other_transaction_put_of_hidden_id_does_not_overwrite(shared, via):
    w = shared
    r = await w.call(OTHER, "POST", "", json={"resourceType": "Bundle", "type": via, "entry": [
        {"resource": {**task(status="cancelled"), "id": w.ids["task"]},
         "request": {"method": "PUT", "url": f"Task/{w.ids['task']}"}},
        {"resource": {**patient(TEST_PNR_3, family="Hacked"), "id": w.ids["pid"]},
         "request": {"method": "PUT", "url": f"Patient/{w.ids['pid']}"}}]})
    if via == "transaction":
        assert r.status_code == 404, r.text
    else:
        assert [e["response"]["status"] for e in r.json()["entry"]] == ["404", "404"], r.text
    assert_no_leak(r, w.secrets)
    await w.assert_untouched()


async def test_other_transaction_cannot_attach_to_region_patient_via_ifnoneexist(shared):
    """ifNoneExist on the personnummer creates OTHER's own Patient; the Task points to that one."""
    w = shared
    r = await w.call(OTHER, "POST", "", json={"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:a1a1a1a1-0000-4000-8000-000000000001", "resource": patient(TEST_PNR, family="Other"),
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier={PNR_SYSTEM}|{TEST_PNR}"}},
        {"resource": task("urn:uuid:a1a1a1a1-0000-4000-8000-000000000001"),
         "request": {"method": "POST", "url": "Task"}},
        {"request": {"method": "GET", "url": f"Patient?identifier={PNR_SYSTEM}|{TEST_PNR}"}}]})
    assert r.status_code == 200, r.text
    assert r.json()["entry"][0]["response"]["status"].startswith("201")
    assert_no_leak(r, w.secrets - {TEST_PNR})
    found = r.json()["entry"][2]["resource"]
    assert found["total"] == 1 and found["entry"][0]["resource"]["name"][0]["family"] == "Other"
    await w.assert_untouched()


@pytest.mark.parametrize("via", ["put", "conditional-update-body-id", "transaction-put", "batch-put"])
async def test_other_put_on_hidden_id_answers_like_put_on_unused_id(shared, via):
    """Existence oracle (leaked at 25a441b: 404 'this id cannot be used' vs 201 Created for a free
    id). An authenticated caller cannot choose ids, so both answers are the same 404."""
    w = shared

    async def attempt(rid: str) -> tuple:
        body = {**task(status="cancelled"), "id": rid}
        if via == "put":
            r = await w.call(OTHER, "PUT", f"Task/{rid}", json=body)
        elif via == "conditional-update-body-id":
            r = await w.call(OTHER, "PUT", "Task?status=on-hold", json=body)
        else:
            r = await w.call(OTHER, "POST", "", json={"resourceType": "Bundle", "type": via.split("-")[0], "entry": [
                {"resource": body, "request": {"method": "PUT", "url": f"Task/{rid}"}}]})
        assert_no_leak(r, w.secrets)
        return _shape(r, {rid: "ID"})

    hidden = await attempt(w.ids["task"])
    unused = await attempt(MISSING["task"])
    await w.assert_untouched()
    assert hidden == unused, f"hidden id → {hidden}, unused id → {unused}"
    assert hidden[0] == (200 if via == "batch-put" else 404)


# =========================================================================================
# 4. KOMMUN in every state the rule denies: reads, searches, counts and histories are empty.
# =========================================================================================
async def _consent_before_careteam_exists(w):
    await w.add_consent()


async def _before_careteam_and_consent_exist(w):
    pass


async def _careteam_only(w):
    await w.add_careteam()


async def _consent_without_kommun_in_team(w):
    await w.add_careteam(members=(REGION, OTHER))
    await w.add_consent()


async def _deny_and_permit_in_same_consent(w):
    await w.add_careteam()
    await w.add_consent(provision("permit", w.ref(KOMMUN)), provision("deny", w.ref(KOMMUN)))


async def _second_consent_denies(w):
    await w.share()
    await w.add_consent(provision("deny", w.ref(KOMMUN)), root="permit")


async def _opt_out_consent_denying_kommun(w):
    await w.add_careteam()
    await w.add_consent(provision("deny", w.ref(KOMMUN)), root="permit")


async def _consent_period_ended(w):
    await w.add_careteam()
    await w.add_consent(period=ENDED)


async def _consent_not_started(w):
    await w.add_careteam()
    await w.add_consent(period=FUTURE)


async def _permit_provision_ended(w):
    await w.add_careteam()
    await w.add_consent(provision("permit", w.ref(KOMMUN), period=ENDED))


async def _permit_provision_not_started(w):
    await w.add_careteam()
    await w.add_consent(provision("permit", w.ref(KOMMUN), period=FUTURE))


async def _consent_purpose_research(w):
    await w.add_careteam()
    await w.add_consent(provision("permit", w.ref(KOMMUN), purpose=(HRESCH,)))


async def _consent_purpose_treat_wrong_system(w):
    await w.add_careteam()
    await w.add_consent(provision("permit", w.ref(KOMMUN), purpose=({"system": "urn:other", "code": "TREAT"},)))


async def _consent_draft(w):
    await w.add_careteam()
    await w.add_consent(status="draft")


async def _consent_proposed(w):
    await w.add_careteam()
    await w.add_consent(status="proposed")


async def _consent_inactive(w):
    await w.add_careteam()
    await w.add_consent(status="inactive")


async def _consent_rejected(w):
    await w.add_careteam()
    await w.add_consent(status="rejected")


async def _consent_permits_someone_else(w):
    await w.add_careteam(members=(REGION, KOMMUN, OTHER))
    await w.add_consent(provision("permit", w.ref(OTHER)))


async def _consent_for_other_patient(w):
    await w.add_careteam()
    await w.add_consent(pid=w.ids["pid2"])


async def _careteam_for_other_patient(w):
    await w.add_careteam(pid=w.ids["pid2"])
    await w.add_consent()


async def _careteam_inactive(w):
    await w.add_careteam(status="inactive")
    await w.add_consent()


async def _careteam_proposed(w):
    await w.add_careteam(status="proposed")
    await w.add_consent()


async def _careteam_entered_in_error(w):
    await w.add_careteam(status="entered-in-error")
    await w.add_consent()


async def _careteam_period_ended(w):
    await w.add_careteam(period=ENDED)
    await w.add_consent()


async def _participant_period_ended(w):
    await w.add_careteam(participants=[{"member": w.ref(REGION)}, {"member": w.ref(KOMMUN), "period": ENDED}])
    await w.add_consent()


async def _participant_not_started(w):
    await w.add_careteam(participants=[{"member": w.ref(REGION)}, {"member": w.ref(KOMMUN), "period": FUTURE}])
    await w.add_consent()


async def _member_organization_without_hsa(w):
    nameless = await w.make(REGION, organization("Testkommun (no HSA-id)"))
    await w.add_careteam(participants=[{"member": {"reference": f"Organization/{nameless['id']}"}}])
    await w.add_consent(provision("permit", {"reference": f"Organization/{nameless['id']}"}))


async def _member_logical_reference_to_other_hsa(w):
    await w.add_careteam(participants=[{"member": logical(OTHER)}])
    await w.add_consent(provision("permit", logical(KOMMUN)))


async def _kommun_only_in_managing_organization(w):
    await w.add_careteam(members=(REGION,), managingOrganization=[w.ref(KOMMUN)])
    await w.add_consent()


async def _consent_names_kommun_only_as_performer(w):
    """KOMMUN recorded as who *took* the consent (performer, organization), not as a recipient."""
    await w.add_careteam()
    cons = consent(w.ids["pid"], provision("deny", purpose=(), nested=[provision("permit", w.ref(OTHER))]))
    cons.update(performer=[w.ref(KOMMUN)], organization=[w.ref(KOMMUN)])
    w.ids["consent"] = (await w.make(REGION, cons))["id"]


DENIED = [_before_careteam_and_consent_exist, _consent_before_careteam_exists, _careteam_only, _consent_without_kommun_in_team, _deny_and_permit_in_same_consent,
          _second_consent_denies, _opt_out_consent_denying_kommun, _consent_period_ended, _consent_not_started,
          _permit_provision_ended, _permit_provision_not_started, _consent_purpose_research,
          _consent_purpose_treat_wrong_system, _consent_draft, _consent_proposed, _consent_inactive, _consent_rejected,
          _consent_permits_someone_else, _consent_for_other_patient, _careteam_for_other_patient, _careteam_inactive,
          _careteam_proposed, _careteam_entered_in_error, _careteam_period_ended, _participant_period_ended,
          _participant_not_started, _member_organization_without_hsa, _member_logical_reference_to_other_hsa,
          _kommun_only_in_managing_organization, _consent_names_kommun_only_as_performer]


@pytest.mark.parametrize("scenario", DENIED, ids=[f.__name__.strip("_").replace("_", "-") for f in DENIED])
async def test_kommun_denied_by_rule_sees_nothing(world, scenario):
    await scenario(world)
    await assert_sees_nothing_of_first_patient(world, KOMMUN)
    if scenario is not _consent_permits_someone_else:
        await assert_sees_nothing_of_first_patient(world, OTHER)
    else:  # the control: there OTHER is in the team and the consent permits it
        await assert_sees_first_patient(world, OTHER)
    await world.assert_untouched()


# =========================================================================================
# 5. Positive: the rule opens exactly what it should (also proves the probes above bite).
# =========================================================================================
async def _standard(w):
    await w.share()


async def _member_practitionerrole(w):
    role = await w.make(KOMMUN, {"resourceType": "PractitionerRole", "organization": w.ref(KOMMUN)})
    await w.add_careteam(participants=[{"member": w.ref(REGION)}, {"member": {"reference": f"PractitionerRole/{role['id']}"}}])
    await w.add_consent()


async def _member_on_behalf_of(w):
    prac = await w.make(KOMMUN, {"resourceType": "Practitioner", "name": [{"family": "Sjuksköterska"}]})
    await w.add_careteam(participants=[{"member": {"reference": f"Practitioner/{prac['id']}"},
                                        "onBehalfOf": w.ref(KOMMUN)}])
    await w.add_consent()


async def _logical_hsa_references(w):
    await w.add_careteam(participants=[{"member": logical(REGION)}, {"member": logical(KOMMUN)}])
    await w.add_consent(provision("permit", logical(KOMMUN)))


async def _opt_out_root_permit(w):
    await w.add_careteam()
    await w.add_consent(provision("deny", w.ref(OTHER)), root="permit")


async def _periods_covering_now(w):
    await w.add_careteam(period=NOW_COVERED, participants=[{"member": w.ref(KOMMUN), "period": NOW_COVERED}])
    await w.add_consent(provision("permit", w.ref(KOMMUN), period=NOW_COVERED), period=NOW_COVERED)


async def _inactive_careteam_beside_active_one(w):
    await w.add_careteam(status="inactive", members=(OTHER,))
    await w.share()


GRANTED = [_standard, _member_practitionerrole, _member_on_behalf_of, _logical_hsa_references, _opt_out_root_permit,
           _periods_covering_now, _inactive_careteam_beside_active_one]


@pytest.mark.parametrize("scenario", GRANTED, ids=[f.__name__.strip("_").replace("_", "-") for f in GRANTED])
async def test_kommun_with_careteam_and_permitting_consent_sees_patient_data(world, scenario):
    await scenario(world)
    await assert_sees_first_patient(world, KOMMUN)
    await assert_sees_nothing_of_first_patient(world, OTHER)


async def test_kommun_granted_reads_and_searches_with_correct_totals(shared):
    w = shared
    for key, rtype in (("careteam", "CareTeam"), ("consent", "Consent")):
        assert (await w.get(KOMMUN, f"{rtype}/{w.ids[key]}")).status_code == 200
    r = await w.get(KOMMUN, f"Patient?identifier=urn:oid:1.2.752.129.2.1.3.1|{TEST_PNR}")
    assert entry_keys(r) == {f"Patient/{w.ids['pid']}"} and r.json()["total"] == 1
    r = await w.get(KOMMUN, f"Patient?identifier={PNR_SYSTEM}|{TEST_PNR_2}")
    assert r.json()["total"] == 0  # the second patient exists, but KOMMUN holds no grant for it
    r = await w.get(KOMMUN, f"Task?patient={w.ids['pid']}&_count=1&_total=accurate")
    assert r.json()["total"] == 2
    page2 = await w.get(KOMMUN, local(link(r.json(), "next")))
    assert entry_keys(r) | entry_keys(page2) == {f"Task/{w.ids['task']}", f"Task/{w.ids['task2']}"}
    r = await w.call(KOMMUN, "POST", "Task/_search", form={"owner": f"Organization/{w.org[KOMMUN]}"})
    assert r.json()["total"] == 2  # not task3: same owner, other patient
    assert_no_leak(r, w.second_patient_secrets)
    r = await w.get(KOMMUN, f"Patient?_id={w.ids['pid']},{w.ids['pid2']}&_revinclude=Task:patient")
    assert entry_keys(r) == {f"Patient/{w.ids['pid']}", f"Task/{w.ids['task']}", f"Task/{w.ids['task2']}"}
    r = await w.get(KOMMUN, "Task/_history")
    assert r.json()["total"] == 2
    assert_no_leak(r, w.second_patient_secrets)
    await assert_sees_nothing_of_first_patient(w, OTHER)


async def test_kommun_granted_works_on_the_shared_plan_within_the_write_rule(shared):
    """The owner moves its Task along and a party adds its own activity; the plan's text stays the region's."""
    w = shared
    cp = (await w.get(KOMMUN, f"CarePlan/{w.ids['careplan']}")).json()
    r = await w.update(KOMMUN, {**cp, "description": "updated by kommun"})
    assert r.status_code == 403 and r.json()["issue"][0]["expression"] == ["CarePlan.description"], r.text
    own = await w.make(KOMMUN, task(f"Patient/{w.ids['pid']}", description="hemtjänst startar"))
    r = await w.update(KOMMUN, {**cp, "activity": [*cp.get("activity", []), {"reference": {"reference": f"Task/{own['id']}"}}]})
    assert r.status_code == 200 and r.json()["meta"]["versionId"] == "2", r.text
    r = await w.call(KOMMUN, "PATCH", f"Task/{w.ids['task']}", json=[{"op": "replace", "path": "/status",
                                                                         "value": "accepted"}], headers=PATCH_TYPE)
    assert r.status_code == 200, r.text
    assert (await w.current("Task", w.ids["task"]))["status"] == "accepted"
    # The region remains the author: OTHER still sees nothing, the region still sees it.
    await assert_sees_nothing_of_first_patient(w, OTHER)


async def test_kommun_granted_cannot_delete_region_resources(shared):
    w = shared
    for rtype, key in (("Task", "task"), ("Patient", "pid"), ("Consent", "consent")):
        r = await w.call(KOMMUN, "DELETE", f"{rtype}/{w.ids[key]}")
        assert r.status_code == 403, r.text  # it may see them, so 403 tells it nothing new
    await w.assert_untouched()


async def test_kommun_granted_still_cannot_see_second_patient(shared):
    w = shared
    for rtype, key in (("Patient", "pid2"), ("Task", "task3")):
        hidden = await w.get(KOMMUN, f"{rtype}/{w.ids[key]}")
        missing = await w.get(KOMMUN, f"{rtype}/{MISSING[key]}")
        assert_indistinguishable(w, hidden, missing)
    for path in (f"Task?patient={w.ids['pid2']}", f"Patient?identifier={PNR_SYSTEM}|{TEST_PNR_2}",
                 f"Task/{w.ids['task3']}/_history", f"Patient?_id={w.ids['pid2']}&_revinclude=Task:patient"):
        r = await w.get(KOMMUN, path)
        assert_no_leak(r, w.second_patient_secrets)


async def test_region_always_sees_what_it_authored_even_when_consent_denies_everyone(world):
    w = world
    await w.add_careteam(members=(KOMMUN,))  # the region is not even in the team
    await w.add_consent(provision("deny", purpose=()), root="deny")
    await w.assert_untouched()
    r = await w.get(REGION, "Task?_summary=count")
    assert r.json()["total"] == 3
    assert (await w.get(REGION, f"Task/{w.ids['task']}/_history")).json()["total"] == 1


async def test_data_kommun_authors_about_the_patient_is_hidden_from_other(shared):
    w = shared
    own = await w.make(KOMMUN, task(f"Patient/{w.ids['pid']}", description="KOMMUN-NOTE-55"))
    hidden = await w.get(OTHER, f"Task/{own['id']}")
    assert hidden.status_code == 404 and "KOMMUN-NOTE-55" not in hidden.text
    assert (await w.get(OTHER, f"Task?patient={w.ids['pid']}&_summary=count")).json()["total"] == 0


async def test_other_reads_directory_but_cannot_change_region_organization(shared):
    w = shared
    region_org = w.org[REGION]
    r = await w.get(OTHER, f"Organization/{region_org}")
    assert r.status_code == 200 and r.json()["identifier"][0] == {"system": BASE_HSA, "value": REGION}
    assert (await w.get(OTHER, "Organization?_summary=count")).json()["total"] == 3
    assert (await w.get(OTHER, f"Organization?identifier={HSA_SYSTEM}|{KOMMUN}")).json()["total"] == 1
    changed = {**r.json(), "identifier": [{"system": BASE_HSA, "value": OTHER}]}
    assert (await w.update(OTHER, changed)).status_code == 403
    r = await w.call(OTHER, "PATCH", f"Organization/{region_org}",
                     json=[{"op": "replace", "path": "/name", "value": "Hacked"}], headers=PATCH_TYPE)
    assert r.status_code == 403
    assert (await w.call(OTHER, "DELETE", f"Organization/{region_org}")).status_code == 403
    r = await w.call(OTHER, "POST", "", json={"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": changed, "request": {"method": "PUT", "url": f"Organization/{region_org}"}}]})
    assert r.status_code == 403
    # KOMMUN, though it takes part in the shared plan, may not change the region's directory entries either
    assert (await w.update(KOMMUN, changed)).status_code == 403
    after = await w.current("Organization", region_org)
    assert after["meta"]["versionId"] == "1" and after["name"] == "Region Testland"


# =========================================================================================
# 6. Access ends the moment the grant does.
# =========================================================================================
async def _withdraw_consent(w):
    cons = await w.current("Consent", w.ids["consent"])
    assert (await w.update(REGION, {**cons, "status": "inactive"})).status_code == 200


async def _delete_consent(w):
    assert (await w.call(REGION, "DELETE", f"Consent/{w.ids['consent']}")).status_code == 204


async def _patch_permit_into_deny(w):
    r = await w.call(REGION, "PATCH", f"Consent/{w.ids['consent']}",
                     json=[{"op": "replace", "path": "/provision/provision/0/type", "value": "deny"}], headers=PATCH_TYPE)
    assert r.status_code == 200, r.text


async def _add_denying_consent(w):
    await w.add_consent(provision("deny", w.ref(KOMMUN)), root="permit")


async def _withdraw_in_transaction(w):
    cons = await w.current("Consent", w.ids["consent"])
    r = await w.call(REGION, "POST", "", json={"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {**cons, "status": "inactive"}, "request": {"method": "PUT", "url": f"Consent/{cons['id']}"}}]})
    assert r.status_code == 200, r.text


async def _end_consent_period(w):
    cons = await w.current("Consent", w.ids["consent"])
    cons["provision"]["period"] = ENDED
    assert (await w.update(REGION, cons)).status_code == 200


async def _careteam_inactivated(w):
    team = await w.current("CareTeam", w.ids["careteam"])
    assert (await w.update(REGION, {**team, "status": "inactive"})).status_code == 200


async def _careteam_deleted(w):
    assert (await w.call(REGION, "DELETE", f"CareTeam/{w.ids['careteam']}")).status_code == 204


async def _kommun_removed_from_careteam(w):
    team = await w.current("CareTeam", w.ids["careteam"])
    team["participant"] = [{"member": w.ref(REGION)}]
    assert (await w.update(REGION, team)).status_code == 200


async def _participant_period_closed(w):
    r = await w.call(REGION, "PATCH", f"CareTeam/{w.ids['careteam']}",
                     json=[{"op": "add", "path": "/participant/1/period", "value": ENDED}], headers=PATCH_TYPE)
    assert r.status_code == 200, r.text


async def _kommun_organization_deleted(w):
    assert (await w.call(REGION, "DELETE", f"Organization/{w.org[KOMMUN]}")).status_code == 204


REVOCATIONS = [_withdraw_consent, _delete_consent, _patch_permit_into_deny, _add_denying_consent,
               _withdraw_in_transaction, _end_consent_period, _careteam_inactivated, _careteam_deleted,
               _kommun_removed_from_careteam, _participant_period_closed, _kommun_organization_deleted]


@pytest.mark.parametrize("revoke", REVOCATIONS, ids=[f.__name__.strip("_").replace("_", "-") for f in REVOCATIONS])
async def test_kommun_access_ends_immediately_when(shared, revoke):
    await assert_sees_first_patient(shared, KOMMUN)
    await revoke(shared)
    await assert_sees_nothing_of_first_patient(shared, KOMMUN)


async def test_kommun_regains_access_when_consent_is_given_again(shared):
    await _withdraw_consent(shared)
    await assert_sees_nothing_of_first_patient(shared, KOMMUN)
    cons = await shared.current("Consent", shared.ids["consent"])
    assert (await shared.update(REGION, {**cons, "status": "active"})).status_code == 200
    await assert_sees_first_patient(shared, KOMMUN)


async def test_kommun_paging_link_stops_working_when_consent_is_withdrawn(shared):
    """Leaked at 25a441b: the pages of a search remembered before the withdrawal kept serving
    the Tasks. (The page may repeat the total the search showed while access held; no data.)"""
    w = shared
    r = await w.get(KOMMUN, f"Task?patient={w.ids['pid']}&_count=1&_include=Task:patient")
    nxt = link(r.json(), "next")
    assert nxt and r.json()["total"] == 2
    await _withdraw_consent(w)
    assert (await w.get(KOMMUN, f"Task/{w.ids['task']}")).status_code == 404  # reads end at once ...
    for url in (nxt, link(r.json(), "first"), link(r.json(), "last")):
        page = await w.get(KOMMUN, local(url))  # ... and so do the pages of a search run before
        assert_no_leak(page, w.secrets)
        assert not page.json().get("entry"), page.text[:600]


@pytest.mark.parametrize("change", ["organization-hsa-id-changed", "organization-deleted",
                                    "practitionerrole-moved-to-other-organization",
                                    "on-behalf-of-organization-hsa-id-changed"])
async def test_kommun_access_ends_when_referenced_directory_entry_no_longer_names_it(world, change):
    """Leaked at 25a441b: grants were recomputed only on CareTeam/Consent writes, so the old
    organisation kept access after the directory entry the CareTeam names stopped naming it."""
    w = world
    if change == "practitionerrole-moved-to-other-organization":
        role = await w.make(REGION, {"resourceType": "PractitionerRole", "organization": w.ref(KOMMUN)})
        await w.add_careteam(participants=[{"member": w.ref(REGION)},
                                           {"member": {"reference": f"PractitionerRole/{role['id']}"}}])
        await w.add_consent(provision("permit", w.ref(KOMMUN)))
    elif change == "on-behalf-of-organization-hsa-id-changed":
        prac = await w.make(REGION, {"resourceType": "Practitioner", "name": [{"family": "Sjuksköterska"}]})
        await w.add_careteam(participants=[{"member": {"reference": f"Practitioner/{prac['id']}"},
                                            "onBehalfOf": w.ref(KOMMUN)}])
        await w.add_consent(provision("permit", logical(KOMMUN)))
    else:
        await w.share()
    await assert_sees_first_patient(w, KOMMUN)
    if change in ("organization-hsa-id-changed", "on-behalf-of-organization-hsa-id-changed"):
        org = await w.current("Organization", w.org[KOMMUN])  # the unit was re-registered under a new HSA-id
        org["identifier"] = [{"system": BASE_HSA, "value": KOMMUN_NEW_UNIT}]
        assert (await w.update(REGION, org)).status_code == 200
    elif change == "organization-deleted":
        assert (await w.call(REGION, "DELETE", f"Organization/{w.org[KOMMUN]}")).status_code == 204
    else:
        role = await w.current("PractitionerRole", role["id"])
        assert (await w.update(REGION, {**role, "organization": w.ref(OTHER)})).status_code == 200
    await assert_sees_nothing_of_first_patient(w, KOMMUN)
    await assert_sees_nothing_of_first_patient(w, OTHER)  # nor did the change open it to OTHER


# =========================================================================================
# 7. Escalation: writing the grant resources, moving resources between people.
# =========================================================================================
@pytest.mark.parametrize("via", ["http", "transaction", "batch"])
async def test_other_cannot_grant_itself_access_with_its_own_careteam_and_consent(shared, via):
    """Leaked at 25a441b: knowing a Patient id was enough to write a CareTeam and a permitting
    Consent naming oneself; for a patient with no consent of anyone else's, that opened
    everything. The second patient here has no shared plan and no consent at all."""
    w = shared
    pid2 = w.ids["pid2"]  # learnt out of band (a referral, a message): ids are not secrets
    grants = [care_team(pid2, [{"member": logical(OTHER)}]), consent(pid2, provision("permit", purpose=()))]
    if via == "http":
        responses = [await w.call(OTHER, "POST", res["resourceType"], json=res) for res in grants]
    else:
        responses = [await w.call(OTHER, "POST", "", json={"resourceType": "Bundle", "type": via, "entry": [
            {"resource": res, "request": {"method": "POST", "url": res["resourceType"]}} for res in grants]})]
    for r in responses:
        assert "201" not in (r.text if via == "batch" else str(r.status_code)), r.text
        assert_no_leak(r, w.secrets)
    for rtype, key in (("Patient", "pid2"), ("Task", "task3")):
        r = await w.get(OTHER, f"{rtype}/{w.ids[key]}")
        assert r.status_code == 404, f"OTHER reads the region's {rtype}: {r.text[:300]}"
    assert (await w.get(OTHER, f"Task?patient={pid2}&_summary=count")).json()["total"] == 0
    assert (await w.get(REGION, f"CareTeam?patient={pid2}&_summary=count")).json()["total"] == 0


async def test_other_cannot_deny_kommun_by_writing_a_consent_about_the_patient(shared):
    """Deny wins across consents, so a denying Consent written by anyone would cut KOMMUN off."""
    w = shared
    r = await w.call(OTHER, "POST", "Consent", json=consent(w.ids["pid"], provision("deny", purpose=())))
    assert r.status_code != 201, r.text
    assert_no_leak(r, w.secrets)
    await assert_sees_first_patient(w, KOMMUN)


@pytest.mark.parametrize("rtype", ["CareTeam", "Consent"])
async def test_kommun_cannot_rewrite_region_grant_resources_to_let_other_in(shared, rtype):
    """Leaked at 25a441b: a party of the shared plan could edit the region's CareTeam and Consent
    (patient data it may see) and so let a third organisation in. Now only their author may."""
    w = shared
    w_key = "careteam" if rtype == "CareTeam" else "consent"
    other_grant = {"CareTeam": care_team(w.ids["pid"], [{"member": w.ref(OTHER)}]),
                   "Consent": consent(w.ids["pid"], provision("permit", purpose=()))}
    await w.make(KOMMUN, other_grant["Consent" if rtype == "CareTeam" else "CareTeam"])  # KOMMUN may write its own
    current = (await w.get(KOMMUN, f"{rtype}/{w.ids[w_key]}")).json()
    if rtype == "CareTeam":
        current["participant"].append({"member": w.ref(OTHER)})
    else:
        current["provision"]["provision"].append(provision("permit", w.ref(OTHER)))
    r = await w.update(KOMMUN, current)
    assert r.status_code == 403, r.text
    patch = [{"op": "replace", "path": "/status", "value": "inactive"}]
    assert (await w.call(KOMMUN, "PATCH", f"{rtype}/{w.ids[w_key]}", json=patch,
                         headers=PATCH_TYPE)).status_code == 403
    await assert_sees_nothing_of_first_patient(w, OTHER)
    assert (await w.current(rtype, w.ids[w_key]))["meta"]["versionId"] == "1"


async def test_other_cannot_attach_a_careteam_to_the_patient_by_personnummer(shared):
    """Without the id, a conditional reference on the personnummer resolves to nothing OTHER may see."""
    w = shared
    r = await w.call(OTHER, "POST", "", json={"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": {**care_team("x", [{"member": logical(OTHER)}]),
                      "subject": {"reference": f"Patient?identifier={PNR_SYSTEM}|{TEST_PNR}"}},
         "request": {"method": "POST", "url": "CareTeam"}},
        {"resource": {**consent("x", provision("permit", purpose=())),
                      "patient": {"reference": f"Patient?identifier={PNR_SYSTEM}|{TEST_PNR}"}},
         "request": {"method": "POST", "url": "Consent"}}]})
    assert r.status_code == 412, r.text
    assert_no_leak(r, w.secrets - {TEST_PNR})
    await assert_sees_nothing_of_first_patient(w, OTHER)


async def test_resource_cannot_be_moved_to_a_patient_the_reader_has_no_grant_for(shared):
    """Leaked at 25a441b: access to versions followed the resource's *current* patient, so a Task
    moved from the second patient to the first served its old version (about the second
    patient) to KOMMUN via vread and history. Now a resource stays with its person."""
    w = shared
    misfiled = await w.make(REGION, task(f"Patient/{w.ids['pid2']}", description=SECRET_2))
    moved = {**misfiled, "for": {"reference": f"Patient/{w.ids['pid']}"}, "description": "about the first patient"}
    r = await w.update(REGION, moved)
    assert r.status_code in (400, 409, 422), r.text
    for path in (f"Task/{misfiled['id']}", f"Task/{misfiled['id']}/_history/1", f"Task/{misfiled['id']}/_history",
                 "Task/_history", f"Task?patient={w.ids['pid']}"):
        assert_no_leak(await w.get(KOMMUN, path), w.second_patient_secrets)


@pytest.mark.parametrize("rtype", ["CareTeam", "Consent"])
async def test_grant_resources_cannot_be_moved_to_another_patient(shared, rtype):
    w = shared
    key, element = ("careteam", "subject") if rtype == "CareTeam" else ("consent", "patient")
    current = await w.current(rtype, w.ids[key])
    current[element] = {"reference": f"Patient/{w.ids['pid2']}"}
    r = await w.update(REGION, current)
    assert r.status_code in (400, 409, 422), r.text
    await assert_sees_first_patient(w, KOMMUN)  # unchanged, and still nothing of the second patient


# =========================================================================================
# 8. Scopes: narrower than the interaction → 403, checked before any lookup.
# =========================================================================================
SCOPE_CASES = [
    ("read-Task-with-Patient-rs", "system/Patient.rs", "GET", "Task/{task}", None),
    ("vread-Task-with-Patient-rs", "system/Patient.rs", "GET", "Task/{task}/_history/1", None),
    ("instance-history-Task-with-Patient-rs", "system/Patient.rs", "GET", "Task/{task}/_history", None),
    ("type-history-Task-with-Patient-rs", "system/Patient.rs", "GET", "Task/_history", None),
    ("system-history-with-star-r", "system/*.r", "GET", "_history", None),
    ("search-Task-with-Patient-rs", "system/Patient.rs", "GET", "Task?patient={pid}", None),
    ("post-search-Task-with-Patient-rs", "system/Patient.rs", "POST", "Task/_search", {"form": {"patient": "{pid}"}}),
    ("validate-instance-Task-with-Patient-rs", "system/Patient.rs", "GET", "Task/{task}/$validate", None),
    ("create-Task-with-Patient-rs", "system/Patient.rs", "POST", "Task", {"json": task("Patient/{pid}")}),
    ("create-Task-with-Task-rs", "system/Task.rs", "POST", "Task", {"json": task("Patient/{pid}")}),
    ("update-Task-with-Task-rs", "system/Task.rs", "PUT", "Task/{task}", {"json": {**task(), "id": "{task}"}}),
    ("conditional-update-Task-with-Task-rs", "system/Task.rs", "PUT", "Task?_id={task}", {"json": task()}),
    ("patch-Task-with-Task-rs", "system/Task.rs", "PATCH", "Task/{task}", {"json": PATCH_OPS, "headers": PATCH_TYPE}),
    ("delete-Task-with-Task-rs", "system/Task.rs", "DELETE", "Task/{task}", None),
    ("read-Task-with-Task-s-only", "system/Task.s", "GET", "Task/{task}", None),
    ("search-Task-with-Task-r-only", "system/Task.r", "GET", "Task?patient={pid}", None),
    ("create-Consent-with-Task-cruds", "system/Task.cruds", "POST", "Consent",
     {"json": consent("{pid}", provision("permit", purpose=()))}),
    ("transaction-POST-Task-with-Patient-rs", "system/Patient.rs", "POST", "",
     {"json": {"resourceType": "Bundle", "type": "transaction",
               "entry": [{"resource": task("Patient/{pid}"), "request": {"method": "POST", "url": "Task"}}]}}),
]


def _format_deep(node: Any, ids: dict) -> Any:
    if isinstance(node, str):
        return node.format(**ids) if "{" in node else node
    if isinstance(node, dict):
        return {k: _format_deep(v, ids) for k, v in node.items()}
    if isinstance(node, list):
        return [_format_deep(v, ids) for v in node]
    return node


@pytest.mark.parametrize("scope,method,path,kw", [c[1:] for c in SCOPE_CASES], ids=[c[0] for c in SCOPE_CASES])
async def test_scope_narrower_than_interaction_is_403(shared, scope, method, path, kw):
    w = shared  # KOMMUN may see the data: only the scope stands in the way
    narrow = await w.login(KOMMUN, scope)
    r = await w.call(narrow, method, path.format(**w.ids), **_format_deep(kw or {}, w.ids))
    assert r.status_code == 403, r.text
    assert r.json()["resourceType"] == "OperationOutcome" and "scope" in r.text
    assert_no_leak(r, w.secrets)
    await w.assert_untouched()
    assert (await w.get(REGION, "Task?_summary=count")).json()["total"] == 3  # nothing was created


async def test_scope_denied_read_answers_403_whether_or_not_the_resource_exists(shared):
    narrow = await shared.login(OTHER, "system/Patient.rs")
    hidden = await shared.get(narrow, f"Task/{shared.ids['task']}")
    missing = await shared.get(narrow, f"Task/{MISSING['task']}")
    assert hidden.status_code == missing.status_code == 403
    assert hidden.json() == missing.json()


async def test_batch_get_entry_outside_scope_is_403_entry(shared):
    narrow = await shared.login(KOMMUN, "system/Patient.rs")
    r = await shared.call(narrow, "POST", "", json={"resourceType": "Bundle", "type": "batch", "entry": [
        _get(f"Task/{shared.ids['task']}"), _get(f"Task?patient={shared.ids['pid']}"),
        _get(f"Patient/{shared.ids['pid']}")]})
    assert [e["response"]["status"][:3] for e in r.json()["entry"]] == ["403", "403", "200"]
    assert_no_leak(r, shared.secrets - shared.first_patient_secrets | {shared.ids["task"], SECRET})


@pytest.mark.parametrize("scope,path,forbidden_type", [
    ("system/Task.rs", "Task?patient={pid}&_include=Task:patient", "Patient"),
    ("system/Patient.rs", "Patient?_id={pid}&_revinclude=Task:patient", "Task"),
], ids=["Task-token-includes-Patient", "Patient-token-revincludes-Task"])
async def test_include_does_not_return_types_outside_the_token_scope(shared, scope, path, forbidden_type):
    """Leaked at 25a441b: included resources were not checked against the token's scopes."""
    narrow = await shared.login(KOMMUN, scope)
    r = await shared.get(narrow, path.format(**shared.ids))
    assert forbidden_type not in entry_types(r), r.text[:600]
    assert entry_types(r) == {path.split("?")[0]}


async def test_getpages_link_does_not_bypass_the_token_scope(shared):
    """Leaked at 25a441b: a page link was checked against the organisation only."""
    r = await shared.get(REGION, "Task?_count=1")
    nxt = link(r.json(), "next")
    narrow = await shared.login(REGION, "system/Patient.rs")
    page = await shared.get(narrow, local(nxt))
    assert page.status_code == 403, page.text[:600]
    assert_no_leak(page, shared.secrets)


async def test_if_none_exist_does_not_return_a_resource_to_a_create_only_token(shared):
    """Leaked at 25a441b: a match returned the existing resource to a token without read scope."""
    narrow = await shared.login(KOMMUN, "system/Task.c")
    r = await shared.call(narrow, "POST", "Task", json=task(), headers={"If-None-Exist": f"_id={shared.ids['task']}"})
    assert SECRET not in r.text, f"{r.status_code} {r.text[:400]}"
    assert r.status_code == 403
    await shared.assert_untouched()



# =========================================================================================
# 9. The access log (AuditEvent) names patients and resources: administrators only.
# =========================================================================================
@pytest.mark.parametrize("path", ["AuditEvent", "AuditEvent?patient={pid}", "AuditEvent?agent=" + REGION,
                                  "AuditEvent/1", "AuditEvent/999999"])
@pytest.mark.parametrize("who", [OTHER, KOMMUN])
async def test_access_log_is_closed_to_non_administrators(shared, who, path):
    """Not even KOMMUN, who may see the patient, may read who else looked at the patient."""
    r = await shared.get(who, path.format(**shared.ids))
    assert r.status_code == 403, r.text
    assert_no_leak(r, shared.secrets)


async def test_access_log_needs_audit_scope_even_for_an_administrator(shared):
    token = await get_token(shared.http, shared.db_path, scope="system/Patient.rs system/Task.cruds",
                          organization=OTHER, admin=True)
    r = await shared.get({"Authorization": f"Bearer {token}"}, f"AuditEvent?patient={shared.ids['pid']}")
    assert r.status_code == 403, r.text
    assert_no_leak(r, shared.secrets)


async def test_access_log_entries_are_not_reachable_through_search_history_or_include(shared):
    w = shared
    for path in (f"Patient?_id={w.ids['pid']}&_revinclude=AuditEvent:patient", f"Patient/{w.ids['pid']}/_history",
                 "_history", f"Task?patient={w.ids['pid']}&_revinclude=AuditEvent:entity"):
        r = await w.get(KOMMUN, path)
        if r.status_code == 200:
            assert "AuditEvent" not in entry_types(r), path
        else:
            assert r.status_code == 400, r.text  # an include the server refuses is fine too
    await assert_empty_search(w, OTHER, f"Patient?_id={w.ids['pid']}&_revinclude=AuditEvent:patient")
