"""Two organisations editing one plan at the same time: with If-Match, exactly one write wins,
the other gets 412, and no version is lost — in-process and over real HTTP (uvicorn)."""
from __future__ import annotations

import asyncio
import socket
import threading
import time
from contextlib import contextmanager

import httpx
import pytest
import uvicorn

from conftest import FHIR, FHIR_JSON, PATCH_JSON, PNR_SYSTEM, TEST_PNR, create, get_token, history, patient, task
from gateway.app import create_app
from gateway.settings import Settings


async def _race(put_a, put_b) -> tuple[httpx.Response, httpx.Response]:
    return tuple(await asyncio.gather(put_a, put_b))


def _assert_one_winner(a: httpx.Response, b: httpx.Response) -> str:
    """Exactly one 200 and one 412 (an OperationOutcome); returns which client won."""
    assert sorted([a.status_code, b.status_code]) == [200, 412], (a.text, b.text)
    loser = a if a.status_code == 412 else b
    assert loser.json()["resourceType"] == "OperationOutcome"
    return "A" if a.status_code == 200 else "B"


async def test_concurrent_if_match_updates_exactly_one_wins_and_no_version_is_lost(client):
    v1 = await create(client, task(status="requested"))
    url = f"{FHIR}/Task/{v1['id']}"
    a = client.put(url, json={**v1, "status": "accepted", "note": [{"text": "region"}]},
                   headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    b = client.put(url, json={**v1, "status": "rejected", "note": [{"text": "kommun"}]},
                   headers={**FHIR_JSON, "If-Match": 'W/"1"'})
    ra, rb = await _race(a, b)
    winner = _assert_one_winner(ra, rb)
    expected = "region" if winner == "A" else "kommun"

    hist = await history(client, f"Task/{v1['id']}/_history")
    versions = {e["resource"]["meta"]["versionId"]: e["resource"] for e in hist["entry"]}
    assert sorted(versions) == ["1", "2"]
    assert versions["1"]["status"] == "requested"
    assert versions["2"]["note"][0]["text"] == expected
    current = (await client.get(url)).json()
    assert current["meta"]["versionId"] == "2" and current["note"][0]["text"] == expected


async def test_many_rounds_of_concurrent_if_match_updates_never_lose_a_version(client):
    current = await create(client, task(status="requested"))
    url = f"{FHIR}/Task/{current['id']}"
    rounds = 8
    winners = []
    for n in range(rounds):
        etag = f'W/"{current["meta"]["versionId"]}"'
        ra, rb = await _race(
            client.put(url, json={**current, "note": [{"text": f"A{n}"}]}, headers={**FHIR_JSON, "If-Match": etag}),
            client.put(url, json={**current, "note": [{"text": f"B{n}"}]}, headers={**FHIR_JSON, "If-Match": etag}))
        winner = _assert_one_winner(ra, rb)
        winners.append(f"{winner}{n}")
        current = (ra if winner == "A" else rb).json()
    hist = await history(client, f"Task/{current['id']}/_history?_count=100")
    assert hist["total"] == rounds + 1
    notes = {int(e["resource"]["meta"]["versionId"]): e["resource"].get("note", [{}])[0].get("text")
             for e in hist["entry"]}
    assert sorted(notes) == list(range(1, rounds + 2))
    assert [notes[v] for v in range(2, rounds + 2)] == winners


async def test_concurrent_json_patches_with_same_if_match_exactly_one_wins(client):
    v1 = await create(client, task(status="requested"))
    url = f"{FHIR}/Task/{v1['id']}"
    headers = {**PATCH_JSON, "If-Match": 'W/"1"'}
    ra, rb = await _race(
        client.patch(url, json=[{"op": "replace", "path": "/status", "value": "accepted"}], headers=headers),
        client.patch(url, json=[{"op": "replace", "path": "/status", "value": "rejected"}], headers=headers))
    winner = _assert_one_winner(ra, rb)
    hist = await history(client, f"Task/{v1['id']}/_history")
    assert hist["total"] == 2
    assert (await client.get(url)).json()["status"] == ("accepted" if winner == "A" else "rejected")


async def test_concurrent_conditional_creates_make_exactly_one_resource(client):
    headers = {**FHIR_JSON, "If-None-Exist": f"identifier={PNR_SYSTEM}|{TEST_PNR}"}
    results = await asyncio.gather(*[client.post(f"{FHIR}/Patient", json=patient(), headers=headers)
                                     for _ in range(4)])
    assert sorted(r.status_code for r in results) == [200, 200, 200, 201]
    assert len({r.json()["id"] for r in results}) == 1
    found = await client.get(f"{FHIR}/Patient?identifier={PNR_SYSTEM}|{TEST_PNR}")
    assert found.json()["total"] == 1


async def test_concurrent_updates_without_if_match_each_get_their_own_version(client):
    """Without If-Match the last writer wins, but every write is a version of its own."""
    v1 = await create(client, task())
    url = f"{FHIR}/Task/{v1['id']}"
    results = await asyncio.gather(*[client.put(url, json={**v1, "note": [{"text": f"n{i}"}]}, headers=FHIR_JSON)
                                     for i in range(5)])
    assert [r.status_code for r in results] == [200] * 5
    assert sorted(int(r.json()["meta"]["versionId"]) for r in results) == [2, 3, 4, 5, 6]
    hist = await history(client, f"Task/{v1['id']}/_history")
    assert hist["total"] == 6
    notes = {e["resource"].get("note", [{}])[0].get("text") for e in hist["entry"]}
    assert notes == {None, "n0", "n1", "n2", "n3", "n4"}


async def test_a_failing_transaction_among_concurrent_writers_leaves_no_data_and_costs_no_one_else(client):
    bad = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:00000000-0000-4000-8000-0000000000aa", "resource": patient(TEST_PNR),
         "request": {"method": "POST", "url": "Patient"}},
        {"resource": {**task("urn:uuid:00000000-0000-4000-8000-0000000000aa"), "flavour": "sweet"},
         "request": {"method": "POST", "url": "Task"}}]}
    good = [client.post(f"{FHIR}/Task", json=task(status="ready"), headers=FHIR_JSON) for _ in range(6)]
    results = await asyncio.gather(*good[:3], client.post(FHIR, json=bad, headers=FHIR_JSON), *good[3:])
    assert [r.status_code for r in results] == [201, 201, 201, 422, 201, 201, 201]
    found = (await client.get(f"{FHIR}/Task?status=ready&_count=50")).json()
    assert {e["resource"]["id"] for e in found["entry"]} == {r.json()["id"] for r in results if r.status_code == 201}
    assert (await client.get(f"{FHIR}/Patient")).json()["total"] == 0
    assert (await client.get(f"{FHIR}/_history")).json()["total"] == 6


