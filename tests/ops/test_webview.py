"""The live web view in real headless Chromium: open ``/#key=…&call=…`` before the call starts,
play a simulated call in real time, and see the caller's words appear on the page.

Saves ``artifacts/webview.png`` (taken while the call is live) for people to look at.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

from tests.conftest import ARTIFACTS, FIXTURES, RunningStack, seconds
from tests.ops.chromium import ensure_chromium, open_page
from workers.kafka import new_producer, start_producer
from workers.records import CallStarted, dumps, transcript_record
from workers.simulate.jambonz import simulate_jambonz

SCREENSHOT = ARTIFACTS / "webview.png"


def texts(selector: str) -> str:
    """JavaScript: the text of every element matching ``selector``, lower-cased, joined."""
    return (f"[...document.querySelectorAll({json.dumps(selector)})]"
            ".map((e) => e.textContent).join(' | ').toLowerCase()")


async def test_live_call_words_appear_in_the_web_view(stack: RunningStack) -> None:
    binary = await asyncio.to_thread(ensure_chromium)
    call_id = f"webview-{secrets.token_hex(4)}"
    async with open_page(binary, log_path=ARTIFACTS / "chromium.log") as page:
        await page.goto(f"{stack.bridge_http}/#key={stack.api_key}&call={call_id}")
        await page.wait_for("document.getElementById('bridgeState').textContent"
                            ".includes('live call')", seconds(10),
                            "the page did not list live calls with its API key")
        # The key is dropped from the address bar (it stays in sessionStorage).
        assert await page.evaluate("location.hash") == f"#call={call_id}"

        call = asyncio.create_task(simulate_jambonz(
            stack.ingest_url, FIXTURES / "speech" / "call_stereo_8k.wav", rate=8000,
            mix="stereo", call_sid=call_id, realtime=True))
        try:
            await page.wait_for(texts("#transcript .line.other.final .msg") +
                                ".includes('internet')", seconds(40),
                                "the caller's first sentence did not appear")
            await page.wait_for(texts("#transcript .line.assistant.final .msg") +
                                ".includes('sorry')", seconds(20),
                                "the agent's first sentence did not appear")
            # For the screenshot: the caller's next sentence as a live interim, if it comes.
            await page.poll("!!document.querySelector('#transcript .line.interim')", 2.5)
            listed = await page.evaluate(texts("#calls .call"))
            assert call_id in listed and "jambonz" in listed and "+15083084809" in listed
            assert await page.evaluate(
                "/^\\d+:\\d\\d$/.test(document.getElementById('duration').textContent)")
            await page.screenshot(SCREENSHOT)
        finally:
            await asyncio.wait_for(call, seconds(30))

        await page.wait_for("document.getElementById('status').textContent === 'ended'",
                            seconds(30), "the call did not end on the page")
        caller = await page.evaluate(texts("#transcript .line.other.final .msg"))
        agent = await page.evaluate(texts("#transcript .line.assistant.final .msg"))
        for words in ("internet", "working", "turn it off"):
            assert words in caller, caller
        for words in ("sorry", "account"):
            assert words in agent, agent
        # Lines keep the call's timeline order, and each names its speaker.
        offsets = await page.evaluate("[...document.querySelectorAll('#transcript .line')]"
                                      ".map((e) => Number(e.dataset.offset))")
        assert offsets == sorted(offsets) and len(offsets) >= 4
        assert "caller" in await page.evaluate(texts("#transcript .line.other .role"))
        assert page.errors == [], page.errors
    assert SCREENSHOT.stat().st_size > 10_000


async def test_interims_assist_cards_and_latency_render(stack: RunningStack) -> None:
    """Records the transcriber and the assist worker will produce (interim revisions, assist
    hints, articles and alerts, a latency figure), put on the topics directly, rendered from
    the real bridge's liveCalls stream."""
    binary = await asyncio.to_thread(ensure_chromium)
    call_id = f"webview-assist-{secrets.token_hex(4)}"
    producer = new_producer(stack.bootstrap, client_id="test-webview")
    await start_producer(producer)

    async def transcript(message: dict[str, Any], record_id: str) -> None:
        # Assist messages go where the assist worker writes them (the redacted stream the
        # bridge serves); the rest where the transcriber does (the assist worker forwards it).
        topic = stack.topics.transcripts_redacted if message["type"] == "assist" \
            else stack.topics.transcripts
        record = transcript_record(call_id, message, record_id=record_id,
                                   producedAtMs=int(time.time() * 1000))
        await producer.send_and_wait(topic, key=call_id.encode(), value=dumps(record))

    try:
        started = CallStarted(call_id=call_id, provider="jambonz", from_="+15550100",
                              to="+15550199", direction="inbound", rate=8000, channels=2,
                              mix="stereo", roles=("other", "assistant"))
        await producer.send_and_wait(stack.topics.calls, key=call_id.encode(),
                                     value=dumps(started.to_json()))
        await transcript({"type": "event:start", "phone": "+15550100",
                          "timestamp": started.timestamp}, f"{call_id}:start")
        async with open_page(binary, log_path=ARTIFACTS / "chromium-assist.log") as page:
            await page.goto(f"{stack.bridge_http}/#key={stack.api_key}&call={call_id}")
            await page.wait_for("document.getElementById('status').textContent === 'live'",
                                seconds(10), "the page did not open the call")
            utterance = f"{call_id}:0:500"
            # An interim whose final never comes (whisper's guess at noise, then suppressed).
            await transcript({"type": "transcript:interim", "msg": "Mind?", "role": "other",
                              "offset": 0.1, "revision": 0, "stable": ""}, f"{call_id}:0:100")
            await transcript({"type": "transcript:interim", "msg": "I want to cancel",
                              "role": "other", "offset": 0.5, "revision": 0,
                              "stable": "I want"}, utterance)
            await page.wait_for(texts("#transcript .line.interim .unstable") +
                                ".includes('to cancel')", seconds(10),
                                "the interim did not appear with its unstable tail")
            await transcript({"type": "transcript", "msg": "I want to cancel my subscription.",
                              "role": "other", "offset": 0.5, "latency": 0.42}, utterance)
            # The real assist worker adds its own cards for this final (the bundled playbook's
            # retention offer, a knowledge article); these three are told apart by their refs.
            for kind, source, ref, title, text in (
                    ("hint", "playbook", "test-retention", "Offer the retention discount",
                     "Customers who cancel often accept 20% off."),
                    ("article", "kb", "test-kb-cancel", "Cancellation policy",
                     "Cancel any time; refunds within 30 days."),
                    ("alert", "sentiment", "test-escalation", "Caller is frustrated",
                     "Acknowledge the problem before offering anything.")):
                await transcript({"type": "assist", "kind": kind, "title": title, "text": text,
                                  "transcriptId": utterance, "source": source, "ref": ref,
                                  "reason": f"matched {ref}", "priority": 1, "offset": 0.5},
                                 f"{utterance}:assist:{source}:{ref}")
            ours = "[...document.querySelectorAll('#assistList .assist')]" \
                ".filter((e) => e.textContent.toLowerCase().includes('test-'))"
            await page.wait_for(f"{ours}.length === 3", seconds(10),
                                "the three assist cards did not appear")
            lines = await page.evaluate(
                f"[...document.querySelectorAll('#transcript .line[data-id=\"{utterance}\"]')]"
                ".map((e) => e.className + ' ' + e.textContent)")
            assert len(lines) == 1 and "final" in lines[0] and "subscription" in lines[0], lines
            assert "mind?" not in await page.evaluate(texts("#transcript")), \
                "a stale interim outlived the speaker's next final"
            assert "+0.42 s" in lines[0]
            assert await page.evaluate("document.getElementById('latency').textContent") \
                == "0.42 s"
            assert await page.evaluate("document.getElementById('alerts').textContent") == "1"
            kinds = await page.evaluate(f"{ours}.map((e) => e.dataset.kind)")
            assert sorted(kinds) == ["alert", "article", "hint"]
            assert "cancellation policy" in await page.evaluate(texts("#assistList .article"))
            assert await page.evaluate("document.getElementById('sentiment').textContent") \
                == "Caller is frustrated"
            await page.wait_for(texts("#calls .call") + ".includes('1 alert')", seconds(5),
                                "the call list did not show the alert")
            await page.screenshot(ARTIFACTS / "webview-assist.png")
            await transcript({"type": "event:callEnd", "timestamp": started.timestamp},
                             f"{call_id}:callEnd")
            await page.wait_for("document.getElementById('status').textContent === 'ended'",
                                seconds(10), "the call did not end on the page")
            assert page.errors == [], page.errors
    finally:
        await producer.stop()
