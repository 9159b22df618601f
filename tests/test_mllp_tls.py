"""MLLP over TLS with required client certificates (gateway/mllp/tls.py). The certificates are made
here with `cryptography`: a CA, the listener's certificate (for 127.0.0.1), a client certificate
the CA signed, and a self-signed one the CA never saw."""
from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gateway.mllp.client import MllpClient
from gateway.mllp.tls import client_tls_context, server_tls_context
from mllp_support import PATIENCE, EchoAck, acked, message, serving


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(directory: Path, name: str, subject: str, issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
           ca: bool = False, server: bool = False) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    issuer_cert, issuer_key = issuer if issuer else (None, key)
    builder = (x509.CertificateBuilder().subject_name(_name(subject))
               .issuer_name(issuer_cert.subject if issuer_cert else _name(subject))
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                      content_commitment=False, key_encipherment=False,
                                                      data_encipherment=False, key_agreement=False,
                                                      encipher_only=False, decipher_only=False), critical=True)
    else:
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if server:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                        critical=False)
    cert = builder.sign(issuer_key, hashes.SHA256())
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / f"{name}.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                              serialization.PrivateFormat.PKCS8,
                                                              serialization.NoEncryption()))
    return cert, key


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    ca = _issue(directory, "ca", "Samverkan test CA", None, ca=True)
    _issue(directory, "server", "mllp.test", ca, server=True)
    _issue(directory, "client", "EHR interface engine", ca)
    _issue(directory, "stranger", "EHR interface engine", None)  # self-signed, same name
    return directory


def listener_context(pki: Path) -> ssl.SSLContext:
    return server_tls_context(pki / "server.pem", pki / "server.key", pki / "ca.pem")


def test_the_listener_context_requires_client_certificates_and_tls_1_2_or_later(pki):
    context = listener_context(pki)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


async def test_a_client_with_a_certificate_the_ca_signed_gets_acks(pki):
    handler = EchoAck()
    async with serving(handler, ssl=listener_context(pki)) as server:
        context = client_tls_context(pki / "ca.pem", pki / "client.pem", pki / "client.key")
        async with MllpClient(*server.address, ssl=context, timeout=PATIENCE) as client:
            assert [acked(await client.send(message(f"T{i}"))) for i in range(3)] == [("AA", f"T{i}") for i in range(3)]


@pytest.mark.parametrize("certificate", [None, "stranger"], ids=["no certificate", "self-signed certificate"])
async def test_a_client_without_a_certificate_the_ca_signed_is_refused_at_the_handshake(pki, certificate):
    handler = EchoAck()
    async with serving(handler, ssl=listener_context(pki)) as server:
        context = client_tls_context(pki / "ca.pem", *((pki / f"{certificate}.pem", pki / f"{certificate}.key")
                                                       if certificate else ()))
        client = MllpClient(*server.address, ssl=context, timeout=PATIENCE)
        # TLS 1.2 fails in connect(); with 1.3 the client finishes its half first and learns of the
        # refusal (an alert, or the connection closing) on its first read.
        with pytest.raises((ssl.SSLError, ConnectionError)):
            await client.send(message("REFUSED"))
        await client.close()
        assert handler.seen == [] and server.stats.connections_accepted == 0
        ok = client_tls_context(pki / "ca.pem", pki / "client.pem", pki / "client.key")
        async with MllpClient(*server.address, ssl=ok, timeout=PATIENCE) as good:  # the listener serves on
            assert acked(await good.send(message("OK"))) == ("AA", "OK")


def test_tls_client_certificates_are_required_on_uvloop_too(pki):
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> None:
        async with serving(EchoAck(), ssl=listener_context(pki)) as server:
            ok = client_tls_context(pki / "ca.pem", pki / "client.pem", pki / "client.key")
            async with MllpClient(*server.address, ssl=ok, timeout=PATIENCE) as client:
                assert acked(await client.send(message("OK"))) == ("AA", "OK")
            stranger = MllpClient(*server.address, ssl=client_tls_context(pki / "ca.pem"), timeout=PATIENCE)
            with pytest.raises((ssl.SSLError, ConnectionError)):
                await stranger.send(message("REFUSED"))
            await stranger.close()
            assert server.stats.connections_accepted == 1

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())
