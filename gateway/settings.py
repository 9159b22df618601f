"""Settings, read once from ``GATEWAY_*`` environment variables (CLI flags override them).

| variable | default | meaning |
|---|---|---|
| GATEWAY_DB | ./gateway.sqlite | SQLite file of the embedded store |
| GATEWAY_HOST / GATEWAY_PORT | 127.0.0.1 / 8080 | where `gateway serve` listens |
| GATEWAY_BASE_URL | (from the request) | public FHIR base used in Location, fullUrl and links |
| GATEWAY_MAX_BODY_BYTES | 10485760 | larger request bodies are refused with 413 |
| GATEWAY_HEADER_TIMEOUT | 10 | seconds a request line and headers may take to arrive; then 408 and the connection is closed |
| GATEWAY_BODY_TIMEOUT | 60 | seconds a request body may take to arrive, counted from its head, then 408; also how long a client may stop reading a response |
| GATEWAY_MAX_HEADER_BYTES | 65536 | larger request heads → 431 (a longer URL → 414) |
| GATEWAY_MAX_CONNECTIONS | 1000 | open connections `gateway serve` keeps; requests on more → 503 with Retry-After (raises the file limit to fit) |
| GATEWAY_ALLOWED_HOSTS | (none) | Host names accepted besides localhost, 127.0.0.1, [::1], GATEWAY_HOST and GATEWAY_BASE_URL's host: `fhir.region.se,*.sjunet.org`, `*` = any well-formed Host |
| GATEWAY_MAX_JSON_DEPTH | 64 | request bodies nesting arrays/objects deeper are refused with 400 (at most 200) |
| GATEWAY_DEFAULT_COUNT / GATEWAY_MAX_COUNT | 20 / 1000 | page size when `_count` is absent / its ceiling |
| GATEWAY_SEARCH_SNAPSHOT_LIMIT | 10000 | matches remembered for paging one search |
| GATEWAY_SEARCH_SNAPSHOT_TTL | 3600 | seconds a paged search stays readable |
| GATEWAY_SQLITE_SYNCHRONOUS | FULL | SQLite `synchronous`; FULL: an acknowledged write survives power loss |
| GATEWAY_BUSY_TIMEOUT | 5 | seconds a request may wait for the store's write lock or for memory (below), then 503 + Retry-After |
| GATEWAY_MAX_PAGE_BYTES | 16777216 | stored bytes one response may carry (search/history page, batch); the page ends early, `next` has the rest |
| GATEWAY_MAX_INFLIGHT_BYTES | 268435456 | request bodies and response pages all requests together may hold; beyond it requests wait |
| GATEWAY_PROFILES_DIR | <repo>/profiles | SearchParameters and profiles loaded at start |
| GATEWAY_REQUIRED_PROFILES | (none) | profiles every write of a type must meet: `Task=url;CarePlan=url1 url2` |
| GATEWAY_SECURITY | on | `off` trusts every request (no tokens, no access checks): benchmarks and experiments only |
| GATEWAY_TOKEN_LIFETIME | 300 | seconds an access token is valid |
| GATEWAY_LOG_LEVEL | info | log level (logs never carry patient data) |
| GATEWAY_NOTIFY_RETRY_BASE / _MAX | 1 / 600 | seconds before the first retry of a failed notification; backoff doubles up to _MAX |
| GATEWAY_NOTIFY_RETRY_HORIZON | 259200 | seconds (72 h) a subscription may keep failing before it goes to `error` |
| GATEWAY_NOTIFY_TICK | 1 | seconds between scans for due retries, heartbeats and work left by a restart |
| GATEWAY_EVENT_RETENTION_DAYS | 30 | delivered events stay retrievable with `$events` this long |
| GATEWAY_REDIS_URL | (none) | deliver through Redis Streams (e.g. `redis://127.0.0.1:6379/0`): any number of gateway processes share the work |
| GATEWAY_REDIS_PREFIX | samverkan | prefix of the stream and lease keys (one per store) |
| GATEWAY_NOTIFY_DELIVER | on | `off`: this process only publishes events (others, e.g. `gateway worker`, deliver); Redis only |
| GATEWAY_NOTIFY_CLAIM_IDLE / _LEASE_MARGIN | 5 / 5 | seconds before a dead process's stream entries are reclaimed / its lease outlives a send |
| GATEWAY_NOTIFY_ALLOWED_HOSTS | (any public) | endpoint hosts Subscriptions may name: `kommun.se,*.sjunet.org` (`*.` = any subdomain); unset, endpoints must be at public addresses; set, only these hosts, which may be at private ones (events/endpoints.py) |
| GATEWAY_NOTIFY_MAX_SUBSCRIPTIONS | 100 | Subscriptions one organisation may hold (every write tests each one's filters) |
| GATEWAY_NOTIFY_HTTP_LOOPBACK | off | `on`: Subscription endpoints may be at loopback addresses (only those), also over plain http (development only) |
| GATEWAY_NOTIFY_SIGNING_KEY | (none) | if set, notifications carry `X-Samverkan-Signature: t=…,v1=HMAC-SHA256(key, "t.body")` |
| GATEWAY_MLLP_MAX_MESSAGE_BYTES | 1048576 | `gateway mllp`: a larger HL7 v2 message is refused (AR) and its connection closed |
| GATEWAY_MLLP_IDLE_TIMEOUT | 300 | `gateway mllp`: seconds a connection may go without a complete message (or not read its ACK) before it is closed |
| GATEWAY_MLLP_MAX_CONNECTIONS | 200 | `gateway mllp`: open connections; one more is closed at once |
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

from gateway.fhir.canonical import DEFAULT_MAX_JSON_DEPTH, MAX_JSON_DEPTH_CEILING

REPO_PROFILES = Path(__file__).resolve().parent.parent / "profiles"


def _env(name: str, default: str) -> str:
    return os.environ.get(f"GATEWAY_{name}", default)


@dataclass(frozen=True)
class Settings:
    db_path: str = "./gateway.sqlite"
    host: str = "127.0.0.1"
    port: int = 8080
    base_url: str | None = None
    max_body_bytes: int = 10 * 1024 * 1024
    max_json_depth: int = DEFAULT_MAX_JSON_DEPTH
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    max_header_bytes: int = 64 * 1024
    max_connections: int = 1000
    allowed_hosts: str = ""
    default_count: int = 20
    max_count: int = 1000
    search_snapshot_limit: int = 10_000
    search_snapshot_ttl: int = 3600
    sqlite_synchronous: str = "FULL"
    busy_timeout: float = 5.0
    max_page_bytes: int = 16 * 1024 * 1024
    max_inflight_bytes: int = 256 * 1024 * 1024
    profiles_dir: Path = field(default=REPO_PROFILES)
    required_profiles: str = ""
    security: str = "on"
    token_lifetime: int = 300
    log_level: str = "info"
    notify_retry_base: float = 1.0
    notify_retry_max: float = 600.0
    notify_retry_horizon: float = 72 * 3600.0
    notify_tick: float = 1.0
    event_retention_days: float = 30.0
    notify_signing_key: str = field(default="", repr=False)  # a secret: from the environment only
    redis_url: str = field(default="", repr=False)  # may carry a password
    redis_prefix: str = "samverkan"
    notify_deliver: bool = True
    notify_http_loopback: bool = False
    notify_allowed_hosts: str = ""
    notify_max_subscriptions: int = 100
    notify_claim_idle: float = 5.0
    notify_lease_margin: float = 5.0
    mllp_max_message_bytes: int = 1024 * 1024
    mllp_idle_timeout: float = 300.0
    mllp_max_connections: int = 200

    def __post_init__(self) -> None:
        if not 2 <= self.max_json_depth <= MAX_JSON_DEPTH_CEILING:
            raise ValueError(f"GATEWAY_MAX_JSON_DEPTH must be between 2 and {MAX_JSON_DEPTH_CEILING}, "
                             f"not {self.max_json_depth}")
        if self.mllp_max_message_bytes < 1 or self.mllp_idle_timeout <= 0 or self.mllp_max_connections < 1:
            raise ValueError("GATEWAY_MLLP_MAX_MESSAGE_BYTES, GATEWAY_MLLP_IDLE_TIMEOUT and "
                             "GATEWAY_MLLP_MAX_CONNECTIONS must be positive")

    @property
    def public_base(self) -> str:
        """The FHIR base named in notifications, which have no request to take it from."""
        return self.base_url or f"http://{self.host}:{self.port}/fhir"

    @classmethod
    def from_env(cls) -> "Settings":
        base = _env("BASE_URL", "")
        return cls(
            db_path=_env("DB", cls.db_path),
            host=_env("HOST", cls.host),
            port=int(_env("PORT", str(cls.port))),
            base_url=base.rstrip("/") or None,
            max_body_bytes=int(_env("MAX_BODY_BYTES", str(cls.max_body_bytes))),
            max_json_depth=int(_env("MAX_JSON_DEPTH", str(cls.max_json_depth))),
            header_timeout=float(_env("HEADER_TIMEOUT", str(cls.header_timeout))),
            body_timeout=float(_env("BODY_TIMEOUT", str(cls.body_timeout))),
            max_header_bytes=int(_env("MAX_HEADER_BYTES", str(cls.max_header_bytes))),
            max_connections=int(_env("MAX_CONNECTIONS", str(cls.max_connections))),
            allowed_hosts=_env("ALLOWED_HOSTS", ""),
            default_count=int(_env("DEFAULT_COUNT", str(cls.default_count))),
            max_count=int(_env("MAX_COUNT", str(cls.max_count))),
            search_snapshot_limit=int(_env("SEARCH_SNAPSHOT_LIMIT", str(cls.search_snapshot_limit))),
            search_snapshot_ttl=int(_env("SEARCH_SNAPSHOT_TTL", str(cls.search_snapshot_ttl))),
            sqlite_synchronous=_env("SQLITE_SYNCHRONOUS", cls.sqlite_synchronous).upper(),
            busy_timeout=float(_env("BUSY_TIMEOUT", str(cls.busy_timeout))),
            max_page_bytes=int(_env("MAX_PAGE_BYTES", str(cls.max_page_bytes))),
            max_inflight_bytes=int(_env("MAX_INFLIGHT_BYTES", str(cls.max_inflight_bytes))),
            profiles_dir=Path(_env("PROFILES_DIR", str(REPO_PROFILES))),
            required_profiles=_env("REQUIRED_PROFILES", ""),
            security=_env("SECURITY", cls.security).lower(),
            token_lifetime=int(_env("TOKEN_LIFETIME", str(cls.token_lifetime))),
            log_level=_env("LOG_LEVEL", cls.log_level),
            notify_retry_base=float(_env("NOTIFY_RETRY_BASE", str(cls.notify_retry_base))),
            notify_retry_max=float(_env("NOTIFY_RETRY_MAX", str(cls.notify_retry_max))),
            notify_retry_horizon=float(_env("NOTIFY_RETRY_HORIZON", str(cls.notify_retry_horizon))),
            notify_tick=float(_env("NOTIFY_TICK", str(cls.notify_tick))),
            event_retention_days=float(_env("EVENT_RETENTION_DAYS", str(cls.event_retention_days))),
            notify_signing_key=_env("NOTIFY_SIGNING_KEY", ""),
            redis_url=_env("REDIS_URL", ""),
            redis_prefix=_env("REDIS_PREFIX", cls.redis_prefix),
            notify_deliver=_env("NOTIFY_DELIVER", "on").lower() not in ("off", "false", "0"),
            notify_http_loopback=_env("NOTIFY_HTTP_LOOPBACK", "off").lower() in ("on", "true", "1"),
            notify_allowed_hosts=_env("NOTIFY_ALLOWED_HOSTS", ""),
            notify_max_subscriptions=int(_env("NOTIFY_MAX_SUBSCRIPTIONS", str(cls.notify_max_subscriptions))),
            notify_claim_idle=float(_env("NOTIFY_CLAIM_IDLE", str(cls.notify_claim_idle))),
            notify_lease_margin=float(_env("NOTIFY_LEASE_MARGIN", str(cls.notify_lease_margin))),
            mllp_max_message_bytes=int(_env("MLLP_MAX_MESSAGE_BYTES", str(cls.mllp_max_message_bytes))),
            mllp_idle_timeout=float(_env("MLLP_IDLE_TIMEOUT", str(cls.mllp_idle_timeout))),
            mllp_max_connections=int(_env("MLLP_MAX_CONNECTIONS", str(cls.mllp_max_connections))),
        )

    def with_overrides(self, **changes) -> "Settings":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})
