"""The gateway's worker supervisor (evault.gateway.workers), with real forked processes.

Each test runs the supervisor in a child Python process (it forks and installs signal
handlers, which pytest's own process must not), with a ``serve`` that records its pid, greets
each connection it is handed with its worker index (one byte), keeps it until the client
closes it, and stops on SIGTERM; the real gateway with workers is tested in tests/integration.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psutil
import pytest

from evault.gateway.workers import supervise
from tests.processes import alive, established, wait_for

SUPERVISOR = textwrap.dedent(
    """
    import logging, os, selectors, signal, socket, sys, time
    from pathlib import Path
    from evault.gateway import workers
    from evault.errors import ConfigError

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    out = Path(sys.argv[1])
    count = int(sys.argv[2])
    behaviour = sys.argv[3]
    workers.RESTART_DELAY_S = 30.0 if behaviour in ("slow-restart", "deaf-1") else 0.2
    listener = socket.create_server(("127.0.0.1", 0))
    (out / "port").write_text(str(listener.getsockname()[1]))

    def serve(index, ready, intake):
        stopping = []
        signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
        if behaviour == "fail-1" and index == 1:
            raise ConfigError("database unreachable")
        if behaviour == "stubborn":
            signal.signal(signal.SIGTERM, signal.SIG_IGN)
        (out / f"worker-{index}-{os.getpid()}").write_text(str(os.getppid()))
        selector = selectors.DefaultSelector()
        if not (behaviour == "deaf-1" and index == 1):  # deaf: never takes a connection
            selector.register(intake.fileno(), selectors.EVENT_READ)
        finished = 0
        ready()
        deadline = time.monotonic() + 60
        while not stopping and time.monotonic() < deadline:
            for key, _ in selector.select(0.02):
                if key.data is None:
                    for conn in intake.receive():
                        conn.setblocking(True)
                        conn.sendall(bytes([index]))
                        selector.register(conn, selectors.EVENT_READ, conn)
                elif not key.data.recv(1):  # the client closed it
                    selector.unregister(key.data)
                    key.data.close()
                    intake.finished()
                    finished += 1
                    (out / f"finished-{index}-{finished}").touch()

    def on_ready():
        print("READY", flush=True)

    try:
        workers.supervise(count, serve, listener=listener, on_ready=on_ready, stop_grace_s=1.0)
    except workers.WorkerFailed as exc:
        print("FAILED", exc, flush=True)
        sys.exit(3)
    print("STOPPED", flush=True)
    """
)


@contextmanager
def supervisor(
    tmp_path: Path, count: int, behaviour: str = "normal"
) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, str(tmp_path), str(count), behaviour],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        yield proc
    finally:
        pids = [p.pid for p in _children(proc.pid)]
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        for pid in pids:  # by PID, in case a test failed before they were stopped
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@contextmanager
def serving(
    tmp_path: Path, count: int, behaviour: str = "normal"
) -> Iterator[subprocess.Popen[str]]:
    """A supervisor (see :func:`supervisor`) whose workers all serve."""
    with supervisor(tmp_path, count, behaviour) as proc:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "READY"
        yield proc


def _children(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children()
    except psutil.NoSuchProcess:
        return []


def workers_seen(tmp_path: Path) -> dict[int, list[int]]:
    """worker index -> the pids that served as it, in the order they started."""
    seen: dict[int, list[tuple[float, int]]] = {}
    for path in tmp_path.glob("worker-*"):
        _, index, pid = path.name.split("-")
        seen.setdefault(int(index), []).append((path.stat().st_mtime, int(pid)))
    return {index: [pid for _, pid in sorted(pids)] for index, pids in seen.items()}


def test_ready_once_every_worker_serves_and_sigterm_stops_them_all(tmp_path: Path) -> None:
    with serving(tmp_path, 3) as proc:
        seen = workers_seen(tmp_path)
        assert sorted(seen) == [0, 1, 2]
        pids = [p[0] for p in seen.values()]
        assert sorted(pids) == sorted(p.pid for p in _children(proc.pid))
        for path in tmp_path.glob("worker-*"):
            assert path.read_text() == str(proc.pid)  # forked by the supervisor itself
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert proc.stdout.read().strip() == "STOPPED"
        assert not any(alive(pid) for pid in pids)


def test_a_worker_that_dies_is_replaced(tmp_path: Path) -> None:
    with serving(tmp_path, 2) as proc:
        [first] = workers_seen(tmp_path)[1]
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: len(workers_seen(tmp_path)[1]) == 2)
        second = workers_seen(tmp_path)[1][1]
        assert second != first and alive(second)
        assert len(workers_seen(tmp_path)[0]) == 1  # the other one was left alone
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        assert not alive(second)
        assert proc.stderr is not None
        log = proc.stderr.read()
        assert f"gateway worker 1 (pid {first}) exited (killed by signal SIGKILL)" in log


def test_a_worker_failing_at_start_up_stops_the_gateway_with_an_error(tmp_path: Path) -> None:
    with supervisor(tmp_path, 2, "fail-1") as proc:
        assert proc.wait(timeout=30) == 3
        assert proc.stdout is not None and proc.stderr is not None
        out = proc.stdout.read()
        assert "FAILED gateway worker 1" in out and "exited during start-up" in out
        assert "READY" not in out
        assert "gateway worker 1: database unreachable" in proc.stderr.read()
        for pids in workers_seen(tmp_path).values():  # worker 0, if it got that far
            assert not any(alive(pid) for pid in pids)  # stopped, not left serving


def test_workers_die_with_a_killed_supervisor(tmp_path: Path) -> None:
    with serving(tmp_path, 2) as proc:
        pids = [p[0] for p in workers_seen(tmp_path).values()]
        proc.kill()
        proc.wait(timeout=10)
        wait_for(lambda: not any(alive(pid) for pid in pids))


def test_a_worker_ignoring_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    with serving(tmp_path, 1, "stubborn") as proc:
        [[pid]] = workers_seen(tmp_path).values()
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert 0.9 <= time.monotonic() - t0 < 10  # the 1 s grace, then SIGKILL
        assert not alive(pid)
        assert proc.stderr is not None
        assert f"gateway worker 0 (pid {pid}) did not stop in time: killed" in proc.stderr.read()


def connect(tmp_path: Path) -> tuple[socket.socket, int]:
    """A new connection to the supervised port, and the index of the worker that greets it."""
    conn = socket.create_connection(("127.0.0.1", int((tmp_path / "port").read_text())), 10)
    conn.settimeout(10)
    greeting = conn.recv(1)
    assert len(greeting) == 1, "the connection was closed instead of served"
    return conn, greeting[0]


def test_connections_go_to_the_worker_with_the_fewest(tmp_path: Path) -> None:
    with serving(tmp_path, 2):
        conns = [connect(tmp_path) for _ in range(6)]
        try:
            # Dealt in turn while the loads are even: never two ahead on one worker.
            indices = [index for _, index in conns]
            assert sorted(indices) == [0, 0, 0, 1, 1, 1]
            assert all(a != b for a, b in itertools.pairwise(indices))
            # Worker 0's connections end: the next three all go to it, not in turn.
            for conn, index in conns:
                if index == 0:
                    conn.close()
            wait_for(lambda: (tmp_path / "finished-0-3").exists())
            more = [connect(tmp_path) for _ in range(3)]
            conns += more
            assert [index for _, index in more] == [0, 0, 0]
        finally:
            for conn, _ in conns:
                conn.close()


def test_a_dead_worker_is_dealt_nothing_and_no_connection_is_lost(tmp_path: Path) -> None:
    with serving(tmp_path, 2, "slow-restart"):
        [first] = workers_seen(tmp_path)[1]
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: not psutil.pid_exists(first))  # reaped by the supervisor
        conns = [connect(tmp_path) for _ in range(3)]
        try:
            assert [index for _, index in conns] == [0, 0, 0]
        finally:
            for conn, _ in conns:
                conn.close()


def test_connections_a_dying_worker_had_not_taken_are_dealt_again(tmp_path: Path) -> None:
    with serving(tmp_path, 2, "deaf-1") as proc:
        first, index = connect(tmp_path)
        with first:
            assert index == 0
            port = int((tmp_path / "port").read_text())
            with socket.create_connection(("127.0.0.1", port), 10) as second:
                second.settimeout(10)
                # Dealt to worker 1, which never takes it: the supervisor holds it meanwhile.
                wait_for(lambda: established(proc.pid, port) == 1)
                [deaf] = workers_seen(tmp_path)[1]
                os.kill(deaf, signal.SIGKILL)
                assert second.recv(1) == bytes([0])  # the same connection, now worker 0's
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
        assert proc.stderr is not None
        assert "gateway worker 1 left 1 connection(s) untaken: dealt again" in proc.stderr.read()


def test_connections_wait_while_no_worker_is_ready(tmp_path: Path) -> None:
    with serving(tmp_path, 1):
        [first] = workers_seen(tmp_path)[0]
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: not psutil.pid_exists(first))
        # In the backlog until the replacement (0.2 s later) is ready, then served by it.
        conn, index = connect(tmp_path)
        with conn:
            assert index == 0
            assert len(workers_seen(tmp_path)[0]) == 2


def test_count_must_be_positive() -> None:
    with (
        socket.create_server(("127.0.0.1", 0)) as listener,
        pytest.raises(ValueError, match="count"),
    ):
        supervise(
            0, lambda _i, _r, _t: None, listener=listener, on_ready=lambda: None, stop_grace_s=1.0
        )
