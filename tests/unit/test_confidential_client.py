"""The client's side of confidentiality (``evault.client.confidential``) and the key
certificate format (``evault.protocol.node_api.KeyCertificate``), against real node unwrap
services in process behind a fake gateway session that can misbehave."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nacl.pwhash
import nacl.signing
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from evault.client import confidential
from evault.crypto.unwrap import WrapContext, wrap_file_key
from evault.encoding import TAGS, canonical_json, tagged_hash
from evault.errors import (
    BadGatewayAnswer,
    ConfigError,
    DecryptionError,
    EvaultError,
    FormatError,
    InvalidSignature,
    KeySetupIncomplete,
    NotEnoughPartialUnwraps,
    NoUnwrapKey,
)
from evault.node.service import Fault
from evault.protocol.node_api import KeyCertificate, KeyDeposit, owner_id
from tests.unit.test_confidential_node import NOW, OWNER, VAULT, Cluster, deal

CHEAP = confidential.Argon2idParams(time_cost=1, memory_cost_kib=64, parallelism=1)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class FakeSession:
    """What ``GatewaySession`` returns for the key routes, computed by real node services.

    ``down`` nodes fail, ``garble`` nodes' partials arrive as junk, ``extra_certs`` are
    certificates a malicious gateway adds to every node's listing."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.down: set[int] = set()
        self.garble: set[int] = set()
        self.extra_certs: list[bytes] = []
        self.report_key: str | None = None
        self.unwrap_calls = 0

    def put_keys(self, sealed: dict[int, bytes], certificate: bytes) -> dict[str, Any]:
        stored, failed, keys = {}, {}, set()
        for i, service in self.cluster.services.items():
            if i in self.down:
                failed[str(i)] = "unwrap-key: cannot connect"
                continue
            try:
                r = service.put_key(
                    owner_id(VAULT, OWNER), KeyDeposit(OWNER, sealed[i], certificate)
                )
            except EvaultError as exc:
                failed[str(i)] = str(exc)
            else:
                stored[str(i)] = r.created
                keys.add(r.key)
        key = self.report_key or (keys.pop() if len(keys) == 1 else None)
        return {"key": key, "stored": stored, "failed": failed}

    def keys(self) -> dict[str, Any]:
        certs: dict[str, list[str]] = {}
        for i, service in self.cluster.services.items():
            if i in self.down:
                continue
            try:
                listing = service.list_keys(owner_id(VAULT, OWNER)).certificates
            except EvaultError:
                listing = ()
            certs[str(i)] = [_b64(c) for c in (*listing, *self.extra_certs)]
        return {"certificates": certs, "failed": {}}

    def unwrap(self, signed: bytes) -> dict[str, Any]:
        self.unwrap_calls += 1
        partials, refused, failed = {}, {}, {}
        for i, service in self.cluster.services.items():
            if i in self.down:
                failed[str(i)] = "unwrap: cannot connect"
                continue
            try:
                answer = service.unwrap(signed)
            except EvaultError as exc:
                refused[str(i)] = str(exc)
                continue
            partials[str(i)] = "!!junk" if i in self.garble else _b64(answer.partial)
        return {"partials": partials, "refused": refused, "failed": failed}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    yield c
    c.close()


@pytest.fixture
def session(cluster: Cluster) -> FakeSession:
    return FakeSession(cluster)


# --- the identity key -------------------------------------------------------------------------


