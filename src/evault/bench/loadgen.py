"""The load generator of ``evault bench vault``: simulated clients, WebStone style (paper §3).

Each simulated client holds ONE persistent HTTPS connection (an ``aiohttp.ClientSession``
whose connector is limited to one connection, HTTP/1.1 keep-alive) and loops: send a request,
read the whole answer, check it as a real client would, record the time, repeat, until the
point's window closes.

Why aiohttp
    The clients share the machine's cores with the vault they measure, so every millisecond of
    client CPU is taken from the vault.  Measured as the client process's CPU time per
    operation (checks included; 4 clients against a local vault on the 2-core test machine),
    httpx (httpcore's pure-Python HTTP/1.1 and stream wrappers) spent 1.6-2.1 ms per 10 KiB
    retrieval and 75-87 ms per 10 MiB one; aiohttp (C HTTP parser, the body handed over in
    the chunks it arrived in) spends 0.5-0.7 ms and 21-23 ms.  Of those 21 ms, the SHA-256
    every client must compute is 7 and TLS decryption about 9: little is left to save.

What a client checks
    Retrieval: status 200, the ``Evault-Sha256`` header, the byte count, and the SHA-256 of
    the body (hashed as it streams) against the receipt the document was deposited with.
    Deposit: status 201, the receipt's RSASSA-PSS signature (SHA-256, MGF1-SHA-256, 32-byte
    salt) against the vault public key with ``cryptography``, then the signed statement's
    vault id, owner, name, version, size, SHA-256 and fingerprint-vector hash against what the
    client computed itself from its own bytes (DESIGN §5, step 5).  A failed check is an
    error of the point, never a sample.

Where the clients run
    In worker processes (``ClientPool``), not in the process that starts the vault and draws
    the progress bar, so that the client's CPU time is measured on its own (psutil on the
    workers' PIDs) and a busy parent never slows the clients.  Workers live for a whole vault
    run and open fresh connections for each point; a point's C clients are spread over the
    workers.  Each worker runs an asyncio loop (uvloop when installed).

Timing of a point (all clocks ``time.monotonic``, which is system-wide on Linux)
    1. every client opens its connection with ``warmup`` untimed ``GET /api/v1/vault`` (so the
       TLS handshake is outside the window, as for a WebStone client that is already
       connected; a full operation would make a 16-client 10 MiB point twice as long);
    2. the parent picks one start time t0 for all workers;
    3. clients loop until t0 + duration; an operation counts when it ends inside the window;
    4. operations still in flight at the deadline are allowed to finish (the vault is idle
       before the next point) and are credited with the fraction of their time that fell
       inside the window.  Without that credit a 10 MiB point with few, long operations would
       be quantised to whole operations per client.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, Final, Literal
from urllib.parse import quote

import aiohttp
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from evault.errors import FormatError, LoadGenFailed
from evault.memory import keep_freed_memory
from evault.protocol.statement import Statement

API: Final = "/api/v1"
#: Longest wait for a connection, or for any read of an answer (as httpx's ``timeout=``).
REQUEST_TIMEOUT_S: Final = 300.0
#: The answer reader's buffer (``read_bufsize``; aiohttp pauses the socket at twice this).
#: Retrievals hash the chunks as they were received (``iter_chunks``: no joining copies); a
#: 1 MiB buffer rather than aiohttp's 64 KiB gave 22 rather than 24 ms per 10 MiB retrieval.
READ_BUFFER_BYTES: Final = 1 << 20
#: How long the parent waits for a worker's answer beyond the point's own duration.
WORKER_SLACK_S: Final = 300.0
#: Errors kept per point (the count is always complete).
MAX_ERROR_TEXTS: Final = 5
#: A client that fails this many times in a row stops for the rest of the window.
MAX_CONSECUTIVE_ERRORS: Final = 20
PSS_SALT_BYTES: Final = 32
#: Time between the parent fixing t0 and t0 itself, so every worker hears "go" before it.
START_MARGIN_S: Final = 0.05

Op = Literal["retrieve", "deposit"]


class CheckFailed(Exception):
    """What the vault answered is not what a client may accept (a benchmark error)."""


# --- what the clients are given --------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """How to reach and authenticate to the gateway."""

    base_url: str
    ca_path: str
    token: str


@dataclass(frozen=True)
class RetrieveWork:
    """Retrieve ``name`` (``size`` bytes) and check it against the receipt's SHA-256."""

    name: str
    size: int
    sha256_hex: str


