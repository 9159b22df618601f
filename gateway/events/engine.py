"""The in-process delivery engine (the embedded default).

One asyncio task per subscription with work, so a slow or dead receiver holds up only its own
subscription (no head-of-line blocking), and one task per subscription means its notifications
go out one after another, in event-number order. A commit wakes the subscriptions it gave events
(``wake``); a scan every ``tick_s`` seconds picks up what no wake announced: work left by a
restart or a crash, retries that are due, heartbeats after silence. Old delivered events are
pruned after ``retention_s``.
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


class LocalEngine:
    def __init__(self, store: Store, delivery: Delivery, tick_s: float = 1.0, retention_s: float = 30 * 86400.0):
        self.store = store
        self.delivery = delivery
        self.tick_s = tick_s
        self.retention_s = retention_s
        self._tasks: dict[str, asyncio.Task] = {}
        self._dirty: set[str] = set()
        self._scanner: asyncio.Task | None = None

    async def start(self) -> None:
        self._scanner = asyncio.create_task(self._scan_forever())

    async def stop(self) -> None:
        tasks = [t for t in (self._scanner, *self._tasks.values()) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # an unsent notification is sent after restart
        self._tasks.clear()
        await self.delivery.close()

    def wake(self, ids: Iterable[str]) -> None:
        if self._scanner is None:
            return  # not started (a store used without the engine): the next start's scan finds the work
        for sid in ids:
            self._dirty.add(sid)
            self._ensure(sid)

    async def idle(self) -> None:
        """Until no subscription task is running (tests, benchmarks)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks.values()), return_exceptions=True)

    def _ensure(self, sid: str) -> None:
        if sid not in self._tasks:
            self._tasks[sid] = asyncio.create_task(self._serve(sid))

    async def _serve(self, sid: str) -> None:
        try:
            while True:
                self._dirty.discard(sid)
                row = await self.store.subscription(sid)
                if row is None or row.state in ("off", "error"):
                    return
                if row.state == "requested":
                    await self.delivery.handshake(row)
                    continue
                wait = (row.next_attempt_us - now_us()) / 1e6
                if wait > 0:  # backing off after a failure
                    await asyncio.sleep(wait)
                    continue
                if row.delivered < row.events:
                    await self.delivery.deliver(row)
                    continue
                if _heartbeat_due(row):
                    await self.delivery.heartbeat(row)
                    continue
                if sid not in self._dirty:
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug or a store failure: the scan retries; no patient data in logs
            log.error("delivery for a subscription failed: %s", type(exc).__name__)
        finally:
            self._tasks.pop(sid, None)

    async def _scan_forever(self) -> None:
        pruned_at = 0.0
        while True:
            try:
                now = now_us()
                for row in await self.store.subscriptions():
                    if row.id not in self._tasks and _has_work(row, now):
                        self._ensure(row.id)
                if now / 1e6 - pruned_at >= PRUNE_EVERY_S:
                    pruned_at = now / 1e6
                    await self.store.prune_events(now - int(self.retention_s * 1e6))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.error("notification scan failed: %s", type(exc).__name__)
            await asyncio.sleep(self.tick_s)


def _heartbeat_due(row: SubscriptionRow, now: int | None = None) -> bool:
    return bool(row.heartbeat_s) and (now or now_us()) - row.last_sent_us >= row.heartbeat_s * 1_000_000


def _has_work(row: SubscriptionRow, now: int) -> bool:
    if row.state == "requested":
        return True
    if row.state != "active" or row.next_attempt_us > now:
        return False
    return row.delivered < row.events or _heartbeat_due(row, now)
