"""REST benchmark: the gateway against a bare FastAPI endpoint, on the same machine, same run.

    python bench/rest_bench.py [--resources 100000] [--duration 10] [--concurrency 32]
                               [--db PATH] [--keep-db]

Measures the bare app's read, then loads a store of --resources resources into a fresh
gateway (or reuses a loaded --db) and measures read, create CarePlan, update with If-Match
and Task?patient&status search. Every figure is also given as a ratio of the bare read
req/s, which factors out the machine. Always exits 0: it measures, it does not judge CI.
See bench/README.md for how to read the output.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import orjson

import dataset
import loadgen
import workloads

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
HOST = "127.0.0.1"
# (workload, kind, threshold): ratio = fraction of bare read req/s; p99 = ceiling in ms.
GOALS = {"read": ("ratio", 0.60), "create": ("ratio", 0.25), "search": ("p99", 20.0)}
ORDER = ("read", "create", "update", "search")
PROBE = "search (1 conn)"  # informational row: unqueued latency of one search
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


async def wait_ready(proc: subprocess.Popen, port: int, path: str, log: Path, timeout: float = 90) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}; log:\n{log.read_text()[-3000:]}")
        conn = loadgen.Connection(HOST, port)
        try:
            status, _, _ = await conn.request(loadgen.encode_request("GET", path, f"{HOST}:{port}"))
            if status == 200:
                return
        except OSError:
            pass
        finally:
            conn.close()
        await asyncio.sleep(0.2)
    raise SystemExit(f"server on port {port} not ready after {timeout} s")


def start(cmd: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=REPO,
                                env={**os.environ, **(env or {})})


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def measure(name: str, port: int, workload, args, pid: int, concurrency: int | None = None) -> dict:
    """Run one workload; add the server's CPU use over exactly the measured window."""
    marks: list[float] = []
    result = await loadgen.run(HOST, port, workload, concurrency or args.concurrency, args.duration, args.warmup,
                               on_window=lambda _: marks.append(cpu_seconds(pid)))
    out = result.summary()
    out["server_cpu"] = round((marks[1] - marks[0]) / args.duration, 2)
    print(f"  {name:<15} {out['rps']:>9,.0f} req/s  p50 {out['p50_ms']:6.2f} ms  p99 {out['p99_ms']:6.2f} ms  "
          f"errors {out['errors']}  cpu server {out['server_cpu']:.2f} client {out['client_cpu']:.2f}", flush=True)
    for sample in result.error_samples:
        print(f"    error sample: {sample}")
    return out


def wrk_check(label: str, url: str, args) -> None:
    """Optional cross-check of the Python client with wrk (C), when installed: one fixed URL."""
    if not shutil.which("wrk"):
        return
    out = subprocess.run(["wrk", "-t1", f"-c{args.concurrency}", f"-d{int(args.duration)}s", "--latency", url],
                         capture_output=True, text=True).stdout
    rps = re.search(r"Requests/sec:\s*([\d.]+)", out)
    p99 = re.search(r"99%\s+(\S+)", out)
    print(f"  wrk {label}: {rps.group(1) if rps else '?'} req/s, p99 {p99.group(1) if p99 else '?'}")


async def owned_tasks(port: int, manifest: dict, concurrency: int, per_conn: int = 8) -> list[list[dict]]:
    """Distinct Tasks for each connection, with their current version and body (one GET each)."""
    ids = [t for tasks in manifest["patients"].values() for t in tasks][: concurrency * per_conn]
    conn, owned = loadgen.Connection(HOST, port), []
    for n in range(concurrency):
        mine = []
        for tid in ids[n * per_conn:(n + 1) * per_conn]:
            status, headers, body = await conn.request(loadgen.encode_request("GET", f"/fhir/Task/{tid}",
                                                                              f"{HOST}:{port}"))
            if status != 200:
                raise SystemExit(f"GET Task/{tid} answered {status} while preparing the update workload")
            mine.append({"id": tid, "version": int(headers[b"etag"].decode().strip('W/"')),
                         "resource": workloads.without_meta(orjson.loads(body))})
        owned.append(mine)
    conn.close()
    return owned


async def store_counts(port: int) -> dict[str, int]:
    conn, counts = loadgen.Connection(HOST, port), {}
    for rtype in ("Patient", "Organization", "Practitioner", "CareTeam", "Encounter", "CarePlan", "Task"):
        _, _, body = await conn.request(loadgen.encode_request(
            "GET", f"/fhir/{rtype}?_summary=count", f"{HOST}:{port}"))
        counts[rtype] = orjson.loads(body).get("total", -1)
    conn.close()
    return counts