@dataclass(frozen=True)
class DepositWork:
    """Deposit ``payload`` as a new version of ``name_prefix + client number`` and verify the
    receipt against the client's own ``sha256_hex`` and ``fv_hash_hex``."""

    name_prefix: str
    payload: bytes
    sha256_hex: str
    fv_hash_hex: str
    owner: str
    vault_id: str
    public_key_pem: bytes


Work = RetrieveWork | DepositWork


@dataclass(frozen=True)
class ClientsJob:
    """What one worker runs for one point: ``clients`` clients numbered from ``first_client``."""

    target: Target
    work: Work
    clients: int
    first_client: int
    duration_s: float
    warmup: int = 1


@dataclass(frozen=True)
class Outcome:
    """What some clients achieved in one window (merge with ``+``)."""

    latencies_s: tuple[float, ...] = ()
    completed: int = 0
    partial_ops: float = 0.0
    bytes_moved: int = 0
    error_count: int = 0
    errors: tuple[str, ...] = ()

    def __add__(self, other: Outcome) -> Outcome:
        return Outcome(
            latencies_s=self.latencies_s + other.latencies_s,
            completed=self.completed + other.completed,
            partial_ops=self.partial_ops + other.partial_ops,
            bytes_moved=self.bytes_moved + other.bytes_moved,
            error_count=self.error_count + other.error_count,
            errors=(self.errors + other.errors)[:MAX_ERROR_TEXTS],
        )


# --- one simulated client ----------------------------------------------------------------------


def _ssl_context(ca_path: str) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_path)


def _document_path(name: str) -> str:
    return f"{API}/documents/{quote(name, safe='/')}"


def _url(base_url: str, path: str) -> str:
    return base_url.rstrip("/") + path


#: What a client may raise on the wire: aiohttp's errors, and its timeouts (``TimeoutError``;
#: ``aiohttp.ServerTimeoutError`` is both).  Either is an error of the point, never a sample.
_WIRE_ERRORS: Final = (aiohttp.ClientError, asyncio.TimeoutError)


def _excerpt(body: bytes) -> str:
    return body[:200].decode("utf-8", errors="replace")


