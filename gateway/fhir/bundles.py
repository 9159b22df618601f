"""Transaction and batch Bundles.

Transaction: all-or-nothing in one store transaction. Entries run in the order the spec
prescribes (DELETE, POST, PUT/PATCH), ``urn:uuid:`` fullUrls are given server ids up front and
every reference to them is rewritten, conditional references (``Type?query``) are resolved to
the one match. GET entries are answered after the commit, so they see the transaction's
writes. Any entry's error rolls everything back and answers that error, naming the entry.
Batch: every entry on its own; failures become entry responses.
"""
from __future__ import annotations

import base64
import re
import uuid
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import parse_qsl, urlsplit

from gateway.errors import BadRequest, FhirError, PreconditionFailed
from gateway.fhir.bundle_bytes import bundle
from gateway.fhir.canonical import dumps, parse_json
from gateway.fhir.context import RequestContext
from gateway.fhir.interactions import FhirCore, WriteResult
from gateway.fhir.references import iter_references, rewrite_references
from gateway.fhir.searching import SearchService
from gateway.fhir.types import SUPPORTED
from gateway.store import Transaction
from gateway.store.records import format_instant

_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
_CONDITIONAL_REF = re.compile(r"^([A-Z][A-Za-z]+)\?(.+)$")


@dataclass
class Entry:
    index: int
    method: str
    rtype: str | None
    rid: str | None
    rest: list[str]  # path segments after Type/id (e.g. ["_history", "2"])
    query: str
    resource: object | None
    request: dict
    full_url: str | None


@dataclass
class Outcome:
    status: str
    body: dict | None = None  # the entry's response object (without status)
    resource: bytes | None = None


class Guard(Protocol):
    """Work that must commit with a transaction's writes, or not at all (``gateway.mapping.ingest``:
    a source message's key and order). ``before`` may raise to abandon the transaction."""

    async def before(self, tx: Transaction) -> None: ...

    async def after(self, tx: Transaction, written: list[str]) -> None:
        """``written``: "Type/id/_history/vid" of each resource the entries created or changed (or a
        conditional create matched), in the order of the Bundle's entries."""


