"""Exceptions raised by callscribe.

Tree::

    CallscribeError
    ├── ProtocolError            a peer sent something the protocol does not allow (fatal for that
    │   │                        connection, never for the worker); carries a WebSocket close code
    │   └── UnsupportedAudio     a valid frame asking for audio we do not take (rate, encoding)
    ├── RecordError              a Kafka record that does not decode (skipped and counted)
    ├── AuthError                credentials or tokens that do not check out
    ├── BrokerUnavailable        the Kafka cluster cannot be reached (retriable)
    └── UsageError               a command that cannot work as typed (the CLI prints its
                                 message on one line and exits with ``exit_code``)

``retriable`` says whether trying the same thing again later can succeed.
"""

from __future__ import annotations


class CallscribeError(Exception):
    """Root of every error callscribe raises on purpose."""

    retriable = False


class ProtocolError(CallscribeError):
    """A peer broke its wire protocol; the connection is closed with ``close_code``."""

    #: RFC 6455 1008 (policy violation) unless a subclass says otherwise.
    close_code = 1008

    def __init__(self, message: str, *, close_code: int | None = None) -> None:
        super().__init__(message)
        if close_code is not None:
            self.close_code = close_code


class UnsupportedAudio(ProtocolError):
    """Audio in a rate, encoding or layout that we do not accept (close 1003)."""

    close_code = 1003


class RecordError(CallscribeError):
    """A Kafka record could not be decoded into a domain record."""


class AuthError(CallscribeError):
    """Credentials, API keys or conversation tokens that are missing or wrong."""


class BrokerUnavailable(CallscribeError):
    """Kafka could not be reached in time; try again."""

    retriable = True


class UsageError(CallscribeError):
    """A ``callscribe`` command that cannot work as the user typed it: a file that is not a
    WAV, a server that refused, a missing secret. The message says what was wrong and what to
    do; ``exit_code`` is 2 for missing configuration, 1 otherwise."""

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
