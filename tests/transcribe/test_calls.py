""":class:`CallTracker` on real fixture audio cut by the real :class:`Chunker`, with whisper's
results written by hand (no model): the order of ``event:start`` / transcripts /
``event:callEnd``, seq redelivery and gaps, delivery tokens, phone numbers, and idle expiry.

The helper :func:`run` plays the agent and the decode pipeline in one: ``on_audio`` for each
chunk, ``on_transcribed`` for each job, ``finish`` once ``finish_if_complete`` says so."""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.schema_util import validate
from workers.ingest.chunker import Chunker
from workers.records import AudioChunk, CallEnded, CallStarted, transcript_id
from workers.simulate.jambonz import read_wav
from workers.transcribe.asr import AsrResult, Word
from workers.transcribe.calls import CallTracker, DecodeWork, e164
from workers.transcribe.channel import CUT_SEARCH_MS, VadConfig

SPEECH = Path(__file__).parent.parent / "fixtures" / "speech"


def chunks_of(name: str, call_id: str, *, block: int = 160) -> list[AudioChunk]:
    """A fixture cut into 100 ms chunks, interleaved by channel as ingest publishes them."""
    samples, rate = read_wav(SPEECH / name)
    roles = ("other", "assistant")[: samples.shape[1]]
    chunker = Chunker(call_id=call_id, rate=rate, roles=roles, chunk_ms=100)
    out: list[AudioChunk] = []
    for start in range(0, len(samples), block):
        part = samples[start:start + block]
        out += chunker.push([part[:, ch].tobytes() for ch in range(samples.shape[1])])
    return out + chunker.close()


def started(call_id: str, channels: int = 2, from_: str = "+1 (508) 308-4809") -> CallStarted:
    return CallStarted(call_id=call_id, provider="jambonz", from_=from_, to="+15083728299",
                       direction="inbound", rate=8000, channels=channels,
                       mix="stereo" if channels == 2 else "mono",
                       roles=("other", "assistant")[:channels],
                       timestamp="2026-01-15T10:30:00.000Z")


def ended(call_id: str) -> CallEnded:
    return CallEnded(call_id=call_id, reason="closed", duration_ms=11_700, last_seq=(116, 116),
                     timestamp="2026-01-15T10:30:12.000Z")


def heard(work: DecodeWork) -> AsrResult:
    """What whisper 'heard': text naming the utterance, one word at its start."""
    text = f"channel {work.channel} at {work.utterance.start_ms}"
    return AsrResult(text=text, words=(Word("channel", 0.0, 0.25),), decode_s=0.01,
                     suppressed=())


def run(tracker: CallTracker, chunks: Iterable[AudioChunk],
        ) -> tuple[list[DecodeWork], list[dict[str, Any]]]:
    """Feed chunks, 'transcribe' each job, and collect every record released (including the
    call's end once ``finish_if_complete`` says it is processed)."""
    works: list[DecodeWork] = []
    records: list[dict[str, Any]] = []
    for chunk in chunks:
        jobs, _ = tracker.on_audio(chunk)
        for work in jobs:
            works.append(work)
            records += tracker.on_transcribed(work, heard(work))
        if tracker.finish_if_complete(chunk.call_id):
            records += tracker.finish(chunk.call_id)
    return works, records


def spans(works: list[DecodeWork]) -> list[tuple[int, int, int]]:
    return [(w.channel, w.utterance.start_ms, w.utterance.end_ms) for w in works]


@pytest.fixture(scope="module")
def stereo() -> list[AudioChunk]:
    return chunks_of("call_stereo_8k.wav", "call-s")


def test_transcripts_are_held_until_event_start_then_released_in_order(
        stereo: list[AudioChunk]) -> None:
    tracker = CallTracker()
    cut = len(stereo) - 4  # everything but each channel's last two chunks
    works, records = run(tracker, stereo[:cut])
    assert len(works) >= 3 and records == []  # no event:start yet: all held

    released = tracker.on_started(started("call-s"))
    assert [r["type"] for r in released] == ["event:start"] + ["transcript"] * len(works)
    start = released[0]
    assert start["phone"] == "+15083084809"
    assert start["timestamp"] == "2026-01-15T10:30:00.000Z"
    assert start["id"] == "call-s:start"
    for work, message in zip(works, released[1:], strict=True):
        u = work.utterance
        assert message["msg"] == f"channel {work.channel} at {u.start_ms}"
        assert message["offset"] == round(u.start_ms / 1000, 3)
        assert message["id"] == transcript_id("call-s", work.channel, u.start_ms)
        assert message["role"] == ("other", "assistant")[work.channel]
        assert message["words"] == [{"word": "channel", "start": round(u.start_ms / 1000, 3),
                                     "end": round(u.start_ms / 1000 + 0.25, 3)}]
        assert message["audioStartMs"] == u.start_ms and message["audioEndMs"] == u.end_ms
    for message in released:
        validate("transcripts", message)
    assert tracker.on_started(started("call-s")) == []  # a redelivered call.started

    more, rest = run(tracker, stereo[cut:])
    assert [r["type"] for r in rest] == ["transcript"] * len(more) + ["event:callEnd"]
    assert rest[-1]["id"] == "call-s:callEnd"
    validate("transcripts", rest[-1])


