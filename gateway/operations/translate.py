"""``ConceptMap/$translate`` (R4: http://hl7.org/fhir/OperationDefinition/ConceptMap-translate).

Type level (``ConceptMap/$translate?url=…&system=…&code=…``, or chosen by ``source``/``target``
value sets, or across every map with ``system`` and ``targetsystem``) and instance level
(``ConceptMap/[id]/$translate``), GET with the parameters in the query or POST with a
``Parameters`` body (there also ``coding``, ``codeableConcept`` and an inline ``conceptMap``).
The answer is a ``Parameters``: ``result``, ``message``, and a ``match`` per target
(``equivalence``, ``concept``, ``source``, ``product``), computed by the one ConceptMap service
the mappings use too (``gateway.terminology.conceptmaps``).

Errors are OperationOutcomes: a map named by ``url``, ``conceptMapVersion`` or id that is not
held is 404; a missing ``code`` (or ``system``), a parameter given twice, or an unknown one
(unless ``Prefer: handling=lenient``) is 400. ``dependency`` is accepted and changes nothing: no
map here has ``dependsOn`` (the loader refuses them).
"""
from __future__ import annotations

from gateway.errors import BadRequest, NotFound
from gateway.fhir.canonical import dumps, parse_json
from gateway.operations.registry import INSTANCE, TYPE, Operation, OperationRequest, OperationResponse
from gateway.terminology.conceptmaps import ConceptMaps, ConceptTranslation, Match, check_concept_map

DEFINITION = "http://hl7.org/fhir/OperationDefinition/ConceptMap-translate"
# Parameter → its value[x] in a Parameters body (None: a resource or parts); all 0..1 but dependency.
PARAMETERS = {"url": "valueUri", "conceptMapVersion": "valueString", "code": "valueCode", "system": "valueUri",
              "version": "valueString", "source": "valueUri", "target": "valueUri", "targetsystem": "valueUri",
              "reverse": "valueBoolean", "coding": "valueCoding", "codeableConcept": "valueCodeableConcept",
              "conceptMap": None, "dependency": None}
QUERY = ("url", "conceptMapVersion", "code", "system", "version", "source", "target", "targetsystem", "reverse")


def translate_operation(server) -> Operation:
    maps: ConceptMaps = server.conceptmaps
    depth = server.settings.max_json_depth

    async def handle(req: OperationRequest) -> OperationResponse:
        params = _parameters(req, depth)
        chosen = _maps(maps, req.rid, params)
        reverse = _boolean(params.get("reverse"), "reverse")
        results = [maps.translate(system, code, target_system=params.get("targetsystem"), version=version,
                                  maps=chosen, reverse=reverse) for system, code, version in _codings(params)]
        return OperationResponse(dumps(parameters_resource(results)))

    return Operation("translate", DEFINITION, frozenset({TYPE, INSTANCE}), handle, frozenset({"ConceptMap"}),
                     frozenset({"GET", "POST"}),
                     documentation="Translate a code through the ConceptMaps in profiles/conceptmaps/ (R4 "
                                   "$translate): url, system, code, targetsystem, source, target, reverse; POST also "
                                   "coding, codeableConcept, conceptMap.",
                     parameters=tuple((name, "string", f"R4 $translate parameter {name}") for name in QUERY))


def parameters_resource(results: list[ConceptTranslation]) -> dict:
    """The R4 output: ``result`` true when any code of the request maps, one ``message``, every match."""
    matches = [m for r in results for m in r.matches]
    out: list[dict] = [{"name": "result", "valueBoolean": any(r.result for r in results)},
                       {"name": "message", "valueString": " ".join(r.message for r in results)}]
    out += [{"name": "match", "part": _match_parts(m)} for m in matches]
    return {"resourceType": "Parameters", "parameter": out}


def _match_parts(m: Match) -> list[dict]:
    parts: list[dict] = [{"name": "equivalence", "valueCode": m.equivalence}]
    if m.concept is not None:
        parts.append({"name": "concept", "valueCoding": m.concept})
    for product in m.products:  # R4 OtherElement → element (uri) and concept (Coding)
        coding = {k: v for k, v in (("system", product.get("system")), ("code", product.get("value")),
                                    ("display", product.get("display"))) if v}
        parts.append({"name": "product", "part": [{"name": "element", "valueUri": product.get("property", "")},
                                                  {"name": "concept", "valueCoding": coding}]})
    parts.append({"name": "source", "valueUri": m.source})
    return parts


