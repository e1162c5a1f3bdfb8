"""Every record and liveCalls message we produce validates against its schema in ``schemas/``."""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from jsonschema import Draft202012Validator

from tests.schema_util import headers_to_json, load, schema_names, validate
from workers import records as r
from workers.bridge import livecalls as lc

TS = "2026-01-15T10:30:00.123Z"
STARTED = r.CallStarted(call_id="call-1", provider="jambonz", from_="+14155550123", to="",
                        direction="inbound", rate=8000, channels=2, mix="separate",
                        roles=("other", "user"), metadata={"callSid": "abc"})
ENDED = r.CallEnded(call_id="call-1", reason="hangup", duration_ms=60_000, last_seq=(599, -1))
DTMFS = [r.Dtmf(call_id="call-1", digit=d, duration_ms=ms, t_ms=1_000)
         for d, ms in (("1", 100), ("#", None), ("*", 0), ("D", 80))]
CHUNKS = [r.AudioChunk(call_id="call-1", channel=0, seq=0, rate=8000, role="other", t_ms=0,
                       pcm=b"\0\0" * 800, channels=2),
          r.AudioChunk(call_id="call-1", channel=1, seq=12, rate=16000, role="user",
                       t_ms=1_200, pcm=b"", channels=2, last=True)]
MESSAGES = [
    lc.event_start("+14155550123", TS),
    lc.event_start("anonymous", TS),
    lc.transcript("Hi, this is Dana.", "other", 1.84),
    lc.transcript("", "assistant", 0),
    lc.transcript_interim("Hi, this", "user", 12.5, revision=2, stable="Hi,"),
    lc.event_end("Screening complete"),
    lc.event_call_end(TS),
    lc.error("Transcription failed for this call; transcripts may be missing."),
]
TIMING = {"channel": 1, "audioStartMs": 1_840, "audioEndMs": 3_100, "voicedEndMs": 2_900,
          "producedAtMs": 1_768_473_003_400,
          "words": [{"word": " Hi", "start": 1.84, "end": 2.0, "probability": 0.93}]}


def _record(message: dict[str, Any]) -> dict[str, Any]:
    timing = TIMING if message["type"].startswith("transcript") else {}
    return r.transcript_record("call-1", message, record_id="call-1:1:1840", **timing)


def test_schema_files_are_valid_and_documented() -> None:
    names = schema_names()
    assert names == ["assist", "audio-headers", "calls", "control", "interest",
                     "livecalls-client", "livecalls-server", "summaries", "transcripts"]
    for name in names:
        schema = load(name)
        Draft202012Validator.check_schema(schema)
        assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
        assert schema["$id"] == f"urn:callscribe:schema:{name}:v1"
        assert schema["title"] and schema["description"]
        _assert_properties_described(schema, name)


def _assert_properties_described(node: Any, where: str) -> None:
    if isinstance(node, dict):
        for prop, sub in node.get("properties", {}).items():
            assert "description" in sub or "$ref" in sub, f"{where}: {prop} lacks a description"
        for key, value in node.items():
            _assert_properties_described(value, f"{where}/{key}")
    elif isinstance(node, list):
        for item in node:
            _assert_properties_described(item, where)


# --------------------------------------------------------------------------- positive


STARTED_WITH_VOCABULARY = r.CallStarted(
    call_id="call-2", provider="twilio", from_="", to="", direction="", rate=8000, channels=1,
    mix="mono", roles=("other",), vocabulary=("Zentrix Plus", "FlexiMax 300"))


@pytest.mark.parametrize("event", [STARTED, STARTED_WITH_VOCABULARY, ENDED, *DTMFS])
def test_calls(event: r.CallEvent) -> None:
    validate("calls", r.loads(r.dumps(event.to_json())))


@pytest.mark.parametrize("chunk", CHUNKS)
def test_audio_headers(chunk: r.AudioChunk) -> None:
    validate("audio-headers", headers_to_json(chunk.headers()))


def test_interest() -> None:
    for watching in (True, False):
        record = r.InterimInterest(call_id="call-1", bridge="b-0", watching=watching,
                                   at_ms=1_768_473_000_123, ttl_ms=30_000)
        validate("interest", record.to_json())
        assert r.InterimInterest.from_json(record.to_json()) == record
    with pytest.raises(r.RecordError):
        r.InterimInterest.from_json({"callId": "call-1"})


def test_control() -> None:
    for kind in lc.CLIENT_TYPES:
        command = r.ControlCommand(call_id="call-1", type=kind, id="m-1", bridge="bridge-0")
        validate("control", command.to_json())


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: m["type"])
def test_transcripts_records(message: dict[str, Any]) -> None:
    validate("transcripts", r.loads(r.dumps(_record(message))))


@pytest.mark.parametrize("message", MESSAGES, ids=lambda m: m["type"])
def test_server_messages(message: dict[str, Any]) -> None:
    validate("livecalls-server", message)
    sent = lc.to_client(_record(message), interim=True)
    assert sent is not None
    validate("livecalls-server", sent)


def test_ack_and_documented_minimum() -> None:
    validate("livecalls-server", lc.ack("b0c7e3f4-0d7a-4a54-9a7f-0c4f1b0a2e11"))
    validate("livecalls-server", {"type": "transcript", "msg": "Hi", "role": "user"})


