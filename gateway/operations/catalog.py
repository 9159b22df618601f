"""The operations this gateway offers, in one place."""
from __future__ import annotations

from gateway.operations.ingest import ingest_operation
from gateway.operations.registry import OperationRegistry
from gateway.operations.subscription import subscription_operations
from gateway.operations.translate import translate_operation
from gateway.operations.validate import validate_operation


def standard_operations(server) -> OperationRegistry:
    registry = OperationRegistry()
    registry.add(validate_operation(server))
    for op in subscription_operations(server):
        registry.add(op)
    registry.add(ingest_operation(server))
    registry.add(translate_operation(server))
    return registry
