"""The notification tables of the embedded store (schema in ``sqlite.SCHEMA``).

``subscriptions``: each topic-based Subscription's channel and delivery state; the event counter
and the delivered mark only grow, so a restart never renumbers or loses an event.
``subscription_events``: one row per (subscription, event number), written in the transaction of
the change that caused it (the outbox); delivery reads them in number order.
"""
from __future__ import annotations

import json
import sqlite3

from gateway.store.sqlite_mapping import prune_mapping_messages

from gateway.store.records import EventRecord, SubscriptionRow

EVENTS_SCHEMA = """
CREATE TABLE IF NOT EXISTS subscriptions (
    id TEXT PRIMARY KEY, topic TEXT NOT NULL, org TEXT NOT NULL, state TEXT NOT NULL, endpoint TEXT NOT NULL,
    content TEXT NOT NULL, headers TEXT NOT NULL, heartbeat INTEGER NOT NULL, timeout INTEGER NOT NULL,
    max_count INTEGER NOT NULL, filters TEXT NOT NULL, client TEXT NOT NULL,
    events INTEGER NOT NULL DEFAULT 0, delivered INTEGER NOT NULL DEFAULT 0, withheld INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0, failing_since INTEGER NOT NULL DEFAULT 0,
    next_attempt INTEGER NOT NULL DEFAULT 0, last_sent INTEGER NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '',
    ends INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS subscriptions_topic ON subscriptions (topic, state);
CREATE TABLE IF NOT EXISTS subscription_events (
    sub TEXT NOT NULL, number INTEGER NOT NULL, recorded INTEGER NOT NULL, topic TEXT NOT NULL,
    rtype TEXT NOT NULL, rid TEXT NOT NULL, vid INTEGER NOT NULL, seq INTEGER NOT NULL, interaction TEXT NOT NULL,
    withheld INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (sub, number)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS subscription_events_recorded ON subscription_events (recorded);
"""

def add_missing_columns(conn: sqlite3.Connection) -> None:
    """Schema 4 as first written (2026-11-26, before Subscription.end) lacked ``ends``."""
    if "ends" not in {r[1] for r in conn.execute("PRAGMA table_info(subscriptions)")}:
        conn.execute("ALTER TABLE subscriptions ADD COLUMN ends INTEGER NOT NULL DEFAULT 0")


_COLUMNS = ("id, topic, org, state, endpoint, content, headers, heartbeat, timeout, max_count, filters, client, "
            "events, delivered, withheld, attempts, failing_since, next_attempt, last_sent, error, ends")


def _row(r: tuple) -> SubscriptionRow:
    return SubscriptionRow(r[0], r[1], r[2], r[3], r[4], r[5], tuple(json.loads(r[6])), *r[7:])


def save_subscription(conn: sqlite3.Connection, row: SubscriptionRow, restart: bool) -> None:
    """Insert or change a subscription's channel; its counters stay. ``restart``: a new handshake
    and a clean retry state (the client activated it again)."""
    conn.execute(
        f"INSERT INTO subscriptions ({_COLUMNS}) VALUES ({', '.join('?' * 21)}) ON CONFLICT (id) DO UPDATE SET "
        "topic = excluded.topic, org = excluded.org, state = excluded.state, endpoint = excluded.endpoint, "
        "content = excluded.content, headers = excluded.headers, heartbeat = excluded.heartbeat, "
        "timeout = excluded.timeout, max_count = excluded.max_count, filters = excluded.filters, "
        "client = excluded.client, ends = excluded.ends" + (", attempts = 0, failing_since = 0, next_attempt = 0, error = ''"
                                      if restart else ""),
        (row.id, row.topic, row.organization, row.state, row.endpoint, row.content, json.dumps(list(row.headers)),
         row.heartbeat_s, row.timeout_s, row.max_count, row.filters, row.client, 0, 0, 0, 0, 0, 0, 0, "",
         row.ends_us))


def drop_subscription(conn: sqlite3.Connection, sub: str) -> None:
    """A deleted Subscription sends nothing more, but keeps its counter: brought back (a PUT to its
    id), it goes on numbering where it stopped, so a receiver deduping by number loses nothing."""
    conn.execute("UPDATE subscriptions SET state = 'off', delivered = events WHERE id = ?", (sub,))
    conn.execute("DELETE FROM subscription_events WHERE sub = ?", (sub,))


def load_subscription(conn: sqlite3.Connection, sub: str) -> SubscriptionRow | None:
    found = conn.execute(f"SELECT {_COLUMNS} FROM subscriptions WHERE id = ?", (sub,)).fetchone()
    return _row(found) if found else None


def subscribers(conn: sqlite3.Connection, topics: list[str], now_us: int) -> list[tuple[str, str, str, str]]:
    """(id, topic, filters, org) of the subscriptions that number events of these topics: all but
    those off or past their end."""
    marks = ",".join("?" * len(topics))
    return conn.execute(f"SELECT id, topic, filters, org FROM subscriptions WHERE topic IN ({marks}) AND state != 'off' "
                        "AND (ends = 0 OR ends > ?)", [*topics, now_us]).fetchall()


def all_subscriptions(conn: sqlite3.Connection, organization: str | None) -> list[SubscriptionRow]:
    if organization is None:
        return [_row(r) for r in conn.execute(f"SELECT {_COLUMNS} FROM subscriptions ORDER BY id")]
    return [_row(r) for r in conn.execute(f"SELECT {_COLUMNS} FROM subscriptions WHERE org = ? ORDER BY id",
                                          (organization,))]


