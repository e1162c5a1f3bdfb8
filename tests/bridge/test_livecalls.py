"""The pure liveCalls protocol: handshake, client messages, server messages."""

from __future__ import annotations

import json
import re
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers import records
from workers.bridge import livecalls as lc
from workers.bridge.tokens import TokenMalformed, TokenRejected
from workers.errors import AuthError, ProtocolError
from workers.records import transcript_record

KEY = "k-0123456789abcdef"
KEYS = frozenset({KEY, "other-key"})
GOOD = "/ws/v1/liveCalls?conversationToken=tok-a"
SENTENCE = re.compile(r"^[A-Z].{10,}[.]$", re.DOTALL)


def verify(token: str) -> str:
    """A stand-in verifier: ``tok-<call>`` is valid, ``expired`` and ``forged`` are rejected."""
    if token in ("expired", "forged"):
        raise TokenRejected(f"token {token}")
    if not token.startswith("tok-"):
        raise TokenMalformed("not a token")
    return token.removeprefix("tok-")


def handshake(path: str = GOOD, authorization: str | None = f"Bearer {KEY}",
              known: frozenset[str] = frozenset({"a"})) -> lc.Handshake:
    return lc.check_handshake(path, authorization, api_keys=KEYS, verify_token=verify,
                              call_known=known.__contains__)


def rejected(**kwargs: object) -> lc.HandshakeRejected:
    with pytest.raises(lc.HandshakeRejected) as info:
        handshake(**kwargs)  # type: ignore[arg-type]  # each case passes its own keywords
    body = info.value.body
    assert set(body) == {"error", "description"}
    assert SENTENCE.match(body["description"]), body
    json.dumps(body)
    return info.value


# --------------------------------------------------------------------------- handshake


def test_handshake_accepts_defaults() -> None:
    assert handshake() == lc.Handshake(call_id="a", interim=False, resume_after=None)


def test_handshake_reads_interim_and_resume_after() -> None:
    got = handshake(GOOD + "&interim=true&resumeAfter=a%3A0%3A1200&unknown=1")
    assert got == lc.Handshake(call_id="a", interim=True, resume_after="a:0:1200")
    assert handshake(GOOD + "&interim=false").interim is False


def test_bearer_scheme_is_case_insensitive() -> None:
    assert handshake(authorization=f"bearer  {KEY} ").call_id == "a"


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"path": "/ws/v1/livecalls?conversationToken=tok-a"}, 404, "not_found"),
        ({"path": "/?conversationToken=tok-a"}, 404, "not_found"),
        ({"path": "/ws/v1/liveCalls/?conversationToken=tok-a"}, 404, "not_found"),
        ({"authorization": None}, 401, "unauthorized"),
        ({"authorization": ""}, 401, "unauthorized"),
        ({"authorization": "Bearer"}, 401, "unauthorized"),
        ({"authorization": f"Basic {KEY}"}, 401, "unauthorized"),
        ({"authorization": "Bearer wrong"}, 401, "unauthorized"),
        ({"authorization": f"Bearer {KEY}x"}, 401, "unauthorized"),
        ({"authorization": "Bearer ключ"}, 401, "unauthorized"),
        ({"path": "/ws/v1/liveCalls"}, 400, "invalid_request"),
        ({"path": "/ws/v1/liveCalls?conversationToken="}, 400, "invalid_request"),
        ({"path": GOOD + "&conversationToken=tok-b"}, 400, "invalid_request"),
        ({"path": GOOD + "&interim=yes"}, 400, "invalid_request"),
        ({"path": GOOD + "&interim="}, 400, "invalid_request"),
        ({"path": GOOD + "&interim=TRUE"}, 400, "invalid_request"),
        ({"path": GOOD + "&resumeAfter="}, 400, "invalid_request"),
        ({"path": GOOD + "&resumeAfter=" + "x" * 513}, 400, "invalid_request"),
        ({"path": "/ws/v1/liveCalls?conversationToken=garbage"}, 400, "invalid_token"),
        ({"path": "/ws/v1/liveCalls?conversationToken=expired"}, 401, "token_rejected"),
        ({"path": "/ws/v1/liveCalls?conversationToken=forged"}, 401, "token_rejected"),
        ({"path": "/ws/v1/liveCalls?conversationToken=tok-b"}, 404, "unknown_call"),
    ],
)
def test_handshake_rejections(kwargs: dict[str, object], status: int, code: str) -> None:
    exc = rejected(**kwargs)
    assert (exc.status, exc.body["error"]) == (status, code)
    assert str(exc).startswith(f"{status} {code}")
    expected = [("WWW-Authenticate", 'Bearer realm="callscribe"')] if status == 401 else []
    assert exc.headers == expected


