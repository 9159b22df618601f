"""Ingest: a source message through its mapping and the one FHIR core, once, in order.

1. The mapping translates the message (``Mapping.translate``), reading the shared plan through a
   ``Lookup`` that searches as the sending client (the access rule and the access log apply).
2. The transaction Bundle is written by ``BundleProcessor`` as that client. Inside the same store
   transaction (``_Guard``):
   - a message already taken (its key, scoped to the sending organisation) is not written again:
     the reply stored with it is answered, byte for byte;
   - a message about a subject (an HL7 stay) older than the newest one taken changes nothing;
   - otherwise the key, the reply and the subject's time are stored with the write, so a crash
     leaves either all of them or none.
3. A write that lost a race (412: the resource changed after the mapping read it) is translated
   again from the new state, a few times.

Keys and subjects are scoped by the sending organisation: another organisation can neither
replay nor pre-empt them.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import parse_qsl

from gateway.errors import FhirError, PreconditionFailed
from gateway.fhir.canonical import parse_json
from gateway.fhir.context import RequestContext
from gateway.mapping.interface import Mapping, MappingError, Outcome, Reply, Translation
from gateway.mapping.registry import MappingRegistry
from gateway.search.dates import now_us
from gateway.store import Transaction
from gateway.terminology.conceptmaps import ConceptMaps

log = logging.getLogger("gateway.mapping")
RETRIES = 3  # translations after a lost race


class _Repeat(Exception):
    def __init__(self, reply: Reply):
        self.reply = reply


class _Older(Exception):
    """The message is older than the newest one taken about its subject."""


@dataclass
class _Guard:
    """Runs inside the write's store transaction: before the entries, and after them."""

    mapping: Mapping
    message: bytes
    translation: Translation
    key: str | None
    subject: str | None
    reply: Reply | None = None

    async def before(self, tx: Transaction) -> None:
        if self.key is not None:
            stored = await tx.mapping_reply(self.key)
            if stored is not None:
                raise _Repeat(Reply(stored[0], stored[1]))
        t = self.translation
        if self.subject is not None and t.occurred_us is not None:
            newest = await tx.mapping_sequence(self.subject)
            if newest is not None and t.occurred_us < newest:
                raise _Older()

    async def after(self, tx: Transaction, written: list[str]) -> None:
        t = self.translation
        self.reply = self.mapping.reply(self.message, t, Outcome(written=tuple(written)))
        if self.key is not None:
            await tx.record_mapping_reply(self.key, self.reply.body, self.reply.media_type, now_us())
        if self.subject is not None and t.occurred_us is not None:
            await tx.set_mapping_sequence(self.subject, t.occurred_us)


class IngestService:
    def __init__(self, server, registry: MappingRegistry):
        """``server``: the ``FhirServer`` (its search service and bundle processor)."""
        self.server = server
        self.registry = registry

    async def ingest(self, name: str | None, message: bytes, media_type: str | None, ctx: RequestContext) -> Reply:
        mapping = self.registry.get(name, media_type)
        org = ctx.caller.organization if ctx.caller else ""
        for attempt in range(RETRIES + 1):
            try:
                translation = await mapping.translate(message, _Lookup(self.server.search, ctx,
                                                                           self.server.conceptmaps))
            except MappingError as exc:
                return mapping.reply(message, None, Outcome(error=exc))
            if translation.bundle is None:
                return mapping.reply(message, translation, Outcome())
            guard = _Guard(mapping, message, translation, _scoped(mapping, org, translation.key),
                           _scoped(mapping, org, translation.subject))
            try:
                await self.server.bundles.process(translation.bundle, ctx, guard=guard)
            except _Repeat as repeat:
                return repeat.reply
            except _Older:
                return mapping.reply(message, translation, Outcome(note="older than what is stored about it: "
                                                                        "nothing changed"))
            except PreconditionFailed as exc:
                if attempt < RETRIES:
                    continue  # the state it was translated from changed meanwhile: translate again
                return mapping.reply(message, translation, Outcome(error=exc))
            except FhirError as exc:
                return mapping.reply(message, translation, Outcome(error=exc))
            return guard.reply
        raise AssertionError("unreachable")


def _scoped(mapping: Mapping, organization: str, value: str | None) -> str | None:
    return None if value is None else f"{mapping.name}|{organization}|{value}"


class _Lookup:
    """Searches as the sending client: what it may not see, the mapping cannot see either. The
    ConceptMaps are the gateway's own (``ConceptMap/$translate`` answers from the same service)."""

    def __init__(self, search, ctx: RequestContext, conceptmaps: ConceptMaps):
        self.search_service = search
        self.ctx = ctx
        self.organization = ctx.caller.organization if ctx.caller else "gateway"
        self.conceptmaps = conceptmaps

    async def search(self, rtype: str, query: str) -> list[dict]:
        pieces = await self.search_service.search(rtype, parse_qsl(query, keep_blank_values=True), self.ctx)
        body = parse_json(b"".join(pieces))
        return [e["resource"] for e in body.get("entry") or []
                if (e.get("search") or {}).get("mode", "match") == "match" and "resource" in e]
