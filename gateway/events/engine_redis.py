"""The Redis Streams engine: several gateway processes deliver one region's notifications.

After a commit that gave subscriptions events, the process publishes one stream entry naming
them (``XADD {prefix}:events``). Every gateway process (``gateway serve`` or ``gateway worker``)
reads the stream in one consumer group; for each subscription an entry names, its reader takes
the subscription's lease (``SET {prefix}:lease:{id} NX PX``, one send's timeout plus a margin),
sends everything due from the store, releases the lease, and acknowledges the entry once all its
subscriptions are done. A process that dies mid-delivery leaves
its entries pending: another reclaims them (``XAUTOCLAIM``) once they are ``claim_idle_s`` old and
takes the lease when it expires, so the event still arrives (at least once: receivers dedupe by
event number). The store stays the source of truth; the stream only says "look at this one now",
and every process's scan catches anything a lost publish left behind.
"""
from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from typing import Iterable

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from gateway.events.delivery import Delivery
from gateway.events.engine import Engine
from gateway.store import Store
from gateway.store.records import SubscriptionRow

log = logging.getLogger("gateway.events")
GROUP = "delivery"
STREAM_MAXLEN = 100_000
# Compare-and-delete / compare-and-extend: a lease is only ever changed by the process holding it.
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end"
_RENEW = ("if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) "
          "else return 0 end")


class LeaseLost(Exception):
    """Our lease on a subscription ran out before we could extend it: stop sending for it."""


