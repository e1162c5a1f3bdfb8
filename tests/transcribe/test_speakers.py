"""Speaker separation of mixed calls: the GE2E encoder in numpy, the online clustering, the
split of a final at a change of speaker, the rule that finals stand, and a mixed call without
the ``speakers`` extra. Voice prints are the real encoder's, on the committed two-voice call
(``scripts/make_speaker_fixtures.py``)."""

from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import logging
import time
import wave
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY

from tests.conftest import FIXTURES
from workers.records import AudioChunk, CallStarted
from workers.transcribe.asr import AsrResult, DecodeRequest, Word
from workers.transcribe.calls import CallTracker, DecodeWork
from workers.transcribe.separation import SpeakerStage, load_encoder, voices_of
from workers.transcribe.speakers import (
    SeparationConfig,
    SpeakerClusters,
    Voices,
    first_from_metadata,
    may_change_speaker,
    spread_pair,
    turns_taken,
    two_means,
    windows,
)
from workers.transcribe.vad import Utterance
from workers.transcribe.voices import (
    VoiceEncoder,
    VoicesUnavailable,
    mel_filters,
    one_blas_thread,
)

FOLDER = FIXTURES / "speakers"
MANIFEST = json.loads((FOLDER / "manifest.json").read_text())
RATE = 16000


def call_pcm() -> bytes:
    with wave.open(str(FOLDER / "mixed_16k.wav")) as w:
        assert (w.getframerate(), w.getnchannels()) == (RATE, 1)
        return w.readframes(w.getnframes())


PCM = call_pcm()
TURNS = MANIFEST["turns"]


def turn_pcm(index: int) -> bytes:
    turn = TURNS[index]
    return PCM[round(turn["start_s"] * RATE) * 2:round(turn["end_s"] * RATE) * 2]


@pytest.fixture(scope="module")
def encoder() -> VoiceEncoder:
    found, why = load_encoder()
    assert found is not None, f"the 'speakers' extra is needed by these tests: {why}"
    return found


def test_windows_cover_the_utterance() -> None:
    assert windows(300) == []
    assert windows(1200) == [(0, 1200)]
    spans = windows(3200)
    assert spans[0] == (0, 1500) and spans[-1] == (1700, 3200)
    assert all(e - s == 1500 for s, e in spans)


def test_mel_filters_are_triangles_normalised_by_width() -> None:
    filters = mel_filters()
    assert filters.shape == (40, 201)
    assert (filters >= 0).all() and (filters.sum(axis=1) > 0).all()
    # Slaney normalisation: each filter's area is about 1 (in Hz times weight), so the
    # peaks fall as the filters widen.
    assert filters[0].max() > filters[-1].max()


def test_missing_weights_say_which_extra(tmp_path: Any) -> None:
    with pytest.raises(VoicesUnavailable, match="not a readable GE2E checkpoint"):
        VoiceEncoder.load(tmp_path / "absent.pt")
    path = tmp_path / "bad.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(VoicesUnavailable):
        VoiceEncoder.load(path)


def test_voice_prints_tell_the_two_voices_apart(encoder: VoiceEncoder) -> None:
    prints = [voices_of(encoder, turn_pcm(i)).vectors.mean(axis=0) for i in range(len(TURNS))]
    prints = [p / np.linalg.norm(p) for p in prints]
    same = [float(prints[i] @ prints[j]) for i in range(len(TURNS))
            for j in range(i + 1, len(TURNS)) if TURNS[i]["speaker"] == TURNS[j]["speaker"]]
    different = [float(prints[i] @ prints[j]) for i in range(len(TURNS))
                 for j in range(i + 1, len(TURNS)) if TURNS[i]["speaker"] != TURNS[j]["speaker"]]
    assert min(same) > max(different) + 0.05, (same, different)


