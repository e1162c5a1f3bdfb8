"""``--speech DIR``: the benchmarks say what speech is missing instead of failing on a path a
user's clone does not have, and a folder of WAVs with transcripts becomes a corpus."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bench import capacity, eval_wer, latency, speech, windows
from bench.calls import read_manifest
from tests.conftest import FIXTURES


@pytest.mark.parametrize("main", [latency.main, capacity.main, eval_wer.main, windows.main])
def test_every_benchmark_says_where_speech_is_missing(main: object, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert callable(main)
    assert main(["--speech", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"no recorded speech to play: {tmp_path / 'none'} does not exist. "
                          "Pass --speech DIR")


def test_a_folder_of_wavs_and_transcripts_becomes_a_corpus(tmp_path: Path) -> None:
    for name, text in (("ann_1", "my internet is not working"), ("bob_1", "let me look")):
        shutil.copy(FIXTURES / "speech" / "caller.wav", tmp_path / f"{name}.wav")
        (tmp_path / f"{name}.txt").write_text(f"  {text}\n")
    shutil.copy(FIXTURES / "speech" / "agent.wav", tmp_path / "lonely.wav")  # no transcript
    assert speech.main(["build", str(tmp_path)]) == 0
    utterances = read_manifest(tmp_path)
    assert [(u.file, u.text, u.speaker) for u in utterances] == [
        ("ann_1.wav", "my internet is not working", "ann"), ("bob_1.wav", "let me look", "bob")]
    assert utterances[0].duration_s == pytest.approx(5.856, abs=0.01)
    assert speech.problems(tmp_path) == []
    assert speech.problems(tmp_path, tel8k=True) == [
        f"2 of 2 WAVs named in the manifest are not in {tmp_path / 'tel8k'} (first: ann_1.wav)"]


def test_a_manifest_without_the_columns_is_named(tmp_path: Path) -> None:
    (tmp_path / "manifest.tsv").write_text("path\ttext\na.wav\thello\n")
    assert speech.problems(tmp_path) == [
        f"{tmp_path / 'manifest.tsv'} lacks the column(s) file, duration_s, reference_text, "
        "speaker (header: 'path text')"]
