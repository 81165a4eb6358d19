"""`evault bench vault` plots: PNG files written from made-up results (Agg backend, no display)."""

from __future__ import annotations

from pathlib import Path

from evault.bench.loadgen import Outcome
from evault.bench.plots import PLOTS, plot_rate, write_plots
from evault.bench.vault import KIB, MIB, CpuShare, PointKey, PointResult, make_point_result

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _cpu() -> CpuShare:
    return CpuShare(
        wall_s=1.0,
        cores=2,
        gateway_s=0.5,
        nodes_s=0.5,
        node_max_s=0.1,
        clients_s=0.1,
        bench_s=0.0,
        other_s=0.0,
    )


def _results() -> list[PointResult]:
    out = []
    for vault, cs in (("default", (1, 4, 16)), ("paper", (1, 4))):
        for op in ("retrieve", "deposit"):
            for size in (KIB, 10 * KIB, 100 * KIB, MIB, 10 * MIB):
                for c in cs:
                    ops = 100.0 * c / (1 + size / MIB)
                    latency = 0.005 * (1 + size / MIB)
                    outcome = Outcome(
                        latencies_s=(latency, latency * 1.1, latency * 3),
                        completed=int(ops),
                        bytes_moved=int(ops) * size,
                    )
                    key = PointKey(vault, op, size, c)  # type: ignore[arg-type]
                    out.append(make_point_result(key, outcome, 1.0, _cpu(), None))
    return out


def test_write_plots_writes_four_pngs(tmp_path: Path) -> None:
    written = write_plots(_results(), tmp_path / "out")
    assert [p.name for p in written] == [name for name, _, _ in PLOTS]
    for path in written:
        data = path.read_bytes()
        assert data.startswith(PNG_MAGIC)
        assert len(data) > 10_000  # axes, lines and legend drawn, not an empty canvas


def test_plots_without_data_are_skipped(tmp_path: Path) -> None:
    deposits_only = [r for r in _results() if r.key.op == "deposit"]
    assert plot_rate(deposits_only, "retrieve", tmp_path / "r.png") is None
    assert not (tmp_path / "r.png").exists()
    names = [p.name for p in write_plots(deposits_only, tmp_path)]
    assert names == ["vault-deposits-per-min.png", "vault-deposit-ms.png"]
