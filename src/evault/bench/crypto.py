"""`evault bench crypto`: threshold-RSA receipts (issue 3), then the confidentiality path (issue 6).

Threshold RSA, for 2048 and 3072 bits with n = 5 signers and k = 4 (DESIGN §2 defaults):

* ``keygen``: the whole dealer (two safe primes, shares, verification keys), median of several
  runs (the prime search time is very spread out, so the median is the honest figure);
* ``share_value``: one signer's share alone (``share_value``): what a node computes for a
  deposit's answer (proofs on demand), one constant-time exponentiation;
* ``share``: one signer's share with its proof of correctness (``sign_share``) spending a
  precomputed nonce, what a node computes when the gateway asks for the proof (``GET
  .../share``, only after a failed combination): two constant-time exponentiations;
* ``share_cold``: the same share computing its nonce inline (no pool, or the pool is empty):
  three constant-time exponentiations;
* ``nonce_precompute``: making one ``PrecomputedNonce`` (r and v^r), the work the node's
  refill thread does off the deposit path;
* ``verify``: one share's proof check (only needed when the optimistic combination fails);
* ``combine``: k = 4 honest shares into the RSASSA-PSS signature, including the y^e = x check;
* ``combine_bad``: 5 shares of which one is wrong: the pessimistic path (every proof checked);
* ``modexp``: one bare ``gmpy2.powmod`` with a full-size base and exponent mod the key's N, and
  ``modexp_sec`` the same with ``gmpy2.powmod_sec`` (the constant-time variant that the signer
  must use for its secret exponents).  Share and modexp samples are interleaved in one loop, so
  a busy neighbour slows both alike.

Times are CPU time of the benchmarking thread (``time.thread_time``), so time spent waiting for
a core on a shared machine is not counted.

``share_vs_modexp`` = median 3072-bit online share with its proof (precomputed nonce) ÷ median
3072-bit bare modexp (issue 3's figure; the node, ``evault.node.signing.ShareSigner``, keeps a
pool of nonces filled in idle time).  ``share_value_vs_modexp`` = the share alone ÷ bare modexp:
what a deposit costs a node since proofs come on demand.  An online share with its proof
costs x^(2Δ s_i) (~|N|-bit exponent) and x̃^r (|N| + 2·128 bits), both constant-time, so the
ratio is about 2.08 × (modexp_sec / modexp).
``share_vs_modexp_cold`` = median cold share ÷ bare modexp: three constant-time exponentiations,
about 3.17 × (modexp_sec / modexp); it is what a share costs when the pool is empty, and the
total CPU per share either way (online + ``nonce_precompute``).  ``share_in_sec_modexps`` and
``share_cold_in_sec_modexps`` report the shares ÷ modexp_sec to make that split visible.

The last line with ``--json`` is one JSON object: the required ``share_vs_modexp`` (online),
``combine_ms`` (3072 bits) and ``keygen_3072_s`` (median), ``share_vs_modexp_cold`` and
``nonce_precompute_ms`` (3072 bits), every per-size figure under
``sizes``, the targets and whether each is met, and the confidentiality figures of
:func:`evault.crypto.confidential_bench.bench_unwrap_and_stream` under ``confidentiality``.
"""

from __future__ import annotations

import json
import secrets
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import gmpy2

from evault.crypto.threshold_rsa import (
    PrecomputedNonce,
    SignatureShare,
    combine,
    deal,
    share_value,
    sign_share,
    verify_share,
)
from evault.encoding import canonical_json

PLAYERS, THRESHOLD = 5, 4
TARGETS = {"share_vs_modexp": 4.0, "combine_ms": 1.0, "keygen_3072_s": 30.0}

#: A statement shaped like a receipt (what the vault signs).
_STATEMENT = canonical_json(
    {
        "version": 1,
        "vault": "bench",
        "owner": "bench-owner",
        "name": "report.pdf",
        "document_version": 1,
        "size": 1048576,
        "sha256": "00" * 32,
        "fv_hash": "11" * 32,
        "n": 5,
        "m": 3,
        "segment_bytes": 1048576,
        "codec": "rs-isal-cauchy/v1",
        "deposited_at": "2024-05-01T12:00:00Z",
    }
)


#: CPU time of this thread: on a shared machine, time spent descheduled is not counted (cache
#: contention from neighbours still is).  Every threshold-RSA figure uses this clock.
_clock = time.thread_time


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _timed(fn: Callable[[], object]) -> float:
    start = _clock()
    fn()
    return _clock() - start


