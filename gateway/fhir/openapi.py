"""``GET /fhir/api-docs``: an OpenAPI 3.0 description generated from the CapabilityStatement.

Standard API tooling (fuzzers such as schemathesis, client generators, gateways) reads OpenAPI,
not FHIR conformance resources; HAPI serves the same at ``/api-docs``. Generating it from the
CapabilityStatement, rather than writing it by hand, keeps the two from drifting: a type,
interaction, operation or search parameter is described if and only if ``/metadata`` lists it.

Shapes: one path per supported type and interaction (``/Patient``, ``/Patient/{id}``,
``/Patient/{id}/_history/{vid}``, ``/Patient/$validate`` …), search parameters as query
parameters (strings: FHIR's prefixes and modifiers are part of the value or the name), request
and response bodies as ``application/fhir+json`` with a minimal schema per type (the resource
rules live in the profiles, not here), every error as an ``OperationOutcome`` (``default``
response), the SMART bearer scheme with the token endpoint, and the public endpoints without it.
"""
from __future__ import annotations

from typing import Any

FHIR_JSON = "application/fhir+json"
ID_PATTERN = r"^[A-Za-z0-9\-.]{1,64}$"
OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
RESULT_PARAMETERS: list[tuple[str, dict, str]] = [
    ("_count", {"type": "integer", "minimum": 0}, "Entries per page (the server caps it)."),
    ("_sort", {"type": "string"}, "_lastUpdated, _id, or a date or string parameter; '-' for descending."),
    ("_include", {"type": "string"}, "Type:parameter of references to include (':iterate' allowed)."),
    ("_revinclude", {"type": "string"}, "Type:parameter of resources referring to the matches."),
    ("_summary", {"type": "string", "enum": ["count"]}, "count: the total only."),
    ("_total", {"type": "string", "enum": ["none", "estimate", "accurate"]}, "Whether to count the matches."),
    ("_elements", {"type": "string"}, "Comma-separated top-level elements to return (SUBSETTED)."),
]
_OPERATIONS = {
    "validate": "Validate a resource as a write would (nothing is stored).",
    "status": "Backport IG: the status of subscriptions.",
    "events": "Backport IG: replay retained events of a subscription.",
    "translate": "R4 $translate: a code through the ConceptMaps (Parameters: result, message, match).",
}
TRANSLATE_QUERY = ("url", "conceptMapVersion", "code", "system", "version", "source", "target", "targetsystem")


def openapi_document(capability: dict, title: str = "Samverkan Gateway FHIR API") -> dict:
    """The OpenAPI 3.0 document for a CapabilityStatement (as parsed JSON)."""
    rest = capability["rest"][0]
    base = capability.get("implementation", {}).get("url", "")
    token_url = _token_url(rest)
    secured = token_url is not None
    paths: dict[str, dict] = {}
    schemas: dict[str, dict] = {"OperationOutcome": _outcome_schema(), "Resource": _resource_schema(None),
                                "Bundle": _bundle_schema()}
    for resource in rest["resource"]:
        rtype = resource["type"]
        schemas.setdefault(rtype, _resource_schema(rtype))
        _type_paths(paths, resource)
    _system_paths(paths, rest)
    document: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {"title": title, "version": capability.get("software", {}).get("version", "0"),
                 "description": (f"FHIR {capability.get('fhirVersion', 'R4')} REST API, generated from "
                                 "the CapabilityStatement at /metadata. " + rest.get("documentation", ""))},
        "servers": [{"url": base}] if base else [],
        "paths": paths,
        "components": {"schemas": schemas, "responses": {"Error": _error_response()}},
    }
    if secured:
        document["components"]["securitySchemes"] = _security_schemes(token_url, rest)
        document["security"] = [{"bearerAuth": []}]
        _token_paths(paths, token_url, base)
    return document


