"""`gateway mllp` (gateway/mllp_cli.py) and its shutdown on SIGTERM (gateway/mllp/lifecycle.py)."""
from __future__ import annotations

import asyncio
import os
import signal
import socket
import ssl
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

import gateway.mllp_cli
from conftest import register_client
from gateway.auth.registry import ClientRegistry
from gateway.cli import cli
from gateway.mllp import handler as handlers
from gateway.mllp.client import MllpClient
from gateway.mllp.lifecycle import run_until_signalled
from gateway.mllp.server import MllpServer
from mllp_support import PATIENCE, PNR, EchoAck, acked, message, until


@pytest.fixture
def db(tmp_path, monkeypatch) -> str:
    for name in list(os.environ):
        if name.startswith("GATEWAY_"):
            monkeypatch.delenv(name)
    path = str(tmp_path / "g.sqlite")
    ClientRegistry(path).close()
    return path


def invoke(*args: str):
    return CliRunner().invoke(cli, ["mllp", *args])


def test_the_client_must_be_registered(db):
    result = invoke("--client-id", "no-such-client", "--db", db)
    assert result.exit_code == 2 and "no registered client no-such-client" in result.output


def test_a_revoked_client_is_refused(db):
    client_id, _, _ = register_client(db)
    registry = ClientRegistry(db)
    registry.revoke(client_id)
    registry.close()
    result = invoke("--client-id", client_id, "--db", db)
    assert result.exit_code == 2 and "is revoked" in result.output


def test_a_missing_database_is_named_rather_than_created(tmp_path):
    missing = tmp_path / "nothing.sqlite"
    result = invoke("--client-id", "x", "--db", str(missing))
    assert result.exit_code == 2 and "no gateway database" in result.output and not missing.exists()


def test_tls_needs_certificate_key_and_ca_together(db, tmp_path):
    client_id, _, _ = register_client(db)
    result = invoke("--client-id", client_id, "--db", db, "--tls-cert", str(tmp_path / "c.pem"))
    assert result.exit_code == 2 and "all three" in result.output


def test_an_unknown_mapping_stops_the_command_before_it_listens(db):
    client_id, _, _ = register_client(db)
    result = invoke("--client-id", client_id, "--db", db, "--mapping", "no-such-mapping")
    assert result.exit_code == 1 and "no-such-mapping" in result.output and "hl7v2-adt" in result.output


def test_the_command_binds_loopback_by_default_with_the_settings_limits(db, monkeypatch):
    client_id, _, _ = register_client(db)
    built, served = [], []

    def make_handler(settings, client, mapping):
        built.append((client, mapping))
        return EchoAck()

    async def run(server: MllpServer) -> None:
        served.append(server)

    monkeypatch.setattr(handlers, "make_handler", make_handler)
    monkeypatch.setattr(gateway.mllp_cli, "run_until_signalled", run)
    monkeypatch.setenv("GATEWAY_MLLP_MAX_MESSAGE_BYTES", "5000")
    result = invoke("--client-id", client_id, "--db", db, "--idle-timeout", "7")
    assert result.exit_code == 0, result.output
    [server] = served
    assert (server.host, server.port) == ("127.0.0.1", 2575) and server.ssl is None
    assert (server.max_message_bytes, server.idle_timeout, server.max_connections) == (5000, 7.0, 200)
    assert built == [(client_id, "hl7v2-adt")]


async def test_sigterm_stops_the_listener_after_the_message_in_flight_is_answered():
    entered, release = asyncio.Event(), asyncio.Event()

    class Slow(EchoAck):
        async def work(self, msg: bytes) -> None:
            entered.set()
            await release.wait()

    server = MllpServer(Slow(), port=0)
    running = asyncio.create_task(run_until_signalled(server))
    await until(lambda: server.listening, "the listener did not start")
    address = server.address
    async with MllpClient(*address, timeout=PATIENCE) as client:
        sending = asyncio.create_task(client.send(message("INFLIGHT")))
        await asyncio.wait_for(entered.wait(), PATIENCE)
        os.kill(os.getpid(), signal.SIGTERM)  # run_until_signalled's handler is installed: it stops the server
        await until(lambda: not server.listening, "SIGTERM did not stop the listener")
        assert not sending.done() and not running.done()
        release.set()
        assert acked(await asyncio.wait_for(sending, PATIENCE)) == ("AA", "INFLIGHT")
    await asyncio.wait_for(running, PATIENCE)
    with pytest.raises(OSError):
        await asyncio.open_connection(*address)
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL  # handlers removed on the way out


def test_the_tls_options_build_a_context_that_requires_client_certificates(db, monkeypatch, tmp_path):
    from test_mllp_tls import _issue

    ca = _issue(tmp_path, "ca", "CA", None, ca=True)
    _issue(tmp_path, "server", "mllp.test", ca, server=True)
    client_id, _, _ = register_client(db)
    served = []

    async def run(server: MllpServer) -> None:
        served.append(server)

    monkeypatch.setattr(handlers, "make_handler", lambda *args: EchoAck())
    monkeypatch.setattr(gateway.mllp_cli, "run_until_signalled", run)
    result = invoke("--client-id", client_id, "--db", db, "--tls-cert", str(tmp_path / "server.pem"),
                    "--tls-key", str(tmp_path / "server.key"), "--tls-ca", str(tmp_path / "ca.pem"))
    assert result.exit_code == 0, result.output
    assert served[0].ssl.verify_mode == ssl.CERT_REQUIRED


async def test_gateway_mllp_as_a_process_serves_and_exits_cleanly_on_sigterm(db):
    client_id, _, _ = register_client(db)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stub = Path(__file__).resolve().parent / "mllp_cli_stub.py"
    process = subprocess.Popen([sys.executable, str(stub), "mllp", "--client-id", client_id, "--db", db,
                                "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PATIENCE
        while True:  # until it listens
            try:
                client = MllpClient("127.0.0.1", port, timeout=PATIENCE)
                await client.connect()
                break
            except OSError:
                assert process.poll() is None and loop.time() < deadline, "gateway mllp did not start"
                await asyncio.sleep(0.05)
        async with client:
            assert [acked(await client.send(message(f"P{i}"))) for i in range(3)] == [("AA", f"P{i}") for i in range(3)]
        process.send_signal(signal.SIGTERM)
        out, err = await asyncio.to_thread(process.communicate, timeout=PATIENCE)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert f"127.0.0.1:{port}" in out and "SIGTERM received, stopping" in err and "listener stopped" in err
    assert "3 message(s)" in err and PNR not in out + err
