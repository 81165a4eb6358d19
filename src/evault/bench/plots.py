"""PNG plots of ``evault bench vault``: the paper's Figure 3 (operations per minute against
document size, one line per concurrency C) and Figure 4 (one client's mean, p50 and p99 time
against size), for retrievals and for deposits.

The retrieval-rate plot carries the paper's only quantitative claim as a reference line (§3:
over one retrieval per second, i.e. 60 per minute, for documents below 50 Kbytes, on 1997
hardware with a DB2 connection opened per request).  Matplotlib runs on its Agg backend: no
display is needed, and nothing here depends on global pyplot state.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evault.bench.vault import (
    KIB,
    PAPER_REFERENCE_BELOW_BYTES,
    PAPER_REFERENCE_PER_MIN,
    PointResult,
    size_label,
)

#: (file name, operation, kind) of every plot written.
PLOTS = (
    ("vault-retrievals-per-min.png", "retrieve", "rate"),
    ("vault-retrieval-ms.png", "retrieve", "time"),
    ("vault-deposits-per-min.png", "deposit", "rate"),
    ("vault-deposit-ms.png", "deposit", "time"),
)
_STYLES = {"default": "-", "paper": "--"}
_C_COLOURS = {1: "tab:blue", 4: "tab:orange", 16: "tab:green"}
_STAT_COLOURS = {"mean": "tab:blue", "p50": "tab:orange", "p99": "tab:red"}


def _figure() -> tuple[Any, Any]:
    # The object-oriented API with an Agg canvas: no pyplot, no backend switching, no display.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 5), dpi=110)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    return figure, axes


def _log_y(axes: Any) -> None:
    """Log y axis labelled at 1, 2, 5 x 10^k in plain numbers (a decade-only axis can show a
    single label on a narrow range)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    axes.set_yscale("log")
    axes.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axes.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:,.10g}"))
    axes.yaxis.set_minor_formatter(NullFormatter())


def _size_axis(axes: Any, sizes: Sequence[int]) -> None:
    axes.set_xscale("log")
    axes.set_xticks([s / KIB for s in sizes])
    axes.set_xticklabels([size_label(s) for s in sizes], rotation=30)
    axes.minorticks_off()
    axes.set_xlabel("document size")
    axes.grid(True, which="major", alpha=0.3)


def plot_rate(results: Sequence[PointResult], op: str, path: Path) -> Path | None:
    """Figure 3: ``op`` per minute against size, one line per (setting, C)."""
    rows = [r for r in results if r.key.op == op and r.ops_per_min > 0]
    if not rows:
        return None
    figure, axes = _figure()
    sizes = sorted({r.key.size for r in rows})
    for vault in sorted({r.key.vault for r in rows}):
        for c in sorted({r.key.concurrency for r in rows if r.key.vault == vault}):
            line = sorted(
                (r for r in rows if r.key.vault == vault and r.key.concurrency == c),
                key=lambda r: r.key.size,
            )
            axes.plot(
                [r.key.size / KIB for r in line],
                [r.ops_per_min for r in line],
                _STYLES.get(vault, ":"),
                marker="o",
                markersize=4,
                color=_C_COLOURS.get(c, "tab:gray"),
                label=f"{vault} vault, C={c}",
            )
    if op == "retrieve":
        below_kib = PAPER_REFERENCE_BELOW_BYTES / KIB
        axes.hlines(
            PAPER_REFERENCE_PER_MIN,
            min(sizes) / KIB,
            below_kib,
            colors="black",
            linestyles="dotted",
            linewidth=2,
            label="paper §3 (1997): > 60/min below 50 KB",
        )
        top = max(r.ops_per_min for r in rows)
        axes.set_ylim(PAPER_REFERENCE_PER_MIN / 2, top * 2)
    _log_y(axes)
    _size_axis(axes, sizes)
    noun = "retrievals" if op == "retrieve" else "deposits"
    axes.set_ylabel(f"{noun} per minute")
    axes.set_title(f"evault: {noun} per minute sustained (Figure 3)")
    axes.legend(fontsize="small", loc="lower right" if op == "retrieve" else "best")
    figure.tight_layout()
    figure.savefig(path)
    return path


def plot_time(results: Sequence[PointResult], op: str, path: Path) -> Path | None:
    """Figure 4: one client's mean, p50 and p99 time of ``op`` against size."""
    rows = [r for r in results if r.key.op == op and r.key.concurrency == 1 and r.latency]
    if not rows:
        return None
    figure, axes = _figure()
    sizes = sorted({r.key.size for r in rows})
    for vault in sorted({r.key.vault for r in rows}):
        line = sorted((r for r in rows if r.key.vault == vault), key=lambda r: r.key.size)
        for stat in ("mean", "p50", "p99"):
            values = [getattr(r.latency, f"{stat}_ms") for r in line]
            axes.plot(
                [r.key.size / KIB for r in line],
                values,
                _STYLES.get(vault, ":"),
                marker="o",
                markersize=4,
                color=_STAT_COLOURS[stat],
                label=f"{vault} vault, {stat}",
            )
    _log_y(axes)
    _size_axis(axes, sizes)
    noun = "retrieval" if op == "retrieve" else "deposit"
    axes.set_ylabel(f"{noun} time, one client (ms)")
    axes.set_title(f"evault: time of one {noun}, lightly loaded (Figure 4)")
    axes.legend(fontsize="small")
    figure.tight_layout()
    figure.savefig(path)
    return path


def write_plots(results: Sequence[PointResult], out_dir: Path) -> list[Path]:
    """Write every plot that has data into ``out_dir``; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, op, kind in PLOTS:
        plot = plot_rate if kind == "rate" else plot_time
        path = plot(results, op, out_dir / name)
        if path is not None:
            written.append(path)
    return written
