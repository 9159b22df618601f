"""kommun-json: a municipal case system's messages into the shared plan, and notifications back in
its own format (mappings/kommun_json, mappings/README.md section kommun-json).

Inbound, the golden messages in fixtures/kommun-json go through ``$ingest`` as the municipality
(KOMMUN of the red-team world) and the FHIR they become is checked field by field; then the
schema errors (each naming the JSON path), repeats, older messages, and the access rule (the
municipality writes as itself, and only appends to the region's plan). Outbound, Subscriptions
with the municipality's payload type receive rendered notifications from the ordinary delivery
engine (tests/receiver.py stands in for the network), on the embedded and the Redis engine.
"""
from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import uuid
from dataclasses import replace
from pathlib import Path

import jsonschema
import pytest
from conftest import drop_redis_keys, require_redis, running_gateway
from receiver import Receiver
from test_access_lusen import KOMMUN as HALMSTAD
from test_access_lusen import world as lusen_world  # the fixture: a person the municipality knows from a LUSEN notice
from test_access_redteam import KOMMUN, OTHER, REGION, World, build_world, provision

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "kommun-json"
NOTIFICATION_SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "mappings" / "kommun_json" /
                                  "notification.schema.json").read_text(encoding="utf-8"))
INGEST = "$ingest?mapping=kommun-json"
KOMMUN_TYPE = "application/vnd.samverkan.kommun+json"
SOURCE = f"urn:samverkan:mapping:kommun-json:{KOMMUN}"
HSA = "urn:oid:1.2.752.29.4.19"
KSI = "https://samverkan.example.se/fhir/CodeSystem/ksi"
KVA = "urn:oid:1.2.752.116.1.3.2.1.4"
ICF = "http://hl7.org/fhir/sid/icf"
ACTIVITY = "https://samverkan.example.se/fhir/CodeSystem/samverkan-activity"
UNIT_KIND = "https://samverkan.example.se/fhir/CodeSystem/samverkan-unit-kind"
TASK_PROFILE = "https://samverkan.example.se/fhir/StructureDefinition/samverkan-task"
CARRY_OUT = {"system": ACTIVITY, "code": "genomforande-insats", "display": "Genomförande av åtgärd"}
TOPIC = "https://samverkan.example.se/fhir/SubscriptionTopic/"
BP = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
SD = "https://samverkan.example.se/fhir/StructureDefinition/"
HOOK = "https://kommun.example.se/treserva-hook"


def system(kind: str) -> str:
    return f"urn:samverkan:kommun-json:{KOMMUN}:{kind}"


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text(encoding="utf-8"))


def unit(hsa: str, name: str | None = None) -> dict:
    return {"type": "Organization", "identifier": {"system": HSA, "value": hsa}, **({"display": name} if name else {})}


async def send(w: World, message: dict | bytes, who: str = KOMMUN, media_type: str = "application/json"):
    body = message if isinstance(message, bytes) else json.dumps(message, ensure_ascii=False).encode()
    return await w.http.post(f"/fhir/{INGEST}", content=body, headers={**w.headers[who], "Content-Type": media_type})


async def ok(w: World, name_or_message: str | dict, who: str = KOMMUN) -> dict:
    message = fixture(name_or_message) if isinstance(name_or_message, str) else name_or_message
    r = await send(w, message, who)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["result"] == "ok", body
    return body


async def found(w: World, query: str, who: str = KOMMUN) -> list[dict]:
    r = await w.get(who, query)
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", []) if e.get("search", {}).get("mode") == "match"]


async def task(w: World, kind: str, value: str, who: str = KOMMUN) -> dict:
    [t] = await found(w, f"Task?identifier={system(kind)}|{value}", who)
    return t


def without_server_meta(resource: dict) -> dict:
    out = copy.deepcopy(resource)
    out.pop("id", None)
    for key in ("versionId", "lastUpdated"):
        out.get("meta", {}).pop(key, None)
    return out


@pytest.fixture
async def w(settings):
    async with running_gateway(settings, authorised=False) as http:
        yield await build_world(http, settings.db_path)


