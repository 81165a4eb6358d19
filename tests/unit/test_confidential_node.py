"""The node's part in confidentiality, in process: the unwrap-key store, the rules of
``evault.node.unwrap``, its HTTP routes (spec: "Unwrap keys and partial unwraps") through the
gateway's node client, and the gateway's relays (``evault.gateway.key_relay``)."""

from __future__ import annotations

import os
import sqlite3
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import nacl.public
import nacl.signing
import pytest

from evault.config import ClusterParams
from evault.crypto.feldman import Dealing, deal_unwrap_key, seal_dealing
from evault.crypto.group import scalar_to_bytes
from evault.crypto.unwrap import (
    PartialUnwrap,
    WrapContext,
    blind,
    make_unwrap_request,
    recover_file_key,
    sign_unwrap_request,
    wrap_file_key,
)
from evault.errors import (
    ConfigError,
    KeyConflict,
    NodeRejected,
    StoreMismatch,
    UnwrapRequestRejected,
)
from evault.gateway import key_relay
from evault.ida import DEFAULT_CODEC_ID
from evault.ida.fingerprint import FINGERPRINT_SCHEME
from evault.node import main as node_main
from evault.node.app import create_app
from evault.node.service import Fault, NodeService, NodeSettings
from evault.node.unwrap import UnwrapService, load_seal_key
from evault.protocol.node_api import (
    KeyCertificate,
    KeyDeposit,
    WireShare,
    owner_id,
)
from evault.store import DiskSliceStore
from evault.store.keys import KeyShareStore, StoredKey
from evault.transport.nodes import NodeClient

pytestmark = pytest.mark.anyio

VAULT = "7c" * 16
N, K = 5, 4
OWNER = "alice"
NOW = 1_800_000_000.0


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class _NoSigner:
    def sign(self, message: bytes) -> WireShare:  # pragma: no cover - no deposits here
        raise AssertionError("no deposit in these tests")


@dataclass
class Keys:
    identity: nacl.signing.SigningKey
    dealing: Dealing
    sealed: dict[int, bytes]
    certificate: bytes


def deal(
    seal_public: dict[int, bytes],
    *,
    owner: str = OWNER,
    identity: nacl.signing.SigningKey | None = None,
    threshold: int = K,
) -> Keys:
    identity = identity or nacl.signing.SigningKey.generate()
    dealing = deal_unwrap_key(threshold=threshold, nodes=N, rng=os.urandom)
    sealed = seal_dealing(
        dealing, vault=VAULT, owner=owner, node_public_keys=seal_public, identity=identity
    )
    cert = KeyCertificate.sign(
        vault=VAULT,
        owner=owner,
        nodes=N,
        commitments=dealing.commitments,
        issued_at=int(NOW),
        identity=identity,
    )
    return Keys(identity, dealing, sealed, cert.to_bytes())


class Cluster:
    """Five nodes' unwrap services on their own key stores, each behind the real node app."""

    def __init__(self, root: Path, faults: dict[int, Fault] | None = None) -> None:
        self.root = root
        self.now = NOW
        self.seal = {i: nacl.public.PrivateKey.generate() for i in range(1, N + 1)}
        self.faults = faults or {}
        self.services: dict[int, UnwrapService] = {}
        self.stores: list[Any] = []
        self.apps: dict[int, Any] = {}
        for i in range(1, N + 1):
            self.services[i] = self.make_service(i)
            slices = DiskSliceStore(root / f"n{i}", vault=VAULT, slice_index=i - 1)
            self.stores.append(slices)
            settings = NodeSettings(
                index=i,
                vault=VAULT,
                cluster=ClusterParams(N, 3, K, DEFAULT_CODEC_ID, 4096, FINGERPRINT_SCHEME),
                max_object_bytes=1 << 20,
            )
            node = NodeService(settings, slices, _NoSigner(), clock=lambda: None)  # type: ignore[arg-type,return-value]
            self.apps[i] = create_app(
                node, require_client_cn=None, unwrap=self.services[i], traffic_dir=root / "t"
            )

    def make_service(self, i: int) -> UnwrapService:
        store = KeyShareStore(self.root / f"n{i}", vault=VAULT, node=i, max_keys_per_owner=3)
        self.stores.append(store)
        return UnwrapService(
            vault=VAULT,
            index=i,
            nodes=N,
            store=store,
            seal_key=self.seal[i],
            clock=lambda: self.now,
            fault=self.faults.get(i),
        )

    @property
    def seal_public(self) -> dict[int, bytes]:
        return {i: bytes(k.public_key) for i, k in self.seal.items()}

    def close(self) -> None:
        for store in self.stores:
            store.close()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(tmp_path)
    yield c
    c.close()


