"""A Subscription resource (Subscriptions R5 Backport IG, R4 flavour) read as a delivery channel.

What a client may ask for, and what the server decides: the topic must be one of ours, filters
must be ones the topic offers (``[type]?param=value`` or ``param=value``; equality on reference
and token parameters, values OR-ed with commas, parameters AND-ed), the channel is rest-hook with
``application/fhir+json`` or a media type a mapping module renders (``Mapping.outbound_media_type``,
e.g. the municipality format): the row then carries it as the ``Content-Type`` header it is sent
with, so the channel (and its handshake on change) and the store stay as they are, and delivery
knows whom to ask for the body. ``status`` is the server's: a client asks for ``requested``/``active``
(a handshake follows whenever the channel is new or changed, or the subscription was not
active), or ``off``; ``error`` is set only by the server.
"""
from __future__ import annotations

import json
import re
from functools import lru_cache
from typing import Any, Callable
from urllib.parse import parse_qsl, urlsplit

from yarl import URL

from gateway.errors import InvalidResource, Issue
from gateway.events.endpoints import NEVER, EndpointPolicy, literal_address, odd_spelling
from gateway.events.topics import Topic, TopicCatalog
from gateway.fhir.references import parse_reference
from gateway.search.dates import parse_instant
from gateway.search.registry import SearchRegistry
from gateway.store.records import IndexRows, SubscriptionRow

BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/StructureDefinition/"
FILTER_CRITERIA = BACKPORT + "backport-filter-criteria"
PAYLOAD_CONTENT = BACKPORT + "backport-payload-content"
HEARTBEAT_PERIOD = BACKPORT + "backport-heartbeat-period"
TIMEOUT = BACKPORT + "backport-timeout"
MAX_COUNT = BACKPORT + "backport-max-count"
CONTENTS = ("empty", "id-only", "full-resource")
MIME = "application/fhir+json"
MAX_TIMEOUT_S = 120
MAX_EVENTS_PER_NOTIFICATION = 100
MAX_FILTERS, MAX_FILTER_VALUES, MAX_HEADERS = 10, 100, 20  # every write tests every subscriber's filters
_FILTER_TYPES = ("reference", "token")
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name (RFC 9110 token)
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
# Headers the gateway sets itself: a channel may not change how the request is framed or signed.
_RESERVED_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "content-type", "te",
                               "upgrade", "keep-alive", "expect", "trailer", "x-samverkan-signature"})


def _invalid(message: str, path: str) -> InvalidResource:
    return InvalidResource(message, issues=[Issue("invalid", message, expression=[path])])


def _extension(element: object, url: str) -> dict | None:
    if not isinstance(element, dict):
        return None
    return next((e for e in element.get("extension") or [] if isinstance(e, dict) and e.get("url") == url), None)


