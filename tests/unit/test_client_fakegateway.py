"""A fake gateway for the client's tests: the public API of issue 4 in memory, behind an
``httpx.MockTransport``, signing real receipts (RSA-PSS, SHA-256, salt 32) with a real key.

It can be told to misbehave the ways a client must notice: a gateway that does not answer,
a forged signature, a statement that signs other bytes, a wrong owner, corrupted document
bytes.  The few tests at the bottom check the fake itself, so the client tests rest on it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from urllib.parse import unquote

import httpx
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from evault.protocol.statement import Statement, format_time

API = "/api/v1"


@cache
def vault_private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@cache
def other_private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def public_pem(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def sign(key: rsa.RSAPrivateKey, message: bytes) -> bytes:
    return key.sign(
        message,
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        hashes.SHA256(),
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def make_receipt(
    *,
    owner: str = "alice",
    name: str = "doc.txt",
    version: int = 1,
    data: bytes = b"hello",
    key: rsa.RSAPrivateKey | None = None,
    vault: str = "ab" * 16,
    when: datetime | None = None,
) -> tuple[bytes, bytes]:
    """(statement bytes, signature) for ``data``."""
    statement = Statement(
        vault=vault,
        owner=owner,
        name=name,
        version=version,
        size=len(data),
        sha256=hashlib.sha256(data).hexdigest(),
        fv_hash="0" * 64,
        fingerprint_scheme="sha256-merkle/v1",
        n=5,
        m=3,
        codec="rs-isal-cauchy/v1",
        segment_bytes=1 << 20,
        encrypted=False,
        deposited_at=format_time(when or datetime(2026, 11, 24, 12, 0, tzinfo=UTC)),
    ).to_bytes()
    return statement, sign(key or vault_private_key(), statement)


@dataclass
class StoredVersion:
    version: int
    data: bytes
    statement: bytes
    signature: bytes
    deposited_at: datetime


@dataclass
class FakeGateway:
    """The public API in memory.  ``dead`` holds host:port strings that refuse connections."""

    vault_id: str = "ab" * 16
    dead: set[str] = field(default_factory=set)
    hits: dict[str, int] = field(default_factory=dict)
    users: dict[str, str] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)
    docs: dict[tuple[str, str], list[StoredVersion]] = field(default_factory=dict)
    deleted: list[tuple[str, int]] = field(default_factory=list)
    deposits: int = 0
    clock: datetime = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    # Misbehaviours.
    forge_signature: bool = False
    sign_wrong_sha: bool = False
    sign_other_owner: bool = False
    announce_other_key: bool = False
    corrupt_bytes: bool = False
    truncate_bytes: bool = False

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    # --- helpers --------------------------------------------------------------------------

    def _error(self, status: int, code: str, message: str) -> httpx.Response:
        return httpx.Response(status, json={"error": {"code": code, "message": message}})

    def _owner(self, request: httpx.Request) -> str | None:
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer "):
            return None
        return self.tokens.get(auth.removeprefix("Bearer "))

    def _tick(self) -> datetime:
        self.clock += timedelta(minutes=1)
        return self.clock

    def versions_of(self, owner: str, name: str) -> list[int]:
        return [v.version for v in self.docs.get((owner, name), [])]

    # --- the API ----------------------------------------------------------------------------

    def handle(self, request: httpx.Request) -> httpx.Response:
        host = f"{request.url.host}:{request.url.port}"
        self.hits[host] = self.hits.get(host, 0) + 1
        if host in self.dead:
            raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        path = unquote(request.url.path)
        method = request.method
        if path == f"{API}/vault" and method == "GET":
            key = other_private_key() if self.announce_other_key else vault_private_key()
            return httpx.Response(
                200,
                json={
                    "vault_id": self.vault_id,
                    "n": 5,
                    "m": 3,
                    "k": 4,
                    "t": 1,
                    "codec": "rs-isal-cauchy/v1",
                    "segment_bytes": 1 << 20,
                    "fingerprint_scheme": "sha256-merkle/v1",
                    "public_key_pem": public_pem(key).decode(),
                },
            )
        if path == f"{API}/users" and method == "POST":
            body = json.loads(request.read())
            user = body["user_id"].lower()
            if user in self.users:
                return self._error(409, "user_exists", f"user id {user!r} is already taken")
            self.users[user] = body["password"]
            return httpx.Response(201, json={"user_id": user})
        if path == f"{API}/tokens" and method == "POST":
            body = json.loads(request.read())
            user = body["user_id"].lower()
            if self.users.get(user) != body["password"]:
                return self._error(401, "auth_failed", "unknown user id or wrong password")
            token = secrets.token_urlsafe(16)
            self.tokens[token] = user
            return httpx.Response(
                201,
                json={"token": token, "token_type": "bearer", "expires_at": "2026-11-25T12:00:00Z"},
            )
        owner = self._owner(request)
        if owner is None:  # as the gateway answers a refused token (RFC 6750 §3.1)
            refused = self._error(401, "auth_failed", "token is invalid, expired or revoked")
            refused.headers["WWW-Authenticate"] = 'Bearer realm="evault", error="invalid_token"'
            return refused
        if path == f"{API}/password" and method == "PUT":
            body = json.loads(request.read())
            if self.users.get(owner) != body["password"]:
                return self._error(401, "auth_failed", "unknown user id or wrong password")
            if len(body["new_password"]) < 8:
                return self._error(400, "bad_password", "it must be at least 8 characters long")
            self.users[owner] = body["new_password"]
            self.tokens = {t: u for t, u in self.tokens.items() if u != owner}
            token = secrets.token_urlsafe(16)
            self.tokens[token] = owner
            return httpx.Response(
                200,
                json={"token": token, "token_type": "bearer", "expires_at": "2026-11-25T12:00:00Z"},
            )
        if path == f"{API}/tokens/current" and method == "DELETE":
            self.tokens.pop(request.headers["authorization"].removeprefix("Bearer "), None)
            return httpx.Response(204)
        if path == f"{API}/documents" and method == "GET":
            out = []
            for (o, name), versions in sorted(self.docs.items()):
                if o != owner or not versions:
                    continue
                latest = versions[-1]
                out.append(
                    {
                        "name": name,
                        "latest_version": latest.version,
                        "size": len(latest.data),
                        "sha256": hashlib.sha256(latest.data).hexdigest(),
                        "deposited_at": format_time(latest.deposited_at),
                        "version_count": len(versions),
                    }
                )
            return httpx.Response(200, json={"documents": out})
        if not path.startswith(f"{API}/documents/"):
            return self._error(404, "unknown_path", "no such path")
        rest = path.removeprefix(f"{API}/documents/")
        version_param = request.url.params.get("version")
        version = int(version_param) if version_param else None
        if rest.endswith("/receipt") and method == "GET":
            found = self._find(owner, rest.removesuffix("/receipt"), version)
            if isinstance(found, httpx.Response):
                return found
            return httpx.Response(
                200,
                json={
                    "name": rest.removesuffix("/receipt"),
                    "version": found.version,
                    "size": len(found.data),
                    "sha256": hashlib.sha256(found.data).hexdigest(),
                    "statement": b64(found.statement),
                    "signature": b64(found.signature),
                },
            )
        if rest.endswith("/versions") and method == "GET":
            name = rest.removesuffix("/versions")
            versions = self.docs.get((owner, name))
            if not versions:
                return self._error(404, "not_found", f"no document {name!r}")
            return httpx.Response(
                200,
                json={
                    "name": name,
                    "versions": [
                        {
                            "version": v.version,
                            "size": len(v.data),
                            "sha256": hashlib.sha256(v.data).hexdigest(),
                            "deposited_at": format_time(v.deposited_at),
                            "encrypted": False,
                        }
                        for v in versions
                    ],
                },
            )
        name = rest
        if method == "PUT":
            return self._deposit(request, owner, name)
        if method == "GET":
            found = self._find(owner, name, version)
            if isinstance(found, httpx.Response):
                return found
            data = found.data
            if self.corrupt_bytes and data:
                data = bytes([data[0] ^ 1]) + data[1:]
            if self.truncate_bytes:
                data = data[: len(data) // 2]
            return httpx.Response(
                200,
                content=data,
                headers={
                    "Evault-Version": str(found.version),
                    "Evault-Sha256": hashlib.sha256(found.data).hexdigest(),
                },
            )
        if method == "DELETE":
            versions = self.docs.get((owner, name), [])
            keep = [v for v in versions if v.version != version]
            if len(keep) == len(versions):
                return self._error(404, "not_found", f"no version {version} of {name!r}")
            self.docs[(owner, name)] = keep
            self.deleted.append((name, int(version or 0)))
            return httpx.Response(204)
        return self._error(405, "method_not_allowed", "method not allowed")

    def _find(self, owner: str, name: str, version: int | None) -> StoredVersion | httpx.Response:
        versions = self.docs.get((owner, name), [])
        if not versions:
            return self._error(404, "not_found", f"no document {name!r}")
        if version is None:
            return versions[-1]
        for v in versions:
            if v.version == version:
                return v
        return self._error(404, "not_found", f"no version {version} of {name!r}")

    def _deposit(self, request: httpx.Request, owner: str, name: str) -> httpx.Response:
        data = request.read()
        sha = hashlib.sha256(data).hexdigest()
        claimed = request.headers.get("evault-sha256")
        if claimed is not None and claimed.lower() != sha:
            return self._error(
                409,
                "digest_mismatch",
                f"the document hashes to {sha}, not to the claimed {claimed}",
            )
        versions = self.docs.setdefault((owner, name), [])
        version = (max(v.version for v in versions) if versions else 0) + 1
        when = self._tick()
        signed_data = data
        if self.sign_wrong_sha:  # same size, other content
            signed_data = bytes([data[0] ^ 1]) + data[1:] if data else data
        statement, signature = make_receipt(
            owner="mallory" if self.sign_other_owner else owner,
            name=name,
            version=version,
            data=signed_data,
            vault=self.vault_id,
            when=when,
        )
        if self.forge_signature:
            signature = bytes([signature[0] ^ 0xFF]) + signature[1:]
        versions.append(StoredVersion(version, data, statement, signature, when))
        self.deposits += 1
        return httpx.Response(
            201,
            json={
                "name": name,
                "version": version,
                "size": len(data),
                "sha256": sha,
                "receipt": {"statement": b64(statement), "signature": b64(signature)},
                "faulty_nodes": {},
                "failed_nodes": {},
            },
        )


def write_client_config(directory: Path, gateways: list[str]) -> Path:
    """A client.toml like `evault up` writes, pointing at the fake vault's key."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vault-public.pem").write_bytes(public_pem(vault_private_key()))
    (directory / "ca.pem").write_text("unused with a mock transport\n")
    path = directory / "client.toml"
    urls = ", ".join(f'"{u}"' for u in gateways)
    path.write_text(
        f'gateways = [{urls}]\nca_cert = "ca.pem"\nvault_public_key = "vault-public.pem"\n'
    )
    return path


