"""Hypothesis properties of the dispersal core (issue 2, "Done when")."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evault.errors import NotEnoughSlices, SliceCorrupt
from evault.ida import CODEC_IDS, Layout, StreamEncoder, disperse, get_codec, reconstruct
from evault.ida.fingerprint import (
    DocumentFingerprinter,
    FingerprintVector,
    SliceVerifier,
    leaf_hash,
    merkle_path,
    select_fv,
    verify_block,
)
from evault.ida.gf256 import PAPER_POLY, get_field
from evault.ida.reference import ReferenceIDA

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def params(draw: st.DrawFn, max_n: int = 12) -> tuple[int, int]:
    n = draw(st.integers(1, max_n))
    return draw(st.integers(1, n)), n


@FAST
@given(
    codec_id=st.sampled_from(CODEC_IDS),
    mn=params(),
    data=st.binary(max_size=3000),
    choice=st.randoms(use_true_random=False),
)
def test_any_m_of_n_slices_rebuild_a_segment(
    codec_id: str, mn: tuple[int, int], data: bytes, choice: object
) -> None:
    m, n = mn
    codec = get_codec(codec_id, m, n)
    blocks = codec.encode(data)
    assert len(blocks) == n
    assert {len(b) for b in blocks} == {codec.block_bytes(len(data))}
    subset = choice.sample(range(n), m)  # type: ignore[attr-defined]
    assert codec.decode({j: blocks[j] for j in subset}, len(data)) == data
    if m > 1:
        with pytest.raises(NotEnoughSlices) as info:
            codec.decode({j: blocks[j] for j in subset[1:]}, len(data))
        assert (info.value.have, info.value.need) == (m - 1, m)


@FAST
@given(
    points=st.lists(st.integers(0, 255), min_size=2, max_size=10, unique=True),
    split=st.integers(1, 9),
    data=st.binary(max_size=500),
    choice=st.randoms(use_true_random=False),
)
def test_reference_ida_over_any_cauchy_matrix(
    points: list[int], split: int, data: bytes, choice: object
) -> None:
    # Any Cauchy matrix T[r][i] = 1/(y_r + x_i) with distinct points has every m columns
    # independent (non-systematic here: no identity part), so ReferenceIDA accepts it.
    m = min(split, len(points) - 1)
    ys, xs = points[:m], points[m:]
    f = get_field(PAPER_POLY)
    t = [[f.inv(y ^ x) for x in xs] for y in ys]
    if len(xs) < m:
        return
    ida = ReferenceIDA(t, f)  # verify=True
    blocks = ida.encode(data)
    subset = choice.sample(range(len(xs)), m)  # type: ignore[attr-defined]
    assert ida.decode({j: blocks[j] for j in subset}, len(data)) == data


@FAST
@given(
    mn=params(max_n=7),
    data=st.binary(max_size=2000),
    segment_bytes=st.integers(1, 700),
    chunk=st.integers(1, 900),
    choice=st.randoms(use_true_random=False),
)
def test_documents_stream_and_rebuild_from_any_m_slices(
    mn: tuple[int, int], data: bytes, segment_bytes: int, chunk: int, choice: object
) -> None:
    m, n = mn
    codec = get_codec(CODEC_IDS[0], m, n)
    enc = StreamEncoder(codec, segment_bytes)
    parts: list[list[bytes]] = [[] for _ in range(n)]
    for start in range(0, len(data), chunk):
        for blocks in enc.feed(data[start : start + chunk]):
            for j, b in enumerate(blocks):
                parts[j].append(b)
    for blocks in enc.finish():
        for j, b in enumerate(blocks):
            parts[j].append(b)
    slices = [b"".join(p) for p in parts]
    layout = enc.layout()
    assert layout == Layout.for_codec(len(data), segment_bytes, codec)
    assert slices == disperse(data, codec, segment_bytes)
    assert all(len(s) == layout.slice_bytes() for s in slices)
    # Padding is at most m - 1 bytes per segment, never up to a whole segment.
    assert layout.slice_bytes() * m - len(data) <= (m - 1) * layout.segment_count
    subset = choice.sample(range(n), m)  # type: ignore[attr-defined]
    assert reconstruct(layout, {j: slices[j] for j in subset}) == data


@FAST
@given(
    mn=params(max_n=6),
    data=st.binary(min_size=1, max_size=1500),
    segment_bytes=st.integers(1, 400),
    where=st.tuples(st.integers(0), st.integers(0), st.integers(1, 255)),
)
def test_any_altered_byte_is_detected_and_attributed(
    mn: tuple[int, int], data: bytes, segment_bytes: int, where: tuple[int, int, int]
) -> None:
    m, n = mn
    codec = get_codec(CODEC_IDS[0], m, n)
    layout = Layout.for_codec(len(data), segment_bytes, codec)
    enc = StreamEncoder(codec, segment_bytes)
    segments = [*enc.feed(data), *enc.finish()]
    doc = DocumentFingerprinter(n)
    for blocks in segments:
        doc.add(blocks)
    fv = doc.fv()
    leaves = [s.leaves() for s in doc.slices]

    bad_slice = where[0] % n
    pos = where[1] % layout.slice_bytes()
    bad_segment = next(
        i
        for i in range(layout.segment_count)
        if layout.block_offset(i) <= pos < layout.block_offset(i) + layout.block_bytes(i)
    )
    offset = pos - layout.block_offset(bad_segment)
    block = bytearray(segments[bad_segment][bad_slice])
    block[offset] ^= where[2]
    segments[bad_segment][bad_slice] = bytes(block)

    for j in range(n):
        verifier = SliceVerifier(fv.roots[j], j, leaves[j])
        for i, blocks in enumerate(segments):
            path = merkle_path(leaves[j], i)
            if (j, i) == (bad_slice, bad_segment):
                with pytest.raises(SliceCorrupt) as info:
                    verifier.verify(i, blocks[j])
                assert (info.value.slice_index, info.value.block_index) == (j, i)
                with pytest.raises(SliceCorrupt) as info:
                    verify_block(fv.roots[j], j, i, layout.segment_count, blocks[j], path)
                assert (info.value.slice_index, info.value.block_index) == (j, i)
            else:
                verifier.verify(i, blocks[j])
                verify_block(fv.roots[j], j, i, layout.segment_count, blocks[j], path)
    # A node that also rewrites its leaf list to match the altered block is caught by the root.
    forged = list(leaves[bad_slice])
    forged[bad_segment] = leaf_hash(bad_slice, bad_segment, segments[bad_segment][bad_slice])
    with pytest.raises(SliceCorrupt) as info:
        SliceVerifier(fv.roots[bad_slice], bad_slice, forged)
    assert info.value.slice_index == bad_slice


def _fv(tag: bytes, n: int) -> FingerprintVector:
    return FingerprintVector(tuple(hashlib.sha256(tag + bytes([j])).digest() for j in range(n)))


@settings(max_examples=80, deadline=None)
@given(
    t=st.integers(0, 4),
    extra=st.integers(0, 3),
    n_roots=st.integers(1, 6),
    data=st.data(),
)
def test_fv_selection_survives_up_to_t_liars(
    t: int, extra: int, n_roots: int, data: st.DataObject
) -> None:
    sources = 2 * t + 1 + extra
    honest_fv = _fv(b"honest", n_roots)
    liars = data.draw(st.integers(0, t), label="liars")
    names = [f"node{k}" for k in range(sources)]
    liar_names = set(data.draw(st.permutations(names), label="order")[:liars])
    lie = st.one_of(
        st.just(None),
        st.just(_fv(b"collusion", n_roots)),  # liars agreeing on one forged vector
        st.binary(min_size=1, max_size=4).map(lambda b: _fv(b"lie" + b, n_roots)),
        st.integers(1, 6).map(lambda k: _fv(b"honest", k)),  # a truncated/extended honest FV
    )
    candidates: dict[str, FingerprintVector | None] = {}
    for name in names:
        candidates[name] = data.draw(lie, label=name) if name in liar_names else honest_fv
    sel = select_fv(candidates, t)
    assert sel.fv == honest_fv
    assert sel.agreeing == {s for s, fv in candidates.items() if fv == honest_fv}
    assert sel.disagreeing == {s for s, fv in candidates.items() if fv not in (None, honest_fv)}
    assert sel.disagreeing <= liar_names
    assert sel.missing == {s for s, fv in candidates.items() if fv is None}
    # With the receipt's H(FV), any single honest source is enough, however many lie.
    by_receipt = select_fv(candidates, t, expected_hash=honest_fv.fv_hash())
    assert by_receipt.fv == honest_fv and by_receipt.agreeing == sel.agreeing
