"""Speaker separation on the real stack: a one-channel call of two espeak-ng voices
(``tests/fixtures/speakers``) played as a jambonz ``mixed`` stream → ingest → Kafka → the
transcription worker (its voice prints beside whisper) → bridge → liveCalls: each line has its
speaker's role, the agent's voice (heard first) ``assistant``, the caller's ``other``."""

from __future__ import annotations

import asyncio
import json

import jiwer
from whisper_normalizer.english import EnglishTextNormalizer

from tests.conftest import FIXTURES, RunningStack, seconds
from tests.test_end_to_end import watch
from workers.simulate.jambonz import simulate_jambonz

FOLDER = FIXTURES / "speakers"
MANIFEST = json.loads((FOLDER / "manifest.json").read_text())
normalise = EnglishTextNormalizer()


async def test_mixed_call_lines_get_their_speakers_roles(stack: RunningStack) -> None:
    call_id = "e2e-mixed-speakers"
    watcher = asyncio.create_task(watch(stack, call_id))
    await simulate_jambonz(stack.ingest_url, FOLDER / "mixed_16k.wav", rate=16000, mix="mixed",
                           call_sid=call_id, realtime=True)
    received = await asyncio.wait_for(watcher, seconds(60))
    finals = [m for m in received if m["type"] == "transcript"]
    turns = MANIFEST["turns"]
    # Every turn is heard, with its speaker's role: the final nearest its start.
    for turn in turns:
        near = min(finals, key=lambda m: abs(m["offset"] - turn["start_s"]))
        assert abs(near["offset"] - turn["start_s"]) <= 0.6, (turn, finals)
        assert near["role"] == turn["role"], (turn, near)
    for role in ("assistant", "other"):
        said = " ".join(m["msg"] for m in finals if m["role"] == role)
        reference = " ".join(t["text"] for t in turns if t["role"] == role)
        assert jiwer.wer(normalise(reference), normalise(said)) <= 0.2, (role, said)
