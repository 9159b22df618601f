"""Notification Bundles of the Backport IG, R4 flavour.

A ``history`` Bundle whose first entry is the subscription status (a ``Parameters`` with the
backport-subscription-status-r4 profile: subscription, topic, status, type,
events-since-subscription-start and one notification-event per event), then per event the
focus: its URL only (``id-only``) or the resource as the subscriber may see it
(``full-resource``); ``empty`` carries event numbers only. Counters are strings in R4.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass

from gateway.fhir.canonical import dumps, parse_json
from gateway.search.dates import now_us
from gateway.store.records import EventRecord, StoredResource, SubscriptionRow, format_instant

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
STATUS_PROFILE = BACKPORT + "backport-subscription-status-r4"
BUNDLE_PROFILE = BACKPORT + "backport-subscription-notification-r4"
ERROR_SYSTEM = "http://terminology.hl7.org/CodeSystem/subscription-error"


@dataclass(frozen=True)
class Delivered:
    """One event as it goes out: the focus version the subscriber may see (None: ids only)."""

    event: EventRecord
    focus: StoredResource | None = None


def status_parameters(base_url: str, row: SubscriptionRow, kind: str, events: list[Delivered] = (),
                      content: str | None = None) -> dict:
    content = content or row.content
    params: list[dict] = [{"name": "subscription", "valueReference": {"reference": f"{base_url}/Subscription/{row.id}"}}]
    if content != "empty":
        params.append({"name": "topic", "valueCanonical": row.topic})
    params += [{"name": "status", "valueCode": row.state}, {"name": "type", "valueCode": kind},
               {"name": "events-since-subscription-start", "valueString": str(row.events)}]
    for d in events:
        e = d.event
        part = [{"name": "event-number", "valueString": str(e.number)},
                {"name": "timestamp", "valueInstant": format_instant(e.recorded_us)}]
        if content != "empty":
            part.append({"name": "focus", "valueReference": {"reference": f"{base_url}/{e.rtype}/{e.rid}"}})
        params.append({"name": "notification-event", "part": part})
    if row.error and row.state == "error":
        params.append({"name": "error", "valueCodeableConcept": {
            "coding": [{"system": ERROR_SYSTEM, "code": "no-response"}], "text": row.error}})
    pid = str(uuid.uuid4())
    return {"resourceType": "Parameters", "id": pid, "meta": {"profile": [STATUS_PROFILE]}, "parameter": params}


def notification_bundle(base_url: str, row: SubscriptionRow, kind: str, events: list[Delivered] = (),
                        content: str | None = None) -> bytes:
    """handshake | heartbeat | event-notification | query-event."""
    content = content or row.content
    status = status_parameters(base_url, row, kind, events, content)
    entries = [{"fullUrl": f"urn:uuid:{status['id']}", "resource": status,
                "request": {"method": "GET", "url": f"{base_url}/Subscription/{row.id}/$status"},
                "response": {"status": "200"}}]
    if content != "empty":
        seen: set[tuple] = set()
        for d in events:
            e = d.event
            # id-only: one entry per resource; full-resource: one per version shown, so that a Task
            # accepted, started and completed in one notification shows all three.
            key = (e.rtype, e.rid, d.focus.vid if content == "full-resource" and d.focus else 0)
            if key in seen:
                continue
            seen.add(key)
            entries.append(_focus_entry(base_url, e, d.focus, content == "full-resource"))
    return dumps({"resourceType": "Bundle", "id": str(uuid.uuid4()), "meta": {"profile": [BUNDLE_PROFILE]},
                  "type": "history", "timestamp": format_instant(now_us()), "entry": entries})


def _focus_entry(base_url: str, event: EventRecord, focus: StoredResource | None, full: bool) -> dict:
    entry: dict = {"fullUrl": f"{base_url}/{event.rtype}/{event.rid}"}
    if full and focus is not None and focus.body is not None:
        entry["resource"] = parse_json(focus.body)
    if event.interaction == "delete":
        entry["request"], entry["response"] = {"method": "DELETE", "url": f"{event.rtype}/{event.rid}"}, {"status": "204"}
    elif event.interaction == "create":
        entry["request"], entry["response"] = {"method": "POST", "url": event.rtype}, {"status": "201"}
    else:
        entry["request"], entry["response"] = {"method": "PUT", "url": f"{event.rtype}/{event.rid}"}, {"status": "200"}
    return entry


def status_bundle(base_url: str, rows: list[SubscriptionRow]) -> bytes:
    """``$status``: a searchset with one query-status Parameters per subscription."""
    entries = []
    for row in rows:
        status = status_parameters(base_url, row, "query-status", content="id-only")
        entries.append({"fullUrl": f"urn:uuid:{status['id']}", "resource": status, "search": {"mode": "match"}})
    return dumps({"resourceType": "Bundle", "id": str(uuid.uuid4()), "type": "searchset", "total": len(rows),
                  "timestamp": format_instant(now_us()), "entry": entries})
