"""What one request touched: filled in by the FHIR core, written to the access log after."""
from __future__ import annotations

from dataclasses import dataclass, field

from gateway.store.records import StoredResource


@dataclass
class AuditTrail:
    seen: list[StoredResource] = field(default_factory=list)  # resources served to the caller
    changes: int = 0  # access-log entries already written inside the request's transaction(s)

    def saw(self, resources: list[StoredResource]) -> None:
        self.seen.extend(resources)
