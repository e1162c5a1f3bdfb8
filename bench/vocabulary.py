"""What a custom vocabulary does: term recall, WER and decode time with and without it.

    .venv/bin/python -m bench.vocabulary [--set DIR] [--shared N] [--repeats R]

The vocabulary set (``scripts/make_vocabulary_set.py``: espeak-ng sentences holding made-up
product and plan names, 16 kHz; made in ``DIR``, by default a folder under the temp dir, when
missing) is decoded offline through the real :class:`Transcriber`, each sentence on its own as
a final is (``transcribe_many`` of one :class:`DecodeRequest`), once with no vocabulary and once
with the set's ``terms.txt`` as the deployment vocabulary (``CALLSCRIBE_VOCABULARY``). With
``--shared N`` the first N utterances of every group of the shared evaluation corpus
(``bench.calls.read_manifest``, 16 kHz) are decoded the same two ways, for WER on speech that
holds none of the terms. ``--tel8k``: the set as a phone line carries it (8 kHz G.711 μ-law,
back to 16 kHz as the transcriber resamples it). No stack, no Kafka.

Reported per configuration: term recall (term occurrences of the references found in the
hypothesis, case and punctuation aside), false terms (a term written where it was not said),
corpus WER (Whisper's English normaliser + jiwer) on the set and on the shared subset, and the
median over sentences of each one's fastest decode, wall-clock and CPU time (of
``--repeats``; the two configurations take turns on each sentence, so a busy machine slows
both alike).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import jiwer
import numpy as np
import soxr
from whisper_normalizer.english import (  # type: ignore[import-untyped]  # no stubs
    EnglishTextNormalizer,
)

from bench.calls import SPEECH_DIR, read_audio, read_manifest
from workers.ingest.dialects.audio import mulaw_to_pcm16, pcm16_to_mulaw, resample_pcm16
from workers.transcribe.asr import DecodeRequest, Transcriber
from workers.vocabulary import load_vocabulary

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "make_vocabulary_set.py"
DEFAULT_SET = Path(tempfile.gettempdir()) / "callscribe-vocabulary-set"
_normalise = EnglishTextNormalizer()


@dataclass(frozen=True, slots=True)
class Item:
    name: str
    pcm: bytes  # 16 kHz PCM16
    text: str
    terms: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Scores:
    recall: float
    found: int
    said: int
    false_terms: int
    wer: float
    decode_ms: float
    cpu_ms: float
    hypotheses: tuple[str, ...]


def plain(text: str) -> str:
    """Lower case, punctuation as spaces, one space between words."""
    return " " + " ".join(re.sub(r"[^a-z0-9]+", " ", text.lower()).split()) + " "


def load_set(folder: Path) -> tuple[list[Item], tuple[str, ...]]:
    if not (folder / "manifest.json").exists():
        subprocess.run([sys.executable, str(SCRIPT), str(folder)], check=True)
    manifest = json.loads((folder / "manifest.json").read_text())
    items = []
    for entry in manifest["items"]:
        samples, rate = read_audio(folder / entry["file"])
        items.append(Item(entry["file"], to_16k(samples, rate), entry["text"],
                          tuple(entry["terms"])))
    return items, tuple(manifest["terms"])


def to_16k(samples: np.ndarray, rate: int) -> bytes:
    if rate == 16000:
        return bytes(samples.astype("<i2").tobytes())
    audio = soxr.resample(samples.astype(np.float32) / 32768.0, rate, 16000)
    return bytes(np.clip(np.rint(audio * 32768.0), -32768, 32767).astype("<i2").tobytes())


def tel8k(item: Item) -> Item:
    """``item`` through an 8 kHz μ-law phone line and back to 16 kHz."""
    line = mulaw_to_pcm16(pcm16_to_mulaw(resample_pcm16(item.pcm, 16000, 8000)))
    return Item(item.name, to_16k(np.frombuffer(line, dtype="<i2"), 8000), item.text,
                item.terms)


def load_shared(per_group: int, speech_dir: Path = SPEECH_DIR) -> list[Item]:
    """The first ``per_group`` 16 kHz utterances of each corpus group (file-name prefix)."""
    taken: dict[str, int] = {}
    items = []
    for utterance in read_manifest(speech_dir):
        group = utterance.file.split("_")[0]
        if taken.get(group, 0) >= per_group:
            continue
        samples, rate = read_audio(speech_dir / utterance.file)
        taken[group] = taken.get(group, 0) + 1
        items.append(Item(utterance.file, to_16k(samples, rate), utterance.text, ()))
    return items


def decode(transcribers: Sequence[Transcriber], items: Sequence[Item], repeats: int,
           ) -> list[tuple[list[str], float, float]]:
    """Per transcriber: each item's text and the medians (over items) of its fastest decode
    in wall-clock and in CPU ms (the process's, every thread). The transcribers take turns on
    each item, so a busy machine slows all alike."""
    texts: list[list[str]] = [[] for _ in transcribers]
    walls: list[list[float]] = [[] for _ in transcribers]
    cpus: list[list[float]] = [[] for _ in transcribers]
    for item in items:
        wall: list[list[float]] = [[] for _ in transcribers]
        cpu: list[list[float]] = [[] for _ in transcribers]
        results = [""] * len(transcribers)
        for _ in range(repeats):
            for index, transcriber in enumerate(transcribers):
                started, used = time.perf_counter(), time.process_time()
                results[index] = transcriber.transcribe_many([DecodeRequest(item.pcm)])[0].text
                wall[index].append(time.perf_counter() - started)
                cpu[index].append(time.process_time() - used)
        for index, result in enumerate(results):
            texts[index].append(result)
            walls[index].append(min(wall[index]) * 1000)
            cpus[index].append(min(cpu[index]) * 1000)
    return [(t, statistics.median(w) if w else 0.0, statistics.median(c) if c else 0.0)
            for t, w, c in zip(texts, walls, cpus, strict=True)]


def score(items: Sequence[Item], texts: Sequence[str], terms: Sequence[str],
          decode_ms: float, cpu_ms: float) -> Scores:
    said = found = false_terms = 0
    for item, text in zip(items, texts, strict=True):
        heard = plain(text)
        for term in item.terms:
            said += 1
            found += plain(term) in heard
        false_terms += sum(plain(t) in heard for t in terms if t not in item.terms)
    pairs = [(_normalise(i.text), _normalise(t)) for i, t in zip(items, texts, strict=True)]
    pairs = [(r, h) for r, h in pairs if r.strip()]
    wer = float(jiwer.wer([r for r, _ in pairs], [h for _, h in pairs])) if pairs else 0.0
    return Scores(recall=found / said if said else 0.0, found=found, said=said,
                  false_terms=false_terms, wer=wer, decode_ms=decode_ms, cpu_ms=cpu_ms,
                  hypotheses=tuple(texts))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--set", type=Path, default=DEFAULT_SET,
                        help="vocabulary set folder (made with espeak-ng when missing)")
    parser.add_argument("--shared", type=int, default=0, metavar="N",
                        help="also score the first N utterances of each shared-corpus group")
    parser.add_argument("--repeats", type=int, default=3, help="decodes per sentence (timing)")
    parser.add_argument("--cpu-threads", type=int, default=2)
    parser.add_argument("--vocabulary", type=Path, default=None, metavar="FILE",
                        help="the vocabulary to try instead of the set's terms.txt")
    parser.add_argument("--tel8k", action="store_true",
                        help="the set through an 8 kHz mu-law phone line")
    parser.add_argument("--show", action="store_true", help="print every hypothesis")
    args = parser.parse_args(argv)
    items, terms = load_set(args.set)
    if args.tel8k:
        items = [tel8k(item) for item in items]
    vocabulary = load_vocabulary(args.vocabulary or args.set / "terms.txt")
    shared = load_shared(args.shared) if args.shared else []
    labels = ("none", args.vocabulary.name if args.vocabulary else "terms.txt")
    transcribers = [Transcriber(cpu_threads=args.cpu_threads, vocabulary=words)
                    for words in ((), vocabulary)]
    on_set = [score(items, texts, terms, ms, cpu)
              for texts, ms, cpu in decode(transcribers, items, args.repeats)]
    on_shared: list[Scores | None] = [None] * len(transcribers)
    if shared:
        on_shared = [score(shared, texts, terms, ms, cpu)
                     for texts, ms, cpu in decode(transcribers, shared, 1)]
    rows = [(label, len(t.prompt()[1]), s, sh)
            for label, t, s, sh in zip(labels, transcribers, on_set, on_shared, strict=True)]
    for transcriber in transcribers:
        transcriber.close()
    line = "8 kHz mu-law" if args.tel8k else "16 kHz"
    print(f"vocabulary set ({line}): {len(items)} sentences, {rows[0][2].said} term occurrences, "
          f"{len(terms)} terms; shared subset: {len(shared)} utterances; tiny.en int8, "
          f"{args.cpu_threads} threads; decode ms: median over sentences of the fastest of "
          f"{args.repeats} (1 on the shared subset), the two configurations taking turns")
    print("| vocabulary | prompt tokens | term recall | false terms | WER (set) "
          "| WER (shared) | decode ms (set, p50) | CPU ms (set, p50) | decode ms (shared, p50) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, prompt, on_set, on_shared in rows:
        shared_wer = f"{100 * on_shared.wer:.1f} %" if on_shared else "-"
        shared_ms = f"{on_shared.decode_ms:.0f}" if on_shared else "-"
        print(f"| {label} | {prompt} | {on_set.found}/{on_set.said} "
              f"({100 * on_set.recall:.0f} %) | {on_set.false_terms} | "
              f"{100 * on_set.wer:.1f} % | {shared_wer} | {on_set.decode_ms:.0f} | "
              f"{on_set.cpu_ms:.0f} | {shared_ms} |")
    if args.show:
        for index, item in enumerate(items):
            print(f"{item.name}: {item.text}")
            for label, _, on_set, _ in rows:
                print(f"    {label:>10}: {on_set.hypotheses[index]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
