"""Genesys Cloud AudioHook (``/audiohook``): ``X-API-KEY`` and, with a client secret, the
HTTP message signature, checked at the handshake (401); listen-only (AudioHook carries no
audio back), but with ``CALLSCRIBE_AUDIOHOOK_TRANSCRIPTS`` each final transcript goes back to
Genesys as an ``event`` (:mod:`workers.ingest.audiohook_events`); ``disconnect`` ends the
session for both end-stream and hang-up (there is no REST plan: the Genesys conversation itself
is not ours to end)."""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from workers.ingest.dialects import audiohook
from workers.ingest.dialects.events import CallStart, Codec, Reply
from workers.ingest.errors import ControlUnsupported
from workers.ingest.providers.base import (
    Handshake,
    PlayPrompt,
    Provider,
    ProviderOptions,
    Refuse,
    Verdict,
)
from workers.ingest.providers.registry import register


class AudioHookPlayer:
    """:class:`~workers.ingest.providers.base.Player` of an AudioHook session: it renders
    ``disconnect`` through the codec (one ``seq`` counter for everything we send)."""

    def __init__(self, codec: audiohook.AudioHookCodec) -> None:
        self.codec = codec

    def play_frames(self, command: PlayPrompt, start: CallStart) -> list[str | bytes]:
        raise ControlUnsupported("AudioHook streams take no audio back (monitor only)")

    def stop_frames(self) -> list[str | bytes]:
        raise ControlUnsupported("AudioHook streams take no audio back (monitor only)")

    def end_frames(self) -> list[str | bytes] | None:
        return [self.codec.disconnect("completed")]

    def hangup_frames(self) -> list[str | bytes] | None:
        return [self.codec.disconnect("completed", "callscribe was asked to end the call")]

    def transcript_frames(self, record: Mapping[str, Any]) -> list[str | bytes]:
        """A final transcript record as an ``event`` (nothing for any other record, or once
        the session takes no more messages); see :mod:`workers.ingest.audiohook_events`."""
        frame = self.codec.transcript_event(record)
        return [frame] if frame is not None else []

    def on_reply(self, event: Reply) -> str:
        return repr(event)


def _player(start: CallStart, codec: Codec) -> AudioHookPlayer | None:
    return AudioHookPlayer(codec) if isinstance(codec, audiohook.AudioHookCodec) else None


def check(handshake: Handshake, options: ProviderOptions) -> Verdict:
    """401 unless ``X-API-KEY`` is the configured key and, when a client secret is set, the
    message signature verifies (Genesys: a refused upgrade is an unauthorized integration)."""
    key = options.audiohook_api_key
    given = handshake.headers.get(audiohook.API_KEY_HEADER) or ""
    if not key or not hmac.compare_digest(given.encode(), key.encode()):
        return Refuse(HTTPStatus.UNAUTHORIZED, b"bad or missing X-API-KEY\n",
                      log="bad or missing X-API-KEY")
    if options.audiohook_client_secret:
        problem = audiohook.signature_problem(
            options.audiohook_client_secret, key, path=handshake.path,
            headers=handshake.headers, now=handshake.now)
        if problem:
            return Refuse(HTTPStatus.UNAUTHORIZED, b"signature verification failed\n",
                          log=f"message signature: {problem}")
    return None


PROVIDER = register(Provider(
    name=audiohook.PROVIDER, paths=("/audiohook",),
    codec=lambda options: audiohook.AudioHookCodec(), check=check,
    configured=lambda options: bool(options.audiohook_api_key),
    anonymous=lambda: Refuse(HTTPStatus.UNAUTHORIZED, b"X-API-KEY required\n", "anonymous"),
    credential_settings=("CALLSCRIBE_AUDIOHOOK_API_KEY",), anonymous_allowed=False,
    player=_player))
