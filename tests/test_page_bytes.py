"""What one request may hold in memory is bounded: a search or history page carries at most
GATEWAY_MAX_PAGE_BYTES of stored resources (its ``next`` link has the rest, nothing skipped or
repeated), the entries of a batch share that bound, and when all requests together hold
GATEWAY_MAX_INFLIGHT_BYTES, further ones wait and then answer 503 with Retry-After."""
from __future__ import annotations

import asyncio
from dataclasses import replace

import orjson
import pytest

from conftest import (
    FHIR, FHIR_JSON, assert_outcome, create, history, link, local, ordered_ids, patient, running_gateway, search,
    task,
)

KB = 1024
PAGE = 200 * KB  # the test's GATEWAY_MAX_PAGE_BYTES


def sized_patient(kb: int, family: str = "Storsson") -> dict:
    """A Patient of about ``kb`` KiB (a long narrative)."""
    div = '<div xmlns="http://www.w3.org/1999/xhtml">' + "x" * (kb * KB) + "</div>"
    return patient(family=family, text={"status": "generated", "div": div})


@pytest.fixture
async def bounded(settings):
    async with running_gateway(replace(settings, max_page_bytes=PAGE)) as client:
        yield client


async def _all_pages(client, first: dict) -> list[dict]:
    pages, page = [first], first
    while link(page, "next"):
        r = await client.get(local(link(page, "next")))
        assert r.status_code == 200, r.text
        page = r.json()
        pages.append(page)
        assert len(pages) < 50
    return pages


async def test_a_search_page_carries_at_most_max_page_bytes_and_next_has_the_rest(bounded):
    made = [(await create(bounded, sized_patient(60)))["id"] for _ in range(7)]
    r = await bounded.get(f"{FHIR}/Patient?_count=50")
    assert r.status_code == 200 and int(r.headers["content-length"]) == len(r.content)
    first = r.json()
    assert first["total"] == 7 and 1 <= len(first["entry"]) < 7
    assert len(r.content) <= PAGE + 4 * KB  # the page, plus its Bundle and entry wrappers
    pages = await _all_pages(bounded, first)
    shown = [i for page in pages for i in ordered_ids(page)]
    assert sorted(shown) == sorted(made)  # every match once: nothing skipped, nothing repeated
    assert all(len(p["entry"]) * 60 * KB <= PAGE for p in pages)


async def test_a_resource_larger_than_a_page_is_still_served_alone(bounded):
    big = await create(bounded, sized_patient(300))
    small = await create(bounded, sized_patient(1))
    page = await search(bounded, "Patient?_count=50&_sort=-_lastUpdated")
    assert ordered_ids(page) == [small["id"]]  # the big one does not fit beside it
    rest = await _all_pages(bounded, page)
    assert [ordered_ids(p) for p in rest[1:]] == [[big["id"]]]


async def test_a_history_page_carries_at_most_max_page_bytes_and_next_has_the_rest(bounded):
    ids = [(await create(bounded, sized_patient(60)))["id"] for _ in range(6)]
    first = await history(bounded, "Patient/_history?_count=50")
    assert first["total"] == 6 and 1 <= len(first["entry"]) < 6
    pages = await _all_pages(bounded, first)
    shown = [e["resource"]["id"] for p in pages for e in p["entry"]]
    assert sorted(shown) == sorted(ids)


async def test_includes_that_do_not_fit_beside_the_matches_make_the_page_smaller(bounded):
    patients = []
    for _ in range(4):
        p = await create(bounded, patient())
        await create(bounded, task(f"Patient/{p['id']}", description="x" * 60 * KB))
        patients.append(p["id"])
    first = await search(bounded, "Patient?_revinclude=Task:patient&_count=10")
    matches = ordered_ids(first)
    assert 1 <= len(matches) < 4
    included = [e for e in first["entry"] if e["search"]["mode"] == "include"]
    assert {e["resource"]["for"]["reference"] for e in included} == {f"Patient/{i}" for i in matches}
    pages = await _all_pages(bounded, first)
    assert sorted(i for p in pages for i in ordered_ids(p)) == sorted(patients)


async def test_includes_of_one_match_beyond_the_page_bound_are_400_too_costly(bounded):
    p = await create(bounded, patient())
    for _ in range(4):
        await create(bounded, task(f"Patient/{p['id']}", description="x" * 60 * KB))
    r = await bounded.get(f"{FHIR}/Patient?_revinclude=Task:patient")
    assert_outcome(r, 400, "_include", "GATEWAY_MAX_PAGE_BYTES", "search the included type directly")
    assert r.json()["issue"][0]["code"] == "too-costly"
    assert len((await search(bounded, "Task?patient=Patient/" + p["id"]))["entry"]) >= 1


