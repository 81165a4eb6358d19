"""Precomputed proof nonces (threshold_rsa.PrecomputedNonce, NoncePool): correct, and never reused.

Reusing a nonce r for two challenges reveals s_i = (z1 − z2) / (c1 − c2) (module text of
evault.crypto.threshold_rsa).  Each proof's commitment v' = v^r is recomputed from the public
proof as v^z · v_i^(-c), so "two signatures never share r" is checked as "no two v' are equal".
"""

from __future__ import annotations

import copy
import pickle
import random
import threading

import gmpy2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evault.crypto.threshold_rsa import (
    CHALLENGE_BITS,
    NoncePool,
    PrecomputedNonce,
    SignatureShare,
    ThresholdPublicKey,
    combine,
    sign_share,
    verify_share,
    verify_signature,
)
from evault.crypto.threshold_testing import InsecureTestKey, deal_insecure_test_key
from evault.encoding import canonical_json
from tests.crypto_fixtures import VaultKey

STATEMENT = canonical_json({"version": 1, "vault": "nonce-tests", "name": "a.pdf", "size": 7})


def commitment(public: ThresholdPublicKey, share: SignatureShare) -> int:
    """v' = v^z · v_i^(-c) mod N: the proof's first commitment, v^r, recomputed from (c, z)."""
    n_mod = gmpy2.mpz(public.n_modulus)
    v_i = public.verification_keys[share.index - 1]
    v_to_c = gmpy2.powmod(v_i, share.proof_c, n_mod)
    return int(gmpy2.powmod(public.v, share.proof_z, n_mod) * gmpy2.invert(v_to_c, n_mod) % n_mod)


def test_shares_with_precomputed_nonces_verify_and_combine_to_a_stock_signature(
    vault_key_2048: VaultKey,
) -> None:
    public = vault_key_2048.public
    pool = NoncePool(public, 5, rng=random.Random(41))
    while pool.fill_one():
        pass
    assert len(pool) == 5
    nonces = [pool.take() for _ in vault_key_2048.shares]
    assert all(n is not None for n in nonces)
    shares = [
        sign_share(s, public, STATEMENT, nonce=n)
        for s, n in zip(vault_key_2048.shares, nonces, strict=True)
    ]
    for share in shares:
        verify_share(public, STATEMENT, share)
    result = combine(public, STATEMENT, shares[1:])
    assert result.bad_signers == {}
    verify_signature(public.to_pem(), STATEMENT, result.signature)  # via `cryptography`
    assert len({commitment(public, s) for s in shares}) == len(shares)


def test_a_precomputed_nonce_gives_exactly_the_inline_share(
    vault_key_1024: InsecureTestKey,
) -> None:
    # Same rng, same r: the precomputed path computes the very same proof as the inline one.
    key = vault_key_1024
    inline = sign_share(key.shares[2], key.public, STATEMENT, rng=random.Random(9))
    nonce = PrecomputedNonce(key.public, rng=random.Random(9))
    precomputed = sign_share(key.shares[2], key.public, STATEMENT, nonce=nonce)
    assert precomputed == inline


def test_precomputed_nonces_have_modulus_plus_two_l1_bits(vault_key_1024: InsecureTestKey) -> None:
    key = vault_key_1024
    rng = random.Random(23)
    lengths = {
        sign_share(
            key.shares[0], key.public, b"m%d" % i, nonce=PrecomputedNonce(key.public, rng=rng)
        ).proof_z.bit_length()
        for i in range(8)
    }
    assert max(lengths) <= key.public.modulus_bits + 2 * CHALLENGE_BITS + 1
    assert min(lengths) >= key.public.modulus_bits + 2 * CHALLENGE_BITS - 12


def test_a_nonce_signs_once_then_refuses(vault_key_1024: InsecureTestKey) -> None:
    key = vault_key_1024
    nonce = PrecomputedNonce(key.public, rng=random.Random(1))
    assert not nonce.spent
    first = sign_share(key.shares[0], key.public, STATEMENT, nonce=nonce)
    assert nonce.spent
    with pytest.raises(ValueError, match="already used"):
        sign_share(key.shares[0], key.public, b"another statement", nonce=nonce)
    with pytest.raises(ValueError, match="already used"):
        sign_share(key.shares[1], key.public, STATEMENT, nonce=nonce)
    verify_share(key.public, STATEMENT, first)
    assert "hidden" in repr(nonce) and "spent" in repr(nonce)


def test_nonces_and_pools_cannot_be_copied_or_pickled(vault_key_1024: InsecureTestKey) -> None:
    nonce = PrecomputedNonce(vault_key_1024.public, rng=random.Random(2))
    pool = NoncePool(vault_key_1024.public, 2, rng=random.Random(3))
    pool.fill_one()
    for thing in (nonce, pool):
        with pytest.raises(TypeError):
            copy.copy(thing)
        with pytest.raises(TypeError):
            copy.deepcopy(thing)
        with pytest.raises(TypeError):
            pickle.dumps(thing)
    assert not nonce.spent and len(pool) == 1


