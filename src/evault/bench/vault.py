"""`evault bench vault`: the paper's Figures 3 and 4 (§3, WebStone) on a real local vault, and
the same two figures for deposits (issue 7, DESIGN §10).

What one run does
    For each vault setting (the defaults n=5, m=3, k=4, then the paper's n=3, m=2, k=3) it
    deals a vault with the real key size (3072 bits unless asked otherwise; the dealt keys are
    cached under ``OUT/vault-templates`` so that later runs skip the safe-prime search), starts
    the n node processes and the gateway on free loopback ports, registers a user, deposits one
    document of each size (1, 5, 10, 50, 100, 500 KiB, 1 and 10 MiB, random bytes) and
    verifies each receipt, then measures one *point* per (operation, size, concurrency C):

    * Figure 3: operations per minute sustained by C simulated clients over a fixed window;
    * Figure 4: mean, p50 and p99 time of one operation with one client (the C=1 point, the
      paper's "lightly loaded system").

    Retrievals read the deposited document; deposits store a new version of the client's own
    document.  Every client checks what it receives (``evault.bench.loadgen``).

Estimators (pure functions below, unit-tested)
    ops/min = (operations completed in the window + the in-window fraction of those still in
    flight at its end) / window × 60.  Latency percentiles use linear interpolation between
    order statistics (numpy's default), over the operations completed inside the window.
    MB/s counts document bytes (10^6 bytes per MB), not protocol overhead.

Where the time goes
    Around each window the CPU seconds (user + system, psutil) of the gateway, of every node,
    of the load-generator workers, of this process and of the whole machine are read; "other"
    is what the machine spent outside them (other tenants: it makes a noisy run visible).  The
    gateway's own access log gives the server-side time of each request and the number of
    distinct client connections (it must equal C: one persistent connection per client).
    When ``py-spy`` is on PATH (or named by ``EVAULT_PY_SPY``), the full run ends with a
    profile pass: the gateway and node 1 are sampled during three extra points, and the
    hottest frames are reported.

Outputs (in ``--out``, default ``bench-results/``): ``vault-bench.json`` (every point),
``vault-bench.md`` (the tables and the where-the-time-goes notes), four PNG plots, the
processes' logs and the raw profiles.  The Markdown report is printed on stdout; with
``--json`` the last line is one JSON object (:func:`summary`).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import functools
import hashlib
import json
import math
import os
import platform
import random
import re
import secrets
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Final

from evault.bench.loadgen import (
    CheckFailed,
    DepositWork,
    Op,
    Outcome,
    RetrieveWork,
    Target,
    Work,
    check_statement,
    verify_receipt_signature,
)
from evault.config import MAX_WORKERS, is_workers_setting
from evault.errors import BenchChecksFailed, BenchError

KIB: Final = 1024
MIB: Final = 1024 * KIB
SIZES_BYTES: Final = (KIB, 5 * KIB, 10 * KIB, 50 * KIB, 100 * KIB, 500 * KIB, MIB, 10 * MIB)
CONCURRENCIES: Final = (1, 4, 16)
#: The concurrency of the headline figures (the JSON summary's maps).
HEADLINE_C: Final = 4
FULL_DURATION_S: Final = 3.0
QUICK_DURATION_S: Final = 1.0
#: A point's window is lengthened until each client has time for this many operations at the
#: rate the same operation sustained at the concurrency below (``BenchPlan.window_s``): a
#: window only as long as one operation of C clients started together measures that one
#: batch, not a sustained rate (16 clients depositing 10 MiB: 170/min in 3 s, 257/min in 15 s).
OPS_PER_CLIENT: Final = 4
#: ... up to this long (the full run's budget is 10 minutes; ``--quick``'s 2).
FULL_MAX_WINDOW_S: Final = 20.0
QUICK_MAX_WINDOW_S: Final = 3.0
#: A one-client point (Figure 4's times) that finished fewer operations than this in its
#: window is measured again in a window long enough for them (``BenchPlan.samples_window_s``),
#: within the same cap: 3 s held a dozen 10 MiB deposits.
ONE_CLIENT_MIN_SAMPLES: Final = 50
#: Paper §3: "The retrieval rate exceeds one document per second until document sizes exceed
#: 50 Kbytes" (1997, RS/6000 590 nodes, DB2 connection per request).
PAPER_REFERENCE_PER_MIN: Final = 60.0
PAPER_REFERENCE_BELOW_BYTES: Final = 50 * 1000
#: Issue 7's targets for this 2-core machine.
TARGET_RETRIEVALS_10KIB_C4_PER_MIN: Final = 18_000.0
TARGET_RETRIEVAL_10MIB_MB_PER_S: Final = 280.0
TARGET_RETRIEVAL_1KIB_P50_MS: Final = 6.0
#: Cores taken by other processes during a window above which the point is measured again.
CONTENDED_POINT_CORES: Final = 0.25
#: A process group using this share of what it can use is called saturated.
SATURATED: Final = 0.8
PROFILE_POINTS: Final = (("retrieve", 10 * KIB), ("deposit", 10 * KIB), ("retrieve", 10 * MIB))
HOTSPOTS_SHOWN: Final = 12


# --- the plan (pure) ---------------------------------------------------------------------------


def _tenths_up(seconds: float) -> float:
    """``seconds`` rounded up to a tenth of a second (the windows' granularity)."""
    return math.ceil(seconds * 10) / 10


@dataclass(frozen=True)
class VaultSetting:
    """One vault to measure: its (n, m, k) and the concurrencies run on it."""

    label: str
    n: int
    m: int
    k: int
    concurrencies: tuple[int, ...]

    @property
    def title(self) -> str:
        return f"{self.label} (n={self.n}, m={self.m}, k={self.k})"


@dataclass(frozen=True)
class PointKey:
    vault: str
    op: Op
    size: int
    concurrency: int


@dataclass(frozen=True)
class BenchPlan:
    settings: tuple[VaultSetting, ...]
    sizes: tuple[int, ...]
    duration_s: float
    key_bits: int
    client_procs: int
    profile: bool
    quick: bool
    #: A point during which other processes took more than CONTENDED_POINT_CORES is measured
    #: again (at most ``retries`` times, while the run has spent less than ``retry_budget_s``
    #: in second measurements), and the least disturbed attempt is kept: this machine is
    #: shared.  One-client points with too few operations (``samples_window_s``) draw on the
    #: same budget.  It bounds the run: a busy neighbour or a slow phase adds at most that much.
    retries: int = 2
    retry_budget_s: float = 120.0
    #: ``[gateway] workers`` of the vaults measured: "auto" (one per core), as `evault init`
    #: writes, or a number
    gateway_workers: int | str = "auto"
    #: the longest a window is lengthened to (``window_s``); never below ``duration_s``
    max_window_s: float = FULL_MAX_WINDOW_S
    #: finished operations a one-client point should hold (``samples_window_s``); 0: any
    one_client_min_samples: int = ONE_CLIENT_MIN_SAMPLES

    def window_s(self, key: PointKey, earlier: Sequence[PointResult]) -> float:
        """The window of point ``key``: ``duration_s``, or longer, up to ``max_window_s``, so
        that each of its C clients has time for ``OPS_PER_CLIENT`` operations at the rate
        the point of the same vault, operation and size at the next lower C sustained
        (``earlier``: the points measured so far).  One operation of C clients takes about
        C / rate once the vault is saturated, and longer than that rate promises while it is
        not, so the estimate errs on the long side.  Rounded up to a tenth of a second."""
        below = [
            r
            for r in earlier
            if (r.key.vault, r.key.op, r.key.size) == (key.vault, key.op, key.size)
            and r.key.concurrency < key.concurrency
            and r.ops_per_min > 0
        ]
        if not below:
            return self.duration_s
        rate_per_s = max(below, key=lambda r: r.key.concurrency).ops_per_min / 60.0
        wanted = _tenths_up(OPS_PER_CLIENT * key.concurrency / rate_per_s)
        return min(max(self.duration_s, wanted), self.window_s_cap)

    def samples_window_s(self, result: PointResult) -> float | None:
        """The window to measure a one-client point again in, when ``result`` holds fewer than
        ``one_client_min_samples`` finished operations (with a tenth to spare, at the rate it
        measured; rounded up to a tenth of a second, at most ``max_window_s``); None when it
        holds enough, is not a one-client point, or could not get longer."""
        wanted_ops = self.one_client_min_samples
        if result.key.concurrency != 1 or result.completed >= wanted_ops:
            return None
        cap = max(self.window_s_cap, result.window_s)
        if result.ops <= 0:
            wanted = cap
        else:
            per_s = result.ops / result.window_s
            wanted = _tenths_up(wanted_ops * 1.1 / per_s)
        longer = min(wanted, cap)
        return longer if longer > result.window_s + 1e-9 else None

    @property
    def window_s_cap(self) -> float:
        """The longest window of the plan: ``max_window_s``, or ``duration_s`` if longer."""
        return max(self.duration_s, self.max_window_s)

    def points(self, setting: VaultSetting) -> list[PointKey]:
        """Retrievals first (the catalog is then smallest), each size at every C."""
        return [
            PointKey(setting.label, op, size, c)
            for op in ("retrieve", "deposit")
            for size in self.sizes
            for c in setting.concurrencies
        ]

    @property
    def point_count(self) -> int:
        return sum(len(self.points(s)) for s in self.settings)


def plan_bench(
    *,
    quick: bool,
    duration_s: float | None = None,
    key_bits: int = 3072,
    client_procs: int = 1,
    profile: bool = True,
    gateway_workers: int | str = "auto",
) -> BenchPlan:
    """The default plan: the full run measures the defaults and the paper's setting, each at
    C = 1, 4 and 16 (issue 7's Figure 3), in 3 s windows (longer for long operations at
    C > 1, see ``BenchPlan.window_s``), which fits the 10-minute budget on 2 cores; ``quick``
    measures the defaults only, at C = 1 and 4, in 1 s windows (up to 3 s), and never
    profiles."""
    if duration_s is not None and not (duration_s > 0 and math.isfinite(duration_s)):
        raise ValueError(f"duration_s: expected a positive number, got {duration_s!r}")
    if key_bits not in (2048, 3072):
        raise ValueError(f"key_bits: expected 2048 or 3072, got {key_bits!r}")
    if client_procs < 1:
        raise ValueError(f"client_procs: expected >= 1, got {client_procs!r}")
    if not is_workers_setting(gateway_workers):
        raise ValueError(f'gateway_workers: expected "auto" or 1..{MAX_WORKERS}')
    default = VaultSetting("default", 5, 3, 4, (1, HEADLINE_C) if quick else CONCURRENCIES)
    paper = VaultSetting("paper", 3, 2, 3, CONCURRENCIES)
    return BenchPlan(
        settings=(default,) if quick else (default, paper),
        sizes=SIZES_BYTES,
        duration_s=duration_s or (QUICK_DURATION_S if quick else FULL_DURATION_S),
        key_bits=key_bits,
        client_procs=client_procs,
        profile=profile and not quick,
        quick=quick,
        retries=1 if quick else 2,
        retry_budget_s=20.0 if quick else 120.0,
        gateway_workers=gateway_workers,
        max_window_s=QUICK_MAX_WINDOW_S if quick else FULL_MAX_WINDOW_S,
        one_client_min_samples=0 if quick else ONE_CLIENT_MIN_SAMPLES,
    )


# --- statistics (pure) -------------------------------------------------------------------------


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) of ascending ``sorted_values``, interpolating linearly
    between the two nearest order statistics (numpy's default "linear" method)."""
    if not sorted_values:
        raise ValueError("sorted_values: empty")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q: expected 0..100, got {q!r}")
    position = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    fraction = position - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction


@dataclass(frozen=True)
class LatencyStats:
    count: int
    mean_ms: float
    p50_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float

    def to_json(self) -> dict[str, float | int]:
        return {
            "count": self.count,
            "mean_ms": round(self.mean_ms, 3),
            "p50_ms": round(self.p50_ms, 3),
            "p99_ms": round(self.p99_ms, 3),
            "min_ms": round(self.min_ms, 3),
            "max_ms": round(self.max_ms, 3),
        }


def latency_stats(latencies_s: Sequence[float]) -> LatencyStats | None:
    """Summary of operation times given in seconds (reported in ms); None when empty."""
    if not latencies_s:
        return None
    ordered = sorted(latencies_s)
    if ordered[0] < 0:
        raise ValueError("latencies_s: negative duration")
    return LatencyStats(
        count=len(ordered),
        mean_ms=statistics.fmean(ordered) * 1e3,
        p50_ms=percentile(ordered, 50) * 1e3,
        p99_ms=percentile(ordered, 99) * 1e3,
        min_ms=ordered[0] * 1e3,
        max_ms=ordered[-1] * 1e3,
    )


@dataclass(frozen=True)
class CpuShare:
    """CPU seconds spent during one window, by process group.

    ``other_s`` is the machine's busy time that none of our processes account for.
    """

    wall_s: float
    cores: int
    gateway_s: float
    nodes_s: float
    node_max_s: float
    clients_s: float
    bench_s: float
    other_s: float
    #: the gateway's serving processes (``gateway_s`` is theirs and the supervisor's)
    gateway_workers: int = 1

    @property
    def busy_share(self) -> float:
        """Fraction of the machine's capacity in use (all processes, ours and others)."""
        used = self.gateway_s + self.nodes_s + self.clients_s + self.bench_s + self.other_s
        return used / (self.wall_s * self.cores) if self.wall_s > 0 else 0.0

    @property
    def gateway_share(self) -> float:
        """Fraction of the gateway's cores in use, one per worker (each worker is one event
        loop: about one core is its ceiling)."""
        capacity = self.wall_s * min(self.gateway_workers, self.cores)
        return self.gateway_s / capacity if capacity > 0 else 0.0

    def to_json(self) -> dict[str, float | int]:
        return {
            "wall_s": round(self.wall_s, 3),
            "cores": self.cores,
            "gateway_s": round(self.gateway_s, 3),
            "nodes_s": round(self.nodes_s, 3),
            "node_max_s": round(self.node_max_s, 3),
            "clients_s": round(self.clients_s, 3),
            "bench_s": round(self.bench_s, 3),
            "other_s": round(self.other_s, 3),
            "gateway_workers": self.gateway_workers,
            "busy_share": round(self.busy_share, 3),
        }


def cpu_share(
    before: Mapping[str, float],
    after: Mapping[str, float],
    *,
    machine_busy_s: float,
    wall_s: float,
    cores: int,
    gateway_workers: int = 1,
) -> CpuShare:
    """CPU seconds per group from two snapshots of cumulative per-process CPU seconds, keyed
    ``gateway`` (with its workers), ``node-<i>``, ``client-<pid>`` and ``bench``;
    ``machine_busy_s`` is the whole machine's busy time over the same window."""
    if cores < 1:
        raise ValueError(f"cores: expected >= 1, got {cores!r}")
    spent = {name: max(0.0, after[name] - before.get(name, 0.0)) for name in after}
    nodes = [v for name, v in spent.items() if name.startswith("node-")]
    clients = sum(v for name, v in spent.items() if name.startswith("client-"))
    ours = sum(spent.values())
    return CpuShare(
        wall_s=wall_s,
        cores=cores,
        gateway_s=spent.get("gateway", 0.0),
        nodes_s=sum(nodes),
        node_max_s=max(nodes, default=0.0),
        clients_s=clients,
        bench_s=spent.get("bench", 0.0),
        other_s=max(0.0, machine_busy_s - ours),
        gateway_workers=gateway_workers,
    )


def bottleneck(cpu: CpuShare) -> str:
    """Which resource this window ran out of, in a few words."""
    if cpu.busy_share >= SATURATED:
        heaviest = max(
            ("gateway", cpu.gateway_s),
            ("nodes", cpu.nodes_s),
            ("load generator", cpu.clients_s),
            ("other tenants", cpu.other_s),
            key=lambda item: item[1],
        )[0]
        return f"the machine's {cpu.cores} cores (most to the {heaviest})"
    if cpu.gateway_share >= SATURATED:
        if cpu.gateway_workers == 1:
            return "the gateway's one core"
        return f"the gateway's {cpu.gateway_workers} workers' cores"
    if cpu.wall_s > 0 and cpu.node_max_s / cpu.wall_s >= SATURATED:
        return "a node's one core"
    return "no CPU limit reached (waiting: disk sync, locks or round trips)"


# --- the gateway's access log (pure) -----------------------------------------------------------

_ACCESS = re.compile(
    r"evault\.gateway\.access: (?P<peer>\S+) \S+ \"(?P<method>[A-Z]+) (?P<path>[^\"]*)\" "
    r"(?P<status>\d{3}) (?P<bytes>\d+) (?P<ms>[0-9.]+)ms"
)


@dataclass(frozen=True)
class AccessLine:
    peer: str
    method: str
    path: str
    status: int
    sent_bytes: int
    ms: float


def parse_access_log(text: str) -> list[AccessLine]:
    """The gateway's access lines (``evault.gateway.access``) in ``text``; other lines are
    skipped."""
    lines = []
    for match in _ACCESS.finditer(text):
        lines.append(
            AccessLine(
                peer=match["peer"],
                method=match["method"],
                path=match["path"],
                status=int(match["status"]),
                sent_bytes=int(match["bytes"]),
                ms=float(match["ms"]),
            )
        )
    return lines


_NODE_ACCESS = re.compile(
    r"evault\.node: node-(?P<node>\d+) (?P<peer>\S+) (?P<method>[A-Z]+) (?P<path>\S+) "
    r"(?P<status>\d{3})(?: \S+)? in=\d+ out=\d+ (?P<s>[0-9.]+)s"
)


@dataclass(frozen=True)
class NodeLine:
    node: int
    peer: str
    method: str
    path: str
    status: int
    seconds: float


def parse_node_log(text: str) -> list[NodeLine]:
    """A node's request lines (``evault.node``: one per internal request from the gateway)."""
    return [
        NodeLine(
            node=int(m["node"]),
            peer=m["peer"],
            method=m["method"],
            path=m["path"],
            status=int(m["status"]),
            seconds=float(m["s"]),
        )
        for m in _NODE_ACCESS.finditer(text)
    ]


# --- one point's result (pure) -----------------------------------------------------------------


@dataclass(frozen=True)
class PointResult:
    key: PointKey
    window_s: float
    completed: int
    partial_ops: float
    bytes_moved: int
    error_count: int
    errors: tuple[str, ...]
    latency: LatencyStats | None
    gateway_latency: LatencyStats | None
    connections: int | None
    cpu: CpuShare
    #: internal requests the nodes served, and distinct gateway connections they saw
    node_requests: int | None = None
    node_connections: int | None = None

    @property
    def ops(self) -> float:
        return self.completed + self.partial_ops

    @property
    def ops_per_min(self) -> float:
        return self.ops / self.window_s * 60.0

    @property
    def mb_per_s(self) -> float:
        return self.bytes_moved / self.window_s / 1e6

    def cpu_ms_per_op(self) -> dict[str, float | None]:
        """CPU milliseconds per operation by group (None when nothing completed)."""
        ops = self.ops
        if ops <= 0:
            return {"gateway": None, "nodes": None, "clients": None}
        return {
            "gateway": self.cpu.gateway_s / ops * 1e3,
            "nodes": self.cpu.nodes_s / ops * 1e3,
            "clients": self.cpu.clients_s / ops * 1e3,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "vault": self.key.vault,
            "op": self.key.op,
            "size_bytes": self.key.size,
            "concurrency": self.key.concurrency,
            "window_s": round(self.window_s, 3),
            "completed": self.completed,
            "partial_ops": round(self.partial_ops, 3),
            "ops_per_min": round(self.ops_per_min, 1),
            "MB_per_s": round(self.mb_per_s, 2),
            "errors": self.error_count,
            "error_samples": list(self.errors),
            "latency": self.latency.to_json() if self.latency else None,
            "gateway_latency": self.gateway_latency.to_json() if self.gateway_latency else None,
            "connections_seen_by_gateway": self.connections,
            "node_requests": self.node_requests,
            "node_connections": self.node_connections,
            "cpu": self.cpu.to_json(),
            "cpu_ms_per_op": {
                k: None if v is None else round(v, 3) for k, v in self.cpu_ms_per_op().items()
            },
            "bottleneck": bottleneck(self.cpu),
        }


def make_point_result(
    key: PointKey,
    outcome: Outcome,
    window_s: float,
    cpu: CpuShare,
    access: Sequence[AccessLine] | None,
    node_lines: Sequence[NodeLine] | None = None,
) -> PointResult:
    """Combine what the clients saw with what the gateway and the nodes logged during the
    window.  A node connection is a distinct (node, gateway address:port) pair: with pooled
    keep-alive connections it stays at most the pool size however many requests flow."""
    gateway_latency = None
    connections = None
    if access is not None:
        method = "GET" if key.op == "retrieve" else "PUT"
        ops = [a for a in access if a.method == method and a.path.startswith("/api/v1/documents/")]
        gateway_latency = latency_stats([a.ms / 1e3 for a in ops])
        connections = len({a.peer for a in ops})
    node_requests = node_connections = None
    if node_lines:
        node_requests = len(node_lines)
        node_connections = len({(line.node, line.peer) for line in node_lines})
    return PointResult(
        key=key,
        window_s=window_s,
        completed=outcome.completed,
        partial_ops=outcome.partial_ops,
        bytes_moved=outcome.bytes_moved,
        error_count=outcome.error_count,
        errors=outcome.errors,
        latency=latency_stats(outcome.latencies_s),
        gateway_latency=gateway_latency,
        connections=connections,
        cpu=cpu,
        node_requests=node_requests,
        node_connections=node_connections,
    )


# --- reports (pure) ----------------------------------------------------------------------------


def size_label(size: int) -> str:
    """1024 -> "1 KiB", 10485760 -> "10 MiB"."""
    if size >= MIB and size % MIB == 0:
        return f"{size // MIB} MiB"
    if size >= KIB and size % KIB == 0:
        return f"{size // KIB} KiB"
    return f"{size} B"


def _find(
    results: Sequence[PointResult], vault: str, op: str, size: int, c: int
) -> PointResult | None:
    for r in results:
        if (r.key.vault, r.key.op, r.key.size, r.key.concurrency) == (vault, op, size, c):
            return r
    return None


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "–"
    if digits == 0 or abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def summary(results: Sequence[PointResult], meta: Mapping[str, Any]) -> dict[str, Any]:
    """The one-line JSON summary: the issue's three maps (size in bytes, as a string → figure)
    for the default setting, the targets, the paper setting's headline maps, and ``meta``."""
    default = [r for r in results if r.key.vault == "default"]
    sizes = sorted({r.key.size for r in default})

    def per_min(rs: Sequence[PointResult], op: str) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for size in sorted({r.key.size for r in rs if r.key.op == op}):
            r = _find(rs, rs[0].key.vault, op, size, HEADLINE_C)
            out[str(size)] = None if r is None else round(r.ops_per_min, 1)
        return out

    def p50(rs: Sequence[PointResult], op: str) -> dict[str, float | None]:
        out: dict[str, float | None] = {}
        for size in sorted({r.key.size for r in rs if r.key.op == op}):
            r = _find(rs, rs[0].key.vault, op, size, 1)
            out[str(size)] = None if r is None or r.latency is None else round(r.latency.p50_ms, 2)
        return out

    doc: dict[str, Any] = {"bench": "vault", **meta}
    if default:
        doc["retrievals_per_min"] = per_min(default, "retrieve")
        doc["deposits_per_min"] = per_min(default, "deposit")
        doc["retrieval_ms_p50"] = p50(default, "retrieve")
        doc["deposit_ms_p50"] = p50(default, "deposit")
        doc["targets"] = check_targets(default)
        doc["sizes"] = sizes
    paper = [r for r in results if r.key.vault == "paper"]
    if paper:
        doc["paper_setting"] = {
            "retrievals_per_min": per_min(paper, "retrieve"),
            "deposits_per_min": per_min(paper, "deposit"),
            "retrieval_ms_p50": p50(paper, "retrieve"),
        }
    doc["errors"] = sum(r.error_count for r in results)
    doc["other_tenant_cores"] = round(other_cores(results), 2)
    return doc


def check_targets(default: Sequence[PointResult]) -> dict[str, dict[str, Any]]:
    """Issue 7's targets against the default setting's figures (met: None = not measured)."""
    r10k = _find(default, "default", "retrieve", 10 * KIB, HEADLINE_C)
    r10m = [r for r in default if r.key.op == "retrieve" and r.key.size == 10 * MIB]
    r1k = _find(default, "default", "retrieve", KIB, 1)
    best_10m = max(r10m, key=lambda r: r.mb_per_s, default=None)

    def entry(value: float | None, target: float, higher: bool, **extra: Any) -> dict[str, Any]:
        met = None if value is None else (value >= target if higher else value <= target)
        shown = None if value is None else round(value, 2)
        return {"value": shown, "target": target, "met": met, **extra}

    return {
        "retrievals_10KiB_C4_per_min": entry(
            r10k.ops_per_min if r10k else None, TARGET_RETRIEVALS_10KIB_C4_PER_MIN, True
        ),
        "retrieval_10MiB_MB_per_s": entry(
            best_10m.mb_per_s if best_10m else None,
            TARGET_RETRIEVAL_10MIB_MB_PER_S,
            True,
            concurrency=best_10m.key.concurrency if best_10m else None,
        ),
        "retrieval_1KiB_p50_ms": entry(
            r1k.latency.p50_ms if r1k and r1k.latency else None,
            TARGET_RETRIEVAL_1KIB_P50_MS,
            False,
        ),
    }


def markdown_tables(results: Sequence[PointResult], settings: Sequence[VaultSetting]) -> str:
    """One table per (setting, operation): rate at each C, MB/s and CPU per operation at the
    headline C, and the one-client times (client-side, and as the gateway logged them)."""
    out: list[str] = []
    for setting in settings:
        for op, noun in (("retrieve", "Retrievals"), ("deposit", "Deposits")):
            rows = [r for r in results if r.key.vault == setting.label and r.key.op == op]
            if not rows:
                continue
            cs = setting.concurrencies
            hc = HEADLINE_C if HEADLINE_C in cs else cs[-1]
            out.append(f"#### {noun}, {setting.title}\n")
            head = ["size"] + [f"/min C={c}" for c in cs]
            head += [f"MB/s C={hc}", "mean ms", "p50 ms", "p99 ms", "gw p50 ms"]
            head += [f"CPU ms/op gw · nodes · client (C={hc})", "errors"]
            out.append("| " + " | ".join(head) + " |")
            out.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 2) + ["---:"]) + "|")
            for size in sorted({r.key.size for r in rows}):
                one = _find(rows, setting.label, op, size, 1)
                headline = _find(rows, setting.label, op, size, hc)
                cells = [size_label(size)]
                for c in cs:
                    r = _find(rows, setting.label, op, size, c)
                    cells.append(_fmt(r.ops_per_min if r else None, 0))
                cells.append(_fmt(headline.mb_per_s if headline else None, 1))
                lat = one.latency if one else None
                cells += [
                    _fmt(lat.mean_ms if lat else None, 1),
                    _fmt(lat.p50_ms if lat else None, 1),
                    _fmt(lat.p99_ms if lat else None, 1),
                    _fmt(one.gateway_latency.p50_ms if one and one.gateway_latency else None, 1),
                ]
                if headline:
                    per_op = headline.cpu_ms_per_op()
                    cells.append(
                        " · ".join(_fmt(per_op[g], 1) for g in ("gateway", "nodes", "clients"))
                    )
                else:
                    cells.append("–")
                errors = sum(r.error_count for r in rows if r.key.size == size and r.key.op == op)
                cells.append(str(errors))
                out.append("| " + " | ".join(cells) + " |")
            out.append("")
    return "\n".join(out)


