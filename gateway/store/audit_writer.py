"""The access-log writer process of the embedded store: read entries into their own file.

Read and search entries (thousands per second) go to ``read_log`` in a SQLite file beside the
store, written by this process. Measured with ``bench/auth_bench.py`` (3 rounds × 10 s), the
server's read throughput with security on was 79 % / 69 % of off (author / grant path) when a
worker thread inserted them into the store file, 75 % / 63 % with this process writing into
the store file, and 84 % / 76 % with it writing into a file of its own: every commit to the
store file makes SQLite drop the page cache of the connection that serves reads, and the
insert work itself held the event loop's GIL. Entries of changes stay in the store file,
written in the change's own transaction.

Started by ``sqlite_audit.AuditTable`` as ``python -I -S audit_writer.py LOGFILE SYNCHRONOUS``
(standard library only, so it starts in milliseconds). Protocol: stdin carries one JSON array
of entries (the columns in order) per line; after committing a line the process answers
``ok`` on stdout. It exits at end of input.
"""
from __future__ import annotations

import json
import sqlite3
import sys

COLUMNS = "recorded, action, interaction, outcome, client, organization, patient, entities, query, custodian"
WIDTH = COLUMNS.count(",") + 1
INSERT_AUDIT = f"INSERT INTO audit_log ({COLUMNS}) VALUES ({', '.join('?' * WIDTH)})"
INSERT_READ = f"INSERT INTO read_log ({COLUMNS}) VALUES ({', '.join('?' * WIDTH)})"


def log_table(name: str) -> str:
    """The schema of an access-log table (``audit_log`` in the store, ``read_log`` beside it)."""
    return (f"CREATE TABLE IF NOT EXISTS {name} (seq INTEGER PRIMARY KEY AUTOINCREMENT, recorded INTEGER NOT NULL, "
            "action TEXT NOT NULL, interaction TEXT NOT NULL, outcome TEXT NOT NULL, client TEXT NOT NULL, "
            "organization TEXT NOT NULL, patient TEXT NOT NULL, entities TEXT NOT NULL, query TEXT NOT NULL, "
            "custodian TEXT NOT NULL DEFAULT '');\n"
            f"CREATE INDEX IF NOT EXISTS {name}_recorded ON {name} (recorded);\n"
            f"CREATE INDEX IF NOT EXISTS {name}_patient ON {name} (patient, recorded);\n"
            f"CREATE INDEX IF NOT EXISTS {name}_org ON {name} (organization, recorded);\n")


def add_custodian(conn, name: str) -> None:
    """Logs written before entries named their custodian get the column (and its index)."""
    columns = {row[1] for row in conn.execute(f"PRAGMA table_info({name})")}
    if "custodian" not in columns:
        conn.execute(f"ALTER TABLE {name} ADD COLUMN custodian TEXT NOT NULL DEFAULT ''")
    conn.execute(f"CREATE INDEX IF NOT EXISTS {name}_custodian ON {name} (custodian, recorded)")
SYNCHRONOUS = ("OFF", "NORMAL", "FULL", "EXTRA")


def main(path: str, synchronous: str) -> int:
    if synchronous.upper() not in SYNCHRONOUS:
        print(f"audit_writer: synchronous must be one of {', '.join(SYNCHRONOUS)}", file=sys.stderr)
        return 2
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 5000")
    conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")  # the store created the file (WAL) and table
    for line in sys.stdin.buffer:
        rows = json.loads(line)
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany(INSERT_READ, rows)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        sys.stdout.write("ok\n")
        sys.stdout.flush()
    conn.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
