"""Custom vocabulary in the decoder, with the real tiny.en: no vocabulary changes nothing, each
batch item gets its own call's terms (never another call's), the bound holds, and a made-up
product name is heard once whisper is told it (committed espeak-ng fixtures)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from tests.conftest import FIXTURES
from tests.transcribe.test_calls import chunks_of, started
from workers.records import CallStarted
from workers.simulate.jambonz import read_wav
from workers.transcribe.asr import AsrResult, DecodeRequest, Transcriber
from workers.transcribe.calls import CallTracker, VadConfig
from workers.transcribe.pipeline import DecodePipeline
from workers.vocabulary import VocabularyError, load_vocabulary

VOCABULARY = FIXTURES / "vocabulary"
TERMS = load_vocabulary(VOCABULARY / "terms.txt")


class Recorder:
    """Stands in for the CTranslate2 model: records every generate call's prompts."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.prompts: list[list[list[int]]] = []
        self.max_lengths: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)

    def generate(self, encoded: Any, prompts: list[list[int]], **options: Any) -> Any:
        self.prompts.append([list(p) for p in prompts])
        self.max_lengths.append(options["max_length"])
        return self.model.generate(encoded, prompts, **options)


@pytest.fixture(scope="module")
def transcriber() -> Iterator[Transcriber]:
    model = Transcriber(cpu_threads=2)
    yield model
    model.close()


@pytest.fixture
def recorder(transcriber: Transcriber) -> Iterator[Recorder]:
    whisper = transcriber._model  # the one place generate can be watched
    real = whisper.model
    whisper.model = recorder = Recorder(real)
    try:
        yield recorder
    finally:
        whisper.model = real


def pcm(name: str) -> bytes:
    samples, rate = read_wav(VOCABULARY / name)
    assert rate == 16000
    return bytes(samples.tobytes())


def said(name: str) -> tuple[str, list[str]]:
    manifest = json.loads((VOCABULARY / "manifest.json").read_text())
    item = next(i for i in manifest["items"] if i["file"] == name)
    return item["text"], item["terms"]