# -- per type ------------------------------------------------------------------------------------
def _type_paths(paths: dict, resource: dict) -> None:
    rtype = resource["type"]
    codes = {i["code"] for i in resource.get("interaction", [])}
    search = [_search_parameter(p) for p in resource.get("searchParam", [])]
    ref = _ref(rtype)
    tag = [rtype]
    if "search-type" in codes:
        query = search + [_query(name, schema, text) for name, schema, text in RESULT_PARAMETERS]
        _add(paths, f"/{rtype}", "get", _op(f"search-{rtype}", f"Search {rtype}", tag, query,
                                            ok={"200": _body_response("A searchset Bundle", _ref("Bundle"))}))
        form = {"type": "object", "properties": {p["name"]: {"type": "string"} for p in search}}
        _add(paths, f"/{rtype}/_search", "post", _op(
            f"search-post-{rtype}", f"Search {rtype} with the parameters in a form body", tag, [],
            body={"application/x-www-form-urlencoded": {"schema": form}}, body_required=False,
            ok={"200": _body_response("A searchset Bundle", _ref("Bundle"))}))
    if "create" in codes:
        _add(paths, f"/{rtype}", "post", _op(
            f"create-{rtype}", f"Create a {rtype} (the server assigns the id)", tag,
            [_header("If-None-Exist", "Conditional create: search criteria (without '?')."), _prefer()],
            body=_fhir_body(ref), ok=_write_responses(ref, created=True)))
    if resource.get("conditionalUpdate"):
        _add(paths, f"/{rtype}", "put", _op(
            f"conditional-update-{rtype}", f"Conditional update of a {rtype}: 0 matches create, 1 updates, "
            "more are 412", tag, search + [_prefer()], body=_fhir_body(ref), ok=_write_responses(ref, created=True)))
    instance = f"/{rtype}/{{id}}"
    if "read" in codes:
        _add(paths, instance, "get", _op(f"read-{rtype}", f"Read a {rtype}", tag,
                                         [_id(), _header("If-None-Match", "An ETag: 304 when it is current.")],
                                         ok={"200": _body_response(f"The current {rtype}", ref),
                                             "304": {"description": "Not modified"}}))
    if "update" in codes:
        _add(paths, instance, "put", _op(f"update-{rtype}", f"Update a {rtype}", tag,
                                         [_id(), _header("If-Match", 'W/"version": 412 when stale.'), _prefer()],
                                         body=_fhir_body(ref), ok=_write_responses(ref, created=True)))
    if "patch" in codes:
        _add(paths, instance, "patch", _op(
            f"patch-{rtype}", f"Patch a {rtype} with JSON Patch", tag,
            [_id(), _header("If-Match", 'W/"version": 412 when stale.'), _prefer()],
            body={"application/json-patch+json": {"schema": _json_patch_schema()}}, ok=_write_responses(ref)))
    if "delete" in codes:
        _add(paths, instance, "delete", _op(f"delete-{rtype}", f"Delete a {rtype} (a new, empty version)", tag,
                                            [_id()], ok={"204": {"description": "Deleted, or nothing to delete"}}))
    if "vread" in codes:
        _add(paths, f"{instance}/_history/{{vid}}", "get", _op(
            f"vread-{rtype}", f"Read one version of a {rtype}", tag,
            [_id(), {"name": "vid", "in": "path", "required": True,
                     "schema": {"type": "string", "pattern": "^[0-9]{1,15}$"}}],
            ok={"200": _body_response("That version", ref)}))
    history = [_query("_count", {"type": "integer", "minimum": 0}, "Entries per page."),
               _query("_since", {"type": "string"}, "Only versions after this instant.")]
    if "history-instance" in codes:
        _add(paths, f"{instance}/_history", "get", _op(f"history-instance-{rtype}", f"History of a {rtype}", tag,
                                                       [_id(), *history], ok={"200": _body_response(
                                                           "A history Bundle", _ref("Bundle"))}))
    if "history-type" in codes:
        _add(paths, f"/{rtype}/_history", "get", _op(f"history-type-{rtype}", f"History of every {rtype}", tag,
                                                     history, ok={"200": _body_response(
                                                         "A history Bundle", _ref("Bundle"))}))
    for operation in resource.get("operation", []):
        _operation_paths(paths, rtype, operation["name"], tag)