def test_client_messages() -> None:
    for kind in lc.CLIENT_TYPES:
        text = f'{{"type": "{kind}", "id": "{"x" * lc.MAX_ID_CHARS}"}}'
        command = lc.parse_client_message(text)
        validate("livecalls-client", {"type": command.type, "id": command.id})


# --------------------------------------------------------------------------- negative


def _invalid(schema: str, instance: Any) -> None:
    with pytest.raises(jsonschema.ValidationError):
        validate(schema, instance)


@pytest.mark.parametrize(
    "instance",
    [
        STARTED.to_json() | {"v": 2},
        STARTED.to_json() | {"type": "call.paused"},
        STARTED.to_json() | {"roles": ["caller"]},
        STARTED.to_json() | {"rate": 0},
        STARTED.to_json() | {"timestamp": "yesterday"},
        STARTED.to_json() | {"timestamp": "2026-13-01T00:00:00Z"},
        STARTED.to_json() | {"timestamp": "2026-01-15"},
        {k: v for k, v in STARTED.to_json().items() if k != "metadata"},
        STARTED.to_json() | {"vocabulary": "Quorvo"},
        STARTED.to_json() | {"vocabulary": [""]},
        STARTED.to_json() | {"vocabulary": ["x" * 65]},
        ENDED.to_json() | {"lastSeq": [-2]},
        ENDED.to_json() | {"durationMs": 1.5},
        DTMFS[0].to_json() | {"digit": "12"},
        DTMFS[0].to_json() | {"durationMs": -1},
        {k: v for k, v in DTMFS[1].to_json().items() if k != "durationMs"},
    ],
)
def test_bad_calls(instance: dict[str, Any]) -> None:
    _invalid("calls", instance)


@pytest.mark.parametrize(
    ("name", "value"),
    [("v", "2"), ("seq", "-1"), ("seq", "07"), ("rate", "0"), ("role", "caller"),
     ("last", "true"), ("t_ms", "1.5"), ("channel", None)],
)
def test_bad_audio_headers(name: str, value: str | None) -> None:
    headers = headers_to_json(CHUNKS[0].headers())
    if value is None:
        del headers[name]
    else:
        headers[name] = value
    _invalid("audio-headers", headers)


@pytest.mark.parametrize(
    "instance",
    [
        _record(lc.transcript("Hi", "other", 1)) | {"role": "caller"},
        _record(lc.transcript("Hi", "other", 1)) | {"offset": -1},
        _record(lc.transcript("Hi", "other", 1)) | {"audioStartMs": 1.5},
        _record(lc.transcript("Hi", "other", 1)) | {"words": [{"start": 0}]},
        {k: v for k, v in _record(lc.transcript("Hi", "other", 1)).items() if k != "offset"},
        {k: v for k, v in _record(lc.transcript("Hi", "other", 1)).items() if k != "id"},
        {k: v for k, v in _record(lc.event_end("x")).items() if k != "callId"},
        _record(lc.event_end("x")) | {"v": 2},
        _record(lc.transcript_interim("Hi", "user", 1, revision=0, stable="")) | {"revision": -1},
        {k: v for k, v in _record(lc.transcript_interim("Hi", "user", 1, revision=0,
                                                        stable="")).items() if k != "stable"},
        _record(lc.event_start("", TS)) | {"phone": "4155550123"},
        _record(lc.event_call_end(TS)) | {"timestamp": "soon"},
        _record(lc.error("x")) | {"description": ""},
        _record(lc.ack("m-1")),
    ],
)
def test_bad_transcripts(instance: dict[str, Any]) -> None:
    _invalid("transcripts", instance)


@pytest.mark.parametrize(
    "instance",
    [
        _record(lc.transcript("Hi", "other", 1)),  # v and callId must be stripped
        lc.transcript("Hi", "other", 1) | {"audioStartMs": 5},
        lc.ack("m-1") | {"callId": "c"},
        {"type": "ack"},
        {"type": "ack", "ackId": ""},
        {"type": "transcript", "msg": "Hi"},
        {"type": "error"},
        {"type": "event:start", "phone": "+1415", "timestamp": "now"},
        {"type": "client:joinCall", "id": "m-1"},
        lc.transcript("Hi", "other", 1) | {"id": ""},
    ],
)
def test_bad_server_messages(instance: dict[str, Any]) -> None:
    _invalid("livecalls-server", instance)


@pytest.mark.parametrize(
    "instance",
    [{"type": "client:joinCall"}, {"id": "m"}, {"type": "client:dance", "id": "m"},
     {"type": "client:endCall", "id": ""}, {"type": "client:endCall", "id": "i" * 129},
     {"type": "client:endCall", "id": 5}],
)
def test_bad_client_messages(instance: dict[str, Any]) -> None:
    _invalid("livecalls-client", instance)


def test_bad_control() -> None:
    good = r.ControlCommand(call_id="c", type="client:endCall", id="m", bridge="b").to_json()
    for bad in (good | {"type": "client:dance"}, good | {"receivedAt": "later"},
                {k: v for k, v in good.items() if k != "bridge"}):
        _invalid("control", bad)
