"""Printable encodings (paper §2.3.2): base64 4-for-3 and hex 2-for-1, strict and streaming."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evault.crypto.armor import (
    DEFAULT_LINE_CHARS,
    ENCODINGS,
    MAX_LINE_CHARS,
    Encoding,
    armor,
    armored_size,
    dearmor,
)
from evault.errors import ArmorError, FormatError

FAST = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
B64 = (b"-----BEGIN EVAULT BASE64-----\n", b"-----END EVAULT BASE64-----\n")
HEX = (b"-----BEGIN EVAULT HEX-----\n", b"-----END EVAULT HEX-----\n")


def _armor(data: bytes, encoding: Encoding = "base64", line_chars: int = 0) -> bytes:
    return b"".join(armor([data], encoding=encoding, line_chars=line_chars))


def _dearmor(text: bytes) -> bytes:
    return b"".join(dearmor([text]))


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(c, len(data)) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


# RFC 4648 §10 test vectors.
RFC4648 = [
    (b"", b"", b""),
    (b"f", b"Zg==", b"66"),
    (b"fo", b"Zm8=", b"666f"),
    (b"foo", b"Zm9v", b"666f6f"),
    (b"foob", b"Zm9vYg==", b"666f6f62"),
    (b"fooba", b"Zm9vYmE=", b"666f6f6261"),
    (b"foobar", b"Zm9vYmFy", b"666f6f626172"),
]


@pytest.mark.parametrize(("data", "b64", "b16"), RFC4648)
def test_rfc4648_vectors(data: bytes, b64: bytes, b16: bytes) -> None:
    body64 = b64 + b"\n" if b64 else b""
    body16 = b16 + b"\n" if b16 else b""
    assert _armor(data) == B64[0] + body64 + B64[1]
    assert _armor(data, "hex") == HEX[0] + body16 + HEX[1]
    assert _dearmor(B64[0] + body64 + B64[1]) == data
    assert _dearmor(HEX[0] + body16.upper() + HEX[1]) == data  # hex in either case


def test_sizes_are_4_for_3_and_2_for_1() -> None:
    data = bytes(range(256)) * 3  # 768 bytes
    b64 = _armor(data)
    hexed = _armor(data, "hex")
    assert len(b64) - len(B64[0]) - len(B64[1]) == 768 * 4 // 3 + 14  # 14 lines of ≤76
    assert len(hexed) - len(HEX[0]) - len(HEX[1]) == 768 * 2 + 24  # 24 lines of 64
    assert all(len(line) <= 76 for line in b64.splitlines())
    assert all(32 <= c < 127 or c == 10 for c in b64 + hexed)  # printable ASCII
    assert base64.b64decode(b"".join(b64.splitlines()[1:-1])) == data


@FAST
@given(
    data=st.binary(max_size=700),
    encoding=st.sampled_from(["base64", "hex"]),
    width_quanta=st.integers(1, 40),
    in_cuts=st.lists(st.integers(0, 700), max_size=5),
    out_cuts=st.lists(st.integers(0, 2000), max_size=8),
    crlf=st.booleans(),
)
def test_round_trip(
    data: bytes,
    encoding: Encoding,
    width_quanta: int,
    in_cuts: list[int],
    out_cuts: list[int],
    crlf: bool,
) -> None:
    width = width_quanta * (4 if encoding == "base64" else 2)
    text = b"".join(armor(_cut(data, in_cuts), encoding=encoding, line_chars=width))
    assert len(text) == armored_size(len(data), encoding=encoding, line_chars=width)
    if crlf:
        text = text.replace(b"\n", b"\r\n")
    assert b"".join(dearmor(_cut(text, out_cuts), expect=encoding)) == data


def test_large_input_is_batched_and_round_trips() -> None:
    data = bytes(range(256)) * 2000  # several batches
    for encoding in ENCODINGS:
        text = b"".join(
            armor([data[i : i + 999] for i in range(0, len(data), 999)], encoding=encoding)
        )
        pieces = [text[i : i + 4096] for i in range(0, len(text), 4096)]
        assert b"".join(dearmor(pieces)) == data


BAD: list[tuple[str, bytes, str, int]] = [
    ("empty text", b"", "no BEGIN", 1),
    ("no frame", b"Zm9v\n", "first line", 1),
    ("unknown encoding", b"-----BEGIN EVAULT BASE32-----\n", "first line", 1),
    ("no END", B64[0] + b"Zm9v\n", "truncated", 3),
    ("END of the other kind", B64[0] + b"Zm9v\n" + HEX[1], "expected", 3),
    ("stray character", B64[0] + b"Zm9v\nZm*v\n" + B64[1], "not base64", 3),
    ("url-safe alphabet", B64[0] + b"Zm9-\n" + B64[1], "not base64", 2),
    ("space inside", B64[0] + b"Zm9 v\n" + B64[1], "not base64", 2),
    ("blank line", B64[0] + b"Zm9v\n\nZm9v\n" + B64[1], "empty line", 3),
    ("unpadded", B64[0] + b"Zm8\n" + B64[1], "4-character group", 3),
    ("padding too long", B64[0] + b"Zg===\n" + B64[1], "padding", 2),
    ("padding in the middle", B64[0] + b"Zg==Zm9v\n" + B64[1], "padding", 2),
    ("data after padding", B64[0] + b"Zg==\nZm9v\n" + B64[1], "after base64 padding", 3),
    ("non-zero pad bits (1)", B64[0] + b"Zh==\n" + B64[1], "non-zero bits", 2),
    ("non-zero pad bits (2)", B64[0] + b"Zm9=\n" + B64[1], "non-zero bits", 2),
    ("odd hex", HEX[0] + b"666\n" + HEX[1], "2-character group", 3),
    ("hex garbage", HEX[0] + b"66\n6g\n" + HEX[1], "not hex", 3),
    ("text after END", HEX[0] + b"66\n" + HEX[1] + b"x\n", "after the END", 4),
    ("blank line after END", HEX[0] + b"66\n" + HEX[1] + b"\n", "after the END", 4),
    ("over-long line", HEX[0] + b"66" * (MAX_LINE_CHARS // 2 + 1) + b"\n" + HEX[1], "longer", 2),
    ("bare CR", HEX[0] + b"66\r66\n" + HEX[1], "not hex", 2),
]


@pytest.mark.parametrize(("name", "text", "message", "line"), BAD, ids=[b[0] for b in BAD])
def test_garbage_is_rejected_naming_the_line(
    name: str, text: bytes, message: str, line: int
) -> None:
    for pieces in ([text], [text[i : i + 3] for i in range(0, len(text), 3)]):
        with pytest.raises(ArmorError, match=message) as info:
            b"".join(dearmor(pieces))
        assert info.value.line == line, name
        assert isinstance(info.value, FormatError)


def test_unterminated_over_long_line_is_refused_without_buffering_it_all() -> None:
    consumed = [0]

    def endless() -> Iterator[bytes]:
        yield HEX[0]
        while True:
            consumed[0] += 1
            yield b"ab" * 100

    with pytest.raises(ArmorError, match="longer"):
        b"".join(dearmor(endless()))
    assert consumed[0] <= MAX_LINE_CHARS // 200 + 2


def test_expect_insists_on_an_encoding() -> None:
    text = _armor(b"abc", "hex")
    assert b"".join(dearmor([text], expect="hex")) == b"abc"
    with pytest.raises(ArmorError, match="expected base64"):
        b"".join(dearmor([text], expect="base64"))


def test_argument_errors() -> None:
    with pytest.raises(ValueError, match="encoding"):
        armor([b""], encoding="base32")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="line_chars"):
        armor([b""], line_chars=75)
    with pytest.raises(ValueError, match="line_chars"):
        armor([b""], encoding="hex", line_chars=MAX_LINE_CHARS + 2)
    with pytest.raises(TypeError):
        b"".join(armor(["text"]))  # type: ignore[list-item]
    assert DEFAULT_LINE_CHARS == {"base64": 76, "hex": 64}
