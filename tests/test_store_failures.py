"""When storage cannot serve: a full disk answers 507, a file locked by another process 503 with
Retry-After — never a 500, never a partial write — and waiting for another process's lock
does not hold up this process's other requests. (Two real processes: test_shared_store.py.)"""
from __future__ import annotations

import asyncio
import logging
import shutil
import sqlite3
from dataclasses import replace

from conftest import FHIR, FHIR_JSON, assert_outcome, create, patient, register_client, running_gateway, total
from gateway.auth.keys import client_assertion
from gateway.errors import InsufficientStorage
from gateway.store.records import IndexRows, StoredResource
from gateway.store.sqlite import SqliteStore
from gateway.store.sqlite_errors import StoreConnection

BIG_NAME = "Storstensson"  # patient data: must never reach the server log


def big_patient() -> dict:
    """A Patient large enough to need new pages in the store file."""
    return patient(family=BIG_NAME, address=[{"line": [f"Storgatan {i}"], "city": "Halmstad"} for i in range(300)])


def limit_growth(store: SqliteStore, extra_pages: int = 0) -> None:
    """The store file may not grow beyond its size now: what SQLite does when the disk is full."""
    writer = store._writer
    pages = writer.execute("PRAGMA page_count").fetchone()[0]
    writer.execute(f"PRAGMA max_page_count = {pages + extra_pages}")


def free_space(store: SqliteStore) -> None:
    store._writer.execute("PRAGMA max_page_count = 1073741823")


async def test_a_full_disk_answers_507_storage_full_stores_nothing_and_recovers_without_a_restart(
        client, caplog):
    await create(client, patient())
    store = client.app.state.fhir.store
    limit_growth(store)
    with caplog.at_level(logging.ERROR, logger="gateway.store"):
        r = await client.post(f"{FHIR}/Patient", json=big_patient(), headers=FHIR_JSON)
    assert_outcome(r, 507, "storage is full", "nothing was stored")
    assert r.headers["retry-after"].isdigit()
    logged = [rec.getMessage() for rec in caplog.records if rec.name == "gateway.store"]
    assert logged and "storage full" in logged[0] and "SQLITE_FULL" in logged[0]
    assert not any(BIG_NAME in line or "Storgatan" in line for line in logged)  # no patient data in logs
    assert await total(client, "Patient") == 1
    free_space(store)
    await create(client, big_patient())
    assert await total(client, "Patient") == 2


async def test_a_full_disk_fails_every_write_of_its_batch_and_none_of_them_is_stored(tmp_path):
    """Group commit: SQLite rolls the whole transaction back when the disk fills, so writers who
    finished their part of the batch before it failed are not acknowledged, and no later writer's
    statements run outside a transaction."""
    store = SqliteStore(str(tmp_path / "full.sqlite"))
    await store.open()
    try:
        done_first, go_on = asyncio.Event(), asyncio.Event()

        async def write(rid: str, size: int, hold: bool = False) -> None:
            async with store.transaction() as tx:
                body = b'{"resourceType":"Patient","text":"' + b"x" * size + b'"}'
                await tx.put(StoredResource("Patient", rid, 1, 1, body), IndexRows())
                if hold:
                    done_first.set()
                    await go_on.wait()

        first = asyncio.create_task(write("small", 10, hold=True))
        await done_first.wait()
        limit_growth(store)
        second = asyncio.create_task(write("large", 200_000))
        await until(lambda: store._writes._queued == 1)  # the second writer is queued behind the first
        go_on.set()
        results = await asyncio.wait_for(asyncio.gather(first, second, return_exceptions=True), 10)
        assert all(isinstance(r, InsufficientStorage) for r in results), results
        free_space(store)
        await write("after", 10)
        assert [await store.read("Patient", rid) is not None for rid in ("small", "large", "after")] == \
            [False, False, True]
    finally:
        await store.close()


async def until(condition, timeout: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.001)


def hold_write_lock(db_path: str) -> sqlite3.Connection:
    """Another process's writer, as SQLite sees it: a connection holding the file's write lock."""
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    return other


async def test_a_write_waiting_for_another_process_s_lock_does_not_hold_up_other_requests(client, settings):
    asked = asyncio.Event()
    store = client.app.state.fhir.store
    store._writer.set_trace_callback(lambda sql: sql == "BEGIN IMMEDIATE" and asked.set())
    other = hold_write_lock(settings.db_path)
    try:
        write = asyncio.create_task(client.post(f"{FHIR}/Patient", json=patient(), headers=FHIR_JSON))
        await asyncio.wait_for(asked.wait(), 10)  # the store asked for the file's write lock, and waits
        probe = await client.get(f"{FHIR}/metadata")
        read = await client.get(f"{FHIR}/Patient?_summary=count")
        assert (probe.status_code, read.status_code) == (200, 200)
        assert not write.done()  # answered while the write still waited: the event loop was free
    finally:
        store._writer.set_trace_callback(None)
        other.execute("ROLLBACK")
        other.close()
    r = await asyncio.wait_for(write, 10)
    assert r.status_code == 201, r.text


