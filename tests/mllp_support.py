"""Helpers for the MLLP tests: synthetic messages, a stub handler that answers a fake ACK carrying
the message's MSH-10, raw connections, and waits on conditions with deadlines (never fixed sleeps:
the tests must pass on a busy machine).

All data is synthetic; 191212121212 is Skatteverket's published test personnummer."""
from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator

from gateway.mllp.framing import Deframer
from gateway.mllp.server import MllpServer

PATIENCE = 60.0  # how long a test waits for a condition: generous, CI machines are busy
PNR, NAME = "191212121212", "Tolvansson"  # must never appear in a log record


def message(control_id: str, padding: int = 0) -> bytes:
    """An ADT^A01 with MSH-10 = control_id (and `padding` bytes of NTE text to make it large)."""
    text = (f"MSH|^~\\&|EHR|SE2321000016-HOSP|GW|SAMVERKAN|20250101120000||ADT^A01|{control_id}|P|2.5\r"
            f"EVN|A01|20250101120000\r"
            f"PID|||{PNR}^^^^PN||{NAME}^Tolvan\r"
            f"PV1||I|AVD12\r")
    if padding:
        text += "NTE|1||" + "x" * padding + "\r"
    return text.encode()


def control_id(msg: bytes) -> str:
    """MSH-10 of a message (or of an ACK), '' if it cannot be read."""
    first = msg.split(b"\r", 1)[0]
    fields = first.split(b"|")
    return fields[9].decode() if first.startswith(b"MSH") and len(fields) > 9 else ""


def ack(of: str, code: str = "AA", text: str = "") -> bytes:
    return (f"MSH|^~\\&|GW|SAMVERKAN|EHR|HOSP|20250101120000||ACK|ACK-{of}|P|2.5\r"
            f"MSA|{code}|{of}|{text}\r").encode()


def acked(reply: bytes) -> tuple[str, str]:
    """(MSA-1, MSA-2) of a fake ACK."""
    msa = reply.split(b"\r")[1].split(b"|")
    return msa[1].decode(), msa[2].decode()


class EchoAck:
    """The stub handler: AA with the message's MSH-10; AR from refuse(). Records what it saw,
    and how many handle() calls ran at once."""

    def __init__(self) -> None:
        self.seen: list[bytes] = []
        self.refused: list[tuple[bytes, str]] = []
        self.active = 0
        self.most_active = 0

    async def handle(self, message: bytes) -> bytes:
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            await self.work(message)
            self.seen.append(message)
            return ack(control_id(message))
        finally:
            self.active -= 1

    async def work(self, message: bytes) -> None:
        """What a subclass does before answering."""

    def refuse(self, partial: bytes, reason: str) -> bytes:
        self.refused.append((partial, reason))
        return ack(control_id(partial), "AR", reason)


@asynccontextmanager
async def serving(handler: Any, **options: Any) -> AsyncIterator[MllpServer]:
    server = MllpServer(handler, host="127.0.0.1", port=0, **options)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(timeout=5)


async def until(predicate: Callable[[], bool], what: str, timeout: float = PATIENCE) -> None:
    """Wait for a condition, polling; fail after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.01)


async def connect(server: MllpServer) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(*server.address)


async def read_replies(reader: asyncio.StreamReader, count: int) -> list[bytes]:
    """`count` framed replies from a raw connection."""
    deframer, replies = Deframer(1 << 24), []
    async with asyncio.timeout(PATIENCE):
        while len(replies) < count:
            while (reply := deframer.next_message()) is not None:
                replies.append(reply)
            if len(replies) < count:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError(f"closed after {len(replies)} of {count} replies")
                deframer.feed(data)
    return replies


async def read_to_eof(reader: asyncio.StreamReader) -> bytes:
    """Everything until the server closes the connection (a reset counts as closed)."""
    received = b""
    async with asyncio.timeout(PATIENCE):
        while True:
            try:
                data = await reader.read(65536)
            except ConnectionResetError:
                return received
            if not data:
                return received
            received += data
