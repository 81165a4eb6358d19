"""A 2 GiB document deposits and retrieves with bounded memory in every process (issue 4).

Run with `make test-slow`; prints the peak RSS (VmHWM) of the gateway and of each node.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from evault.memory import peak_rss_mib
from tests.integration.vault_fixtures import LiveVault

pytestmark = pytest.mark.slow

CHUNK = 1 << 20
CHUNKS = 2048  # 2 GiB
LIMIT_MIB = 300


def document(digest: hashlib._Hash) -> Iterator[bytes]:
    block = bytearray(hashlib.sha256(b"seed").digest() * (CHUNK // 32))
    for i in range(CHUNKS):
        block[:8] = i.to_bytes(8, "big")  # every chunk differs
        data = bytes(block)
        digest.update(data)
        yield data


def test_2_gib_document_in_bounded_memory(vault: LiveVault) -> None:
    token = vault.register()
    auth = {"Authorization": f"Bearer {token}"}
    sent = hashlib.sha256()
    r = vault.client.put(
        "/api/v1/documents/huge.bin",
        content=document(sent),
        headers={**auth, "Content-Length": str(CHUNK * CHUNKS)},
        timeout=1800,
    )
    assert r.status_code == 201, r.text
    assert r.json()["sha256"] == sent.hexdigest()
    got = hashlib.sha256()
    size = 0
    with vault.client.stream(
        "GET", "/api/v1/documents/huge.bin", headers=auth, timeout=1800
    ) as resp:
        assert resp.status_code == 200
        for piece in resp.iter_bytes():
            got.update(piece)
            size += len(piece)
    assert size == CHUNK * CHUNKS
    assert got.hexdigest() == sent.hexdigest()
    peaks = {name: peak_rss_mib(p.pid) for name, p in vault.cluster.processes.items()}
    print("\npeak RSS (MiB) for a 2 GiB deposit + retrieval:")
    for name, mib in sorted(peaks.items()):
        print(f"  {name:8s} {mib:7.1f}")
    assert all(mib < LIMIT_MIB for mib in peaks.values()), peaks
