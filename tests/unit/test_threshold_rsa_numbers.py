"""Number theory under threshold RSA (evault.crypto.numbers): safe primes, sieve, randomness."""

from __future__ import annotations

import random

import gmpy2
import pytest

from evault.crypto.numbers import (
    KeygenProgress,
    _sieve_table,
    _sieve_window,
    generate_safe_prime,
    is_probable_prime,
    is_safe_prime,
    random_below,
    random_bits,
)

# Safe primes from OEIS A005385, and Sophie Germain primes whose 2p+1 they are.
SMALL_SAFE_PRIMES = [5, 7, 11, 23, 47, 59, 83, 107, 167, 179, 227, 263, 347, 359, 383, 467, 479]


def test_is_safe_prime_matches_the_known_list() -> None:
    found = [p for p in range(2, 500) if is_safe_prime(p)]
    # 5 is excluded on purpose (p' = 2 is even; a Shoup modulus needs odd p', q').
    assert found == SMALL_SAFE_PRIMES[1:]


def test_is_probable_prime_on_known_values() -> None:
    assert is_probable_prime(2**127 - 1)
    assert not is_probable_prime(2**128 + 1)
    assert not is_probable_prime(561)  # Carmichael number
    assert not is_probable_prime(1) and not is_probable_prime(0)


@pytest.mark.parametrize("bits", [16, 17, 64, 128, 256, 512])
def test_generated_safe_primes_have_exact_size_and_top_bits(bits: int) -> None:
    rng = random.Random(bits)
    for _ in range(3):
        p = generate_safe_prime(bits, rng)
        assert p.bit_length() == bits
        assert p >> (bits - 2) == 0b11
        assert is_safe_prime(p)


def test_two_such_primes_multiply_to_exactly_twice_the_bits() -> None:
    rng = random.Random(4)
    for _ in range(5):
        p, q = generate_safe_prime(128, rng), generate_safe_prime(128, rng)
        assert (p * q).bit_length() == 256


def test_generation_is_reproducible_with_a_fixed_rng() -> None:
    assert generate_safe_prime(256, random.Random(9)) == generate_safe_prime(256, random.Random(9))
    assert generate_safe_prime(256, random.Random(9)) != generate_safe_prime(256, random.Random(10))


def test_progress_reports_the_found_prime() -> None:
    events: list[KeygenProgress] = []
    generate_safe_prime(256, random.Random(1), progress=events.append, prime_index=2)
    assert events[-1].stage == "prime-found"
    assert events[-1].prime_index == 2 and events[-1].candidates >= 1
    assert "found safe prime 2 of 1" in str(events[-1])
    assert "searching" in str(KeygenProgress("prime", 1, 2, 1000))


def test_generate_safe_prime_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="bits"):
        generate_safe_prime(8)
    with pytest.raises(TypeError, match="bits"):
        generate_safe_prime(256.0)  # type: ignore[arg-type]


def test_sieve_strikes_exactly_the_candidates_with_small_factors() -> None:
    # Compare the sieve with trial division for every candidate q = base + 2i of a window.
    table = _sieve_table(200)
    primes = [ell for ell, _ in table]
    base = (random.Random(2).getrandbits(60) | (1 << 59)) | 1
    window = 3000
    alive = _sieve_window(base, window, table)
    for i in range(window):
        q = base + 2 * i
        expected = all(q % ell and (2 * q + 1) % ell for ell in primes)
        assert bool(alive[i]) == expected, i


def test_sieve_table_lists_odd_primes_with_the_inverse_of_two() -> None:
    table = _sieve_table(100)
    assert [ell for ell, _ in table] == [p for p in range(3, 100) if gmpy2.is_prime(p)]
    assert all(2 * half % ell == 1 for ell, half in table)


def test_random_below_stays_in_range_and_covers_it() -> None:
    rng = random.Random(3)
    seen = {random_below(rng, 5) for _ in range(200)}
    assert seen == {0, 1, 2, 3, 4}
    assert random_below(rng, 1) == 0
    with pytest.raises(ValueError, match="bound"):
        random_below(rng, 0)


def test_random_bits_checks_the_rng() -> None:
    assert random_bits(random.Random(1), 0) == 0
    assert 0 <= random_bits(random.Random(1), 70) < 2**70

    class Liar:
        def getrandbits(self, k: int) -> int:
            return 1 << k

    with pytest.raises(TypeError, match="rng"):
        random_bits(Liar(), 8)
    with pytest.raises(ValueError, match="bits"):
        random_bits(random.Random(1), -1)
