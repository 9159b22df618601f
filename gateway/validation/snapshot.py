"""Snapshot generation: base element definitions (from the fhir.resources R4B models) with a
profile's differential laid over them.

The R4 core StructureDefinitions are not available offline, but the models carry what a
snapshot needs for our profiles: element order, cardinality, types, reference targets and
short descriptions. ``gateway profiles snapshot`` rewrites the ``snapshot`` of every
StructureDefinition in profiles/; a test keeps the committed snapshots in step.
"""
from __future__ import annotations

import copy
import types
import typing
from functools import lru_cache
from typing import Any

from fhir.resources.R4B import get_fhir_model_class

_RESOURCE_LEVEL = {"id": "Resource", "meta": "Resource", "implicitRules": "Resource", "language": "Resource",
                   "text": "DomainResource", "contained": "DomainResource", "extension": "DomainResource",
                   "modifierExtension": "DomainResource"}
_ELEMENT_LEVEL = {"id": "Element", "extension": "Element", "modifierExtension": "BackboneElement"}


def _model(name: str) -> Any | None:
    try:
        return get_fhir_model_class(name)
    except (KeyError, ValueError, AttributeError):
        return None


_NOT_IN_R4 = frozenset({"CodeableReference", "RatioRange"})  # R4B additions the models carry


def _choice_types(stem: str, fields: dict) -> list[dict]:
    """Types of a choice element from its member fields' names (``valueBase64Binary`` →
    base64Binary): the names are FHIR's, the annotations' marker classes are not always."""
    out = []
    for name, field in fields.items():
        key = field.alias or name
        if (field.json_schema_extra or {}).get("one_of_many") != stem or not key.startswith(stem):
            continue
        suffix = key[len(stem):]
        primitive = _type_code(field.annotation)[0][:1].islower()
        code = suffix[0].lower() + suffix[1:] if primitive else suffix
        if code not in _NOT_IN_R4:
            out.append({"code": code})
    return out


def _type_code(annotation: Any) -> tuple[str, bool]:
    """(FHIR type code, repeats) of a model field's annotation."""
    repeats = False
    ann = annotation
    while True:
        origin = typing.get_origin(ann)
        args = [a for a in typing.get_args(ann) if a is not type(None)]
        if origin in (typing.Union, types.UnionType) and args:
            ann = args[0]
        elif origin in (list, typing.List) and args:
            repeats, ann = True, args[0]
        elif origin is typing.Annotated:
            marker = typing.get_args(ann)[1]
            name = type(marker).__name__
            return name[0].lower() + name[1:], repeats
        else:
            break
    if ann is bool:
        return "boolean", repeats
    name = getattr(ann, "__name__", None) or getattr(ann, "__forward_arg__", None) or str(ann)
    name = name.split(".")[-1]
    return (name[:-4] if name.endswith("Type") else name), repeats


@lru_cache(maxsize=None)
def base_elements(type_name: str) -> tuple[dict, ...]:
    """The snapshot of the base type: every element of the resource (or Extension) and of its
    backbone elements, in FHIR order; datatype children are not expanded (as in the spec)."""
    model = _model(type_name)
    if model is None:
        raise ValueError(f"no R4B model for {type_name}")
    out = [{"id": type_name, "path": type_name, "min": 0, "max": "*",
            "base": {"path": type_name, "min": 0, "max": "*"}}]
    _expand(model, type_name, type_name, out, is_resource=type_name != "Extension", seen={})
    return tuple(out)


