"""Hypothesis properties of threshold RSA: any k of n signers sign any statement identically.

Keys are dealt per example from one pair of 1024-bit test-only primes (session fixture), so a
new (n, k) costs n exponentiations, not a prime search.
"""

from __future__ import annotations

import random

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from evault.crypto.numbers import lagrange_coefficients_at_zero
from evault.crypto.pss import encode_message
from evault.crypto.threshold_rsa import (
    SignatureShare,
    combine,
    sign_share,
    verify_share,
    verify_signature,
)
from evault.crypto.threshold_testing import deal_insecure_test_key
from evault.encoding import canonical_json
from evault.errors import NotEnoughShares

json_scalars = (
    st.none() | st.booleans() | st.integers(-(2**53) + 1, 2**53 - 1) | st.text(max_size=20)
)
statements = st.one_of(
    st.binary(max_size=400),
    st.dictionaries(st.text(max_size=10), json_scalars, max_size=8).map(canonical_json),
)


@st.composite
def schemes(draw: st.DrawFn) -> tuple[int, int]:
    n = draw(st.integers(1, 7))
    return n, draw(st.integers(1, n))


@settings(max_examples=40, deadline=None)
@given(message=statements, scheme=schemes(), data=st.data())
def test_any_k_signers_make_the_same_valid_signature(
    test_primes_1024: tuple[int, int],
    message: bytes,
    scheme: tuple[int, int],
    data: st.DataObject,
) -> None:
    n, k = scheme
    seed = data.draw(st.integers(0, 2**32), label="seed")
    key = deal_insecure_test_key(n, k, primes=test_primes_1024, rng=random.Random(seed))
    order = data.draw(st.permutations(range(n)), label="signer order")
    rng = random.Random(seed + 1)
    shares = [sign_share(key.shares[i], key.public, message, rng=rng) for i in order]
    first = combine(key.public, message, shares[:k])
    last = combine(key.public, message, shares[-k:])
    assert first.signature == last.signature
    assert first.bad_signers == {} and len(first.signers) == k
    verify_signature(key.public, message, first.signature)
    if k > 1:
        with pytest.raises(NotEnoughShares) as info:
            combine(key.public, message, shares[: k - 1])
        assert (info.value.have, info.value.need) == (k - 1, k)


@settings(max_examples=25, deadline=None)
@given(message=statements, data=st.data())
def test_negated_shares_verify_and_combine_to_the_same_signature(
    test_primes_1024: tuple[int, int], message: bytes, data: st.DataObject
) -> None:
    key = deal_insecure_test_key(4, 3, primes=test_primes_1024, rng=random.Random(5))
    rng = random.Random(6)
    shares = [sign_share(s, key.public, message, rng=rng) for s in key.shares[:3]]
    honest = combine(key.public, message, shares).signature
    negate = data.draw(st.lists(st.booleans(), min_size=3, max_size=3), label="negate")
    n_mod = key.public.n_modulus
    mixed = [
        SignatureShare(s.index, n_mod - s.value, s.proof_c, s.proof_z) if flip else s
        for s, flip in zip(shares, negate, strict=True)
    ]
    for share in mixed:
        verify_share(key.public, message, share)
    assert combine(key.public, message, mixed).signature == honest


@settings(max_examples=200, deadline=None)
@given(
    n=st.integers(1, 12),
    data=st.data(),
)
def test_integer_lagrange_coefficients_interpolate_delta_times_f0(
    n: int, data: st.DataObject
) -> None:
    # Σ_{j∈S} λ_{0,j} f(j) = Δ f(0) over the integers, for every f of degree < |S| (Shoup §3).
    k = data.draw(st.integers(1, n), label="k")
    subset = data.draw(
        st.lists(st.integers(1, n), min_size=k, max_size=k, unique=True), label="subset"
    )
    coefficients = data.draw(
        st.lists(st.integers(-(2**64), 2**64), min_size=k, max_size=k), label="f"
    )
    delta = 1
    for i in range(2, n + 1):
        delta *= i
    lambdas = lagrange_coefficients_at_zero(delta, subset)

    def f(x: int) -> int:
        return sum(c * x**power for power, c in enumerate(coefficients))

    assert sum(lambdas[j] * f(j) for j in subset) == delta * f(0)


@pytest.fixture(scope="module")
def ordinary_rsa_keys() -> list[rsa.RSAPrivateKey]:
    # Sizes with emBits mod 8 = 7, 0 and 6, so the top-bit clearing of EMSA-PSS is exercised.
    return [rsa.generate_private_key(65537, bits) for bits in (1024, 1025, 1031, 2048)]


@settings(max_examples=60, deadline=None)
@given(message=statements, which=st.integers(0, 3))
def test_our_pss_encoding_raw_signed_verifies_with_cryptography(
    ordinary_rsa_keys: list[rsa.RSAPrivateKey], message: bytes, which: int
) -> None:
    key = ordinary_rsa_keys[which]
    numbers = key.private_numbers()
    n_mod = numbers.public_numbers.n
    x = encode_message(message, key.key_size)
    signature = pow(x, numbers.d, n_mod).to_bytes((key.key_size + 7) // 8, "big")
    key.public_key().verify(
        signature,
        message,
        padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=32),
        hashes.SHA256(),
    )
