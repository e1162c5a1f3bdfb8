"""The whole system as separate processes, as a deployment runs it, for ``bench.faults`` and
the fault tests (``tests/bench/test_faults.py``): the embedded Tansu broker and every worker as
``python -m workers.cli <worker>``, each replica on ports of its own, all on one fresh topic
prefix, so that any process can be killed, frozen, stopped, restarted or added while calls run.

Each worker gets what ``callscribe up`` gives it (``workers/stack.py``: anonymous provider
paths, one API key, a token secret of 32+ bytes) and what several replicas on one host need
besides: free ports (``/readyz`` is on the ingest, transcriber web, assist web and bridge
ports; the ingest API port too), one consumer group per kind, and a working directory each
(faust puts its data folder there). A worker's output goes to ``<log dir>/<name>.log``,
appended across restarts. Children run in sessions of their own (a Ctrl-C reaches the
benchmark alone, which stops them) and get SIGTERM if the benchmark dies
(:func:`workers.children.die_with_parent`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from workers import deadline
from workers.assist.app import assist_topics
from workers.bridge.tokens import TokenIssuer
from workers.broker import EmbeddedBroker, free_port
from workers.children import die_with_parent
from workers.kafka import ensure_topics
from workers.local_stack import wait_ready
from workers.records import Topics
from workers.settings import IngestSettings, TranscribeSettings

REPO = Path(__file__).resolve().parent.parent
KINDS = ("ingest", "transcribe", "assist", "bridge")
PARTITIONS = 4


def stop_deadline_s(kind: str, drain_s: float | None = None) -> float:
    """Seconds from SIGTERM to exit a worker of ``kind`` is documented to take at most
    (``workers.deadline``, docs/reliability.md), with its drain setting
    (CALLSCRIBE_INGEST_/TRANSCRIBE_DRAIN_SECONDS) ``drain_s`` (``None``: the worker's default)."""
    if kind == "ingest":
        drain = IngestSettings.model_fields["drain_seconds"].default
        return (drain if drain_s is None else drain_s) + deadline.INGEST_AFTER_DRAIN_S
    if kind == "transcribe":
        drain = TranscribeSettings.model_fields["drain_seconds"].default
        return (drain if drain_s is None else drain_s) + deadline.TRANSCRIBE_AFTER_DRAIN_S
    return {"assist": deadline.ASSIST_S, "bridge": deadline.BRIDGE_S}[kind]


#: With default settings: ingest 35, transcribe 30, assist 30, bridge 15.
STOP_DEADLINES_S = {kind: stop_deadline_s(kind) for kind in KINDS}


@dataclass
class Worker:
    """One worker replica: its command, environment and port, and its current process."""

    kind: str
    name: str
    port: int
    env: dict[str, str]
    log_path: Path
    cwd: Path
    process: subprocess.Popen[bytes] | None = None
    #: Interpreter options before ``-m workers.cli`` (e.g. ``-m cProfile -o FILE``).
    python_args: tuple[str, ...] = ()
    #: time.time() of every start.
    starts: list[float] = field(default_factory=list)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def spawn(self) -> None:
        """Start the process (from the thread that outlives it: see ``die_with_parent``)."""
        if self.running:
            raise RuntimeError(f"{self.name} is already running (pid {self.pid})")
        self.cwd.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== {self.name} started at {time.strftime('%H:%M:%S')}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [sys.executable, *self.python_args, "-m", "workers.cli", self.kind],
                env=self.env, cwd=self.cwd,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=die_with_parent())
        self.starts.append(time.time())

    def signal(self, signum: int) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signum)


