"""Client-side helpers for developers and tests: make a key pair, sign a client assertion.

A real client does this in its own system with its own key; the gateway never needs a
client's private key. ``gateway clients add --generate-key`` and ``gateway token`` use these
so a developer gets a working client and token on the embedded default in two commands.
"""
from __future__ import annotations

import json
import time
import uuid

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


def generate_key(alg: str = "ES384") -> tuple[bytes, dict]:
    """(private key PEM, public JWK with kid/alg/use) for RS384 or ES384."""
    if alg == "ES384":
        private = ec.generate_private_key(ec.SECP384R1())
        jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(private.public_key()))
    elif alg == "RS384":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key()))
    else:
        raise ValueError(f"alg must be ES384 or RS384, not {alg}")
    jwk.update(kid=str(uuid.uuid4()), alg=alg, use="sig")
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return pem, jwk


def client_assertion(client_id: str, private_pem: bytes, token_url: str, kid: str, alg: str = "ES384",
                     lifetime: int = 240, **overrides) -> str:
    """A signed ``private_key_jwt`` assertion; ``overrides`` replace claims (tests use them)."""
    now = int(time.time())
    claims = {"iss": client_id, "sub": client_id, "aud": token_url, "exp": now + lifetime, "iat": now,
              "jti": str(uuid.uuid4()), **overrides}
    key = serialization.load_pem_private_key(private_pem, password=None)
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid})