class _Checker:
    """Per-work state that is built once per worker (parsed key, URLs)."""

    def __init__(self, work: Work, base_url: str) -> None:
        self.work = work
        self.base_url = base_url
        self.retrieve_url: str | None = None
        if isinstance(work, RetrieveWork):
            self.retrieve_url = _url(base_url, _document_path(work.name))
        self.public_key: rsa.RSAPublicKey | None = None
        if isinstance(work, DepositWork):
            key = serialization.load_pem_public_key(work.public_key_pem)
            if not isinstance(key, rsa.RSAPublicKey):
                raise TypeError("work.public_key_pem: not an RSA public key")
            self.public_key = key

    async def once(self, session: aiohttp.ClientSession, client_number: int) -> int:
        """One operation; returns the document bytes moved; raises ``CheckFailed`` (or one of
        ``_WIRE_ERRORS``)."""
        if isinstance(self.work, RetrieveWork):
            return await self._retrieve(session, self.work)
        return await self._deposit(session, self.work, client_number)

    async def _retrieve(self, session: aiohttp.ClientSession, work: RetrieveWork) -> int:
        url = self.retrieve_url
        if url is None:  # pragma: no cover - set in __init__ for every RetrieveWork
            raise TypeError("no URL for a retrieval")
        digest = hashlib.sha256()
        got = 0
        # Every answer is read to its end, so that leaving the block puts the connection back
        # in the session's pool (one that is left unread would be closed, and the client's
        # next request would open a second connection).
        async with session.get(url) as response:
            if response.status != 200:
                raise CheckFailed(
                    f"GET {work.name}: HTTP {response.status} {_excerpt(await response.read())}"
                )
            header = response.headers.get("evault-sha256")
            async for chunk, _ in response.content.iter_chunks():
                digest.update(chunk)
                got += len(chunk)
        if header != work.sha256_hex:
            raise CheckFailed(f"GET {work.name}: Evault-Sha256 {header!r} is not the receipt's")
        if got != work.size:
            raise CheckFailed(f"GET {work.name}: {got} bytes, the receipt says {work.size}")
        if digest.hexdigest() != work.sha256_hex:
            raise CheckFailed(f"GET {work.name}: the bytes do not hash to the receipt's SHA-256")
        return got

    async def _deposit(
        self, session: aiohttp.ClientSession, work: DepositWork, client_number: int
    ) -> int:
        name = f"{work.name_prefix}{client_number}"
        async with session.put(
            _url(self.base_url, _document_path(name)),
            data=work.payload,
            headers={"Evault-Sha256": work.sha256_hex, "Content-Type": "application/octet-stream"},
        ) as response:
            answer = await response.read()  # to the end: the connection goes back to the pool
            status = response.status
        if status != 201:
            raise CheckFailed(f"PUT {name}: HTTP {status} {_excerpt(answer)}")
        try:
            body = json.loads(answer)
            statement = base64.b64decode(body["receipt"]["statement"], validate=True)
            signature = base64.b64decode(body["receipt"]["signature"], validate=True)
            version = body["version"]
        except (ValueError, KeyError, TypeError) as exc:
            raise CheckFailed(f"PUT {name}: malformed answer ({exc})") from exc
        key = self.public_key
        if key is None:  # pragma: no cover - set in __init__ for every DepositWork
            raise TypeError("no public key for a deposit")
        verify_receipt_signature(key, statement, signature, name)
        check_statement(
            statement,
            vault_id=work.vault_id,
            owner=work.owner,
            name=name,
            version=version,
            size=len(work.payload),
            sha256_hex=work.sha256_hex,
            fv_hash_hex=work.fv_hash_hex,
        )
        return len(work.payload)


def verify_receipt_signature(
    key: rsa.RSAPublicKey, statement: bytes, signature: bytes, name: str
) -> None:
    """Raise ``CheckFailed`` unless ``signature`` is the vault's RSASSA-PSS signature (SHA-256,
    MGF1-SHA-256, 32-byte salt; DESIGN §4) over ``statement``."""
    try:
        key.verify(
            signature,
            statement,
            padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=PSS_SALT_BYTES),
            hashes.SHA256(),
        )
    except InvalidSignature as exc:
        raise CheckFailed(f"the receipt for {name!r}: its signature does not verify") from exc


def check_statement(
    statement: bytes,
    *,
    vault_id: str,
    owner: str,
    name: str,
    version: object,
    size: int,
    sha256_hex: str,
    fv_hash_hex: str,
) -> Statement:
    """Parse signed statement bytes and raise ``CheckFailed`` naming every field that is not
    what the client expects (the receipt must be about exactly the bytes it sent)."""
    try:
        parsed = Statement.from_bytes(statement)
    except FormatError as exc:
        raise CheckFailed(f"receipt statement for {name!r} is malformed: {exc}") from exc
    expected: dict[str, object] = {
        "vault": vault_id,
        "owner": owner,
        "name": name,
        "version": version,
        "size": size,
        "sha256": sha256_hex,
        "fv_hash": fv_hash_hex,
    }
    wrong = [
        f"{key} {getattr(parsed, key)!r} != {want!r}"
        for key, want in expected.items()
        if getattr(parsed, key) != want
    ]
    if wrong:
        raise CheckFailed(f"receipt statement for {name!r} is wrong: " + "; ".join(wrong))
    return parsed