class RedisEngine(Engine):
    def __init__(self, store: Store, delivery: Delivery, url: str, prefix: str = "samverkan",
                 tick_s: float = 1.0, retention_s: float = 30 * 86400.0, claim_idle_s: float = 5.0,
                 lease_margin_s: float = 5.0):
        super().__init__(store, delivery, tick_s, retention_s)
        self.url = url
        self.stream = f"{prefix}:events"
        self.lease_prefix = f"{prefix}:lease:"
        self.consumer = f"{socket.gethostname()}-{os.getpid()}"
        self.claim_idle_ms = int(claim_idle_s * 1000)
        self.lease_margin_ms = int(lease_margin_s * 1000)
        self.redis: aioredis.Redis | None = None
        self._entries: dict[str, list[str]] = {}  # stream entries each subscription's task answers for
        self._waiting: dict[str, int] = {}  # entry → its subscriptions whose task has not completed yet
        self._lease_until: dict[str, float] = {}  # subscription → when our lease on it runs out (monotonic)
        self._publishing: set[asyncio.Task] = set()
        self._consumer: asyncio.Task | None = None
        self._stopping = False

    async def start(self, deliver: bool = True) -> None:
        self.redis = aioredis.from_url(self.url, decode_responses=True)
        try:
            await self.redis.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        if deliver:
            await super().start()
            self._consumer = asyncio.create_task(self._consume_forever())

    async def stop(self) -> None:
        # The consumer is asked to stop between reads: cancelling a blocked XREADGROUP can leave
        # redis-py's connection waiting forever (seen with redis 8.1), so it is cancelled only
        # if it does not finish within two blocking periods.
        self._stopping = True
        if self._consumer is not None:
            done, _ = await asyncio.wait([self._consumer], timeout=2 * self.tick_s + 1)
            if not done:
                self._consumer.cancel()
                await asyncio.wait([self._consumer], timeout=1)
        for task in list(self._publishing):
            task.cancel()
        await asyncio.wait(list(self._publishing), timeout=1) if self._publishing else None
        await super().stop()  # entries of cancelled sends stay pending: reclaimed by another process
        if self.redis is not None:
            await self.redis.aclose()

    def wake(self, ids: Iterable[str]) -> None:
        if self.redis is None:
            return  # not started
        task = asyncio.create_task(self._publish(list(ids)))
        self._publishing.add(task)
        task.add_done_callback(self._publishing.discard)

    async def idle(self) -> None:
        """Until nothing is being published, sent here, or pending in the group (tests, benchmarks)."""
        while True:
            await asyncio.gather(*list(self._publishing), *list(self._tasks.values()), return_exceptions=True)
            pending = await self.redis.xpending(self.stream, GROUP)
            if not self._tasks and not self._publishing and not pending["pending"]:
                return
            await asyncio.sleep(0.01)

    async def _publish(self, ids: list[str]) -> None:
        try:  # one entry per commit: its subscriptions are served together by whoever reads it
            await self.redis.xadd(self.stream, {"subs": " ".join(ids)}, maxlen=STREAM_MAXLEN, approximate=True)
        except RedisError as exc:  # the events are in the store: a scan delivers them
            log.warning("publishing to Redis failed (%s); the next scan delivers", type(exc).__name__)

    async def _consume_forever(self) -> None:
        claim_from = "0-0"
        while not self._stopping:
            try:
                # Entries a dead process left pending, then new ones (blocking up to a tick).
                claim_from, claimed, _ = await self.redis.xautoclaim(
                    self.stream, GROUP, self.consumer, self.claim_idle_ms, start_id=claim_from, count=100)
                fresh = await self.redis.xreadgroup(GROUP, self.consumer, {self.stream: ">"}, count=100,
                                                    block=int(self.tick_s * 1000))
                if self._stopping:
                    return  # what was read stays pending: reclaimed by another process
                for entry_id, fields in [*claimed, *(e for _, entries in fresh for e in entries)]:
                    ids = ((fields or {}).get("subs") or "").split()
                    if entry_id in self._waiting:
                        continue  # ours already, its subscriptions still at work (claimed back after idling)
                    if not ids:  # trimmed or foreign: nothing to do
                        await self.redis.xack(self.stream, GROUP, entry_id)
                        continue
                    self._waiting[entry_id] = len(ids)
                    for sid in ids:
                        self._entries.setdefault(sid, []).append(entry_id)
                        self._ensure(sid, wait=True)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: retry; the scan keeps delivering meanwhile
                log.warning("reading the notification stream failed: %s", type(exc).__name__)
                await asyncio.sleep(self.tick_s)

    # -- leases ------------------------------------------------------------------------------------
    async def _acquire(self, sid: str, wait: bool) -> bool:
        """The lease lasts one send (the subscription's timeout) plus the margin."""
        key = self.lease_prefix + sid
        row = await self.store.subscription(sid)
        ms = (row.timeout_s if row else 0) * 1000 + self.lease_margin_ms
        while not await self.redis.set(key, self.consumer, nx=True, px=ms):
            if not wait:
                return False
            # Another process sends for it: wait for its lease (it may have died) rather than lose the entry.
            ttl = await self.redis.pttl(key)
            await asyncio.sleep(min(max(ttl, 10), 500) / 1000)
        self._lease_until[sid] = time.monotonic() + ms / 1000
        return True

    async def _renew(self, sid: str, row: SubscriptionRow) -> None:
        """Extend before a send unless more than a send's worth (plus half the margin) is left."""
        needed = row.timeout_s + self.lease_margin_ms / 2000
        if self._lease_until.get(sid, 0) - time.monotonic() > needed:
            return
        ms = row.timeout_s * 1000 + self.lease_margin_ms
        if not await self.redis.eval(_RENEW, 1, self.lease_prefix + sid, self.consumer, ms):
            raise LeaseLost(sid)  # expired while we were slow: someone else may be sending now
        self._lease_until[sid] = time.monotonic() + ms / 1000

    async def _release(self, sid: str) -> None:
        self._lease_until.pop(sid, None)
        try:
            await self.redis.eval(_RELEASE, 1, self.lease_prefix + sid, self.consumer)
        except RedisError:
            pass  # it expires by itself

    def _done(self, sid: str, completed: bool) -> None:
        """An entry is acknowledged once every subscription it named completed here; a failed one
        leaves it pending, to be reclaimed (and its other subscriptions found with nothing left)."""
        finished = []
        for entry_id in self._entries.pop(sid, []):
            if not completed:
                self._waiting.pop(entry_id, None)
            elif entry_id in self._waiting:
                self._waiting[entry_id] -= 1
                if self._waiting[entry_id] == 0:
                    del self._waiting[entry_id]
                    finished.append(entry_id)
        if finished and self.redis is not None:
            task = asyncio.create_task(self._ack(finished))
            self._publishing.add(task)
            task.add_done_callback(self._publishing.discard)

    async def _ack(self, entries: list[str]) -> None:
        try:
            await self.redis.xack(self.stream, GROUP, *entries)
        except RedisError:
            pass  # reclaimed later and found to have nothing left to send
