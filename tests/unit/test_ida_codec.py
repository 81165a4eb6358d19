import os
import random
from itertools import combinations

import pytest

from evault.errors import CodecError, NotEnoughSlices, UnknownCodec
from evault.ida import CODEC_IDS, DEFAULT_CODEC_ID, MAX_N, REF_CODEC_ID, Codec, get_codec
from evault.ida.gf256 import ISAL_POLY, get_field
from evault.ida.isal import IsalCauchyCodec, isal_status
from evault.ida.matrix import cauchy_systematic
from evault.ida.reference import ReferenceIDA

rng = random.Random(20240601)


def test_default_is_isal_cauchy_and_isal_is_available_here() -> None:
    assert DEFAULT_CODEC_ID == "rs-isal-cauchy/v1" == CODEC_IDS[0]
    status = isal_status()
    # The pyeclib wheel, a hard dependency, bundles ISA-L: without it deposits would be 15x
    # slower without anyone noticing.
    assert status["accelerated"] is True, status
    assert isinstance(get_codec(DEFAULT_CODEC_ID, 3, 5), IsalCauchyCodec)
    assert get_codec(DEFAULT_CODEC_ID, 3, 5).accelerated  # type: ignore[attr-defined]


@pytest.mark.parametrize("codec_id", CODEC_IDS)
def test_registry_rebuilds_each_codec(codec_id: str) -> None:
    codec = get_codec(codec_id, 2, 4)
    assert isinstance(codec, Codec)
    assert (codec.codec_id, codec.m, codec.n) == (codec_id, 2, 4)
    assert get_codec(codec_id, 2, 4) is codec  # cached
    data = b"documents written today stay readable after the default changes"
    blocks = codec.encode(data)
    assert codec.decode({2: blocks[2], 3: blocks[3]}, len(data)) == data


def test_codec_ids_name_different_bytes() -> None:
    data = bytes(range(200))
    fast = get_codec(DEFAULT_CODEC_ID, 3, 5).encode(data)
    paper_field = get_codec(REF_CODEC_ID, 3, 5).encode(data)
    assert fast[:3] == paper_field[:3]  # both systematic
    assert fast[3:] != paper_field[3:]  # different fields: different parity


def test_unknown_codec_is_a_world_error() -> None:
    with pytest.raises(UnknownCodec, match="rs-future/v9") as info:
        get_codec("rs-future/v9", 3, 5)
    assert isinstance(info.value, CodecError)
    assert info.value.codec_id == "rs-future/v9"


@pytest.mark.parametrize(
    ("args", "exc", "name"),
    [
        ((DEFAULT_CODEC_ID, 0, 5), ValueError, "m"),
        ((DEFAULT_CODEC_ID, 3, 2), ValueError, "n"),
        ((DEFAULT_CODEC_ID, 3, MAX_N + 1), ValueError, "n"),
        ((DEFAULT_CODEC_ID, 3.0, 5), TypeError, "m"),
        ((DEFAULT_CODEC_ID, 3, True), TypeError, "n"),
        ((b"rs-isal-cauchy/v1", 3, 5), TypeError, "codec_id"),
    ],
)
def test_bad_parameters_name_the_argument(args: tuple[object, ...], exc: type, name: str) -> None:
    with pytest.raises(exc, match=rf"^{name}:"):
        get_codec(*args)  # type: ignore[arg-type]


@pytest.mark.parametrize("codec_id", CODEC_IDS)
def test_bad_decode_arguments(codec_id: str) -> None:
    codec = get_codec(codec_id, 3, 5)
    blocks = codec.encode(b"x" * 30)
    with pytest.raises(ValueError, match=r"^blocks: block 0 is 9 bytes"):
        codec.decode({0: blocks[0][:9], 1: blocks[1], 2: blocks[2]}, 30)
    with pytest.raises(ValueError, match=r"^blocks: slice index 5"):
        codec.decode({5: blocks[0], 1: blocks[1], 2: blocks[2]}, 30)
    with pytest.raises(TypeError, match=r"^blocks"):
        codec.decode({"0": blocks[0], 1: blocks[1], 2: blocks[2]}, 30)  # type: ignore[dict-item]
    with pytest.raises(TypeError, match=r"^blocks"):
        codec.decode([blocks[0], blocks[1], blocks[2]], 30)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^blocks\[1\]"):
        codec.decode({0: blocks[0], 1: "text", 2: blocks[2]}, 30)  # type: ignore[dict-item]
    with pytest.raises(ValueError, match=r"^segment_len"):
        codec.decode({0: blocks[0], 1: blocks[1], 2: blocks[2]}, -1)
    with pytest.raises(TypeError, match=r"^segment_len"):
        codec.decode({0: blocks[0], 1: blocks[1], 2: blocks[2]}, "30")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^segment"):
        codec.encode("text")  # type: ignore[arg-type]


@pytest.mark.parametrize("codec_id", CODEC_IDS)
def test_too_few_slices_carry_have_and_need(codec_id: str) -> None:
    codec = get_codec(codec_id, 4, 7)
    blocks = codec.encode(b"y" * 100)
    with pytest.raises(NotEnoughSlices) as info:
        codec.decode({1: blocks[1], 5: blocks[5], 6: blocks[6]}, 100)
    assert (info.value.have, info.value.need) == (3, 4)
    assert "need 4" in str(info.value) and "have 3" in str(info.value)
    with pytest.raises(NotEnoughSlices):
        codec.decode({}, 0)


