"""The FHIR write and read interactions, callable without HTTP.

HTTP routes, transaction/batch entries and (later) mapping modules and workflows all come
through these functions, so validation, versioning and indexing (and, later, access checks,
audit and notification events) happen in one place. ``*_in`` variants run inside a store
transaction the caller owns (a transaction Bundle); the plain ones open their own.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from urllib.parse import parse_qsl

import jsonpatch

from gateway.access.audit import AuditLog
from gateway.access.policy import AccessPolicy, search_param_names
from gateway.events.recorder import SUBSCRIPTION, EventRecorder
from gateway.errors import (
    BadRequest, Conflict, FhirError, Gone, Issue, MethodNotAllowed, NotFound, PreconditionFailed, UnprocessablePatch, information_outcome,
    operation_outcome,
)
from gateway.fhir.canonical import DEFAULT_MAX_JSON_DEPTH, canonical_resource, check_depth, dumps, parse_json
from gateway.fhir.conformance import CONFORMANCE_TYPES, ConformanceLibrary
from gateway.fhir.context import RequestContext
from gateway.fhir.types import SUPPORTED, is_valid_id, parse_uint
from gateway.offload import Offload, large, large_body
from gateway.search.dates import now_us
from gateway.search.extract import index_resource
from gateway.search.query import QueryParser
from gateway.search.registry import SearchRegistry
from gateway.store import IndexRows, Store, StoredResource, Transaction, VersionConflict
from gateway.store.plan import SearchPlan
from gateway.store.records import format_instant
from gateway.validation import Validator


@dataclass
class Prepared:
    """A validated, indexed resource waiting for its id and version (see ``FhirCore.prepare``)."""

    canonical: dict
    index: IndexRows


@dataclass(frozen=True)
class WriteResult:
    stored: StoredResource
    created: bool  # 201 rather than 200
    changed: bool = True  # False: conditional create found an existing match, delete of nothing


AUDIT_TYPE = "AuditEvent"  # the access log: written by the gateway, read by administrators


def check_type(rtype: str) -> None:
    if rtype == AUDIT_TYPE:
        AuditLog.refuse_write()
    if rtype in CONFORMANCE_TYPES:
        raise MethodNotAllowed(f"{rtype} resources are read-only here: they are defined in the gateway's "
                               "profiles/ and change with a release, not over the API.")
    if rtype not in SUPPORTED:
        raise NotFound(f"Resource type '{rtype}' is not supported here; see /metadata for the supported types.")


def parse_etag(value: str) -> int:
    """``W/"3"``, ``"3"`` or ``3`` → 3."""
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    version = parse_uint(text.strip('"'))
    if version is None:
        raise BadRequest(f"If-Match must be a version ETag such as W/\"3\", not '{value}'.")
    return version


def unpack_validate_parameters(body: object, mode: str | None) -> tuple[object, str | None]:
    """``$validate`` takes the resource itself or a Parameters with ``resource`` (and ``mode``)."""
    if isinstance(body, dict) and body.get("resourceType") == "Parameters":
        resource = None
        if not isinstance(body.get("parameter") or [], list):
            raise BadRequest("Parameters.parameter must be an array of {\"name\": ..., \"resource\"|\"value[x]\": ...}.")
        for p in body.get("parameter") or []:
            if isinstance(p, dict) and p.get("name") == "resource":
                resource = p.get("resource")
            elif isinstance(p, dict) and p.get("name") == "mode" and isinstance(p.get("valueCode"), str):
                mode = p["valueCode"]
        return resource, mode
    return body, mode


class FhirCore:
    max_json_depth = DEFAULT_MAX_JSON_DEPTH  # GATEWAY_MAX_JSON_DEPTH; FhirServer sets the configured one
    offload: Offload | None = None  # large requests validate on its worker, not the event loop (FhirServer)

    def __init__(self, store: Store, registry: SearchRegistry, parser: QueryParser, validator: Validator,
                 conformance: ConformanceLibrary | None = None, access: AccessPolicy | None = None,
                 audit: AuditLog | None = None, events: EventRecorder | None = None):
        self.conformance = conformance or ConformanceLibrary([])
        self.access = access or AccessPolicy(store, parser.local_base)
        self.audit = audit or AuditLog(store)
        self.events = events
        self.store = store
        self.registry = registry
        self.parser = parser
        self.validator = validator

    # -- reads ---------------------------------------------------------------------
    async def read(self, rtype: str, rid: str, ctx: RequestContext | None = None) -> StoredResource:
        if rtype in CONFORMANCE_TYPES:
            return self.conformance.read(rtype, rid)
        if rtype == AUDIT_TYPE:
            return await self.audit.read(ctx, rid)
        check_type(rtype)
        self.access.check_scope(ctx, rtype, "r")
        found = await self.access.read_current(ctx, rtype, rid)
        if found is None:  # forbidden looks missing
            raise NotFound(f"{rtype}/{rid} is not known.")
        found = (await self.access.release(ctx, [found]))[0]
        if found.deleted:
            raise Gone(f"{rtype}/{rid} was deleted (version {found.vid}).")
        return found

    async def vread(self, rtype: str, rid: str, vid: str, ctx: RequestContext | None = None) -> StoredResource:
        if rtype in CONFORMANCE_TYPES:
            found = self.conformance.read(rtype, rid)
            if vid != "1":
                raise NotFound(f"{rtype}/{rid} has only version 1 on this server.")
            return found
        check_type(rtype)
        self.access.check_scope(ctx, rtype, "r")
        version = parse_uint(vid)
        if version is None:
            raise NotFound(f"{rtype}/{rid} has no version '{vid}'; versions are numbers.")
        found = await self.store.read_version(rtype, rid, version)
        if found is None or not await self.access.can_read(ctx, found) \
                or not await self.access.without_notice_history(ctx, [found]):
            raise NotFound(f"{rtype}/{rid} has no version {vid}.")
        found = (await self.access.release(ctx, [found]))[0]
        if found.deleted:
            raise Gone(f"Version {vid} of {rtype}/{rid} records its deletion.")
        return found

    async def validate(self, rtype: str, resource: object, mode: str | None, rid: str | None,
                       ctx: RequestContext | None = None) -> dict:
        """``$validate``: an OperationOutcome listing every issue (severity, code, expression),
        without storing anything. ``mode`` create/update/delete adds that interaction's rules."""
        check_type(rtype)
        if mode not in (None, "create", "update", "delete", "profile"):
            raise BadRequest(f"mode={mode} is not supported; use create, update, delete or profile.")
        issues: list[Issue] = []
        if mode == "delete" or (resource is None and rid is not None):
            stored = await self.read(rtype, rid, ctx) if rid else None
            if mode == "delete":
                if rid is None:
                    raise BadRequest("$validate with mode=delete needs an instance: POST [type]/[id]/$validate.")
                await self.access.can_see(ctx, stored)  # the delete's own refusals (403), not a false yes
                self.access.check_delete(ctx, stored, f"{rtype}/{rid}")
                return information_outcome(f"{rtype}/{rid} can be deleted.")
            resource = parse_json(stored.body)
        if resource is None:
            raise BadRequest("$validate needs a resource: the body, or a Parameters with a 'resource' parameter.")
        self._check_body(rtype, resource)
        if mode == "update":
            if rid is None or resource.get("id") != rid:
                issues.append(Issue("invalid", f"{rtype}.id must be present and equal the URL's id for an update.",
                                    expression=[f"{rtype}.id"]))
            else:  # the update's own refusals (the write rule), never a yes the update would not give
                current = await self.access.read_current(ctx, rtype, rid)
                if current is None or not await self.access.can_see(ctx, current):
                    raise NotFound(f"{rtype}/{rid} is not known.")
                await self.access.check_write(ctx, self.store, current, f"{rtype}/{rid}")
                await self.access.check_changes(ctx, self.store, current, resource)
        elif mode == "create" and resource.get("id") is not None:
            issues.append(Issue("informational", f"{rtype}.id is ignored on create; the server assigns the id.",
                                severity="information", expression=[f"{rtype}.id"]))
        issues += await self._off_loop(large(ctx), self.validator.issues, resource, rtype)
        if not issues:
            return information_outcome(f"{rtype} is valid.")
        return operation_outcome(issues)

    # -- writes --------------------------------------------------------------------
    async def create(self, rtype: str, resource: dict, if_none_exist: str | None = None,
                     ctx: RequestContext | None = None) -> WriteResult:
        check_type(rtype)
        self.access.check_scope(ctx, rtype, "c")
        self._check_body(rtype, resource)
        prepared = await self._off_loop(large(ctx), self.prepare, rtype, resource)
        async with self.store.transaction() as tx:
            return await self.create_in(tx, rtype, resource, if_none_exist, prepared=prepared, ctx=ctx)

    async def update(self, rtype: str, rid: str, resource: dict, if_match: str | None = None,
                     ctx: RequestContext | None = None) -> WriteResult:
        self._check_update(rtype, rid, resource)
        self.access.check_scope(ctx, rtype, "u")
        prepared = await self._off_loop(large(ctx), self.prepare_ahead, rtype, resource)
        async with self.store.transaction() as tx:
            return await self.update_in(tx, rtype, rid, resource, if_match, prepared=prepared, ctx=ctx)

    async def conditional_update(self, rtype: str, query: str, resource: dict,
                                 ctx: RequestContext | None = None) -> WriteResult:
        check_type(rtype)
        self.access.check_scope(ctx, rtype, "u")
        self._check_body(rtype, resource)
        prepared = await self._off_loop(large(ctx), self.prepare_ahead, rtype, resource)
        async with self.store.transaction() as tx:
            return await self.conditional_update_in(tx, rtype, query, resource, prepared=prepared, ctx=ctx)

    async def patch(self, rtype: str, rid: str, patch: object, if_match: str | None = None,
                    ctx: RequestContext | None = None) -> WriteResult:
        check_type(rtype)
        self.access.check_scope(ctx, rtype, "u")
        base = await self.store.read(rtype, rid)  # apply and validate before taking the write lock
        visible = base is not None and not base.deleted and await self.access.can_see(ctx, base)
        if visible:  # the write rule first: a patch must not test or copy what the caller may not change
            await self.access.check_write(ctx, self.store, base, f"{rtype}/{rid}")
        heavy = large(ctx) or large_body(base)  # a small patch to a large resource is as much work
        ahead = await self._off_loop(heavy, self._apply_patch, rtype, rid, base, patch) if visible else None
        async with self.store.transaction() as tx:
            return await self.patch_in(tx, rtype, rid, patch, if_match, ahead=ahead, ctx=ctx)

    async def delete(self, rtype: str, rid: str, ctx: RequestContext | None = None) -> WriteResult | None:
        check_type(rtype)
        self.access.check_scope(ctx, rtype, "d")
        async with self.store.transaction() as tx:
            return await self.delete_in(tx, rtype, rid, ctx)

    async def create_in(self, tx: Transaction, rtype: str, resource: dict, if_none_exist: str | None = None,
                        rid: str | None = None, prepared: Prepared | FhirError | None = None,
                        ctx: RequestContext | None = None) -> WriteResult:
        check_type(rtype)
        self.access.check_scope(ctx, rtype, "c")
        self._check_body(rtype, resource)
        if if_none_exist:
            # A match is answered with the existing resource: that is a read.
            self.access.check_scope(ctx, rtype, "r")
            existing = await self.match_one(tx, rtype, if_none_exist, "If-None-Exist", ctx)
            if existing is not None:
                return WriteResult((await self.access.release(ctx, [existing]))[0], created=False, changed=False)
        stored = await self._put(tx, rtype, rid or str(uuid.uuid4()), resource, 1, prepared, ctx)
        return WriteResult(stored, created=True)

    async def update_in(self, tx: Transaction, rtype: str, rid: str, resource: dict,
                        if_match: str | None = None, prepared: Prepared | FhirError | None = None,
                        ctx: RequestContext | None = None, server: bool = False) -> WriteResult:
        """``server``: the gateway's own change (a Subscription's status after a handshake)."""
        self._check_update(rtype, rid, resource)
        self.access.check_scope(ctx, rtype, "u")
        current = await self._current(tx, rtype, rid, ctx)
        await self.access.check_write(ctx, tx, current, f"{rtype}/{rid}")
        if isinstance(prepared, FhirError):  # may not write here at all: told that first, then what is invalid
            raise prepared
        self._check_if_match(current, if_match, f"{rtype}/{rid}")
        vid = current.vid + 1 if current else 1
        stored = await self._put(tx, rtype, rid, resource, vid, prepared, ctx, previous=current, server=server)
        return WriteResult(stored, created=current is None or current.deleted)

    async def _current(self, tx: Transaction, rtype: str, rid: str, ctx: RequestContext | None) -> StoredResource | None:
        """The current version, if the caller may see it; an id taken by a resource the caller
        may not see is refused as unknown, so that a PUT cannot probe for it."""
        current = await tx.read(rtype, rid)
        if current is None or not await self.access.can_see(ctx, current):
            self.access.check_client_id(ctx, rtype, rid)  # same answer for a free id and a hidden one
        return current

    async def conditional_update_in(self, tx: Transaction, rtype: str, query: str, resource: dict,
                                    prepared: Prepared | FhirError | None = None, ctx: RequestContext | None = None,
                                    new_id: str | None = None) -> WriteResult:
        """``new_id``: the server-assigned id to create with when nothing matches (a transaction
        assigns it up front so that references to the entry resolve)."""
        check_type(rtype)
        self.access.check_scope(ctx, rtype, "u")
        self._check_body(rtype, resource)
        existing = await self.match_one(tx, rtype, query, "conditional update", ctx)
        if existing is None:
            rid = resource.get("id")
            if rid is not None and (await self._current(tx, rtype, rid, ctx)) is not None:
                raise Conflict(f"{rtype}/{rid} exists but does not match '{query}'; fix the id or the criteria.")
            if rid is not None:
                return await self.update_in(tx, rtype, rid, resource, prepared=prepared, ctx=ctx)
            return await self.create_in(tx, rtype, resource, rid=new_id, prepared=prepared, ctx=ctx)
        if resource.get("id") not in (None, existing.rid):
            raise BadRequest(f"The body's id '{resource['id']}' differs from the matching {rtype}/{existing.rid}.")
        return await self.update_in(tx, rtype, existing.rid, {**resource, "id": existing.rid}, prepared=prepared,
                                    ctx=ctx)

    async def patch_in(self, tx: Transaction, rtype: str, rid: str, patch: object,
                       if_match: str | None = None, ahead: tuple[int, dict, Prepared] | None = None,
                       ctx: RequestContext | None = None) -> WriteResult:
        """``ahead``: the patch applied and validated on version n before the transaction;
        used only if the resource is still at version n inside it."""
        check_type(rtype)
        self.access.check_scope(ctx, rtype, "u")
        current = await tx.read(rtype, rid)
        if current is None or not await self.access.can_see(ctx, current):
            raise NotFound(f"{rtype}/{rid} is not known.")
        if current.deleted:
            raise Gone(f"{rtype}/{rid} was deleted; it cannot be patched.")
        await self.access.check_write(ctx, tx, current, f"{rtype}/{rid}")
        self._check_if_match(current, if_match, f"{rtype}/{rid}")
        if ahead is None or ahead[0] != current.vid:
            ahead = self._apply_patch(rtype, rid, current, patch)
        _, patched, prepared = ahead
        stored = await self._put(tx, rtype, rid, patched, current.vid + 1, prepared, ctx, previous=current,
                                 interaction="patch")
        return WriteResult(stored, created=False)

    def _apply_patch(self, rtype: str, rid: str, current: StoredResource, patch: object) -> tuple[int, dict, Prepared]:
        if not isinstance(patch, list) or not all(isinstance(op, dict) for op in patch):
            raise BadRequest("A JSON Patch body must be an array of operations ({\"op\": ..., \"path\": ...}).")
        try:
            patched = jsonpatch.JsonPatch(patch).apply(parse_json(current.body))
        except jsonpatch.InvalidJsonPatch as exc:
            raise BadRequest(f"The JSON Patch is malformed: {exc}") from None
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise UnprocessablePatch(f"The JSON Patch cannot be applied to {rtype}/{rid}: {exc}") from None
        if not isinstance(patched, dict) or patched.get("resourceType") != rtype or patched.get("id") != rid:
            raise UnprocessablePatch("A patch may not change resourceType or id.")
        check_depth(patched, self.max_json_depth, f"{rtype}/{rid} as patched")  # resource + value: up to twice
        self._check_body(rtype, patched)
        return current.vid, patched, self.prepare(rtype, patched)

    async def delete_in(self, tx: Transaction, rtype: str, rid: str,
                        ctx: RequestContext | None = None) -> WriteResult | None:
        """Delete (a new, empty version). Deleting a missing or deleted resource changes nothing;
        nor does deleting one the caller may not see (204 either way: no existence leak)."""
        check_type(rtype)
        self.access.check_scope(ctx, rtype, "d")
        current = await tx.read(rtype, rid)
        if current is None or current.deleted or not await self.access.can_see(ctx, current):
            return None
        self.access.check_delete(ctx, current, f"{rtype}/{rid}")
        version = StoredResource(rtype, rid, current.vid + 1, self._now(), None)
        stored = WriteResult(await self._save(tx, version, None), created=False)
        await self.audit.record_change(tx, ctx, "delete", stored.stored)
        await self.access.after_write(tx, rtype, rid, {current.person or ""}, previous=current)
        if self.events is not None:
            await self.events.after_write(tx, rtype, stored.stored, None, None, current)
        return stored

    # -- helpers -------------------------------------------------------------------
    @staticmethod
    def _check_body(rtype: str, resource: object) -> None:
        if not isinstance(resource, dict):
            raise BadRequest(f"The body must be a JSON object holding a {rtype} resource.")
        actual = resource.get("resourceType")
        if actual != rtype:
            raise BadRequest(f"The body's resourceType is '{actual}', but this URL is for {rtype}.")
        if "id" in resource and not isinstance(resource["id"], str):
            raise BadRequest(f"{rtype}.id must be a string.")
        if "meta" in resource and not isinstance(resource["meta"], dict):
            raise BadRequest(f"{rtype}.meta must be an object.")

    def _check_update(self, rtype: str, rid: str, resource: object) -> None:
        check_type(rtype)
        self._check_body(rtype, resource)
        if not is_valid_id(rid):
            raise BadRequest(f"'{rid}' is not a valid FHIR id (1-64 of A-Z a-z 0-9 - .).")
        if resource.get("id") is None:
            raise BadRequest(f"The {rtype} in the body has no id; an update must carry id '{rid}'.")
        if resource.get("id") != rid:
            raise BadRequest(f"The body's id '{resource.get('id')}' does not match the URL's id '{rid}'.")

    @staticmethod
    def _check_if_match(current: StoredResource | None, if_match: object, label: str) -> None:
        if if_match is None:
            return
        if not isinstance(if_match, str):
            raise BadRequest(f"ifMatch for {label} must be a string such as W/\"3\".")
        expected = parse_etag(if_match)
        if current is None or current.deleted:
            raise PreconditionFailed(f"If-Match {if_match}: {label} has no current version; read it first.")
        if current.vid != expected:
            raise PreconditionFailed(
                f"If-Match {if_match} is stale: {label} is at version {current.vid}. "
                "Read the current version, re-apply your change and retry.")

    async def match_one(self, tx: Transaction, rtype: str, query: object, what: str,
                        ctx: RequestContext | None = None) -> StoredResource | None:
        """The one resource matching conditional criteria, None if none; 412 if several."""
        if not isinstance(query, str):
            raise BadRequest(f"The {what} criteria must be a query string such as identifier=system|value.")
        params = parse_qsl(query.lstrip("?"), keep_blank_values=True)
        if not params:
            raise BadRequest(f"The {what} criteria are empty; give search parameters such as identifier=system|value.")
        request = self.parser.parse(rtype, params)
        # Only what the caller may see can match: criteria must not probe for others' resources.
        access = self.access.filter(ctx, rtype, search_param_names(params))
        matches = await tx.search(SearchPlan(rtype, request.plan.clauses, limit=2, access=access))
        if matches.total > 1:
            raise PreconditionFailed(f"The {what} criteria '{query}' match {matches.total} {rtype} resources; "
                                     "make them specific enough to match one.")
        if matches.total == 0:
            return None
        return (await tx.read_seqs(matches.seqs[:1]))[0]

    def prepare_ahead(self, rtype: str, resource: dict) -> Prepared | FhirError:
        """``prepare`` before the transaction, keeping a failure to raise after the access checks:
        a caller that may not change the resource learns that (403), not what its body lacks."""
        try:
            return self.prepare(rtype, resource)
        except FhirError as exc:
            return exc

    def prepare(self, rtype: str, resource: dict) -> Prepared:
        """Validate and index the canonical form — the CPU-heavy part of a write, done before the
        write lock is taken so that concurrent writers overlap it with each other's commits.
        Neither depends on the id or version, which are filled in by ``_put``."""
        meta = {k: v for k, v in (resource.get("meta") or {}).items() if k not in ("versionId", "lastUpdated")}
        meta = {"versionId": "1", "lastUpdated": format_instant(self._now()), **meta}
        rid = resource.get("id")
        canonical = canonical_resource(resource, rid if isinstance(rid, str) and is_valid_id(rid) else "new", meta)
        self.validator.validate(canonical, rtype)  # what we store is what we validate
        return Prepared(canonical, index_resource(self.registry, rtype, canonical, self.parser.local_base))

    async def _off_loop(self, heavy: bool, fn, *args):
        """``fn(*args)`` — validation, preparing — on the offload worker if ``heavy`` (the request's
        body is large: ``gateway.offload``), else right here."""
        if heavy and self.offload is not None:
            return await self.offload.run(fn, *args)
        return fn(*args)

    async def _put(self, tx: Transaction, rtype: str, rid: str, resource: dict, vid: int,
                   prepared: Prepared | FhirError | None = None, ctx: RequestContext | None = None,
                   previous: StoredResource | None = None, interaction: str | None = None,
                   server: bool = False) -> StoredResource:
        if isinstance(prepared, FhirError):
            raise prepared
        prepared = prepared or await self._off_loop(large(ctx), self.prepare, rtype, resource)
        now = self._now()
        canonical = prepared.canonical
        canonical["id"] = rid
        canonical["meta"]["versionId"] = str(vid)
        canonical["meta"]["lastUpdated"] = format_instant(now)
        channel = None  # a Subscription's status is the server's: decided before the bytes are made
        if rtype == SUBSCRIPTION and self.events is not None:
            channel = await self.events.subscription_status(tx, ctx, rid, canonical, server)
        version = StoredResource(rtype, rid, vid, now, dumps(canonical))
        await self.access.check_changes(ctx, tx, previous, canonical)  # the write rule, element by element
        author, patient, person = access = await self.access.access_row(ctx, tx, rtype, rid, canonical)
        await self.access.check_subject(ctx, tx, rtype, patient, person, previous)
        await self.access.check_references(ctx, tx, canonical, patient)
        await self.access.check_confirmation(ctx, tx, rtype, canonical)
        stored = await self._save(tx, version, prepared.index, access)
        created = previous is None or previous.deleted
        await self.audit.record_change(tx, ctx, interaction or ("create" if created else "update"), stored)
        # A CareTeam, Consent or confirmation changes who may see its person (and the one it left).
        await self.access.after_write(tx, rtype, rid, {person, (previous.person if previous else "") or ""},
                                      previous=previous)
        if self.events is not None:  # notification events, committed with the change
            await self.events.after_write(tx, rtype, stored, canonical, prepared.index, previous, channel, server)
        return stored

    @staticmethod
    async def _save(tx: Transaction, version: StoredResource, index, access=None) -> StoredResource:
        try:
            return await tx.put(version, index, access)
        except VersionConflict:
            raise PreconditionFailed(f"{version.rtype}/{version.rid} was changed by someone else at the same "
                                     "time; read it again and retry.") from None

    @staticmethod
    def _now() -> int:
        return now_us() // 1000 * 1000  # millisecond precision, as served in meta.lastUpdated

