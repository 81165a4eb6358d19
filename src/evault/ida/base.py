"""The codec seam: what every IDA codec promises, and the block layout they all share.

Contract of a :class:`Codec` (one segment at a time; segmenting lives in ``segments.py``):

* ``encode(segment)`` returns exactly n blocks, index 0..n-1, each ``block_bytes(len(segment))``
  long.  The function is deterministic: the same segment always gives the same blocks (nodes
  encode independently and must agree on the fingerprints).
* ``decode(blocks, segment_len)`` takes any m or more blocks keyed by their index and returns
  the segment, exactly ``segment_len`` bytes.  ``decode_rows`` returns the same bytes as the
  m data rows with the padding cut off, not joined (each a ``bytes`` or a view of one: a
  systematic codec hands back the data blocks it was given, so a caller that sends the rows
  on as they are copies nothing).  Fewer than m raise ``NotEnoughSlices(have, need)``.
  A block of the wrong length, an index outside 0..n-1, or a wrong type is a programming mistake
  (``ValueError``/``TypeError``): callers check blocks against their fingerprints first, and a
  block that passed has the right length.
* ``row_slices[r]`` names the slice whose block is data row r itself, if there is one.
* ``codec_id`` names the bytes, not the implementation: two implementations with the same id
  produce identical blocks, so either can read what the other wrote.

Block layout shared by every codec here (systematic or not): a segment of L bytes is cut into m
data rows of b = ceil(L / m) bytes, the last one zero-padded (so at most m - 1 padding bytes per
segment, and only the final segment of a document is ever short).  Byte k of block i is
``Q_i = Σ_r T[r][i]·P_r`` with ``P_r`` = byte k of data row r (paper §2.5).  The paper groups m
*consecutive* input bytes; taking byte k of each contiguous row instead is a fixed permutation of
the input that makes a systematic codec's data blocks plain substrings of the segment, which is
what ISA-L and zfec do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final, Protocol, runtime_checkable

from evault.errors import NotEnoughSlices

BytesLike = bytes | bytearray | memoryview

#: Largest n any codec here supports: slice indices and Cauchy points must be distinct bytes.
MAX_N: Final = 256


@runtime_checkable
class Codec(Protocol):
    """One IDA code with fixed (m, n).  See the module docstring for the contract."""

    codec_id: str
    m: int
    n: int
    #: For each data row r, the slice whose block is that row itself (zero-padded), or None: a
    #: systematic code has (0, 1, ..., m - 1).  Whoever holds those blocks has the segment.
    row_slices: tuple[int | None, ...]

    def block_bytes(self, segment_len: int) -> int: ...

    def encode(self, segment: BytesLike) -> list[bytes]: ...

    def decode(self, blocks: Mapping[int, BytesLike], segment_len: int) -> bytes: ...

    def decode_rows(
        self, blocks: Mapping[int, BytesLike], segment_len: int
    ) -> list[bytes | memoryview]: ...


def check_int(name: str, value: object) -> int:
    """``value`` as an int, or TypeError naming ``name`` (bools are refused: True is not 1)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}")
    return value


def check_params(m: object, n: object) -> tuple[int, int]:
    """Validate (m, n) for any codec: ints with 1 <= m <= n <= MAX_N."""
    m_ = check_int("m", m)
    n_ = check_int("n", n)
    if m_ < 1:
        raise ValueError(f"m: must be at least 1, got {m_}")
    if n_ < m_:
        raise ValueError(f"n: must be at least m={m_}, got {n_}")
    if n_ > MAX_N:
        raise ValueError(f"n: at most {MAX_N} slices are supported, got {n_}")
    return m_, n_


def check_segment_len(segment_len: object) -> int:
    segment_len = check_int("segment_len", segment_len)
    if segment_len < 0:
        raise ValueError(f"segment_len: must be >= 0, got {segment_len}")
    return segment_len


def row_bytes(segment_len: int, m: int) -> int:
    """b = ceil(segment_len / m): the length of every block of a segment of that length."""
    return -(-segment_len // m)


def as_view(data: object, name: str) -> memoryview:
    """A flat byte view of a bytes-like argument (no copy)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"{name}: expected bytes, got {type(data).__name__}")
    view = memoryview(data)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    return view


def split_rows(segment: memoryview, m: int, b: int) -> list[bytes]:
    """The m data rows of a segment, each b bytes, the last zero-padded."""
    rows = []
    for r in range(m):
        row = bytes(segment[r * b : (r + 1) * b])
        if len(row) < b:
            row += bytes(b - len(row))
        rows.append(row)
    return rows


def cut_pieces(pieces: Sequence[bytes | memoryview], length: int) -> list[bytes | memoryview]:
    """The first ``length`` bytes of consecutive ``pieces``, copying nothing: the piece they
    end in is cut through a view, the pieces after it are left out.  A segment's data rows
    cut at its length are the segment with its padding (only the tail) dropped."""
    out: list[bytes | memoryview] = []
    left = length
    for piece in pieces:
        if left <= 0:
            break
        out.append(piece if len(piece) <= left else memoryview(piece)[:left])
        left -= len(piece)
    return out


def check_blocks(blocks: object, segment_len: int, m: int, n: int, b: int) -> dict[int, bytes]:
    """Validate the ``blocks`` mapping of a decode call; return it with every block as ``bytes``.

    ``bytes`` values pass through uncopied.  Raises ``NotEnoughSlices`` when fewer than m blocks
    are given (the world's doing: slices went missing), ``TypeError``/``ValueError`` for the
    programming mistakes.
    """
    if not isinstance(blocks, Mapping):
        raise TypeError(f"blocks: expected a mapping of slice index to bytes, got {type(blocks)}")
    checked: dict[int, bytes] = {}
    for index, block in blocks.items():
        if isinstance(index, bool) or not isinstance(index, int):
            raise TypeError(f"blocks: key {index!r} is not an int slice index")
        if not 0 <= index < n:
            raise ValueError(f"blocks: slice index {index} is outside 0..{n - 1}")
        if not isinstance(block, bytes):
            block = bytes(as_view(block, f"blocks[{index}]"))
        if len(block) != b:
            raise ValueError(
                f"blocks: block {index} is {len(block)} bytes, a segment of {segment_len} bytes "
                f"has {b}-byte blocks"
            )
        checked[index] = block
    if len(checked) < m:
        raise NotEnoughSlices(have=len(checked), need=m)
    return checked


def choose_indices(available: Mapping[int, object], m: int) -> tuple[int, ...]:
    """m indices to decode from: data rows first (they cost nothing), then the lowest parity."""
    present = sorted(available)
    data = [i for i in present if i < m]
    parity = [i for i in present if i >= m]
    return tuple(data + parity[: m - len(data)])
