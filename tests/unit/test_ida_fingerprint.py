import hashlib
import itertools

import pytest

from evault.errors import (
    ConflictingFingerprints,
    FingerprintError,
    FingerprintMismatch,
    FormatError,
    NoFingerprintQuorum,
    SliceCorrupt,
)
from evault.ida import DEFAULT_CODEC_ID, StreamEncoder, get_codec
from evault.ida.fingerprint import (
    EMPTY_ROOT,
    FINGERPRINT_SCHEME,
    DocumentFingerprinter,
    FingerprintVector,
    SliceFingerprinter,
    SliceVerifier,
    leaf_hash,
    leaves_from_bytes,
    leaves_to_bytes,
    merkle_path,
    merkle_root,
    select_fv,
    verify_block,
)


def _leaves(count: int) -> list[bytes]:
    return [leaf_hash(2, i, bytes([i % 256]) * (i + 1)) for i in range(count)]


def _rfc9162_root(leaves: list[bytes]) -> bytes:
    """RFC 9162 §2.1.1's recursive definition, split at the largest power of two below n."""
    from evault.ida.fingerprint import _node

    if len(leaves) == 1:
        return leaves[0]
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return _node(_rfc9162_root(leaves[:k]), _rfc9162_root(leaves[k:]))


@pytest.mark.parametrize("count", range(1, 34))
def test_tree_shape_is_rfc9162_and_every_path_verifies(count: int) -> None:
    leaves = _leaves(count)
    root = merkle_root(leaves)
    assert root == _rfc9162_root(leaves)
    for i in range(count):
        path = merkle_path(leaves, i)
        assert len(path) <= count.bit_length()
        verify_block(root, 2, i, count, bytes([i % 256]) * (i + 1), path)


def test_wrong_block_path_or_position_is_attributed() -> None:
    leaves = _leaves(11)
    root = merkle_root(leaves)
    path = merkle_path(leaves, 6)
    block = bytes([6]) * 7
    with pytest.raises(SliceCorrupt) as info:
        verify_block(root, 2, 6, 11, block + b"!", path)
    assert (info.value.slice_index, info.value.block_index) == (2, 6)
    with pytest.raises(SliceCorrupt, match="slice 3, block 6"):
        verify_block(root, 3, 6, 11, block, path)  # block claimed by another slice
    with pytest.raises(SliceCorrupt, match="too short"):
        verify_block(root, 2, 6, 11, block, path[:-1])
    with pytest.raises(SliceCorrupt, match="too long"):
        verify_block(root, 2, 6, 11, block, [*path, path[0]])
    with pytest.raises(SliceCorrupt, match="not a 32-byte hash"):
        verify_block(root, 2, 6, 11, block, [path[0][:31], *path[1:]])
    last_path = merkle_path(leaves, 10)
    verify_block(root, 2, 10, 11, bytes([10]) * 11, last_path)
    with pytest.raises(SliceCorrupt):
        verify_block(root, 2, 10, 12, bytes([10]) * 11, last_path)  # another tree shape
    with pytest.raises(ValueError, match=r"^segment_index"):
        verify_block(root, 2, 11, 11, block, path)
    with pytest.raises(ValueError, match=r"^root"):
        verify_block(root[:5], 2, 6, 11, block, path)
    with pytest.raises(TypeError, match=r"^path"):
        verify_block(root, 2, 6, 11, block, b"".join(path))  # type: ignore[arg-type]


def test_odd_node_is_promoted_not_duplicated() -> None:
    a, b, c = _leaves(3)
    assert merkle_root([a, b, c]) != merkle_root([a, b, c, c])
    assert merkle_root([a]) == a
    assert merkle_root([]) == EMPTY_ROOT
    assert EMPTY_ROOT not in (merkle_root([a]), leaf_hash(0, 0, b""))


def test_leaf_binds_slice_and_segment_index() -> None:
    assert leaf_hash(0, 1, b"x") != leaf_hash(1, 0, b"x")
    assert leaf_hash(0, 0, b"x") != leaf_hash(0, 1, b"x")
    with pytest.raises(ValueError, match=r"^slice_index"):
        leaf_hash(256, 0, b"")
    with pytest.raises(ValueError, match=r"^segment_index"):
        leaf_hash(0, -1, b"")
    with pytest.raises(TypeError, match=r"^block"):
        leaf_hash(0, 0, "x")  # type: ignore[arg-type]


