"""Errors of the ingest side's call control and subscriptions (below :mod:`workers.errors`).

Tree::

    CallscribeError                      (workers.errors)
    ├── ProtocolError / UnsupportedAudio  a provider broke its wire protocol (close code)
    └── ControlError                     a call-control command could not be carried out
        ├── ControlUnsupported           this provider/stream cannot do it (e.g. any command on a
        │                                unidirectional Twilio stream, playback on Bland)
        ├── PlaybackLimit                a provider's playback limit would be passed (jambonz:
        │                                10 queued playAudio, 30 marks in flight)
        ├── ControlNotConfigured         a URL, credential or transfer target is not set
        └── ProviderRefused              the provider's REST API said no (``retriable`` for 429
            │                            and 5xx, or when it could not be reached)
            └── BlandListenRefused       Bland refused our live-listen request, by error code
                                         (not :class:`workers.bridge.listen_protocol.ListenRefused`:
                                         the bridge refusing a client's listen request)

``retriable`` says whether the same command may succeed later; the executor reports every
failure as ``call.control_failed`` with the description and never retries on its own.
"""

from __future__ import annotations

from workers.errors import CallscribeError


class ControlError(CallscribeError):
    """A call-control command could not be carried out."""


class ControlUnsupported(ControlError):
    """The provider (or this stream's mode) has no way to do what was asked."""


class PlaybackLimit(ControlError):
    """The provider would silently drop the command: too many queued plays or marks."""

    retriable = True


class ControlNotConfigured(ControlError):
    """A setting the command needs (API URL, credentials, transfer target) is not set."""


class ProviderRefused(ControlError):
    """The provider's REST API answered with an error (or could not be reached)."""

    def __init__(self, message: str, *, status: int | None = None,
                 retriable: bool | None = None) -> None:
        super().__init__(message)
        self.status = status
        if retriable is not None:
            self.retriable = retriable
        elif status is not None:
            self.retriable = status == 429 or status >= 500


class BlandListenRefused(ProviderRefused):
    """Bland's ``POST /v1/calls/{id}/listen`` answered with an error code.

    ``INVALID_ORG_PREFERENCES`` and ``MISSING_CALL_ID`` are fatal; ``CALL_NOT_FOUND`` (the call
    is not answered yet) and ``INTERNAL_SERVER_ERROR`` are retriable for a bounded time;
    ``INVALID_CALL_STATUS`` (the call is over) ends the subscription.
    """

    RETRIABLE_CODES = frozenset({"CALL_NOT_FOUND", "INTERNAL_SERVER_ERROR"})

    def __init__(self, code: str, message: str, *, status: int | None = None) -> None:
        super().__init__(f"{code}: {message}" if message else code, status=status,
                         retriable=code in self.RETRIABLE_CODES)
        self.code = code