def test_each_turn_gets_its_speakers_role_first_voice_assistant(encoder: VoiceEncoder) -> None:
    clusters = SpeakerClusters(first="assistant")
    roles = [clusters.turns(voices_of(encoder, turn_pcm(i)), (), "other")[0].role
             for i in range(len(TURNS))]
    assert roles == [t["role"] for t in TURNS]
    assert clusters.count == 2


def test_the_first_voice_can_be_the_caller(encoder: VoiceEncoder) -> None:
    clusters = SpeakerClusters(first="other")
    roles = [clusters.turns(voices_of(encoder, turn_pcm(i)), (), "other")[0].role
             for i in range(len(TURNS))]
    assert roles == ["other", "assistant"] * 3
    assert first_from_metadata({"speakersFirst": "other"}) == "other"
    assert first_from_metadata({"speakersFirst": "bot"}) is None


# ---- the tracker: finals of a separated call -----------------------------------------------

def tracker(**config: Any) -> CallTracker:
    return CallTracker(separation=SeparationConfig(**config))


def start(t: CallTracker, call_id: str, *, mix: str = "mixed",
          metadata: dict[str, Any] | None = None) -> None:
    event = CallStarted(call_id=call_id, provider="bland", from_="", to="", direction="inbound",
                        rate=RATE, channels=1, mix=mix, roles=("other",),
                        metadata=metadata or {})
    t.on_mix(event)
    t.on_started(event)
    chunk = AudioChunk(call_id, 0, 0, RATE, "other", 0, bytes(3200), channels=1)
    t.on_audio(chunk)


def work(call_id: str, start_ms: int, pcm: bytes, kind: str = "final") -> DecodeWork:
    end = start_ms + len(pcm) // 32
    return DecodeWork(call_id, 0, "other", Utterance(start_ms=start_ms, end_ms=end,
                                                     voiced_end_ms=end, pcm=pcm,
                                                     forced_cut=False),
                      time.time(), kind=kind)  # type: ignore[arg-type]


def result(text: str, voices: Voices | None, words: tuple[Word, ...] = ()) -> AsrResult:
    return AsrResult(text=text, words=words, decode_s=0.0, suppressed=(), voices=voices)


def final_of(t: CallTracker, encoder: VoiceEncoder, index: int) -> list[dict[str, Any]]:
    turn = TURNS[index]
    pcm = turn_pcm(index)
    w = work("c1", round(turn["start_s"] * 1000), pcm)
    assert t.separates(w)
    return t.on_transcribed(w, result(turn["text"], voices_of(encoder, pcm)))


def test_finals_of_a_mixed_call_carry_their_speakers_role(encoder: VoiceEncoder) -> None:
    t = tracker()
    start(t, "c1")
    records = [r for i in range(len(TURNS)) for r in final_of(t, encoder, i)]
    assert [r["role"] for r in records] == [turn["role"] for turn in TURNS]
    assert [r["id"] for r in records] == [f"c1:0:{round(turn['start_s'] * 1000)}"
                                          for turn in TURNS]


