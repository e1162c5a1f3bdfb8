"""Logging set-up for the entry points: JSON lines in production, plain text in a terminal.

``CALLSCRIBE_LOG_FORMAT`` = ``json`` | ``text`` (default: text on a terminal, else json);
``CALLSCRIBE_LOG_LEVEL`` (default ``INFO``). Library code only calls ``logging.getLogger``.
The Kafka libraries' records that repeat (a retry loop while the broker is away) are logged once
a minute with a count (:class:`RepeatFilter`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and exception text."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


#: Loggers of the Kafka libraries: while a broker is unreachable they log every retry.
RETRYING_LIBRARIES = ("aiokafka", "faust", "mode")


class RepeatFilter(logging.Filter):
    """Lets the first of a run of like records through, then one per ``window_s`` saying how
    many like it were held back (like: same logger, level and message template; the
    arguments, such as the error text, may differ). Applies to ``loggers`` (and their
    children) only; every other record passes."""

    def __init__(self, loggers: tuple[str, ...] = RETRYING_LIBRARIES, window_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self._loggers = loggers
        self._window_s = window_s
        self._clock = clock
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not any(record.name == n or record.name.startswith(n + ".")
                   for n in self._loggers):
            return True
        key = (record.name, record.levelno, str(record.msg))
        now = self._clock()
        since, held = self._seen.get(key, (0.0, -1))
        if held >= 0 and now - since < self._window_s:
            self._seen[key] = (since, held + 1)
            return False
        if held > 0:
            record.msg = f"{record.msg} (and {held} more like it in the last {now - since:.0f} s)"
        self._seen[key] = (now, 0)
        if len(self._seen) > 1000:
            self._seen.clear()
        return True


def configure(worker: str) -> None:
    """Configure the root logger once for the process running ``worker``."""
    fmt = os.environ.get("CALLSCRIBE_LOG_FORMAT") or ("text" if sys.stderr.isatty() else "json")
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s {worker:<10} %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("CALLSCRIBE_LOG_LEVEL", "INFO").upper())
    for noisy in ("aiokafka", "faust", "mode", "aiohttp.access", "websockets.server",
                  "faster_whisper"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
