"""Server-side cost of one read, in-process: µs per request with security off and on.

``auth_bench.py`` measures what clients see over HTTP; on a shared 2-core VM its ratios move by
±10 points between rounds. This one calls the ASGI app directly (no sockets, no uvicorn), on a
store ``auth_bench.py`` loaded (``--db``), so the per-request cost of tokens, the access
decision and the access log can be compared between commits to within a few µs.

    python bench/auth_bench.py --db /tmp/auth.sqlite --rounds 1   # once, to load the store
    python bench/read_path_bench.py --db /tmp/auth.sqlite

Each configuration runs ``--requests`` reads of random granted Tasks, ``--rounds`` times,
interleaved; the best round counts (the least disturbed by other work on the machine). The
access-log writer runs as in the server, so its batches are part of the "on" figures.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from auth_bench import ORG_A, ORG_B, Credentials  # noqa: E402

BASE = "http://bench.local/fhir"


class Asgi:
    """Calls an ASGI app the way uvicorn does, for GET requests without a body."""

    def __init__(self, app):
        self.app = app

    async def get(self, path: str, token: str | None) -> int:
        headers = [(b"host", b"bench.local"), (b"accept", b"application/fhir+json")]
        if token:
            headers.append((b"authorization", f"Bearer {token}".encode()))
        raw, _, query = path.partition("?")
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
                 "path": raw, "raw_path": raw.encode(), "query_string": query.encode(), "root_path": "",
                 "headers": headers, "client": ("127.0.0.1", 1), "server": ("bench.local", 80)}
        status = 0

        async def receive():
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message):
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await self.app(scope, receive, send)
        return status


async def lifespan(app):
    """Start the app's lifespan; returns a function that shuts it down."""
    queue: asyncio.Queue = asyncio.Queue()
    started, done = asyncio.Event(), asyncio.Event()
    await queue.put({"type": "lifespan.startup"})

    async def receive():
        return await queue.get()

    async def send(message):
        if message["type"].startswith("lifespan.startup"):
            started.set()
        elif message["type"].startswith("lifespan.shutdown"):
            done.set()

    task = asyncio.create_task(app({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send))
    await started.wait()

    async def stop():
        await queue.put({"type": "lifespan.shutdown"})
        await done.wait()
        await task
    return stop


async def token_for(client, creds: Credentials) -> str:
    from urllib.parse import urlencode

    from gateway.auth.keys import client_assertion
    form = urlencode({"grant_type": "client_credentials", "scope": "system/*.cruds",
                      "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                      "client_assertion": client_assertion(creds.client_id, creds.pem, f"{BASE}/auth/token",
                                                           creds.kid)})
    r = await client.post(f"{BASE}/auth/token", content=form,
                          headers={"content-type": "application/x-www-form-urlencoded"})
    r.raise_for_status()
    return r.json()["access_token"]


async def measure(db: Path, security: str, paths: list[str], who: str | None, args) -> list[float]:
    import httpx

    os.environ.update(GATEWAY_DB=str(db), GATEWAY_SECURITY=security, GATEWAY_BASE_URL=BASE)
    from gateway.app import create_app
    from gateway.settings import Settings
    app = create_app(Settings.from_env())
    stop = await lifespan(app)
    try:
        token = None
        if who is not None:
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app)) as client:
                token = await token_for(client, Credentials(db, ORG_A if who == "A" else ORG_B))
        asgi, rng = Asgi(app), random.Random(args.seed)
        for path in rng.sample(paths, min(500, len(paths))):  # warm the page cache and code paths
            assert await asgi.get(path, token) == 200
        rounds = []
        for _ in range(args.rounds):
            chosen = [rng.choice(paths) for _ in range(args.requests)]
            start = time.process_time()
            for path in chosen:
                await asgi.get(path, token)
                await asyncio.sleep(0)  # let the loop run, as between requests in a server (the log's batches)
            rounds.append((time.process_time() - start) / args.requests * 1e6)
        return rounds
    finally:
        await stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True, help="a store loaded by auth_bench.py (with its .auth.json)")
    parser.add_argument("--requests", type=int, default=20000, help="reads per round (default 20000)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per configuration (default 5)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    db = Path(args.db).resolve()
    manifest = json.loads(db.with_name(db.name + ".auth.json").read_text())
    paths = [f"/fhir/Task/{t}" for ts in manifest["granted"].values() for t in ts]
    configs = (("off", "off", None), ("on A (author)", "on", "A"), ("on B (grant)", "on", "B"))
    figures = {name: asyncio.run(measure(db, security, paths, who, args)) for name, security, who in configs}
    off = min(figures["off"])
    print(f"{'configuration':<16} {'best µs/read':>12} {'rounds (µs)':<40} {'+µs vs off':>10} {'off/on':>7}")
    for name, rounds in figures.items():
        best = min(rounds)
        print(f"{name:<16} {best:>12.1f} {' '.join(f'{r:.1f}' for r in rounds):<40} {best - off:>10.1f} "
              f"{off / best:>7.0%}")


if __name__ == "__main__":
    main()
