"""Vectors for the Ed25519 prime-order group (evault.crypto.group).

* RFC 8032 §5.1: the base point's encoding, and the public keys of the §7.1 test vectors
  TEST 1-3, which are s·B for s = clamp(SHA-512(seed)[0:32]) (RFC 8032 §5.1.5).
* Points that must be refused: the small-order points (libsodium's blocklist, also listed in
  e.g. "Taming the many EdDSAs", Chalkias et al. 2020), non-canonical encodings (y ≥ p), a
  y for which no x exists, and mixed-order points P + T with T of small order.
"""

from __future__ import annotations

import hashlib

import nacl.bindings
import pytest

from evault.crypto.group import (
    BASE,
    IDENTITY,
    ORDER,
    Element,
    base_mul,
    decode_element,
    decode_scalar,
    frame,
    hash_to_scalar,
    lagrange_at_zero,
    scalar_to_bytes,
)
from evault.errors import InvalidElement

P = 2**255 - 19
D = -121665 * pow(121666, -1, P) % P

RFC8032_BASE = "5866666666666666666666666666666666666666666666666666666666666666"
RFC8032_KEYS = [  # (TEST n, SECRET KEY (seed), PUBLIC KEY) from RFC 8032 §7.1
    (
        1,
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
    ),
    (
        2,
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
    ),
    (
        3,
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
    ),
]

# Encodings of the eight-torsion points (canonical ones first), and of y = p, y = p + 1.
SMALL_ORDER = {
    "identity (order 1)": "0100000000000000000000000000000000000000000000000000000000000000",
    "y = 0 (order 4)": "0000000000000000000000000000000000000000000000000000000000000000",
    "y = -1 (order 2)": "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "order 8, a": "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
    "order 8, b": "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
    "order 8, a negated": "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
    "order 8, b negated": "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
}
NON_CANONICAL = {
    "y = p (non-canonical 0)": "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
    "y = p + 1 (non-canonical identity)": (
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"
    ),
    "identity with the sign bit": (
        "0100000000000000000000000000000000000000000000000000000000000080"
    ),
}


def _clamped_scalar(seed_hex: str) -> bytes:
    h = bytearray(hashlib.sha512(bytes.fromhex(seed_hex)).digest()[:32])
    h[0] &= 248
    h[31] &= 127
    h[31] |= 64
    return bytes(h)


def test_base_point_is_rfc8032_b() -> None:
    assert BASE.hex() == RFC8032_BASE
    assert base_mul(1) == BASE
    assert Element(bytes.fromhex(RFC8032_BASE)) == BASE


@pytest.mark.parametrize(("number", "seed", "public"), RFC8032_KEYS)
def test_rfc8032_public_keys_are_clamped_scalar_times_b(
    number: int, seed: str, public: str
) -> None:
    scalar = _clamped_scalar(seed)
    # libsodium directly, with the unreduced clamped scalar (< 2^255, so noclamp is exact) ...
    assert nacl.bindings.crypto_scalarmult_ed25519_base_noclamp(scalar).hex() == public
    # ... and through our API, which reduces mod ℓ first (B has order ℓ).
    s = int.from_bytes(scalar, "little")
    assert base_mul(s).hex() == public
    assert (s % ORDER) * BASE == base_mul(s)
    assert decode_element(bytes.fromhex(public)).hex() == public


def test_order_and_identity_arithmetic() -> None:
    assert base_mul(ORDER) == IDENTITY
    assert base_mul(0) == IDENTITY
    assert ORDER * BASE == IDENTITY
    assert 0 * BASE == IDENTITY
    assert 5 * IDENTITY == IDENTITY
    assert base_mul(ORDER - 1) == -BASE
    assert BASE + (-BASE) == IDENTITY
    assert BASE - BASE == IDENTITY
    assert BASE + IDENTITY == BASE
    assert (ORDER + 3) * BASE == base_mul(3) == BASE + BASE + BASE
    assert IDENTITY.is_identity and not BASE.is_identity


