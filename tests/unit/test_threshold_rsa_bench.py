"""`evault bench crypto --json --quick` ends with one JSON object holding the issue's figures."""

from __future__ import annotations

import json

import pytest

from evault.bench import crypto


@pytest.mark.slow
def test_quick_bench_prints_the_required_json_last(capsys: pytest.CaptureFixture[str]) -> None:
    crypto.run(json_output=True, quick=True)
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    for name in ("share_vs_modexp", "combine_ms", "keygen_3072_s"):
        assert isinstance(summary[name], float) and summary[name] > 0, name
        assert summary["meets"][name] == (summary[name] <= summary["targets"][name])
    for name in ("share_vs_modexp_cold", "nonce_precompute_ms", "share_value_vs_modexp"):
        assert isinstance(summary[name], float) and summary[name] > 0, name
    assert set(summary["sizes"]) == {"2048", "3072"}
    top = summary["sizes"]["3072"]
    assert top["signature_bytes"] == 384
    # Online, a share spends a precomputed nonce: two constant-time exponentiations (2.08 in
    # units of one |N|-bit exponent); cold it also computes v^r: three (3.17).
    assert 1.5 < top["share_in_sec_modexps"] < 3.0
    assert 2.5 < top["share_cold_in_sec_modexps"] < 4.5
    assert top["share_ms"] < top["share_cold_ms"]
    # Alone (a deposit's answer, proofs on demand) a share is one constant-time exponentiation.
    assert top["share_value_ms"] < top["share_ms"]
    assert 0.6 < top["share_value_ms"] / top["modexp_sec_ms"] < 1.6
    assert summary["share_vs_modexp"] < summary["share_vs_modexp_cold"]
    assert "unwrap_total_ms" in summary["confidentiality"]
