"""Fixed vectors for fingerprint scheme sha256-merkle/v1 (format in evault.ida.fingerprint).

The expected values were computed by the independent ``_spec_*`` functions below, which use only
hashlib and the scheme as written in the module docstring, and are pinned as hex so that any
change to the bytes of the format fails here (a format change needs a new scheme id).
"""

import hashlib
import struct

from evault.ida.fingerprint import (
    EMPTY_ROOT,
    FingerprintVector,
    leaf_hash,
    merkle_root,
)

LEAF0 = "bbea68db5344adbaf4f5c7992ae880966445de8f46f9c254e3788895728dff2b"
ROOT3 = "72472082e355dc32508a2e4de456afd8e58b54670d00b606a024d074a2817fa6"
EMPTY = "52ae363e3611a93eec3e806f4ae4814a3359d3a527c43b1f1570557d479c9782"
FV_HASH = "c85e062b7c508d757b73ac89d9c713c8737d6d308a88d93c288baf7dac130c8e"


def _spec_tagged(tag: str, data: bytes) -> bytes:
    t = hashlib.sha256(tag.encode()).digest()
    return hashlib.sha256(t + t + data).digest()


def _spec_leaf(j: int, i: int, block: bytes) -> bytes:
    return _spec_tagged("evault/merkle-leaf/v1", struct.pack(">IQ", j, i) + block)


def _spec_node(left: bytes, right: bytes) -> bytes:
    return _spec_tagged("evault/merkle-node/v1", left + right)


def test_leaf_vector() -> None:
    assert leaf_hash(1, 0, b"block 0").hex() == LEAF0 == _spec_leaf(1, 0, b"block 0").hex()


def test_three_leaf_root_promotes_the_odd_leaf() -> None:
    leaves = [leaf_hash(1, i, f"block {i}".encode()) for i in range(3)]
    spec = _spec_node(_spec_node(leaves[0], leaves[1]), leaves[2])
    assert merkle_root(leaves).hex() == ROOT3 == spec.hex()


def test_empty_root_vector() -> None:
    assert EMPTY_ROOT.hex() == EMPTY == _spec_tagged("evault/merkle-empty/v1", b"").hex()


def test_fv_hash_vector() -> None:
    fv = FingerprintVector((bytes.fromhex(ROOT3), bytes.fromhex(EMPTY)))
    spec_bytes = bytes([16]) + b"sha256-merkle/v1" + b"\x00\x02" + fv.roots[0] + fv.roots[1]
    assert fv.to_bytes() == spec_bytes
    assert fv.fv_hash().hex() == FV_HASH
    assert _spec_tagged("evault/fingerprint-vector/v1", spec_bytes).hex() == FV_HASH
