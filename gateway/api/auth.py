"""HTTP side of authentication: the token endpoint, SMART discovery, and the gate every FHIR
request passes (``/metadata`` and ``.well-known`` excepted).

Both endpoints live below the FHIR base (``/fhir/auth/token``,
``/fhir/.well-known/smart-configuration``), where SMART clients look for them; resource types
are capitalised, so these paths cannot collide with FHIR URLs.
"""
from __future__ import annotations

import asyncio
import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qsl

import orjson
from starlette.requests import Request
from starlette.responses import Response

from gateway.access import Caller
from gateway.api.http import read_body
from gateway.auth.registry import ClientRegistry
from gateway.auth.tokens import CLIENT_ALGORITHMS, OAuthError, TokenService
from gateway.errors import FhirError, ServiceUnavailable
from gateway.settings import Settings

log = logging.getLogger("gateway.auth")

TOKEN_PATH = "/auth/token"
SMART_CONFIG_PATH = "/.well-known/smart-configuration"
_FORM = frozenset({"application/x-www-form-urlencoded"})
_READ_WAIT_S = 0.02  # the revocation check reads on the event loop: a lock held elsewhere → 503, not a stall


class AuthGate:
    def __init__(self, settings: Settings):
        self.enabled = settings.security != "off"
        self.lifetime = settings.token_lifetime
        self.busy_timeout = settings.busy_timeout
        self.registry: ClientRegistry | None = None
        self.tokens: TokenService | None = None
        # Issuing a token writes (the assertion's jti, against replay), so it may wait for the
        # file's write lock while another process writes: it runs on a thread of its own, with
        # a connection of its own, never on the event loop.
        self._issuing: ThreadPoolExecutor | None = None
        self._issuer: TokenService | None = None

    def open(self, db_path: str) -> None:
        self.registry = ClientRegistry(db_path)
        self.tokens = TokenService(self.registry, self.lifetime)
        self.registry.wait_for_locks(_READ_WAIT_S)
        issuing_registry = ClientRegistry(db_path)
        issuing_registry.wait_for_locks(self.busy_timeout)
        self._issuer = TokenService(issuing_registry, self.lifetime)
        self._issuing = ThreadPoolExecutor(1, thread_name_prefix="token-issuer")
        if not self.enabled:
            log.warning("GATEWAY_SECURITY=off: every request is trusted, no access checks, no tokens. "
                        "For benchmarks and local experiments only.")

    def close(self) -> None:
        if self._issuing is not None:
            self._issuing.shutdown(wait=True)
            self._issuer.registry.close()
        if self.registry is not None:
            self.registry.close()

    def caller(self, request: Request, fhir_base: str) -> Caller | None:
        """The authenticated caller; None when security is off. Raises Unauthorized (401), or
        503 if the revocation list cannot be read now."""
        if not self.enabled:
            return None
        try:
            return self.tokens.verify(request.headers.get("authorization"), fhir_base)
        except sqlite3.OperationalError:
            raise ServiceUnavailable("The server cannot check the access token right now; retry in a moment.") \
                from None

    # -- endpoints ---------------------------------------------------------------------
    async def token(self, request: Request, fhir_base: str) -> Response:
        if request.method != "POST":
            return _oauth_error(OAuthError("invalid_request", "POST the token request as a form", 405))
        try:
            body = await read_body(request, 64 * 1024, _FORM)
            form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except FhirError as exc:  # media type, size, encoding, time: say which (OAuth's 400, but 408/413)
            status = exc.status if exc.status in (408, 413) else 400
            return _oauth_error(OAuthError("invalid_request", exc.issues[0].diagnostics, status))
        except UnicodeDecodeError:
            return _oauth_error(OAuthError("invalid_request", "send application/x-www-form-urlencoded UTF-8"))
        try:
            granted = await asyncio.get_running_loop().run_in_executor(
                self._issuing, self._issuer.issue, form, fhir_base + TOKEN_PATH, fhir_base)
        except OAuthError as exc:
            log.info("token refused: %s", exc.error)  # the description may name the client: keep it out
            return _oauth_error(exc)
        except sqlite3.OperationalError:  # the write lock was not had in time (another process writes)
            return _oauth_error(OAuthError("temporarily_unavailable", "the server is busy; retry in a moment",
                                           503), {"Retry-After": "1"})
        return Response(orjson.dumps(granted), 200, media_type="application/json",
                        headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    def smart_configuration(self, fhir_base: str) -> Response:
        config = {
            "token_endpoint": fhir_base + TOKEN_PATH,
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["private_key_jwt"],
            "token_endpoint_auth_signing_alg_values_supported": list(CLIENT_ALGORITHMS),
            "scopes_supported": ["system/*.cruds", "system/*.rs", "system/*.read", "system/*.write"],
            "capabilities": ["client-confidential-asymmetric", "permission-v2", "permission-v1"],
        }
        return Response(orjson.dumps(config), 200, media_type="application/json")


def _oauth_error(exc: OAuthError, extra: dict[str, str] | None = None) -> Response:
    headers = {"Cache-Control": "no-store", **(extra or {})}
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Bearer error="invalid_client"'
    return Response(orjson.dumps(exc.body()), exc.status, media_type="application/json", headers=headers)
