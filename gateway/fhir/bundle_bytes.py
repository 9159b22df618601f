"""Build response Bundles from stored bytes, without parsing or re-serialising the resources.

A Bundle is built as a list of pieces — the stored bodies themselves between small pieces of
JSON — which the HTTP layer sends one after another without joining them (``bundle_pieces``):
a page of 16 MB holds 16 MB, not three copies of it. ``bundle`` joins them for callers that
want bytes.
"""
from __future__ import annotations

import uuid

from gateway.fhir.canonical import dumps
from gateway.search.dates import now_us
from gateway.store.records import StoredResource, format_instant


def bundle_pieces(btype: str, entries: list, *, total: int | None = None,
                  links: list[tuple[str, str]] = ()) -> list[bytes]:
    """The Bundle's JSON as pieces; ``entries`` are bytes or tuples of pieces."""
    head: dict = {"resourceType": "Bundle", "id": str(uuid.uuid4()),
                  "meta": {"lastUpdated": format_instant(now_us())}, "type": btype}
    if total is not None:
        head["total"] = total
    if links:
        head["link"] = [{"relation": rel, "url": url} for rel, url in links]
    if not entries:
        return [dumps(head)]
    pieces = [dumps(head)[:-1] + b',"entry":[']
    for i, entry in enumerate(entries):
        if i:
            pieces.append(b",")
        if isinstance(entry, tuple):
            pieces.extend(entry)
        else:
            pieces.append(entry)
    pieces.append(b"]}")
    return pieces


def bundle(btype: str, entries: list, *, total: int | None = None, links: list[tuple[str, str]] = ()) -> bytes:
    return b"".join(bundle_pieces(btype, entries, total=total, links=links))


def full_url(base: str, stored: StoredResource) -> str:
    return f"{base}/{stored.rtype}/{stored.rid}"


def search_entry(base: str, stored: StoredResource, mode: str, body: bytes | None = None) -> bytes:
    return b"".join(search_entry_pieces(base, stored, mode, body))


def search_entry_pieces(base: str, stored: StoredResource, mode: str,
                        body: bytes | None = None) -> tuple[bytes, bytes, bytes]:
    return (b'{"fullUrl":' + dumps(full_url(base, stored)) + b',"resource":', body or stored.body,
            b',"search":{"mode":"' + mode.encode() + b'"}}')


def history_entry(base: str, stored: StoredResource) -> bytes:
    return b"".join(history_entry_pieces(base, stored))


def history_entry_pieces(base: str, stored: StoredResource) -> tuple[bytes, ...]:
    if stored.deleted:
        request = {"method": "DELETE", "url": f"{stored.rtype}/{stored.rid}"}
        status = "204 No Content"
    elif stored.vid == 1:
        request, status = {"method": "POST", "url": stored.rtype}, "201 Created"
    else:
        request, status = {"method": "PUT", "url": f"{stored.rtype}/{stored.rid}"}, "200 OK"
    response = {"status": status, "etag": stored.etag, "lastModified": format_instant(stored.last_updated_us)}
    tail = dumps({"request": request, "response": response})[1:]
    head = b'{"fullUrl":' + dumps(full_url(base, stored))
    if stored.deleted:
        return (head + b"," + tail,)
    return head + b',"resource":', stored.body, b"," + tail
