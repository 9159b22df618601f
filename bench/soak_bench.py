"""Soak: mixed load for minutes; does the server's memory stay flat?

    python bench/soak_bench.py [--minutes 10] [--rate 150] [--resources 100000] [--warmup-minutes 3]

One fresh gateway process (GATEWAY_SECURITY=off, GATEWAY_NOTIFY_HTTP_LOOPBACK=on), loaded with
--resources resources (dataset.py), one Subscription to task-created whose receiver runs in this
process. Then, for --minutes, an open-loop mix of --rate requests per second over 8 connections:

  35 % read       GET /fhir/{Type}/{id} of the loaded store
  25 % search     GET /fhir/Task?patient=…&status=…
  20 % create     POST /fhir/Task (each one a notification to the receiver)
  10 % update     PUT /fhir/Task/{id} with If-Match (each connection owns its Tasks)
   8 % history    GET /fhir/Task/{id}/_history
   2 % large      POST a 256 KiB Patient, or GET /fhir/Patient?_count=50 of them (bounded pages)

The store is preloaded larger than SQLite's page caches (64 MiB per connection), so that they
are full after the warm-up instead of growing with the store. The server's VmRSS and RssAnon
are sampled every 5 s. Reported: answers by kind and status,
notifications received, RSS at start / after warm-up / end / max, and the least-squares slope of
RSS after --warmup-minutes in MB per minute. Goal: flat, under 1 MB/min, judged on RssAnon (what the
process allocates); VmRSS also counts the pages of the store file SQLite maps (up to 1 GiB,
``mmap_size``), which come and go with the kernel's page cache. Always exits 0.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from datetime import datetime
from pathlib import Path

import orjson

import dataset
import loadgen
import rest_bench as rb
import workloads
from heavy_load_bench import large_patient
from notify_bench import TOPIC, Receiver
from rss import RssSampler, slope_mb_per_min

HERE = Path(__file__).resolve().parent
HOST = rb.HOST
CONNECTIONS = 8
MIX = (("read", 35), ("search", 25), ("create", 20), ("update", 10), ("history", 8), ("large", 2))
JSON = {"Content-Type": "application/fhir+json"}
SAMPLES: list[str] = []  # the first unexpected answers, printed with the figures


class Mix:
    def __init__(self, port: int, manifest: dict, owned: list[list[dict]], seed: int):
        self.addr = f"{HOST}:{port}"
        keys = [f"Task/{t}" for ts in manifest["patients"].values() for t in ts] + \
               [f"Patient/{p}" for p in manifest["patients"]] + [f"CarePlan/{c}" for c in manifest["careplans"]]
        self.patients = list(manifest["patients"])
        self.tasks = [t for ts in manifest["patients"].values() for t in ts]
        self.read = workloads.Read(self.addr, keys, seed)
        self.search = workloads.SearchTasks(self.addr, self.patients, seed + 1)
        self.update = workloads.UpdateTask(self.addr, owned)
        self.rng = random.Random(seed + 2)
        self.kinds = [k for k, w in MIX for _ in range(w)]
        self.large_body = large_patient(256 * 1024, "strings")  # > 64 KiB: parsed and validated off the loop

    def request(self, conn: int) -> tuple[str, bytes]:
        kind = self.rng.choice(self.kinds)
        if kind == "read":
            return kind, self.read.request(conn)
        if kind == "search":
            return kind, self.search.request(conn)
        if kind == "update":
            return kind, self.update.request(conn)
        if kind == "history":
            return kind, loadgen.encode_request("GET", f"/fhir/Task/{self.rng.choice(self.tasks)}/_history", self.addr)
        if kind == "large":
            if self.rng.random() < 0.5:
                return kind, loadgen.encode_request("POST", "/fhir/Patient", self.addr,
                                                    {**JSON, "Prefer": "return=minimal"}, self.large_body)
            return kind, loadgen.encode_request("GET", "/fhir/Patient?_count=50", self.addr)
        body = orjson.dumps({"resourceType": "Task", "status": "requested", "intent": "order",
                             "for": {"reference": f"Patient/{self.rng.choice(self.patients)}"}})
        return kind, loadgen.encode_request("POST", "/fhir/Task", self.addr, JSON, body)


async def drive(port: int, mix: Mix, rate: float, until: float, answers: dict[str, Counter]) -> None:
    per_conn = rate / CONNECTIONS

    async def connection(n: int) -> None:
        conn = loadgen.Connection(HOST, port)
        due = time.monotonic() + random.random() / per_conn
        while due < until:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            due += 1 / per_conn
            kind, request = mix.request(n)
            try:
                status, headers, body = await conn.request(request)
            except (OSError, asyncio.IncompleteReadError, loadgen.ProtocolError):
                conn.close()
                status, headers, body = 0, {}, b""
            if kind == "update" and status:
                mix.update.response(n, status, headers, body)
            answers[kind][status] += 1
            if (status == 0 or status >= 400) and len(SAMPLES) < 5:
                SAMPLES.append(f"{kind} {status}: {body[:300].decode('utf-8', 'replace')}")
        conn.close()

    await asyncio.gather(*(connection(n) for n in range(CONNECTIONS)))


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="soak-bench-"))
    port, log = rb.free_port(), work / "gateway.log"
    receiver = Receiver(rb.free_port())
    await receiver.up()
    proc = rb.start([sys.executable, "-m", "gateway.cli", "serve"], log,
                    {"GATEWAY_DB": str(work / "soak.sqlite"), "GATEWAY_SECURITY": "off", "GATEWAY_PORT": str(port),
                     "GATEWAY_LOG_LEVEL": "warning", "GATEWAY_NOTIFY_HTTP_LOOPBACK": "on"})
    answers: dict[str, Counter] = defaultdict(Counter)
    try:
        await rb.wait_ready(proc, port, "/fhir/metadata", log)
        print(f"loading {args.resources:,} resources …", flush=True)
        manifest = await dataset.load(HOST, port, args.resources, args.seed)
        owned = await rb.owned_tasks(port, manifest, CONNECTIONS)
        for mine in owned:  # the updates move lastModified, which may not precede authoredOn (inv-1: 422)
            for task in mine:
                task["resource"].pop("authoredOn", None)
        status, _, body = await loadgen.Connection(HOST, port).request(loadgen.encode_request(
            "POST", "/fhir/Subscription", f"{HOST}:{port}", JSON, orjson.dumps({
                "resourceType": "Subscription", "status": "requested", "reason": "soak", "criteria": TOPIC,
                "channel": {"type": "rest-hook", "endpoint": f"http://{HOST}:{receiver.port}/hook/0",
                            "payload": "application/fhir+json"}})))
        if status != 201:
            raise SystemExit(f"Subscription: HTTP {status}: {body[:300]!r}")
        mix = Mix(port, manifest, owned, args.seed)
        rss = RssSampler(proc.pid, interval=5).start()
        began = time.monotonic()
        print(f"soak: {args.minutes} min at {args.rate} req/s …", flush=True)
        progress = asyncio.create_task(report_progress(rss, began))
        await drive(port, mix, args.rate, began + args.minutes * 60, answers)
        progress.cancel()
        await asyncio.sleep(2)  # the last notifications
        await rss.stop()
    finally:
        rb.stop(proc)
        for store in work.glob("*.sqlite*"):  # gigabytes after a run: the log stays
            store.unlink()
        await receiver.down()
    warm = began + min(args.warmup_minutes * 60, args.minutes * 60 * 0.5)
    after = [(t - began, v / 1024, a / 1024) for t, v, a in rss.samples if t >= warm]
    slope = slope_mb_per_min([(t, v) for t, v, _ in after])
    slope_anon = slope_mb_per_min([(t, a) for t, _, a in after])
    first, last = rss.samples[0], rss.samples[-1]
    created = answers["create"][201]
    print(f"\nanswers: " + "; ".join(f"{k} {dict(v)}" for k, v in sorted(answers.items())))
    for sample in SAMPLES:
        print(f"  unexpected: {sample}")
    print(f"notifications: {len(receiver.arrivals):,} events received for {created:,} Tasks created")
    print(f"RSS MB: start {first[1] / 1024:.1f}  after warm-up {after[0][1]:.1f}  end {last[1] / 1024:.1f}  "
          f"max {rss.max_mb():.1f}   (anon: start {first[2] / 1024:.1f} end {last[2] / 1024:.1f})")
    verdict = "PASS" if abs(slope_anon) < 1.0 else "MISS"
    print(f"RSS slope after {(warm - began) / 60:.1f} min warm-up: anon {slope_anon:+.2f} MB/min  {verdict} "
          f"(goal < 1 MB/min)   VmRSS {slope:+.2f} MB/min (with the store file's memory map, which the kernel "
          "pages in and out)")
    problems = rb.server_problems(log)
    print(f"server log: {len(problems)} error lines" + "".join(f"\n  {line}" for line in problems[:5]))
    summary = {"when": datetime.now().isoformat(timespec="seconds"), "commit": rb.git_state(), "args": vars(args),
               "answers": {k: {str(s): n for s, n in v.items()} for k, v in answers.items()},
               "notifications": len(receiver.arrivals), "slope_mb_per_min": round(slope, 3),
               "slope_anon_mb_per_min": round(slope_anon, 3), "rss_max_mb": round(rss.max_mb(), 1),
               "rss_mb": [[round(t - began), round(v / 1024, 1), round(a / 1024, 1)] for t, v, a in rss.samples]}
    print("JSON " + json.dumps({k: v for k, v in summary.items() if k != "rss_mb"}))
    out = HERE / "results" / f"soak-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=1))


async def report_progress(rss: RssSampler, began: float) -> None:
    while True:
        await asyncio.sleep(60)
        t, v, a = rss.samples[-1]
        print(f"  {(t - began) / 60:4.1f} min  RSS {v / 1024:7.1f} MB  anon {a / 1024:7.1f} MB", flush=True)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10)
    ap.add_argument("--warmup-minutes", type=float, default=3)
    ap.add_argument("--rate", type=float, default=150, help="requests per second, all kinds together")
    ap.add_argument("--resources", type=int, default=100000,
                    help="preloaded: larger than SQLite's caches (3 x 64 MiB), which otherwise grow with the store")
    ap.add_argument("--seed", type=int, default=7)
    return ap.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
