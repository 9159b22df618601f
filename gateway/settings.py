"""Settings, read once from ``GATEWAY_*`` environment variables (CLI flags override them).

| variable | default | meaning |
|---|---|---|
| GATEWAY_DB | ./gateway.sqlite | SQLite file of the embedded store |
| GATEWAY_HOST / GATEWAY_PORT | 127.0.0.1 / 8080 | where `gateway serve` listens |
| GATEWAY_BASE_URL | (from the request) | public FHIR base used in Location, fullUrl and links |
| GATEWAY_MAX_BODY_BYTES | 10485760 | larger request bodies are refused with 413 |
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
| GATEWAY_NOTIFY_ALLOWED_HOSTS | (any) | endpoint hosts Subscriptions may name: `kommun.se,*.sjunet.org` (`*.` = any subdomain) |
| GATEWAY_NOTIFY_MAX_SUBSCRIPTIONS | 100 | Subscriptions one organisation may hold (every write tests each one's filters) |
| GATEWAY_NOTIFY_HTTP_LOOPBACK | off | `on`: Subscriptions may use plain http to a loopback address (development only) |
| GATEWAY_NOTIFY_SIGNING_KEY | (none) | if set, notifications carry `X-Samverkan-Signature: t=…,v1=HMAC-SHA256(key, "t.body")` |
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path

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
        )

    def with_overrides(self, **changes) -> "Settings":
        return replace(self, **{k: v for k, v in changes.items() if v is not None})
