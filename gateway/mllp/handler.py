"""Where ``gateway mllp`` gets its :class:`~gateway.mllp.server.MessageHandler`.

The transport knows framing and connections; turning a message into FHIR writes and an ACK is
the ingest service's job (issue 14), built separately so the socket layer can be tested
without it.
"""
from __future__ import annotations

from gateway.mllp.server import MessageHandler
from gateway.settings import Settings


def make_handler(settings: Settings, client_id: str, mapping_name: str) -> MessageHandler:
    """The handler that ingests every message with mapping ``mapping_name`` as the registered
    client ``client_id`` (its organisation authors what the messages write)."""
    # TODO(issue 14): build this on the ingest service (gateway.mapping.ingest.IngestService, being
    # written by the lead): open the store as `gateway serve` does, look up the mapping by name in
    # the mappings registry, and wrap ingest + its ACK builder in handle()/refuse().
    raise NotImplementedError(
        f"gateway mllp cannot ingest messages yet: the ingest service behind mapping {mapping_name!r} "
        "(issue 14) is not built; the MLLP transport is ready for it")
