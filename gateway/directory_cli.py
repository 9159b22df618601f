"""``gateway directory load|list|remove``: the operator's word on who receives LUSEN notices.

See ``gateway.auth.directory``: which organisation is a kommunkod's municipality (and its units)
and which are primary care comes from here or from ``gateway clients add --kommunkod /
--primary-care``, never from a resource a client wrote.
"""
from __future__ import annotations

import json
from pathlib import Path

import typer

from gateway.auth.directory import FILE_SCHEMA, Directory, DirectoryError
from gateway.settings import Settings

directory_cli = typer.Typer(help="The organisations LUSEN admission notices are routed to (operator-vouched).",
                            no_args_is_help=True)


def _directory() -> Directory:
    return Directory(Settings.from_env().db_path)


@directory_cli.command("load")
def load(path: Path = typer.Argument(..., help="JSON file: {\"organizations\": [{\"hsa\", \"name\", \"kommunkod\" "
                                               "| \"primaryCare\"}, ...]}")) -> None:
    """Register every organisation of a directory file; a conflict refuses the whole file."""
    directory = _directory()
    try:
        entries = directory.load_file(path)
    except DirectoryError as exc:
        typer.echo(f"refused, nothing loaded: {exc}", err=True)
        raise typer.Exit(1) from None
    finally:
        directory.close()
    typer.echo(f"{len(entries)} organisation(s) registered from {path}")


@directory_cli.command("list")
def list_entries() -> None:
    """Every organisation in the directory, with its kommunkod or primary-care mark."""
    directory = _directory()
    try:
        typer.echo(json.dumps([e.summary() for e in directory.list()], indent=2, ensure_ascii=False))
    finally:
        directory.close()


@directory_cli.command("remove")
def remove(hsa: str = typer.Argument(..., help="HSA-id of the organisation to take out")) -> None:
    """Take an organisation out: notices stop reaching it at once."""
    directory = _directory()
    try:
        if not directory.remove(hsa):
            typer.echo(f"{hsa} is not in the directory", err=True)
            raise typer.Exit(1)
    finally:
        directory.close()
    typer.echo(f"removed {hsa}")


@directory_cli.command("schema")
def schema() -> None:
    """The JSON Schema a directory file must meet."""
    typer.echo(json.dumps(FILE_SCHEMA, indent=2))
