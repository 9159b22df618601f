"""The region's message: one R4 resource, or a Bundle of them, read into the items to translate.

A Bundle may be a ``collection``, ``transaction`` or ``batch`` (entries with ``request`` POST or
PUT; the whole message is written as one transaction either way: it is taken whole or not at all).
Each item remembers every name the message may refer to it by — its ``fullUrl``, ``Type/id``
(also behind the sender's absolute base) and ``identifier:system|value`` for each identifier —
so that references between the region's resources find each other whatever form the EHR uses.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field

from gateway.errors import FhirError, Issue
from gateway.fhir.canonical import DEFAULT_MAX_JSON_DEPTH, parse_json
from gateway.mapping import MappingError

TYPES = ("Patient", "Encounter", "Task", "CarePlan")
BUNDLE_TYPES = ("collection", "transaction", "batch")
# Type/id at the end of a reference, behind any base, with or without /_history/n.
LITERAL = re.compile(r"(?:^|/)(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")


@dataclass
class Item:
    """One of the region's resources, and what the mapping learns about it on the way."""

    index: int  # its entry in the message (0 for a single resource)
    where: str  # 'Bundle.entry[2].resource' or 'Task': where the sender finds it
    rtype: str
    resource: dict  # a copy of the sender's resource, normalised in place
    sender_id: str | None
    names: set[str] = field(default_factory=set)
    found: dict | None = None  # our resource for it, as the sending client sees it
    keys: list[str] = field(default_factory=list)  # its identifiers as search tokens, the key first
    query: str = ""  # how it is found again (conditional create)
    ref: str = ""  # how the transaction refers to it: Type/id, or urn:uuid: when new
    write: dict | None = None  # what to store; None: what is stored already says it
    warnings: list[Issue] = field(default_factory=list)
    stated_meta: dict = field(default_factory=dict)  # meta.security and meta.tag, when the region sends them


@dataclass
class Message:
    items: list[Item]
    key: str | None  # Bundle.identifier system|value: the message's identity at the sender


def read_message(body: bytes) -> Message:
    try:
        data = parse_json(body, DEFAULT_MAX_JSON_DEPTH)  # bounded before any recursive walk
    except FhirError as exc:
        raise MappingError(str(exc), code="structure", reject=True) from None
    if not isinstance(data, dict) or not isinstance(data.get("resourceType"), str):
        raise MappingError("The message is not a FHIR resource: send a JSON object with resourceType.",
                           code="structure", reject=True)
    if data["resourceType"] != "Bundle":
        return Message([_item(0, data["resourceType"], data, None)], None)
    btype = data.get("type")
    if btype not in BUNDLE_TYPES:
        raise MappingError(f"Bundle.type '{btype}' is not taken; send a {', '.join(BUNDLE_TYPES)} Bundle.",
                           code="not-supported", location="Bundle.type", reject=True)
    entries = data.get("entry") or []
    if not isinstance(entries, list) or not entries:
        raise MappingError("The Bundle has no entries.", code="required", location="Bundle.entry", reject=True)
    items = []
    for i, entry in enumerate(entries):
        where = f"Bundle.entry[{i}]"
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            raise MappingError(f"{where} has no resource.", code="required", location=where)
        request = entry.get("request")
        method = request.get("method") if isinstance(request, dict) else None
        if method not in (None, "POST", "PUT"):
            raise MappingError(f"{where}.request.method {method} is not taken: send the resource (POST or PUT); "
                               "to withdraw one, send it with status entered-in-error.", code="not-supported",
                               location=f"{where}.request.method")
        full_url = entry.get("fullUrl")
        items.append(_item(i, resource.get("resourceType"), resource, full_url if isinstance(full_url, str) else None,
                           f"{where}.resource"))
    identity = data.get("identifier") if isinstance(data.get("identifier"), dict) else {}
    key = f"{identity.get('system', '')}|{identity['value']}" if isinstance(identity.get("value"), str) else None
    return Message(items, key)


def _item(index: int, rtype: object, resource: dict, full_url: str | None, where: str | None = None) -> Item:
    where = where or str(rtype)
    if rtype not in TYPES:
        raise MappingError(f"{where}: {rtype} is not taken by region-fhir; it takes {', '.join(TYPES)}.",
                           code="not-supported", location=f"{where}.resourceType")
    sender_id = resource.get("id") if isinstance(resource.get("id"), str) else None
    item = Item(index, where, rtype, copy.deepcopy(resource), sender_id)
    if full_url:
        item.names.add(full_url)
        m = LITERAL.search(full_url)
        if m and m.group("type") == rtype:
            item.names.add(f"{rtype}/{m.group('id')}")
    if sender_id:
        item.names.add(f"{rtype}/{sender_id}")
    return item


def identifier_name(identifier: dict) -> str:
    """The name a logical reference ``{"identifier": {...}}`` finds a resource by."""
    return f"identifier:{identifier.get('system', '')}|{identifier.get('value', '')}"
