"""Raw HTTP/1.1 fuzzing of the connection layer (gateway.api.protocol) over real sockets: seeded
mutations of well-formed requests (request line, headers, framing, bytes flipped, cut or
repeated). Every connection gets an answer that is not a 5xx, every error answer is an
OperationOutcome, and every connection is closed by the server within its bounds."""
from __future__ import annotations

import json
import os
import random
import selectors
import socket
import time

from conftest import serve_in_thread
from gateway.settings import Settings

CONNECTIONS = 1000
BATCH = 50
SEED = int(os.environ.get("FUZZ_SEED", "13"))
PATIENCE = 60.0

TEMPLATES = [
    b"GET /fhir/metadata HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: application/fhir+json\r\n\r\n",
    b"GET /fhir/Patient?name=x&_count=5 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
    b"POST /fhir/Patient HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/fhir+json\r\n"
    b"Content-Length: 26\r\n\r\n{\"resourceType\":\"Patient\"}",
    b"POST /fhir/Patient HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/fhir+json\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n1a\r\n{\"resourceType\":\"Patient\"}\r\n0\r\n\r\n",
    b"PUT /fhir/Patient/x HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/fhir+json\r\n"
    b"If-Match: W/\"1\"\r\nContent-Length: 2\r\n\r\n{}",
    b"POST /fhir/auth/token HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\n"
    b"Content-Length: 29\r\n\r\ngrant_type=client_credentials",
    b"GET /fhir/api-docs HTTP/1.0\r\n\r\n",
    b"DELETE /fhir/Task/1 HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
]
SPICE = [b"\r\n", b"\n", b"\r", b" ", b"\x00", b":", b"\xff", b"%", b"0", b"-1", b"chunked", b"Content-Length: 5\r\n",
         b"Transfer-Encoding: chunked\r\n", b"Host: evil.example\r\n", b"\t", b"HTTP/1.1", b"?" * 3, b"/.." * 3,
         b"Expect: 100-continue\r\n", b"Upgrade: websocket\r\nConnection: Upgrade\r\n", b"a" * 70_000,
         b"Content-Encoding: gzip\r\n", b"\xef\xbb\xbf", b"GET / HTTP/1.1\r\n\r\n"]


def mutate(rng: random.Random, raw: bytes) -> bytes:
    for _ in range(rng.randrange(1, 4)):
        i = rng.randrange(len(raw) + 1)
        action = rng.randrange(6)
        if action == 0:
            raw = raw[:i] + rng.choice(SPICE) + raw[i:]
        elif action == 1 and raw:
            raw = raw[:i] + bytes([rng.randrange(256)]) + raw[i + 1:]
        elif action == 2:
            raw = raw[:i]
        elif action == 3 and raw:
            j = min(len(raw), i + rng.randrange(1, 20))
            raw = raw[:i] + raw[j:]
        elif action == 4:
            raw = raw[:i] + raw[i:i + rng.randrange(1, 40)] * rng.randrange(2, 5) + raw[i:]
        else:
            raw = raw.replace(b"HTTP/1.1", rng.choice([b"HTTP/1.0", b"HTTP/2.0", b"HTTP/1.1 x", b"http/1.1"]), 1)
    return raw


def first_response(data: bytes) -> tuple[int, dict, bytes] | None:
    if not data.startswith(b"HTTP/"):
        return None
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:] if ": " in line)
    length = int(headers.get("content-length", "0") or 0)
    return int(lines[0].split()[1]), headers, rest[:length]


def complete(data: bytes) -> bool:
    head, found, rest = data.partition(b"\r\n\r\n")
    if not found:
        return False
    response = first_response(data)
    return response is not None and len(rest) >= int(response[1].get("content-length", "0") or 0)


def problem(request: bytes, data: bytes) -> str | None:
    response = first_response(data)
    if response is None:
        return None if not data else f"not an HTTP response: {data[:100]!r}"  # closed unanswered: allowed
    status, headers, body = response
    if status >= 500:
        return f"status {status}"
    if status >= 400 and not request.startswith(b"HEAD"):
        if not headers.get("content-type", "").startswith(("application/fhir+json", "application/json")):
            return f"{status} with content-type {headers.get('content-type')!r}"
        try:
            parsed = json.loads(body)
        except ValueError:
            return f"{status} with a body that is not JSON: {body[:100]!r}"
        if parsed.get("resourceType") != "OperationOutcome":
            return f"{status} that is not an OperationOutcome"
    return None


def test_a_thousand_mangled_http_requests_get_no_5xx_only_operation_outcomes_and_are_all_closed(tmp_path):
    rng = random.Random(SEED)
    settings = Settings(db_path=str(tmp_path / "g.sqlite"), header_timeout=0.5, body_timeout=0.5)
    failures: list[str] = []
    answered = 0
    with serve_in_thread(settings) as (base, server):
        port = int(base.rsplit(":", 1)[1])
        for _ in range(CONNECTIONS // BATCH):
            sel = selectors.DefaultSelector()
            batch: dict[socket.socket, list] = {}
            for _ in range(BATCH):
                request = mutate(rng, rng.choice(TEMPLATES))
                s = socket.create_connection(("127.0.0.1", port))
                try:
                    s.sendall(request)
                except OSError:  # refused mid-send (e.g. a head over the bound): the answer is still there
                    pass
                s.setblocking(False)
                sel.register(s, selectors.EVENT_READ)
                batch[s] = [request, b""]
            deadline = time.monotonic() + PATIENCE
            while sel.get_map():
                assert time.monotonic() < deadline, f"{len(sel.get_map())} connections left open by the server"
                for key, _ in sel.select(timeout=0.1):
                    try:
                        chunk = key.fileobj.recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        chunk = b""
                    if chunk:
                        batch[key.fileobj][1] += chunk
                    if not chunk or complete(batch[key.fileobj][1]):  # answered: no need to wait for keep-alive
                        sel.unregister(key.fileobj)
                        key.fileobj.close()
            sel.close()
            for request, data in batch.values():
                answered += data.startswith(b"HTTP/")
                wrong = problem(request, data)
                if wrong and len(failures) < 10:
                    failures.append(f"{wrong}: request {request[:200]!r}")
    assert not failures, "\n".join(failures)
    assert answered > CONNECTIONS * 0.9  # nearly every mangled request is answered, not just dropped
