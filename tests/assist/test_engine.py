"""The engine on whole calls: redacted records keep their shape and ids, assist messages follow
the transcript that caused them, interims never leak, and one summary per call validates."""

from __future__ import annotations

from typing import Any

import pytest
from jsonschema import Draft202012Validator

from tests.assist.helpers import engine, transcript
from tests.schema_util import FORMAT_CHECKER, load, validate
from workers.assist.engine import AssistEngine
from workers.bridge.livecalls import to_client
from workers.errors import RecordError
from workers.records import CallEnded, CallStarted, Dtmf, transcript_record

TS = "2026-01-15T10:30:00.123Z"
CALL = "call-1"
#: The sample call (tests/fixtures/assist/cancel_call_8k.wav) as tiny.en transcribed it.
SAMPLE = [
    ("assistant", 0.27, "Thank you for calling. How can I help you to make?"),
    ("other", 4.5, "I am really angry about my bill. You charge me twice."),
    ("assistant", 8.88, "I am sorry I'm out Matt. Let me look into it."),
    ("other", 12.63, "I want to cancel my subscription and get a reason."),
    ("assistant", 16.92, "I can tell with that what is the card number on the account."),
    ("other", 21.96, "The card number in 453 9 1 4 8 8 0 3 4 3 6 4 6 7"),
    ("assistant", 30.42, "Thank you. One moment, please."),
]


def assist_message_schema() -> Draft202012Validator:
    schema = load("assist")
    return Draft202012Validator({**schema["$defs"]["message"], "$defs": schema["$defs"]},
                                format_checker=FORMAT_CHECKER)


def start(assist: AssistEngine, call_id: str = CALL) -> None:
    assist.on_call_event(CallStarted(call_id=call_id, provider="jambonz", from_="+15083084809",
                                     to="", direction="inbound", rate=8000, channels=2,
                                     mix="stereo", roles=("other", "assistant"), timestamp=TS))
    assist.on_transcript(transcript_record(
        call_id, {"type": "event:start", "phone": "+15083084809", "timestamp": TS},
        record_id=f"{call_id}:start"))


def end(assist: AssistEngine, call_id: str = CALL) -> list[dict[str, Any]]:
    out = assist.on_transcript(transcript_record(
        call_id, {"type": "event:callEnd", "timestamp": TS}, record_id=f"{call_id}:callEnd"))
    assert out.redacted[-1]["type"] == "event:callEnd"
    more = assist.on_call_event(CallEnded(call_id=call_id, reason="hangup",
                                          duration_ms=34_000, last_seq=(339, 339),
                                          timestamp=TS))
    return out.summaries + more.summaries


def play_sample(assist: AssistEngine) -> list[dict[str, Any]]:
    start(assist)
    redacted: list[dict[str, Any]] = []
    for role, at, text in SAMPLE:
        redacted += assist.on_transcript(transcript(CALL, role, text, at)).redacted
    return redacted


def test_sample_call() -> None:
    assist = engine()
    redacted = play_sample(assist)
    transcripts = [r for r in redacted if r["type"] == "transcript"]
    messages = [r for r in redacted if r["type"] == "assist"]
    assert [r["id"] for r in transcripts] == [transcript(CALL, role, text, at)["id"]
                                              for role, at, text in SAMPLE]
    assert transcripts[5]["msg"] == "The card number in [CARD]"
    assert [r["msg"] for r in transcripts[:5]] == [text for _, _, text in SAMPLE[:5]]
    shown = [(m["transcriptId"].split(":")[-1], m["kind"], m["ref"]) for m in messages]
    assert shown == [
        ("4500", "alert", "caller-negative"),
        ("4500", "hint", "duplicate-charge"),
        ("4500", "article", "duplicate-charges"),
        ("12630", "hint", "retention-offer"),
        ("12630", "article", "cancellation-and-refunds"),
        ("16920", "hint", "recording-disclosure"),
        ("16920", "hint", "secure-payment"),
        ("21960", "article", "payment-methods"),
    ]
    # each message comes right after the transcript that caused it
    for index, record in enumerate(redacted):
        if record["type"] == "assist":
            before = [r for r in redacted[:index] if r["type"] != "assist"][-1]
            assert before["id"] == record["transcriptId"]
    for record in redacted:
        validate("assist" if record["type"] == "assist" else "transcripts", record)
    client = assist_message_schema()
    for message in messages:
        sent = to_client(message, interim=False)
        assert sent is not None and "producedAtMs" not in sent and "callId" not in sent
        client.validate(sent)

    (summary,) = end(assist)
    validate("summaries", summary)
    assert summary["id"] == f"{CALL}:summary" and summary["durationMs"] == 34_000
    assert summary["talkTimeMs"] == {"assistant": 8000, "other": 6000}
    assert summary["utterances"] == 7 and summary["endReason"] == "hangup"
    assert summary["transcript"][5]["msg"] == "The card number in [CARD]"
    assert summary["redactions"] == {"CARD": 1}
    assert [a["ref"] for a in summary["assist"]] == [m[2] for m in shown]
    assert summary["outcome"]["tags"] == ["billing-dispute", "cancellation-request", "payment"]
    assert summary["outcome"]["disclosures"] == {"recording-disclosure": "reminded",
                                                 "identity-check": "pending"}
    assert summary["outcome"]["callerSentiment"] == "negative"
    assert summary["sentiment"]["other"]["utterances"] == 3
    assert len(summary["keySentences"]) == 3 and summary["summary"].startswith("Caller: ")
    assert "4539" not in str(summary) and "6467" not in str(summary)
    assert assist.calls == {}


