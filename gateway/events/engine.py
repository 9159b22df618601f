"""Delivery engines: who sends which subscription's notifications, when.

Every engine runs, per subscription with work, one task that holds the subscription's *lease*
while it sends: so a slow or dead receiver holds up only its own subscription (no head-of-line
blocking), and one sender at a time keeps its notifications in event-number order. All state is
in the store (``delivery.py``), so any process can continue where another stopped.

A commit wakes the subscriptions it gave events (``wake``); a scan every ``tick_s`` seconds picks
up what no wake announced: work left by a restart or a crash, retries that are due, heartbeats
after silence. Old delivered events are pruned after ``retention_s``.

``LocalEngine`` (the embedded default) is one process: its lease is the task itself.
``engine_redis.RedisEngine`` spreads the work over processes.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Iterable

from gateway.events.delivery import Delivery
from gateway.search.dates import now_us
from gateway.store import Store
from gateway.store.records import SubscriptionRow

log = logging.getLogger("gateway.events")
PRUNE_EVERY_S = 3600.0
MAX_HANDSHAKES = 3  # per turn: a subscription whose endpoint keeps changing waits for the next scan


class Engine:
    def __init__(self, store: Store, delivery: Delivery, tick_s: float = 1.0, retention_s: float = 30 * 86400.0):
        self.store = store
        self.delivery = delivery
        self.tick_s = tick_s
        self.retention_s = retention_s
        self._tasks: dict[str, asyncio.Task] = {}
        self._scanner: asyncio.Task | None = None

    async def start(self, deliver: bool = True) -> None:
        """``deliver`` False: only publish (another process delivers; the Redis engine only)."""
        self._scanner = asyncio.create_task(self._scan_forever())

    async def stop(self) -> None:
        tasks = [t for t in (self._scanner, *self._tasks.values()) if t is not None]
        for task in tasks:
            task.cancel()
        if tasks:  # an unsent notification is sent after restart; a send stuck in a client library is left
            await asyncio.wait(tasks, timeout=5)
        self._tasks.clear()
        self._scanner = None
        await self.delivery.close()

    def wake(self, ids: Iterable[str]) -> None:
        """Called after a commit that gave these subscriptions work (or a new channel)."""
        if self._scanner is None:
            return  # not started: the first scan after start finds the work
        for sid in ids:
            self._ensure(sid, wait=True)

    async def idle(self) -> None:
        """Until no subscription task is running here (tests, benchmarks)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    # -- leases: who may send for a subscription now ---------------------------------------------
    async def _acquire(self, sid: str, wait: bool) -> bool:
        return True  # one process: the task in self._tasks is the lease

    async def _renew(self, sid: str, row: SubscriptionRow) -> None:
        """Before a send that may take up to the subscription's timeout."""

    async def _release(self, sid: str) -> None: ...

    def _done(self, sid: str, completed: bool) -> None:
        """The task for ``sid`` ended; ``completed``: nothing due was left unsent (the Redis engine
        then acknowledges its stream entries; otherwise they stay pending for another process)."""

    # -- the work --------------------------------------------------------------------------------
    def _ensure(self, sid: str, wait: bool) -> None:
        if sid not in self._tasks:
            self._tasks[sid] = asyncio.create_task(self._serve(sid, wait))

    async def _serve(self, sid: str, wait: bool) -> None:
        completed = False
        try:
            while True:
                if not await self._acquire(sid, wait):
                    completed = True  # another process sends for it and looks again after releasing
                    return
                try:
                    await self._work(sid)
                finally:
                    await self._release(sid)
                # Work announced while we held the lease may have been left to us: look once more.
                row = await self.store.subscription(sid)
                if row is None or row.state == "requested" or not _has_work(row, now_us()):
                    completed = True  # (a handshake still pending after this turn waits for the scan)
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or a store failure: the scan retries; no patient data in logs
            log.error("delivery for a subscription failed: %s", type(exc).__name__)
        finally:
            self._tasks.pop(sid, None)
            self._done(sid, completed)

    async def _work(self, sid: str) -> None:
        handshakes = 0
        while True:
            row = await self.store.subscription(sid)
            if row is None or row.state in ("off", "error"):
                return
            if row.state == "requested":
                if handshakes == MAX_HANDSHAKES:
                    return
                handshakes += 1
                await self._renew(sid, row)
                await self.delivery.handshake(row)
            elif row.next_attempt_us > now_us():
                return  # backing off: the scan comes back when the retry is due
            elif row.delivered < row.events:
                await self._renew(sid, row)
                await self.delivery.deliver(row)
            elif _heartbeat_due(row):
                await self._renew(sid, row)
                await self.delivery.heartbeat(row)
            else:
                return

    async def _scan_forever(self) -> None:
        pruned_at = 0.0
        while True:
            try:
                now = now_us()
                for row in await self.store.subscriptions():
                    if row.id in self._tasks:
                        continue
                    if row.ends_us and now >= row.ends_us and row.state != "off" and row.delivered >= row.events:
                        # Subscription.end passed and nothing is left to send: the server switches it off.
                        await self.delivery.set_status("off", row, "")
                    elif _has_work(row, now):
                        self._ensure(row.id, wait=False)
                if now / 1e6 - pruned_at >= PRUNE_EVERY_S:
                    pruned_at = now / 1e6
                    await self.store.prune_events(now - int(self.retention_s * 1e6))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("notification scan failed: %s", type(exc).__name__)
            await asyncio.sleep(self.tick_s)


class LocalEngine(Engine):
    """The embedded default: this process delivers everything."""


def _heartbeat_due(row: SubscriptionRow, now: int | None = None) -> bool:
    return bool(row.heartbeat_s) and (now or now_us()) - row.last_sent_us >= row.heartbeat_s * 1_000_000


def _has_work(row: SubscriptionRow, now: int) -> bool:
    if row.state == "requested":
        return True
    if row.state != "active" or row.next_attempt_us > now:
        return False
    return row.delivered < row.events or _heartbeat_due(row, now)