def _expand(model: Any, path: str, root: str, out: list[dict], is_resource: bool, seen: dict) -> None:
    """``seen``: backbone model → the path where it was first expanded (for contentReference)."""
    fields = model.model_fields
    by_alias = {(f.alias or n): n for n, f in fields.items()}
    done: set[str] = set()
    for name in model.elements_sequence():
        field = fields.get(by_alias.get(name, name))
        if field is None:
            continue
        extra = field.json_schema_extra or {}
        choice = extra.get("one_of_many")
        element_name = f"{choice}[x]" if choice else name
        if element_name in done:
            continue
        done.add(element_name)
        if choice:
            types = _choice_types(choice, fields)
            required = bool(extra.get("one_of_many_required"))
            repeats = False
        else:
            code, repeats = _type_code(field.annotation)
            types = [{"code": code}]
            required = field.is_required() or bool(extra.get("element_required"))
            if extra.get("enum_reference_types"):
                types[0]["targetProfile"] = [f"http://hl7.org/fhir/StructureDefinition/{t}"
                                             for t in extra["enum_reference_types"]]
        el_path = f"{path}.{element_name}"
        owner = (_RESOURCE_LEVEL if is_resource and path == root else _ELEMENT_LEVEL).get(element_name)
        base_path = f"{owner}.{element_name}" if owner else el_path
        element = {"id": el_path, "path": el_path, "short": field.title or element_name,
                   "min": 1 if required else 0, "max": "*" if repeats else "1",
                   "base": {"path": base_path, "min": 1 if required else 0, "max": "*" if repeats else "1"},
                   "type": types}
        out.append(element)
        backbone = _model(types[0]["code"]) if not choice else None
        if backbone is not None and backbone.__mro__[1].__name__ == "BackboneElement":
            if backbone in seen:  # recursive (Questionnaire.item.item): refer back, as R4 does
                del element["type"]
                element["contentReference"] = f"#{seen[backbone]}"
                continue
            element["type"] = [{"code": "BackboneElement"}]
            _expand(backbone, el_path, root, out, is_resource=False, seen={**seen, backbone: el_path})


def _datatype_element(parent: dict | None, name: str, el_id: str, path: str) -> dict:
    """A child of a datatype element (e.g. Identifier.system) that the base snapshot does not expand."""
    element = {"id": el_id, "path": path, "min": 0, "max": "1", "base": {"path": path, "min": 0, "max": "1"}}
    type_code = (parent or {}).get("type", [{}])[0].get("code")
    model = _model(type_code) if type_code else None
    if model is not None:
        fields = {(f.alias or n): f for n, f in model.model_fields.items()}
        element_name = name.split(":")[0]  # `extension:time` is a slice of `extension`
        if element_name.endswith("[x]"):
            stem = element_name[:-3]
            types = _choice_types(stem, fields)
            if types:
                element.update({"short": element_name, "type": types})
                element["base"] = {"path": f"{type_code}.{element_name}", "min": 0, "max": "1"}
            return element
        field = fields.get(element_name)
        if field is not None:
            code, repeats = _type_code(field.annotation)
            required = field.is_required() or bool((field.json_schema_extra or {}).get("element_required"))
            element.update({"short": field.title or element_name, "min": 1 if required else 0,
                            "max": "*" if repeats else "1", "type": [{"code": code}]})
            element["base"] = {"path": f"{type_code}.{element_name}", "min": element["min"], "max": element["max"]}
    return element


def generate_snapshot(sd: dict) -> list[dict]:
    """The snapshot elements of a profile: base elements with the differential applied."""
    elements = [copy.deepcopy(e) for e in base_elements(sd["type"])]
    for diff in sd.get("differential", {}).get("element", []):
        el_id = diff.get("id") or diff["path"]
        index = {e["id"]: i for i, e in enumerate(elements)}
        if el_id in index:
            elements[index[el_id]].update(copy.deepcopy(diff))
            continue
        parent_id, _, last = el_id.rpartition(".")
        if ":" in last:  # a slice: a copy of the sliced element, after it and its earlier slices
            sliced_id = el_id.rsplit(":", 1)[0]
            if sliced_id in index:
                template = elements[index[sliced_id]]
            else:  # slicing a datatype child, e.g. the sub-extensions of an extension slice
                owner_id, _, sliced_name = sliced_id.rpartition(".")
                owner = elements[index[owner_id]] if owner_id in index else None
                template = _datatype_element(owner, sliced_name, sliced_id, diff["path"])
            element = {**copy.deepcopy(template), **copy.deepcopy(diff)}
            element.pop("slicing", None)
            anchor = sliced_id
        else:  # a child not in the base snapshot (inside a datatype or a slice)
            parent = elements[index[parent_id]] if parent_id in index else None
            element = {**_datatype_element(parent, last, el_id, diff["path"]), **copy.deepcopy(diff)}
            anchor = parent_id
        position = max(i for i, e in enumerate(elements) if e["id"] == anchor or e["id"].startswith(anchor + ".")
                       or e["id"].startswith(anchor + ":")) if anchor in index else len(elements) - 1
        elements.insert(position + 1, element)
    return elements
