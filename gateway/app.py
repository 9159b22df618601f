"""create_app(settings): wiring only — store, FHIR server, FHIR routes, error handlers."""
from __future__ import annotations

from contextlib import asynccontextmanager

from fastapi import FastAPI

from gateway.api import errors
from gateway.api.auth import AuthGate
from gateway.api.edge import EdgeGuard
from gateway.api.router import FhirMount, FhirRouter
from gateway.api.routes import FhirHandlers
from gateway.fhir.server import FhirServer
from gateway.settings import Settings
from gateway.store.sqlite import SqliteStore


def create_app(settings: Settings | None = None, notify_sender=None) -> FastAPI:
    """``notify_sender``: what POSTs notifications instead of the network (tests)."""
    settings = settings or Settings.from_env()
    store = SqliteStore(settings.db_path, settings.sqlite_synchronous, settings.busy_timeout)
    server = FhirServer(settings, store, notify_sender=notify_sender)
    gate = AuthGate(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await store.open()
        await server.prepare_store()
        gate.open(settings.db_path)
        await server.audit.start()
        await server.engine.start(deliver=settings.notify_deliver)
        try:
            yield
        finally:
            await server.engine.stop()
            await server.audit.stop()
            server.offload.close()
            gate.close()
            server.close()
            await store.close()

    app = FastAPI(title="Samverkan Gateway", version="0.1.0", lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.fhir = server
    app.state.auth = gate
    # FHIR (and its SMART token endpoint) lives under /fhir with its own URL grammar.
    app.add_middleware(FhirMount, router=FhirRouter(FhirHandlers(server), gate))
    app.add_middleware(EdgeGuard, settings=settings)  # outermost: Host check and body deadline for all paths
    errors.install(app)
    return app