def append_events(conn: sqlite3.Connection, subs: list[tuple[str, str]], recorded_us: int, rtype: str, rid: str,
                  vid: int, seq: int, interaction: str) -> None:
    """The next event of each (subscription, topic), about one resource version: two statements."""
    topic_of = dict(subs)
    numbers = conn.execute(f"UPDATE subscriptions SET events = events + 1 WHERE id IN ({','.join('?' * len(subs))}) "
                           "RETURNING id, events", list(topic_of)).fetchall()
    conn.executemany("INSERT INTO subscription_events (sub, number, recorded, topic, rtype, rid, vid, seq, "
                     "interaction) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     [(sid, n, recorded_us, topic_of[sid], rtype, rid, vid, seq, interaction) for sid, n in numbers])


def events_between(conn: sqlite3.Connection, sub: str, first: int, last: int, limit: int) -> list[EventRecord]:
    rows = conn.execute(
        "SELECT sub, number, recorded, topic, rtype, rid, vid, seq, interaction, withheld FROM subscription_events "
        "WHERE sub = ? AND number BETWEEN ? AND ? ORDER BY number LIMIT ?", (sub, first, last, limit)).fetchall()
    return [EventRecord(*r[:9], bool(r[9])) for r in rows]


def record_delivery(conn: sqlite3.Connection, sub: str, delivered: int, withheld: list[int], sent_us: int) -> None:
    """Events up to ``delivered`` are done (sent, or ``withheld`` from this subscriber)."""
    if withheld:
        conn.executemany("UPDATE subscription_events SET withheld = 1 WHERE sub = ? AND number = ?",
                         [(sub, n) for n in withheld])
    conn.execute("UPDATE subscriptions SET delivered = max(delivered, ?), withheld = withheld + ?, attempts = 0, "
                 "failing_since = 0, next_attempt = 0, last_sent = max(last_sent, ?), error = '' WHERE id = ?",
                 (delivered, len(withheld), sent_us, sub))


def record_sent(conn: sqlite3.Connection, sub: str, sent_us: int) -> None:
    """A handshake or heartbeat was answered 2xx: the channel works again."""
    conn.execute("UPDATE subscriptions SET last_sent = max(last_sent, ?), attempts = 0, failing_since = 0, "
                 "next_attempt = 0, error = '' WHERE id = ?", (sent_us, sub))


def record_failure(conn: sqlite3.Connection, sub: str, failing_since_us: int, next_attempt_us: int,
                   error: str) -> None:
    conn.execute("UPDATE subscriptions SET attempts = attempts + 1, failing_since = ?, next_attempt = ?, error = ? "
                 "WHERE id = ?", (failing_since_us, next_attempt_us, error, sub))


def set_state(conn: sqlite3.Connection, sub: str, state: str, error: str) -> None:
    conn.execute("UPDATE subscriptions SET state = ?, error = ? WHERE id = ?", (state, error, sub))


def prune_events(conn: sqlite3.Connection, before_us: int) -> int:
    """Forget events recorded before ``before_us``, delivered or not: the retention period bounds
    what ``$events`` can replay and what a subscription long in error keeps waiting."""
    return conn.execute("DELETE FROM subscription_events WHERE recorded < ?", (before_us,)).rowcount


class TransactionEvents:
    """The notification methods of ``SqliteTransaction`` (its ``_conn`` is the writer, in a transaction)."""

    _conn: sqlite3.Connection
    committed: list

    def on_commit(self, callback) -> None:
        self.committed.append(callback)

    async def save_subscription(self, row: SubscriptionRow, restart: bool) -> None:
        save_subscription(self._conn, row, restart)

    async def drop_subscription(self, sub: str) -> None:
        drop_subscription(self._conn, sub)

    async def load_subscription(self, sub: str) -> SubscriptionRow | None:
        return load_subscription(self._conn, sub)

    async def subscribers(self, topics: list[str], now_us: int) -> list[tuple[str, str, str, str]]:
        return subscribers(self._conn, topics, now_us)

    async def append_events(self, subs: list[tuple[str, str]], recorded_us: int, rtype: str, rid: str, vid: int,
                            seq: int, interaction: str) -> None:
        append_events(self._conn, subs, recorded_us, rtype, rid, vid, seq, interaction)

    async def record_delivery(self, sub: str, delivered: int, withheld: list[int], sent_us: int) -> None:
        record_delivery(self._conn, sub, delivered, withheld, sent_us)

    async def count_subscriptions(self, organization: str) -> int:
        return self._conn.execute("SELECT count(*) FROM subscriptions WHERE org = ? AND state != 'off'",
                                  (organization,)).fetchone()[0]

    async def count_withheld(self, subs: list[str]) -> None:
        self._conn.executemany("UPDATE subscriptions SET withheld = withheld + 1 WHERE id = ?", [(s,) for s in subs])

    async def record_sent(self, sub: str, sent_us: int) -> None:
        record_sent(self._conn, sub, sent_us)

    async def record_failure(self, sub: str, failing_since_us: int, next_attempt_us: int, error: str) -> None:
        record_failure(self._conn, sub, failing_since_us, next_attempt_us, error)

    async def set_subscription_state(self, sub: str, state: str, error: str = "") -> None:
        set_state(self._conn, sub, state, error)


class StoreEvents:
    """The notification methods of ``SqliteStore`` (reads on its reader connection)."""

    _reader: sqlite3.Connection

    async def subscription(self, sub: str) -> SubscriptionRow | None:
        return load_subscription(self._reader, sub)

    async def subscriptions(self, organization: str | None = None) -> list[SubscriptionRow]:
        return all_subscriptions(self._reader, organization)

    async def subscription_events(self, sub: str, first: int, last: int, limit: int) -> list[EventRecord]:
        return events_between(self._reader, sub, first, last, limit)

    async def prune_events(self, before_us: int) -> int:
        async with self.transaction() as tx:
            prune_mapping_messages(tx._conn, before_us)
            return prune_events(tx._conn, before_us)