class BundleProcessor:
    def __init__(self, core: FhirCore, search: SearchService):
        self.core = core
        self.search = search

    async def process(self, data: object, ctx: RequestContext, guard: Guard | None = None) -> bytes:
        if not isinstance(data, dict) or data.get("resourceType") != "Bundle":
            raise BadRequest("POST to the base takes a Bundle of type transaction or batch.")
        btype = data.get("type")
        if btype not in ("transaction", "batch"):
            raise BadRequest(f"Bundle type '{btype}' cannot be processed; use transaction or batch "
                             "(to store a Bundle as a document, POST it to /Bundle).")
        raw_entries = data.get("entry") or []
        if not isinstance(raw_entries, list):
            raise BadRequest("Bundle.entry must be an array of entries.")
        entries = [self._entry(i, e, ctx) for i, e in enumerate(raw_entries)]
        if guard is not None and btype != "transaction":
            raise BadRequest("Only a transaction Bundle commits with the source message it came from.")
        if btype == "transaction":
            results = await self._transaction(entries, ctx, guard)
        else:
            results = [await self._batch_entry(e, ctx) for e in entries]
        return bundle(f"{btype}-response", [self._response_bytes(r) for r in results])

    # -- parsing -------------------------------------------------------------------
    @staticmethod
    def _entry(i: int, raw: object, ctx: RequestContext) -> Entry:
        if not isinstance(raw, dict) or not isinstance(raw.get("request"), dict):
            raise BadRequest(f"Bundle.entry[{i}] needs a request with method and url.")
        request = raw["request"]
        method, url = request.get("method"), request.get("url")
        if not isinstance(method, str) or method not in _ORDER or not isinstance(url, str) or not url:
            raise BadRequest(f"Bundle.entry[{i}].request needs method (GET, POST, PUT, PATCH, DELETE) and url.")
        resource = raw.get("resource")
        if resource is not None and not isinstance(resource, dict):
            raise BadRequest(f"Bundle.entry[{i}].resource must be a resource (a JSON object).")
        full_url = raw.get("fullUrl")
        if full_url is not None and not isinstance(full_url, str):
            raise BadRequest(f"Bundle.entry[{i}].fullUrl must be a string.")
        if url.startswith(ctx.base_url + "/"):
            url = url[len(ctx.base_url) + 1:]
        parts = urlsplit(url)
        segments = [s for s in parts.path.split("/") if s]
        rtype = segments[0] if segments else None
        rid = segments[1] if len(segments) > 1 else None
        return Entry(i, method, rtype, rid, segments[2:], parts.query, resource, request, full_url)

    # -- transaction ---------------------------------------------------------------
    async def _transaction(self, entries: list[Entry], ctx: RequestContext, guard: Guard | None = None) -> list[Outcome]:
        results: dict[int, Outcome] = {}
        _reject_duplicates(entries)
        async with self.core.store.transaction() as tx:
            if guard is not None:
                await guard.before(tx)
            ids = await self._assign_ids(tx, entries, ctx)
            for e in sorted(entries, key=_write_order):
                if e.method in ("GET", "HEAD"):
                    continue
                try:
                    if isinstance(e.resource, dict):
                        await self._resolve_references(tx, e, ids, ctx)
                    results[e.index] = await self._write(tx, e, ids.get(e.full_url or ""), ctx)
                except FhirError as exc:
                    where = f"Bundle.entry[{e.index}] ({e.method} {e.request.get('url')})"
                    for issue in exc.issues:
                        issue.diagnostics = f"{where}: {issue.diagnostics}"
                    raise
            if guard is not None:
                # in the order of the entries (not of the writes): a mapping's reply pairs them with its entries
                written = [results[e.index] for e in entries if e.index in results]
                await guard.after(tx, [o.body["location"] for o in written if o.body and "location" in o.body])
        for e in entries:
            if e.method in ("GET", "HEAD"):
                results[e.index] = await self._read_entry(e, ctx)
        return [results[e.index] for e in entries]

    async def _assign_ids(self, tx: Transaction, entries: list[Entry], ctx: RequestContext) -> dict[str, str]:
        """fullUrl (urn:uuid:…) → "Type/id" for every entry that creates or updates a resource."""
        ids: dict[str, str] = {}
        for e in entries:
            if not e.full_url or e.method not in ("POST", "PUT"):
                continue
            if e.method == "POST" and e.rtype:
                existing = None
                if e.request.get("ifNoneExist"):
                    existing = await self.core.match_one(tx, e.rtype, e.request["ifNoneExist"], "ifNoneExist", ctx)
                ids[e.full_url] = f"{e.rtype}/{existing.rid if existing else uuid.uuid4()}"
            elif e.method == "PUT" and e.rtype and e.rid:
                ids[e.full_url] = f"{e.rtype}/{e.rid}"
            elif e.method == "PUT" and e.rtype and e.query:
                existing = await self.core.match_one(tx, e.rtype, e.query, "conditional update", ctx)
                rid = existing.rid if existing else (e.resource or {}).get("id") or str(uuid.uuid4())
                if not isinstance(rid, str):
                    raise BadRequest(f"Bundle.entry[{e.index}].resource.id must be a string.")
                ids[e.full_url] = f"{e.rtype}/{rid}"
        return ids

    async def _resolve_references(self, tx: Transaction, e: Entry, ids: dict[str, str],
                                  ctx: RequestContext) -> None:
        conditional: dict[str, str] = {}
        for ref in iter_references(e.resource):
            m = _CONDITIONAL_REF.match(ref)
            if m and ref not in conditional and m.group(1) in SUPPORTED:
                found = await self.core.match_one(tx, m.group(1), m.group(2), f"reference {ref}", ctx)
                if found is None:
                    raise PreconditionFailed(f"Conditional reference '{ref}' matches no {m.group(1)}.")
                conditional[ref] = f"{found.rtype}/{found.rid}"
        rewrite_references(e.resource, lambda ref: ids.get(ref) or conditional.get(ref))

    async def _write(self, tx: Transaction, e: Entry, assigned: str | None, ctx: RequestContext) -> Outcome:
        core = self.core
        if e.method in ("POST", "PUT"):
            self._require(e, isinstance(e.resource, dict), f"A {e.method} entry needs a resource")
        if e.method == "POST":
            self._require(e, e.rtype and not e.rid, "POST url must be a resource type, e.g. 'Task'")
            rid = assigned.split("/", 1)[1] if assigned else None
            return _write_outcome(await core.create_in(tx, e.rtype, e.resource, e.request.get("ifNoneExist"), rid,
                                                        ctx=ctx))
        if e.method == "PUT":
            if e.rid is None and e.query:
                # An id in the body is the client's (an update of that id if nothing matches);
                # otherwise the id assigned up front is the server's own.
                new_id = assigned.split("/", 1)[1] if assigned and "id" not in e.resource else None
                return _write_outcome(await core.conditional_update_in(tx, e.rtype, e.query, e.resource, ctx=ctx,
                                                                       new_id=new_id))
            self._require(e, e.rtype and e.rid and not e.rest, "PUT url must be Type/id or Type?criteria")
            return _write_outcome(await core.update_in(tx, e.rtype, e.rid, e.resource, e.request.get("ifMatch"),
                                                        ctx=ctx))
        if e.method == "PATCH":
            self._require(e, e.rtype and e.rid, "PATCH url must be Type/id")
            patch = _json_patch(e, core.max_json_depth)
            return _write_outcome(await core.patch_in(tx, e.rtype, e.rid, patch, e.request.get("ifMatch"), ctx=ctx))
        self._require(e, e.rtype and e.rid and not e.query, "DELETE url must be Type/id (conditional delete "
                                                            "is not supported)")
        await core.delete_in(tx, e.rtype, e.rid, ctx)
        return Outcome("204 No Content")

    @staticmethod
    def _require(e: Entry, ok: object, message: str) -> None:
        if not ok:
            raise BadRequest(f"{message}; got '{e.request.get('url')}'.")

    # -- reads and batch -----------------------------------------------------------
    async def _read_entry(self, e: Entry, ctx: RequestContext) -> Outcome:
        try:
            if e.rtype is None:
                raise BadRequest("GET entries need a url such as Type/id or Type?params.")
            if e.rid is None:
                body = await self.search.search(e.rtype, parse_qsl(e.query, keep_blank_values=True), ctx)
                return Outcome("200 OK", resource=b"".join(body))
            if e.rest == ["_history"]:
                return Outcome("200 OK", resource=b"".join(await self.search.history(e.rtype, e.rid, [], ctx)))
            if len(e.rest) == 2 and e.rest[0] == "_history":
                stored = await self.core.vread(e.rtype, e.rid, e.rest[1], ctx)
            else:
                stored = await self.core.read(e.rtype, e.rid, ctx)
            if ctx.memory is not None:  # the entries of a batch share what one response may carry
                sizes = [len(stored.body)]
                ctx.memory.fit(sizes)
                await ctx.memory.carry(sizes)
            return Outcome("200 OK", {"etag": stored.etag, "lastModified": format_instant(stored.last_updated_us)},
                           stored.body)
        except FhirError as exc:
            return _error_outcome(exc)

    async def _batch_entry(self, e: Entry, ctx: RequestContext) -> Outcome:
        if e.method in ("GET", "HEAD"):
            return await self._read_entry(e, ctx)
        try:
            async with self.core.store.transaction() as tx:
                if isinstance(e.resource, dict):
                    await self._resolve_references(tx, e, {}, ctx)
                return await self._write(tx, e, None, ctx)
        except FhirError as exc:
            return _error_outcome(exc)

    @staticmethod
    def _response_bytes(result: Outcome) -> bytes:
        response = dumps({"status": result.status, **(result.body or {})})
        if result.resource is None:
            return b'{"response":' + response + b"}"
        return b'{"resource":' + result.resource + b',"response":' + response + b"}"