def _operation_paths(paths: dict, rtype: str, name: str, tag: list[str]) -> None:
    summary = _OPERATIONS.get(name, f"${name}")
    if name == "validate":
        body = _fhir_body(_ref("Resource"))
        mode = _query("mode", {"type": "string", "enum": ["create", "update", "delete"]}, "What to validate for.")
        ok = {"200": _body_response("The outcome", _ref("OperationOutcome"))}
        _add(paths, f"/{rtype}/$validate", "post", _op(f"validate-{rtype}", summary, tag, [mode], body=body, ok=ok))
        _add(paths, f"/{rtype}/{{id}}/$validate", "post", _op(f"validate-instance-{rtype}", summary, tag,
                                                              [_id(), mode], body=body, body_required=False, ok=ok))
        return
    ok = {"200": _body_response("A Parameters or Bundle resource", _ref("Resource"))}
    if name == "status":
        _add(paths, f"/{rtype}/$status", "get", _op(f"status-{rtype}", summary, tag, [], ok=ok))
        _add(paths, f"/{rtype}/{{id}}/$status", "get", _op(f"status-instance-{rtype}", summary, tag, [_id()], ok=ok))
    elif name == "translate":
        query = [_query(n, {"type": "string"}, f"$translate {n}") for n in TRANSLATE_QUERY]
        query.append(_query("reverse", {"type": "boolean"}, "$translate reverse"))
        _add(paths, f"/{rtype}/$translate", "get", _op(f"translate-{rtype}", summary, tag, query, ok=ok))
        _add(paths, f"/{rtype}/$translate", "post", _op(f"translate-post-{rtype}", summary, tag, [],
                                                        body=_fhir_body(_ref("Resource")), ok=ok))
        _add(paths, f"/{rtype}/{{id}}/$translate", "get", _op(f"translate-instance-{rtype}", summary, tag,
                                                             [_id(), *query], ok=ok))
    elif name == "events":
        params = [_id(), _query("eventsSinceNumber", {"type": "integer", "minimum": 0}, "First event number."),
                  _query("eventsUntilNumber", {"type": "integer", "minimum": 0}, "Last event number.")]
        _add(paths, f"/{rtype}/{{id}}/$events", "get", _op(f"events-{rtype}", summary, tag, params, ok=ok))