async def test_the_entries_of_a_batch_share_one_response_s_bound(bounded):
    for _ in range(5):
        await create(bounded, sized_patient(60))
    batch = {"resourceType": "Bundle", "type": "batch",
             "entry": [{"request": {"method": "GET", "url": "Patient?_count=50"}} for _ in range(3)]}
    r = await bounded.post(FHIR, json=batch, headers=FHIR_JSON)
    assert r.status_code == 200, r.text
    assert len(r.content) <= PAGE + 8 * KB
    statuses = [e["response"]["status"] for e in r.json()["entry"]]
    assert statuses[0] == "200 OK" and statuses[-1] == "400"  # the last one found no room left
    outcome = r.json()["entry"][-1]["response"]["outcome"]
    assert "GATEWAY_MAX_PAGE_BYTES" in outcome["issue"][0]["diagnostics"]


async def test_when_all_requests_hold_the_memory_budget_more_wait_then_answer_503_with_retry_after(settings):
    settings = replace(settings, max_inflight_bytes=512 * KB, busy_timeout=0.3)
    async with running_gateway(settings) as client:
        p = await create(client, sized_patient(100))
        memory = client.app.state.fhir.memory
        taken = await memory.acquire(memory.total)  # other requests hold all of it
        try:
            r = await client.get(f"{FHIR}/Patient?_count=10")
            assert_outcome(r, 503, "memory")
            assert r.headers["retry-after"].isdigit()
            r = await client.post(f"{FHIR}/Patient", json=sized_patient(100), headers=FHIR_JSON)
            assert_outcome(r, 503, "memory")
            r = await client.post(f"{FHIR}/Patient", content=_chunks(sized_patient(100)), headers=FHIR_JSON)
            assert_outcome(r, 503, "memory")  # a body without Content-Length is counted as it arrives
            waiting = asyncio.create_task(client.get(f"{FHIR}/Patient/{p['id']}"))
            deadline = asyncio.get_running_loop().time() + 10
            while not memory._waiting:  # queued for memory, not refused
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.001)
        finally:
            memory.release(taken)
        assert (await asyncio.wait_for(waiting, 10)).status_code == 200
        assert (await client.get(f"{FHIR}/Patient?_count=10")).status_code == 200
        # alone, a request may hold the whole budget: larger bodies than it are not refused
        r = await client.post(f"{FHIR}/Patient", content=_chunks(sized_patient(300)), headers=FHIR_JSON)
        assert r.status_code == 201, r.text
        assert memory.held == 0  # every request gave back what it took


async def _chunks(resource: dict):
    data = orjson.dumps(resource)
    for start in range(0, len(data), 16 * KB):
        yield data[start:start + 16 * KB]


async def test_memory_given_back_as_a_waiter_gives_up_is_neither_lost_nor_double_counted():
    """A request that stops waiting (its client went away, its wait ran out) in the same moment
    the memory it waited for is granted: nothing fails, and the budget ends where it began."""
    from gateway.budget import MemoryBudget

    budget = MemoryBudget(100, wait_seconds=5)
    first = await budget.acquire(100)
    waiter = asyncio.create_task(budget.acquire(60))
    while not budget._waiting:
        await asyncio.sleep(0)
    waiter.cancel()
    budget.release(first)  # grants the waiter before it has run its cancellation
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert budget.held == 0 and not budget._waiting
    assert await budget.acquire(100) == 100


async def test_a_body_declared_large_but_not_sent_holds_only_what_has_arrived(client):
    """A slow or stalled upload does not hold memory for what it only announced."""
    data = orjson.dumps(sized_patient(400))
    sent, go_on = asyncio.Event(), asyncio.Event()

    async def slowly():
        yield data[:16 * KB]
        sent.set()
        await go_on.wait()
        yield data[16 * KB:]

    memory = client.app.state.fhir.memory
    upload = asyncio.create_task(client.post(f"{FHIR}/Patient", content=slowly(),
                                             headers={**FHIR_JSON, "Content-Length": str(len(data))}))
    await asyncio.wait_for(sent.wait(), 10)
    for _ in range(20):
        await asyncio.sleep(0)
    assert 0 < memory.held <= 16 * KB  # what arrived, not the 400 KiB announced (nor 4 x that)
    go_on.set()
    assert (await asyncio.wait_for(upload, 10)).status_code == 201
    assert memory.held == 0
