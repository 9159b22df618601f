"""The authenticated caller of one request: a registered client acting for one organisation."""
from __future__ import annotations

from dataclasses import dataclass

from gateway.access.scopes import ScopeSet


@dataclass(frozen=True)
class Caller:
    client_id: str
    organization: str  # the organisation's HSA-id, e.g. SE2321000016-HALM
    scopes: ScopeSet
    admin: bool = False  # reads the access log (AuditEvent) about its organisation's records and users
    operator: bool = False  # runs the gateway: reads the whole access log
