"""Several gateway processes share delivery through Redis Streams: a worker killed in the middle
of a delivery does not lose the event — another worker reclaims it and the receiver gets it.

Real processes (one `gateway serve` that only publishes, two `gateway worker`s), a real Redis and
a real HTTP receiver on a loopback port."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid

import httpx
import pytest
import redis
import uvicorn
from conftest import drop_redis_keys, require_redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

TOPIC = "https://samverkan.example.se/fhir/SubscriptionTopic/task-created"
BP = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SlowReceiver:
    """Records every notification's event numbers as it arrives; holds the first event
    notification for ``hold_s`` seconds before answering, so its sender can be killed meanwhile."""

    def __init__(self, hold_s: float):
        self.arrivals: list[tuple[str, list[int]]] = []  # (type, event numbers), in arrival order
        self.hold_s = hold_s
        self.held = threading.Event()
        self.port = free_port()
        app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    async def hook(self, request: Request) -> Response:
        bundle = await request.json()
        params = bundle["entry"][0]["resource"]["parameter"]
        kind = next(p["valueCode"] for p in params if p["name"] == "type")
        numbers = [int(q["valueString"]) for p in params if p["name"] == "notification-event"
                   for q in p["part"] if q["name"] == "event-number"]
        self.arrivals.append((kind, numbers))
        if kind == "event-notification" and not self.held.is_set():
            self.held.set()
            import asyncio
            await asyncio.sleep(self.hold_s)
        return Response(status_code=200)

    def numbers(self) -> list[int]:
        return [n for kind, ns in self.arrivals if kind == "event-notification" for n in ns]

    def __enter__(self):
        self.thread.start()
        wait_until(lambda: self.server.started, 10, "the receiver did not start")
        return self

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(5)


def wait_until(predicate, timeout: float, message: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(message)
        time.sleep(0.05)


def start(args: list[str], env: dict, log) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "gateway.cli", *args], env=env, stdout=log, stderr=subprocess.STDOUT)


@pytest.fixture
def cluster(tmp_path):
    url = require_redis()
    prefix = f"test-{uuid.uuid4().hex[:12]}"
    port = free_port()
    env = {**os.environ, "GATEWAY_DB": str(tmp_path / "g.sqlite"), "GATEWAY_SECURITY": "off",
           "GATEWAY_REDIS_URL": url, "GATEWAY_REDIS_PREFIX": prefix, "GATEWAY_NOTIFY_TICK": "0.2",
           "GATEWAY_NOTIFY_CLAIM_IDLE": "1", "GATEWAY_NOTIFY_LEASE_MARGIN": "1", "GATEWAY_PORT": str(port),
           "GATEWAY_LOG_LEVEL": "warning", "GATEWAY_NOTIFY_HTTP_LOOPBACK": "on"}
    log = open(tmp_path / "processes.log", "w")
    procs = {"serve": start(["serve"], {**env, "GATEWAY_NOTIFY_DELIVER": "off"}, log)}
    base = f"http://127.0.0.1:{port}/fhir"

    def up() -> bool:
        try:
            return httpx.get(f"{base}/metadata", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False
    wait_until(up, 30, "gateway serve did not start")
    procs["w1"] = start(["worker"], env, log)
    procs["w2"] = start(["worker"], env, log)
    try:
        yield base, redis.Redis.from_url(url, decode_responses=True), prefix, procs
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs.values():
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()
        drop_redis_keys(prefix)


def test_a_worker_killed_mid_delivery_does_not_lose_the_event(cluster, tmp_path):
    base, r, prefix, procs = cluster
    with SlowReceiver(hold_s=4) as receiver, httpx.Client(base_url=base, timeout=10) as http:
        sub = http.post("/Subscription", json={
            "resourceType": "Subscription", "status": "requested", "reason": "kill test", "criteria": TOPIC,
            "channel": {"type": "rest-hook", "endpoint": f"http://127.0.0.1:{receiver.port}/hook",
                        "payload": "application/fhir+json",
                        "extension": [{"url": BP + "backport-timeout", "valueUnsignedInt": 3}]}}).json()
        wait_until(lambda: http.get(f"/Subscription/{sub['id']}").json()["status"] == "active", 20,
                   "no handshake")
        pid = http.post("/Patient", json={"resourceType": "Patient", "name": [{"family": "Test"}]}).json()["id"]
        http.post("/Task", json={"resourceType": "Task", "status": "requested", "intent": "order",
                                 "for": {"reference": f"Patient/{pid}"}})
        wait_until(receiver.held.is_set, 20, "event 1 never reached the receiver")
        holder = r.get(f"{prefix}:lease:{sub['id']}")
        victim = next(name for name, p in procs.items() if holder and holder.endswith(f"-{p.pid}"))
        procs[victim].kill()  # SIGKILL in the middle of the POST: no cleanup, no acknowledgement
        procs[victim].wait(5)
        wait_until(lambda: receiver.numbers().count(1) >= 2, 30, f"event 1 was lost: {receiver.arrivals}")
        http.post("/Task", json={"resourceType": "Task", "status": "requested", "intent": "order",
                                 "for": {"reference": f"Patient/{pid}"}})
        wait_until(lambda: 2 in receiver.numbers(), 20, f"event 2 did not follow: {receiver.arrivals}")
        numbers = receiver.numbers()
        assert sorted(set(numbers)) == [1, 2]
        assert numbers.index(2) > max(i for i, n in enumerate(numbers) if n == 1)  # in order
        assert victim != "serve" and procs["serve"].poll() is None
