"""Short forms of the fault bench (``python -m bench.faults``, docs/reliability.md), on the
real system with every worker its own process (``bench.procs``) and a broker of its own:

* the transcriber that holds a live call is killed (SIGKILL) twice and restarted: every
  sentence still reaches the liveCalls client, nothing under a second id, no audio lost;
* the broker is frozen (SIGSTOP) during a live call, which ends meanwhile, for longer than the
  ingest producer's request timeout (3 s here): every worker's ``/readyz`` fails meanwhile,
  ingest holds the audio and retries it, nothing is missed, no ``seq`` gap, and no worker needs
  a restart;
* with the broker frozen, every worker exits on SIGTERM within its documented deadline.

The ledger (``bench.ledger``) compares what the client received with the sentences of the
fixture call and with what the transcriber produced.
"""

from __future__ import annotations

import asyncio
import json
import time
import wave
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed

from bench.bench_stack import scrape
from bench.ledger import CallEvidence, Spoken, call_figures
from bench.procs import ProcessStack, Replicas, Worker, stop_deadline_s
from bench.tap import TopicTap
from bench.watcher import Watcher
from tests.conftest import ARTIFACTS, FIXTURES, seconds
from workers.simulate.jambonz import simulate_jambonz

LOGS = ARTIFACTS / "faults"
#: No assist worker in the short forms: the bridge serves the transcriber's topic.
RAW = {"CALLSCRIBE_BRIDGE_SOURCE": "raw"}
#: How long the broker is frozen during the live call: readiness fails after
#: workers.kafka.BROKER_STALE_S (5 s) without an answer.
FREEZE_S = 8.0
#: CALLSCRIBE_INGEST_REQUEST_TIMEOUT_S in the freeze test: the freeze outlasts it (30 s in
#: production; docs/reliability.md, "A broker outage").
REQUEST_TIMEOUT_S = 3.0
#: CALLSCRIBE_INGEST_DRAIN_SECONDS and CALLSCRIBE_TRANSCRIBE_DRAIN_SECONDS of the stop test.
DRAIN_S = 5.0


def looped_call(folder: Path, times: int) -> tuple[Path, list[Spoken]]:
    """``call_stereo_8k.wav`` ``times`` times over, and its sentences (from the manifest)."""
    source = FIXTURES / "speech" / "call_stereo_8k.wav"
    with wave.open(str(source), "rb") as wav:
        params = wav.getparams()
        frames = wav.readframes(params.nframes)
    out = folder / "looped.wav"
    with wave.open(str(out), "wb") as wav:
        wav.setparams(params)
        wav.writeframes(frames * times)
    length_s = params.nframes / params.framerate
    manifest = json.loads((FIXTURES / "speech" / "manifest.json").read_text())
    tracks = manifest["files"]["call_stereo_8k.wav"]["tracks"]
    spoken = [Spoken(track["channel"], round((s["start_s"] + k * length_s) * 1000),
                     round((s["end_s"] + k * length_s) * 1000), s["text"])
              for k in range(times) for track in tracks for s in track["sentences"]]
    return out, spoken


async def live_call(stack: ProcessStack, tap: TopicTap, wav: Path, spoken: list[Spoken],
                    call_id: str, during: Callable[[], Awaitable[None]]) -> CallEvidence:
    """Play ``wav`` in real time with a liveCalls client while ``during`` runs (from the
    call's start); what the client and the topics got."""
    watcher = Watcher(call_id, stack.bridge_urls(), stack.issuer.mint(call_id)[0],
                      stack.api_key)
    watching = asyncio.create_task(watcher.run(seconds(120)))
    started = time.time()
    playing = asyncio.create_task(simulate_jambonz(
        stack.ingest_url(0, "/jambonz"), wav, rate=8000, mix="stereo", call_sid=call_id))
    await during()
    sim = await playing
    ended = time.time()
    await watching
    assert await tap.caught_up(seconds(30))
    return CallEvidence(call_id=call_id, spoken=spoken, produced=tap.produced[call_id],
                        served=tap.served[call_id], audio=tap.audio[call_id],
                        sent={0: sim.samples_sent, 1: sim.samples_sent},
                        clients=[[(r.at, r.message) for r in watcher.received]],
                        started_at=started, ended_at=ended)


def assert_nothing_lost(call: CallEvidence) -> None:
    figures = call_figures(call)
    detail = figures.details[0]
    assert figures.clients_ended == 1, detail
    assert figures.missing == 0, detail  # every sentence reached the client
    assert figures.finals_missed == 0 and figures.messages_missed == 0, detail
    assert figures.dup_other_id == 0, detail  # nothing the client cannot drop by id
    assert figures.audio_samples_lost == 0 and figures.audio_seq_gaps == 0, detail


def owner(stack: ProcessStack) -> Worker:
    """The transcriber that holds the call's state now (the only one with live streams), or
    the first one when none does yet."""
    for worker in stack.of("transcribe"):
        try:
            if scrape(f"{worker.http}/metrics").get("callscribe_transcribe_active_streams"):
                return worker
        except OSError:
            continue
    return stack.of("transcribe")[0]


