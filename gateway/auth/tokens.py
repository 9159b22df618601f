"""The token endpoint and bearer-token checks (SMART Backend Services).

A client proves who it is with a JWT it signs with its private key (``private_key_jwt``,
RS384 or ES384; RFC 7523): ``iss`` = ``sub`` = its client id, ``aud`` = our token URL, ``exp``
at most five minutes ahead, a ``jti`` never used before. In return it gets a short-lived
access token: a JWT the gateway signs with its own secret (HS256; issuer and verifier are the
same party, so a symmetric key is enough and a check costs microseconds) carrying the
client, its organisation, the granted scopes and the FHIR base it is valid for.
"""
from __future__ import annotations

import time
import uuid

import jwt

from gateway.access import Caller, ScopeError, ScopeSet
from gateway.auth.registry import Client, ClientRegistry
from gateway.errors import Unauthorized

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
CLIENT_ALGORITHMS = ("RS384", "ES384")
MAX_ASSERTION_LIFETIME = 300  # SMART: exp no more than five minutes in the future
ISSUER = "samverkan-gateway"


class OAuthError(Exception):
    """An RFC 6749 token-endpoint error: ``error`` code, description, HTTP status."""

    def __init__(self, error: str, description: str, status: int = 400):
        super().__init__(description)
        self.error, self.description, self.status = error, description, status

    def body(self) -> dict:
        """RFC 6749's ``error`` / ``error_description`` for OAuth clients, in an object that is
        also a FHIR OperationOutcome for clients that read every error as one."""
        code = "login" if self.status == 401 else "invalid"
        return {"resourceType": "OperationOutcome",
                "issue": [{"severity": "error", "code": code, "diagnostics": self.description}],
                "error": self.error, "error_description": self.description}


def _invalid_client(description: str) -> OAuthError:
    return OAuthError("invalid_client", description, 401)