def _parameters(req: OperationRequest, depth: int) -> dict:
    """The request's parameters (query, and a Parameters body on POST) by name: each at most once."""
    given: list[tuple[str, object]] = [(k, v) for k, v in req.params if not k.startswith("_")]
    if req.body is not None and req.body.strip():
        body = parse_json(req.body, depth)
        if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
            raise BadRequest("$translate takes a Parameters resource as its body.")
        entries = body.get("parameter") or []
        if not isinstance(entries, list) or not all(isinstance(p, dict) and isinstance(p.get("name"), str)
                                                    for p in entries):
            raise BadRequest("Parameters.parameter must be an array of {\"name\": ..., \"value[x]\": ...}.")
        given += [(p["name"], _body_value(p)) for p in entries]
    out: dict = {}
    for name, value in given:
        if name not in PARAMETERS:
            if req.ctx.lenient:
                continue
            raise BadRequest(f"$translate has no parameter '{name}'; it takes {', '.join(PARAMETERS)}.")
        if name in out and name != "dependency":
            raise BadRequest(f"$translate parameter '{name}' is given more than once; give it once.")
        out[name] = value
    return out


def _body_value(p: dict) -> object:
    name = p["name"]
    if name == "conceptMap":
        return p.get("resource")
    if name == "dependency":
        return p.get("part")
    key = PARAMETERS.get(name)
    if key is not None and key in p:
        return p[key]
    values = [k for k in p if k.startswith("value")]
    if key is not None and values:
        raise BadRequest(f"$translate parameter '{name}' takes {key}, not {values[0]}.")
    return None


def _maps(maps: ConceptMaps, rid: str | None, params: dict) -> list[dict] | None:
    """The maps to translate with (None: every map held): instance, inline, url, or by scope."""
    url, version, inline = params.get("url"), params.get("conceptMapVersion"), params.get("conceptMap")
    for name in ("url", "conceptMapVersion", "source", "target", "targetsystem", "system", "version"):
        if name in params and not isinstance(params[name], str):
            raise BadRequest(f"$translate parameter '{name}' must be a string (a uri or code).")
    if inline is not None and (rid is not None or url is not None):
        raise BadRequest("Give the ConceptMap one way: the instance, url, or conceptMap, not several.")
    if rid is not None:
        found = maps.by_id(rid)
        if found is None:
            raise NotFound(f"ConceptMap/{rid} is not one of this server's ConceptMaps.")
        if url is not None and url.split("|")[0] != found["url"]:
            raise BadRequest(f"url {url} is not the url of ConceptMap/{rid} ({found['url']}).")
        if version is not None and found.get("version") != version:
            raise NotFound(f"ConceptMap/{rid} is version {found.get('version')}, not {version}.")
        return [found]
    if inline is not None:
        problems = check_concept_map(inline)
        if problems:
            raise BadRequest("The conceptMap parameter is not a usable ConceptMap: " + "; ".join(problems[:5]))
        return [inline]
    if url is not None:
        found = maps.get(url, version)
        if found is None:
            held = f" in version {version}" if version else ""
            raise NotFound(f"No ConceptMap with url {url}{held} is held here; GET ConceptMap lists them.")
        return [found]
    if version is not None:
        raise BadRequest("conceptMapVersion needs url (or an instance): it picks a version of one map.")
    if "source" in params or "target" in params:
        return maps.select(params.get("source"), params.get("target"))
    return None


def _codings(params: dict) -> list[tuple[str, str, str | None]]:
    """(system, code, version) to translate: from code+system, coding, or codeableConcept — one of them."""
    ways = [name for name in ("code", "coding", "codeableConcept") if params.get(name) is not None]
    if not ways:
        raise BadRequest("$translate needs the code to translate: code (with system), coding or codeableConcept.")
    if len(ways) > 1:
        raise BadRequest(f"Give the code one way, not {' and '.join(ways)}.")
    if ways == ["code"]:
        code, system = params["code"], params.get("system")
        if not isinstance(code, str) or not code:
            raise BadRequest("$translate parameter 'code' must be a non-empty code.")
        if not system:
            raise BadRequest("$translate needs system with code: the code system the code is from.")
        return [(system, code, params.get("version"))]
    if ways == ["coding"]:
        codings = [params["coding"]]
    else:
        concept = params["codeableConcept"]
        codings = concept.get("coding") if isinstance(concept, dict) else None
        if not isinstance(codings, list) or not codings:
            raise BadRequest("codeableConcept must hold at least one coding with system and code.")
    out = []
    for c in codings:
        if not isinstance(c, dict) or not isinstance(c.get("system"), str) or not isinstance(c.get("code"), str):
            raise BadRequest("Each coding to translate needs system and code.")
        out.append((c["system"], c["code"], c.get("version") if isinstance(c.get("version"), str) else None))
    return out


def _boolean(value: object, name: str) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    if value in ("true", "false"):
        return value == "true"
    raise BadRequest(f"$translate parameter '{name}' is true or false, not '{value}'.")