def test_no_vocabulary_gives_the_decoder_exactly_what_it_had_before(
        transcriber: Transcriber, recorder: Recorder) -> None:
    audio = pcm("01.wav")
    requests = [DecodeRequest(audio), DecodeRequest(audio, prefix="My"),
                DecodeRequest(audio, kind="interim")]
    results = transcriber.transcribe_many(requests)
    tokenizer = transcriber._tokenizer  # to spell out the expected tokens
    base = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
    prefix = tokenizer.encode(" My")
    assert transcriber.prompt() == ("", [])
    # the interim (10 s window) in one batch, the finals (15 s window) in another: as before
    assert recorder.prompts == [[base], [base, base + prefix]]
    seconds = len(audio) / 32000
    assert recorder.max_lengths[1] == len(base) + len(prefix) + 12 + int(-(-8 * seconds // 1))
    # (up to punctuation: with numpy's BLAS on one thread, as after the speaker stage has
    # run, the interim's features differ in the last bits and it may lose its full stop)
    assert results[0].text.rstrip(".") == results[2].text.rstrip(".")
    assert results[1].text.startswith("My")


def test_each_batch_item_gets_its_own_calls_terms(transcriber: Transcriber,
                                                  recorder: Recorder) -> None:
    audio = pcm("10.wav")
    tokenizer = transcriber._tokenizer  # to read the prompts back
    calls = {"A": ("Quorvo",), "B": ("Drovix",), "C": (), "D": ("Quorvo",)}
    # terms of one token length share a batch (CTranslate2 wants SOT at one place)
    assert len(transcriber.prompt(calls["A"])[1]) == len(transcriber.prompt(calls["B"])[1])
    requests = [DecodeRequest(audio, prefix=name, vocabulary=terms)
                for name, terms in calls.items()]
    transcriber.transcribe_many(requests)
    sot = tokenizer.sot_sequence[0]
    items = [prompt for batch in recorder.prompts for prompt in batch]
    assert len(items) == 4
    mixed = next(batch for batch in recorder.prompts if len(batch) == 3)
    assert len(mixed) == 3  # A, B and D in one generate call
    for prompt in items:
        at = prompt.index(sot)
        previous = tokenizer.decode(prompt[1:at]).strip() if at else ""
        name = tokenizer.decode(prompt[at + 2:]).strip()
        assert previous == transcriber.prompt(calls[name])[0]
        if at:
            assert prompt[0] == tokenizer.sot_prev
    assert "Drovix" not in transcriber.prompt(calls["A"])[0]


async def test_the_pipeline_gives_each_call_its_own_terms() -> None:
    tracker = CallTracker(VadConfig(early=False))
    seen: list[DecodeRequest] = []

    async def decode(requests: Sequence[DecodeRequest]) -> list[AsrResult]:
        seen.extend(requests)
        return [AsrResult(text="words", words=(), decode_s=0.0, suppressed=())
                for _ in requests]

    async def nothing(*_: Any) -> None:
        return None

    pipeline = DecodePipeline(tracker, decode=decode, send=nothing, ack=nothing)
    runner = asyncio.create_task(pipeline.run())
    with_terms = CallStarted(**{**{f: getattr(started("v-1"), f)
                                   for f in CallStarted.__slots__},
                                "vocabulary": ("Zentrix Plus",)})
    tracker.on_vocabulary(with_terms)
    tracker.on_vocabulary(started("v-2"))
    streams = [chunks_of("call_stereo_8k.wav", c) for c in ("v-1", "v-2")]
    by_pcm: dict[int, str] = {}
    for step in range(max(map(len, streams))):
        for stream in streams:
            if step < len(stream):
                jobs, _ = tracker.on_audio(stream[step])
                for job in jobs:
                    by_pcm[id(job.utterance.pcm)] = job.call_id
                    await pipeline.submit_work(job)
    await pipeline.wait_idle()
    runner.cancel()
    assert {by_pcm[id(r.pcm)] for r in seen} == {"v-1", "v-2"}
    for request in seen:
        expected = ("Zentrix Plus",) if by_pcm[id(request.pcm)] == "v-1" else ()
        assert request.vocabulary == expected


def test_a_made_up_product_name_is_heard_once_whisper_is_told(
        transcriber: Transcriber, recorder: Recorder) -> None:
    told = Transcriber(cpu_threads=2, vocabulary=TERMS)
    try:
        for name in ("01.wav", "03.wav"):
            _, terms = said(name)
            plain = transcriber.transcribe_many([DecodeRequest(pcm(name))])[0].text
            helped = told.transcribe_many([DecodeRequest(pcm(name))])[0].text
            # the call's own terms do the same without a deployment vocabulary
            per_call = transcriber.transcribe_many(
                [DecodeRequest(pcm(name), vocabulary=tuple(terms))])[0].text
            for term in terms:
                assert term not in plain, plain
                assert term in helped, helped
                assert term in per_call, per_call
        # the prompt reached generate: <|startofprev|> and the terms before SOT
        assert recorder.prompts[-1][0][0] == transcriber._tokenizer.sot_prev
        # no term is written where none was said
        control = told.transcribe_many([DecodeRequest(pcm("10.wav"))])[0].text
        assert not any(term.lower() in control.lower() for term in TERMS), control
    finally:
        told.close()


def test_the_prompt_is_bounded(transcriber: Transcriber) -> None:
    bounded = Transcriber(cpu_threads=2, vocabulary=TERMS[:2], vocabulary_max_tokens=20)
    try:
        many = tuple(f"Product{i}" for i in range(40))
        text, tokens = bounded.prompt(many)
        assert len(tokens) <= 1 + 20
        assert text.endswith("Product39.")  # the end is kept, as faster-whisper keeps it
        assert "Zentrix" not in text  # the deployment's terms went first
        assert bounded.prompt(("Quorvo",))[0] == "Zentrix Plus, Quorvo."  # once each
    finally:
        bounded.close()
    with pytest.raises(VocabularyError, match="expected at most 5"):
        Transcriber(cpu_threads=2, vocabulary=TERMS, vocabulary_max_tokens=5)
