"""A mixed channel's final, as transcripts of its speakers' turns (pure): the hook between
:class:`~workers.transcribe.calls.CallTracker` and :mod:`workers.transcribe.speakers`.

A final whose voice prints show one speaker is one transcript, as on any channel, with that
speaker's role. One that changes speaker between words (known from aligned word times) is
split: each turn is a transcript with its own ``offset``, ``audioStartMs`` and id
(:func:`~workers.records.transcript_id` of the turn's start; the first keeps the utterance's),
so a replay makes the same records.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

from workers import metrics
from workers.records import Role, transcript_id, transcript_record
from workers.transcribe.speakers import SpeakerClusters, Turn, Voices

if TYPE_CHECKING:
    from workers.transcribe.asr import AsrResult
    from workers.transcribe.calls import DecodeWork


def _word_times(result: AsrResult, count: int) -> tuple[tuple[int, int], ...]:
    """The final's word times (ms from its start) when they match its ``count`` words."""
    if result.words and len(result.words) == count:
        return tuple((round(w.start_s * 1000), round(w.end_s * 1000)) for w in result.words)
    voices = result.voices
    if voices is not None and len(voices.word_times) == count:
        return voices.word_times
    return ()


def speaker_finals(work: DecodeWork, result: AsrResult, text: str,
                   clusters: SpeakerClusters) -> list[dict[str, Any]]:
    """The transcripts of one final of a separated channel: one per speaker turn."""
    words = text.split()
    times = _word_times(result, len(words))
    voices = result.voices or Voices((), _empty())
    turns = clusters.turns(voices, times, fallback=clusters.last_role)
    u = work.utterance
    out = []
    for index, turn in enumerate(turns):
        metrics.TRANSCRIBE_UTTERANCES.labels(turn.role).inc()
        metrics.TRANSCRIBE_SPEAKER_TURNS.labels(turn.role).inc()
        start = u.start_ms + turn.start_ms
        last = index == len(turns) - 1
        end = u.end_ms if last else u.start_ms + turns[index + 1].start_ms
        message: dict[str, Any] = {
            "type": "transcript", "role": turn.role, "offset": round(start / 1000, 3),
            "msg": text if len(turns) == 1 else " ".join(words[turn.first:turn.last]),
        }
        if result.words and not result.words_for_close and len(result.words) == len(words):
            message["words"] = [
                {"word": w.word, "start": round(u.start_ms / 1000 + w.start_s, 3),
                 "end": round(u.start_ms / 1000 + w.end_s, 3)}
                for w in result.words[turn.first:turn.last]]
        voiced_end = u.voiced_end_ms if last else min(end, u.start_ms + times[turn.last - 1][1])
        out.append(transcript_record(
            work.call_id, message,
            record_id=work.id if index == 0 else transcript_id(work.call_id, work.channel,
                                                                start),
            channel=work.channel, audioStartMs=start, audioEndMs=end, voicedEndMs=voiced_end,
            producedAtMs=int(time.time() * 1000)))
    return out


def sentence_role(clusters: SpeakerClusters | None, role: Role, voices: Voices | None,
                  until_ms: int) -> Role:
    """The role of a sentence closed inside a longer utterance (its first ``until_ms``):
    ``role`` on a channel that is not separated; else the speaker of most of the windows
    within it (the channel's latest role when there are none)."""
    if clusters is None:
        return role
    if voices is None:
        return clusters.last_role
    keep = [i for i, (_, end) in enumerate(voices.spans) if end <= until_ms] or (
        [0] if len(voices) else [])
    inside = dataclasses.replace(voices, spans=tuple(voices.spans[i] for i in keep),
                                 vectors=voices.vectors[keep], word_times=())
    turns: list[Turn] = clusters.turns(inside, (), fallback=clusters.last_role)
    return turns[0].role


def _empty() -> Any:
    import numpy as np

    return np.zeros((0, 256), dtype=np.float32)


__all__ = ["sentence_role", "speaker_finals"]
