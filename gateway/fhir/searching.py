"""Search and history interactions: plans to the store, pages, includes, Bundles of stored bytes.

Paging: when a search has more matches than one page, the ordered list of matching
*versions* is kept as a snapshot (``search_snapshots``) and ``next``/``prev`` links page through
it, so pages neither repeat nor skip resources while others write. History pages use a
keyset (versions older than the last one shown), which is stable because history only grows.

A page is bounded in bytes as well as entries (``gateway.budget``): it holds the matches
that fit in what the response may carry, with their includes, and ``next`` continues after
the last one shown. The sizes are read first, so nothing beyond the bound is ever read; if a
page's includes do not fit beside its matches, the page is made smaller.
"""
from __future__ import annotations

import uuid
from dataclasses import replace
from urllib.parse import parse_qsl, urlencode

from gateway.access.audit import AuditLog
from gateway.access.policy import AccessPolicy, search_param_names
from gateway.budget import ENTRY_OVERHEAD, Reservation
from gateway.errors import BadRequest, NotFound, TooCostly
from gateway.fhir.bundle_bytes import bundle_pieces, history_entry_pieces, search_entry_pieces
from gateway.fhir.canonical import dumps, parse_json
from gateway.fhir.context import RequestContext
from gateway.fhir.conformance import CONFORMANCE_TYPES, ConformanceLibrary
from gateway.fhir.interactions import AUDIT_TYPE, check_type
from gateway.fhir.types import require_uint
from gateway.search.dates import parse_instant
from gateway.search.query import Include, QueryParser, SearchRequest
from gateway.search.registry import SearchRegistry
from gateway.store import Store, StoredResource
from gateway.store.base import HistoryQuery, Snapshot

_MANDATORY = ("resourceType", "id", "meta")
LARGE_READ = 1024 * 1024  # a page's bodies this large together are read off the event loop (store.read_large)
_SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}


class _PageFull(Exception):
    """The includes of a page's matches do not fit beside them."""


Pieces = list[bytes]  # a Bundle's JSON in pieces (``bundle_bytes.bundle_pieces``)


