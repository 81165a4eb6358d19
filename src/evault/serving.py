"""What the long-running server processes (``evault node``, ``evault gateway``) share before
they serve: their log format, and the interpreter settings that suit a server.

* Log records skip what the format never shows: the calling frame (file, line, function),
  thread, process and multiprocessing names.  The logging HOWTO ("Optimization") names these
  switches; each record is then cheaper to make, and a node writes one per request.  The
  date and time text is made once per second (:class:`HouseFormatter`), not per record.
* The cyclic garbage collector: everything alive when serving starts (modules, the app, the
  catalog, keys) is moved out of its sight (``gc.freeze``), and the youngest generation is
  collected every 10,000 net allocations instead of every 700.  Serving a request allocates
  thousands of short-lived objects, nearly all freed by reference counting; with the default
  threshold the collector still ran several times per small request and took about 4 % of
  the gateway's CPU.  Memory stays bounded: the collector still runs, only less often.
* glibc's malloc keeps freed memory for reuse (:func:`evault.memory.keep_freed_memory`)
  instead of having every big buffer faulted in afresh.
"""

from __future__ import annotations

import gc
import logging
import sys
import time
from typing import Final

from evault.memory import keep_freed_memory

LOG_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"

#: Net allocations of container objects between two collections of the youngest generation.
GC_YOUNG_THRESHOLD: Final = 10_000


class HouseFormatter(logging.Formatter):
    """``LOG_FORMAT``, with the text of the date and time (to the second) made once per
    second: the same output as :class:`logging.Formatter`, for half its cost per record."""

    def __init__(self) -> None:
        super().__init__(LOG_FORMAT)
        self._second_text: tuple[int, str] = (-1, "")  # replaced whole: safe across threads

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        second = int(record.created)
        cached_second, text = self._second_text
        if second != cached_second:
            text = time.strftime(self.default_time_format, self.converter(record.created))
            self._second_text = (second, text)
        msec_format = self.default_msec_format
        return text if msec_format is None else msec_format % (text, record.msecs)


def configure_logging() -> None:
    """INFO and up to stderr in the house format, unless the root logger is set up already."""
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(HouseFormatter())
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    # LOG_FORMAT shows none of these: do not gather them for every record.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # the HOWTO's switch for findCaller


def settle_heap() -> None:
    """Call once, when start-up is done and serving begins (module text)."""
    keep_freed_memory()
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)
