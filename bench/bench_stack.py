"""The system under test, on real parts, as ``tests/conftest.py`` starts it: the embedded Tansu
broker, ingest and the liveCalls bridge in this process, the transcriber as a child process
(``python -m workers.cli transcribe``; several, sharing one consumer group, with
``transcribers``), all on free ports with a fresh topic prefix.

Also the measurement helpers that need the running processes: CPU time from ``/proc`` and the
transcriber's Prometheus metrics.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from workers.bridge.hub import CallHub
from workers.bridge.server import Bridge
from workers.bridge.tokens import TokenIssuer
from workers.broker import EmbeddedBroker, free_port
from workers.ingest.server import IngestServer
from workers.kafka import ensure_topics, new_producer, start_producer
from workers.local_stack import wait_ready
from workers.records import Topics

#: Where every benchmark writes its JSON results and worker logs (git-ignored).
RESULTS = Path(__file__).resolve().parent / "results"


def save_result(kind: str, result: dict[str, Any]) -> Path:
    """Write ``result`` to ``bench/results/<kind>-<timestamp>.json``; the path as printed
    (relative to the working directory when inside it)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{kind}-{result['timestamp']}.json"
    # default=str: paths (--speech) and other plain values print as text.
    path.write_text(json.dumps(result, indent=1, ensure_ascii=False, default=str))
    return path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path


PARTITIONS = 4


@dataclass
class BenchStack:
    bootstrap: str
    topics: Topics
    ingest_url: str
    bridge_url: str
    api_key: str
    issuer: TokenIssuer
    transcriber: subprocess.Popen[bytes]
    transcriber_web: str
    broker_pid: int | None
    #: Every transcriber process and its web address (the first is ``transcriber``).
    transcribers: list[subprocess.Popen[bytes]]
    transcriber_webs: list[str]

    @property
    def transcriber_pids(self) -> list[int]:
        return [p.pid for p in self.transcribers]

    def scrape_transcribers(self) -> dict[str, float]:
        """The transcribers' metrics, each sample summed over the processes (counters,
        histograms and per-partition lag add up; each partition has one owner)."""
        return sum_samples(scrape(f"{web}/metrics") for web in self.transcriber_webs)


def spawn_transcriber(env: dict[str, str], log_dir: Path,
                      name: str = "transcribe") -> subprocess.Popen[bytes]:
    """``python -m workers.cli transcribe`` logging to ``log_dir/<name>.log``.

    It runs in ``log_dir/<name>`` because faust puts its data directory (``<group id>-data``)
    in the working directory; ``workers`` is found on ``PYTHONPATH`` set to the repository
    root.
    """
    root = str(Path(__file__).resolve().parent.parent)
    path = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    cwd = log_dir / name
    cwd.mkdir(parents=True, exist_ok=True)
    with open(log_dir / f"{name}.log", "ab") as log:
        return subprocess.Popen([sys.executable, "-m", "workers.cli", "transcribe"],
                                env={**env, "PYTHONPATH": path}, cwd=cwd, stdout=log,
                                stderr=subprocess.STDOUT)


