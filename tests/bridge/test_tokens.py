"""Conversation tokens: round trip, expiry, tampering, and secrecy of the secret."""

from __future__ import annotations

import base64
import json
import time
from datetime import datetime

import jwt
import pytest

from workers.bridge.tokens import (
    AUDIENCE,
    LISTEN_AUDIENCE,
    TokenIssuer,
    TokenMalformed,
    TokenRejected,
)
from workers.errors import AuthError

SECRET = "s" * 16 + "e" * 16 + "-unit-test-secret"
T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def issuer(clock: Clock | None = None, secret: str = SECRET, ttl_s: int = 60) -> TokenIssuer:
    return TokenIssuer(secret, ttl_s, clock=clock or Clock())


def _b64(data: dict[str, object]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_round_trip_and_expiry_string() -> None:
    token, expires_at = issuer().mint("call-A")
    assert issuer().verify(token) == "call-A"
    assert expires_at == "2026-01-01T00:01:00.000Z"
    assert datetime.fromisoformat(expires_at).timestamp() == T0 + 60


def test_claims() -> None:
    token, _ = issuer().mint("call-A")
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == "call-A"
    assert claims["aud"] == AUDIENCE
    assert (claims["iat"], claims["exp"]) == (int(T0), int(T0) + 60)
    assert len(claims["jti"]) == 32
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert claims["jti"] != jwt.decode(issuer().mint("call-A")[0],
                                       options={"verify_signature": False})["jti"]


def test_default_clock_is_wall_time() -> None:
    tokens = TokenIssuer(SECRET)
    token, expires_at = tokens.mint("call-A")
    assert tokens.verify(token) == "call-A"
    assert abs(datetime.fromisoformat(expires_at).timestamp() - time.time() - 3600) < 5


def test_expiry_with_injected_clock() -> None:
    clock = Clock()
    tokens = issuer(clock)
    token, _ = tokens.mint("call-A")
    clock.now = T0 + 59.9
    assert tokens.verify(token) == "call-A"
    clock.now = T0 + 60
    with pytest.raises(TokenRejected, match="expired"):
        tokens.verify(token)


def test_clock_far_from_wall_time_still_works() -> None:
    clock = Clock(time.time() + 10 * 365 * 86400)
    tokens = issuer(clock)
    assert tokens.verify(tokens.mint("call-A")[0]) == "call-A"


def test_token_for_a_never_verifies_as_b() -> None:
    tokens = issuer()
    token_a, _ = tokens.mint("A")
    assert tokens.verify(token_a) == "A"
    header, _payload, signature = token_a.split(".")
    claims = jwt.decode(token_a, options={"verify_signature": False})
    forged = ".".join([header, _b64({**claims, "sub": "B"}), signature])
    with pytest.raises(TokenRejected, match="signature"):
        tokens.verify(forged)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_tampering_with_any_segment_fails(index: int) -> None:
    tokens = issuer()
    parts = tokens.mint("call-A")[0].split(".")
    segment = parts[index]
    parts[index] = segment[:-2] + ("AA" if segment[-2:] != "AA" else "BB")
    with pytest.raises(AuthError):
        tokens.verify(".".join(parts))


def test_wrong_secret_is_rejected() -> None:
    token, _ = issuer(secret="x" * 32).mint("call-A")
    with pytest.raises(TokenRejected):
        issuer().verify(token)


def test_other_audience_is_rejected() -> None:
    token = jwt.encode({"sub": "call-A", "aud": "something-else", "iat": int(T0),
                        "exp": int(T0) + 60, "jti": "j"}, SECRET, algorithm="HS256")
    with pytest.raises(TokenRejected, match="audience"):
        issuer().verify(token)


def test_missing_claim_is_rejected() -> None:
    token = jwt.encode({"sub": "call-A", "aud": AUDIENCE, "exp": int(T0) + 60}, SECRET,
                       algorithm="HS256")
    with pytest.raises(TokenRejected):
        issuer().verify(token)


def test_empty_subject_is_rejected() -> None:
    token = jwt.encode({"sub": "", "aud": AUDIENCE, "iat": int(T0), "exp": int(T0) + 60,
                        "jti": "j"}, SECRET, algorithm="HS256")
    with pytest.raises(TokenRejected):
        issuer().verify(token)


def test_other_algorithms_are_rejected() -> None:
    claims = {"sub": "call-A", "aud": AUDIENCE, "iat": int(T0), "exp": int(T0) + 60, "jti": "j"}
    unsigned = ".".join([_b64({"alg": "none", "typ": "JWT"}), _b64(claims), ""])
    with pytest.raises(TokenRejected):
        issuer().verify(unsigned)
    hs512 = jwt.encode(claims, SECRET + "x" * 32, algorithm="HS512")
    with pytest.raises(TokenRejected):
        issuer(secret=SECRET + "x" * 32).verify(hs512)


@pytest.mark.parametrize(
    "token",
    ["", "abc", "a.b", "a.b.c.d", "!!!.???.###", "e30.e30", "x" * 5000,
     "ünï.cödé.tokn", "a.b.c"],
)
def test_malformed_tokens(token: str) -> None:
    with pytest.raises(TokenMalformed):
        issuer().verify(token)


def test_errors_are_auth_errors() -> None:
    assert issubclass(TokenMalformed, AuthError)
    assert issubclass(TokenRejected, AuthError)


@pytest.mark.parametrize("secret", ["", "short", "x" * 31, "é" * 15])
def test_short_secret_is_refused(secret: str) -> None:
    with pytest.raises(ValueError, match="bytes") as info:
        TokenIssuer(secret)
    assert secret not in str(info.value) or not secret


def test_bad_ttl_and_empty_call_id() -> None:
    with pytest.raises(ValueError):
        TokenIssuer(SECRET, 0)
    with pytest.raises(ValueError):
        issuer().mint("")


def test_secret_never_shows() -> None:
    tokens = issuer()
    assert SECRET not in repr(tokens)
    assert SECRET not in str(tokens)
    assert "ttl_s=60" in repr(tokens)
    token, _ = tokens.mint("call-A")
    assert SECRET not in token
    for bad in ("garbage", token[:-3] + "xyz", issuer(secret="y" * 40).mint("A")[0]):
        with pytest.raises(AuthError) as info:
            tokens.verify(bad)
        assert SECRET not in str(info.value)
        assert info.value.__cause__ is None


def test_listen_tokens_and_conversation_tokens_do_not_verify_as_each_other() -> None:
    tokens = issuer()
    listen_token, _ = tokens.mint("call-a", audience=LISTEN_AUDIENCE)
    conversation, _ = tokens.mint("call-a")
    assert tokens.verify(listen_token, audience=LISTEN_AUDIENCE) == "call-a"
    with pytest.raises(TokenRejected, match="audience"):
        tokens.verify(listen_token)
    with pytest.raises(TokenRejected, match="audience"):
        tokens.verify(conversation, audience=LISTEN_AUDIENCE)