# -- inbound: golden messages --------------------------------------------------------------------
async def test_a_decision_message_becomes_tasks_needs_and_the_municipalitys_own_plan(w):
    reply = await ok(w, "01-beslut-hemtjanst")
    written = [ref.split("/")[0] for ref in reply["written"]]
    assert written == ["Patient", "Condition", "Condition", "Condition", "Task", "Task", "CarePlan"]
    assert all(ref.endswith("/_history/1") for ref in reply["written"])
    assert reply["messageId"] == "treserva-2024-000123" and reply["plan"] == "own"
    assert KOMMUN in reply["note"] and "own CarePlan" in reply["note"]

    [pat] = await found(w, f"Patient?_source={SOURCE}")
    assert without_server_meta(pat) == {
        "resourceType": "Patient", "meta": {"source": SOURCE},
        "identifier": [{"system": "http://electronichealth.se/identifier/personnummer", "value": "191212121212"}],
        "name": [{"use": "official", "family": "Tolvansson", "given": ["Tolvan"]}]}
    patient_ref = {"reference": f"Patient/{pat['id']}"}
    handlaggare = {"type": "PractitionerRole", "display": "Anna Andersson"}

    granted = await task(w, "beslut", "B-1001")
    assert without_server_meta(granted) == {
        "resourceType": "Task", "meta": {"source": SOURCE, "profile": [TASK_PROFILE]},
        "identifier": [{"system": system("beslut"), "value": "B-1001"}],
        "groupIdentifier": {"system": system("arende"), "value": "BIST-2024-0815"},
        "intent": "order", "for": patient_ref,
        "status": "accepted", "businessStatus": {"text": "beviljad"},
        "code": {"coding": [CARRY_OUT, {"system": KSI, "code": "EX.HT.OMSORG"}], "text": "Hemtjänst, omsorgsinsatser"},
        "authoredOn": "2024-05-13", "lastModified": "2024-05-13T10:15:00+02:00", "requester": handlaggare,
        "owner": unit("SE2120000803-BIST1", "Biståndsenheten Halmstad"),
        "restriction": {"period": {"start": "2024-05-20", "end": "2024-11-20"}}}
    rejected = await task(w, "beslut", "B-1002")
    assert (rejected["status"], rejected["businessStatus"], rejected["statusReason"]) == \
        ("rejected", {"text": "avslag"}, {"text": "Behovet tillgodoses på annat sätt"})
    assert rejected["restriction"] == {"period": {"end": "2024-05-13"}}  # decided: the rejection's date

    needs = {c["code"]["coding"][0]["code"]: c for c in await found(w, f"Condition?_source={SOURCE}")}
    assert sorted(needs) == ["d510", "d630", "d640"]
    assert without_server_meta(needs["d510"]) == {
        "resourceType": "Condition", "meta": {"source": SOURCE},
        "identifier": [{"system": system("behov"), "value": "BIST-2024-0815/d510"}],
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical",
                                       "code": "active"}]},
        "verificationStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-ver-status",
                                           "code": "confirmed"}]},
        "code": {"coding": [{"system": ICF, "code": "d510"}]}, "subject": patient_ref,
        "recordedDate": "2024-05-13T10:15:00+02:00", "recorder": handlaggare,
        "note": [{"text": "Behöver hjälp med dusch två gånger i veckan"}]}
    assert "note" not in needs["d640"]

    [plan] = await found(w, f"CarePlan?_source={SOURCE}")
    assert (plan["status"], plan["intent"], plan["subject"], plan["author"]) == \
        ("active", "plan", patient_ref, unit(KOMMUN))
    assert [a["reference"]["reference"] for a in plan["activity"]] == \
        [f"Task/{granted['id']}", f"Task/{rejected['id']}"]
    assert sorted(a["reference"] for a in plan["addresses"]) == sorted(f"Condition/{c['id']}" for c in needs.values())
    assert [f"{t}/{i}" for t, i, *_ in (r.split("/") for r in reply["written"])] == \
        [f"Patient/{pat['id']}", *(f"Condition/{needs[k]['id']}" for k in ("d510", "d630", "d640")),
         f"Task/{granted['id']}", f"Task/{rejected['id']}", f"CarePlan/{plan['id']}"]


