"""Node ingest benchmark as a test: throughput and peak RSS of one 100 MiB deposit, in a fresh
process so the peak is the deposit's own (``python -m evault.node.bench``)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_a_100_mib_deposit_streams_in_bounded_memory() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "evault.node.bench", "--size-mib", "100", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    print(result.stdout.splitlines()[0])
    figures = json.loads(result.stdout.splitlines()[-1])
    assert figures["size_bytes"] == 100 * 1024 * 1024
    # The document is never buffered: the deposit adds a few pieces and segments to the
    # process, far below the document's size (and the 300 MiB bound for a whole node).
    assert figures["peak_rss_mib"] - figures["peak_rss_before_mib"] < 64
    assert figures["peak_rss_mib"] < 300
    assert figures["mb_per_s"] > 20  # a floor that only a pathological slowdown breaks