def where_time_goes(results: Sequence[PointResult]) -> list[str]:
    """One sentence per headline point: CPU per operation by group, and what saturated."""
    sentences = []
    for vault, op, size in (
        ("default", "retrieve", KIB),
        ("default", "retrieve", 10 * KIB),
        ("default", "retrieve", 10 * MIB),
        ("default", "deposit", 10 * KIB),
        ("default", "deposit", 10 * MIB),
    ):
        r = _find(results, vault, op, size, HEADLINE_C)
        if r is None:
            continue
        per_op = r.cpu_ms_per_op()
        cpu = r.cpu
        sentences.append(
            f"{op.capitalize()} {size_label(size)} at C={HEADLINE_C}: "
            f"{_fmt(r.ops_per_min, 0)}/min; CPU per operation: gateway {_fmt(per_op['gateway'])} "
            f"ms, all nodes {_fmt(per_op['nodes'])} ms, client {_fmt(per_op['clients'])} ms; "
            f"gateway {cpu.gateway_s / cpu.wall_s:.2f} cores ({cpu.gateway_workers} "
            f"worker{'s' if cpu.gateway_workers != 1 else ''}), nodes "
            f"{cpu.nodes_s / cpu.wall_s:.2f} cores, machine {cpu.busy_share:.0%} busy "
            f"(other tenants {cpu.other_s / cpu.wall_s:.2f} cores); limit: {bottleneck(cpu)}"
            + _node_traffic(r)
            + "."
        )
    return sentences