def ready(url: str, timeout_s: float = 1.0) -> bool:
    """Whether ``url`` answers 200 within ``timeout_s`` (anything else, or no answer: no)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
        return False


@dataclass(frozen=True)
class Replicas:
    """How many processes of each kind run at the start."""

    ingest: int = 1
    transcribe: int = 2
    assist: int = 1
    bridge: int = 2

    def of(self, kind: str) -> int:
        return int(getattr(self, kind))


class ProcessStack:
    """The broker and the workers as processes; see the module docstring."""

    def __init__(self, log_dir: Path, *, replicas: Replicas | None = None,
                 cpu_threads: int = 1, partitions: int = PARTITIONS,
                 env: Mapping[str, str] | None = None, ready_timeout_s: float = 120.0,
                 python_args: Mapping[str, Sequence[str]] | None = None) -> None:
        self.log_dir = log_dir
        self.replicas = replicas or Replicas()
        self.partitions = partitions
        self.ready_timeout_s = ready_timeout_s
        self.topics = Topics(f"faults{secrets.token_hex(3)}")
        self.api_key = "faults-" + secrets.token_hex(8)
        self._token_secret = secrets.token_urlsafe(32)
        self.issuer = TokenIssuer(self._token_secret, 3600)
        self.broker = EmbeddedBroker(log_path=log_dir / "broker.log", with_parent=True)
        self.workers: list[Worker] = []
        self._cpu_threads = cpu_threads
        self._extra = dict(env or {})
        self._python_args = {kind: tuple(a) for kind, a in (python_args or {}).items()}
        self._counts: dict[str, int] = {}
        self._frozen = False

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """The broker, the topics, then every replica; returns once all are ready."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.broker.start()
        names = (*self.topics.all(), self.topics.subscriptions, *assist_topics(self.topics))
        await ensure_topics(self.broker.bootstrap, names, partitions=self.partitions)
        started = [self.add(kind) for kind in KINDS for _ in range(self.replicas.of(kind))]
        await self.wait_ready(*started)

    async def close(self, grace_s: float = 30.0) -> None:
        """Stop every worker (SIGTERM, SIGKILL after ``grace_s``), then the broker."""
        self.thaw_broker()
        running = [w for w in self.workers if w.running]
        for worker in running:
            worker.signal(signal.SIGTERM)
        await asyncio.gather(*(self._wait_exit(w, grace_s) for w in running))
        for worker in running:
            if worker.running:
                worker.signal(signal.SIGKILL)
                await self._wait_exit(worker, 5)
        self.broker.stop()

    async def __aenter__(self) -> ProcessStack:
        try:
            await self.start()
        except BaseException:
            await self.close(grace_s=5)
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ workers

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def of(self, kind: str) -> list[Worker]:
        """The running replicas of ``kind``."""
        return [w for w in self.workers if w.kind == kind and w.running]

    def add(self, kind: str) -> Worker:
        """A new replica of ``kind``, started (not waited for)."""
        index = self._counts.get(kind, 0)
        self._counts[kind] = index + 1
        name = f"{kind}-{index}"
        port = free_port()
        worker = Worker(kind=kind, name=name, port=port, env=self._env(kind, name, port),
                        log_path=self.log_dir / f"{name}.log", cwd=self.log_dir / name,
                        python_args=self._python_args.get(kind, ()))
        self.workers.append(worker)
        worker.spawn()
        return worker

    def _env(self, kind: str, name: str, port: int) -> dict[str, str]:
        prefix = self.topics.prefix
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALLSCRIBE_")}
        path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
        env.update({
            "PYTHONPATH": path, "CALLSCRIBE_KAFKA_BOOTSTRAP": self.broker.bootstrap,
            "CALLSCRIBE_TOPIC_PREFIX": prefix,
            "CALLSCRIBE_TOPIC_PARTITIONS": str(self.partitions),
            "CALLSCRIBE_LOG_FORMAT": "text", "CALLSCRIBE_API_KEYS": self.api_key,
            "CALLSCRIBE_TOKEN_SECRET": self._token_secret,
        })
        if kind == "ingest":
            env.update({"CALLSCRIBE_INGEST_HOST": "127.0.0.1",
                        "CALLSCRIBE_INGEST_PORT": str(port),
                        "CALLSCRIBE_INGEST_API_PORT": str(free_port()),
                        "CALLSCRIBE_INGEST_ALLOW_ANONYMOUS": "true",
                        "CALLSCRIBE_INGEST_GROUP_ID": f"{prefix}-ingest"})
        elif kind == "transcribe":
            env.update({"CALLSCRIBE_TRANSCRIBE_WEB_PORT": str(port),
                        "CALLSCRIBE_TRANSCRIBE_GROUP_ID": f"{prefix}-transcribe",
                        "CALLSCRIBE_CPU_THREADS": str(self._cpu_threads),
                        "CALLSCRIBE_DATA_DIR": str(self.log_dir / name / "data")})
        elif kind == "assist":
            env.update({"CALLSCRIBE_ASSIST_WEB_PORT": str(port),
                        "CALLSCRIBE_ASSIST_GROUP_ID": f"{prefix}-assist",
                        "CALLSCRIBE_SUMMARY_GRACE_S": "2"})
        elif kind == "bridge":
            env.update({"CALLSCRIBE_BRIDGE_HOST": "127.0.0.1",
                        "CALLSCRIBE_BRIDGE_PORT": str(port)})
        else:
            raise ValueError(f"worker kind {kind!r}; expected one of {', '.join(KINDS)}")
        env.update(self._extra)
        return env

    async def wait_ready(self, *workers: Worker, timeout_s: float | None = None) -> None:
        """Until every one of ``workers`` answers 200 on ``/readyz``; raises RuntimeError
        (naming the worker and its log) when one exits or is not ready in time."""
        timeout = timeout_s if timeout_s is not None else self.ready_timeout_s

        async def one(worker: Worker) -> None:
            try:
                await asyncio.to_thread(wait_ready, f"{worker.http}/readyz", timeout,
                                        worker.process)
            except RuntimeError as exc:
                raise RuntimeError(f"{worker.name}: {exc}; its log: {worker.log_path}") from None

        await asyncio.gather(*(one(w) for w in workers))

    async def readiness(self) -> dict[str, bool]:
        """Each running worker's ``/readyz`` now (no answer within 1 s: not ready)."""
        running = [w for w in self.workers if w.running]
        answers = await asyncio.gather(*(asyncio.to_thread(ready, f"{w.http}/readyz")
                                         for w in running))
        return {w.name: ok for w, ok in zip(running, answers, strict=True)}

    async def kill(self, worker: Worker, *, restart: bool = False) -> float:
        """SIGKILL ``worker`` (and start it again at once with ``restart``, as Kubernetes
        restarts a container); the wall time of the kill."""
        killed_at = time.time()
        worker.signal(signal.SIGKILL)
        await self._wait_exit(worker, 10)
        if restart:
            worker.spawn()
        return killed_at

    async def stop(self, worker: Worker, timeout_s: float) -> float | None:
        """SIGTERM ``worker``; seconds until it exited, or ``None`` when it still ran after
        ``timeout_s`` (it is left running)."""
        started = time.monotonic()
        worker.signal(signal.SIGTERM)
        if await self._wait_exit(worker, timeout_s):
            return time.monotonic() - started
        return None

    @staticmethod
    async def _wait_exit(worker: Worker, timeout_s: float) -> bool:
        process = worker.process
        if process is None:
            return True
        try:
            await asyncio.to_thread(process.wait, timeout_s)
        except subprocess.TimeoutExpired:
            return False
        return True

    # ------------------------------------------------------------------ broker

    @property
    def broker_pid(self) -> int | None:
        return self.broker.pid

    def freeze_broker(self) -> float:
        """SIGSTOP the broker (its sockets stay open; nothing answers); the wall time."""
        pid = self.broker.pid
        if pid is None:
            raise RuntimeError("the broker is not running")
        os.kill(pid, signal.SIGSTOP)
        self._frozen = True
        return time.time()

    def thaw_broker(self) -> float:
        """SIGCONT the broker (a no-op unless frozen); the wall time."""
        pid = self.broker.pid
        if self._frozen and pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self._frozen = False
        return time.time()

    # ------------------------------------------------------------------ addresses

    def ingest_url(self, index: int, path: str) -> str:
        """``ws://…/<path>`` of the ``index``-th running ingest replica (round robin)."""
        replicas = self.of("ingest")
        return f"{replicas[index % len(replicas)].ws}{path}"

    def bridge_urls(self) -> list[str]:
        """Every bridge replica's base URL, running or not (a client's list of addresses to
        try, as behind a Service)."""
        return [w.ws for w in self.workers if w.kind == "bridge"]


__all__ = ["KINDS", "PARTITIONS", "STOP_DEADLINES_S", "ProcessStack", "Replicas", "Worker", "ready",
           "stop_deadline_s"]
