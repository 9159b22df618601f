"""Samverkan Gateway: one shared care plan per person between region and municipality, over FHIR R4."""
__version__ = "0.1.0"
