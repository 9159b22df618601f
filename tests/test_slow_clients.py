"""Slow and malformed clients over real sockets, against the server `gateway serve` runs (uvicorn
with gateway.api.protocol), in a thread of its own: a slow client is dropped within its bound
while a normal client keeps being served, and what the HTTP parser refuses is an
OperationOutcome. Every wait is on a condition with a deadline, never a sleep."""
from __future__ import annotations

import json
import selectors
import socket
import time
from dataclasses import replace

import httpx
import pytest

from conftest import serve_in_thread as serving, token_over_http as token_for, wait_for
from gateway.settings import Settings

HEADER_TIMEOUT, BODY_TIMEOUT = 1.0, 2.0
PATIENCE = 60.0  # how long a test waits for a condition before failing: generous for a busy machine


@pytest.fixture
def edge_settings(tmp_path) -> Settings:
    return Settings(db_path=str(tmp_path / "g.sqlite"), header_timeout=HEADER_TIMEOUT, body_timeout=BODY_TIMEOUT,
                    max_connections=400)


def connect(base: str) -> socket.socket:
    host, port = base.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=PATIENCE)


def exchange(base: str, data: bytes) -> bytes:
    """Send raw bytes, read until the server closes the connection."""
    with connect(base) as s:
        s.sendall(data)
        return read_until_closed([s])[0]


def read_until_closed(socks: list[socket.socket], on_wait=None) -> list[bytes]:
    """Everything each socket receives until the server closes it (with a deadline)."""
    received = {s: b"" for s in socks}
    sel = selectors.DefaultSelector()
    for s in socks:
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ)
    open_ = set(socks)
    deadline = time.monotonic() + PATIENCE
    while open_:
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(open_)} of {len(socks)} connections still open after {PATIENCE}s")
        for key, _ in sel.select(timeout=0.1):
            try:
                chunk = key.fileobj.recv(65536)
            except BlockingIOError:  # readiness without data: look again
                continue
            except ConnectionResetError:  # closed, abruptly
                chunk = b""
            if chunk:
                received[key.fileobj] += chunk
            else:
                open_.discard(key.fileobj)
                sel.unregister(key.fileobj)
        if on_wait:
            on_wait(open_)
    sel.close()
    return [received[s] for s in socks]


def response(raw: bytes) -> tuple[int, dict, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), headers, json.loads(body) if body else {}


def assert_outcome_response(raw: bytes, status: int, *mentions: str) -> None:
    code, headers, body = response(raw)
    assert code == status, raw[:300]
    assert headers["content-type"].startswith("application/fhir+json")
    assert body["resourceType"] == "OperationOutcome"
    text = body["issue"][0]["diagnostics"]
    for word in mentions:
        assert word in text, text


