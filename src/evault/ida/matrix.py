"""Small dense matrices over GF(2^8): product, inverse, the MDS check, Cauchy generators.

A matrix is a tuple of rows, each a tuple of ints in ``0..255``.  The IDA matrix follows the
paper's orientation (§2.5): T is m×n, column i belongs to slice i, and the output byte of slice i
is ``Q_i = Σ_r T[r][i]·P_r``.  ISA-L stores the transpose (an n×m "encode matrix" whose row i
makes slice i); :func:`transpose` converts.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from itertools import combinations
from math import comb

from evault.ida.gf256 import GF256

Matrix = tuple[tuple[int, ...], ...]

#: Largest number of m-column subsets :func:`verify_mds` will try (each costs one m×m rank).
MAX_MDS_SUBSETS = 200_000


def as_matrix(rows: Iterable[Iterable[int]], *, name: str = "matrix") -> Matrix:
    """Validate a rectangular matrix of field elements and freeze it as tuples."""
    try:
        frozen = tuple(tuple(int(x) for x in row) for row in rows)
    except TypeError as exc:
        raise TypeError(f"{name}: expected rows of ints") from exc
    if not frozen or not frozen[0]:
        raise ValueError(f"{name}: must have at least one row and one column")
    width = len(frozen[0])
    for r, row in enumerate(frozen):
        if len(row) != width:
            raise ValueError(f"{name}: row {r} has {len(row)} entries, row 0 has {width}")
        for x in row:
            if not 0 <= x <= 255:
                raise ValueError(f"{name}: entry {x} in row {r} is not a byte")
    return frozen


def identity(size: int) -> Matrix:
    return tuple(tuple(1 if i == j else 0 for j in range(size)) for i in range(size))


def transpose(a: Matrix) -> Matrix:
    return tuple(zip(*a, strict=True))


def mat_mul(field: GF256, a: Matrix, b: Matrix) -> Matrix:
    if len(a[0]) != len(b):
        raise ValueError(f"b: has {len(b)} rows, a has {len(a[0])} columns")
    cols = transpose(b)
    out = []
    for row in a:
        out_row = []
        for col in cols:
            acc = 0
            for x, y in zip(row, col, strict=True):
                acc ^= field.mul(x, y)
            out_row.append(acc)
        out.append(tuple(out_row))
    return tuple(out)


def mat_inv(field: GF256, a: Matrix) -> Matrix:
    """Inverse of the square matrix ``a`` by Gauss–Jordan elimination; ValueError if singular."""
    size = len(a)
    if any(len(row) != size for row in a):
        raise ValueError("a: matrix is not square")
    work = [list(row) + [1 if i == j else 0 for j in range(size)] for i, row in enumerate(a)]
    for col in range(size):
        pivot = next((r for r in range(col, size) if work[r][col] != 0), None)
        if pivot is None:
            raise ValueError("a: matrix is singular")
        work[col], work[pivot] = work[pivot], work[col]
        scale = field.inv(work[col][col])
        work[col] = [field.mul(scale, x) for x in work[col]]
        for r in range(size):
            factor = work[r][col]
            if r != col and factor != 0:
                pivot_row = work[col]
                work[r] = [
                    x ^ field.mul(factor, p) for x, p in zip(work[r], pivot_row, strict=True)
                ]
    return tuple(tuple(row[size:]) for row in work)


def rank(field: GF256, a: Matrix) -> int:
    work = [list(row) for row in a]
    rows, cols = len(work), len(work[0])
    rk = 0
    for col in range(cols):
        pivot = next((r for r in range(rk, rows) if work[r][col] != 0), None)
        if pivot is None:
            continue
        work[rk], work[pivot] = work[pivot], work[rk]
        scale = field.inv(work[rk][col])
        work[rk] = [field.mul(scale, x) for x in work[rk]]
        for r in range(rows):
            factor = work[r][col]
            if r != rk and factor != 0:
                work[r] = [x ^ field.mul(factor, p) for x, p in zip(work[r], work[rk], strict=True)]
        rk += 1
        if rk == rows:
            break
    return rk


def columns(a: Matrix, indices: Sequence[int]) -> Matrix:
    """The square (or not) matrix made of the listed columns of ``a``, in that order."""
    return tuple(tuple(row[i] for i in indices) for row in a)


def verify_mds(field: GF256, t: Matrix, *, max_subsets: int = MAX_MDS_SUBSETS) -> None:
    """Raise ValueError unless every m columns of the m×n matrix ``t`` are independent.

    This is the property §2.5 requires of T: any m slices then rebuild the data.  The check is
    exhaustive (C(n, m) ranks), so it refuses matrices with more than ``max_subsets`` subsets
    rather than run for hours; families proven MDS (Cauchy) skip it.
    """
    m, n = len(t), len(t[0])
    if m > n:
        raise ValueError(f"matrix: has {m} rows but only {n} columns")
    count = comb(n, m)
    if count > max_subsets:
        raise ValueError(
            f"matrix: {count} column subsets of size {m} is too many to check "
            f"(limit {max_subsets}); use a construction proven MDS such as Cauchy"
        )
    for subset in combinations(range(n), m):
        if rank(field, columns(t, subset)) < m:
            raise ValueError(f"matrix: columns {subset} are linearly dependent")


def cauchy_systematic(field: GF256, m: int, n: int) -> Matrix:
    """The m×n systematic Cauchy matrix [I_m | C] with C[r][i] = 1 / (i XOR r), m <= i < n.

    Transposed, this is ISA-L's ``gf_gen_cauchy1_matrix(a, n, m)`` (row i, column r holds
    ``gf_inv(i ^ r)``), which liberasurecode's ``isa_l_rs_cauchy`` backend uses.  With
    x_i = i (i >= m) and y_r = r (r < m) all distinct, C is a Cauchy matrix 1/(x_i + y_r), and
    every square submatrix of a Cauchy matrix is non-singular; hence every m columns of [I | C]
    are independent (any m columns pick an identity part and a square Cauchy minor).  Distinct
    x and y need n <= 256.
    """
    if not 1 <= m <= n <= 256:
        raise ValueError(f"m, n: need 1 <= m <= n <= 256, got m={m}, n={n}")
    return tuple(
        tuple((1 if i == r else 0) if i < m else field.inv(i ^ r) for i in range(n))
        for r in range(m)
    )
