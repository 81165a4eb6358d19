import os
import subprocess
import sys
import time

import pytest

from evault.memory import MIB, peak_rss_bytes, peak_rss_mib


def test_peak_rss_of_a_child_is_its_own_not_its_large_parents() -> None:
    # The bug this module exists for: ru_maxrss of a process started by a big parent carries
    # the parent's size (subprocess forks the whole interpreter before execve).
    ballast = b"\x01" * (256 * MIB)  # every page written
    assert peak_rss_mib() > 256
    code = "from evault.memory import peak_rss_mib; print(peak_rss_mib())"
    child = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    del ballast
    assert 5 < float(child.stdout) < 128


def test_another_process_by_pid() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys; b = b'x' * (64 << 20); sys.stdin.read()"],
        stdin=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while peak_rss_bytes(child.pid) < 64 * MIB and time.monotonic() < deadline:
            time.sleep(0.02)
        assert 64 * MIB <= peak_rss_bytes(child.pid) < 256 * MIB
    finally:
        child.communicate(timeout=30)
    assert peak_rss_bytes(os.getpid()) == pytest.approx(peak_rss_bytes(), rel=0.05)


def test_a_missing_process_is_an_error() -> None:
    with pytest.raises(OSError):
        peak_rss_bytes(2**22 + 12345)  # above the default pid_max


_CHURN = r"""
import random, resource, sys
from evault.memory import keep_freed_memory
took = keep_freed_memory() if sys.argv[1] == "keep" else None
rng = random.Random(1)
sizes = [200 << 10, 256 << 10, 349526, 1 << 20, 3495253]  # a retrieval's buffers
def churn():  # a few buffers alive at once, then all freed
    alive = [b"x" * rng.choice(sizes) for _ in range(6)]
    return sum(map(len, alive))
churn()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(100):
    churn()
print(took, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _churn_faults(mode: str, env: dict[str, str] | None = None) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", _CHURN, mode],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env=env,
    ).stdout.split()
    return out[0], int(out[1])


def test_kept_freed_memory_is_reused_without_page_faults() -> None:
    took, faults_kept = _churn_faults("keep")
    _, faults_default = _churn_faults("default")
    assert took == "True"
    # glibc's defaults fault big buffers in again and again; kept memory is reused.
    assert faults_default > 20_000
    assert faults_kept < faults_default / 10


def test_an_operators_own_malloc_settings_are_left_alone() -> None:
    env = dict(os.environ, MALLOC_TRIM_THRESHOLD_="131072")
    took, _ = _churn_faults("keep", env)
    assert took == "False"
