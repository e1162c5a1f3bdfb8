"""The recorded speech the benchmarks play: ``--speech DIR``, checked before anything starts.

A speech folder is any folder with::

    manifest.tsv     tab-separated, a header line, then one line per utterance; the columns
                     used are ``file`` (a WAV in this folder), ``duration_s``,
                     ``reference_text`` (what is said) and ``speaker`` (``?`` or empty:
                     unknown, each such file its own speaker); other columns are ignored
    *.wav            16 kHz PCM16 mono (any rate works; it is resampled)
    tel8k/*.wav      (for ``--tel8k`` only) the same file names as 8 kHz G.711 mu-law or PCM16

The default is ``$CALLSCRIBE_SPEECH_DIR``, else ``../shared/eval/speech/`` beside the
repository. ``python -m bench.speech check DIR`` says what a folder lacks;
``python -m bench.speech build DIR`` writes ``manifest.tsv`` for WAVs that each have a
same-named ``.txt`` transcript (speaker: the file name up to the first ``_``).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import wave
from collections.abc import Sequence
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT = REPO.parent / "shared" / "eval" / "speech"
COLUMNS = ("file", "duration_s", "reference_text", "speaker")


class SpeechMissing(Exception):
    """The speech folder, its manifest or some of its audio is not there."""


def default_dir() -> Path:
    return Path(os.environ.get("CALLSCRIBE_SPEECH_DIR") or DEFAULT)


def add_argument(parser: argparse.ArgumentParser, *flags: str) -> None:
    """``--speech DIR`` (plus any older ``flags``) on a benchmark's parser."""
    parser.add_argument("--speech", *flags, dest="speech", type=Path, default=default_dir(),
                        metavar="DIR",
                        help="folder with manifest.tsv and the WAVs it names (and tel8k/ for "
                        "--tel8k); default $CALLSCRIBE_SPEECH_DIR or ../shared/eval/speech "
                        "(format: python -m bench.speech --help)")


def problems(folder: Path, *, tel8k: bool = False) -> list[str]:
    """What ``folder`` lacks for a benchmark (empty: nothing)."""
    manifest = folder / "manifest.tsv"
    if not folder.is_dir():
        return [f"{folder} does not exist"]
    if not manifest.is_file():
        return [f"{manifest} does not exist"]
    with open(manifest, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        missing_columns = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing_columns:
            return [f"{manifest} lacks the column(s) {', '.join(missing_columns)} "
                    f"(header: {' '.join(reader.fieldnames or [])!r})"]
        files = [row["file"] for row in reader]
    if not files:
        return [f"{manifest} lists no utterances"]
    found: list[str] = []
    for sub in (("",) if not tel8k else ("", "tel8k")):
        absent = [f for f in files if not (folder / sub / f).is_file()]
        if absent:
            where = folder / sub if sub else folder
            found.append(f"{len(absent)} of {len(files)} WAVs named in the manifest are not in "
                         f"{where} (first: {absent[0]})")
    return found


def require(folder: Path, *, tel8k: bool = False) -> Path:
    """``folder`` if it holds what a benchmark needs, else :class:`SpeechMissing` saying what
    is missing and how to point the benchmark at a folder."""
    found = problems(folder, tel8k=tel8k)
    if found:
        raise SpeechMissing(
            "no recorded speech to play: " + "; ".join(found) + ". Pass --speech DIR (or set "
            "CALLSCRIBE_SPEECH_DIR) to a folder with manifest.tsv and its WAVs; the format and "
            "how to build one: python -m bench.speech --help, or bench/README.md")
    return folder


def missing(folder: Path, *, tel8k: bool = False) -> int | None:
    """For a benchmark's ``main``: ``None`` when ``folder`` is ready, else print what is
    missing and return the exit status 2."""
    try:
        require(folder, tel8k=tel8k)
    except SpeechMissing as exc:
        print(exc, file=sys.stderr)
        return 2
    return None


def build(folder: Path) -> Path:
    """Write ``folder/manifest.tsv`` for every ``NAME.wav`` with a ``NAME.txt`` beside it."""
    rows = []
    for wav_path in sorted(folder.glob("*.wav")):
        text_path = wav_path.with_suffix(".txt")
        if not text_path.is_file():
            print(f"skipped {wav_path.name}: no {text_path.name}", file=sys.stderr)
            continue
        with wave.open(str(wav_path), "rb") as wav:
            duration = wav.getnframes() / wav.getframerate()
        text = " ".join(text_path.read_text(encoding="utf-8").split())
        speaker = wav_path.stem.split("_", 1)[0] if "_" in wav_path.stem else "?"
        rows.append((wav_path.name, f"{duration:.3f}", text, speaker))
    if not rows:
        raise SpeechMissing(f"{folder}: no NAME.wav with a NAME.txt transcript beside it")
    manifest = folder / "manifest.tsv"
    with open(manifest, "w", encoding="utf-8") as out:
        out.write("\t".join(COLUMNS) + "\n")
        out.writelines("\t".join(row) + "\n" for row in rows)
    return manifest


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.speech", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=("check", "build"))
    parser.add_argument("folder", type=Path, nargs="?", default=default_dir())
    parser.add_argument("--tel8k", action="store_true", help="check tel8k/ too")
    args = parser.parse_args(argv)
    try:
        if args.action == "build":
            print(f"wrote {build(args.folder)}")
        require(args.folder, tel8k=args.tel8k)
    except SpeechMissing as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"{args.folder}: ready")
    return 0


if __name__ == "__main__":
    sys.exit(main())
