"""Distributed fingerprints (Krawczyk, "Distributed fingerprints and secure information
dispersal", PODC 1993; paper §2.1–§2.2): every node keeps the fingerprints of *all* n slices,
so the honest majority's fingerprints tell a reader which slices are good.

Scheme ``sha256-merkle/v1`` (SHA-256 tagged hashes, ``evault.encoding.tagged``)::

    leaf(j, i, block)  = H_tag("evault/merkle-leaf/v1",  u32be(j) || u64be(i) || block)
    node(left, right)  = H_tag("evault/merkle-node/v1",  left || right)
    empty root         = H_tag("evault/merkle-empty/v1", "")

j is the slice index, i the segment index, so a block moved to another slice or another segment
no longer matches.  Leaves and inner nodes have different tags, so no inner node can pass for a
leaf (the second-preimage trick against untagged Merkle trees).  The root of slice j is built
level by level: pairs are hashed left to right and an odd last node is promoted unchanged to the
next level (never duplicated, which would let two different leaf lists share a root, as in
CVE-2012-2459).  This is exactly the tree shape of RFC 9162 §2.1.1 (split at the largest power of
two below the size).  One leaf: the root is that leaf.  No leaves (an empty document): the empty
root.

The fingerprint vector FV is the n slice roots.  Byte form (``to_bytes``), version 1::

    offset  size   field
    0       1      s = length of the scheme id
    1       s      scheme id, ASCII ("sha256-merkle/v1")
    1+s     2      n, big-endian, 1..256
    3+s     32·n   the roots of slices 0..n-1

``fv_hash = H_tag("evault/fingerprint-vector/v1", to_bytes())`` commits to the scheme, n and every
root; it goes into the signed receipt statement.

Why SHA-256 and not BLAKE3 for the leaves: ``evault bench codec`` measures SHA-256 (SHA-NI) at
≈1.7 GB/s and BLAKE3 at ≈5.8 GB/s here.  A node fingerprints n/m times the document (all n slices),
so at (3, 5) SHA-256 costs ≈1 ms per MiB against ≈0.2 ms for ISA-L encoding: it is the largest
CPU cost of a deposit, but still above the ~1 GB/s the node's HTTPS and fsync path can take, and
keeping one hash function means anyone (openssl, a browser's WebCrypto) can recompute an FV.  A
faster leaf hash would be a new scheme id (``blake3-merkle/v2``), never a silent change.
"""

from __future__ import annotations

import hmac
import struct
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from evault.encoding import TAGS, tagged_hash, tagged_hasher
from evault.errors import (
    ConflictingFingerprints,
    FingerprintMismatch,
    FormatError,
    NoFingerprintQuorum,
    NoMatchingFingerprint,
    SliceCorrupt,
)
from evault.ida.base import MAX_N, BytesLike, as_view, check_int

FINGERPRINT_SCHEME: Final = "sha256-merkle/v1"
#: Length of every hash here (leaves, roots, fv_hash).
DIGEST_BYTES: Final = 32

_LEAF_TAG: Final = TAGS["merkle-leaf"]
_NODE_TAG: Final = TAGS["merkle-node"]
_FV_TAG: Final = TAGS["fv"]
_LEAF_PREFIX = tagged_hasher(_LEAF_TAG)
_NODE_PREFIX = tagged_hasher(_NODE_TAG)
_LEAF_HEADER = struct.Struct(">IQ")

#: Root of a slice with no blocks.
EMPTY_ROOT: Final = tagged_hash(TAGS["merkle-empty"], b"")


def _check_digest(value: object, name: str) -> bytes:
    if not isinstance(value, bytes):
        raise TypeError(f"{name}: expected bytes, got {type(value).__name__}")
    if len(value) != DIGEST_BYTES:
        raise ValueError(f"{name}: expected {DIGEST_BYTES} bytes, got {len(value)}")
    return value