def test_words_heard_as_nothing_make_no_transcript(stereo: list[AudioChunk]) -> None:
    tracker = CallTracker()
    tracker.on_started(started("call-q"))
    quiet = [AudioChunk(**{**_fields(c), "call_id": "call-q"}) for c in stereo]
    nothing = AsrResult(text="", words=(), decode_s=0.01, suppressed=("phantom",))
    records: list[dict[str, Any]] = []
    for chunk in quiet:
        jobs, _ = tracker.on_audio(chunk)
        for work in jobs:
            records += tracker.on_transcribed(work, nothing)
        if tracker.finish_if_complete("call-q"):
            records += tracker.finish("call-q")
    assert [r["type"] for r in records] == ["event:callEnd"]


def _fields(chunk: AudioChunk) -> dict[str, Any]:
    return {name: getattr(chunk, name) for name in AudioChunk.__dataclass_fields__}


def test_call_end_comes_only_after_every_channels_last_chunk(stereo: list[AudioChunk]) -> None:
    tracker = CallTracker()
    assert tracker.on_started(started("call-s"))[0]["type"] == "event:start"
    left = [c for c in stereo if c.channel == 0]
    right = [c for c in stereo if c.channel == 1]
    _, records = run(tracker, left)
    assert "event:callEnd" not in [r["type"] for r in records]
    tracker.on_ended(ended("call-s"))
    assert not tracker.finish_if_complete("call-s")
    _, records = run(tracker, right[:-1])
    assert "event:callEnd" not in [r["type"] for r in records]
    _, records = run(tracker, right[-1:])
    assert records[-1]["type"] == "event:callEnd"
    assert records[-1]["timestamp"] == "2026-01-15T10:30:12.000Z"  # from call.ended
    assert tracker.calls == {}
    assert not tracker.finish_if_complete("call-s") and tracker.finish("call-s") == []


def test_call_end_without_call_ended_still_comes_once_the_audio_is_complete(
        stereo: list[AudioChunk]) -> None:
    tracker = CallTracker()
    tracker.on_started(started("call-s"))
    _, records = run(tracker, stereo)
    assert [r["type"] for r in records].count("event:callEnd") == 1
    assert records[-1]["type"] == "event:callEnd"


def test_records_after_the_call_finished_do_not_bring_it_back(stereo: list[AudioChunk]) -> None:
    # Audio and calls are two topics: call.ended (or a redelivered chunk) may be read after
    # the last chunk completed the call. It must not start a second, phantom call.
    tracker = CallTracker()
    tracker.on_started(started("call-s"))
    _, records = run(tracker, stereo)
    assert records[-1]["type"] == "event:callEnd"
    tracker.on_ended(ended("call-s"))
    assert not tracker.finish_if_complete("call-s")
    works, late = run(tracker, stereo[-6:])
    assert works == [] and late == []
    assert tracker.on_started(started("call-s")) == []
    assert tracker.calls == {}
    assert tracker.idle_calls(0.0) == []


def test_redelivered_chunks_are_skipped(stereo: list[AudioChunk]) -> None:
    clean, _ = run(CallTracker(), stereo)
    tracker = CallTracker()
    redelivered: list[AudioChunk] = []
    for index, chunk in enumerate(stereo):
        redelivered.append(chunk)
        if index % 7 == 3:
            redelivered += stereo[max(0, index - 10):index + 1]  # a replay of recent records
    works, _ = run(tracker, redelivered)
    assert spans(works) == spans(clean)
    # (not the bytes: soxr dithers its int16 output, so two runs differ in the last bit)
    assert [len(w.utterance.pcm) for w in works] == [len(w.utterance.pcm) for w in clean]


