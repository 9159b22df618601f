"""The access log (patientdatalagen): one entry for every access and change, served to
administrators as read-only ``AuditEvent`` resources.

- A change is logged inside the store transaction that makes it (``record_change``), so a
  committed change always has its entry and a rolled-back one has none.
- Reads, searches and refused requests are logged after the response is known
  (``record_request``), batched: entries are appended in one store transaction at most
  every ``flush_seconds`` (or every ``batch`` entries) so the log does not cost a disk sync
  per read. An entry can be lost only if the process dies within that window.
- Entries record the client, its organisation, the action, the resources (with versions)
  and the patients they concern, and the outcome — never in the server log, only here.
"""
from __future__ import annotations

import asyncio
import base64
import logging
import re
from dataclasses import replace
from urllib.parse import urlencode

from gateway.access.caller import Caller
from gateway.validation.identifiers import HSA_ID as HSA_SYSTEM
from gateway.access.trail import AuditTrail
from gateway.errors import BadRequest, Forbidden, MethodNotAllowed, NotFound
from gateway.fhir.bundle_bytes import bundle
from gateway.fhir.canonical import dumps
from gateway.fhir.context import RequestContext
from gateway.fhir.types import parse_uint, require_uint
from gateway.search.dates import date_range, now_us
from gateway.store import Store, StoredResource, Transaction
from gateway.store.base import AuditQuery
from gateway.store.records import AuditRecord, format_instant

log = logging.getLogger(__name__)
ACTIONS = {"create": "C", "read": "R", "vread": "R", "search-type": "R", "history-instance": "R",
           "history-type": "R", "history-system": "R", "update": "U", "patch": "U", "delete": "D",
           "transaction": "E", "batch": "E", "operation": "E", "notification": "R"}
_REST_TYPE = {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest",
              "display": "RESTful Operation"}
