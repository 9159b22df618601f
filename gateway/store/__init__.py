"""Storage behind a narrow interface: SQLite now (embedded default), PostgreSQL later."""
from gateway.store.base import Store, Transaction, VersionConflict
from gateway.store.records import IndexRows, StoredResource

__all__ = ["Store", "Transaction", "VersionConflict", "IndexRows", "StoredResource"]
