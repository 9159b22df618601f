"""Literal references: parsing, and rewriting ``urn:uuid:`` placeholders inside a transaction."""
from __future__ import annotations

import re
from typing import Any, Callable

from gateway.fhir.types import SUPPORTED

# Type/id, optionally /_history/vid, optionally behind an absolute base URL.
_RELATIVE = re.compile(r"^(?:(?P<base>https?://.+)/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})"
                       r"(?:/_history/[A-Za-z0-9\-.]{1,64})?$")


def parse_reference(value: Any) -> tuple[str | None, str] | None:
    """A Reference (dict), canonical or uri (str) → (type, id) for local ones, (None, url) otherwise.

    References to another server's absolute URL keep the URL; contained (``#x``) and
    identifier-only references have no target to index.
    """
    text = value.get("reference") if isinstance(value, dict) else value if isinstance(value, str) else None
    if not text or text.startswith("#"):
        return None
    m = _RELATIVE.match(text)
    if m and m.group("base") is None:
        return m.group("type"), m.group("id")
    if m and m.group("type") in SUPPORTED:
        return m.group("type"), m.group("id")  # absolute URL to a FHIR server: match by type/id
    return None, text.split("|")[0]


def rewrite_references(node: Any, replace: Callable[[str], str | None]) -> None:
    """Replace every ``reference`` string (in place) for which ``replace`` returns a new value."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                new = replace(value)
                if new is not None:
                    node[key] = new
            else:
                rewrite_references(value, replace)
    elif isinstance(node, list):
        for item in node:
            rewrite_references(item, replace)
