"""Hypothesis properties of the group, Feldman dealing and the blinded threshold unwrap."""

from __future__ import annotations

import os
import random

import nacl.bindings
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from evault.crypto.feldman import Dealing, NodeKeyShare, deal_unwrap_key, verify_key_share
from evault.crypto.group import BASE, IDENTITY, ORDER, Element, base_mul, decode_element
from evault.crypto.unwrap import (
    PartialUnwrap,
    WrapContext,
    blind,
    make_unwrap_request,
    partial_unwrap,
    recover_file_key,
    wrap_file_key,
)
from evault.errors import InvalidElement, InvalidKeyShare, NotEnoughPartialUnwraps

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
CTX = WrapContext("vault", "owner", "doc", 1)
scalars = st.integers(0, ORDER - 1)
nonzero = st.integers(1, ORDER - 1)
TORSION = [
    bytes.fromhex("0000000000000000000000000000000000000000000000000000000000000000"),
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),
    bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
]


# -- the group -------------------------------------------------------------------------------


@FAST
@given(a=scalars, b=scalars)
def test_scalar_multiplication_is_a_homomorphism(a: int, b: int) -> None:
    assert base_mul(a) + base_mul(b) == base_mul(a + b)
    assert base_mul(a) - base_mul(b) == base_mul(a - b)
    assert a * base_mul(b) == base_mul(a * b) == b * base_mul(a)
    assert (a * BASE) == base_mul(a)


@FAST
@given(s=nonzero)
def test_every_subgroup_element_is_accepted_and_round_trips(s: int) -> None:
    p = base_mul(s)
    assert decode_element(p.encoding) == p == Element(p.encoding)
    assert ORDER * p == IDENTITY and not p.is_identity


@FAST
@given(s=nonzero, t=st.sampled_from(TORSION))
def test_mixed_order_points_are_always_rejected(s: int, t: bytes) -> None:
    mixed = nacl.bindings.crypto_core_ed25519_add(base_mul(s).encoding, t)
    with pytest.raises(InvalidElement):
        decode_element(mixed)


@FAST
@given(raw=st.binary(min_size=32, max_size=32))
def test_any_accepted_bytes_are_a_prime_order_point(raw: bytes) -> None:
    try:
        p = decode_element(raw)
    except InvalidElement:
        return
    # Checked with libsodium's plain addition (which takes any curve point): (ℓ−1)·P + P = O.
    assert not p.is_identity
    minus = (ORDER - 1) * p
    assert nacl.bindings.crypto_core_ed25519_add(minus.encoding, p.encoding) == IDENTITY.encoding


# -- Feldman ---------------------------------------------------------------------------------


@st.composite
def thresholds(draw: st.DrawFn, max_n: int = 7) -> tuple[int, int]:
    n = draw(st.integers(1, max_n))
    return draw(st.integers(1, n)), n


@FAST
@given(kn=thresholds(), which=st.integers(0), delta=st.integers(1, ORDER - 1))
def test_feldman_accepts_every_dealt_share_and_no_altered_one(
    kn: tuple[int, int], which: int, delta: int
) -> None:
    k, n = kn
    d = deal_unwrap_key(threshold=k, nodes=n, rng=os.urandom)
    for s in d.shares:
        verify_key_share(s, d.commitments)
    victim = d.shares[which % n]
    altered = type(victim)(victim.index, (victim.value + delta) % ORDER or 1)
    assume(altered.value != victim.value)
    with pytest.raises(InvalidKeyShare):
        verify_key_share(altered, d.commitments)


# -- threshold unwrap ------------------------------------------------------------------------


def _setup(k: int, n: int) -> tuple[bytes, Dealing, dict[int, NodeKeyShare]]:
    d = deal_unwrap_key(threshold=k, nodes=n, rng=os.urandom)
    shares = {
        s.index: NodeKeyShare(
            "vault",
            "owner",
            n,
            s,
            d.commitments,
            bytes(32),
            d.commitments.verification_key(s.index),
            b"",
        )
        for s in d.shares
    }
    return os.urandom(32), d, shares


