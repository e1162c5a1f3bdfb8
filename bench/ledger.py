"""The fault ledger (pure): what every liveCalls client received, against what should have been
produced.

"Expected" has three layers, each checked against the one before it:

1. **Spoken**: the utterances of each call's script (``bench.calls`` turns, or a fixture's
   sentences), with their channel and time span. An utterance is *delivered* to a client when
   a final the client received (joined by ``id`` with the transcripts topic, which carries
   ``audioStartMs``/``audioEndMs``) overlaps it by :data:`COVER_MS` on its channel. One that
   no final *produced* on the transcripts topic covers is missing in the pipeline (the audio
   or its transcript was lost, or whisper heard nothing: the fault-free ``baseline`` row
   measures that floor); one that was produced but not received is missing in delivery.
2. **Produced**: the final transcripts on the transcripts topic, one per ``id`` (a record
   produced twice under one id is a redelivery; consumers drop it by id). Two finals with
   different ids whose audio overlaps by :data:`DUPLICATE_MS` on one channel are the same
   speech *duplicated under another id*: the one kind of duplicate a client cannot drop.
3. **Served**: every record on the topic the bridge serves (the redacted transcripts), as a
   client with ``interim=true`` sees it, by its resume key (``id``, ``id#revision`` for an
   interim). A key a client never received is a message it *missed* (across reconnects with
   ``resumeAfter``); one it received twice is a duplicate it must drop by id.

Audio: per call and channel, the ``seq`` numbers on the audio topic must run from 0 without a
gap, and hold every sample the provider sent.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from workers.bridge.hub import dedupe_key
from workers.bridge.livecalls import to_client

#: Audio overlap (ms) by which a final covers a spoken utterance.
COVER_MS = 250
#: Audio overlap (ms) by which two finals with different ids on one channel are one utterance
#: produced twice (finals of one channel never overlap otherwise: the VAD's segments, and the
#: parts of a sentence close, are disjoint).
DUPLICATE_MS = 100


@dataclass(frozen=True)
class Spoken:
    """One scripted utterance of a call: channel and span in ms from the call's start."""

    channel: int
    start_ms: int
    end_ms: int
    text: str = ""


@dataclass(frozen=True)
class AudioRecord:
    """What the ledger needs of one audio-topic record."""

    channel: int
    seq: int
    samples: int
    last: bool = False


@dataclass
class CallEvidence:
    """Everything known about one call after a scenario."""

    call_id: str
    spoken: Sequence[Spoken]
    #: The transcriber's records (transcripts topic) and the served ones (redacted topic).
    produced: Sequence[Mapping[str, Any]]
    served: Sequence[Mapping[str, Any]]
    audio: Sequence[AudioRecord]
    #: Samples the provider sent, per channel.
    sent: Mapping[int, int]
    #: Per client of the call: (receipt time, message) in order.
    clients: Sequence[Sequence[tuple[float, Mapping[str, Any]]]]
    #: When the call's audio started and ended (wall clock).
    started_at: float = 0.0
    ended_at: float = 0.0


@dataclass
class Figures:
    """A scenario's ledger, summed over its calls."""

    utterances: int = 0  # spoken
    delivered: int = 0  # spoken utterances every client of the call got a final for
    missing: int = 0  # spoken - delivered
    missing_pipeline: int = 0  # ... of which no final was produced for
    finals: int = 0  # distinct final ids produced
    finals_missed: int = 0  # produced finals a client did not receive (summed over clients)
    redelivered: int = 0  # finals produced again under the same id
    dup_same_id: int = 0  # finals a client received again under the same id
    dup_other_id: int = 0  # pairs of produced finals that overlap under different ids
    messages_missed: int = 0  # served messages a client did not receive
    messages_duplicated: int = 0  # served messages a client received more than once
    audio_samples_lost: int = 0
    audio_seq_gaps: int = 0  # seq numbers missing on the audio topic
    audio_seq_repeats: int = 0  # audio records produced again (same seq)
    clients: int = 0
    clients_ended: int = 0  # clients that got event:callEnd
    details: list[dict[str, Any]] = field(default_factory=list)

    def add(self, other: Figures) -> None:
        for name, value in vars(other).items():
            if isinstance(value, int):
                setattr(self, name, getattr(self, name) + value)
        self.details += other.details


