"""Subscriptions as the FHIR API shows them: ``$status``, ``$events`` and the server's own status
changes (written as new Subscription versions, so a read shows what the engine decided)."""
from __future__ import annotations

from gateway.errors import BadRequest
from gateway.events.delivery import Delivery
from gateway.events.notification import notification_bundle, status_bundle
from gateway.events.recorder import SUBSCRIPTION
from gateway.events.subscriptions import CONTENTS
from gateway.fhir.canonical import parse_json
from gateway.fhir.context import RequestContext
from gateway.fhir.interactions import FhirCore
from gateway.fhir.types import parse_uint
from gateway.store.records import SubscriptionRow

MAX_EVENTS_PER_QUERY = 1000
_STATES = ("requested", "active", "error", "off")


class SubscriptionService:
    def __init__(self, core: FhirCore, delivery: Delivery | None = None):
        self.core = core
        self.store = core.store
        self.delivery = delivery

    async def set_status(self, state: str, judged: SubscriptionRow, error: str) -> bool:
        """The engine's verdict on ``judged``, applied only if the subscription is still in that
        state with that channel (a client may have changed it meanwhile: the new channel gets its
        own handshake)."""
        sid = judged.id
        async with self.store.transaction() as tx:
            row = await tx.load_subscription(sid)
            current = await tx.read(SUBSCRIPTION, sid)
            if row is None or current is None or current.deleted or row.state != judged.state \
                    or _channel(row) != _channel(judged):
                return False
            resource = parse_json(current.body)
            resource["status"] = state
            if error:
                resource["error"] = error[:1000]
            else:
                resource.pop("error", None)
            await self.core.update_in(tx, SUBSCRIPTION, sid, resource, server=True)
        return True

    # -- operations --------------------------------------------------------------------------
    async def status(self, rid: str | None, params: list[tuple[str, str]], ctx: RequestContext) -> bytes:
        """``$status``: the instance's, or (type level) every subscription the caller may read,
        narrowed by ``id`` and ``status`` (values OR-ed)."""
        if rid is not None:
            rows = [await self._readable(rid, ctx)]
        else:
            self.core.access.check_scope(ctx, SUBSCRIPTION, "s")
            ids = {v for k, v in params if k == "id" for v in v.split(",")}
            states = {v for k, v in params if k == "status" for v in v.split(",")}
            if states - set(_STATES):
                raise BadRequest(f"$status status must be one of {', '.join(_STATES)}.")
            caller = ctx.caller
            rows = [r for r in await self.store.subscriptions(caller.organization if caller else None)
                    if (not ids or r.id in ids) and (not states or r.state in states)]
            # A deleted Subscription keeps its row (its counter goes on if it is brought back): not listed.
            existing = {r.rid for r in await self.store.read_many([(SUBSCRIPTION, r.id) for r in rows])}
            rows = [r for r in rows if r.id in existing]
        return status_bundle(ctx.base_url, rows)

    async def events(self, rid: str, params: list[tuple[str, str]], ctx: RequestContext) -> bytes:
        """``$events``: retained events ``eventsSinceNumber``..``eventsUntilNumber`` (inclusive), as a
        notification Bundle; each judged by the access decision now, as for delivery."""
        row = await self._readable(rid, ctx)
        args = dict(params)
        first = self._number(args.get("eventsSinceNumber"), 1, "eventsSinceNumber")
        last = min(self._number(args.get("eventsUntilNumber"), row.events, "eventsUntilNumber"), row.events)
        content = args.get("content", row.content)
        if content not in CONTENTS:
            raise BadRequest(f"$events content must be one of {', '.join(CONTENTS)}, not '{content}'.")
        events = await self.store.subscription_events(rid, max(first, 1), last, MAX_EVENTS_PER_QUERY) \
            if last >= first else []
        if content == "full-resource" and ctx.memory is not None:
            # Resources travel in full: as many events as fit in what one response may carry
            # (gateway.budget); their numbers tell the client where to ask on from.
            sizes = await self.store.body_sizes([e.seq for e in events])
            fits = ctx.memory.fit([sizes.get(e.seq, 0) for e in events])
            events = events[:fits]
            await ctx.memory.carry([sizes.get(e.seq, 0) for e in events])
        shown, _ = await self.delivery.decide(ctx.caller, events, content)
        shown = await self.delivery.disclose(ctx, shown, content)
        return notification_bundle(ctx.base_url, row, "query-event", shown, content)

    async def _readable(self, rid: str, ctx: RequestContext) -> SubscriptionRow:
        await self.core.read(SUBSCRIPTION, rid, ctx)  # 404 unless the caller may read it
        row = await self.store.subscription(rid)
        if row is None:
            raise BadRequest(f"Subscription/{rid} is not a topic-based subscription of this server.")
        return row

    @staticmethod
    def _number(value: str | None, default: int, name: str) -> int:
        if value is None:
            return default
        number = parse_uint(value)
        if number is None:
            raise BadRequest(f"$events {name} must be an event number (a whole number), not '{value}'.")
        return number


def _channel(row: SubscriptionRow) -> tuple:
    return row.topic, row.endpoint, row.headers, row.content, row.filters, row.heartbeat_s, row.timeout_s, row.max_count
