"""Events in the transaction of the change that caused them (the outbox).

``FhirCore`` calls ``subscription_status`` before storing a Subscription (the server owns its
status) and ``after_write`` after every version it stores. A change that fires a topic gets the
next event number of each subscription to that topic whose filters it matches, in the same
store transaction: a committed change always has its events, a rolled-back one never. Only
subscribers whose organisation may see the change (judged in the transaction) get a number;
delivery (``delivery.py``) judges again, as the access decision then stands. After the commit
the delivery engine is woken for those subscriptions.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Callable, Iterable

from gateway.access.caller import Caller
from gateway.access.policy import AccessPolicy
from gateway.access.scopes import READ_EVERY_TYPE
from gateway.errors import Forbidden, InvalidResource, Issue
from gateway.events.endpoints import EndpointPolicy
from gateway.events.subscriptions import SubscriptionRules, matches
from gateway.events.topics import TopicCatalog
from gateway.fhir.canonical import parse_json
from gateway.fhir.context import RequestContext
from gateway.search.extract import index_resource
from gateway.search.registry import SearchRegistry
from gateway.store import StoredResource, Transaction
from gateway.store.records import IndexRows, SubscriptionRow

SUBSCRIPTION = "Subscription"


class EventRecorder:
    def __init__(self, topics: TopicCatalog, registry: SearchRegistry, local_base: str | None,
                 access: AccessPolicy, endpoints: EndpointPolicy | None = None, max_subscriptions: int = 100,
                 outbound: Callable[[str], Any] | None = None):
        """``outbound``: which mapping renders a payload media type (``MappingRegistry.for_outbound``)."""
        self.topics = topics
        self.access = access
        self.registry = registry
        self.local_base = local_base
        self.rules = SubscriptionRules(topics, registry, local_base, endpoints, outbound)
        self.max_subscriptions = max_subscriptions
        self._wake: Callable[[Iterable[str]], None] = lambda ids: None

    def connect(self, wake: Callable[[Iterable[str]], None]) -> None:
        """The delivery engine to wake after a commit that gave its subscriptions work."""
        self._wake = wake

    # -- Subscription writes ---------------------------------------------------------------
    async def subscription_status(self, tx: Transaction, ctx: RequestContext | None, rid: str, canonical: dict,
                                  server: bool) -> SubscriptionRow:
        """Check the channel, decide the status the server stores and set it in ``canonical``.
        A client asks; ``server`` writes (handshake outcome, retries given up) are taken as they are."""
        caller = ctx.caller if ctx else None
        org, client = (caller.organization, caller.client_id) if caller else ("", "")
        previous = await tx.load_subscription(rid)
        if previous is not None and not caller:
            org, client = previous.organization, previous.client  # a trusted write keeps the subscriber
        row = self.rules.channel(rid, canonical, org, client)
        topic_types = {t.rtype for t in self.topics.by_url[row.topic].triggers}
        for rtype in sorted(topic_types):
            if caller and not caller.scopes.allows(rtype, "r"):
                raise Forbidden(f"Events of {row.topic} are about {rtype}; the access token's scopes "
                                f"({caller.scopes}) do not allow reading {rtype}.")
        if server:
            return row
        if (previous is None or previous.state == "off") and caller \
                and await tx.count_subscriptions(org) >= self.max_subscriptions:
            message = (f"{org} already holds {self.max_subscriptions} subscriptions, the most this gateway allows "
                       "one organisation; delete (or switch off) those no longer used.")
            raise InvalidResource(message, issues=[Issue("business-rule", message)])
        asked = canonical.get("status")
        if asked == "error" and (previous is None or previous.state != "error"):
            message = "Subscription.status 'error' is set by the server; ask for 'requested' (or 'active') or 'off'."
            raise InvalidResource(message, issues=[Issue("invalid", message, expression=["Subscription.status"])])
        if asked == "off":
            state = "off"
        elif asked == "error":
            state = "error"  # an errored subscription edited without asking to resume stays errored
        elif previous is not None and previous.state == "active" and asked == "active" and _same_channel(previous, row):
            state = "active"
        else:
            state = "requested"  # new, changed, or resumed: the endpoint proves itself with a handshake
        canonical["status"] = state
        canonical.pop("error", None)
        return replace(row, state=state)

    # -- every write ---------------------------------------------------------------------------
    async def after_write(self, tx: Transaction, rtype: str, stored: StoredResource, canonical: dict | None,
                          index: IndexRows | None, previous: StoredResource | None,
                          subscription: SubscriptionRow | None = None, server: bool = False) -> None:
        if rtype == SUBSCRIPTION:
            await self._save_subscription(tx, stored, subscription, server, (canonical or {}).get("error", ""))
            return
        topics = self.topics.for_type(rtype)
        if not topics:
            return
        # Subscribers first (one indexed lookup): with none, the triggers need not be evaluated.
        subscribers = await tx.subscribers([t.url for t in topics], stored.last_updated_us)
        if not subscribers:
            return
        wanted = {topic for _, topic, _, _ in subscribers}
        before = parse_json(previous.body) if previous is not None and previous.body else None
        interaction = "delete" if canonical is None else "create" if before is None else "update"
        fired = {t.url for t in topics if t.url in wanted and t.fires(rtype, interaction, before, canonical)}
        if not fired:
            return
        if index is None:  # a deletion: filters test what was deleted
            index = index_resource(self.registry, rtype, before, self.local_base) if before else IndexRows()
        matching = [(sid, topic, org) for sid, topic, filters, org in subscribers
                    if topic in fired and matches(filters, rtype, index)]
        # Only what the subscriber may see now gets a number: neither the count nor the gaps may tell
        # of changes about a person it may not see. (Delivery asks again, for access lost meanwhile.)
        seeing = {org for org in {o for _, _, o in matching} if not org or await self.access.visible(
            RequestContext("", caller=Caller("", org, READ_EVERY_TYPE)), [stored], lusen=True, reader=tx)}
        chosen = [(sid, topic) for sid, topic, org in matching if org in seeing]
        if len(chosen) < len(matching):  # not numbered, not sent: counted for the operator
            await tx.count_withheld([sid for sid, _, org in matching if org not in seeing])
        if chosen:
            await tx.append_events(chosen, stored.last_updated_us, rtype, stored.rid, stored.vid, stored.seq,
                                   interaction)
            woken = [sid for sid, _ in chosen]
            tx.on_commit(lambda: self._wake(woken))

    async def _save_subscription(self, tx: Transaction, stored: StoredResource, row: SubscriptionRow | None,
                                 server: bool, error: str) -> None:
        if stored.deleted or row is None:
            await tx.drop_subscription(stored.rid)
            return
        await tx.save_subscription(row, restart=not server and row.state == "requested")
        if server:  # the engine's own verdict (handshake, retries given up), with its reason
            await tx.set_subscription_state(row.id, row.state, error)
        if row.state in ("requested", "active"):
            tx.on_commit(lambda: self._wake([row.id]))


def _same_channel(a: SubscriptionRow, b: SubscriptionRow) -> bool:
    return (a.endpoint, a.headers, a.content, a.topic, a.filters) == (b.endpoint, b.headers, b.content, b.topic,
                                                                       b.filters)