async def test_action_status_changes_move_its_task_and_the_decision_ends_it(w):
    await ok(w, "01-beslut-hemtjanst")
    decision = await task(w, "beslut", "B-1001")
    reply = await ok(w, "02-insats-paborjad")
    action = await task(w, "insats", "HT-5501")
    assert reply["written"] == [f"Task/{action['id']}/_history/1", reply["written"][1]]  # and the own plan
    assert without_server_meta(action) == {
        "resourceType": "Task", "meta": {"source": SOURCE, "profile": [TASK_PROFILE]},
        "identifier": [{"system": system("insats"), "value": "HT-5501"}],
        "groupIdentifier": {"system": system("arende"), "value": "BIST-2024-0815"},
        "intent": "order", "for": decision["for"], "partOf": [{"reference": f"Task/{decision['id']}"}],
        "status": "in-progress", "businessStatus": {"text": "påbörjad"},
        "code": {"coding": [CARRY_OUT, {"system": KSI, "code": "EX.HT.OMSORG"}], "text": "Hemtjänst, omsorgsinsatser"},
        "performerType": [{"coding": [{"system": UNIT_KIND, "code": "hemtjanst", "display": "Hemtjänst"}]}],
        "lastModified": "2024-05-20T08:00:00+02:00", "owner": unit("SE2120000803-HT1", "Hemtjänst Halmstad centrum"),
        "executionPeriod": {"start": "2024-05-20T08:00:00+02:00"},
        "note": [{"time": "2024-05-20T08:00:00+02:00", "text": "påbörjad: Första besöket genomfört"}],
        "restriction": {"period": {"end": "2024-11-20"}}}  # the decision's follow-up date

    await ok(w, "03-insats-pausad")
    paused = await task(w, "insats", "HT-5501")
    assert (paused["meta"]["versionId"], paused["status"], paused["statusReason"], paused["businessStatus"]) == \
        ("2", "on-hold", {"text": "Inskriven i slutenvård"}, {"text": "pausad"})
    assert paused["executionPeriod"] == {"start": "2024-05-20T08:00:00+02:00"}

    await ok(w, "05-beslut-avslutat")
    done, ended = await task(w, "insats", "HT-5501"), await task(w, "beslut", "B-1001")
    assert (done["status"], "statusReason" in done) == ("completed", False)
    assert done["executionPeriod"] == {"start": "2024-05-20T08:00:00+02:00", "end": "2024-09-30T15:00:00+02:00"}
    assert [n["text"] for n in done["note"]] == ["påbörjad: Första besöket genomfört",
                                                 "avslutad: Insatsen avslutad enligt beslut"]
    assert done["restriction"] == {"period": {"end": "2024-09-30"}}  # follows its decision's end
    assert (ended["status"], ended["businessStatus"], ended["restriction"]) == \
        ("completed", {"text": "avslutad"}, {"period": {"start": "2024-05-20", "end": "2024-09-30"}})
    [need] = await found(w, f"Condition?identifier={system('behov')}|BIST-2024-0815/d510")
    assert need["clinicalStatus"]["coding"][0]["code"] == "resolved"
    assert need["note"] == [{"text": "Behöver hjälp med dusch två gånger i veckan"}]  # kept: the message says nothing


async def test_a_hemsjukvard_action_carries_its_kva_code_its_unit_and_its_own_deadline(w):
    await ok(w, "04-hemsjukvard-inskrivning")
    action = await task(w, "insats", "HSV-0042-1")
    assert action["code"] == {"coding": [CARRY_OUT, {"system": KVA, "code": "ZV025"}],
                              "text": "Hembesök av sjuksköterska, såromläggning"}
    assert action["performerType"][0]["coding"][0]["code"] == "kommunal-halso-och-sjukvard"
    assert action["owner"] == unit("SE2120000803-HSV1", "Hemsjukvården Halmstad")
    assert (action["restriction"], "partOf" in action) == ({"period": {"end": "2024-06-30"}}, False)
    assert action["groupIdentifier"]["value"] == "HSV-2024-0042"


# -- inbound: errors name the field --------------------------------------------------------------
def _set(path: str, value):
    """A change to the golden message: set (or with value None, delete) the element at a dotted path."""
    def change(message: dict) -> dict:
        node, *_ = message, None
        keys = [int(k) if k.isdigit() else k for k in path.split(".")]
        for key in keys[:-1]:
            node = node[key]
        if value is None:
            del node[keys[-1]]
        else:
            node[keys[-1]] = value
        return message
    return change


