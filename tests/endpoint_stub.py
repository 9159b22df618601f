"""Real TCP endpoints on 127.0.0.1 for tests of the network sender, each behaving one way, and a
stand-in DNS resolver answering what a test needs (a rebinding DNS server, say)."""
from __future__ import annotations

import asyncio
import socket

from aiohttp.abc import AbstractResolver

MODES = ("ok", "error", "silent", "garbage", "closed")


class Endpoint:
    """``ok``: answers HTTP 200 (keep-alive); ``error``: HTTP 500; ``silent``: accepts and never
    answers; ``garbage``: answers something that is not HTTP and hangs up; ``closed``: nothing
    listens (connection refused). Counts connections and requests."""

    def __init__(self, mode: str = "ok"):
        assert mode in MODES
        self.mode = mode
        self.connections = 0
        self.requests = 0
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def url(self, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}/hook"

    async def __aenter__(self) -> "Endpoint":
        if self.mode == "closed":
            with socket.socket() as s:  # a port nobody listens on (bound, then let go)
                s.bind(("127.0.0.1", 0))
                self.port = s.getsockname()[1]
        else:
            self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
            self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc) -> None:
        if self._server is not None:
            self._server.close()
            for w in list(self._writers):
                w.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        try:
            if self.mode == "silent":
                await reader.read()  # until the sender gives up and hangs up
                return
            if self.mode == "garbage":
                writer.write(b"SSH-2.0-OpenSSH_9.6\r\n")
                await writer.drain()
                return
            while True:  # one request after another on the same connection
                head = await reader.readuntil(b"\r\n\r\n")
                length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                               if line.lower().startswith(b"content-length:")), 0)
                await reader.readexactly(length)
                self.requests += 1
                status = b"200 OK" if self.mode == "ok" else b"500 Internal Server Error"
                writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()


class StubResolver(AbstractResolver):
    """Answers ``answers[host]``: a list of addresses, or a list of such lists given out one per
    lookup (the last one repeated), as a rebinding DNS server does. Unknown hosts: no address."""

    def __init__(self, answers: dict[str, list]):
        self.answers = answers
        self.lookups: list[str] = []

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[dict]:
        self.lookups.append(host)
        answer = self.answers.get(host)
        if not answer:
            raise OSError(None, f"{host}: no address")
        if isinstance(answer[0], list):
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        return [{"hostname": host, "host": a, "port": port,
                 "family": socket.AF_INET6 if ":" in a else socket.AF_INET, "proto": 0,
                 "flags": socket.AI_NUMERICHOST} for a in answer]

    async def close(self) -> None:
        pass
