"""Literal references: parsing, and rewriting ``urn:uuid:`` placeholders inside a transaction."""
from __future__ import annotations

import re
from typing import Any, Callable, Collection, Iterator


# Type/id, optionally /_history/vid, optionally behind an absolute base URL.
_RELATIVE = re.compile(r"^(?:(?P<base>https?://.+)/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})"
                       r"(?:/_history/[A-Za-z0-9\-.]{1,64})?$")


def parse_reference(value: Any, local_bases: Collection[str | None] = ()) -> tuple[str | None, str] | None:
    """A Reference (dict), canonical or uri (str) → (type, id) for local ones, (None, url) otherwise.

    An absolute URL is local only under this server's configured base (``GATEWAY_BASE_URL``):
    ``http://other.example/fhir/Patient/1`` is another server's patient, not our Patient/1.
    Contained (``#x``) and identifier-only references have no target to index.
    """
    text = value.get("reference") if isinstance(value, dict) else value if isinstance(value, str) else None
    if not text or text.startswith("#"):
        return None
    m = _RELATIVE.match(text)
    if m and (m.group("base") is None or m.group("base") in local_bases):
        return m.group("type"), m.group("id")
    return None, text.split("|")[0]


def iter_references(node: Any) -> Iterator[str]:
    """Every ``reference`` string inside a resource."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "reference" and isinstance(value, str):
                yield value
            else:
                yield from iter_references(value)
    elif isinstance(node, list):
        for item in node:
            yield from iter_references(item)


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