def _corrupt(p: PartialUnwrap, how: int) -> PartialUnwrap:
    if how == 0:  # a different point
        return PartialUnwrap(p.node, p.d + BASE, p.challenge, p.response)
    if how == 1:  # a broken proof
        return PartialUnwrap(p.node, p.d, p.challenge, (p.response + 1) % ORDER)
    # the right point shifted, with the challenge re-randomised
    return PartialUnwrap(p.node, p.d - BASE, (p.challenge + 7) % ORDER, p.response)


@FAST
@given(kn=thresholds(), seed=st.integers(0, 2**32), extra=st.integers(0, 7))
def test_any_k_of_n_partial_unwraps_recover_the_key(
    kn: tuple[int, int], seed: int, extra: int
) -> None:
    k, n = kn
    key, d, shares = _setup(k, n)
    wrapped = wrap_file_key(key, d.public_key, CTX, rng=os.urandom)
    b = blind(wrapped, rng=os.urandom)
    req = make_unwrap_request(b, vault="vault", owner="owner", issued_at=0, rng=os.urandom)
    rnd = random.Random(seed)
    answering = rnd.sample(range(1, n + 1), min(n, k + extra % (n - k + 1)))
    partials = [partial_unwrap(shares[i], req, rng=os.urandom) for i in answering]
    got = recover_file_key(
        wrapped, CTX, blinding=b, request=req, commitments=d.commitments, partials=partials
    )
    assert got.file_key == key
    assert got.used == tuple(sorted(answering)[:k]) and not got.bad


@FAST
@given(kn=thresholds(), seed=st.integers(0, 2**32))
def test_fewer_than_k_partial_unwraps_fail_with_have_and_need(
    kn: tuple[int, int], seed: int
) -> None:
    k, n = kn
    key, d, shares = _setup(k, n)
    wrapped = wrap_file_key(key, d.public_key, CTX, rng=os.urandom)
    b = blind(wrapped, rng=os.urandom)
    req = make_unwrap_request(b, vault="vault", owner="owner", issued_at=0, rng=os.urandom)
    answering = random.Random(seed).sample(range(1, n + 1), k - 1)
    partials = [partial_unwrap(shares[i], req, rng=os.urandom) for i in answering]
    with pytest.raises(NotEnoughPartialUnwraps) as info:
        recover_file_key(
            wrapped, CTX, blinding=b, request=req, commitments=d.commitments, partials=partials
        )
    assert (info.value.have, info.value.need) == (k - 1, k)
    assert info.value.bad == {}


@FAST
@given(
    kn=thresholds(),
    seed=st.integers(0, 2**32),
    liars=st.integers(1, 7),
    how=st.integers(0, 2),
)
def test_wrong_partials_are_excluded_and_named(
    kn: tuple[int, int], seed: int, liars: int, how: int
) -> None:
    k, n = kn
    key, d, shares = _setup(k, n)
    wrapped = wrap_file_key(key, d.public_key, CTX, rng=os.urandom)
    b = blind(wrapped, rng=os.urandom)
    req = make_unwrap_request(b, vault="vault", owner="owner", issued_at=0, rng=os.urandom)
    rnd = random.Random(seed)
    bad_nodes = set(rnd.sample(range(1, n + 1), min(liars, n)))
    partials = [partial_unwrap(shares[i], req, rng=os.urandom) for i in range(1, n + 1)]
    partials = [_corrupt(p, how) if p.node in bad_nodes else p for p in partials]
    rnd.shuffle(partials)
    honest = n - len(bad_nodes)
    if honest >= k:
        got = recover_file_key(
            wrapped, CTX, blinding=b, request=req, commitments=d.commitments, partials=partials
        )
        assert got.file_key == key
        assert set(got.bad) == bad_nodes and not bad_nodes & set(got.used)
    else:
        with pytest.raises(NotEnoughPartialUnwraps) as info:
            recover_file_key(
                wrapped, CTX, blinding=b, request=req, commitments=d.commitments, partials=partials
            )
        assert (info.value.have, info.value.need) == (honest, k)
        assert set(info.value.bad) == bad_nodes
