"""Plays bench calls through the provider simulators and gathers what each call left, for
``bench.faults`` and ``bench.soak``: a call (:class:`CallRun`: its plan, provider, liveCalls
client and what the provider sent), :func:`play` (the provider's simulator, in real time) and
:func:`evidence` (the call's records on the topics, for ``bench.ledger``).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidStatus

from bench.calls import CallPlan
from bench.ledger import CallEvidence, Spoken
from bench.procs import ProcessStack
from bench.tap import TopicTap
from bench.watcher import Watcher
from workers.simulate.jambonz import simulate_jambonz
from workers.simulate.plivo import simulate_plivo
from workers.simulate.twilio import simulate_twilio

log = logging.getLogger(__name__)

PROVIDERS = ("jambonz", "twilio", "plivo")


@dataclass
class CallRun:
    plan: CallPlan
    provider: str
    watcher: Watcher
    sent: dict[int, int] = field(default_factory=dict)
    started_at: float = 0.0
    ended_at: float = 0.0
    close_code: int | None = None
    error: str | None = None
    #: jambonz only: the longest time between two frames the simulator sent (the socket
    #: stopped taking them: back-pressure).
    longest_send_stall_s: float | None = None



async def play(stack: ProcessStack, run: CallRun, index: int, delay_s: float) -> None:
    """One call through its provider's simulator, in real time."""
    await asyncio.sleep(delay_s)
    plan = run.plan
    run.started_at = time.time()
    try:
        if run.provider == "jambonz":
            sim = await simulate_jambonz(stack.ingest_url(index, "/jambonz"), plan.wav,
                                         rate=plan.rate, mix="stereo", call_sid=plan.call_id)
            run.sent = {0: sim.samples_sent, 1: sim.samples_sent}
            times = [at for _, at in sim.frame_times]
            run.longest_send_stall_s = max((b - a for a, b in itertools.pairwise(times)),
                                           default=0.0)
        else:
            simulate = simulate_twilio if run.provider == "twilio" else simulate_plivo
            kwargs: dict[str, Any] = ({"call_sid": plan.call_id} if run.provider == "twilio"
                                      else {"call_id": plan.call_id,
                                            "content_type": f"audio/x-l16;rate={plan.rate}"})
            track = await simulate(stack.ingest_url(index, f"/{run.provider}"), plan.wav,
                                   tracks="both", **kwargs)
            run.sent = {0: track.samples_sent.get("inbound", 0),
                        1: track.samples_sent.get("outbound", 0)}
            run.close_code = track.close_code
    except ConnectionClosed as exc:  # the jambonz simulator does not catch it
        run.close_code = exc.rcvd.code if exc.rcvd is not None else None
        if run.close_code is None:
            run.error = f"{type(exc).__name__}: {exc}"
    except (OSError, InvalidStatus) as exc:
        run.error = f"{type(exc).__name__}: {exc}"
        log.warning("call %s: %s", plan.call_id, run.error)
    run.ended_at = time.time()


def spoken(plan: CallPlan) -> list[Spoken]:
    return [Spoken(t.channel, round(t.start_s * 1000), round((t.start_s + t.duration_s) * 1000),
                   t.text) for t in plan.turns]


def stored_samples(tap: TopicTap, call_id: str) -> dict[int, int]:
    """Samples of each channel of ``call_id`` on the audio topic (each ``seq`` once)."""
    seen: dict[tuple[int, int], int] = {}
    for record in tap.audio.get(call_id, []):
        seen[(record.channel, record.seq)] = record.samples
    out: dict[int, int] = {}
    for (channel, _), samples in seen.items():
        out[channel] = out.get(channel, 0) + samples
    return out


def call_rate(tap: TopicTap, run: CallRun) -> int:
    """The call's audio rate as the ingest published it (``call.started``)."""
    for record in tap.calls.get(run.plan.call_id, []):
        if isinstance(record.get("rate"), int):
            return int(record["rate"])
    return 8000 if run.provider == "twilio" else run.plan.rate


def evidence(tap: TopicTap, run: CallRun, *, cut: bool = False) -> CallEvidence:
    """What ``run`` left. ``cut``: its provider socket was dropped mid-call (its ingest
    died): only the utterances whose audio the topic holds in full are expected, and the
    audio the topic holds counts as what was sent (what was in flight at the cut is reported
    apart: :func:`cut_loss_ms`)."""
    call_id = run.plan.call_id
    expected = spoken(run.plan)
    sent: dict[int, int] = dict(run.sent)
    if cut:
        stored = stored_samples(tap, call_id)
        rate = call_rate(tap, run)
        expected = [s for s in expected if s.end_ms * rate <= stored.get(s.channel, 0) * 1000]
        sent = {ch: stored.get(ch, 0) for ch in run.sent}
    return CallEvidence(
        call_id=call_id, spoken=expected, produced=tap.produced.get(call_id, []),
        served=tap.served.get(call_id, []), audio=tap.audio.get(call_id, []), sent=sent,
        clients=[[(r.at, r.message) for r in run.watcher.received]],
        started_at=run.started_at, ended_at=run.ended_at)


def cut_loss_ms(tap: TopicTap, run: CallRun) -> float:
    """Of a cut call: the most audio (ms, over its channels) the provider sent that the topic
    does not hold (in the dead ingest's buffers, or in the socket, at the cut)."""
    stored = stored_samples(tap, run.plan.call_id)
    rate = call_rate(tap, run)
    return max((1000 * (n - stored.get(ch, 0)) / rate for ch, n in run.sent.items()),
               default=0.0)


__all__ = ["PROVIDERS", "CallRun", "call_rate", "cut_loss_ms", "evidence", "play", "spoken",
           "stored_samples"]
