"""`evault bench codec`: IDA encode/decode and fingerprint throughput, against zfec in the same run.

What is measured, apples to apples: both codecs run behind the same ``Codec`` interface through
the same ``StreamEncoder`` (the document fed in ``FEED_CHUNK_BYTES`` reads, cut in 1 MiB segments,
each segment split into m rows, last one padded) and the same per-segment decode loop, on the
same random data, with the same (m, n) and the same slice sets:

* ``decode_all_data``: slices 0..m-1 (every data slice present: no arithmetic for a systematic
  code, only concatenation);
* ``decode_missing``: slices n-m..n-1, so min(m, n-m) data slices are missing and are rebuilt by
  real decoding.  **The headline ``decode_vs_zfec`` ratio uses this case.**

MB/s are 10^6 bytes of *document* per second (not of slices), best of a few rounds so the
figure is the machine's and not a neighbour's.  Figures at (3, 5) on the 64 MiB document give
``encode_vs_zfec`` and ``decode_vs_zfec``.  Fingerprinting is reported as MB/s of slice bytes
hashed into Merkle leaves, SHA-256 (the scheme in use) against BLAKE3 (the alternative), plus the
whole per-node deposit pipeline (encode + fingerprint all n slices + SHA-256 of the document).

``stream_memory_check`` (used by the slow test ``tests/slow/test_ida_memory.py``) streams a large
generated document through encode + fingerprint + verify + decode and reports peak RSS.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from evault.ida import DEFAULT_CODEC_ID, DEFAULT_SEGMENT_BYTES, Codec, StreamEncoder, get_codec
from evault.ida.base import BytesLike, as_view, check_blocks, cut_pieces, row_bytes, split_rows
from evault.ida.fingerprint import DocumentFingerprinter, SliceVerifier, leaf_hash
from evault.ida.isal import isal_status
from evault.memory import peak_rss_bytes

MIB = 1 << 20
PARAMS: tuple[tuple[int, int], ...] = ((2, 3), (3, 5), (10, 14))
HEADLINE = (3, 5)
#: Reads of this size feed the encoder (a file read loop; the node's HTTP body chunks are smaller).
FEED_CHUNK_BYTES = MIB


class ZfecCodec:
    """zfec behind evault's ``Codec`` interface, same layout, for the comparison only."""

    codec_id = "zfec"

    def __init__(self, m: int, n: int) -> None:
        import zfec  # a dev/bench dependency only

        self.m, self.n = m, n
        self.row_slices: tuple[int | None, ...] = tuple(range(m))  # systematic
        self._encoder = zfec.Encoder(m, n)
        self._decoder = zfec.Decoder(m, n)

    def block_bytes(self, segment_len: int) -> int:
        return row_bytes(segment_len, self.m)

    def encode(self, segment: BytesLike) -> list[bytes]:
        view = as_view(segment, "segment")
        b = row_bytes(len(view), self.m)
        blocks: list[bytes] = self._encoder.encode(split_rows(view, self.m, b))
        return blocks

    def decode(self, blocks: Mapping[int, BytesLike], segment_len: int) -> bytes:
        return b"".join(self.decode_rows(blocks, segment_len))

    def decode_rows(
        self, blocks: Mapping[int, BytesLike], segment_len: int
    ) -> list[bytes | memoryview]:
        b = row_bytes(segment_len, self.m)
        checked = check_blocks(blocks, segment_len, self.m, self.n, b)
        data = [i for i in sorted(checked) if i < self.m]
        nums = tuple(data + [i for i in sorted(checked) if i >= self.m][: self.m - len(data)])
        rows = self._decoder.decode(tuple(checked[i] for i in nums), nums)
        return cut_pieces(list(rows), segment_len)


def _best(fn: Callable[[], object], rounds: int) -> float:
    """Fastest wall time of ``rounds`` runs of ``fn`` (after one warm-up run)."""
    fn()
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _mbps(nbytes: int, seconds: float) -> float:
    return round(nbytes / seconds / 1e6, 1)


