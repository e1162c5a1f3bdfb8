"""End to end on real parts: a simulated jambonz call (the caller wants to cancel and reads a
card number as spoken digits) → ingest → Kafka (embedded Tansu) → transcriber (tiny.en) →
Kafka → the assist worker as a child process (``callscribe assist``) → the assist, redacted
transcripts and summaries topics."""

from __future__ import annotations

import asyncio
import json
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from tests.conftest import ARTIFACTS, FIXTURES, RunningStack, seconds
from tests.schema_util import validate
from workers.simulate.jambonz import simulate_jambonz

SCRIPT = json.loads((FIXTURES / "assist" / "cancel_call.json").read_text())
CARD = SCRIPT["card_number"]


@pytest.fixture(scope="module")
def assist_worker(stack: RunningStack) -> subprocess.Popen[bytes]:
    """The stack's ``callscribe assist`` child process (summary grace 2 s)."""
    return stack.assist


async def read_topic(stack: RunningStack, topic: str, call_id: str, *,
                     until: Callable[[list[dict[str, Any]]], bool],
                     wait_s: float) -> list[dict[str, Any]]:
    """The JSON values of ``call_id``'s records on ``topic`` from the start, until ``until``."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=stack.bootstrap, group_id=None,
                                auto_offset_reset="earliest", fetch_max_wait_ms=20)
    await consumer.start()
    found: list[dict[str, Any]] = []
    try:
        async with asyncio.timeout(wait_s):
            while not until(found):
                batches = await consumer.getmany(timeout_ms=200)
                for batch in batches.values():
                    found += [json.loads(m.value) for m in batch if m.key == call_id.encode()]
    finally:
        await consumer.stop()
    return found


def ended(records: list[dict[str, Any]]) -> bool:
    return any(r["type"] == "event:callEnd" for r in records)


def digits(records: list[dict[str, Any]]) -> str:
    return "".join(c for r in records for c in str(r.get("msg", "")) if c.isdigit())


async def test_cancel_call_gets_hints_redaction_and_a_summary(
        stack: RunningStack, assist_worker: subprocess.Popen[bytes]) -> None:
    call_id = "e2e-assist-cancel"
    topics = stack.topics
    await simulate_jambonz(stack.ingest_url, FIXTURES / "assist" / SCRIPT["file"], rate=8000,
                           mix="stereo", call_sid=call_id, realtime=False, dtmf=[(2.0, "1")])
    (summary,) = await read_topic(stack, topics.summaries, call_id, until=lambda rs: bool(rs),
                                  wait_s=seconds(60))
    raw = await read_topic(stack, topics.transcripts, call_id, until=ended, wait_s=seconds(10))
    redacted = await read_topic(stack, topics.transcripts_redacted, call_id, until=ended,
                                wait_s=seconds(10))
    assist = await read_topic(stack, topics.assist, call_id,
                              until=lambda rs: len(rs) >= len(summary["assist"]),
                              wait_s=seconds(10))

    finals = {r["id"]: r for r in raw if r["type"] == "transcript"}
    assert CARD in digits(list(finals.values())), "the transcriber heard the card number"

    # A retention hint, caused by the caller's "cancel my subscription".
    hint = next(m for m in assist if m["kind"] == "hint" and m["ref"] == "retention-offer")
    assert "cancel" in finals[hint["transcriptId"]]["msg"].lower()
    assert finals[hint["transcriptId"]]["role"] == "other"
    for message in assist:
        validate("assist", message)
        assert message["transcriptId"] in finals

    # The redacted topic: the same records with the same ids (plus the assist messages right
    # after their transcript), no card digits, the card replaced by [CARD].
    assert [r["id"] for r in redacted if r["type"] != "assist"] == [r["id"] for r in raw]
    assert [r["id"] for r in redacted if r["type"] == "assist"] == [m["id"] for m in assist]
    assert CARD not in digits(redacted) and "[CARD]" in " ".join(
        r.get("msg", "") for r in redacted)
    for record in redacted:
        validate("assist" if record["type"] == "assist" else "transcripts", record)
        if record["type"] == "assist":
            previous = [r for r in redacted[:redacted.index(record)] if r["type"] != "assist"]
            assert previous[-1]["id"] == record["transcriptId"]

    # One summary, valid, redacted, with what happened.
    validate("summaries", summary)
    assert CARD not in "".join(c for c in json.dumps(summary) if c.isdigit())
    assert summary["redactions"].get("CARD", 0) >= 1
    assert "cancellation-request" in summary["outcome"]["tags"]
    assert summary["dtmf"] == [{"digit": "1", "tMs": summary["dtmf"][0]["tMs"],
                                "masked": False}]
    assert summary["durationMs"] >= 30_000 and set(summary["talkTimeMs"]) == {"other",
                                                                               "assistant"}

    # Transcript produced -> assist message produced (Kafka hop + assist work).
    latency_ms = sorted(m["producedAtMs"] - finals[m["transcriptId"]]["producedAtMs"]
                        for m in assist)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "assist-latency.json").write_text(json.dumps(
        {"transcript_to_assist_ms": latency_ms, "messages": [
            {k: m[k] for k in ("kind", "ref", "title", "transcriptId")} for m in assist],
         "redacted": [r.get("msg") for r in redacted if r["type"] == "transcript"],
         "summary": summary["summary"]}, indent=2))
    assert latency_ms[-1] <= seconds(1.0) * 1000, latency_ms
