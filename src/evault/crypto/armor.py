"""Printable ("armored") encodings of encrypted files, as the paper's §2.3.2 describes.

"Some encrypted files are more conveniently maintained in printable ASCII. Consequently, the
file can be nibblized and encoded 2-for-1. A slightly better solution is for 3 bytes to be
broken into 4 6-bit fragments and each be transmitted as a printable character producing a
4-for-3 encoding." — these are hex (RFC 4648 §8, base 16) and base64 (RFC 4648 §4).

Format (ASCII, lines end in LF; a decoder also accepts CRLF)::

    -----BEGIN EVAULT BASE64-----       or  -----BEGIN EVAULT HEX-----
    <body lines of line_chars characters; the last one may be shorter>
    -----END EVAULT BASE64-----         or  -----END EVAULT HEX-----

The frame names the encoding (so :func:`dearmor` needs no flag) and makes truncation of the
text visible (a cut file has no END line). Defaults: 76 characters a line for base64 (57
bytes, as MIME), 64 for hex (32 bytes). An empty file has no body lines.

Decoding is strict, because a lenient decoder silently turns garbage into different bytes:
the first line must be a BEGIN line and the last an END line of the same encoding, nothing
may follow it, body lines must be non-empty, at most 1024 characters, and only of the
encoding's alphabet (hex: either case; base64: the standard alphabet, no URL-safe variants);
base64 must be padded, padding may only end the text, and its unused bits must be zero
(RFC 4648 §3.5 canonical encoding). Any violation raises :class:`~evault.errors.ArmorError`
naming the line. Both directions stream: memory stays bounded by one input piece plus one
line, whatever the file size.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterable, Iterator
from typing import Final, Literal

from evault.errors import ArmorError

Encoding = Literal["base64", "hex"]
#: What the iterators accept as input pieces.
Buffer = bytes | bytearray | memoryview
ENCODINGS: Final[tuple[Encoding, ...]] = ("base64", "hex")
DEFAULT_LINE_CHARS: Final[dict[Encoding, int]] = {"base64": 76, "hex": 64}
MAX_LINE_CHARS: Final = 1024
#: Lines encoded or decoded per call into binascii (batches are cut at whole lines).
_BATCH_LINES: Final = 1024

_B64_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_HEX_ALPHABET: Final = b"0123456789abcdefABCDEF"


def _begin(encoding: Encoding) -> bytes:
    return b"-----BEGIN EVAULT " + encoding.upper().encode("ascii") + b"-----"


def _end(encoding: Encoding) -> bytes:
    return b"-----END EVAULT " + encoding.upper().encode("ascii") + b"-----"


def _check_encoding(encoding: object) -> Encoding:
    if encoding == "base64":
        return "base64"
    if encoding == "hex":
        return "hex"
    raise ValueError(f"encoding: expected one of {ENCODINGS}")


def armored_size(data_bytes: int, *, encoding: Encoding = "base64", line_chars: int = 0) -> int:
    """Exact size of :func:`armor`'s output for ``data_bytes`` input bytes."""
    enc = _check_encoding(encoding)
    width = line_chars or DEFAULT_LINE_CHARS[enc]
    chars = 4 * -(-data_bytes // 3) if enc == "base64" else 2 * data_bytes
    lines = -(-chars // width)
    return len(_begin(enc)) + 1 + chars + lines + len(_end(enc)) + 1


def armor(
    data: Iterable[Buffer], *, encoding: Encoding = "base64", line_chars: int = 0
) -> Iterator[bytes]:
    """Encode pieces of any sizes; yield ASCII text (BEGIN line, body lines, END line).

    ``line_chars`` (default per encoding) must be a multiple of 4 for base64 and of 2 for
    hex, so that every full line encodes whole input bytes.
    """
    enc = _check_encoding(encoding)
    width = line_chars or DEFAULT_LINE_CHARS[enc]
    quantum = 4 if enc == "base64" else 2
    if (
        isinstance(width, bool)
        or not isinstance(width, int)
        or not quantum <= width <= MAX_LINE_CHARS
        or width % quantum
    ):
        raise ValueError(
            f"line_chars: must be a multiple of {quantum} in [{quantum}, {MAX_LINE_CHARS}]"
        )
    line_bytes = width // 4 * 3 if enc == "base64" else width // 2
    return _armor(data, enc, width, line_bytes)


def _encode(block: bytes | bytearray, enc: Encoding, width: int) -> bytes:
    view = memoryview(block)
    if enc == "base64":
        step = width // 4 * 3
        return b"".join(
            [binascii.b2a_base64(view[i : i + step]) for i in range(0, len(view), step)]
        )
    text = view.hex().encode("ascii")
    return b"".join([text[i : i + width] + b"\n" for i in range(0, len(text), width)])


def _armor(data: Iterable[Buffer], enc: Encoding, width: int, line_bytes: int) -> Iterator[bytes]:
    yield _begin(enc) + b"\n"
    batch = line_bytes * _BATCH_LINES
    pending = bytearray()
    for piece in data:
        if not isinstance(piece, bytes | bytearray | memoryview):
            raise TypeError("data: expected an iterable of bytes")
        pending += piece
        if len(pending) >= batch:
            whole = len(pending) - len(pending) % line_bytes
            yield _encode(pending[:whole], enc, width)
            del pending[:whole]
    if pending:
        yield _encode(pending, enc, width)
    yield _end(enc) + b"\n"


# -- decoding ---------------------------------------------------------------------------------


class _Decoder:
    """Strict incremental decoder of body characters (line structure handled by the caller)."""

    def __init__(self, enc: Encoding) -> None:
        self.enc = enc
        self.quantum = 4 if enc == "base64" else 2
        self.alphabet = _B64_ALPHABET if enc == "base64" else _HEX_ALPHABET
        self.carry = b""
        self.finished = False  # base64 padding seen: nothing may follow

    def feed(self, chars: bytes, first_line: int) -> bytes:
        if self.finished:
            raise ArmorError("data after base64 padding", first_line)
        if self.enc == "base64" and b"=" in chars:
            pad_at = chars.index(b"=")
            body, pad = chars[:pad_at], chars[pad_at:]
            total = len(self.carry) + len(body)
            if pad.strip(b"=") or len(pad) > 2 or (total + len(pad)) % 4:
                raise ArmorError("misplaced base64 padding", first_line)
            out = self._decode(body, first_line, final_pad=len(pad))
            self.finished = True
            return out
        return self._decode(chars, first_line, final_pad=0)

    def _decode(self, chars: bytes, line: int, final_pad: int) -> bytes:
        stray = chars.translate(None, self.alphabet)
        if stray:
            raise ArmorError(f"character {stray[:1]!r} is not {self.enc}", line)
        text = self.carry + chars
        if final_pad:
            text += b"=" * final_pad
            self.carry = b""
            if self._pad_bits_nonzero(text[-4:], final_pad):
                raise ArmorError("base64 padding hides non-zero bits (not canonical)", line)
        else:
            cut = len(text) - len(text) % self.quantum
            text, self.carry = text[:cut], text[cut:]
        if not text:
            return b""
        if self.enc == "hex":
            return bytes.fromhex(text.decode("ascii"))
        # The alphabet and the padding were checked above, which is what strict_mode would
        # add (at half the speed).
        return binascii.a2b_base64(text)

    @staticmethod
    def _pad_bits_nonzero(last_quantum: bytes, pad: int) -> bool:
        # "xx==" carries 12 bits for 8: the low 4 bits of the second character must be 0;
        # "xxx=" carries 18 bits for 16: the low 2 bits of the third character must be 0.
        value = _B64_ALPHABET.index(last_quantum[3 - pad : 4 - pad])
        return bool(value & (0x0F if pad == 2 else 0x03))

    def close(self, line: int) -> None:
        if self.carry:
            raise ArmorError(
                f"text ends inside a {self.quantum}-character group (truncated or not padded)",
                line,
            )


def _blocks(text: Iterable[Buffer]) -> Iterator[bytes]:
    """Re-cut pieces into runs of whole lines (each ending in LF), then the unterminated tail.

    Memory stays bounded: a partial line longer than ``MAX_LINE_CHARS`` + 1 (for a CR) is
    refused as soon as it is seen, at the line number the caller counts.
    """
    pending = bytearray()
    for piece in text:
        if not isinstance(piece, bytes | bytearray | memoryview):
            raise TypeError("text: expected an iterable of bytes")
        pending += piece
        cut = pending.rfind(b"\n") + 1
        if cut:
            yield bytes(pending[:cut])
            del pending[:cut]
        if len(pending) > MAX_LINE_CHARS + 1:
            yield bytes(pending)  # the caller reports it as an over-long line
            return
    yield bytes(pending)


class _Dearmorer:
    """Line-structure checks around a :class:`_Decoder`, with a fast path for clean blocks."""

    def __init__(self, expect: Encoding | None) -> None:
        self.expect = expect
        self.decoder: _Decoder | None = None
        self.allowed = b""
        self.end = b""
        self.line = 0  # number of the last line consumed
        self.done = False

    def _begin(self, line: bytes) -> None:
        enc: Encoding | None = None
        for candidate in ENCODINGS:
            if line == _begin(candidate):
                enc = candidate
        if enc is None:
            raise ArmorError("first line is not '-----BEGIN EVAULT BASE64-----' or '… HEX-----'", 1)
        if self.expect is not None and enc != self.expect:
            raise ArmorError(f"expected {self.expect} armor, found {enc}", 1)
        self.decoder = _Decoder(enc)
        self.allowed = self.decoder.alphabet + (b"=" if enc == "base64" else b"")
        self.end = _end(enc)

    def block(self, block: bytes) -> bytes:
        """Consume whole lines (or the final tail); return the bytes they decode to."""
        if self.done:
            if block:
                raise ArmorError("text continues after the END line", self.line + 1)
            return b""
        if self.decoder is not None and b"-----" not in block and b"=" not in block:
            fast = self._fast(block)
            if fast is not None:
                return fast
        return self._slow(block)

    def _fast(self, block: bytes) -> bytes | None:
        # Whole clean lines of body text: check them all at once with C-speed bytes methods;
        # on any doubt return None and let _slow find (and name the line of) the problem.
        if self.decoder is None or not block.endswith(b"\n"):
            return None
        body = block.replace(b"\r\n", b"\n") if b"\r" in block else block
        lines = body.split(b"\n")[:-1]
        if min(map(len, lines)) == 0 or max(map(len, lines)) > MAX_LINE_CHARS:
            return None
        chars = b"".join(lines)
        if chars.translate(None, self.decoder.alphabet):
            return None
        first = self.line + 1
        self.line += len(lines)
        return self.decoder.feed(chars, first)

    def _slow(self, block: bytes) -> bytes:
        out = bytearray()
        batch: list[bytes] = []
        batch_line = self.line + 1
        lines = block.split(b"\n")
        tail = lines.pop()  # b"" when the block ends in LF
        if tail:
            lines.append(tail)
        for line in lines:
            self.line += 1
            if line.endswith(b"\r"):
                line = line[:-1]
            if len(line) > MAX_LINE_CHARS:
                raise ArmorError(f"line longer than {MAX_LINE_CHARS} characters", self.line)
            if self.done:
                raise ArmorError("text continues after the END line", self.line)
            if self.decoder is None:
                self._begin(line)
                batch_line = self.line + 1
                continue
            if line.startswith(b"-----"):
                if line != self.end:
                    raise ArmorError(f"expected '{self.end.decode()}'", self.line)
                if batch:
                    out += self.decoder.feed(b"".join(batch), batch_line)
                    batch = []
                self.decoder.close(self.line)
                self.done = True
                continue
            if not line:
                raise ArmorError("empty line inside the armored body", self.line)
            stray = line.translate(None, self.allowed)
            if stray:
                raise ArmorError(f"character {stray[:1]!r} is not {self.decoder.enc}", self.line)
            if not batch:
                batch_line = self.line
            batch.append(line)
            if b"=" in line:
                # Feed at once when padding shows the end is near, so an error for data
                # after the padding names the right line.
                out += self.decoder.feed(b"".join(batch), batch_line)
                batch = []
        if batch and self.decoder is not None:
            out += self.decoder.feed(b"".join(batch), batch_line)
        return bytes(out)

    def finish(self) -> None:
        if self.decoder is None:
            raise ArmorError("empty text (no BEGIN line)", 1)
        if not self.done:
            raise ArmorError(
                f"text ends without the '{self.end.decode()}' line (truncated)", self.line + 1
            )


def dearmor(text: Iterable[Buffer], *, expect: Encoding | None = None) -> Iterator[bytes]:
    """Decode armored text (pieces of any sizes); yield the bytes as they are decoded.

    The encoding is read from the BEGIN line; ``expect`` additionally insists on one.
    Raises :class:`~evault.errors.ArmorError` on anything not strictly well formed — possibly
    after some bytes were yielded, so treat the output as unverified until the end.
    """
    if expect is not None:
        _check_encoding(expect)
    return _dearmor(text, expect)


def _dearmor(text: Iterable[Buffer], expect: Encoding | None) -> Iterator[bytes]:
    state = _Dearmorer(expect)
    for block in _blocks(text):
        out = state.block(block)
        if out:
            yield out
    state.finish()
