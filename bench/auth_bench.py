"""Security overhead: read and search req/s with authentication and access checks on vs off.

    python bench/auth_bench.py [--size 20000] [--rounds 3] [--duration 10] [--db PATH] [--keep-db]

One store, loaded over HTTP with security on by organisation A (the region), so every resource
has an author: per patient ``dataset.patient_group`` (Patient, CareTeam, CarePlan, Encounters,
10-20 Tasks); for --grant-share of the patients the CareTeam also acts for organisation B (a
municipality) and an opt-in Consent (purpose TREAT) permits B, so B holds a grant for them.
Two fresh gateways then serve that file side by side, only one driven at a time:
  off  GATEWAY_SECURITY=off, requests without a token
  on   the default; with A's token (author path) and with B's token (grant path)
Each round measures every (workload, configuration); the same requests everywhere, about the
granted patients' Tasks only:  read  GET /fhir/Task/{id}
                               search  GET /fhir/Task?patient=Patient/{id}&status=requested
Reported: median req/s, p50/p99, non-200 count and the on/off req/s ratio (goal >= 80 %).
Always exits 0: it measures, it does not judge CI. See bench/README.md.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import asynccontextmanager, closing
from datetime import datetime
from pathlib import Path
from urllib.parse import urlencode

import orjson

import dataset
import loadgen
import rest_bench as rb
from gateway.auth.keys import client_assertion, generate_key
from gateway.auth.registry import ClientRegistry

HERE = Path(__file__).resolve().parent
HOST = rb.HOST
GOAL = 0.80
ORG_A = "SE2321000000-0001"  # HSA-id of "Region Exempel" in dataset.shared_entries
ORG_B = "SE2120000000-0001"  # HSA-id of "Exempels kommun 1" (shared entry 1)
JSON = {"Content-Type": "application/fhir+json"}
TREAT = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "TREAT"}
IRCP = {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ParticipationType", "code": "IRCP"}]}
ROWS = (("read", "off"), ("read", "A"), ("read", "B"), ("search", "off"), ("search", "A"), ("search", "B"))
CALLER = {"off": "- (no token)", "A": "A author", "B": "B grant"}


class Credentials:
    """A client registered for one organisation; tokens come from the token endpoint, as for a real client."""

    def __init__(self, db: Path, org: str):
        pem, jwk = generate_key()
        with closing(ClientRegistry(str(db))) as registry:
            self.client_id = registry.add(f"auth bench {org}", org, {"keys": [jwk]}, "system/*.cruds").client_id
        self.org, self.pem, self.kid = org, pem, jwk["kid"]

    async def token(self, port: int) -> str:
        form = urlencode({"grant_type": "client_credentials", "scope": "system/*.cruds",
                          "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                          "client_assertion": client_assertion(self.client_id, self.pem,
                                                               f"http://{HOST}:{port}/fhir/auth/token", self.kid)})
        status, body = await call(port, "/fhir/auth/token", method="POST", body=form.encode(),
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
        if status != 200:
            raise SystemExit(f"token for {self.org}: HTTP {status}: {body[:300]!r}")
        return orjson.loads(body)["access_token"]


async def call(port: int, path: str, token: str | None = None, method: str = "GET", body: bytes | None = None,
              headers: dict | None = None) -> tuple[int, bytes]:
    """One request on its own connection: (status, body)."""
    headers = {**(headers or {}), **({"Authorization": f"Bearer {token}"} if token else {})}
    conn = loadgen.Connection(HOST, port)
    try:
        status, _, resp = await conn.request(loadgen.encode_request(method, path, f"{HOST}:{port}", headers, body))
    finally:
        conn.close()
    return status, resp


class Get:
    """GET of a random path of a fixed list, optionally with a bearer token; success = 200."""

    expected = frozenset({200})

    def __init__(self, addr: str, paths: list[str], seed: int, token: str | None = None):
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        self._paths = [p.encode() for p in paths]
        self._rng = random.Random(seed)
        self._tail = f" HTTP/1.1\r\nHost: {addr}\r\nAccept: application/fhir+json\r\n{auth}\r\n".encode()

    def request(self, conn: int) -> bytes:
        return b"GET " + self._rng.choice(self._paths) + self._tail


def consent(patient: str, org: str) -> dict:
    """Opt-in (root deny, purpose TREAT) with one nested permit for ``org``."""
    return {"resourceType": "Consent", "status": "active", "patient": {"reference": patient},
            "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                                  "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
            "dateTime": "2024-05-11T10:30:00+02:00",
            "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN"}]},
            "provision": {"type": "deny", "purpose": [TREAT],
                          "provision": [{"type": "permit", "actor": [{"role": IRCP, "reference": {"reference": org}}]}]}}


def group(rng: random.Random, orgs: list[str], practitioners: list[str], share: float) -> tuple[list[dict], bool]:
    """One patient's transaction entries; granted ones also name B in the CareTeam and carry a Consent."""
    entries = dataset.patient_group(rng, orgs, practitioners)
    granted = rng.random() < share
    if granted:
        team = next(e["resource"] for e in entries if e["resource"]["resourceType"] == "CareTeam")
        team["participant"][1]["onBehalfOf"] = {"reference": orgs[1]}  # the nurse acts for B
        entries.append({"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": consent(entries[0]["fullUrl"], orgs[1]),
                        "request": {"method": "POST", "url": "Consent"}})
    return entries, granted


