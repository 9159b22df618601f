"""FHIRPath for the gateway: expressions compiled to Python closures, fhirpathpy as the fallback.

Validation constraints, search index extraction and subscription triggers evaluate FHIRPath
on every write, and fhirpathpy interprets its parse tree node by node (a dict dispatch, a
``ResourceNode`` per value, a merged function table per call): ~80 % of an Encounter's
validation. ``compile`` turns fhirpathpy's own parse tree into closures over plain JSON for the
subset the gateway's expressions use, with fhirpathpy's semantics (quirks included: the
results must not change with the engine); an expression using anything else is evaluated by
fhirpathpy, whole. Nothing here depends on the rest of the gateway.

    evaluate = compile("extension.where(url = 'x').exists()", models["r4"])
    evaluate(resource)                      # [True] / [False], as fhirpathpy.compile(...)(resource)
    evaluate(node, {"resource": resource})  # variables, as fhirpathpy's second argument
"""
from __future__ import annotations

import logging
from typing import Any, Callable

import fhirpathpy
from fhirpathpy.parser import parse

from gateway.fhirpath.compiler import compile_tree
from gateway.fhirpath.runtime import Env, Unsupported, output

__all__ = ["CompiledExpression", "compile", "is_native"]

log = logging.getLogger(__name__)
_CACHE: dict[tuple[str, int], "CompiledExpression"] = {}
_CACHE_LIMIT = 4096


class CompiledExpression:
    """Callable like fhirpathpy's compiled expression: ``(resource, variables=None) → list``.

    ``native`` tells whether the closures evaluate it; ``reason`` says why not."""

    __slots__ = ("expression", "model", "native", "reason", "_closure", "_fallback")

    def __init__(self, expression: str, model: dict | None):
        self.expression, self.model = expression, model
        tree = parse(expression)  # raises on what fhirpathpy.compile raises on
        self._fallback: Callable[..., list] | None = None
        try:
            self._closure = compile_tree(tree, model)
            self.native, self.reason = True, None
        except Exception as exc:  # Unsupported, or a tree shape the compiler did not expect
            self._closure = None
            self.native = False
            self.reason = str(exc) if isinstance(exc, Unsupported) else f"compiler error {type(exc).__name__}: {exc}"
            self._fallback = fhirpathpy.compile(expression, model)

    def __call__(self, resource: Any, variables: dict | None = None) -> list:
        closure = self._closure
        if closure is None:
            return self._fallback(resource, variables)  # type: ignore[misc]
        env = Env(resource, variables)
        return output(closure(env.root, env))

    def __repr__(self) -> str:
        how = "native" if self.native else f"fhirpathpy ({self.reason})"
        return f"<CompiledExpression {self.expression!r} {how}>"


def compile(expression: str, model: dict | None = None) -> CompiledExpression:  # noqa: A001 -- fhirpathpy's name
    """The expression compiled once per (text, model); the model is fhirpathpy's
    (``fhirpathpy.models.models["r4"]``) or None, as for ``fhirpathpy.compile``."""
    key = (expression, id(model))
    compiled = _CACHE.get(key)
    if compiled is None or compiled.model is not model:
        compiled = CompiledExpression(expression, model)
        if not compiled.native:
            log.debug("FHIRPath %r evaluated by fhirpathpy: %s", expression, compiled.reason)
        if len(_CACHE) >= _CACHE_LIMIT:
            _CACHE.clear()
        _CACHE[key] = compiled
    return compiled


def is_native(expression: str, model: dict | None = None) -> bool:
    """Whether ``compile(expression, model)`` evaluates without fhirpathpy."""
    return compile(expression, model).native