def test_auth_is_checked_before_query_and_token() -> None:
    exc = rejected(path="/ws/v1/liveCalls?conversationToken=garbage", authorization=None)
    assert exc.status == 401
    exc = rejected(path="/ws/v1/liveCalls", authorization="Bearer nope")
    assert exc.status == 401


def test_path_is_checked_before_auth() -> None:
    assert rejected(path="/nope", authorization=None).status == 404


def test_no_api_keys_rejects_everyone() -> None:
    with pytest.raises(lc.HandshakeRejected) as info:
        lc.check_handshake(GOOD, f"Bearer {KEY}", api_keys=frozenset(), verify_token=verify,
                           call_known=lambda _: True)
    assert info.value.status == 401


def test_any_auth_error_from_the_verifier_is_a_401() -> None:
    def boom(_: str) -> str:
        raise AuthError("nope")

    with pytest.raises(lc.HandshakeRejected) as info:
        lc.check_handshake(GOOD, f"Bearer {KEY}", api_keys=KEYS, verify_token=boom,
                           call_known=lambda _: True)
    assert (info.value.status, info.value.body["error"]) == (401, "token_rejected")


def test_descriptions_do_not_echo_secrets() -> None:
    exc = rejected(authorization="Bearer s3cr3t-guess")
    assert "s3cr3t" not in json.dumps(exc.body)


@pytest.mark.parametrize(
    ("header", "key"),
    [
        (None, None),
        ("", None),
        ("callscribe.liveCalls", None),
        ("callscribe.liveCalls, callscribe.bearer.abc123", "abc123"),
        ("callscribe.bearer.abc123,callscribe.liveCalls", "abc123"),
        ("callscribe.bearer.", None),
        ("x.callscribe.bearer.abc", None),
    ],
)
def test_bearer_from_subprotocols(header: str | None, key: str | None) -> None:
    assert lc.bearer_from_subprotocols(header) == key


def test_subprotocol_key_authenticates() -> None:
    key = lc.bearer_from_subprotocols(f"{lc.SUBPROTOCOL}, {lc.BEARER_SUBPROTOCOL_PREFIX}{KEY}")
    assert handshake(authorization=f"Bearer {key}").call_id == "a"


def test_select_subprotocol_never_echoes_the_key() -> None:
    offered = f"{lc.SUBPROTOCOL}, {lc.BEARER_SUBPROTOCOL_PREFIX}{KEY}"
    assert lc.select_subprotocol(offered) == lc.SUBPROTOCOL
    assert lc.select_subprotocol(f"{lc.BEARER_SUBPROTOCOL_PREFIX}{KEY}") is None
    assert lc.select_subprotocol(None) is None


# --------------------------------------------------------------------------- client messages


@pytest.mark.parametrize("kind", ["client:joinCall", "client:endCall"])
def test_parse_accepts_both_commands(kind: str) -> None:
    text = json.dumps({"type": kind, "id": "m-1", "extra": {"ignored": True}})
    # kind is a parametrized str; ClientCommand.type is the Literal.
    assert lc.parse_client_message(text) == lc.ClientCommand(type=kind, id="m-1")  # type: ignore[arg-type]  # see above


def test_parse_accepts_max_sizes() -> None:
    ident = "i" * lc.MAX_ID_CHARS
    assert lc.parse_client_message(json.dumps({"type": "client:endCall", "id": ident})).id == ident
    pad = lc.MAX_CLIENT_MESSAGE_BYTES - len('{"type":"client:endCall","id":"x","p":""}')
    text = '{"type":"client:endCall","id":"x","p":"' + "p" * pad + '"}'
    assert len(text.encode()) == lc.MAX_CLIENT_MESSAGE_BYTES
    assert lc.parse_client_message(text).id == "x"