def _encode_document(codec: Codec, data: bytes, chunk: int) -> list[list[bytes]]:
    """Every segment's blocks, kept (for the decode measurements; not timed)."""
    encoder = StreamEncoder(codec, DEFAULT_SEGMENT_BYTES)
    view = memoryview(data)
    out: list[list[bytes]] = []
    for start in range(0, len(view), chunk):
        out.extend(encoder.feed(view[start : start + chunk]))
    out.extend(encoder.finish())
    return out


def _stream_document(codec: Codec, data: bytes, chunk: int) -> int:
    """Encode as a node or gateway does: each segment's blocks are handed on, then dropped.

    (Keeping 64 MiB × n/m of blocks alive would measure the kernel's page faults, not the codec.)
    """
    encoder = StreamEncoder(codec, DEFAULT_SEGMENT_BYTES)
    view = memoryview(data)
    total = 0
    for start in range(0, len(view), chunk):
        for blocks in encoder.feed(view[start : start + chunk]):
            total += len(blocks[-1])
    for blocks in encoder.finish():
        total += len(blocks[-1])
    return total


def _decode_document(
    codec: Codec, segments: Sequence[list[bytes]], lengths: Sequence[int], use: Sequence[int]
) -> int:
    total = 0
    for blocks, length in zip(segments, lengths, strict=True):
        total += len(codec.decode({j: blocks[j] for j in use}, length))
    return total


def _measure(codec: Codec, data: bytes, rounds: int, *, streamed: bool) -> dict[str, Any]:
    m, n = codec.m, codec.n
    all_data = list(range(m))
    tail = list(range(n - m, n))
    if streamed:
        segments = _encode_document(codec, data, FEED_CHUNK_BYTES)
        encode_s = _best(lambda: _stream_document(codec, data, FEED_CHUNK_BYTES), rounds)
    else:
        segments = [codec.encode(data)]
        encode_s = _best(lambda: codec.encode(data), rounds)
    lengths = [
        min(DEFAULT_SEGMENT_BYTES, len(data) - i * DEFAULT_SEGMENT_BYTES)
        for i in range(len(segments))
    ]
    # Correctness first: a fast wrong answer is no answer.
    for use in (all_data, tail):
        for i in {0, len(segments) - 1}:
            start = i * DEFAULT_SEGMENT_BYTES
            got = codec.decode({j: segments[i][j] for j in use}, lengths[i])
            if got != data[start : start + lengths[i]]:
                raise RuntimeError(f"{codec!r} decoded segment {i} from {use} wrongly")
    decode_data_s = _best(lambda: _decode_document(codec, segments, lengths, all_data), rounds)
    decode_missing_s = _best(lambda: _decode_document(codec, segments, lengths, tail), rounds)
    return {
        "encode_MBps": _mbps(len(data), encode_s),
        "decode_all_data_MBps": _mbps(len(data), decode_data_s),
        "decode_missing_MBps": _mbps(len(data), decode_missing_s),
        "decode_missing_from": tail,
        "data_slices_missing": [r for r in range(m) if r not in tail],
    }


def _fingerprint_figures(data: bytes, rounds: int) -> dict[str, Any]:
    import blake3

    m, n = HEADLINE
    codec = get_codec(DEFAULT_CODEC_ID, m, n)
    segments = _encode_document(codec, data, FEED_CHUNK_BYTES)
    slice_bytes = sum(len(b) for blocks in segments for b in blocks)

    def sha256_leaves() -> None:
        doc = DocumentFingerprinter(n)
        for blocks in segments:
            doc.add(blocks)
        doc.fv()

    def blake3_leaves() -> None:
        for i, blocks in enumerate(segments):
            for j, block in enumerate(blocks):
                h = blake3.blake3(j.to_bytes(4, "big") + i.to_bytes(8, "big"))
                h.update(block)
                h.digest()

    def deposit_pipeline() -> None:
        doc_hash = hashlib.sha256()
        doc = DocumentFingerprinter(n)
        encoder = StreamEncoder(codec, DEFAULT_SEGMENT_BYTES)
        view = memoryview(data)
        for start in range(0, len(view), FEED_CHUNK_BYTES):
            chunk = view[start : start + FEED_CHUNK_BYTES]
            doc_hash.update(chunk)
            for blocks in encoder.feed(chunk):
                doc.add(blocks)
        for blocks in encoder.finish():
            doc.add(blocks)
        doc.fv()
        doc_hash.digest()

    sha_s = _best(sha256_leaves, rounds)
    blake_s = _best(blake3_leaves, rounds)
    pipe_s = _best(deposit_pipeline, rounds)
    return {
        "slice_bytes_hashed": slice_bytes,
        "sha256_leaves_MBps": _mbps(slice_bytes, sha_s),
        "blake3_leaves_MBps": _mbps(slice_bytes, blake_s),
        "sha256_leaf_ms_per_document_MiB": round(sha_s * 1e3 / (len(data) / MIB), 3),
        "blake3_leaf_ms_per_document_MiB": round(blake_s * 1e3 / (len(data) / MIB), 3),
        "node_deposit_pipeline_MBps": _mbps(len(data), pipe_s),
        "pipeline": f"SHA-256(document) + encode {m}-of-{n} + SHA-256 leaves of all {n} slices",
    }


