"""MLLP benchmark: framed HL7 v2 messages per second through `MllpServer`, on 1 and 8 connections.

    python bench/mllp_bench.py [--duration 10] [--warmup 2] [--connections 1,8]
                               [--handler module:callable] [--messages FILE_OR_DIR]

The server runs in a subprocess of its own (one core, uvloop, as `gateway mllp` runs) with the
handler that ``--handler`` names: a callable taking no arguments that returns a MessageHandler,
imported in the server process (which inherits this environment, so GATEWAY_* settings reach a
real handler). The default, ``mllp_bench:EchoAck``, answers an AA carrying the message's MSH-10
without looking further: it measures the transport alone. The runner (the other core) keeps
each connection busy the way an HL7 sender does: send one message, wait for its ACK, send the
next (closed loop), and checks that every ACK names the message it answers (MSA-2 = MSH-10).

Messages come from ``--messages`` (an ER7 file, or a directory of *.hl7 / *.er7 / *.txt files,
used in turn; segments on lines or separated by CR) or a built-in synthetic ADT^A01; MSH-10 is
replaced per message so that each is new to an idempotent mapping. Always exits 0; see
bench/README.md for how to read the figures.
"""
from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from gateway.mllp.framing import Deframer, frame  # noqa: E402

HOST = "127.0.0.1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
SYNTHETIC_A01 = ("MSH|^~\\&|EHR|SE2321000016-HOSP|GW|SAMVERKAN|20250101120000||ADT^A01^ADT_A01|{id}|P|2.5|||AL|NE\r"
                 "EVN|A01|20250101120000|||123456^Läkare^Lisa\r"
                 "PID|1||191212121212^^^&1.2.752.129.2.1.3.1&ISO^PN||Tolvansson^Tolvan^^^^^L||19121212|M|||"
                 "Testgatan 1^^Halmstad^^30227^SE^H^^1380\r"
                 "PV1|1|I|AVD12^^^SE2321000016-HOSP||||123456^Läkare^Lisa|||MED||||1|||123456^Läkare^Lisa|IP|"
                 "V{id}|||||||||||||||||||||||||20250101120000\r"
                 "PV2|||||||||20250108\r")


# -- the server side ------------------------------------------------------------------------------
class EchoAck:
    """The trivial handler: AA with the message's MSH-10, nothing parsed beyond it."""

    async def handle(self, message: bytes) -> bytes:
        return self._ack(message, b"AA")

    def refuse(self, partial: bytes, reason: str) -> bytes:
        return self._ack(partial, b"AR")

    @staticmethod
    def _ack(message: bytes, code: bytes) -> bytes:
        fields = message.split(b"\r", 1)[0].split(b"|")
        control = fields[9] if len(fields) > 9 else b""
        return (b"MSH|^~\\&|GW|SAMVERKAN|EHR|HOSP|20250101120000||ACK|A" + control + b"|P|2.5\rMSA|" + code + b"|"
                + control + b"\r")


def load_handler(spec: str):
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)()


def serve(args: argparse.Namespace) -> None:
    """The server process: print the port, serve until SIGTERM."""
    from gateway.mllp.lifecycle import run_until_signalled
    from gateway.mllp.server import MllpServer

    server = MllpServer(load_handler(args.handler), host=HOST, port=0, idle_timeout=600)

    async def main() -> None:
        await server.start()
        print(f"READY {server.address[1]}", flush=True)
        await run_until_signalled(server)

    try:
        import uvloop
        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover
        loop_factory = None
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main())


# -- the runner -----------------------------------------------------------------------------------
def templates(path: str | None) -> list[str]:
    if not path:
        return [SYNTHETIC_A01]
    source = Path(path)
    files = sorted(p for p in source.iterdir() if p.suffix in (".hl7", ".er7", ".txt")) if source.is_dir() else [source]
    out = []
    for file in files:
        text = file.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\r").replace("\n", "\r").strip("\r")
        first, _, rest = text.partition("\r")
        fields = first.split("|")
        if not first.startswith("MSH") or len(fields) < 10:
            continue
        fields[9] = "{id}"
        out.append("|".join(fields) + "\r" + rest + "\r")
    if not out:
        raise SystemExit(f"no HL7 v2 message with an MSH segment in {path}")
    return out


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


