"""Arithmetic in GF(2^8) with a selectable irreducible polynomial (paper §2.5).

An element is an ``int`` in ``0..255`` read as a polynomial over GF(2): bit k is the coefficient
of x^k.  Addition is XOR; multiplication is polynomial multiplication reduced modulo the field
polynomial.  Two polynomials matter here:

* ``PAPER_POLY`` = x^8+x^6+x^5+x^4+1 (0x171), the one the paper's worked example uses;
* ``ISAL_POLY``  = x^8+x^4+x^3+x^2+1 (0x11D), the one ISA-L, zfec and most Reed–Solomon code use.

A field is built from log/antilog tables over a primitive element found at construction (the
paper's polynomial need not have x as a generator, so we search rather than assume).  Bulk
multiplication of a byte string by a constant uses a 256-byte ``bytes.translate`` table, which runs
at C speed without numpy.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Final

#: x^8 + x^6 + x^5 + x^4 + 1, the polynomial of the paper's §2.5 example.
PAPER_POLY: Final = 0x171
#: x^8 + x^4 + x^3 + x^2 + 1, the polynomial of ISA-L (and zfec, Jerasure, most RS codecs).
ISAL_POLY: Final = 0x11D

# The multiplicative group has order 255 = 3 * 5 * 17; an element g generates it iff
# g^(255/p) != 1 for each prime p dividing 255.
_GROUP_ORDER: Final = 255
_GROUP_PRIMES: Final = (3, 5, 17)


def _poly_mod(a: int, b: int) -> int:
    """Remainder of a divided by b, both polynomials over GF(2) encoded as ints."""
    db = b.bit_length()
    while a.bit_length() >= db:
        a ^= b << (a.bit_length() - db)
    return a


def is_irreducible(poly: int) -> bool:
    """True iff ``poly`` (a polynomial over GF(2), degree >= 1) has no non-trivial factor.

    Trial division by every polynomial of degree 1 .. deg/2: a reducible polynomial always has a
    factor of at most half its degree.  Degree 8 needs at most 30 divisions.
    """
    if isinstance(poly, bool) or not isinstance(poly, int):
        raise TypeError("poly: expected an int")
    if poly < 2:
        raise ValueError(f"poly: {poly:#x} has degree < 1")
    degree = poly.bit_length() - 1
    return all(_poly_mod(poly, q) != 0 for q in range(2, 1 << (degree // 2 + 1)))


def _clmul_mod(a: int, b: int, poly: int) -> int:
    """a*b modulo poly, by shift-and-add; used only to build the tables."""
    result = 0
    while b:
        if b & 1:
            result ^= a
        b >>= 1
        a <<= 1
        if a & 0x100:
            a ^= poly
    return result


class GF256:
    """The field GF(2)[x] / (poly) with 256 elements.

    Build one with :func:`get_field` so tables are shared.  Every method takes and returns ints
    in ``0..255``; arguments are validated only where a wrong value would silently give a wrong
    answer (table look-ups with out-of-range ints would raise ``IndexError`` anyway).
    """

    __slots__ = ("_exp", "_log", "_mul_tables", "generator", "poly")

    def __init__(self, poly: int) -> None:
        if isinstance(poly, bool) or not isinstance(poly, int):
            raise TypeError("poly: expected an int")
        if not 0x100 <= poly <= 0x1FF:
            raise ValueError(f"poly: {poly:#x} is not a polynomial of degree 8")
        if not is_irreducible(poly):
            raise ValueError(f"poly: {poly:#x} is reducible over GF(2), so it makes no field")
        self.poly = poly
        self.generator = self._find_generator()
        exp = [0] * (2 * _GROUP_ORDER)
        log = [0] * 256
        x = 1
        for i in range(_GROUP_ORDER):
            exp[i] = x
            log[x] = i
            x = _clmul_mod(x, self.generator, poly)
        # The doubled antilog table lets mul() skip the "mod 255" on log[a] + log[b].
        for i in range(_GROUP_ORDER, 2 * _GROUP_ORDER):
            exp[i] = exp[i - _GROUP_ORDER]
        self._exp = exp
        self._log = log
        self._mul_tables: dict[int, bytes] = {}

    def _find_generator(self) -> int:
        def power(g: int, e: int) -> int:
            r = 1
            while e:
                if e & 1:
                    r = _clmul_mod(r, g, self.poly)
                g = _clmul_mod(g, g, self.poly)
                e >>= 1
            return r

        for g in range(2, 256):
            if all(power(g, _GROUP_ORDER // p) != 1 for p in _GROUP_PRIMES):
                return g
        # Unreachable: the multiplicative group of a finite field is cyclic.
        raise ValueError(f"poly: {self.poly:#x} gives no generator")  # pragma: no cover

    def __repr__(self) -> str:
        return f"GF256(poly={self.poly:#x})"

    @staticmethod
    def add(a: int, b: int) -> int:
        """a + b (= a - b): XOR, characteristic 2."""
        return a ^ b

    def mul(self, a: int, b: int) -> int:
        if a == 0 or b == 0:
            return 0
        return self._exp[self._log[a] + self._log[b]]

    def inv(self, a: int) -> int:
        if a == 0:
            raise ZeroDivisionError("a: 0 has no inverse in GF(2^8)")
        return self._exp[_GROUP_ORDER - self._log[a]]

    def div(self, a: int, b: int) -> int:
        if b == 0:
            raise ZeroDivisionError("b: division by 0 in GF(2^8)")
        if a == 0:
            return 0
        return self._exp[self._log[a] + _GROUP_ORDER - self._log[b]]

    def pow(self, a: int, e: int) -> int:
        if e < 0:
            return self.pow(self.inv(a), -e)
        if a == 0:
            return 1 if e == 0 else 0
        return self._exp[(self._log[a] * e) % _GROUP_ORDER]

    def mul_table(self, c: int) -> bytes:
        """The 256-byte table t with t[x] = c*x, for ``bytes.translate``."""
        table = self._mul_tables.get(c)
        if table is None:
            if not 0 <= c <= 255:
                raise ValueError(f"c: {c} is not a field element")
            table = bytes(self.mul(c, x) for x in range(256))
            self._mul_tables[c] = table
        return table

    def mul_bytes(self, c: int, data: bytes | bytearray | memoryview) -> bytes:
        """Every byte of ``data`` multiplied by the constant ``c``."""
        if c == 1:
            return bytes(data)
        if c == 0:
            return bytes(len(data))
        return bytes(data).translate(self.mul_table(c))


@lru_cache(maxsize=8)
def get_field(poly: int) -> GF256:
    """The (shared, cached) field for ``poly``; raises ValueError if it is not irreducible."""
    return GF256(poly)
