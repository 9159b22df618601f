"""MLLP framing: ``0x0B`` message ``0x1C 0x0D``, and nothing else.

Pure (no sockets, no clock), so every boundary case is a unit test, and the server and the
client share one reading of the bytes. What the decoder decides, and why:

- **Bytes before a start block are skipped and counted.** Senders put CR/LF between frames and a
  restarted sender may leave a fragment of garbage; nothing outside a frame can be a message.
- **A frame ends at the first ``0x1C 0x0D``.** A ``0x1C`` not followed by ``0x0D``, or a ``0x0B``
  inside a frame, is part of the message (neither may occur in HL7 v2 text): the handler sees
  it and refuses the message, so the sender gets exactly one reply per frame it sent. Treating a
  second ``0x0B`` as a new start would silently drop the first message and leave the sender
  counting replies that never come.
- **A frame longer than ``max_message_bytes`` raises :class:`FrameTooLarge`** as soon as that is
  certain, whether or not its end has arrived, so the buffer never holds more than the limit
  plus one read. The caller refuses it and closes the connection (see ``server.py`` for why it
  does not resynchronise).
"""
from __future__ import annotations

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"


def frame(message: bytes) -> bytes:
    """One message as it goes on the wire."""
    return START_BLOCK + message + END_BLOCK


class FrameTooLarge(Exception):
    """A frame exceeded the size limit; ``partial`` is its first ``limit`` bytes at most (for
    the refusal, which reads MSH from it)."""

    def __init__(self, partial: bytes, limit: int) -> None:
        super().__init__(f"MLLP frame larger than {limit} bytes")
        self.partial = partial
        self.limit = limit


class Deframer:
    """Turns a byte stream into messages: ``feed`` what arrived, then call ``next_message``
    until it returns None (it needs more bytes).

    The buffer holds only the unread part (``del buf[:n]`` on a bytearray is O(1) from the
    front), and the search for the end block resumes where the last one stopped, so a large
    message arriving in many small reads costs linear time.
    """

    __slots__ = ("limit", "skipped", "_buf", "_in_frame", "_scan")

    def __init__(self, max_message_bytes: int) -> None:
        if max_message_bytes < 1:
            raise ValueError("max_message_bytes must be positive")
        self.limit = max_message_bytes
        self.skipped = 0  # bytes outside any frame, dropped
        self._buf = bytearray()
        self._in_frame = False  # a start block was read; _buf holds the message so far
        self._scan = 0  # where the search for the end block resumes

    def feed(self, data: bytes) -> None:
        self._buf += data

    @property
    def partial_bytes(self) -> int:
        """Bytes of a frame begun but not ended (dropped if the peer goes away now)."""
        return len(self._buf) if self._in_frame else 0

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def next_message(self) -> bytes | None:
        """The next complete message (without framing bytes), or None if more bytes are needed.
        Raises FrameTooLarge for a frame over the limit."""
        buf = self._buf
        if not self._in_frame:
            start = buf.find(START_BLOCK)
            if start < 0:
                self.skipped += len(buf)
                buf.clear()
                return None
            self.skipped += start
            del buf[:start + 1]
            self._in_frame, self._scan = True, 0
        end = buf.find(END_BLOCK, self._scan)
        if end < 0:
            # The last byte may be the 0x1C of an end block whose 0x0D is still on its way.
            if len(buf) > self.limit + 1:
                raise FrameTooLarge(bytes(buf[:self.limit]), self.limit)
            self._scan = max(0, len(buf) - 1)
            return None
        if end > self.limit:
            raise FrameTooLarge(bytes(buf[:self.limit]), self.limit)
        message = bytes(buf[:end])
        del buf[:end + len(END_BLOCK)]
        self._in_frame = False
        return message
