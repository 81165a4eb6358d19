"""A fake vault service and an app factory for testing the public API without nodes.

The fake implements the service's interface (``deposit``, ``retrieve``, ``delete``,
``cleanup_pending``) on a real catalog (SQLite file) and keeps document bytes in memory.
Receipts are real RSASSA-PSS signatures by a test key over real v1 statements, so tests can
verify them against the PEM the API publishes.  Knobs make it misbehave the ways the real
service may: faulty nodes reported, a failure after the first chunk of a retrieval.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from fastapi import FastAPI

from evault.catalog import Catalog, ReceiptRecord, VersionRecord
from evault.errors import DigestMismatch, DocumentCorrupt
from evault.gateway import key_relay
from evault.gateway.api import ApiSettings, VaultInfo
from evault.gateway.app import create_app
from evault.protocol.statement import Statement, format_time

VAULT_ID = "0123456789abcdef0123456789abcdef"
FIXED_NOW = datetime(2026, 11, 20, 12, 0, 0, tzinfo=UTC)
CHUNK_BYTES = 64 * 1024
PASSWORD = "correct horse battery"
# Cheap Argon2 parameters: these tests are about HTTP, not password hashing.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@dataclass
class FakeOutcome:
    version: int
    size: int
    sha256: str
    statement: bytes
    signature: bytes
    faulty: dict[int, str]
    failed: dict[int, str]


@dataclass
class FakeDeleteOutcome:
    record: VersionRecord
    failed: dict[int, str]


@dataclass
class FakeRetrieval:
    record: VersionRecord
    size: int
    faulty: dict[int, str]
    data: bytes
    fail_after_first_chunk: bool = False
    failed: dict[int, str] = field(default_factory=dict)
    closed: bool = False

    async def _chunks(self) -> AsyncIterator[bytes]:
        try:
            for offset in range(0, len(self.data), CHUNK_BYTES):
                if offset and self.fail_after_first_chunk:
                    raise DocumentCorrupt(self.record.sha256.hex(), "00" * 32)
                yield self.data[offset : offset + CHUNK_BYTES]
                await asyncio.sleep(0)
        finally:
            self.closed = True

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def aclose(self) -> None:
        self.closed = True


@dataclass
class FakeService:
    catalog: Catalog
    key: rsa.RSAPrivateKey
    blobs: dict[tuple[str, str, int], bytes] = field(default_factory=dict)
    #: Reported as faulty on every deposit and retrieval.
    faulty: dict[int, str] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    corrupt_mid_stream: bool = False
    calls: list[tuple[str, Any]] = field(default_factory=list)
    last_retrieval: FakeRetrieval | None = None

    async def deposit(
        self,
        owner: str,
        name: str,
        body: AsyncIterator[bytes],
        *,
        size: int | None,
        sha256: str | None,
        encrypted: bool = False,
    ) -> FakeOutcome:
        self.calls.append(("deposit", (owner, name, size, sha256)))
        version = await asyncio.to_thread(self.catalog.begin_deposit, owner, name)
        digest = hashlib.sha256()
        data = bytearray()
        try:
            async for chunk in body:
                digest.update(chunk)
                data += chunk
            actual = digest.hexdigest()
            if sha256 is not None and sha256 != actual:
                raise DigestMismatch(sha256, actual)
        except BaseException as exc:
            await asyncio.to_thread(self.catalog.fail_deposit, owner, name, version, repr(exc))
            raise
        statement = Statement(
            vault=VAULT_ID,
            owner=owner,
            name=name,
            version=version,
            size=len(data),
            sha256=actual,
            fv_hash=hashlib.sha256(b"fv" + bytes(data)).hexdigest(),
            fingerprint_scheme="sha256-merkle/v1",
            n=5,
            m=3,
            codec="fake/v1",
            segment_bytes=1024 * 1024,
            encrypted=encrypted,
            deposited_at=format_time(FIXED_NOW),
        ).to_bytes()
        signature = self.key.sign(statement, _pss(), hashes.SHA256())
        await asyncio.to_thread(
            lambda: self.catalog.complete_deposit(
                owner,
                name,
                version,
                ReceiptRecord(
                    size=len(data),
                    sha256=bytes.fromhex(actual),
                    fv_hash=bytes(32),
                    codec_id="fake/v1",
                    m=3,
                    n=5,
                    segment_bytes=1024 * 1024,
                    statement=statement,
                    signature=signature,
                    deposited_at=FIXED_NOW,
                    encrypted=encrypted,
                ),
            )
        )
        self.blobs[(owner, name, version)] = bytes(data)
        return FakeOutcome(
            version, len(data), actual, statement, signature, dict(self.faulty), dict(self.failed)
        )

    async def retrieve(self, owner: str, name: str, version: int | None = None) -> FakeRetrieval:
        self.calls.append(("retrieve", (owner, name, version)))
        record = await asyncio.to_thread(self.catalog.get_version, owner, name, version)
        data = self.blobs[(owner, name, record.version)]
        self.last_retrieval = FakeRetrieval(
            record, record.size, dict(self.faulty), data, self.corrupt_mid_stream, dict(self.failed)
        )
        return self.last_retrieval

    async def delete(self, owner: str, name: str, version: int) -> FakeDeleteOutcome:
        self.calls.append(("delete", (owner, name, version)))
        record = await asyncio.to_thread(self.catalog.mark_deleted, owner, name, version)
        self.blobs.pop((owner, name, version), None)
        return FakeDeleteOutcome(record, dict(self.failed))

    async def cleanup_pending(self) -> int:
        return 0

    # Confidentiality relays (issue 6): no nodes here, so every node "stored" its share and
    # no node answers an unwrap; the request checks are the real relay's.
    async def put_unwrap_key(
        self, owner: str, sealed: Mapping[int, bytes], certificate: bytes
    ) -> key_relay.KeyStoreOutcome:
        self.calls.append(("put_unwrap_key", (owner, dict(sealed), certificate)))
        return key_relay.KeyStoreOutcome(None, {node: True for node in sealed}, {})

    async def unwrap_keys(self, owner: str) -> key_relay.KeyListOutcome:
        self.calls.append(("unwrap_keys", owner))
        return key_relay.KeyListOutcome()

    async def unwrap(self, owner: str, signed_request: bytes) -> key_relay.UnwrapOutcome:
        self.calls.append(("unwrap", (owner, signed_request)))
        return await key_relay.unwrap(
            {}, vault=VAULT_ID, owner=owner, signed_request=signed_request, timeout_s=1.0
        )


def _pss() -> padding.PSS:
    return padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32)


def verify_receipt(public_pem: str, statement: bytes, signature: bytes) -> None:
    """Raises ``cryptography.exceptions.InvalidSignature`` unless the receipt verifies."""
    key = serialization.load_pem_public_key(public_pem.encode("ascii"))
    if not isinstance(key, rsa.RSAPublicKey):
        raise TypeError("expected an RSA key")
    key.verify(signature, statement, _pss(), hashes.SHA256())


@functools.cache
def vault_key() -> rsa.RSAPrivateKey:
    """One test key per session (2048-bit key generation costs tens of milliseconds)."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode("ascii")
    )


