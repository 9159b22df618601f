"""What the store keeps: resource versions as canonical bytes, and their search index rows."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple
from datetime import datetime, timezone


@dataclass(frozen=True, slots=True)
class StoredResource:
    """One version of a resource. ``body`` is the canonical JSON served as is; None if deleted."""

    rtype: str
    rid: str
    vid: int
    last_updated_us: int  # microseconds since the epoch, UTC
    body: bytes | None
    seq: int = 0  # store-wide, monotonically increasing version sequence
    author: str | None = None  # HSA-id of the organisation that created it: its custodian ('' the gateway's)
    patient: str | None = None  # id of the Patient the resource is about ('' none)
    person: str | None = None  # the person that Patient stands for (``gateway.access.person``; '' none)

    @property
    def deleted(self) -> bool:
        return self.body is None

    @property
    def etag(self) -> str:
        return f'W/"{self.vid}"'

    @property
    def last_updated(self) -> datetime:
        return datetime.fromtimestamp(self.last_updated_us / 1e6, tz=timezone.utc)


@dataclass(slots=True)
class IndexRows:
    """Search index values of one resource version, produced by the search layer."""

    tokens: list[tuple[str, str | None, str]] = field(default_factory=list)  # (param, system, code)
    references: list[tuple[str, str | None, str]] = field(default_factory=list)  # (param, type, id-or-url)
    dates: list[tuple[str, int, int]] = field(default_factory=list)  # (param, low_us, high_us)
    strings: list[tuple[str, str, str]] = field(default_factory=list)  # (param, normalised, raw)


@dataclass(frozen=True, slots=True)
class AccessFilter:
    """Only resources this organisation may see: its own, directory types, and those whose
    custodian discloses their person's data to it at ``now_us`` (see gateway.access)."""

    organization: str
    now_us: int
    open_types: frozenset[str]
    # Patients under sekretessmarkering / skyddad folkbokföring do not match a search on their
    # address unless the caller authored them: (system, codes) of those labels, or None.
    protected_labels: tuple[str, tuple[str, ...]] | None = None
    # Also what it may read under LUSEN's admission-notice exception: the notice routes it stands
    # for (notice_access rows); () when the search uses a parameter on elements the notice does
    # not disclose, or the organisation receives no notices.
    notice_routes: tuple[str, ...] = ()


class AuditRecord(NamedTuple):
    """One access-log entry: who (client, organisation) did what (action, interaction) to which
    resources of which patient, with what outcome (AuditEvent codes 0 / 4 / 8). A request that
    touched several patients' data gives one entry per patient.

    A tuple of plain strings and ints, in the table's column order: thousands wait for each
    batch, and such tuples cost the garbage collector nothing and go to SQLite as they are."""

    recorded_us: int
    action: str  # C R U D E
    interaction: str  # read vread search history-instance create update patch delete transaction operation
    outcome: str  # "0" success, "4" refused or failed by the client's fault, "8" server failure
    client: str
    organization: str
    patient: str  # '' when none
    entities: str  # "Task/1/_history/2" …, one per line
    query: str = ""  # the search or operation request, as sent
    custodian: str = ""  # the organisation whose records these are (their author): its admins see the entry
    seq: int = 0

    @property
    def entity_list(self) -> list[str]:
        return self.entities.split("\n") if self.entities else []


def format_instant(us: int) -> str:
    """FHIR instant with millisecond precision, UTC."""
    dt = datetime.fromtimestamp(us / 1e6, tz=timezone.utc)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"


@dataclass(frozen=True, slots=True)
class SubscriptionRow:
    """A topic-based Subscription as the delivery engine keeps it: its channel (from the resource)
    and its delivery state (the store's, never reset while the subscription exists)."""

    id: str
    topic: str
    organization: str  # who subscribed ('' trusted): events reach it only if it may see the focus
    state: str  # requested | active | error | off
    endpoint: str
    content: str = "id-only"  # empty | id-only | full-resource
    headers: tuple[str, ...] = ()  # "Name: value"
    heartbeat_s: int = 0  # 0: no heartbeats
    timeout_s: int = 10
    max_count: int = 20  # events per notification
    filters: str = "[]"  # JSON [[type, param, param type, [values]], ...]: each param matches one of its values
    client: str = ""  # the client that subscribed (access log)
    events: int = 0  # events-since-subscription-start: the last event number handed out
    delivered: int = 0  # every event up to this number was delivered (or withheld)
    withheld: int = 0  # events not delivered because the subscriber may not see their focus
    attempts: int = 0  # failed attempts since the last success
    failing_since_us: int = 0
    next_attempt_us: int = 0
    last_sent_us: int = 0  # last notification of any kind (heartbeats are due after silence)
    error: str = ""
    ends_us: int = 0  # Subscription.end: no events after it, then off (0: no end)


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One event of one subscription: number ``number`` in its sequence, about a resource version
    (``seq``: the store's version sequence) that an ``interaction`` (create, update, delete) made."""

    subscription: str
    number: int
    recorded_us: int
    topic: str
    rtype: str
    rid: str
    vid: int
    seq: int
    interaction: str
    withheld: bool = False