# -- slow clients --------------------------------------------------------------------------------
def test_slowloris_connections_are_closed_after_the_header_timeout_while_a_normal_client_is_served(edge_settings):
    with serving(edge_settings) as (base, server), httpx.Client(base_url=base, timeout=PATIENCE) as normal:
        attackers = [connect(base) for _ in range(200)]
        for s in attackers:  # a head that never ends, one byte at a time
            s.sendall(b"GET /fhir/metadata HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        served = []

        def meanwhile(still_open):
            for s in list(still_open)[:20]:
                try:
                    s.send(b"a")
                except OSError:
                    pass
            if len(served) < 3:  # a normal client, while the attack holds its connections
                served.append(normal.get("/fhir/metadata").status_code)

        answers = read_until_closed(attackers, meanwhile)
        assert served and set(served) == {200}
        for raw in answers:
            assert_outcome_response(raw, 408, "GATEWAY_HEADER_TIMEOUT")
        assert normal.get("/fhir/metadata").status_code == 200
        for s in attackers:
            s.close()


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(edge_settings):
    with serving(edge_settings) as (base, server), connect(base) as idle:
        assert read_until_closed([idle]) == [b""]
        wait_for(lambda: not server.server_state.connections, "the server still holds the connection")


def test_slow_body_uploads_get_408_and_are_closed_after_the_body_timeout(edge_settings):
    with serving(edge_settings) as (base, server), httpx.Client(base_url=base, timeout=PATIENCE) as normal:
        token = token_for(base, edge_settings.db_path)
        host = base.removeprefix("http://").encode()  # the token's audience names the port
        head = (b"POST /fhir/Patient HTTP/1.1\r\nHost: " + host + b"\r\nContent-Type: application/fhir+json\r\n"
                b"Authorization: Bearer " + token.encode() + b"\r\nContent-Length: 100000\r\n\r\n")
        uploads = [connect(base) for _ in range(50)]
        for i, s in enumerate(uploads):  # half start a body and stall, half declare one and send nothing
            s.sendall(head + (b'{"resourceType":"Patient",' if i % 2 else b""))
        served = []

        def meanwhile(_still_open):
            if len(served) < 3:
                served.append(normal.get("/fhir/metadata").status_code)

        for raw in read_until_closed(uploads, meanwhile):
            assert_outcome_response(raw, 408, "GATEWAY_BODY_TIMEOUT")
        assert set(served) == {200}
        normal.headers["Authorization"] = f"Bearer {token}"
        assert normal.get("/fhir/Patient").json()["total"] == 0
        for s in uploads:
            s.close()


def test_a_body_nobody_reads_cannot_hold_the_connection_past_the_body_timeout(edge_settings):
    """Answered at once (401: no token), but the client keeps trickling the body it declared."""
    with serving(edge_settings) as (base, server), connect(base) as s:
        s.sendall(b"POST /fhir/Patient HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/fhir+json\r\n"
                  b"Content-Length: 100000\r\n\r\n{")
        dripped = []

        def drip(still_open):
            if still_open and len(dripped) < 1000:
                try:
                    s.send(b" ")
                    dripped.append(1)
                except OSError:
                    pass

        raw = read_until_closed([s], drip)[0]
        assert response(raw)[0] == 401


def test_a_client_that_stops_reading_responses_is_dropped(edge_settings):
    with serving(edge_settings) as (base, server):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", int(base.rsplit(":", 1)[1])))
        request = b"GET /fhir/metadata HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"  # ~145 KB each, never read
        s.sendall(request * 200)
        wait_for(lambda: server.server_state.connections, "the connection did not open")
        wait_for(lambda: not server.server_state.connections, "a client that reads nothing still holds a connection")
        with httpx.Client(base_url=base, timeout=PATIENCE) as normal:
            assert normal.get("/fhir/metadata").status_code == 200
        s.close()


def test_connections_beyond_the_bound_get_503_with_retry_after_and_the_rest_are_served(edge_settings):
    settings = replace(edge_settings, max_connections=10, header_timeout=PATIENCE)
    with serving(settings) as (base, server):
        held = [connect(base) for _ in range(10)]
        for s in held:
            s.sendall(b"GET /fhir/metadata HTTP/1.1\r\n")
        wait_for(lambda: len(server.server_state.connections) >= 10, "connections not open")
        raw = exchange(base, b"GET /fhir/metadata HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert_outcome_response(raw, 503, "GATEWAY_MAX_CONNECTIONS")
        assert response(raw)[1]["retry-after"] == "1"
        for s in held:
            s.close()
        wait_for(lambda: len(server.server_state.connections) == 0, "held connections not released")
        with httpx.Client(base_url=base, timeout=PATIENCE) as normal:
            assert normal.get("/fhir/metadata").status_code == 200


# -- what the HTTP parser refuses -------------------------------------------------------------------
@pytest.mark.parametrize("request_bytes, status, mention", [
    (b"FOO /fhir/metadata HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 400, "method"),
    (b"POST /fhir/Patient HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n", 400,
     "chunk"),
    (b"GET /fhir/metadata?" + b"a" * 70_000 + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 414, "URL"),
    (b"GET /fhir/metadata?" + b"a" * 70_000, 414, "URL"),  # still arriving
    (b"POST /fhir/Patient HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: -5\r\n\r\n", 400, "Content-Length"),
    (b"GET /fhir/metadata HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n", 431,
     "GATEWAY_MAX_HEADER_BYTES"),
    (b"GET /fhir/metadata HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: " + b"a" * 70_000, 431, "headers"),
    (b"GET /fhir/metadata HTTP/1.1\r\nBad Header: x\r\n\r\n", 400, "header"),
    (b"GET /fhir/metadata HTTP/9.1\r\nHost: 127.0.0.1\r\n\r\n", 400, "version"),
    (b"POST /fhir/Patient HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
     400, "Transfer-Encoding"),
], ids=["unknown-method", "bad-chunk", "long-url", "long-url-partial", "negative-length", "big-header",
        "big-header-partial", "bad-header-name", "bad-version", "length-and-chunked"])
def test_requests_the_http_parser_refuses_are_operation_outcomes(edge_settings, request_bytes, status, mention):
    with serving(edge_settings) as (base, server):
        assert_outcome_response(exchange(base, request_bytes), status, mention)
        with httpx.Client(base_url=base, timeout=PATIENCE) as normal:
            assert normal.get("/fhir/metadata").status_code == 200


def test_a_bad_host_over_a_real_socket_is_400_operation_outcome(edge_settings):
    with serving(edge_settings) as (base, server):
        raw = exchange(base, b"GET /fhir/metadata HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
        assert_outcome_response(raw, 400, "Host")