def _reject_duplicates(entries: list[Entry]) -> None:
    """A transaction may touch each resource (or fullUrl) once; twice is ambiguous."""
    seen: set[str] = set()
    for e in entries:
        keys = []
        if e.full_url:
            keys.append(f"fullUrl {e.full_url}")
        if e.method in ("PUT", "PATCH", "DELETE"):
            keys.append(f"{e.rtype}/{e.rid}" if e.rid else f"{e.rtype}?{e.query}")
        for key in keys:
            if key in seen:
                raise BadRequest(f"Bundle.entry[{e.index}]: the transaction names {key} more than once.")
            seen.add(key)


def _write_order(e: "Entry") -> tuple[int, int, int]:
    """FHIR's order (DELETE, POST, PUT/PATCH, GET), except that Patients are written before
    the other creates and updates: data about a person may only be written once the person
    is known (gateway.access), and no two entries touch the same resource, so this is safe."""
    phase = 0 if e.method == "DELETE" else 1 if e.rtype == "Patient" and e.method in ("POST", "PUT", "PATCH") else 2
    return phase, _ORDER[e.method], e.index


def _write_outcome(result: WriteResult) -> Outcome:
    s = result.stored
    status = "201 Created" if result.created else "200 OK"
    return Outcome(status, {"location": f"{s.rtype}/{s.rid}/_history/{s.vid}", "etag": s.etag,
                            "lastModified": format_instant(s.last_updated_us)})


def _error_outcome(exc: FhirError) -> Outcome:
    return Outcome(f"{exc.status}", {"outcome": exc.outcome()})


def _json_patch(e: Entry, max_depth: int) -> object:
    res = e.resource
    if not isinstance(res, dict) or res.get("resourceType") != "Binary" or "data" not in res:
        raise BadRequest("A PATCH entry carries a Binary resource with contentType application/json-patch+json "
                         "and the patch base64-encoded in data.")
    try:
        return parse_json(base64.b64decode(res["data"], validate=True), max_depth)
    except (ValueError, TypeError):
        raise BadRequest("The PATCH entry's Binary.data is not base64-encoded JSON.") from None
