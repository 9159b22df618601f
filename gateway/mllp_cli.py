"""``gateway mllp``: the HL7 v2 listener as a process of its own, beside ``gateway serve``.

Every message it receives is written as one registered client (``--client-id``): the hospital
interface engine at the other end is that client, its organisation the author of what the
messages write, so access rules and the access log treat it like any FHIR client. The client
must exist and not be revoked when the listener starts.

Binds 127.0.0.1 unless told otherwise: plain MLLP has no authentication, so on a network it
belongs behind TLS with client certificates (``--tls-cert --tls-key --tls-ca``).
"""
from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Optional

import typer

from gateway.mllp.lifecycle import run_until_signalled
from gateway.mllp.server import MllpServer
from gateway.mllp.tls import server_tls_context
from gateway.settings import Settings

log = logging.getLogger("gateway.mllp")


def mllp(
    client_id: str = typer.Option(..., help="Registered client the messages are written as (gateway clients add)"),
    host: str = typer.Option("127.0.0.1", help="Interface to listen on"),
    port: int = typer.Option(2575, help="TCP port (2575 is MLLP's registered port)"),
    mapping: str = typer.Option("hl7v2-adt", help="Mapping that turns the messages into FHIR"),
    db: Optional[str] = typer.Option(None, help="SQLite file of the store (env GATEWAY_DB)"),
    tls_cert: Optional[Path] = typer.Option(None, help="TLS: this listener's certificate chain (PEM)"),
    tls_key: Optional[Path] = typer.Option(None, help="TLS: its private key (PEM)"),
    tls_ca: Optional[Path] = typer.Option(None, help="TLS: CA that signs the senders' client certificates (PEM); "
                                                     "a sender without one is refused"),
    max_message_bytes: Optional[int] = typer.Option(None, help="Larger messages are refused (AR) and the "
                                                               "connection closed (env GATEWAY_MLLP_MAX_MESSAGE_BYTES)"),
    idle_timeout: Optional[float] = typer.Option(None, help="Seconds without a complete message before a "
                                                            "connection is closed (env GATEWAY_MLLP_IDLE_TIMEOUT)"),
) -> None:
    """Listen for HL7 v2 messages over MLLP and ingest them as --client-id. Stops gracefully on
    SIGTERM / Ctrl-C: messages being handled finish and their ACKs are sent."""
    try:
        settings = Settings.from_env().with_overrides(db_path=db, mllp_max_message_bytes=max_message_bytes,
                                                      mllp_idle_timeout=idle_timeout)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    context = _tls(tls_cert, tls_key, tls_ca)
    organization = _check_client(settings.db_path, client_id)
    from gateway.mllp import handler as handlers  # looked up here, so tests can put a stub in its place

    try:
        handler = handlers.make_handler(settings, client_id, mapping)
    except (NotImplementedError, ValueError) as exc:
        typer.echo(f"gateway mllp: {exc}", err=True)
        raise typer.Exit(1) from None
    if host in ("0.0.0.0", "::", "") and context is None:
        log.warning("MLLP listening on every interface without TLS: anyone who reaches port %d writes as "
                    "organisation %s; use --tls-cert/--tls-key/--tls-ca", port, organization)
    server = MllpServer(handler, host=host, port=port, max_message_bytes=settings.mllp_max_message_bytes,
                        idle_timeout=settings.mllp_idle_timeout, ssl=context,
                        max_connections=settings.mllp_max_connections)
    typer.echo(f"Samverkan Gateway MLLP: {host}:{port}{' (TLS)' if context else ''}, mapping {mapping}, "
               f"client {client_id} ({organization}), store {settings.db_path}")
    try:
        with asyncio.Runner(loop_factory=_loop_factory()) as runner:
            runner.run(_serve(server, handler))
    except OSError as exc:  # the port is taken, or not ours to bind
        typer.echo(f"gateway mllp: cannot listen on {host}:{port}: {exc.strerror or exc}", err=True)
        raise typer.Exit(1) from None


async def _serve(server: MllpServer, handler: object) -> None:
    """Open what the handler needs (the store, the FHIR server), serve, close it after the last ACK."""
    opener = getattr(handler, "open", None)
    if opener is not None:
        await opener()
    try:
        await run_until_signalled(server)
    finally:
        closer = getattr(handler, "close", None)
        if closer is not None:
            await closer()


def _tls(cert: Path | None, key: Path | None, ca: Path | None) -> ssl.SSLContext | None:
    given = [p for p in (cert, key, ca) if p is not None]
    if not given:
        return None
    if len(given) != 3:
        raise typer.BadParameter("TLS needs all three of --tls-cert, --tls-key and --tls-ca (the CA that signs "
                                 "the senders' client certificates)")
    for option, path in (("--tls-cert", cert), ("--tls-key", key), ("--tls-ca", ca)):
        if not os.path.isfile(path):  # type: ignore[arg-type]
            raise typer.BadParameter(f"no file {path}", param_hint=option)
    try:
        return server_tls_context(cert, key, ca)  # type: ignore[arg-type]
    except (ssl.SSLError, ValueError) as exc:
        raise typer.BadParameter(f"the certificate, key or CA cannot be used: {exc}") from None


def _check_client(db_path: str, client_id: str) -> str:
    """The client's organisation; a clear error if the client is unknown or revoked."""
    if not os.path.isfile(db_path):
        raise typer.BadParameter(f"no gateway database at {db_path}: set GATEWAY_DB or --db to the store "
                                 "`gateway serve` uses", param_hint="--db")
    from gateway.auth.registry import ClientRegistry

    registry = ClientRegistry(db_path)
    try:
        client = registry.get(client_id)
    finally:
        registry.close()
    if client is None:
        raise typer.BadParameter(f"no registered client {client_id} in {db_path}: register the sending system "
                                 "with `gateway clients add` and pass its client_id", param_hint="--client-id")
    if client.revoked:
        raise typer.BadParameter(f"client {client_id} ({client.name}) is revoked: its messages would be refused; "
                                 "register a new client", param_hint="--client-id")
    return client.organization


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop where it is installed, as `gateway serve` runs on it."""
    try:
        import uvloop
    except ImportError:  # not on this platform
        return None
    return uvloop.new_event_loop
