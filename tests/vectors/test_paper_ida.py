"""The worked example of the paper's §2.5 (m=3, n=5, field polynomial x^8+x^6+x^5+x^4+1).

Elements are written as polynomials in x in the paper; as bytes, 1 = 0x01, x = 0x02, 1+x = 0x03.
"""

import pytest

from evault.errors import NotEnoughSlices
from evault.ida.gf256 import PAPER_POLY, get_field, is_irreducible
from evault.ida.matrix import identity, mat_mul, verify_mds
from evault.ida.reference import ReferenceIDA

X = 0b10
ONE_PLUS_X = 0b11

# §2.5: "The following matrix T has the property that every 3 columns of T are linearly
# independent."
T = (
    (1, 0, 0, 1, ONE_PLUS_X),
    (0, 1, 0, 1, X),
    (0, 0, 1, 1, 1),
)
# §2.5: "If ... only the first, second and fifth byte of a coded text are known, the plaintext
# can be retrieved by applying the following transformation to the three bytes of coded text".
PRINTED_DECODER = (
    (1, 0, ONE_PLUS_X),
    (0, 1, X),
    (0, 0, 1),
)


@pytest.fixture(scope="module")
def paper_ida() -> ReferenceIDA:
    return ReferenceIDA(T, get_field(PAPER_POLY))  # verify=True checks every 3 columns


def test_the_paper_polynomial_is_irreducible_and_is_0x171() -> None:
    assert PAPER_POLY == (1 << 8) | (1 << 6) | (1 << 5) | (1 << 4) | 1 == 0x171
    assert is_irreducible(PAPER_POLY)


def test_every_three_columns_of_t_are_independent() -> None:
    verify_mds(get_field(PAPER_POLY), T)  # raises otherwise


def test_output_bytes_follow_the_formula_q_i() -> None:
    # Q_i = T_{0,i} P_0 + T_{1,i} P_1 + T_{2,i} P_2 over GF(2^8) mod 0x171.
    f = get_field(PAPER_POLY)
    ida = ReferenceIDA(T, f)
    p = (0x80, 0x5A, 0xC3)
    q = [b[0] for b in ida.encode(bytes(p))]
    assert q[:3] == list(p)  # the first three columns are the identity
    assert q[3] == 0x80 ^ 0x5A ^ 0xC3
    # (1+x)·0x80 = 0x80 + x·0x80 = 0x80 + x^8 = 0x80 + (x^6+x^5+x^4+1) = 0x80 ^ 0x71
    assert f.mul(ONE_PLUS_X, 0x80) == 0x80 ^ 0x71
    assert q[4] == f.mul(ONE_PLUS_X, 0x80) ^ f.mul(X, 0x5A) ^ 0xC3


def test_rebuilding_from_slices_1_2_5_uses_exactly_the_printed_matrix(
    paper_ida: ReferenceIDA,
) -> None:
    # Slices are numbered from 1 in the paper, from 0 here.
    decoder = paper_ida.decoding_matrix((0, 1, 4))
    assert decoder == PRINTED_DECODER


def test_the_printed_matrix_is_its_own_inverse() -> None:
    f = get_field(PAPER_POLY)
    assert mat_mul(f, PRINTED_DECODER, PRINTED_DECODER) == identity(3)


def test_rebuild_from_first_second_and_fifth_byte(paper_ida: ReferenceIDA) -> None:
    plaintext = bytes([0x12, 0xFE, 0x9B])
    coded = paper_ida.encode(plaintext)
    assert paper_ida.decode({0: coded[0], 1: coded[1], 4: coded[4]}, 3) == plaintext
    # Applying the printed transformation by hand gives the same plaintext: P = Q · S⁻¹.
    f = get_field(PAPER_POLY)
    q = (coded[0][0], coded[1][0], coded[4][0])
    by_hand = bytes(
        f.mul(q[0], PRINTED_DECODER[0][r])
        ^ f.mul(q[1], PRINTED_DECODER[1][r])
        ^ f.mul(q[2], PRINTED_DECODER[2][r])
        for r in range(3)
    )
    assert by_hand == plaintext


def test_any_three_of_five_rebuild_a_longer_text(paper_ida: ReferenceIDA) -> None:
    from itertools import combinations

    text = b"The block size is m bytes and the operation is repeated for every m bytes."
    coded = paper_ida.encode(text)
    for subset in combinations(range(5), 3):
        assert paper_ida.decode({j: coded[j] for j in subset}, len(text)) == text
    with pytest.raises(NotEnoughSlices) as info:
        paper_ida.decode({0: coded[0], 4: coded[4]}, len(text))
    assert (info.value.have, info.value.need) == (2, 3)


def test_a_dependent_matrix_is_refused() -> None:
    bad = ((1, 0, 1), (0, 1, 1), (0, 0, 0))  # third row zero: no 3 columns are independent
    with pytest.raises(ValueError, match="linearly dependent"):
        ReferenceIDA(bad, get_field(PAPER_POLY))