# A notification sent to a subscriber is a disclosure the gateway made on its own: an export.
_NOTIFICATION_TYPE = {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110106", "display": "Export"}
_NOTIFICATION_SUBTYPE = "https://samverkan.example.se/fhir/CodeSystem/audit-subtype"
_CURSOR = re.compile(r"^([0-9]{1,18})\.([0-9]{1,18})$")
_SEARCH_PARAMS = {"patient", "agent", "date", "_count", "_cursor", "_format", "_pretty"}


def _entity(r: StoredResource) -> str:
    return f"{r.rtype}/{r.rid}/_history/{r.vid}"


class AuditLog:
    def __init__(self, store: Store, flush_seconds: float = 0.2, batch: int = 500):
        self.store = store
        self.flush_seconds = flush_seconds
        self.batch = batch
        self._pending: list[AuditRecord] = []
        self._task: asyncio.Task | None = None
        self._early: asyncio.Task | None = None  # a flush started because the batch filled up
        self._inflight: asyncio.Future | None = None

    # -- writing ---------------------------------------------------------------------------
    async def record_change(self, tx: Transaction, ctx: RequestContext | None, interaction: str,
                            stored: StoredResource) -> None:
        if ctx is None or ctx.caller is None:
            return  # internal or GATEWAY_SECURITY=off: no client to log
        await tx.append_audit([AuditRecord(now_us(), ACTIONS[interaction], interaction, "0", ctx.caller.client_id,
                                           ctx.caller.organization, stored.patient or "", _entity(stored),
                                           custodian=stored.author or "")])
        if ctx.audit is not None:
            ctx.audit.changes += 1

    def record_request(self, caller: Caller | None, trail: AuditTrail | None, interaction: str, status: int,
                       query: str = "") -> None:
        """After a response: the reads of a successful request, or the refusal of a failed one."""
        if caller is None and status != 401:
            return
        if trail is not None and trail.changes and status < 400:
            return  # its changes were logged with them
        seen = trail.seen if trail is not None and status < 400 else ()
        if len(seen) == 1:  # a read: the common case needs no grouping
            groups = ((seen[0].patient or "", seen[0].author or "", _entity(seen[0])),)
        else:  # one entry per patient and custodian: each custodian's admins follow up access to its records
            by_patient: dict[tuple[str, str], list[str]] = {}
            for r in seen:
                by_patient.setdefault((r.patient or "", r.author or ""), []).append(_entity(r))
            groups = [(p, c, "\n".join(dict.fromkeys(e))) for (p, c), e in (by_patient or {("", ""): []}).items()]
        outcome = "0" if status < 400 else "4" if status < 500 else "8"
        now, action = now_us(), ACTIONS.get(interaction, "E")
        client, org = (caller.client_id, caller.organization) if caller else ("", "")
        for patient, custodian, entities in groups:
            self._pending.append(AuditRecord(now, action, interaction, outcome, client, org, patient, entities, query,
                                             custodian))
        if len(self._pending) >= self.batch and self._task is not None and (self._early is None or self._early.done()):
            self._early = asyncio.get_running_loop().create_task(self._flush_logged())

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        for task in (self._task, self._early):
            if task is not None and not task.done():
                task.cancel()
                try:
                    await task
                except asyncio.CancelledError:
                    pass
        self._task = self._early = None
        if self._inflight is not None:
            await asyncio.gather(self._inflight, return_exceptions=True)
        await self.flush()

    async def flush(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            try:
                await self.store.append_audit(pending)
            except Exception:
                self._pending[:0] = pending  # keep them for the next attempt
                raise

    async def _run(self) -> None:
        # A plain sleep, not wait_for on an Event: cancelling a task inside wait_for can hang
        # on Python 3.11 (seen here: the lifespan shutdown never returned).
        while True:
            await asyncio.sleep(self.flush_seconds)
            await self._flush_logged()

    async def _flush_logged(self) -> None:
        try:
            # Shielded: stopping the timer must not cut a batch off half-written; stop() waits for it.
            self._inflight = asyncio.ensure_future(self.flush())
            await asyncio.shield(self._inflight)
        except Exception as exc:  # the store is unavailable: the entries wait for the next tick
            log.error("access log flush failed: %s", type(exc).__name__)

    # -- serving (administrators only) -------------------------------------------------------
    @staticmethod
    def _check_admin(ctx: RequestContext | None, letter: str) -> str | None:
        """The organisation whose part of the log the caller may read (None: all of it).

        Patientdatalagen has each care provider follow up access to its own records: an
        organisation's administrator reads the entries of its own users and those about the
        records it is custodian of; only the gateway's operator reads everything."""
        caller = ctx.caller if ctx else None
        if caller is None:
            return None
        if not caller.admin and not caller.operator:
            raise Forbidden("The access log (AuditEvent) is for administrators; this client is not one.")
        if not caller.scopes.allows("AuditEvent", letter):
            raise Forbidden(f"The access token's scopes do not allow this on AuditEvent (system/AuditEvent.{letter}).")
        return None if caller.operator else caller.organization

    @staticmethod
    def refuse_write() -> None:
        raise MethodNotAllowed("AuditEvent resources are the gateway's access log: written by the gateway only, "
                               "never changed or deleted.")

    async def read(self, ctx: RequestContext | None, rid: str) -> StoredResource:
        visible_to = self._check_admin(ctx, "r")
        await self.flush()
        seq = parse_uint(rid)
        record = await self.store.read_audit(seq) if seq else None
        if record is None or visible_to is not None and visible_to not in (record.organization, record.custodian):
            raise NotFound(f"AuditEvent/{rid} is not known.")
        return StoredResource("AuditEvent", str(record.seq), 1, record.recorded_us, dumps(audit_event(record)),
                              record.seq)

    async def search(self, ctx: RequestContext, params: list[tuple[str, str]], default_count: int,
                     max_count: int) -> bytes:
        visible_to = self._check_admin(ctx, "s")
        unknown = {k for k, _ in params} - _SEARCH_PARAMS
        if unknown:
            raise BadRequest(f"AuditEvent search takes patient, agent (HSA-id), date, _count; unknown: "
                             f"{', '.join(sorted(unknown))}.")
        query = AuditQuery(limit=default_count, visible_to=visible_to)
        for key, value in params:
            if key == "patient":
                query = replace(query, patient=value.rsplit("/", 1)[-1])
            elif key == "agent":
                query = replace(query, organization=value.split("|")[-1])
            elif key == "date":
                query = _date(query, value)
            elif key == "_count":
                query = replace(query, limit=min(require_uint(value, "_count"), max_count))
            elif key == "_cursor":
                query = replace(query, before=_cursor(value))
        await self.flush()
        records, total = await self.store.search_audit(query)
        kept = [(k, v) for k, v in params if k != "_cursor"]
        links = [("self", f"{ctx.base_url}/AuditEvent?{urlencode(params)}")]
        if len(records) == query.limit and records:
            last = records[-1]
            links.append(("next", f"{ctx.base_url}/AuditEvent?"
                                  f"{urlencode([*kept, ('_cursor', f'{last.recorded_us}.{last.seq}')])}"))
        entries = [dumps({"fullUrl": f"{ctx.base_url}/AuditEvent/{r.seq}", "resource": audit_event(r),
                          "search": {"mode": "match"}}) for r in records]
        return bundle("searchset", entries, total=total, links=links)


def _cursor(value: str) -> tuple[int, int]:
    """``<recorded µs>.<id>`` of the last entry of the previous page, as the next link gives it."""
    m = _CURSOR.match(value)
    if m is None:
        raise BadRequest(f"_cursor must be the value a next link gives (<recorded>.<id>), not '{value}'.")
    return int(m.group(1)), int(m.group(2))


def _date(query: AuditQuery, value: str) -> AuditQuery:
    prefix, text = (value[:2], value[2:]) if value[:2] in ("ge", "gt", "le", "lt", "eq") else ("eq", value)
    try:
        low, high = date_range(text)
    except ValueError as exc:
        raise BadRequest(f"date: {exc}.") from None
    if prefix in ("ge", "gt"):
        return replace(query, since_us=low if prefix == "ge" else high + 1)
    if prefix in ("le", "lt"):
        return replace(query, until_us=high + 1 if prefix == "le" else low)
    return replace(query, since_us=low, until_us=high + 1)


def audit_event(r: AuditRecord) -> dict:
    """An access-log entry as a FHIR R4 AuditEvent (DICOM/FHIR RESTful-operation style)."""
    agent = {"type": {"coding": [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110153",
                                  "display": "Source Role ID"}]},
             "requestor": True}
    if r.organization:
        agent["who"] = {"identifier": {"system": HSA_SYSTEM, "value": r.organization}}
    if r.client:
        agent["altId"] = r.client
    entities = [{"what": {"reference": e}} for e in r.entity_list]
    entities += [{"what": {"reference": f"Patient/{p}"},
                  "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "1"},
                  "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role", "code": "1"}}
                 for p in ([r.patient] if r.patient else [])]
    if r.query:
        entities.append({"type": {"system": "http://terminology.hl7.org/CodeSystem/audit-entity-type", "code": "2"},
                         "query": base64.b64encode(r.query.encode()).decode()})
    event = {"resourceType": "AuditEvent", "id": str(r.seq),
             "meta": {"versionId": "1", "lastUpdated": format_instant(r.recorded_us)},
             "type": _NOTIFICATION_TYPE if r.interaction == "notification" else _REST_TYPE,
             "subtype": [{"system": _NOTIFICATION_SUBTYPE if r.interaction == "notification"
                          else "http://hl7.org/fhir/restful-interaction", "code": r.interaction}],
             "action": r.action, "recorded": format_instant(r.recorded_us), "outcome": r.outcome,
             "agent": [agent],
             "source": {"observer": {"display": "Samverkan Gateway"},
                        "type": [{"system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                                  "code": "4", "display": "Application Server"}]}}
    if entities:
        event["entity"] = entities
    return event