def test_a_nonce_of_another_key_is_refused(
    vault_key_1024: InsecureTestKey, test_primes_1024: tuple[int, int]
) -> None:
    other = deal_insecure_test_key(5, 3, primes=test_primes_1024, rng=random.Random(77))
    nonce = PrecomputedNonce(other.public, rng=random.Random(4))
    with pytest.raises(ValueError, match="another public key"):
        sign_share(vault_key_1024.shares[0], vault_key_1024.public, STATEMENT, nonce=nonce)
    with pytest.raises(TypeError, match="nonce"):
        sign_share(
            vault_key_1024.shares[0],
            vault_key_1024.public,
            STATEMENT,
            nonce=12345,  # type: ignore[arg-type]
        )


def test_a_nonce_copied_into_another_process_is_refused(vault_key_1024: InsecureTestKey) -> None:
    # After fork() the child holds the parent's pool byte for byte; simulate being that child.
    key = vault_key_1024
    pool = NoncePool(key.public, 2, rng=random.Random(5))
    pool.fill_one()
    pool.fill_one()
    forked = pool.take()
    assert forked is not None
    forked._pid = -1  # the process id the nonce was made in is no longer ours
    assert forked.spent
    with pytest.raises(ValueError, match="another process"):
        sign_share(key.shares[0], key.public, STATEMENT, nonce=forked)
    survivor = pool.take()
    assert survivor is not None
    survivor._pid = -1
    pool._nonces.append(survivor)  # a pool handed over a fork: take() skips such nonces
    assert pool.take() is None


def test_an_exhausted_pool_falls_back_to_fresh_nonces(vault_key_1024: InsecureTestKey) -> None:
    key = vault_key_1024
    pool = NoncePool(key.public, 2, rng=random.Random(6))
    assert pool.fill_one() and pool.fill_one()
    assert not pool.fill_one()  # full: nothing computed
    assert len(pool) == 2
    shares = []
    for i in range(4):
        nonce = pool.take()
        assert (nonce is None) == (i >= 2)
        shares.append(sign_share(key.shares[0], key.public, b"m%d" % i, nonce=nonce))
    assert len(pool) == 0
    for i, share in enumerate(shares):
        verify_share(key.public, b"m%d" % i, share)
    assert len({commitment(key.public, s) for s in shares}) == 4


def test_concurrent_signers_never_share_a_nonce(vault_key_1024: InsecureTestKey) -> None:
    # Threads take from one pool while another thread refills it; every proof must show its own
    # v' = v^r.  More signatures than nonces, so some take the inline path.
    key = vault_key_1024
    pool = NoncePool(key.public, 6)
    while pool.fill_one():
        pass
    workers, per_worker = 4, 5
    start = threading.Barrier(workers + 1)
    results: list[tuple[bool, bytes, SignatureShare]] = []
    lock = threading.Lock()

    def signer(worker: int) -> None:
        start.wait()
        for j in range(per_worker):
            message = b"w%d-%d" % (worker, j)
            nonce = pool.take()
            share = sign_share(key.shares[worker], key.public, message, nonce=nonce)
            with lock:
                results.append((nonce is not None, message, share))

    def refiller() -> None:
        start.wait()
        for _ in range(6):
            pool.fill_one()

    threads = [threading.Thread(target=signer, args=(w,)) for w in range(workers)]
    threads.append(threading.Thread(target=refiller))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == workers * per_worker
    assert sum(used for used, _, _ in results) >= 6  # the initial pool was spent
    for _, message, share in results:
        verify_share(key.public, message, share)
    commitments = [commitment(key.public, share) for _, _, share in results]
    assert len(set(commitments)) == len(commitments)


def test_pool_validates_its_parameters(vault_key_1024: InsecureTestKey) -> None:
    with pytest.raises(ValueError, match="capacity"):
        NoncePool(vault_key_1024.public, 0)
    with pytest.raises(TypeError, match="capacity"):
        NoncePool(vault_key_1024.public, 2.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="public"):
        NoncePool("key", 2)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="public"):
        PrecomputedNonce("key")  # type: ignore[arg-type]


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(message=st.binary(max_size=200), index=st.integers(1, 5), seed=st.integers(0, 2**32))
def test_precomputed_and_inline_shares_agree_for_any_statement(
    vault_key_1024: InsecureTestKey, message: bytes, index: int, seed: int
) -> None:
    key = vault_key_1024
    nonce = PrecomputedNonce(key.public, rng=random.Random(seed))
    share = sign_share(key.shares[index - 1], key.public, message, nonce=nonce)
    verify_share(key.public, message, share)
    assert share == sign_share(key.shares[index - 1], key.public, message, rng=random.Random(seed))
