"""Per-word latency, as streaming recognisers are judged: for each word a client receives, the
time from the end of that word in the audio to when the client first sees it (in an interim or
the final) and to when it is committed (in the final, or in an interim's ``stable`` prefix,
which never changes afterwards).

Where each word ends in the audio comes from a forced-alignment proxy: the played utterance
transcribed offline with word timestamps by the same model (``align``), before the stack
starts. Words are matched between that alignment and what the client received with
:class:`difflib.SequenceMatcher` on normalised tokens; only words the final got right count.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import soxr

from bench.calls import CallPlan, Corpus

_TOKEN = re.compile(r"[a-z0-9']+")


def tokens(text: str) -> list[str]:
    """Lower-case words without punctuation (``"Hello, it's 4."`` → hello, it's, 4)."""
    return _TOKEN.findall(text.lower())


@dataclass(frozen=True, slots=True)
class AlignedWord:
    """A word of a played turn and where it ends on its call's timeline."""

    token: str
    end_ms: float


#: Alignments of played audio, by (file, clip): (word, end in seconds from the clip's start).
AlignCache = dict[tuple[str, tuple[float, float] | None], list[tuple[str, float]]]


def align(corpus: Corpus, plans: Sequence[CallPlan], *, model_path: str,
          cpu_threads: int = 0, cache: AlignCache | None = None,
          ) -> dict[tuple[str, int], list[AlignedWord]]:
    """(call id, turn index) → the turn's words with their end on the call's timeline; every
    piece of a turn of several utterances is aligned on its own and placed at its offset.
    ``cache`` keeps alignments across calls (the model is loaded only when one is missing)."""
    cache = {} if cache is None else cache
    missing = {(p.file, p.clip_s): p for plan in plans for turn in plan.turns
               for p in turn.parts if (p.file, p.clip_s) not in cache}
    if missing:
        from faster_whisper import WhisperModel

        model = WhisperModel(model_path, device="cpu", compute_type="int8",
                             cpu_threads=cpu_threads)
        for key, piece in missing.items():
            audio = corpus.clip(piece).astype(np.float32) / 32768.0
            if corpus.rate != 16000:
                audio = soxr.resample(audio, corpus.rate, 16000)
            segments, _ = model.transcribe(audio, language="en", word_timestamps=True,
                                           condition_on_previous_text=False, vad_filter=False)
            cache[key] = [(token, w.end) for s in segments for w in (s.words or ())
                          for token in tokens(w.word)]
    out: dict[tuple[str, int], list[AlignedWord]] = {}
    for plan in plans:
        for index, turn in enumerate(plan.turns):
            out[(plan.call_id, index)] = [
                AlignedWord(t, (turn.start_s + piece.offset_s + end) * 1000)
                for piece in turn.parts for t, end in cache[(piece.file, piece.clip_s)]]
    return out


@dataclass(frozen=True, slots=True)
class WordTiming:
    call: str
    id: str
    token: str
    end_wall: float  # when the simulator sent the sample where the word ends
    seen_s: float  # word end → first in any message
    committed_s: float  # word end → final, or stable prefix of an interim


def word_timings(call_id: str, plan: CallPlan, received: Sequence[tuple[float, dict[str, Any]]],
                 records: dict[str, dict[str, Any]], aligned: dict[tuple[str, int],
                                                             list[AlignedWord]],
                 wall_time_of: Callable[[float], float | None]) -> list[WordTiming]:
    """Per-word timings of one call, from what its liveCalls client received (with
    ``interim=true``), the transcripts-topic records (for ``channel`` and ``audioStartMs``) and
    the alignment of the turns that were played."""
    by_id: dict[str, list[tuple[float, dict[str, Any]]]] = {}
    for at, message in received:
        if message.get("type") in ("transcript", "transcript:interim"):
            by_id.setdefault(message["id"], []).append((at, message))
    finals = [(messages[-1], records[i]) for i, messages in by_id.items()
              if messages[-1][1]["type"] == "transcript" and i in records]
    timings: list[WordTiming] = []
    for index, turn in enumerate(plan.turns):
        start_ms, end_ms = turn.start_s * 1000, (turn.start_s + turn.duration_s) * 1000
        mine = sorted(((f, r) for f, r in finals if r.get("channel") == turn.channel
                       and start_ms - 500 <= r["audioStartMs"] < end_ms),
                      key=lambda fr: fr[1]["audioStartMs"])
        hypothesis: list[tuple[str, str, int]] = []  # (token, final id, index in that final)
        for (_, final), record in mine:
            hypothesis += [(t, record["id"], k) for k, t in enumerate(tokens(final["msg"]))]
        reference = aligned.get((call_id, index), [])
        matcher = difflib.SequenceMatcher(a=[w.token for w in reference],
                                          b=[t for t, _, _ in hypothesis], autojunk=False)
        for block in matcher.get_matching_blocks():
            for offset in range(block.size):
                word = reference[block.a + offset]
                token, utterance, k = hypothesis[block.b + offset]
                end_wall = wall_time_of(word.end_ms)
                if end_wall is None:
                    continue
                seen, committed = _first_seen_and_committed(by_id[utterance], k)
                timings.append(WordTiming(call_id, utterance, token, end_wall,
                                          seen - end_wall, committed - end_wall))
    return timings


def _first_seen_and_committed(messages: list[tuple[float, dict[str, Any]]], k: int,
                              ) -> tuple[float, float]:
    """When word ``k`` of the final (the last message) was first shown, and first committed."""
    final_at, final = messages[-1]
    final_tokens = tokens(final["msg"])
    seen = committed = final_at
    for at, message in messages[:-1]:
        shown = tokens(message.get("msg", ""))
        if seen == final_at and len(shown) > k and shown[k] == final_tokens[k]:
            seen = at
        stable = tokens(message.get("stable") or "")
        if len(stable) > k and stable[:k + 1] == final_tokens[:k + 1]:
            committed = min(committed, at)
            break
    return min(seen, committed), committed


__all__ = ["AlignCache", "AlignedWord", "WordTiming", "align", "tokens", "word_timings"]
