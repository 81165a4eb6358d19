import pytest

from evault.ida.gf256 import GF256, ISAL_POLY, PAPER_POLY, _clmul_mod, get_field, is_irreducible
from evault.ida.matrix import (
    as_matrix,
    cauchy_systematic,
    identity,
    mat_inv,
    mat_mul,
    rank,
    transpose,
    verify_mds,
)


@pytest.mark.parametrize("poly", [PAPER_POLY, ISAL_POLY])
def test_tables_agree_with_shift_and_add_multiplication(poly: int) -> None:
    f = get_field(poly)
    for a in range(256):
        for b in range(0, 256, 7):
            assert f.mul(a, b) == _clmul_mod(a, b, poly)
    for a in range(1, 256):
        assert f.mul(a, f.inv(a)) == 1
        assert f.div(a, a) == 1
        assert f.mul_table(a)[5] == f.mul(a, 5)


def test_known_products() -> None:
    # In ISA-L's field 2 generates the group: 2^8 = 0x1D (x^8 = x^4+x^3+x^2+1).
    assert get_field(ISAL_POLY).mul(0x80, 2) == 0x1D
    assert get_field(ISAL_POLY).generator == 2
    # In the paper's field x^8 = x^6+x^5+x^4+1.
    assert get_field(PAPER_POLY).mul(0x80, 2) == 0x71
    assert get_field(PAPER_POLY).pow(3, 255) == 1
    assert get_field(PAPER_POLY).pow(7, -1) == get_field(PAPER_POLY).inv(7)


def test_irreducibility_check() -> None:
    # Every degree-8 irreducible polynomial: there are exactly 30 (Gauss's formula).
    assert sum(is_irreducible(p) for p in range(0x100, 0x200)) == 30
    assert not is_irreducible(0x11B ^ 0x1)  # even constant term: divisible by x
    assert is_irreducible(0x11B)  # AES
    assert not is_irreducible(0b111000111)  # (x^2+x+1)(x^6+1), no root but reducible
    with pytest.raises(ValueError, match="reducible"):
        GF256(0x100)
    with pytest.raises(ValueError, match="degree 8"):
        GF256(0x1B)
    with pytest.raises(TypeError, match="poly"):
        GF256("0x171")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="poly"):
        is_irreducible(1)


def test_zero_has_no_inverse() -> None:
    f = get_field(PAPER_POLY)
    with pytest.raises(ZeroDivisionError):
        f.inv(0)
    with pytest.raises(ZeroDivisionError):
        f.div(1, 0)
    assert f.mul_bytes(0, b"abc") == b"\0\0\0"
    assert f.mul_bytes(1, b"abc") == b"abc"


def test_matrix_inverse_and_rank() -> None:
    f = get_field(ISAL_POLY)
    c = cauchy_systematic(f, 4, 9)
    square = tuple(tuple(row[i] for i in (1, 5, 6, 8)) for row in c)
    inv = mat_inv(f, square)
    assert mat_mul(f, square, inv) == identity(4)
    assert mat_mul(f, inv, square) == identity(4)
    assert rank(f, c) == 4
    assert transpose(transpose(c)) == c
    with pytest.raises(ValueError, match="singular"):
        mat_inv(f, ((1, 1), (1, 1)))


def test_cauchy_is_mds_and_matches_isal_definition() -> None:
    f = get_field(ISAL_POLY)
    for m, n in [(1, 1), (1, 5), (3, 5), (4, 10), (6, 9)]:
        c = cauchy_systematic(f, m, n)
        verify_mds(f, c)
        for r in range(m):
            for i in range(m, n):
                assert f.mul(c[r][i], i ^ r) == 1  # gf_gen_cauchy1_matrix: a[i][r] = inv(i ^ r)
    with pytest.raises(ValueError, match="m, n"):
        cauchy_systematic(f, 3, 257)


def test_matrix_validation_names_the_argument() -> None:
    with pytest.raises(ValueError, match="row 1"):
        as_matrix([[1, 2], [3]])
    with pytest.raises(ValueError, match="not a byte"):
        as_matrix([[256]])
    with pytest.raises(TypeError, match="matrix"):
        as_matrix([None])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="too many"):
        verify_mds(get_field(ISAL_POLY), cauchy_systematic(get_field(ISAL_POLY), 16, 40))