@dataclass
class _ClientTally:
    latencies_s: list[float] = field(default_factory=list)
    partial_ops: float = 0.0
    bytes_moved: int = 0
    error_count: int = 0
    errors: list[str] = field(default_factory=list)


async def _one_client(
    target: Target,
    checker: _Checker,
    number: int,
    warmup: int,
    started: Callable[[], Awaitable[float]],
    duration_s: float,
) -> _ClientTally:
    """Run one client until the window closes; returns its tally."""
    tally = _ClientTally()
    # One connection, kept however long the client waits for the window (no idle expiry);
    # HTTP/1.1 only (aiohttp has no HTTP/2).
    connector = aiohttp.TCPConnector(
        limit=1, ssl=_ssl_context(target.ca_path), keepalive_timeout=None
    )
    # httpx's timeout=REQUEST_TIMEOUT_S bounded each wait (pool, connect, every read), not the
    # whole operation: the same here with connect (pool wait + connect) and sock_read.
    timeout = aiohttp.ClientTimeout(
        total=None,
        connect=REQUEST_TIMEOUT_S,
        sock_connect=REQUEST_TIMEOUT_S,
        sock_read=REQUEST_TIMEOUT_S,
    )
    async with aiohttp.ClientSession(
        connector=connector,
        headers={"Authorization": f"Bearer {target.token}"},
        timeout=timeout,
        cookie_jar=aiohttp.DummyCookieJar(),
        auto_decompress=False,  # hash the bytes as sent, as httpx's aiter_raw did
        read_bufsize=READ_BUFFER_BYTES,
        raise_for_status=False,
    ) as session:
        vault_url = _url(target.base_url, f"{API}/vault")
        for _ in range(warmup):
            async with session.get(vault_url) as answer:
                await answer.read()
                if answer.status != 200:
                    raise CheckFailed(f"GET /vault: HTTP {answer.status}")
        t0 = await started()
        deadline = t0 + duration_s
        consecutive_errors = 0
        while True:
            begin = time.monotonic()
            if begin >= deadline:
                break
            try:
                moved = await checker.once(session, number)
            except (CheckFailed, *_WIRE_ERRORS) as exc:
                tally.error_count += 1
                consecutive_errors += 1
                if len(tally.errors) < MAX_ERROR_TEXTS:
                    tally.errors.append(f"{type(exc).__name__}: {exc}"[:300])
                if consecutive_errors >= MAX_CONSECUTIVE_ERRORS:
                    break  # the vault is down or broken: do not spin until the deadline
                continue
            consecutive_errors = 0
            end = time.monotonic()
            if end <= deadline:
                tally.latencies_s.append(end - begin)
                tally.bytes_moved += moved
            else:
                # In flight at the deadline: credit the part that fell inside the window.
                tally.partial_ops += (deadline - begin) / (end - begin)
                tally.bytes_moved += int(moved * (deadline - begin) / (end - begin))
    return tally


async def run_clients(job: ClientsJob, started: Callable[[], Awaitable[float]]) -> Outcome:
    """Run ``job.clients`` clients in this event loop; ``started`` is awaited by each client
    after its warm-up and returns the common window start (``time.monotonic``)."""
    if job.clients < 1:
        raise ValueError(f"job.clients: expected >= 1, got {job.clients}")
    if job.duration_s <= 0:
        raise ValueError(f"job.duration_s: expected > 0, got {job.duration_s}")
    checker = _Checker(job.work, job.target.base_url)
    results = await asyncio.gather(
        *(
            _one_client(
                job.target, checker, job.first_client + i, job.warmup, started, job.duration_s
            )
            for i in range(job.clients)
        )
    )
    outcome = Outcome()
    for tally in results:
        outcome = outcome + Outcome(
            latencies_s=tuple(tally.latencies_s),
            completed=len(tally.latencies_s),
            partial_ops=tally.partial_ops,
            bytes_moved=tally.bytes_moved,
            error_count=tally.error_count,
            errors=tuple(tally.errors),
        )
    return outcome


