"""Large bodies do not stall everyone: a body of 64 KiB or more is parsed and validated off the
event loop, so other requests are answered meanwhile (speed: bench/robustness_bench.py)."""
from __future__ import annotations

import asyncio
import threading
import uuid
from dataclasses import replace

import pytest

from conftest import FHIR, FHIR_JSON, PATCH_JSON, assert_outcome, create, patient, running_gateway
from gateway.offload import ADMITTED

KB = 1024


def large_patient(family: str = "Storsson") -> dict:
    return patient(family=family, address=[{"line": [f"Storgatan {i}"], "city": "Halmstad"} for i in range(2000)])


class HeldValidation:
    """Validation of large Patients waits until the test lets it go, and tells when it started."""

    def __init__(self, validator):
        self.started, self.go_on, self.finished = threading.Event(), threading.Event(), threading.Event()
        self.validator, self.original = validator, validator.validate

    def __enter__(self):
        def validate(resource, rtype):
            if rtype == "Patient" and len(resource.get("address", ())) > 100:
                self.started.set()
                self.go_on.wait(20)  # on the event loop this would freeze every request
                self.finished.set()
            return self.original(resource, rtype)
        self.validator.validate = validate
        return self

    def __exit__(self, *exc):
        self.go_on.set()
        self.validator.validate = self.original


async def _answered_while_validating(client, request) -> object:
    with HeldValidation(client.app.state.fhir.validator) as held:
        write = asyncio.create_task(request)
        await asyncio.to_thread(held.started.wait, 20)
        assert held.started.is_set(), "validation never started"
        probe = await asyncio.wait_for(client.get(f"{FHIR}/metadata"), 10)
        assert probe.status_code == 200
        assert not held.finished.is_set()  # answered while the large body was still being validated
        held.go_on.set()
        return await asyncio.wait_for(write, 30)


async def test_a_large_create_is_validated_off_the_event_loop(client):
    r = await _answered_while_validating(client, client.post(f"{FHIR}/Patient", json=large_patient(),
                                                             headers=FHIR_JSON))
    assert r.status_code == 201, r.text


async def test_a_large_update_and_patch_are_validated_off_the_event_loop(client):
    p = await create(client, large_patient())
    r = await _answered_while_validating(client, client.put(f"{FHIR}/Patient/{p['id']}", json={**p, "active": True},
                                                            headers=FHIR_JSON))
    assert r.status_code == 200, r.text
    r = await _answered_while_validating(client, client.patch(
        f"{FHIR}/Patient/{p['id']}", json=[{"op": "replace", "path": "/active", "value": False}], headers=PATCH_JSON))
    assert r.status_code == 200 and r.json()["active"] is False, r.text


async def test_the_entries_of_a_large_transaction_are_validated_off_the_event_loop(client):
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": large_patient(),
                         "request": {"method": "POST", "url": "Patient"}}]}
    r = await _answered_while_validating(client, client.post(FHIR, json=bundle, headers=FHIR_JSON))
    assert r.status_code == 200, r.text


@pytest.mark.parametrize("size_kb", [1, 200])
async def test_small_and_large_bodies_give_the_same_answers(client, size_kb):
    """Where the work runs changes nothing a client sees: the same 201, the same 422."""
    good = patient(text={"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">'
                         + "x" * size_kb * KB + "</div>"})
    assert (await client.post(f"{FHIR}/Patient", json=good, headers=FHIR_JSON)).status_code == 201
    bad = {**good, "gender": "neither"}
    r = await client.post(f"{FHIR}/Patient", json=bad, headers=FHIR_JSON)
    assert r.status_code == 422 and "Patient.gender" in r.text
    r = await client.post(f"{FHIR}/Patient", content=b'{"resourceType": "Patient", "x": ' + b" " * size_kb * KB,
                          headers=FHIR_JSON)
    assert r.status_code == 400 and "JSON" in r.text


async def test_large_bodies_are_taken_in_a_few_at_a_time_and_one_not_taken_in_time_is_503(settings):
    """Parsed large bodies are what the garbage collector walks (and the loop waits for): only
    ADMITTED requests at a time get past reading theirs; the others wait as bytes, for at most
    GATEWAY_BUSY_TIMEOUT."""
    async with running_gateway(replace(settings, busy_timeout=0.5)) as client:
        with HeldValidation(client.app.state.fhir.validator) as held:
            admitted = [asyncio.create_task(client.post(f"{FHIR}/Patient", json=large_patient(), headers=FHIR_JSON))
                        for _ in range(ADMITTED)]
            await asyncio.to_thread(held.started.wait, 20)
            r = await client.post(f"{FHIR}/Patient", json=large_patient(), headers=FHIR_JSON)
            assert_outcome(r, 503, "large request bodies")
            assert r.headers["retry-after"].isdigit()
            small = await client.post(f"{FHIR}/Patient", json=patient(), headers=FHIR_JSON)
            assert small.status_code == 201  # small bodies do not queue behind large ones
            held.go_on.set()
            assert [(await asyncio.wait_for(t, 30)).status_code for t in admitted] == [201] * ADMITTED
        assert (await client.post(f"{FHIR}/Patient", json=large_patient(), headers=FHIR_JSON)).status_code == 201


async def test_a_resource_with_many_index_rows_stores_the_same_rows_in_one_statement(tmp_path, monkeypatch):
    """Hundreds of index rows go in one statement (the GIL taken back once, not per row): the
    rows are the same as written one by one."""
    from gateway.store import sqlite as store_module
    from gateway.store.records import IndexRows, StoredResource

    rows = IndexRows(tokens=[("identifier", None, f"v{i}") for i in range(300)] + [("gender", "sys", "female")],
                     references=[("general-practitioner", "Practitioner", f"p{i}") for i in range(300)],
                     dates=[("birthdate", i, 2**62 + i) for i in range(300)],
                     strings=[("address-city", f"åby {i}", f"Åby {i}") for i in range(300)])
    store = store_module.SqliteStore(str(tmp_path / "rows.sqlite"))
    await store.open()
    try:
        for rid, threshold in (("one-by-one", 10**9), ("at-once", 0)):
            monkeypatch.setattr(store_module, "MANY_INDEX_ROWS", threshold)
            async with store.transaction() as tx:
                await tx.put(StoredResource("Patient", rid, 1, 1, b"{}"), rows)
        for table in ("idx_token", "idx_ref", "idx_date", "idx_string"):
            one, other = (store._reader.execute(f"SELECT * FROM {table} WHERE rkey = ? ORDER BY 3, 4, 5",
                                                (rkey,)).fetchall() for rkey in (1, 2))
            assert len(one) > 1 and [r[1:] for r in one] == [r[1:] for r in other], table
    finally:
        await store.close()


async def test_a_resource_with_many_index_rows_is_found_by_any_of_them(client):
    p = patient(address=[{"line": [f"Storgatan {i}"], "city": f"Stad{i}"} for i in range(400)])
    made = await create(client, p)
    r = await client.get(f"{FHIR}/Patient?address-city=Stad399")
    assert [e["resource"]["id"] for e in r.json()["entry"]] == [made["id"]]
