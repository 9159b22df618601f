"""Slow clients against `gateway serve` on its DEFAULT limits (issue 13 point 5).

One `gateway serve` (fresh store, default GATEWAY_HEADER_TIMEOUT / BODY_TIMEOUT /
MAX_CONNECTIONS); then, from this process:
- 200 slowloris connections, each sending a request head one byte every 2 s;
- 50 slow uploads: an authenticated POST declaring a 100 kB body, sending one byte every 2 s
  (half of them nothing at all);
- a normal client doing GET /fhir/metadata every 0.25 s throughout.
Prints when the attackers were dropped (seconds after they connected) and what they got, and the
normal client's latency (p50/p99/max) and errors while the attack ran. Loopback only; bounded
in time (--duration, default 80 s); exits 0.

    python bench/slow_clients_bench.py [--duration 80] [--server-checkout DIR]
"""
from __future__ import annotations

import argparse
import os
import selectors
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from conftest import token_over_http  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=float, default=80.0)
    ap.add_argument("--slowloris", type=int, default=200)
    ap.add_argument("--uploads", type=int, default=50)
    ap.add_argument("--server-checkout", help="run `gateway serve` from another checkout (before/after figures)")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="slow-bench-")
    db, port = os.path.join(tmp, "g.sqlite"), free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")} | {"GATEWAY_DB": db,
                                                                                    "GATEWAY_LOG_LEVEL": "warning"}
    if args.server_checkout:
        env["PYTHONPATH"] = args.server_checkout
    server = subprocess.Popen([sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=args.server_checkout)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/fhir/metadata", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise SystemExit("gateway serve did not start")
                time.sleep(0.1)
        token = token_over_http(base, db)
        run(base, token, args)
    finally:
        server.terminate()
        server.wait(15)


def run(base: str, token: str, args) -> None:
    port = int(base.rsplit(":", 1)[1])
    host = f"127.0.0.1:{port}".encode()
    sel = selectors.DefaultSelector()
    start = time.monotonic()
    conns: dict[socket.socket, dict] = {}
    for i in range(args.slowloris + args.uploads):
        s = socket.create_connection(("127.0.0.1", port))
        s.setblocking(False)
        if i < args.slowloris:
            pending = b"GET /fhir/metadata HTTP/1.1\r\nHost: " + host + b"\r\n" + b"X-Slow: " + b"a" * 10_000
            kind = "slowloris"
        else:
            s.sendall(b"POST /fhir/Patient HTTP/1.1\r\nHost: " + host + b"\r\nContent-Type: application/fhir+json"
                      b"\r\nAuthorization: Bearer " + token.encode() + b"\r\nContent-Length: 100000\r\n\r\n")
            pending = b" " * 100_000 if i % 2 else b""
            kind = "upload"
        conns[s] = {"kind": kind, "pending": pending, "opened": time.monotonic(), "closed": None, "got": b""}
        sel.register(s, selectors.EVENT_READ)
    latencies, errors, next_drip, next_probe = [], 0, start, start
    with httpx.Client(base_url=base, timeout=10) as normal:
        while time.monotonic() - start < args.duration:
            now = time.monotonic()
            if now >= next_drip:
                for s, c in conns.items():
                    if c["closed"] is None and c["pending"]:
                        try:
                            s.send(c["pending"][:1])
                            c["pending"] = c["pending"][1:]
                        except OSError:
                            pass
                next_drip = now + 2.0
            if now >= next_probe:
                t = time.perf_counter()
                try:
                    if normal.get("/fhir/metadata").status_code != 200:
                        errors += 1
                except httpx.HTTPError:
                    errors += 1
                latencies.append((time.perf_counter() - t) * 1000)
                next_probe = now + 0.25
            for key, _ in sel.select(timeout=0.05):
                c = conns[key.fileobj]
                try:
                    chunk = key.fileobj.recv(65536)
                except OSError:
                    chunk = b""
                c["got"] += chunk
                if not chunk:
                    c["closed"] = time.monotonic() - c["opened"]
                    sel.unregister(key.fileobj)
    for kind in ("slowloris", "upload"):
        group = [c for c in conns.values() if c["kind"] == kind]
        closed = sorted(c["closed"] for c in group if c["closed"] is not None)
        statuses: dict[str, int] = {}
        for c in group:
            status = c["got"].split(b" ", 2)[1].decode() if c["got"].startswith(b"HTTP/1.1") else "(none)"
            statuses[status] = statuses.get(status, 0) + 1
        print(f"{kind}: {len(group)} connections, {len(closed)} dropped"
              + (f" after {closed[0]:.1f}-{closed[-1]:.1f} s" if closed else "") + f"; answers {statuses}")
    lat = sorted(latencies)
    print(f"normal client: {len(lat)} GET /fhir/metadata during the attack, errors {errors}, "
          f"p50 {statistics.median(lat):.1f} ms, p99 {lat[int(len(lat) * 0.99) - 1]:.1f} ms, max {lat[-1]:.1f} ms")
    for s in conns:
        s.close()


if __name__ == "__main__":
    main()
