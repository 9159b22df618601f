"""Memory and event-loop fairness under heavy load: large search pages and large uploads.

    python bench/heavy_load_bench.py [--patients 24] [--size-mb 9.5] [--shape strings|elements]
                                     [--searchers 16] [--uploaders 8] [--duration 30] [--rss-bound-mb 1024]

One fresh gateway process (GATEWAY_SECURITY=off; every other setting its default unless given in
the environment, e.g. GATEWAY_MAX_PAGE_BYTES), loaded with --patients Patients of --size-mb each
(gender female). Then, each for --duration seconds, on the same server:

  pages    --searchers connections: GET /fhir/Patient?gender=female&_count=50, then its next links
           to the end, again and again (the request that built a 465 MB page before the fix)
  uploads  --uploaders connections POST a --size-mb Patient back to back
  both     the two at once

A probe connection GETs /fhir/metadata every 20 ms in every phase. Reported per phase: the
server's largest RSS (and RssAnon, without the store file's memory map), answers by status,
page/upload sizes and latencies, and the probe's p50/p99/max. Goals: RSS under --rss-bound-mb
throughout, probe p99 < 100 ms during uploads. Always exits 0: it measures; see bench/README.md.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import orjson

import loadgen
import rest_bench as rb
from rss import RssSampler, memory_kb

HERE = Path(__file__).resolve().parent
HOST = rb.HOST
PROBE_EVERY_S = 0.02
PROBE_GOAL_MS = 100.0
_NEXT = re.compile(rb'"relation":"next","url":"([^"]+)"')


def large_patient(size: int, shape: str) -> bytes:
    """A valid Patient of about ``size`` bytes. ``strings``: long extension strings (cheap to
    validate, ~0.25 s per 9.5 MB); ``elements``: many small addresses and telecoms (the worst
    case for validation, seconds per MB)."""
    p: dict = {"resourceType": "Patient", "gender": "female", "name": [{"family": "Storsson", "given": ["Bench"]}]}
    if shape == "strings":
        p["extension"] = [{"url": "https://bench.example.se/fhir/note", "valueString": "x" * 1000}
                          for _ in range(max(1, size // 1060))]
    else:
        per = len(orjson.dumps({"line": ["Storgatan 100000", "lgh 1101"], "city": "Halmstad", "postalCode": "30226"}))
        n = max(1, size // (per + 45))
        p["address"] = [{"line": [f"Storgatan {i}", "lgh 1101"], "city": "Halmstad", "postalCode": "30226"}
                        for i in range(n)]
        p["telecom"] = [{"system": "phone", "value": f"+46 35 {i:07d}"} for i in range(n)]
    return orjson.dumps(p)


class Counts:
    def __init__(self):
        self.statuses: Counter = Counter()
        self.latencies: list[float] = []
        self.sizes: list[int] = []
        self.errors: list[str] = []

    def add(self, status: int, seconds: float, size: int, body: bytes = b"") -> None:
        self.statuses[status] += 1
        self.latencies.append(seconds)
        self.sizes.append(size)
        if status >= 500 and status != 503 and len(self.errors) < 3:
            self.errors.append(f"{status}: {body[:300]!r}")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


async def pages(port: int, until: float, counts: Counts) -> None:
    conn, addr = loadgen.Connection(HOST, port), f"{HOST}:{port}"
    path = "/fhir/Patient?gender=female&_count=50"
    try:
        while time.monotonic() < until:
            started = time.monotonic()
            try:
                status, _, body = await conn.request(loadgen.encode_request("GET", path, addr))
            except (OSError, asyncio.IncompleteReadError, loadgen.ProtocolError) as exc:
                counts.add(0, time.monotonic() - started, 0, repr(exc).encode())
                conn.close()
                await asyncio.sleep(0.1)
                continue
            counts.add(status, time.monotonic() - started, len(body), body)
            found = _NEXT.search(body[:16384]) if status == 200 else None
            path = found.group(1).decode().split(addr, 1)[1] if found else "/fhir/Patient?gender=female&_count=50"
    finally:
        conn.close()


async def uploads(port: int, until: float, counts: Counts, body: bytes) -> None:
    conn = loadgen.Connection(HOST, port)
    request = loadgen.encode_request("POST", "/fhir/Patient", f"{HOST}:{port}",
                                     {"Content-Type": "application/fhir+json", "Prefer": "return=minimal"}, body)
    try:
        while time.monotonic() < until:
            started = time.monotonic()
            try:
                status, _, resp = await conn.request(request)
            except (OSError, asyncio.IncompleteReadError, loadgen.ProtocolError) as exc:
                counts.add(0, time.monotonic() - started, 0, repr(exc).encode())
                conn.close()
                await asyncio.sleep(0.1)
                continue
            counts.add(status, time.monotonic() - started, len(body), resp)
    finally:
        conn.close()


async def probe(port: int, until: float, counts: Counts) -> None:
    conn = loadgen.Connection(HOST, port)
    request = loadgen.encode_request("GET", "/fhir/metadata", f"{HOST}:{port}")
    tick = time.monotonic()
    try:
        while time.monotonic() < until:
            started = time.monotonic()
            status, _, body = await conn.request(request)
            counts.add(status, time.monotonic() - started, len(body), body)
            tick = max(tick + PROBE_EVERY_S, time.monotonic())
            await asyncio.sleep(tick - time.monotonic())
    finally:
        conn.close()


async def phase(name: str, port: int, pid: int, args, body: bytes) -> dict:
    until = time.monotonic() + args.duration
    page, upload, probed = Counts(), Counts(), Counts()
    rss = RssSampler(pid).start()
    jobs = [probe(port, until, probed)]
    if name in ("pages", "both"):
        jobs += [pages(port, until, page) for _ in range(args.searchers)]
    if name in ("uploads", "both"):
        jobs += [uploads(port, until, upload, body) for _ in range(args.uploaders)]
    await asyncio.gather(*jobs)
    await rss.stop()
    out = {"phase": name, "rss_max_mb": round(rss.max_mb(), 1), "rss_anon_max_mb": round(rss.max_anon_mb(), 1),
           "probe": {"n": len(probed.latencies), "p50_ms": round(pct(probed.latencies, 0.5), 1),
                     "p99_ms": round(pct(probed.latencies, 0.99), 1), "max_ms": round(pct(probed.latencies, 1), 1),
                     "statuses": dict(probed.statuses)}}
    for key, counts in (("pages", page), ("uploads", upload)):
        if counts.latencies:
            out[key] = {"n": len(counts.latencies), "statuses": {str(k): v for k, v in counts.statuses.items()},
                        "mean_mb": round(sum(counts.sizes) / len(counts.sizes) / 1e6, 2),
                        "p50_s": round(pct(counts.latencies, 0.5) / 1000, 2),
                        "max_s": round(pct(counts.latencies, 1) / 1000, 2), "errors": counts.errors}
    return out


def show(result: dict, bound_mb: float) -> None:
    p = result["probe"]
    print(f"{result['phase']:<8} RSS max {result['rss_max_mb']:7.1f} MB (anon {result['rss_anon_max_mb']:7.1f})"
          f"  {'PASS' if result['rss_max_mb'] < bound_mb else 'MISS'} < {bound_mb:.0f} MB   probe n={p['n']} "
          f"p50 {p['p50_ms']:.1f} ms p99 {p['p99_ms']:.1f} ms max {p['max_ms']:.1f} ms "
          f"{'PASS' if p['p99_ms'] < PROBE_GOAL_MS else 'MISS'} (p99 < {PROBE_GOAL_MS:.0f} ms)")
    for key in ("pages", "uploads"):
        if key in result:
            r = result[key]
            print(f"         {key:<7} n={r['n']} statuses {r['statuses']} mean {r['mean_mb']} MB "
                  f"p50 {r['p50_s']} s max {r['max_s']} s" + (f" errors {r['errors']}" if r["errors"] else ""))


async def main(args: argparse.Namespace) -> None:
    work = Path(tempfile.mkdtemp(prefix="heavy-bench-"))
    port = rb.free_port()
    log = work / "gateway.log"
    env = {"GATEWAY_DB": str(work / "heavy.sqlite"), "GATEWAY_SECURITY": "off", "GATEWAY_PORT": str(port),
           "GATEWAY_LOG_LEVEL": "warning"}
    if args.pythonpath:  # another checkout, for before/after figures (run from it: -m puts the cwd first)
        env["PYTHONPATH"] = args.pythonpath
        with open(log, "ab") as out:
            proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve"], stdout=out,
                                    stderr=subprocess.STDOUT, cwd=args.pythonpath, env={**os.environ, **env})
    else:
        proc = rb.start([sys.executable, "-m", "gateway.cli", "serve"], log, env)
    results: list[dict] = []
    try:
        await rb.wait_ready(proc, port, "/fhir/metadata", log)
        body = large_patient(int(args.size_mb * 1e6), args.shape)
        print(f"loading {args.patients} Patients of {len(body) / 1e6:.1f} MB ({args.shape}) …", flush=True)
        conn = loadgen.Connection(HOST, port)
        request = loadgen.encode_request("POST", "/fhir/Patient", f"{HOST}:{port}",
                                         {"Content-Type": "application/fhir+json", "Prefer": "return=minimal"}, body)
        for _ in range(args.patients):
            status, _, resp = await conn.request(request)
            if status != 201:
                raise SystemExit(f"load: HTTP {status}: {resp[:300]!r}")
        conn.close()
        idle = memory_kb(proc.pid)
        print(f"idle RSS {idle['VmRSS'] / 1024:.1f} MB (anon {idle['RssAnon'] / 1024:.1f})  "
              f"settings: {', '.join(f'{k}={v}' for k, v in os.environ.items() if k.startswith('GATEWAY_')) or 'defaults'}")
        for name in args.phases.split(","):
            result = await phase(name, port, proc.pid, args, body)
            results.append(result)
            show(result, args.rss_bound_mb)
    finally:
        rb.stop(proc)
        for store in work.glob("*.sqlite*"):  # gigabytes after a run: the log stays
            store.unlink()
    problems = rb.server_problems(log)
    print(f"server log: {len(problems)} error lines" + "".join(f"\n  {line}" for line in problems[:5]))
    summary = {"when": datetime.now().isoformat(timespec="seconds"), "commit": rb.git_state(), "args": vars(args),
               "idle_rss_mb": round(idle["VmRSS"] / 1024, 1), "phases": results}
    print("JSON " + json.dumps(summary))
    out = HERE / "results" / f"heavy-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(summary, indent=1))


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--patients", type=int, default=24)
    ap.add_argument("--size-mb", type=float, default=9.5)
    ap.add_argument("--shape", choices=("strings", "elements"), default="strings")
    ap.add_argument("--searchers", type=int, default=16)
    ap.add_argument("--uploaders", type=int, default=8)
    ap.add_argument("--duration", type=float, default=30)
    ap.add_argument("--phases", default="pages,uploads,both")
    ap.add_argument("--rss-bound-mb", type=float, default=1024)
    ap.add_argument("--pythonpath", help="run the gateway from another checkout (before/after figures)")
    return ap.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
