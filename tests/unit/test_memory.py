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