def _node_traffic(r: PointResult) -> str:
    """Requests per operation and the gateway connections the nodes saw.  Pooled connections
    are reused, so their number stays near C per node however many operations the window
    holds; connections opened per request grow with the operations instead."""
    if r.node_requests is None or r.node_connections is None or r.ops <= 0:
        return ""
    return (
        f"; the nodes served {r.node_requests / r.ops:.1f} requests per operation over "
        f"{r.node_connections} gateway connections in the window "
        f"({r.node_connections / r.ops:.2f} per operation)"
    )


# --- profiles (pure) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Hotspot:
    frame: str
    share: float


@dataclass(frozen=True)
class Hotspots:
    samples: int
    self_time: tuple[Hotspot, ...]
    inclusive: tuple[Hotspot, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "samples": self.samples,
            "self": [{"frame": h.frame, "share": round(h.share, 4)} for h in self.self_time],
            "inclusive": [{"frame": h.frame, "share": round(h.share, 4)} for h in self.inclusive],
        }


#: Frames every sample of a process passes through (the process's entry), shown nowhere.
_ENTRY_FRAMES = re.compile(
    r"^(<module>|_run_module_as_main|_run_code|Command\.|Group\.|Context\.|_Group\.|main |"
    r"run_gateway|run_node|gateway_command|node_command|Server\.run|asyncio_run|run |"
    r"Runner\.run|BaseEventLoop\.|_run_once|Handle\._run|_worker |Thread\.|_bootstrap)"
)


