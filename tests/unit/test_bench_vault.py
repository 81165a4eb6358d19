"""`evault bench vault`: the pure parts (plan, statistics, CPU shares, access-log parsing,
profiles, the JSON summary and the Markdown tables) on made-up measurements."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from evault.bench import vault as bench
from evault.bench.loadgen import Outcome
from evault.bench.vault import (
    KIB,
    MIB,
    CpuShare,
    PointKey,
    PointResult,
    bottleneck,
    cpu_share,
    hotspots,
    latency_stats,
    make_point_result,
    markdown_tables,
    parse_access_log,
    parse_node_log,
    percentile,
    plan_bench,
    size_label,
    summary,
)

# --- the plan ----------------------------------------------------------------------------------


def test_full_plan_measures_both_settings_at_the_issue_sizes() -> None:
    plan = plan_bench(quick=False)
    assert [(s.n, s.m, s.k) for s in plan.settings] == [(5, 3, 4), (3, 2, 3)]
    assert plan.sizes == (1024, 5120, 10240, 51200, 102400, 512000, 1048576, 10485760)
    # Figure 3's three concurrencies on both vaults.
    assert [s.concurrencies for s in plan.settings] == [(1, 4, 16), (1, 4, 16)]
    assert plan.key_bits == 3072
    # 8 sizes x 2 operations x (3 + 3) concurrencies
    assert plan.point_count == 8 * 2 * 6
    # Retrievals come first, each size at every C.
    first = plan.points(plan.settings[0])[:4]
    assert [(p.op, p.size, p.concurrency) for p in first] == [
        ("retrieve", 1024, 1),
        ("retrieve", 1024, 4),
        ("retrieve", 1024, 16),
        ("retrieve", 5120, 1),
    ]


def test_quick_plan_is_the_default_setting_at_c1_and_c4_without_profiles() -> None:
    plan = plan_bench(quick=True)
    assert [s.label for s in plan.settings] == ["default"]
    assert plan.settings[0].concurrencies == (1, 4)
    assert plan.duration_s == bench.QUICK_DURATION_S
    assert plan.profile is False
    assert plan_bench(quick=True, duration_s=2.5).duration_s == 2.5
    assert plan_bench(quick=True).gateway_workers == "auto"  # as `evault init` writes
    assert plan_bench(quick=True, gateway_workers=1).gateway_workers == 1


def _rate(vault: str, op: str, size: int, c: int, per_min: float) -> PointResult:
    """A point that sustained ``per_min`` operations per minute in a 3 s window."""
    ops = per_min / 60.0 * 3.0
    outcome = Outcome(latencies_s=(0.1,), completed=int(ops), partial_ops=ops - int(ops))
    return make_point_result(PointKey(vault, op, size, c), outcome, 3.0, _cpu(), None)  # type: ignore[arg-type]


def test_windows_of_long_operations_are_lengthened_to_a_few_per_client() -> None:
    plan = plan_bench(quick=False)
    key = PointKey("default", "deposit", 10 * MIB, 16)
    # Nothing measured below it yet (or C = 1): the plan's window.
    assert plan.window_s(key, []) == plan.duration_s == 3.0
    assert plan.window_s(PointKey("default", "deposit", 10 * MIB, 1), []) == 3.0
    # 255 deposits a minute at C = 4: 16 clients take 16 / 4.25 = 3.76 s per operation, so
    # four operations each need 15.06 s: 15.1 s (windows go by tenths of a second).
    earlier = [
        _rate("default", "deposit", 10 * MIB, 1, 259.0),
        _rate("default", "deposit", 10 * MIB, 4, 255.0),
    ]
    assert plan.window_s(key, earlier) == pytest.approx(15.1)
    # From C = 1 to C = 4 the same rule, on the C = 1 rate.
    four = PointKey("default", "deposit", 10 * MIB, 4)
    assert plan.window_s(four, earlier[:1]) == pytest.approx(3.8)  # 4 x 4 / 4.32 s = 3.71 s
    # Only the same vault, operation and size count, and only a lower C.
    others = [
        _rate("paper", "deposit", 10 * MIB, 4, 10.0),
        _rate("default", "retrieve", 10 * MIB, 4, 10.0),
        _rate("default", "deposit", MIB, 4, 10.0),
        _rate("default", "deposit", 10 * MIB, 16, 10.0),
    ]
    assert plan.window_s(key, others) == 3.0
    # Fast operations keep the plan's window; slow ones stop at the cap.
    assert plan.window_s(key, [_rate("default", "deposit", 10 * MIB, 4, 40_000.0)]) == 3.0
    assert plan.window_s(key, [_rate("default", "deposit", 10 * MIB, 4, 6.0)]) == (
        bench.FULL_MAX_WINDOW_S
    )
    # A point with no operation at all gives no rate to go by.
    assert plan.window_s(key, [_rate("default", "deposit", 10 * MIB, 4, 0.0)]) == 3.0
    # --quick stops at its own, shorter cap; a longer --duration-s is never shortened.
    quick = plan_bench(quick=True)
    assert quick.window_s(key, earlier) == bench.QUICK_MAX_WINDOW_S
    long = plan_bench(quick=False, duration_s=30.0)
    assert long.window_s(key, earlier) == 30.0


def _finished(c: int, completed: int, window_s: float, partial: float = 0.0) -> PointResult:
    outcome = Outcome(latencies_s=(0.2,) * completed, completed=completed, partial_ops=partial)
    key = PointKey("default", "deposit", 10 * MIB, c)
    return make_point_result(key, outcome, window_s, _cpu(), None)


def test_one_client_points_with_few_operations_are_measured_again_for_enough() -> None:
    plan = plan_bench(quick=False)
    assert bench.ONE_CLIENT_MIN_SAMPLES == 50
    # 12.3 deposits of 10 MiB in 3 s: 55 (50 and a tenth) need 13.42 s: 13.5 s.
    assert plan.samples_window_s(_finished(1, 12, 3.0, partial=0.3)) == pytest.approx(13.5)
    # Enough already, or not a one-client point: no second measurement.
    assert plan.samples_window_s(_finished(1, 50, 3.0)) is None
    assert plan.samples_window_s(_finished(4, 11, 3.8)) is None
    # Slower than the cap allows: the cap; nothing finished at all: the cap too.
    assert plan.samples_window_s(_finished(1, 2, 3.0)) == bench.FULL_MAX_WINDOW_S
    assert plan.samples_window_s(_finished(1, 0, 3.0)) == bench.FULL_MAX_WINDOW_S
    # Already measured at the cap: never again.
    assert plan.samples_window_s(_finished(1, 2, bench.FULL_MAX_WINDOW_S)) is None
    # --quick never measures again (its budget is 2 minutes); a --duration-s above the cap
    # is the cap.
    assert plan_bench(quick=True).samples_window_s(_finished(1, 4, 1.0)) is None
    assert plan_bench(quick=False, duration_s=30.0).samples_window_s(_finished(1, 40, 30.0)) is None


def test_report_names_the_points_whose_window_was_lengthened() -> None:
    meta = {"duration_s": 3.0}
    longer = make_point_result(
        PointKey("paper", "deposit", 10 * MIB, 16), Outcome((1.0,), 40), 10.6, _cpu(), None
    )
    report = bench.markdown_report([*_fake_results(), longer], [], meta, {}, [])
    assert "Windows lengthened (C > 1: to 4 operations per client" in report
    assert "C = 1" not in report  # no one-client point was measured again
    assert "paper deposit 10 MiB C=16 10.6 s" in report
    again = make_point_result(
        PointKey("default", "deposit", 10 * MIB, 1), Outcome((0.2,) * 55, 55), 10.9, _cpu(), None
    )
    report = bench.markdown_report([*_fake_results(), longer, again], [], meta, {}, [])
    assert "; C = 1: measured again for 50 operations): " in report
    assert "default deposit 10 MiB C=1 10.9 s" in report
    assert "Windows lengthened" not in bench.markdown_report(_fake_results(), [], meta, {}, [])


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"duration_s": 0.0}, "duration_s"),
        ({"duration_s": math.inf}, "duration_s"),
        ({"key_bits": 1024}, "key_bits"),
        ({"client_procs": 0}, "client_procs"),
        ({"gateway_workers": 0}, "gateway_workers"),
        ({"gateway_workers": "many"}, "gateway_workers"),
    ],
)
def test_plan_rejects_bad_parameters_by_name(kwargs: dict[str, float], word: str) -> None:
    with pytest.raises(ValueError, match=word):
        plan_bench(quick=False, **kwargs)  # type: ignore[arg-type]


# --- statistics --------------------------------------------------------------------------------


def test_percentile_interpolates_like_numpy_on_a_small_vector() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 2.5
    assert percentile(values, 100) == 4.0
    assert percentile(values, 99) == pytest.approx(3.97)
    assert percentile([7.0], 99) == 7.0


@given(
    st.lists(st.floats(0, 1e4, allow_nan=False), min_size=1, max_size=200),
    st.floats(0, 100),
)
def test_percentile_matches_numpy_linear(values: list[float], q: float) -> None:
    ordered = sorted(values)
    expected = float(np.percentile(np.array(ordered), q, method="linear"))
    assert percentile(ordered, q) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    assert ordered[0] <= percentile(ordered, q) <= ordered[-1]


@given(st.lists(st.floats(0, 1e3, allow_nan=False), min_size=1, max_size=50))
def test_percentile_is_monotone_in_q(values: list[float]) -> None:
    ordered = sorted(values)
    qs = [0, 10, 50, 90, 99, 100]
    got = [percentile(ordered, q) for q in qs]
    assert got == sorted(got)


def test_percentile_rejects_empty_input_and_out_of_range_q() -> None:
    with pytest.raises(ValueError, match="sorted_values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="q"):
        percentile([1.0], 101)


def test_latency_stats_are_in_milliseconds() -> None:
    stats = latency_stats([0.004, 0.001, 0.003, 0.002])
    assert stats is not None
    assert stats.count == 4
    assert stats.mean_ms == pytest.approx(2.5)
    assert stats.p50_ms == pytest.approx(2.5)
    assert stats.p99_ms == pytest.approx(3.97)
    assert (stats.min_ms, stats.max_ms) == pytest.approx((1.0, 4.0))
    assert latency_stats([]) is None
    with pytest.raises(ValueError, match="negative"):
        latency_stats([-0.1, 0.2])


# --- CPU shares --------------------------------------------------------------------------------


def test_cpu_share_groups_processes_and_finds_other_tenants() -> None:
    before = {"gateway": 10.0, "node-1": 1.0, "node-2": 2.0, "client-42": 0.5, "bench": 3.0}
    after = {"gateway": 11.5, "node-1": 1.5, "node-2": 3.0, "client-42": 0.7, "bench": 3.1}
    share = cpu_share(before, after, machine_busy_s=3.8, wall_s=2.0, cores=2)
    assert share.gateway_s == pytest.approx(1.5)
    assert share.nodes_s == pytest.approx(1.5)
    assert share.node_max_s == pytest.approx(1.0)
    assert share.clients_s == pytest.approx(0.2)
    assert share.bench_s == pytest.approx(0.1)
    assert share.other_s == pytest.approx(3.8 - 3.3)
    assert share.busy_share == pytest.approx(3.8 / 4.0)
    assert share.gateway_share == pytest.approx(0.75)
    two = cpu_share(before, after, machine_busy_s=3.8, wall_s=2.0, cores=2, gateway_workers=2)
    assert two.gateway_share == pytest.approx(0.375) and two.to_json()["gateway_workers"] == 2
    # The machine counter can lag our processes' counters: "other" never goes negative.
    assert cpu_share(before, after, machine_busy_s=1.0, wall_s=2.0, cores=2).other_s == 0.0
    with pytest.raises(ValueError, match="cores"):
        cpu_share(before, after, machine_busy_s=1.0, wall_s=2.0, cores=0)


def _cpu(**kw: float) -> CpuShare:
    base = dict(
        wall_s=1.0,
        cores=2,
        gateway_s=0.1,
        nodes_s=0.1,
        node_max_s=0.05,
        clients_s=0.05,
        bench_s=0.0,
        other_s=0.0,
    )
    base.update(kw)
    return CpuShare(**base)  # type: ignore[arg-type]


def test_bottleneck_names_what_ran_out() -> None:
    assert "2 cores" in bottleneck(_cpu(nodes_s=1.6, gateway_s=0.2))
    assert "nodes" in bottleneck(_cpu(nodes_s=1.6, gateway_s=0.2))
    assert "other tenants" in bottleneck(_cpu(other_s=1.5, gateway_s=0.3))
    assert bottleneck(_cpu(gateway_s=0.95)) == "the gateway's one core"
    # Two workers: the gateway may use both cores, so 0.95 cores is not its limit...
    assert bottleneck(_cpu(gateway_s=0.95, gateway_workers=2)).startswith("no CPU limit")
    # ...but 1.8 is (with the rest idle, an unlikely window, checked for the wording).
    assert (
        bottleneck(
            _cpu(gateway_s=1.8, nodes_s=0.0, node_max_s=0.0, clients_s=0.0, gateway_workers=2)
        )
        == "the machine's 2 cores (most to the gateway)"
    )
    assert bottleneck(_cpu(gateway_s=1.7, cores=4, gateway_workers=2)) == (
        "the gateway's 2 workers' cores"
    )
    assert bottleneck(_cpu(node_max_s=0.9, nodes_s=0.9)) == "a node's one core"
    assert bottleneck(_cpu()).startswith("no CPU limit")


# --- the gateway's access log ------------------------------------------------------------------

_LOG = (
    "2026-11-25 16:05:17,300 INFO uvicorn.error: Started server process [1]\n"
    '2026-11-25 16:05:17,589 INFO evault.gateway.access: 127.0.0.1:34626 bench "GET '
    '/api/v1/documents/doc-10240" 200 10240 45.3ms\n'
    '2026-11-25 16:05:17,600 INFO evault.gateway.access: 127.0.0.1:34628 bench "PUT '
    '/api/v1/documents/dep-10240-c0" 201 1342 120.0ms\n'
    '2026-11-25 16:05:17,700 INFO evault.gateway.access: 127.0.0.1:34626 bench "GET '
    '/api/v1/documents/doc-10240" 200 10240 5.5ms\n'
    '2026-11-25 16:05:17,800 INFO evault.gateway.access: 127.0.0.1:34630 - "GET '
    '/api/v1/vault" 200 800 1.0ms\n'
)


def test_parse_access_log_reads_the_gateway_lines_only() -> None:
    lines = parse_access_log(_LOG)
    assert len(lines) == 4
    first = lines[0]
    assert (first.peer, first.method, first.path) == (
        "127.0.0.1:34626",
        "GET",
        "/api/v1/documents/doc-10240",
    )
    assert (first.status, first.sent_bytes, first.ms) == (200, 10240, 45.3)
    assert lines[1].method == "PUT" and lines[1].status == 201


def test_point_result_combines_client_and_gateway_views() -> None:
    key = PointKey("default", "retrieve", 10 * KIB, 1)
    outcome = Outcome(
        latencies_s=(0.010, 0.020, 0.030),
        completed=3,
        partial_ops=0.5,
        bytes_moved=35 * KIB,
    )
    result = make_point_result(key, outcome, 2.0, _cpu(wall_s=2.0), parse_access_log(_LOG))
    assert result.ops == 3.5
    assert result.ops_per_min == pytest.approx(3.5 / 2.0 * 60)
    assert result.mb_per_s == pytest.approx(35 * KIB / 2.0 / 1e6)
    assert result.latency is not None and result.latency.p50_ms == pytest.approx(20.0)
    # Only the document GETs count: two of them, on one connection.
    assert result.gateway_latency is not None and result.gateway_latency.count == 2
    assert result.connections == 1
    per_op = result.cpu_ms_per_op()
    assert per_op["gateway"] == pytest.approx(0.1 / 3.5 * 1e3)
    doc = result.to_json()
    assert doc["ops_per_min"] == 105.0 and doc["connections_seen_by_gateway"] == 1
    json.dumps(doc)  # serialisable as it is


_NODE_LOG = (
    "2026-11-25 16:24:20,039 INFO evault.node: node-1 127.0.0.1:58200 GET /v1/objects/ab 200 "
    "in=0 out=1027 0.002s\n"
    "2026-11-25 16:24:20,050 INFO evault.node: node-1 127.0.0.1:58200 GET /v1/objects/ab/slice "
    "200 in=0 out=374 0.003s\n"
    "2026-11-25 16:24:20,051 INFO evault.node: node-2 127.0.0.1:58200 GET /v1/objects/ab 200 "
    "in=0 out=1027 0.001s\n"
    "2026-11-25 16:24:20,063 INFO evault.node: node-1 127.0.0.1:58206 PUT /v1/objects/cd 409 "
    "conflict in=10 out=80 0.010s\n"
    "2026-11-25 16:24:20,064 INFO uvicorn.error: Shutting down\n"
)


def test_parse_node_log_and_count_gateway_connections() -> None:
    lines = parse_node_log(_NODE_LOG)
    assert [(n.node, n.peer, n.method, n.status) for n in lines] == [
        (1, "127.0.0.1:58200", "GET", 200),
        (1, "127.0.0.1:58200", "GET", 200),
        (2, "127.0.0.1:58200", "GET", 200),
        (1, "127.0.0.1:58206", "PUT", 409),
    ]
    assert lines[1].path == "/v1/objects/ab/slice" and lines[3].seconds == 0.010
    key = PointKey("default", "retrieve", KIB, 1)
    result = make_point_result(key, Outcome((0.01,), 1), 1.0, _cpu(), None, lines)
    # Same port on two nodes is two connections (one per node); a new port is a new one.
    assert (result.node_requests, result.node_connections) == (4, 3)
    assert "4.0 requests per operation over 3 gateway connections" in bench._node_traffic(result)


def test_point_with_nothing_completed_has_no_times_and_no_cpu_per_op() -> None:
    key = PointKey("default", "deposit", 10 * MIB, 16)
    result = make_point_result(key, Outcome(), 1.0, _cpu(), None)
    assert result.latency is None and result.gateway_latency is None
    assert result.connections is None
    assert result.cpu_ms_per_op() == {"gateway": None, "nodes": None, "clients": None}


# --- summary and tables ------------------------------------------------------------------------


def _result(vault: str, op: str, size: int, c: int, per_min: float, p50_s: float) -> PointResult:
    ops = per_min / 60.0
    outcome = Outcome(
        latencies_s=(p50_s * 0.5, p50_s, p50_s * 1.5),
        completed=int(ops),
        partial_ops=ops - int(ops),
        bytes_moved=int(ops * size),
    )
    return make_point_result(PointKey(vault, op, size, c), outcome, 1.0, _cpu(), None)  # type: ignore[arg-type]


def _fake_results() -> list[PointResult]:
    out = []
    for vault, cs in (("default", (1, 4, 16)), ("paper", (1, 4))):
        for op in ("retrieve", "deposit"):
            for size in (KIB, 10 * KIB, 10 * MIB):
                for c in cs:
                    slow = 1 + size / (16 * KIB)
                    per_min = (20_000.0 if op == "retrieve" else 900.0) * c / slow
                    out.append(_result(vault, op, size, c, per_min, 0.004 * slow))
    return out


def test_summary_has_the_issue_maps_keyed_by_size_in_bytes() -> None:
    doc = summary(_fake_results(), {"key_bits": 3072})
    assert doc["bench"] == "vault" and doc["key_bits"] == 3072
    assert set(doc["retrievals_per_min"]) == {"1024", "10240", "10485760"}
    # C=4 figures for the rates, one-client p50 for the time.
    assert doc["retrievals_per_min"]["10240"] == pytest.approx(80_000 / (1 + 10 / 16), abs=0.1)
    assert doc["deposits_per_min"]["1024"] == pytest.approx(3600 / (1 + 1 / 16), abs=0.1)
    assert doc["retrieval_ms_p50"]["1024"] == pytest.approx(4.0 * (1 + 1 / 16), abs=0.01)
    targets = doc["targets"]
    assert targets["retrievals_10KiB_C4_per_min"]["met"] is True
    assert targets["retrieval_1KiB_p50_ms"]["met"] is True
    # 10 MiB at C=16: 320000/641 per minute ~ 8.3/s x 10.5 MB ~ 87 MB/s: below 280.
    assert targets["retrieval_10MiB_MB_per_s"]["met"] is False
    assert targets["retrieval_10MiB_MB_per_s"]["concurrency"] == 16
    assert doc["paper_setting"]["retrievals_per_min"]["1024"] is not None
    assert doc["errors"] == 0
    # The last line of --json output: one object, parseable.
    assert json.loads(json.dumps(doc)) == doc


def test_summary_marks_unmeasured_targets_as_none() -> None:
    only = [_result("default", "deposit", KIB, 4, 600.0, 0.1)]
    doc = summary(only, {})
    assert doc["targets"]["retrievals_10KiB_C4_per_min"]["met"] is None
    assert doc["retrievals_per_min"] == {}
    assert doc["deposits_per_min"] == {"1024": 600.0}


def test_markdown_tables_have_a_row_per_size_and_a_column_per_c() -> None:
    plan = plan_bench(quick=False)
    text = markdown_tables(_fake_results(), plan.settings)
    assert "#### Retrievals, default (n=5, m=3, k=4)" in text
    assert "#### Deposits, paper (n=3, m=2, k=3)" in text
    header = next(line for line in text.splitlines() if line.startswith("| size"))
    assert "/min C=1" in header and "/min C=16" in header and "p99 ms" in header
    rows = [line for line in text.splitlines() if line.startswith("| 10 MiB")]
    assert len(rows) == 4  # 2 settings x 2 operations
    # Every row has as many cells as its header.
    for block in text.split("####")[1:]:
        table = [line for line in block.splitlines() if line.startswith("|")]
        widths = {line.count("|") for line in table}
        assert len(widths) == 1


def test_report_warns_when_other_processes_took_cpu() -> None:
    quiet = _fake_results()
    plan = plan_bench(quick=False)
    meta = {"key_bits": 3072}
    assert "Warning" not in bench.markdown_report(quiet, plan.settings, meta, {}, [])
    busy = [
        make_point_result(r.key, Outcome((0.01,), 1), 1.0, _cpu(other_s=0.5), None) for r in quiet
    ]
    assert bench.other_cores(busy) == pytest.approx(0.5)
    assert "0.50 of the machine's cores" in bench.markdown_report(busy, plan.settings, meta, {}, [])
    assert summary(busy, meta)["other_tenant_cores"] == 0.5


def test_contention_is_other_cores_per_window_and_the_plan_bounds_retries() -> None:
    key = PointKey("default", "retrieve", KIB, 1)
    busy = make_point_result(key, Outcome(), 2.0, _cpu(wall_s=2.0, other_s=1.0), None)
    assert bench.contention(busy) == pytest.approx(0.5)
    assert bench.contention(busy) > bench.CONTENDED_POINT_CORES
    full, quick = plan_bench(quick=False), plan_bench(quick=True)
    assert (full.retries, quick.retries) == (2, 1)
    # A quiet full run takes ~5.5 min and a quick one ~50 s: what a busy neighbour can add
    # (the budget, plus one point's overrun) keeps the issue's 10 and 2 minutes.
    assert full.retry_budget_s <= 120 and quick.retry_budget_s <= 20


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _measurer(others: list[float], clock: _Clock, point_s: float) -> Callable[[], PointResult]:
    """Each call takes ``point_s`` on ``clock`` and returns a point during which other
    processes took the next of ``others`` cores."""
    key = PointKey("default", "retrieve", KIB, 1)
    left = iter(others)

    def measure() -> PointResult:
        clock.now += point_s
        busy = next(left)
        return make_point_result(key, Outcome(), 2.0, _cpu(wall_s=2.0, other_s=2.0 * busy), None)

    return measure


def test_a_quiet_point_is_measured_once() -> None:
    clock, budget = _Clock(), bench.RetryBudget(100.0)
    calls: list[float] = []
    result = bench.measure_point(
        _measurer([0.1], clock, 4.0), retries=2, budget=budget, on_retry=calls.append, clock=clock
    )
    assert bench.contention(result) == pytest.approx(0.1)
    assert calls == [] and budget.left_s == 100.0


def test_a_contended_point_keeps_the_least_disturbed_attempt_and_pays_from_the_budget() -> None:
    clock, budget = _Clock(), bench.RetryBudget(100.0)
    calls: list[float] = []
    result = bench.measure_point(
        _measurer([0.9, 0.3, 0.6], clock, 4.0),
        retries=2,
        budget=budget,
        on_retry=calls.append,
        clock=clock,
    )
    assert bench.contention(result) == pytest.approx(0.3)
    # Each retry is announced with the contention of the best attempt so far.
    assert calls == pytest.approx([0.9, 0.3])
    assert budget.left_s == pytest.approx(92.0)  # two second measurements of 4 s


def test_the_budget_bounds_what_retries_add_to_a_run() -> None:
    clock, budget = _Clock(), bench.RetryBudget(10.0)
    point_s, points = 4.0, 20
    for _ in range(points):  # a neighbour busy all along
        bench.measure_point(
            _measurer([0.9] * 3, clock, point_s), retries=2, budget=budget, clock=clock
        )
    # 20 first measurements, then retries until the budget is spent (the last may overrun it
    # by one point), then none.
    assert clock.now == pytest.approx(points * point_s + 12.0)
    assert budget.left_s <= 0


def test_size_labels() -> None:
    assert [size_label(s) for s in (1024, 5120, 1048576, 10485760, 1000)] == [
        "1 KiB",
        "5 KiB",
        "1 MiB",
        "10 MiB",
        "1000 B",
    ]


def test_where_time_goes_names_the_limit() -> None:
    results = _fake_results()
    sentences = bench.where_time_goes(results)
    assert any(s.startswith("Retrieve 10 KiB at C=4") for s in sentences)
    assert all("limit:" in s for s in sentences)


# --- profiles ----------------------------------------------------------------------------------

_COLLAPSED = (
    "<module> (evault/__main__.py:5);run_gateway (evault/gateway/main.py:153);"
    "retrieve (evault/gateway/service.py:10);do_handshake (ssl.py:979) 30\n"
    "<module> (evault/__main__.py:5);run_gateway (evault/gateway/main.py:153);"
    "retrieve (evault/gateway/service.py:10);sha256 (hashlib.py:1) 10\n"
    "<module> (evault/__main__.py:5);run_gateway (evault/gateway/main.py:153);"
    "resolve_token (evault/catalog/catalog.py:5) 60\n"
    "garbage line without a count\n"
)


def test_hotspots_by_self_and_inclusive_time() -> None:
    spots = hotspots(_COLLAPSED, top=5)
    assert spots.samples == 100
    assert spots.self_time[0].frame == "resolve_token (evault/catalog/catalog.py:5)"
    assert spots.self_time[0].share == pytest.approx(0.6)
    inclusive = {h.frame: h.share for h in spots.inclusive}
    assert inclusive["retrieve (evault/gateway/service.py:10)"] == pytest.approx(0.4)
    # The process entry frames are in every sample and tell nothing: left out.
    assert not any(f.startswith(("<module>", "run_gateway")) for f in inclusive)
    assert hotspots("").samples == 0
    with pytest.raises(ValueError, match="top"):
        hotspots(_COLLAPSED, top=0)


def test_machine_speed_is_measured_and_reported() -> None:
    speed = bench.machine_speed(repeats=1)
    assert set(speed) == {"python_loop_ns", "sha256_MB_per_s", "modexp3072_ms"}
    # Plausible for any machine this runs on: a loop iteration takes nanoseconds, not micro-
    # seconds; SHA-256 runs at tens of MB/s at least; a 3072-bit modexp takes milliseconds.
    assert 1 < speed["python_loop_ns"] < 1000
    assert 20 < speed["sha256_MB_per_s"] < 20_000
    assert 0.1 < speed["modexp3072_ms"] < 500
    meta = {"key_bits": 3072, "machine_speed": speed}
    report = bench.markdown_report(_fake_results(), plan_bench(quick=True).settings, meta, {}, [])
    assert f"SHA-256 {speed['sha256_MB_per_s']} MB/s" in report
    assert summary(_fake_results(), meta)["machine_speed"] == speed
    assert "This machine" not in bench.markdown_report(_fake_results(), [], {}, {}, [])


def test_py_spy_is_found_next_to_the_interpreter_when_not_on_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    venv_bin = tmp_path / "venv" / "bin"
    venv_bin.mkdir(parents=True)
    spy = venv_bin / "py-spy"
    spy.write_text("#!/bin/sh\n")
    monkeypatch.delenv("EVAULT_PY_SPY", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(bench.sys, "executable", str(venv_bin / "python"))
    assert bench._find_py_spy() is None  # there, but not executable
    spy.chmod(0o755)
    assert bench._find_py_spy() == str(spy)
    # An explicit EVAULT_PY_SPY wins, and one that cannot run means no profile.
    monkeypatch.setenv("EVAULT_PY_SPY", str(tmp_path / "missing"))
    assert bench._find_py_spy() is None


def test_cpu_seconds_of_the_gateway_count_its_workers() -> None:
    """The gateway's CPU is its supervisor's and its workers' (children); a node's is its own."""
    import subprocess
    import sys

    import psutil

    from evault.bench.vault import _cpu_seconds

    me = psutil.Process()
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.4: pass\n"
    child = subprocess.Popen([sys.executable, "-c", burn + "time.sleep(30)"])
    try:
        deadline = time.monotonic() + 30
        while sum(psutil.Process(child.pid).cpu_times()[:2]) < 0.35:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        alone = _cpu_seconds(me)
        with_children = _cpu_seconds(me, with_children=True)
        # the child burnt >= 0.35 s, read in clock ticks (0.01 s) and summed as floats
        assert with_children - alone >= 0.3
    finally:
        child.kill()
        child.wait(timeout=10)