def test_a_final_spanning_a_change_of_speaker_is_split_between_words(
        encoder: VoiceEncoder) -> None:
    t = tracker()
    start(t, "c1")
    for i in range(4):  # the call so far: both voices known
        final_of(t, encoder, i)
    # The agent's sentence and the caller's reply 0.15 s after it: one utterance.
    agent, caller = turn_pcm(4), turn_pcm(5)
    gap = bytes(round(0.15 * RATE) * 2)
    pcm = agent + gap + caller
    text = f"{TURNS[4]['text']} {TURNS[5]['text']}"
    words = text.split()
    n_agent = len(TURNS[4]["text"].split())
    agent_s, caller_s = len(agent) / 2 / RATE, len(caller) / 2 / RATE
    times = [(i * agent_s / n_agent, (i + 1) * agent_s / n_agent) for i in range(n_agent)]
    n_caller = len(words) - n_agent
    offset = agent_s + 0.15
    times += [(offset + i * caller_s / n_caller, offset + (i + 1) * caller_s / n_caller)
              for i in range(n_caller)]
    aligned = tuple(Word(w, round(s, 3), round(e, 3)) for w, (s, e) in zip(words, times,
                                                                            strict=True))
    w = work("c1", 20_000, pcm)
    records = t.on_transcribed(w, result(text, voices_of(encoder, pcm), aligned))
    assert [(r["role"], r["msg"]) for r in records] == [
        ("assistant", TURNS[4]["text"]), ("other", TURNS[5]["text"])]
    first, second = records
    assert first["id"] == "c1:0:20000" and first["audioStartMs"] == 20_000
    # The second turn starts between the two sentences, and is named after its start.
    assert 20_000 + agent_s * 1000 <= second["audioStartMs"] <= 20_000 + offset * 1000 + 1
    assert second["id"] == f"c1:0:{second['audioStartMs']}"
    assert second["offset"] == round(second["audioStartMs"] / 1000, 3)
    assert first["audioEndMs"] == second["audioStartMs"]
    # Deterministic: the same final again (a replay) gives the same records.
    t2 = tracker()
    start(t2, "c1")
    for i in range(4):
        final_of(t2, encoder, i)
    again = t2.on_transcribed(w, result(text, voices_of(encoder, pcm), aligned))
    strip = [{k: v for k, v in r.items() if k != "producedAtMs"} for r in records]
    assert strip == [{k: v for k, v in r.items() if k != "producedAtMs"} for r in again]


def test_roles_are_guessed_while_interim_and_stand_once_final(encoder: VoiceEncoder) -> None:
    t = tracker()
    start(t, "c1")
    greeting = final_of(t, encoder, 0)
    assert greeting[0]["role"] == "assistant"
    # The caller's reply, still open: its interim carries the channel's latest role...
    reply = TURNS[1]
    interim = t.on_transcribed(work("c1", round(reply["start_s"] * 1000), turn_pcm(1),
                                    kind="interim"), result("My internet", None))
    assert [(r["type"], r["role"]) for r in interim] == [("transcript:interim", "assistant")]
    # ...and its final, with its voice prints, the caller's: revised while interim.
    final = final_of(t, encoder, 1)
    assert [(r["type"], r["role"]) for r in final] == [("transcript", "other")]
    # Finals stand: more of the caller's voice moves the centroids, never a final again.
    later = [r for i in (3, 5) for r in final_of(t, encoder, i)]
    assert {r["id"] for r in later}.isdisjoint({greeting[0]["id"], final[0]["id"]})
    assert all(r["type"] == "transcript" for r in later)


def test_a_stereo_call_is_not_separated() -> None:
    t = tracker()
    start(t, "c2", mix="stereo")
    w = work("c2", 0, turn_pcm(0))
    assert not t.separates(w)
    assert t.on_transcribed(w, result("hello there", None))[0]["role"] == "other"


def test_provider_metadata_names_the_first_voice(encoder: VoiceEncoder) -> None:
    t = tracker()
    start(t, "c1", metadata={"speakersFirst": "other"})
    assert final_of(t, encoder, 0)[0]["role"] == "other"
    assert final_of(t, encoder, 1)[0]["role"] == "assistant"


def unavailable_count() -> float:
    return REGISTRY.get_sample_value("callscribe_transcribe_speakers_unavailable_total") or 0.0


def test_without_the_extra_a_mixed_call_keeps_its_role_and_says_so_once(
        caplog: pytest.LogCaptureFixture) -> None:
    config = SeparationConfig(available=False, unavailable="the speaker encoder's weights "
                              "are not installed")
    t = CallTracker(separation=config)
    before = unavailable_count()
    with caplog.at_level(logging.WARNING, logger="workers.transcribe.calls"):
        for call in ("m1", "m2"):
            start(t, call)
    told = [r for r in caplog.records if "speakers are not separated" in r.getMessage()]
    assert len(told) == 1 and "weights are not installed" in told[0].getMessage()
    assert unavailable_count() == before + 2
    w = work("m1", 0, turn_pcm(0))
    assert not t.separates(w)
    assert t.on_transcribed(w, result("Thank you for calling.", None))[0]["role"] == "other"