def hotspots(collapsed: str, top: int = HOTSPOTS_SHOWN) -> Hotspots:
    """The hottest frames of a py-spy "raw" (collapsed stacks) profile: by self time (the
    frame on top of the stack) and inclusive time (anywhere in the stack, once per sample),
    as shares of all samples.  Process entry frames are left out of the inclusive list."""
    if top < 1:
        raise ValueError(f"top: expected >= 1, got {top!r}")
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rstrip().rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f.strip() for f in stack.split(";") if f.strip()]
        if not frames:
            continue
        total += count
        self_counts[frames[-1]] += count
        for frame in set(frames):
            if not _ENTRY_FRAMES.match(frame):
                inclusive[frame] += count
    if total == 0:
        return Hotspots(0, (), ())
    return Hotspots(
        samples=total,
        self_time=tuple(Hotspot(f, n / total) for f, n in self_counts.most_common(top)),
        inclusive=tuple(Hotspot(f, n / total) for f, n in inclusive.most_common(top)),
    )


def markdown_hotspots(profiles: Mapping[str, Hotspots]) -> str:
    out = []
    for title, spots in profiles.items():
        if spots.samples == 0:
            continue
        out.append(f"#### {title} ({spots.samples} samples)\n")
        out.append("| self | frame | | inclusive | frame |")
        out.append("|---:|---|---|---:|---|")
        for i in range(max(len(spots.self_time), len(spots.inclusive))):
            s = spots.self_time[i] if i < len(spots.self_time) else None
            n = spots.inclusive[i] if i < len(spots.inclusive) else None
            out.append(
                f"| {f'{s.share:.1%}' if s else ''} | {f'`{s.frame}`' if s else ''} | "
                f"| {f'{n.share:.1%}' if n else ''} | {f'`{n.frame}`' if n else ''} |"
            )
        out.append("")
    return "\n".join(out)


