"""evault.serving: the process settings the node and the gateway take before serving (run in
a fresh interpreter, so that this test process keeps its own)."""

from __future__ import annotations

import json
import subprocess
import sys

from evault.serving import GC_YOUNG_THRESHOLD, LOG_FORMAT

PROBE = """
import gc, io, json, logging
from evault.serving import configure_logging, settle_heap
before = gc.get_threshold()
configure_logging()
stream = io.StringIO()
logging.getLogger().handlers[0].setStream(stream)
logging.getLogger("evault.probe").info("hello %d", 7)
settle_heap()
print(json.dumps({
    "before": before,
    "after": gc.get_threshold(),
    "frozen": gc.get_freeze_count(),
    "line": stream.getvalue(),
    "flags": [logging.logThreads, logging.logProcesses, logging.logMultiprocessing,
              logging._srcfile],
    "level": logging.getLogger().level,
}))
"""


def test_server_processes_log_in_the_house_format_and_collect_less_often() -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    probe = json.loads(done.stdout)
    assert LOG_FORMAT.endswith("%(message)s")
    assert probe["line"].endswith(" INFO evault.probe: hello 7\n")
    assert probe["flags"] == [False, False, False, None]
    assert probe["level"] == 20
    # The young generation is collected less often; the older ones as before.
    assert probe["before"][0] < GC_YOUNG_THRESHOLD
    assert probe["after"] == [GC_YOUNG_THRESHOLD, *probe["before"][1:]]
    # Everything alive at start-up (modules and all) is out of the collector's sight.
    assert probe["frozen"] > 1_000


def test_house_formatter_writes_what_the_standard_formatter_writes() -> None:
    import logging

    from evault.serving import HouseFormatter

    house = HouseFormatter()
    stock = logging.Formatter(LOG_FORMAT)
    base = 1_790_000_000.0
    # Within one second, across seconds, and back in time (a clock step).
    for created in (base, base + 0.25, base + 0.999, base + 1.0, base + 61.5, base - 3600.75, base):
        record = logging.LogRecord("evault.node", logging.INFO, __file__, 1, "x %d", (5,), None)
        record.created = created
        record.msecs = (created - int(created)) * 1000
        assert house.format(record) == stock.format(record)
    assert house.formatTime(record, "%Y") == stock.formatTime(record, "%Y")