@pytest.mark.parametrize(("m", "n"), [(1, 1), (1, 3), (2, 3), (3, 5), (4, 4), (5, 9), (10, 14)])
def test_isal_equals_reference_and_every_m_subset_rebuilds(m: int, n: int) -> None:
    fast = IsalCauchyCodec(m, n)
    slow = IsalCauchyCodec(m, n, accelerate=False)
    assert fast.accelerated and not slow.accelerated
    for length in (0, 1, m - 1, m, m + 1, 63, 64, 65, 1000, 4099):
        data = rng.randbytes(length)
        blocks = fast.encode(data)
        assert blocks == slow.encode(data), (m, n, length)
        assert all(len(b) == fast.block_bytes(length) == -(-length // m) for b in blocks)
        assert b"".join(blocks[:m])[:length] == data  # systematic
        subsets = list(combinations(range(n), m))
        for subset in rng.sample(subsets, min(len(subsets), 12)):
            given = {j: blocks[j] for j in subset}
            assert fast.decode(given, length) == data
            assert slow.decode(given, length) == data


@pytest.mark.parametrize("codec_id", CODEC_IDS)
@pytest.mark.parametrize(("m", "n"), [(1, 2), (2, 3), (3, 5)])
def test_decode_rows_are_the_segment_uncopied(codec_id: str, m: int, n: int) -> None:
    codec = get_codec(codec_id, m, n)
    for length in (0, 1, m - 1, m, m + 1, 1000, 4099, 3 * 4096):
        data = rng.randbytes(length)
        blocks = codec.encode(data)
        for subset in combinations(range(n), m):
            given = {j: blocks[j] for j in subset}
            rows = codec.decode_rows(given, length)
            assert b"".join(rows) == data == codec.decode(given, length), (codec_id, length)
            assert len(rows) <= m and all(len(row) for row in rows)  # no empty padding row
    if codec_id == DEFAULT_CODEC_ID and m > 1:
        # Systematic: with the data blocks at hand, the rows ARE those blocks (the last one
        # cut through a view when the segment is padded), so nothing is copied.
        data = rng.randbytes(3 * 4096 + 1)
        blocks = codec.encode(data)
        rows = codec.decode_rows(dict(enumerate(blocks)), len(data))
        assert all(row is blocks[r] for r, row in enumerate(rows[:-1]))
        last = rows[-1]
        assert isinstance(last, memoryview) and last.obj is blocks[len(rows) - 1]


@pytest.mark.parametrize("codec_id", CODEC_IDS)
@pytest.mark.parametrize(("m", "n"), [(1, 2), (2, 3), (3, 5), (4, 6)])
def test_row_slices_name_blocks_that_are_data_rows(codec_id: str, m: int, n: int) -> None:
    codec = get_codec(codec_id, m, n)
    assert len(codec.row_slices) == m
    if codec_id == DEFAULT_CODEC_ID:
        assert codec.row_slices == tuple(range(m))  # systematic
    data = rng.randbytes(3 * m + 1)
    b = codec.block_bytes(len(data))
    blocks = codec.encode(data)
    padded = data + bytes(m * b - len(data))
    for r, j in enumerate(codec.row_slices):
        if j is not None:
            assert blocks[j] == padded[r * b : (r + 1) * b], (codec_id, r, j)


def test_more_than_m_blocks_are_fine_and_bytes_like_inputs_work() -> None:
    codec = get_codec(DEFAULT_CODEC_ID, 3, 5)
    data = os.urandom(1001)
    blocks = codec.encode(memoryview(data))
    assert blocks == codec.encode(bytearray(data))
    given = {j: bytearray(b) for j, b in enumerate(blocks)}
    assert codec.decode(given, 1001) == data
    assert codec.decode({j: memoryview(blocks[j]) for j in (1, 3, 4)}, 1001) == data


def test_largest_n() -> None:
    data = os.urandom(10_000)
    for m in (1, 40, 250):
        codec = IsalCauchyCodec(m, MAX_N)
        blocks = codec.encode(data)
        assert len(blocks) == MAX_N
        last = {j: blocks[j] for j in range(MAX_N - m, MAX_N)}
        assert codec.decode(last, len(data)) == data
    small = IsalCauchyCodec(2, MAX_N, accelerate=False)
    assert small.encode(data) == IsalCauchyCodec(2, MAX_N).encode(data)


def test_same_bytes_as_pyeclib_isa_l_rs_cauchy() -> None:
    """rs-isal-cauchy/v1 blocks are the payloads of pyeclib's fragments, minus its header."""
    ec_iface = pytest.importorskip("pyeclib.ec_iface")
    for m, n in [(2, 3), (3, 5), (10, 14), (4, 32)]:
        driver = ec_iface.ECDriver(k=m, m=n - m, ec_type="isa_l_rs_cauchy")
        codec = get_codec(DEFAULT_CODEC_ID, m, n)
        for length in (1, 100, 4097, 65539):
            data = rng.randbytes(length)
            ours = codec.encode(data)
            fragments = driver.encode(data)
            header = len(fragments[0]) - len(ours[0])
            assert header == 80  # liberasurecode's fragment_header_t
            assert [f[header:] for f in fragments] == ours


def test_reference_codec_reproduces_isal_matrix() -> None:
    f = get_field(ISAL_POLY)
    ref = ReferenceIDA(cauchy_systematic(f, 3, 5), f)
    data = os.urandom(3000)
    assert ref.encode(data) == get_codec(DEFAULT_CODEC_ID, 3, 5).encode(data)


def test_decode_results_are_independent_of_caching() -> None:
    codec = IsalCauchyCodec(3, 6)
    data = os.urandom(999)
    blocks = codec.encode(data)
    for _ in range(2):
        for subset in combinations(range(6), 3):
            assert codec.decode({j: blocks[j] for j in subset}, 999) == data