def test_a_seq_gap_is_filled_with_silence_so_later_offsets_stay_true(
        stereo: list[AudioChunk]) -> None:
    # Channel 0 is silent from 2.6 s to 6.3 s; lose 3.0-4.0 s of it (seq 30-39).
    lost = {(0, seq) for seq in range(30, 40)}
    gapped = [c for c in stereo if (c.channel, c.seq) not in lost]
    clean, _ = run(CallTracker(), stereo)
    tracker = CallTracker()
    works, _ = run(tracker, gapped)
    assert spans(works) == spans(clean)
    later = [w for w in works if w.channel == 0 and w.utterance.start_ms > 4000]
    assert later and later[0].utterance.start_ms > 6000  # the caller's second sentence


def test_a_gap_inside_speech_keeps_the_next_utterance_in_place(
        stereo: list[AudioChunk]) -> None:
    # Lose 0.5 s in the middle of the caller's first sentence.
    lost = {(0, seq) for seq in range(10, 15)}
    clean, _ = run(CallTracker(), stereo)
    works, _ = run(CallTracker(), [c for c in stereo if (c.channel, c.seq) not in lost])
    second = [w.utterance.start_ms for w in works if w.channel == 0][-1]
    expected = [w.utterance.start_ms for w in clean if w.channel == 0][-1]
    assert abs(second - expected) <= 30  # one VAD frame; without the fill it is 500 ms early


@pytest.mark.parametrize(("given", "expected"), [
    ("+15083084809", "+15083084809"),
    ("15083084809", "+15083084809"),
    ("+1 (508) 308-4809", "+15083084809"),
    ("+44 20.7946.0958", "+442079460958"),
    ("0044 20 7946 0958", "+442079460958"),
    ("+123456", ""),  # 6 digits: too short
    ("+1234567", "+1234567"),
    ("+123456789012345", "+123456789012345"),  # 15 digits
    ("+1234567890123456", ""),  # 16 digits
    ("+0123456789", ""),  # no country code starts with 0
    ("anonymous", ""),
    ("sip:alice@example.com", ""),
    ("+1508308480x", ""),
    ("", ""),
])
def test_e164(given: str, expected: str) -> None:
    assert e164(given) == expected


def test_phone_that_is_not_e164_is_sent_empty(stereo: list[AudioChunk]) -> None:
    tracker = CallTracker()
    [start] = tracker.on_started(started("call-p", from_="anonymous"))
    assert start["phone"] == ""
    validate("transcripts", start)


def test_the_idle_timeout_counts_only_the_tracker_clock(stereo: list[AudioChunk]) -> None:
    """The worker's clock stops while the brokers do not answer: an outage is not silence."""
    now = [1000.0]
    tracker = CallTracker(clock=lambda: now[0])
    run(tracker, [c for c in stereo if c.seq < 10])
    time.sleep(0.02)  # the wall clock moves; the tracker's does not
    assert tracker.idle_calls(0.01) == []
    now[0] += 59.0
    assert tracker.idle_calls(60.0) == []
    now[0] += 2.0
    assert tracker.idle_calls(60.0) == ["call-s"]


def test_idle_calls_are_reported_once_and_then_finished(stereo: list[AudioChunk]) -> None:
    tracker = CallTracker()
    half = [c for c in stereo if c.seq < 60]
    works, records = run(tracker, half)  # never started: its transcripts are held
    assert records == [] and works
    tracker.on_started(started("call-live", channels=1))

    assert tracker.idle_calls(60.0) == []
    tracker.calls["call-s"].last_activity -= 120.0
    assert tracker.idle_calls(60.0) == ["call-s"]
    assert tracker.idle_calls(60.0) == []  # once
    out = tracker.finish("call-s")
    assert [r["type"] for r in out] == (["event:start"] + ["transcript"] * len(works)
                                        + ["event:callEnd"])
    assert out[0]["phone"] == ""  # no call.started ever came
    assert {r["callId"] for r in out} == {"call-s"}
    for message in out:
        validate("transcripts", message)
    assert set(tracker.calls) == {"call-live"}
    # An utterance that was still decoding when its call expired is dropped, not re-opened.
    assert tracker.on_transcribed(works[0], heard(works[0])) == []
    assert set(tracker.calls) == {"call-live"}


def test_every_delivery_token_is_handed_back_exactly_once(stereo: list[AudioChunk]) -> None:
    tracker = CallTracker()
    tracker.on_started(started("call-s"))
    handed_back: list[int] = []
    for token, chunk in enumerate(stereo):
        jobs, released = tracker.on_audio(chunk, token)
        handed_back += released
        for work in jobs:
            handed_back += work.tokens
    assert sorted(handed_back) == list(range(len(stereo)))


