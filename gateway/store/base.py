"""The storage interface the FHIR core talks to.

Narrow on purpose: versions in, versions out, typed search plans, paging snapshots. FHIR
semantics (ids, ETags, bundles, conditional logic) stay in ``gateway.fhir``; a PostgreSQL
backend implements these methods and runs the same test suite.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Callable

from gateway.store.plan import SearchMatches, SearchPlan
from gateway.store.records import AccessFilter, AuditRecord, EventRecord, IndexRows, StoredResource, SubscriptionRow


class VersionConflict(Exception):
    """Another writer created this version first (optimistic concurrency lost)."""


@dataclass(frozen=True)
class HistoryQuery:
    rtype: str | None = None  # None: whole system
    rid: str | None = None  # with rtype: one instance
    since_us: int | None = None  # only versions updated at or after this instant
    before_seq: int | None = None  # keyset paging: versions older than this seq
    limit: int = 20
    access: AccessFilter | None = None  # None: every version (trusted caller)
    max_bytes: int | None = None  # end the page before the version whose body would pass this (one at least)


@dataclass(frozen=True)
class AuditQuery:
    patient: str | None = None
    organization: str | None = None
    since_us: int | None = None
    until_us: int | None = None
    before: tuple[int, int] | None = None  # (recorded, id) of the last entry already served
    limit: int = 20
    visible_to: str | None = None  # only entries by this organisation's users or about its records (None: all)


@dataclass(frozen=True)
class Snapshot:
    """A remembered search result so that its pages stay stable while data changes."""

    snapshot_id: str
    rtype: str
    query: str  # the normalised query string that produced it (for links and includes)
    total: int
    seqs: list[int]
    owner: str = ""  # organisation that ran the search ('' trusted): only it may page through it


class Reader(ABC):
    """Reads; on a Transaction they see its own uncommitted writes."""

    @abstractmethod
    async def read(self, rtype: str, rid: str) -> StoredResource | None:
        """Current version (a deleted one has ``body`` None), or None if never created."""

    @abstractmethod
    async def search(self, plan: SearchPlan) -> SearchMatches: ...

    @abstractmethod
    async def read_seqs(self, seqs: list[int]) -> list[StoredResource]:
        """The given versions, in the given order (search pages, conditional matches)."""


class Transaction(Reader):
    @abstractmethod
    async def put(self, version: StoredResource, index: IndexRows | None,
                  access: tuple[str, str, str] | None = None) -> StoredResource:
        """Write ``version`` (vid must be current vid + 1, or 1 for a new resource) and make it current.

        ``body`` None records a deletion and drops the index rows. ``access`` = (author
        organisation, patient id, person): the author is kept from the first version. Raises VersionConflict.
        """

    @abstractmethod
    async def append_audit(self, records: list[AuditRecord]) -> None:
        """Access-log entries for the changes of this transaction (committed with them)."""

    @abstractmethod
    async def grant_persons(self, organizations: list[str]) -> set[str]:
        """Persons any of these organisations holds a grant row for, as recipient (any time)."""

    @abstractmethod
    async def replace_grants(self, person: str, grants: list[tuple[str, str, int, int]]) -> None:
        """Set whose data about this person which organisations may see: (custodian, recipient,
        from_us, to_us)."""

    @abstractmethod
    async def replace_notice_access(self, person: str, rows: list[tuple[str, str, str]]) -> None:
        """Set what may be read about this person under LUSEN's admission-notice exception:
        (route, resource type, id)."""

    @abstractmethod
    async def notice_persons(self, routes: list[str]) -> set[str]:
        """Persons any of these notice routes holds a row for."""

    @abstractmethod
    async def has_grant(self, organization: str, pairs: list[tuple[str, str]], now_us: int) -> set[tuple[str, str]]:
        """``Store.has_grant`` as this transaction sees it (its own grant changes included)."""

    @abstractmethod
    async def notice_visible(self, routes: tuple[str, ...], keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """``Store.notice_visible`` as this transaction sees it."""

    @abstractmethod
    async def read_version(self, rtype: str, rid: str, vid: int) -> StoredResource | None:
        """``Store.read_version`` as this transaction sees it."""

    @abstractmethod
    async def about_person(self, rtype: str, person: str) -> list[StoredResource]:
        """Current resources of ``rtype`` about the person (through any Patient that stands for it)."""

    @abstractmethod
    async def rekey_person(self, patient: str, person: str) -> set[str]:
        """The Patient now stands for ``person``, and so do the resources about it; returns the
        persons they stood for before."""

    @abstractmethod
    async def maintenance(self) -> set[str]:
        """Work left for the gateway after an upgrade (e.g. 'access-rebuild')."""

    @abstractmethod
    async def maintenance_done(self, task: str) -> None: ...

    @abstractmethod
    async def persons(self) -> list[tuple[str, str]]:
        """(Patient id, person) pairs of the access rows (an upgrade's rebuild)."""

    # -- ingest (gateway.mapping): source messages taken, and the newest time per subject ------
    @abstractmethod
    async def mapping_reply(self, key: str) -> tuple[bytes, str] | None:
        """(reply, media type) given to the message with this key, if it was taken."""

    @abstractmethod
    async def record_mapping_reply(self, key: str, reply: bytes, media_type: str, received_us: int) -> None: ...

    @abstractmethod
    async def mapping_sequence(self, subject: str) -> int | None:
        """The time (µs) of the newest message taken about ``subject``."""

    @abstractmethod
    async def set_mapping_sequence(self, subject: str, occurred_us: int) -> None: ...

    @abstractmethod
    def on_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once this transaction's writes are durable (not at all if it rolls back)."""

    # -- notifications (gateway.events): the outbox and each subscription's delivery state ----
    @abstractmethod
    async def save_subscription(self, row: SubscriptionRow, restart: bool) -> None:
        """Insert or change a subscription's channel, keeping its counters; ``restart`` clears
        the retry state (a new handshake follows)."""

    @abstractmethod
    async def drop_subscription(self, sub: str) -> None: ...

    @abstractmethod
    async def load_subscription(self, sub: str) -> SubscriptionRow | None: ...

    @abstractmethod
    async def subscribers(self, topics: list[str], now_us: int) -> list[tuple[str, str, str, str]]:
        """(id, topic, filters, organisation) of the subscriptions to these topics that number events
        at ``now_us`` (all but those off or past their end)."""

    @abstractmethod
    async def append_events(self, subs: list[tuple[str, str]], recorded_us: int, rtype: str, rid: str, vid: int,
                            seq: int, interaction: str) -> None:
        """The next event of each (subscription, topic), about this resource version."""

    @abstractmethod
    async def count_subscriptions(self, organization: str) -> int:
        """Subscriptions of this organisation that are not off."""

    @abstractmethod
    async def count_withheld(self, subs: list[str]) -> None:
        """One more event each of these subscriptions' organisations may not see (not numbered)."""

    @abstractmethod
    async def record_delivery(self, sub: str, delivered: int, withheld: list[int], sent_us: int) -> None:
        """Events up to ``delivered`` are done: sent, or ``withheld`` (numbers) by the access decision."""

    @abstractmethod
    async def record_sent(self, sub: str, sent_us: int) -> None:
        """A heartbeat or handshake went out: the channel was not silent."""

    @abstractmethod
    async def record_failure(self, sub: str, failing_since_us: int, next_attempt_us: int, error: str) -> None: ...

    @abstractmethod
    async def set_subscription_state(self, sub: str, state: str, error: str = "") -> None: ...


class Store(Reader):
    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Transaction]:
        """All-or-nothing unit of writes; rolled back if the block raises."""

    @abstractmethod
    async def read_granted(self, rtype: str, rid: str, organization: str,
                           now_us: int) -> tuple[StoredResource | None, bool]:
        """``read``, and whether its custodian discloses its person's data to ``organization`` at ``now_us``."""

    @abstractmethod
    async def read_version(self, rtype: str, rid: str, vid: int) -> StoredResource | None: ...

    @abstractmethod
    async def read_many(self, keys: list[tuple[str, str]]) -> list[StoredResource]:
        """Current, non-deleted versions of the given (type, id) pairs; missing ones left out."""

    @abstractmethod
    async def references_from(
        self, rtype: str, rids: list[str], params: list[str] | None
    ) -> list[tuple[str, str]]:
        """(type, id) targets that the given resources reference through ``params`` (None: all)."""

    @abstractmethod
    async def referencing(
        self, source_type: str, param: str | None, targets: list[tuple[str, str]]
    ) -> list[int]:
        """Seqs of current ``source_type`` resources that reference any target via ``param``."""

    @abstractmethod
    async def history(self, query: HistoryQuery) -> tuple[list[StoredResource], int, bool]:
        """Versions newest first, the total count matching the query (ignoring paging), and
        whether more may follow (the page is ``limit`` long, or was ended by ``max_bytes``)."""

    @abstractmethod
    async def read_large(self, seqs: list[int]) -> list[StoredResource]:
        """``read_seqs`` of versions known (``body_sizes``) to be large together: read without
        holding up the event loop."""

    @abstractmethod
    async def body_sizes(self, seqs: list[int]) -> dict[int, int]:
        """The stored size of each version's body (0 for a deletion), read without the bodies:
        a page is fitted to its byte bound before anything large is read."""

    @abstractmethod
    async def current_sizes(self, keys: list[tuple[str, str]]) -> dict[tuple[str, str], int]:
        """``body_sizes`` of the current versions of (type, id) pairs; missing ones left out."""

    @abstractmethod
    async def append_audit(self, records: list[AuditRecord]) -> None:
        """Access-log entries in their own transaction (read accesses, refused requests)."""

    @abstractmethod
    async def read_audit(self, seq: int) -> AuditRecord | None: ...

    @abstractmethod
    async def search_audit(self, query: AuditQuery) -> tuple[list[AuditRecord], int]:
        """Newest first, and the total matching (ignoring paging)."""

    @abstractmethod
    async def has_grant(self, organization: str, pairs: list[tuple[str, str]], now_us: int) -> set[tuple[str, str]]:
        """Those (custodian, person) pairs whose custodian discloses the person's data to
        ``organization`` at ``now_us``."""

    @abstractmethod
    async def notice_visible(self, routes: tuple[str, ...], keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Those (type, id) the notice routes may read under LUSEN's admission-notice exception."""

    @abstractmethod
    async def subscription(self, sub: str) -> SubscriptionRow | None: ...

    @abstractmethod
    async def subscriptions(self, organization: str | None = None) -> list[SubscriptionRow]:
        """Every subscription (of one subscribing organisation): $status, the engine's work list."""

    @abstractmethod
    async def subscription_events(self, sub: str, first: int, last: int, limit: int) -> list[EventRecord]:
        """Retained events numbered ``first``..``last`` in order, at most ``limit``."""

    @abstractmethod
    async def prune_events(self, before_us: int) -> int:
        """Forget events (and the replies to source messages) recorded before ``before_us``; returns
        how many events."""

    @abstractmethod
    async def save_snapshot(self, snapshot: Snapshot, ttl_seconds: int) -> None: ...

    @abstractmethod
    async def load_snapshot(self, snapshot_id: str) -> Snapshot | None: ...
