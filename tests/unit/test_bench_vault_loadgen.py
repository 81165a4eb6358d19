"""`evault bench vault` load generator: receipt checks, client spreading, and the client loop
against a tiny in-process HTTPS server (one persistent connection per client, errors counted,
never sampled)."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import hashlib
import json
import ssl
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from evault.bench.loadgen import (
    CheckFailed,
    ClientsJob,
    DepositWork,
    Outcome,
    RetrieveWork,
    Target,
    _shared_start,
    check_statement,
    run_clients,
    split_clients,
    verify_receipt_signature,
)
from evault.protocol.statement import Statement
from evault.transport import tls

VAULT = "0123456789abcdef0123456789abcdef"


def _statement(**changes: object) -> bytes:
    fields: dict[str, object] = dict(
        vault=VAULT,
        owner="bench",
        name="dep-1024-c0",
        version=2,
        size=1024,
        sha256="a" * 64,
        fv_hash="b" * 64,
        fingerprint_scheme="sha256-merkle/v1",
        n=5,
        m=3,
        codec="rs-isal-cauchy/v1",
        segment_bytes=1 << 20,
        encrypted=False,
        deposited_at="2026-11-25T15:35:54Z",
    )
    fields.update(changes)
    return Statement(**fields).to_bytes()  # type: ignore[arg-type]


def _expect(**overrides: object) -> dict[str, object]:
    want: dict[str, object] = dict(
        vault_id=VAULT,
        owner="bench",
        name="dep-1024-c0",
        version=2,
        size=1024,
        sha256_hex="a" * 64,
        fv_hash_hex="b" * 64,
    )
    want.update(overrides)
    return want


def test_check_statement_accepts_exactly_what_was_sent() -> None:
    parsed = check_statement(_statement(), **_expect())  # type: ignore[arg-type]
    assert parsed.version == 2 and parsed.fv_hash == "b" * 64


@pytest.mark.parametrize(
    ("field_name", "override"),
    [
        ("sha256", {"sha256_hex": "c" * 64}),
        ("fv_hash", {"fv_hash_hex": "c" * 64}),
        ("size", {"size": 1023}),
        ("name", {"name": "other"}),
        ("owner", {"owner": "mallory"}),
        ("vault", {"vault_id": "f" * 32}),
        ("version", {"version": 3}),
    ],
)
def test_check_statement_names_the_wrong_field(
    field_name: str, override: dict[str, object]
) -> None:
    with pytest.raises(CheckFailed, match=rf"\b{field_name} "):
        check_statement(_statement(), **_expect(**override))  # type: ignore[arg-type]


def test_check_statement_refuses_malformed_bytes() -> None:
    with pytest.raises(CheckFailed, match="malformed"):
        check_statement(b"{}", **_expect())  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_receipt_signature_is_rsassa_pss_sha256_salt_32(rsa_key: rsa.RSAPrivateKey) -> None:
    statement = _statement()
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    signature = rsa_key.sign(statement, pss, hashes.SHA256())
    verify_receipt_signature(rsa_key.public_key(), statement, signature, "doc")
    with pytest.raises(CheckFailed, match="does not verify"):
        verify_receipt_signature(rsa_key.public_key(), statement + b" ", signature, "doc")
    other_salt = rsa_key.sign(
        statement, padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=20), hashes.SHA256()
    )
    with pytest.raises(CheckFailed):
        verify_receipt_signature(rsa_key.public_key(), statement, other_salt, "doc")


def test_split_clients_spreads_evenly() -> None:
    assert split_clients(16, 1) == [16]
    assert split_clients(4, 3) == [2, 1, 1]
    assert split_clients(1, 2) == [1, 0]
    assert sum(split_clients(13, 5)) == 13
    with pytest.raises(ValueError, match="concurrency"):
        split_clients(0, 1)
    with pytest.raises(ValueError, match="workers"):
        split_clients(1, 0)


def test_outcomes_add_up_and_keep_a_few_error_texts() -> None:
    a = Outcome((0.1,), 1, 0.5, 100, 3, ("e1", "e2", "e3"))
    b = Outcome((0.2, 0.3), 2, 0.25, 50, 4, ("e4", "e5", "e6"))
    total = a + b
    assert total.latencies_s == (0.1, 0.2, 0.3)
    assert (total.completed, total.partial_ops, total.bytes_moved) == (3, 0.75, 150)
    assert total.error_count == 7
    assert total.errors == ("e1", "e2", "e3", "e4", "e5")


# --- the client loop against a fake HTTPS gateway ------------------------------------------------


@dataclass
class _FakeGateway:
    body: bytes
    sha_header: str
    connections: int = 0
    requests: list[str] = field(default_factory=list)
    receipt: dict[str, object] | None = None
    #: Each request's headers (lower-case names) and body.
    seen: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    #: The status line of document GETs.
    get_status: str = "200 OK"
    #: Header lines added to every answer.
    extra_headers: str = ""
    #: Document GETs announce this many more bytes than they send, then hang up.
    short_by: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip()
                    for k, v in (line.split(":", 1) for line in lines[1:] if ":" in line)
                }
                sent = b""
                if "content-length" in headers:
                    sent = await reader.readexactly(int(headers["content-length"]))
                self.requests.append(f"{method} {path}")
                self.seen.append((headers, sent))
                short = 0
                if path == "/api/v1/vault":
                    status, body, extra = "200 OK", b"{}", ""
                elif method == "GET":
                    status, body = self.get_status, self.body
                    extra = f"Evault-Sha256: {self.sha_header}\r\n"
                    short = self.short_by
                else:
                    status, body, extra = "201 Created", json.dumps(self.receipt).encode(), ""
                extra += self.extra_headers
                writer.write(
                    f"HTTP/1.1 {status}\r\nContent-Length: {len(body) + short}\r\n"
                    f"{extra}\r\n".encode()
                    + body
                )
                await writer.drain()
                if short:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, ssl.SSLContext]]:
    now = dt.datetime.now(dt.UTC)
    ca_key, ca_cert = tls.generate_ca("bench test CA", now=now)
    key, cert = tls.issue_certificate(
        ca_key,
        ca_cert,
        common_name="127.0.0.1",
        ip_addresses=["127.0.0.1"],
        server=True,
        client=False,
        now=now,
    )
    root = tmp_path_factory.mktemp("certs")
    tls.write_certificate(root / "ca.pem", ca_cert)
    tls.write_certificate(root / "server.pem", cert)
    tls.write_private_key(root / "server.key", key)
    yield root / "ca.pem", tls.server_context(root / "server.pem", root / "server.key")


async def _run_against(
    fake: _FakeGateway, server_ctx: ssl.SSLContext, ca: Path, job_work: object, clients: int
) -> Outcome:
    server = await asyncio.start_server(fake.handle, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        target = Target(f"https://127.0.0.1:{port}", str(ca), "token")
        job = ClientsJob(target, job_work, clients, 0, 0.3)  # type: ignore[arg-type]

        async def announce() -> float:
            return time.monotonic()

        return await run_clients(job, _shared_start(clients, announce))
    finally:
        server.close()
        await server.wait_closed()


def test_clients_keep_one_connection_each_and_check_every_body(
    certs: tuple[Path, ssl.SSLContext],
) -> None:
    ca, server_ctx = certs
    body = b"x" * 3000
    sha = hashlib.sha256(body).hexdigest()
    fake = _FakeGateway(body, sha)
    outcome = asyncio.run(_run_against(fake, server_ctx, ca, RetrieveWork("d", 3000, sha), 3))
    assert outcome.error_count == 0
    assert outcome.completed >= 3
    assert len(outcome.latencies_s) == outcome.completed
    assert fake.connections == 3  # one persistent connection per client
    gets = [r for r in fake.requests if r.startswith("GET /api/v1/documents/")]
    # Every GET was timed or was the one in flight at the deadline (credited partially).
    assert outcome.completed <= len(gets) <= outcome.completed + 3
    assert outcome.bytes_moved >= outcome.completed * 3000


def test_a_body_that_does_not_hash_to_the_receipt_is_an_error_never_a_sample(
    certs: tuple[Path, ssl.SSLContext],
) -> None:
    ca, server_ctx = certs
    body = b"y" * 100
    claimed = hashlib.sha256(b"something else").hexdigest()
    fake = _FakeGateway(body, claimed)
    outcome = asyncio.run(_run_against(fake, server_ctx, ca, RetrieveWork("d", 100, claimed), 2))
    assert outcome.completed == 0 and outcome.latencies_s == ()
    assert outcome.error_count >= 2
    assert "do not hash" in outcome.errors[0]


def test_a_deposit_receipt_with_a_bad_signature_is_an_error(
    certs: tuple[Path, ssl.SSLContext], rsa_key: rsa.RSAPrivateKey
) -> None:
    from cryptography.hazmat.primitives import serialization

    ca, server_ctx = certs
    payload = b"z" * 1024
    sha = hashlib.sha256(payload).hexdigest()
    statement = _statement(sha256=sha, name="dep-c0", version=1)
    fake = _FakeGateway(b"", "")
    fake.receipt = {
        "version": 1,
        "receipt": {
            "statement": base64.b64encode(statement).decode(),
            "signature": base64.b64encode(b"\x01" * 256).decode(),
        },
    }
    pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    work = DepositWork("dep-c", payload, sha, "b" * 64, "bench", VAULT, pem)
    outcome = asyncio.run(_run_against(fake, server_ctx, ca, work, 1))
    assert outcome.completed == 0
    assert outcome.error_count >= 1
    assert "signature does not verify" in outcome.errors[0]
    # With the vault's real signature the same answer is accepted.
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    signature = rsa_key.sign(statement, pss, hashes.SHA256())
    fake.receipt["receipt"] = {  # type: ignore[index]
        "statement": base64.b64encode(statement).decode(),
        "signature": base64.b64encode(signature).decode(),
    }
    good = asyncio.run(_run_against(fake, server_ctx, ca, work, 1))
    assert good.error_count == 0 and good.completed >= 1


def test_every_request_carries_the_token_and_no_cookie_is_kept(
    certs: tuple[Path, ssl.SSLContext],
) -> None:
    ca, server_ctx = certs
    body = b"c" * 500
    sha = hashlib.sha256(body).hexdigest()
    fake = _FakeGateway(body, sha, extra_headers="Set-Cookie: session=abc; Path=/\r\n")
    outcome = asyncio.run(_run_against(fake, server_ctx, ca, RetrieveWork("d", 500, sha), 2))
    assert outcome.error_count == 0 and outcome.completed >= 2
    assert fake.connections == 2
    assert all(h.get("authorization") == "Bearer token" for h, _ in fake.seen)
    assert not any("cookie" in h for h, _ in fake.seen)


def test_the_body_is_hashed_as_sent_never_decompressed(
    certs: tuple[Path, ssl.SSLContext],
) -> None:
    import gzip

    ca, server_ctx = certs
    body = gzip.compress(b"document " * 100)
    sha = hashlib.sha256(body).hexdigest()
    fake = _FakeGateway(body, sha, extra_headers="Content-Encoding: gzip\r\n")
    work = RetrieveWork("d", len(body), sha)
    outcome = asyncio.run(_run_against(fake, server_ctx, ca, work, 1))
    assert outcome.error_count == 0 and outcome.completed >= 1


@pytest.mark.parametrize(
    ("fake_changes", "work_size", "expected"),
    [
        ({"sha_header": "e" * 64}, 3000, "Evault-Sha256 'eeee"),
        ({"get_status": "503 Service Unavailable"}, 3000, "HTTP 503 xxxx"),
        ({}, 2999, "3000 bytes, the receipt says 2999"),
    ],
)
def test_a_failed_check_is_an_error_and_the_connection_is_kept(
    certs: tuple[Path, ssl.SSLContext],
    fake_changes: dict[str, str],
    work_size: int,
    expected: str,
) -> None:
    ca, server_ctx = certs
    body = b"x" * 3000
    sha = hashlib.sha256(body).hexdigest()
    fake = _FakeGateway(body, sha)
    for name, value in fake_changes.items():
        setattr(fake, name, value)
    outcome = asyncio.run(_run_against(fake, server_ctx, ca, RetrieveWork("d", work_size, sha), 2))
    assert outcome.completed == 0 and outcome.latencies_s == () and outcome.bytes_moved == 0
    assert outcome.error_count >= 2
    assert expected in outcome.errors[0]
    # The answer was read to its end, so each client went on over its one connection.
    assert fake.connections == 2
    assert len(fake.requests) > 2 * 2


def test_a_connection_lost_mid_body_is_an_error_never_a_sample(
    certs: tuple[Path, ssl.SSLContext],
) -> None:
    ca, server_ctx = certs
    body = b"x" * 3000
    sha = hashlib.sha256(body).hexdigest()
    fake = _FakeGateway(body, sha, short_by=100)
    outcome = asyncio.run(_run_against(fake, server_ctx, ca, RetrieveWork("d", 3000, sha), 1))
    assert outcome.completed == 0 and outcome.latencies_s == ()
    assert outcome.error_count >= 1
    assert "Payload" in outcome.errors[0] or "Disconnected" in outcome.errors[0]


def test_deposits_send_the_payload_with_its_sha256_over_one_connection(
    certs: tuple[Path, ssl.SSLContext], rsa_key: rsa.RSAPrivateKey
) -> None:
    from cryptography.hazmat.primitives import serialization

    ca, server_ctx = certs
    payload = b"p" * 4096
    sha = hashlib.sha256(payload).hexdigest()
    statement = _statement(sha256=sha, name="dep-c0", version=1, size=4096)
    pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)
    fake = _FakeGateway(b"", "")
    fake.receipt = {
        "version": 1,
        "receipt": {
            "statement": base64.b64encode(statement).decode(),
            "signature": base64.b64encode(rsa_key.sign(statement, pss, hashes.SHA256())).decode(),
        },
    }
    pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    work = DepositWork("dep-c", payload, sha, "b" * 64, "bench", VAULT, pem)
    outcome = asyncio.run(_run_against(fake, server_ctx, ca, work, 1))
    assert outcome.error_count == 0 and outcome.completed >= 2
    assert fake.connections == 1
    puts = [(h, b) for (h, b), r in zip(fake.seen, fake.requests, strict=True) if "PUT" in r]
    assert len(puts) >= outcome.completed
    assert {r for r in fake.requests if r.startswith("PUT")} == {"PUT /api/v1/documents/dep-c0"}
    for headers, sent in puts:
        assert sent == payload
        assert headers["evault-sha256"] == sha
        assert headers["content-type"] == "application/octet-stream"
        assert headers["authorization"] == "Bearer token"
