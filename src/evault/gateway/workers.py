"""Several gateway processes on one listening socket (``[gateway] workers``).

One gateway process serves from one event loop, so it uses about one core; with ``workers``
above 1 the gateway process binds the socket, forks that many serving processes, and only
supervises them.  Each worker opens its own catalog engine and its own node connections (none
crosses the fork: the supervisor forks before it opens either) and accepts connections on the
shared socket.  Nothing a request needs lives only in one worker: users, tokens, web sessions
and the catalog are in the database, CSRF tokens are double-submit cookies, and the caches
(FVs, verified receipts) are only caches.  The catalog already allows several gateways on one
database; the start-up clean-up of pending deposits and the hourly sweep run in worker 0 alone.

The supervisor:

* announces readiness once every worker has started serving (``on_ready``);
* on SIGTERM or SIGINT passes SIGTERM on to every worker (each finishes its requests in
  flight, as a lone gateway does), waits ``stop_grace_s``, then SIGKILLs what is left;
* when a worker dies after start-up, logs its exit status and forks another after
  ``RESTART_DELAY_S``; a worker dying during start-up (the database unreachable, say) stops
  all of them and the gateway exits with an error;
* is tied to its workers: on Linux each worker gets SIGKILL if the supervisor dies
  (``PR_SET_PDEATHSIG``), so killing the gateway's PID never leaves workers serving.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import sys
import time
from collections.abc import Callable
from typing import Final

from evault.errors import EvaultError

log = logging.getLogger("evault.gateway")

#: Pause before a worker that died is replaced (a worker crashing at once cannot spin).
RESTART_DELAY_S: Final = 1.0
#: How often the supervisor looks at its workers and their readiness.
POLL_S: Final = 0.1
_STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)
_PR_SET_PDEATHSIG: Final = 1

#: ``serve(index, ready)``: serve until told to stop; call ``ready()`` once serving.
Serve = Callable[[int, Callable[[], None]], None]


class WorkerFailed(EvaultError):
    """A gateway worker exited during start-up (its own message is in the log above)."""

    code = "worker_failed"


def supervise(
    count: int, serve: Serve, *, on_ready: Callable[[], None], stop_grace_s: float
) -> None:
    """Run ``count`` forked workers, each ``serve(index, ready)``, until SIGTERM or SIGINT
    (see the module text).  Raises ``WorkerFailed`` if one exits during start-up."""
    if count < 1:
        raise ValueError(f"count: expected >= 1, got {count!r}")
    supervisor = os.getpid()
    ready_r, ready_w = os.pipe()
    os.set_blocking(ready_r, False)
    workers: dict[int, int] = {}  # pid -> worker index
    restart_at: dict[int, float] = {}  # worker index -> when to fork it again
    stop: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stop.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in _STOP_SIGNALS}

    def fork(index: int) -> None:
        # Stop signals stay blocked across the fork, so a worker never runs the supervisor's
        # handler: it restores the default one first, then lets them through.
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                _worker(index, supervisor, serve, ready_r, ready_w)  # never returns
            workers[pid] = index
            log.info("gateway worker %d started (pid %d)", index, pid)
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)

    started = False
    ready: set[int] = set()
    try:
        for index in range(count):
            fork(index)
        while not stop:
            for pid, index, status in _reaped(workers):
                if not started:
                    raise WorkerFailed(
                        f"gateway worker {index} (pid {pid}) exited during start-up "
                        f"({_describe(status)}); its message is in the log above"
                    )
                log.error(
                    "gateway worker %d (pid %d) exited (%s); starting another in %.0f s",
                    index,
                    pid,
                    _describe(status),
                    RESTART_DELAY_S,
                )
                restart_at[index] = time.monotonic() + RESTART_DELAY_S
            for index, when in sorted(restart_at.items()):
                if time.monotonic() >= when:
                    del restart_at[index]
                    fork(index)
            with contextlib.suppress(BlockingIOError):
                ready.update(os.read(ready_r, 256))
            if not started and len(ready) == count:
                started = True
                on_ready()
            time.sleep(POLL_S)
    finally:
        _stop_all(workers, stop_grace_s)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        os.close(ready_r)
        os.close(ready_w)


def _worker(index: int, supervisor: int, serve: Serve, ready_r: int, ready_w: int) -> None:
    """The forked worker's whole life; it leaves with ``os._exit``, never returning into the
    supervisor's code."""
    status = 1
    try:
        os.close(ready_r)
        for sig in _STOP_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
        _die_with(supervisor)

        def ready() -> None:
            os.write(ready_w, bytes([index % 256]))

        serve(index, ready)
        status = 0
    except EvaultError as exc:
        log.error("gateway worker %d: %s", index, exc)
    except BaseException:
        log.exception("gateway worker %d failed", index)
    finally:
        with contextlib.suppress(Exception):
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(status)


def _die_with(supervisor: int) -> None:
    """SIGKILL this process when the supervisor dies (Linux; elsewhere only the check)."""
    name = ctypes.util.find_library("c")
    if sys.platform.startswith("linux") and name:
        libc = ctypes.CDLL(name, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    if os.getppid() != supervisor:  # it died before the line above took effect
        os._exit(1)


def _reaped(workers: dict[int, int]) -> list[tuple[int, int, int]]:
    """(pid, index, wait status) of every worker that has exited, removed from ``workers``."""
    out = []
    for pid in list(workers):
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done, status = pid, 0
        if done:
            out.append((pid, workers.pop(pid), status))
    return out


def _stop_all(workers: dict[int, int], grace_s: float) -> None:
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while workers and time.monotonic() < deadline:
        _reaped(workers)
        time.sleep(0.05)
    for pid, index in list(workers.items()):
        log.warning("gateway worker %d (pid %d) did not stop in time: killed", index, pid)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)
        del workers[pid]


def _describe(status: int) -> str:
    code = os.waitstatus_to_exitcode(status)
    if code >= 0:
        return f"exit status {code}"
    try:
        return f"killed by signal {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


__all__ = ["RESTART_DELAY_S", "Serve", "WorkerFailed", "supervise"]
