"""``kommun-json``: what a municipal case system (Treserva, Lifecare, Combine …) knows, in and out.

Inbound (``POST /fhir/$ingest?mapping=kommun-json``, ``application/json``): one change in one
case — the person, biståndsbeslut, needs by IBIC life area, the handläggare, status changes of
hemtjänst and hemsjukvård actions — checked against ``schema.json`` (``message``) and written
as the sending municipality: Tasks, Conditions, its own Patient, and activities in the person's
shared plan or its own (``translate``, ``resources``, ``plan``). The reply is JSON (``reply``).

Outbound: a Subscription whose ``channel.payload`` is ``application/vnd.samverkan.kommun+json``
gets each notification rendered as ``kommun-json-notification/1`` (``render``) by the ordinary
delivery engine. Field by field: ``mappings/README.md``.
"""
from __future__ import annotations

from gateway.mapping import Lookup, Mapping, Outcome, Reply, Translation

from mappings.kommun_json.message import message_id_of, read_message
from mappings.kommun_json.render import render_notification
from mappings.kommun_json.reply import reply
from mappings.kommun_json.translate import translate

OUTBOUND_MEDIA_TYPE = "application/vnd.samverkan.kommun+json"


class KommunJsonMapping(Mapping):
    name = "kommun-json"
    version = "1.0.0"
    title = "Municipal case systems (kommun-json/1): biståndsbeslut, needs (IBIC), hemtjänst and hemsjukvård actions"
    media_types = ("application/json",)
    outbound_media_type = OUTBOUND_MEDIA_TYPE

    async def translate(self, message: bytes, lookup: Lookup) -> Translation:
        return await translate(read_message(message), lookup)

    def reply(self, message: bytes, translation: Translation | None, outcome: Outcome) -> Reply:
        return reply(message_id_of(message), translation, outcome)

    def render(self, notification: dict) -> bytes:
        return render_notification(notification)
