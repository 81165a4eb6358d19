"""Several gateway processes on one listening socket (``[gateway] workers``).

One gateway process serves from one event loop, so it uses about one core; with ``workers``
above 1 the gateway process binds the socket, forks that many serving processes, and only
supervises them.  Each worker opens its own catalog engine and its own node connections (none
crosses the fork: the supervisor forks before it opens either).  Nothing a request needs lives
only in one worker: users, tokens, web sessions and the catalog are in the database, CSRF
tokens are double-submit cookies, and the caches (FVs, verified receipts) are only caches.  The
catalog already allows several gateways on one database; the start-up clean-up of pending
deposits and the hourly sweep run in worker 0 alone.

**Connections are dealt, not raced for.**  The supervisor alone accepts on the listening
socket and hands each new connection (its file descriptor, ``SCM_RIGHTS`` over a Unix
``SOCK_SEQPACKET`` pair per worker: :class:`Intake` is the worker's end) to the ready worker
with the fewest open connections, ties going round the workers in turn.  Workers letting the
kernel choose (every worker accepting on the shared socket) was measured unfair: an idle
event loop takes every connection waiting when it wakes, and the benchmark's four persistent
clients all landed in one worker, leaving the other core idle.  A worker counts the
connections it has finished with (closed, or failed in the TLS handshake) in a shared counter
that only it writes; the supervisor counts what it handed over, and the difference is the
worker's load.  A worker confirms each connection it takes before reading from it; until then
the supervisor keeps its own copy open, and deals the connection again if that worker dies, so
a worker killed between two of the supervisor's looks loses no new connection.  Connections
are persistent, so one hand-over (a few system calls) serves many requests; TLS and HTTP stay
entirely in the worker.

The supervisor:

* announces readiness once every worker has started serving (``on_ready``), and deals
  connections only to workers that have;
* on SIGTERM or SIGINT passes SIGTERM on to every worker (each finishes its requests in
  flight, as a lone gateway does), waits ``stop_grace_s``, then SIGKILLs what is left;
* when a worker dies after start-up, logs its exit status and forks another after
  ``RESTART_DELAY_S`` (its open connections die with it; while no worker is ready, new ones
  wait in the listening socket's backlog); a worker dying during start-up (the database
  unreachable, say) stops all of them and the gateway exits with an error;
* is tied to its workers: on Linux each worker gets SIGKILL if the supervisor dies
  (``PR_SET_PDEATHSIG``), so killing the gateway's PID never leaves workers serving.
"""

from __future__ import annotations

import array
import contextlib
import ctypes
import ctypes.util
import logging
import mmap
import os
import selectors
import signal
import socket
import struct
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

#: Connections accepted per wake-up of the supervisor, at most (then it looks at its workers).
ACCEPT_BATCH: Final = 64
#: Room for the file descriptors of one hand-over message (one is sent per message).
_FDS_SPACE: Final = socket.CMSG_SPACE(16 * array.array("i").itemsize)
#: Never wait; received descriptors close on exec where the platform can say so (Linux).
_RECV_FLAGS: Final = socket.MSG_DONTWAIT | getattr(socket, "MSG_CMSG_CLOEXEC", 0)
#: Counter slots are 64-bit ints in one shared anonymous mapping.
_SLOT: Final = 8


class Intake:
    """A worker's end of the dispatch: the connections the supervisor hands it.

    Put :meth:`fileno` in the event loop's readers; when readable, :meth:`receive` returns
    the connections waiting (accepted, blocking mode off, TLS not started).  Call
    :meth:`finished` once for each connection received when it ends, however it ends: that
    is how the supervisor knows the worker's load.
    """

    def __init__(self, channel: socket.socket, finished: memoryview, index: int) -> None:
        channel.setblocking(True)  # receives never wait (MSG_DONTWAIT); receipts may
        self._channel = channel
        self._finished = finished
        self.index = index

    def fileno(self) -> int:
        return self._channel.fileno()

    def receive(self) -> list[socket.socket]:
        """The connections handed over so far (maybe none), each acknowledged to the
        supervisor before this returns; ``EOFError`` once the supervisor has closed its end."""
        out: list[socket.socket] = []
        while True:
            try:
                # Not socket.recv_fds: it ignores its flags (Python 3.11), so it would block.
                message, ancillary, flags, _ = self._channel.recvmsg(16, _FDS_SPACE, _RECV_FLAGS)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:  # the channel itself failed: nothing more will come
                for conn in out:
                    conn.close()
                raise EOFError(f"the connection channel failed: {exc}") from exc
            fds = array.array("i")
            for level, kind, data in ancillary:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
            if not message and not fds:
                if out:
                    break
                raise EOFError("the gateway supervisor closed the connection channel")
            if flags & socket.MSG_CTRUNC:  # pragma: no cover - one fd per message is sent
                log.error("gateway worker %d: a connection hand-over was truncated", self.index)
            out.extend(socket.socket(fileno=fd) for fd in fds)
        if out:
            # Nothing has been read from them yet: until this receipt arrives, the supervisor
            # may still give them to another worker if this one dies.
            try:
                self._channel.sendall(_RECEIPT.pack(len(out)))
            except OSError as exc:
                for conn in out:
                    conn.close()
                raise EOFError(f"the gateway supervisor is gone: {exc}") from exc
        for conn in out:
            conn.setblocking(False)
        return out

    def finished(self) -> None:
        self._finished[self.index] += 1