async def test_transcribers_killed_mid_call_lose_no_utterance(tmp_path: Path) -> None:
    wav, spoken = looped_call(tmp_path, 2)  # 23.6 s, 8 sentences
    stack = ProcessStack(LOGS / "kills", replicas=Replicas(ingest=1, transcribe=2, assist=0,
                                                           bridge=1),
                         env=RAW, ready_timeout_s=seconds(90))
    async with stack:
        tap = TopicTap(stack.bootstrap, stack.topics, served=stack.topics.transcripts)
        await tap.start()
        killed: list[str] = []

        async def kill_the_owner_twice() -> None:
            for pause in (6.0, 8.0):  # at about 6 s and 14 s into the call
                await asyncio.sleep(pause)
                victim = await asyncio.to_thread(owner, stack)
                await stack.kill(victim, restart=True)
                killed.append(victim.name)

        try:
            call = await live_call(stack, tap, wav, spoken, "killed-twice", kill_the_owner_twice)
        finally:
            await tap.stop()
    assert len(killed) == 2
    assert_nothing_lost(call)


async def test_a_live_call_through_a_broker_freeze_misses_nothing(tmp_path: Path) -> None:
    """The freeze (8 s) outlasts the ingest producer's request timeout (3 s) and the call's
    end (it begins 18 s into the 23.6 s call): ingest keeps the audio and ``call.ended`` it
    took and retries them, in order, until the broker answers."""
    wav, spoken = looped_call(tmp_path, 2)
    stack = ProcessStack(LOGS / "freeze", replicas=Replicas(ingest=1, transcribe=1, assist=0,
                                                            bridge=1),
                         env={**RAW, "CALLSCRIBE_INGEST_REQUEST_TIMEOUT_S":
                              str(REQUEST_TIMEOUT_S)},
                         ready_timeout_s=seconds(90))
    async with stack:
        tap = TopicTap(stack.bootstrap, stack.topics, served=stack.topics.transcripts)
        await tap.start()
        pids = {w.name: w.pid for w in stack.workers}

        unready: set[str] = set()  # workers whose /readyz failed while the broker was frozen

        async def freeze() -> None:
            await asyncio.sleep(18.0)
            frozen = stack.freeze_broker()
            while time.time() < frozen + FREEZE_S:
                unready.update(name for name, ok in (await stack.readiness()).items() if not ok)
                await asyncio.sleep(0.5)
            stack.thaw_broker()
            await stack.wait_ready(*stack.workers, timeout_s=seconds(10))

        try:
            call = await live_call(stack, tap, wav, spoken, "through-a-freeze", freeze)
        finally:
            await tap.stop()
        assert {w.name: w.pid for w in stack.workers if w.running} == pids  # no restart
        produced = scrape(f"{stack.of('ingest')[0].http}/metrics")
    assert unready == set(pids), f"/readyz stayed 200 through the outage: {set(pids) - unready}"
    assert_nothing_lost(call)
    # Records acknowledged more than the request timeout after they were sent: they outlived
    # it (before the outbox, such records failed and the call was closed 1011).
    audio = stack.topics.audio
    late = produced[f"callscribe_kafka_produce_seconds_count{{topic={audio}}}"] - \
        produced[f"callscribe_kafka_produce_seconds_bucket{{le=5.0,topic={audio}}}"]
    assert late > 0, "no record waited past the request timeout: the freeze did not test it"


async def test_every_worker_stops_on_time_with_the_broker_frozen(tmp_path: Path) -> None:
    """A call live in every worker, the broker frozen, SIGTERM to all: each exits within its
    deadline (the drain settings 5 s here, to keep the test short), and the provider's
    socket is closed, not left hanging."""
    wav, _ = looped_call(tmp_path, 2)
    stack = ProcessStack(LOGS / "stop", replicas=Replicas(ingest=1, transcribe=1, assist=1,
                                                          bridge=1),
                         env={"CALLSCRIBE_INGEST_DRAIN_SECONDS": str(DRAIN_S),
                              "CALLSCRIBE_TRANSCRIBE_DRAIN_SECONDS": str(DRAIN_S)},
                         ready_timeout_s=seconds(90))
    async with stack:  # every worker's /readyz answered 200
        call = asyncio.create_task(simulate_jambonz(
            stack.ingest_url(0, "/jambonz"), wav, rate=8000, mix="stereo",
            call_sid="stopped-frozen"))
        await asyncio.sleep(6.0)
        workers = list(stack.workers)
        stack.freeze_broker()
        try:
            took = await asyncio.gather(*(
                stack.stop(w, seconds(stop_deadline_s(w.kind, DRAIN_S))) for w in workers))
        finally:
            stack.thaw_broker()
        with pytest.raises(ConnectionClosed) as closed:
            await call
        assert closed.value.rcvd is not None and closed.value.rcvd.code in (1001, 1011)
    late = {w.name: stop_deadline_s(w.kind, DRAIN_S) for w, t in zip(workers, took, strict=True)
            if t is None}
    assert not late, f"still running after their deadlines (s): {late}"