def test_identity_is_derived_per_vault_and_user_and_is_plain_ed25519() -> None:
    key = confidential.derive_identity("passphrase!", vault=VAULT, owner=OWNER, params=CHEAP)
    again = confidential.derive_identity("passphrase!", vault=VAULT, owner=OWNER, params=CHEAP)
    assert bytes(key) == bytes(again)
    others = [
        confidential.derive_identity("passphrase?", vault=VAULT, owner=OWNER, params=CHEAP),
        confidential.derive_identity("passphrase!", vault="v2", owner=OWNER, params=CHEAP),
        confidential.derive_identity("passphrase!", vault=VAULT, owner="bob", params=CHEAP),
    ]
    assert len({bytes(k) for k in [key, *others]}) == 4
    # The seed is an RFC 8032 private key: an independent implementation gets the same public key.
    independent = Ed25519PrivateKey.from_private_bytes(bytes(key)).public_key()
    assert independent.public_bytes(Encoding.Raw, PublicFormat.Raw) == bytes(key.verify_key)
    assert (
        confidential.identity_salt(VAULT, OWNER)
        == tagged_hash(TAGS["identity-salt"], canonical_json([VAULT, OWNER]))[:16]
    )
    with pytest.raises(ConfigError, match="at least 8"):
        confidential.derive_identity("short", vault=VAULT, owner=OWNER, params=CHEAP)


def test_identity_derivation_v1_matches_libsodium_and_is_pinned() -> None:
    """The real parameters (Argon2id t=3, 64 MiB, p=1) against libsodium's independent
    Argon2id (crypto_pwhash, which is p=1 and takes a 16-byte salt); pinned, because a change
    would lock every user out of their keys."""
    passphrase = "correct horse battery staple"
    key = confidential.derive_identity(passphrase, vault="v", owner="alice")
    seed = nacl.pwhash.argon2id.kdf(
        32,
        passphrase.encode(),
        confidential.identity_salt("v", "alice"),
        opslimit=confidential.IDENTITY_KDF.time_cost,
        memlimit=confidential.IDENTITY_KDF.memory_cost_kib * 1024,
    )
    assert bytes(key) == seed
    assert bytes(key.verify_key).hex() == (
        "a5bc1ba14edc5ddd44877bd5b8cea826b6b4f77e39deaa693ad90c1eefda27de"
    )


def test_identity_source_asks_once() -> None:
    asked: list[int] = []

    def ask() -> str:
        asked.append(1)
        return "passphrase!"

    source = confidential.IdentitySource(ask, vault=VAULT, owner=OWNER, params=CHEAP)
    assert bytes(source()) == bytes(source())
    assert asked == [1]


# --- certificates -------------------------------------------------------------------------------


def test_certificate_round_trip_and_checks(cluster: Cluster) -> None:
    keys = deal(cluster.seal_public)
    cert = KeyCertificate.from_bytes(keys.certificate)
    cert.verify()
    cert.verify(bytes(keys.identity.verify_key))
    assert cert.to_bytes() == keys.certificate
    assert (cert.vault, cert.owner, cert.nodes, cert.threshold) == (VAULT, OWNER, 5, 4)
    assert cert.key_id == keys.dealing.public_key
    with pytest.raises(InvalidSignature, match="another identity"):
        cert.verify(bytes(nacl.signing.SigningKey.generate().verify_key))
    body = json.loads(keys.certificate[64:])
    body["threshold"] = 3
    body["commitments"] = body["commitments"][:3]
    forged = keys.certificate[:64] + canonical_json(body)
    with pytest.raises(InvalidSignature, match="not signed"):
        KeyCertificate.from_bytes(forged).verify()
    for garbage in (b"", b"x" * 64, keys.certificate[:64] + b"{}", keys.certificate + b" "):
        with pytest.raises(FormatError):
            KeyCertificate.from_bytes(garbage)
    body = json.loads(keys.certificate[64:])
    body["commitments"][1] = "00" * 32  # not a valid element
    with pytest.raises(FormatError, match="commitment"):
        KeyCertificate.from_bytes(keys.certificate[:64] + canonical_json(body))


def test_certificate_file_keeps_verified_certificates(tmp_path: Path, cluster: Cluster) -> None:
    store = confidential.CertificateFile(tmp_path / "k.json")
    assert store.load() == [] and store.find(VAULT, OWNER) is None
    old = KeyCertificate.from_bytes(deal(cluster.seal_public).certificate)
    new = KeyCertificate.sign(
        vault=VAULT,
        owner=OWNER,
        nodes=5,
        commitments=deal(cluster.seal_public).dealing.commitments,
        issued_at=old.issued_at + 10,
        identity=nacl.signing.SigningKey.generate(),
    )
    store.add(old)
    store.add(new)
    store.add(old)
    assert len(store.load()) == 2
    assert store.find(VAULT, OWNER) == new
    assert store.find(VAULT, OWNER, old.key_id) == old
    assert store.find("other", OWNER) is None
    (tmp_path / "k.json").write_text('{"format": "nope"}')
    with pytest.raises(ConfigError):
        store.load()


