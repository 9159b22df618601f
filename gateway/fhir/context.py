"""Per-request facts the FHIR core needs, whatever the caller (HTTP, bundle entry, mapping)."""
from __future__ import annotations

from dataclasses import dataclass

from gateway.access.caller import Caller
from gateway.access.trail import AuditTrail
from gateway.budget import Reservation


@dataclass(frozen=True)
class RequestContext:
    base_url: str  # public FHIR base, no trailing slash: for Location, fullUrl, links
    lenient: bool = False  # Prefer: handling=lenient — ignore unknown search parameters
    prefer_return: str | None = None  # Prefer: return=minimal|representation|OperationOutcome
    caller: Caller | None = None  # None: a trusted internal caller (or GATEWAY_SECURITY=off)
    audit: AuditTrail | None = None  # what this request touched, for the access log
    memory: Reservation | None = None  # what the request holds and may carry (HTTP); None: bounds of its own
