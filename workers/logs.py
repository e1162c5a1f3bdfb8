"""Logging set-up for the entry points: JSON lines in production, plain text in a terminal.

``CALLSCRIBE_LOG_FORMAT`` = ``json`` | ``text`` (default: text on a terminal, else json);
``CALLSCRIBE_LOG_LEVEL`` (default ``INFO``). Library code only calls ``logging.getLogger``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
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


def configure(worker: str) -> None:
    """Configure the root logger once for the process running ``worker``."""
    fmt = os.environ.get("CALLSCRIBE_LOG_FORMAT") or ("text" if sys.stderr.isatty() else "json")
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(
            f"%(asctime)s {worker:<10} %(levelname)-7s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get("CALLSCRIBE_LOG_LEVEL", "INFO").upper())
    for noisy in ("aiokafka", "faust", "mode", "aiohttp.access", "websockets.server",
                  "faster_whisper"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