class TokenService:
    def __init__(self, registry: ClientRegistry, lifetime: int = 300):
        self.registry = registry
        self.lifetime = lifetime
        self._secret = registry.signing_secret()
        # token → (caller, exp, aud) of tokens already verified: a signature check costs ~40 µs,
        # a third of a whole read; the exact token bytes were verified, so a hit is as good.
        self._verified: dict[str, tuple[Caller, int, str]] = {}

    # -- the token endpoint ------------------------------------------------------------
    def issue(self, form: dict[str, str], token_url: str, fhir_base: str) -> dict:
        if form.get("grant_type") != "client_credentials":
            raise OAuthError("unsupported_grant_type", "grant_type must be client_credentials")
        if form.get("client_assertion_type") != ASSERTION_TYPE:
            raise OAuthError("invalid_request", f"client_assertion_type must be {ASSERTION_TYPE}")
        assertion = form.get("client_assertion")
        if not assertion:
            raise OAuthError("invalid_request", "client_assertion is missing")
        client = self._authenticate(assertion, token_url)
        try:
            requested = ScopeSet.parse(form.get("scope", ""))
        except ScopeError as exc:
            raise OAuthError("invalid_scope", str(exc)) from None
        granted = requested.within(ScopeSet.parse(client.scopes))
        if not granted.scopes:
            raise OAuthError("invalid_scope", f"none of the requested scopes is allowed for this client "
                                              f"(allowed: {client.scopes})")
        now = int(time.time())
        claims = {"iss": ISSUER, "sub": client.client_id, "aud": fhir_base, "iat": now, "exp": now + self.lifetime,
                  "jti": str(uuid.uuid4()), "org": client.organization, "scope": str(granted)}
        if client.admin:
            claims["adm"] = True
        if client.operator:
            claims["opr"] = True
        token = jwt.encode(claims, self._secret, algorithm="HS256")
        return {"access_token": token, "token_type": "bearer", "expires_in": self.lifetime, "scope": str(granted)}

    def _authenticate(self, assertion: str, token_url: str) -> Client:
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            raise _invalid_client("client_assertion is not a JWT") from None
        if header.get("alg") not in CLIENT_ALGORITHMS:
            raise _invalid_client(f"client_assertion must be signed with {' or '.join(CLIENT_ALGORITHMS)}, "
                                  f"not {header.get('alg')}")
        client_id = unverified.get("iss")
        if not isinstance(client_id, str) or unverified.get("sub") != client_id:
            raise _invalid_client("client_assertion needs iss and sub, both the client id")
        client = self.registry.get(client_id)
        if client is None:
            raise _invalid_client("unknown client")
        if client.revoked:
            raise _invalid_client("this client has been revoked")
        key = _client_key(client, header.get("kid"), header["alg"])
        try:
            claims = jwt.decode(assertion, key, algorithms=[header["alg"]], audience=token_url,
                                options={"require": ["exp", "iss", "sub", "aud", "jti"]})
        except jwt.ExpiredSignatureError:
            raise _invalid_client("client_assertion has expired") from None
        except jwt.InvalidAudienceError:
            raise _invalid_client(f"client_assertion aud must be the token endpoint {token_url}") from None
        except jwt.InvalidSignatureError:
            raise _invalid_client("client_assertion signature does not verify with the client's registered keys") from None
        except jwt.PyJWTError as exc:
            raise _invalid_client(f"client_assertion is not acceptable: {exc}") from None
        if claims["exp"] > time.time() + MAX_ASSERTION_LIFETIME + 30:
            raise _invalid_client("client_assertion exp is more than five minutes ahead")
        if not self.registry.use_jti(client.client_id, str(claims["jti"]), int(claims["exp"])):
            raise _invalid_client("client_assertion jti was already used (replay)")
        return client

    # -- FHIR requests -----------------------------------------------------------------
    def verify(self, authorization: str | None, fhir_base: str) -> Caller:
        """The caller of a FHIR request, from its ``Authorization: Bearer`` header; 401 otherwise."""
        if not authorization:
            raise Unauthorized("This request needs an access token (Authorization: Bearer …); get one "
                               "from the token endpoint in /fhir/.well-known/smart-configuration.")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("The Authorization header must be 'Bearer <access token>'.")
        token = token.strip()
        hit = self._verified.get(token)
        if hit is not None and hit[1] > time.time() and hit[2] == fhir_base:
            if self.registry.is_revoked(hit[0].client_id):
                raise Unauthorized("The client of this access token has been revoked.")
            return hit[0]
        caller, exp = self._decode(token, fhir_base)
        if len(self._verified) >= 10_000:  # bounded: tokens live minutes, start afresh
            self._verified.clear()
        self._verified[token] = (caller, exp, fhir_base)
        return caller

    def _decode(self, token: str, fhir_base: str) -> tuple[Caller, int]:
        try:
            claims = jwt.decode(token, self._secret, algorithms=["HS256"], audience=fhir_base,
                                issuer=ISSUER, options={"require": ["exp", "sub", "aud", "org", "scope"]})
        except jwt.ExpiredSignatureError:
            raise Unauthorized("The access token has expired; request a new one.") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized(f"The access token was issued for another server; its audience must be {fhir_base}.") from None
        except jwt.PyJWTError:
            raise Unauthorized("The access token is not valid (bad signature or malformed).") from None
        if self.registry.is_revoked(claims["sub"]):
            raise Unauthorized("The client of this access token has been revoked.")
        caller = Caller(claims["sub"], claims["org"], ScopeSet.parse(claims["scope"]), bool(claims.get("adm")),
                        bool(claims.get("opr")))
        return caller, int(claims["exp"])


def _client_key(client: Client, kid: str | None, alg: str):
    keys = [k for k in client.jwks.get("keys", []) if kid is None or k.get("kid") == kid]
    if not keys:
        raise _invalid_client(f"no registered key of this client has kid {kid!r}")
    try:
        return jwt.PyJWK(keys[0], algorithm=alg).key
    except jwt.PyJWTError as exc:
        raise _invalid_client(f"the registered key does not fit {alg}: {exc}") from None
