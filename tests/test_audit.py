"""The access log (patientdatalagen): every access and change becomes an AuditEvent that
administrators can search by patient and organisation and nobody can change.
"""
from __future__ import annotations

import base64
import sqlite3

import pytest
from conftest import FHIR, FHIR_JSON, TEST_ORG, get_token, patient, running_gateway, task

from gateway.access.audit import AuditLog
from gateway.access.caller import Caller
from gateway.access.scopes import ScopeSet
from gateway.store.base import AuditQuery
from gateway.store.records import AuditRecord
from gateway.store.sqlite import SqliteStore

ADMIN_ORG = "SE2321000016-ADM1"
OTHER_ORG = "SE2120001231-OTH1"


@pytest.fixture
async def gw(settings):
    """The gateway; ``admin_headers`` are the operator's (the whole log), ``own_admin_headers``
    TEST_ORG's administrator's, ``other_admin_headers`` OTHER_ORG's."""
    async with running_gateway(settings) as client:  # authorised as TEST_ORG, system/*.cruds
        operator = await get_token(client, settings.db_path, scope="system/AuditEvent.rs", organization=ADMIN_ORG,
                                   operator=True)
        own_admin = await get_token(client, settings.db_path, scope="system/AuditEvent.rs", organization=TEST_ORG,
                                    admin=True)
        other_admin = await get_token(client, settings.db_path, scope="system/AuditEvent.rs",
                                      organization=OTHER_ORG, admin=True)
        other = await get_token(client, settings.db_path, organization=OTHER_ORG)
        client.admin_headers = {"Authorization": f"Bearer {operator}"}
        client.own_admin_headers = {"Authorization": f"Bearer {own_admin}"}
        client.other_admin_headers = {"Authorization": f"Bearer {other_admin}"}
        client.other_headers = {"Authorization": f"Bearer {other}"}
        yield client


async def audit(client, query: str) -> list[dict]:
    r = await client.get(f"{FHIR}/AuditEvent?{query}", headers=client.admin_headers)
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", [])]


def entities(event: dict) -> list[str]:
    return [e["what"]["reference"] for e in event.get("entity", []) if "what" in e]


async def test_a_change_is_logged_with_who_what_patient_action_and_outcome(gw):
    pid = (await gw.post(f"{FHIR}/Patient", json=patient(), headers=FHIR_JSON)).json()["id"]
    tid = (await gw.post(f"{FHIR}/Task", json=task(f"Patient/{pid}"), headers=FHIR_JSON)).json()["id"]
    events = await audit(gw, f"patient={pid}")
    creates = [e for e in events if e["action"] == "C"]
    assert {tuple(entities(e)) for e in creates} == {(f"Patient/{pid}/_history/1", f"Patient/{pid}"),
                                                      (f"Task/{tid}/_history/1", f"Patient/{pid}")}
    for e in creates:
        assert e["outcome"] == "0" and e["subtype"][0]["code"] == "create"
        assert e["agent"][0]["who"]["identifier"]["value"] == TEST_ORG
        assert e["agent"][0]["altId"]  # the client id


async def test_reads_and_searches_are_logged_with_the_patients_they_showed(gw):
    pid = (await gw.post(f"{FHIR}/Patient", json=patient(), headers=FHIR_JSON)).json()["id"]
    tid = (await gw.post(f"{FHIR}/Task", json=task(f"Patient/{pid}"), headers=FHIR_JSON)).json()["id"]
    assert (await gw.get(f"{FHIR}/Task/{tid}")).status_code == 200
    assert (await gw.get(f"{FHIR}/Task?patient={pid}")).status_code == 200
    events = await audit(gw, f"patient={pid}")
    read = next(e for e in events if e["subtype"][0]["code"] == "read")
    assert read["action"] == "R" and f"Task/{tid}/_history/1" in entities(read)
    search = next(e for e in events if e["subtype"][0]["code"] == "search-type")
    query = next(e["query"] for e in search["entity"] if "query" in e)
    assert base64.b64decode(query).decode() == f"patient={pid}"


async def test_a_refused_read_is_logged_as_a_failure_without_showing_anything(gw):
    pid = (await gw.post(f"{FHIR}/Patient", json=patient(), headers=FHIR_JSON)).json()["id"]
    r = await gw.get(f"{FHIR}/Patient/{pid}", headers=gw.other_headers)
    assert r.status_code == 404
    events = await audit(gw, f"agent={OTHER_ORG}")
    assert [(e["action"], e["outcome"], entities(e)) for e in events] == [("R", "4", [])]


