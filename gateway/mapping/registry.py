"""The mappings this gateway runs: every entry point of the group ``samverkan.mappings``.

The built-in ones (``mappings/``) are registered in ``pyproject.toml`` exactly as a vendor's
package registers its own, so there is one way in:

    [project.entry-points."samverkan.mappings"]
    my-format = "my_package.my_module:MyMapping"

A mapping that fails to load, or whose name is taken, stops start-up with a message naming the
entry point: a gateway that silently lacks a mapping would answer its senders 404.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points

from gateway.errors import NotFound, UnsupportedMediaType
from gateway.mapping.interface import Mapping

ENTRY_POINT_GROUP = "samverkan.mappings"


class MappingLoadError(RuntimeError):
    """A registered mapping cannot be used; the message names the entry point."""


@dataclass(frozen=True)
class MappingInfo:
    name: str
    version: str
    title: str
    media_types: tuple[str, ...]
    outbound_media_type: str | None
    source: str  # the entry point's value, e.g. mappings.hl7v2_adt:Hl7v2AdtMapping


class MappingRegistry:
    def __init__(self, mappings: dict[str, tuple[Mapping, str]]):
        self._mappings = mappings

    @classmethod
    def load(cls, group: str = ENTRY_POINT_GROUP) -> "MappingRegistry":
        found: dict[str, tuple[Mapping, str]] = {}
        for ep in sorted(entry_points(group=group), key=lambda e: e.name):
            try:
                mapping_class = ep.load()
                mapping = mapping_class()
            except Exception as exc:  # an import error in a third-party package: say which
                raise MappingLoadError(f"mapping entry point {ep.name} = {ep.value} cannot be loaded: "
                                       f"{type(exc).__name__}: {exc}") from exc
            if not isinstance(mapping, Mapping) or not getattr(mapping, "name", None):
                raise MappingLoadError(f"mapping entry point {ep.name} = {ep.value} is not a gateway.mapping.Mapping "
                                       "with a name")
            if mapping.name in found:
                raise MappingLoadError(f"mapping name {mapping.name!r} is registered twice ({found[mapping.name][1]} "
                                       f"and {ep.value})")
            found[mapping.name] = (mapping, ep.value)
        return cls(found)

    def get(self, name: str | None, media_type: str | None = None) -> Mapping:
        """The mapping for ``$ingest?mapping=<name>``: 404 if unknown, 415 if the body's type is not its own."""
        entry = self._mappings.get(name or "")
        if entry is None:
            known = ", ".join(sorted(self._mappings)) or "none"
            raise NotFound(f"No mapping named '{name}'; this gateway has: {known} (gateway mappings list).")
        mapping = entry[0]
        if media_type is not None and media_type not in mapping.media_types:
            raise UnsupportedMediaType(f"The {mapping.name} mapping takes {' or '.join(mapping.media_types)}, "
                                       f"not '{media_type or '(none)'}'.")
        return mapping

    def for_outbound(self, media_type: str) -> Mapping | None:
        """The mapping that renders notifications as ``media_type`` (a Subscription's channel.payload)."""
        return next((m for m, _ in self._mappings.values() if m.outbound_media_type == media_type), None)

    def infos(self) -> list[MappingInfo]:
        return [MappingInfo(m.name, m.version, m.title, tuple(m.media_types), m.outbound_media_type, source)
                for m, source in sorted(self._mappings.values(), key=lambda e: e[0].name)]
