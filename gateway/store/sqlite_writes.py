"""The embedded store's writes: group commit on one writer connection, and a file lock waited
for without holding up the event loop.

Group commit: writers queued behind each other share one SQLite transaction. Each writer's
block runs inside its own SAVEPOINT (a failure undoes only that block); the last writer in the
queue commits for all of them, in a thread so the event loop keeps parsing and validating the
next requests during the fsync. Nobody returns before the commit that holds their writes is
durable.

Waiting for the lock. Several processes may share the file; SQLite lets one of them write at
a time, and ``BEGIN IMMEDIATE`` takes that lock. With a busy timeout SQLite waits for it inside
the call, on the event loop: every request of the waiting process froze (probes took up to
5 s) and the write then failed with a 500. Here the writer connection has no busy timeout:
``BEGIN IMMEDIATE`` is tried, and while another process holds the lock it is tried again after
an asyncio sleep (1 ms, doubling to 4 ms), so the loop keeps serving. A writer that has not
had the lock within ``busy_timeout`` seconds of asking (its wait in this process's queue
included) gets ``StoreBusy``: 503 with Retry-After, nothing changed.

Sharing the lock. A batch stays open while writers keep queueing, which under steady load
would keep the file locked for good and starve another process's writers. So a batch older
than ``MAX_BATCH_S`` is committed even with writers queued, and the next batch starts only
after ``HANDOVER_S``, longer than another process's polling interval, so a waiting process
gets its turn. The pause costs this process at most 10 ms per 200 ms of uninterrupted writes.

A statement that fails because storage is full or unreadable may make SQLite roll back the
whole transaction, not only the failing writer's savepoint. The other writers of that batch
then fail with the same error (none of them was acknowledged), and the next writer begins a
new transaction: nothing is committed half, and nothing runs outside a transaction.
"""
from __future__ import annotations

import asyncio
import functools
import sqlite3
from contextlib import asynccontextmanager
from typing import AsyncIterator, Callable

from gateway.errors import FhirError, ServiceUnavailable
from gateway.store.sqlite_errors import StoreBusy

MAX_BATCH_S = 0.2  # a batch older than this commits even with writers queued
HANDOVER_S = 0.01  # then the next batch waits this long, so another process may take the lock
POLL_FIRST_S, POLL_MAX_S = 0.001, 0.004  # retrying BEGIN IMMEDIATE while another process writes


async def in_thread(fn: Callable, *args):
    """``fn(*args)`` on a worker thread, awaited to its end even if the caller is cancelled
    meanwhile (the cancellation is raised afterwards): the connection it uses must not be
    rolled back or closed while the statement runs on another thread — that crashed the
    process (a segfault in a test's teardown, under CPU stress)."""
    future = asyncio.get_running_loop().run_in_executor(None, functools.partial(fn, *args))
    interrupted: BaseException | None = None
    while not future.done():
        try:
            await asyncio.wait([future])
        except asyncio.CancelledError as exc:
            interrupted = exc
    if interrupted is not None:
        if not future.cancelled():
            future.exception()  # retrieved: the cancellation is what the caller hears of
        raise interrupted
    return future.result()


class GroupCommit:
    def __init__(self, conn: sqlite3.Connection, busy_timeout: float):
        self._conn = conn
        self._busy_timeout = busy_timeout
        self._lock = asyncio.Lock()
        self._queued = 0  # writers waiting for the lock: the last one commits the batch
        self._batch: asyncio.Future | None = None  # resolved when the open transaction commits
        self._started = 0.0  # loop time the open batch began
        self._handover = False  # the last batch was cut short: let another process in first
        self._committing: asyncio.Future | None = None

    @asynccontextmanager
    async def transaction(self, make_tx: Callable[[sqlite3.Connection], object]) -> AsyncIterator:
        """A writer's block; ``make_tx(conn)`` builds the Transaction it gets, whose
        ``committed`` callbacks run once its writes are durable."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._busy_timeout
        self._queued += 1
        try:
            async with asyncio.timeout_at(deadline):
                await self._lock.acquire()
        except BaseException as exc:  # gave up while queued (cancelled, timed out)
            self._queued -= 1
            if self._queued == 0 and self._batch is not None:
                asyncio.ensure_future(self._flush())  # the writers ahead left their commit to us
            if isinstance(exc, TimeoutError):
                raise self._busy() from None
            raise
        self._queued -= 1
        try:
            if self._committing is not None:  # a cancelled committer left its commit running
                await asyncio.shield(self._committing)
            if self._batch is None:
                await self._begin(deadline)
            batch = self._batch
            conn = self._conn
            try:
                conn.execute("SAVEPOINT writer")
                tx = make_tx(conn)
                yield tx
            except BaseException as exc:
                self._undo(batch, exc)
                if self._batch is not None and self._queued == 0:
                    await self._commit()
                raise
            conn.execute("RELEASE writer")
            if self._queued == 0 or loop.time() - self._started >= MAX_BATCH_S:
                self._handover = self._queued > 0
                await self._commit()
        finally:
            self._lock.release()
        await batch  # raises if the commit holding our writes failed
        for callback in tx.committed:
            callback()

    def _busy(self) -> StoreBusy:
        return StoreBusy(f"The store is busy with other writes and none could start within "
                         f"{self._busy_timeout:g} s; nothing was changed. Retry in a moment.")

    async def _begin(self, deadline: float) -> None:
        """Take the file's write lock without blocking the loop (see the module docstring)."""
        loop = asyncio.get_running_loop()
        if self._handover:
            self._handover = False
            await asyncio.sleep(HANDOVER_S)
        delay = POLL_FIRST_S
        while True:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                break
            except StoreBusy:
                if loop.time() + delay >= deadline:
                    raise self._busy() from None
                await asyncio.sleep(delay)
                delay = min(delay * 2, POLL_MAX_S)
        self._batch = loop.create_future()
        self._started = loop.time()

    def _undo(self, batch: asyncio.Future, exc: BaseException) -> None:
        """Undo one writer's block; if SQLite rolled back the whole transaction, fail its batch."""
        try:
            self._conn.execute("ROLLBACK TO writer")
            self._conn.execute("RELEASE writer")
        except (sqlite3.Error, FhirError):
            pass  # no such savepoint: the transaction is gone (below)
        if self._conn.in_transaction or self._batch is not batch:
            return
        self._batch = None
        if not batch.done():
            batch.set_exception(exc if isinstance(exc, FhirError) and exc.status >= 500 else ServiceUnavailable(
                "The store failed while writing; nothing was changed. Retry later.", retry_after=5, code="no-store"))
            batch.exception()  # retrieved: the writers before this one raise it, if there are any

    async def _flush(self) -> None:
        async with self._lock:
            if self._batch is not None and self._queued == 0:
                await self._commit()

    async def _commit(self) -> None:
        batch, self._batch = self._batch, None
        task = asyncio.ensure_future(self._run_commit(batch))
        self._committing = task
        task.add_done_callback(lambda _: setattr(self, "_committing", None) if self._committing is task else None)
        await asyncio.shield(task)  # a cancelled committer still lets the commit finish

    async def idle(self) -> None:
        """Wait for a commit still running on its thread (before the connection is closed)."""
        while self._committing is not None:
            await asyncio.wait([self._committing])

    async def _run_commit(self, batch: asyncio.Future) -> None:
        try:
            await in_thread(self._conn.execute, "COMMIT")
        except Exception as exc:
            try:
                self._conn.execute("ROLLBACK")
            except (sqlite3.Error, FhirError):
                pass
            batch.set_exception(exc)
        else:
            batch.set_result(None)
