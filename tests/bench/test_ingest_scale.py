"""The ingest-at-scale bench (bench/loadgen.py, bench/ingest_scale.py): what the load generator
puts on the wire is what each provider's real codec accepts, and the latency, loss and
histogram arithmetic."""

from __future__ import annotations

from array import array
from typing import Any

import numpy as np
import pytest

from bench.ingest_scale import Channel, histogram_quantiles, sent_times, seq_gaps, stream_figures
from bench.loadgen import PROVIDERS, SPF, Stream
from workers.ingest.dialects import events as ev
from workers.ingest.dialects.jambonz import JambonzCodec
from workers.ingest.dialects.plivo import PlivoCodec
from workers.ingest.dialects.telnyx import TelnyxCodec
from workers.ingest.dialects.twilio import TwilioCodec

CODECS: dict[str, Any] = {"jambonz": lambda: JambonzCodec(default_mix="stereo"),
                          "twilio": TwilioCodec, "plivo": PlivoCodec, "telnyx": TelnyxCodec}


@pytest.mark.parametrize("provider", PROVIDERS)
@pytest.mark.parametrize("tracks", [("inbound", "outbound"), ("inbound",)])
def test_the_load_generators_frames_are_what_the_providers_codec_reads(
        provider: str, tracks: tuple[str, ...]) -> None:
    stream = Stream(f"call-{provider}", provider, tracks, start_tick=0)
    codec = CODECS[provider]()
    events: list[Any] = []
    for message in stream.start_messages():
        events += codec.receive_text(message)
    for k in range(60):
        for message in stream.frame(k):
            events += (codec.receive_binary(message) if isinstance(message, bytes)
                       else codec.receive_text(message))
    stop = stream.stop_message()
    if stop is not None:
        events += codec.receive_text(stop)
    starts = [e for e in events if isinstance(e, ev.CallStart)]
    assert len(starts) == 1
    assert (starts[0].call_id, starts[0].rate) == (f"call-{provider}", 8000)
    assert starts[0].channels == stream.channels()
    samples: dict[int, int] = {}
    for e in events:
        if isinstance(e, ev.Audio):
            for channel, pcm in enumerate(e.channels):
                samples[channel] = samples.get(channel, 0) + len(pcm) // 2
        elif isinstance(e, ev.TrackAudio):
            samples[e.channel] = samples.get(e.channel, 0) + len(e.pcm) // 2
    assert samples == dict.fromkeys(range(stream.channels()), 60 * SPF)
    assert not [e for e in events if isinstance(e, ev.Ignored)]
    if stop is not None:
        assert isinstance(events[-1], ev.Stop)


def test_a_frames_send_time_is_its_tick_at_the_streams_place_in_the_order() -> None:
    client = {"ticks": [[100.0, 100.010], [100.020, 100.030], [100.040, 100.050]], "live": 2}
    first = sent_times(client, {"order": 0, "startTick": 1, "frames": 2})
    assert first == pytest.approx([100.025, 100.045])
    second = sent_times(client, {"order": 1, "startTick": 0, "frames": 3})
    assert second == pytest.approx([100.010, 100.030, 100.050])


def test_a_records_latency_runs_from_its_last_frame_and_from_its_oldest() -> None:
    sent = np.arange(10) * 0.02 + 1000.0  # frames 0..9, one every 20 ms
    channel = Channel(seen=array("d", [1000.15, 1000.25]), stamp=array("d", [1000.09, 1000.19]),
                      start=array("q", [0, 5 * SPF]), end=array("q", [5 * SPF, 10 * SPF]),
                      seqs=array("q", [0, 1]), samples=10 * SPF)
    out = stream_figures(channel, sent, SPF, after=0.0)
    assert out["last"] == pytest.approx([0.07, 0.07])  # frame 4 at 1000.08, frame 9 at .18
    assert out["first"] == pytest.approx([0.15, 0.15])
    assert out["stamp"] == pytest.approx([0.01, 0.01])
    assert stream_figures(channel, sent, SPF, after=1000.1)["last"] == pytest.approx([0.07])


def test_seq_gaps_count_missing_numbers_not_repeats() -> None:
    assert seq_gaps([0, 1, 2, 2, 3]) == 0
    assert seq_gaps([0, 1, 4, 5]) == 2
    assert seq_gaps([]) == 0


def test_histogram_quantiles_are_the_bucket_bounds_of_the_increase() -> None:
    name, topic = "callscribe_kafka_produce_seconds", "t.audio"

    def buckets(counts: list[float]) -> dict[str, float]:
        bounds = ["0.005", "0.01", "0.1", "+Inf"]
        return {f"{name}_bucket{{le={le},topic={topic}}}": n for le, n in zip(bounds, counts,
                                                                             strict=True)}
    before = buckets([10, 10, 10, 10])
    after = buckets([60, 108, 110, 110])  # of 100 new: 50 ≤ 5 ms, 98 ≤ 10 ms, 100 ≤ 100 ms
    out = histogram_quantiles(before, after, name, topic)
    assert out == {"count": 100, "p50": 0.005, "p99": 0.1}
