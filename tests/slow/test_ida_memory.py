"""A 1 GiB document streams through encode + fingerprint + verify + decode in bounded memory.

Run with ``make test-slow`` (or ``pytest -m slow -s`` to see the figure).  The document is
generated on the fly, never stored; the work runs in a fresh interpreter so that the peak RSS
is that of the streaming alone, not of whatever the test session allocated before.
"""

import json
import subprocess
import sys

import pytest

GIB = 1 << 30
LIMIT_BYTES = 256 << 20


@pytest.mark.slow
def test_one_gib_streams_under_256_mib_peak_rss() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "evault.bench.codec", str(GIB)],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
    )
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    print(
        f"\n1 GiB through encode+fingerprint+verify+decode: {report['segments']} segments, "
        f"{report['seconds']} s, peak RSS {report['peak_rss_MiB']} MiB"
    )
    assert report["size_bytes"] == GIB
    assert report["segments"] == GIB // (1 << 20)
    assert 0 < report["peak_rss_bytes"] < LIMIT_BYTES
