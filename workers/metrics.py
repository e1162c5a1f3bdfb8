"""Prometheus metrics of every worker (prometheus-client), served at ``/metrics``.

Names follow Prometheus conventions: ``callscribe_<worker>_<what>_<unit>``; counters end in
``_total``. ``docs/metrics.md`` documents each one.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)

# ingest
INGEST_ACTIVE_CALLS = Gauge(
    "callscribe_ingest_active_calls", "Calls whose audio stream is open.", ["provider"])
INGEST_CALLS = Counter(
    "callscribe_ingest_calls_total", "Call audio streams accepted.", ["provider"])
INGEST_AUDIO_SECONDS = Counter(
    "callscribe_ingest_audio_seconds_total", "Seconds of audio published, per channel.",
    ["provider"])
INGEST_REJECTED = Counter(
    "callscribe_ingest_rejected_total",
    "Connections refused or closed for bad input, by reason.", ["provider", "reason"])
INGEST_IGNORED_FRAMES = Counter(
    "callscribe_ingest_ignored_frames_total",
    "Frames skipped without closing the call (unknown or malformed text), by reason.",
    ["provider", "reason"])
INGEST_PUBLISH_FAILURES = Counter(
    "callscribe_ingest_publish_failures_total", "Records Kafka did not accept.", ["topic"])
INGEST_BUFFERED_BYTES = Gauge(
    "callscribe_ingest_buffered_bytes",
    "Bytes of call records held until Kafka acknowledges them (every call's outbox).")
INGEST_BUFFER_FULL = Counter(
    "callscribe_ingest_buffer_full_total",
    "Times a call's outbox was full and its socket's reading waited for Kafka, by bound: "
    "call (CALLSCRIBE_INGEST_BUFFER_S), ingest (CALLSCRIBE_INGEST_BUFFER_MAX_BYTES).",
    ["provider", "bound"])
INGEST_SEND_RETRIES = Counter(
    "callscribe_ingest_send_retries_total",
    "Records the producer could not take within its request timeout, tried again.")
INGEST_AUDIOHOOK_EVENTS = Counter(
    "callscribe_ingest_audiohook_events_total",
    "Final transcripts of this replica's AudioHook sessions sent back to Genesys as event "
    "messages, or not sent, by outcome.", ["outcome"])

# transcribe
TRANSCRIBE_UTTERANCES = Counter(
    "callscribe_transcribe_utterances_total", "Utterances endpointed by the VAD.", ["role"])
TRANSCRIBE_SUPPRESSED = Counter(
    "callscribe_transcribe_suppressed_total",
    "Whisper segments suppressed as non-speech or hallucination, by reason.", ["reason"])
TRANSCRIBE_DECODE_SECONDS = Histogram(
    "callscribe_transcribe_decode_seconds", "Whisper decode time per utterance.",
    buckets=LATENCY_BUCKETS)
TRANSCRIBE_RTF = Histogram(
    "callscribe_transcribe_real_time_factor", "Decode time / audio duration per utterance.",
    buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0))
TRANSCRIBE_DECODES = Counter(
    "callscribe_transcribe_decodes_total",
    "Whisper decodes, by kind: final, interim, whole (an utterance decoded in whisper's own "
    "loop: longer than the largest window, or word timestamps on), align (word times for a "
    "sentence close).", ["kind"])
TRANSCRIBE_WINDOW = Counter(
    "callscribe_transcribe_window_decodes_total",
    "Batched decodes by the encoder window (seconds) their audio was decoded in.", ["window"])
TRANSCRIBE_INTERIM_INTERVAL = Histogram(
    "callscribe_transcribe_interim_interval_seconds",
    "Time between two interims of one open utterance: how often a call gets one; it grows "
    "with load (interims are scheduled round-robin from spare decoder time).",
    buckets=(0.2, 0.3, 0.4, 0.6, 0.8, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0))
TRANSCRIBE_SENTENCES_CLOSED = Counter(
    "callscribe_transcribe_sentences_closed_total",
    "Committed sentences closed as finals inside a longer utterance.")
TRANSCRIBE_FINALS_REUSED = Counter(
    "callscribe_transcribe_finals_reused_total",
    "Finals taken from the early decode made during the end-of-speech wait (no decode of "
    "their own).")
TRANSCRIBE_SPEAKER_SECONDS = Histogram(
    "callscribe_transcribe_speaker_seconds",
    "Time to make the voice prints of one decode batch's mixed-channel utterances (off the "
    "event loop, beside whisper).", buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0))
TRANSCRIBE_SPEAKER_TURNS = Counter(
    "callscribe_transcribe_speaker_turns_total",
    "Finals of mixed channels by role given (a final split at a change of speaker counts "
    "each turn).", ["role"])
TRANSCRIBE_SPEAKERS_UNAVAILABLE = Counter(
    "callscribe_transcribe_speakers_unavailable_total",
    "Mixed calls whose speakers were not separated because the 'speakers' extra is not "
    "installed (their transcripts keep the channel's role).")
TRANSCRIBE_EOU_TO_PRODUCED = Histogram(
    "callscribe_transcribe_eou_to_produced_seconds",
    "End of an utterance's speech (wall clock when its last audio arrived) to transcript "
    "produced.", buckets=LATENCY_BUCKETS)
TRANSCRIBE_ACTIVE_STREAMS = Gauge(
    "callscribe_transcribe_active_streams", "Call channels with transcription state.")
RECORDS_SKIPPED = Counter(
    "callscribe_records_skipped_total", "Kafka records that did not decode, by topic.",
    ["topic", "reason"])

# bridge
BRIDGE_CONNECTIONS = Gauge(
    "callscribe_bridge_connections", "Open liveCalls WebSocket connections.")
BRIDGE_HANDSHAKE_REJECTED = Counter(
    "callscribe_bridge_handshake_rejected_total", "liveCalls handshakes refused, by status.",
    ["status"])
BRIDGE_MESSAGES_SENT = Counter(
    "callscribe_bridge_messages_sent_total", "Messages sent to liveCalls clients, by type.",
    ["type"])
BRIDGE_CLIENT_ERRORS = Counter(
    "callscribe_bridge_client_errors_total", "Malformed client messages answered with error.")
BRIDGE_SLOW_CLIENT_CLOSES = Counter(
    "callscribe_bridge_slow_client_closes_total",
    "Clients closed (1013) because their queue overflowed.")
BRIDGE_CONTROL_PUBLISHED = Counter(
    "callscribe_bridge_control_published_total", "Client commands published, by type.",
    ["type"])
BRIDGE_DELIVERY_SECONDS = Histogram(
    "callscribe_bridge_eou_to_delivered_seconds",
    "Transcript produced (producedAtMs) to handed to a liveCalls client socket.",
    buckets=LATENCY_BUCKETS)


# added for the operations view (issue 7)
PRODUCE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
KAFKA_PRODUCE_SECONDS = Histogram(
    "callscribe_kafka_produce_seconds",
    "Record handed to the Kafka producer to acknowledged by the broker, by topic.",
    ["topic"], buckets=PRODUCE_BUCKETS)
KAFKA_CONSUMER_LAG = Gauge(
    "callscribe_kafka_consumer_lag_records",
    "Records in a partition after the last one this consumer processed (high watermark - "
    "processed offset - 1), by consumer, topic and partition.",
    ["consumer", "topic", "partition"])
TRANSCRIBE_AUDIO_SECONDS = Counter(
    "callscribe_transcribe_audio_seconds_total",
    "Seconds of audio the transcriber consumed from the audio topic, per channel role.",
    ["role"])
TRANSCRIBE_QUEUE_WAIT_SECONDS = Histogram(
    "callscribe_transcribe_queue_wait_seconds",
    "Utterance endpointed (its last audio arrived) to its whisper decode starting.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))
TRANSCRIBE_BATCH_SIZE = Histogram(
    "callscribe_transcribe_batch_size",
    "Utterances (finals and interims, across calls) decoded together in one whisper batch.",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32))
BRIDGE_AUTH_FAILURES = Counter(
    "callscribe_bridge_auth_failures_total",
    "Requests refused with 401 (bad or missing API key, rejected token), by endpoint.",
    ["endpoint"])


# added for the liveCalls bridge, complete (issue 5)
BRIDGE_LISTENERS = Gauge(
    "callscribe_bridge_listeners", "Open live-listen (PCM audio) WebSocket connections.")
BRIDGE_LISTEN_REQUESTS = Counter(
    "callscribe_bridge_listen_requests_total",
    "Live-listen requests (POST /v1/calls/{call_id}/listen and listen socket upgrades), by "
    "result: success or the error code answered.", ["result"])
BRIDGE_LISTEN_BYTES = Counter(
    "callscribe_bridge_listen_bytes_total", "Bytes of PCM audio sent to live listeners.")
BRIDGE_SLOW_LISTENER_CLOSES = Counter(
    "callscribe_bridge_slow_listener_closes_total",
    "Live listeners closed (1013) because their queue of audio frames overflowed.")
BRIDGE_AUDIO_FEEDS = Gauge(
    "callscribe_bridge_audio_feeds",
    "Audio-topic partitions this bridge is consuming for live listeners.")
BRIDGE_RATE_LIMITED = Counter(
    "callscribe_bridge_rate_limited_total",
    "liveCalls connections closed (1008) for sending messages faster than the rate limit.")
BRIDGE_CONTROL_DUPLICATES = Counter(
    "callscribe_bridge_control_duplicates_total",
    "Client commands acknowledged without publishing again (an id this bridge already "
    "published for the call), by type.", ["type"])
BRIDGE_CONTROL_OUTCOMES = Counter(
    "callscribe_bridge_control_outcomes_total",
    "Outcomes of client commands read from the calls topic (joined, failed), including "
    "redeliveries.", ["outcome"])


def exposition() -> tuple[bytes, str]:
    """The current metrics in the text format, and its content type."""
    return generate_latest(), CONTENT_TYPE_LATEST