@pytest.mark.parametrize(
    ("frame", "needle"),
    [
        (b'{"type":"client:joinCall","id":"1"}', "text frame"),
        ("x" * (lc.MAX_CLIENT_MESSAGE_BYTES + 1), "4096"),
        ('{"type":"client:endCall","id":"' + "é" * 2100 + '"}', "4096"),
        ("", "not valid JSON"),
        ("{", "not valid JSON"),
        ("[" * 3000, "not valid JSON"),
        ("[]", "JSON array"),
        ('"hi"', "JSON string"),
        ("3", "JSON number"),
        ("null", "JSON null"),
        ("true", "JSON boolean"),
        ('{"id":"1"}', '"type"'),
        ('{"type":"","id":"1"}', '"type"'),
        ('{"type":7,"id":"1"}', '"type"'),
        ('{"type":"client:dance","id":"1"}', "client:joinCall or client:endCall"),
        ('{"type":"client:joinCall"}', '"id"'),
        ('{"type":"client:joinCall","id":""}', '"id"'),
        ('{"type":"client:joinCall","id":5}', '"id"'),
        ('{"type":"client:joinCall","id":"' + "i" * 129 + '"}', "128"),
        ('{"type":"client:joinCall","id":"a\\ud800"}', "surrogate"),
    ],
)
def test_parse_rejections(frame: str | bytes, needle: str) -> None:
    with pytest.raises(lc.ClientMessageError) as info:
        lc.parse_client_message(frame)
    exc = info.value
    assert isinstance(exc, ProtocolError)
    assert exc.close_code == 1008
    assert needle in exc.description
    assert str(exc) == exc.description
    assert SENTENCE.match(exc.description), exc.description


def test_unknown_type_is_truncated_in_the_description() -> None:
    with pytest.raises(lc.ClientMessageError) as info:
        lc.parse_client_message(json.dumps({"type": "z" * 500, "id": "1"}))
    assert len(info.value.description) < 200


_any_char = st.characters() | st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)


@given(st.one_of(st.text(), st.text(_any_char), st.binary()))
def test_parse_fuzz_raises_only_client_message_error(frame: str | bytes) -> None:
    try:
        lc.parse_client_message(frame)
    except lc.ClientMessageError as exc:
        assert exc.description


_json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.text(_any_char, max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=10,
)


@given(st.dictionaries(st.sampled_from(["type", "id", "x"]),
                       _json_values | st.sampled_from(lc.CLIENT_TYPES)))
def test_parse_fuzz_json_objects(data: dict[str, object]) -> None:
    try:
        command = lc.parse_client_message(json.dumps(data))
    except lc.ClientMessageError:
        return
    records.dumps({"id": command.id})  # an accepted id always encodes onto Kafka
    assert command.type == data["type"]
    assert command.id == data["id"]


# --------------------------------------------------------------------------- server messages


def test_builders() -> None:
    assert lc.ack("m-1") == {"type": "ack", "ackId": "m-1"}
    assert lc.error("Bad.") == {"type": "error", "description": "Bad."}
    assert lc.event_end("Screening complete") == {"type": "event:end", "msg": "Screening complete"}
    assert lc.event_call_end("2026-01-15T10:31:12.000Z") == {
        "type": "event:callEnd", "timestamp": "2026-01-15T10:31:12.000Z"}
    assert lc.transcript("Hi", "other", 1.8444) == {
        "type": "transcript", "msg": "Hi", "role": "other", "offset": 1.844}
    assert lc.transcript_interim("Hi th", "user", 2, revision=3, stable="Hi") == {
        "type": "transcript:interim", "msg": "Hi th", "role": "user", "offset": 2.0,
        "revision": 3, "stable": "Hi"}


@pytest.mark.parametrize(
    ("phone", "sent"),
    [("+14155550123", "+14155550123"), (" +442071234567 ", "+442071234567"),
     ("anonymous", ""), ("", ""), ("14155550123", ""), ("+0123", ""),
     ("sip:alice@example.com", ""), ("+1234567890123456", "")],
)
def test_event_start_keeps_only_e164(phone: str, sent: str) -> None:
    assert lc.event_start(phone, "2026-01-15T10:30:00.000Z") == {
        "type": "event:start", "phone": sent, "timestamp": "2026-01-15T10:30:00.000Z"}


@pytest.mark.parametrize(
    "call",
    [
        lambda: lc.transcript("x", "caller", 0),
        lambda: lc.transcript("x", "user", -0.5),
        lambda: lc.transcript("x", "user", float("nan")),
        lambda: lc.transcript("x", "user", float("inf")),
        lambda: lc.transcript_interim("x", "user", 0, revision=-1, stable=""),
    ],
)
def test_builders_refuse_bad_values(call: Callable[[], object]) -> None:
    with pytest.raises(ValueError):
        call()


def _record(message: dict[str, object]) -> dict[str, object]:
    return transcript_record("call-1", message, record_id="call-1:0:1200", channel=0,
                             audioStartMs=1200, audioEndMs=2400, producedAtMs=1_700_000_000_000,
                             revision=None)


