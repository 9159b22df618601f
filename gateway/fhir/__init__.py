"""FHIR semantics: interactions, bundles, references, capability — callable without HTTP."""