def test_seal_keys_and_threshold_rules(tmp_path: Path) -> None:
    path = tmp_path / "seal-keys.json"
    path.write_text(json.dumps({"1": "ab" * 32, "2": "cd" * 32}))
    assert confidential.load_seal_keys(path) == {1: b"\xab" * 32, 2: b"\xcd" * 32}
    for bad in ({"1": "ab" * 31}, {"2": "ab" * 32}, {"x": "ab" * 32}, [], {}):
        path.write_text(json.dumps(bad))
        with pytest.raises(ConfigError):
            confidential.load_seal_keys(path)
    with pytest.raises(ConfigError, match="do not exist"):
        confidential.load_seal_keys(tmp_path / "missing.json")
    confidential.check_threshold(3, 5)
    confidential.check_threshold(3, 3)
    for k, n in ((2, 5), (6, 5), (1, 2)):
        with pytest.raises(ConfigError, match="minority"):
            confidential.check_threshold(k, n)


# --- keys init ------------------------------------------------------------------------------------


def _init(session: FakeSession, cluster: Cluster, identity: Any, **kw: Any) -> Any:
    return confidential.init_unwrap_key(
        session,  # type: ignore[arg-type]
        vault=VAULT,
        owner=OWNER,
        threshold=kw.pop("threshold", 4),
        seal_keys=cluster.seal_public,
        identity=identity,
        issued_at=int(NOW),
        **kw,
    )


def test_keys_init_deals_to_every_node(session: FakeSession, cluster: Cluster) -> None:
    identity = nacl.signing.SigningKey.generate()
    setup = _init(session, cluster, identity)
    assert setup.created == {i: True for i in range(1, 6)}
    setup.certificate.verify(bytes(identity.verify_key))
    for service in cluster.services.values():
        assert service.list_keys(owner_id(VAULT, OWNER)).certificates == (
            setup.certificate.to_bytes(),
        )


def test_keys_init_fails_unless_every_node_stored(session: FakeSession, cluster: Cluster) -> None:
    identity = nacl.signing.SigningKey.generate()
    session.down = {3}
    with pytest.raises(KeySetupIncomplete) as info:
        _init(session, cluster, identity)
    assert info.value.stored == 4 and set(info.value.failed) == {3}
    assert "run `evault keys init` again" in str(info.value)
    session.down = set()
    session.report_key = "00" * 32  # the gateway reports another key than the one dealt
    with pytest.raises(BadGatewayAnswer):
        _init(session, cluster, identity, threshold=3)
    # Another identity for the same user is refused by every node that saw the first.
    session.report_key = None
    with pytest.raises(KeySetupIncomplete) as info:
        _init(session, cluster, nacl.signing.SigningKey.generate())
    assert all("another identity" in why for why in info.value.failed.values())
    assert "use the key passphrase you used the first time" in str(info.value)


# --- the unwrap -----------------------------------------------------------------------------------


@pytest.fixture
def registered(session: FakeSession, cluster: Cluster) -> tuple[Any, nacl.signing.SigningKey]:
    identity = nacl.signing.SigningKey.generate()
    return _init(session, cluster, identity).certificate, identity


def _wrapped(cert: KeyCertificate) -> tuple[bytes, Any, WrapContext]:
    file_key = os.urandom(32)
    context = WrapContext(VAULT, OWNER, "doc.txt", confidential.UNVERSIONED)
    return file_key, wrap_file_key(file_key, cert.key_id, context, rng=os.urandom), context


def _unwrap(session: FakeSession, registered: Any, wrapped: Any, context: WrapContext) -> Any:
    cert, identity = registered
    return confidential.unwrap_file_key(
        session,  # type: ignore[arg-type]
        wrapped,
        context,
        certificate=cert,
        identity=identity,
        now=NOW,
    )