def test_a_block_in_pieces_has_the_leaf_of_the_whole_block() -> None:
    block = bytes(range(256)) * 5
    whole = leaf_hash(2, 7, block)
    view = memoryview(block)
    for cuts in ([], [1], [100, 700], [1279], list(range(1, 1280, 97))):
        edges = [0, *cuts, len(block)]
        pieces = [view[a:b] for a, b in itertools.pairwise(edges)]
        assert leaf_hash(2, 7, pieces) == whole == leaf_hash(2, 7, tuple(bytes(p) for p in pieces))
    assert leaf_hash(2, 7, [block[:9], b"X" + block[10:]]) != whole  # one byte changed
    assert leaf_hash(2, 7, [block[:9], block[10:]]) != whole  # one byte lost at a cut
    with pytest.raises(TypeError, match=r"^block"):
        leaf_hash(0, 0, [b"x", "y"])  # type: ignore[list-item]


def test_slice_verifier_checks_the_leaf_list_once_then_each_block() -> None:
    codec = get_codec(DEFAULT_CODEC_ID, 2, 3)
    enc = StreamEncoder(codec, 64)
    segments = [*enc.feed(bytes(range(200))), *enc.finish()]
    doc = DocumentFingerprinter(3)
    for blocks in segments:
        doc.add(blocks)
    fv = doc.fv()
    leaves = doc.slices[1].leaves()
    verifier = SliceVerifier(fv.roots[1], 1, leaves)
    assert verifier.segment_count == 4
    for i, blocks in enumerate(segments):
        verifier.verify(i, blocks[1])
        verifier.verify(i, [blocks[1][:5], blocks[1][5:]])  # in pieces, as they arrive
    with pytest.raises(SliceCorrupt):
        verifier.verify(1, [segments[1][1][:5], bytes(5)])
    with pytest.raises(SliceCorrupt) as info:
        verifier.verify(2, segments[2][0])
    assert (info.value.slice_index, info.value.block_index) == (1, 2)
    with pytest.raises(SliceCorrupt, match=r"slice 1 does not match.*leaf list"):
        SliceVerifier(fv.roots[1], 1, leaves[:-1])
    with pytest.raises(SliceCorrupt, match="slice 0"):
        SliceVerifier(fv.roots[0], 0, leaves)  # slice 1's leaves offered as slice 0's
    with pytest.raises(SliceCorrupt, match="slice 0, block 0"):
        SliceVerifier(fv.roots[1], 0, leaves).verify(0, segments[0][1])
    with pytest.raises(SliceCorrupt, match="no hash"):
        SliceVerifier(fv.roots[1], 1, [*leaves[:-1], b"short"])
    with pytest.raises(ValueError, match=r"^segment_index"):
        verifier.verify(4, b"")
    assert leaves_from_bytes(leaves_to_bytes(leaves), 4) == leaves
    with pytest.raises(FormatError, match="4 segments need 128"):
        leaves_from_bytes(leaves_to_bytes(leaves)[:-1], 4)


def test_slice_fingerprinter_is_incremental() -> None:
    fp = SliceFingerprinter(4)
    assert fp.root() == EMPTY_ROOT
    leaf = fp.add(b"abc")
    assert leaf == leaf_hash(4, 0, b"abc") and fp.count == 1
    fp.add(b"def")
    assert fp.root() == merkle_root([leaf, leaf_hash(4, 1, b"def")])
    with pytest.raises(ValueError, match=r"^blocks"):
        DocumentFingerprinter(3).add([b"a", b"b"])


def _fv(seed: int, n: int = 5) -> FingerprintVector:
    return FingerprintVector(tuple(hashlib.sha256(bytes([seed, j])).digest() for j in range(n)))


def test_fv_bytes_and_hex_round_trip() -> None:
    fv = _fv(1)
    raw = fv.to_bytes()
    assert raw[0] == len(FINGERPRINT_SCHEME) and raw[1 : 1 + raw[0]] == FINGERPRINT_SCHEME.encode()
    assert len(raw) == 1 + len(FINGERPRINT_SCHEME) + 2 + 5 * 32
    assert FingerprintVector.from_bytes(raw) == fv
    assert FingerprintVector.from_hex_list(fv.to_hex_list()) == fv
    assert fv.n == 5
    assert fv.fv_hash() != _fv(2).fv_hash()
    assert FingerprintVector([*fv.roots]) == fv  # type: ignore[arg-type]  # list accepted
    fv.verify_hash(fv.fv_hash())
    with pytest.raises(FingerprintMismatch):
        fv.verify_hash(_fv(2).fv_hash())


