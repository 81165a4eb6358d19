"""The node's ShareSigner (evault.node.signing): shares spend precomputed nonces, never twice.

The refill thread is observed only through ``wait_ready`` (a condition wait, not a sleep) and
``stats``; every proof's commitment v' = v^r is recomputed from its public (c, z) to show that
no two shares used the same nonce.
"""

from __future__ import annotations

import gc
import random
import threading

import pytest

from evault.crypto.threshold_rsa import SignatureShare, combine, verify_share, verify_signature
from evault.crypto.threshold_testing import InsecureTestKey
from evault.errors import ConfigError
from evault.node.signing import ShareSigner
from evault.protocol.node_api import WireShare
from tests.crypto_fixtures import VaultKey
from tests.unit.test_threshold_rsa_nonces import commitment

STATEMENT = b'{"name":"a.pdf","vault":"signing-tests","version":1}'
#: Upper bound for the refill thread to compute a handful of nonces on a loaded machine.
READY_TIMEOUT_S = 60.0


def _share(wire: WireShare) -> SignatureShare:
    return SignatureShare(wire.index, wire.value, wire.proof_c, wire.proof_z)


def test_start_up_fills_the_pool_and_a_deposit_share_spends_one_nonce(
    vault_key_2048: VaultKey,
) -> None:
    public = vault_key_2048.public
    signers = [ShareSigner(public, s, index=s.index) for s in vault_key_2048.shares[:4]]
    try:
        for signer in signers:
            assert signer.wait_ready(READY_TIMEOUT_S)
            assert signer.stats.pooled == 8
        shares = [_share(signer.sign(STATEMENT)) for signer in signers]
        for signer in signers:
            assert (signer.stats.precomputed, signer.stats.inline) == (1, 0)
        for share in shares:
            verify_share(public, STATEMENT, share)
        result = combine(public, STATEMENT, shares)
        verify_signature(public.to_cryptography(), STATEMENT, result.signature)
    finally:
        for signer in signers:
            signer.close()


def test_an_exhausted_pool_falls_back_to_inline_nonces(vault_key_1024: InsecureTestKey) -> None:
    key = vault_key_1024
    # low_water = 0: the pool is filled once at start-up and never refilled.
    with ShareSigner(key.public, key.shares[0], index=1, pool_size=2, low_water=0) as signer:
        assert signer.wait_ready(READY_TIMEOUT_S)
        shares = [_share(signer.sign(b"m%d" % i)) for i in range(4)]
        stats = signer.stats
        assert (stats.precomputed, stats.inline, stats.pooled) == (2, 2, 0)
    for i, share in enumerate(shares):
        verify_share(key.public, b"m%d" % i, share)
    assert len({commitment(key.public, s) for s in shares}) == 4


def test_the_pool_is_refilled_after_falling_below_low_water(
    vault_key_1024: InsecureTestKey,
) -> None:
    key = vault_key_1024
    with ShareSigner(key.public, key.shares[1], index=2, pool_size=4, low_water=2) as signer:
        assert signer.wait_ready(READY_TIMEOUT_S)
        for i in range(3):
            signer.sign(b"m%d" % i)
        assert signer.stats.precomputed == 3
        assert signer.wait_ready(READY_TIMEOUT_S)  # back to 4 without anyone asking
        assert signer.stats.pooled == 4
        signer.sign(b"m3")
        assert signer.stats.precomputed == 4


def test_concurrent_deposits_never_share_a_nonce(vault_key_1024: InsecureTestKey) -> None:
    key = vault_key_1024
    workers, per_worker = 4, 6
    with ShareSigner(key.public, key.shares[2], index=3, pool_size=8, low_water=4) as signer:
        assert signer.wait_ready(READY_TIMEOUT_S)
        start = threading.Barrier(workers)
        results: list[tuple[bytes, WireShare]] = []
        lock = threading.Lock()

        def deposit(worker: int) -> None:
            start.wait()
            for j in range(per_worker):
                message = b"w%d-%d" % (worker, j)
                wire = signer.sign(message)
                with lock:
                    results.append((message, wire))

        threads = [threading.Thread(target=deposit, args=(w,)) for w in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = signer.stats
    assert stats.precomputed + stats.inline == workers * per_worker
    assert stats.precomputed >= 8  # the full pool at start was spent first
    shares = [_share(wire) for _, wire in results]
    for (message, _), share in zip(results, shares, strict=True):
        verify_share(key.public, message, share)
    commitments = [commitment(key.public, s) for s in shares]
    assert len(set(commitments)) == len(commitments) == workers * per_worker


def test_close_stops_the_refill_thread_and_signing_goes_on_inline(
    vault_key_1024: InsecureTestKey,
) -> None:
    key = vault_key_1024
    signer = ShareSigner(key.public, key.shares[3], index=4, pool_size=3, low_water=3)
    thread = signer._thread
    assert thread is not None and thread.daemon
    signer.close()
    assert not thread.is_alive()
    assert signer.stats.pooled == 0
    assert not signer.wait_ready(READY_TIMEOUT_S)
    share = _share(signer.sign(STATEMENT))
    verify_share(key.public, STATEMENT, share)
    assert (signer.stats.precomputed, signer.stats.inline) == (0, 1)
    signer.close()  # idempotent


def test_a_dropped_signer_stops_its_thread(vault_key_1024: InsecureTestKey) -> None:
    key = vault_key_1024
    signer = ShareSigner(key.public, key.shares[4], index=5, pool_size=2, low_water=1)
    thread = signer._thread
    assert thread is not None
    del signer
    gc.collect()
    thread.join(READY_TIMEOUT_S)  # the finalizer told it to stop; it ends within one nonce
    assert not thread.is_alive()


def test_precomputation_can_be_turned_off(vault_key_1024: InsecureTestKey) -> None:
    key = vault_key_1024
    with ShareSigner(key.public, key.shares[0], index=1, pool_size=0, low_water=0) as signer:
        assert signer._thread is None
        assert signer.wait_ready(0)
        verify_share(key.public, STATEMENT, _share(signer.sign(STATEMENT)))
        assert (signer.stats.precomputed, signer.stats.inline) == (0, 1)


def test_signer_validates_its_configuration(vault_key_1024: InsecureTestKey) -> None:
    key = vault_key_1024
    with pytest.raises(ConfigError, match="node 2"):
        ShareSigner(key.public, key.shares[0], index=2)
    with pytest.raises(ValueError, match="pool_size"):
        ShareSigner(key.public, key.shares[0], index=1, pool_size=-1)
    with pytest.raises(ValueError, match="low_water"):
        ShareSigner(key.public, key.shares[0], index=1, pool_size=2, low_water=3)
    with pytest.raises(ValueError, match="refill_idle_s"):
        ShareSigner(key.public, key.shares[0], index=1, refill_idle_s=-1)


def test_a_seeded_signer_is_reproducible(vault_key_1024: InsecureTestKey) -> None:
    # The rng reaches the pool: the same seed gives the same first share whichever path it took.
    key = vault_key_1024
    first = []
    for _ in range(2):
        with ShareSigner(
            key.public, key.shares[0], index=1, pool_size=1, low_water=0, rng=random.Random(8)
        ) as signer:
            assert signer.wait_ready(READY_TIMEOUT_S)
            first.append(signer.sign(STATEMENT))
    assert first[0] == first[1]
