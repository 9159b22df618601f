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
from typing import TYPE_CHECKING

from gateway.access import Caller, ScopeSet
from gateway.auth.registry import ClientRegistry
from gateway.fhir.context import RequestContext
from gateway.settings import Settings

if TYPE_CHECKING:
    from gateway.fhir.server import FhirServer
    from gateway.mapping.interface import Mapping

log = logging.getLogger("gateway.mllp")


class IngestHandler:
    """``handle`` a message as the client; ``open``/``close`` the store and FHIR server around serving."""

    def __init__(self, settings: Settings, client_id: str, mapping_name: str):
        self.settings = settings
        self.client_id = client_id
        self.mapping_name = mapping_name
        self._server: FhirServer | None = None
        self._mapping: Mapping | None = None
        self._registry: ClientRegistry | None = None
        self._ctx: RequestContext | None = None

    @property
    def server(self) -> FhirServer:
        assert self._server is not None, "IngestHandler.open() first"
        return self._server

    @property
    def mapping(self) -> Mapping:
        assert self._mapping is not None, "IngestHandler.open() first"
        return self._mapping

    @property
    def registry(self) -> ClientRegistry:
        assert self._registry is not None, "IngestHandler.open() first"
        return self._registry

    async def open(self) -> None:
        from gateway.fhir.server import FhirServer
        from gateway.store.sqlite import SqliteStore

        store = SqliteStore(self.settings.db_path, self.settings.sqlite_synchronous)
        await store.open()
        server = self._server = FhirServer(self.settings, store)
        await server.prepare_store()
        await server.audit.start()
        if self.settings.redis_url:  # publish commits; workers and serving processes deliver
            await server.engine.start(deliver=False)
        self._mapping = server.mappings.get(self.mapping_name)
        registry = self._registry = ClientRegistry(self.settings.db_path)  # revocation is checked per message
        client = registry.get(self.client_id)
        if client is None:
            raise ValueError(f"no registered client {self.client_id}")
        caller = Caller(client.client_id, client.organization, ScopeSet.parse(client.scopes), False) \
            if self.settings.security != "off" else None
        self._ctx = RequestContext(self.settings.public_base, caller=caller)

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        if self.settings.redis_url:
            await server.engine.stop()
        await server.audit.stop()
        server.close()
        if self._registry is not None:
            self._registry.close()
        await server.store.close()

    async def handle(self, message: bytes) -> bytes:
        assert self._ctx is not None, "IngestHandler.open() first"
        ctx = _fresh(self._ctx)
        if ctx.caller is not None and self.registry.is_revoked(ctx.caller.client_id):
            return self.refuse(message, "the client this listener writes as has been revoked")
        reply = await self.server.ingest.ingest(self.mapping_name, message, self.mapping.media_types[0], ctx)
        # What the mapping read to translate is in the access log, as for any request (patientdatalagen).
        self.server.audit.record_request(ctx.caller, ctx.audit, "operation", reply.status)
        return bytes(reply.body)

    def refuse(self, partial: bytes, reason: str) -> bytes:
        refuse = getattr(self._mapping, "refuse", None)
        if refuse is None:
            return b""
        return bytes(refuse(partial, reason))


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
