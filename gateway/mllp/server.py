"""The MLLP listener: connections, order, limits and shutdown; nothing about HL7 or FHIR.

A message is handed to a :class:`MessageHandler` as bytes and its reply is written back framed.
What the transport guarantees, and why:

- **One task per connection, one message at a time on it.** The next frame is not handed to the
  handler before the previous reply was written and drained: an HL7 sender waits for each ACK
  (original mode) and an ADT stream is only meaningful in order (A01 before A03). Connections
  are independent, so a slow hospital system does not hold up another.
- **Bounded memory per connection.** asyncio's StreamReader stops reading the socket once
  2 × ``STREAM_LIMIT`` bytes wait in it, and the deframer holds at most ``max_message_bytes``
  plus one read; a sender that does not read its ACKs is dropped after ``idle_timeout``.
- **A frame over ``max_message_bytes`` is refused, then the connection is closed** rather than
  resynchronised at the next start block. Past the limit the frame's end is unknown: if it was a
  lost end block, what follows belongs to messages the sender is still counting replies for,
  and skipping to an end block means reading an unbounded stream the sender chose. Closing
  costs an honest sender one reconnect and a resend (MLLP senders resend what was not ACKed;
  the mapping makes repeats harmless); it leaves a hostile one nothing to keep busy.
- **Idle connections close** after ``idle_timeout`` seconds without a complete frame (a partial
  frame does not count, so trickling bytes keeps nothing open).
- **The handler's bugs stay in the handler**: an exception is answered with
  ``handler.refuse(message, "internal error")`` and the connection goes on.
- **Nothing of a message is logged**, only the peer's address and counts: messages carry
  personnummer. Exceptions are logged by type only, since their text may quote the message.
- **Over ``max_connections``** a new connection is closed at once: with TLS this is after the
  handshake (asyncio completes it before the connection is ours), and handshakes themselves are
  bounded by ``idle_timeout`` (at most 60 s). A refused handshake is not ours to log (asyncio
  logs it at debug); the client sees the TLS alert.
- **stop() is graceful**: the listener closes, connections waiting for input close (a partial
  frame is dropped, nothing of it handled), a message being handled finishes and its reply is
  sent; frames already received behind it are not started (the sender resends them). After
  ``drain_timeout`` what is still running is cancelled.
"""
from __future__ import annotations

import asyncio
import logging
import ssl as ssl_module
from dataclasses import dataclass
from typing import Protocol

from gateway.mllp.framing import Deframer, FrameTooLarge, frame

log = logging.getLogger("gateway.mllp")

READ_CHUNK = 64 * 1024
STREAM_LIMIT = 64 * 1024  # StreamReader pauses the socket at twice this
LINGER_SECONDS = 2.0  # after a last reply: read (and drop) what the peer still sends, then close


class MessageHandler(Protocol):
    async def handle(self, message: bytes) -> bytes:
        """One complete HL7 v2 message (segments separated by \\r, no framing bytes) -> the reply
        message (an ACK), never raises for bad input."""
        ...

    def refuse(self, partial: bytes, reason: str) -> bytes:
        """A reply for a message the transport refuses before handling it (too large; reason
        says why): an AR ACK built from whatever of MSH can be read in `partial` (may be b'')."""
        ...


@dataclass
class MllpStats:
    """Counters since start, no content: what tests wait on, what the bench and the logs report."""

    connections_accepted: int = 0
    connections_refused: int = 0  # over max_connections, or arriving while stopping
    messages: int = 0  # frames handed to the handler and replied to
    handler_errors: int = 0  # handle() raised (answered with a refusal)
    oversize_refused: int = 0
    partial_frames_dropped: int = 0  # peer left, timed out or server stopped mid-frame
    idle_closed: int = 0
    stalled_closed: int = 0  # peer stopped reading its replies
    bytes_skipped: int = 0  # outside any frame (closed connections)


class _Connection:
    __slots__ = ("peer", "reading", "messages")

    def __init__(self, peer: str) -> None:
        self.peer = peer
        self.reading = False  # waiting for bytes: stop() may close it at once
        self.messages = 0


class _Stalled(Exception):
    """The peer did not take a reply within idle_timeout."""


