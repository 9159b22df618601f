"""``GET /metadata``: a CapabilityStatement that lists exactly what this server does.

Built from the same registry the search layer uses, so a search parameter is listed if and
only if it can be searched.
"""
from __future__ import annotations

from gateway.fhir.canonical import dumps
from gateway.fhir.conformance import CONFORMANCE_TYPES, SEARCH_PARAMS
from gateway.fhir.types import SUPPORTED_TYPES
from gateway.search.registry import SearchRegistry

INTERACTIONS = ["read", "vread", "update", "patch", "delete", "history-instance", "history-type", "create",
                "search-type"]
SOFTWARE_VERSION = "0.1.0"


def capability_statement(registry: SearchRegistry, base_url: str, published: str,
                         profiles: dict[str, list[str]] | None = None,
                         required: dict[str, list[str]] | None = None, secured: bool = True,
                         topics: list[str] = (), operations=None) -> bytes:
    """``profiles``: type → profile URLs held (supportedProfile); ``required``: type → the
    profiles every write must meet (listed as ``profile`` when there is exactly one);
    ``secured``: SMART backend services on (then ids are the server's: no update-as-create);
    ``topics``: the SubscriptionTopic canonicals a Subscription may name (Backport IG);
    ``operations``: the ``OperationRegistry`` (each type's and the system's operations)."""
    resources = []
    for rtype in SUPPORTED_TYPES:
        if rtype == "AuditEvent":
            resources.append(_audit_event_resource())
            continue
        extra = _subscription_extras(topics) if rtype == "Subscription" else {}
        params = registry.params(rtype)
        references = sorted(c for c, p in params.items() if p.type == "reference")
        resources.append({
            "type": rtype,
            "interaction": [{"code": code} for code in INTERACTIONS],
            "versioning": "versioned-update",
            "readHistory": True,
            "updateCreate": not secured,
            "conditionalCreate": True,
            "conditionalRead": "not-match",
            "conditionalUpdate": True,
            "conditionalDelete": "not-supported",
            "searchInclude": ["*"] + [f"{rtype}:{c}" for c in references],
            "searchRevInclude": sorted({f"{src}:{c}" for src in SUPPORTED_TYPES if src != "AuditEvent"
                                        for c, p in registry.params(src).items()
                                        if p.type == "reference" and (not p.targets or rtype in p.targets)}),
            **({"profile": required[rtype][0]} if len((required or {}).get(rtype, [])) == 1 else {}),
            **({"supportedProfile": sorted((profiles or {})[rtype])} if (profiles or {}).get(rtype) else {}),
            **extra.get("fields", {}),
            "operation": [op.capability() for op in operations.for_type(rtype)] if operations else [],
            "searchParam": [
                {"name": code, "definition": p.url, "type": p.type, **({"documentation": p.description}
                                                                       if p.description else {})}
                for code, p in sorted(params.items())
            ],
        })
    for rtype in CONFORMANCE_TYPES:  # read-only, served from profiles/
        resources.append({
            "type": rtype,
            "documentation": "Read-only: the conformance resources this server is defined by (profiles/).",
            "interaction": [{"code": "read"}, {"code": "vread"}, {"code": "search-type"}],
            "searchInclude": [],
            "searchRevInclude": [],
            "searchParam": [{"name": n, "type": "token" if n in ("_id", "status", "type", "base", "code")
                             # source-uri/target-uri: R4 has them as references; here canonicals, matched exactly
                             else "uri" if n in ("url", "source-system", "target-system", "source-uri", "target-uri")
                             else "string"}
                            for n in SEARCH_PARAMS[rtype]],
            # only operations registered for the type by name ($translate): the others act on stored types
            **({"operation": [op.capability() for op in operations.for_type(rtype) if op.types]}
               if operations and any(op.types for op in operations.for_type(rtype)) else {}),
        })
    statement = {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": published,
        "publisher": "Samverkan Gateway",
        "kind": "instance",
        "software": {"name": "Samverkan Gateway", "version": SOFTWARE_VERSION},
        "implementation": {"description": "Shared care plans between region and municipality", "url": base_url},
        "instantiates": [BACKPORT_SERVER],
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [{
            "mode": "server",
            "documentation": ("Search result parameters: _count, _sort (_lastUpdated, _id, date and string "
                              "parameters), _include, _revinclude (incl. :iterate, one level), _summary=count, "
                              "_total, _elements. Modifiers: :missing, :exact, :contains, :not, :[type]. "
                              "Date prefixes: eq ne lt le gt ge sa eb."),
            **({"security": _smart_security(base_url)} if secured else {}),
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}],
            **({"operation": [op.capability() for op in operations.system()]} if operations else {}),
        }],
    }
    return dumps(statement)


BACKPORT = "http://hl7.org/fhir/uv/subscriptions-backport/"
BACKPORT_SERVER = BACKPORT + "CapabilityStatement/backport-subscription-server-r4"


def _subscription_extras(topics: list[str]) -> dict:
    """Topic-based subscriptions (Subscriptions R5 Backport IG, R4): the topics and the profile
    (its operations ``$status`` and ``$events`` come from the operation registry)."""
    return {
        "fields": {
            "extension": [{"url": BACKPORT + "StructureDefinition/capabilitystatement-subscriptiontopic-canonical",
                           "valueCanonical": url} for url in topics],
            "supportedProfile": [BACKPORT + "StructureDefinition/backport-subscription"],
            "documentation": "Topic-based subscriptions, rest-hook channel, application/fhir+json, payload empty, "
                             "id-only (default) or full-resource (https or loopback endpoints only). Filters: "
                             "equality on the parameters each topic lists (profiles/subscription-topics/). Events "
                             "reach a subscriber only if its organisation may see the resource at delivery.",
        },
    }


def _audit_event_resource() -> dict:
    return {
        "type": "AuditEvent",
        "documentation": "The access log: one entry per access and change, written by the gateway; readable and "
                         "searchable by administrator clients only, never changed or deleted.",
        "interaction": [{"code": "read"}, {"code": "search-type"}],
        "searchInclude": [],
        "searchRevInclude": [],
        "searchParam": [{"name": "patient", "type": "reference"}, {"name": "agent", "type": "token",
                         "documentation": "HSA-id of the organisation that acted"},
                        {"name": "date", "type": "date"}],
    }


def _smart_security(base_url: str) -> dict:
    return {
        "extension": [{"url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                       "extension": [{"url": "token", "valueUri": f"{base_url}/auth/token"}]}],
        "service": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                 "code": "SMART-on-FHIR"}]}],
        "description": "SMART Backend Services (client credentials, private_key_jwt RS384/ES384); see "
                       f"{base_url}/.well-known/smart-configuration. Organisations see what they created, and "
                       "other organisations' data about a person only with CareTeam membership and consent.",
    }