# -- system level ---------------------------------------------------------------------------------
def _system_paths(paths: dict, rest: dict) -> None:
    codes = {i["code"] for i in rest.get("interaction", [])}
    public: list[dict] = []  # no token needed
    tag = ["system"]
    metadata = _op("capabilities", "The CapabilityStatement", tag, [],
                   ok={"200": _body_response("The CapabilityStatement", _ref("Resource"))})
    metadata["security"] = public
    _add(paths, "/metadata", "get", metadata)
    docs = _op("api-docs", "This OpenAPI document", tag, [],
               ok={"200": {"description": "OpenAPI 3.0", "content": {"application/json": {"schema": {
                   "type": "object"}}}}})
    docs["security"] = public
    _add(paths, "/api-docs", "get", docs)
    if codes & {"transaction", "batch"}:
        _add(paths, "/", "post", _op("transaction", "A transaction (all or nothing) or batch Bundle", tag, [_prefer()],
                                     body=_fhir_body(_ref("Bundle")),
                                     ok={"200": _body_response("The response Bundle", _ref("Bundle"))}))
    for operation in rest.get("operation", []):  # system-level operations: a body in the operation's own format
        name = operation["name"]
        body = {"required": True, "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}}
        op = _op(f"{name}-system", operation.get("documentation") or f"${name}", tag, [], ok={
            "200": {"description": "The operation's answer, in its own format",
                    "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}}}})
        op["requestBody"] = body
        _add(paths, f"/${name}", "post", op)
    if "history-system" in codes:
        history = [_query("_count", {"type": "integer", "minimum": 0}, "Entries per page."),
                   _query("_since", {"type": "string"}, "Only versions after this instant.")]
        _add(paths, "/_history", "get", _op("history-system", "History of everything the caller may see", tag,
                                            history, ok={"200": _body_response("A history Bundle", _ref("Bundle"))}))


def _token_paths(paths: dict, token_url: str, base: str) -> None:
    path = token_url[len(base):] if base and token_url.startswith(base) else "/auth/token"
    form = {"type": "object", "required": ["grant_type", "client_assertion_type", "client_assertion"],
            "properties": {"grant_type": {"type": "string", "enum": ["client_credentials"]},
                           "scope": {"type": "string", "example": "system/*.rs"},
                           "client_assertion_type": {"type": "string", "enum": [
                               "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"]},
                           "client_assertion": {"type": "string", "description": "A JWT signed with the "
                                                "client's registered key (RS384 or ES384)."}}}
    token = {"type": "object", "required": ["access_token", "token_type"],
             "properties": {"access_token": {"type": "string"}, "token_type": {"type": "string"},
                            "expires_in": {"type": "integer"}, "scope": {"type": "string"}}}
    oauth_error = {"description": "RFC 6749 error (error, error_description), also an OperationOutcome",
                   "content": {"application/json": {"schema": {"allOf": [
                       _ref("OperationOutcome"), {"type": "object", "required": ["error"],
                                                  "properties": {"error": {"type": "string"}}}]}}}}
    paths.setdefault(path, {})["post"] = {
        "operationId": "token", "tags": ["security"], "security": [],
        "summary": "SMART Backend Services: exchange a signed client assertion for an access token",
        "requestBody": {"required": True, "content": {"application/x-www-form-urlencoded": {"schema": form}}},
        "responses": {"200": {"description": "An access token",
                              "content": {"application/json": {"schema": token}}}, "default": oauth_error},
    }
    smart = path.rsplit("/auth/token", 1)[0] + "/.well-known/smart-configuration"
    paths.setdefault(smart, {})["get"] = {
        "operationId": "smart-configuration", "tags": ["security"], "security": [],
        "summary": "SMART configuration: where the token endpoint is and what it supports",
        "responses": {"200": {"description": "SMART configuration",
                              "content": {"application/json": {"schema": {"type": "object"}}}},
                      "default": {"$ref": "#/components/responses/Error"}},
    }


def _security_schemes(token_url: str, rest: dict) -> dict:
    description = rest.get("security", {}).get("description", "")
    return {
        "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                       "description": f"An access token from {token_url}. {description}"},
        "smartBackendServices": {"type": "oauth2", "description": "SMART Backend Services: client_credentials "
                                 "with a private_key_jwt client assertion (not a client secret).",
                                 "flows": {"clientCredentials": {"tokenUrl": token_url, "scopes": {
                                     "system/*.cruds": "create, read, update, delete, search every type",
                                     "system/*.rs": "read and search every type"}}}},
    }


def _token_url(rest: dict) -> str | None:
    for ext in rest.get("security", {}).get("extension", []):
        if ext.get("url") == OAUTH_URIS:
            for inner in ext.get("extension", []):
                if inner.get("url") == "token":
                    return inner.get("valueUri")
    return None


# -- building blocks ------------------------------------------------------------------------------
def _add(paths: dict, path: str, method: str, operation: dict) -> None:
    paths.setdefault(path, {})[method] = operation


def _op(op_id: str, summary: str, tags: list[str], parameters: list[dict], ok: dict,
        body: dict | None = None, body_required: bool = True) -> dict:
    operation: dict[str, Any] = {"operationId": op_id, "summary": summary, "tags": tags,
                                 "responses": {**ok, "default": {"$ref": "#/components/responses/Error"}}}
    if parameters:
        operation["parameters"] = parameters
    if body is not None:
        operation["requestBody"] = {"required": body_required, "content": body}
    return operation


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _id() -> dict:
    return {"name": "id", "in": "path", "required": True, "schema": {"type": "string", "pattern": ID_PATTERN}}


def _query(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _header(name: str, description: str) -> dict:
    return {"name": name, "in": "header", "required": False, "schema": {"type": "string"},
            "description": description}


def _prefer() -> dict:
    # return=minimal (an empty body) is left out of the enum: OpenAPI cannot say "this 201 may have no body"
    return {"name": "Prefer", "in": "header", "required": False, "description": "return=representation|"
            "OperationOutcome (or return=minimal: no body); handling=lenient|strict",
            "schema": {"type": "string", "enum": ["return=representation", "return=OperationOutcome",
                                                  "handling=lenient", "handling=strict"]}}


def _search_parameter(param: dict) -> dict:
    text = f"{param['type']} search parameter" + (f": {param['documentation']}" if param.get("documentation") else "")
    return _query(param["name"], {"type": "string"}, text)


def _fhir_body(schema: dict) -> dict:
    return {FHIR_JSON: {"schema": schema}, "application/json": {"schema": schema}}


def _body_response(description: str, schema: dict) -> dict:
    return {"description": description, "content": {FHIR_JSON: {"schema": schema}}}


def _write_responses(schema: dict, created: bool = False) -> dict:
    """The resource as stored (or an OperationOutcome / nothing, as Prefer asks)."""
    body = {"oneOf": [schema, _ref("OperationOutcome")]}
    out = {"200": {"description": "Updated (or matched)", "content": {FHIR_JSON: {"schema": body}}}}
    if created:
        out["201"] = {"description": "Created", "content": {FHIR_JSON: {"schema": body}}}
    return out


def _error_response() -> dict:
    return {"description": "An OperationOutcome saying what went wrong and what to fix",
            "content": {FHIR_JSON: {"schema": _ref("OperationOutcome")}}}


def _resource_schema(rtype: str | None) -> dict:
    kind: dict = {"type": "string", "enum": [rtype]} if rtype else {"type": "string", "pattern": "^[A-Z][A-Za-z]+$"}
    return {"type": "object", "required": ["resourceType"], "additionalProperties": True,
            "properties": {"resourceType": kind, "id": {"type": "string", "pattern": ID_PATTERN},
                           "meta": {"type": "object"}}}


def _bundle_schema() -> dict:
    schema = _resource_schema("Bundle")
    schema["properties"].update({"type": {"type": "string", "enum": [
        "transaction", "batch", "searchset", "history", "transaction-response", "batch-response", "collection",
        "document", "message"]}, "total": {"type": "integer"}, "link": {"type": "array", "items": {"type": "object"}},
        "entry": {"type": "array", "items": {"type": "object"}}})
    schema["required"] = ["resourceType", "type"]
    return schema


def _outcome_schema() -> dict:
    issue = {"type": "object", "required": ["severity", "code"],
             "properties": {"severity": {"type": "string", "enum": ["fatal", "error", "warning", "information"]},
                            "code": {"type": "string"}, "diagnostics": {"type": "string"},
                            "expression": {"type": "array", "items": {"type": "string"}}}}
    return {"type": "object", "required": ["resourceType", "issue"],
            "properties": {"resourceType": {"type": "string", "enum": ["OperationOutcome"]},
                           "issue": {"type": "array", "minItems": 1, "items": issue}}}


def _json_patch_schema() -> dict:
    operation = {"type": "object", "required": ["op", "path"],
                 "properties": {"op": {"type": "string", "enum": ["add", "remove", "replace", "move", "copy", "test"]},
                                "path": {"type": "string"}, "from": {"type": "string"}, "value": {}}}
    return {"type": "array", "items": operation}