def test_load_encoder_reports_a_missing_extra() -> None:
    def missing() -> VoiceEncoder:
        raise VoicesUnavailable("the speaker encoder's weights are not installed; expected "
                                "the 'speakers' extra")

    found, why = load_encoder(missing)
    assert found is None and "'speakers' extra" in why


def test_voices_of_a_short_utterance_are_none(encoder: VoiceEncoder) -> None:
    found = voices_of(encoder, bytes(RATE // 5 * 2))
    assert len(found) == 0
    clusters = SpeakerClusters()
    clusters.last_role = "other"
    assert clusters.turns(found, (), "other")[0].role == "other"
    assert dataclasses.replace(found, word_times=((0, 1),)).word_times == ((0, 1),)


# ---- re-clustering (synthetic voice prints) ----------------------------------------------

def synthetic_voices(similarity: float, seed: int = 3) -> tuple[Any, Any, Any]:
    """Two voices whose centres have cosine ``similarity``, and a maker of ``n`` windows of
    one of them (each within about 0.9 of its centre)."""
    rng = np.random.default_rng(seed)
    a, other = rng.normal(size=(2, 256))
    a /= np.linalg.norm(a)
    other -= (other @ a) * a
    other /= np.linalg.norm(other)
    b = similarity * a + np.sqrt(1 - similarity ** 2) * other

    def utterance(centre: Any, n: int) -> Voices:
        noise = rng.normal(size=(n, 256))
        noise /= np.linalg.norm(noise, axis=1, keepdims=True)
        vectors = 0.9 * centre + np.sqrt(1 - 0.81) * noise
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return Voices(tuple((i * 500, i * 500 + 1500) for i in range(n)), vectors)

    return a, b, utterance


def test_turns_taken_counts_only_long_runs() -> None:
    assert turns_taken([0] * 6) == 0
    assert turns_taken([0] * 4 + [1] * 4) == 1
    assert turns_taken([0] * 4 + [1] * 4 + [0] * 4) == 2
    assert turns_taken([0] * 4 + [1, 1, 0, 1, 0] + [0] * 4) == 0  # a blip is not a turn


def test_two_means_separates_two_voices_from_the_spread_pair() -> None:
    a, b, utterance = synthetic_voices(0.6)
    vectors = np.concatenate([utterance(a, 8).vectors, utterance(b, 8).vectors])
    labels, centroids = two_means(vectors, spread_pair(vectors))
    assert len(set(labels[:8].tolist())) == 1 and len(set(labels[8:].tolist())) == 1
    assert labels[0] != labels[8]
    assert float(centroids[labels[0]] @ a) > 0.95 and float(centroids[labels[8]] @ b) > 0.95


def test_a_second_voice_close_to_the_first_is_found_once_the_first_speaks_again() -> None:
    """The 8 kHz failure: the second voice never falls below the new-speaker similarity of
    the first's centroid, so it is found by clustering the call's windows again, once the
    voices have taken turns; the first voice keeps the first role."""
    a, b, utterance = synthetic_voices(0.8)
    clusters = SpeakerClusters(first="assistant")
    assert set(clusters.assign(utterance(a, 8))) == {0}
    assert set(clusters.assign(utterance(b, 8))) == {0}  # too close for the online rule
    assert clusters.count == 1
    assert set(clusters.assign(utterance(a, 8))) == {0}
    assert clusters.count == 2
    turns = clusters.turns(utterance(b, 6), (), fallback="assistant")
    assert [t.role for t in turns] == ["other"]
    assert [t.role for t in clusters.turns(utterance(a, 6), (), fallback="other")] == [
        "assistant"]


def test_one_voice_drifting_inside_an_utterance_stays_one_speaker() -> None:
    """Halves of one utterance can differ as much as two close voices; without the first
    half's voice coming back, that is not a second speaker."""
    first, second, utterance = synthetic_voices(0.85)
    drifting = utterance(first, 6)
    later = utterance(second, 6)
    both = Voices(drifting.spans + tuple((s + 3000, e + 3000) for s, e in later.spans),
                  np.concatenate([drifting.vectors, later.vectors]))
    clusters = SpeakerClusters()
    assert set(clusters.assign(both)) == {0} and clusters.count == 1


def test_an_utterance_holding_both_voices_no_longer_drags_a_centroid() -> None:
    """With two speakers, the call's windows are clustered again after each utterance: the
    windows of the second voice inside the first speaker's utterance go to the second."""
    a, b, utterance = synthetic_voices(0.5)
    clusters = SpeakerClusters()
    clusters.assign(utterance(a, 8))
    clusters.assign(utterance(b, 8))
    assert clusters.count == 2
    mixed_a, mixed_b = utterance(a, 4), utterance(b, 4)
    mixed = Voices(mixed_a.spans + tuple((s + 2000, e + 2000) for s, e in mixed_b.spans),
                   np.concatenate([mixed_a.vectors, mixed_b.vectors]))
    assert clusters.assign(mixed) == [0] * 4 + [1] * 4


# ---- which decodes are aligned -----------------------------------------------------------

def test_may_change_speaker_against_the_speakers_known() -> None:
    a, b, utterance = synthetic_voices(0.5)
    centroids = np.stack([a, b])
    assert not may_change_speaker(utterance(a, 6), centroids)
    assert not may_change_speaker(utterance(b, 6), centroids)
    both = Voices(utterance(a, 3).spans + utterance(b, 3).spans,
                  np.concatenate([utterance(a, 3).vectors, utterance(b, 3).vectors]))
    assert may_change_speaker(both, centroids)
    assert may_change_speaker(utterance(a, 6), centroids[:1])  # a second voice may start
    assert may_change_speaker(utterance(a, 6), None)
    assert not may_change_speaker(utterance(a, 1), None)  # one window: one speaker
    # A window nearly as near either speaker: unsure, so aligned.
    middle = (a + b) / np.linalg.norm(a + b)
    unsure = Voices(((0, 1500), (500, 2000)), np.stack([a, middle]))
    assert may_change_speaker(unsure, centroids)


async def test_only_finals_whose_voice_prints_change_speaker_are_aligned(
        encoder: VoiceEncoder) -> None:
    """The stage asks whisper to align a mixed call's final only when its voice prints (the
    committed two-voice call's) may change speaker; interims never for that."""
    clusters = SpeakerClusters()
    for i in range(4):
        clusters.assign(voices_of(encoder, turn_pcm(i)))
    centroids = clusters.centroids()
    assert centroids is not None and len(centroids) == 2
    one_voice, two_voices = turn_pcm(4), turn_pcm(4) + turn_pcm(5)
    asked: list[bool | None] = []

    async def decode(requests: Any) -> list[AsrResult]:
        asked.extend(None if r.turns is None else r.turns() for r in requests)
        return [AsrResult(text="", words=(), decode_s=0.0, suppressed=()) for _ in requests]

    stage = SpeakerStage(encoder)
    try:
        results = await stage.wrap(decode)([
            DecodeRequest(one_voice, speakers=True, centroids=centroids),
            DecodeRequest(two_voices, speakers=True, centroids=centroids),
            DecodeRequest(two_voices, speakers=True, kind="interim"),
            DecodeRequest(two_voices)])
    finally:
        stage.close()
    assert asked == [False, True, None, None]
    assert [r.voices is not None for r in results] == [True, True, True, False]


def test_voice_prints_use_one_blas_thread() -> None:
    """Numpy's OpenBLAS (the wheels') can be told to use one core in the voice thread (in a
    thread of its own here: the setting is the calling thread's, and other tests decode in
    this one)."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as executor:
        assert executor.submit(one_blas_thread).result()
