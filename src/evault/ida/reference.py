"""Reference IDA: Rabin's dispersal over any m×n matrix T over GF(2^8) (paper §2.5).

Written for clarity, not speed, and used (1) for the paper's worked example, (2) to cross-check
the fast codec byte for byte, (3) as the fallback implementation of any codec id whose native
library is missing, and (4) as the ``ida-ref/v1`` codec.

Encoding computes, for every slice i and every byte position k of the m data rows (layout in
``base.py``)::

    Q_i = Σ_r T[r][i] · P_r

A whole row is multiplied by a constant with one ``bytes.translate`` through a 256-byte table,
and rows are added by XOR-ing them as big integers, so the loops are over matrix entries, not
bytes.  Decoding from slices j_0..j_{m-1}: with S = the columns j_0..j_{m-1} of T, the received
bytes are Q = P·S, hence P = Q·S⁻¹ (§2.5: "the inverse of this matrix is computed over GF(2^8)").
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from evault.ida.base import (
    BytesLike,
    as_view,
    check_blocks,
    check_params,
    check_segment_len,
    choose_indices,
    cut_pieces,
    row_bytes,
    split_rows,
)
from evault.ida.gf256 import GF256
from evault.ida.matrix import Matrix, as_matrix, columns, mat_inv, verify_mds

_DECODE_CACHE_LIMIT = 64


def _combine(
    field: GF256, coefficients: Sequence[int], rows: Sequence[bytes], length: int
) -> bytes:
    """Σ_c coefficients[c] · rows[c], every row ``length`` bytes."""
    acc = 0
    for c, row in zip(coefficients, rows, strict=True):
        if c == 0:
            continue
        term = row if c == 1 else row.translate(field.mul_table(c))
        acc ^= int.from_bytes(term, "little")
    return acc.to_bytes(length, "little")


class ReferenceIDA:
    """IDA over an arbitrary m×n matrix ``t`` (paper orientation: column i makes slice i).

    ``verify=True`` checks that every m columns are independent (exhaustive; see
    ``matrix.verify_mds``); pass ``False`` only for a construction proven MDS.
    """

    def __init__(
        self,
        t: Iterable[Iterable[int]],
        field: GF256,
        *,
        codec_id: str = "ida-matrix",
        verify: bool = True,
    ) -> None:
        if not isinstance(field, GF256):
            raise TypeError(f"field: expected a GF256, got {type(field).__name__}")
        if not isinstance(codec_id, str) or not codec_id:
            raise ValueError("codec_id: expected a non-empty string")
        matrix = as_matrix(t, name="t")
        self.m, self.n = check_params(len(matrix), len(matrix[0]))
        if verify:
            verify_mds(field, matrix)
        self.t: Matrix = matrix
        self.field = field
        self.codec_id = codec_id
        # Columns that are unit vectors: slice i is then data row r itself, no arithmetic.
        self._unit: dict[int, int] = {}
        for i in range(self.n):
            col = [matrix[r][i] for r in range(self.m)]
            if col.count(0) == self.m - 1 and 1 in col:
                self._unit[i] = col.index(1)
        self.row_slices: tuple[int | None, ...] = tuple(
            min((i for i, r in self._unit.items() if r == row), default=None)
            for row in range(self.m)
        )
        self._decode_cache: dict[tuple[int, ...], Matrix] = {}

    def __repr__(self) -> str:
        return f"ReferenceIDA(codec_id={self.codec_id!r}, m={self.m}, n={self.n}, {self.field!r})"

    def block_bytes(self, segment_len: int) -> int:
        return row_bytes(check_segment_len(segment_len), self.m)

    def encode(self, segment: BytesLike) -> list[bytes]:
        view = as_view(segment, "segment")
        b = row_bytes(len(view), self.m)
        rows = split_rows(view, self.m, b)
        out = []
        for i in range(self.n):
            r = self._unit.get(i)
            if r is not None:
                out.append(rows[r])
            else:
                out.append(_combine(self.field, [row[i] for row in self.t], rows, b))
        return out

    def decoding_matrix(self, indices: Sequence[int]) -> Matrix:
        """S⁻¹ for the slices ``indices`` (in that order): data row r = Σ_c S⁻¹[c][r]·Q_{j_c}.

        For the paper's T and slices (0, 1, 4) this is the self-inverse matrix printed in §2.5.
        """
        key = tuple(indices)
        cached = self._decode_cache.get(key)
        if cached is not None:
            return cached
        if len(key) != self.m or len(set(key)) != self.m:
            raise ValueError(f"indices: need {self.m} distinct slice indices, got {key}")
        for j in key:
            if isinstance(j, bool) or not isinstance(j, int) or not 0 <= j < self.n:
                raise ValueError(f"indices: {j!r} is not a slice index in 0..{self.n - 1}")
        inverse = mat_inv(self.field, columns(self.t, key))
        if len(self._decode_cache) >= _DECODE_CACHE_LIMIT:
            self._decode_cache.pop(next(iter(self._decode_cache)))
        self._decode_cache[key] = inverse
        return inverse

    def decode(self, blocks: Mapping[int, BytesLike], segment_len: int) -> bytes:
        return b"".join(self.decode_rows(blocks, segment_len))

    def decode_rows(
        self, blocks: Mapping[int, BytesLike], segment_len: int
    ) -> list[bytes | memoryview]:
        segment_len = check_segment_len(segment_len)
        b = row_bytes(segment_len, self.m)
        views = check_blocks(blocks, segment_len, self.m, self.n, b)
        chosen = choose_indices(views, self.m)
        received = [views[j] for j in chosen]
        rows: list[bytes] = []
        inverse: Matrix | None = None
        for r in range(self.m):
            direct = next((c for c, j in enumerate(chosen) if self._unit.get(j) == r), None)
            if direct is not None:
                rows.append(received[direct])
                continue
            if inverse is None:
                inverse = self.decoding_matrix(chosen)
            rows.append(_combine(self.field, [inverse[c][r] for c in range(self.m)], received, b))
        return cut_pieces(rows, segment_len)