def _shared_start(
    clients: int, announce: Callable[[], Awaitable[float]]
) -> Callable[[], Awaitable[float]]:
    """A ``started`` callable: the last client to arrive calls ``announce`` (which returns the
    common t0); every client gets the same t0 and sleeps until it."""
    arrived = 0
    t0_future: asyncio.Future[float] | None = None

    async def started() -> float:
        nonlocal arrived, t0_future
        loop = asyncio.get_running_loop()
        if t0_future is None:
            t0_future = loop.create_future()
        arrived += 1
        if arrived == clients:
            t0_future.set_result(await announce())
        t0 = await t0_future
        delay = t0 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        return t0

    return started


# --- worker processes ---------------------------------------------------------------------------


def _new_event_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency of uvicorn[standard]
        return asyncio.new_event_loop()
    loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    return loop


def _worker_main(conn: Connection) -> None:
    """A worker's life: run jobs until told to stop (protocol in ``ClientPool``)."""
    # Its clients share the machine with the vault: they should cost what a lean client
    # costs, not page faults (see evault.memory).
    keep_freed_memory()
    loop = _new_event_loop()
    try:
        while True:
            message = conn.recv()
            if message[0] == "stop":
                return
            job: ClientsJob = message[1]

            async def announce() -> float:
                conn.send(("ready",))
                reply = await asyncio.get_running_loop().run_in_executor(None, conn.recv)
                return float(reply[1])

            try:
                outcome = loop.run_until_complete(
                    run_clients(job, _shared_start(job.clients, announce))
                )
            except Exception as exc:  # reported to the parent with its text
                conn.send(("error", f"{type(exc).__name__}: {exc}"))
                continue
            conn.send(("done", outcome))
    except (EOFError, KeyboardInterrupt):
        return
    finally:
        with contextlib.suppress(Exception):
            loop.close()