def git_state() -> str:
    """Commit of the code under test, marked dirty when gateway/ has uncommitted changes."""
    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()
    return git("rev-parse", "--short", "HEAD") + ("-dirty" if git("status", "--porcelain", "gateway") else "")


def machine() -> dict:
    cpu = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
    return {"nproc": len(os.sched_getaffinity(0)), "cpu": cpu.group(1) if cpu else platform.processor(),
            "python": platform.python_version(), "platform": platform.platform(), "sqlite": sqlite3.sqlite_version,
            "uvloop": getattr(loadgen.uvloop, "__version__", None), "commit": git_state(),
            "sqlite_synchronous": os.environ.get("GATEWAY_SQLITE_SYNCHRONOUS", "FULL (gateway default)")}


def verdict(name: str, fig: dict) -> tuple[str, str]:
    if name not in GOALS:
        return "-", "-" if not fig["errors"] else "ERRORS"
    kind, limit = GOALS[name]
    ok = fig["ratio"] >= limit if kind == "ratio" else fig["p99_ms"] < limit
    goal = f">= {limit:.0%} bare" if kind == "ratio" else f"p99 < {limit:g} ms"
    return goal, ("PASS" if ok else "MISS") + (" +ERRORS" if fig["errors"] else "")


def report(bare: dict, figs: dict, facts: dict) -> list[str]:
    print(f"\n{'workload':<16}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'ratio':>8}{'errors':>8}"
          f"{'srv cpu':>9}{'cli cpu':>9}  {'goal':<16}result")
    print(f"{'bare read':<16}{bare['rps']:>10,.0f}{bare['p50_ms']:>9.2f}{bare['p99_ms']:>9.2f}{1:>8.0%}"
          f"{bare['errors']:>8}{bare['server_cpu']:>9.2f}{bare['client_cpu']:>9.2f}  {'(yardstick)':<16}")
    missed = []
    for name in (*ORDER, PROBE):
        fig = figs[name]
        goal, result = verdict(name, fig)
        fig["goal"], fig["result"] = goal, result
        print(f"{name:<16}{fig['rps']:>10,.0f}{fig['p50_ms']:>9.2f}{fig['p99_ms']:>9.2f}{fig['ratio']:>8.0%}"
              f"{fig['errors']:>8}{fig['server_cpu']:>9.2f}{fig['client_cpu']:>9.2f}  {goal:<16}{result}")
        if result not in ("PASS", "-"):
            missed.append(f"{name}: {result} ({goal}; got {fig['ratio']:.0%} of bare, p99 {fig['p99_ms']:.2f} ms)")
    print(f"\nmachine: {facts['nproc']} cores ({facts['cpu']}), Python {facts['python']}, SQLite {facts['sqlite']}, "
          f"synchronous={facts['sqlite_synchronous']}")
    print("goals missed:\n  " + "\n  ".join(missed) if missed else "all goals met")
    return missed


def server_problems(log: Path) -> list[str]:
    lines = log.read_text(errors="replace").splitlines()
    return [ln for ln in lines if re.search(r"Traceback|ERROR|Exception|CRITICAL", ln)]