def _median_ms(fn: Callable[[], object], repeat: int) -> float:
    fn()  # warm caches (cached key properties, hash prefixes)
    return statistics.median(_timed(fn) for _ in range(repeat)) * 1e3


def bench_threshold_rsa(bits: int, *, keygen_runs: int, repeat: int) -> dict[str, Any]:
    """Figures for one modulus size; see the module text."""
    keygen_s: list[float] = []
    for run in range(keygen_runs):
        start = _clock()
        public, key_shares = deal(PLAYERS, THRESHOLD, bits)
        keygen_s.append(_clock() - start)
        _say(f"  keygen {bits} bits, run {run + 1}/{keygen_runs}: {keygen_s[-1]:.1f} s")

    n_mod = gmpy2.mpz(public.n_modulus)
    base = gmpy2.mpz(secrets.randbits(bits)) % n_mod
    exponent = gmpy2.mpz(secrets.randbits(bits) | (1 << (bits - 1)))
    share_s: list[float] = []
    share_value_s: list[float] = []
    share_cold_s: list[float] = []
    nonce_s: list[float] = []
    modexp_s: list[float] = []
    modexp_sec_s: list[float] = []
    sign_share(key_shares[0], public, _STATEMENT)  # warm up
    sign_share(key_shares[0], public, _STATEMENT, nonce=PrecomputedNonce(public))
    for i in range(repeat):
        key_share = key_shares[i % PLAYERS]
        modexp_s.append(_timed(lambda: gmpy2.powmod(base, exponent, n_mod)))
        modexp_sec_s.append(_timed(lambda: gmpy2.powmod_sec(base, exponent, n_mod)))
        start = _clock()
        nonce = PrecomputedNonce(public)  # what the node's refill thread does in idle time
        nonce_s.append(_clock() - start)
        start = _clock()
        sign_share(key_share, public, _STATEMENT, nonce=nonce)  # the deposit path
        share_s.append(_clock() - start)
        start = _clock()
        sign_share(key_share, public, _STATEMENT)  # nonce computed inline
        share_cold_s.append(_clock() - start)
        start = _clock()
        share_value(key_share, public, _STATEMENT)  # the deposit answer (proofs on demand)
        share_value_s.append(_clock() - start)

    shares = [sign_share(s, public, _STATEMENT) for s in key_shares]
    verify_ms = _median_ms(lambda: verify_share(public, _STATEMENT, shares[1]), repeat)
    combine_ms = _median_ms(lambda: combine(public, _STATEMENT, shares[:THRESHOLD]), 10 * repeat)
    wrong = SignatureShare(1, shares[0].value * 2 % public.n_modulus, 0, 0)
    combine_bad_ms = _median_ms(
        lambda: combine(public, _STATEMENT, [wrong, *shares[1:]]), max(3, repeat // 4)
    )
    share_ms = statistics.median(share_s) * 1e3
    share_value_ms = statistics.median(share_value_s) * 1e3
    share_cold_ms = statistics.median(share_cold_s) * 1e3
    modexp_ms = statistics.median(modexp_s) * 1e3
    modexp_sec_ms = statistics.median(modexp_sec_s) * 1e3
    return {
        "bits": bits,
        "keygen_s": statistics.median(keygen_s),
        "keygen_runs_s": [round(t, 3) for t in keygen_s],
        "share_ms": share_ms,
        "share_value_ms": share_value_ms,
        "share_cold_ms": share_cold_ms,
        "nonce_precompute_ms": statistics.median(nonce_s) * 1e3,
        "verify_ms": verify_ms,
        "combine_ms": combine_ms,
        "combine_bad_ms": combine_bad_ms,
        "modexp_ms": modexp_ms,
        "modexp_sec_ms": modexp_sec_ms,
        "share_vs_modexp": share_ms / modexp_ms,
        "share_value_vs_modexp": share_value_ms / modexp_ms,
        "share_vs_modexp_cold": share_cold_ms / modexp_ms,
        "share_in_sec_modexps": share_ms / modexp_sec_ms,
        "share_cold_in_sec_modexps": share_cold_ms / modexp_sec_ms,
        "signature_bytes": len(combine(public, _STATEMENT, shares[:THRESHOLD]).signature),
        "share_bytes": SignatureShare.encoded_length(public),
    }


def _print_tables(fig: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=max(150, Console().width))
    table = Table(
        title=f"Threshold RSA (Shoup), n={PLAYERS}, k={THRESHOLD}: medians"
        + (" (quick)" if fig["quick"] else "")
    )
    for col in (
        "bits",
        "keygen s",
        "alone ms",
        "share ms",
        "cold ms",
        "nonce ms",
        "verify ms",
        "combine ms",
        "1 bad of 5 ms",
        "modexp ms",
        "sec ms",
        "share/modexp",
        "cold/modexp",
    ):
        table.add_column(col, justify="right", no_wrap=True)
    for size in fig["sizes"].values():
        table.add_row(
            str(size["bits"]),
            f"{size['keygen_s']:.1f} ×{len(size['keygen_runs_s'])}",
            f"{size['share_value_ms']:.2f}",
            f"{size['share_ms']:.2f}",
            f"{size['share_cold_ms']:.2f}",
            f"{size['nonce_precompute_ms']:.2f}",
            f"{size['verify_ms']:.2f}",
            f"{size['combine_ms']:.3f}",
            f"{size['combine_bad_ms']:.1f}",
            f"{size['modexp_ms']:.2f}",
            f"{size['modexp_sec_ms']:.2f}",
            f"{size['share_vs_modexp']:.2f}",
            f"{size['share_vs_modexp_cold']:.2f}",
        )
    console.print(table)
    console.print(
        "combine = k shares to a PSS signature; 1 bad of 5 = every proof checked; "
        "sec = gmpy2.powmod_sec; keygen ×runs"
    )
    console.print(
        "Note: alone = the share without its proof (1 exp, a deposit's answer: proofs on "
        "demand); share = share+proof with a nonce (r, v^r) precomputed in idle time (2 exps, "
        "asked for after a failed combination; share_vs_modexp); cold = nonce computed inline "
        "(3 exps, empty pool; share_vs_modexp_cold); nonce = one precomputation",
        soft_wrap=True,
    )
    for name, target in TARGETS.items():
        value = fig[name]
        verdict = "meets" if fig["meets"][name] else "MISSES"
        console.print(f"{name} = {value:.3f} ({verdict} target <= {target:g})")
    console.print(
        f"share_vs_modexp_cold = {fig['share_vs_modexp_cold']:.3f} (no target: nonce inline), "
        f"nonce_precompute_ms = {fig['nonce_precompute_ms']:.2f}"
    )
    conf = fig.get("confidentiality")
    if isinstance(conf, dict):
        ctable = Table(title="Confidentiality path (issue 6): medians")
        ctable.add_column("figure")
        ctable.add_column("value", justify="right")
        for key, value in conf.items():
            ctable.add_row(key, f"{value:.3f}")
        console.print(ctable)


def run(*, json_output: bool, quick: bool) -> None:
    """Run the benchmark; print tables, and with ``json_output`` a JSON summary last."""
    plan = {2048: (2, 10), 3072: (1, 10)} if quick else {2048: (11, 40), 3072: (11, 40)}
    sizes: dict[str, dict[str, Any]] = {}
    for bits, (keygen_runs, repeat) in plan.items():
        _say(f"threshold RSA, {bits} bits")
        sizes[str(bits)] = bench_threshold_rsa(bits, keygen_runs=keygen_runs, repeat=repeat)
    top = sizes["3072"]
    fig: dict[str, Any] = {
        "bench": "crypto",
        "quick": quick,
        "players": PLAYERS,
        "threshold": THRESHOLD,
        "share_vs_modexp": round(top["share_vs_modexp"], 3),
        "share_vs_modexp_cold": round(top["share_vs_modexp_cold"], 3),
        "share_value_ms": round(top["share_value_ms"], 3),
        "share_value_vs_modexp": round(top["share_value_vs_modexp"], 3),
        "nonce_precompute_ms": round(top["nonce_precompute_ms"], 3),
        "combine_ms": round(top["combine_ms"], 4),
        "keygen_3072_s": round(top["keygen_s"], 2),
        "sizes": sizes,
        "targets": TARGETS,
        "gmp": gmpy2.mp_version(),
    }
    fig["meets"] = {name: fig[name] <= target for name, target in TARGETS.items()}
    _say("confidentiality path")
    from evault.crypto.confidential_bench import bench_unwrap_and_stream

    fig["confidentiality"] = bench_unwrap_and_stream(quick=quick)
    _print_tables(fig)
    if json_output:
        print(json.dumps(fig, sort_keys=True), flush=True)
