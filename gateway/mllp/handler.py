"""Where ``gateway mllp`` gets its :class:`~gateway.mllp.server.MessageHandler`: the ingest service.

Every message goes through the mapping and the one FHIR core exactly as ``POST /fhir/$ingest``
does, as the registered client the listener was started for; the mapping's reply (the ACK) goes
back on the connection. The listener is a process of its own on the same store as ``gateway
serve``: it writes the changes and their notification events (the outbox); delivery is the
serving processes' work — with Redis this process publishes each commit to the stream, so a
worker delivers at once; on the embedded default ``gateway serve`` picks the events up on its
next scan (``GATEWAY_NOTIFY_TICK``).
"""
from __future__ import annotations

import logging

from gateway.access import Caller, ScopeSet
from gateway.auth.registry import ClientRegistry
from gateway.fhir.context import RequestContext
from gateway.settings import Settings

log = logging.getLogger("gateway.mllp")


class IngestHandler:
    """``handle`` a message as the client; ``open``/``close`` the store and FHIR server around serving."""

    def __init__(self, settings: Settings, client_id: str, mapping_name: str):
        self.settings = settings
        self.client_id = client_id
        self.mapping_name = mapping_name
        self.server = None
        self.mapping = None
        self.registry: ClientRegistry | None = None
        self._ctx: RequestContext | None = None

    async def open(self) -> None:
        from gateway.fhir.server import FhirServer
        from gateway.store.sqlite import SqliteStore

        store = SqliteStore(self.settings.db_path, self.settings.sqlite_synchronous)
        await store.open()
        self.server = FhirServer(self.settings, store)
        await self.server.prepare_store()
        await self.server.audit.start()
        if self.settings.redis_url:  # publish commits; workers and serving processes deliver
            await self.server.engine.start(deliver=False)
        self.mapping = self.server.mappings.get(self.mapping_name)
        self.registry = ClientRegistry(self.settings.db_path)  # revocation is checked per message
        client = self.registry.get(self.client_id)
        caller = Caller(client.client_id, client.organization, ScopeSet.parse(client.scopes), False) \
            if self.settings.security != "off" else None
        self._ctx = RequestContext(self.settings.public_base, caller=caller)

    async def close(self) -> None:
        if self.server is None:
            return
        if self.settings.redis_url:
            await self.server.engine.stop()
        await self.server.audit.stop()
        self.server.close()
        self.registry.close()
        await self.server.store.close()
        self.server = None

    async def handle(self, message: bytes) -> bytes:
        ctx = _fresh(self._ctx)
        if ctx.caller is not None and self.registry.is_revoked(ctx.caller.client_id):
            return self.refuse(message, "the client this listener writes as has been revoked")
        reply = await self.server.ingest.ingest(self.mapping_name, message, self.mapping.media_types[0], ctx)
        # What the mapping read to translate is in the access log, as for any request (patientdatalagen).
        self.server.audit.record_request(ctx.caller, ctx.audit, "operation", reply.status)
        return reply.body

    def refuse(self, partial: bytes, reason: str) -> bytes:
        refuse = getattr(self.mapping, "refuse", None)
        if refuse is None:
            return b""
        return refuse(partial, reason)


def _fresh(ctx: RequestContext) -> RequestContext:
    """A context per message: its access-log trail is its own."""
    from gateway.access.trail import AuditTrail

    return RequestContext(ctx.base_url, caller=ctx.caller, audit=AuditTrail())


def make_handler(settings: Settings, client_id: str, mapping_name: str) -> IngestHandler:
    """The handler that ingests every message with mapping ``mapping_name`` as the registered
    client ``client_id`` (its organisation authors what the messages write)."""
    from gateway.errors import FhirError
    from gateway.mapping.registry import MappingRegistry

    try:
        MappingRegistry.load().get(mapping_name)  # an unknown mapping stops the command before it listens
    except FhirError as exc:
        raise ValueError(str(exc)) from None
    return IngestHandler(settings, client_id, mapping_name)
