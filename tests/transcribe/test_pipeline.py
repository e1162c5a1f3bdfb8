"""CallTracker + DecodePipeline with the real tiny.en on the committed speech fixtures, without
Kafka: ordering, interims and stability, acknowledgement, and a restart mid-call."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from tests.conftest import FIXTURES
from tests.test_end_to_end import wer
from tests.transcribe.test_vad import pcm_16k
from workers.ingest.chunker import Chunker
from workers.records import AudioChunk, CallStarted, dumps
from workers.simulate.jambonz import read_wav
from workers.transcribe.asr import DecodeRequest, Transcriber
from workers.transcribe.calls import CallTracker
from workers.transcribe.channel import VadConfig
from workers.transcribe.pipeline import Decode, DecodePipeline
from workers.transcribe.produced import fold


@pytest.fixture(scope="module")
def transcriber() -> Iterator[Transcriber]:
    model = Transcriber(cpu_threads=2)
    yield model
    model.close()


def stereo_chunks(call_id: str) -> list[AudioChunk]:
    samples, rate = read_wav(FIXTURES / "speech" / "call_stereo_8k.wav")
    chunker = Chunker(call_id=call_id, rate=rate, roles=("other", "assistant"), chunk_ms=100)
    chunks: list[AudioChunk] = []
    for index in range(0, len(samples), 160):
        block = samples[index:index + 160]
        chunks += chunker.push([block[:, 0].tobytes(), block[:, 1].tobytes()])
    return chunks + chunker.close()


def started(call_id: str) -> CallStarted:
    return CallStarted(call_id=call_id, provider="test", from_="+15551234567", to="",
                       direction="inbound", rate=8000, channels=2, mix="stereo",
                       roles=("other", "assistant"))


class Harness:
    """Feeds chunks the way the agent does and records what the pipeline sends and acks."""

    def __init__(self, transcriber: Transcriber, *, interim_ms: int = 0,
                 interims_watched_only: bool = False, decode: Decode | None = None) -> None:
        self.tracker = CallTracker(VadConfig(interim_ms=interim_ms),
                                   interims_watched_only=interims_watched_only)
        self.sent: list[dict[str, Any]] = []
        self.acked: list[Any] = []
        self.pipeline = DecodePipeline(self.tracker, decode=decode or transcriber.decode,
                                       send=self._send, ack=self._ack)

    async def _send(self, call_id: str, records: list[dict[str, Any]]) -> None:
        self.sent.extend(records)

    async def _ack(self, tokens: list[Any]) -> None:
        self.acked.extend(tokens)

    async def feed(self, chunks: list[tuple[int, AudioChunk]], *, paced: bool = False) -> None:
        for token, chunk in chunks:
            jobs, release = self.tracker.on_audio(chunk, token)
            for job in jobs:
                await self.pipeline.submit_work(job)
            self.pipeline.poke()
            if self.tracker.finish_if_complete(chunk.call_id):
                await self.pipeline.submit_finish(chunk.call_id, release)
            else:
                await self.pipeline.submit_ack(release)
            if paced:
                await self.pipeline.wait_idle(interims=True)
        await self.pipeline.wait_idle()

    def finals(self) -> list[tuple[str, str]]:
        return [(r["id"], r["msg"]) for r in self.sent if r["type"] == "transcript"]


async def run(harness: Harness, coroutine: Any) -> None:
    runner = asyncio.create_task(harness.pipeline.run())
    try:
        await coroutine
    finally:
        runner.cancel()


async def test_records_keep_livecalls_order_and_every_chunk_is_acked(
        transcriber: Transcriber) -> None:
    chunks = list(enumerate(stereo_chunks("order")))
    harness = Harness(transcriber)

    async def scenario() -> None:
        await harness.feed(chunks[:30])  # audio first: its transcripts wait for event:start
        await harness.pipeline.submit_start(started("order"), ["start-event"])
        await harness.feed(chunks[30:])

    await run(harness, scenario())
    types = [r["type"] for r in harness.sent]
    assert types[0] == "event:start" and types[-1] == "event:callEnd"
    assert set(types[1:-1]) == {"transcript"}
    assert harness.sent[0]["phone"] == "+15551234567"
    assert sorted(harness.acked, key=str) == sorted([*range(len(chunks)), "start-event"], key=str)
    roles = {r["role"] for r in harness.sent if r["type"] == "transcript"}
    assert roles == {"other", "assistant"}
    assert "order" not in harness.tracker.calls


async def test_interims_grow_a_stable_prefix_and_the_final_replaces_them(
        transcriber: Transcriber) -> None:
    chunks = list(enumerate(stereo_chunks("interim")))
    harness = Harness(transcriber, interim_ms=500)

    async def scenario() -> None:
        await harness.pipeline.submit_start(started("interim"), [])
        await harness.feed(chunks, paced=True)

    await run(harness, scenario())
    interims = [r for r in harness.sent if r["type"] == "transcript:interim"]
    assert interims, "a paced call must produce interim transcripts"
    finals = {r["id"]: r for r in harness.sent if r["type"] == "transcript"}
    for utterance_id in {r["id"] for r in interims}:
        mine = [r for r in interims if r["id"] == utterance_id]
        assert [r["revision"] for r in mine] == sorted(r["revision"] for r in mine)
        for earlier, later in itertools.pairwise(mine):
            assert later["stable"].startswith(earlier["stable"])  # stable text never changes
            assert later["msg"].startswith(later["stable"])
        assert utterance_id in finals  # every interim utterance gets its final
        last_interim = harness.sent.index(mine[-1])
        assert last_interim < harness.sent.index(finals[utterance_id])


async def test_a_worker_restarted_mid_call_produces_each_utterance_once(
        transcriber: Transcriber) -> None:
    chunks = list(enumerate(stereo_chunks("restart")))
    clean = Harness(transcriber)

    async def whole_call() -> None:
        await clean.pipeline.submit_start(started("restart"), [])
        await clean.feed(chunks)

    await run(clean, whole_call())

    first = Harness(transcriber)

    async def until_crash() -> None:
        await first.pipeline.submit_start(started("restart"), ["start"])
        await first.feed(chunks[:140])  # about 7 s of the 11 s call: mid-utterance

    await run(first, until_crash())
    committed = [t for t in first.acked if t != "start"]
    # Offsets commit up to the first unacknowledged record: replay from there.
    resume = next(i for i in range(len(chunks)) if i not in committed)
    assert 0 < resume < 140
    second = Harness(transcriber)
    await run(second, second.feed(chunks[resume:]))

    finals = [r for r in first.sent + second.sent if r["type"] == "transcript"]
    assert len({r["id"] for r in finals}) == len(finals)
    for one, other in itertools.combinations(finals, 2):  # no utterance, nor part, twice
        assert (one["channel"] != other["channel"] or one["voicedEndMs"] <= other["audioStartMs"]
                or other["voicedEndMs"] <= one["audioStartMs"])
    for role in ("other", "assistant"):  # and nothing lost
        said = [r["msg"] for r in finals if r["role"] == role]
        clean_said = [r["msg"] for r in clean.sent if r.get("role") == role
                      and r["type"] == "transcript"]
        assert wer(clean_said, said) <= 0.1, (said, clean_said)
    assert [r["type"] for r in second.sent][-1] == "event:callEnd"
    assert "event:start" not in [r["type"] for r in second.sent]


async def test_a_takeover_replayed_from_inside_a_transcribed_utterance_repeats_none_of_it(
        transcriber: Transcriber) -> None:
    """The replay of a partition can begin before the end of an utterance already transcribed
    (the first unacknowledged record is the other channel's lead-in): knowing where each
    channel's last final ends (read from the transcripts topic at assignment), the new owner
    cuts nothing of it again, and still transcribes all that follows."""
    chunks = list(enumerate(stereo_chunks("inside")))
    first = Harness(transcriber)

    async def until_crash() -> None:
        await first.pipeline.submit_start(started("inside"), ["start"])
        await first.feed(chunks[:140])

    await run(first, until_crash())
    finals = [r for r in first.sent if r["type"] == "transcript"]
    done = finals[0]  # replay from the middle of the first transcribed utterance
    middle = (done["audioStartMs"] + done["audioEndMs"]) // 2
    resume = next(i for i, (_, c) in enumerate(chunks)
                  if c.channel == done["channel"] and c.t_ms >= middle)

    async def replay(harness: Harness) -> list[dict[str, Any]]:
        await run(harness, harness.feed(chunks[resume:]))
        return [r for r in harness.sent if r["type"] == "transcript"]

    def overlaps(again: list[dict[str, Any]]) -> list[tuple[str, str]]:
        return [(a["id"], b["id"]) for a in finals for b in again
                if a["channel"] == b["channel"] and a["id"] != b["id"]
                and min(a["audioEndMs"], b["audioEndMs"])
                - max(a["audioStartMs"], b["audioStartMs"]) >= 100]

    unaware = Harness(transcriber)
    repeated = await replay(unaware)
    assert overlaps(repeated)  # the tail cut again, under a new id
    aware = Harness(transcriber)
    aware.tracker.note_produced(fold(dumps(r) for r in first.sent))
    again = await replay(aware)
    assert overlaps(again) == []
    before = {r["id"] for r in finals} | {b for _, b in overlaps(repeated)}
    assert {r["id"] for r in again} == {r["id"] for r in repeated} - before  # none lost
    assert [r["type"] for r in aware.sent][-1] == "event:callEnd"


async def test_audio_whose_transcripts_wait_for_the_call_start_stays_unacknowledged(
        transcriber: Transcriber) -> None:
    """Transcripts wait for ``event:start``; until it goes out, the audio they came from is
    not acknowledged (were it, a worker dying meanwhile would lose them)."""
    chunks = list(enumerate(stereo_chunks("late-start")))
    harness = Harness(transcriber)

    acked_before: list[Any] = []

    async def start_late() -> None:
        await harness.feed(chunks[:140])
        assert harness.sent == []  # finals made, held for event:start
        acked_before.extend(harness.acked)
        await harness.pipeline.submit_start(started("late-start"), ["start"])
        await harness.pipeline.wait_idle()

    await run(harness, start_late())
    assert [r["type"] for r in harness.sent][:2] == ["event:start", "transcript"]
    finals = [r for r in harness.sent if r["type"] == "transcript"]
    assert finals and "start" in harness.acked
    # Offsets commit up to the first unacknowledged record: before event:start, that was no
    # later than the audio of the first held final, so a restart would have replayed it.
    resume = next(i for i in range(len(chunks)) if i not in acked_before)
    assert chunks[resume][1].t_ms <= finals[0]["audioStartMs"]
    settled = next(i for i in range(len(chunks)) if i not in harness.acked)
    assert chunks[settled][1].t_ms > finals[-1]["audioStartMs"]  # sent: acknowledged


async def test_a_call_moved_to_another_worker_leaves_nothing_behind(
        transcriber: Transcriber) -> None:
    """A rebalance gave the call's partition to another worker: its queued jobs produce and
    acknowledge nothing (the new owner replays that audio), and no state is left that an idle
    timeout would later end with ``event:callEnd``."""
    harness = Harness(transcriber)
    tracker, pipeline = harness.tracker, harness.pipeline
    await pipeline.submit_start(started("moved"), ["start"])
    for token, chunk in list(enumerate(stereo_chunks("moved")))[:140]:
        jobs, release = tracker.on_audio(chunk, token)
        for job in jobs:
            await pipeline.submit_work(job)
        await pipeline.submit_ack(release)
    assert pipeline.depth > 1  # the start and at least one final wait to run
    pipeline.drop({"moved"})
    assert "moved" not in tracker.calls and not tracker.wanted and not tracker.early
    await run(harness, pipeline.wait_idle())
    assert harness.sent == []
    assert "start" not in harness.acked  # held with the first job: never acknowledged
    assert tracker.idle_calls(0) == []


async def test_silence_and_line_noise_become_no_words(transcriber: Transcriber) -> None:
    samples, rate = read_wav(FIXTURES / "speech" / "silence_noise_8k.wav")
    chunker = Chunker(call_id="quiet", rate=rate, roles=("other",), chunk_ms=100)
    chunks = chunker.push([samples[:, 0].tobytes()]) + chunker.close()
    harness = Harness(transcriber, interim_ms=500)

    async def scenario() -> None:
        await harness.pipeline.submit_start(started("quiet"), [])
        await harness.feed(list(enumerate(chunks)), paced=True)

    await run(harness, scenario())
    assert [r["type"] for r in harness.sent] == ["event:start", "event:callEnd"], harness.sent


async def test_word_timestamps_are_on_the_call_timeline() -> None:
    """CALLSCRIBE_WORD_TIMESTAMPS: each final carries its words, in order, inside its
    utterance, in seconds from the call's start."""
    model = Transcriber(cpu_threads=2, word_timestamps=True)
    try:
        chunks = list(enumerate(stereo_chunks("words")))
        harness = Harness(model)

        async def scenario() -> None:
            await harness.pipeline.submit_start(started("words"), [])
            await harness.feed(chunks)

        await run(harness, scenario())
    finally:
        model.close()
    finals = [r for r in harness.sent if r["type"] == "transcript"]
    assert len(finals) >= 4
    for final in finals:
        words = final["words"]
        assert [w["word"] for w in words] and " ".join(w["word"] for w in words).lower() \
            .replace(",", "").replace(".", "") in final["msg"].lower().replace(",", "") \
            .replace(".", "")
        starts = [w["start"] for w in words]
        assert starts == sorted(starts)
        assert final["audioStartMs"] / 1000 - 0.05 <= starts[0]
        assert words[-1]["end"] <= final["audioEndMs"] / 1000 + 0.05
        assert all(w["start"] <= w["end"] for w in words)


def monologue_chunks(call_id: str, *, pause_s: float = 0.2) -> tuple[list[AudioChunk], str]:
    """The four fixture sentences spoken as one turn, 16 kHz mono, ``pause_s`` apart: shorter
    than the VAD's end-of-speech wait, so the VAD alone would make them one utterance."""
    manifest = json.loads((FIXTURES / "speech" / "manifest.json").read_text())
    pieces, texts = [np.zeros(8000, dtype=np.int16)], []
    pause = np.zeros(int(pause_s * 16000), dtype=np.int16)
    for name in ("caller.wav", "agent.wav"):
        samples, _ = read_wav(FIXTURES / "speech" / name)
        for sentence in manifest["files"][name]["tracks"][0]["sentences"]:
            begin, end = (round(sentence[k] * 16000) for k in ("start_s", "end_s"))
            pieces += [samples[begin:end, 0], pause]
            texts.append(sentence["text"])
    audio = np.concatenate([*pieces, np.zeros(8000, dtype=np.int16)])
    chunker = Chunker(call_id=call_id, rate=16000, roles=("other",), chunk_ms=100)
    return chunker.push([audio.tobytes()]) + chunker.close(), " ".join(texts)


async def test_continuous_speech_is_committed_and_closed_sentence_by_sentence(
        transcriber: Transcriber) -> None:
    chunks, said = monologue_chunks("talk")
    harness = Harness(transcriber, interim_ms=400)
    mono = CallStarted(call_id="talk", provider="test", from_="", to="", direction="inbound",
                       rate=16000, channels=1, mix="mono", roles=("other",))

    async def scenario() -> None:
        await harness.pipeline.submit_start(mono, [])
        await harness.feed(list(enumerate(chunks)), paced=True)

    await run(harness, scenario())
    finals = [r for r in harness.sent if r["type"] == "transcript"]
    # Sentences were closed as they were committed: one final each, not one 11 s block.
    assert len(finals) >= 3, [f["msg"] for f in finals]
    for one, after in itertools.pairwise(finals):  # contiguous, in order, never overlapping
        assert one["audioEndMs"] <= after["audioStartMs"]
        assert after["audioStartMs"] - one["audioEndMs"] <= 400
    assert wer([said], [" ".join(f["msg"] for f in finals)]) <= 0.15, finals
    for final in finals:  # a final begins with every word its interims called stable
        mine = [r for r in harness.sent if r["id"] == final["id"]
                and r["type"] == "transcript:interim"]
        assert mine, "each sentence was seen as an interim first"
        assert final["msg"].startswith(mine[-1]["stable"])
        assert harness.sent.index(mine[-1]) < harness.sent.index(final)
    ids = [r["id"] for r in harness.sent if r["type"] == "transcript"]
    assert len(ids) == len(set(ids))


async def test_each_decode_gets_the_smallest_window_of_its_kind(
        transcriber: Transcriber) -> None:
    samples, _ = read_wav(FIXTURES / "speech" / "caller.wav")
    sentence = samples[:16000 * 3, 0].tobytes()
    final, interim = await transcriber.decode([DecodeRequest(sentence, retry=True),
                                               DecodeRequest(sentence, kind="interim")])
    assert (final.window_s, interim.window_s) == (15, 10)
    assert final.text.lower().startswith("my internet is not")
    assert interim.text.lower().startswith("my internet is not")


async def test_utterances_of_different_calls_decoded_together_keep_their_own_words(
        transcriber: Transcriber) -> None:
    """A batch shares the encoder pass and the decoder's steps, never audio: each result holds
    its own utterance's words and none of the other's (a leak would be a privacy incident)."""
    caller, _ = read_wav(FIXTURES / "speech" / "caller.wav")
    agent, _ = read_wav(FIXTURES / "speech" / "agent.wav")
    first, second = caller[4800:41000, 0].tobytes(), agent[4800:43700, 0].tobytes()
    together = await transcriber.decode([DecodeRequest(first, retry=True),
                                         DecodeRequest(second, retry=True),
                                         DecodeRequest(first, prefix="My internet", retry=True)])
    assert "internet" in together[0].text.lower() and "internet" not in together[1].text.lower()
    assert "sorry" in together[1].text.lower() and "sorry" not in together[0].text.lower()
    assert together[2].text.startswith("My internet") and "sorry" not in together[2].text.lower()


@pytest.mark.parametrize("word_timestamps", [False, True])
def test_a_prefix_that_already_holds_every_word_adds_nothing(word_timestamps: bool) -> None:
    """Whether a decode goes through the batch (windows sized to the audio) or whisper's own
    loop (word timestamps on), what whisper adds after committed words that already cover the
    audio (the utterance started over, or a lone "...") is cut."""
    model = Transcriber(cpu_threads=2, word_timestamps=word_timestamps)
    try:
        pcm = pcm_16k("caller.wav")
        full = model.transcribe(pcm).text
        assert wer("my internet is not working today i tried to turn it off and on",
                   full) < 0.2, full
        assert model.transcribe(pcm, prefix=full).text == full
        [batched] = model.transcribe_many([DecodeRequest(pcm, prefix=full)])
        assert batched.text == full
    finally:
        model.close()


def test_a_prefix_holding_every_word_gets_no_invented_continuation(
        transcriber: Transcriber) -> None:
    """Given the whole sentence as its prefix, tiny.en goes on ("My internet is not working
    today. I am not working today."), the words aligned into the very end of the audio: the
    final holds the sentence once."""
    tracker = CallTracker(VadConfig())
    tracker.on_started(started("call-x"))
    work = next(job for chunk in stereo_chunks("call-x")
                for job in tracker.on_audio(chunk)[0] if job.channel == 0)
    pcm = work.utterance.pcm
    said = transcriber.transcribe_many([DecodeRequest(pcm)])[0].text
    assert wer("My internet is not working today.", said) < 0.2, said
    [result] = transcriber.transcribe_many([DecodeRequest(pcm, prefix=said, retry=True)])
    assert len(result.text.split()) > len(said.split()), result.text  # whisper went on
    assert len(result.words) == len(result.text.split())  # a continuation is aligned
    [record] = tracker.on_transcribed(work, result)
    assert record["msg"] == said and "words" not in record


async def test_two_lanes_decode_at_once_and_hear_what_one_lane_hears() -> None:
    """Two decode lanes (two model replicas, a thread each) decode two batches at the same
    time, each into its own words, as one lane decodes them one after the other."""
    caller, _ = read_wav(FIXTURES / "speech" / "caller.wav")
    agent, _ = read_wav(FIXTURES / "speech" / "agent.wav")
    batches = [[DecodeRequest(caller[4800:41000, 0].tobytes(), retry=True)],
               [DecodeRequest(agent[4800:43700, 0].tobytes(), retry=True),
                DecodeRequest(caller[4800:30000, 0].tobytes(), kind="interim")]]
    model = Transcriber(cpu_threads=2, lanes=2)
    try:
        assert model.lanes == 2
        alone = [[r.text for r in model.transcribe_many(batch)] for batch in batches]
        together = await asyncio.gather(*(model.decode(batch) for batch in batches))
        assert [[r.text for r in results] for results in together] == alone
        assert "internet" in alone[0][0].lower() and "sorry" in alone[1][0].lower()
    finally:
        model.close()