async def sender(conn: int, port: int, bodies: list[str], window: tuple[float, float], out: dict) -> None:
    reader, writer = await asyncio.open_connection(HOST, port)
    deframer, loop, n = Deframer(1 << 24), asyncio.get_running_loop(), 0
    start, end = window
    try:
        while (now := loop.time()) < end:
            control = f"B{conn}-{n}"
            body = bodies[n % len(bodies)].replace("{id}", control).encode()
            n += 1
            t0 = time.perf_counter_ns()
            writer.write(frame(body))
            while (reply := deframer.next_message()) is None:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("the server closed the connection")
                deframer.feed(data)
            elapsed = time.perf_counter_ns() - t0
            if now >= start:
                out["latencies"].append(elapsed)
                if f"MSA|AA|{control}".encode() not in reply and f"MSA|CA|{control}".encode() not in reply:
                    out["errors"] += 1
                    if out["errors"] <= 3:
                        print(f"  unexpected reply to {control}: {reply[:200]!r}")
    finally:
        writer.close()


async def measure(connections: int, port: int, pid: int, bodies: list[str], args: argparse.Namespace) -> dict:
    loop = asyncio.get_running_loop()
    start = loop.time() + args.warmup
    end = start + args.duration
    out: dict = {"latencies": [], "errors": 0}
    tasks = [asyncio.create_task(sender(c, port, bodies, (start, end), out)) for c in range(connections)]
    await asyncio.sleep(max(0.0, start - loop.time()))
    srv0, cli0 = cpu_seconds(pid), time.process_time()
    await asyncio.sleep(max(0.0, end - loop.time()))
    srv1, cli1 = cpu_seconds(pid), time.process_time()
    await asyncio.gather(*tasks)
    lat = sorted(out["latencies"])
    pick = (lambda q: lat[min(len(lat) - 1, int(q * len(lat)))] / 1e6) if lat else (lambda q: float("nan"))
    return {"connections": connections, "messages": len(lat), "msgs_per_s": len(lat) / args.duration,
            "p50_ms": pick(0.50), "p99_ms": pick(0.99), "mean_ms": statistics.fmean(lat) / 1e6 if lat else None,
            "errors": out["errors"], "srv_cpu": (srv1 - srv0) / args.duration, "cli_cpu": (cli1 - cli0) / args.duration}


def run(args: argparse.Namespace) -> None:
    bodies = templates(args.messages)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", "--handler", args.handler]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        if not line.startswith("READY"):
            raise SystemExit(f"the server did not start (exit {proc.poll()})")
        port = int(line.split()[1])
        try:
            import uvloop
            loop_factory = uvloop.new_event_loop
        except ImportError:  # pragma: no cover
            loop_factory = None
        figures = []
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            for connections in args.connections:
                figures.append(runner.run(measure(connections, port, proc.pid, bodies, args)))
    finally:
        proc.terminate()
        proc.wait(30)
    report(figures, args, len(bodies))


def report(figures: list[dict], args: argparse.Namespace, templates_count: int) -> None:
    print(f"\nhandler {args.handler}; {templates_count} message template(s); {args.duration:g} s per row after "
          f"{args.warmup:g} s warm-up; closed loop (one message in flight per connection)")
    print(f"{'connections':>11} {'msgs/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'srv cpu':>8} {'cli cpu':>8} "
          f"{'srv us/msg':>10}")
    for f in figures:
        f["srv_us_per_msg"] = f["srv_cpu"] / f["msgs_per_s"] * 1e6 if f["msgs_per_s"] else None
        print(f"{f['connections']:>11} {f['msgs_per_s']:>9,.0f} {f['p50_ms']:>8.3f} {f['p99_ms']:>8.3f} "
              f"{f['errors']:>7} {f['srv_cpu']:>8.2f} {f['cli_cpu']:>8.2f} {f['srv_us_per_msg'] or 0:>10.1f}")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    record = {"bench": "mllp", "commit": commit, "handler": args.handler, "duration": args.duration,
              "nproc": len(os.sched_getaffinity(0)), "python": sys.version.split()[0], "figures": figures}
    print("JSON " + json.dumps(record))
    results = HERE / "results"
    results.mkdir(exist_ok=True)
    (results / f"mllp-{datetime.now():%Y%m%d-%H%M%S}.json").write_text(json.dumps(record, indent=1))


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=10.0, help="measured seconds per connection count")
    ap.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds before each")
    ap.add_argument("--connections", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8],
                    help="comma-separated connection counts (default 1,8)")
    ap.add_argument("--handler", default="mllp_bench:EchoAck",
                    help="module:callable returning the MessageHandler (called with no arguments in the server)")
    ap.add_argument("--messages", help="ER7 file or directory of message templates (MSH-10 is replaced)")
    ap.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # the server subprocess
    return ap.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    serve(arguments) if arguments.serve else run(arguments)