class ClientPool:
    """``workers`` load-generator processes, started once, stopped by PID.

    Protocol per point, over one pipe per worker: parent sends ``("job", ClientsJob)``; the
    worker warms its clients up and answers ``("ready",)``; once every worker is ready the
    parent sends ``("go", t0)``; the worker answers ``("done", Outcome)`` or
    ``("error", text)``.  ``("stop",)`` ends the worker.
    """

    def __init__(self, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"workers: expected >= 1, got {workers}")
        self._pipes: list[Connection] = []
        self._processes: list[subprocess.Popen[bytes]] = []
        try:
            for _ in range(workers):
                # A plain child process (not multiprocessing's spawn, which re-imports the
                # caller's __main__) talking over an inherited socket with pickled messages.
                parent_sock, child_sock = socket.socketpair()
                with child_sock:
                    process = subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "evault.bench.loadgen",
                            "--worker-fd",
                            str(child_sock.fileno()),
                        ],
                        pass_fds=(child_sock.fileno(),),
                        stdin=subprocess.DEVNULL,
                    )
                self._processes.append(process)
                self._pipes.append(Connection(parent_sock.detach()))
        except BaseException:
            self.close()
            raise

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._processes]

    def run_point(
        self,
        target: Target,
        work: Work,
        concurrency: int,
        duration_s: float,
        *,
        warmup: int = 1,
        on_start: Callable[[float], None] | None = None,
        on_end: Callable[[float], None] | None = None,
    ) -> tuple[Outcome, float]:
        """Run one point with ``concurrency`` clients spread over the workers; returns the
        merged outcome and the window start t0.  The parent sleeps until t0 and calls
        ``on_start(t0)``, then until t0 + duration and calls ``on_end(deadline)`` (to take
        CPU-time snapshots exactly around the window), then collects the outcomes."""
        counts = split_clients(concurrency, len(self._pipes))
        busy = [(pipe, n, first) for pipe, n, first in _with_offsets(self._pipes, counts) if n]
        for pipe, n, first in busy:
            pipe.send(("job", ClientsJob(target, work, n, first, duration_s, warmup)))
        for pipe, _, _ in busy:
            self._expect(pipe, "ready", WORKER_SLACK_S)
        t0 = time.monotonic() + START_MARGIN_S
        for pipe, _, _ in busy:
            pipe.send(("go", t0))
        _sleep_until(t0)
        if on_start is not None:
            on_start(t0)
        deadline = t0 + duration_s
        _sleep_until(deadline)
        if on_end is not None:
            on_end(deadline)
        outcome = Outcome()
        for pipe, _, _ in busy:
            reply = self._expect(pipe, "done", WORKER_SLACK_S)
            outcome = outcome + reply[1]
        return outcome, t0

    def _expect(self, pipe: Connection, kind: str, timeout_s: float) -> tuple[Any, ...]:
        if not pipe.poll(timeout_s):
            raise LoadGenFailed(f"a load-generator worker gave no {kind!r} in {timeout_s:.0f} s")
        try:
            reply: tuple[Any, ...] = pipe.recv()
        except EOFError as exc:
            raise LoadGenFailed("a load-generator worker died") from exc
        if reply[0] == "error":
            raise LoadGenFailed(f"a load-generator worker failed: {reply[1]}")
        if reply[0] != kind:
            raise LoadGenFailed(f"a load-generator worker said {reply[0]!r}, expected {kind!r}")
        return reply

    def close(self) -> None:
        """Ask each worker to stop, then terminate (by PID) any that did not."""
        for pipe in self._pipes:
            with contextlib.suppress(OSError, ValueError):
                pipe.send(("stop",))
        for process in self._processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.terminate()
                try:
                    process.wait(timeout=5)
                except subprocess.TimeoutExpired:  # pragma: no cover - ignoring SIGTERM
                    process.kill()
                    process.wait(timeout=5)
        for pipe in self._pipes:
            pipe.close()
        self._pipes.clear()
        self._processes.clear()

    def __enter__(self) -> ClientPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _sleep_until(moment: float) -> None:
    delay = moment - time.monotonic()
    if delay > 0:
        time.sleep(delay)


def split_clients(concurrency: int, workers: int) -> list[int]:
    """``concurrency`` clients over ``workers`` workers, as evenly as possible (pure)."""
    if concurrency < 1:
        raise ValueError(f"concurrency: expected >= 1, got {concurrency}")
    if workers < 1:
        raise ValueError(f"workers: expected >= 1, got {workers}")
    base, extra = divmod(concurrency, workers)
    return [base + (1 if i < extra else 0) for i in range(workers)]


def _with_offsets(
    pipes: Sequence[Connection], counts: Sequence[int]
) -> list[tuple[Connection, int, int]]:
    out = []
    first = 0
    for pipe, n in zip(pipes, counts, strict=True):
        out.append((pipe, n, first))
        first += n
    return out


def _main(argv: Sequence[str]) -> int:
    """``python -m evault.bench.loadgen --worker-fd FD``: one worker of a ``ClientPool``."""
    if len(argv) != 2 or argv[0] != "--worker-fd":
        print("usage: python -m evault.bench.loadgen --worker-fd FD", file=sys.stderr)
        return 2
    _worker_main(Connection(int(argv[1])))
    return 0


if __name__ == "__main__":
    # Run the imported module's copy, not this __main__ one: the pickled jobs name the classes
    # of ``evault.bench.loadgen``, and isinstance checks must see those.
    from evault.bench import loadgen

    sys.exit(loadgen._main(sys.argv[1:]))
