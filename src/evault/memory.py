"""A process's peak resident memory, as the memory bounds of the tests and benchmarks read it.

On Linux this is ``VmHWM`` of ``/proc/<pid>/status``: the high-water mark of that address space
only.  ``ru_maxrss`` is wrong for it, because Linux folds the RSS of the address space that
``execve`` replaced into it: a process started by a large parent (a long pytest session, whose
``subprocess`` forks the whole interpreter first) reports the parent's size.
"""

from __future__ import annotations

import resource
import sys
from pathlib import Path

MIB = 1024 * 1024


def peak_rss_bytes(pid: int | None = None) -> int:
    """Peak RSS of process ``pid`` (this process when None), in bytes.

    Without ``/proc`` (not Linux) only this process can be measured, by ``ru_maxrss``; asking
    for another process there raises ``OSError``.
    """
    status = Path(f"/proc/{'self' if pid is None else pid}/status")
    try:
        text = status.read_text(encoding="ascii", errors="replace")
    except OSError:
        if pid is not None:
            raise
    else:
        for line in text.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024  # kB
        if pid is not None:
            raise OSError(f"{status}: no VmHWM line")
    # ru_maxrss is in KiB on Linux and bytes on macOS.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def peak_rss_mib(pid: int | None = None) -> float:
    """:func:`peak_rss_bytes` in MiB."""
    return peak_rss_bytes(pid) / MIB