#: Mean cores used by other processes above which the report warns that figures are low.
CONTENDED_CORES: Final = 0.2


def other_cores(results: Sequence[PointResult]) -> float:
    """Mean number of cores that processes outside the benchmark used during the windows."""
    wall = sum(r.cpu.wall_s for r in results)
    return sum(r.cpu.other_s for r in results) / wall if wall > 0 else 0.0


def _contention_warning(results: Sequence[PointResult]) -> list[str]:
    busy = other_cores(results)
    if busy < CONTENDED_CORES:
        return []
    return [
        f"**Warning: other processes used {busy:.2f} of the machine's cores on average during "
        "the measurement windows; the figures are lower than on an idle machine.**",
        "",
    ]


# --- how fast is this machine (measured in the same run) -----------------------------------------


def machine_speed(*, repeats: int = 3) -> dict[str, float]:
    """Three single-core yardsticks, best of ``repeats``, so that figures from different
    machines can be compared: the interpreter (ns per iteration of an empty Python loop: the
    gateway and the nodes are mostly Python), SHA-256 (MB/s over 16 MiB: what every byte of a
    document costs three times) and a 3072-bit modular exponentiation with a full-size
    exponent (ms, gmpy2: the unit of a signature share)."""
    import gmpy2

    rng = random.Random(7)
    loop_ns = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(1_000_000):
            pass
        loop_ns = min(loop_ns, (time.perf_counter() - start) * 1e3)
    data = rng.randbytes(16 << 20)
    sha_s = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        hashlib.sha256(data).digest()
        sha_s = min(sha_s, time.perf_counter() - start)
    modulus = gmpy2.mpz(rng.getrandbits(3072) | (1 << 3071) | 1)
    base, exponent = gmpy2.mpz(rng.getrandbits(3070)), gmpy2.mpz(rng.getrandbits(3072))
    modexp_s = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        gmpy2.powmod(base, exponent, modulus)
        modexp_s = min(modexp_s, time.perf_counter() - start)
    return {
        "python_loop_ns": round(loop_ns, 1),
        "sha256_MB_per_s": round(len(data) / sha_s / 1e6, 1),
        "modexp3072_ms": round(modexp_s * 1e3, 2),
    }


def markdown_report(
    results: Sequence[PointResult],
    settings: Sequence[VaultSetting],
    meta: Mapping[str, Any],
    profiles: Mapping[str, Hotspots],
    plots: Sequence[str],
) -> str:
    lines = [
        "### evault bench vault",
        "",
        f"{meta.get('date', '')} · {meta.get('key_bits')}-bit vault key · "
        f"{meta.get('duration_s')} s per point · {meta.get('cores')} cores · "
        f"{meta.get('client_procs')} load-generator process(es) · "
        f"{meta.get('gateway_workers', 1)} gateway worker(s) · "
        f"{'quick' if meta.get('quick') else 'full'} run in {meta.get('run_s', '?')} s · "
        f"commit {meta.get('commit') or '?'}",
        *_speed_line(meta),
        *_window_line(results, meta),
        "",
        "Rates are sustained operations per minute with C clients, each on one persistent "
        "HTTPS connection; times are one client's (Figure 4), client-side, and as logged by "
        "the gateway (gw). Every retrieval was hashed against its receipt, every deposit's "
        "receipt verified (RSASSA-PSS, SHA-256, FV hash).",
        "",
        *_contention_warning(results),
        markdown_tables(results, settings),
        "#### Where the time goes",
        "",
    ]
    lines += [f"- {s}" for s in where_time_goes(results)]
    if profiles:
        lines += ["", markdown_hotspots(profiles)]
    if plots:
        lines += ["", "Plots: " + ", ".join(f"`{p}`" for p in plots)]
    return "\n".join(lines) + "\n"


def _window_line(results: Sequence[PointResult], meta: Mapping[str, Any]) -> list[str]:
    """The points whose window was lengthened for their long operations, if any."""
    base = meta.get("duration_s")
    if not isinstance(base, int | float):
        return []
    longer = [r for r in results if r.window_s > base + 1e-9]
    if not longer:
        return []
    rules = []
    if any(r.key.concurrency > 1 for r in longer):
        rules.append(
            f"C > 1: to {OPS_PER_CLIENT} operations per client at the rate of the next lower C"
        )
    if any(r.key.concurrency == 1 for r in longer):
        rules.append(f"C = 1: measured again for {ONE_CLIENT_MIN_SAMPLES} operations")
    return [
        "",
        f"Windows lengthened ({'; '.join(rules)}): "
        + ", ".join(
            f"{r.key.vault} {r.key.op} {size_label(r.key.size)} C={r.key.concurrency} "
            f"{r.window_s:.1f} s"
            for r in longer
        )
        + ".",
    ]


def _speed_line(meta: Mapping[str, Any]) -> list[str]:
    speed = meta.get("machine_speed")
    if not isinstance(speed, Mapping):
        return []
    return [
        "",
        f"This machine, one core (compare before comparing figures across machines): an empty "
        f"Python loop {speed.get('python_loop_ns')} ns per iteration · SHA-256 "
        f"{speed.get('sha256_MB_per_s')} MB/s · 3072-bit modexp {speed.get('modexp3072_ms')} ms.",
    ]


