"""Prometheus metrics of the assist worker (``callscribe_assist_*``), served at ``/metrics``
with every other metric of the process (``workers.metrics.exposition``)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

#: Transcript produced → assist message produced; the issue's target is p95 <= 300 ms.
HINT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0)

MESSAGES = Counter(
    "callscribe_assist_messages_total",
    "Assist messages produced, by kind, source and rule (the playbook rule or disclosure; "
    "'-' for knowledge articles and sentiment alerts, which are not rules).",
    ["kind", "source", "rule"])
REDACTIONS = Counter(
    "callscribe_assist_redactions_total", "Spans replaced by a placeholder, by entity.",
    ["entity"])
SUMMARIES = Counter(
    "callscribe_assist_summaries_total", "End-of-call summaries produced.")
DROPPED = Counter(
    "callscribe_assist_dropped_total",
    "Transcripts records not passed to the redacted topic (unknown type).")
TRANSCRIPT_TO_ASSIST = Histogram(
    "callscribe_assist_transcript_to_assist_seconds",
    "Transcript produced (its producedAtMs) to the assist message produced.",
    buckets=HINT_BUCKETS)
PROCESS_SECONDS = Histogram(
    "callscribe_assist_process_seconds",
    "Time the engine spends on one final transcript (redaction, rules, search, sentiment).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1))
ACTIVE_CALLS = Gauge("callscribe_assist_active_calls", "Calls with assist state.")
