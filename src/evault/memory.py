"""A process's memory: its peak as the memory bounds of the tests and benchmarks read it, and
the C allocator's habit of giving freed memory back at once.

* Peak RSS, on Linux, is ``VmHWM`` of ``/proc/<pid>/status``: the high-water mark of that
  address space only.  ``ru_maxrss`` is wrong for it, because Linux folds the RSS of the
  address space that ``execve`` replaced into it: a process started by a large parent (a long
  pytest session, whose ``subprocess`` forks the whole interpreter first) reports the
  parent's size.
* glibc's malloc serves a big allocation (over 128 KiB at first) with its own ``mmap`` and
  unmaps it when freed, and gives the top of its heap back to the kernel once more than a few
  MiB are free there.  The next allocation of that size faults every page in again, each one
  zeroed by the kernel.  Moving a document allocates and frees such buffers all the time (TLS
  records in and out, blocks, disk reads): page faults were 5 % of the gateway's CPU and 12 %
  of a benchmark client's on 10 MiB retrievals.  :func:`keep_freed_memory` has glibc serve
  allocations up to 32 MiB from its heap and keep up to 32 MiB free at its top for reuse.
  Peak memory barely moves (freed memory is reused, not added: in the 2 GiB vault test the
  gateway peaked at 176 MiB, against 174 before); a process that shrinks after a peak keeps up
  to 32 MiB more resident per malloc arena.
"""

from __future__ import annotations

import ctypes
import os
import resource
import sys
from pathlib import Path
from typing import Final

MIB: Final = 1024 * 1024

#: What :func:`keep_freed_memory` has glibc keep: the largest allocation served from the heap
#: (32 MiB is glibc's own ceiling for it), and the free memory kept at the top of the heap.
KEEP_FREED_BYTES: Final = 32 * MIB
# mallopt's parameter numbers (glibc's malloc.h)
_M_TRIM_THRESHOLD: Final = -1
_M_MMAP_THRESHOLD: Final = -3
#: Set by an operator, these environment variables tune glibc's malloc themselves: left alone.
_GLIBC_ENV: Final = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")


def keep_freed_memory(limit_bytes: int = KEEP_FREED_BYTES) -> bool:
    """Have glibc's malloc keep freed memory for reuse (module text); True if it took.

    False, changing nothing, off glibc or when the operator set glibc's own environment
    variables for this.  Call it early in a process that moves big buffers.
    """
    if any(name in os.environ for name in _GLIBC_ENV):
        return False
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
        mallopt = ctypes.CDLL(None).mallopt
    except (ValueError, OSError, AttributeError):  # no such confstr name / no glibc
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, limit_bytes)) and bool(
        mallopt(_M_TRIM_THRESHOLD, limit_bytes)
    )


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