# --- the client's own fingerprint vector ---------------------------------------------------------


def client_fv_hash(data: bytes, *, codec_id: str, m: int, n: int, segment_bytes: int) -> str:
    """H(FV) of ``data`` computed by the client itself (DESIGN §5 step 5), hex."""
    from evault.ida import StreamEncoder, get_codec
    from evault.ida.fingerprint import DocumentFingerprinter

    encoder = StreamEncoder(get_codec(codec_id, m, n), segment_bytes)
    fingerprinter = DocumentFingerprinter(n)
    for blocks in encoder.feed(data):
        fingerprinter.add(blocks)
    for blocks in encoder.finish():
        fingerprinter.add(blocks)
    return fingerprinter.fv().fv_hash().hex()


# === the run (I/O from here on) ===============================================================


def _free_ports(count: int) -> list[int]:
    """Ports the kernel hands out now (closed again at once: a small race, fine on loopback)."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _relocate(directory: Path, gateway_workers: int | str) -> int:
    """Give a copied vault free ports (nodes and gateway) and the plan's gateway workers;
    return the gateway port."""
    import tomli_w

    def rewrite(path: Path, edit: Callable[[dict[str, Any]], None]) -> None:
        doc = tomllib.loads(path.read_text())
        edit(doc)
        path.write_text(tomli_w.dumps(doc))

    gateway_toml = directory / "gateway" / "gateway.toml"
    n = int(tomllib.loads(gateway_toml.read_text())["cluster"]["n"])
    ports = _free_ports(n + 1)
    for i in range(1, n + 1):
        node_toml = directory / "nodes" / f"node-{i}" / "node.toml"
        doc = tomllib.loads(node_toml.read_text())
        doc["node"]["port"] = ports[i - 1]
        node_toml.write_text(tomli_w.dumps(doc))

    def edit_gateway(doc: dict[str, Any]) -> None:
        doc["gateway"]["port"] = ports[n]
        doc["gateway"]["workers"] = gateway_workers
        for entry in doc["nodes"]:
            entry["url"] = f"https://127.0.0.1:{ports[entry['index'] - 1]}"

    rewrite(gateway_toml, edit_gateway)
    return ports[n]


def _template(
    out_dir: Path, setting: VaultSetting, key_bits: int, say: Callable[[str], None]
) -> Path:
    """A dealt vault for ``setting``, cached under ``out_dir/vault-templates`` (the safe-prime
    search of a 3072-bit key takes from seconds to a minute; its keys are not secret here)."""
    from evault.dealer import InitOptions, init_vault, is_vault_dir

    path = out_dir / "vault-templates" / f"{setting.n}-{setting.m}-{setting.k}-{key_bits}"
    if is_vault_dir(path):
        return path
    shutil.rmtree(path, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    say(f"dealing a {key_bits}-bit vault for {setting.title} (cached for later runs)")
    options = InitOptions(nodes=setting.n, needed=setting.m, quorum=setting.k, key_bits=key_bits)
    partial = path.with_name(path.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    init_vault(partial, options)
    partial.rename(path)
    return path


def _cpu_seconds(process: Any, *, with_children: bool = False) -> float:
    """The CPU seconds of ``process`` (``with_children``: and of its children now alive, the
    gateway's workers)."""
    import psutil

    total = 0.0
    children = process.children(recursive=True) if with_children else []
    for p in (process, *children):
        with contextlib.suppress(psutil.Error):
            times = p.cpu_times()
            total += times.user + times.system
    return total


def _machine_busy_s() -> float:
    """The machine's busy CPU seconds so far: user, nice, system, irq and softirq (guest time
    is already inside user on Linux; idle, iowait and steal are not work done here)."""
    import psutil

    t = psutil.cpu_times()
    return float(
        t.user
        + getattr(t, "nice", 0.0)
        + t.system
        + getattr(t, "irq", 0.0)
        + getattr(t, "softirq", 0.0)
    )


def _source_commit() -> str | None:
    """The git commit of the evault sources measured (``+dirty`` when they are modified), or
    None outside a checkout: figures are only comparable with the code they measured."""
    source = Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            cwd=source,
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", "."],
            cwd=source.parent,
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0:
        return None
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _find_py_spy() -> str | None:
    """``EVAULT_PY_SPY`` if set, else py-spy on PATH, else the one installed next to this
    interpreter (the ``bench`` extra puts it in the virtualenv, which need not be on PATH)."""
    named = os.environ.get("EVAULT_PY_SPY")
    if named:
        return named if os.access(named, os.X_OK) else None
    return shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))


