"""The contract of a mapping module: source message in, FHIR transaction out, the sender's reply back.

Inbound, the gateway hands a mapping the message as it arrived (bytes, in the mapping's media
type) and a ``Lookup`` that searches the shared plan *as the sending client sees it*; the mapping
answers a ``Translation``: the transaction Bundle to write, plus what identifies the message (a
repeat changes nothing and gets the same reply) and what it is about and when (an older message
about the same subject changes nothing). The gateway writes the Bundle through ``FhirCore`` as the
sending client — validation, the access rule, the access log and notifications apply exactly as
to any FHIR client — and asks the mapping for the reply the sender expects (an HL7 ACK, a JSON
result) with the ``Outcome``. Outbound, ``render`` turns a notification Bundle into the
receiver's format, inside the ordinary delivery engine.

A mapping is pure translation: it never writes, never holds connections, and keeps no state
between messages (the gateway keeps message keys and ordering in its store, in the transaction
of the write). ``mappings/hl7v2_adt`` is the worked example; ``mappings/README.md`` the guide.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

if TYPE_CHECKING:
    from gateway.terminology.conceptmaps import ConceptMaps


class MappingError(Exception):
    """The message cannot be taken as it is. ``reject``: the message itself is unacceptable (HL7 AR:
    unparseable, unsupported type or version); otherwise its content is in error (HL7 AE).
    ``code`` is the mapping's own error code (HL7 table 0357), ``location`` where the problem is
    (``PID^1^3`` for HL7, a JSON path for JSON formats); the message says what to fix."""

    def __init__(self, message: str, *, code: str = "207", location: str = "", reject: bool = False):
        super().__init__(message)
        self.code = code
        self.location = location
        self.reject = reject


@dataclass
class Translation:
    """What a message means for the shared plan."""

    bundle: dict | None  # a transaction Bundle to write; None: nothing to write, only a reply
    key: str | None = None  # the message's identity at its sender (HL7: sending facility + MSH-10)
    subject: str | None = None  # what it is about, for ordering (HL7: the stay's visit number)
    occurred_us: int | None = None  # when it happened at the sender (µs since the epoch)
    context: Any = None  # what the mapping needs again to build its reply


@dataclass(frozen=True)
class Outcome:
    """What became of a translated message."""

    written: tuple[str, ...] = ()  # "Type/id/_history/vid" of each resource the write made, in entry order
    error: Exception | None = None  # a MappingError or a gateway FhirError (status, OperationOutcome)
    note: str = ""  # e.g. why nothing was written (an older message than the stored state)

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class Reply:
    body: bytes
    media_type: str
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


class Lookup(Protocol):
    organization: str  # the sending organisation's HSA-id (who the written resources belong to)
    conceptmaps: ConceptMaps  # the gateway's ConceptMaps (profiles/conceptmaps/), as ConceptMap/$translate uses them

    async def search(self, rtype: str, query: str) -> list[dict]:
        """The resources a FHIR search (``Encounter?identifier=…``) finds for the sending client."""


class Mapping(ABC):
    """One source format. Subclasses set the class attributes and implement ``translate`` and ``reply``."""

    name: ClassVar[str]  # as in POST /fhir/$ingest?mapping=<name>
    version: ClassVar[str]
    title: ClassVar[str]
    media_types: ClassVar[tuple[str, ...]]  # what $ingest accepts for this mapping
    outbound_media_type: ClassVar[str | None] = None  # a Subscription payload type it renders, if any

    @abstractmethod
    async def translate(self, message: bytes, lookup: Lookup) -> Translation:
        """The message as a transaction; raise MappingError for what cannot be taken."""

    @abstractmethod
    def reply(self, message: bytes, translation: Translation | None, outcome: Outcome) -> Reply:
        """The answer the sender expects; ``translation`` is None when translating failed."""

    def render(self, notification: dict) -> bytes:
        """A notification (a FHIR ``history`` Bundle as the Backport IG shapes it) in the receiver's
        format; only mappings with an ``outbound_media_type``."""
        raise NotImplementedError(f"{self.name} does not render notifications")
