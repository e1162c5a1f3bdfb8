"""Per-call transcription state (pure: no Kafka, no model).

Audio records go in (:meth:`CallTracker.on_audio`, called by the agent in topic order);
decode jobs come out. Everything that produces output records runs later, in one place and in
queue order (:class:`workers.transcribe.pipeline.DecodePipeline`): ``on_started``,
``on_transcribed`` and ``finish``. So the records of a call leave in liveCalls order:
``event:start`` first (transcripts wait for it), interims and finals per utterance,
``event:callEnd`` once every channel's last chunk is processed.

Delivery: every audio record comes with an opaque ``token`` (the stream event). The tracker
hands each token back once nothing depends on it any more: with the final job of the utterance
it belongs to (acknowledged after that transcript is produced), or at once for silence, less
:data:`~workers.transcribe.channel.KEEP_BEHIND_MS` kept as lead-in, but never reaching back into
an utterance already handed to the decoder (:class:`~workers.transcribe.channel.ChannelStream`,
one per call channel, decides); audio whose records are held for ``event:start`` waits with them. A
worker that takes a call over (a restart, a rebalance) replays from the partition's first
unacknowledged record, so every utterance not yet produced is there in full (nothing is lost).
That record may be the other channel's lead-in, older than the end of an utterance already
produced on this channel: what the worker read of the transcripts topic when it was given the
partition (:mod:`workers.transcribe.produced`) says where each channel's last final ends, and
nothing before it is cut again (nothing is produced twice under another id). A stream whose
first record is not the call's first, or whose ``event:start`` is on the topic, is a takeover:
nothing waits for ``event:start``. Calls whose partition went elsewhere are forgotten.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from workers import metrics
from workers.records import (
    AudioChunk,
    CallEnded,
    CallStarted,
    InterimInterest,
    Role,
    transcript_id,
    transcript_record,
    utc_now_iso,
)
from workers.transcribe.asr import AsrResult
from workers.transcribe.channel import ChannelStream, VadConfig
from workers.transcribe.guard import voiced_words
from workers.transcribe.interest import Interest
from workers.transcribe.produced import Produced
from workers.transcribe.speakers import SeparationConfig, SpeakerClusters, first_from_metadata
from workers.transcribe.stable import StablePrefix, normalize_word
from workers.transcribe.turns import sentence_role, speaker_finals
from workers.transcribe.vad import Utterance

log = logging.getLogger(__name__)

#: Finished call ids remembered so that their late records (``call.ended`` read after the last
#: chunk, a redelivered chunk) are ignored instead of opening a phantom call.
FINISHED_REMEMBERED = 10_000
#: A committed sentence is closed inside a longer utterance only if it holds this much audio
#: (closing keeps a monologue's windows short; a short one, "Oh no.", closed on its own leaves
#: what follows to be decoded without it: "I am sorry to fear and act." on the 8 kHz fixture,
#: where 1 s still closed it; at 2 s, a turn that said one short sentence twice lost the
#: second to the prefixed decode's restart check),
MIN_SENTENCE_MS = 1500
#: and this much audio follows it (a sentence at the very end is left to the VAD's close).
MIN_REST_MS = 300
_E164 = re.compile(r"^\+?[1-9]\d{6,14}$")


def e164(number: str) -> str:
    """``number`` as E.164 (``+`` and 7-15 digits) when it is one, else the empty string."""
    digits = re.sub(r"[\s().-]", "", number or "")
    if digits.startswith("00"):
        digits = "+" + digits[2:]
    if not _E164.match(digits):
        return ""
    return digits if digits.startswith("+") else "+" + digits


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class DecodeWork:
    """What to decode: one utterance (final) or open utterance so far (interim) of one call
    channel. The pipeline queues it inside a :class:`~workers.transcribe.pipeline.PipelineStep`."""

    call_id: str
    channel: int
    role: Role
    utterance: Utterance
    ready_at: float  # wall clock (time.time) when its last audio was processed
    #: ``early``: the utterance as its close will cut it, decoded during the end-of-speech
    #: wait; the final reuses the result when the close comes (else it served as an interim).
    kind: Literal["final", "interim", "early"] = "final"
    tokens: list[Any] = field(default_factory=list)  # acknowledge once this job is done

    @property
    def id(self) -> str:
        return transcript_id(self.call_id, self.channel, self.utterance.start_ms)


@dataclass
class CallState:
    call_id: str
    started: CallStarted | None = None
    start_sent: bool = False
    channels: dict[int, ChannelStream] = field(default_factory=dict)
    channel_count: int | None = None
    ended: CallEnded | None = None
    finishing: bool = False
    held: list[dict[str, Any]] = field(default_factory=list)
    #: Tokens of the audio whose records are held: acknowledged once those are sent.
    held_tokens: list[Any] = field(default_factory=list)
    last_activity: float = field(default_factory=time.monotonic)
    #: The call's own terms (its ``call.started`` record's ``vocabulary``) for whisper.
    vocabulary: tuple[str, ...] = ()
    #: A mixed call: the speakers of each channel (:mod:`workers.transcribe.speakers`).
    speakers: dict[int, SpeakerClusters] | None = None
    first_role: Role | None = None

    @property
    def complete(self) -> bool:
        return (self.channel_count is not None and len(self.channels) == self.channel_count
                and all(c.done for c in self.channels.values()))


def speech_only(result: AsrResult, utterance: Utterance, committed: int) -> AsrResult:
    """``result`` without the words that speech cannot hold (:func:`guard.voiced_words`):
    none past the utterance's last voiced frame, no more than a fast speaker says in it; its
    first ``committed`` words stay."""
    tokens = result.text.split()
    keep, _ = voiced_words(result.text, result.words, committed=committed,
                           voiced_s=(utterance.voiced_end_ms - utterance.start_ms) / 1000)
    if len(keep) == len(tokens):
        return result
    words = tuple(result.words[i] for i in keep) if len(result.words) == len(tokens) else ()
    return dataclasses.replace(result, text=" ".join(tokens[i] for i in keep), words=words,
                               words_for_close=result.words_for_close and bool(words))


class CallTracker:
    """All calls one worker is transcribing."""

    def __init__(self, vad: VadConfig | None = None, *,
                 separation: SeparationConfig | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 interims_watched_only: bool = False) -> None:
        """``clock``: seconds, for the idle timeout (:meth:`idle_calls`); the worker's stops
        while the brokers do not answer (:attr:`workers.kafka.BrokerProbe.answered_clock`),
        so that an outage does not count as a call's silence."""
        self._vad = vad or VadConfig()
        self.clock = clock
        #: ``CALLSCRIBE_INTERIMS=watched``: interims only for calls in :attr:`interest`.
        self._watched_only = interims_watched_only
        #: Which calls liveCalls clients watch with interims (the interest topic).
        self.interest = Interest()
        #: Speaker separation of mixed calls (None: off).
        self._separation = separation
        self._told_unavailable = False
        self.calls: dict[str, CallState] = {}
        self._finished: collections.OrderedDict[str, None] = collections.OrderedDict()
        #: Call channels whose open utterance is due an interim, oldest request first.
        self.wanted: collections.OrderedDict[tuple[str, int], None] = collections.OrderedDict()
        #: Call channels whose open utterance is due an early decode (a pause began).
        self.early: collections.OrderedDict[tuple[str, int], None] = collections.OrderedDict()
        #: Tokens that waited with a call's held records, for the job that finished it.
        self._finished_tokens: dict[str, list[Any]] = {}
        #: For calls this worker may take over: where each channel's last final ends, and
        #: the calls whose event:start went out.
        self.produced = Produced()

    def finished(self, call_id: str) -> bool:
        """Whether ``call_id`` already got its ``event:callEnd`` (its records are ignored)."""
        return call_id in self._finished

    def _state(self, call_id: str) -> CallState:
        state = self.calls.get(call_id)
        if state is None:
            state = self.calls[call_id] = CallState(call_id)
        state.last_activity = self.clock()
        return state

    # ---- the agent's side: in topic order --------------------------------------------------

    def on_vocabulary(self, event: CallStarted) -> None:
        """Note the call's own vocabulary as soon as its ``call.started`` is read (its audio,
        on another topic, may come first): every later decode of the call is given it."""
        if event.vocabulary and not self.finished(event.call_id):
            self._state(event.call_id).vocabulary = event.vocabulary

    def on_mix(self, event: CallStarted) -> None:
        """A call whose channel mixes both parties (``mix`` among the separated ones) gets
        its speakers separated from its first decode on; without the encoder, it keeps the
        channel's role, said once per worker and counted."""
        config = self._separation
        if config is None or event.mix not in config.mixes or self.finished(event.call_id):
            return
        if not config.available:
            metrics.TRANSCRIBE_SPEAKERS_UNAVAILABLE.inc()
            if not self._told_unavailable:
                self._told_unavailable = True
                log.warning("call %s: its channel mixes both parties (%s) but speakers are "
                            "not separated: %s; its lines keep the role %s (said once)",
                            event.call_id, event.mix, config.unavailable,
                            "/".join(event.roles))
            return
        state = self._state(event.call_id)
        state.speakers = {}
        state.first_role = first_from_metadata(event.metadata) or config.first

    def _speakers(self, call_id: str, channel: int) -> SpeakerClusters | None:
        state = self.calls.get(call_id)
        if state is None or state.speakers is None or self._separation is None:
            return None
        found = state.speakers.get(channel)
        if found is None:
            found = state.speakers[channel] = self._separation.clusters(state.first_role)
        return found

    def separates(self, work: DecodeWork) -> bool:
        """Whether ``work``'s decode needs voice prints (any decode of a separated call: an
        interim's may close a sentence, and its windows serve the final too)."""
        return self._speakers(work.call_id, work.channel) is not None

    def speaker_centroids(self, work: DecodeWork) -> Any:
        """The centroids of ``work``'s channel's speakers now (None: not separated, or none
        heard yet): its voice prints are judged against them (may they change speaker?)."""
        clusters = self._speakers(work.call_id, work.channel)
        return None if clusters is None else clusters.centroids()

    def vocabulary_for(self, work: DecodeWork) -> tuple[str, ...]:
        """The terms of ``work``'s call (none: the deployment's alone)."""
        state = self.calls.get(work.call_id)
        return state.vocabulary if state is not None else ()

    def on_interest(self, record: InterimInterest) -> None:
        """A record of the interest topic: a call no longer watched stops being due
        interims; one that became watched is due them from its next audio on."""
        self.interest.note(record)
        if not self.interims_for(record.call_id):
            for key in [k for k in self.wanted if k[0] == record.call_id]:
                del self.wanted[key]

    def interims_for(self, call_id: str) -> bool:
        """Whether ``call_id`` gets interims (always, unless only watched calls do)."""
        return not self._watched_only or self.interest.watched(call_id, now_ms())

    def on_ended(self, event: CallEnded) -> None:
        if not self.finished(event.call_id):
            self._state(event.call_id).ended = event

    def on_audio(self, chunk: AudioChunk, token: Any = None) -> tuple[list[DecodeWork], list[Any]]:
        """(jobs to decode, tokens to acknowledge now) for one audio record."""
        if self.finished(chunk.call_id):
            return [], [token] if token is not None else []
        state = self._state(chunk.call_id)
        state.channel_count = chunk.channels
        stream = state.channels.get(chunk.channel)
        if stream is None:
            stream = state.channels[chunk.channel] = ChannelStream(
                chunk, self._vad,
                produced_until=self.produced.ends.pop((chunk.call_id, chunk.channel), None))
            metrics.TRANSCRIBE_ACTIVE_STREAMS.inc()
            if stream.resumed or chunk.call_id in self.produced.started:
                state.start_sent = True  # event:start went out before this worker took over
        stream.note_role(chunk)
        utterances, interim_due = stream.feed(chunk, token)
        now = time.time()
        jobs = [DecodeWork(chunk.call_id, chunk.channel, stream.role_at(u.start_ms), u, now)
                for u in utterances]
        for job in jobs:
            stream.finalized.append(job.id)
        jobs += self._orphans(stream, chunk.call_id, now)
        key = (chunk.call_id, chunk.channel)
        interims = self.interims_for(chunk.call_id)
        if interim_due and not jobs and interims:
            self.wanted.setdefault(key, None)
        elif not stream.interim_due or not interims:
            self.wanted.pop(key, None)
        if stream.early_due:
            self.early.setdefault(key, None)
        else:
            self.early.pop(key, None)
        released = stream.release()
        if jobs:
            jobs[-1].tokens.extend(released)
            released = []
        return jobs, released

    def _orphans(self, stream: ChannelStream, call_id: str, now: float) -> list[DecodeWork]:
        """Finals for words committed to an utterance that the VAD then dropped (no voiced
        frame left after a sentence close, or too short): they go out as they were committed.
        Forgets the hypotheses of utterances that ended with nothing committed."""
        open_start = stream.open_start_ms
        open_id = (transcript_id(call_id, stream.channel, open_start)
                   if open_start is not None else None)
        jobs = []
        for work_id, stability in list(stream.stability.items()):
            if work_id == open_id or work_id in stream.finalized:
                continue
            if not stability.stable:
                del stream.stability[work_id]
                continue
            at = stability.start_ms
            job = DecodeWork(call_id, stream.channel, stream.role_at(at),
                             Utterance(start_ms=at, end_ms=at, voiced_end_ms=at, pcm=b"",
                                       forced_cut=False), now)
            stream.finalized.append(job.id)
            jobs.append(job)
        return jobs

    def interim_work(self, key: tuple[str, int]) -> DecodeWork | None:
        """An interim job for call channel ``key``'s open utterance as it is now (None when
        it has none or is no longer due); it stops being wanted until more audio comes."""
        self.wanted.pop(key, None)
        state = self.calls.get(key[0])
        stream = state.channels.get(key[1]) if state is not None else None
        if (stream is None or state is None or state.finishing or not stream.interim_due
                or not self.interims_for(key[0])):
            return None
        utterance = stream.interim_snapshot()
        if utterance is None:
            return None
        return DecodeWork(key[0], key[1], stream.role_at(utterance.start_ms), utterance,
                          time.time(), kind="interim")

    def early_work(self, key: tuple[str, int]) -> DecodeWork | None:
        """An early job for call channel ``key``: its open utterance as the close will cut it
        if no speech follows (None when that is no longer so)."""
        self.early.pop(key, None)
        state = self.calls.get(key[0])
        stream = state.channels.get(key[1]) if state is not None else None
        if stream is None or state is None or state.finishing or not stream.early_due:
            return None
        utterance = stream.early_snapshot()
        if utterance is None:
            return None
        self.wanted.pop(key, None)
        return DecodeWork(key[0], key[1], stream.role_at(utterance.start_ms), utterance,
                          time.time(), kind="early")

    def close_pending(self, key: tuple[str, int]) -> bool:
        """Call channel ``key``'s next interim may close a committed sentence."""
        state = self.calls.get(key[0])
        stream = state.channels.get(key[1]) if state is not None else None
        return stream is not None and stream.close_pending

    def reusable(self, work: DecodeWork) -> AsrResult | None:
        """For a final: the early decode of exactly its audio, if one was made and still
        begins with the words committed since (then no decode is needed)."""
        state = self.calls.get(work.call_id)
        stream = state.channels.get(work.channel) if state is not None else None
        if stream is None or stream.early_result is None:
            return None
        early_id, end_ms, result = stream.early_result
        if early_id != work.id or end_ms != work.utterance.end_ms:
            return None
        stream.early_result = None
        prefix = self.prefix_for(work)
        if not result.text.startswith(prefix):
            return None
        metrics.TRANSCRIBE_FINALS_REUSED.inc()
        if result.words_for_close:
            voices = result.voices
            if voices is not None:  # the speaker split still needs the words' times
                voices = dataclasses.replace(voices, word_times=tuple(
                    (round(w.start_s * 1000), round(w.end_s * 1000)) for w in result.words))
            result = dataclasses.replace(result, words=(), words_for_close=False,
                                         voices=voices)
        return result

    def prefix_for(self, work: DecodeWork) -> str:
        """The words committed to ``work``'s utterance: its decode must begin with them."""
        state = self.calls.get(work.call_id)
        stream = state.channels.get(work.channel) if state is not None else None
        stability = stream.stability.get(work.id) if stream is not None else None
        return stability.prefix if stability is not None else ""

    def finish_if_complete(self, call_id: str) -> bool:
        """True once (then never again) when every channel of the call is processed."""
        state = self.calls.get(call_id)
        if state is None or state.finishing or not state.complete:
            return False
        state.finishing = True
        return True

    # ---- the pipeline's side: in queue order -----------------------------------------------

    def on_started(self, event: CallStarted) -> list[dict[str, Any]]:
        if self.finished(event.call_id):
            return []
        state = self._state(event.call_id)
        state.started = event
        state.channel_count = event.channels
        return self._release(state)

    def on_transcribed(self, work: DecodeWork, result: AsrResult) -> list[dict[str, Any]]:
        """The records for ``work``: a ``transcript`` (none when whisper heard no words) or a
        ``transcript:interim`` (none once its utterance is final)."""
        state = self.calls.get(work.call_id)
        if state is None or self.finished(work.call_id):
            return []
        stream = state.channels[work.channel]
        held = stream.stability.get(work.id)
        result = speech_only(result, work.utterance, len(held.stable) if held else 0)
        if work.kind == "early":
            stream.early_result = (work.id, work.utterance.end_ms, result)
            if not self._vad.interim_ms:
                return []
        if work.kind != "final":
            return self._interim(state, stream, work, result)
        stability = stream.stability.pop(work.id, None)
        text = result.text
        if stability is not None and stability.stable and not text.startswith(stability.prefix):
            # Decoded with its committed words as the prefix, so this cannot happen; if it
            # did, what a client was told is committed still stands.
            log.warning("final %s lost its committed prefix; restored", work.id)
            text = StablePrefix(stability.stable).update(text)[1]
        if not text:
            return []
        clusters = self._speakers(work.call_id, work.channel)
        if clusters is not None:
            return self._hold_or_release(
                state, speaker_finals(work, result, text, clusters))
        metrics.TRANSCRIBE_UTTERANCES.labels(work.role).inc()
        u = work.utterance
        message: dict[str, Any] = {
            "type": "transcript", "msg": text, "role": work.role,
            "offset": round(u.start_ms / 1000, 3),
        }
        if result.words and not result.words_for_close:  # times asked for by the settings
            message["words"] = [
                {"word": w.word, "start": round(u.start_ms / 1000 + w.start_s, 3),
                 "end": round(u.start_ms / 1000 + w.end_s, 3)} for w in result.words
            ]
        record = transcript_record(
            work.call_id, message, record_id=work.id, channel=work.channel,
            audioStartMs=u.start_ms, audioEndMs=u.end_ms, voicedEndMs=u.voiced_end_ms,
            producedAtMs=now_ms())
        return self._hold_or_release(state, [record])

    def _interim(self, state: CallState, stream: ChannelStream, work: DecodeWork,
                 result: AsrResult) -> list[dict[str, Any]]:
        if work.id in stream.finalized or not result.text:
            return []
        stability = stream.stability.setdefault(
            work.id, StablePrefix(start_ms=work.utterance.start_ms))
        stability.update(result.text)
        if work.kind == "early" and self._vad.commit_at_pauses:
            stability.commit(len(stability.words) - 1)
        records = self._close_sentence(stream, work, stability, result)
        if records:
            return self._hold_or_release(state, records)
        return self._hold_or_release(state, [self._interim_record(work, stability)])

    def _interim_record(self, work: DecodeWork, stability: StablePrefix, *,
                        start_ms: int | None = None) -> dict[str, Any]:
        u = work.utterance
        start = u.start_ms if start_ms is None else start_ms
        stability.shown = len(stability.stable)
        clusters = self._speakers(work.call_id, work.channel)
        role = work.role if clusters is None else clusters.last_role
        message = {"type": "transcript:interim", "msg": " ".join(stability.words),
                   "role": role, "offset": round(start / 1000, 3),
                   "revision": stability.revision, "stable": stability.prefix}
        return transcript_record(work.call_id, message,
                                 record_id=transcript_id(work.call_id, work.channel, start),
                                 channel=work.channel, audioStartMs=start,
                                 audioEndMs=u.end_ms, producedAtMs=now_ms())

    def _close_sentence(self, stream: ChannelStream, work: DecodeWork, stability: StablePrefix,
                        result: AsrResult) -> list[dict[str, Any]]:
        """Close a committed sentence inside the open utterance: its words go out as a final
        (the utterance's id) and decoding carries on after it, as a new utterance (its own id).
        Nothing when no stable sentence end may close here, or whisper's word times do not
        match the hypothesis."""
        end = stability.sentence_end()
        words = result.words
        if end is None or len(words) != len(stability.words) or any(
                normalize_word(w.word) != normalize_word(h)
                for w, h in zip(words, stability.words, strict=True)):
            return []
        u = work.utterance
        cut_ms = u.start_ms + round((words[end].end_s + words[end + 1].start_s) * 500)
        if cut_ms - u.start_ms < MIN_SENTENCE_MS or u.end_ms - cut_ms < MIN_REST_MS:
            return []
        new_start = stream.close_sentence(u.start_ms, cut_ms)
        if new_start is None:
            return []
        metrics.TRANSCRIBE_SENTENCES_CLOSED.inc()
        role = sentence_role(self._speakers(work.call_id, work.channel), work.role,
                             result.voices, cut_ms - u.start_ms)
        metrics.TRANSCRIBE_UTTERANCES.labels(role).inc()
        stream.finalized.append(work.id)
        del stream.stability[work.id]
        message = {"type": "transcript", "msg": " ".join(stability.stable[:end + 1]),
                   "role": role, "offset": round(u.start_ms / 1000, 3)}
        records = [transcript_record(
            work.call_id, message, record_id=work.id, channel=work.channel,
            audioStartMs=u.start_ms, audioEndMs=new_start,
            voicedEndMs=min(new_start, u.start_ms + round(words[end].end_s * 1000)),
            producedAtMs=now_ms())]
        # What follows the sentence starts afresh: its words were agreed, but never shown as
        # stable, so they are decoded again from the new start (not forced as a prefix, which
        # whisper, hearing the first word again, would repeat), and the hypothesis so far
        # counts as the previous one, so the next decode can commit them.
        rest = StablePrefix(start_ms=new_start)
        rest.update(" ".join(stability.words[end + 1:]))
        stream.stability[transcript_id(work.call_id, work.channel, new_start)] = rest
        if rest.words:
            records.append(self._interim_record(work, rest, start_ms=new_start))
        return records

    def finish(self, call_id: str) -> list[dict[str, Any]]:
        """``event:callEnd`` (after a held ``event:start``) for a complete call."""
        state = self.calls.get(call_id)
        if state is None:
            return []
        out = self._release(state, force=True)
        timestamp = state.ended.timestamp if state.ended else utc_now_iso()
        out.append(transcript_record(
            state.call_id, {"type": "event:callEnd", "timestamp": timestamp},
            record_id=f"{state.call_id}:callEnd", producedAtMs=now_ms()))
        metrics.TRANSCRIBE_ACTIVE_STREAMS.dec(len(state.channels))
        del self.calls[state.call_id]
        if state.held_tokens:
            self._finished_tokens[state.call_id] = state.held_tokens
        self._finished[state.call_id] = None
        while len(self._finished) > FINISHED_REMEMBERED:
            self._finished.popitem(last=False)
        return out

    def settle_tokens(self, call_id: str, tokens: list[Any]) -> list[Any]:
        """The tokens to acknowledge now, after a job of ``call_id`` carrying ``tokens`` is
        done: none while the call's records are held back for its ``event:start`` (they
        wait with them: acknowledged audio whose transcript existed only in memory would be
        lost with the worker), else these and those that waited."""
        state = self.calls.get(call_id)
        if state is None:  # finished just now: what waited goes with the job
            return self._finished_tokens.pop(call_id, []) + tokens
        if not state.start_sent:
            state.held_tokens.extend(tokens)
            return []
        if state.held_tokens:
            tokens, state.held_tokens = state.held_tokens + tokens, []
        return tokens

    def note_produced(self, produced: Produced) -> None:
        """What the transcripts topic holds of the calls on partitions just assigned (where
        each channel's last final ends, which calls' ``event:start`` went out): kept for the
        calls this worker has no state of, until it takes them over (replacing what an
        earlier assignment noted)."""
        self.produced = Produced(
            ends={key: end for key, end in produced.ends.items() if key[0] not in self.calls},
            started={call for call in produced.started if call not in self.calls})

    def forget(self, call_id: str) -> None:
        """Drop a call's state without producing anything: its partition moved to another
        worker, which replays it from the last committed offset (were it kept, its idle
        timeout would later end a call that goes on elsewhere, and a partition that comes
        back would find it stale)."""
        state = self.calls.pop(call_id, None)
        if state is None:
            return
        metrics.TRANSCRIBE_ACTIVE_STREAMS.dec(len(state.channels))
        for channel in state.channels:
            self.wanted.pop((call_id, channel), None)
            self.early.pop((call_id, channel), None)

    def idle_calls(self, idle_s: float) -> list[str]:
        """Calls with no record for ``idle_s`` on :attr:`clock` (their ingest died without an
        end); each is marked finishing and returned once."""
        cutoff = self.clock() - idle_s
        out = []
        for state in self.calls.values():
            if state.last_activity < cutoff and not state.finishing:
                log.warning("call %s: no audio for %.0fs; closing it", state.call_id, idle_s)
                state.finishing = True
                out.append(state.call_id)
        return out

    def _hold_or_release(self, state: CallState, records: list[dict[str, Any]],
                         ) -> list[dict[str, Any]]:
        if state.start_sent:
            return records
        state.held.extend(records)
        return []

    def _release(self, state: CallState, *, force: bool = False) -> list[dict[str, Any]]:
        if state.start_sent or (state.started is None and not force):
            out, state.held = state.held, []
            return out
        state.start_sent = True
        started = state.started
        message = {
            "type": "event:start",
            "phone": e164(started.from_) if started else "",
            "timestamp": started.timestamp if started else utc_now_iso(),
        }
        out = [transcript_record(state.call_id, message, record_id=f"{state.call_id}:start",
                                 producedAtMs=now_ms())]
        out += state.held
        state.held = []
        return out


__all__ = ["CallState", "CallTracker", "ChannelStream", "DecodeWork", "VadConfig", "e164", "now_ms"]
