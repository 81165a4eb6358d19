"""Point look-ups per second: the pooled catalog against a new connection per call.

The paper measured its gateway's DB2 connection per request as the bottleneck for small
documents (§3) and proposed persistent connections.  This benchmark keeps the evidence for our
choice: the same ``get_version`` and ``resolve_token`` calls through ``Catalog(pool_size=8)``
and through ``Catalog(pool_size=0)`` (a fresh connection, with its set-up, for every call).

    python -m evault.catalog.bench [--sqlite PATH] [--postgres URL] [--seconds S] [--threads T]

PostgreSQL runs in a throwaway schema that is dropped afterwards.
"""

from __future__ import annotations

import argparse
import hashlib
import secrets
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

from argon2 import PasswordHasher

from evault.catalog.catalog import Catalog
from evault.catalog.records import ReceiptRecord

_CHEAP = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)  # not what is measured


@dataclass(frozen=True)
class Figure:
    backend: str
    pooled: bool
    operation: str
    threads: int
    calls: int
    seconds: float

    @property
    def per_second(self) -> float:
        return self.calls / self.seconds


def _measure(call: Callable[[], object], *, seconds: float, threads: int) -> tuple[int, float]:
    counts = [0] * threads
    stop = threading.Event()
    start_line = threading.Barrier(threads + 1)

    def loop(slot: int) -> None:
        start_line.wait()
        while not stop.is_set():
            call()
            counts[slot] += 1

    workers = [threading.Thread(target=loop, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    start_line.wait()
    began = time.perf_counter()
    stop.wait(seconds)
    stop.set()
    for w in workers:
        w.join()
    return sum(counts), time.perf_counter() - began


def _prepare(catalog: Catalog) -> str:
    catalog.migrate()
    catalog.create_user("bench", "bench password", "Bench", "")
    version = catalog.begin_deposit("bench", "doc")
    content = b"x" * 1000
    receipt = ReceiptRecord(
        size=len(content),
        sha256=hashlib.sha256(content).digest(),
        fv_hash=hashlib.sha256(b"fv").digest(),
        codec_id="bench/v1",
        m=3,
        n=5,
        segment_bytes=1 << 20,
        statement=b"{}",
        signature=b"\x01" * 384,
        deposited_at=datetime.now(UTC),
    )
    catalog.complete_deposit("bench", "doc", version, receipt)
    return catalog.issue_token("bench", ttl_s=3600)


def run_backend(
    backend: str, url: str, *, schema: str | None, seconds: float, threads: int
) -> list[Figure]:
    figures: list[Figure] = []
    setup = Catalog(url, schema=schema, password_hasher=_CHEAP)
    try:
        token = _prepare(setup)
        for pooled in (True, False):
            catalog = Catalog(url, schema=schema, pool_size=8 if pooled else 0)
            try:
                operations: dict[str, Callable[[], object]] = {
                    "get_version": partial(catalog.get_version, "bench", "doc"),
                    "resolve_token": partial(catalog.resolve_token, token),
                }
                for operation, call in operations.items():
                    call()  # warm up: first connection, statement caches
                    for n_threads in sorted({1, threads}):
                        calls, elapsed = _measure(call, seconds=seconds, threads=n_threads)
                        figures.append(
                            Figure(backend, pooled, operation, n_threads, calls, elapsed)
                        )
            finally:
                catalog.close()
    finally:
        if schema is not None:
            with setup.engine.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        setup.close()
    return figures


def format_table(figures: list[Figure]) -> str:
    lines = [
        f"{'backend':<11} {'operation':<14} {'threads':>7} {'pooled /s':>11} {'per-call /s':>12}"
        f" {'ratio':>6}"
    ]
    keys = sorted({(f.backend, f.operation, f.threads) for f in figures})
    for backend, operation, threads in keys:
        rates = {
            f.pooled: f.per_second
            for f in figures
            if (f.backend, f.operation, f.threads) == (backend, operation, threads)
        }
        pooled, fresh = rates.get(True, 0.0), rates.get(False, 0.0)
        ratio = pooled / fresh if fresh else float("nan")
        lines.append(
            f"{backend:<11} {operation:<14} {threads:>7} {pooled:>11.0f} {fresh:>12.0f}"
            f" {ratio:>5.1f}x"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sqlite", help="new SQLite file to use (default: a temporary one)")
    parser.add_argument(
        "--postgres",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/test",
        help="PostgreSQL URL, or 'none' to skip",
    )
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--threads", type=int, default=4, help="also measure with this many")
    args = parser.parse_args(argv)
    figures: list[Figure] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = args.sqlite or str(Path(tmp) / "bench.db")
        figures += run_backend(
            "sqlite", path, schema=None, seconds=args.seconds, threads=args.threads
        )
    if args.postgres != "none":
        schema = f"evault_bench_{secrets.token_hex(4)}"
        figures += run_backend(
            "postgresql", args.postgres, schema=schema, seconds=args.seconds, threads=args.threads
        )
    print(format_table(figures))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
