"""Test-only threshold RSA keys: the explicit path to moduli smaller than the vault allows.

``evault.crypto.threshold_rsa.deal`` and ``deal_from_primes`` refuse every modulus size other
than 2048 and 3072 bits.  Unit tests want many keys, and keys that sign fast, so this module
deals from any pair of safe primes whose product has at least 1024 bits, and also returns the
primes, which tests use to build adversarial shares (a share multiplied by a nontrivial square
root of 1, for instance).  Nothing in the vault imports this module; a 1024-bit key is not safe.
"""

from __future__ import annotations

from dataclasses import dataclass

from evault.crypto.numbers import DEFAULT_RNG, RandomSource, generate_safe_prime
from evault.crypto.threshold_rsa import (
    DEFAULT_PUBLIC_EXPONENT,
    KeyShare,
    ThresholdPublicKey,
    _deal_from_primes,
)

__all__ = ["InsecureTestKey", "deal_insecure_test_key", "insecure_test_primes"]


@dataclass(frozen=True, repr=False)
class InsecureTestKey:
    public: ThresholdPublicKey
    shares: tuple[KeyShare, ...]
    p: int
    q: int

    def __repr__(self) -> str:
        pub = self.public
        return f"InsecureTestKey({pub.threshold}-of-{pub.players}, {pub.modulus_bits} bits)"


def insecure_test_primes(
    modulus_bits: int = 1024, *, rng: RandomSource | None = None
) -> tuple[int, int]:
    """Two distinct safe primes with a product of exactly ``modulus_bits`` bits (any even size
    >= 1024; 1024 takes well under a second)."""
    if modulus_bits % 2 or modulus_bits < 1024:
        raise ValueError(f"modulus_bits: expected an even size >= 1024, got {modulus_bits}")
    rng = DEFAULT_RNG if rng is None else rng
    p = generate_safe_prime(modulus_bits // 2, rng)
    while True:
        q = generate_safe_prime(modulus_bits // 2, rng)
        if q != p:
            return p, q


def deal_insecure_test_key(
    players: int,
    threshold: int,
    *,
    primes: tuple[int, int] | None = None,
    modulus_bits: int = 1024,
    e: int = DEFAULT_PUBLIC_EXPONENT,
    rng: RandomSource | None = None,
) -> InsecureTestKey:
    """Deal a key from ``primes`` (or fresh ones of ``modulus_bits``) without the size policy."""
    rng = DEFAULT_RNG if rng is None else rng
    p, q = primes if primes is not None else insecure_test_primes(modulus_bits, rng=rng)
    public, shares = _deal_from_primes(
        p, q, players, threshold, e=e, rng=rng, progress=None, allowed_bits=None
    )
    return InsecureTestKey(public=public, shares=tuple(shares), p=p, q=q)