@pytest.mark.parametrize("change, status, path, code", [
    (lambda m: b'{"format": "kommun-json/1", ', 400, "$", "invalid-json"),
    (_set("messageId", None), 422, "$.messageId", "schema"),
    (_set("format", "kommun-json/2"), 422, "$.format", "schema"),
    (_set("sent", "2024-05-13T10:15:00"), 422, "$.sent", "schema"),
    (_set("person.email", "tolvan@example.se"), 422, "$.person.email", "schema"),
    (_set("person.personnummer", "191212121213"), 422, "$.person.personnummer", "invalid"),
    (_set("decisions.0.status", "approved"), 422, "$.decisions[0].status", "schema"),
    (_set("decisions.0.followUp", None), 422, "$.decisions[0].end", "schema"),
    (_set("decisions.0.decided", "2024-02-30"), 422, "$.decisions[0].decided", "schema"),
    (_set("decisions.0.service.ksi", None), 422, "$.decisions[0].service.ksi", "schema"),
    (_set("decisions.1.reason", None), 422, "$.decisions[1].reason", "schema"),
    (_set("decisions.1.id", "B-1001"), 422, "$.decisions[1].id", "invalid"),
    (_set("decisions.0.end", "2024-05-01"), 422, "$.decisions[0].end", "invalid"),
    (_set("needs.0.icf", "510"), 422, "$.needs[0].icf", "schema"),
    (_set("actions", [{"id": "HT-1", "kind": "hemtjanst", "status": "paused", "time": "2024-05-20T08:00:00+02:00"}]),
     422, "$.actions[0].reason", "schema"),
    (_set("actions", [{"id": "HT-1", "kind": "hemtjanst", "decisionId": "B-9999", "status": "started",
                       "time": "2024-05-20T08:00:00+02:00"}]), 422, "$.actions[0].decisionId", "invalid"),
    (_set("actions", [{"id": "HT-1", "kind": "hemsjukvard", "status": "started",
                       "time": "2024-05-20T08:00:00+02:00"}]), 422, "$.actions[0].end", "invalid"),
])
async def test_a_message_in_error_is_refused_with_the_json_path_of_the_field_and_changes_nothing(
        w, change, status, path, code):
    message = change(fixture("01-beslut-hemtjanst"))
    r = await send(w, message)
    assert r.status_code == status, r.text
    body = r.json()
    assert (body["result"], body["status"], body["error"]["path"], body["error"]["code"]) == \
        ("error", status, path, code), body
    assert body["error"]["message"] and body["errors"][0]["path"] == path
    if status == 422:
        assert body["messageId"] == message.get("messageId")
    for rtype in ("Patient", "Task", "Condition", "CarePlan"):
        assert await found(w, f"{rtype}?_source={SOURCE}") == []


async def test_every_schema_error_is_listed_with_its_path(w):
    message = fixture("01-beslut-hemtjanst")
    del message["sent"]
    message["decisions"][0]["status"] = "approved"
    body = (await send(w, message)).json()
    assert {e["path"] for e in body["errors"]} == {"$.sent", "$.decisions[0].status"}


async def test_a_body_that_is_not_the_mappings_media_type_is_refused_as_fhir(w):
    r = await send(w, fixture("01-beslut-hemtjanst"), media_type="text/plain")
    assert r.status_code == 415
    assert r.json()["resourceType"] == "OperationOutcome"


# -- inbound: idempotency and order --------------------------------------------------------------
async def test_a_repeated_message_gets_the_same_reply_and_changes_nothing(w):
    first = await send(w, fixture("01-beslut-hemtjanst"))
    before = {t["id"]: t["meta"]["versionId"] for t in await found(w, f"Task?_source={SOURCE}")}
    again = await send(w, fixture("01-beslut-hemtjanst"))
    assert (again.status_code, again.content) == (first.status_code, first.content)
    assert {t["id"]: t["meta"]["versionId"] for t in await found(w, f"Task?_source={SOURCE}")} == before
    assert len(await found(w, f"Patient?_source={SOURCE}")) == 1


async def test_a_message_that_restates_what_is_stored_writes_nothing(w):
    await ok(w, "01-beslut-hemtjanst")
    restated = fixture("01-beslut-hemtjanst") | {"messageId": "treserva-2024-000124",
                                                 "sent": "2024-05-13T11:00:00+02:00"}
    reply = await ok(w, restated)
    assert (reply["written"], reply["plan"]) == ([], "own")
    assert (await task(w, "beslut", "B-1001"))["meta"]["versionId"] == "1"


