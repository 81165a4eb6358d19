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
    assert set(summary["sizes"]) == {"2048", "3072"}
    assert summary["sizes"]["3072"]["signature_bytes"] == 384
    # A share costs three constant-time exponentiations: the ratio to one of them is near 3.
    assert 2.5 < summary["sizes"]["3072"]["share_in_sec_modexps"] < 4.5
    assert "unwrap_total_ms" in summary["confidentiality"]