@dataclass
class _Live:
    """A running vault of the benchmark and what the clients need to use it."""

    setting: VaultSetting
    directory: Path
    log_dir: Path
    cluster: Any
    target: Target
    vault_id: str
    owner: str
    public_key_pem: bytes
    key_bits: int
    codec: str
    segment_bytes: int
    gateway_workers: int
    documents: dict[int, RetrieveWork] = field(default_factory=dict)
    processes: dict[str, Any] = field(default_factory=dict)

    def gateway_log(self) -> Path:
        return self.log_dir / "gateway.log"


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C: every ``finally`` stops what it started."""

    def handler(signum: int, _frame: FrameType | None) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _start_vault(
    setting: VaultSetting,
    plan: BenchPlan,
    out_dir: Path,
    run_root: Path,
    say: Callable[[str], None],
) -> _Live:
    import httpx
    import psutil
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    from evault.config import load_gateway_config
    from evault.local import start_cluster

    template = _template(out_dir, setting, plan.key_bits, say)
    directory = run_root / setting.label
    shutil.copytree(template, directory)
    port = _relocate(directory, plan.gateway_workers)
    workers = load_gateway_config(directory / "gateway" / "gateway.toml").workers
    log_dir = out_dir / "logs" / setting.label
    shutil.rmtree(log_dir, ignore_errors=True)
    say(f"starting {setting.title}: {setting.n} nodes and a gateway")
    cluster = start_cluster(directory, port=port, log_dir=log_dir)
    try:
        ca = directory / "client" / "ca.pem"
        owner = "bench"
        password = secrets.token_urlsafe(18)
        with httpx.Client(
            base_url=cluster.gateway_url,
            verify=ssl.create_default_context(cafile=str(ca)),
            timeout=120.0,
        ) as client:
            info = _ok(client.get("/api/v1/vault"), 200).json()
            _ok(
                client.post(
                    "/api/v1/users",
                    json={"user_id": owner, "password": password, "name": "Bench", "contact": "-"},
                ),
                201,
            )
            token = _ok(
                client.post("/api/v1/tokens", json={"user_id": owner, "password": password}), 201
            ).json()["token"]
        pem = str(info["public_key_pem"]).encode("ascii")
        key = serialization.load_pem_public_key(pem)
        if not isinstance(key, rsa.RSAPublicKey):
            raise TypeError("the vault public key is not RSA")
        live = _Live(
            setting=setting,
            directory=directory,
            log_dir=log_dir,
            cluster=cluster,
            target=Target(cluster.gateway_url, str(ca), str(token)),
            vault_id=str(info["vault_id"]),
            owner=owner,
            public_key_pem=pem,
            key_bits=key.key_size,
            codec=str(info["codec"]),
            segment_bytes=int(info["segment_bytes"]),
            gateway_workers=workers,
        )
        for name, popen in cluster.processes.items():
            live.processes[name] = psutil.Process(popen.pid)
        return live
    except BaseException:
        cluster.stop()
        raise


def _ok(response: Any, status: int) -> Any:
    if response.status_code != status:
        raise BenchError(
            f"{response.request.method} {response.request.url.path}: expected HTTP {status}, "
            f"got {response.status_code}: {response.text[:300]}"
        )
    return response


def _payload(size: int, seed: int) -> bytes:
    return random.Random(seed).randbytes(size)


def _deposit_documents(live: _Live, sizes: Sequence[int]) -> dict[int, DepositWork]:
    """Deposit one document per size (checked like any client's deposit); returns, per size,
    the work a depositing client repeats (its bytes, hash and FV hash)."""
    import httpx
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = serialization.load_pem_public_key(live.public_key_pem)
    if not isinstance(key, rsa.RSAPublicKey):
        raise TypeError("the vault public key is not RSA")
    s = live.setting
    works: dict[int, DepositWork] = {}
    with httpx.Client(
        base_url=live.target.base_url,
        verify=ssl.create_default_context(cafile=live.target.ca_path),
        headers={"Authorization": f"Bearer {live.target.token}"},
        timeout=300.0,
    ) as client:
        for size in sizes:
            data = _payload(size, seed=size)
            sha = hashlib.sha256(data).hexdigest()
            fv_hash = client_fv_hash(
                data, codec_id=live.codec, m=s.m, n=s.n, segment_bytes=live.segment_bytes
            )
            name = f"doc-{size}"
            answer = _ok(
                client.put(
                    f"/api/v1/documents/{name}", content=data, headers={"Evault-Sha256": sha}
                ),
                201,
            ).json()
            try:
                statement = base64.b64decode(answer["receipt"]["statement"])
                signature = base64.b64decode(answer["receipt"]["signature"])
                verify_receipt_signature(key, statement, signature, name)
                check_statement(
                    statement,
                    vault_id=live.vault_id,
                    owner=live.owner,
                    name=name,
                    version=answer["version"],
                    size=size,
                    sha256_hex=sha,
                    fv_hash_hex=fv_hash,
                )
            except (CheckFailed, KeyError, ValueError) as exc:
                raise BenchError(f"the receipt of the first deposit of {name}: {exc}") from exc
            live.documents[size] = RetrieveWork(name, size, sha)
            works[size] = DepositWork(
                name_prefix=f"dep-{size}-c",
                payload=data,
                sha256_hex=sha,
                fv_hash_hex=fv_hash,
                owner=live.owner,
                vault_id=live.vault_id,
                public_key_pem=live.public_key_pem,
            )
    return works


class _Window:
    """CPU snapshots and gateway-log offsets at the start and end of a point's window."""

    def __init__(self, live: _Live, client_pids: Sequence[int]) -> None:
        import psutil

        self.processes: dict[str, Any] = dict(live.processes)
        for pid in client_pids:
            self.processes[f"client-{pid}"] = psutil.Process(pid)
        self.processes["bench"] = psutil.Process()
        self.gateway_workers = live.gateway_workers
        self.log = live.gateway_log()
        self.node_logs = [live.log_dir / f"node-{i}.log" for i in range(1, live.setting.n + 1)]
        self.node_spans: list[tuple[int, int]] = []
        self.cores = psutil.cpu_count() or 1
        self.before: dict[str, float] = {}
        self.after: dict[str, float] = {}
        self.busy = (0.0, 0.0)
        self.log_span = (0, 0)
        self.wall = (0.0, 0.0)

    def _snapshot(self) -> dict[str, float]:
        return {
            name: _cpu_seconds(p, with_children=name == "gateway")
            for name, p in self.processes.items()
        }

    @staticmethod
    def _size(path: Path) -> int:
        try:
            return path.stat().st_size
        except OSError:
            return 0

    def _log_size(self) -> int:
        return self._size(self.log)

    @staticmethod
    def _read(path: Path, span: tuple[int, int]) -> str | None:
        start, end = span
        try:
            with path.open("rb") as fh:
                fh.seek(start)
                return fh.read(max(0, end - start)).decode("utf-8", errors="replace")
        except OSError:
            return None

    def start(self, _t0: float) -> None:
        self.wall = (time.monotonic(), 0.0)
        self.before = self._snapshot()
        self.busy = (_machine_busy_s(), 0.0)
        self.log_span = (self._log_size(), 0)
        self.node_spans = [(self._size(p), 0) for p in self.node_logs]

    def end(self, _deadline: float) -> None:
        self.wall = (self.wall[0], time.monotonic())
        self.after = self._snapshot()
        self.busy = (self.busy[0], _machine_busy_s())
        self.log_span = (self.log_span[0], self._log_size())
        self.node_spans = [
            (start, self._size(p))
            for p, (start, _) in zip(self.node_logs, self.node_spans, strict=True)
        ]

    def cpu(self) -> CpuShare:
        return cpu_share(
            self.before,
            self.after,
            machine_busy_s=self.busy[1] - self.busy[0],
            wall_s=self.wall[1] - self.wall[0],
            cores=self.cores,
            gateway_workers=self.gateway_workers,
        )

    def access_lines(self) -> list[AccessLine] | None:
        text = self._read(self.log, self.log_span)
        return None if text is None else parse_access_log(text)

    def node_lines(self) -> list[NodeLine]:
        lines: list[NodeLine] = []
        for path, span in zip(self.node_logs, self.node_spans, strict=True):
            lines += parse_node_log(self._read(path, span) or "")
        return lines


def contention(result: PointResult) -> float:
    """Cores that other processes took during the point's window."""
    return result.cpu.other_s / result.cpu.wall_s if result.cpu.wall_s > 0 else 0.0


@dataclass
class RetryBudget:
    """What a run may still spend measuring points again (see ``BenchPlan``)."""

    left_s: float

    def charged(
        self, measure: Callable[[], PointResult], clock: Callable[[], float] = time.monotonic
    ) -> PointResult:
        """``measure()``, its time taken from what is left."""
        t0 = clock()
        try:
            return measure()
        finally:
            self.left_s -= clock() - t0


def measure_point(
    measure: Callable[[], PointResult],
    *,
    retries: int,
    budget: RetryBudget,
    on_retry: Callable[[float], None] = lambda _busy: None,
    clock: Callable[[], float] = time.monotonic,
) -> PointResult:
    """``measure()`` once, then again (up to ``retries`` times) while other processes took more
    than ``CONTENDED_POINT_CORES`` and ``budget`` has time left; the least contended result is
    kept, and each second measurement's time is taken from ``budget`` (the last one may
    overrun it by one point)."""
    result = measure()
    for _ in range(retries):
        busy = contention(result)
        if busy <= CONTENDED_POINT_CORES or budget.left_s <= 0:
            break
        on_retry(busy)
        again = budget.charged(measure, clock)
        if contention(again) < busy:
            result = again
    return result


def _run_point(pool: Any, live: _Live, key: PointKey, work: Work, duration_s: float) -> PointResult:
    dead = live.cluster.dead()
    if dead:
        raise BenchError(
            "vault process(es) exited: "
            + ", ".join(f"{name} (status {code})" for name, code in sorted(dead.items()))
            + f"; see the logs in {live.log_dir}"
        )
    window = _Window(live, pool.pids)
    outcome, _t0 = pool.run_point(
        live.target, work, key.concurrency, duration_s, on_start=window.start, on_end=window.end
    )
    return make_point_result(
        key, outcome, duration_s, window.cpu(), window.access_lines(), window.node_lines()
    )


def _measure_in(
    window_s: float,
    *,
    pool: Any,
    live: _Live,
    key: PointKey,
    work: Work,
    retries: int,
    budget: RetryBudget,
    on_retry: Callable[[float], None],
) -> PointResult:
    """Point ``key`` measured in a window of ``window_s`` (again while contended: see
    ``measure_point``)."""
    return measure_point(
        functools.partial(_run_point, pool, live, key, work, window_s),
        retries=retries,
        budget=budget,
        on_retry=on_retry,
    )


def _spy_starter(
    py_spy: str,
    live: _Live,
    profile_dir: Path,
    tag: str,
    seconds: int,
    spies: dict[str, tuple[subprocess.Popen[bytes], Path]],
) -> Callable[[float], None]:
    """An ``on_start`` callback that starts py-spy on the gateway and node 1 (non-blocking
    sampling: the processes are never paused) and records each in ``spies``."""

    def start(_t0: float) -> None:
        for proc in ("gateway", "node-1"):
            raw = profile_dir / f"{live.setting.label}-{tag}-{proc}.txt"
            command = [py_spy, "record", "--pid", str(live.processes[proc].pid)]
            command += ["--duration", str(seconds), "--rate", "200", "--format", "raw"]
            command += ["--nonblocking", "--output", str(raw)]
            if proc == "gateway":
                command += ["--subprocesses"]  # its workers, when it has several
            spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            spies[proc] = (spy, raw)

    return start


def _profile_pass(
    pool: Any,
    live: _Live,
    works: Mapping[int, DepositWork],
    duration_s: float,
    py_spy: str,
    out_dir: Path,
    say: Callable[[str], None],
) -> dict[str, Hotspots]:
    """Sample the gateway and node 1 with py-spy during three extra points."""
    profiles: dict[str, Hotspots] = {}
    profile_dir = out_dir / "profiles"
    profile_dir.mkdir(parents=True, exist_ok=True)
    seconds = max(2, math.ceil(duration_s))
    for op, size in PROFILE_POINTS:
        work: Work = live.documents[size] if op == "retrieve" else works[size]
        spies: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
        start = _spy_starter(py_spy, live, profile_dir, f"{op}-{size}", seconds, spies)
        say(f"profiling {op} {size_label(size)} C={HEADLINE_C} with py-spy")
        try:
            pool.run_point(live.target, work, HEADLINE_C, float(seconds), on_start=start)
        finally:
            for proc, (spy, raw) in spies.items():
                try:
                    spy.wait(timeout=seconds + 30)
                except subprocess.TimeoutExpired:
                    spy.kill()
                    spy.wait(timeout=5)
                text = raw.read_text(errors="replace") if raw.exists() else ""
                profiles[f"{proc}, {op} {size_label(size)} C={HEADLINE_C}"] = hotspots(text)
    return profiles


def run(
    *,
    quick: bool,
    json_output: bool,
    out_dir: Path = Path("bench-results"),
    duration_s: float | None = None,
    client_procs: int = 1,
    key_bits: int = 3072,
    gateway_workers: int | str = "auto",
) -> None:
    """Run the benchmark (see the module text); raises ``BenchChecksFailed`` at the end when
    any client check failed (after writing every output)."""
    from rich.console import Console

    from evault.bench.loadgen import ClientPool
    from evault.bench.plots import write_plots
    from evault.progress import task_progress

    plan = plan_bench(
        quick=quick,
        duration_s=duration_s,
        key_bits=key_bits,
        client_procs=client_procs,
        gateway_workers=gateway_workers,
    )
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True, log_path=False)
    py_spy = _find_py_spy() if plan.profile else None
    speed = machine_speed()  # before any vault process runs
    started = time.monotonic()
    results: list[PointResult] = []
    profiles: dict[str, Hotspots] = {}
    run_root = out_dir / f"run-{os.getpid()}"  # this run's vault data, removed at the end
    shutil.rmtree(run_root, ignore_errors=True)
    run_root.mkdir(parents=True)
    key_bits_seen = plan.key_bits
    workers_seen: int | None = None
    retry_budget = RetryBudget(plan.retry_budget_s)
    progress = task_progress(console)
    try:
        with _sigterm_raises(), progress:
            task = progress.add_task("evault bench vault", total=plan.point_count)

            def say(text: str) -> None:
                progress.console.log(text)

            for setting in plan.settings:
                progress.update(task, description=f"{setting.title}: starting")
                live = _start_vault(setting, plan, out_dir, run_root, say)
                key_bits_seen = live.key_bits
                workers_seen = live.gateway_workers
                pool = None
                try:
                    pool = ClientPool(plan.client_procs)
                    progress.update(task, description=f"{setting.title}: first deposits")
                    works = _deposit_documents(live, plan.sizes)
                    for key in plan.points(setting):
                        label = (
                            f"{setting.label} {key.op} {size_label(key.size)} C={key.concurrency}"
                        )
                        progress.update(task, description=label)
                        work: Work = (
                            live.documents[key.size] if key.op == "retrieve" else works[key.size]
                        )

                        def again(busy: float, label: str = label) -> None:
                            say(f"{label}: other processes took {busy:.2f} cores, measuring again")

                        measured = functools.partial(
                            _measure_in,
                            pool=pool,
                            live=live,
                            key=key,
                            work=work,
                            retries=plan.retries,
                            budget=retry_budget,
                            on_retry=again,
                        )
                        result = measured(plan.window_s(key, results))
                        longer = plan.samples_window_s(result)
                        if longer is not None and retry_budget.left_s > 0:
                            say(
                                f"{label}: {result.completed} operations in "
                                f"{result.window_s:.1f} s, measuring again in {longer:.1f} s"
                            )
                            result = retry_budget.charged(functools.partial(measured, longer))
                        results.append(result)
                        say(
                            f"{label}: {result.ops_per_min:,.0f}/min, "
                            f"p50 {_fmt(result.latency.p50_ms if result.latency else None, 1)} ms"
                            f", {result.mb_per_s:.1f} MB/s"
                            + (f", {result.error_count} ERRORS" if result.error_count else "")
                        )
                        progress.advance(task)
                    if py_spy and setting.label == "default":
                        profiles = _profile_pass(
                            pool, live, works, plan.duration_s, py_spy, out_dir, say
                        )
                finally:
                    if pool is not None:
                        pool.close()
                    live.cluster.stop()
                    shutil.rmtree(live.directory, ignore_errors=True)
    except KeyboardInterrupt:
        console.print("interrupted: every process started was stopped")
        raise
    finally:
        shutil.rmtree(run_root, ignore_errors=True)

    meta = {
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "key_bits": key_bits_seen,
        "quick": plan.quick,
        "duration_s": plan.duration_s,
        "cores": os.cpu_count(),
        "client_procs": plan.client_procs,
        "gateway_workers": workers_seen,
        "python": platform.python_version(),
        "settings": {s.label: {"n": s.n, "m": s.m, "k": s.k} for s in plan.settings},
        "py_spy": bool(py_spy),
        "run_s": round(time.monotonic() - started, 1),
        "commit": _source_commit(),
        "machine_speed": speed,
    }
    plot_paths = write_plots(results, out_dir)
    doc = {
        "summary": summary(results, meta),
        "points": [r.to_json() for r in results],
        "profiles": {name: spots.to_json() for name, spots in profiles.items()},
        "plots": [str(p) for p in plot_paths],
    }
    (out_dir / "vault-bench.json").write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    report = markdown_report(results, plan.settings, meta, profiles, [p.name for p in plot_paths])
    (out_dir / "vault-bench.md").write_text(report)
    print(report, flush=True)
    print(f"Written: {out_dir}/vault-bench.json, vault-bench.md and the plots.", flush=True)
    if json_output:
        sys.stdout.flush()
        print(json.dumps(summary(results, meta), sort_keys=True), flush=True)
    failed = [r for r in results if r.error_count]
    if failed:
        raise BenchChecksFailed(
            sum(r.error_count for r in failed), len(failed), (failed[0].errors or ("?",))[0]
        )
