"""HL7 v2 ADT over MLLP: messages translated and committed per second, and admission → municipal notification.

    python bench/adt_bench.py [--duration 20] [--connections 1,8] [--latency-rate 50] [--latency-duration 20]
                              [--engine local|redis] [--synchronous FULL]

throughput  A real `gateway mllp` process on a fresh store, written as a registered hospital client.
            Each connection sends ADT^A01 admissions, each a new person and stay (so every message
            writes a Patient, an Encounter and a Provenance), closed loop: one in flight per
            connection, as an HL7 sender does. Reported: messages/s (AA only), p50/p99 per message,
            and the listener's CPU per message. Goal: >= 400/s in one process.
latency     `gateway serve` and `gateway mllp` on one store; the municipality (its client registered
            for kommunkod 1380) subscribes to encounter-admission with the kommun-json payload
            (application/vnd.samverkan.kommun+json, id-only) at an endpoint in this process. One
            connection sends admissions that say the person may need municipal services (ZLU) at
            --latency-rate per second; latency = the notification's arrival − the moment the
            message was sent, matched in order (one subscription delivers in event order). With
            --engine local the serving process finds the listener's commits on its scan
            (GATEWAY_NOTIFY_TICK, 0.02 s here); with redis the listener publishes each commit to
            the stream and the serving process delivers at once. Goal: p99 < 100 ms.

Always exits 0: it measures; see bench/README.md.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import closing
from pathlib import Path

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))

import rest_bench as rb  # noqa: E402
from auth_bench import call  # noqa: E402

from gateway.auth.directory import Directory, Entry  # noqa: E402
from gateway.auth.keys import client_assertion, generate_key  # noqa: E402
from gateway.auth.registry import ClientRegistry  # noqa: E402
from gateway.mllp.client import MllpClient  # noqa: E402
from gateway.validation.identifiers import luhn_ok  # noqa: E402

HOSPITAL, KOMMUN = "SE2321000016-HSH1", "SE2120001181-HALM"
TOPIC = "https://samverkan.example.se/fhir/SubscriptionTopic/encounter-admission"
KOMMUN_JSON = "application/vnd.samverkan.kommun+json"


def personnummer(n: int) -> str:
    """A valid, obviously fictional personnummer per n (birth dates 1900-1999, Luhn-checked)."""
    base = f"19{n % 100:02d}{1 + n // 100 % 12:02d}{1 + n // 1200 % 28:02d}{n // 33600 % 1000:03d}"
    return next(base + str(d) for d in range(10) if luhn_ok((base + str(d))[2:]))


def admission(n: int, run: str, needs: bool = False) -> bytes:
    pnr = personnummer(n)
    segments = [
        f"MSH|^~\\&|COSMIC|SE2321000016-HSH|SAMVERKAN|SE|20260101{n // 3600 % 24:02d}{n // 60 % 60:02d}{n % 60:02d}+0100"
        f"||ADT^A01^ADT_A01|{run}{n}|P|2.5.1",
        "EVN|A01|20260101120000+0100",
        f"PID|1||{pnr}^^^1.2.752.129.2.1.3.1^PI||Testsson^Test{n}^^^^^L||{pnr[:8]}|M|||"
        "Exempelgatan 12^^Halmstad^^30250^SE^L^^1380",
        f"PV1|1|I|MED1^12^1^SE2321000016-MED1||||||||||||||||V{run}{n}^^^SE2321000016-HSH^VN"
        "|||||||||||||||||||||||||20260101120000+0100",
        "PV2|||||||||20260108"]
    if needs:
        segments.append("ZLU|Y|N|20260101121500+0100")
    return "\r".join(segments).encode()


def register(db: Path) -> dict[str, tuple[str, bytes, str]]:
    """Clients of the hospital and of Halmstad (the operator vouches kommunkod 1380)."""
    out = {}
    with closing(Directory(str(db))) as directory:
        directory.register([Entry(KOMMUN, "Halmstads kommun", "1380", False, "bench")])
    with closing(ClientRegistry(str(db))) as registry:
        for org in (HOSPITAL, KOMMUN):
            pem, jwk = generate_key()
            out[org] = (registry.add(f"adt bench {org}", org, {"keys": [jwk]}, "system/*.cruds").client_id,
                        pem, jwk["kid"])
    return out


async def token(port: int, client: tuple[str, bytes, str]) -> str:
    from urllib.parse import urlencode
    client_id, pem, kid = client
    form = urlencode({"grant_type": "client_credentials", "scope": "system/*.cruds",
                      "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                      "client_assertion": client_assertion(client_id, pem, f"http://127.0.0.1:{port}/fhir/auth/token",
                                                           kid)})
    status, body = await call(port, "/fhir/auth/token", method="POST", body=form.encode(),
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 200, body
    return orjson.loads(body)["access_token"]


async def wait_port(port: int, proc, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"a server process exited: {proc.returncode}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.1)
    raise SystemExit(f"nothing listens on {port}")


def mllp_process(db: Path, client_id: str, port: int, log: Path, env: dict) -> object:
    return rb.start([sys.executable, "-m", "gateway.cli", "mllp", "--client-id", client_id, "--port", str(port),
                     "--db", str(db)], log, env)


# -- throughput --------------------------------------------------------------------------------
async def throughput(args, work: Path) -> list[dict]:
    db = work / "throughput.sqlite"
    clients = register(db)
    env = {**os.environ, "GATEWAY_DB": str(db), "GATEWAY_SQLITE_SYNCHRONOUS": args.synchronous}
    port = rb.free_port()
    proc = mllp_process(db, clients[HOSPITAL][0], port, work / "mllp.log", env)
    rows = []
    try:
        await wait_port(port, proc)
        counter = iter(range(10**9))
        for conns in args.connections:
            run = uuid.uuid4().hex[:6]
            latencies: list[float] = []
            failed = 0
            deadline = [0.0]

            async def sender() -> None:
                nonlocal failed
                async with MllpClient("127.0.0.1", port) as client:
                    while time.perf_counter() < deadline[0]:
                        started = time.perf_counter()
                        ack = await client.send(admission(next(counter), run))
                        if b"MSA|AA" in ack:
                            latencies.append(time.perf_counter() - started)
                        else:
                            failed += 1
            deadline[0] = time.perf_counter() + args.warmup
            await asyncio.gather(*(sender() for _ in range(conns)))
            latencies.clear()
            cpu0 = rb.cpu_seconds(proc.pid)
            started = time.perf_counter()
            deadline[0] = started + args.duration
            await asyncio.gather(*(sender() for _ in range(conns)))
            elapsed, cpu = time.perf_counter() - started, rb.cpu_seconds(proc.pid) - cpu0
            q = statistics.quantiles(latencies, n=100) if len(latencies) > 2 else [0.0] * 99
            rows.append({"connections": conns, "messages": len(latencies), "per_s": len(latencies) / elapsed,
                         "p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000, "failed": failed,
                         "cpu_ms_per_message": cpu / max(len(latencies), 1) * 1000})
    finally:
        rb.stop(proc)
    return rows


# -- latency -----------------------------------------------------------------------------------
class Receiver:
    def __init__(self, port: int):
        self.port = port
        self.arrivals: list[float] = []
        self.handshake = asyncio.Event()
        self.app = Starlette(routes=[Route("/hook", self.hook, methods=["POST"])])

    async def hook(self, request: Request) -> Response:
        arrived = time.perf_counter()
        body = orjson.loads(await request.body())
        if body.get("type") == "handshake":
            self.handshake.set()
        self.arrivals += [arrived] * len(body.get("events") or [])
        return Response(status_code=200)


async def latency(args, work: Path) -> dict:
    db = work / "latency.sqlite"
    clients = register(db)
    env = {**os.environ, "GATEWAY_DB": str(db), "GATEWAY_NOTIFY_HTTP_LOOPBACK": "on", "GATEWAY_NOTIFY_TICK": "0.02",
           "GATEWAY_SQLITE_SYNCHRONOUS": args.synchronous}
    if args.engine == "redis":
        env |= {"GATEWAY_REDIS_URL": os.environ.get("GATEWAY_REDIS_URL", "redis://127.0.0.1:6379/14"),
                "GATEWAY_REDIS_PREFIX": f"adtbench-{uuid.uuid4().hex[:8]}"}
    http_port, mllp_port, hook_port = rb.free_port(), rb.free_port(), rb.free_port()
    receiver = Receiver(hook_port)
    server = uvicorn.Server(uvicorn.Config(receiver.app, host="127.0.0.1", port=hook_port, log_level="warning"))
    hook_task = asyncio.create_task(server.serve())
    serve = rb.start([sys.executable, "-m", "gateway.cli", "serve", "--port", str(http_port), "--db", str(db)],
                     work / "serve.log", env)
    mllp = mllp_process(db, clients[HOSPITAL][0], mllp_port, work / "mllp-latency.log", env)
    try:
        await rb.wait_ready(serve, http_port, "/fhir/metadata", work / "serve.log")
        await wait_port(mllp_port, mllp)
        kommun = await token(http_port, clients[KOMMUN])
        sub = {"resourceType": "Subscription", "status": "requested", "reason": "adt bench", "criteria": TOPIC,
               "channel": {"type": "rest-hook", "endpoint": f"http://127.0.0.1:{hook_port}/hook",
                           "payload": KOMMUN_JSON}}
        status, body = await call(http_port, "/fhir/Subscription", kommun, "POST", orjson.dumps(sub),
                                  {"Content-Type": "application/fhir+json"})
        assert status == 201, body
        await asyncio.wait_for(receiver.handshake.wait(), 30)
        run, sent = uuid.uuid4().hex[:6], []
        interval, n = 1 / args.latency_rate, int(args.latency_rate * args.latency_duration)
        async with MllpClient("127.0.0.1", mllp_port) as client:
            start = time.perf_counter()
            for i in range(n):
                await asyncio.sleep(max(0.0, start + i * interval - time.perf_counter()))
                sent.append(time.perf_counter())
                ack = await client.send(admission(i, run, needs=True))
                assert b"MSA|AA" in ack, ack
        deadline = time.monotonic() + 30
        while len(receiver.arrivals) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        got = [(a - s) * 1000 for s, a in zip(sent, receiver.arrivals)]
        q = statistics.quantiles(got, n=100) if len(got) > 2 else [0.0] * 99
        return {"engine": args.engine, "rate": args.latency_rate, "sent": n, "received": len(receiver.arrivals),
                "p50_ms": q[49], "p99_ms": q[98], "max_ms": max(got, default=0.0)}
    finally:
        rb.stop(mllp)
        rb.stop(serve)
        server.should_exit = True
        await hook_task


async def main(args) -> None:
    with tempfile.TemporaryDirectory(prefix="adt-bench-") as tmp:
        work = Path(tmp)
        print(f"machine {rb.machine()}; commit {rb.git_state()}; synchronous {args.synchronous}")
        if not args.skip_throughput:
            for row in await throughput(args, work):
                print(f"throughput {row['connections']} conn: {row['per_s']:.0f} msg/s ({row['messages']} AA, "
                      f"{row['failed']} not AA), p50 {row['p50_ms']:.1f} ms, p99 {row['p99_ms']:.1f} ms, listener "
                      f"CPU {row['cpu_ms_per_message']:.2f} ms/message  [goal >= 400/s]")
        if not args.skip_latency:
            fig = await latency(args, work)
            print(f"latency ({fig['engine']}) ADT→kommun-json notification at {fig['rate']}/s: sent {fig['sent']}, "
                  f"received {fig['received']}, p50 {fig['p50_ms']:.1f} ms, p99 {fig['p99_ms']:.1f} ms, max "
                  f"{fig['max_ms']:.1f} ms  [goal p99 < 100 ms]")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--warmup", type=float, default=3)
    ap.add_argument("--connections", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8])
    ap.add_argument("--latency-rate", type=float, default=50)
    ap.add_argument("--latency-duration", type=float, default=20)
    ap.add_argument("--engine", choices=("local", "redis"), default="local")
    ap.add_argument("--synchronous", default="FULL", help="GATEWAY_SQLITE_SYNCHRONOUS of the store")
    ap.add_argument("--skip-throughput", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    return ap.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