def test_a_worker_that_takes_over_mid_call_keeps_the_timeline_and_produces_nothing_twice(
        stereo: list[AudioChunk]) -> None:
    first = CallTracker()
    first.on_started(started("call-s"))
    cut = next(i for i, c in enumerate(stereo) if c.seq == 50)  # 5.0 s, between sentences
    handed_back: set[int] = set()
    produced_before: list[dict[str, Any]] = []
    for token in range(cut):
        jobs, released = first.on_audio(stereo[token], token)
        handed_back.update(released)
        for work in jobs:
            produced_before += first.on_transcribed(work, heard(work))
            handed_back.update(work.tokens)
    # The second worker replays from the first record the first one did not acknowledge.
    resume = min(set(range(cut)) - handed_back)
    assert 0 < resume < cut
    second = CallTracker()
    works, produced_after = run(second, stereo[resume:])
    clean, _ = run(CallTracker(), stereo)
    before = [(r["channel"], r["audioStartMs"], r["voicedEndMs"]) for r in produced_before
              if r["type"] == "transcript"]
    after = [(r["channel"], r["audioStartMs"], r["voicedEndMs"]) for r in produced_after
             if r["type"] == "transcript"]
    assert before and after
    for channel, start, end in after:  # nothing produced again, not even a fragment
        assert all(c != channel or end <= s or start >= e for c, s, e in before)
    assert "event:start" not in [r["type"] for r in produced_after]  # sent by the first worker
    assert produced_after[-1]["type"] == "event:callEnd"
    # Every later utterance is produced, where a clean run cuts it to within two VAD frames:
    # webrtcvad adapts to what it heard, and the new worker heard less of the call.
    clean_later = [(w.channel, w.utterance.start_ms) for w in clean
                   if w.utterance.start_ms > 6000]
    taken_over = [(w.channel, w.utterance.start_ms) for w in works]
    assert clean_later and all(
        any(c == channel and abs(s - start) <= 60 for c, s in taken_over)
        for channel, start in clean_later)


def test_a_leg_becomes_user_from_the_chunk_that_says_so() -> None:
    """After client:joinCall, ingest publishes the agent leg's samples with role ``user``:
    utterances that start after the switch are the user's, those before keep ``assistant``."""
    samples, rate = read_wav(SPEECH / "call_stereo_8k.wav")
    chunker = Chunker(call_id="call-j", rate=rate, roles=("other", "assistant"), chunk_ms=100)
    half = len(samples) // 2
    chunks: list[AudioChunk] = []
    for start in range(0, len(samples), 160):
        if start == half - half % 160:
            chunks += chunker.set_role(1, "user")
        part = samples[start:start + 160]
        chunks += chunker.push([part[:, ch].tobytes() for ch in range(2)])
    chunks += chunker.close()
    switch_ms = (half - half % 160) * 1000 // rate
    assert {c.role for c in chunks if c.channel == 1} == {"assistant", "user"}

    tracker = CallTracker()
    tracker.on_started(started("call-j"))
    works, records = run(tracker, chunks)
    agent = [(w.utterance.start_ms, w.role) for w in works if w.channel == 1]
    assert {role for _, role in agent} == {"assistant", "user"}, agent
    for start_ms, role in agent:
        assert role == ("user" if start_ms >= switch_ms else "assistant"), (start_ms, agent)
    assert {w.role for w in works if w.channel == 0} == {"other"}
    by_id = {r["id"]: r["role"] for r in records if r["type"] == "transcript"}
    assert {by_id[w.id] for w in works if w.channel == 1} == {"assistant", "user"}