async def test_an_older_message_about_the_case_changes_nothing(w):
    await ok(w, "01-beslut-hemtjanst")
    await ok(w, "03-insats-pausad")
    reply = await ok(w, "02-insats-paborjad")  # sent before the pause, arrives after it
    assert reply["written"] == [] and "older" in reply["note"]
    action = await task(w, "insats", "HT-5501")
    assert (action["status"], action["meta"]["versionId"]) == ("on-hold", "1")


async def test_the_same_message_id_from_another_municipality_is_its_own_message(w):
    await ok(w, "01-beslut-hemtjanst")
    reply = await ok(w, "01-beslut-hemtjanst", who=OTHER)  # its own case, its own person record
    assert reply["written"] and reply["plan"] == "own"
    theirs = await found(w, f"Task?_source=urn:samverkan:mapping:kommun-json:{OTHER}", who=OTHER)
    assert len(theirs) == 2 and await found(w, f"Task?_source={SOURCE}", who=OTHER) == []


# -- access: the municipality writes as itself ---------------------------------------------------
async def test_the_municipality_writes_as_itself_and_opens_its_records_only_by_its_own_consent(w):
    await ok(w, "01-beslut-hemtjanst")
    for who in (REGION, OTHER):
        assert await found(w, "Task?code=" + KSI + "|EX.HT.OMSORG", who) == []
        assert await found(w, f"Condition?_source={SOURCE}", who) == []
    [own_patient] = await found(w, f"Patient?_source={SOURCE}")
    # The municipality's CareTeam and Consent speak for the municipality's records: the region sees them.
    region = {"identifier": {"system": HSA, "value": REGION}}
    members = [{"member": {"identifier": {"system": HSA, "value": m}}} for m in (KOMMUN, REGION)]
    await w.add_careteam(who=KOMMUN, pid=own_patient["id"], participants=members)
    await w.add_consent(provision("permit", region), who=KOMMUN, pid=own_patient["id"])
    seen = await found(w, f"Task?_source={SOURCE}", REGION)
    assert {t["identifier"][0]["value"] for t in seen} == {"B-1001", "B-1002"}
    assert await found(w, f"Task?_source={SOURCE}", OTHER) == []
    r = await w.update(REGION, seen[0] | {"description": "the region may not rewrite it"})
    assert r.status_code == 403, r.text


async def test_with_the_regions_plan_shared_the_municipality_only_appends_its_tasks(w):
    await w.share()  # the region's CareTeam and Consent: its plan is visible to the municipality
    before = await w.current("CarePlan", w.ids["careplan"])
    reply = await ok(w, "01-beslut-hemtjanst")
    assert reply["plan"] == "shared" and "note" not in reply
    assert f"CarePlan/{w.ids['careplan']}/_history/2" in reply["written"]
    assert await found(w, f"CarePlan?_source={SOURCE}") == []  # no plan of its own
    after = await w.current("CarePlan", w.ids["careplan"])
    decisions = [await task(w, "beslut", b) for b in ("B-1001", "B-1002")]
    assert after["activity"] == [{"reference": {"reference": f"Task/{t['id']}"}} for t in decisions]
    assert {k: v for k, v in after.items() if k not in ("meta", "activity")} == \
        {k: v for k, v in before.items() if k not in ("meta", "activity")}
    await ok(w, "02-insats-paborjad")
    action = await task(w, "insats", "HT-5501")
    assert (await w.current("CarePlan", w.ids["careplan"]))["activity"][-1] == \
        {"reference": {"reference": f"Task/{action['id']}"}}


async def test_tasks_kept_in_the_own_plan_come_along_when_the_region_shares_its_plan(w):
    assert (await ok(w, "01-beslut-hemtjanst"))["plan"] == "own"
    await w.share()
    assert (await ok(w, "02-insats-paborjad"))["plan"] == "shared"
    listed = [a["reference"]["reference"] for a in (await w.current("CarePlan", w.ids["careplan"]))["activity"]]
    ids = [f"Task/{(await task(w, k, v))['id']}" for k, v in (("beslut", "B-1001"), ("beslut", "B-1002"),
                                                              ("insats", "HT-5501"))]
    assert sorted(listed) == sorted(ids)


