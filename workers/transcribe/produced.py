"""What was already transcribed: per call channel, the end of the last final transcript on the
transcripts topic, read when a worker is given partitions, so that a worker that takes a call
over (after a rebalance, a restart, a kill) does not transcribe again what its predecessor did.

Why it is needed: a worker resumes a partition from its committed offset, the first record on
it not yet acknowledged. One partition carries both channels of a call (and other calls), and
the first unacknowledged record may be the lead-in of the *other* channel's open utterance
(``workers.transcribe.channel.KEEP_BEHIND_MS``), older than the end of an utterance already
transcribed on this channel. Replayed from there, the VAD starts inside that utterance and cuts
its tail as an utterance of its own: the same words under a second id, which consumers cannot
drop. ``bench.faults`` found such duplicates after transcriber kills and scale-outs. With the
end of the last final known, the new owner's channel stream drops, or trims, what it cuts
before it (:class:`~workers.transcribe.channel.ChannelStream`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from aiokafka import TopicPartition

from workers.kafka import new_consumer
from workers.kafka_security import PLAINTEXT, KafkaSecurity

#: How far back (wall clock) the transcripts topic is read: finals produced for audio after a
#: partition's committed offset are younger than this unless that worker ran minutes behind.
LOOKBACK_S = 120.0
#: The compact JSON of a final or a start (``workers.records.dumps``) holds one of these; an
#: interim's type is ``transcript:interim``, so most records are skipped without parsing.
_WANTED = (b'"type":"transcript"', b'"type":"event:start"')


@dataclass
class Produced:
    """What is on the transcripts topic already: where each call channel's last final ends,
    and the calls whose ``event:start`` went out (a worker that takes a call over from its
    first audio record, the call's start having been read by another, must not hold its
    transcripts back waiting for it)."""

    ends: dict[tuple[str, int], int] = field(default_factory=dict)
    started: set[str] = field(default_factory=set)


def fold(values: Iterable[bytes], into: Produced | None = None) -> Produced:
    """What ``values`` (transcripts-topic records) say was produced."""
    out = Produced() if into is None else into
    for value in values:
        if not any(wanted in value for wanted in _WANTED):
            continue
        try:
            record = json.loads(value)
        except ValueError:
            continue
        call, kind = record.get("callId"), record.get("type")
        if not isinstance(call, str):
            continue
        if kind == "event:start":
            out.started.add(call)
            continue
        channel, end = record.get("channel"), record.get("audioEndMs")
        if kind == "transcript" and isinstance(channel, int) and isinstance(end, int):
            out.ends[(call, channel)] = max(out.ends.get((call, channel), 0), end)
    return out


async def produced_until(bootstrap: str, topic: str, partitions: Iterable[int], *,
                         security: KafkaSecurity = PLAINTEXT,
                         lookback_s: float = LOOKBACK_S) -> Produced:
    """:func:`fold` of ``partitions`` of ``topic`` from ``lookback_s`` ago to their end now."""
    consumer = new_consumer(bootstrap, security=security, group_id=None,
                            enable_auto_commit=False, fetch_max_wait_ms=50,
                            client_id="transcribe-produced")
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(set(partitions))]
        consumer.assign(tps)
        since = int((time.time() - lookback_s) * 1000)
        found = await consumer.offsets_for_times({tp: since for tp in tps})
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            at = found.get(tp)
            # No record that recent: Kafka answers none, Tansu 0.6 offset 0 with timestamp -1.
            recent = at is not None and at.timestamp >= 0
            consumer.seek(tp, at.offset if recent else ends[tp])
        out = Produced()
        pending = [tp for tp in tps if await consumer.position(tp) < ends[tp]]
        while pending:
            batches = await consumer.getmany(*pending, timeout_ms=200)
            for messages in batches.values():
                fold((m.value for m in messages if m.value), out)
            pending = [tp for tp in pending if await consumer.position(tp) < ends[tp]]
        return out
    finally:
        await consumer.stop()


__all__ = ["LOOKBACK_S", "Produced", "fold", "produced_until"]