@pytest.mark.parametrize(
    "mutate",
    [
        lambda raw: raw[:-1],
        lambda raw: raw + b"\0",
        lambda raw: b"",
        lambda raw: raw[:5],
        lambda raw: bytes([raw[0]]) + b"sha999-merkle/v1" + raw[17:],
        lambda raw: raw[:17] + b"\0\0" + raw[19:],
        lambda raw: raw[:17] + b"\x01\x01" + raw[19:],
        lambda raw: bytes([raw[0]]) + b"\xff" * 16 + raw[17:],
    ],
)
def test_fv_from_bytes_rejects_malformed(mutate: object) -> None:
    raw = _fv(1).to_bytes()
    with pytest.raises(FormatError):
        FingerprintVector.from_bytes(mutate(raw))  # type: ignore[operator]


@pytest.mark.parametrize(
    "items",
    [[], "ab", ["00" * 31], ["AB" * 32], ["zz" * 32], [1], ["00" * 32] * 257],
)
def test_fv_from_hex_list_rejects_malformed(items: object) -> None:
    with pytest.raises(FormatError):
        FingerprintVector.from_hex_list(items)


def test_fv_constructor_validates() -> None:
    with pytest.raises(ValueError, match=r"^roots\[1\]"):
        FingerprintVector((b"\0" * 32, b"\0" * 31))
    with pytest.raises(ValueError, match=r"^roots"):
        FingerprintVector(())
    with pytest.raises(TypeError, match=r"^roots"):
        FingerprintVector("abc")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^scheme"):
        FingerprintVector((b"\0" * 32,), "md5/v0")


def test_select_fv_majority_and_report() -> None:
    good, bad = _fv(1), _fv(2)
    sel = select_fv({"n0": good, "n1": good, "n2": bad, "n3": None, "n4": good}, t=1)
    assert sel.fv == good
    assert sel.agreeing == {"n0", "n1", "n4"}
    assert sel.disagreeing == {"n2"}
    assert sel.missing == {"n3"}


def test_select_fv_needs_t_plus_one() -> None:
    good, bad = _fv(1), _fv(2)
    with pytest.raises(NoFingerprintQuorum) as info:
        select_fv({"a": good, "b": bad, "c": None}, t=1)
    assert (info.value.best, info.value.need, info.value.sources) == (1, 2, 3)
    with pytest.raises(NoFingerprintQuorum):
        select_fv({}, t=0)
    assert select_fv({"a": good}, t=0).fv == good


def test_select_fv_refuses_two_quorums() -> None:
    good, bad = _fv(1), _fv(2)
    with pytest.raises(ConflictingFingerprints, match="more sources lie") as info:
        select_fv({"a": good, "b": good, "c": bad, "d": bad}, t=1)
    assert isinstance(info.value, NoFingerprintQuorum) and info.value.groups == 2


def test_select_fv_with_receipt_hash_needs_one_match() -> None:
    good, bad = _fv(1), _fv(2)
    sel = select_fv({"a": bad, "b": bad, "c": good}, t=1, expected_hash=good.fv_hash())
    assert sel.fv == good and sel.agreeing == {"c"} and sel.disagreeing == {"a", "b"}
    with pytest.raises(FingerprintMismatch) as info:
        select_fv({"a": bad, "b": None}, t=1, expected_hash=good.fv_hash())
    assert isinstance(info.value, FingerprintError)
    assert isinstance(info.value, NoFingerprintQuorum)  # callers may catch either
    assert info.value.details["expected"] == good.fv_hash().hex()
    assert "none of the 2 sources" in str(info.value)


def test_select_fv_bad_arguments() -> None:
    with pytest.raises(ValueError, match=r"^t"):
        select_fv({"a": _fv(1)}, t=-1)
    with pytest.raises(TypeError, match=r"^t"):
        select_fv({"a": _fv(1)}, t=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^expected_hash"):
        select_fv({"a": _fv(1)}, t=0, expected_hash=b"short")
    with pytest.raises(TypeError, match=r"^candidates"):
        select_fv([_fv(1)], t=0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^candidates"):
        select_fv({"a": _fv(1).to_bytes()}, t=0)  # type: ignore[dict-item]
