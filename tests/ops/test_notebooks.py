"""The notebooks run, top to bottom, with nbclient (a real IPython kernel): the latency notebook on
the committed benchmark sample, the consumer quick-start against the session's broker after a
simulated call. Executed copies are saved under artifacts/notebooks/ for people to look at."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

from tests.conftest import ARTIFACTS, FIXTURES, RunningStack, seconds
from tests.ingest.helpers import transcript_of
from workers.bridge.client import messages, open_live_call
from workers.simulate.jambonz import simulate_jambonz

NOTEBOOKS = Path(__file__).parents[2] / "notebooks"
#: What a fresh machine prints once, harmlessly (matplotlib's first import).
BENIGN_STDERR = re.compile(r"Matplotlib is building the font cache; this may take a moment\.")


async def execute(name: str, timeout_s: float) -> tuple[dict[str, Any], float]:
    """Run ``notebooks/<name>``; return the JSON of its ``SUMMARY`` line and the run time."""
    # nbformat is untyped
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)  # type: ignore[no-untyped-call]  # untyped
    client = NotebookClient(notebook, timeout=int(timeout_s), kernel_name="python3",
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    started = time.monotonic()
    await client.async_execute()
    elapsed = time.monotonic() - started
    out = ARTIFACTS / "notebooks" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, out)  # type: ignore[no-untyped-call]  # nbformat is untyped
    text = "".join(output.get("text", "") for cell in notebook.cells
                   for output in cell.get("outputs", []) if output.get("name") == "stdout")
    errors = [o for cell in notebook.cells for o in cell.get("outputs", [])
              if o.get("output_type") == "error" or (
                  o.get("name") == "stderr" and not BENIGN_STDERR.fullmatch(o["text"].strip()))]
    assert not errors, errors
    figures = sum(1 for cell in notebook.cells for o in cell.get("outputs", [])
                  if "image/png" in o.get("data", {}))
    line = next(line for line in text.splitlines() if line.startswith("SUMMARY "))
    summary: dict[str, Any] = json.loads(line.removeprefix("SUMMARY "))
    summary["_figures"] = figures
    print(f"{name}: executed in {elapsed:.1f}s")
    return summary, elapsed


@pytest.fixture
def notebook_env(monkeypatch: pytest.MonkeyPatch, stack: RunningStack) -> None:
    """The kernel inherits this environment: the session's broker and topic prefix."""
    monkeypatch.setenv("JUPYTER_PLATFORM_DIRS", "1")  # jupyter_core's path-migration warning
    # The consumer notebook builds its consumer with this checkout's workers.kafka helpers.
    monkeypatch.setenv("PYTHONPATH", str(NOTEBOOKS.parent))
    monkeypatch.setenv("CALLSCRIBE_KAFKA_BOOTSTRAP", stack.bootstrap)
    monkeypatch.setenv("CALLSCRIBE_TOPIC_PREFIX", stack.topics.prefix)
    monkeypatch.setenv("CALLSCRIBE_BENCH_RESULTS", str(NOTEBOOKS / "data" / "none-*.json"))


async def test_latency_notebook_on_the_committed_sample(notebook_env: None,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CALLSCRIBE_SOAK_RESULTS",
                       str(NOTEBOOKS / "data" / "soak-sample" / "soak-*.json"))
    summary, _ = await execute("latency.ipynb", seconds(120))
    assert summary["soak"] is True  # the committed 80 s soak sample passed its verdict
    assert summary["source"].startswith("committed sample")
    assert summary["runs"] == 2 and summary["transcripts"] > 20
    assert 0 < summary["delivery_p50_s"] < 10
    assert summary["wer"] and all(0 <= v < 0.5 for v in summary["wer"].values()), summary
    assert summary["_figures"] >= 3  # latency, WER and the soak (no capacity results)


async def test_consumer_quickstart_rebuilds_a_call(stack: RunningStack,
                                                   notebook_env: None,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    call_id = f"notebook-{secrets.token_hex(4)}"
    token, _ = stack.issuer.mint(call_id)

    async def until_ended() -> None:
        ws = await open_live_call(stack.bridge_url, token, stack.api_key, wait_s=seconds(30))
        async for _ in messages(ws):
            pass
        assert ws.close_code == 1000, (ws.close_code, ws.close_reason)

    watcher = asyncio.create_task(until_ended())
    await simulate_jambonz(stack.ingest_url, FIXTURES / "speech" / "call_stereo_8k.wav",
                           rate=8000, mix="stereo", call_sid=call_id, realtime=False)
    await asyncio.wait_for(watcher, seconds(60))
    # What the notebook should find: the call's records on the raw topic, up to its end.
    produced = await transcript_of(stack.bootstrap, stack.topics, call_id)
    finals = {r["id"] for r in produced if r["type"] == "transcript"}

    monkeypatch.setenv("CALLSCRIBE_CALL_ID", call_id)
    summary, _ = await execute("consumer_quickstart.ipynb", seconds(120))
    assert summary["call"] == call_id
    assert summary["utterances"] == len(finals) >= 4, (summary, produced)
    talk = summary["talk_time_s"]
    assert set(talk) == {"other", "assistant"}
    # Each speaker says two sentences of about 2 s each (tests/fixtures/speech/manifest.json).
    assert all(3.0 <= seconds_ <= 8.0 for seconds_ in talk.values()), talk
    assert "internet" in summary["text"].lower()
    assert summary["_figures"] == 1