def _check_slice_index(slice_index: object) -> int:
    j = check_int("slice_index", slice_index)
    if not 0 <= j < MAX_N:
        raise ValueError(f"slice_index: must be in 0..{MAX_N - 1}, got {j}")
    return j


def _check_segment_index(segment_index: object) -> int:
    i = check_int("segment_index", segment_index)
    if not 0 <= i < 1 << 64:
        raise ValueError(f"segment_index: must be in 0..2^64-1, got {i}")
    return i


def leaf_hash(
    slice_index: int, segment_index: int, block: BytesLike | Sequence[BytesLike]
) -> bytes:
    """The Merkle leaf of block ``segment_index`` of slice ``slice_index``; the block may be
    given whole or as a list (or tuple) of its consecutive pieces."""
    header = _LEAF_HEADER.pack(_check_slice_index(slice_index), _check_segment_index(segment_index))
    h = _LEAF_PREFIX.copy()
    h.update(header)
    for piece in block if isinstance(block, list | tuple) else (block,):
        h.update(as_view(piece, "block"))
    return h.digest()


def _node(left: bytes, right: bytes) -> bytes:
    h = _NODE_PREFIX.copy()
    h.update(left)
    h.update(right)
    return h.digest()


def _check_leaves(leaves: Sequence[bytes]) -> list[bytes]:
    if isinstance(leaves, bytes | bytearray | str) or not isinstance(leaves, Sequence):
        raise TypeError("leaves: expected a sequence of 32-byte digests")
    return [_check_digest(leaf, f"leaves[{k}]") for k, leaf in enumerate(leaves)]


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    """Root over ``leaves`` (odd last node promoted; no leaves → ``EMPTY_ROOT``)."""
    level = _check_leaves(leaves)
    if not level:
        return EMPTY_ROOT
    while len(level) > 1:
        nxt = [_node(level[k], level[k + 1]) for k in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def merkle_path(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """Sibling hashes from leaf ``index`` up to the root (levels where it is promoted add none)."""
    level = _check_leaves(leaves)
    index = check_int("index", index)
    if not 0 <= index < len(level):
        raise ValueError(f"index: {index} is outside 0..{len(level) - 1}")
    path = []
    while len(level) > 1:
        sibling = index ^ 1
        if sibling < len(level):
            path.append(level[sibling])
        nxt = [_node(level[k], level[k + 1]) for k in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
        index //= 2
    return path


def verify_block(
    root: bytes,
    slice_index: int,
    segment_index: int,
    segment_count: int,
    block: BytesLike,
    path: Sequence[bytes],
) -> None:
    """Check one block against its slice's root with its Merkle path; raise ``SliceCorrupt``.

    ``segment_count`` fixes the tree's shape, hence which levels need a sibling; a path of the
    wrong length or with a wrong-sized hash is as corrupt as a wrong block.
    """
    root = _check_digest(root, "root")
    j = _check_slice_index(slice_index)
    i = _check_segment_index(segment_index)
    count = check_int("segment_count", segment_count)
    if not 0 <= i < count:
        raise ValueError(f"segment_index: {i} is outside 0..{count - 1}")
    if isinstance(path, bytes | bytearray | str) or not isinstance(path, Sequence):
        raise TypeError("path: expected a sequence of 32-byte digests")
    node = leaf_hash(j, i, block)
    used = 0
    index, width = i, count
    while width > 1:
        if not (index == width - 1 and width % 2):
            if used >= len(path):
                raise SliceCorrupt(j, i, "Merkle path is too short")
            sibling = path[used]
            if not isinstance(sibling, bytes) or len(sibling) != DIGEST_BYTES:
                raise SliceCorrupt(j, i, f"Merkle path entry {used} is not a 32-byte hash")
            used += 1
            node = _node(sibling, node) if index % 2 else _node(node, sibling)
        index //= 2
        width = (width + 1) // 2
    if used != len(path):
        raise SliceCorrupt(j, i, "Merkle path is too long")
    if not hmac.compare_digest(node, root):
        raise SliceCorrupt(j, i, "block does not hash to the slice's root")


class SliceFingerprinter:
    """Leaves and root of one slice, built one block (segment) at a time."""

    def __init__(self, slice_index: int) -> None:
        self.slice_index = _check_slice_index(slice_index)
        self._leaves: list[bytes] = []

    def add(self, block: BytesLike) -> bytes:
        """Hash the next segment's block; returns its leaf."""
        leaf = leaf_hash(self.slice_index, len(self._leaves), block)
        self._leaves.append(leaf)
        return leaf

    @property
    def count(self) -> int:
        return len(self._leaves)

    def leaves(self) -> list[bytes]:
        return list(self._leaves)

    def root(self) -> bytes:
        return merkle_root(self._leaves)


class DocumentFingerprinter:
    """The n slice fingerprinters of one document: ``add(blocks)`` per segment, then ``fv()``."""

    def __init__(self, n: int) -> None:
        n = check_int("n", n)
        if not 1 <= n <= MAX_N:
            raise ValueError(f"n: must be in 1..{MAX_N}, got {n}")
        self.slices = [SliceFingerprinter(j) for j in range(n)]

    def add(self, blocks: Sequence[BytesLike]) -> None:
        if len(blocks) != len(self.slices):
            raise ValueError(f"blocks: expected {len(self.slices)} blocks, got {len(blocks)}")
        for fingerprinter, block in zip(self.slices, blocks, strict=True):
            fingerprinter.add(block)

    def fv(self) -> FingerprintVector:
        return FingerprintVector(tuple(s.root() for s in self.slices))


class SliceVerifier:
    """Checks the blocks of one slice as they stream in, one hash per block.

    The whole leaf list (32 bytes per segment, sent ahead of the blocks) is checked once against
    the slice's root from the agreed FV; after that each block only needs its leaf recomputed.
    """

    def __init__(self, root: bytes, slice_index: int, leaves: Sequence[bytes]) -> None:
        self.slice_index = _check_slice_index(slice_index)
        root = _check_digest(root, "root")
        if isinstance(leaves, bytes | bytearray | str) or not isinstance(leaves, Sequence):
            raise TypeError("leaves: expected a sequence of 32-byte digests")
        if any(not isinstance(leaf, bytes) or len(leaf) != DIGEST_BYTES for leaf in leaves):
            raise SliceCorrupt(self.slice_index, None, "leaf list holds a value that is no hash")
        if not hmac.compare_digest(merkle_root(leaves), root):
            raise SliceCorrupt(
                self.slice_index, None, "leaf list does not hash to the slice's root"
            )
        self.leaves: tuple[bytes, ...] = tuple(leaves)

    @property
    def segment_count(self) -> int:
        return len(self.leaves)

    def verify(self, segment_index: int, block: BytesLike | Sequence[BytesLike]) -> None:
        """Raise ``SliceCorrupt`` unless ``block`` (whole, or a list of its pieces) is block
        ``segment_index`` of this slice."""
        i = check_int("segment_index", segment_index)
        if not 0 <= i < len(self.leaves):
            raise ValueError(f"segment_index: {i} is outside 0..{len(self.leaves) - 1}")
        if not hmac.compare_digest(leaf_hash(self.slice_index, i, block), self.leaves[i]):
            raise SliceCorrupt(self.slice_index, i, "block does not match its leaf hash")


def leaves_to_bytes(leaves: Sequence[bytes]) -> bytes:
    """The wire form of a leaf list: the digests concatenated, segment order."""
    return b"".join(_check_leaves(leaves))


def leaves_from_bytes(data: BytesLike, segment_count: int) -> list[bytes]:
    """Parse ``segment_count`` leaves; ``FormatError`` if the length is not 32·segment_count."""
    view = as_view(data, "data")
    count = check_int("segment_count", segment_count)
    if len(view) != DIGEST_BYTES * count:
        raise FormatError(
            f"leaf list is {len(view)} bytes, {count} segments need {DIGEST_BYTES * count}"
        )
    raw = bytes(view)
    return [raw[k : k + DIGEST_BYTES] for k in range(0, len(raw), DIGEST_BYTES)]


@dataclass(frozen=True)
class FingerprintVector:
    """FV: the Merkle roots of slices 0..n-1 under ``scheme``."""

    roots: tuple[bytes, ...]
    scheme: str = FINGERPRINT_SCHEME

    def __post_init__(self) -> None:
        if not isinstance(self.roots, tuple):
            if isinstance(self.roots, list):
                object.__setattr__(self, "roots", tuple(self.roots))
            else:
                raise TypeError("roots: expected a tuple of 32-byte digests")
        if not 1 <= len(self.roots) <= MAX_N:
            raise ValueError(f"roots: need 1..{MAX_N} roots, got {len(self.roots)}")
        for k, root in enumerate(self.roots):
            _check_digest(root, f"roots[{k}]")
        if self.scheme != FINGERPRINT_SCHEME:
            raise ValueError(f"scheme: unknown fingerprint scheme {self.scheme!r}")

    @property
    def n(self) -> int:
        return len(self.roots)

    def to_bytes(self) -> bytes:
        scheme = self.scheme.encode("ascii")
        return (
            bytes([len(scheme)])
            + scheme
            + len(self.roots).to_bytes(2, "big")
            + b"".join(self.roots)
        )

    @classmethod
    def from_bytes(cls, data: BytesLike) -> FingerprintVector:
        raw = bytes(as_view(data, "data"))
        if not raw:
            raise FormatError("fingerprint vector is empty")
        s = raw[0]
        scheme_bytes = raw[1 : 1 + s]
        if len(scheme_bytes) != s or len(raw) < 3 + s:
            raise FormatError("fingerprint vector is truncated")
        try:
            scheme = scheme_bytes.decode("ascii")
        except UnicodeDecodeError as exc:
            raise FormatError("fingerprint vector scheme id is not ASCII") from exc
        if scheme != FINGERPRINT_SCHEME:
            raise FormatError(f"unknown fingerprint scheme {scheme!r}")
        n = int.from_bytes(raw[1 + s : 3 + s], "big")
        body = raw[3 + s :]
        if not 1 <= n <= MAX_N:
            raise FormatError(f"fingerprint vector has n={n}, outside 1..{MAX_N}")
        if len(body) != DIGEST_BYTES * n:
            raise FormatError(
                f"fingerprint vector holds {len(body)} bytes of roots, n={n} needs "
                f"{DIGEST_BYTES * n}"
            )
        roots = tuple(body[k : k + DIGEST_BYTES] for k in range(0, len(body), DIGEST_BYTES))
        return cls(roots, scheme)

    def fv_hash(self) -> bytes:
        """H(FV): what the receipt statement signs."""
        return tagged_hash(_FV_TAG, self.to_bytes())

    def to_hex_list(self) -> list[str]:
        return [root.hex() for root in self.roots]

    @classmethod
    def from_hex_list(cls, items: object, scheme: str = FINGERPRINT_SCHEME) -> FingerprintVector:
        """Parse the JSON form (a list of 64-char lowercase hex roots); ``FormatError`` if bad."""
        if not isinstance(items, list) or not 1 <= len(items) <= MAX_N:
            raise FormatError(f"fingerprint vector must be a list of 1..{MAX_N} hex strings")
        roots = []
        for k, item in enumerate(items):
            if not isinstance(item, str) or len(item) != 2 * DIGEST_BYTES or item != item.lower():
                raise FormatError(f"fingerprint vector entry {k} is not 64 lowercase hex digits")
            try:
                roots.append(bytes.fromhex(item))
            except ValueError as exc:
                raise FormatError(f"fingerprint vector entry {k} is not hex") from exc
        if scheme != FINGERPRINT_SCHEME:
            raise FormatError(f"unknown fingerprint scheme {scheme!r}")
        return cls(tuple(roots), scheme)

    def verify_hash(self, expected: bytes) -> None:
        """Raise ``FingerprintMismatch`` unless ``fv_hash()`` equals ``expected``."""
        expected = _check_digest(expected, "expected")
        if not hmac.compare_digest(self.fv_hash(), expected):
            raise FingerprintMismatch(
                "the fingerprint vector does not match the hash the receipt signs",
                expected=expected.hex(),
                actual=self.fv_hash().hex(),
            )


@dataclass(frozen=True)
class FVSelection:
    """The chosen FV, who agreed with it, who sent another one, and who sent none."""

    fv: FingerprintVector
    agreeing: frozenset[str]
    disagreeing: frozenset[str]
    missing: frozenset[str] = frozenset()


def select_fv(
    candidates: Mapping[str, FingerprintVector | None],
    t: int,
    expected_hash: bytes | None = None,
) -> FVSelection:
    """Settle on the FV to retrieve with (DESIGN §6).

    With ``expected_hash`` (from a verified receipt): the candidate whose ``fv_hash`` equals it,
    however few sources sent it (the receipt's signature vouches for it); ``NoMatchingFingerprint``
    (both a ``NoFingerprintQuorum`` and a ``FingerprintMismatch``) if none does.

    Without: the one vector sent by at least t+1 sources.  With at most t liars among the
    sources, at least one of those t+1 is honest, and honest nodes all hold the same FV, so this
    is the true one; ``NoFingerprintQuorum`` if no vector has t+1 votes, and
    ``ConflictingFingerprints`` (a subclass) if two have, which means more than t sources lie.
    ``None`` marks a source that sent no (usable) vector: it is reported as missing, not as
    disagreeing.
    """
    if not isinstance(candidates, Mapping):
        raise TypeError("candidates: expected a mapping of source name to FingerprintVector")
    t = check_int("t", t)
    if t < 0:
        raise ValueError(f"t: must be >= 0, got {t}")
    if expected_hash is not None:
        expected_hash = _check_digest(expected_hash, "expected_hash")
    votes: Counter[FingerprintVector] = Counter()
    missing = set()
    for source, fv in candidates.items():
        if not isinstance(source, str):
            raise TypeError(f"candidates: source name {source!r} is not a str")
        if fv is None:
            missing.add(source)
        elif isinstance(fv, FingerprintVector):
            votes[fv] += 1
        else:
            raise TypeError(f"candidates: value for {source!r} is not a FingerprintVector or None")

    chosen: FingerprintVector | None
    if expected_hash is not None:
        chosen = next(
            (fv for fv in votes if hmac.compare_digest(fv.fv_hash(), expected_hash)), None
        )
        if chosen is None:
            raise NoMatchingFingerprint(len(candidates), len(votes), expected_hash.hex())
    else:
        need = t + 1
        qualified = [fv for fv, count in votes.items() if count >= need]
        best = max(votes.values(), default=0)
        if not qualified:
            raise NoFingerprintQuorum(best=best, need=need, sources=len(candidates))
        if len(qualified) > 1:
            raise ConflictingFingerprints(
                best=best, need=need, sources=len(candidates), groups=len(qualified)
            )
        chosen = qualified[0]
    agreeing = frozenset(s for s, fv in candidates.items() if fv == chosen)
    disagreeing = frozenset(s for s, fv in candidates.items() if fv is not None and fv != chosen)
    return FVSelection(chosen, agreeing, disagreeing, frozenset(missing))


def fingerprint_slices(
    blocks_per_segment: Iterable[Sequence[BytesLike]], n: int
) -> FingerprintVector:
    """FV of a document given the n blocks of each segment in order (small documents, tests)."""
    doc = DocumentFingerprinter(n)
    for blocks in blocks_per_segment:
        doc.add(blocks)
    return doc.fv()