async def main(args: argparse.Namespace) -> None:
    facts = machine()
    print(f"machine: nproc={facts['nproc']}  {facts['cpu']}  Python {facts['python']}  SQLite {facts['sqlite']}"
          f"  commit {facts['commit']}")
    print(f"run: duration {args.duration} s (+{args.warmup} s warm-up), concurrency {args.concurrency}", flush=True)
    work = Path(tempfile.mkdtemp(prefix="gateway-bench-"))
    db = Path(args.db).resolve() if args.db else work / "store.sqlite"
    gw_log, bare_log = work / "gateway.log", work / "bare.log"

    # 1. The yardstick, measured alone so nothing else competes for the cores.
    port = free_port()
    bare_proc = start([sys.executable, str(HERE / "bare_app.py"), "--port", str(port)], bare_log)
    try:
        await wait_ready(bare_proc, port, "/fhir/Patient/bare", bare_log)
        print("\nbare FastAPI endpoint:")
        bare = await measure("read", port, workloads.BareRead(f"{HOST}:{port}"), args, bare_proc.pid)
        wrk_check("bare read", f"http://{HOST}:{port}/fhir/Patient/bare", args)
    finally:
        stop(bare_proc)

    # 2. The gateway on a loaded store.
    port = free_port()
    addr = f"{HOST}:{port}"
    manifest = dataset.read_manifest(db) if db.exists() else None
    if db.exists() and manifest is None:
        raise SystemExit(f"{db} exists but has no {dataset.manifest_path(db).name}; use a fresh --db path")
    # The REST core on its own; what authentication, access checks and the access log add is
    # measured by auth_bench.py against this same configuration.
    gw = start([sys.executable, "-m", "gateway", "serve", "--host", HOST, "--port", str(port), "--db", str(db)],
               gw_log, env={"GATEWAY_SECURITY": "off"})
    try:
        await wait_ready(gw, port, "/fhir/metadata", gw_log)
        if manifest is None:
            print(f"\nloading {args.resources:,} resources into {db} (transactions of {args.batch}):", flush=True)
            manifest = await dataset.load(HOST, port, args.resources, args.seed, args.batch)
            dataset.save_manifest(db, manifest)
        else:
            print(f"\nreusing the loaded store {db}")
        load = manifest["load"]
        print(f"load: {load['resources']:,} resources in {load['seconds']:.0f} s = {load['rps']:,.0f} resources/s")
        counts = await store_counts(port)
        size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if not p.name.endswith(".json"))
        print(f"store: {sum(counts.values()):,} resources {counts}, {size / 2**20:,.0f} MiB on disk", flush=True)

        patients = list(manifest["patients"])
        keys = ([f"Patient/{p}" for p in patients] + [f"CarePlan/{c}" for c in manifest["careplans"]]
                + manifest["other"] + [f"Task/{t}" for ts in manifest["patients"].values() for t in ts])
        practitioners = [k for k in manifest["other"] if k.startswith("Practitioner/")]
        print("\ngateway:")
        figs = {"read": await measure("read", port, workloads.Read(addr, keys, args.seed), args, gw.pid)}
        wrk_check("read (one id)", f"http://{addr}/fhir/{keys[-1]}", args)
        figs["create"] = await measure("create", port, workloads.CreateCarePlan(
            addr, manifest["patients"], practitioners, args.seed), args, gw.pid)
        owned = await owned_tasks(port, manifest, args.concurrency)
        figs["update"] = await measure("update", port, workloads.UpdateTask(addr, owned), args, gw.pid)
        figs["search"] = await measure("search", port, workloads.SearchTasks(addr, patients, args.seed), args, gw.pid)
        # Context for the latency goal: one connection, so no queueing behind other requests.
        probe = await measure(PROBE, port, workloads.SearchTasks(addr, patients, args.seed + 1), args, gw.pid, 1)
    finally:
        stop(gw)

    figs[PROBE] = probe
    for fig in figs.values():
        fig["ratio"] = round(fig["rps"] / bare["rps"], 3) if bare["rps"] else 0.0
    missed = report(bare, figs, facts)
    problems = server_problems(gw_log)
    print(f"server log: {len(problems)} error lines" + "".join(f"\n  {p}" for p in problems[:10]))
    if loadgen.Connection.stats.keys() - {"connections"}:
        print(f"client saw: {dict(loadgen.Connection.stats)}")

    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    record = {"timestamp": stamp, "machine": facts, "args": vars(args), "load": load,
              "store": {"resources": sum(counts.values()), "by_type": counts, "bytes": size},
              "bare_read": bare, "gateway": figs, "goals_missed": missed, "server_error_lines": len(problems)}
    line = json.dumps(record, separators=(",", ":"))
    print("\nJSON " + line)
    (HERE / "results").mkdir(exist_ok=True)
    out = HERE / "results" / f"rest-{stamp}.json"
    out.write_text(line + "\n")
    print(f"written to {out.relative_to(REPO)}")
    if args.db or args.keep_db:
        print(f"store kept: {db}  (reuse it with --db {db})")
    if not args.keep_db:
        shutil.rmtree(work, ignore_errors=True)  # the temp store (when no --db) and the server logs
    else:
        print(f"logs kept: {work}")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Gateway REST benchmark against a bare FastAPI endpoint.")
    p.add_argument("--resources", type=int, default=100_000, help="resources to load (at least)")
    p.add_argument("--duration", type=float, default=10.0, help="measured seconds per workload")
    p.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each workload")
    p.add_argument("--concurrency", type=int, default=32, help="keep-alive connections")
    p.add_argument("--db", help="SQLite file; reused if it exists (with its .bench.json), else loaded and kept")
    p.add_argument("--keep-db", action="store_true", help="keep the temp store and server logs")
    p.add_argument("--batch", type=int, default=500, help="entries per transaction Bundle when loading")
    p.add_argument("--seed", type=int, default=1)
    return p.parse_args()


if __name__ == "__main__":
    loop = loadgen.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(main(parse_args()))
