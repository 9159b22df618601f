"""A Subscription resource (Subscriptions R5 Backport IG, R4 flavour) read as a delivery channel.

What a client may ask for, and what the server decides: the topic must be one of ours, filters
must be ones the topic offers (``[type]?param=value`` or ``param=value``; equality on reference
and token parameters, values OR-ed with commas, parameters AND-ed), the channel is rest-hook with
``application/fhir+json``. ``status`` is the server's: a client asks for ``requested``/``active``
(a handshake follows whenever the channel is new or changed, or the subscription was not
active), or ``off``; ``error`` is set only by the server.
"""
from __future__ import annotations

import ipaddress
import json
from functools import lru_cache
from urllib.parse import parse_qsl, urlsplit

from gateway.errors import InvalidResource, Issue
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
_FILTER_TYPES = ("reference", "token")


def _invalid(message: str, path: str) -> InvalidResource:
    return InvalidResource(message, issues=[Issue("invalid", message, expression=[path])])


def _extension(element: object, url: str) -> dict | None:
    if not isinstance(element, dict):
        return None
    return next((e for e in element.get("extension") or [] if isinstance(e, dict) and e.get("url") == url), None)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SubscriptionRules:
    def __init__(self, topics: TopicCatalog, registry: SearchRegistry, local_base: str | None):
        self.topics = topics
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
        if payload.split(";")[0].strip() != MIME or "fhirVersion" in payload and "fhirVersion=4.0" not in payload:
            raise _invalid(f"Subscription.channel.payload '{payload}' is not supported; use {MIME} "
                                  "(FHIR R4).", "Subscription.channel.payload")
        content = (_extension(channel.get("_payload"), PAYLOAD_CONTENT) or {}).get("valueCode", "id-only")
        if content not in CONTENTS:
            raise _invalid(f"The payload content '{content}' is not one of {', '.join(CONTENTS)}.", "Subscription.channel.payload")
        endpoint = channel.get("endpoint")
        self._check_endpoint(endpoint, content)
        headers = tuple(channel.get("header") or ())
        for h in headers:
            name, sep, _ = h.partition(":")
            if not sep or not name.strip() or any(c in h for c in "\r\n") or " " in name.strip():
                raise _invalid(f"Subscription.channel.header '{name.strip()}…' must be 'Name: value' on "
                                      "one line.", "Subscription.channel.header")
        heartbeat = (_extension(channel, HEARTBEAT_PERIOD) or {}).get("valueUnsignedInt", 0)
        timeout = (_extension(channel, TIMEOUT) or {}).get("valueUnsignedInt", 10)
        if not 1 <= timeout <= MAX_TIMEOUT_S:
            raise _invalid(f"The timeout must be 1 to {MAX_TIMEOUT_S} seconds, not {timeout}.", "Subscription.channel.extension")
        max_count = (_extension(channel, MAX_COUNT) or {}).get("valuePositiveInt", 20)
        filters = [self._filter(topic, f.get("valueString")) for f in (resource.get("_criteria") or {})
                   .get("extension") or [] if isinstance(f, dict) and f.get("url") == FILTER_CRITERIA]
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

    @staticmethod
    def _check_endpoint(endpoint: object, content: str) -> None:
        parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
        if parts is None or parts.scheme not in ("https", "http") or not parts.hostname:
            raise _invalid("Subscription.channel.endpoint must be an absolute https URL.", "Subscription.channel.endpoint")
        if parts.scheme == "http" and content == "full-resource" and not _is_loopback(parts.hostname):
            raise _invalid("full-resource notifications carry patient data: the endpoint must use https "
                                  "(plain http only to a loopback address, for development).", "Subscription.channel.endpoint")

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
                raise _invalid(f"The filter {ftype}.{name} needs a value (a reference or a code).", "Subscription.criteria.extension")
            out.append([ftype, name, param.type, [self._value(param.type, v) for v in value.split(",")]])
        return out

    def _value(self, ptype: str, value: str) -> str:
        if ptype == "reference":
            parsed = parse_reference(value, (self.local_base,))  # (None, id) for a bare id: any type
            return f"{parsed[0] or ''}/{parsed[1]}" if parsed else f"/{value}"
        return value


@lru_cache(maxsize=4096)
def _parsed(filters_json: str) -> tuple:
    return tuple((ftype, name, ptype, tuple(values)) for ftype, name, ptype, values in json.loads(filters_json))


def matches(filters_json: str, rtype: str, index: IndexRows) -> bool:
    """Every filter on ``rtype`` has one of its values among the version's index values."""
    for ftype, name, ptype, values in _parsed(filters_json):
        if ftype != rtype:
            continue
        if ptype == "reference":
            have = {(t or "", i) for p, t, i in index.references if p == name}
            ok = any(tuple(v.split("/", 1)) in have if not v.startswith("/")
                     else any(i == v[1:] for _, i in have) for v in values)
        else:
            have = {(s or "", c) for p, s, c in index.tokens if p == name}
            ok = any(_token_match(v, have) for v in values)
        if not ok:
            return False
    return True


def _token_match(value: str, have: set[tuple[str, str]]) -> bool:
    if "|" not in value:
        return any(c == value for _, c in have)
    system, code = value.split("|", 1)
    return (system, code) in have
