"""Notifications in the municipality's format (``application/vnd.samverkan.kommun+json``).

The delivery engine builds the Backport IG notification (a ``history`` Bundle: the status
``Parameters`` first, then the focus of each event) exactly as for a FHIR subscriber — the same
events, numbers, access decisions and retries — and only the body changes: this module turns
that Bundle into ``kommun-json-notification/1``, so a case system that does not speak FHIR reads
what happened in its own terms:

- ``type``, ``subscription``, ``status``, ``eventsSinceSubscriptionStart``, ``topic`` and
  ``event`` (the topic's name, e.g. ``task-status-changed``) from the status Parameters;
- one ``events[]`` entry per notification event: ``eventNumber`` and ``timestamp``; with
  ``id-only`` the ``focus`` (type, id, absolute reference, created/updated/deleted); with
  ``full-resource`` also the facts a municipality acts on, as far as the resource carries them:
  ``task`` (status, reason, activity / KSI / KVÅ code, owner, deadline, the case system's own
  case, decision and action ids …) or ``stay`` (admission, planned discharge date and its
  revisions, utskrivningsklar and its revocation, may-need-services, discharge …); a resource
  the subscriber sees only as a LUSEN notice carries only what the notice holds. ``empty``
  carries event numbers only.

Pure: the Bundle in, bytes out; nothing is looked up, nothing logged.
"""
from __future__ import annotations

import json
import re

FORMAT = "kommun-json-notification/1"
SD = "https://samverkan.example.se/fhir/StructureDefinition/"
MAY_NEED, PLANNED, UK = SD + "may-need-services", SD + "planned-discharge-date", SD + "utskrivningsklar"
ACTIVITY = "https://samverkan.example.se/fhir/CodeSystem/samverkan-activity"
KSI = "https://samverkan.example.se/fhir/CodeSystem/ksi"
KVA = "urn:oid:1.2.752.116.1.3.2.1.4"
HSA = "urn:oid:1.2.752.29.4.19"
OWN_IDS = re.compile(r"^urn:samverkan:kommun-json:[^:]+:(arende|beslut|insats)$")
ID_NAMES = {"arende": "caseId", "beslut": "decisionId", "insats": "actionId"}
CHANGE = {"POST": "created", "PUT": "updated", "DELETE": "deleted"}