@contextlib.asynccontextmanager
async def running_stack(log_dir: Path, *, cpu_threads: int, transcribers: int = 1,
                        ready_timeout_s: float = 120.0) -> AsyncIterator[BenchStack]:
    """Start everything (``transcribers`` transcriber processes in one consumer group, each
    with ``cpu_threads`` whisper threads); stop it all on exit."""
    with EmbeddedBroker(log_path=log_dir / "broker.log") as broker:
        # No public accessor for the broker's pid; the bench only reads its CPU time.
        process = broker._process
        broker_pid = process.pid if process is not None else None
        topics = Topics(f"bench{secrets.token_hex(3)}")
        await ensure_topics(broker.bootstrap, topics.all(), partitions=PARTITIONS)
        api_key, secret = "bench-" + secrets.token_hex(8), secrets.token_urlsafe(32)

        producer = new_producer(broker.bootstrap, client_id="bench-ingest")
        await start_producer(producer)
        ingest = IngestServer(producer=producer, topics=topics, host="127.0.0.1", port=0)
        await ingest.start()
        issuer = TokenIssuer(secret, 3600)
        # The transcription path alone: the bridge serves the raw transcripts (no assist
        # worker in the bench), as CALLSCRIBE_BRIDGE_SOURCE=raw does.
        bridge = Bridge(bootstrap=broker.bootstrap, topics=topics,
                        api_keys=frozenset({api_key}), issuer=issuer, hub=CallHub(),
                        transcripts_topic=topics.transcripts)
        runner = web.AppRunner(bridge.web_app())
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        bridge_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]  # aiohttp: _server is None until start()

        env = {**os.environ, "CALLSCRIBE_KAFKA_BOOTSTRAP": broker.bootstrap,
               "CALLSCRIBE_TOPIC_PREFIX": topics.prefix,
               "CALLSCRIBE_TRANSCRIBE_GROUP_ID": f"{topics.prefix}-transcribe",
               "CALLSCRIBE_LOG_FORMAT": "text", "CALLSCRIBE_TOPIC_PARTITIONS": str(PARTITIONS),
               "CALLSCRIBE_CPU_THREADS": str(cpu_threads)}
        ports = [free_port() for _ in range(max(1, transcribers))]
        procs = [spawn_transcriber({**env, "CALLSCRIBE_TRANSCRIBE_WEB_PORT": str(port)}, log_dir,
                                   "transcribe" if i == 0 else f"transcribe-{i}")
                 for i, port in enumerate(ports)]
        webs = [f"http://127.0.0.1:{port}" for port in ports]
        try:
            for proc, web_url in zip(procs, webs, strict=True):
                await asyncio.to_thread(wait_ready, f"{web_url}/readyz", ready_timeout_s, proc)
            yield BenchStack(
                bootstrap=broker.bootstrap, topics=topics,
                ingest_url=f"ws://127.0.0.1:{ingest.port}/jambonz",
                bridge_url=f"ws://127.0.0.1:{bridge_port}", api_key=api_key, issuer=issuer,
                transcriber=procs[0], transcriber_web=webs[0], broker_pid=broker_pid,
                transcribers=procs, transcriber_webs=webs)
        finally:
            for proc in procs:
                proc.terminate()
            for proc in procs:
                try:
                    await asyncio.to_thread(proc.wait, 30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            await runner.cleanup()
            await ingest.drain(1)
            await producer.stop()


# ------------------------------------------------------------------------------ measurements


def cpu_seconds(pid: int | str) -> float:
    """User + system CPU seconds of a process (all its threads), from ``/proc/<pid>/stat``."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rpartition(")")[2].split()
    # After "pid (comm)": state is field 3, so utime (14) and stime (15) are at 11 and 12.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


Pids = int | str | list[int] | None


class CpuMeter:
    """CPU use of some processes between :meth:`start` and :meth:`stop`, in % of one core
    (a name given a list of pids: their sum)."""

    def __init__(self, pids: dict[str, Pids]) -> None:
        self._pids = {name: pid if isinstance(pid, list) else [pid]
                      for name, pid in pids.items() if pid is not None}
        self._start: dict[str, float] = {}
        self._started_at = 0.0
        self.percent: dict[str, float] = {}
        self.wall_s = 0.0

    def _cpu(self, name: str) -> float:
        return sum(cpu_seconds(pid) for pid in self._pids[name])

    def start(self) -> None:
        self._started_at = time.monotonic()
        self._start = {name: self._cpu(name) for name in self._pids}

    def stop(self) -> None:
        self.wall_s = time.monotonic() - self._started_at
        self.percent = {name: 100 * (self._cpu(name) - self._start[name]) / self.wall_s
                        for name in self._pids}


def sum_samples(scrapes: Iterable[dict[str, float]]) -> dict[str, float]:
    """Several ``scrape`` results as one, each sample summed."""
    total: dict[str, float] = {}
    for samples in scrapes:
        for key, value in samples.items():
            total[key] = total.get(key, 0.0) + value
    return total


def scrape(url: str) -> dict[str, float]:
    """Every sample of a Prometheus endpoint as ``{name{labels}: value}``."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples
