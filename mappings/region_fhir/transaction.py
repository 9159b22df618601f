"""The region's resources → one transaction Bundle of ours, written as the sending client.

Per resource:

1. **Identifiers.** The resource is checked against base R4 (422 naming the element in the
   region's message); Swedish alias systems are normalised and national ids checked
   (``gateway.validation.identifiers``: ``urn:oid:1.2.752.129.2.1.3.1`` → personnummer, the HSA-id
   OID alias → ``urn:oid:1.2.752.29.4.19``); the id it has at the sender is kept as an identifier
   (``urn:samverkan:region-fhir:<organisation>:<Type>``), so a later message may refer to it.
2. **Found again** by its key — a Patient by personnummer or samordningsnummer, else its first
   identifier, else the id it has at the sender; failing that by its other identifiers in that
   order — among the resources this mapping wrote for the sending organisation (``_source`` =
   ``urn:samverkan:mapping:region-fhir:<organisation>``): another organisation's Patient for the
   same person is never touched.
3. **References** made ours (``references``), **codes** through the ConceptMaps (``codes``).
4. **Our profiles** claimed where the resource is what they describe: a Patient with a national
   id ``se-patient``, an inpatient Encounter (class IMP) ``lusen-encounter`` (its serviceProvider,
   when the region sends none, the sending organisation), a Task with one of our activity codes
   ``samverkan-task``; the region's own profile claims are dropped (they are not ours to check).
5. **Merged** with what is stored: what the region states replaces ours, what it leaves out is
   kept (identifiers by system; security labels and tags when it sends none). A resource whose
   merge equals what is stored is not written at all, so a repeat changes nothing. Otherwise a
   conditional create (``ifNoneExist`` on the key) or an update with ``ifMatch`` on the version
   read: when it changed meanwhile, the gateway translates the message again from the new state.
"""
from __future__ import annotations

import uuid
from urllib.parse import urlencode

from gateway.mapping import Lookup, MappingError, Translation
from gateway.validation.base import base_issues
from gateway.validation.identifiers import HSA_ID

from mappings.region_fhir.codes import is_ours, normalise_codes
from mappings.region_fhir.message import Item, Message, identifier_name
from mappings.region_fhir.references import NATIONAL, resolve_references, sender_identifier, token

SOURCE = "urn:samverkan:mapping:region-fhir:"
SD = "https://samverkan.example.se/fhir/StructureDefinition/"
STATED_META = ("security", "tag")  # what the region may say about its resource in meta


async def translate(message: Message, lookup: Lookup) -> Translation:
    source = SOURCE + lookup.organization
    items = message.items
    for item in items:
        _identify(item, lookup.organization, source)
    _one_each(items)
    for item in items:
        item.found = await _find(item, lookup, source)
        item.ref = f"{item.rtype}/{item.found['id']}" if item.found else f"urn:uuid:{uuid.uuid4()}"
    by_name = {name: item for item in items for name in item.names}
    for item in items:
        await resolve_references(item, by_name, lookup, source)
        normalise_codes(item, lookup.conceptmaps)
        item.write = _merged(item, source, _claims(item, lookup.organization))
    entries = [_entry(item) for item in items if item.write is not None]
    # A message with an identity is committed even when it changes nothing: its key and reply are kept,
    # so a repeat gets the first reply, byte for byte. Without one, an unchanged message writes nothing.
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries} if entries or message.key else None
    return Translation(bundle, key=message.key, context=items)