def render_notification(bundle: dict) -> bytes:
    entries = bundle.get("entry") or []
    params = (entries[0].get("resource") or {}).get("parameter") or [] if entries else []
    out: dict = {"format": FORMAT}
    events = []
    for p in params:
        name = p.get("name")
        if name == "subscription":
            out["subscription"] = (p.get("valueReference") or {}).get("reference")
        elif name == "topic":
            out["topic"] = p.get("valueCanonical")
            out["event"] = out["topic"].rstrip("/").rsplit("/", 1)[-1]
        elif name == "status":
            out["status"] = p.get("valueCode")
        elif name == "type":
            out["type"] = p.get("valueCode")
        elif name == "events-since-subscription-start":
            out["eventsSinceSubscriptionStart"] = int(p.get("valueString", "0"))
        elif name == "notification-event":
            events.append({q["name"]: _value(q) for q in p.get("part") or []})
        elif name == "error":
            out["error"] = (p.get("valueCodeableConcept") or {}).get("text")
    if bundle.get("timestamp"):
        out["timestamp"] = bundle["timestamp"]
    focus_entries: dict[str, list[dict]] = {}
    for entry in entries[1:]:
        focus_entries.setdefault(entry.get("fullUrl", ""), []).append(entry)
    out["events"] = [_event(e, focus_entries) for e in events]
    return json.dumps(out, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def _value(part: dict):
    return next((v for k, v in part.items() if k.startswith("value")), None)


def _event(event: dict, focus_entries: dict[str, list[dict]]) -> dict:
    out: dict = {"eventNumber": int(event.get("event-number", "0")), "timestamp": event.get("timestamp")}
    reference = (event.get("focus") or {}).get("reference")
    if not reference:
        return out  # payload 'empty': the number is all the subscriber is told
    base, rtype, rid = _split(reference)
    queue = focus_entries.get(reference) or []
    # full-resource: one entry per version shown, in event order (the last one stands for the rest)
    entry = queue.pop(0) if len(queue) > 1 else queue[0] if queue else {}
    method = (entry.get("request") or {}).get("method", "PUT")
    out["focus"] = {"type": rtype, "id": rid, "reference": reference, "change": CHANGE.get(method, "updated")}
    resource = entry.get("resource")
    if isinstance(resource, dict):
        if (resource.get("meta") or {}).get("versionId"):
            out["focus"]["version"] = int(resource["meta"]["versionId"])
        if rtype == "Task":
            out["task"] = _task(resource, base)
        elif rtype == "Encounter":
            out["stay"] = _stay(resource, base)
        elif resource.get("status"):
            out["resource"] = {"status": resource["status"]}
    return out


def _split(reference: str) -> tuple[str, str, str]:
    """(base, type, id) of a focus URL such as https://gw/fhir/Task/1."""
    parts = reference.rsplit("/", 2)
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 else ("", parts[0], parts[-1])


def _absolute(ref: dict | None, base: str) -> dict | None:
    """A Reference as the receiver can use it: absolute URL, HSA-id, display."""
    if not isinstance(ref, dict):
        return None
    out: dict = {}
    target = ref.get("reference")
    if isinstance(target, str):
        out["reference"] = target if "://" in target or target.startswith(("urn:", "#")) or not base \
            else f"{base}/{target}"
    ident = ref.get("identifier") or {}
    if ident.get("system") == HSA and ident.get("value"):
        out["hsaId"] = ident["value"]
    elif ident.get("value"):
        out["identifier"] = {"system": ident.get("system"), "value": ident["value"]}
    if ref.get("display"):
        out["display"] = ref["display"]
    return out or None


def _text(concept: dict | None) -> str | None:
    if not isinstance(concept, dict):
        return None
    return concept.get("text") or next((c.get("display") or c.get("code") for c in concept.get("coding") or []
                                        if c.get("display") or c.get("code")), None)


def _put(out: dict, key: str, value) -> None:
    if value not in (None, "", [], {}):
        out[key] = value


def _task(task: dict, base: str) -> dict:
    out: dict = {}
    codings = (task.get("code") or {}).get("coding") or []
    for key, system in (("activity", ACTIVITY), ("ksi", KSI), ("kva", KVA)):
        _put(out, key, next((c.get("code") for c in codings if c.get("system") == system), None))
    for key in ("status", "intent", "description", "authoredOn", "lastModified"):
        _put(out, key, task.get(key))
    _put(out, "service", (task.get("code") or {}).get("text"))
    _put(out, "statusReason", _text(task.get("statusReason")))
    _put(out, "businessStatus", _text(task.get("businessStatus")))
    for key in ("owner", "requester", "focus"):
        _put(out, key, _absolute(task.get(key), base))
    _put(out, "patient", _absolute(task.get("for"), base))
    _put(out, "partOf", [r for r in (_absolute(p, base) for p in task.get("partOf") or []) if r])
    _put(out, "basedOn", [r for r in (_absolute(p, base) for p in task.get("basedOn") or []) if r])
    _put(out, "deadline", ((task.get("restriction") or {}).get("period") or {}).get("end"))
    _put(out, "executionPeriod", task.get("executionPeriod"))
    for ident in [*(task.get("identifier") or []), task.get("groupIdentifier") or {}]:
        m = OWN_IDS.match(ident.get("system") or "")
        if m and ident.get("value"):
            out[ID_NAMES[m.group(1)]] = ident["value"]
    _put(out, "identifiers", [{"system": i.get("system"), "value": i.get("value")}
                              for i in task.get("identifier") or [] if i.get("value")])
    _put(out, "notes", [{k: n[k] for k in ("time", "text") if n.get(k)} for n in task.get("note") or []
                        if n.get("text")])
    return out


def _parts(extension: dict) -> dict:
    return {p.get("url"): _value(p) for p in extension.get("extension") or []}


def _stay(enc: dict, base: str) -> dict:
    out: dict = {}
    _put(out, "status", enc.get("status"))
    _put(out, "class", (enc.get("class") or {}).get("code"))
    _put(out, "admitted", (enc.get("period") or {}).get("start"))
    _put(out, "discharged", (enc.get("period") or {}).get("end"))
    _put(out, "patient", _absolute(enc.get("subject"), base))
    _put(out, "unit", _absolute(enc.get("serviceProvider"), base))
    _put(out, "identifiers", [{"system": i.get("system"), "value": i.get("value")}
                              for i in enc.get("identifier") or [] if i.get("value")])
    ext = enc.get("extension") or []
    may = next((_parts(e) for e in ext if e.get("url") == MAY_NEED), None)
    if may:
        _put(out, "mayNeedServices", {k: may[k] for k in ("municipality", "primaryCare", "judged") if k in may})
    planned = [_parts(e) for e in ext if e.get("url") == PLANNED]
    if planned:
        history = sorted(planned, key=lambda p: p.get("recorded") or "")
        _put(out, "plannedDischargeDate", history[-1].get("date"))
        out["plannedDischargeDates"] = [{k: p[k] for k in ("date", "recorded", "reason") if k in p} for p in history]
    notices = [_parts(e) for e in ext if e.get("url") == UK]
    if notices:
        in_force = next((n for n in reversed(notices) if "revoked" not in n), None)
        out["utskrivningsklar"] = in_force.get("time") if in_force else None
        out["utskrivningsklarNotices"] = [{k: n[k] for k in ("time", "revoked") if k in n} for n in notices]
    tags = [t.get("code") for t in (enc.get("meta") or {}).get("tag") or []]
    if "SUBSETTED" in tags:
        out["subsetted"] = True  # a LUSEN admission notice: the rest of the stay is not the municipality's to see
    return out