def overlap_ms(a: tuple[int, int], b: tuple[int, int]) -> int:
    return max(0, min(a[1], b[1]) - max(a[0], b[0]))


def span(record: Mapping[str, Any]) -> tuple[int, int] | None:
    start, end = record.get("audioStartMs"), record.get("audioEndMs")
    if isinstance(start, int) and isinstance(end, int):
        return start, end
    return None


def finals_by_id(records: Iterable[Mapping[str, Any]]) -> tuple[dict[str, Mapping[str, Any]],
                                                                 int]:
    """The final transcripts by id (first copy), and how many copies came again."""
    found: dict[str, Mapping[str, Any]] = {}
    again = 0
    for record in records:
        if record.get("type") != "transcript":
            continue
        key = str(record.get("id"))
        if key in found:
            again += 1
        else:
            found[key] = record
    return found, again


def other_id_duplicates(finals: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str, int]]:
    """Pairs of finals on one channel, with different ids, whose audio overlaps by
    :data:`DUPLICATE_MS` or more: (id, id, overlap ms)."""
    by_channel: dict[Any, list[tuple[tuple[int, int], str]]] = {}
    for key, record in finals.items():
        found = span(record)
        if found is not None:
            by_channel.setdefault(record.get("channel"), []).append((found, key))
    pairs = []
    for spans in by_channel.values():
        spans.sort()
        for i, (a, key_a) in enumerate(spans):
            for b, key_b in spans[i + 1:]:
                if b[0] >= a[1]:
                    break
                if (shared := overlap_ms(a, b)) >= DUPLICATE_MS:
                    pairs.append((key_a, key_b, shared))
    return pairs


def covered(spoken: Spoken, finals: Iterable[Mapping[str, Any]]) -> bool:
    return any(record.get("channel") == spoken.channel and (found := span(record)) is not None
               and overlap_ms(found, (spoken.start_ms, spoken.end_ms)) >= COVER_MS
               for record in finals)


def served_keys(records: Iterable[Mapping[str, Any]]) -> set[str]:
    """The resume keys of what a client with ``interim=true`` is served of ``records``."""
    keys = set()
    for record in records:
        key = dedupe_key(dict(record))
        if key is not None and to_client(dict(record), interim=True) is not None:
            keys.add(key)
    return keys


def audio_figures(records: Sequence[AudioRecord],
                  sent: Mapping[int, int]) -> tuple[int, int, int, dict[int, dict[str, int]]]:
    """(samples lost, seq gaps, repeated records, per channel: first seq, last seq, samples
    on the topic, samples sent)."""
    lost = gaps = repeats = 0
    per_channel: dict[int, dict[str, int]] = {}
    channels = {r.channel for r in records} | set(sent)
    for channel in sorted(channels):
        chunks: dict[int, int] = {}
        for record in records:
            if record.channel == channel:
                if record.seq in chunks:
                    repeats += 1
                chunks[record.seq] = record.samples
        top = max(chunks, default=-1)
        gaps += top + 1 - len(chunks)
        on_topic = sum(chunks.values())
        lost += max(0, sent.get(channel, 0) - on_topic)
        per_channel[channel] = {"seqs": len(chunks), "last_seq": top, "samples": on_topic,
                                "sent": sent.get(channel, 0)}
    return lost, gaps, repeats, per_channel