@dataclass
class Harness:
    app: FastAPI
    catalog: Catalog
    service: FakeService
    settings: ApiSettings


def build_harness(db_path: Path, *, max_document_bytes: int = 1024 * 1024) -> Harness:
    key = vault_key()
    catalog = Catalog(str(db_path), password_hasher=FAST_HASHER, pool_size=4)
    catalog.migrate()
    service = FakeService(catalog, key)
    info = VaultInfo(
        vault_id=VAULT_ID,
        n=5,
        m=3,
        k=4,
        t=1,
        codec="fake/v1",
        segment_bytes=1024 * 1024,
        fingerprint_scheme="sha256-merkle/v1",
        public_key_pem=public_pem(key),
    )
    settings = ApiSettings(
        info=info,
        catalog=catalog,
        service=service,
        max_document_bytes=max_document_bytes,
        clock=lambda: FIXED_NOW,
    )
    return Harness(create_app(settings), catalog, service, settings)


@contextmanager
def harness_at(tmp_path: Path, *, max_document_bytes: int = 1024 * 1024) -> Iterator[Harness]:
    h = build_harness(tmp_path / "catalog.db", max_document_bytes=max_document_bytes)
    try:
        yield h
    finally:
        h.catalog.close()


def test_fake_service_signs_verifiable_receipts(tmp_path: Path) -> None:
    """The fake itself must be faithful, or the API tests prove nothing."""
    with harness_at(tmp_path) as harness:
        _check_fake(harness)


def _check_fake(harness: Harness) -> None:
    harness.catalog.create_user("alice", PASSWORD, "Alice", "")

    async def one() -> AsyncIterator[bytes]:
        yield b"hello"

    outcome = asyncio.run(
        harness.service.deposit("alice", "a.txt", one(), size=5, sha256=None, encrypted=False)
    )
    verify_receipt(public_pem(vault_key()), outcome.statement, outcome.signature)
    assert Statement.from_bytes(outcome.statement).sha256 == hashlib.sha256(b"hello").hexdigest()
    assert harness.catalog.get_version("alice", "a.txt").version == outcome.version == 1
