"""``gateway clients add|list|revoke`` and ``gateway token``: register backend-service clients
in the gateway's database, and (for developers) get an access token on the embedded default.

A production client registers only its public keys (``--jwks`` file or URL-free JSON); for
local work ``--generate-key`` writes a fresh private key to a file the developer keeps.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

import typer

from gateway.access import ScopeError, ScopeSet
from gateway.auth.registry import ClientRegistry
from gateway.settings import Settings

clients_cli = typer.Typer(help="Register, list and revoke SMART backend-service clients.", no_args_is_help=True)
_HSA = re.compile(r"^SE\d{10}-[A-Za-z0-9]+$")


def _registry() -> ClientRegistry:
    return ClientRegistry(Settings.from_env().db_path)


@clients_cli.command("add")
def add(
    name: str = typer.Option(..., help="Who the client is, e.g. 'Region Halland Cosmic'"),
    organization: str = typer.Option(..., help="HSA-id of the organisation it acts for, e.g. SE2321000016-1234"),
    jwks: Optional[Path] = typer.Option(None, help="JSON file with the client's public JWKS ({\"keys\": [...]})"),
    generate_key: Optional[Path] = typer.Option(None, "--generate-key",
                                                help="Make a key pair; write the PRIVATE key (PEM) to this file"),
    alg: str = typer.Option("ES384", help="Key type for --generate-key: ES384 or RS384"),
    scopes: str = typer.Option("system/*.cruds", help="Most this client may be granted"),
    admin: bool = typer.Option(False, help="Reads the access log about its organisation's records and users"),
    operator: bool = typer.Option(False, help="Runs the gateway: reads the whole access log (implies --admin)"),
    kommunkod: Optional[str] = typer.Option(None, help="The organisation is (a unit of) this municipality: "
                                                       "LUSEN admission notices of persons registered there reach it"),
    primary_care: bool = typer.Option(False, "--primary-care",
                                      help="The organisation is a vårdcentral: notices of persons listed there reach it"),
) -> None:
    """Register a client bound to one organisation (and, with --kommunkod / --primary-care, vouch
    for that organisation's place in LUSEN's notice routing)."""
    if not _HSA.match(organization):
        raise typer.BadParameter("must be an HSA-id: SE + 10-digit organisation number + '-' + local part",
                                 param_hint="--organization")
    try:
        ScopeSet.parse(scopes)
    except ScopeError as exc:
        raise typer.BadParameter(str(exc), param_hint="--scopes") from None
    if (jwks is None) == (generate_key is None):
        raise typer.BadParameter("give exactly one of --jwks and --generate-key")
    if jwks is not None:
        keys = json.loads(jwks.read_text(encoding="utf-8"))
    else:
        from gateway.auth.keys import generate_key as make_key

        pem, jwk = make_key(alg)
        generate_key.write_bytes(pem)
        generate_key.chmod(0o600)
        keys = {"keys": [jwk]}
    if not isinstance(keys, dict) or not keys.get("keys"):
        raise typer.BadParameter("the JWKS must be an object with a non-empty 'keys' list", param_hint="--jwks")
    if kommunkod or primary_care:  # first: a conflict refuses the whole registration
        from gateway.auth.directory import Directory, DirectoryError, Entry

        directory = Directory(Settings.from_env().db_path)
        try:
            directory.register([Entry(organization, name, kommunkod or "", primary_care, f"client {name}")])
        except DirectoryError as exc:
            raise typer.BadParameter(str(exc), param_hint="--kommunkod / --primary-care") from None
        finally:
            directory.close()
    registry = _registry()
    try:
        client = registry.add(name, organization, keys, scopes, admin, operator)
    finally:
        registry.close()
    typer.echo(json.dumps(client.summary(), indent=2))
    if generate_key is not None:
        typer.echo(f"private key written to {generate_key} (keep it; the gateway stored only the public key)")


@clients_cli.command("list")
def list_clients() -> None:
    """Every registered client (public data only)."""
    registry = _registry()
    try:
        typer.echo(json.dumps([c.summary() for c in registry.list()], indent=2))
    finally:
        registry.close()


@clients_cli.command("revoke")
def revoke(client_id: str = typer.Argument(..., help="The client id to revoke")) -> None:
    """Revoke a client: its tokens stop working within seconds, in every gateway process."""
    registry = _registry()
    try:
        if not registry.revoke(client_id):
            typer.echo(f"no client {client_id}", err=True)
            raise typer.Exit(1)
    finally:
        registry.close()
    typer.echo(f"revoked {client_id}")


def token(
    client_id: str = typer.Option(..., help="The client id from `gateway clients add`"),
    key: Path = typer.Option(..., help="The client's private key (PEM)"),
    base_url: str = typer.Option("http://127.0.0.1:8080/fhir", help="FHIR base of the running gateway"),
    scope: str = typer.Option("system/*.cruds", help="Scopes to request"),
) -> None:
    """Get an access token from a running gateway, as a backend service would (developer aid)."""
    import httpx

    from gateway.auth.keys import client_assertion

    pem = key.read_bytes()
    kid = _kid_of(client_id)
    token_url = base_url.rstrip("/") + "/auth/token"
    alg = "RS384" if _is_rsa(pem) else "ES384"
    form = {"grant_type": "client_credentials", "scope": scope,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": client_assertion(client_id, pem, token_url, kid, alg)}
    r = httpx.post(token_url, data=form, timeout=30)
    if r.status_code != 200:
        typer.echo(f"token request refused ({r.status_code}): {r.text}", err=True)
        raise typer.Exit(1)
    typer.echo(r.json()["access_token"])


def _kid_of(client_id: str) -> str | None:
    registry = _registry()
    try:
        client = registry.get(client_id)
    finally:
        registry.close()
    if client is None:
        typer.echo(f"no client {client_id} in {Settings.from_env().db_path}", err=True)
        raise typer.Exit(1)
    keys = client.jwks.get("keys", [])
    return keys[0].get("kid") if keys else None


def _is_rsa(pem: bytes) -> bool:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    return isinstance(serialization.load_pem_private_key(pem, password=None), rsa.RSAPrivateKey)