def _figures(quick: bool) -> dict[str, Any]:
    rng = random.Random(2)
    doc_bytes = (8 if quick else 64) * MIB
    rounds_doc = 1 if quick else 3
    rounds_seg = 5 if quick else 30
    document = rng.randbytes(doc_bytes)
    segment = document[:DEFAULT_SEGMENT_BYTES]
    results = []
    for m, n in PARAMS:
        codecs: list[Codec] = [get_codec(DEFAULT_CODEC_ID, m, n), ZfecCodec(m, n)]
        for case, data, rounds in (
            ("document", document, rounds_doc),
            ("segment", segment, rounds_seg),
        ):
            for codec in codecs:
                row = {
                    "m": m,
                    "n": n,
                    "case": case,
                    "bytes": len(data),
                    "codec": "evault" if codec.codec_id != "zfec" else "zfec",
                    "codec_id": codec.codec_id,
                }
                row.update(_measure(codec, data, rounds, streamed=case == "document"))
                results.append(row)

    def pick(codec: str) -> dict[str, Any]:
        return next(
            r
            for r in results
            if (r["m"], r["n"]) == HEADLINE and r["case"] == "document" and r["codec"] == codec
        )

    ours, theirs = pick("evault"), pick("zfec")
    return {
        "bench": "codec",
        "codec_id": DEFAULT_CODEC_ID,
        "isal": isal_status(),
        "cpu_count": os.cpu_count(),
        "document_bytes": doc_bytes,
        "segment_bytes": DEFAULT_SEGMENT_BYTES,
        "feed_chunk_bytes": FEED_CHUNK_BYTES,
        "quick": quick,
        "results": results,
        "fingerprint": _fingerprint_figures(document, rounds_doc),
        "encode_vs_zfec": round(ours["encode_MBps"] / theirs["encode_MBps"], 2),
        "decode_vs_zfec": round(ours["decode_missing_MBps"] / theirs["decode_missing_MBps"], 2),
        "decode_all_data_vs_zfec": round(
            ours["decode_all_data_MBps"] / theirs["decode_all_data_MBps"], 2
        ),
        "ratio_case": (
            f"(m,n)={HEADLINE}, {doc_bytes // MIB} MiB document in 1 MiB segments; decode from "
            f"slices {ours['decode_missing_from']} (data slices {ours['data_slices_missing']} "
            "missing, so both codecs really decode)"
        ),
    }


def _print_table(fig: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(100, Console().width))
    table = Table(title=f"IDA codec throughput, MB/s of document ({fig['codec_id']} vs zfec)")
    for col in ("m,n", "case", "codec", "encode", "decode, all data", "decode, missing", "missing"):
        table.add_column(col, justify="left" if col in ("case", "codec") else "right", no_wrap=True)
    for r in fig["results"]:
        table.add_row(
            f"{r['m']},{r['n']}",
            f"{r['case']} of {r['bytes'] // MIB} MiB",
            r["codec"],
            f"{r['encode_MBps']:.0f}",
            f"{r['decode_all_data_MBps']:.0f}",
            f"{r['decode_missing_MBps']:.0f}",
            ",".join(str(x) for x in r["data_slices_missing"]),
        )
    console.print(table)
    fp = fig["fingerprint"]
    console.print(
        f"fingerprints (Merkle leaves over all slice bytes): SHA-256 {fp['sha256_leaves_MBps']:.0f}"
        f" MB/s, BLAKE3 {fp['blake3_leaves_MBps']:.0f} MB/s; node deposit pipeline "
        f"({fp['pipeline']}): {fp['node_deposit_pipeline_MBps']:.0f} MB/s of document"
    )
    lib = fig["isal"]
    console.print(
        f"ISA-L: {'in use, ' + str(lib['library']) if lib['accelerated'] else lib['problem']}"
    )
    console.print(
        f"encode_vs_zfec {fig['encode_vs_zfec']}, decode_vs_zfec {fig['decode_vs_zfec']} "
        f"(decode with all data slices: {fig['decode_all_data_vs_zfec']}); {fig['ratio_case']}"
    )


