"""`evault bench vault --quick` end to end on a real local vault (slow: about a minute).

Small windows and a 2048-bit key keep it short; what it checks is the plumbing: every point
ran without a failed client check, the last line is the JSON summary with the issue's three
maps, and the report, the JSON file and the plots were written.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from evault.bench.vault import SIZES_BYTES

pytestmark = [pytest.mark.slow, pytest.mark.integration]


def test_quick_run_ends_with_the_json_summary(tmp_path: Path) -> None:
    out = tmp_path / "results"
    command = [sys.executable, "-m", "evault", "bench", "vault", "--quick", "--json"]
    command += ["--duration-s", "0.3", "--key-bits", "2048", "--out", str(out)]
    done = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    sizes = {str(s) for s in SIZES_BYTES}
    for key in ("retrievals_per_min", "deposits_per_min", "retrieval_ms_p50"):
        assert set(summary[key]) == sizes, key
        assert all(v is not None and v > 0 for v in summary[key].values()), key
    assert summary["errors"] == 0
    assert summary["key_bits"] == 2048
    assert "#### Retrievals, default (n=5, m=3, k=4)" in done.stdout
    doc = json.loads((out / "vault-bench.json").read_text())
    assert len(doc["points"]) == 8 * 2 * 2
    # One persistent connection per simulated client, as the gateway saw them: never more
    # connections than clients, and all of them where every client finished several operations.
    points = doc["points"]
    assert all((p["connections_seen_by_gateway"] or 0) <= p["concurrency"] for p in points)
    small = [p for p in points if p["op"] == "retrieve" and p["size_bytes"] <= 10 * 1024]
    assert all(p["connections_seen_by_gateway"] == p["concurrency"] for p in small)
    for name in ("vault-retrievals-per-min.png", "vault-retrieval-ms.png"):
        assert (out / name).read_bytes().startswith(b"\x89PNG")
    # Nothing of the run's vault data is left behind (the dealt keys are kept as a cache).
    assert not list(out.glob("run-*"))