@pytest.fixture
async def clients(cluster: Cluster) -> AsyncIterator[dict[int, NodeClient]]:
    https = {
        i: httpx.AsyncClient(transport=httpx.ASGITransport(app=app))
        for i, app in cluster.apps.items()
    }
    yield {i: NodeClient(i, f"http://node-{i}", http) for i, http in https.items()}
    for http in https.values():
        await http.aclose()


# --- the key store -------------------------------------------------------------------------------


def _stored(
    identity: bytes, key_id: bytes, owner: str = OWNER, at: str = "2026-01-01T00:00:00Z"
) -> StoredKey:
    return StoredKey(owner, key_id, identity, b"sealed", b"cert", at)


def test_store_keeps_one_identity_per_owner_and_never_replaces_a_key(tmp_path: Path) -> None:
    store = KeyShareStore(tmp_path, vault=VAULT, node=2, max_keys_per_owner=2)
    oid = owner_id(VAULT, OWNER)
    me, other = b"\x01" * 32, b"\x02" * 32
    assert store.put(_stored(me, b"\xaa" * 32), owner_id=oid) is True
    assert store.put(_stored(me, b"\xaa" * 32), owner_id=oid) is False
    with pytest.raises(KeyConflict, match="another identity"):
        store.put(_stored(other, b"\xbb" * 32), owner_id=oid)
    assert store.put(_stored(me, b"\xbb" * 32, at="2026-01-02T00:00:00Z"), owner_id=oid)
    with pytest.raises(KeyConflict, match="already has 2"):
        store.put(_stored(me, b"\xcc" * 32), owner_id=oid)
    # Another owner is independent.
    assert store.put(_stored(other, b"\xaa" * 32, owner="bob"), owner_id=owner_id(VAULT, "bob"))
    assert [k.key_id for k in store.list_by_owner_id(oid)] == [b"\xaa" * 32, b"\xbb" * 32]
    got = store.get(OWNER, b"\xbb" * 32)
    assert got is not None and got.identity == me
    assert store.get(OWNER, b"\xcc" * 32) is None
    assert store.count() == 3
    store.close()
    # Durable, and bound to its vault and node.
    again = KeyShareStore(tmp_path, vault=VAULT, node=2)
    assert again.count() == 3
    again.close()
    with pytest.raises(StoreMismatch):
        KeyShareStore(tmp_path, vault=VAULT, node=3)


def test_replay_cache_remembers_until_expiry_and_across_reopen(tmp_path: Path) -> None:
    store = KeyShareStore(tmp_path, vault=VAULT, node=1)
    rid = os.urandom(16)
    assert store.seen_before(rid, expires_at=100.0, now=0.0) is False
    assert store.seen_before(rid, expires_at=100.0, now=50.0) is True
    store.close()
    store = KeyShareStore(tmp_path, vault=VAULT, node=1)
    assert store.seen_before(rid, expires_at=200.0, now=99.0) is True
    # Expired ids are purged; by then the request itself would be refused as stale.
    assert store.seen_before(rid, expires_at=300.0, now=150.0) is False
    store.close()


# --- storing shares through the node app ---------------------------------------------------------


async def test_shares_are_checked_and_stored_sealed(
    cluster: Cluster, clients: dict[int, NodeClient], tmp_path: Path
) -> None:
    keys = deal(cluster.seal_public)
    oid = owner_id(VAULT, OWNER)
    outcome = await key_relay.put_unwrap_key(
        clients,
        vault=VAULT,
        owner=OWNER,
        sealed=keys.sealed,
        certificate=keys.certificate,
        timeout_s=5,
    )
    assert outcome.failed == {} and outcome.stored == {i: True for i in range(1, N + 1)}
    assert outcome.key == keys.dealing.public_key.hex()
    again = await key_relay.put_unwrap_key(
        clients,
        vault=VAULT,
        owner=OWNER,
        sealed=keys.sealed,
        certificate=keys.certificate,
        timeout_s=5,
    )
    assert again.stored == {i: False for i in range(1, N + 1)}
    # At rest the share is still sealed: its scalar appears in no node file in any form.
    for share in keys.dealing.shares:
        raw = scalar_to_bytes(share.value)
        for path in (tmp_path / f"n{share.index}").rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert raw not in data and raw.hex().encode() not in data
    listing = await clients[3].unwrap_keys(oid)
    assert listing.node == 3 and listing.certificates == (keys.certificate,)
    with pytest.raises(NodeRejected) as info:
        await clients[3].unwrap_keys(owner_id(VAULT, "nobody"))
    assert (info.value.status, info.value.node_code) == (404, "not_found")


