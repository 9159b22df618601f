"""Sending one subscription's notifications: handshake, events in number order, heartbeats.

Engine-independent: the in-process engine (``engine.py``) and the Redis Stream workers
(``engine_redis.py``) call ``handshake`` / ``deliver`` / ``heartbeat`` for one subscription at a
time, and the store holds every bit of state, so whichever process sends next continues where the
last one stopped.

- At least once, in order: the delivered mark moves only after the receiver answered 2xx; a
  crash before that sends the same events (same numbers) again.
- Secrecy: events were numbered only for what the subscriber's organisation could see (the
  recorder); each focus is judged again as the access decision stands at delivery, with the
  client's registered scopes. One it may no longer see is withheld (not sent, and not served by
  ``$events`` either); ``full-resource`` carries what a read would show (LUSEN notice view,
  protected address removed), and the disclosure goes to the access log.
- Retries: exponential backoff from ``retry_base_s`` up to ``retry_max_s`` while the receiver
  fails; after ``retry_horizon_s`` of failing the subscription goes to ``error`` (events keep
  being numbered and stay retrievable; a client asking for ``requested`` resumes with the backlog).
- What a failure tells whom: the subscriber reads one of two categories in ``Subscription.error``
  (and ``$status``), ``ADDRESS_REFUSED`` or ``NOT_ACCEPTED``, never which of their causes it was:
  telling a closed port from a silent one, a TLS or non-HTTP answer, or an HTTP error would let a
  subscriber map the network the gateway sits in. The operator's log (warning) names the
  subscription, the endpoint's host and the cause (exception type, HTTP status, timeout, refused
  address); never patient data. (When the status changes still differs: a refused connection
  fails at once, a silent port after the timeout. The public-addresses default keeps that from
  mapping the care network.)
- Other formats: a channel whose payload is a mapping module's media type (``Content-Type`` in
  its headers, ``subscriptions.py``) gets the same notification Bundle rendered by that mapping
  (``Mapping.render``) just before it is signed and sent, so events, numbers, access decisions,
  retries and ``$events`` (which answers FHIR) are those of a FHIR subscriber. A notification the
  mapping cannot render counts as a failed delivery (retried, then ``error``), with
  ``NOT_RENDERED`` as the text and the exception type in the log.
"""
from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import socket
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Protocol
from urllib.parse import urlsplit

import aiohttp

from gateway.access.audit import AuditLog
from gateway.access.caller import Caller
from gateway.access.policy import AccessPolicy
from gateway.access.scopes import READ_EVERY_TYPE, ScopeSet
from gateway.access.trail import AuditTrail
from gateway.events.endpoints import EndpointRefused
from gateway.events.notification import Delivered, notification_bundle
from gateway.events.sender import HttpSender
from gateway.fhir.canonical import parse_json
from gateway.fhir.context import RequestContext
from gateway.search.dates import now_us
from gateway.store import Store
from gateway.store.records import EventRecord, SubscriptionRow

SIGNATURE_HEADER = "X-Samverkan-Signature"
log = logging.getLogger("gateway.events")

# The two failures a subscriber is told of. The host resolved to no address the gateway may send to:
# it is refused by the endpoint rule at connect time (endpoints.py), or it has no address at all —
# one text for both, so that it does not tell whether a private name exists.
ADDRESS_REFUSED = ("the endpoint's address is not allowed or its host did not resolve (notifications go to "
                   "public addresses, and to hosts the gateway's operator opened)")
# Everything after that: refused or reset connection, no answer in time, TLS failure, an answer
# that is not HTTP, a redirect or an HTTP error status.
NOT_ACCEPTED = "the endpoint did not accept the notification (no 2xx answer)"
# The subscription's payload media type could not be made (the mapping that renders it failed or is gone).
NOT_RENDERED = "the notification could not be rendered in the subscription's payload media type"
FHIR_JSON = "application/fhir+json"

# (new state, the subscription as judged: applied only if still in that state with that channel, error text)
StatusWriter = Callable[[str, SubscriptionRow, str], Awaitable[bool]]


class ClientLookup(Protocol):
    """The registered clients (``gateway.auth.registry.ClientRegistry``)."""

    def is_revoked(self, client_id: str) -> bool: ...

    def get(self, client_id: str): ...


class Sender(Protocol):
    """POSTs a notification; returns the HTTP status, raises OSError / asyncio.TimeoutError / aiohttp.ClientError
    when there is no answer, ``EndpointRefused`` when the endpoint rule refuses every address of the
    host (``sender.HttpSender``). Tests stand in a receiver of their own."""

    async def post(self, url: str, body: bytes, headers: dict[str, str], timeout: float) -> int: ...

    async def close(self) -> None: ...


