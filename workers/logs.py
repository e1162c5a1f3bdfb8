"""Logging set-up for the entry points: JSON lines in production, plain text in a terminal.

``CALLSCRIBE_LOG_FORMAT`` = ``json`` | ``text`` (default: text on a terminal, else json);
``CALLSCRIBE_LOG_LEVEL`` (default ``INFO``). Library code only calls ``logging.getLogger``.
The Kafka libraries' records that repeat (a retry loop while the broker is away) are logged once
a minute with a count (:class:`RepeatFilter`).

**The call a line is about** is a field of its own in JSON (``"callId"``), so that one call's
lines can be found without parsing messages. It comes from, in order:

1. ``extra={"call_id": ...}`` on the logging call;
2. the argument of ``call %s`` in the message template, the convention of every line about a
   call (``log.info("%s call %s: ...", provider, call_id)``);
3. the call bound to the task that logs (:func:`bind_call`, :func:`call_context`), for every
   other line, a library's included: a call's connection handler binds its call once, a
   consumer binds each record's key (records are keyed by call id) while it handles the
   record; tasks started meanwhile inherit it.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

#: The call the current task works for; see :func:`bind_call`.
CALL_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("callscribe_call_id",
                                                                     default=None)
_CALL_IN_TEMPLATE = re.compile(r"\bcall %s")
_PLACEHOLDER = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[a-zA-Z%]")


def bind_call(call_id: str | None) -> contextvars.Token[str | None]:
    """Every line logged from now on by the current task (and by the tasks it starts) is about
    ``call_id``; the token undoes it (``CALL_ID.reset``)."""
    return CALL_ID.set(call_id or None)


@contextlib.contextmanager
def call_context(call_id: str | None) -> Iterator[None]:
    """The lines logged inside the block are about ``call_id``."""
    token = CALL_ID.set(call_id or None)
    try:
        yield
    finally:
        CALL_ID.reset(token)


def call_id_of(record: logging.LogRecord) -> str | None:
    """The call ``record`` is about, if any (see the module docstring for where it comes
    from)."""
    explicit = getattr(record, "call_id", None)
    if explicit:
        return str(explicit)
    return _call_in_template(record) or CALL_ID.get()


def _call_in_template(record: logging.LogRecord) -> str | None:
    """The argument that fills ``call %s`` in the record's message template."""
    if not isinstance(record.msg, str) or not isinstance(record.args, tuple):
        return None
    found = _CALL_IN_TEMPLATE.search(record.msg)
    if found is None:
        return None
    before = [p for p in _PLACEHOLDER.findall(record.msg[:found.start()]) if p != "%%"]
    if len(before) >= len(record.args):
        return None
    value = record.args[len(before)]
    return str(value) if value not in (None, "", "-") else None


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the call it is about
    (``callId``, when it is about one) and exception text."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        call_id = call_id_of(record)
        if call_id is not None:
            entry["callId"] = call_id
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