def call_figures(call: CallEvidence) -> Figures:
    """The ledger of one call; ``details`` holds one entry naming what went wrong."""
    out = Figures(utterances=len(call.spoken), clients=len(call.clients))
    finals, out.redelivered = finals_by_id(call.produced)
    out.finals = len(finals)
    duplicates = other_id_duplicates(finals)
    out.dup_other_id = len(duplicates)
    produced_cover = [s for s in call.spoken if covered(s, finals.values())]
    out.missing_pipeline = len(call.spoken) - len(produced_cover)
    expected = served_keys(call.served)
    delivered_by_all = set(range(len(call.spoken)))
    missed_finals: list[str] = []
    missed_messages: list[str] = []
    for received in call.clients:
        messages = [m for _, m in received]
        keys = Counter(k for m in messages if (k := dedupe_key(dict(m))) is not None)
        out.messages_duplicated += sum(n - 1 for n in keys.values())
        out.messages_missed += len(expected - keys.keys())
        missed_messages += sorted(expected - keys.keys())
        got = Counter(str(m.get("id")) for m in messages if m.get("type") == "transcript")
        out.dup_same_id += sum(n - 1 for n in got.values())
        out.finals_missed += len(finals.keys() - got.keys())
        missed_finals += sorted(finals.keys() - got.keys())
        joined = [finals[key] for key in got if key in finals]
        delivered_by_all &= {i for i, s in enumerate(call.spoken) if covered(s, joined)}
        out.clients_ended += any(m.get("type") == "event:callEnd" for m in messages)
    if not call.clients:
        delivered_by_all = set()
    out.delivered = len(delivered_by_all)
    out.missing = out.utterances - out.delivered
    lost, gaps, repeats, per_channel = audio_figures(call.audio, call.sent)
    out.audio_samples_lost, out.audio_seq_gaps, out.audio_seq_repeats = lost, gaps, repeats
    missing = [s.text or f"{s.channel}@{s.start_ms}" for i, s in enumerate(call.spoken)
               if i not in delivered_by_all]
    out.details.append({
        "call": call.call_id, "missing": missing,
        "missing_pipeline": [s.text or f"{s.channel}@{s.start_ms}" for s in call.spoken
                             if s not in produced_cover],
        "finals_missed": missed_finals, "messages_missed": missed_messages[:50],
        "dup_other_id": [{"ids": [a, b], "overlapMs": shared,
                          "finals": [brief(finals[a]), brief(finals[b])]}
                         for a, b, shared in duplicates],
        "audio": per_channel,
    })
    return out


def brief(record: Mapping[str, Any]) -> dict[str, Any]:
    """What the details say about a final: its span, text and when it was read."""
    return {key: record.get(key) for key in ("id", "channel", "audioStartMs", "audioEndMs", "msg",
                                             "producedAtMs", "_seenAt")}


def ledger(calls: Iterable[CallEvidence]) -> Figures:
    total = Figures()
    for call in calls:
        total.add(call_figures(call))
    return total


# ------------------------------------------------------------------------------ timing


def recovery_s(fault_at: float, calls: Sequence[CallEvidence]) -> float | None:
    """After a fault that ended at ``fault_at``: the longest wait, over the calls still
    running then, until a client of the call received a message again (``None``: no call was
    running, or one never received anything again)."""
    waits = []
    for call in calls:
        if not call.started_at < fault_at < call.ended_at:
            continue
        after = [at for received in call.clients for at, _ in received if at > fault_at]
        if not after:
            return None
        waits.append(min(after) - fault_at)
    return max(waits) if waits else None


def longest_silence_s(calls: Sequence[CallEvidence]) -> float:
    """The longest time, over every client, between two messages it received while its call's
    audio ran (a fault-free run shows the calls' own pauses)."""
    longest = 0.0
    for call in calls:
        for received in call.clients:
            times = sorted(at for at, _ in received if call.started_at <= at <= call.ended_at)
            longest = max([longest, *(b - a for a, b in itertools.pairwise(times))])
    return longest


__all__ = ["COVER_MS", "DUPLICATE_MS", "AudioRecord", "CallEvidence", "Figures", "Spoken",
           "audio_figures", "brief", "call_figures", "covered", "finals_by_id", "ledger",
           "longest_silence_s", "other_id_duplicates", "recovery_s", "served_keys"]
