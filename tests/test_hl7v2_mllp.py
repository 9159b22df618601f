"""The ADT feed over a real MLLP socket: the listener's handler on the ingest service, as
``gateway mllp`` runs it. Every corpus message is answered and the listener keeps serving; 1,000
messages on one connection; a sender that disconnects mid-frame leaves nothing written."""
from __future__ import annotations

import asyncio
import sqlite3
import time
from dataclasses import replace

import pytest
from adt_messages import HOSPITAL, adt, fields
from conftest import register_client
from hl7v2_corpus import corpus

from gateway.mllp.client import MllpClient
from gateway.mllp.handler import make_handler
from gateway.mllp.server import MllpServer

REGION = "SE2321000016-HSH1"


@pytest.fixture
async def listener(settings):
    client_id, _, _ = register_client(settings.db_path, organization=REGION)
    handler = make_handler(replace(settings, sqlite_synchronous="NORMAL"), client_id, "hl7v2-adt")
    await handler.open()
    server = MllpServer(handler, port=0, idle_timeout=30)
    await server.start()
    try:
        yield server, settings.db_path
    finally:
        await server.stop()
        await handler.close()


def count(db_path: str, rtype: str) -> int:
    with sqlite3.connect(db_path) as db:
        return db.execute("SELECT COUNT(*) FROM current WHERE rtype = ? AND deleted = 0", (rtype,)).fetchone()[0]


async def test_mllp_every_corpus_message_is_answered_and_the_listener_keeps_serving(listener):
    server, _ = listener
    host, port = server.address
    kinds = []
    async with MllpClient(host, port) as client:
        for name, message in corpus():
            if not message:
                continue
            ack = fields(await client.send(message))
            assert ack["MSA"][1] in ("AA", "AE", "AR"), name
            assert ack["MSA"][1] == "AA" or "ERR" in ack, name
            kinds.append(ack["MSA"][1])
    async with MllpClient(host, port) as client:  # and a new sender is still served
        assert fields(await client.send(adt("A01", control="AFTER")))["MSA"][1] == "AA"
    assert len(kinds) >= 40 and kinds.count("AA") >= 10


async def test_mllp_a_thousand_messages_on_one_connection_in_order(listener):
    server, db_path = listener
    # One second apart, so each is newer than the last (a stay's history does not grow: same bed, same date).
    messages = [adt("A08" if i else "A01", control=f"M{i:04d}", at=f"2024050310{i // 60:02d}{i % 60:02d}+0200")
                for i in range(1000)]
    started = time.perf_counter()
    async with MllpClient(*server.address) as client:
        acks = await client.send_many(messages)
    assert [fields(a)["MSA"][1:3] for a in acks] == [["AA", f"M{i:04d}"] for i in range(1000)]
    assert count(db_path, "Encounter") == 1 and count(db_path, "Provenance") == 1000
    assert time.perf_counter() - started < 600  # a bound against a hang, not a speed target (bench/)


async def test_mllp_a_sender_that_disconnects_mid_frame_leaves_nothing_written(listener):
    server, db_path = listener
    host, port = server.address
    reader, writer = await asyncio.open_connection(host, port)
    message = adt("A01", control="HALF")
    writer.write(b"\x0b" + message[: len(message) // 2])
    await writer.drain()
    writer.close()
    await writer.wait_closed()
    del reader
    async with MllpClient(host, port) as client:  # served as before
        assert fields(await client.send(adt("A01", control="WHOLE")))["MSA"][1:3] == ["AA", "WHOLE"]
    assert count(db_path, "Provenance") == 1  # only the whole message's


async def test_mllp_a_repeat_over_another_connection_gets_the_same_ack(listener):
    server, db_path = listener
    message = adt("A01", control="TWICE")
    async with MllpClient(*server.address) as client:
        first = await client.send(message)
    async with MllpClient(*server.address) as client:
        again = await client.send(message)
    assert first == again and count(db_path, "Provenance") == 1


async def test_mllp_writes_are_the_clients_and_logged(listener):
    server, db_path = listener
    async with MllpClient(*server.address) as client:
        assert fields(await client.send(adt("A01")))["MSA"][1] == "AA"
    with sqlite3.connect(db_path) as db:
        authors = {r[0] for r in db.execute("SELECT DISTINCT a.author FROM res_access a JOIN current c "
                                            "ON c.rkey = a.rkey WHERE c.rtype IN ('Patient', 'Encounter')")}
        changes = db.execute("SELECT COUNT(*) FROM audit_log WHERE organization = ? AND action = 'C'",
                             (REGION,)).fetchone()[0]
    assert authors == {REGION} and changes == 3  # Patient, Encounter, Provenance
    assert HOSPITAL  # the sending facility of the messages


async def test_gateway_mllp_process_ingests_through_the_gateway_and_stops_on_sigterm(settings):
    """The real command, as an operator runs it: ADT in, AA out, written to the store, clean stop."""
    import signal
    import socket
    import subprocess
    import sys

    client_id, _, _ = register_client(settings.db_path, organization=REGION)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("GATEWAY_")}
    process = subprocess.Popen([sys.executable, "-m", "gateway.cli", "mllp", "--client-id", client_id, "--db",
                                settings.db_path, "--port", str(port)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                client = MllpClient("127.0.0.1", port, timeout=60)
                await client.connect()
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
                await asyncio.sleep(0.05)
        async with client:
            assert fields(await client.send(adt("A01", control="PROC")))["MSA"][1:3] == ["AA", "PROC"]
        process.send_signal(signal.SIGTERM)
        out, err = await asyncio.to_thread(process.communicate, timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert count(settings.db_path, "Encounter") == 1 and "191212121212" not in out + err
