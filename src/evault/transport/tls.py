"""The cluster's TLS identities: a private CA made by `evault init`, and SSL contexts.

Keys are ECDSA P-256 (fast to make and to handshake; RSA would add ~30 ms per key at init).
Certificates are X.509 v3 with the extensions a strict verifier expects: basicConstraints,
keyUsage, extendedKeyUsage, subjectAltName, subject/authority key identifiers.

- The CA signs every certificate of the cluster, then its key is destroyed (the dealer forgets
  every secret, paper Appendix A footnote 2).
- Node certificates: serverAuth, SAN ``DNS:node-<i>`` plus the IP address it listens on.
- The gateway's client certificate (CN ``evault-gateway``): clientAuth, used for mutual TLS
  towards the nodes.
- The gateway's public HTTPS certificate: serverAuth, SAN ``localhost``/``127.0.0.1`` and any
  names given at init.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from evault.errors import ConfigError

PrivateKey = ec.EllipticCurvePrivateKey


def generate_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "evault"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def generate_ca(
    common_name: str, *, now: dt.datetime, days: int = 3650
) -> tuple[PrivateKey, x509.Certificate]:
    """A self-signed CA certificate valid for ``days`` from ``now``."""
    key = generate_key()
    name = _name(common_name)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def issue_certificate(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    *,
    common_name: str,
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    server: bool,
    client: bool,
    now: dt.datetime,
    days: int = 3650,
) -> tuple[PrivateKey, x509.Certificate]:
    """A leaf certificate signed by the CA, for TLS server and/or client use."""
    if not (server or client):
        raise ValueError("server, client: a certificate must be for at least one use")
    key = generate_key()
    usages = []
    if server:
        usages.append(ExtendedKeyUsageOID.SERVER_AUTH)
    if client:
        usages.append(ExtendedKeyUsageOID.CLIENT_AUTH)
    sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns_names]
    sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ip_addresses]
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=True,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return key, builder.sign(ca_key, hashes.SHA256())


def write_private_key(path: Path, key: PrivateKey) -> None:
    """PEM (PKCS#8, unencrypted) readable by its owner only."""
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def write_certificate(path: Path, cert: x509.Certificate) -> None:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _load_chain(ctx: ssl.SSLContext, cert: Path, key: Path) -> None:
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS identity {cert} / {key}: {exc}") from exc


def _load_ca(ctx: ssl.SSLContext, ca: Path) -> None:
    try:
        ctx.load_verify_locations(cafile=str(ca))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load CA certificate {ca}: {exc}") from exc


def server_context(
    cert: Path, key: Path, *, ca: Path | None = None, require_client_cert: bool = False
) -> ssl.SSLContext:
    """Server-side context; with ``require_client_cert`` only CA-issued clients get in."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    _load_chain(ctx, cert, key)
    if require_client_cert:
        if ca is None:
            raise ValueError("ca: required when require_client_cert is set")
        _load_ca(ctx, ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(ca: Path, cert: Path | None = None, key: Path | None = None) -> ssl.SSLContext:
    """Client-side context trusting only ``ca``, optionally presenting a client certificate."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    _load_ca(ctx, ca)
    if cert is not None:
        if key is None:
            raise ValueError("key: required with cert")
        _load_chain(ctx, cert, key)
    return ctx