class MllpServer:
    def __init__(self, handler: MessageHandler, host: str = "127.0.0.1", port: int = 2575,
                 max_message_bytes: int = 1_048_576, idle_timeout: float = 300.0,
                 ssl: ssl_module.SSLContext | None = None, max_connections: int = 200,
                 drain_timeout: float = 10.0) -> None:
        if max_message_bytes < 1 or idle_timeout <= 0 or max_connections < 1 or drain_timeout < 0:
            raise ValueError("max_message_bytes, idle_timeout and max_connections must be positive, "
                             "drain_timeout not negative")
        self.handler = handler
        self.host, self.port = host, port
        self.max_message_bytes = max_message_bytes
        self.idle_timeout = idle_timeout
        self.ssl = ssl
        self.max_connections = max_connections
        self.drain_timeout = drain_timeout
        self.stats = MllpStats()
        self._server: asyncio.Server | None = None
        self._connections: dict[asyncio.Task[None], _Connection] = {}
        self._stopping = False
        self._stopped = asyncio.Event()

    # -- life cycle ----------------------------------------------------------------------------
    async def start(self) -> None:
        """Bind and listen (port 0: a free port, see ``address``)."""
        if self._server is not None or self._stopping:
            raise RuntimeError("MllpServer already started (a server is started once)")
        self._server = await asyncio.start_server(
            self._accept, self.host, self.port, ssl=self.ssl, limit=STREAM_LIMIT,
            ssl_handshake_timeout=min(self.idle_timeout, 60.0) if self.ssl else None)
        host, port = self.address
        if self.ssl is None:
            transport = "plain TCP"
        elif self.ssl.verify_mode == ssl_module.CERT_REQUIRED:
            transport = "TLS, client certificates required"
        else:
            transport = "TLS, client certificates NOT required"
        log.info("MLLP listening on %s:%d (%s)", host, port, transport)

    @property
    def address(self) -> tuple[str, int]:
        """The bound (host, port)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("MllpServer is not listening")
        host, port = self._server.sockets[0].getsockname()[:2]
        return host, port

    @property
    def listening(self) -> bool:
        """Started and not stopping."""
        return self._server is not None and not self._stopping

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    async def serve_forever(self) -> None:
        """Serve until stop() (starting first if needed); cancelling it stops gracefully."""
        if self._server is None:
            await self.start()
        try:
            await self._stopped.wait()
        except asyncio.CancelledError:
            await self.stop()
            raise

    async def stop(self, timeout: float | None = None) -> None:
        """Stop accepting, let messages being handled finish and their replies go out, close
        every connection; cancel what still runs after ``timeout`` (default drain_timeout)."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        if self._server is not None:
            self._server.close()  # no wait_closed(): from 3.12 it waits for every transport
        for task, conn in list(self._connections.items()):
            if conn.reading:
                task.cancel()
        busy = set(self._connections)
        if busy:
            _, late = await asyncio.wait(busy, timeout=self.drain_timeout if timeout is None else timeout)
            if late:
                log.warning("MLLP stop: %d connection(s) still busy after the drain timeout were cut off", len(late))
                for task in late:
                    task.cancel()
                await asyncio.wait(late, timeout=LINGER_SECONDS)
        log.info("MLLP listener stopped")
        self._stopped.set()

    # -- connections ---------------------------------------------------------------------------
    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer(writer)
        if self._stopping or len(self._connections) >= self.max_connections:
            self.stats.connections_refused += 1
            if self._stopping:
                log.info("refused an MLLP connection from %s: the listener is stopping", peer)
            else:
                log.warning("refused an MLLP connection from %s: %d open, the bound is %d", peer,
                            len(self._connections), self.max_connections)
            writer.close()
            return
        self.stats.connections_accepted += 1
        conn = _Connection(peer)
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer, conn))
        self._connections[task] = conn
        task.add_done_callback(self._forget)

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._connections.pop(task, None)
        if not task.cancelled() and task.exception() is not None:  # a bug here; the listener goes on
            log.error("MLLP connection task failed: %s", type(task.exception()).__name__)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, conn: _Connection) -> None:
        loop = asyncio.get_running_loop()
        deframer = Deframer(self.max_message_bytes)
        deadline = loop.time() + self.idle_timeout
        linger, how, refused_partial = False, "closed by the peer", False
        log.debug("MLLP connection from %s", conn.peer)
        try:
            while True:
                try:
                    message = deframer.next_message()
                except FrameTooLarge as too_large:
                    refused_partial = True  # answered, not silently dropped
                    await self._refuse_oversize(writer, conn, too_large)
                    linger, how = True, "refused a frame over the size limit"
                    return
                if message is None:
                    if self._stopping:
                        how = "listener stopping"
                        return
                    conn.reading = True
                    try:
                        async with asyncio.timeout_at(deadline):
                            data = await reader.read(READ_CHUNK)
                    finally:
                        conn.reading = False
                    if not data:
                        return
                    deframer.feed(data)
                    continue
                reply = await self._handle(message, conn)
                if reply is None:
                    how = "no reply could be built"
                    return
                await self._send(writer, reply)
                conn.messages += 1
                self.stats.messages += 1
                deadline = loop.time() + self.idle_timeout
                if self._stopping:
                    linger, how = True, "listener stopping"
                    return
        except TimeoutError:
            self.stats.idle_closed += 1
            how = f"idle for {self.idle_timeout:g}s without a complete frame"
        except _Stalled:
            self.stats.stalled_closed += 1
            how = f"peer took no reply for {self.idle_timeout:g}s"
            writer.transport.abort()  # close() would wait for a buffer nobody reads
        except asyncio.CancelledError:
            how = "listener stopping"
            raise
        except OSError as exc:  # reset, broken pipe, TLS errors (ssl.SSLError is an OSError)
            how = f"connection error {type(exc).__name__}"
        finally:
            if deframer.partial_bytes and not refused_partial:
                self.stats.partial_frames_dropped += 1
                how += f"; dropped a partial frame of {deframer.partial_bytes} bytes, nothing of it handled"
            self.stats.bytes_skipped += deframer.skipped
            if linger and not writer.transport.is_closing():
                await self._linger_close(reader, writer)
            else:
                writer.close()
            log.info("MLLP connection from %s closed (%s): %d message(s), %d byte(s) outside frames skipped",
                     conn.peer, how, conn.messages, deframer.skipped)

    async def _handle(self, message: bytes, conn: _Connection) -> bytes | None:
        try:
            reply = await self.handler.handle(message)
            if not isinstance(reply, (bytes, bytearray)):
                raise TypeError("handle() returned no bytes")
            return reply
        except Exception as exc:  # a bug in the handler: answer, keep the connection
            self.stats.handler_errors += 1
            log.error("MLLP handler raised %s on a message from %s; replying with a refusal",
                      type(exc).__name__, conn.peer)
            return self._refusal(message, "internal error", conn)

    def _refusal(self, partial: bytes, reason: str, conn: _Connection) -> bytes | None:
        try:
            reply = self.handler.refuse(partial, reason)
            if not isinstance(reply, (bytes, bytearray)):
                raise TypeError("refuse() returned no bytes")
            return reply
        except Exception as exc:
            log.error("MLLP handler's refuse() raised %s for a message from %s; closing without a reply",
                      type(exc).__name__, conn.peer)
            return None

    async def _send(self, writer: asyncio.StreamWriter, reply: bytes) -> None:
        writer.write(frame(reply))
        try:
            async with asyncio.timeout(self.idle_timeout):
                await writer.drain()
        except TimeoutError:
            raise _Stalled from None

    async def _refuse_oversize(self, writer: asyncio.StreamWriter, conn: _Connection, exc: FrameTooLarge) -> None:
        self.stats.oversize_refused += 1
        log.warning("refused an MLLP frame over %d bytes from %s; closing the connection", exc.limit, conn.peer)
        reply = self._refusal(exc.partial, f"message larger than {exc.limit} bytes, the most this listener "
                                           "accepts", conn)
        if reply is not None:
            await self._send(writer, reply)

    @staticmethod
    async def _linger_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Close after a last reply without losing it: closing a socket with unread input makes
        the kernel send RST, which can discard the reply still on its way. So: end our side
        (FIN after the reply), read and drop what the peer still sends, for a bounded time."""
        try:
            if writer.can_write_eof():
                writer.write_eof()
            async with asyncio.timeout(LINGER_SECONDS):
                while await reader.read(READ_CHUNK):
                    pass
        except (TimeoutError, OSError):
            pass
        finally:
            writer.close()


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    if isinstance(peer, tuple) and len(peer) >= 2:
        return f"[{peer[0]}]:{peer[1]}" if ":" in str(peer[0]) else f"{peer[0]}:{peer[1]}"
    return str(peer)
