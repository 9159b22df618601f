"""Notification latency and durability: from a write's commit to the receiver, and what a fault run loses.

    python bench/notify_bench.py [--engine both|local|redis] [--security on|off] [--rate 200]
                                 [--subscribers 20] [--duration 20] [--fault] [--fault-down 60]

One gateway process (`gateway serve`, a fresh store) and, in this process, a receiver (uvicorn,
one endpoint per subscriber) and an open-loop writer. --security on (default): the region (A)
writes with its token, the municipality (B) subscribes with its own; B is in the person's CareTeam
and a Consent permits it, so every event passes the access decision (when recorded and at
delivery) and every delivery goes to the access log. --security off: no tokens, trusted subscribers.

latency  --subscribers Subscriptions to task-created (id-only), then --rate Task creates per second
         for --duration seconds. Latency of each event = arrival at the receiver − the event's
         timestamp (the version's lastUpdated, set in the write transaction just before commit,
         truncated to the millisecond, so figures are up to 1 ms pessimistic). Goal: p99 < 50 ms.
fault    the same at --fault-rate writes/s for --fault-duration seconds; the receiver is down for
         --fault-down seconds from t=10 s and the gateway is killed (SIGKILL) at t=25 s and restarted.
         Sent = acknowledged writes × subscribers; delivered = distinct (subscriber, Task) received;
         lost = sent − delivered (goal 0). Retries back off to at most 5 s here (GATEWAY_NOTIFY_RETRY_MAX).

Redis engine: GATEWAY_REDIS_URL (default redis://127.0.0.1:6379/14), a fresh key prefix per run.
Always exits 0: it measures; see bench/README.md.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

import httpx
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import rest_bench as rb
from auth_bench import ORG_A, ORG_B, Credentials, consent

HERE = Path(__file__).resolve().parent
TOPIC = "https://samverkan.example.se/fhir/SubscriptionTopic/task-created"
GOAL_P99_MS = 50.0


class Receiver:
    """The subscribers' endpoints: /hook/{n}; records (n, Task id, event timestamp, arrival)."""

    def __init__(self, port: int):
        self.port = port
        self.arrivals: list[tuple[int, str, float, float]] = []
        self.handshakes: set[int] = set()
        self.app = Starlette(routes=[Route("/hook/{n:int}", self.hook, methods=["POST"])])
        self.server: uvicorn.Server | None = None
        self.task: asyncio.Task | None = None

    async def hook(self, request: Request) -> Response:
        arrived = time.time()
        n = request.path_params["n"]
        params = orjson.loads(await request.body())["entry"][0]["resource"]["parameter"]
        for p in params:
            if p["name"] == "type" and p["valueCode"] == "handshake":
                self.handshakes.add(n)
            if p["name"] == "notification-event":
                part = {q["name"]: q for q in p["part"]}
                stamp = datetime.fromisoformat(part["timestamp"]["valueInstant"].replace("Z", "+00:00")).timestamp()
                self.arrivals.append((n, part["focus"]["valueReference"]["reference"].rsplit("/", 1)[1], stamp,
                                      arrived))
        return Response(status_code=200)

    async def up(self) -> None:
        config = uvicorn.Config(self.app, host=rb.HOST, port=self.port, log_level="error", access_log=False)
        self.server = uvicorn.Server(config)
        self.task = asyncio.create_task(self.server.serve())
        while not self.server.started:
            await asyncio.sleep(0.01)

    async def down(self) -> None:
        self.server.should_exit = True
        await self.task


class Gateway:
    def __init__(self, engine: str, workdir: Path, retry_max: float, security: str = "on"):
        self.port = rb.free_port()
        self.log = workdir / f"gateway-{engine}.log"
        self.db = workdir / f"{engine}-{uuid.uuid4().hex[:6]}.sqlite"
        self.security = security
        self.credentials = {org: Credentials(self.db, org) for org in (ORG_A, ORG_B)} if security == "on" else {}
        self.env = {"GATEWAY_DB": str(self.db), "GATEWAY_SECURITY": security,
                    "GATEWAY_PORT": str(self.port), "GATEWAY_NOTIFY_TICK": "0.2",
                    "GATEWAY_NOTIFY_RETRY_MAX": str(retry_max), "GATEWAY_LOG_LEVEL": "warning",
                    "GATEWAY_NOTIFY_HTTP_LOOPBACK": "on"}
        if engine == "redis":
            self.env |= {"GATEWAY_REDIS_URL": os.environ.get("GATEWAY_REDIS_URL", "redis://127.0.0.1:6379/14"),
                         "GATEWAY_REDIS_PREFIX": f"bench-{uuid.uuid4().hex[:8]}", "GATEWAY_NOTIFY_CLAIM_IDLE": "2",
                         "GATEWAY_NOTIFY_LEASE_MARGIN": "2"}
        self.proc = None

    async def start(self) -> None:
        self.proc = rb.start([sys.executable, "-m", "gateway.cli", "serve"], self.log, self.env)
        await rb.wait_ready(self.proc, self.port, "/fhir/metadata", self.log)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        rb.stop(self.proc)
        if "GATEWAY_REDIS_PREFIX" in self.env:
            import redis
            client = redis.Redis.from_url(self.env["GATEWAY_REDIS_URL"])
            keys = list(client.scan_iter(self.env["GATEWAY_REDIS_PREFIX"] + ":*"))
            if keys:
                client.delete(*keys)