#: ``serve(index, ready, intake)``: serve the connections ``intake`` hands over until told
#: to stop; call ``ready()`` once serving.
Serve = Callable[[int, Callable[[], None], Intake], None]

#: A worker's receipt: how many connections it has just taken from its channel.
_RECEIPT: Final = struct.Struct("<I")


class _Dispatcher:
    """The supervisor's side: accepts on ``listener`` and deals the connections out.

    A connection handed over stays open here too until the worker's receipt for it arrives
    (:meth:`Intake.receive`): a worker that dies before taking it, killed between two polls
    of the supervisor, say, has it dealt again to another, and the client never notices.
    """

    def __init__(self, listener: socket.socket, count: int) -> None:
        listener.setblocking(False)
        self.listener = listener
        self.count = count
        self._map = mmap.mmap(-1, _SLOT * count)
        self.finished = memoryview(self._map).cast("q")
        self.sent = [0] * count
        self.channels: dict[int, socket.socket] = {}  # worker index -> supervisor's end
        self.unconfirmed: dict[int, list[socket.socket]] = {}  # handed over, no receipt yet
        self.waiting: list[socket.socket] = []  # to deal again once a worker is ready
        self.ready: set[int] = set()
        self._turn = 0
        self._selector = selectors.DefaultSelector()
        self._listening = False

    def channel_for(self, index: int) -> socket.socket:
        """A fresh channel for worker ``index`` (about to be forked): the worker's end."""
        self.lost(index)
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ours.setblocking(False)
        self.channels[index] = ours
        self.unconfirmed[index] = []
        self.sent[index] = 0
        self.finished[index] = 0
        self._selector.register(ours, selectors.EVENT_READ, index)
        return theirs

    def close_in_child(self) -> None:
        """In a newly forked worker: let go of every socket that is the supervisor's."""
        self._selector.close()
        self.listener.close()
        for conn in self.waiting + [c for group in self.unconfirmed.values() for c in group]:
            conn.close()
        for channel in self.channels.values():
            channel.close()

    def became_ready(self, index: int) -> None:
        if index in self.channels:  # not one that died since
            self.ready.add(index)

    def lost(self, index: int, *, deal_again: bool = True) -> None:
        """Worker ``index`` is gone (or about to be replaced): deal it nothing more, and deal
        again what it had not yet taken (or close it, when the gateway stops)."""
        self.ready.discard(index)
        channel = self.channels.pop(index, None)
        if channel is None:
            return
        self._read_receipts(index, channel)  # the ones it sent before it went
        self._selector.unregister(channel)
        channel.close()
        again = self.unconfirmed.pop(index, [])
        if not deal_again:
            for conn in again:
                conn.close()
        elif again:
            log.warning(
                "gateway worker %d left %d connection(s) untaken: dealt again", index, len(again)
            )
        self.waiting.extend(again)

    def _load(self, index: int) -> int:
        return max(0, self.sent[index] - self.finished[index])

    def poll(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for connections and receipts, and deal with them."""
        if self.ready and self.waiting:
            held, self.waiting = self.waiting, []
            for conn in held:
                self._hand_over(conn)
        listen = bool(self.ready)
        if listen != self._listening:  # no worker ready: new connections wait in the backlog
            if listen:
                self._selector.register(self.listener, selectors.EVENT_READ, None)
            else:
                self._selector.unregister(self.listener)
            self._listening = listen
        if not self._selector.get_map():
            time.sleep(timeout_s)
            return
        for key, _ in self._selector.select(timeout_s):
            if key.data is None:
                self._accept()
            elif key.data in self.channels and not self._read_receipts(
                key.data, self.channels[key.data]
            ):
                self.lost(key.data)  # its end of the channel closed: it died

    def _read_receipts(self, index: int, channel: socket.socket) -> bool:
        """Close our copies of the connections worker ``index`` confirmed; False at the end
        of its channel (the worker is gone)."""
        pending = self.unconfirmed.get(index, [])
        while True:
            try:
                data = channel.recv(_RECEIPT.size)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                return False
            if len(data) != _RECEIPT.size:
                return False  # b"": the worker's end is closed
            (taken,) = _RECEIPT.unpack(data)
            for conn in pending[:taken]:
                conn.close()
            del pending[:taken]

    def _accept(self) -> None:
        """Accept what waits (up to ``ACCEPT_BATCH``) and hand each connection over."""
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: the connection waits in the backlog
                log.error("gateway: accepting a connection failed: %s", exc)
                time.sleep(POLL_S)  # not a busy loop on a listener that stays readable
                return
            self._hand_over(conn)

    def _hand_over(self, conn: socket.socket) -> None:
        order = sorted(self.ready, key=lambda i: (self._load(i), (i - self._turn) % self.count))
        for index in order:
            try:
                socket.send_fds(self.channels[index], [b"c"], [conn.fileno()])
            except OSError as exc:  # full (a stuck worker) or gone: the next one
                log.warning("gateway worker %d takes no connection: %s", index, exc)
                continue
            self.unconfirmed[index].append(conn)
            self.sent[index] += 1
            self._turn = index + 1
            return
        if self.ready:
            log.error("gateway: no worker took a connection from %s: closed", _peer(conn))
            conn.close()
        else:
            self.waiting.append(conn)

    def close(self) -> None:
        for index in list(self.channels):
            self.lost(index, deal_again=False)
        for conn in self.waiting:
            conn.close()
        self.waiting.clear()
        self._selector.close()
        self.finished.release()
        self._map.close()


def _peer(conn: socket.socket) -> str:
    try:
        host, port = conn.getpeername()[:2]
    except OSError:
        return "a client already gone"
    return f"{host}:{port}"


class WorkerFailed(EvaultError):
    """A gateway worker exited during start-up (its own message is in the log above)."""

    code = "worker_failed"


def supervise(
    count: int,
    serve: Serve,
    *,
    listener: socket.socket,
    on_ready: Callable[[], None],
    stop_grace_s: float,
) -> None:
    """Run ``count`` forked workers, each ``serve(index, ready, intake)``, dealing them the
    connections accepted on ``listener`` (a listening socket), until SIGTERM or SIGINT (see the
    module text).  Raises ``WorkerFailed`` if one exits during start-up."""
    if count < 1:
        raise ValueError(f"count: expected >= 1, got {count!r}")
    supervisor = os.getpid()
    ready_r, ready_w = os.pipe()
    os.set_blocking(ready_r, False)
    dispatcher = _Dispatcher(listener, count)
    workers: dict[int, int] = {}  # pid -> worker index
    restart_at: dict[int, float] = {}  # worker index -> when to fork it again
    stop: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stop.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in _STOP_SIGNALS}

    def fork(index: int) -> None:
        # Stop signals stay blocked across the fork, so a worker never runs the supervisor's
        # handler: it restores the default one first, then lets them through.
        channel = dispatcher.channel_for(index)
        signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
        try:
            pid = os.fork()
            if pid == 0:
                # The supervisor's sockets are not the worker's to use: only its own channel.
                dispatcher.close_in_child()
                intake = Intake(channel, dispatcher.finished, index)
                _worker(index, supervisor, serve, intake, ready_r, ready_w)  # never returns
            workers[pid] = index
            log.info("gateway worker %d started (pid %d)", index, pid)
        finally:
            channel.close()
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
                dispatcher.lost(index)
                restart_at[index] = time.monotonic() + RESTART_DELAY_S
            for index, when in sorted(restart_at.items()):
                if time.monotonic() >= when:
                    del restart_at[index]
                    fork(index)
            with contextlib.suppress(BlockingIOError):
                for index in os.read(ready_r, 256):
                    ready.add(index)
                    dispatcher.became_ready(index)
            if not started and len(ready) == count:
                started = True
                log.info("gateway: all %d workers serving", count)
                on_ready()
            dispatcher.poll(POLL_S)
    finally:
        _stop_all(workers, stop_grace_s)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        dispatcher.close()
        os.close(ready_r)
        os.close(ready_w)


def _worker(
    index: int, supervisor: int, serve: Serve, intake: Intake, ready_r: int, ready_w: int
) -> None:
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

        serve(index, ready, intake)
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


__all__ = ["RESTART_DELAY_S", "Intake", "Serve", "WorkerFailed", "supervise"]