async def post_bundle(port: int, token: str, entries: list[dict]) -> list[str]:
    body = orjson.dumps({"resourceType": "Bundle", "type": "transaction", "entry": entries})
    status, resp = await call(port, "/fhir", token, "POST", body, JSON)
    if status != 200:
        raise SystemExit(f"transaction failed: HTTP {status}: {resp[:1000].decode('utf-8', 'replace')}")
    return ["/".join(e["response"]["location"].split("/")[:2]) for e in orjson.loads(resp)["entry"]]


async def load(port: int, creds: Credentials, args: argparse.Namespace) -> dict:
    """Load at least --size resources as A; the manifest maps patient ids to their Task ids."""
    rng, t0 = random.Random(args.seed), time.perf_counter()
    token, t_token = await creds.token(port), time.monotonic()
    shared = await post_bundle(port, token, dataset.shared_entries(rng))
    orgs, practitioners = shared[:29], shared[29:]
    manifest: dict = {"granted": {}, "other": {}}
    loaded, next_report = len(shared), 10.0
    while loaded < args.size:
        entries, groups = [], []
        while len(entries) < args.batch and loaded + len(entries) < args.size:
            more, granted = group(rng, orgs, practitioners, args.grant_share)
            entries += more
            groups.append((len(more), granted))
        if time.monotonic() - t_token > 200:  # tokens live 300 s by default
            token, t_token = await creds.token(port), time.monotonic()
        ids, pos = await post_bundle(port, token, entries), 0
        for n, granted in groups:
            mine, pos = ids[pos:pos + n], pos + n
            manifest["granted" if granted else "other"][mine[0].split("/")[1]] = [
                r.split("/")[1] for r in mine if r.startswith("Task/")]
        loaded += len(ids)
        if (elapsed := time.perf_counter() - t0) >= next_report or loaded >= args.size:
            next_report = elapsed + 10
            print(f"  loaded {loaded:>8,} / {args.size:,} resources  {loaded / elapsed:6.0f} res/s  {elapsed:5.0f} s",
                  flush=True)
    seconds = time.perf_counter() - t0
    manifest["load"] = {"resources": loaded, "seconds": round(seconds, 1), "rps": round(loaded / seconds, 1)}
    return manifest


@asynccontextmanager
async def gateway(db: Path, log: Path, security: str):
    port = rb.free_port()
    proc = rb.start([sys.executable, "-m", "gateway", "serve", "--host", HOST, "--port", str(port), "--db", str(db)],
                    log, {"GATEWAY_SECURITY": security})
    try:
        await rb.wait_ready(proc, port, "/fhir/metadata", log)
        yield proc, port
    finally:
        rb.stop(proc)


def log_problems(log: Path) -> list[str]:
    """Warnings and errors in a server log, except the expected GATEWAY_SECURITY=off notice."""
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    return [ln for ln in lines if re.search(r"WARNING|ERROR|Traceback|Exception|CRITICAL", ln)
            and "GATEWAY_SECURITY=off" not in ln]


async def checks(port: int, tokens: dict, granted: str, other: str) -> list[str]:
    """The 'on' server enforces access: (caller, Task id of a granted / other patient, expected status)."""
    cases = [(None, granted, 401), ("A", granted, 200), ("A", other, 200), ("B", granted, 200), ("B", other, 404)]
    failed = []
    for who, tid, want in cases:
        status, _ = await call(port, f"/fhir/Task/{tid}", tokens.get(who))
        if status != want:
            kind = "granted" if tid == granted else "ungranted"
            failed.append(f"{who or 'no token'} reading a Task of a {kind} patient: HTTP {status}, expected {want}")
    return failed