async def headers(gateway: Gateway) -> tuple[dict, dict]:
    """(writer's, subscriber's) request headers: A's and B's tokens, or none with security off."""
    if gateway.security != "on":
        return {}, {}
    a = await gateway.credentials[ORG_A].token(gateway.port)
    b = await gateway.credentials[ORG_B].token(gateway.port)
    return {"Authorization": f"Bearer {a}"}, {"Authorization": f"Bearer {b}"}


async def setup(http: httpx.AsyncClient, gateway: Gateway, receiver: Receiver, subscribers: int) -> str:
    """Subscriptions (by B), the person and, with security on, B's place in the CareTeam and the Consent."""
    writer, subscriber = await headers(gateway)
    http.headers.update(writer)
    r = await http.post("/fhir/Patient", json={"resourceType": "Patient", "name": [{"family": "Bench"}]})
    pid = r.json()["id"]
    if gateway.security == "on":
        org_b = (await http.post("/fhir/Organization", json={"resourceType": "Organization", "name": "Kommun B",
                 "identifier": [{"system": "urn:oid:1.2.752.29.4.19", "value": ORG_B}]})).json()["id"]
        for resource in ({"resourceType": "CareTeam", "status": "active", "subject": {"reference": f"Patient/{pid}"},
                          "participant": [{"member": {"reference": f"Organization/{org_b}"}}]},
                         consent(f"Patient/{pid}", f"Organization/{org_b}")):
            r = await http.post(f"/fhir/{resource['resourceType']}", json=resource)
            assert r.status_code == 201, r.text
    for n in range(subscribers):
        r = await http.post("/fhir/Subscription", headers=subscriber, json={
            "resourceType": "Subscription", "status": "requested", "reason": f"bench {n}", "criteria": TOPIC,
            "channel": {"type": "rest-hook", "endpoint": f"http://{rb.HOST}:{receiver.port}/hook/{n}",
                        "payload": "application/fhir+json"}})
        assert r.status_code == 201, r.text
    deadline = time.monotonic() + 30
    while len(receiver.handshakes) < subscribers and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # the handshakes' status writes
    return pid


async def write_load(http: httpx.AsyncClient, pid: str, rate: float, duration: float,
                     acknowledged: list[str], failed: list[int], events=()) -> None:
    """Open loop: a Task create every 1/rate s whatever the answers; ``events`` (t, coroutine fn) run on time."""
    body = orjson.dumps({"resourceType": "Task", "status": "requested", "intent": "order",
                         "for": {"reference": f"Patient/{pid}"}})
    pending: set[asyncio.Task] = set()

    async def one() -> None:
        try:
            r = await http.post("/fhir/Task", content=body, headers={"Content-Type": "application/fhir+json"})
            if r.status_code == 201:
                acknowledged.append(r.json()["id"])
            else:
                failed.append(r.status_code)
        except httpx.HTTPError:
            failed.append(0)

    start = time.monotonic()
    todo = sorted(events, key=lambda e: e[0])
    n = 0
    while (now := time.monotonic() - start) < duration:
        while todo and todo[0][0] <= now:
            asyncio.create_task(todo.pop(0)[1]())
        due = n / rate
        if due > now:
            await asyncio.sleep(due - now)
            continue
        task = asyncio.create_task(one())
        pending.add(task)
        task.add_done_callback(pending.discard)
        n += 1
    await asyncio.gather(*pending)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def latency_run(engine: str, args, workdir: Path) -> dict:
    gateway, receiver = Gateway(engine, workdir, 600, args.security), Receiver(rb.free_port())
    await receiver.up()
    await gateway.start()
    try:
        async with httpx.AsyncClient(base_url=f"http://{rb.HOST}:{gateway.port}", timeout=30,
                                     limits=httpx.Limits(max_connections=64)) as http:
            pid = await setup(http, gateway, receiver, args.subscribers)
            acknowledged, failed = [], []
            cpu0 = rb.cpu_seconds(gateway.proc.pid)
            await write_load(http, pid, args.rate, args.duration, acknowledged, failed)
            expected = len(acknowledged) * args.subscribers
            deadline = time.monotonic() + 30
            while len(receiver.arrivals) < expected and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            cpu = (rb.cpu_seconds(gateway.proc.pid) - cpu0) / args.duration
    finally:
        gateway.stop()
        await receiver.down()
    latencies = [(arrived - stamp) * 1000 for _, _, stamp, arrived in receiver.arrivals]
    got = {(n, tid) for n, tid, _, _ in receiver.arrivals}
    out = {"engine": engine, "writes": len(acknowledged), "write_errors": len(failed), "expected": expected,
           "delivered": len(got), "duplicates": len(receiver.arrivals) - len(got),
           "p50_ms": round(statistics.median(latencies), 1) if latencies else None,
           "p99_ms": round(percentile(latencies, 0.99), 1), "max_ms": round(max(latencies, default=0), 1),
           "server_cpu": round(cpu, 2)}
    print(f"  {engine:<6} writes {out['writes']:>6,} ({out['write_errors']} failed)  events {out['delivered']:>7,}"
          f"/{expected:,}  p50 {out['p50_ms']} ms  p99 {out['p99_ms']} ms  max {out['max_ms']} ms  "
          f"cpu server {out['server_cpu']}  {'PASS' if out['p99_ms'] < GOAL_P99_MS else 'MISS'}", flush=True)
    return out


