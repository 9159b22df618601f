"""TLS for the MLLP listener: the server authenticates the sender, not only the other way round.

Over plain MLLP anyone who reaches the port writes as the listener's client (one registered
organisation); on a real network the hospital's interface engine must prove who it is. So the
server context requires a client certificate issued by the operator's CA (``CERT_REQUIRED``;
a connection without one, or with one the CA did not sign, fails in the handshake and never
reaches the handler), and speaks TLS 1.2 or later only.
"""
from __future__ import annotations

import ssl
from os import PathLike

StrPath = str | PathLike[str]


def server_tls_context(cert: StrPath, key: StrPath, ca: StrPath) -> ssl.SSLContext:
    """The listener's context: its certificate chain and key, and the CA whose certificates
    senders must present."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.verify_mode = ssl.CERT_REQUIRED
    context.load_cert_chain(cert, key)
    context.load_verify_locations(cafile=ca)
    return context


def client_tls_context(ca: StrPath, cert: StrPath | None = None, key: StrPath | None = None) -> ssl.SSLContext:
    """A sender's context (tests, the demo): trust the listener's CA, present ``cert`` if given.
    The listener's certificate must name the host the client connects to."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context