def combine(runs: list[dict], offs: list[dict]) -> dict:
    """Medians over the rounds; on/off = median of the per-round ratios (each against the adjacent off run)."""
    med = lambda key: round(statistics.median(r[key] for r in runs), 3)  # noqa: E731
    ratios = [r["rps"] / o["rps"] if o["rps"] else 0.0 for r, o in zip(runs, offs)]
    statuses = sum((Counter(r["statuses"]) for r in runs), Counter())
    return {"rps": med("rps"), "p50_ms": med("p50_ms"), "p99_ms": med("p99_ms"), "server_cpu": med("server_cpu"),
            "client_cpu": med("client_cpu"), "errors": sum(r["errors"] for r in runs), "statuses": dict(statuses),
            "on_off": round(statistics.median(ratios), 3), "on_off_range": [round(min(ratios), 3), round(max(ratios), 3)],
            "runs": runs}


def report(runs: dict, facts: dict) -> tuple[dict, list[str]]:
    print(f"\n{'workload':<9}{'security':<10}{'caller':<14}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'non-200':>9}"
          f"{'srv cpu':>9}{'cli cpu':>9}{'on/off':>8}{'range':>12}  result")
    figs, missed = {}, []
    for work, who in ROWS:
        fig = figs[f"{work} {who}"] = combine(runs[work, who], runs[work, "off"])
        on_off, (lowest, highest) = fig["on_off"], fig["on_off_range"]
        result = "-" if who == "off" else "PASS" if on_off >= GOAL else "MISS"
        if fig["errors"]:
            result += " +NON-200"
        if result.startswith("MISS"):
            missed.append(f"{work} as {CALLER[who]}: {on_off:.0%} of off (goal >= {GOAL:.0%})")
        ratio, spread = ("", "") if who == "off" else (f"{on_off:.0%}", f"{lowest:.0%}-{highest:.0%}")
        print(f"{work:<9}{'off' if who == 'off' else 'on':<10}{CALLER[who]:<14}{fig['rps']:>9,.0f}{fig['p50_ms']:>9.2f}"
              f"{fig['p99_ms']:>9.2f}{fig['errors']:>9}{fig['server_cpu']:>9.2f}{fig['client_cpu']:>9.2f}{ratio:>8}"
              f"{spread:>12}  {result}")
    print(f"\nmachine: {facts['nproc']} cores ({facts['cpu']}), Python {facts['python']}, SQLite {facts['sqlite']}")
    print(f"goal on/off >= {GOAL:.0%}: " + ("met by every workload" if not missed else "MISSED\n  " + "\n  ".join(missed)))
    for name, fig in figs.items():
        if set(fig["statuses"]) - {"200"}:
            print(f"non-200 answers in {name}: {fig['statuses']}")
    busy = [r for rows in runs.values() for r in rows if r["server_cpu"] < 0.9 and r["client_cpu"] < 0.9]
    if busy:  # neither side saturated: something else on the machine took the CPU
        print(f"WARNING: {len(busy)} of {sum(map(len, runs.values()))} runs had server CPU < 0.9 without a busy "
              "client: another process competed for the cores, so those figures understate; rerun on a quiet machine")
    return figs, missed


