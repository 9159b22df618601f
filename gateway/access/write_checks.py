"""The write rule and custodian confirmations, enforced: part of the one access decision (``AccessPolicy``).

``write_rule`` says, as data, who besides a resource's author may change which of its elements;
this module resolves the roles (a Task's owner through ``Task.owner``), refuses before anything
of the change is looked at when the caller has no role, and then checks the change element by
element. ``check_confirmation`` keeps custodian confirmations (``gateway.access.custodians``)
to versions of CareTeams and Consents the confirming organisation can see.
"""
from __future__ import annotations

from gateway.access import write_rule
from gateway.access.custodians import Resolver, confirmed_targets, identifier_hsa, is_confirmation
from gateway.access.recompute import GRANT_TYPES
from gateway.errors import Forbidden, InvalidResource, Issue
from gateway.fhir.canonical import parse_json
from gateway.fhir.context import RequestContext
from gateway.fhir.references import parse_reference
from gateway.store import Store, StoredResource, Transaction

# Directory types: readable by every caller, changed by their author only.
OPEN_TYPES = frozenset({"Organization", "Practitioner", "PractitionerRole", "Location", "HealthcareService",
                        "Endpoint"})


class WriteChecks:
    """Mixed into ``AccessPolicy``, whose ``local_base`` and ``visible`` it uses."""

    local_base: str | None

    async def check_write(self, ctx: RequestContext | None, reader: Store | Transaction,
                          current: StoredResource | None, what: str) -> None:
        """May the caller change this resource at all? Its author may; another organisation only
        if the write rule gives it a role here (``write_rule``). Raises Forbidden before anything
        of the change is looked at, so a refusal tells nothing about the stored elements."""
        caller = ctx.caller if ctx else None
        if caller is None or current is None or current.author == caller.organization:
            return
        rule = write_rule.rule_for(current.rtype)
        if rule is None or current.deleted or not current.author or current.rtype in OPEN_TYPES \
                or current.rtype in GRANT_TYPES:
            raise Forbidden(f"{what} was created by another organisation; only it may change it.")
        if rule.role == write_rule.OWNER and caller.organization not in await self._owners(reader, current):
            raise Forbidden(f"{what} was created by another organisation; besides it only {rule.who} may change "
                            f"it, and only {rule.allowed()}.")

    async def check_changes(self, ctx: RequestContext | None, reader: Store | Transaction,
                            current: StoredResource | None, new: dict) -> None:
        """The change element by element, for a caller ``check_write`` let through: 403 naming the
        first element its role may not change, or an added activity that is not its own."""
        caller = ctx.caller if ctx else None
        if caller is None or current is None or current.deleted or current.author == caller.organization:
            return
        rule = write_rule.rule_for(current.rtype)
        old = parse_json(current.body)
        element = write_rule.refused_element(rule, old, new)
        if element is not None:
            path = f"{current.rtype}.{element}"
            message = (f"{path} may be changed only by the organisation that created {current.rtype}/{current.rid}; "
                       f"as {rule.who} you may change {rule.allowed()}.")
            raise Forbidden(message, issues=[Issue("forbidden", message, expression=[path])])
        for item in write_rule.additions(rule, old, new, "activity"):
            await self._check_own_activity(ctx, reader, current, item)

    async def _check_own_activity(self, ctx: RequestContext, reader: Store | Transaction, plan: StoredResource,
                                  item: object) -> None:
        """A party adds to a plan what it does itself: an activity pointing at its own resources."""
        path = f"{plan.rtype}.activity"
        refs = [item.get("reference"), *(item.get("outcomeReference") or [])] if isinstance(item, dict) else []
        mine = isinstance(item, dict) and "detail" not in item and item.get("reference") is not None
        for ref in refs:
            parsed = parse_reference(ref, (self.local_base,))
            found = await reader.read(*parsed) if parsed and parsed[0] else None
            mine = mine and found is not None and found.author == ctx.caller.organization
        if not mine:
            message = (f"A party to {plan.rtype}/{plan.rid} adds activities that point at its own resources "
                       "(activity.reference to a Task or other request it created, no detail); the plan's "
                       "other activities are its author's.")
            raise Forbidden(message, issues=[Issue("forbidden", message, expression=[path])])

    async def _owners(self, reader: Store | Transaction, task: StoredResource) -> list[str]:
        """The HSA-ids ``Task.owner`` of the current version stands for."""
        owner = (parse_json(task.body) if task.body else {}).get("owner")
        if not isinstance(owner, dict):
            return []
        ref = owner.get("reference")
        resolved = await Resolver(reader, self.local_base).organizations(ref, task.author or "") if ref else []
        return resolved + identifier_hsa(owner)

    async def check_confirmation(self, ctx: RequestContext | None, tx: Transaction, rtype: str,
                                 resource: dict) -> None:
        """A custodian confirmation (``gateway.access.custodians``) names versions of CareTeams or
        Consents the caller may see; 422 otherwise (the same answer for a hidden one as for none)."""
        if rtype != "Provenance" or not is_confirmation(resource):
            return
        targets = confirmed_targets(resource, self.local_base)
        path = "Provenance.target"
        if not targets:
            message = "A custodian confirmation targets the CareTeam or Consent it confirms."
            raise InvalidResource(message, issues=[Issue("business-rule", message, expression=[path])])
        for ttype, tid, vid in targets:
            label = f"{ttype}/{tid}" + (f"/_history/{vid}" if vid else "")
            if vid is None:
                message = (f"A custodian confirmation names the version it confirms: {ttype}/{tid}/_history/n "
                           f"(a later version needs a confirmation of its own).")
                raise InvalidResource(message, issues=[Issue("business-rule", message, expression=[path])])
            found = await tx.read(ttype, tid)
            version = await tx.read_version(ttype, tid, vid) if found is not None else None
            if version is None or version.deleted or not await self.visible(ctx, [found], reader=tx):
                message = f"{label} is not known; a confirmation names a version of a CareTeam or Consent you can see."
                raise InvalidResource(message, issues=[Issue("not-found", message, expression=[path])])

