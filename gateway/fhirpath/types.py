"""``is`` and ``as``: the type of an item, as fhirpathpy's ``TypeInfo`` decides it.

A node's type comes from its type path: a bare name (``dateTime``, ``Extension``, a resource
type) is that FHIR type, ``System.String`` a System type; a path still containing a dot (a
backbone element such as ``Encounter.participant``) is ``BackboneElement`` with a model and
otherwise named after its Python value. A raw value (the resource evaluated, a literal, a
variable) is a System type named after its Python value. With a model, FHIR types match their
ancestors (``Age is Quantity``). fhirpathpy reads the model from a global (``TypeInfo.model``)
it sets on each ``is``/``as`` call; here it is the model the expression was compiled with, which
is the same, and the global is set too, so that what fhirpathpy evaluates afterwards (``ofType``
reads it without setting it) sees what it saw before this engine existed.
"""
from __future__ import annotations

import re
from typing import Any

from fhirpathpy.engine.nodes import TypeInfo

_SYSTEM_PATH = re.compile(r"^System\.(.*)$")


class TypeSpec:
    """A type specifier (``dateTime``, ``FHIR.Period``); namespace None matches either."""

    __slots__ = ("name", "namespace")

    def __init__(self, text: str):
        identifiers = text.replace("`", "").split(".")
        if len(identifiers) == 2:
            self.namespace, self.name = identifiers
        elif len(identifiers) == 1:
            self.namespace, self.name = None, identifiers[0]
        else:
            raise ValueError(f"not a type specifier: {text}")


class TypeTest:
    """``item is spec`` for one compiled specifier and model, cached per type path."""

    def __init__(self, spec: TypeSpec, model: dict | None):
        self.spec, self.model = spec, model
        self.by_path: dict[Any, bool] = {}

    def __call__(self, item: Any) -> bool:
        if type(item) is not tuple:
            info = TypeInfo.create_by_value_in_namespace(TypeInfo.System, item)
            return self._matches(info.namespace, info.name)
        path = item[1]
        try:
            return self.by_path[path]
        except (KeyError, TypeError):
            pass
        if path is None:  # fhirpathpy: from_value() is None, and None.is_() raises
            raise AttributeError("an untyped node has no type information")
        if type(path) is not str:
            raise TypeError(f"type path {path!r} is not text")
        system = _SYSTEM_PATH.match(path)
        if system:
            result = self._matches(TypeInfo.System, system.group(1))
        elif "." not in path:
            result = self._matches(TypeInfo.FHIR, path)
        elif self.model:
            result = self._matches(TypeInfo.FHIR, "BackboneElement")
        else:  # named after the value: not cacheable by path
            info = TypeInfo.create_by_value_in_namespace(TypeInfo.FHIR, item[0])
            return self._matches(info.namespace, info.name)
        self.by_path[path] = result
        return result

    def _matches(self, namespace: str, name: str) -> bool:
        """``TypeInfo.is_``."""
        spec = self.spec
        if spec.namespace and spec.namespace != namespace:
            return False
        if self.model and namespace == TypeInfo.FHIR:
            return _is_type(self.model, name, spec.name)
        return name == spec.name


def _is_type(model: dict, name: str, ancestor: str) -> bool:
    """``TypeInfo.is_type``: walk type2Parent (then path2Type) from ``name``."""
    parents, types = model["type2Parent"], model["path2Type"]
    current: Any = name
    while current:
        if current == ancestor:
            return True
        current = parents.get(current) or types.get(current)
    return False


def is_type(items: list, test: TypeTest) -> list:
    """``types.is_fn``: empty → empty; more than one item raises."""
    TypeInfo.model = test.model
    if not items:
        return []
    if len(items) > 1:
        raise ValueError("Expected singleton on left side of 'is'")
    return [test(items[0])]


def as_type(items: list, test: TypeTest) -> list:
    """``types.as_fn``: the item when it is of the type, else empty."""
    TypeInfo.model = test.model
    if not items:
        return []
    if len(items) > 1:
        raise ValueError("Expected singleton on left side of 'as'")
    return items if test(items[0]) else []
