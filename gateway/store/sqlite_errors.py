"""SQLite's failures as the answers a client should get, raised where the statement fails.

The store's connections are ``StoreConnection``s: a statement that fails because the server
cannot serve now raises the ``FhirError`` that says so, instead of an ``sqlite3`` error that
the HTTP layer would have to answer with a bare 500:

- the disk (or the file's size limit) is full → 507, storage full; logged for the operator.
  Nothing was stored: the transaction is rolled back, and writes succeed again as soon as
  space is freed (no restart);
- the file is locked by another connection (``SQLITE_BUSY``/``SQLITE_LOCKED``: another
  process holds the write lock, or runs WAL recovery after a crash) → 503 with Retry-After;
- the file cannot be read or written (``SQLITE_IOERR``, ``SQLITE_CANTOPEN``) → 503; logged.

Every other ``sqlite3`` error is a bug (a constraint, a missing table) and stays as it is.
Logs name the store file and SQLite's error name only: never a statement's values.
"""
from __future__ import annotations

import logging
import sqlite3
import time

from gateway.errors import FhirError, InsufficientStorage, ServiceUnavailable

log = logging.getLogger("gateway.store")

# Primary result codes (sqlite3.h), for errors raised without one (tests, other drivers).
FULL, BUSY, LOCKED, IOERR, CANTOPEN = 13, 5, 6, 10, 14
_BY_MESSAGE = (("database or disk is full", FULL), ("database is locked", BUSY),
               ("database table is locked", LOCKED), ("disk i/o error", IOERR), ("unable to open", CANTOPEN))
_LOG_EVERY_S = 60.0  # a full disk fails every write: tell the operator once a minute, not per request
_last_logged: dict[tuple[str, int], float] = {}


def primary_code(exc: sqlite3.Error) -> int | None:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF
    text = str(exc).lower()
    return next((c for words, c in _BY_MESSAGE if words in text), None)


class StoreBusy(ServiceUnavailable):
    """Another connection holds the lock this statement needs."""

    def __init__(self, message: str = "The store is busy with other writes; nothing was changed. "
                                      "Retry in a moment."):
        super().__init__(message, retry_after=1, code="lock-error")


def store_error(exc: sqlite3.Error, path: str) -> FhirError | None:
    """The answer for an SQLite failure, or None if it is a bug."""
    code = primary_code(exc)
    if code == FULL:
        _tell_operator(path, code, "storage full: SQLite cannot grow %s (%s); writes answer 507 until space "
                                   "is freed", exc)
        return InsufficientStorage("The server's storage is full; nothing was stored. Retry later: the operator "
                                   "has been alerted.")
    if code in (BUSY, LOCKED):
        return StoreBusy()
    if code in (IOERR, CANTOPEN):
        _tell_operator(path, code, "storage failure: SQLite cannot read or write %s (%s); requests answer 503",
                       exc)
        return ServiceUnavailable("The server cannot reach its storage right now; nothing was changed. "
                                  "Retry later.", retry_after=5, code="no-store")
    return None


def _tell_operator(path: str, code: int, message: str, exc: sqlite3.Error) -> None:
    now = time.monotonic()
    if now - _last_logged.get((path, code), -_LOG_EVERY_S) >= _LOG_EVERY_S:
        _last_logged[(path, code)] = now
        log.error(message, path, getattr(exc, "sqlite_errorname", None) or type(exc).__name__)


class StoreConnection(sqlite3.Connection):
    """A connection whose statements raise ``store_error``'s answer (``sqlite3.connect(...,
    factory=StoreConnection)``). Errors while fetching later rows of a result are left as they
    are: the locks a read needs are taken by its first step, which ``execute`` runs."""

    store_path = ""  # set by the store: named in the operator's log line

    def execute(self, sql, parameters=(), /):
        try:
            return super().execute(sql, parameters)
        except sqlite3.Error as exc:
            mapped = store_error(exc, self.store_path)
            if mapped is None:
                raise
            raise mapped from exc

    def executemany(self, sql, parameters, /):
        try:
            return super().executemany(sql, parameters)
        except sqlite3.Error as exc:
            mapped = store_error(exc, self.store_path)
            if mapped is None:
                raise
            raise mapped from exc

    def executescript(self, script, /):
        try:
            return super().executescript(script)
        except sqlite3.Error as exc:
            mapped = store_error(exc, self.store_path)
            if mapped is None:
                raise
            raise mapped from exc
