"""Session-scoped threshold-RSA keys, made once per test session.

Register with ``pytest_plugins = ["tests.crypto_fixtures"]`` in tests/conftest.py (or import the
fixtures by name).  Costs: one real 2048-bit prime generation (``generate_primes``, about a
second) shared by every 2048-bit key below, and one 1024-bit test-only prime pair (a tenth of a
second) for tests that deal many keys.  Randomness is seeded, so keys are the same every run.

Fixtures:
    rsa2048_primes      (p, q): safe primes, N = pq of 2048 bits
    vault_key_2048      VaultKey: the default 4-of-5 key (DESIGN §2), dealt by deal_from_primes
    paper_key_2048      VaultKey: the paper's 3-of-3 (n-of-n) key
    test_primes_1024    (p, q) for the test-only path (evault.crypto.threshold_testing)
    vault_key_1024      InsecureTestKey: 3-of-5 on 1024 bits, with its primes, for fast tests
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import pytest

from evault.crypto.threshold_rsa import (
    KeyShare,
    ThresholdPublicKey,
    deal_from_primes,
    generate_primes,
)
from evault.crypto.threshold_testing import (
    InsecureTestKey,
    deal_insecure_test_key,
    insecure_test_primes,
)

__all__ = [
    "VaultKey",
    "paper_key_2048",
    "rsa2048_primes",
    "test_primes_1024",
    "vault_key_1024",
    "vault_key_2048",
]


@dataclass(frozen=True)
class VaultKey:
    public: ThresholdPublicKey
    shares: tuple[KeyShare, ...]


@pytest.fixture(scope="session")
def rsa2048_primes() -> tuple[int, int]:
    return generate_primes(2048, rng=random.Random(20000514))


@pytest.fixture(scope="session")
def vault_key_2048(rsa2048_primes: tuple[int, int]) -> VaultKey:
    p, q = rsa2048_primes
    public, shares = deal_from_primes(p, q, 5, 4, rng=random.Random(1))
    return VaultKey(public, tuple(shares))


@pytest.fixture(scope="session")
def paper_key_2048(rsa2048_primes: tuple[int, int]) -> VaultKey:
    p, q = rsa2048_primes
    public, shares = deal_from_primes(p, q, 3, 3, rng=random.Random(2))
    return VaultKey(public, tuple(shares))


@pytest.fixture(scope="session")
def test_primes_1024() -> tuple[int, int]:
    return insecure_test_primes(1024, rng=random.Random(1997))


@pytest.fixture(scope="session")
def vault_key_1024(test_primes_1024: tuple[int, int]) -> InsecureTestKey:
    return deal_insecure_test_key(5, 3, primes=test_primes_1024, rng=random.Random(3))
