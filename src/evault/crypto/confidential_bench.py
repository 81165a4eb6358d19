"""Timings of the confidentiality path, for ``evault bench crypto`` (issue 6).

:func:`bench_unwrap_and_stream` runs everything in one process with ``os.urandom`` and a
monotonic clock (the only module of the crypto package that reads either: it measures, it
does not decide). Figures are medians over repetitions, in milliseconds or MB/s (10^6 B/s):

    partial_unwrap_ms         node: d_i = x_i·c1' with its Chaum–Pedersen proof
    verify_request_ms         node: signature, fields, freshness of a signed unwrap request
    verify_partial_ms         client: one proof (Y_i from the commitments cached)
    unwrap_client_ms          client, k=4 of n=5: parse commitments and the wrap, blind, sign
                              the request, verify 4 proofs, combine, unblind, open the wrap
    unwrap_total_ms           the above plus the 4 nodes' work, run one after another
    wrap_ms                   client: hashed-ElGamal wrap of a file key
    stream_encrypt_mb_s       STREAM v1 encryption, 64 KiB chunks, 1 MiB input pieces
    stream_decrypt_mb_s       STREAM v1 decryption of the same
    armor_base64_mb_s         base64 armor of the ciphertext (input MB per second)
    dearmor_base64_mb_s       strict decoding back (output MB per second)
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Iterable, Sequence

import nacl.signing

from evault.crypto.armor import armor, dearmor
from evault.crypto.feldman import FeldmanCommitments, NodeKeyShare, deal_unwrap_key
from evault.crypto.stream import decrypt_stream, encrypt_stream
from evault.crypto.unwrap import (
    PartialUnwrap,
    WrapContext,
    WrappedKey,
    blind,
    make_unwrap_request,
    partial_unwrap,
    recover_file_key,
    sign_unwrap_request,
    verify_partial_unwrap,
    verify_unwrap_request,
    wrap_file_key,
)

_MIB = 1 << 20


def _median_ms(fn: Callable[[], object], repeat: int) -> float:
    return _interleaved_median_ms([fn], repeat)[0]


def _interleaved_median_ms(fns: Sequence[Callable[[], object]], repeat: int) -> list[float]:
    """The median time of each of ``fns``, sampled in turn within one loop, so that figures
    meant to be compared (a part and the whole it belongs to) see the same moments of a
    machine whose speed drifts within seconds."""
    for fn in fns:
        fn()  # warm up
    samples: list[list[float]] = [[] for _ in fns]
    for _ in range(repeat):
        for fn, times in zip(fns, samples, strict=True):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return [statistics.median(times) * 1e3 for times in samples]


def _mb_s(nbytes: int, fn: Callable[[], object], repeat: int) -> float:
    return nbytes / 1e6 / (_median_ms(fn, repeat) / 1e3)


def bench_unwrap_and_stream(*, quick: bool = False) -> dict[str, float]:
    """Measure the confidentiality path; ``quick`` uses fewer repetitions and 8 MiB."""
    repeat = 20 if quick else 200
    k, n = 4, 5
    vault, owner = "bench", "bench-owner"
    ctx = WrapContext(vault, owner, "bench.bin", 1)
    identity = nacl.signing.SigningKey.generate()
    dealing = deal_unwrap_key(threshold=k, nodes=n, rng=os.urandom)
    commitments = dealing.commitments
    shares = {
        s.index: NodeKeyShare(
            vault,
            owner,
            n,
            s,
            commitments,
            bytes(identity.verify_key),
            commitments.verification_key(s.index),
            b"",
        )
        for s in dealing.shares
    }
    file_key = os.urandom(32)
    wrapped = wrap_file_key(file_key, dealing.public_key, ctx, rng=os.urandom)
    wrapped_bytes, commitment_bytes = wrapped.to_bytes(), commitments.to_bytes()
    now = int(time.time())

    b = blind(wrapped, rng=os.urandom)
    req = make_unwrap_request(b, vault=vault, owner=owner, issued_at=now, rng=os.urandom)
    signed = sign_unwrap_request(req, identity)
    one = partial_unwrap(shares[1], req, rng=os.urandom)
    answers = {
        i: partial_unwrap(shares[i], req, rng=os.urandom).to_bytes() for i in range(1, n + 1)
    }

    def node_side(i: int, signed_request: bytes) -> bytes:
        r = verify_unwrap_request(
            signed_request, key_share=shares[i], now=now, seen_before=lambda _: False
        )
        return partial_unwrap(shares[i], r, rng=os.urandom).to_bytes()

    def client_side(answer: Callable[[int, bytes], bytes]) -> bytes:
        w = WrappedKey.from_bytes(wrapped_bytes)
        c = FeldmanCommitments.from_bytes(commitment_bytes)
        bl = blind(w, rng=os.urandom)
        rq = make_unwrap_request(bl, vault=vault, owner=owner, issued_at=now, rng=os.urandom)
        sg = sign_unwrap_request(rq, identity)
        partials = [PartialUnwrap.from_bytes(answer(i, sg), node=i) for i in (1, 2, 3, 5)]
        got = recover_file_key(w, ctx, blinding=bl, request=rq, commitments=c, partials=partials)
        return got.file_key

    if client_side(node_side) != file_key:  # pragma: no cover - a broken build
        raise RuntimeError("benchmark unwrap did not recover the key")

    def client_only() -> None:
        # The nodes answered the fixed request ``req`` in advance; the client still blinds
        # and signs afresh, so every one of its steps is counted once.
        w = WrappedKey.from_bytes(wrapped_bytes)
        c = FeldmanCommitments.from_bytes(commitment_bytes)
        bl = blind(w, rng=os.urandom)
        sign_unwrap_request(
            make_unwrap_request(bl, vault=vault, owner=owner, issued_at=now, rng=os.urandom),
            identity,
        )
        partials = [PartialUnwrap.from_bytes(answers[i], node=i) for i in (1, 2, 3, 5)]
        recover_file_key(w, ctx, blinding=b, request=req, commitments=c, partials=partials)

    # The test of this module compares these three with one another.
    partial_ms, client_ms, total_ms = _interleaved_median_ms(
        [
            lambda: partial_unwrap(shares[1], req, rng=os.urandom),
            client_only,
            lambda: client_side(node_side),
        ],
        repeat,
    )
    results = {
        "partial_unwrap_ms": partial_ms,
        "verify_request_ms": _median_ms(
            lambda: verify_unwrap_request(
                signed, key_share=shares[1], now=now, seen_before=lambda _: False
            ),
            repeat,
        ),
        "verify_partial_ms": _median_ms(
            lambda: verify_partial_unwrap(one, commitments=commitments, request=req), repeat
        ),
        "unwrap_client_ms": client_ms,
        "unwrap_total_ms": total_ms,
        "wrap_ms": _median_ms(
            lambda: wrap_file_key(file_key, dealing.public_key, ctx, rng=os.urandom), repeat
        ),
    }

    size = (8 if quick else 64) * _MIB
    data = os.urandom(size)
    pieces = [data[i : i + _MIB] for i in range(0, size, _MIB)]
    ciphertext = b"".join(encrypt_stream(pieces, file_key, rng=os.urandom))
    ct_pieces = [ciphertext[i : i + _MIB] for i in range(0, len(ciphertext), _MIB)]
    stream_repeat = 3 if quick else 5

    def drain(it: Iterable[object]) -> None:
        for _ in it:
            pass

    results["stream_encrypt_mb_s"] = _mb_s(
        size, lambda: drain(encrypt_stream(pieces, file_key, rng=os.urandom)), stream_repeat
    )
    results["stream_decrypt_mb_s"] = _mb_s(
        size, lambda: drain(decrypt_stream(ct_pieces, file_key)), stream_repeat
    )
    text = b"".join(armor(ct_pieces))
    text_pieces = [text[i : i + _MIB] for i in range(0, len(text), _MIB)]
    results["armor_base64_mb_s"] = _mb_s(
        len(ciphertext), lambda: drain(armor(ct_pieces)), stream_repeat
    )
    results["dearmor_base64_mb_s"] = _mb_s(
        len(ciphertext), lambda: drain(dearmor(text_pieces)), stream_repeat
    )
    return results


if __name__ == "__main__":  # pragma: no cover
    for name, value in bench_unwrap_and_stream().items():
        print(f"{name:24s} {value:10.3f}")
