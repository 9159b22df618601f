"""Heavy work of large requests off the event loop, one at a time.

While 8 clients uploaded ~9.5 MB bodies, a ``/metadata`` probe took up to 1.8 s: parsing and
validating each body (``canonical.parse_json``, ``FhirCore.prepare``: fhir.resources, our
invariants and profiles, index extraction) ran on the event loop, a quarter of a second or more
each (seconds for a body of many small elements), and everything else waited.

Requests whose body is ``LARGE_BODY`` (64 KiB) or more now parse and prepare on a worker
thread. Smaller ones (almost all: a Task is ~2 KB and prepares in about a millisecond) stay on
the loop, where a hop to a thread would cost more than it saves. There is **one** worker, and
``ADMITTED`` large requests at a time get past reading their body (``admit``); the others wait
in line holding only their bytes:

- the work is pure Python and holds the GIL, so more threads would not add throughput on two
  cores, only make the loop wait longer for its turn; with one, the loop gets the GIL back
  within the interpreter's switch interval (5 ms) whenever it has work;
- a parsed large body is a big graph of objects the garbage collector walks at every full
  collection, which holds the GIL: with eight such bodies parsed and waiting, collections
  took 80-200 ms (measured) and stalled the loop as much. Bytes are not walked; so only the
  admitted requests hold their body parsed;
- large bodies are then expanded (parsed, validated) a few at a time, which bounds their
  memory beyond what ``gateway.budget`` counts for them.

Thread safety: the worker runs ``FhirCore.prepare`` (and ``parse_json``, ``Validator.issues``)
while the loop runs the same for small bodies. They share only read-only state — compiled
profiles, SearchParameter expressions, terminology — plus caches filled idempotently
(``functools.lru_cache``, the terminology's expansions: a race computes a value twice).
fhirpathpy resets module-level evaluation constants (``now()``, ``today()``) at each
evaluation: concurrent evaluations may see each other's ``now``, which none of our expressions
use. Each call works on its own resource dict.
"""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from gateway.budget import LARGE_BODY, Reservation
from gateway.errors import ServiceUnavailable

ADMITTED = 2  # large requests past their body at a time: one prepares while the other is written


class Offload:
    def __init__(self, wait_seconds: float = 5.0) -> None:
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="large-body")
        self._admitted = asyncio.Semaphore(ADMITTED)
        self.wait_seconds = wait_seconds

    async def admit(self, memory: Reservation) -> None:
        """Let a request with a large body go on (parse, validate, write), in turn; it leaves when
        ``memory`` is released (its response sent). 503 if its turn does not come in time."""
        try:
            async with asyncio.timeout(self.wait_seconds):
                await self._admitted.acquire()
        except TimeoutError:
            raise ServiceUnavailable("The server is processing as many large request bodies as it can; retry in a "
                                     "moment.", retry_after=2, code="throttled") from None
        memory.on_release(self._admitted.release)

    async def run(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the worker; cancelling the caller drops it if it has not started."""
        return await asyncio.get_running_loop().run_in_executor(self._worker, fn, *args)

    def close(self) -> None:
        self._worker.shutdown(wait=False, cancel_futures=True)


def large(ctx: object | None) -> bool:
    """Whether the request of this context (``RequestContext``) came with a large body."""
    memory = getattr(ctx, "memory", None)
    return memory is not None and memory.body_bytes >= LARGE_BODY


def large_body(stored: object | None) -> bool:
    """Whether a stored resource is large (patching it means parsing and validating it whole)."""
    body = getattr(stored, "body", None)
    return body is not None and len(body) >= LARGE_BODY