@pytest.mark.parametrize(
    "break_it, code, words",
    [
        ("path", "bad_request", "owner id in the path"),
        ("box", "bad_request", "does not open"),
        ("cert", "bad_request", "does not describe"),
        ("cert-signature", "bad_request", "not signed"),
        ("other-node", "bad_request", "addressed to node"),
    ],
)
async def test_a_node_refuses_a_bad_share(
    cluster: Cluster, clients: dict[int, NodeClient], break_it: str, code: str, words: str
) -> None:
    keys = deal(cluster.seal_public)
    oid, sealed, cert = owner_id(VAULT, OWNER), keys.sealed[2], keys.certificate
    if break_it == "path":
        oid = owner_id(VAULT, "mallory")
    elif break_it == "box":
        sealed = sealed[:-1] + bytes([sealed[-1] ^ 1])
    elif break_it == "cert":
        cert = deal(cluster.seal_public, identity=keys.identity).certificate
    elif break_it == "cert-signature":
        cert = bytes([cert[0] ^ 1]) + cert[1:]
    elif break_it == "other-node":
        sealed = deal(
            {**cluster.seal_public, 3: cluster.seal_public[2]}, identity=keys.identity
        ).sealed[3]
    with pytest.raises(NodeRejected) as info:
        await clients[2].put_unwrap_key(oid, KeyDeposit(OWNER, sealed, cert))
    assert info.value.node_code == code and words in info.value.node_message


async def test_another_identity_is_refused_after_the_first(
    cluster: Cluster, clients: dict[int, NodeClient]
) -> None:
    first = deal(cluster.seal_public)
    await clients[1].put_unwrap_key(
        owner_id(VAULT, OWNER), KeyDeposit(OWNER, first.sealed[1], first.certificate)
    )
    second = deal(cluster.seal_public)  # same owner, another identity (say, the gateway's)
    with pytest.raises(NodeRejected) as info:
        await clients[1].put_unwrap_key(
            owner_id(VAULT, OWNER), KeyDeposit(OWNER, second.sealed[1], second.certificate)
        )
    assert (info.value.status, info.value.node_code) == (409, "key_conflict")
    # The same identity may add a newer key.
    third = deal(cluster.seal_public, identity=first.identity)
    result = await clients[1].put_unwrap_key(
        owner_id(VAULT, OWNER), KeyDeposit(OWNER, third.sealed[1], third.certificate)
    )
    assert result.created


# --- partial unwraps ---------------------------------------------------------------------------


async def _registered(cluster: Cluster, clients: dict[int, NodeClient]) -> Keys:
    keys = deal(cluster.seal_public)
    outcome = await key_relay.put_unwrap_key(
        clients,
        vault=VAULT,
        owner=OWNER,
        sealed=keys.sealed,
        certificate=keys.certificate,
        timeout_s=5,
    )
    assert not outcome.failed
    return keys


def _request(
    keys: Keys, *, issued_at: float = NOW, signer: nacl.signing.SigningKey | None = None
) -> Any:
    file_key = os.urandom(32)
    context = WrapContext(VAULT, OWNER, "doc", 0)
    wrapped = wrap_file_key(file_key, keys.dealing.public_key, context, rng=os.urandom)
    b = blind(wrapped, rng=os.urandom)
    request = make_unwrap_request(
        b, vault=VAULT, owner=OWNER, issued_at=int(issued_at), rng=os.urandom
    )
    signed = sign_unwrap_request(request, signer or keys.identity)
    return file_key, wrapped, context, b, request, signed


async def test_unwrap_through_the_relay_recovers_the_key(
    cluster: Cluster, clients: dict[int, NodeClient]
) -> None:
    keys = await _registered(cluster, clients)
    file_key, wrapped, context, b, request, signed = _request(keys)
    outcome = await key_relay.unwrap(
        clients, vault=VAULT, owner=OWNER, signed_request=signed, timeout_s=5
    )
    assert outcome.refused == {} and outcome.failed == {} and len(outcome.partials) == N
    partials = [PartialUnwrap.from_bytes(p, node=i) for i, p in outcome.partials.items()]
    got = recover_file_key(
        wrapped,
        context,
        blinding=b,
        request=request,
        commitments=keys.dealing.commitments,
        partials=partials,
    )
    assert got.file_key == file_key and got.bad == {}

    # Replayed: every node refuses, and says why.
    replay = await key_relay.unwrap(
        clients, vault=VAULT, owner=OWNER, signed_request=signed, timeout_s=5
    )
    assert replay.partials == {} and set(replay.refused) == set(range(1, N + 1))
    assert all("(replayed)" in why for why in replay.refused.values())


