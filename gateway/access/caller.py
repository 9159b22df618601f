"""The authenticated caller of one request: a registered client acting for one organisation."""
from __future__ import annotations

from dataclasses import dataclass

from gateway.access.scopes import ScopeSet


@dataclass(frozen=True)
class Caller:
    client_id: str
    organization: str  # the organisation's HSA-id, e.g. SE2321000016-HALM
    scopes: ScopeSet
    admin: bool = False  # may search the access log (AuditEvent)
