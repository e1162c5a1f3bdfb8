"""Exceptions raised by callscribe.

Tree::

    CallscribeError
    ├── ProtocolError            a peer sent something the protocol does not allow (fatal for that
    │   │                        connection, never for the worker); carries a WebSocket close code
    │   └── UnsupportedAudio     a valid frame asking for audio we do not take (rate, encoding)
    ├── RecordError              a Kafka record that does not decode (skipped and counted)
    ├── AuthError                credentials or tokens that do not check out
    ├── BrokerUnavailable        the Kafka cluster cannot be reached (retriable)
    ├── TopicNotFound            a topic a worker reads has no partitions (not created)
    ├── OutboxOverflow           a client's bounded outbox overflowed: the client is closed
    └── UsageError               a command that cannot work as typed (the CLI prints its
                                 message on one line and exits with ``exit_code``)

Below these, each package has its own (drawn in its errors module or protocol module):
:mod:`workers.ingest.errors` (``ControlError``: call control, subscriptions),
:mod:`workers.assist.errors` (``AssistConfigError``), :mod:`workers.bridge.livecalls`
(``ClientMessageError``, ``HandshakeRejected``), :mod:`workers.bridge.listen_protocol`
(``ListenRefused``), :mod:`workers.bridge.tokens` (``TokenMalformed``,
``TokenRejected``), :mod:`workers.kafka` (``KafkaAuthFailed``),
:mod:`workers.kafka_security` (``KafkaSecurityError``) and :mod:`workers.vocabulary`
(``VocabularyError``: a custom vocabulary file that cannot be used).

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


class TopicNotFound(CallscribeError):
    """A topic the worker reads has no partitions: it was not created (``callscribe up``
    and the Strimzi ``KafkaTopic`` resources in ``deploy/`` create them)."""

    def __init__(self, topic: str) -> None:
        super().__init__(f"topic {topic} has no partitions; create the topics first")
        self.topic = topic


class OutboxOverflow(CallscribeError):
    """Raised by a client's bounded outbox once it has overflowed; the client is closed
    (1013) rather than sent a stream with holes in it."""


class UsageError(CallscribeError):
    """A ``callscribe`` command that cannot work as the user typed it: a file that is not a
    WAV, a server that refused, a missing secret. The message says what was wrong and what to
    do; ``exit_code`` is 2 for missing configuration, 1 otherwise."""

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
