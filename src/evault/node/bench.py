"""Ingest benchmark of one storage node, in process: ``python -m evault.node.bench``.

A document of ``--size-mib`` MiB streams through the node's real ASGI app (httpx's ASGI
transport, no sockets or TLS) in 64 KiB chunks, as uvicorn would hand it over: SHA-256, IDA
encoding, n slice fingerprints, the node's own slice written and fsynced, the index row
committed, the share signed.  Prints MB/s (10^6 bytes per second) and the process's peak RSS, and
with ``--json`` one JSON line at the end.  The slow test ``tests/unit/test_node_ingest.py`` runs
it in a fresh process so the peak RSS is the deposit's own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import anyio
import httpx

from evault.config import ClusterParams
from evault.crypto import threshold_rsa
from evault.ida import DEFAULT_CODEC_ID, DEFAULT_SEGMENT_BYTES
from evault.ida.fingerprint import FINGERPRINT_SCHEME
from evault.memory import peak_rss_mib
from evault.node.app import create_app
from evault.node.service import NodeService, NodeSettings
from evault.node.signing import ShareSigner
from evault.protocol.node_api import HEADER_PROPOSAL, Proposal
from evault.protocol.statement import format_time
from evault.store import DiskSliceStore

CHUNK_BYTES = 64 * 1024


async def _run(size: int, n: int, m: int, k: int, data_dir: Path) -> dict[str, float]:
    vault = "be" * 16
    now = datetime.now(UTC)
    cluster = ClusterParams(n, m, k, DEFAULT_CODEC_ID, DEFAULT_SEGMENT_BYTES, FINGERPRINT_SCHEME)
    public, shares = threshold_rsa.deal(n, k, 2048)
    store = DiskSliceStore(data_dir, vault=vault, slice_index=0)
    service = NodeService(
        NodeSettings(index=1, vault=vault, cluster=cluster, max_object_bytes=size),
        store,
        ShareSigner(public, shares[0], index=1),
        clock=lambda: now,
    )
    proposal = Proposal(
        vault=vault,
        owner="bench",
        name="document",
        version=1,
        n=n,
        m=m,
        codec=DEFAULT_CODEC_ID,
        segment_bytes=DEFAULT_SEGMENT_BYTES,
        fingerprint_scheme=FINGERPRINT_SCHEME,
        encrypted=False,
        deposited_at=format_time(now),
    )
    pattern = os.urandom(1 << 20)

    async def body() -> AsyncIterator[bytes]:
        sent = 0
        while sent < size:
            offset = sent % len(pattern)
            chunk = pattern[offset : offset + min(CHUNK_BYTES, size - sent)]
            sent += len(chunk)
            yield chunk

    app = create_app(service, require_client_cn=None)
    rss_before = peak_rss_mib()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://node", timeout=None
    ) as client:
        started = time.perf_counter()
        response = await client.put(
            f"/v1/objects/{proposal.object_id()}",
            content=body(),
            headers={HEADER_PROPOSAL: proposal.to_header(), "Content-Length": str(size)},
        )
        elapsed = time.perf_counter() - started
    store.close()
    if response.status_code != 201:
        raise SystemExit(f"deposit failed: {response.status_code} {response.text}")
    return {
        "size_bytes": size,
        "seconds": elapsed,
        "mb_per_s": size / elapsed / 1e6,
        "peak_rss_mib": peak_rss_mib(),
        "peak_rss_before_mib": rss_before,
        "n": n,
        "m": m,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=100)
    parser.add_argument("--nodes", type=int, default=5)
    parser.add_argument("--needed", type=int, default=3)
    parser.add_argument("--quorum", type=int, default=4)
    parser.add_argument("--dir", type=Path, default=None, help="data directory (default: temp)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    size = args.size_mib * 1024 * 1024
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        figures = anyio.run(_run, size, args.nodes, args.needed, args.quorum, Path(tmp) / "data")
    print(
        f"node ingest, n={figures['n']:.0f} m={figures['m']:.0f}: {args.size_mib} MiB in "
        f"{figures['seconds']:.2f} s = {figures['mb_per_s']:.0f} MB/s, "
        f"peak RSS {figures['peak_rss_mib']:.0f} MiB "
        f"(before the deposit {figures['peak_rss_before_mib']:.0f} MiB)"
    )
    if args.json:
        print(json.dumps(figures))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
