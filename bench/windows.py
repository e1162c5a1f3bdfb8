"""Whisper window policy: WER, loop rate and decode time per encoder window, offline.

    .venv/bin/python -m bench.windows [--limit N] [--policies "30;15,30;10,15,30;5,10,15,30"]

Every utterance of ``../shared/eval/speech/`` (16 kHz, and the ``tel8k/`` 8 kHz mu-law copies
resampled as the transcriber does) is decoded by the worker's own batch path
(:meth:`Transcriber.transcribe_many`, greedy, temperature 0, the guard) under each policy: the
utterance goes in the smallest window of the policy that holds it plus ``MIN_TAIL_S``. Per
policy and rate: corpus WER (Whisper normaliser + jiwer), finals that looped (the guard's
``repetitive``, or whisper starting the utterance over), the same on a cut at 60 % of each
utterance (what an interim decodes: audio that stops mid-word, where loops happen), and the
mean decode time. Results: ``bench/results/windows-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from typing import Any

import jiwer
from whisper_normalizer.english import (  # type: ignore[import-untyped]  # no stubs
    EnglishTextNormalizer,
)

from bench import speech
from bench.bench_stack import save_result
from bench.eval_wer import Item, load_items
from workers import metrics
from workers.transcribe import asr
from workers.transcribe.asr import DecodeRequest, Transcriber, parse_windows

DEFAULT_POLICIES = "30;15,30;10,15,30;5,10,15,30"


def _restarts() -> float:
    return float(metrics.TRANSCRIBE_SUPPRESSED.labels("restarted")._value.get())


def measure(transcriber: Transcriber, items: Sequence[Item], policy: str) -> dict[str, Any]:
    normalise = EnglishTextNormalizer()
    transcriber.windows = parse_windows(policy)
    refs, hyps, looped, partial_looped, times = [], [], 0, 0, []
    for item in items:
        pcm = item.pcm16k()
        before = _restarts()
        started = time.perf_counter()
        result = transcriber.transcribe_many([DecodeRequest(pcm, retry=True)])[0]
        times.append(time.perf_counter() - started)
        looped += "repetitive" in result.suppressed or _restarts() > before
        refs.append(normalise(item.reference))
        hyps.append(normalise(result.text))
        cut = pcm[: len(pcm) * 3 // 5 // 2 * 2]
        before = _restarts()
        partial = transcriber.transcribe_many([DecodeRequest(cut, kind="interim")])[0]
        partial_looped += "repetitive" in partial.suppressed or _restarts() > before
    pairs = [(r, h) for r, h in zip(refs, hyps, strict=True) if r.strip()]
    wer = jiwer.wer([r for r, _ in pairs], [h for _, h in pairs])
    return {"policy": policy, "utterances": len(items), "wer": wer,
            "looped": looped, "partial_looped": partial_looped,
            "decode_mean_ms": 1000 * sum(times) / max(1, len(times))}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.windows", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=None, help="utterances per rate")
    parser.add_argument("--policies", default=DEFAULT_POLICIES,
                        help="';'-separated window sets (default %(default)s)")
    parser.add_argument("--cpu-threads", type=int, default=2)
    parser.add_argument("--tail", type=float, default=None,
                        help="silence kept after the audio in its window, s (default: "
                        "workers.transcribe.asr.MIN_TAIL_S)")
    parser.add_argument("--rates", default="16k,tel8k", help="16k, tel8k or both")
    speech.add_argument(parser)
    args = parser.parse_args(argv)
    if (missing := speech.missing(args.speech, tel8k="tel8k" in args.rates)) is not None:
        return missing
    if args.tail is not None:
        asr.MIN_TAIL_S = args.tail
    transcriber = Transcriber(cpu_threads=args.cpu_threads)
    rows = []
    for rate in args.rates.split(","):
        items = [i for i in load_items(args.speech, tel8k=rate == "tel8k", limit=args.limit)
                 if i.duration_s + asr.MIN_TAIL_S <= 30]
        transcriber.transcribe_many([DecodeRequest(items[0].pcm16k())])  # warm-up
        for policy in args.policies.split(";"):
            row = {"rate": rate, "tail_s": asr.MIN_TAIL_S,
                   **measure(transcriber, items, policy)}
            rows.append(row)
            print(f"{rate:6} {policy:14} tail {asr.MIN_TAIL_S:.1f} s "
                  f"WER {100 * row['wer']:5.2f} %  looped "
                  f"{row['looped']:3}/{row['utterances']}  looped at 60 % "
                  f"{row['partial_looped']:3}/{row['utterances']}  decode "
                  f"{row['decode_mean_ms']:6.0f} ms", flush=True)
    transcriber.close()
    shown = save_result("windows", {"timestamp": time.strftime("%Y%m%d-%H%M%S"),
                                    "rows": rows, "args": vars(args)})
    print(f"wrote {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
