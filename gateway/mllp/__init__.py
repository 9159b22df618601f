"""HL7 v2 over MLLP: framing, the listener, TLS, a small client. Knows bytes and connections,
nothing of HL7 content or FHIR: a :class:`MessageHandler` turns a message into its reply."""
from gateway.mllp.client import MllpClient
from gateway.mllp.lifecycle import run_until_signalled
from gateway.mllp.server import MessageHandler, MllpServer, MllpStats
from gateway.mllp.tls import client_tls_context, server_tls_context

__all__ = ["MessageHandler", "MllpClient", "MllpServer", "MllpStats", "client_tls_context", "run_until_signalled",
           "server_tls_context"]