def test_unwrap_recovers_the_key_and_names_bad_nodes(session: FakeSession, registered: Any) -> None:
    file_key, wrapped, context = _wrapped(registered[0])
    got = _unwrap(session, registered, wrapped, context)
    assert got.key.file_key == file_key and got.bad == {} and len(got.key.used) == 4
    session.garble = {2}
    got = _unwrap(session, registered, wrapped, context)
    assert got.key.file_key == file_key and set(got.bad) == {2} and 2 not in got.key.used


def test_unwrap_with_a_lying_node(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, faults={1: Fault.LIE})
    try:
        session = FakeSession(cluster)
        identity = nacl.signing.SigningKey.generate()
        cert = _init(session, cluster, identity).certificate
        file_key, wrapped, context = _wrapped(cert)
        got = _unwrap(session, (cert, identity), wrapped, context)
        assert got.key.file_key == file_key
        assert got.bad == {1: "Chaum–Pedersen proof does not verify"}
    finally:
        cluster.close()


def test_too_few_good_answers_name_every_node_and_why(
    session: FakeSession, registered: Any
) -> None:
    _, wrapped, context = _wrapped(registered[0])
    session.down = {1}
    session.garble = {2}
    with pytest.raises(NotEnoughPartialUnwraps) as info:
        _unwrap(session, registered, wrapped, context)
    assert (info.value.have, info.value.need) == (3, 4)
    assert set(info.value.bad) == {1, 2}
    assert "cannot connect" in info.value.bad[1]


def test_a_wrap_for_another_name_does_not_open(session: FakeSession, registered: Any) -> None:
    _, wrapped, _ = _wrapped(registered[0])
    with pytest.raises(DecryptionError):
        _unwrap(session, registered, wrapped, WrapContext(VAULT, OWNER, "other.txt", 0))


def test_each_unwrap_is_a_fresh_request(session: FakeSession, registered: Any) -> None:
    file_key, wrapped, context = _wrapped(registered[0])
    for _ in range(3):  # no "replayed" refusals: a new id and a new blinding every time
        assert _unwrap(session, registered, wrapped, context).key.file_key == file_key
    assert session.unwrap_calls == 3


# --- finding the certificate ----------------------------------------------------------------------


def test_the_resolver_trusts_only_certificates_of_the_identity(
    session: FakeSession, cluster: Cluster, registered: Any, tmp_path: Path
) -> None:
    cert, identity = registered
    # A malicious gateway adds a newer certificate of a key it dealt itself.
    forged = KeyCertificate.sign(
        vault=VAULT,
        owner=OWNER,
        nodes=5,
        commitments=deal(cluster.seal_public).dealing.commitments,
        issued_at=cert.issued_at + 100,
        identity=nacl.signing.SigningKey.generate(),
    )
    session.extra_certs = [forged.to_bytes()]
    found = confidential.fetch_certificates(
        session,  # type: ignore[arg-type]
        vault=VAULT,
        owner=OWNER,
        identity_public_key=bytes(identity.verify_key),
    )
    assert found == [(cert, 5)]
    local = confidential.CertificateFile(tmp_path / "keys.json")
    resolver = confidential.KeyResolver(
        session,  # type: ignore[arg-type]
        VAULT,
        OWNER,
        local,
        lambda: identity,
    )
    assert resolver.current() == cert
    assert local.find(VAULT, OWNER) == cert  # kept after the check
    assert resolver.for_key(cert.key_id) == cert
    wrong = confidential.KeyResolver(
        session,  # type: ignore[arg-type]
        VAULT,
        OWNER,
        confidential.CertificateFile(tmp_path / "empty.json"),
        nacl.signing.SigningKey.generate,
    )
    with pytest.raises(NoUnwrapKey, match="keys init"):
        wrong.current()
    with pytest.raises(NoUnwrapKey, match="passphrase"):
        wrong.for_key(cert.key_id)
