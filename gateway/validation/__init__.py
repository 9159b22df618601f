"""Validation on write: base R4 (fhir.resources, required bindings, Swedish identifiers) and
the project's profiles (StructureDefinitions in profiles/)."""
from gateway.validation.base import validate_resource
from gateway.validation.validator import Validator

__all__ = ["Validator", "validate_resource"]
