"""Conversation tokens for liveCalls: short-lived HS256 JWTs naming one call.

A token carries ``sub`` (the call id), ``aud`` (:data:`AUDIENCE` for liveCalls conversation
tokens, :data:`LISTEN_AUDIENCE` for live-listen URLs: neither verifies as the other), ``iat``,
``exp`` and a random ``jti``. Errors (both :class:`~workers.errors.AuthError`)::

    AuthError
    ├── TokenMalformed   not a JWT at all (wrong shape, bad base64 or JSON)     → HTTP 400
    └── TokenRejected    a JWT we cannot accept: bad signature, other key,
                         expired, wrong audience or algorithm, missing claims   → HTTP 401
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

import jwt

from workers.errors import AuthError
from workers.records import iso_from_epoch_ms

#: ``aud`` claim of every conversation token; a JWT minted for another purpose never verifies.
AUDIENCE = "callscribe:liveCalls"
#: ``aud`` claim of the token in a live-listen URL (``/v1/listen/<token>``).
LISTEN_AUDIENCE = "callscribe:listen"
#: RFC 7518 §3.2: an HS256 key MUST be at least as long as the hash output (32 bytes).
MIN_SECRET_BYTES = 32
#: Tokens longer than this are refused before any parsing.
MAX_TOKEN_CHARS = 4096
_ALGORITHM = "HS256"
_CLAIMS = ("sub", "aud", "iat", "exp", "jti")


class TokenMalformed(AuthError):
    """The string is not a JWT (wrong number of segments, bad base64url or JSON)."""


class TokenRejected(AuthError):
    """A well-formed JWT that does not verify: signature, audience, expiry or claims."""


class TokenIssuer:
    """Mints and verifies conversation tokens with one shared secret.

    ``clock`` returns seconds since the epoch; inject one in tests. The secret never appears
    in ``repr``, ``str`` or any error message.
    """

    __slots__ = ("_clock", "_secret", "ttl_s")

    def __init__(self, secret: str, ttl_s: int = 3600, *,
                 clock: Callable[[], float] = time.time) -> None:
        size = len(secret.encode())
        if size < MIN_SECRET_BYTES:
            raise ValueError(
                f"token secret is {size} bytes; expected at least {MIN_SECRET_BYTES} "
                "(generate one with `openssl rand -hex 32`)"
            )
        if ttl_s <= 0:
            raise ValueError(f"token ttl_s is {ttl_s}; expected a positive number of seconds")
        self._secret = secret
        self._clock = clock
        self.ttl_s = ttl_s

    def __repr__(self) -> str:
        return f"TokenIssuer(ttl_s={self.ttl_s})"

    def mint(self, call_id: str, *, audience: str = AUDIENCE) -> tuple[str, str]:
        """A token for ``call_id`` and its expiry as ISO 8601 UTC (``...Z``)."""
        if not call_id:
            raise ValueError("cannot mint a conversation token for an empty call id")
        now = int(self._clock())
        expires = now + self.ttl_s
        claims = {"sub": call_id, "aud": audience, "iat": now, "exp": expires,
                  "jti": uuid.uuid4().hex}
        token = jwt.encode(claims, self._secret, algorithm=_ALGORITHM)
        return token, iso_from_epoch_ms(expires * 1000)

    def verify(self, token: str, *, audience: str = AUDIENCE) -> str:
        """The call id a valid token names; raise :class:`TokenMalformed` or
        :class:`TokenRejected` otherwise."""
        if (not token or len(token) > MAX_TOKEN_CHARS or not token.isascii()
                or token.count(".") != 2):
            raise TokenMalformed("conversation token is not a JWT (expected three "
                                 "base64url segments separated by '.')")
        claims = self._decode(token, audience)
        call_id = claims.get("sub")
        if not isinstance(call_id, str) or not call_id:
            raise TokenRejected("conversation token names no call (claim 'sub' is empty)")
        expires = claims.get("exp")
        if not isinstance(expires, int) or isinstance(expires, bool):
            raise TokenRejected("conversation token has a non-integer 'exp' claim")
        if self._clock() >= expires:
            raise TokenRejected("conversation token has expired; ask for a new one")
        return call_id

    def _decode(self, token: str, audience: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token, self._secret, algorithms=[_ALGORITHM], audience=audience,
                # exp is checked against the injected clock by the caller.
                options={"require": list(_CLAIMS), "verify_exp": False,
                         "verify_iat": False, "verify_nbf": False},
            )
        except jwt.InvalidSignatureError:
            raise TokenRejected("conversation token signature does not verify") from None
        except jwt.InvalidAudienceError:
            raise TokenRejected(f"token is not for audience {audience!r}") from None
        except jwt.InvalidAlgorithmError:
            raise TokenRejected(f"conversation token is not signed with {_ALGORITHM}") from None
        except jwt.DecodeError:
            raise TokenMalformed("conversation token is not a JWT (bad base64url or "
                                 "JSON in its segments)") from None
        except jwt.InvalidTokenError as exc:
            raise TokenRejected(f"conversation token is not acceptable: {exc}") from None
        return claims


__all__ = ["AUDIENCE", "LISTEN_AUDIENCE", "MIN_SECRET_BYTES", "TokenIssuer", "TokenMalformed",
           "TokenRejected"]