def test_to_client_strips_record_and_timing_fields() -> None:
    record = _record(lc.transcript("Hello", "other", 1.2))
    record["words"] = [{"word": " Hello", "start": 1.2, "end": 1.5, "probability": 0.9}]
    assert lc.to_client(record, interim=False) == {
        "type": "transcript", "msg": "Hello", "role": "other", "offset": 1.2,
        "id": "call-1:0:1200", "channel": 0, "words": record["words"]}
    assert "v" in record and "audioStartMs" in record  # the input is not modified


def test_to_client_interim_only_when_asked() -> None:
    record = _record(lc.transcript_interim("Hel", "other", 1.2, revision=0, stable="He"))
    assert lc.to_client(record, interim=False) is None
    assert lc.to_client(record, interim=True) == {
        "type": "transcript:interim", "msg": "Hel", "role": "other", "offset": 1.2,
        "revision": 0, "stable": "He", "id": "call-1:0:1200", "channel": 0}


@pytest.mark.parametrize("interim", [False, True])
def test_to_client_passes_events_through(interim: bool) -> None:
    for message in (lc.event_start("+14155550123", "2026-01-15T10:30:00.000Z"),
                    lc.event_end("done"), lc.event_call_end("2026-01-15T10:31:00.000Z"),
                    lc.error("Transcription failed.")):
        record = transcript_record("c", message, record_id="c:evt")
        assert lc.to_client(record, interim=interim) == {**message, "id": "c:evt"}


# --------------------------------------------------------------------------- rate limit, 500, 503


def test_rate_limiter_allows_a_burst_then_the_rate() -> None:
    limiter = lc.RateLimiter(rate=10, burst=5)
    assert all(limiter.allow(100.0) for _ in range(5))
    assert not limiter.allow(100.0)
    assert limiter.allow(100.1)  # 0.1 s at 10/s earns one more
    assert not limiter.allow(100.1)
    assert all(limiter.allow(200.0) for _ in range(5))  # refilled, but never beyond the burst
    assert not limiter.allow(200.0)


def test_rate_limiter_sustains_its_rate() -> None:
    limiter = lc.RateLimiter(rate=10, burst=1)
    assert all(limiter.allow(n / 10) for n in range(100))
    assert not limiter.allow(9.95)
    with pytest.raises(ValueError, match="rate limit"):
        lc.RateLimiter(rate=0)


def test_default_limits_leave_room_for_the_malformed_message_budget() -> None:
    """20 malformed messages in a burst are answered (and then close 1008 for malformed
    messages, not for the rate)."""
    assert lc.CLIENT_MESSAGES_BURST > lc.MAX_CLIENT_ERRORS
    assert lc.RATE_LIMIT_CLOSE_CODE == 1008


def test_draining_and_internal_error_refusals() -> None:
    draining = lc.draining(7)
    assert draining.status == 503 and draining.body["error"] == "unavailable"
    assert ("Retry-After", "7") in draining.headers
    internal = lc.internal_error()
    assert internal.status == 500 and internal.body["error"] == "internal_error"
    assert SENTENCE.match(internal.body["description"]) and internal.headers == []


def test_control_outcomes_become_history_records() -> None:
    """``call.joined`` and ``call.control_failed`` (from the ingest side) as the ``event:end``
    and ``error`` records a call's history holds: deterministic ids, one sentence each."""
    joined = lc.joined_message({"type": "call.joined", "callId": "c-1", "commandId": "j1"})
    assert joined == {"v": records.SCHEMA_VERSION, "type": "event:end", "msg": lc.JOINED_MSG,
                      "callId": "c-1", "id": "c-1:end"}
    failed = lc.control_failed_message({
        "type": "call.control_failed", "callId": "c-1", "commandId": "e1",
        "command": "client:endCall", "reason": "  x " * 200, "retriable": True})
    assert list(failed) == ["v", "type", "description", "callId", "id"]
    assert failed["id"] == "c-1:control_failed:e1"
    assert failed["description"].startswith("The client:endCall command e1 could not be ")
    assert failed["description"].endswith(" It may work if sent again with a new id.")
    assert len(failed["description"]) < lc.MAX_REASON_CHARS + 120  # the reason is cut short
    bare = lc.control_failed_message({"callId": "c-2"})
    assert bare["description"] == ("The command  could not be carried out: no reason given. "
                                   "The call continues as before.")
    for record in (joined, failed, bare):
        assert lc.to_client(record, interim=False) == {
            k: v for k, v in record.items() if k not in ("v", "callId")}