@dataclass(frozen=True)
class DeliverySettings:
    retry_base_s: float = 1.0
    retry_max_s: float = 600.0
    retry_horizon_s: float = 72 * 3600.0
    signing_key: bytes | None = None  # HMAC-SHA256 over "<timestamp>.<body>" when set


class Delivery:
    def __init__(self, store: Store, access: AccessPolicy, audit: AuditLog, set_status: StatusWriter,
                 base_url: str, settings: DeliverySettings, sender: Sender | None = None,
                 clients: ClientLookup | None = None, renderers: Callable[[str], Any] | None = None):
        """``renderers``: the mapping that renders a payload media type (``MappingRegistry.for_outbound``)."""
        self.store = store
        self.renderers = renderers
        self.access = access
        self.audit = audit
        self.set_status = set_status
        self.base_url = base_url
        self.settings = settings
        self.sender = sender or HttpSender()
        self.clients = clients
        self._scopes: dict[str, tuple[float, ScopeSet]] = {}  # client → (looked up at, registered scopes)

    async def close(self) -> None:
        await self.sender.close()
        if self.clients is not None and hasattr(self.clients, "close"):
            self.clients.close()

    async def handshake(self, row: SubscriptionRow) -> None:
        if await self._revoked(row):
            return
        error = await self._post(row, notification_bundle(self.base_url, row, "handshake"))
        if error is None:
            await self._record_sent(row)
        await self.set_status("active" if error is None else "error", row,
                              "" if error is None else f"handshake failed: {error}")

    async def heartbeat(self, row: SubscriptionRow) -> None:
        if await self._revoked(row):
            return
        error = await self._post(row, notification_bundle(self.base_url, row, "heartbeat"))
        if error is None:
            await self._record_sent(row)
        else:
            await self._failed(row, error)

    async def deliver(self, row: SubscriptionRow) -> None:
        """The next events after the delivered mark (at most max_count), as one notification."""
        if await self._revoked(row):
            return
        events = await self.store.subscription_events(row.id, row.delivered + 1, row.events, row.max_count)
        if not events:  # numbered but gone (the subscription was recreated): nothing left to send
            async with self.store.transaction() as tx:
                await tx.record_delivery(row.id, row.events, [], 0)
            return
        caller = self._subscriber(row)
        shown, withheld = await self.decide(caller, events, row.content)
        sent_at = 0
        if shown:
            trail = AuditTrail()
            shown = await self.disclose(RequestContext(self.base_url, caller=caller, audit=trail), shown, row.content)
            error = await self._post(row, notification_bundle(self.base_url, row, "event-notification", shown))
            if error is not None:
                await self._failed(row, error)
                return
            if row.content != "empty":
                self.audit.record_request(caller, trail, "notification", 200, f"Subscription/{row.id}")
            sent_at = now_us()
        async with self.store.transaction() as tx:
            await tx.record_delivery(row.id, events[-1].number, [e.number for e in withheld], sent_at)

    async def decide(self, caller: Caller | None, events: list[EventRecord],
                     content: str) -> tuple[list[Delivered], list[EventRecord]]:
        """Split events into those the subscriber may see now (with the focus version to show) and
        those it may not. A resource it sees only as a LUSEN notice shows its current version."""
        # Withheld before, or of a type the subscriber's token (or its client's registration) may not read.
        live, withheld = [], []
        for e in events:
            readable = not e.withheld and (caller is None or caller.scopes.allows(e.rtype, "r"))
            (live if readable else withheld).append(e)
        if caller is None and content != "full-resource":
            return [Delivered(e) for e in live], withheld  # a trusted subscriber, ids only: nothing to read
        ctx = RequestContext(self.base_url, caller=caller)
        versions = {v.seq: v for v in await self.store.read_seqs([e.seq for e in live])}
        seen = {v.seq for v in await self.access.visible(ctx, list(versions.values()), lusen=True)}
        if content == "full-resource":
            current = {v.seq for v in await self.access.without_notice_history(
                ctx, [versions[s] for s in seen if versions[s].body is not None])}
        shown = []
        for e in live:
            if e.seq not in seen:
                withheld.append(e)
                continue
            version = versions[e.seq]
            if content == "full-resource" and version.body is not None and e.seq not in current:
                version = await self.store.read(e.rtype, e.rid) or version
            shown.append(Delivered(e, version))
        withheld.sort(key=lambda e: e.number)
        return shown, withheld

    async def disclose(self, ctx: RequestContext, shown: list[Delivered], content: str) -> list[Delivered]:
        """What leaves for the caller, recorded in ``ctx.audit`` for the access log: full-resource as
        a read would show it (LUSEN notice view, protected address removed); id-only names the
        resources, which is a disclosure too."""
        if content == "full-resource":
            return [Delivered(d.event, (await self.access.release(ctx, [d.focus]))[0]
                              if d.focus.body is not None else d.focus) for d in shown]
        if content == "id-only" and ctx.caller is not None and ctx.audit is not None:
            ctx.audit.saw([d.focus for d in shown if d.focus is not None])
        return shown

    async def _failed(self, row: SubscriptionRow, error: str) -> None:
        now = now_us()
        since = row.failing_since_us or now
        if now - since >= self.settings.retry_horizon_s * 1e6:
            await self.set_status("error", row, f"delivery failed for {self.settings.retry_horizon_s:.0f} s: {error}")
            return
        delay = min(self.settings.retry_base_s * 2 ** min(row.attempts, 32), self.settings.retry_max_s)
        async with self.store.transaction() as tx:
            await tx.record_failure(row.id, since, now + int(delay * 1e6), error)

    async def _record_sent(self, row: SubscriptionRow) -> None:
        async with self.store.transaction() as tx:
            await tx.record_sent(row.id, now_us())

    async def _post(self, row: SubscriptionRow, body: bytes) -> str | None:
        """POST to the endpoint; None on a 2xx answer, else why not (no patient data in it)."""
        headers = {"Content-Type": FHIR_JSON}
        for h in row.headers:
            name, _, value = h.partition(":")
            headers[name.strip()] = value.strip()
        if headers["Content-Type"] != FHIR_JSON:
            body = self._render(row, headers["Content-Type"], body)
            if body is None:
                return NOT_RENDERED
        if self.settings.signing_key:
            stamp = str(int(time.time()))
            digest = hmac.new(self.settings.signing_key, stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
            headers[SIGNATURE_HEADER] = f"t={stamp},v1={digest}"
        try:
            status = await self.sender.post(row.endpoint, body, headers, row.timeout_s)
        except EndpointRefused as exc:
            error, cause = ADDRESS_REFUSED, f"address refused: {exc}"
        except aiohttp.ClientConnectorDNSError as exc:
            error, cause = ADDRESS_REFUSED, f"host not resolved ({type(exc.os_error).__name__})"
        except socket.gaierror as exc:
            error, cause = ADDRESS_REFUSED, f"host not resolved ({type(exc).__name__})"
        except asyncio.TimeoutError:
            error, cause = NOT_ACCEPTED, f"no answer within {row.timeout_s} s"
        except (aiohttp.ClientError, OSError, ValueError) as exc:  # ValueError: a URL or header aiohttp refuses
            inner = getattr(exc, "os_error", None) or exc.__cause__
            error, cause = NOT_ACCEPTED, type(exc).__name__ + (f" ({type(inner).__name__})" if inner else "")
        else:
            if 200 <= status < 300:
                return None
            error, cause = NOT_ACCEPTED, f"HTTP {status}"
        log.warning("Subscription/%s: notification to %s not delivered: %s", row.id, _host(row.endpoint), cause)
        return error

    def _render(self, row: SubscriptionRow, media_type: str, body: bytes) -> bytes | None:
        """The notification in the channel's payload type; None (logged, no patient data) if it cannot be made."""
        mapping = self.renderers(media_type) if self.renderers else None
        try:
            if mapping is None:
                raise LookupError("no mapping renders this media type")
            return mapping.render(parse_json(body))
        except Exception as exc:  # a mapping's bug must not stop the engine: this subscription retries
            log.warning("Subscription/%s: notification not rendered as %s: %s", row.id, media_type, type(exc).__name__)
            return None

    def _subscriber(self, row: SubscriptionRow) -> Caller | None:
        """Who the events go to, as the access decision knows callers ('': a trusted subscription),
        with the scopes its client is registered for now."""
        if not row.organization:
            return None
        scopes = READ_EVERY_TYPE  # a client not in the registry (security was off when it subscribed)
        if self.clients is not None and row.client:
            seen = self._scopes.get(row.client)
            if seen is None or time.monotonic() - seen[0] > 2.0:
                client = self.clients.get(row.client)
                seen = (time.monotonic(), ScopeSet.parse(client.scopes) if client else ScopeSet.parse(""))
                self._scopes[row.client] = seen
            scopes = seen[1]
        return Caller(row.client, row.organization, scopes)

    async def _revoked(self, row: SubscriptionRow) -> bool:
        """A subscription of a revoked client is switched off: nothing more goes to it."""
        if self.clients is None or not row.client or not self.clients.is_revoked(row.client):
            return False
        await self.set_status("off", row, "the client that created this subscription was revoked")
        return True


def _host(endpoint: str) -> str:
    """host[:port] of an endpoint for the log (not its path, query or user info: they may hold secrets)."""
    try:
        parts = urlsplit(endpoint)
        return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
    except ValueError:
        return "(unparsable)"
