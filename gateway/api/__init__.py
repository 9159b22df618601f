"""HTTP layer: routes, content negotiation, OperationOutcome responses. No FHIR logic lives here."""