async def test_nodes_refuse_unsigned_stale_and_unknown_requests(
    cluster: Cluster, clients: dict[int, NodeClient]
) -> None:
    keys = await _registered(cluster, clients)
    cases = {
        "bad_signature": _request(keys, signer=nacl.signing.SigningKey.generate())[-1],
        "stale": _request(keys, issued_at=NOW - 301)[-1],
        "from_future": _request(keys, issued_at=NOW + 61)[-1],
    }
    for reason, signed in cases.items():
        with pytest.raises(NodeRejected) as info:
            await clients[1].unwrap(signed)
        assert (info.value.status, info.value.node_code) == (403, "unwrap_refused")
        assert f"({reason})" in info.value.node_message
    unknown = deal(cluster.seal_public, identity=keys.identity)  # dealt, never registered
    with pytest.raises(NodeRejected) as info:
        await clients[1].unwrap(_request(unknown)[-1])
    assert (info.value.status, info.value.node_code) == (404, "not_found")
    with pytest.raises(NodeRejected) as info:
        await clients[1].unwrap(b"\x00" * 80)
    assert info.value.node_code == "unwrap_refused" and "malformed" in info.value.node_message


async def test_the_relay_refuses_requests_for_someone_else(
    cluster: Cluster, clients: dict[int, NodeClient]
) -> None:
    keys = await _registered(cluster, clients)
    signed = _request(keys)[-1]
    with pytest.raises(UnwrapRequestRejected) as info:
        await key_relay.unwrap(
            clients, vault=VAULT, owner="bob", signed_request=signed, timeout_s=5
        )
    assert info.value.reason == "wrong_owner"
    with pytest.raises(UnwrapRequestRejected) as info:
        await key_relay.unwrap(
            clients, vault="other", owner=OWNER, signed_request=signed, timeout_s=5
        )
    assert info.value.reason == "wrong_vault"


async def test_a_replay_window_does_not_reopen_when_a_node_restarts(
    cluster: Cluster, clients: dict[int, NodeClient]
) -> None:
    keys = await _registered(cluster, clients)
    signed = _request(keys)[-1]
    cluster.services[1].unwrap(signed)
    restarted = cluster.make_service(1)  # a new process: empty share cache, same key store
    with pytest.raises(UnwrapRequestRejected, match="replayed"):
        restarted.unwrap(signed)


async def test_a_lying_node_is_caught_by_its_proof(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, faults={5: Fault.LIE})
    try:
        services = cluster.services
        keys = deal(cluster.seal_public)
        for i, service in services.items():
            service.put_key(
                owner_id(VAULT, OWNER), KeyDeposit(OWNER, keys.sealed[i], keys.certificate)
            )
        file_key, wrapped, context, b, request, signed = _request(keys)
        partials = [
            PartialUnwrap.from_bytes(services[i].unwrap(signed).partial, node=i) for i in services
        ]
        got = recover_file_key(
            wrapped,
            context,
            blinding=b,
            request=request,
            commitments=keys.dealing.commitments,
            partials=partials,
        )
        assert got.file_key == file_key and set(got.bad) == {5} and 5 not in got.used
    finally:
        cluster.close()


async def test_the_traffic_recorder_writes_every_body(
    cluster: Cluster, clients: dict[int, NodeClient]
) -> None:
    keys = await _registered(cluster, clients)
    files = sorted((cluster.root / "t").iterdir())
    requests = [p.read_bytes() for p in files if p.suffix == ".request"]
    responses = [p.read_bytes() for p in files if p.suffix == ".response"]
    assert any(b"PUT /v1/unwrap-keys/" in r and b'"sealed"' in r for r in requests)
    assert any(keys.dealing.public_key.hex().encode() in r for r in responses)


# --- start-up pieces ---------------------------------------------------------------------------


def test_the_traffic_recorder_is_for_tests_only(tmp_path: Path) -> None:
    assert node_main.traffic_dir({}) is None
    with pytest.raises(ConfigError, match="tests only"):
        node_main.traffic_dir({node_main.TRAFFIC_LOG_ENV: str(tmp_path)})
    assert (
        node_main.traffic_dir(
            {node_main.TRAFFIC_LOG_ENV: str(tmp_path), node_main.ALLOW_FAULTS_ENV: "1"}
        )
        == tmp_path
    )


def test_seal_key_parsing() -> None:
    key = nacl.public.PrivateKey.generate()
    assert bytes(load_seal_key(bytes(key).hex() + "\n")) == bytes(key)
    for bad in ("", "zz", "00" * 31):
        with pytest.raises(ValueError):
            load_seal_key(bad)


def test_a_key_store_file_is_sqlite_with_wal(tmp_path: Path) -> None:
    KeyShareStore(tmp_path, vault=VAULT, node=1).close()
    db = sqlite3.connect(tmp_path / "unwrap-keys.sqlite3")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert dict(db.execute("SELECT key, value FROM meta").fetchall()) == {
        "format": "1",
        "vault": VAULT,
        "node": "1",
    }
    db.close()
