"""One FHIR server object: the core interactions, search, bundles and capability, wired to a store.

Everything that reaches FHIR data — HTTP routes, mapping modules, workflows — holds one of these.
"""
from __future__ import annotations

import logging
from datetime import datetime, timezone

from gateway.access.audit import AuditLog
from gateway.access.policy import AccessPolicy
from gateway.auth.directory import Directory
from gateway.auth.registry import ClientRegistry
from gateway.budget import MemoryBudget
from gateway.offload import Offload
from gateway.events.delivery import Delivery, DeliverySettings
from gateway.events.endpoints import EndpointPolicy
from gateway.events.engine import LocalEngine
from gateway.events.recorder import EventRecorder
from gateway.events.sender import HttpSender
from gateway.events.service import SubscriptionService
from gateway.events.topics import TopicCatalog
from gateway.fhir.bundles import BundleProcessor
from gateway.fhir.canonical import dumps, parse_json
from gateway.fhir.capability import capability_statement
from gateway.fhir.conformance import ConformanceLibrary
from gateway.fhir.interactions import FhirCore
from gateway.fhir.searching import SearchService
from gateway.fhir.types import SUPPORTED_TYPES
from gateway.mapping.ingest import IngestService
from gateway.mapping.registry import MappingRegistry
from gateway.operations.catalog import standard_operations
from gateway.search.query import QueryParser
from gateway.search.registry import SearchRegistry
from gateway.settings import Settings
from gateway.store import Store
from gateway.terminology.conceptmaps import ConceptMaps
from gateway.validation.validator import Validator, parse_required

log = logging.getLogger("gateway.server")


class FhirServer:
    def __init__(self, settings: Settings, store: Store, registry: SearchRegistry | None = None,
                 notify_sender=None):
        """``notify_sender``: what POSTs notifications (tests stand in a receiver); None: the network."""
        self.settings = settings
        self.store = store
        self.registry = registry or SearchRegistry.load(settings.profiles_dir, SUPPORTED_TYPES)
        parser = QueryParser(self.registry, settings.default_count, settings.max_count,
                             settings.search_snapshot_limit, settings.base_url)
        self.validator = Validator.load(settings.profiles_dir, parse_required(settings.required_profiles))
        self.conformance = ConformanceLibrary.load(settings.profiles_dir, self.registry.definitions)
        # One translation service for ConceptMap/$translate and the mappings (profiles/conceptmaps/).
        self.conceptmaps = ConceptMaps(self.conformance.resources("ConceptMap"))
        # Who receives LUSEN notices is the operator's directory, kept beside the registered clients.
        self.directory = Directory(settings.db_path) if settings.security != "off" else None
        self.access = AccessPolicy(store, parser.local_base, self.directory.routes if self.directory else None)
        self.audit = AuditLog(store)
        self.topics = TopicCatalog.load(settings.profiles_dir / "subscription-topics")
        endpoints = EndpointPolicy(settings.notify_allowed_hosts, settings.notify_http_loopback)
        # Mapping modules (entry points samverkan.mappings): $ingest, and the payload types they render.
        self.mappings = MappingRegistry.load()
        self.events = EventRecorder(self.topics, self.registry, parser.local_base, self.access, endpoints,
                                    settings.notify_max_subscriptions, self.mappings.for_outbound)
        self.core = FhirCore(store, self.registry, parser, self.validator, self.conformance, self.access, self.audit,
                             self.events)
        self.core.max_json_depth = settings.max_json_depth
        self.offload = self.core.offload = Offload(settings.busy_timeout)  # large bodies: off the event loop
        self.subscriptions = SubscriptionService(self.core)
        clients = ClientRegistry(settings.db_path) if settings.security != "off" else None
        if clients is not None:
            clients.wait_for_locks(0.02)  # its revocation reads run on the event loop
        delivery = Delivery(store, self.access, self.audit, self.subscriptions.set_status, settings.public_base,
                            DeliverySettings(settings.notify_retry_base, settings.notify_retry_max,
                                             settings.notify_retry_horizon,
                                             settings.notify_signing_key.encode() or None),
                            notify_sender or HttpSender(endpoints),
                            clients,
                            self.mappings.for_outbound)
        self.subscriptions.delivery = delivery
        retention = settings.event_retention_days * 86400
        if settings.redis_url:
            from gateway.events.engine_redis import RedisEngine
            self.engine = RedisEngine(store, delivery, settings.redis_url, settings.redis_prefix, settings.notify_tick,
                                      retention, settings.notify_claim_idle, settings.notify_lease_margin)
        else:
            self.engine = LocalEngine(store, delivery, settings.notify_tick, retention)
        self.events.connect(self.engine.wake)
        self.search = SearchService(store, self.registry, parser, settings.search_snapshot_ttl, self.conformance,
                                    self.access, self.audit)
        self.search.max_page_bytes = settings.max_page_bytes
        # Request bodies and response pages of all requests together (gateway.budget).
        self.memory = MemoryBudget(settings.max_inflight_bytes, settings.busy_timeout)
        self.bundles = BundleProcessor(self.core, self.search)
        # The operations, $ingest among them.
        self.ingest = IngestService(self, self.mappings)
        self.operations = standard_operations(self)
        self._published = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        self._capability: dict[str, bytes] = {}
        self._openapi: dict[str, bytes] = {}

    async def prepare_store(self) -> None:
        """Work an upgraded store asks for before serving: recompute the access rows."""
        async with self.store.transaction() as tx:
            if "access-rebuild" in await tx.maintenance():
                persons = await self.access.rows.rebuild(tx)
                await tx.maintenance_done("access-rebuild")
                log.warning("access rows recomputed for %d persons after a store upgrade", persons)

    def close(self) -> None:
        if self.directory is not None:
            self.directory.close()

    def capability(self, base_url: str) -> bytes:
        cached = self._capability.get(base_url)
        if cached is None:  # built once per base URL, served as bytes
            by_type: dict[str, list[str]] = {}
            for url, profile in self.validator.profiles.items():
                by_type.setdefault(profile.rtype, []).append(url)
            cached = capability_statement(self.registry, base_url, self._published, by_type, self.validator.required,
                                          secured=self.settings.security != "off", topics=sorted(self.topics.by_url),
                                          operations=self.operations)
            if len(self._capability) < 8:  # the Host header picks the base: bound the cache
                self._capability[base_url] = cached
        return cached

    def openapi(self, base_url: str) -> bytes:
        """The OpenAPI description generated from the CapabilityStatement, cached like it."""
        cached = self._openapi.get(base_url)
        if cached is None:
            from gateway.fhir.openapi import openapi_document
            cached = dumps(openapi_document(parse_json(self.capability(base_url))))
            if len(self._openapi) < 8:
                self._openapi[base_url] = cached
        return cached
