"""Fan-out of one bridge process: N liveCalls subscribers and M live listeners.

    .venv/bin/python -m bench.fanout --subscribers 5000 --calls 50 --rate 20 --seconds 15
    .venv/bin/python -m bench.fanout --subscribers 5000 --calls 1 --rate 2 --listeners 0

Starts the embedded broker, one bridge in a child process (the process under test), and, in
this process, the subscribers: minimal WebSocket clients on asyncio protocols over loopback (no
task per client, so that the clients cost as little CPU as possible next to the bridge). It
produces ``transcript`` records to the transcripts topic at ``--rate`` per second, round-robin
over ``--calls`` calls, each stamped ``producedAtMs`` just before it is produced; the delay of
a delivery is the client's receipt time minus that (Kafka hop + bridge fan-out + loopback).

After the subscribers connect, ``--warmup`` seconds of the same traffic go unmeasured (the
bridge's full garbage collections while thousands of connections pile up pause it for 100-300
ms; they are printed to stderr as ``bridge gc: ...`` whenever one exceeds 50 ms).

Phases: "fan-out" (the subscribers alone), "fan-out + stalled" (the same plus one client that
stops reading, on a call of its own fed 16 KiB records at 100/s so that it fills its socket and
queue and the bridge closes it mid-phase), and "listen" (M listeners of PCM audio on
``--listen-calls`` calls whose stereo 8 kHz audio is produced in real time; the delay of a
frame is its receipt time minus when the chunk holding its newest sample was produced, so it
includes the resampler's look-ahead: soxr's HQ stream holds back 14-114 ms of 8 kHz audio).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import logging
import multiprocessing
import os
import resource
import secrets
import signal
import socket
import struct
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.bench_stack import CpuMeter, scrape
from workers.bridge.client import live_calls_url
from workers.bridge.tokens import TokenIssuer
from workers.broker import EmbeddedBroker
from workers.kafka import ensure_topics, new_producer, start_producer
from workers.records import AudioChunk, CallStarted, Topics, dumps

log = logging.getLogger("bench.fanout")
PARTITIONS = 4
CONNECT_CONCURRENCY = 200


def raise_nofile() -> int:
    """Raise the open-files soft limit to the hard limit; return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# ------------------------------------------------------------------------------ the bridge


