"""Secrets out of the bridge's logs: conversation tokens and listen-URL tokens are blanked in
every record of the loggers that can see them (the access log prints request lines, and a
request line carries them)."""

from __future__ import annotations

import logging
import re

#: The loggers whose records may quote a request line or URL.
LOGGERS = ("aiohttp.access", "aiohttp.server", "aiohttp.web", "workers.bridge.server",
           "workers.bridge.connection", "workers.bridge.rest", "workers.bridge.feed",
           "workers.bridge.listen_server", "workers.bridge.sockets")


class RedactSecrets(logging.Filter):
    """Blanks conversation tokens and listen-URL tokens in log records."""

    _PATTERNS = (re.compile(r"(conversationToken=)[^&\s\"']+"),
                 re.compile(r"(/v1/listen/)[^/?\s\"']+"))

    @classmethod
    def redact(cls, text: str) -> str:
        for pattern in cls._PATTERNS:
            text = pattern.sub(r"\1<redacted>", text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            record.msg = record.getMessage()
            record.args = None
        if isinstance(record.msg, str):
            record.msg = self.redact(record.msg)
        for key, value in list(vars(record).items()):
            if isinstance(value, str) and key not in ("msg", "name", "levelname", "pathname"):
                setattr(record, key, self.redact(value))
        return True


def install_redaction(loggers: tuple[str, ...] = LOGGERS) -> None:
    """Add a :class:`RedactSecrets` to each of ``loggers`` (once)."""
    for name in loggers:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())


__all__ = ["LOGGERS", "RedactSecrets", "install_redaction"]
