"""How much memory requests may hold: per response, and all together.

A search page was bounded in entries (``_count``) but not in bytes, and a resource may be
10 MiB: one ``GET Patient?_count=50`` built a 465 MB response, and sixteen connections of
mixed load took the process to 11 GB and an OOM kill. Two bounds now hold:

- **per response** (``GATEWAY_MAX_PAGE_BYTES``): the stored bytes one response may carry.
  A search or history page ends early when the next resource would not fit (its ``next``
  link has the rest); the entries of a batch share it. One resource larger than the limit
  is still served, alone;
- **all together** (``GATEWAY_MAX_INFLIGHT_BYTES``): request bodies and response pages take
  their size from one ``MemoryBudget`` before they are read, and give it back when the
  response has been sent. When it is spent, requests queue (first come, first served) for
  at most ``GATEWAY_BUSY_TIMEOUT`` seconds, then get 503 with Retry-After: the server sheds
  load instead of running out of memory.

A body is charged as its bytes arrive (a client that declares a large body and sends nothing
holds nothing), and ``BODY_FACTOR`` times its size in all once it is complete: it is then
parsed, and the parsed form of FHIR JSON is several times larger. (Validation, which needs more still, runs
one large body at a time: ``gateway.offload``.) What small requests hold (a few KiB each) is
bounded by the number of connections, not here.
"""
from __future__ import annotations

import asyncio
from collections import deque

from gateway.errors import ServiceUnavailable, TooCostly

BODY_FACTOR = 4  # bytes held per byte of request body: the body, then its parsed form (measured 1.2-6x)
LARGE_BODY = 64 * 1024  # from this size a single resource read is counted too (and a body validated off the loop)
ENTRY_OVERHEAD = 512  # bytes an entry takes besides its resource: fullUrl, search/request parts, objects


class MemoryBudget:
    """A byte-counting semaphore, fair (FIFO), with a bounded wait."""

    def __init__(self, total: int, wait_seconds: float):
        self.total = total
        self.wait_seconds = wait_seconds
        self.held = 0
        self._waiting: deque[tuple[int, asyncio.Future]] = deque()

    async def acquire(self, size: int) -> int:
        """Take ``size`` bytes (at most the whole budget: a larger request runs alone); returns
        what was taken. Raises 503 if it cannot be had within ``wait_seconds``."""
        size = min(size, self.total)
        if not self._waiting and self.held + size <= self.total:
            self.held += size
            return size
        granted = asyncio.get_running_loop().create_future()
        entry = (size, granted)
        self._waiting.append(entry)
        try:
            async with asyncio.timeout(self.wait_seconds):
                await asyncio.shield(granted)  # our giving up must not cancel a grant being made
        except BaseException as exc:
            if granted.done():
                self.release(size)  # granted just as we gave up
            else:
                granted.cancel()
                self._waiting.remove(entry)
                self._grant()  # a large request ahead gave up: smaller ones may fit now
            if isinstance(exc, TimeoutError):
                raise ServiceUnavailable("The server is holding as much request and response data as its memory "
                                         "allows; retry in a moment.", retry_after=2, code="throttled") from None
            raise
        return size

    def release(self, size: int) -> None:
        self.held -= size
        self._grant()

    def _grant(self) -> None:
        while self._waiting:
            size, granted = self._waiting[0]
            if self.held + size > self.total:
                return
            self._waiting.popleft()
            self.held += size
            granted.set_result(None)  # never cancelled while waiting: the waiter shields it

    def reservation(self, page_limit: int) -> "Reservation":
        return Reservation(self, page_limit)


class Reservation:
    """What one request holds: bytes taken from the budget (given back by ``release`` once the
    response is sent), the stored bytes its response carries (bounded by ``page_limit``), and
    the size of its body (large ones are validated off the event loop)."""

    def __init__(self, budget: MemoryBudget | None, page_limit: int):
        self.budget = budget
        self.page_limit = page_limit
        self.held = 0
        self.carried = 0
        self.body_bytes = 0
        self._callbacks: list = []

    async def take(self, size: int) -> None:
        if self.budget is None:
            return
        size = min(size, self.budget.total - self.held)  # one request alone may hold it all, never more
        if size > 0:
            self.held += await self.budget.acquire(size)

    async def take_body(self, size: int) -> None:
        """Bytes of the request body, as they arrive."""
        self.body_bytes += size
        await self.take(size)

    async def take_parsed(self) -> None:
        """The body's parsed form, before it is parsed."""
        await self.take(self.body_bytes * (BODY_FACTOR - 1))

    def room(self) -> int:
        """Stored bytes the response may still carry."""
        return self.page_limit - self.carried

    def fit(self, sizes: list[int]) -> int:
        """How many of these entries (stored sizes, in order) the response can still carry: those
        that fit in ``room()``, but at least one if it carries nothing yet."""
        used, count = 0, 0
        for size in sizes:
            used += size + ENTRY_OVERHEAD
            if used > self.room() and (count or self.carried):
                break
            count += 1
        if sizes and not count:
            raise TooCostly(f"The answers of this request together exceed {self.page_limit} bytes "
                            "(GATEWAY_MAX_PAGE_BYTES); split it into several requests or ask for smaller pages "
                            "(_count).")
        return count

    async def carry(self, sizes: list[int]) -> None:
        """The response will carry entries of these stored sizes: count them and take the memory."""
        total = sum(sizes) + ENTRY_OVERHEAD * len(sizes)
        self.carried += total
        await self.take(total)

    def mark(self) -> tuple[int, int]:
        return self.carried, self.held

    def undo(self, mark: tuple[int, int]) -> None:
        """Forget what was carried and taken since ``mark`` (a page being made smaller)."""
        self.carried = mark[0]
        if self.budget is not None and self.held > mark[1]:
            self.budget.release(self.held - mark[1])
        self.held = min(self.held, mark[1])

    def on_release(self, callback) -> None:
        """Call ``callback`` when the request is done (its response sent)."""
        self._callbacks.append(callback)

    def release(self) -> None:
        if self.budget is not None and self.held:
            self.budget.release(self.held)
        self.held = 0
        callbacks, self._callbacks = self._callbacks, []
        for callback in callbacks:
            callback()