async def test_a_request_without_token_is_logged(gw):
    anonymous = {"Authorization": "Bearer not-a-token"}
    assert (await gw.get(f"{FHIR}/Patient", headers=anonymous)).status_code == 401
    events = await audit(gw, "_count=50")
    assert any(e["outcome"] == "4" and "who" not in e["agent"][0] for e in events)


async def test_a_failed_write_leaves_no_change_entry_only_the_refusal(gw):
    bad = {"resourceType": "Task", "status": "no-such-status", "intent": "order"}
    assert (await gw.post(f"{FHIR}/Task", json=bad, headers=FHIR_JSON)).status_code == 422
    events = await audit(gw, f"agent={TEST_ORG}")
    assert [(e["action"], e["outcome"]) for e in events] == [("C", "4")]
    assert not any(entities(e) for e in events)


async def test_each_change_of_a_transaction_is_logged_in_it(gw):
    pid = (await gw.post(f"{FHIR}/Patient", json=patient(), headers=FHIR_JSON)).json()["id"]
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": task(f"Patient/{pid}"), "request": {"method": "POST", "url": "Task"}} for _ in range(3)]}
    assert (await gw.post(FHIR, json=bundle, headers=FHIR_JSON)).status_code == 200
    events = await audit(gw, f"patient={pid}")
    assert len([e for e in events if e["action"] == "C" and entities(e)[0].startswith("Task/")]) == 3


async def test_the_access_log_is_for_administrators_only(gw):
    r = await gw.get(f"{FHIR}/AuditEvent?patient=x")
    assert r.status_code == 403 and "administrators" in r.json()["issue"][0]["diagnostics"]


@pytest.mark.parametrize("method,path", [("POST", "AuditEvent"), ("PUT", "AuditEvent/{id}"),
                                         ("DELETE", "AuditEvent/{id}"), ("PATCH", "AuditEvent/{id}")])
async def test_nobody_can_write_change_or_delete_the_access_log(gw, method, path):
    await gw.post(f"{FHIR}/Patient", json=patient(), headers=FHIR_JSON)
    entry = next(e for e in await audit(gw, f"agent={TEST_ORG}") if e["action"] == "C")["id"]
    body = {"resourceType": "AuditEvent", "id": entry} if method in ("POST", "PUT") else [] if method == "PATCH" \
        else None
    ctype = "application/json-patch+json" if method == "PATCH" else "application/fhir+json"
    for headers in (gw.headers, gw.admin_headers):
        r = await gw.request(method, f"{FHIR}/{path.format(id=entry)}", json=body, headers={**headers, "Content-Type": ctype})
        assert r.status_code == 405, (method, r.text)
    assert (await gw.get(f"{FHIR}/AuditEvent/{entry}", headers=gw.admin_headers)).json()["action"] == "C"


async def test_administrator_searches_by_organisation_and_date(gw):
    await gw.post(f"{FHIR}/Patient", json=patient(), headers=FHIR_JSON)
    mine = await audit(gw, f"agent={TEST_ORG}")
    assert mine and all(e["agent"][0]["who"]["identifier"]["value"] == TEST_ORG for e in mine)
    assert await audit(gw, f"agent={TEST_ORG}&date=lt2000-01-01") == []
    assert len(await audit(gw, f"agent={TEST_ORG}&date=ge2000-01-01")) == len(mine)


async def test_changes_and_reads_are_one_log_newest_first_and_paged_without_gaps(gw):
    pid = (await gw.post(f"{FHIR}/Patient", json=patient(), headers=FHIR_JSON)).json()["id"]
    for _ in range(3):
        await gw.post(f"{FHIR}/Task", json=task(f"Patient/{pid}"), headers=FHIR_JSON)  # change entries
        assert (await gw.get(f"{FHIR}/Patient/{pid}")).status_code == 200  # read entries, the other table
    everything = await audit(gw, f"patient={pid}&_count=50")
    assert sorted(e["action"] for e in everything) == ["C"] * 4 + ["R"] * 3
    recorded = [e["recorded"] for e in everything]
    assert recorded == sorted(recorded, reverse=True)
    seen, url = [], f"{FHIR}/AuditEvent?patient={pid}&_count=2"
    while url:
        page = (await gw.get(url, headers=gw.admin_headers)).json()
        assert page.get("total") == 7, page
        seen += [e["resource"]["id"] for e in page.get("entry", [])]
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    assert seen == [e["id"] for e in everything]