async def test_a_write_that_cannot_get_the_lock_in_time_answers_503_with_retry_after(settings):
    settings = replace(settings, busy_timeout=0.3)
    async with running_gateway(settings) as client:
        other = hold_write_lock(settings.db_path)
        try:
            r = await client.post(f"{FHIR}/Patient", json=patient(), headers=FHIR_JSON)
            assert_outcome(r, 503, "busy", "nothing was changed")
            assert r.headers["retry-after"] == "1"
            # every writer waiting behind it gives up in time too, each with its own answer
            answers = await asyncio.gather(*(client.post(f"{FHIR}/Patient", json=patient(), headers=FHIR_JSON)
                                             for _ in range(3)))
            assert [a.status_code for a in answers] == [503, 503, 503]
        finally:
            other.execute("ROLLBACK")
            other.close()
        await create(client, patient())
        assert await total(client, "Patient") == 1


async def test_a_read_that_meets_a_locked_file_answers_503_with_retry_after(client, settings, tmp_path):
    """In WAL mode a read meets a lock only while another process recovers the WAL or holds the
    file exclusively; stand in for that with a copy of the store in rollback-journal mode, locked
    by another connection."""
    p = await create(client, patient())
    store = client.app.state.fhir.store
    copy = str(tmp_path / "locked.sqlite")
    store._writer.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    shutil.copy(settings.db_path, copy)
    with sqlite3.connect(copy, isolation_level=None) as setup:
        setup.execute("PRAGMA journal_mode = DELETE")
    locked = sqlite3.connect(copy, isolation_level=None, check_same_thread=False, factory=StoreConnection)
    locked.execute("PRAGMA busy_timeout = 20")
    other = sqlite3.connect(copy, isolation_level=None)
    reader, store._reader = store._reader, locked
    try:
        other.execute("BEGIN EXCLUSIVE")
        r = await client.get(f"{FHIR}/Patient/{p['id']}")
        assert_outcome(r, 503, "busy")
        assert r.headers["retry-after"] == "1"
    finally:
        store._reader = reader
        other.close()
        locked.close()
    assert (await client.get(f"{FHIR}/Patient/{p['id']}")).status_code == 200



async def test_a_token_request_waits_for_another_process_s_lock_off_the_event_loop_and_answers_503_in_time(
        settings):
    """Issuing a token records the assertion's id (replay protection): a write, which may meet
    another process's lock."""
    settings = replace(settings, busy_timeout=1.0)
    async with running_gateway(settings, authorised=False) as client:
        client_id, pem, kid = register_client(settings.db_path)
        form = {"grant_type": "client_credentials", "scope": "system/*.rs",
                "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                "client_assertion": client_assertion(client_id, pem, f"{client.base_url}{FHIR}/auth/token", kid)}
        asked = asyncio.Event()
        loop = asyncio.get_running_loop()
        issuer = client.app.state.auth._issuer.registry._conn
        issuer.set_trace_callback(lambda sql: sql.startswith("DELETE FROM auth_jti") and loop.call_soon_threadsafe(
            asked.set))
        other = hold_write_lock(settings.db_path)
        try:
            token = asyncio.create_task(client.post(f"{FHIR}/auth/token", data=form))
            await asyncio.wait_for(asked.wait(), 10)  # the token endpoint waits for the file's write lock
            assert (await client.get(f"{FHIR}/metadata")).status_code == 200
            assert not token.done()
            r = await asyncio.wait_for(token, 10)
        finally:
            issuer.set_trace_callback(None)
            other.execute("ROLLBACK")
            other.close()
        assert (r.status_code, r.json()["error"], r.headers["retry-after"]) == (503, "temporarily_unavailable", "1")


async def test_a_statement_on_a_thread_is_waited_for_even_when_its_caller_is_cancelled():
    """Commits (and large index writes) run on a thread; a caller cancelled meanwhile must not
    go on to roll back or close the connection under the running statement (that crashed the
    process in a test's teardown): it hears of its cancellation once the statement is done."""
    import threading

    from gateway.store.sqlite_writes import in_thread

    started, finish = threading.Event(), threading.Event()

    def statement() -> str:
        started.set()
        finish.wait(10)
        return "done"

    caller = asyncio.create_task(in_thread(statement))
    await asyncio.to_thread(started.wait, 10)
    caller.cancel()
    for _ in range(20):
        await asyncio.sleep(0)
    assert not caller.done()  # still waiting for the statement
    finish.set()
    try:
        await asyncio.wait_for(caller, 10)
        raise AssertionError("the cancellation was lost")
    except asyncio.CancelledError:
        pass
