"""docs/tutorial.md, run: a real ``callscribe up`` in a fresh folder, then every ``sh`` block of
the tour in order (``callscribe`` is this checkout's CLI; ``your.wav`` a 16 kHz mono
recording), then Ctrl-C twice, as the tour's last step says."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import FIXTURES, seconds
from tests.test_cli import REPO, clean_env
from workers.bridge.tokens import TokenIssuer
from workers.broker import free_port
from workers.localenv import read

TOUR = REPO / "docs" / "tutorial.md"


def sh_blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", TOUR.read_text(), flags=re.DOTALL)


def test_the_tour_runs(tmp_path: Path) -> None:
    blocks = sh_blocks()
    assert len(blocks) >= 4
    shutil.copy(FIXTURES / "speech" / "call_mono_16k.wav", tmp_path / "your.wav")
    env = clean_env(
        CALLSCRIBE_BROKER_PORT=str(free_port()), CALLSCRIBE_INGEST_PORT=str(free_port()),
        CALLSCRIBE_TRANSCRIBE_WEB_PORT=str(free_port()), CALLSCRIBE_BRIDGE_PORT=str(free_port()),
        CALLSCRIBE_ASSIST_WEB_PORT=str(free_port()), CALLSCRIBE_INGEST_API_PORT=str(free_port()),
        CALLSCRIBE_CPU_THREADS="2")
    up = subprocess.Popen([sys.executable, "-m", "workers.cli", "up"], cwd=tmp_path, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert up.stdout is not None
        deadline = time.monotonic() + seconds(120)
        summary = ""
        while "Running." not in summary and time.monotonic() < deadline:
            line = up.stdout.readline()
            assert line, f"up exited: {up.wait()} {up.stderr.read() if up.stderr else ''}"
            summary += line
        assert "client settings  .callscribe/env" in summary
        shell = clean_env(PATH=f"{Path(sys.executable).parent}:{env['PATH']}")
        prelude = f'callscribe() {{ "{sys.executable}" -m workers.cli "$@"; }}\nset -e\n'
        outputs = []
        for block in blocks:
            done = subprocess.run(["bash", "-c", prelude + block], cwd=tmp_path, env=shell,
                                  capture_output=True, text=True, timeout=seconds(90),
                                  check=False)
            assert done.returncode == 0, (block, done.stdout, done.stderr)
            outputs.append(done)
        simulate, watch, again, _ = outputs[:4]
        assert "my-first-call" in simulate.stdout  # `calls` listed it
        assert (tmp_path / "simulate.out").read_text().splitlines()[1].strip() \
            == "watch it:  callscribe watch my-first-call"
        assert "other: My internet is not working today." in watch.stdout
        assert "assistant:" not in watch.stdout
        assert again.stdout == "exit status 1\n"
        assert "unknown_call" in again.stderr
        secret = read(tmp_path / ".callscribe" / "env")["CALLSCRIBE_TOKEN_SECRET"]
        token = (tmp_path / "token.txt").read_text().strip()
        assert TokenIssuer(secret).verify(token) == "my-second-call"
    finally:
        up.send_signal(signal.SIGINT)
        _, err = up.communicate(timeout=seconds(90))
    assert up.returncode == 0, err
    assert "stopping ingest, transcribe, assist, bridge (Ctrl-C again to force)" in err
    assert err.index("stopping the broker") > err.index("  ingest stopped")
    assert "callscribe stopped" in err
    assert "Traceback" not in err
