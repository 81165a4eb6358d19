"""The codec benchmark runs, checks its own results, and ends with the JSON line CI reads."""

import json

import pytest

from evault.bench import codec as bench


def test_zfec_adapter_round_trips_like_evault() -> None:
    z = bench.ZfecCodec(3, 5)
    data = bytes(range(256)) * 9 + b"tail"
    blocks = z.encode(data)
    assert len(blocks) == 5 and {len(b) for b in blocks} == {z.block_bytes(len(data))}
    assert z.decode({2: blocks[2], 3: blocks[3], 4: blocks[4]}, len(data)) == data
    assert z.decode(dict(enumerate(blocks)), len(data)) == data


def test_quick_bench_ends_with_one_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    bench.run(json_output=True, quick=True)
    lines = capsys.readouterr().out.strip().splitlines()
    summary = json.loads(lines[-1])
    assert summary["bench"] == "codec"
    assert summary["encode_vs_zfec"] > 0 and summary["decode_vs_zfec"] > 0
    cases = {(r["m"], r["n"], r["case"], r["codec"]) for r in summary["results"]}
    assert len(cases) == 12  # 3 (m, n) x {document, segment} x {evault, zfec}
    assert summary["fingerprint"]["sha256_leaves_MBps"] > 0


def test_stream_memory_check_small() -> None:
    report = bench.stream_memory_check(3 * (1 << 20) + 5, chunk_bytes=1000)
    assert report["segments"] == 4
    assert report["peak_rss_bytes"] > 0
