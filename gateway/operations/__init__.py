"""FHIR operations (``$name``), one module each, found through one registry.

An ``Operation`` says where it may be invoked (system, type, instance; which types), how
(GET/POST, which request media types) and by what ``OperationDefinition``; its handler takes an
``OperationRequest`` — parameters, body bytes, the caller's context — and answers an
``OperationResponse``, so an operation is callable without HTTP. The HTTP router only looks it
up (404 for an unknown name, 405 for a level or method it does not take), and the
CapabilityStatement lists exactly what is registered (Medplum's ``router.add`` plus an
OperationDefinition).
"""
from gateway.operations.registry import Operation, OperationRegistry, OperationRequest, OperationResponse

__all__ = ["Operation", "OperationRegistry", "OperationRequest", "OperationResponse"]
