"""References between the region's resources, made references between ours.

A region EHR refers to its resources by its own ids (``Patient/pat-1``, behind its own base URL,
or a Bundle's ``urn:uuid:`` fullUrl) or logically by identifier (a personnummer). In our
transaction they must point at our resources:

1. a resource in the same message: its place in the transaction (``Type/id`` when we hold it,
   its ``urn:uuid:`` when it is new), by any name the message gives it;
2. a ``Type/id`` the same organisation sent before: found by the id it had at the sender (kept as
   an identifier, ``urn:samverkan:region-fhir:<organisation>:<Type>``) among the resources this
   mapping wrote for that organisation;
3. a Patient by personnummer or samordningsnummer: the Patient this feed keeps for the person;
4. otherwise a logical reference by identifier stays as it is (a ward code then goes through the
   ConceptMaps: ``codes``), and a literal one that points nowhere is refused, naming the element —
   never a dangling reference, and never another organisation's resource (searches run as the
   sending client and are limited to this mapping's own resources by ``_source``).
"""
from __future__ import annotations

from typing import Iterator
from urllib.parse import urlencode

from gateway.mapping import Lookup, MappingError
from gateway.validation.identifiers import PERSONNUMMER, SAMORDNINGSNUMMER

from mappings.region_fhir.message import LITERAL, TYPES, Item, identifier_name

NATIONAL = (PERSONNUMMER, SAMORDNINGSNUMMER)
SENDER_ID = "urn:samverkan:region-fhir:"  # + <organisation>:<Type>: the id a resource has at its sender


def sender_identifier(organization: str, rtype: str, sender_id: str) -> dict:
    return {"system": f"{SENDER_ID}{organization}:{rtype}", "value": sender_id}


def token(identifier: dict) -> str:
    """``system|value`` for a FHIR token search (| , $ and \\ escaped)."""
    def esc(text: str) -> str:
        return text.replace("\\", "\\\\").replace("|", "\\|").replace(",", "\\,").replace("$", "\\$")
    return f"{esc(identifier.get('system', ''))}|{esc(identifier.get('value', ''))}"


async def find_own(lookup: Lookup, rtype: str, identifier: dict, source: str) -> dict | None:
    """The resource this mapping keeps for the sending organisation with that identifier, if any."""
    found = await lookup.search(rtype, urlencode({"identifier": token(identifier), "_source": source}))
    return found[0] if found else None


def reference_nodes(node: object, path: str) -> Iterator[tuple[dict, str]]:
    """Every Reference in a resource (``reference`` or a logical ``identifier``) with its path;
    contained resources are left alone (their ``#`` references are local)."""
    if isinstance(node, dict):
        if isinstance(node.get("reference"), str) or isinstance(node.get("identifier"), dict):
            yield node, path
            return
        for key, value in node.items():
            if key != "contained":
                yield from reference_nodes(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from reference_nodes(value, f"{path}[{i}]")


async def resolve_references(item: Item, by_name: dict[str, Item], lookup: Lookup, source: str) -> None:
    for key, value in item.resource.items():
        if key in ("contained", "identifier"):
            continue
        for node, path in list(reference_nodes(value, f"{item.rtype}.{key}")):
            await _resolve(node, path, item, by_name, lookup, source)


async def _resolve(node: dict, path: str, item: Item, by_name: dict[str, Item], lookup: Lookup,
                   source: str) -> None:
    text = node.get("reference")
    if isinstance(text, str):
        if text.startswith("#"):
            return
        literal = LITERAL.search(text)
        target = by_name.get(text) or (by_name.get(f"{literal['type']}/{literal['id']}") if literal else None)
        if target is None and literal is not None and literal["type"] in TYPES:  # what this mapping writes
            rtype = literal["type"]
            earlier = await find_own(lookup, rtype, sender_identifier(lookup.organization, rtype, literal["id"]),
                                     source)
            if earlier is not None:
                _point(node, f"{rtype}/{earlier['id']}")
                return
        if target is not None:
            _point(node, target.ref)
            return
        if not isinstance(node.get("identifier"), dict):
            raise MappingError(f"{_at(item, path)}: {text} is neither in the message nor a resource this "
                               "organisation sent before; send it in the same Bundle.", code="not-found",
                               location=_at(item, path))
        del node["reference"]  # the logical part still says what it is
    identifier = node["identifier"]
    target = by_name.get(identifier_name(identifier))
    if target is not None:
        _point(node, target.ref)
    elif identifier.get("system") in NATIONAL and node.get("type") in (None, "Patient"):
        patient = await find_own(lookup, "Patient", identifier, source)
        if patient is None:
            raise MappingError(f"{_at(item, path)}: no Patient with this {identifier['system'].rsplit('/', 1)[-1]} "
                               "is in the message or was sent before; send the Patient with it.",
                               code="not-found", location=_at(item, path))
        _point(node, f"Patient/{patient['id']}")


def _point(node: dict, reference: str) -> None:
    """A literal reference to our resource; the sender's identifier of it is not needed any more."""
    node["reference"] = reference
    node.pop("identifier", None)


def _at(item: Item, path: str) -> str:
    """An element path where the sender finds it (``Bundle.entry[1].resource.subject``)."""
    return item.where + path[len(item.rtype):] if item.where != item.rtype else path
