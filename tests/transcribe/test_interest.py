"""Interims only for watched calls (``CALLSCRIBE_INTERIMS=watched``): the interest state, the
tracker's interim scheduling, and the pipeline (an unwatched call gets finals only)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from tests.transcribe.test_pipeline import Harness, run, started, stereo_chunks, transcriber
from workers.records import InterimInterest
from workers.transcribe.asr import AsrResult, DecodeRequest, Transcriber
from workers.transcribe.calls import CallTracker, now_ms
from workers.transcribe.channel import VadConfig
from workers.transcribe.interest import Interest

__all__ = ["transcriber"]  # the module-scoped whisper fixture, shared with test_pipeline

T0 = 1_768_473_000_000


def interest(call_id: str, bridge: str, watching: bool, at_ms: int,
             ttl_ms: int = 30_000) -> InterimInterest:
    return InterimInterest(call_id=call_id, bridge=bridge, watching=watching, at_ms=at_ms,
                           ttl_ms=ttl_ms)


def test_interest_lapses_unless_re_sent() -> None:
    state = Interest()
    assert not state.watched("c", T0)
    state.note(interest("c", "b1", True, T0))
    assert state.watched("c", T0 + 29_999)
    assert not state.watched("c", T0 + 30_000)  # the bridge died: no re-send
    state.note(interest("c", "b1", True, T0 + 15_000))
    assert state.watched("c", T0 + 44_999)
    assert not state.watched("other", T0)


def test_interest_is_per_bridge_replica() -> None:
    state = Interest()
    state.note(interest("c", "b1", True, T0))
    state.note(interest("c", "b2", True, T0 + 1_000))
    state.note(interest("c", "b1", False, T0 + 2_000))  # b1's last client went
    assert state.watched("c", T0 + 3_000)  # b2's clients still watch
    state.note(interest("c", "b2", False, T0 + 4_000))
    assert not state.watched("c", T0 + 5_000)


def test_a_late_older_record_does_not_undo_a_newer_one() -> None:
    state = Interest()
    state.note(interest("c", "b1", False, T0 + 5_000))
    state.note(interest("c", "b1", True, T0))
    assert not state.watched("c", T0 + 6_000)


def test_lapsed_interest_is_forgotten() -> None:
    state = Interest()
    state.note(interest("a", "b1", True, T0))
    state.note(interest("b", "b1", True, T0 + 20_000))
    state.note(interest("b", "b2", False, T0 + 20_000))
    state.prune(T0 + 31_000)
    assert len(state) == 1 and state.watched("b", T0 + 31_000)
    state.prune(T0 + 60_000)
    assert len(state) == 0


def _speaking(tracker: CallTracker, call_id: str) -> list[Any]:
    """Feed a call's audio; the call channels due an interim after each chunk."""
    due = []
    for chunk in stereo_chunks(call_id):
        tracker.on_audio(chunk)
        due.append({k for k in tracker.wanted if k[0] == call_id})
    return due


def test_only_watched_calls_are_due_interims() -> None:
    everyone = CallTracker(VadConfig(interim_ms=400))
    assert any(_speaking(everyone, "always"))  # the default: every call

    tracker = CallTracker(VadConfig(interim_ms=400), interims_watched_only=True)
    assert not any(_speaking(tracker, "nobody"))
    tracker.on_interest(interest("seen", "b1", True, now_ms()))
    assert any(_speaking(tracker, "seen"))

    chunks = stereo_chunks("later")
    for chunk in chunks[:len(chunks) // 2]:
        tracker.on_audio(chunk)
    assert not [k for k in tracker.wanted if k[0] == "later"]
    tracker.on_interest(interest("later", "b1", True, now_ms()))
    due = []
    for chunk in chunks[len(chunks) // 2:]:
        tracker.on_audio(chunk)
        due.append({k for k in tracker.wanted if k[0] == "later"})
        if due[-1]:
            tracker.on_interest(interest("later", "b1", False, now_ms()))
            assert not [k for k in tracker.wanted if k[0] == "later"]  # dropped at once
            break
    assert due[-1], "a call watched mid-way is due interims from its next audio on"


class Counting:
    """Whisper, counting the requests it is given by kind."""

    def __init__(self, transcriber: Transcriber) -> None:
        self._transcriber = transcriber
        self.kinds: list[str] = []

    async def __call__(self, requests: Sequence[DecodeRequest]) -> list[AsrResult]:
        self.kinds += [r.kind for r in requests]
        return await self._transcriber.decode(requests)


@pytest.mark.parametrize("watched", [False, True], ids=["unwatched", "watched-mid-call"])
async def test_an_unwatched_call_gets_finals_without_interim_decodes(
        transcriber: Transcriber, watched: bool) -> None:
    counting = Counting(transcriber)
    harness = Harness(transcriber, interim_ms=500, interims_watched_only=True, decode=counting)
    chunks = list(enumerate(stereo_chunks("call")))
    half = len(chunks) // 2

    async def scenario() -> None:
        await harness.pipeline.submit_start(started("call"), [])
        await harness.feed(chunks[:half], paced=True)
        if watched:  # a client with interim=true arrives mid-call
            harness.tracker.on_interest(interest("call", "b1", True, now_ms()))
        await harness.feed(chunks[half:], paced=True)

    await asyncio.wait_for(run(harness, scenario()), 240)
    assert harness.finals()
    interims = [r for r in harness.sent if r["type"] == "transcript:interim"]
    if watched:
        assert "interim" in counting.kinds and interims
    else:
        assert "interim" not in counting.kinds
