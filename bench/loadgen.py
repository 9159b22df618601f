"""A small, cheap HTTP/1.1 keep-alive load generator on raw asyncio streams.

Why not httpx/aiohttp: this machine has 2 cores, one goes to the server under test, so the
client must spend as little CPU per request as possible. Requests are pre-encoded bytes,
responses are parsed only as far as the status line, Content-Length (or chunked framing)
and the few headers a workload asks for.

A *workload* is any object with
  ``expected``: set of status codes that count as success,
  ``request(conn) -> bytes``: the full request (head + body) for connection number ``conn``,
  ``response(conn, status, headers, body)``: optional hook (e.g. to track ETags).
Each of ``concurrency`` connections issues its requests back to back (closed loop).
"""
from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

try:  # uvloop makes the client's own event loop cheaper; optional
    import uvloop
except ImportError:  # pragma: no cover
    uvloop = None


def new_event_loop() -> asyncio.AbstractEventLoop:
    return uvloop.new_event_loop() if uvloop else asyncio.new_event_loop()


def encode_request(method: str, path: str, host: str, headers: dict[str, str] | None = None,
                   body: bytes | None = None) -> bytes:
    """A complete HTTP/1.1 request as bytes (Content-Length framing for bodies)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}", "Accept: application/fhir+json"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


class ProtocolError(Exception):
    pass


class Connection:
    """One keep-alive connection; ``request`` sends bytes and returns (status, headers, body)."""

    # Counted across all connections so the runner can report framing it had to cope with.
    stats: Counter = Counter()

    def __init__(self, host: str, port: int):
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 22)
        self.stats["connections"] += 1

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, data: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
        if self.writer is None:
            await self.open()
        self.writer.write(data)  # no drain(): requests are small and the socket buffer is empty
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head[:-4].split(b"\r\n")
        parts = lines[0].split(b" ", 2)
        if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
            raise ProtocolError(f"bad status line {lines[0][:80]!r}")
        status = int(parts[1])
        headers: dict[bytes, bytes] = {}
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            headers[name.strip().lower()] = value.strip()
        length = headers.get(b"content-length")
        if length is not None:
            body = await self.reader.readexactly(int(length)) if length != b"0" else b""
        elif headers.get(b"transfer-encoding", b"").lower() == b"chunked":
            self.stats["chunked responses"] += 1
            body = await self._read_chunked()
        elif status in (204, 304) or 100 <= status < 200:
            body = b""
        else:  # no framing: the body runs to the end of the connection
            self.stats["close-delimited responses"] += 1
            body = await self.reader.read()
            self.close()
            return status, headers, body
        if headers.get(b"connection", b"").lower() == b"close":
            self.stats["server closed connection"] += 1
            self.close()
        return status, headers, body

    async def _read_chunked(self) -> bytes:
        chunks = []
        while True:
            size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
            if size == 0:
                while (await self.reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                    pass
                return b"".join(chunks)
            chunks.append((await self.reader.readexactly(size + 2))[:-2])


@dataclass
class Result:
    count: int = 0  # requests completed inside the measured window
    errors: int = 0  # unexpected status or transport failure, inside the window
    seconds: float = 0.0
    latencies_ns: list[int] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    bytes_in: int = 0
    client_cpu: float = 0.0  # fraction of one core the client used during the window
    error_samples: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.count / self.seconds if self.seconds else 0.0

    def percentile_ms(self, q: float) -> float:
        if not self.latencies_ns:
            return float("nan")
        ordered = sorted(self.latencies_ns)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1e6

    def summary(self) -> dict:
        return {"requests": self.count, "errors": self.errors, "seconds": round(self.seconds, 3),
                "rps": round(self.rps, 1), "p50_ms": round(self.percentile_ms(0.50), 3),
                "p99_ms": round(self.percentile_ms(0.99), 3),
                "mean_response_bytes": round(self.bytes_in / self.count) if self.count else 0,
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "client_cpu": round(self.client_cpu, 2)}


async def run(host: str, port: int, workload, concurrency: int, duration: float, warmup: float,
              on_window=None) -> Result:
    """Warm up for ``warmup`` s (not recorded), then record ``duration`` s of closed-loop load.

    ``on_window(start: bool)`` is called at the start and end of the measured window so the
    caller can sample the server's CPU time over exactly that window.
    """
    result = Result()
    clock = time.perf_counter_ns
    t_measure = clock() + int(warmup * 1e9)
    t_end = t_measure + int(duration * 1e9)
    expected = workload.expected
    hook = getattr(workload, "response", None)
    conns = [Connection(host, port) for _ in range(concurrency)]
    await asyncio.gather(*(c.open() for c in conns))

    async def worker(n: int) -> None:
        conn = conns[n]
        lat = result.latencies_ns
        while True:
            start = clock()
            if start >= t_end:
                return
            data = workload.request(n)
            try:
                status, headers, body = await conn.request(data)
                ok = status in expected
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ProtocolError) as exc:
                conn.close()  # reconnect on the next request
                status, headers, body, ok = 0, {}, b"", False
                if len(result.error_samples) < 5:
                    result.error_samples.append(f"{type(exc).__name__}: {exc}")
            if hook is not None and status:
                hook(n, status, headers, body)
            if start >= t_measure:
                lat.append(clock() - start)
                result.count += 1
                result.statuses[status] += 1
                result.bytes_in += len(body)
                if not ok:
                    result.errors += 1
                    if status and len(result.error_samples) < 5:
                        result.error_samples.append(f"{status}: {body[:300].decode('utf-8', 'replace')}")

    async def window() -> None:  # marks the measured window, off the workers' path
        await asyncio.sleep(max(0.0, (t_measure - clock()) / 1e9))
        cpu0, t0 = time.process_time(), clock()
        if on_window:
            on_window(True)
        await asyncio.sleep(max(0.0, (t_end - clock()) / 1e9))
        if on_window:
            on_window(False)
        result.client_cpu = (time.process_time() - cpu0) / ((clock() - t0) / 1e9)

    await asyncio.gather(window(), *(worker(n) for n in range(concurrency)))
    result.seconds = duration
    for c in conns:
        c.close()
    return result