async def test_the_municipality_cannot_change_the_regions_resources_through_a_message(w):
    await w.share()
    # A region Task posing as one of the mapping's (same identifier, same meta.source): found, never changed.
    decoy = await w.make(REGION, {
        "resourceType": "Task", "status": "requested", "intent": "order", "meta": {"source": SOURCE},
        "identifier": [{"system": system("beslut"), "value": "B-1001"}], "description": "the region's own",
        "for": {"reference": f"Patient/{w.ids['pid']}"}, "owner": w.ref(REGION)})
    r = await send(w, fixture("01-beslut-hemtjanst"))
    assert r.status_code == 403, r.text
    body = r.json()
    assert (body["result"], body["status"], body["error"]["code"]) == ("error", 403, "forbidden")
    assert (await w.current("Task", decoy["id"]))["meta"]["versionId"] == "1"
    await w.assert_untouched()
    assert await found(w, f"Condition?_source={SOURCE}") == []  # all or nothing


async def test_a_person_known_only_from_an_admission_notice_gets_the_municipalitys_own_plan(lusen_world):
    world = lusen_world
    # Halmstad sees the region's Patient as a LUSEN notice (no consent): not a plan to add to.
    r = await world.http.post(f"/fhir/{INGEST}", content=json.dumps(fixture("01-beslut-hemtjanst")).encode(),
                              headers={**world.h[HALMSTAD], "Content-Type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json()["plan"] == "own"
    mine = f"urn:samverkan:mapping:kommun-json:{HALMSTAD}"
    patients, _ = await world.ids_found(HALMSTAD, f"Patient?_source={mine}")
    assert len(patients) == 1 and world.ids["pid"] not in patients
    r = await world.get("SE2321000016-REG1", f"Patient/{world.ids['pid']}")
    assert r.json()["meta"]["versionId"] == "1"


# -- outbound: the municipality's format through the delivery engine -----------------------------
@pytest.fixture(params=["local", "redis"])
def fast(request, settings):
    """Delivery in tens of milliseconds, on the embedded engine and on Redis Streams (real Redis)."""
    fast = replace(settings, notify_tick=0.05, notify_retry_base=0.05, notify_retry_max=0.2, notify_http_loopback=True)
    if request.param == "local":
        return fast
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    request.addfinalizer(lambda: drop_redis_keys(prefix))
    return replace(fast, redis_url=require_redis(), redis_prefix=prefix, notify_claim_idle=0.5,
                   notify_lease_margin=0.5)


@pytest.fixture
async def hub(fast):
    receiver = Receiver()
    async with running_gateway(fast, authorised=False, notify_sender=receiver) as http:
        world = await build_world(http, fast.db_path)
        world.receiver = receiver
        await world.share()
        yield world


def kommun_subscription(topic: str, content: str = "full-resource", endpoint: str = HOOK) -> dict:
    return {"resourceType": "Subscription", "status": "requested", "reason": "Treserva", "criteria": TOPIC + topic,
            "channel": {"type": "rest-hook", "endpoint": endpoint, "payload": KOMMUN_TYPE,
                        "_payload": {"extension": [{"url": BP + "backport-payload-content", "valueCode": content}]}}}


async def subscribe(w: World, sub: dict, who: str = KOMMUN) -> dict:
    r = await w.call(who, "POST", "Subscription", json=sub)
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    await w.receiver.wait(lambda: any(b.get("type") == "handshake" for b in bodies(w, sub["channel"]["endpoint"])))
    return r.json()


def bodies(w: World, endpoint: str = HOOK) -> list[dict]:
    return [json.loads(r.body) for r in w.receiver.at(endpoint)]


def events(w: World, endpoint: str = HOOK) -> list[dict]:
    return [e for b in bodies(w, endpoint) if b["type"] == "event-notification" for e in b["events"]]


async def set_status(w: World, tid: str, status: str, who: str = REGION) -> None:
    current = await w.current("Task", tid)
    r = await w.update(who, current | {"status": status})
    assert r.status_code == 200, r.text


async def test_a_subscription_may_ask_for_the_municipality_format_and_not_for_an_unknown_type(w):
    r = await w.call(KOMMUN, "POST", "Subscription", json=kommun_subscription("task-created"))
    assert r.status_code == 201, r.text
    unknown = kommun_subscription("task-created")
    unknown["channel"]["payload"] = "application/vnd.unknown+json"
    r = await w.call(KOMMUN, "POST", "Subscription", json=unknown)
    assert r.status_code == 422 and "Subscription.channel.payload" in r.text


async def test_a_task_status_change_reaches_the_municipality_in_its_format(hub):
    await subscribe(hub, kommun_subscription("task-status-changed"))
    [handshake] = hub.receiver.at(HOOK)
    assert handshake.headers["content-type"] == KOMMUN_TYPE
    hello = json.loads(handshake.body)
    jsonschema.validate(hello, NOTIFICATION_SCHEMA)
    assert (hello["format"], hello["type"], hello["event"], hello["events"]) == \
        ("kommun-json-notification/1", "handshake", "task-status-changed", [])

    await set_status(hub, hub.ids["task"], "accepted")  # the region's Task, owned by the municipality
    await hub.receiver.wait(lambda: len(events(hub)) == 1)
    [note] = [b for b in bodies(hub) if b["type"] == "event-notification"]
    jsonschema.validate(note, NOTIFICATION_SCHEMA)
    [event] = note["events"]
    assert (event["eventNumber"], event["focus"]["type"], event["focus"]["id"], event["focus"]["change"]) == \
        (1, "Task", hub.ids["task"], "updated")
    assert event["task"]["status"] == "accepted"
    assert event["task"]["owner"]["reference"].endswith(f"/Organization/{hub.org[KOMMUN]}")
    assert event["task"]["patient"]["reference"].endswith(f"/Patient/{hub.ids['pid']}")

    # Round trip: the municipality's own message changes its action; the event names the action in its terms.
    await ok(hub, "01-beslut-hemtjanst")
    await ok(hub, "02-insats-paborjad")
    await ok(hub, "03-insats-pausad")
    await hub.receiver.wait(lambda: len(events(hub)) == 2)
    paused = events(hub)[1]["task"]
    assert (paused["actionId"], paused["caseId"], paused["status"], paused["statusReason"], paused["ksi"]) == \
        ("HT-5501", "BIST-2024-0815", "on-hold", "Inskriven i slutenvård", "EX.HT.OMSORG")
    assert paused["owner"] == {"hsaId": "SE2120000803-HT1", "display": "Hemtjänst Halmstad centrum"}
    assert (paused["deadline"], paused["businessStatus"]) == ("2024-11-20", "pausad")


async def test_an_utskrivningsklar_event_carries_the_stay_and_id_only_carries_references(hub):
    await subscribe(hub, kommun_subscription("encounter-utskrivningsklar"))
    await subscribe(hub, kommun_subscription("encounter-utskrivningsklar", "id-only", HOOK + "/ids"))
    planned = {"url": SD + "planned-discharge-date", "extension": [
        {"url": "date", "valueDateTime": "2024-05-10"},
        {"url": "recorded", "valueDateTime": "2024-05-02T16:05:00+02:00"}]}
    may_need = {"url": SD + "may-need-services", "extension": [
        {"url": "municipality", "valueBoolean": True}, {"url": "primaryCare", "valueBoolean": False},
        {"url": "judged", "valueDateTime": "2024-05-02T16:00:00+02:00"}]}
    stay = await hub.make(REGION, {
        "resourceType": "Encounter", "status": "in-progress", "extension": [may_need, planned],
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
        "subject": {"reference": f"Patient/{hub.ids['pid']}"}, "period": {"start": "2024-05-02T14:20:00+02:00"},
        "serviceProvider": hub.ref(REGION)})
    ready = {"url": SD + "utskrivningsklar",
             "extension": [{"url": "time", "valueDateTime": "2024-05-09T10:15:00+02:00"}]}
    r = await hub.update(REGION, stay | {"extension": [may_need, planned, ready]})
    assert r.status_code == 200, r.text
    await hub.receiver.wait(lambda: len(events(hub)) == 1 and len(events(hub, HOOK + "/ids")) == 1)
    note = next(b for b in bodies(hub) if b["type"] == "event-notification")
    jsonschema.validate(note, NOTIFICATION_SCHEMA)
    [event] = note["events"]
    assert event["focus"] | {"reference": ""} == {"type": "Encounter", "id": stay["id"], "reference": "",
                                                  "change": "updated", "version": 2}
    assert event["stay"] == {
        "status": "in-progress", "class": "IMP", "admitted": "2024-05-02T14:20:00+02:00",
        "patient": {"reference": event["stay"]["patient"]["reference"]},
        "unit": {"reference": event["stay"]["unit"]["reference"]},
        "mayNeedServices": {"municipality": True, "primaryCare": False, "judged": "2024-05-02T16:00:00+02:00"},
        "plannedDischargeDate": "2024-05-10",
        "plannedDischargeDates": [{"date": "2024-05-10", "recorded": "2024-05-02T16:05:00+02:00"}],
        "utskrivningsklar": "2024-05-09T10:15:00+02:00",
        "utskrivningsklarNotices": [{"time": "2024-05-09T10:15:00+02:00"}]}
    [ids_only] = events(hub, HOOK + "/ids")
    jsonschema.validate(next(b for b in bodies(hub, HOOK + "/ids") if b["type"] == "event-notification"),
                        NOTIFICATION_SCHEMA)
    assert set(ids_only) == {"eventNumber", "timestamp", "focus"}
    assert ids_only["focus"]["reference"].endswith(f"/Encounter/{stay['id']}")


async def test_retries_keep_the_order_and_events_stays_fhir(hub):
    sub = await subscribe(hub, kommun_subscription("task-status-changed"))
    hub.receiver.answer[HOOK] = 503
    for status in ("accepted", "in-progress", "completed"):
        await set_status(hub, hub.ids["task"], status)
    await hub.receiver.wait(lambda: hub.receiver.attempts[HOOK] >= 4)  # the handshake + failed attempts
    hub.receiver.answer[HOOK] = "down"
    await hub.receiver.wait(lambda: hub.receiver.attempts[HOOK] >= 6)
    hub.receiver.answer[HOOK] = 200
    await hub.receiver.wait(lambda: [e["eventNumber"] for e in events(hub)] == [1, 2, 3])
    assert [e["task"]["status"] for e in events(hub)] == ["accepted", "in-progress", "completed"]
    assert all(r.headers["content-type"] == KOMMUN_TYPE for r in hub.receiver.at(HOOK))
    r = await hub.get(KOMMUN, f"Subscription/{sub['id']}/$events")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/fhir+json")
    replay = r.json()
    assert (replay["resourceType"], replay["type"]) == ("Bundle", "history")
    assert [e["resource"]["status"] for e in replay["entry"][1:]] == ["accepted", "in-progress", "completed"]


async def test_the_signature_covers_the_rendered_body(settings):
    key = "kommun-signing-key"
    receiver = Receiver()
    signed = replace(settings, notify_tick=0.05, notify_http_loopback=True, notify_signing_key=key)
    async with running_gateway(signed, authorised=False, notify_sender=receiver) as http:
        w = await build_world(http, signed.db_path)
        w.receiver = receiver
        await subscribe(w, kommun_subscription("task-created"))
        [handshake] = receiver.at(HOOK)
        stamp, digest = (part.split("=", 1)[1] for part in handshake.headers["x-samverkan-signature"].split(","))
        assert json.loads(handshake.body)["format"] == "kommun-json-notification/1"
        assert hmac.compare_digest(digest, hmac.new(key.encode(), stamp.encode() + b"." + handshake.body,
                                                    hashlib.sha256).hexdigest())


async def test_a_notification_the_mapping_cannot_render_is_a_failed_delivery_not_a_stopped_engine(hub):
    class Broken:
        def render(self, notification: dict) -> bytes:
            raise ValueError("a bug in a vendor's mapping")

    hub.http.app.state.fhir.subscriptions.delivery.renderers = lambda media_type: Broken()
    r = await hub.call(KOMMUN, "POST", "Subscription", json=kommun_subscription("task-created"))
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    deadline = asyncio.get_running_loop().time() + 10
    while (current := (await hub.get(KOMMUN, f"Subscription/{sid}")).json())["status"] != "error":
        assert asyncio.get_running_loop().time() < deadline, current
        await asyncio.sleep(0.02)
    assert current["error"] == "handshake failed: the notification could not be rendered in the subscription's " \
                               "payload media type"
    assert HOOK not in hub.receiver.attempts  # nothing half-made went out


async def test_a_client_whose_scopes_do_not_cover_the_mapping_gets_the_refusal_in_json(w):
    narrow = await w.login(KOMMUN, scope="system/Task.cruds system/Patient.cruds system/CarePlan.cruds")
    r = await w.http.post(f"/fhir/{INGEST}", content=json.dumps(fixture("01-beslut-hemtjanst")).encode(),
                          headers={**narrow, "Content-Type": "application/json"})
    assert r.status_code == 403, r.text
    body = r.json()
    assert (body["result"], body["status"], body["error"]["code"]) == ("error", 403, "forbidden")
    assert "Condition" in body["error"]["message"]
