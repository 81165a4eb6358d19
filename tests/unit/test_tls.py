"""The cluster CA and certificates are accepted by real TLS (ssl module over a socket pair)."""

import datetime as dt
import socket
import ssl
import threading
from pathlib import Path

import pytest

from evault.transport import tls

NOW = dt.datetime.now(dt.UTC)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("pki")
    ca_key, ca = tls.generate_ca("test ca", now=NOW)
    tls.write_certificate(d / "ca.pem", ca)
    for name, server, client in (("node-1", True, False), ("evault-gateway", False, True)):
        key, cert = tls.issue_certificate(
            ca_key,
            ca,
            common_name=name,
            dns_names=[name] if server else [],
            ip_addresses=["127.0.0.1"] if server else [],
            server=server,
            client=client,
            now=NOW,
        )
        tls.write_private_key(d / f"{name}.key", key)
        tls.write_certificate(d / f"{name}.pem", cert)
    other_key, other_ca = tls.generate_ca("other ca", now=NOW)
    key, cert = tls.issue_certificate(
        other_key, other_ca, common_name="evault-gateway", server=False, client=True, now=NOW
    )
    tls.write_private_key(d / "rogue.key", key)
    tls.write_certificate(d / "rogue.pem", cert)
    return d


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, name: str) -> str:
    """Run one TLS handshake over a socket pair; return the peer CN the server saw."""
    a, b = socket.socketpair()
    result: dict[str, object] = {}

    def serve() -> None:
        try:
            with server_ctx.wrap_socket(a, server_side=True) as s:
                cert = s.getpeercert()
                result["cn"] = dict(x[0] for x in cert["subject"])["commonName"] if cert else ""
                s.sendall(b"ok")
        except (ssl.SSLError, OSError) as exc:
            result["error"] = exc

    t = threading.Thread(target=serve)
    t.start()
    try:
        with client_ctx.wrap_socket(b, server_hostname=name) as c:
            c.recv(2)
    finally:
        t.join(timeout=10)
    if "error" in result:
        raise result["error"]  # type: ignore[misc]
    return str(result["cn"])


def test_mutual_tls_succeeds_with_cluster_certificates(pki: Path) -> None:
    server = tls.server_context(
        pki / "node-1.pem", pki / "node-1.key", ca=pki / "ca.pem", require_client_cert=True
    )
    client = tls.client_context(
        pki / "ca.pem", pki / "evault-gateway.pem", pki / "evault-gateway.key"
    )
    assert _handshake(server, client, "node-1") == "evault-gateway"


def test_wrong_node_name_is_refused_by_the_client(pki: Path) -> None:
    server = tls.server_context(pki / "node-1.pem", pki / "node-1.key")
    client = tls.client_context(pki / "ca.pem")
    with pytest.raises(ssl.SSLCertVerificationError, match=r"node-2|match"):
        _handshake(server, client, "node-2")


def test_client_without_or_with_foreign_certificate_is_refused(pki: Path) -> None:
    server = tls.server_context(
        pki / "node-1.pem", pki / "node-1.key", ca=pki / "ca.pem", require_client_cert=True
    )
    for client in (
        tls.client_context(pki / "ca.pem"),
        tls.client_context(pki / "ca.pem", pki / "rogue.pem", pki / "rogue.key"),
    ):
        with pytest.raises((ssl.SSLError, OSError)):
            _handshake(server, client, "node-1")


def test_key_files_are_private(pki: Path) -> None:
    assert (pki / "node-1.key").stat().st_mode & 0o077 == 0