def run_bridge(config: dict[str, Any], ports: Any) -> None:
    """The bridge process: serve until SIGTERM; report its garbage-collector pauses over
    50 ms (with thousands of connections a full collection is the longest pause it has)."""
    raise_nofile()
    logging.basicConfig(level=logging.WARNING, format="bridge %(levelname)s %(name)s: "
                        "%(message)s")
    started: list[float] = [0.0]

    def gc_pause(phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        elif (pause := (time.perf_counter() - started[0]) * 1000) >= 50:
            print(f"bridge gc: generation {info['generation']} pause {pause:.0f} ms",
                  file=sys.stderr, flush=True)

    gc.callbacks.append(gc_pause)
    if config.get("gc_threshold0"):
        gc.set_threshold(config["gc_threshold0"], *gc.get_threshold()[1:])
    asyncio.run(_serve_bridge(config, ports))


async def _serve_bridge(config: dict[str, Any], ports: Any) -> None:
    from aiohttp import web

    from workers.bridge.hub import CallHub
    from workers.bridge.server import Bridge

    topics = Topics(config["prefix"])
    bridge = Bridge(bootstrap=config["bootstrap"], topics=topics,
                    api_keys=frozenset({config["api_key"]}),
                    issuer=TokenIssuer(config["secret"], 3600), hub=CallHub(max_calls=10_000),
                    transcripts_topic=topics.transcripts, close_timeout_s=2.0)
    runner = web.AppRunner(bridge.web_app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    ports.put(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]  # aiohttp: _server is None until start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await runner.cleanup()


# ------------------------------------------------------------------------------ clients


@dataclass
class Received:
    """What the subscribers received: (client, message id, receipt time)."""

    rows: list[tuple[int, bytes, float]] = field(default_factory=list)


class WsClient(asyncio.Protocol):
    """A WebSocket client as small as it gets: handshake, unmasked server frames in, pong and
    close out (masked). Text frames are recorded by id, binary frames by size."""

    def __init__(self, index: int, host: str, path_qs: str, headers: dict[str, str],
                 received: Received | None, *, stall: bool = False) -> None:
        self.index = index
        self._request = "\r\n".join([
            f"GET {path_qs} HTTP/1.1", f"Host: {host}", "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {base64.b64encode(os.urandom(16)).decode()}",
            "Sec-WebSocket-Version: 13", *(f"{k}: {v}" for k, v in headers.items())]) + "\r\n\r\n"
        self._received = received
        self._stall = stall
        self._buffer = bytearray()
        self._upgraded = False
        self.transport: asyncio.Transport | None = None
        self.open = asyncio.get_running_loop().create_future()
        self.closed = asyncio.get_running_loop().create_future()
        self.close_code: int | None = None
        self.binary: list[tuple[float, int]] = []  # (receipt time, bytes) of binary frames

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self._request.encode())

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.open.done():
            self.open.set_exception(ConnectionError("closed before the upgrade"))
        if not self.closed.done():
            self.closed.set_result(self.close_code)

    def data_received(self, data: bytes) -> None:
        now = time.time()
        self._buffer += data
        if not self._upgraded:
            end = self._buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            status = bytes(self._buffer[:12])
            del self._buffer[:end + 4]
            if status != b"HTTP/1.1 101":
                self.open.set_exception(ConnectionError(f"refused: {status!r}"))
                assert self.transport is not None
                self.transport.close()
                return
            self._upgraded = True
            self.open.set_result(None)
            if self._stall:
                assert self.transport is not None
                self.transport.pause_reading()  # and never again
                return
        self._frames(now)

    def _frames(self, now: float) -> None:
        buffer = self._buffer
        at = 0
        while len(buffer) - at >= 2:
            opcode, length = buffer[at] & 0x0F, buffer[at + 1] & 0x7F
            head = 2
            if length == 126:
                if len(buffer) - at < 4:
                    break
                (length,) = struct.unpack_from("!H", buffer, at + 2)
                head = 4
            elif length == 127:
                if len(buffer) - at < 10:
                    break
                (length,) = struct.unpack_from("!Q", buffer, at + 2)
                head = 10
            if len(buffer) - at < head + length:
                break
            payload = bytes(buffer[at + head:at + head + length])
            at += head + length
            self._frame(opcode, payload, now)
        del buffer[:at]

    def _frame(self, opcode: int, payload: bytes, now: float) -> None:
        if opcode == 0x1 and self._received is not None:
            start = payload.find(b'"id": "') + 7
            self._received.rows.append((self.index, payload[start:payload.find(b'"', start)],
                                        now))
        elif opcode == 0x2:
            self.binary.append((now, len(payload)))
        elif opcode == 0x9:
            self._send(0xA, payload)
        elif opcode == 0x8:
            self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
            self._send(0x8, payload[:2])
            assert self.transport is not None
            self.transport.close()

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        assert self.transport is not None and len(payload) < 126
        self.transport.write(bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + masked)


async def connect_many(port: int, targets: list[tuple[str, dict[str, str]]],
                       received: Received | None, *, stall: bool = False) -> list[WsClient]:
    """One client per (path, headers), CONNECT_CONCURRENCY handshakes at a time."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one(index: int, path_qs: str, headers: dict[str, str]) -> WsClient:
        async with gate:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            if stall:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.setblocking(False)
            await loop.sock_connect(sock, ("127.0.0.1", port))
            _, client = await loop.create_connection(
                lambda: WsClient(index, f"127.0.0.1:{port}", path_qs, headers, received,
                                 stall=stall), sock=sock)
            await client.open
            return client

    return list(await asyncio.gather(*(one(i, p, h) for i, (p, h) in enumerate(targets))))


# ------------------------------------------------------------------------------ measuring


def percentiles(values_ms: np.ndarray[Any, Any]) -> dict[str, float]:
    if not len(values_ms):
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"),
                "max": float("nan")}
    p50, p95, p99 = np.percentile(values_ms, [50, 95, 99])
    return {"p50": float(p50), "p95": float(p95), "p99": float(p99),
            "max": float(values_ms.max())}


@dataclass
class Bench:
    args: argparse.Namespace
    port: int
    api_key: str
    issuer: TokenIssuer
    topics: Topics
    producer: Any
    bridge_pid: int
    broker_pid: int | None
    calls: list[str] = field(default_factory=list)

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def path(self, call_id: str) -> str:
        url = live_calls_url(f"ws://127.0.0.1:{self.port}", self.issuer.mint(call_id)[0])
        return url.split(str(self.port), 1)[1]

    async def start_calls(self, call_ids: list[str]) -> None:
        for call_id in call_ids:
            await self.producer.send(self.topics.calls, key=call_id.encode(), value=dumps(
                CallStarted(call_id=call_id, provider="bench", from_="+15550100", to="",
                            direction="inbound", rate=8000, channels=2, mix="stereo",
                            roles=("other", "assistant")).to_json()))
        await self.producer.flush()
        request = urllib.request.Request(f"{self.http}/v1/calls",
                                         headers={"Authorization": f"Bearer {self.api_key}"})
        wanted = set(call_ids)
        while True:  # until the bridge has consumed every call.started
            with await asyncio.to_thread(urllib.request.urlopen, request) as response:
                known = {c["callId"] for c in json.load(response)["calls"]}
            if wanted <= known:
                return
            await asyncio.sleep(0.1)

    async def produce_transcripts(self, seconds: float, rate: float, tag: str,
                                  ) -> dict[bytes, tuple[str, float]]:
        """``rate`` records per second for ``seconds``; id → (call, producedAt seconds)."""
        produced: dict[bytes, tuple[str, float]] = {}
        words = "word " * self.args.words
        start = time.monotonic()
        for n in range(int(seconds * rate)):
            delay = start + n / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            call_id = self.calls[n % len(self.calls)]
            record_id = f"{call_id}:{tag}:{n}"
            now = time.time()
            await self.producer.send(self.topics.transcripts, key=call_id.encode(), value=dumps(
                {"v": 1, "type": "transcript", "callId": call_id, "id": record_id,
                 "msg": words, "role": "other", "offset": n / rate,
                 "producedAtMs": int(now * 1000)}))
            produced[record_id.encode()] = (call_id, now)
        await self.producer.flush()
        return produced

    def cpu(self) -> CpuMeter:
        return CpuMeter({"bridge": self.bridge_pid, "broker": self.broker_pid,
                         "bench": os.getpid()})


async def fanout_phase(bench: Bench, name: str, clients: list[WsClient], watching: list[str],
                       received: Received) -> dict[str, Any]:
    args = bench.args
    received.rows.clear()
    meter = bench.cpu()
    meter.start()
    produced = await bench.produce_transcripts(args.seconds, args.rate, name.replace(" ", ""))
    await asyncio.sleep(2.0)  # the last ones arrive
    meter.stop()
    watchers: dict[str, int] = {}
    for call_id in watching:
        watchers[call_id] = watchers.get(call_id, 0) + 1
    expected = sum(watchers.get(call, 0) for call, _ in produced.values())
    delays = np.array([(when - produced[rid][1]) * 1000 for _, rid, when in received.rows
                       if rid in produced])
    closed = sum(1 for c in clients if c.closed.done())
    return {"scenario": name, "subscribers": len(clients), "calls": len(bench.calls),
            "records": len(produced), "deliveries": len(delays),
            "missing": expected - len(delays), "closed": closed,
            **percentiles(delays), "cpu": meter.percent}


async def stall_feed(bench: Bench, call_id: str, stop: asyncio.Event) -> int:
    """16 KiB records at 100/s to the stalled client's call until ``stop``."""
    n = 0
    pad = "x" * 16_384
    while not stop.is_set():
        await bench.producer.send(bench.topics.transcripts, key=call_id.encode(), value=dumps(
            {"v": 1, "type": "transcript", "callId": call_id, "id": f"{call_id}:pad:{n}",
             "msg": pad, "role": "other", "offset": n / 100}))
        n += 1
        await asyncio.sleep(0.01)
    return n


async def slow_close_time(bench: Bench, stop: asyncio.Event) -> float | None:
    """Seconds until the bridge counted a slow-client close (the stalled client cannot see
    it: it does not read), ``None`` if none before ``stop``."""
    name = "callscribe_bridge_slow_client_closes_total"
    began = time.monotonic()
    before = (await asyncio.to_thread(scrape, f"{bench.http}/metrics")).get(name, 0.0)
    while not stop.is_set():
        await asyncio.sleep(0.25)
        if (await asyncio.to_thread(scrape, f"{bench.http}/metrics")).get(name, 0.0) > before:
            return time.monotonic() - began
    return None


async def listen_phase(bench: Bench) -> dict[str, Any]:
    """M listeners on K calls whose audio is produced in real time for ``--listen-seconds``."""
    args = bench.args
    calls = [f"listen-{n}-{secrets.token_hex(3)}" for n in range(args.listen_calls)]
    await bench.start_calls(calls)
    targets: list[tuple[str, dict[str, str]]] = []
    for index in range(args.listeners):
        call_id = calls[index % len(calls)]
        request = urllib.request.Request(f"{bench.http}/v1/calls/{call_id}/listen",
                                         method="POST",
                                         headers={"Authorization": bench.api_key})
        with await asyncio.to_thread(urllib.request.urlopen, request) as response:
            url = json.load(response)["data"]["url"]
        targets.append((url.split(str(bench.port), 1)[1], {}))
    listeners = await connect_many(bench.port, targets, None)
    chunk_ms, rate = 100, 8000
    t = np.arange(rate * chunk_ms // 1000) / rate
    tones = [(3000 * np.sin(2 * np.pi * f * t)).astype("<i2").tobytes() for f in (300, 500)]
    produced: dict[str, list[float]] = {c: [] for c in calls}
    meter = bench.cpu()
    meter.start()
    start = time.monotonic()
    steps = int(args.listen_seconds * 1000 / chunk_ms)
    for step in range(steps + 1):
        delay = start + step * chunk_ms / 1000 - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        last = step == steps
        for call_id in calls:
            for channel in (0, 1):
                chunk = AudioChunk(call_id=call_id, channel=channel, seq=step, rate=rate,
                                   role=("other", "assistant")[channel],
                                   t_ms=step * chunk_ms, pcm=b"" if last else tones[channel],
                                   channels=2, last=last)
                await bench.producer.send(bench.topics.audio, key=call_id.encode(),
                                          value=chunk.pcm, headers=chunk.headers())
            produced[call_id].append(time.time())
    await bench.producer.flush()
    await asyncio.wait([asyncio.ensure_future(c.closed) for c in listeners], timeout=10)
    meter.stop()
    delays: list[float] = []
    heard = []
    for index, client in enumerate(listeners):
        times = produced[calls[index % len(calls)]]
        total = 0
        for when, size in client.binary:
            total += size
            # The newest sample in the frame is in chunk (total - 2) // 3200 (3200 B = 100 ms
            # at 16 kHz): its latency, including what the resampler holds back.
            newest = min(len(times) - 1, max(0, (total - 2) // 3200))
            delays.append((when - times[newest]) * 1000)
        heard.append(total / 32000)
    codes = [c.close_code for c in listeners]
    return {"scenario": "listen", "listeners": len(listeners), "calls": len(calls),
            "audio_s": args.listen_seconds, "heard_s_min": min(heard, default=0.0),
            "heard_s_max": max(heard, default=0.0),
            "closed_1000": codes.count(1000), **percentiles(np.array(delays)),
            "cpu": meter.percent}


# ------------------------------------------------------------------------------ main


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    raise_nofile()
    results: list[dict[str, Any]] = []
    with EmbeddedBroker() as broker:
        topics = Topics(f"fan{secrets.token_hex(3)}")
        await ensure_topics(broker.bootstrap, topics.all(), partitions=PARTITIONS)
        api_key, secret = "bench-" + secrets.token_hex(8), secrets.token_urlsafe(32)
        ports: Any = multiprocessing.get_context("spawn").Queue()
        process = multiprocessing.get_context("spawn").Process(
            target=run_bridge, args=({"bootstrap": broker.bootstrap, "prefix": topics.prefix,
                                      "api_key": api_key, "secret": secret,
                                      "gc_threshold0": args.bridge_gc_threshold0}, ports))
        process.start()
        producer = new_producer(broker.bootstrap, client_id="bench-fanout")
        await start_producer(producer)
        try:
            port = await asyncio.to_thread(ports.get, True, 60)
            broker_process = broker._process  # the broker's pid, for its CPU time only
            bench = Bench(args, port, api_key, TokenIssuer(secret, 3600), topics, producer,
                          process.pid or 0, broker_process.pid if broker_process else None)
            async with asyncio.timeout(args.max_seconds):
                await run_phases(bench, results)
        finally:
            await producer.stop()
            process.terminate()
            process.join(30)
    return results


async def run_phases(bench: Bench, results: list[dict[str, Any]]) -> None:
    args = bench.args
    if args.subscribers:
        bench.calls = [f"fan-{n}-{secrets.token_hex(3)}" for n in range(args.calls)]
        await bench.start_calls(bench.calls)
        watching = [bench.calls[i % len(bench.calls)] for i in range(args.subscribers)]
        received = Received()
        began = time.monotonic()
        clients = await connect_many(bench.port, [
            (bench.path(c), {"Authorization": f"Bearer {bench.api_key}"}) for c in watching],
            received)
        print(f"connected {len(clients)} subscribers in {time.monotonic() - began:.1f} s",
              flush=True)
        # The clients' own garbage collections would be counted as delivery delay: the
        # measuring side keeps its objects out of the collector (the bridge's is untouched).
        gc.collect()
        gc.freeze()
        gc.disable()
        if args.warmup:  # the same traffic, not measured: steady state, not the ramp-up
            await bench.produce_transcripts(args.warmup, args.rate, "warmup")
            await asyncio.sleep(1.0)
        results.append(await fanout_phase(bench, "fan-out", clients, watching, received))
        print_row(results[-1])
        stall_call = f"stall-{secrets.token_hex(3)}"
        await bench.start_calls([stall_call])
        [stalled] = await connect_many(bench.port, [
            (bench.path(stall_call), {"Authorization": f"Bearer {bench.api_key}"})], None,
            stall=True)  # kept referenced: a collected transport would reset the connection
        stop = asyncio.Event()
        feeder = asyncio.create_task(stall_feed(bench, stall_call, stop))
        watcher = asyncio.create_task(slow_close_time(bench, stop))
        results.append(await fanout_phase(bench, "fan-out + stalled", clients, watching,
                                          received))
        stop.set()
        await feeder
        results[-1]["stalled_closed_after_s"] = await watcher
        print_row(results[-1])
        for client in [*clients, stalled]:
            assert client.transport is not None
            client.transport.close()
        gc.enable()
    if args.listeners:
        results.append(await listen_phase(bench))
        print_row(results[-1])


def print_row(row: dict[str, Any]) -> None:
    cpu = ", ".join(f"{k} {v:.0f}%" for k, v in row["cpu"].items())
    if row["scenario"] == "listen":
        print(f"{row['scenario']:<18} {row['listeners']:>5} listeners on {row['calls']} calls: "
              f"heard {row['heard_s_min']:.2f}-{row['heard_s_max']:.2f} s of "
              f"{row['audio_s']:.0f} s, closed 1000: {row['closed_1000']}; delay ms p50 "
              f"{row['p50']:.1f} p95 {row['p95']:.1f} p99 {row['p99']:.1f} max "
              f"{row['max']:.1f}; CPU {cpu}", flush=True)
        return
    extra = ""
    if "stalled_closed_after_s" in row:
        after = row["stalled_closed_after_s"]
        extra = ("; stalled client closed (1013) after "
                 f"{after:.1f} s" if after is not None else "; stalled client not closed")
    print(f"{row['scenario']:<18} {row['subscribers']:>5} subs {row['calls']:>4} calls "
          f"{row['records']:>5} records {row['deliveries']:>7} deliveries "
          f"{row['missing']:>3} missing; delay ms p50 {row['p50']:.1f} p95 {row['p95']:.1f} "
          f"p99 {row['p99']:.1f} max {row['max']:.1f}; CPU {cpu}{extra}", flush=True)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscribers", type=int, default=5000)
    parser.add_argument("--calls", type=int, default=50, help="calls the subscribers watch")
    parser.add_argument("--rate", type=float, default=20.0,
                        help="transcript records per second, over all calls")
    parser.add_argument("--words", type=int, default=12, help="words per transcript")
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each phase")
    parser.add_argument("--warmup", type=float, default=5.0,
                        help="seconds of unmeasured traffic after the subscribers connect (the "
                        "bridge's garbage collector digests the connections)")
    parser.add_argument("--listeners", type=int, default=200)
    parser.add_argument("--listen-calls", type=int, default=10)
    parser.add_argument("--listen-seconds", type=float, default=15.0)
    parser.add_argument("--bridge-gc-threshold0", type=int, default=None,
                        help="gc.set_threshold(N, ...) in the bridge process (CPython's "
                        "default is 700): fewer young collections promote fewer short-lived "
                        "objects, so full collections come far less often")
    parser.add_argument("--max-seconds", type=float, default=600.0,
                        help="the whole run is cut off after this")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING)
    results = asyncio.run(main_async(parse_args(argv)))
    print(json.dumps(results, indent=1, default=float), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
