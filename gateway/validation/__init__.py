"""Validation on write: base FHIR R4 structure now; Swedish profiles plug in here later."""
from gateway.validation.base import validate_resource

__all__ = ["validate_resource"]