@pytest.mark.parametrize("name", sorted(SMALL_ORDER))
def test_small_order_points_are_rejected(name: str) -> None:
    raw = bytes.fromhex(SMALL_ORDER[name])
    with pytest.raises(InvalidElement, match="not a valid group element"):
        decode_element(raw, what=name)
    with pytest.raises(InvalidElement):
        Element(raw)


def test_small_order_vectors_really_are_torsion() -> None:
    # Independent of the validator: 8·T = O for every canonical vector (addition accepts
    # any point on the curve).
    for name, hexed in SMALL_ORDER.items():
        acc = bytes.fromhex(hexed)
        for _ in range(3):
            acc = nacl.bindings.crypto_core_ed25519_add(acc, acc)
        assert acc == IDENTITY.encoding, name


@pytest.mark.parametrize("name", sorted(NON_CANONICAL))
def test_non_canonical_encodings_are_rejected(name: str) -> None:
    with pytest.raises(InvalidElement):
        decode_element(bytes.fromhex(NON_CANONICAL[name]))


def _first_y_off_curve() -> int:
    # x² = (y² − 1) / (d·y² + 1) (RFC 8032 §5.1.3): no x when that is a non-square mod p.
    for y in range(2, 100):
        u, v = (y * y - 1) % P, (D * y * y + 1) % P
        if pow(u * pow(v, -1, P) % P, (P - 1) // 2, P) == P - 1:
            return y
    raise AssertionError("no non-square found")  # pragma: no cover


def test_point_off_the_curve_is_rejected() -> None:
    y = _first_y_off_curve()
    with pytest.raises(InvalidElement):
        decode_element(y.to_bytes(32, "little"))


def test_mixed_order_points_are_rejected() -> None:
    for name, torsion in SMALL_ORDER.items():
        if name.startswith("identity"):
            continue
        mixed = nacl.bindings.crypto_core_ed25519_add(BASE.encoding, bytes.fromhex(torsion))
        with pytest.raises(InvalidElement):
            decode_element(mixed, what=f"B + {name}")


def test_wrong_length_and_type() -> None:
    with pytest.raises(InvalidElement, match="32 bytes"):
        decode_element(BASE.encoding[:31])
    with pytest.raises(TypeError):
        decode_element("58" * 32)  # type: ignore[arg-type]


def test_scalars_are_canonical() -> None:
    assert decode_scalar(scalar_to_bytes(ORDER - 1)) == ORDER - 1
    with pytest.raises(InvalidElement, match="reduced"):
        decode_scalar(ORDER.to_bytes(32, "little"))
    with pytest.raises(InvalidElement):
        decode_scalar(bytes(31))
    with pytest.raises(ValueError, match="scalar"):
        scalar_to_bytes(ORDER)
    with pytest.raises(ValueError, match="scalar"):
        scalar_to_bytes(-1)


def test_hash_to_scalar_is_tagged_and_framed() -> None:
    a = hash_to_scalar("evault/test/v1", b"ab", b"c")
    assert a == hash_to_scalar("evault/test/v1", b"ab", b"c")
    assert 0 <= a < ORDER
    assert a != hash_to_scalar("evault/test/v1", b"a", b"bc")  # framing
    assert a != hash_to_scalar("evault/other/v1", b"ab", b"c")  # domain separation
    assert frame(b"ab", b"") == b"\x00\x00\x00\x02ab\x00\x00\x00\x00"


def test_lagrange_interpolates_a_polynomial_at_zero() -> None:
    # f(z) = 7 + 3z + 5z² over Z_ℓ, from the points 2, 5, 9.
    def f(z: int) -> int:
        return (7 + 3 * z + 5 * z * z) % ORDER

    points = [2, 5, 9]
    assert sum(lagrange_at_zero(i, points) * f(i) for i in points) % ORDER == 7
    with pytest.raises(ValueError, match="index"):
        lagrange_at_zero(3, points)
    with pytest.raises(ValueError, match="distinct"):
        lagrange_at_zero(2, [2, 2, 5])