class SearchService:
    max_page_bytes = 16 * 1024 * 1024  # for callers without an HTTP request's reservation (settings)

    def __init__(self, store: Store, registry: SearchRegistry, parser: QueryParser, snapshot_ttl: int,
                 conformance: ConformanceLibrary | None = None, access: AccessPolicy | None = None,
                 audit: AuditLog | None = None):
        self.conformance = conformance or ConformanceLibrary([])
        self.access = access or AccessPolicy(store, parser.local_base)
        self.audit = audit or AuditLog(store)
        self.store = store
        self.registry = registry
        self.parser = parser
        self.snapshot_ttl = snapshot_ttl

    async def search(self, rtype: str, params: list[tuple[str, str]], ctx: RequestContext) -> Pieces:
        if rtype in CONFORMANCE_TYPES:
            return [self.conformance.search(rtype, params, ctx)]
        if rtype == AUDIT_TYPE:
            return [await self.audit.search(ctx, params, self.parser.default_count, self.parser.max_count)]
        check_type(rtype)
        self.access.check_scope(ctx, rtype, "s")
        req = self.parser.parse(rtype, params, lenient=ctx.lenient, base_url=ctx.base_url)
        # The access condition is part of the query, so totals and pages count only what the caller may see.
        access = self.access.filter(ctx, rtype, search_param_names(params))
        matches = await self.store.search(replace(req.plan, access=access))
        total = matches.total if req.total != "none" else None
        self_link = f"{ctx.base_url}/{rtype}" + (f"?{req.query}" if req.query else "")
        if req.summary_count:
            return bundle_pieces("searchset", [], total=matches.total, links=[("self", self_link)])
        links = [("self", self_link)]
        entries, shown = await self._page(rtype, req, matches.seqs[: req.count], ctx)
        if len(matches.seqs) > shown:
            snapshot = Snapshot(str(uuid.uuid4()), rtype, req.query, matches.total, matches.seqs, _owner(ctx))
            await self.store.save_snapshot(snapshot, self.snapshot_ttl)
            links += self._paging_links(ctx, snapshot, 0, req.count, shown)
        return bundle_pieces("searchset", entries, total=total, links=links)

    async def page(self, params: list[tuple[str, str]], ctx: RequestContext) -> Pieces:
        """``GET [base]?_getpages=ID&_getpagesoffset=N&_count=C``: a page of a remembered search."""
        values = dict(params)
        snapshot = await self.store.load_snapshot(values.get("_getpages", ""))
        if snapshot is None or snapshot.owner != _owner(ctx):
            raise NotFound("This search page has expired or never existed; run the search again.")
        self.access.check_scope(ctx, snapshot.rtype, "s")
        offset = require_uint(values.get("_getpagesoffset", "0"), "_getpagesoffset")
        req = self.parser.parse(snapshot.rtype, parse_qsl(snapshot.query))
        count = min(require_uint(values.get("_count", str(req.count)), "_count"), self.parser.max_count) or req.count
        entries, shown = await self._page(snapshot.rtype, req, snapshot.seqs[offset: offset + count], ctx)
        links = [("self", self._page_link(ctx, snapshot.snapshot_id, offset, count))]
        links += self._paging_links(ctx, snapshot, offset, count, shown)
        total = snapshot.total if req.total != "none" else None
        return bundle_pieces("searchset", entries, total=total, links=links)

    def _paging_links(self, ctx: RequestContext, snapshot: Snapshot, offset: int, count: int,
                      shown: int) -> list[tuple[str, str]]:
        """``shown``: matches on this page, ``count`` or fewer when the page's bytes ran out."""
        sid, size = snapshot.snapshot_id, len(snapshot.seqs)
        links = [("first", self._page_link(ctx, sid, 0, count))]
        if offset > 0:
            links.append(("previous", self._page_link(ctx, sid, max(0, offset - count), count)))
        if offset + shown < size:
            links.append(("next", self._page_link(ctx, sid, offset + shown, count)))
        links.append(("last", self._page_link(ctx, sid, max(0, (size - 1) // count * count), count)))
        return links

    @staticmethod
    def _page_link(ctx: RequestContext, snapshot_id: str, offset: int, count: int) -> str:
        return f"{ctx.base_url}?" + urlencode({"_getpages": snapshot_id, "_getpagesoffset": offset, "_count": count})

    def _memory(self, ctx: RequestContext) -> Reservation:
        """The request's reservation (HTTP), or a bound of its own for an internal caller."""
        return ctx.memory if ctx.memory is not None else Reservation(None, self.max_page_bytes)

    async def _page(self, rtype: str, req: SearchRequest, seqs: list[int],
                    ctx: RequestContext) -> tuple[list, int]:
        """The entries of a page of these matches, and how many matches it holds: as many as fit
        in what the response may carry, together with their includes (one at least)."""
        memory = self._memory(ctx)
        sizes = await self.store.body_sizes(seqs)
        sizes = [sizes.get(s, 0) for s in seqs]
        shown = memory.fit(sizes)
        while True:
            mark = memory.mark()
            try:
                return await self._page_entries(rtype, req, seqs[:shown], sizes[:shown], ctx, memory), shown
            except _PageFull:
                memory.undo(mark)
                if shown == 1:
                    raise TooCostly(f"The resources _include/_revinclude adds to one {rtype} exceed what one "
                                    f"response may carry ({memory.page_limit} bytes, GATEWAY_MAX_PAGE_BYTES); "
                                    "search the included type directly (it pages), or include less.") from None
                shown //= 2

    async def _page_entries(self, rtype: str, req: SearchRequest, seqs: list[int], sizes: list[int],
                            ctx: RequestContext, memory: Reservation) -> list:
        await memory.carry(sizes)  # before reading: may wait for memory (or 503)
        # Pages of a snapshot are read later: what the caller may no longer see is left out.
        read = self.store.read_large if sum(sizes) >= LARGE_READ else self.store.read_seqs
        matches = await self.access.visible(ctx, await read(seqs), lusen=True)
        included = [r for r in await self._included(rtype, req, matches, ctx, memory)
                    if self.access.may_read_type(ctx, r.rtype)]
        matches, included = await self.access.release(ctx, matches), await self.access.release(ctx, included)
        entries = [search_entry_pieces(ctx.base_url, r, "match", _elements(r.body, req.elements)) for r in matches]
        entries += [search_entry_pieces(ctx.base_url, r, "include") for r in included]
        return entries

    async def _included(self, rtype: str, req: SearchRequest, matches: list[StoredResource],
                        ctx: RequestContext, memory: Reservation) -> list[StoredResource]:
        """_include/_revinclude on the matches, then ``:iterate`` ones once more on everything found.
        What the caller may not see is dropped at each level, so iterating never follows a link
        out of a hidden resource."""
        if not (req.includes or req.revincludes):
            return []
        seen = {(r.rtype, r.rid) for r in matches}

        async def follow(sources: list[StoredResource], iterate: bool) -> list[StoredResource]:
            found: list[StoredResource] = []
            noticed = await self.access.notice_only(ctx, sources)
            for inc in req.includes:
                if inc.iterate is iterate:
                    found += await self._forward(inc, [s for s in sources if (s.rtype, s.rid) not in noticed
                                                       or self.access.may_follow(s.rtype, inc.param)], memory)
            for inc in req.revincludes:
                if inc.iterate is iterate:
                    referring = await self._reverse(inc, sources, memory)
                    hidden = await self.access.notice_only(ctx, referring)
                    found += [r for r in referring if (r.rtype, r.rid) not in hidden
                              or self.access.may_follow(r.rtype, inc.param)]
            fresh = []
            for r in await self.access.visible(ctx, found, lusen=True):
                if (r.rtype, r.rid) not in seen:
                    seen.add((r.rtype, r.rid))
                    fresh.append(r)
            return fresh

        first = await follow(matches, iterate=False)
        return first + await follow(matches + first, iterate=True)

    async def _forward(self, inc: Include, sources: list[StoredResource], memory: Reservation) -> list[StoredResource]:
        rids = [r.rid for r in sources if r.rtype == inc.source_type]
        params = None if inc.param is None else [inc.param]
        targets = await self.store.references_from(inc.source_type, rids, params)
        if inc.target_type:
            targets = [t for t in targets if t[0] == inc.target_type]
        await self._carry_included(memory, len(targets), lambda: self.store.current_sizes(targets))
        return await self.store.read_many(targets)

    async def _reverse(self, inc: Include, targets: list[StoredResource], memory: Reservation) -> list[StoredResource]:
        keys = [(r.rtype, r.rid) for r in targets if inc.target_type in (None, r.rtype)]
        seqs = await self.store.referencing(inc.source_type, inc.param, keys)
        sizes = await self._carry_included(memory, len(seqs), lambda: self.store.body_sizes(seqs))
        return await (self.store.read_large if sum(sizes) >= LARGE_READ else self.store.read_seqs)(seqs)

    @staticmethod
    async def _carry_included(memory: Reservation, count: int, sizes) -> list[int]:
        """Count included resources into the page before reading them; _PageFull if they do not fit."""
        if count * ENTRY_OVERHEAD > memory.room():  # too many to even ask for their sizes
            raise _PageFull
        found = list((await sizes()).values())
        if sum(found) + ENTRY_OVERHEAD * len(found) > memory.room():
            raise _PageFull
        await memory.carry(found)
        return found

    async def history(self, rtype: str | None, rid: str | None, params: list[tuple[str, str]],
                      ctx: RequestContext) -> Pieces:
        if rtype is not None:
            check_type(rtype)
        # System history spans every type: it needs a scope for all of them (system/*.s).
        self.access.check_scope(ctx, rtype or "*", "r" if rid else "s")
        values = dict(params)
        unknown = set(values) - {"_since", "_count", "_cursor", "_format", "_pretty"}
        if unknown and not ctx.lenient:
            raise BadRequest(f"History takes _since and _count; unknown: {', '.join(sorted(unknown))}.")
        since = None
        if "_since" in values:
            try:
                since = parse_instant(values["_since"])
            except ValueError as exc:
                raise BadRequest(f"_since: {exc}.") from None
        count = min(require_uint(values.get("_count", str(self.parser.default_count)), "_count"), self.parser.max_count)
        cursor = require_uint(values["_cursor"], "_cursor") if "_cursor" in values else None
        if rid is not None and cursor is None:
            found = await self.store.read(rtype, rid)
            if found is None or not await self.access.can_read(ctx, found):
                raise NotFound(f"{rtype}/{rid} is not known.")
        # The access condition counts and pages only what the caller may see: of a resource it sees
        # only as a LUSEN notice, the current version.
        access = self.access.filter(ctx)
        memory = self._memory(ctx)
        page, total, more = await self.store.history(HistoryQuery(rtype, rid, since, cursor, count, access,
                                                                  max_bytes=memory.room()))
        sizes = [len(v.body or b"") for v in page]
        fits = memory.fit(sizes)  # fewer only in a batch whose earlier entries took the room
        page, more = page[:fits], more or fits < len(page)
        await memory.carry(sizes[:fits])
        versions = await self.access.release(ctx, page)
        path = "/".join(p for p in (ctx.base_url, rtype, rid, "_history") if p)
        keep = {k: v for k, v in values.items() if k in ("_since", "_count")}
        links = [("self", path + (f"?{urlencode({**keep, **({'_cursor': cursor} if cursor else {})})}"
                                  if keep or cursor else ""))]
        if more and page:  # the store's page (full, or ended by bytes)
            links.append(("next", f"{path}?{urlencode({**keep, '_count': count, '_cursor': page[-1].seq})}"))
        return bundle_pieces("history", [history_entry_pieces(ctx.base_url, v) for v in versions], total=total,
                             links=links)


def _owner(ctx: RequestContext) -> str:
    return ctx.caller.organization if ctx.caller else ""


def _elements(body: bytes, elements: list[str] | None) -> bytes | None:
    """``_elements``: keep the named top-level elements (plus mandatory ones), mark SUBSETTED."""
    if not elements:
        return None
    resource = parse_json(body)
    kept = {k: v for k, v in resource.items() if k in _MANDATORY or k in elements}
    meta = dict(kept.get("meta", {}))
    meta["tag"] = [*meta.get("tag", []), _SUBSETTED]
    kept["meta"] = meta
    return dumps(kept)