async def fault_run(engine: str, args, workdir: Path) -> dict:
    gateway, receiver = Gateway(engine, workdir, 5, args.security), Receiver(rb.free_port())
    await receiver.up()
    await gateway.start()
    marks: list[str] = []

    async def receiver_down() -> None:
        marks.append(f"{time.strftime('%X')} receiver down for {args.fault_down:.0f} s")
        await receiver.down()
        await asyncio.sleep(args.fault_down)
        await receiver.up()
        marks.append(f"{time.strftime('%X')} receiver up")

    async def kill_gateway() -> None:
        gateway.kill()
        marks.append(f"{time.strftime('%X')} gateway killed (SIGKILL), restarting")
        await gateway.start()
        marks.append(f"{time.strftime('%X')} gateway up again")

    try:
        async with httpx.AsyncClient(base_url=f"http://{rb.HOST}:{gateway.port}", timeout=30) as http:
            pid = await setup(http, gateway, receiver, args.subscribers)
            acknowledged, failed = [], []
            await write_load(http, pid, args.fault_rate, args.fault_duration, acknowledged, failed,
                             events=[(10, receiver_down), (25, kill_gateway)])
            while receiver.server is None or not receiver.server.started or gateway.proc.poll() is not None:
                await asyncio.sleep(0.1)
            wanted = {(n, tid) for tid in acknowledged for n in range(args.subscribers)}
            deadline = time.monotonic() + args.drain
            while not wanted <= {(n, tid) for n, tid, _, _ in receiver.arrivals} and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
    finally:
        gateway.stop()
        await receiver.down()
    got = {(n, tid) for n, tid, _, _ in receiver.arrivals}
    out = {"engine": engine, "sent": len(wanted), "delivered": len(wanted & got), "lost": len(wanted - got),
           "duplicates": len(receiver.arrivals) - len(got), "unacknowledged_writes_delivered": len(got - wanted),
           "write_errors": len(failed), "marks": marks}
    for m in marks:
        print(f"    {m}")
    print(f"  {engine:<6} events sent {out['sent']:,}  delivered {out['delivered']:,}  lost {out['lost']}  "
          f"duplicates {out['duplicates']}  (writes refused while the gateway was down: {len(failed)}; "
          f"delivered for writes whose answer was lost: {out['unacknowledged_writes_delivered']})  "
          f"{'PASS' if out['lost'] == 0 else 'MISS'}", flush=True)
    return out


async def main(args) -> None:
    engines = ["local", "redis"] if args.engine == "both" else [args.engine]
    print(f"machine: {rb.machine()['nproc']} cores, commit {rb.git_state()}")
    results: dict = {"args": vars(args), "latency": [], "fault": []}
    with tempfile.TemporaryDirectory(prefix="notify-bench-") as tmp:
        workdir = Path(tmp)
        print(f"security {args.security}; latency: {args.subscribers} subscribers (task-created, id-only), "
              f"{args.rate:.0f} writes/s for "
              f"{args.duration:.0f} s = {args.rate * args.subscribers:,.0f} events/s")
        for engine in engines:
            results["latency"].append(await latency_run(engine, args, workdir))
        if args.fault:
            print(f"fault: {args.fault_rate:.0f} writes/s for {args.fault_duration:.0f} s; receiver down "
                  f"{args.fault_down:.0f} s from t=10 s; gateway killed at t=25 s")
            for engine in engines:
                results["fault"].append(await fault_run(engine, args, workdir))
        for line in rb.server_problems(workdir / "gateway-local.log") if (workdir / "gateway-local.log").exists() else []:
            print("  server log:", line)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / f"notify-{stamp}.json").write_text(json.dumps(results, indent=1))
    print("JSON", json.dumps(results))


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--engine", choices=("both", "local", "redis"), default="both")
    p.add_argument("--security", choices=("on", "off"), default="on")
    p.add_argument("--rate", type=float, default=200.0, help="writes per second (default 200)")
    p.add_argument("--subscribers", type=int, default=20)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--fault", action="store_true", help="also run the fault scenario")
    p.add_argument("--fault-rate", type=float, default=20.0)
    p.add_argument("--fault-duration", type=float, default=90.0)
    p.add_argument("--fault-down", type=float, default=60.0)
    p.add_argument("--drain", type=float, default=120.0, help="seconds to wait for the backlog after the load")
    return p.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