async def test_an_administrator_sees_its_own_users_and_its_own_records_only(gw):
    """Patientdatalagen: each care provider follows up access to its own records; the operator sees all."""
    pid = (await gw.post(f"{FHIR}/Patient", json=patient(), headers=FHIR_JSON)).json()["id"]
    assert (await gw.get(f"{FHIR}/Patient/{pid}")).status_code == 200  # TEST_ORG's user reads TEST_ORG's record
    assert (await gw.get(f"{FHIR}/Patient/{pid}", headers=gw.other_headers)).status_code == 404  # OTHER's user

    async def seen_by(headers: dict, query: str) -> list[dict]:
        r = await gw.get(f"{FHIR}/AuditEvent?{query}", headers=headers)
        assert r.status_code == 200, r.text
        return [e["resource"] for e in r.json().get("entry", [])]

    own = await seen_by(gw.own_admin_headers, "_count=100")
    assert own and all(e["agent"][0]["who"]["identifier"]["value"] == TEST_ORG for e in own)
    assert {e["action"] for e in own if pid in str(entities(e))} == {"C", "R"}
    other = await seen_by(gw.other_admin_headers, "_count=100")
    assert other and all(e["agent"][0]["who"]["identifier"]["value"] == OTHER_ORG for e in other)
    assert not any(pid in str(entities(e)) for e in other)  # not OTHER's record, OTHER saw nothing of it
    assert await seen_by(gw.other_admin_headers, f"patient={pid}") == []
    hidden = own[0]["id"]
    r = await gw.get(f"{FHIR}/AuditEvent/{hidden}", headers=gw.other_admin_headers)
    assert r.status_code == 404  # as if it did not exist
    everything = await seen_by(gw.admin_headers, "_count=100")
    assert len(everything) > len(own) and {e["id"] for e in own} <= {e["id"] for e in everything}


async def test_an_administrator_sees_other_organisations_reading_its_records(gw):
    """An entry about TEST_ORG's records read by another organisation is TEST_ORG's to follow up."""
    pid = (await gw.post(f"{FHIR}/Patient", json=patient(), headers=FHIR_JSON)).json()["id"]
    log = gw.app.state.fhir.audit
    log.record_request(Caller("c2", OTHER_ORG, ScopeSet.parse("system/*.rs")), None, "read", 404)
    stored = await gw.app.state.fhir.store.read("Patient", pid)
    from gateway.access.trail import AuditTrail
    trail = AuditTrail()
    trail.saw([stored])
    log.record_request(Caller("c2", OTHER_ORG, ScopeSet.parse("system/*.rs")), trail, "read", 200)
    r = await gw.get(f"{FHIR}/AuditEvent?agent={OTHER_ORG}", headers=gw.own_admin_headers)
    shown = [e["resource"] for e in r.json().get("entry", [])]
    assert [(e["outcome"], entities(e)) for e in shown] == [("0", [f"Patient/{pid}/_history/1", f"Patient/{pid}"])]


async def test_a_malformed_cursor_is_a_400(gw):
    r = await gw.get(f"{FHIR}/AuditEvent?_cursor=12", headers=gw.admin_headers)
    assert r.status_code == 400


async def test_read_entries_go_to_the_access_log_file_not_the_store(tmp_path):
    store = SqliteStore(str(tmp_path / "gw.sqlite"))
    await store.open()
    try:
        await store.append_audit([AuditRecord(1, "R", "read", "0", "c", "SE1", "p1", "Task/1/_history/1")])
        with sqlite3.connect(tmp_path / "gw.access-log.sqlite") as log, sqlite3.connect(tmp_path / "gw.sqlite") as db:
            assert log.execute("SELECT patient FROM read_log").fetchall() == [("p1",)]
            assert db.execute("SELECT COUNT(*) FROM audit_log").fetchone() == (0,)
    finally:
        await store.close()


async def test_a_batch_survives_the_writer_process_dying(tmp_path):
    """The access log must not lose entries: a batch whose writer died is kept and written by
    the next writer process."""
    store = SqliteStore(str(tmp_path / "gw.sqlite"))
    await store.open()
    log = AuditLog(store)
    caller = Caller("client", "SE1", ScopeSet.parse("system/*.rs"))
    try:
        log.record_request(caller, None, "search-type", 200)
        await log.flush()
        store._audit_proc.kill()  # the writer dies …
        log.record_request(caller, None, "read", 200)
        with pytest.raises(RuntimeError):
            await log.flush()  # … so this batch is not committed, and is kept
        await log.flush()  # a new writer takes it
        records, total = await store.search_audit(AuditQuery(limit=10))
        assert total == 2 and [r.interaction for r in records] == ["read", "search-type"]
    finally:
        await store.close()
