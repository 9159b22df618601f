"""A small MLLP client for tests, the bench and the demo: frames a message, waits for one
framed reply. Not a production sender (no reconnect, no resend): that is the hospital's
interface engine's job."""
from __future__ import annotations

import asyncio
import ssl as ssl_module
from collections.abc import Iterable

from gateway.mllp.framing import Deframer, frame

READ_CHUNK = 64 * 1024


class MllpClient:
    def __init__(self, host: str, port: int, ssl: ssl_module.SSLContext | None = None, timeout: float = 30.0,
                 max_reply_bytes: int = 1_048_576) -> None:
        self.host, self.port, self.ssl, self.timeout = host, port, ssl, timeout
        self._deframer = Deframer(max_reply_bytes)
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def connect(self) -> None:
        if self._writer is None:
            async with asyncio.timeout(self.timeout):
                self._reader, self._writer = await asyncio.open_connection(self.host, self.port, ssl=self.ssl)

    async def send(self, message: bytes) -> bytes:
        """Send one message, return the reply message (without framing)."""
        await self.connect()
        assert self._writer is not None
        async with asyncio.timeout(self.timeout):
            self._writer.write(frame(message))
            await self._writer.drain()
            return await self._reply()

    async def send_many(self, messages: Iterable[bytes]) -> list[bytes]:
        """Send messages back to back (pipelined) and return their replies in order. Writing
        and reading run side by side, so neither side's buffers can fill up and stall both."""
        await self.connect()
        assert self._writer is not None
        writer, batch = self._writer, list(messages)

        async def write_all() -> None:
            for message in batch:
                writer.write(frame(message))
                await writer.drain()

        sending = asyncio.create_task(write_all())
        try:
            replies = []
            for _ in batch:
                async with asyncio.timeout(self.timeout):
                    replies.append(await self._reply())
            await sending
            return replies
        finally:
            sending.cancel()
            if sending.done() and not sending.cancelled():
                sending.exception()  # seen: the reply side already raised what matters

    async def _reply(self) -> bytes:
        assert self._reader is not None
        while (reply := self._deframer.next_message()) is None:
            data = await self._reader.read(READ_CHUNK)
            if not data:
                raise ConnectionError("the MLLP server closed the connection before replying")
            self._deframer.feed(data)
        return reply

    async def close(self) -> None:
        if self._writer is not None:
            writer, self._writer, self._reader = self._writer, None, None
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), self.timeout)
            except (OSError, TimeoutError):
                pass  # the server went first, or the TLS shutdown was refused: closed either way

    async def __aenter__(self) -> "MllpClient":
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
