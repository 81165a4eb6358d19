"""Number theory for threshold RSA: randomness, safe primes, exact Lagrange coefficients.

Pure functions of their inputs.  Randomness is passed in as an object with a
``getrandbits(k) -> int`` method (``secrets.SystemRandom()`` by default, ``random.Random(seed)``
in tests), so every key and every proof can be reproduced when a test fixes it.

Safe primes (p = 2p' + 1 with p' prime) are found with an incremental sieve that discards a
candidate p' as soon as p' or 2p' + 1 has a small factor, then a base-2 Fermat test on p' and
on p, then a Baillie-PSW test (plus Miller-Rabin rounds) on p'.  Once p' is prime, the Fermat
test 2^(p-1) ≡ 1 (mod p) is a Pocklington certificate for p = 2p' + 1 (p - 1 = 2p' with
p' > √p, and gcd(2^2 - 1, p) = 1), so p needs no further test.  Only gmpy2's stable
``powmod`` / ``is_prime`` are used: no deprecated API (``cryptography``'s DH parameter
generation, which could also produce safe primes, now warns that it will be removed).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Protocol

import gmpy2

__all__ = [
    "DEFAULT_RNG",
    "KeygenProgress",
    "ProgressCallback",
    "RandomSource",
    "generate_safe_prime",
    "is_probable_prime",
    "is_safe_prime",
    "lagrange_coefficients_at_zero",
    "random_below",
    "random_bits",
]


class RandomSource(Protocol):
    """Where random numbers come from: ``secrets.SystemRandom()``, or ``random.Random(seed)``."""

    def getrandbits(self, k: int, /) -> int: ...


#: Cryptographic randomness from the operating system (the default everywhere).
DEFAULT_RNG: RandomSource = secrets.SystemRandom()


@dataclass(frozen=True)
class KeygenProgress:
    """One step of key generation, reported to an optional callback (the core never prints).

    ``stage`` is ``"prime"`` while searching (``candidates`` tested so far for prime number
    ``prime_index`` of ``primes_needed``), ``"prime-found"`` when one is found, and ``"shares"``
    when the dealer computes the key shares.
    """

    stage: str
    prime_index: int
    primes_needed: int
    candidates: int

    def __str__(self) -> str:
        if self.stage == "prime":
            return (
                f"searching for safe prime {self.prime_index} of {self.primes_needed}: "
                f"{self.candidates} candidates tested"
            )
        if self.stage == "prime-found":
            return (
                f"found safe prime {self.prime_index} of {self.primes_needed} "
                f"after {self.candidates} candidates"
            )
        return "dealing the key shares"


ProgressCallback = Callable[[KeygenProgress], None]

#: Miller-Rabin rounds passed to GMP: GMP >= 6.2 runs Baillie-PSW first, then reps - 24
#: Miller-Rabin rounds, so this is BPSW plus 8 random bases.
_PRIME_TEST_REPS = 32

#: Sieve bound and window.  Striking out q or 2q + 1 divisible by an odd prime below 2^18
#: leaves about one candidate in 180 for the Fermat tests (2^16: one in 140; 2^20: one in 240).
#: In 40-run trials at 1536 bits, 2^20 with a 2^18 window was no faster (the spread of the
#: search time is far larger than the difference).
_SIEVE_BOUND = 1 << 18
_SIEVE_WINDOW = 1 << 16
#: Report progress every this many sieve survivors (a 1536-bit prime takes ~1000-5000).
_PROGRESS_EVERY = 1000


def random_bits(rng: RandomSource, bits: int) -> int:
    """A uniformly random integer in [0, 2^bits)."""
    if bits < 0:
        raise ValueError(f"bits: expected >= 0, got {bits}")
    if bits == 0:
        return 0
    value = rng.getrandbits(bits)
    if not isinstance(value, int) or not 0 <= value < (1 << bits):
        raise TypeError("rng: getrandbits() returned a value out of range")
    return value


def random_below(rng: RandomSource, bound: int) -> int:
    """A uniformly random integer in [0, bound), by rejection sampling (no modulo bias)."""
    if bound < 1:
        raise ValueError(f"bound: expected >= 1, got {bound}")
    bits = (bound - 1).bit_length()
    while True:
        value = random_bits(rng, bits)
        if value < bound:
            return value


def is_probable_prime(n: int) -> bool:
    """Baillie-PSW plus Miller-Rabin rounds (no known BPSW pseudoprime exists)."""
    return n >= 2 and bool(gmpy2.is_prime(n, _PRIME_TEST_REPS))


def is_safe_prime(p: int) -> bool:
    """True when p and (p - 1) / 2 are both (probable) primes and p > 5."""
    return p > 5 and p % 2 == 1 and is_probable_prime((p - 1) // 2) and is_probable_prime(p)


@lru_cache(maxsize=4)
def _sieve_table(bound: int) -> tuple[tuple[int, int], ...]:
    """Odd primes ℓ < bound with the inverse of 2 modulo ℓ, by the sieve of Eratosthenes."""
    flags = bytearray([1]) * bound
    flags[0:2] = b"\x00\x00"
    for i in range(2, math.isqrt(bound - 1) + 1):
        if flags[i]:
            flags[i * i :: i] = bytes(len(range(i * i, bound, i)))
    return tuple((ell, (ell + 1) // 2) for ell in range(3, bound, 2) if flags[ell])


def _sieve_window(base: int, window: int, table: Sequence[tuple[int, int]]) -> bytearray:
    """Marks i in [0, window) where q = base + 2i could be a Sophie Germain prime.

    For each small odd prime ℓ, q is struck out when ℓ | q (i ≡ -base/2 mod ℓ) or when
    ℓ | 2q + 1 (q ≡ (ℓ - 1)/2, i.e. i ≡ ((ℓ - 1)/2 - base)/2 mod ℓ).
    """
    alive = bytearray([1]) * window
    zeros = memoryview(bytes(window))
    for ell, half in table:
        r = base % ell
        i0 = (-r * half) % ell
        i1 = ((ell - 1) // 2 - r) * half % ell
        if i0 < window:
            alive[i0::ell] = zeros[: (window - 1 - i0) // ell + 1]
        if i1 < window:
            alive[i1::ell] = zeros[: (window - 1 - i1) // ell + 1]
    return alive


def generate_safe_prime(
    bits: int,
    rng: RandomSource | None = None,
    *,
    progress: ProgressCallback | None = None,
    prime_index: int = 1,
    primes_needed: int = 1,
) -> int:
    """A random safe prime p = 2p' + 1 of exactly ``bits`` bits whose top two bits are set.

    With the top two bits set, the product of two such primes has exactly ``2 * bits`` bits
    (it is at least (3/2 · 2^(bits-1))^2 > 2^(2·bits - 1)), which is how the dealer gets an RSA
    modulus of exactly the requested size.  ``prime_index``/``primes_needed`` only label the
    progress events.
    """
    if not isinstance(bits, int) or isinstance(bits, bool):
        raise TypeError("bits: expected an int")
    if bits < 16:
        raise ValueError(f"bits: a safe prime needs at least 16 bits here, got {bits}")
    rng = DEFAULT_RNG if rng is None else rng
    q_bits = bits - 1
    top = 0b11 << (q_bits - 2)
    limit = 1 << q_bits
    bound = min(_SIEVE_BOUND, 1 << max(4, q_bits // 2))
    table = _sieve_table(bound)
    tested = 0
    while True:
        # Start q at a random odd number with its top two bits set; walk over odd numbers.
        base = int(random_bits(rng, q_bits) | top | 1)
        window = min(_SIEVE_WINDOW, (limit - base) // 2)
        if window < 1:
            continue
        alive = _sieve_window(base, window, table)
        i = alive.find(1)
        while i != -1:
            q = gmpy2.mpz(base + 2 * i)
            p = 2 * q + 1
            tested += 1
            if progress is not None and tested % _PROGRESS_EVERY == 0:
                progress(KeygenProgress("prime", prime_index, primes_needed, tested))
            # Cheapest filters first: base-2 Fermat on q, then the Pocklington test on p.
            if (
                q > bound
                and gmpy2.powmod(2, q - 1, q) == 1
                and gmpy2.powmod(2, p - 1, p) == 1
                and is_probable_prime(int(q))
            ):
                if progress is not None:
                    progress(KeygenProgress("prime-found", prime_index, primes_needed, tested))
                return int(p)
            i = alive.find(1, i + 1)


def lagrange_coefficients_at_zero(delta: int, indices: Sequence[int]) -> dict[int, int]:
    """Shoup's integer Lagrange coefficients λ_{0,j} = Δ · Π_{j' ≠ j} j' / (j' - j).

    For any polynomial f of degree < len(indices) with integer coefficients,
    Σ_j λ_{0,j} f(j) = Δ · f(0).  With Δ = n! and distinct indices in 1..n, every λ_{0,j} is an
    integer (Shoup 2000, §3 — the reason for Δ).  Computed exactly; a non-integer result means
    Δ does not cover the indices, which is a programming mistake.
    """
    if len(set(indices)) != len(indices):
        raise ValueError(f"indices: must be distinct, got {list(indices)}")
    if any(j < 1 for j in indices):
        raise ValueError(f"indices: must be >= 1, got {list(indices)}")
    out: dict[int, int] = {}
    for j in indices:
        numerator = delta
        denominator = 1
        for other in indices:
            if other != j:
                numerator *= other
                denominator *= other - j
        quotient, remainder = divmod(numerator, denominator)
        if remainder:
            raise ValueError(f"delta: {delta} does not make λ_0,{j} an integer for {indices}")
        out[j] = quotient
    return out
