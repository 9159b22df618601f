"""Translation modules (HL7 v2 ADT, municipality formats) → FhirServer calls. Added with their issues."""
