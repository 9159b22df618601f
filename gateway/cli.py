"""The ``gateway`` command: ``serve`` (the FHIR server on the embedded store), ``worker``
(notification delivery only, with Redis), ``mllp`` (the HL7 v2 listener), ``clients``
(register backend services), ``directory`` (who receives LUSEN notices), ``token`` (a developer's
access token), ``profiles``."""
from __future__ import annotations

import gc
import logging
import sys
from typing import Optional

import typer

from gateway.settings import Settings

cli = typer.Typer(help="Samverkan Gateway: shared care plans between region and municipality over FHIR R4.",
                  no_args_is_help=True, add_completion=False)


@cli.callback()
def _root() -> None:
    """Samverkan Gateway."""


@cli.command()
def serve(
    host: Optional[str] = typer.Option(None, help="Interface to listen on [env GATEWAY_HOST, default 127.0.0.1]"),
    port: Optional[int] = typer.Option(None, help="Port [env GATEWAY_PORT, default 8080]"),
    db: Optional[str] = typer.Option(None, help="SQLite file of the embedded store [env GATEWAY_DB]"),
    base_url: Optional[str] = typer.Option(None, help="Public FHIR base URL [env GATEWAY_BASE_URL]"),
) -> None:
    """Start the FHIR server (FHIR base at /fhir) on the embedded SQLite store."""
    import uvicorn

    from gateway.api.protocol import uvicorn_config
    from gateway.app import create_app

    settings = Settings.from_env().with_overrides(host=host, port=port, db_path=db,
                                                  base_url=base_url.rstrip("/") if base_url else None)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    typer.echo(f"Samverkan Gateway: FHIR base http://{settings.host}:{settings.port}/fhir, store {settings.db_path}")
    if settings.host in ("0.0.0.0", "::") and not (settings.allowed_hosts or settings.base_url):
        logging.getLogger("gateway").warning("Listening on every interface: requests are answered only for Host "
                                             "localhost/127.0.0.1; set GATEWAY_ALLOWED_HOSTS or GATEWAY_BASE_URL.")
    _fit_file_limit(settings.max_connections)
    app = create_app(settings)
    tune_for_event_loop()
    uvicorn.Server(uvicorn_config(app, settings)).run()


def _fit_file_limit(connections: int) -> None:
    """Each connection is a file descriptor: raise the soft limit so GATEWAY_MAX_CONNECTIONS (plus the
    store's files) fits, as far as the hard limit allows, instead of failing accept() at 1024."""
    try:
        import resource
    except ImportError:  # not on this platform
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = connections + 64
    if soft != resource.RLIM_INFINITY and soft < wanted:
        new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
        if new < wanted:
            logging.getLogger("gateway").warning("open-file limit %d is below GATEWAY_MAX_CONNECTIONS + 64", new)


def tune_for_event_loop() -> None:
    """Keep the event loop's waits for the GIL short while worker threads (large bodies, large
    page reads, commits) run Python beside it. Measured on 2 cores with 8 uploads of 9.5 MB and
    16 readers of 9.5 MB pages at once: probe p99 170 ms → 46 ms (bench/README.md).

    - What is loaded by now (models, profiles, SearchParameters: ~90k objects) lives as long as
      the process: frozen, it is left out of the garbage collector's full collections, which hold
      the GIL for as long as they walk.
    - A thread that wants the GIL waits for the switch interval before the holder is asked to
      give it up: 5 ms by default. The loop gives up the GIL at every SQLite statement and must
      wait that long to go on whenever a worker thread runs Python; 1 ms keeps that cheap.
    """
    gc.freeze()
    sys.setswitchinterval(0.001)


@cli.command()
def worker(db: Optional[str] = typer.Option(None, help="SQLite file of the store [env GATEWAY_DB]")) -> None:
    """Deliver notifications only (no HTTP): one of any number of processes sharing the Redis
    stream (GATEWAY_REDIS_URL must be set). Stops on SIGTERM / Ctrl-C; unsent work is taken over."""
    import asyncio
    import signal

    from gateway.fhir.server import FhirServer
    from gateway.store.sqlite import SqliteStore

    settings = Settings.from_env().with_overrides(db_path=db)
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    if not settings.redis_url:
        typer.echo("gateway worker needs GATEWAY_REDIS_URL: on the embedded default, `gateway serve` delivers.",
                   err=True)
        raise typer.Exit(2)

    async def run() -> None:
        store = SqliteStore(settings.db_path, settings.sqlite_synchronous, settings.busy_timeout)
        await store.open()
        server = FhirServer(settings, store)
        await server.prepare_store()
        await server.audit.start()  # deliveries are disclosures: they go to the access log
        await server.engine.start()
        typer.echo(f"Samverkan Gateway worker: delivering for store {settings.db_path}")
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        try:
            await stop.wait()
        finally:
            await server.engine.stop()
            await server.audit.stop()
            server.close()
            await store.close()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


mappings_cli = typer.Typer(help="The mapping modules this gateway loads (entry points samverkan.mappings).",
                           no_args_is_help=True)
cli.add_typer(mappings_cli, name="mappings")


@mappings_cli.command("list")
def mappings_list() -> None:
    """Every mapping with its version, media types and where it comes from."""
    from gateway.mapping.registry import MappingRegistry

    for info in MappingRegistry.load().infos():
        out = f" out: {info.outbound_media_type}" if info.outbound_media_type else ""
        typer.echo(f"{info.name} {info.version}  in: {', '.join(info.media_types)}{out}  ({info.source})\n"
                   f"    {info.title}")


profiles_cli = typer.Typer(help="Work on the StructureDefinitions in profiles/.", no_args_is_help=True)
cli.add_typer(profiles_cli, name="profiles")


@profiles_cli.command("snapshot")
def profiles_snapshot() -> None:
    """Regenerate the snapshot of every StructureDefinition from its differential."""
    from gateway.profiles_cli import write_snapshots

    settings = Settings.from_env()
    changed = write_snapshots(settings.profiles_dir)
    typer.echo(f"{len(changed)} StructureDefinition(s) updated in {settings.profiles_dir}")


from gateway.clients_cli import clients_cli, token  # noqa: E402  (sub-commands, after cli exists)
from gateway.directory_cli import directory_cli  # noqa: E402
from gateway.mllp_cli import mllp  # noqa: E402

cli.add_typer(clients_cli, name="clients")
cli.add_typer(directory_cli, name="directory")
cli.command("token")(token)
cli.command("mllp")(mllp)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