def run(*, json_output: bool, quick: bool) -> None:
    figures = _figures(quick)
    _print_table(figures)
    if json_output:
        sys.stdout.flush()
        print(json.dumps(figures, sort_keys=True), flush=True)


def stream_memory_check(
    size_bytes: int, *, m: int = 3, n: int = 5, chunk_bytes: int = 64 * 1024
) -> dict[str, Any]:
    """Stream a generated document of ``size_bytes`` through the whole dispersal path.

    Pass 1 (a node's deposit): feed in ``chunk_bytes`` reads, SHA-256 the document, encode,
    fingerprint all n slices, keep nothing but the leaves.  Pass 2 (a retrieval): regenerate,
    encode, check every block of the slices n-m..n-1 against the FV (leaf list verified against
    the root first) and decode each segment from them, comparing to the original.  No document,
    slice or segment list is ever held whole: peak RSS must not grow with ``size_bytes``.
    """
    codec = get_codec(DEFAULT_CODEC_ID, m, n)
    base = random.Random(7).randbytes(max(chunk_bytes, 1))

    def chunks() -> Any:
        sent = 0
        k = 0
        while sent < size_bytes:
            piece = k.to_bytes(8, "big") + base[8:]
            piece = piece[: min(chunk_bytes, size_bytes - sent)]
            sent += len(piece)
            k += 1
            yield piece

    start = time.perf_counter()
    encoder = StreamEncoder(codec, DEFAULT_SEGMENT_BYTES)
    doc = DocumentFingerprinter(n)
    doc_hash = hashlib.sha256()
    for piece in chunks():
        doc_hash.update(piece)
        for blocks in encoder.feed(piece):
            doc.add(blocks)
    for blocks in encoder.finish():
        doc.add(blocks)
    fv = doc.fv()
    layout = encoder.layout()

    use = list(range(n - m, n))
    verifiers = {j: SliceVerifier(fv.roots[j], j, doc.slices[j].leaves()) for j in use}
    encoder = StreamEncoder(codec, DEFAULT_SEGMENT_BYTES)
    check_hash = hashlib.sha256()
    segment = 0

    def take(blocks: list[bytes]) -> None:
        nonlocal segment
        for j in use:
            verifiers[j].verify(segment, blocks[j])
        rebuilt = codec.decode({j: blocks[j] for j in use}, layout.segment_len(segment))
        check_hash.update(rebuilt)
        segment += 1

    for piece in chunks():
        for blocks in encoder.feed(piece):
            take(blocks)
    for blocks in encoder.finish():
        take(blocks)
    if check_hash.digest() != doc_hash.digest() or segment != layout.segment_count:
        raise RuntimeError("the rebuilt document differs from the original")
    # Sanity: leaves really bind their blocks (guards against a verifier that checks nothing).
    if leaf_hash(0, 0, b"") == leaf_hash(0, 0, b"\0"):
        raise RuntimeError("leaf hash ignores its block")
    peak = peak_rss_bytes()
    return {
        "size_bytes": size_bytes,
        "segments": layout.segment_count,
        "seconds": round(time.perf_counter() - start, 2),
        "peak_rss_bytes": peak,
        "peak_rss_MiB": round(peak / MIB, 1),
        "fv_hash": fv.fv_hash().hex(),
    }


if __name__ == "__main__":  # pragma: no cover - used by the slow memory test
    print(json.dumps(stream_memory_check(int(sys.argv[1]))), flush=True)
