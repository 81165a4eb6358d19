"""VaultService with real threshold RSA receipts (Shoup, DESIGN §4), against fake nodes.

Keys come from the session fixtures in tests/crypto_fixtures.py (one 2048-bit prime pair).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import random
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding

from evault.config import GatewayConfig, NodeEndpoint
from evault.crypto import keyfiles
from evault.crypto.threshold_rsa import sign_share
from evault.errors import ConfigError, DepositFailed, InvalidSignature, NodeUnreachable
from evault.gateway.receipts import ThresholdCombiner
from evault.gateway.service import VaultService
from evault.protocol.node_api import WireShare
from tests.crypto_fixtures import VaultKey
from tests.unit.test_gateway_service import (
    VAULT,
    FakeCatalog,
    Harness,
    cluster,
    document,
    share_requests,
    signers_of,
)
from tests.unit.test_transport_nodes import make_pki


def real_harness(key: VaultKey, n: int, m: int, k: int) -> Harness:
    h = Harness(cluster(n, m, k), combiner=ThresholdCombiner(key.public))
    rng = random.Random(7)

    def signer(index: int, statement: bytes) -> WireShare:
        share = sign_share(key.shares[index - 1], key.public, statement, rng=rng)
        return WireShare(share.index, share.value, share.proof_c, share.proof_z)

    for node in h.nodes.values():
        node.sign = signer
    return h


def pss_verifies(key: VaultKey, statement: bytes, signature: bytes) -> bool:
    """Check with `cryptography` alone, as a client would (no evault code)."""
    try:
        key.public.to_cryptography().verify(
            signature,
            statement,
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
            hashes.SHA256(),
        )
    except Exception:
        return False
    return True


def test_receipt_verifies_and_a_bad_share_is_named(vault_key_2048: VaultKey) -> None:
    h = real_harness(vault_key_2048, 5, 3, 4)
    h.nodes[2].faults.bad_share = True
    data = document(3000)
    outcome = h.deposit(data)
    assert pss_verifies(vault_key_2048, outcome.statement, outcome.signature)
    assert set(outcome.faulty) == {2} and "signature share" in outcome.faulty[2]
    got, _ = h.retrieve()  # the stored receipt is verified again before the rebuild
    assert got == data


def test_paper_setting_needs_every_share(paper_key_2048: VaultKey) -> None:
    h = real_harness(paper_key_2048, 3, 2, 3)
    outcome = h.deposit(document(500), name="ok.bin")
    assert pss_verifies(paper_key_2048, outcome.statement, outcome.signature)
    h.nodes[3].faults.bad_share = True
    with pytest.raises(DepositFailed) as info:
        h.deposit(document(500), name="refused.bin")
    assert set(info.value.failed) == {3}
    assert h.catalog.state("alice", "refused.bin", 1) == "failed"


def test_tampered_catalog_receipt_is_refused(vault_key_2048: VaultKey) -> None:
    h = real_harness(vault_key_2048, 5, 3, 4)
    h.deposit(document(100))
    row = h.catalog.versions[("alice", "doc.bin", 1)]
    row["signature"] = bytes(len(row["signature"]))
    with pytest.raises(InvalidSignature):
        h.retrieve()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _gateway_config(tmp_path: Path, pki_paths: dict[str, Path], key: VaultKey) -> GatewayConfig:
    keyfiles.write_threshold_public(tmp_path / "threshold.json", key.public)
    keyfiles.write_public_key(tmp_path / "vault-public.pem", key.public)
    c = cluster(5, 3, 4)
    return GatewayConfig(
        path=tmp_path / "gateway.toml",
        vault=VAULT,
        host="127.0.0.1",
        port=0,
        database_url="sqlite:///unused",
        max_document_bytes=1 << 20,
        node_timeout_s=2.0,
        workers=1,
        cluster=c,
        ca_cert=pki_paths["ca"],
        client_cert=pki_paths["gateway_cert"],
        client_key=pki_paths["gateway_key"],
        server_cert=pki_paths["gateway_cert"],
        server_key=pki_paths["gateway_key"],
        vault_public_key=tmp_path / "vault-public.pem",
        threshold_public=tmp_path / "threshold.json",
        nodes=tuple(NodeEndpoint(i, "https://127.0.0.1:9", f"node-{i}") for i in range(1, c.n + 1)),
    )


def test_built_from_the_gateway_config(
    tmp_path: Path, pki: dict[str, Path], vault_key_2048: VaultKey
) -> None:
    config = _gateway_config(tmp_path, pki, vault_key_2048)
    service = VaultService(config, FakeCatalog(), clock=lambda: dt.datetime.now(dt.UTC))
    assert sorted(service.clients) == [1, 2, 3, 4, 5]
    assert service.clients[3].tls_name == "node-3"
    assert service.node_timeout_s == 2.0

    async def probe() -> dict[int, str]:
        try:
            return await service.health()
        finally:
            await service.aclose()

    health = asyncio.run(probe())
    assert all("cannot connect" in why for why in health.values())
    assert NodeUnreachable.code == "node_unreachable"


def test_config_with_a_key_for_another_quorum_is_refused(
    tmp_path: Path, pki: dict[str, Path], vault_key_2048: VaultKey
) -> None:
    config = _gateway_config(tmp_path, pki, vault_key_2048)
    config = replace(config, cluster=replace(config.cluster, k=5))
    with pytest.raises(ConfigError, match="4-of-5 key"):
        VaultService(config, FakeCatalog())


def unproven_harness(key: VaultKey, n: int, m: int, k: int) -> Harness:
    """Nodes as real ones answer: deposit answers carry the share alone, GET .../share gives
    it with its proof (proofs on demand)."""
    h = real_harness(key, n, m, k)
    for node in h.nodes.values():
        node.unproven_shares = True
    return h


def test_honest_unproven_shares_combine_without_asking_for_proofs(
    vault_key_2048: VaultKey,
) -> None:
    h = unproven_harness(vault_key_2048, 5, 3, 4)
    outcome = h.deposit(document(3000))
    assert pss_verifies(vault_key_2048, outcome.statement, outcome.signature)
    assert share_requests(h) == []
    assert outcome.faulty == {} and outcome.failed == {}


def test_a_bad_unproven_share_gets_proofs_asked_for_and_its_node_named(
    vault_key_2048: VaultKey,
) -> None:
    h = unproven_harness(vault_key_2048, 5, 3, 4)
    liar = signers_of()[1]  # asked to sign: the optimistic combination fails
    h.nodes[liar].faults.bad_share = True
    data = document(3000)
    outcome = h.deposit(data)
    assert pss_verifies(vault_key_2048, outcome.statement, outcome.signature)
    assert share_requests(h) == [1, 2, 3, 4, 5]  # the k signers' proofs, the fifth's share
    assert set(outcome.faulty) == {liar} and "proof of correctness" in outcome.faulty[liar]
    got, _ = h.retrieve()
    assert got == data


def test_an_unproven_share_still_fills_a_gap_when_its_proof_does_not_come(
    vault_key_2048: VaultKey,
) -> None:
    """One signer lies, another cannot be asked for its proof: the three proven good shares
    (two signers' and the fifth node's) and the silent signer's unproven one make a signature
    that verifies."""
    h = unproven_harness(vault_key_2048, 5, 3, 4)
    liar, silent = signers_of()[:2]
    h.nodes[liar].faults.bad_share = True
    h.nodes[silent].faults.share_down = True
    outcome = h.deposit(document(700))
    assert pss_verifies(vault_key_2048, outcome.statement, outcome.signature)
    assert set(outcome.faulty) == {liar}
    assert set(outcome.failed) == {silent} and "share" in outcome.failed[silent]


def test_too_few_proven_shares_fail_the_deposit(paper_key_2048: VaultKey) -> None:
    h = unproven_harness(paper_key_2048, 3, 2, 3)
    h.nodes[2].faults.bad_share = True
    with pytest.raises(DepositFailed) as info:
        h.deposit(document(500), name="refused.bin")
    assert set(info.value.failed) == {2}
    assert "proof of correctness" in info.value.failed[2]
    assert h.catalog.state("alice", "refused.bin", 1) == "failed"


def test_restored_receipt_is_the_deposits_byte_for_byte(vault_key_2048: VaultKey) -> None:
    """A catalog restore (evault.gateway.restore) rebuilds each receipt from the nodes' shares
    with their proofs: a node's bad share is named and left out, and the result is the
    signature the depositor got (the PSS salt comes from the statement)."""
    from evault.gateway.restore import RestoreReport, restore_catalog

    h = real_harness(vault_key_2048, 5, 3, 4)
    outcome = h.deposit(document(2500))
    h.catalog = FakeCatalog()
    h.nodes[4].faults.bad_share = True

    async def go(service: VaultService) -> RestoreReport:
        return await restore_catalog(service)

    report: RestoreReport = h.run(go)
    row = h.catalog.versions[("alice", "doc.bin", 1)]
    assert [v.version for v in report.restored] == [1]
    assert row["statement"] == outcome.statement and row["signature"] == outcome.signature
    assert pss_verifies(vault_key_2048, row["statement"], row["signature"])
    # Two bad shares leave 3 of the 4 needed: nothing is restored, and the report says so.
    h.catalog = FakeCatalog()
    h.nodes[1].faults.bad_share = True
    report = h.run(go)
    assert h.catalog.versions == {}
    assert "only 3 valid signature shares of 4" in report.not_restored[0].reason
