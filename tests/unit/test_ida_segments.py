import os

import pytest

from evault.errors import UnknownCodec
from evault.ida import (
    DEFAULT_CODEC_ID,
    DEFAULT_SEGMENT_BYTES,
    REF_CODEC_ID,
    Layout,
    StreamEncoder,
    decode_segment,
    disperse,
    get_codec,
    reconstruct,
)

KIB = 1024


def test_defaults() -> None:
    assert DEFAULT_SEGMENT_BYTES == 1 << 20


def test_layout_of_a_multi_segment_document() -> None:
    lay = Layout(
        size=2 * DEFAULT_SEGMENT_BYTES + 10,
        segment_bytes=DEFAULT_SEGMENT_BYTES,
        m=3,
        n=5,
        codec_id=DEFAULT_CODEC_ID,
    )
    assert lay.segment_count == 3
    assert [lay.segment_len(i) for i in range(3)] == [DEFAULT_SEGMENT_BYTES] * 2 + [10]
    full = -(-DEFAULT_SEGMENT_BYTES // 3)
    assert [lay.block_bytes(i) for i in range(3)] == [full, full, 4]
    assert [lay.block_offset(i) for i in range(3)] == [0, full, 2 * full]
    assert lay.slice_bytes() == 2 * full + 4
    assert lay.segment_offset(2) == 2 * DEFAULT_SEGMENT_BYTES
    with pytest.raises(ValueError, match=r"^i:"):
        lay.segment_len(3)


def test_small_documents_are_not_padded_to_a_segment() -> None:
    codec = get_codec(DEFAULT_CODEC_ID, 3, 5)
    data = os.urandom(10 * KIB)
    slices = disperse(data, codec)
    assert [len(s) for s in slices] == [-(-10 * KIB // 3)] * 5  # 3414 bytes, not 1 MiB / 3
    lay = Layout.for_codec(len(data), DEFAULT_SEGMENT_BYTES, codec)
    assert lay.slice_bytes() == 3414
    assert reconstruct(lay, {0: slices[0], 3: slices[3], 4: slices[4]}) == data


def test_empty_document_has_zero_segments() -> None:
    codec = get_codec(DEFAULT_CODEC_ID, 3, 5)
    enc = StreamEncoder(codec, DEFAULT_SEGMENT_BYTES)
    assert list(enc.feed(b"")) == []
    assert list(enc.finish()) == []
    assert enc.size == 0 and enc.segments == 0
    lay = enc.layout()
    assert (lay.segment_count, lay.slice_bytes()) == (0, 0)
    assert disperse(b"", codec) == [b""] * 5
    assert reconstruct(lay, {}) == b""


@pytest.mark.parametrize("codec_id", [DEFAULT_CODEC_ID, REF_CODEC_ID])
@pytest.mark.parametrize("chunk", [1, 7, 100, 256, 1000, 5000])
def test_stream_encoder_is_independent_of_chunking(codec_id: str, chunk: int) -> None:
    codec = get_codec(codec_id, 2, 4)
    data = os.urandom(2 * 256 + 77)
    whole = disperse(data, codec, 256)
    enc = StreamEncoder(codec, 256)
    got: list[list[bytes]] = []
    for start in range(0, len(data), chunk):
        got.extend(enc.feed(data[start : start + chunk]))
    got.extend(enc.finish())
    assert enc.size == len(data) and enc.segments == 3 == len(got)
    assert [b"".join(seg[j] for seg in got) for j in range(4)] == whole
    lay = enc.layout()
    for i, seg in enumerate(got):
        assert all(len(b) == lay.block_bytes(i) for b in seg)
        assert (
            decode_segment(codec, {2: seg[2], 3: seg[3]}, lay.segment_len(i))
            == data[i * 256 : i * 256 + lay.segment_len(i)]
        )


def test_exact_multiple_has_no_empty_tail() -> None:
    codec = get_codec(DEFAULT_CODEC_ID, 3, 5)
    enc = StreamEncoder(codec, 300)
    assert len(list(enc.feed(os.urandom(900)))) == 3
    assert list(enc.finish()) == []
    assert enc.layout().segment_count == 3


def test_unconsumed_feed_is_an_error_not_data_loss() -> None:
    enc = StreamEncoder(get_codec(DEFAULT_CODEC_ID, 3, 5), 100)
    enc.feed(b"a" * 250)  # iterator dropped
    with pytest.raises(ValueError, match=r"^feed: .*not all consumed"):
        enc.feed(b"b")
    with pytest.raises(ValueError, match=r"^finish: .*not all consumed"):
        enc.finish()
    enc2 = StreamEncoder(get_codec(DEFAULT_CODEC_ID, 3, 5), 100)
    list(enc2.finish())
    with pytest.raises(ValueError, match=r"^feed: the encoder is finished"):
        enc2.feed(b"x")


def test_bad_arguments_name_themselves() -> None:
    codec = get_codec(DEFAULT_CODEC_ID, 3, 5)
    with pytest.raises(ValueError, match=r"^segment_bytes"):
        StreamEncoder(codec, 0)
    with pytest.raises(ValueError, match=r"^segment_bytes"):
        StreamEncoder(codec, (1 << 30) + 1)
    with pytest.raises(TypeError, match=r"^codec"):
        StreamEncoder("rs", 100)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"^data"):
        StreamEncoder(codec, 100).feed("text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^size"):
        Layout(-1, 100, 3, 5, DEFAULT_CODEC_ID)
    with pytest.raises(TypeError, match=r"^size"):
        Layout(1.5, 100, 3, 5, DEFAULT_CODEC_ID)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^n"):
        Layout(1, 100, 3, 2, DEFAULT_CODEC_ID)
    with pytest.raises(UnknownCodec):
        Layout(1, 100, 3, 5, "nope/v1")
    lay = Layout(1000, 100, 3, 5, DEFAULT_CODEC_ID)
    with pytest.raises(ValueError, match=r"^slices: slice 0 is 3 bytes"):
        reconstruct(lay, {0: b"abc", 1: b"abc", 2: b"abc"})


def test_layout_is_a_value() -> None:
    a = Layout(1000, 100, 3, 5, DEFAULT_CODEC_ID)
    b = Layout(1000, 100, 3, 5, DEFAULT_CODEC_ID)
    assert a == b and hash(a) == hash(b)
    assert "_codec" not in repr(a)
    with pytest.raises(AttributeError):
        a.size = 5  # type: ignore[misc]
