"""The confidentiality benchmark runs and reports every figure `evault bench crypto` needs."""

from __future__ import annotations

from evault.crypto.confidential_bench import bench_unwrap_and_stream

EXPECTED = {
    "partial_unwrap_ms",
    "verify_request_ms",
    "verify_partial_ms",
    "unwrap_client_ms",
    "unwrap_total_ms",
    "wrap_ms",
    "stream_encrypt_mb_s",
    "stream_decrypt_mb_s",
    "armor_base64_mb_s",
    "dearmor_base64_mb_s",
}


def test_quick_benchmark_reports_positive_figures() -> None:
    figures = bench_unwrap_and_stream(quick=True)
    assert set(figures) == EXPECTED
    assert all(isinstance(v, float) and v > 0 for v in figures.values())
    # The whole k=4 unwrap includes at least four partial unwraps and four proof checks.
    assert figures["unwrap_total_ms"] > figures["unwrap_client_ms"]
    assert figures["unwrap_total_ms"] > 4 * figures["partial_unwrap_ms"]
