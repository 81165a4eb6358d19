"""Segmenting: a document of any size streams through the codec one segment at a time.

A document of ``size`` bytes is cut into ``segment_count = ceil(size / segment_bytes)`` segments;
every segment is ``segment_bytes`` long except the last, which holds the rest (1 ..
segment_bytes bytes).  A 0-byte document has zero segments.  Each segment is encoded on its own
into n blocks; slice j of the document is block j of segment 0, then block j of segment 1, and so
on.  The last segment is padded only as much as its codec needs (at most m - 1 bytes), never to
``segment_bytes``: a 10 KiB document makes slices of about 10 KiB / m.  Its true length is not
stored anywhere: :class:`Layout` derives it from the document size, which the signed statement
records.

Memory: :class:`StreamEncoder` holds at most one segment of input plus the n blocks of the
segment being handed out, whatever the document size.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Final

from evault.ida.base import BytesLike, Codec, as_view, check_int
from evault.ida.registry import get_codec

#: Default segment size: 1 MiB.
DEFAULT_SEGMENT_BYTES: Final = 1 << 20
#: Largest segment size (the receipt statement's bound too): memory is a few segments.
MAX_SEGMENT_BYTES: Final = 1 << 30


def check_segment_bytes(segment_bytes: object) -> int:
    value = check_int("segment_bytes", segment_bytes)
    if not 1 <= value <= MAX_SEGMENT_BYTES:
        raise ValueError(f"segment_bytes: must be in 1..{MAX_SEGMENT_BYTES}, got {value}")
    return value


@dataclass(frozen=True)
class Layout:
    """Where every block of a document is, from (size, segment_bytes, codec id, m, n) alone."""

    size: int
    segment_bytes: int
    m: int
    n: int
    codec_id: str
    _codec: Codec = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        size = check_int("size", self.size)
        if size < 0:
            raise ValueError(f"size: must be >= 0, got {size}")
        check_segment_bytes(self.segment_bytes)
        object.__setattr__(self, "_codec", get_codec(self.codec_id, self.m, self.n))

    @classmethod
    def for_codec(cls, size: int, segment_bytes: int, codec: Codec) -> Layout:
        return cls(size, segment_bytes, codec.m, codec.n, codec.codec_id)

    @property
    def codec(self) -> Codec:
        return self._codec

    @property
    def segment_count(self) -> int:
        return -(-self.size // self.segment_bytes)

    def _check_index(self, i: int) -> int:
        i = check_int("i", i)
        if not 0 <= i < self.segment_count:
            raise ValueError(f"i: segment {i} is outside 0..{self.segment_count - 1}")
        return i

    def segment_len(self, i: int) -> int:
        """True length of segment i (the last one is short)."""
        i = self._check_index(i)
        return min(self.segment_bytes, self.size - i * self.segment_bytes)

    def segment_offset(self, i: int) -> int:
        """Offset of segment i in the document."""
        return self._check_index(i) * self.segment_bytes

    def block_bytes(self, i: int) -> int:
        """Length of every block of segment i."""
        return self._codec.block_bytes(self.segment_len(i))

    def block_offset(self, i: int) -> int:
        """Offset of the block of segment i inside a slice (every earlier segment is full)."""
        i = self._check_index(i)
        return i * self._codec.block_bytes(self.segment_bytes)

    def slice_bytes(self) -> int:
        """Length of every slice of the document."""
        count = self.segment_count
        if count == 0:
            return 0
        return self.block_offset(count - 1) + self.block_bytes(count - 1)


class StreamEncoder:
    """Feed document bytes in chunks of any size; get the n blocks of each segment as it fills.

    ::

        enc = StreamEncoder(codec, DEFAULT_SEGMENT_BYTES)
        for chunk in source:
            for blocks in enc.feed(chunk):
                ...                      # blocks[j] goes to slice j
        for blocks in enc.finish():      # the last, short segment, if any
            ...

    ``feed`` returns an iterator that must be consumed before the next ``feed``/``finish``
    (a ValueError says so otherwise, rather than losing data).  ``feed`` keeps a reference to
    the chunk until its iterator is exhausted, and whole segments inside a chunk are encoded
    straight from it without a copy.
    """

    def __init__(self, codec: Codec, segment_bytes: int) -> None:
        if not isinstance(codec, Codec):
            raise TypeError(f"codec: expected a Codec, got {type(codec).__name__}")
        self.codec = codec
        self.segment_bytes = check_segment_bytes(segment_bytes)
        self.size = 0
        self.segments = 0
        self._pending = bytearray()
        self._input: memoryview | None = None
        self._finished = False

    def _check_ready(self, name: str) -> None:
        if self._finished:
            raise ValueError(f"{name}: the encoder is finished")
        if self._input is not None:
            raise ValueError(f"{name}: the blocks of the previous feed() were not all consumed")

    def feed(self, data: BytesLike) -> Iterator[list[bytes]]:
        """Add ``data``; iterate the result for the blocks of each segment it completes."""
        self._check_ready("feed")
        view = as_view(data, "data")
        if not view:
            return iter(())
        self.size += len(view)
        self._input = view
        return self._drain(view)

    def _drain(self, view: memoryview) -> Iterator[list[bytes]]:
        size = self.segment_bytes
        pos = 0
        end = len(view)
        while pos < end:
            if not self._pending and end - pos >= size:
                blocks = self.codec.encode(view[pos : pos + size])
                pos += size
            else:
                take = min(size - len(self._pending), end - pos)
                self._pending += view[pos : pos + take]
                pos += take
                if len(self._pending) < size:
                    break
                blocks = self.codec.encode(self._pending)
                # A new buffer rather than clearing: nothing may still view the old one.
                self._pending = bytearray()
            self.segments += 1
            yield blocks
        self._input = None

    def finish(self) -> Iterator[list[bytes]]:
        """End of the document: the blocks of the last, short segment (none if there is none)."""
        self._check_ready("finish")
        self._finished = True
        if not self._pending:
            return iter(())
        blocks = self.codec.encode(self._pending)
        self._pending = bytearray()
        self.segments += 1
        return iter((blocks,))

    def layout(self) -> Layout:
        """The layout of what was fed so far (complete once ``finish`` is done)."""
        return Layout.for_codec(self.size, self.segment_bytes, self.codec)


def decode_segment(codec: Codec, blocks: Mapping[int, BytesLike], segment_len: int) -> bytes:
    """Rebuild one segment from any m of its blocks (see ``Codec.decode``)."""
    return codec.decode(blocks, segment_len)


def disperse(
    data: BytesLike, codec: Codec, segment_bytes: int = DEFAULT_SEGMENT_BYTES
) -> list[bytes]:
    """The n slices of a whole in-memory document (for small documents and tests)."""
    parts: list[list[bytes]] = [[] for _ in range(codec.n)]
    encoder = StreamEncoder(codec, segment_bytes)
    for segment_blocks in (*encoder.feed(data), *encoder.finish()):
        for j, block in enumerate(segment_blocks):
            parts[j].append(block)
    return [b"".join(p) for p in parts]


def reconstruct(layout: Layout, slices: Mapping[int, BytesLike]) -> bytes:
    """The document from any m of its whole slices (for small documents and tests)."""
    views = {j: as_view(s, f"slices[{j}]") for j, s in slices.items()}
    for j, view in views.items():
        if len(view) != layout.slice_bytes():
            raise ValueError(
                f"slices: slice {j} is {len(view)} bytes, the layout says {layout.slice_bytes()}"
            )
    out = []
    for i in range(layout.segment_count):
        start = layout.block_offset(i)
        stop = start + layout.block_bytes(i)
        blocks = {j: view[start:stop] for j, view in views.items()}
        out.append(layout.codec.decode(blocks, layout.segment_len(i)))
    return b"".join(out)