async def main(args: argparse.Namespace) -> None:
    facts = rb.machine()
    print(f"machine: nproc={facts['nproc']}  {facts['cpu']}  Python {facts['python']}  commit {facts['commit']}")
    print(f"run: {args.rounds} rounds of {args.duration} s (+{args.warmup} s warm-up) per workload, "
          f"concurrency {args.concurrency}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="gateway-auth-bench-"))
    db = Path(args.db).resolve() if args.db else work / "store.sqlite"
    mpath = db.with_name(db.name + ".auth.json")
    if db.exists() and not mpath.exists():
        raise SystemExit(f"{db} exists but has no {mpath.name}; use a fresh --db path")
    if mpath.exists():
        manifest = json.loads(mpath.read_text())
        print(f"\nreusing the loaded store {db}")
    else:
        print(f"\nloading {args.size:,} resources as A ({ORG_A}), security on, into {db}:", flush=True)
        async with gateway(db, work / "load.log", "on") as (_, port):
            manifest = await load(port, Credentials(db, ORG_A), args)
        mpath.write_text(json.dumps(manifest))
    with closing(sqlite3.connect(db)) as conn:  # no server is running now
        grants = dict(conn.execute("SELECT org, COUNT(DISTINCT patient) FROM access_grants GROUP BY org").fetchall())
    granted, other = manifest["granted"], manifest["other"]
    tasks = sum(len(t) for t in granted.values()) + sum(len(t) for t in other.values())
    print(f"store: {manifest['load']['resources']:,} resources (loaded at {manifest['load']['rps']:,.0f} res/s), "
          f"{len(granted) + len(other):,} patients, {tasks:,} Tasks; {len(granted):,} patients granted to B "
          f"(access_grants: patients by org {grants})")
    paths = {"read": [f"/fhir/Task/{t}" for ts in granted.values() for t in ts],
             "search": [f"/fhir/Task?patient=Patient/{p}&status=requested" for p in granted]}
    print(f"measured requests: {len(paths['read']):,} Task ids, {len(paths['search']):,} patients (all granted to B)")

    # Both servers run on the same file for the whole measurement; only one is driven at a time (an idle
    # uvicorn process costs no CPU), so each on-run is compared with an off-run seconds away, not minutes.
    runs: dict = {row: [] for row in ROWS}
    async with gateway(db, work / "off.log", "off") as off, gateway(db, work / "on.log", "on") as on:
        creds = {"A": Credentials(db, ORG_A), "B": Credentials(db, ORG_B)}
        tokens = {who: await c.token(on[1]) for who, c in creds.items()}
        first = lambda patients: next(iter(patients.values()))[0]  # noqa: E731
        problems = [f"on: {f}" for f in await checks(on[1], tokens, first(granted), first(other))]
        if (status := (await call(off[1], paths["read"][0]))[0]) != 200:
            problems.append(f"off: a read without a token answered {status}")
        for rnd in range(args.rounds):
            print(f"\nround {rnd + 1}/{args.rounds}:", flush=True)
            order = ("off", "A", "B")[rnd % 3:] + ("off", "A", "B")[:rnd % 3]  # no configuration always first
            for w in ("read", "search"):
                for who in order:
                    proc, port = off if who == "off" else on
                    token = None if who == "off" else await creds[who].token(port)  # tokens live 300 s
                    runs[w, who].append(await rb.measure(f"{w} {who}", port, Get(f"{HOST}:{port}", paths[w], args.seed,
                                                                                 token), args, proc.pid))
    figs, missed = report(runs, facts)
    print("checks: " + ("security enforced as expected" if not problems else "FAILED\n  " + "\n  ".join(problems)))
    logs = {name: log_problems(work / f"{name}.log") for name in ("load", "off", "on")}
    for name, lines in logs.items():
        print(f"server log ({name}): {len(lines)} warning/error lines" + "".join(f"\n  {ln}" for ln in lines[:10]))

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    record = {"timestamp": stamp, "machine": facts, "args": vars(args), "load": manifest["load"],
              "patients": {"granted": len(granted), "other": len(other)}, "tasks": tasks, "grants": grants,
              "figures": figs, "goal": GOAL, "goals_missed": missed, "check_failures": problems,
              "server_log_lines": {k: len(v) for k, v in logs.items()}}
    line = json.dumps(record, separators=(",", ":"))
    print("\nJSON " + line)
    (out := HERE / "results" / f"auth-{stamp}.json").parent.mkdir(exist_ok=True)
    out.write_text(line + "\n")
    print(f"written to {out.relative_to(HERE.parent)}")
    if args.db or args.keep_db:
        print(f"store kept: {db}  (reuse it with --db {db})")
    if args.keep_db:
        print(f"logs kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Read/search throughput with security on vs off.")
    p.add_argument("--size", type=int, default=20_000, help="resources to load (at least)")
    p.add_argument("--grant-share", type=float, default=0.5, help="share of patients whose data B may see")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per workload")
    p.add_argument("--rounds", type=int, default=3, help="interleaved off/on rounds (median reported)")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each workload")
    p.add_argument("--concurrency", type=int, default=32, help="keep-alive connections")
    p.add_argument("--db", help="SQLite file; reused if it exists (with its .auth.json), else loaded and kept")
    p.add_argument("--keep-db", action="store_true", help="keep the temp store and server logs")
    p.add_argument("--batch", type=int, default=500, help="entries per transaction Bundle when loading")
    p.add_argument("--seed", type=int, default=1)
    return p.parse_args()


if __name__ == "__main__":
    loop = loadgen.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(main(parse_args()))