class SubscriptionRules:
    def __init__(self, topics: TopicCatalog, registry: SearchRegistry, local_base: str | None,
                 endpoints: EndpointPolicy | None = None, outbound: Callable[[str], Any] | None = None):
        """``outbound``: the mapping that renders a payload media type, or None
        (``MappingRegistry.for_outbound``); without it only FHIR payloads are served."""
        self.topics = topics
        self.outbound = outbound
        # Where notifications may go (endpoints.py): checked here for what the URL itself says,
        # and again for every connection (sender.py).
        self.endpoints = endpoints or EndpointPolicy()
        self.registry = registry
        self.local_base = local_base

    def channel(self, sid: str, resource: dict, organization: str, client: str) -> SubscriptionRow:
        """The channel a valid Subscription asks for (state still the client's); 422 naming what to fix."""
        topic = self._topic(resource.get("criteria"))
        channel = resource.get("channel") or {}
        if channel.get("type") != "rest-hook":
            raise _invalid(f"Subscription.channel.type '{channel.get('type')}' is not supported here; "
                                  "use rest-hook.", "Subscription.channel.type")
        payload = channel.get("payload", MIME)
        media, *params = [p.strip() for p in payload.split(";")]
        versions = [p.split("=", 1)[1].strip() for p in params if p.startswith("fhirVersion=")]
        rendered = media.lower() if media.lower() != MIME and self.outbound and self.outbound(media.lower()) else None
        if rendered is None and (media != MIME or any(v not in ("4.0", "4.0.1") for v in versions)):
            raise _invalid(f"Subscription.channel.payload '{payload}' is not supported; use {MIME} "
                           "(FHIR R4), or a media type a mapping of this gateway renders (gateway mappings list).",
                           "Subscription.channel.payload")
        content = (_extension(channel.get("_payload"), PAYLOAD_CONTENT) or {}).get("valueCode", "id-only")
        if content not in CONTENTS:
            raise _invalid(f"The payload content '{content}' is not one of {', '.join(CONTENTS)}.", "Subscription.channel.payload")
        endpoint = channel.get("endpoint")
        self._check_endpoint(endpoint, content)
        headers = tuple(channel.get("header") or ())
        if len(headers) > MAX_HEADERS:
            raise _invalid(f"At most {MAX_HEADERS} channel headers.", "Subscription.channel.header")
        for h in headers:
            name, sep, value = h.partition(":")
            if not sep or not _TOKEN.match(name.strip()) or _CONTROL.search(value):
                raise _invalid(f"Subscription.channel.header '{name.strip()[:40]}…' must be 'Name: value' on one "
                               "line: a header name, then printable text.", "Subscription.channel.header")
            if name.strip().lower() in _RESERVED_HEADERS:
                raise _invalid(f"Subscription.channel.header may not set {name.strip()}: the gateway sets it.",
                               "Subscription.channel.header")
        if rendered is not None:  # never a client's header (reserved above): the payload type the mapping renders
            headers += (f"Content-Type: {rendered}",)
        heartbeat = (_extension(channel, HEARTBEAT_PERIOD) or {}).get("valueUnsignedInt", 0)
        timeout = (_extension(channel, TIMEOUT) or {}).get("valueUnsignedInt", 10)
        if not 1 <= timeout <= MAX_TIMEOUT_S:
            raise _invalid(f"The timeout must be 1 to {MAX_TIMEOUT_S} seconds, not {timeout}.", "Subscription.channel.extension")
        max_count = (_extension(channel, MAX_COUNT) or {}).get("valuePositiveInt", 20)
        filters = [self._filter(topic, f.get("valueString")) for f in (resource.get("_criteria") or {})
                   .get("extension") or [] if isinstance(f, dict) and f.get("url") == FILTER_CRITERIA]
        if sum(len(f) for f in filters) > MAX_FILTERS:
            raise _invalid(f"At most {MAX_FILTERS} filter parameters per subscription.",
                           "Subscription.criteria.extension")
        return SubscriptionRow(
            sid, topic.url, organization, resource.get("status", "requested"), endpoint, content, headers,
            heartbeat, timeout, min(max_count, MAX_EVENTS_PER_NOTIFICATION),
            json.dumps([item for f in filters for item in f]), client,
            ends_us=parse_instant(resource["end"]) if isinstance(resource.get("end"), str) else 0)

    def _topic(self, criteria: object) -> Topic:
        topic = self.topics.by_url.get(criteria) if isinstance(criteria, str) else None
        if topic is None:
            known = ", ".join(sorted(self.topics.by_url))
            raise _invalid(f"Subscription.criteria must be the canonical URL of a topic this server "
                                  f"supports ({known}); '{criteria}' is not one.", "Subscription.criteria")
        return topic

    def _check_endpoint(self, endpoint: object, content: str) -> None:
        try:
            parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
            valid = parts is not None and parts.scheme in ("https", "http") and bool(parts.hostname) \
                and (parts.port is None or parts.port > 0) and not _CONTROL.search(endpoint)
        except ValueError:  # a malformed IPv6 address or port
            valid = False
        if not valid:
            raise _invalid("Subscription.channel.endpoint must be an absolute https URL.", "Subscription.channel.endpoint")
        host = parts.hostname
        try:  # the host as aiohttp connects to it (IDNA: full-width digits are ASCII digits there)
            connect_host = URL(endpoint).raw_host or host
        except ValueError:
            raise _invalid("Subscription.channel.endpoint must be an absolute https URL.",
                           "Subscription.channel.endpoint") from None
        self._check_address(host, connect_host)
        if parts.scheme == "http" and not (self.endpoints.http_loopback and self.endpoints.is_loopback_host(connect_host)):
            raise _invalid("Subscription.channel.endpoint must use https: notifications name patients' resources "
                           "(plain http goes only to a loopback address, and only where the gateway allows it "
                           "for development: GATEWAY_NOTIFY_HTTP_LOOPBACK=on).", "Subscription.channel.endpoint")

    def _check_address(self, host: str, connect_host: str) -> None:
        """What the URL itself says about where it goes: the operator's list, and hosts written as
        addresses (or ``localhost``). Names are resolved, and checked, at every connection."""
        path = "Subscription.channel.endpoint"
        for h in dict.fromkeys((host, connect_host)):
            means = odd_spelling(h)
            if means is not None:
                raise _invalid(f"Subscription.channel.endpoint host '{h[:60]}' is an address in an unusual spelling "
                               f"(read as {means}); name the receiver's host, or write an address as a.b.c.d "
                               "(IPv6 in brackets).", path)
        endpoints = self.endpoints
        allowed = ", ".join(endpoints.allowed_hosts)
        if not endpoints.named(connect_host):
            raise _invalid(f"Notifications may go only to the hosts this gateway allows ({allowed}); "
                           f"'{host}' is not one.", path)
        address = literal_address(connect_host)
        if address is None and endpoints.is_loopback_host(connect_host):
            why = endpoints.refusal(connect_host, "127.0.0.1")
            if why is not None:
                raise _invalid(f"Subscription.channel.endpoint names '{host}', the gateway's own machine: "
                               "notifications go only to public addresses. Name the receiver by its public host "
                               "name, or ask the gateway's operator to open the host.", path)
            return
        why = endpoints.refusal(connect_host, address) if address is not None else None
        if why is None:
            return
        if why in NEVER:
            raise _invalid(f"Subscription.channel.endpoint names {address}, a {why} address, which is never a "
                           "notification receiver: name the receiver by its public host name.", path)
        raise _invalid(f"Subscription.channel.endpoint names {address}, a {why} address: notifications go only to "
                       "public addresses. Name the receiver by its public host name, or ask the gateway's "
                       "operator to open the host.", path)

    def _filter(self, topic: Topic, text: object) -> list[list]:
        """``Task?owner=Organization/1&status=requested``, ``Task.owner=…`` or ``owner=…`` →
        [[type, param, [values]], ...]."""
        if not isinstance(text, str) or "=" not in text:
            raise _invalid(f"The filter '{text}' must look like [type]?[parameter]=[value].", "Subscription.criteria.extension")
        types = sorted(topic.filters)
        rtype, query = (text.split("?", 1) if "?" in text.split("=", 1)[0] else (None, text))
        out = []
        for name, value in parse_qsl(query, keep_blank_values=True):
            if rtype is None and "." in name:
                rtype, name = name.split(".", 1)
            ftype = rtype or (types[0] if len(types) == 1 else None)
            allowed = topic.filters.get(ftype or "", frozenset())
            if name not in allowed:
                offered = "; ".join(f"{t}: {', '.join(sorted(p))}" for t, p in sorted(topic.filters.items()))
                raise _invalid(f"Topic {topic.url} cannot be filtered by '{name}'"
                                      f"{' on ' + ftype if ftype else ''}; it offers {offered or 'no filters'} "
                                      "(equality only, no modifiers).", "Subscription.criteria.extension")
            param = self.registry.get(ftype, name)
            if param is None or param.type not in _FILTER_TYPES or not value:
                raise _invalid(f"The filter {ftype}.{name} needs a value (a reference or a code).",
                               "Subscription.criteria.extension")
            values = value.split(",")
            if len(values) > MAX_FILTER_VALUES:
                raise _invalid(f"The filter {ftype}.{name} has {len(values)} values; at most {MAX_FILTER_VALUES}.",
                               "Subscription.criteria.extension")
            out.append([ftype, name, param.type, [self._value(param.type, v) for v in values]])
        return out

    def _value(self, ptype: str, value: str) -> str:
        if ptype == "reference":
            parsed = parse_reference(value, (self.local_base,))  # (None, id) for a bare id: any type
            return f"{parsed[0] or ''}/{parsed[1]}" if parsed else f"/{value}"
        return value


@lru_cache(maxsize=4096)
def _parsed(filters_json: str) -> tuple:
    return tuple((ftype, name, ptype, frozenset(values)) for ftype, name, ptype, values in json.loads(filters_json))


def matches(filters_json: str, rtype: str, index: IndexRows) -> bool:
    """Every filter on ``rtype`` has one of its values among the version's index values."""
    for ftype, name, ptype, values in _parsed(filters_json):
        if ftype != rtype:
            continue
        if ptype == "reference":  # values are "Type/id", or "/id" for any type
            ok = any(f"{t or ''}/{i}" in values or f"/{i}" in values for p, t, i in index.references if p == name)
        else:  # values are "system|code", "|code" (no system) or "code" (any system)
            ok = any(f"{s or ''}|{c}" in values or c in values for p, s, c in index.tokens if p == name)
        if not ok:
            return False
    return True
