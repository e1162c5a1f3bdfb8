"""``callscribe up``: the broker and every worker as child processes, and the demo call."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from workers.broker import EmbeddedBroker
from workers.children import die_with_parent
from workers.errors import UsageError
from workers.records import Topics
from workers.settings import AssistSettings, BridgeSettings, IngestSettings, TranscribeSettings

WORKERS = ("ingest", "transcribe", "assist", "bridge")


def _settings_from(env: dict[str, str]) -> tuple[IngestSettings, TranscribeSettings,
                                                  BridgeSettings, AssistSettings]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)
    try:
        return IngestSettings(), TranscribeSettings(), BridgeSettings(), AssistSettings()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def wait_ready(url: str, timeout: float, process: subprocess.Popen[bytes] | None = None) -> None:
    """Poll ``url`` until it answers 200; fail early if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{url}: the worker exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} was not ready after {timeout:.0f}s")


class LocalStack:
    """Starts and stops the whole system on this machine."""

    def __init__(self, env: dict[str, str], *, log_dir: Path | None = None) -> None:
        self.env = dict(env)
        # A local stack: the simulators connect without provider credentials. A standalone
        # `callscribe ingest` refuses them (docs/security.md).
        self.env.setdefault("CALLSCRIBE_INGEST_ALLOW_ANONYMOUS", "true")
        self.log_dir = log_dir or Path(env.get("CALLSCRIBE_LOG_DIR", ".callscribe/logs"))
        self.broker: EmbeddedBroker | None = None
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.ingest, self.transcribe, self.bridge, self.assist = _settings_from(self.env)

    def start(self, timeout: float = 90.0) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if not self.env.get("CALLSCRIBE_KAFKA_BOOTSTRAP"):
            self.broker = EmbeddedBroker(port=self.ingest.broker_port,
                                         log_path=self.log_dir / "broker.log",
                                         with_parent=True).start()
            self.env["CALLSCRIBE_KAFKA_BOOTSTRAP"] = self.broker.bootstrap
        self.env.setdefault("CALLSCRIBE_LOG_FORMAT", "text")
        for name in WORKERS:
            with open(self.log_dir / f"{name}.log", "ab") as out:
                # Own sessions: Ctrl-C reaches `up` alone, which stops workers, then the broker;
                # and each gets SIGTERM if `up` dies without stopping them.
                self.processes[name] = subprocess.Popen(
                    [sys.executable, "-m", "workers.cli", name], env=self.env,
                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                    preexec_fn=die_with_parent())
        ports = {"ingest": self.ingest.ingest_port, "transcribe": self.transcribe.web_port,
                 "assist": self.assist.web_port, "bridge": self.bridge.bridge_port}
        for name in WORKERS:
            try:
                wait_ready(f"http://127.0.0.1:{ports[name]}/readyz", timeout,
                           self.processes[name])
            except RuntimeError as exc:
                raise UsageError(f"the {name} worker did not start ({exc}); its log: "
                                 f"{self.log_dir / (name + '.log')}") from None

    def client_env(self) -> dict[str, str]:
        """What ``token``, ``watch``, ``calls`` and ``simulate`` need to reach this stack."""
        return {
            "CALLSCRIBE_TOKEN_SECRET": self.bridge.token_secret or "",
            "CALLSCRIBE_API_KEYS": ",".join(sorted(self.bridge.api_key_set())),
            "CALLSCRIBE_BRIDGE_URL": f"http://127.0.0.1:{self.bridge.bridge_port}",
            "CALLSCRIBE_INGEST_URL": f"ws://127.0.0.1:{self.ingest.ingest_port}",
            "CALLSCRIBE_INGEST_API_URL": f"http://127.0.0.1:{self.ingest.ingest_api_port}",
        }

    def print_summary(self, env_file: Path | None = None) -> None:
        key = sorted(self.bridge.api_key_set())[0]
        topics = Topics(self.ingest.topic_prefix)
        embedded = " (embedded Tansu)" if self.broker else ""
        ports = ",".join(str(p) for p in (self.ingest.ingest_port, self.transcribe.web_port,
                                          self.assist.web_port, self.bridge.bridge_port))
        names = (topics.audio, topics.calls, topics.transcripts, topics.transcripts_redacted,
                 topics.assist, topics.summaries, topics.control, topics.subscriptions)
        env_line = (f"\n  client settings  {env_file} (token, watch, calls and simulate "
                    "read it)") if env_file else ""
        print(f"""
callscribe is up
  Kafka            {self.env['CALLSCRIBE_KAFKA_BOOTSTRAP']}{embedded}
  topics           {', '.join(names[:3])},
                   {', '.join(names[3:6])},
                   {', '.join(names[6:])}
  ingest           ws://127.0.0.1:{self.ingest.ingest_port}/jambonz | /plivo | /twilio
  subscriptions    http://127.0.0.1:{self.ingest.ingest_api_port}/v1/subscriptions (Bland)
  liveCalls        ws://127.0.0.1:{self.bridge.bridge_port}/ws/v1/liveCalls?conversationToken=…
  web view         http://127.0.0.1:{self.bridge.bridge_port}/#key={key}
  API key          {key}
  metrics          http://127.0.0.1:{{{ports}}}/metrics
  logs             {self.log_dir}/{env_line}

  play a call      callscribe simulate jambonz --wav YOUR.wav
  list live calls  callscribe calls
""", flush=True)

    async def run_demo(self) -> None:
        """Play the bundled call and print its liveCalls messages as they arrive."""
        import asyncio

        from workers.bridge.client import messages, open_live_call, render
        from workers.bridge.tokens import TokenIssuer
        from workers.simulate.jambonz import simulate_jambonz

        wav = resources.files("workers").joinpath("samples/demo_call.wav")
        call_sid = f"demo-{os.getpid()}"
        issuer = TokenIssuer(self.bridge.token_secret or "", self.bridge.token_ttl_s)
        token = issuer.mint(call_sid)[0]
        key = sorted(self.bridge.api_key_set())[0]
        print(f"demo call {call_sid}: playing {wav.name} (8 kHz stereo, caller + agent)")
        print(f"  watch it in the web view: http://127.0.0.1:{self.bridge.bridge_port}/"
              f"#key={key}&call={call_sid}\n", flush=True)
        call = asyncio.create_task(simulate_jambonz(
            f"ws://127.0.0.1:{self.ingest.ingest_port}/jambonz", str(wav), rate=8000,
            mix="stereo", call_sid=call_sid, dtmf=[(1.0, "1")]))
        ws = await open_live_call(f"ws://127.0.0.1:{self.bridge.bridge_port}", token, key,
                                  wait_s=30)
        async for _, message in messages(ws):
            print(render(message), flush=True)
        await call

    def stop(self, *, grace: float = 30.0, say: Callable[[str], None] | None = None) -> None:
        """Stop the workers (SIGTERM: each drains, commits and leaves Kafka), then the broker,
        saying what it waits for; a second Ctrl-C while it waits kills what is left."""
        say = say or _say
        running = {name: p for name, p in self.processes.items() if p.poll() is None}
        if running:
            say(f"stopping {', '.join(running)} (Ctrl-C again to force)")
        for process in running.values():
            process.terminate()
        try:
            self._wait_for(running, grace, say)
        except KeyboardInterrupt:
            say(f"  forced: killing {', '.join(running)}")
        for process in running.values():
            if process.poll() is None:
                process.kill()
            process.wait()
        if self.broker is not None:
            say("stopping the broker")
            self.broker.stop()
            say("  broker stopped")
        say("callscribe stopped")

    @staticmethod
    def _wait_for(running: dict[str, subprocess.Popen[bytes]], grace: float,
                  say: Callable[[str], None]) -> None:
        """Report each worker as it exits and, every 5 s, the ones still stopping and why;
        kill them after ``grace`` seconds. ``running`` keeps the ones left."""
        start = last_note = time.monotonic()
        while running:
            for name, process in list(running.items()):
                if process.poll() is not None:
                    say(f"  {name} stopped ({time.monotonic() - start:.1f} s)")
                    del running[name]
            now = time.monotonic()
            if running and now - start > grace:
                say(f"  {', '.join(running)} did not stop in {grace:.0f} s: killing")
                return
            if running and now - last_note >= 5:
                last_note = now
                say("  waiting for " + "; ".join(f"{name} ({STOPPING[name]})"
                                                  for name in running))
            time.sleep(0.1)


#: What each worker does between SIGTERM and exit (said while ``up`` waits for it).
STOPPING = {
    "ingest": "flushing call audio to Kafka, ending calls",
    "transcribe": "finishing utterances, committing offsets, leaving its consumer group",
    "assist": "committing offsets, leaving its consumer group",
    "bridge": "closing liveCalls clients",
}


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