def _identify(item: Item, organization: str, source: str) -> None:
    resource = item.resource
    meta = resource.pop("meta", None)
    item.stated_meta = {k: meta[k] for k in STATED_META if isinstance(meta, dict) and k in meta}
    resource.pop("id", None)
    # The base R4 resource first (it also normalises the identifiers): what follows may rely on its
    # shapes, and the region learns what is wrong in its own message, element by element.
    problems = [i for i in base_issues(resource, item.rtype) if i.severity in ("error", "fatal")]
    if problems:
        where = _at(item, problems[0].expression[0]) if problems[0].expression else item.where
        raise MappingError(f"{item.where}: " + "; ".join(i.diagnostics for i in problems[:3]),
                           code=problems[0].code, location=where)
    identifiers = resource.get("identifier", [])
    if not isinstance(identifiers, list):
        raise MappingError(f"{item.where}.identifier must be an array of identifiers.", code="structure",
                           location=f"{item.where}.identifier")
    own = sender_identifier(organization, item.rtype, item.sender_id) if item.sender_id else None
    if own is not None:  # the id it has at the sender, kept so that a later message may refer to it
        identifiers = [i for i in identifiers if not (isinstance(i, dict) and i.get("system") == own["system"])]
        resource["identifier"] = identifiers = identifiers + [own]
    usable = [i for i in identifiers if i is not own and isinstance(i, dict) and isinstance(i.get("system"), str)
              and isinstance(i.get("value"), str)]
    national = [i for i in usable if item.rtype == "Patient" and i["system"] in NATIONAL]
    item.keys = list(dict.fromkeys(map(token, [*national, *usable, *([own] if own else [])])))
    if not item.keys:
        raise MappingError(f"{item.where}: the {item.rtype} has neither an identifier nor an id; give it one: it is "
                           "how a later message finds it again.", code="required", location=f"{item.where}.identifier")
    item.query = urlencode({"identifier": item.keys[0], "_source": source})
    item.names |= {identifier_name(i) for i in resource.get("identifier") or [] if isinstance(i, dict)}


async def _find(item: Item, lookup: Lookup, source: str) -> dict | None:
    """Our resource for it: by its key, else by any other identifier it had before (a corrected
    personnummer still finds the Patient by the region's own number for it)."""
    for key in item.keys:
        found = await lookup.search(item.rtype, urlencode({"identifier": key, "_source": source}))
        if found:
            return found[0]
    return None


def _one_each(items: list[Item]) -> None:
    """The message may hold each resource once: twice would be two truths about it in one write."""
    seen: dict[str, Item] = {}
    for item in items:
        for name in [f"{item.rtype}?{item.query}", *(n for n in item.names if not n.startswith("identifier:"))]:
            other = seen.setdefault(name, item)
            if other is not item:
                raise MappingError(f"{item.where} and {other.where} are the same {item.rtype}; send it once.",
                                   code="duplicate", location=item.where)


def _claims(item: Item, organization: str) -> list[str]:
    """Our profiles the resource is meant to meet (module docstring, step 4)."""
    resource = item.resource
    if item.rtype == "Patient":
        national = any(isinstance(i, dict) and i.get("system") in NATIONAL for i in resource.get("identifier") or [])
        return [SD + "se-patient"] if national else []
    if item.rtype == "Encounter":
        if not resource.get("serviceProvider"):
            resource["serviceProvider"] = {"identifier": {"system": HSA_ID, "value": organization}}
        inpatient = isinstance(resource.get("class"), dict) and resource["class"].get("code") == "IMP"
        return [SD + "lusen-encounter"] if inpatient else []
    if item.rtype == "Task":
        return [SD + "samverkan-task"] if is_ours(resource.get("code")) else []
    return []


def _merged(item: Item, source: str, claims: list[str]) -> dict | None:
    """What to store: the region's statement over what is stored; None when that changes nothing."""
    found, stated = item.found, item.resource
    merged: dict = {"resourceType": item.rtype}
    if found is not None:
        merged["id"] = found["id"]
        merged.update({k: v for k, v in found.items() if k not in ("resourceType", "id", "meta")})
    merged.update({k: v for k, v in stated.items() if k not in ("resourceType", "identifier")})
    identifiers = stated.get("identifier") or []
    systems = {i.get("system") for i in identifiers if isinstance(i, dict)}
    kept = [i for i in (found or {}).get("identifier") or [] if i.get("system") not in systems]
    if identifiers or kept:
        merged["identifier"] = identifiers + kept
    meta = {k: v for k, v in ((found or {}).get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
    meta.update(item.stated_meta)
    meta["source"] = source
    meta.pop("profile", None)
    if claims:
        meta["profile"] = claims
    merged["meta"] = meta
    if found is not None and merged == _comparable(found):
        return None
    return merged


def _comparable(stored: dict) -> dict:
    return {**stored, "meta": {k: v for k, v in (stored.get("meta") or {}).items()
                               if k not in ("versionId", "lastUpdated")}}


def _entry(item: Item) -> dict:
    if item.found is not None:
        return {"resource": item.write, "request": {"method": "PUT", "url": item.ref,
                                                    "ifMatch": f'W/"{item.found["meta"]["versionId"]}"'}}
    return {"fullUrl": item.ref, "resource": item.write,
            "request": {"method": "POST", "url": item.rtype, "ifNoneExist": item.query}}


def _at(item: Item, path: str) -> str:
    return item.where + path[len(item.rtype):] if item.where != item.rtype else path