# --- the fake itself ---------------------------------------------------------------------------


def test_fake_deposit_signs_a_statement_that_verifies_with_the_vault_key() -> None:
    fake = FakeGateway()
    fake.users["alice"] = "pw"
    fake.tokens["t"] = "alice"
    client = httpx.Client(transport=fake.transport(), base_url="https://gw:1")
    r = client.put(
        "/api/v1/documents/a/b.txt", content=b"data", headers={"Authorization": "Bearer t"}
    )
    assert r.status_code == 201
    body = r.json()
    statement = base64.b64decode(body["receipt"]["statement"])
    signature = base64.b64decode(body["receipt"]["signature"])
    vault_private_key().public_key().verify(
        signature,
        statement,
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        hashes.SHA256(),
    )
    assert Statement.from_bytes(statement).name == "a/b.txt"
    assert (
        client.get("/api/v1/documents/a/b.txt", headers={"Authorization": "Bearer t"}).content
        == b"data"
    )


def test_fake_refuses_a_wrong_digest_and_a_missing_token() -> None:
    fake = FakeGateway()
    fake.tokens["t"] = "alice"
    client = httpx.Client(transport=fake.transport(), base_url="https://gw:1")
    r = client.put(
        "/api/v1/documents/x",
        content=b"data",
        headers={"Authorization": "Bearer t", "Evault-Sha256": "0" * 64},
    )
    assert r.status_code == 409 and r.json()["error"]["code"] == "digest_mismatch"
    assert client.get("/api/v1/documents").status_code == 401
