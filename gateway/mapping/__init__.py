"""Mapping modules: systems that do not speak our FHIR, translated into the shared plan and back.

A vendor implements ``Mapping`` (``gateway.mapping.interface``) in one file and registers it under
the entry-point group ``samverkan.mappings``; ``IngestService`` runs it through the one FHIR core.
"""
from gateway.mapping.interface import Lookup, Mapping, MappingError, Outcome, Reply, Translation

__all__ = ["Lookup", "Mapping", "MappingError", "Outcome", "Reply", "Translation"]