def test_summary_waits_for_call_ended_or_grace() -> None:
    now = [1000.0]
    assist = engine(clock=lambda: now[0], summary_grace_s=5)
    start(assist)
    assist.on_transcript(transcript(CALL, "other", "hello there my friend", 1.0))
    # call.ended first, then event:callEnd
    assert assist.on_call_event(CallEnded(call_id=CALL, reason="hangup", duration_ms=9000,
                                          last_seq=(89,), timestamp=TS)).summaries == []
    out = assist.on_transcript(transcript_record(CALL, {"type": "event:callEnd",
                                                        "timestamp": TS},
                                                 record_id=f"{CALL}:callEnd"))
    assert [s["durationMs"] for s in out.summaries] == [9000]
    # no call.ended at all: summarised after the grace period, duration from the audio
    start(assist, "call-2")
    assist.on_transcript(transcript("call-2", "other", "hello again", 2.0, duration=1.5))
    assist.on_transcript(transcript_record("call-2", {"type": "event:callEnd",
                                                      "timestamp": TS},
                                           record_id="call-2:callEnd"))
    assert assist.due(idle_s=600).summaries == []
    now[0] += 5
    (late,) = assist.due(idle_s=600).summaries
    assert late["callId"] == "call-2" and late["durationMs"] == 3500
    validate("summaries", late)
    # and a redelivered callEnd does not summarise again
    assert assist.on_transcript(transcript_record(
        "call-2", {"type": "event:callEnd", "timestamp": TS},
        record_id="call-2:callEnd")).summaries == []


def test_idle_calls_are_summarised() -> None:
    now = [0.0]
    assist = engine(clock=lambda: now[0])
    assist.on_transcript(transcript("lost", "other", "is anyone there", 0.5))
    now[0] = 899.0
    assert assist.due(idle_s=900).summaries == []
    now[0] = 900.0
    assert [s["callId"] for s in assist.due(idle_s=900).summaries] == ["lost"]


def test_dtmf_entries_are_masked() -> None:
    assist = engine()
    start(assist)
    for t_ms, digit in [(1000, "1"), (5000, "4"), (5500, "5"), (6000, "3"), (6400, "9"),
                        (20000, "#")]:
        assist.on_call_event(Dtmf(call_id=CALL, digit=digit, duration_ms=80, t_ms=t_ms))
    (summary,) = end(assist)
    assert [d["digit"] for d in summary["dtmf"]] == ["1", "*", "*", "*", "*", "#"]
    unmasked = engine(redact=frozenset())
    start(unmasked)
    unmasked.on_call_event(Dtmf(call_id=CALL, digit="4", duration_ms=80, t_ms=1))
    assert [d["digit"] for d in end(unmasked)[0]["dtmf"]] == ["4"]


def test_interims_are_redacted_with_the_call_state() -> None:
    assist = engine()
    start(assist)
    assist.on_transcript(transcript(CALL, "assistant", "What is the card number?", 1.0))
    interim = transcript(CALL, "other", "four five three nine, one four", 4.0,
                         revision=1, stable="four five three nine,")
    interim["type"] = "transcript:interim"
    interim["words"] = [{"word": f" {w}", "start": 4 + i * 0.3, "end": 4.2 + i * 0.3}
                        for i, w in enumerate(["four", "five", "three", "nine,", "one", "four"])]
    (out,) = assist.on_transcript(interim).redacted
    assert out["msg"] == "[CARD]" and out["stable"] == "[CARD]"
    assert out["words"] == [{"word": " [CARD]", "start": 4.0, "end": 5.7}]
    assert out["id"] == interim["id"] and out["revision"] == 1
    validate("transcripts", out)
    assert assist.on_transcript(interim).assist == []  # no hints from interims


def test_pass_through_drop_and_malformed() -> None:
    assist = engine(redact_caller_id=True)
    start_record = transcript_record(CALL, {"type": "event:start", "phone": "+15083084809",
                                            "timestamp": TS}, record_id=f"{CALL}:start")
    assert assist.on_transcript(start_record).redacted[0]["phone"] == ""
    assert engine().on_transcript(start_record).redacted[0]["phone"] == "+15083084809"
    error = transcript_record(CALL, {"type": "error", "description": "oops"}, record_id="e1")
    assert assist.on_transcript(error).redacted == [error]
    odd = transcript_record(CALL, {"type": "transcript:translated", "msg": "4539 1488"},
                            record_id="x")
    out = assist.on_transcript(odd)
    assert out.redacted == [] and out.dropped == 1
    for bad in ({"type": "transcript", "msg": "hi"}, {**transcript(CALL, "other", "x", 1),
                                                       "offset": "soon"},
                {**transcript(CALL, "other", "x", 1), "msg": None}):
        with pytest.raises(RecordError):
            assist.on_transcript(bad)


def test_redelivered_transcripts_after_the_end_are_still_redacted() -> None:
    assist = engine()
    play_sample(assist)
    end(assist)
    out = assist.on_transcript(transcript(CALL, "other", "4539 1488 0343 6467", 21.96))
    assert out.redacted[0]["msg"] == "[CARD]" and out.assist == [] and out.summaries == []