def _caller_with_pause(pause_ms: int) -> list[AudioChunk]:
    """caller.wav's two sentences with the pause between them cut to ``pause_ms``."""
    samples, rate = read_wav(SPEECH / "caller.wav")
    first_end, second_start = int(2.56 * rate), int(3.35 * rate)
    mono = np.concatenate([samples[:first_end, 0],
                           np.zeros(pause_ms * rate // 1000, dtype=samples.dtype),
                           samples[second_start:, 0], np.zeros(rate, dtype=samples.dtype)])
    chunker = Chunker(call_id="call-p", rate=rate, roles=("other",), chunk_ms=100)
    return chunker.push([mono.tobytes()]) + chunker.close()


@pytest.mark.parametrize("interim_ms", [0, 600])
def test_an_early_decode_is_the_final_only_when_no_speech_followed(interim_ms: int) -> None:
    """A pause long enough to settle the tail but too short to close the utterance gets an
    early decode; speech goes on, so the final (both sentences) is decoded itself, and the
    early text was an interim (when interims are on). The early decode after the last
    sentence is exactly that final's audio: it is the final."""
    tracker = CallTracker(VadConfig(interim_ms=interim_ms))
    finals: list[DecodeWork] = []
    early: list[DecodeWork] = []
    interims: list[dict[str, Any]] = []
    tracker.on_started(started("call-p", channels=1))
    for chunk in _caller_with_pause(400):
        jobs, _ = tracker.on_audio(chunk)
        for key in list(tracker.early):
            work = tracker.early_work(key)
            assert work is not None and work.kind == "early"
            early.append(work)
            result = AsrResult(text=f"early {len(early)}", words=(), decode_s=0.0,
                               suppressed=())
            interims += [r for r in tracker.on_transcribed(work, result)
                         if r["type"] == "transcript:interim"]
        finals += jobs
    assert len(early) == 2 and len(finals) == 1
    [final] = finals
    pause, last = early
    assert pause.id == last.id == final.id  # one utterance: the pause did not close it
    assert pause.utterance.end_ms < final.utterance.end_ms == last.utterance.end_ms
    assert last.utterance.pcm == final.utterance.pcm
    assert [r["msg"] for r in interims] == (["early 1", "early 2"] if interim_ms else [])
    # The pause committed the words before it, all but the last one.
    assert [r["stable"] for r in interims] == (["early", "early"] if interim_ms else [])
    reused = tracker.reusable(final)
    assert reused is not None and reused.text == "early 2"
    assert tracker.reusable(final) is None  # taken once


def test_a_sentence_that_ends_before_a_pause_closes_at_the_pause() -> None:
    """An early decode made in a pause commits its words but the last; a sentence end among
    them closes that sentence as a final right away (cut where whisper's word times put it),
    and the rest of the turn goes on as an utterance of its own."""
    tracker = CallTracker(VadConfig(interim_ms=600))
    tracker.on_started(started("call-p", channels=1))
    spoken = [("My", 0.2, 0.4), ("internet", 0.4, 0.8), ("is", 0.8, 1.0), ("not", 1.1, 1.3),
              ("working.", 1.3, 2.1), ("Today", 2.2, 2.4), ("again.", 2.4, 2.5)]
    records: list[dict[str, Any]] = []
    early: DecodeWork | None = None
    for chunk in _caller_with_pause(400):
        tracker.on_audio(chunk)
        if tracker.early and early is None:
            early = tracker.early_work(next(iter(tracker.early)))
            assert early is not None
            result = AsrResult(text=" ".join(w for w, _, _ in spoken),
                               words=tuple(Word(*w) for w in spoken), decode_s=0.0,
                               suppressed=(), words_for_close=True)
            records = tracker.on_transcribed(early, result)
    assert early is not None
    final, rest = records
    assert final["type"] == "transcript" and final["msg"] == "My internet is not working."
    assert final["id"] == early.id
    cut = final["audioEndMs"]
    # at the quietest frame near the word times (VAD frames are 30 ms)
    assert abs(cut - (early.utterance.start_ms + 2150)) <= CUT_SEARCH_MS + 30
    assert rest["type"] == "transcript:interim" and rest["msg"] == "Today again."
    assert rest["audioStartMs"] == cut and rest["stable"] == ""


def test_words_aligned_after_the_speech_are_never_shown_or_committed() -> None:
    """An interim whose hypothesis runs on past the last voiced frame (whisper inventing a
    continuation in the trailing silence) shows and commits only the words said in speech;
    the early decode made in the pause, which would commit all its words but the last, too."""
    tracker = CallTracker(VadConfig(interim_ms=600))
    tracker.on_started(started("call-p", channels=1))
    records: list[dict[str, Any]] = []
    for chunk in _caller_with_pause(400):
        tracker.on_audio(chunk)
        if tracker.early and not records:
            early = tracker.early_work(next(iter(tracker.early)))
            assert early is not None
            voiced_s = (early.utterance.voiced_end_ms - early.utterance.start_ms) / 1000
            spoken = [("My", 0.2, 0.4), ("internet", 0.4, 0.8), ("is", 0.8, 1.0),
                      ("down", 1.0, voiced_s - 0.1),  # then words in no speech:
                      ("The", voiced_s + 0.5, voiced_s + 0.6), ("first", voiced_s + 0.6, 9.0)]
            result = AsrResult(text=" ".join(w for w, _, _ in spoken),
                               words=tuple(Word(*w) for w in spoken), decode_s=0.0,
                               suppressed=(), words_for_close=True)
            records = tracker.on_transcribed(early, result)
    [interim] = records
    assert interim["type"] == "transcript:interim"
    assert interim["msg"] == "My internet is down" and interim["stable"] == "My internet is"
