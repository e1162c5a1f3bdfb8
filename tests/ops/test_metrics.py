"""Metrics: documented in one table (docs/metrics.md) that matches workers/metrics.py, named by
Prometheus conventions, and moving on every worker's /metrics after a simulated call."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import FIXTURES, RunningStack, seconds
from tests.ops.promql import defined_metrics
from workers.bridge.client import open_live_call
from workers.simulate.jambonz import simulate_jambonz

DOC = Path(__file__).parents[2] / "docs" / "metrics.md"
UNITLESS_HISTOGRAMS = {"callscribe_transcribe_real_time_factor", "callscribe_transcribe_batch_size"}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def documented() -> dict[str, tuple[str, frozenset[str]]]:
    """Rows of the table in docs/metrics.md: name → (type, labels)."""
    rows: dict[str, tuple[str, frozenset[str]]] = {}
    for line in DOC.read_text().splitlines():
        match = re.match(r"\|\s*`(callscribe_\w+)`\s*\|\s*(\w+)\s*\|([^|]*)\|", line)
        if match:
            name, kind, labels = match.groups()
            assert name not in rows, f"{name} is documented twice"
            rows[name] = (kind, frozenset(re.findall(r"`(\w+)`", labels)))
    return rows


def test_every_metric_is_documented_once_with_its_type_and_labels() -> None:
    code = {name: (m.type, frozenset(m.labels)) for name, m in defined_metrics().items()}
    docs = documented()
    assert sorted(code.keys() - docs.keys()) == [], "defined but not in docs/metrics.md"
    assert sorted(docs.keys() - code.keys()) == [], "in docs/metrics.md but not defined"
    for name, (kind, labels) in code.items():
        assert docs[name] == (kind, labels), name


def test_metric_names_follow_prometheus_conventions() -> None:
    for name, metric in defined_metrics().items():
        assert re.fullmatch(r"callscribe_[a-z0-9_]+", name), name
        assert metric.documentation.strip().endswith("."), name
        if metric.type == "counter":
            assert name.endswith("_total"), name
        else:
            assert not name.endswith("_total"), name
        if metric.type == "histogram" and name not in UNITLESS_HISTOGRAMS:
            assert name.endswith("_seconds"), f"{name}: histograms of durations in seconds"
        for label in metric.labels:
            assert re.fullmatch(r"[a-z][a-z_]*", label), (name, label)
            assert "call" not in label, f"{name}: a per-call label explodes cardinality"


# ------------------------------------------------------------------ live


def transcriber_http(stack: RunningStack) -> str:
    """The transcriber's health and metrics address (CALLSCRIBE_TRANSCRIBE_WEB_PORT of its
    process)."""
    explicit = getattr(stack, "transcriber_http", None)
    if explicit:
        return str(explicit)
    environ = Path(f"/proc/{stack.transcriber.pid}/environ").read_bytes().split(b"\0")
    port = next(e.split(b"=", 1)[1] for e in environ
                if e.startswith(b"CALLSCRIBE_TRANSCRIBE_WEB_PORT="))
    return f"http://127.0.0.1:{port.decode()}"


async def scrape(session: aiohttp.ClientSession, url: str) -> Samples:
    async with session.get(url) as response:
        assert response.status == 200, url
        assert response.headers["Content-Type"].startswith("text/plain"), url
        text = await response.text()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(samples: Samples, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


async def watch_and_join(stack: RunningStack, call_id: str) -> list[dict[str, object]]:
    """A liveCalls client that sends client:joinCall and reads until the call ends."""
    token, _ = stack.issuer.mint(call_id)
    ws = await open_live_call(stack.bridge_url, token, stack.api_key, wait_s=seconds(30))
    await ws.send(json.dumps({"type": "client:joinCall", "id": "join-1"}))
    return [json.loads(raw) async for raw in ws]


async def test_metrics_move_after_a_simulated_call(stack: RunningStack) -> None:
    ingest_http = stack.ingest_url.replace("ws://", "http://").rsplit("/", 1)[0]
    urls = {"ingest": f"{ingest_http}/metrics", "bridge": f"{stack.bridge_http}/metrics",
            "transcribe": f"{transcriber_http(stack)}/metrics"}
    call_id = f"metrics-{secrets.token_hex(4)}"
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=seconds(10))) as http:
        before = {w: await scrape(http, u) for w, u in urls.items()}
        watcher = asyncio.create_task(watch_and_join(stack, call_id))
        await simulate_jambonz(stack.ingest_url, FIXTURES / "speech" / "call_stereo_8k.wav",
                               rate=8000, mix="stereo", call_sid=call_id, realtime=False)
        received = await asyncio.wait_for(watcher, seconds(60))
        for path in ("/v1/calls", "/ws/v1/liveCalls?conversationToken=x"):
            async with http.get(stack.bridge_http + path,
                                headers={"Authorization": "Bearer wrong"}) as response:
                assert response.status == 401
        after = {w: await scrape(http, u) for w, u in urls.items()}

    assert {"type": "ack", "ackId": "join-1"} in received
    assert received[-1]["type"] == "event:callEnd"

    def moved(worker: str, name: str, by: float = 0.0, **labels: str) -> None:
        change = total(after[worker], name, **labels) - total(before[worker], name, **labels)
        assert change > by, f"{worker}: {name}{labels} moved by {change}"

    topics = stack.topics
    moved("ingest", "callscribe_ingest_calls_total", provider="jambonz")
    moved("ingest", "callscribe_ingest_audio_seconds_total", by=10.0, provider="jambonz")
    for role in ("other", "assistant"):  # both channels, 11 s each
        moved("transcribe", "callscribe_transcribe_audio_seconds_total", by=10.0, role=role)
        moved("transcribe", "callscribe_transcribe_utterances_total", by=1.0, role=role)
    for name in ("callscribe_transcribe_decode_seconds_count",
                 "callscribe_transcribe_real_time_factor_count",
                 "callscribe_transcribe_eou_to_produced_seconds_count",
                 "callscribe_transcribe_queue_wait_seconds_count"):
        moved("transcribe", name, by=3.0)
    # Sent faster than real time, the four utterances queue up and share batches.
    moved("transcribe", "callscribe_transcribe_batch_size_count")
    moved("transcribe", "callscribe_transcribe_batch_size_sum", by=3.0)
    moved("transcribe", "callscribe_kafka_produce_seconds_count", by=5.0,
          topic=topics.transcripts)
    moved("bridge", "callscribe_kafka_produce_seconds_count", topic=topics.control)
    # 11 s of two channels in 100 ms chunks, each acknowledged by the broker.
    moved("ingest", "callscribe_kafka_produce_seconds_count", by=200.0, topic=topics.audio)
    moved("ingest", "callscribe_kafka_produce_seconds_count", topic=topics.calls)
    moved("bridge", "callscribe_bridge_messages_sent_total", by=3.0, type="transcript")
    moved("bridge", "callscribe_bridge_eou_to_delivered_seconds_count", by=3.0)
    moved("bridge", "callscribe_bridge_control_published_total", type="client:joinCall")
    moved("bridge", "callscribe_bridge_auth_failures_total", endpoint="calls")
    moved("bridge", "callscribe_bridge_auth_failures_total", endpoint="liveCalls")
    moved("bridge", "callscribe_bridge_handshake_rejected_total", status="401")

    def lag_series(worker: str, consumer: str, topic: str) -> dict[str, float]:
        return {dict(labels)["partition"]: value
                for (name, labels), value in after[worker].items()
                if name == "callscribe_kafka_consumer_lag_records"
                and {("consumer", consumer), ("topic", topic)} <= labels}

    def has_lag(series: dict[str, float]) -> bool:
        return bool(series) and min(series.values()) >= 0

    assert has_lag(lag_series("bridge", "bridge", topics.transcripts_redacted))
    assert has_lag(lag_series("transcribe", "transcribe", topics.audio))
    # Gauges come back down once the call is over.
    assert total(after["ingest"], "callscribe_ingest_active_calls", provider="jambonz") == \
        total(before["ingest"], "callscribe_ingest_active_calls", provider="jambonz")