# -- over real HTTP --------------------------------------------------------------------
@contextmanager
def serving(settings: Settings):
    """A real uvicorn server (own thread, own event loop) on a free port; yields its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(settings), loop="asyncio", lifespan="on", log_level="warning",
                            access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


@pytest.fixture
def http_base(settings):
    with serving(settings) as base:
        yield base


async def _http_rounds(base_a: str, base_b: str, rounds: int, db_path: str) -> None:
    async with httpx.AsyncClient(base_url=base_a, timeout=30) as a, httpx.AsyncClient(base_url=base_b, timeout=30) as b:
        for c in (a, b):
            c.headers["Authorization"] = f"Bearer {await get_token(c, db_path)}"
        person = await a.post(f"{FHIR}/Patient", json=patient(), headers=FHIR_JSON)
        r = await a.post(f"{FHIR}/CarePlan", json={"resourceType": "CarePlan", "status": "active", "intent": "plan",
                                                  "subject": {"reference": f"Patient/{person.json()['id']}"}},
                         headers=FHIR_JSON)
        assert r.status_code == 201, r.text
        current = r.json()
        url = f"{FHIR}/CarePlan/{current['id']}"
        winners = []
        for n in range(rounds):
            etag = f'W/"{current["meta"]["versionId"]}"'
            ra, rb = await asyncio.gather(
                a.put(url, json={**current, "description": f"region {n}"}, headers={**FHIR_JSON, "If-Match": etag}),
                b.put(url, json={**current, "description": f"kommun {n}"}, headers={**FHIR_JSON, "If-Match": etag}))
            winner = _assert_one_winner(ra, rb)
            winners.append(f"region {n}" if winner == "A" else f"kommun {n}")
            current = (ra if winner == "A" else rb).json()
        hist = (await b.get(f"{url}/_history?_count=100")).json()
        assert hist["total"] == rounds + 1
        by_version = {int(e["resource"]["meta"]["versionId"]): e["resource"] for e in hist["entry"]}
        assert sorted(by_version) == list(range(1, rounds + 2))
        assert [by_version[v].get("description") for v in range(2, rounds + 2)] == winners


async def test_concurrent_if_match_updates_over_real_http_exactly_one_wins_each_round(http_base, settings):
    await _http_rounds(http_base, http_base, rounds=10, db_path=settings.db_path)


async def test_two_gateway_instances_on_one_database_never_lose_an_update(tmp_path):
    """Two servers sharing one SQLite file (as two workers would): the If-Match check still
    holds across them, because it is made inside the store's write transaction."""
    settings = Settings(db_path=str(tmp_path / "shared.sqlite"))
    with serving(settings) as one, serving(settings) as two:
        await _http_rounds(one, two, rounds=6, db_path=settings.db_path)


# -- the store's write queue -----------------------------------------------------------
async def test_a_writer_cancelled_while_waiting_does_not_stall_the_writers_before_and_after_it(tmp_path):
    """Writers queue for the store; one that gives up while waiting (a timeout, a cancelled
    workflow task) must not leave the others' writes uncommitted: the writer ahead of it
    finishes and is readable, and later writers still get through."""
    from gateway.store.records import IndexRows, StoredResource
    from gateway.store.sqlite import SqliteStore

    store = SqliteStore(str(tmp_path / "queue.sqlite"))
    await store.open()
    try:
        inside, release = asyncio.Event(), asyncio.Event()

        async def write(rid: str, hold: bool = False) -> None:
            async with store.transaction() as tx:
                await tx.put(StoredResource("Patient", rid, 1, 1, b'{"resourceType":"Patient"}'), IndexRows())
                if hold:
                    inside.set()
                    await release.wait()

        first = asyncio.create_task(write("first", hold=True))
        await inside.wait()
        quitter = asyncio.create_task(write("quitter"))
        deadline = asyncio.get_running_loop().time() + 10
        while store._writes._queued == 0:  # queued behind `first`
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.001)
        quitter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await quitter
        release.set()
        await asyncio.wait_for(first, 10)
        assert await store.read("Patient", "first") is not None
        assert await store.read("Patient", "quitter") is None
        await asyncio.wait_for(write("later"), 10)
        assert await store.read("Patient", "later") is not None
    finally:
        await store.close()
