"""What a bench call left (bench/playing.py), in particular a call cut by an ingest replica's
death: only the utterances whose audio the topic holds in full are expected of it."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from bench.calls import CallPlan, Turn
from bench.ledger import AudioRecord, call_figures
from bench.playing import CallRun, cut_loss_ms, evidence, stored_samples
from bench.watcher import Received, Watcher

CALL = "cut-1"
RATE = 16000


def plan() -> CallPlan:
    turns = [Turn(0, 0.5, 2.0, "a.wav", "s1", "first"), Turn(1, 3.0, 2.0, "b.wav", "s2", "second"),
             Turn(0, 6.0, 2.0, "c.wav", "s1", "third")]
    return CallPlan(CALL, Path("call.wav"), RATE, 9.0, ("s1", "s2"), turns)


def audio(channel: int, seconds: float, *, repeat_last: bool = False) -> list[AudioRecord]:
    """``seconds`` of a channel in 100 ms records (the last one stored twice: a retry)."""
    per = RATE // 10
    records = [AudioRecord(channel, seq, per) for seq in range(round(seconds * 10))]
    return records + records[-1:] if repeat_last else records


def final(channel: int, start: int, end: int) -> dict[str, Any]:
    return {"type": "transcript", "id": f"{CALL}:{channel}:{start}", "callId": CALL,
            "channel": channel, "audioStartMs": start, "audioEndMs": end, "msg": "x",
            "role": "other", "offset": start / 1000}


def test_a_cut_call_is_judged_on_the_audio_the_topic_holds() -> None:
    # The ingest died 5.5 s in: channel 0 stored to 5.0 s, channel 1 to 5.2 s; the provider
    # had sent 5.5 s of each. Turns 1 (ch 0, to 2.5 s) and 2 (ch 1, to 5.0 s) are stored whole.
    produced = [final(0, 400, 2600), final(1, 2900, 5100),
                {"type": "event:callEnd", "id": f"{CALL}:callEnd", "callId": CALL}]
    tap: Any = SimpleNamespace(
        produced={CALL: produced}, served={CALL: produced}, calls={CALL: [{"rate": RATE}]},
        audio={CALL: audio(0, 5.0, repeat_last=True) + audio(1, 5.2)})
    watcher = Watcher(CALL, [], "", "")
    watcher.received = [Received(float(i), {k: v for k, v in r.items() if k != "callId"}, 0)
                        for i, r in enumerate(produced)]
    run = CallRun(plan=plan(), provider="jambonz", watcher=watcher,
                  sent={0: int(5.5 * RATE), 1: int(5.5 * RATE)})
    assert stored_samples(tap, CALL) == {0: 5 * RATE, 1: int(5.2 * RATE)}

    cut = call_figures(evidence(tap, run, cut=True))
    assert (cut.utterances, cut.delivered, cut.missing) == (2, 2, 0)
    assert cut.audio_samples_lost == 0 and cut.clients_ended == 1
    assert cut_loss_ms(tap, run) == pytest.approx(500)

    whole = call_figures(evidence(tap, run))  # judged as an uncut call: the third turn missing
    assert (whole.utterances, whole.missing) == (3, 1)
    assert whole.audio_samples_lost == int(0.5 * RATE) + int(0.3 * RATE)
