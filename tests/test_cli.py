"""The ``callscribe`` command as a user runs it: ``up --demo`` (the README's first command),
``token``, and every user mistake answered with one line and a non-zero exit.

Each command runs as a child process in a fresh folder (no ``.callscribe/env`` unless the test
writes one) with no ``CALLSCRIBE_*`` variables but those the test sets.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

from tests.conftest import seconds
from workers import localenv
from workers.bridge.tokens import TokenIssuer
from workers.broker import free_port

REPO = Path(__file__).parent.parent


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without CALLSCRIBE_* settings, importing this checkout's package."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLSCRIBE_")}
    env["PYTHONPATH"] = str(REPO)
    env.update(extra)
    return env


def run_cli(*args: str, env: dict[str, str] | None = None, wait_s: float = 30,
            cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workers.cli", *args],
                          env=clean_env() if env is None else env, cwd=cwd,
                          capture_output=True, text=True, timeout=seconds(wait_s), check=False)


def test_up_demo_prints_the_live_transcript_and_stops_cleanly(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    env = clean_env(
        CALLSCRIBE_BROKER_PORT=str(free_port()), CALLSCRIBE_INGEST_PORT=str(free_port()),
        CALLSCRIBE_TRANSCRIBE_WEB_PORT=str(free_port()), CALLSCRIBE_BRIDGE_PORT=str(free_port()),
        CALLSCRIBE_ASSIST_WEB_PORT=str(free_port()), CALLSCRIBE_INGEST_API_PORT=str(free_port()),
        CALLSCRIBE_LOG_DIR=str(logs), CALLSCRIBE_CPU_THREADS="2",
    )
    result = run_cli("up", "--demo", "--exit-after-demo", env=env, wait_s=180, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "callscribe is up" in out
    # Output redirected: still lines for a person, not JSON logging.
    assert not [line for line in result.stderr.splitlines() if line.startswith("{")], \
        result.stderr
    # Every topic is in the summary.
    for topic in ("audio", "calls", "transcripts", "transcripts.redacted", "assist",
                  "summaries", "control", "subscriptions"):
        assert f"callscribe.{topic}," in out or f"callscribe.{topic}\n" in out, topic
    # What the sibling commands need is written down, for the owner only, and said where.
    env_file = tmp_path / ".callscribe" / "env"
    assert "client settings  .callscribe/env" in out
    assert stat.S_IMODE(env_file.stat().st_mode) == 0o600
    written = localenv.read(env_file)
    assert written["CALLSCRIBE_BRIDGE_URL"] == f"http://127.0.0.1:{env['CALLSCRIBE_BRIDGE_PORT']}"
    assert written["CALLSCRIBE_INGEST_URL"] == f"ws://127.0.0.1:{env['CALLSCRIBE_INGEST_PORT']}"
    assert written["CALLSCRIBE_API_KEYS"] in out  # the key the summary shows
    assert len(written["CALLSCRIBE_TOKEN_SECRET"]) >= 32
    # Stopping says what it does: workers first, then the broker.
    err = result.stderr
    assert "stopping ingest, transcribe, assist, bridge" in err, err
    assert err.index("  bridge stopped") < err.index("stopping the broker") \
        < err.index("callscribe stopped"), err
    # Log files are plain text: no terminal escape sequences (colours, cursor codes).
    for log_file in logs.glob("*.log"):
        assert "\x1b" not in log_file.read_text(errors="replace"), log_file
    assert "── call started  phone=+15083084809" in out
    lines = [line for line in out.splitlines() if line.startswith("[")]
    assert any("other: My internet is not working today." in line for line in lines), out
    assert any("assistant:" in line and "sorry" in line for line in lines), out
    assert "── call ended" in out
    # Every child process is gone: nothing listens on the ports any more.
    for port in (env["CALLSCRIBE_INGEST_PORT"], env["CALLSCRIBE_BRIDGE_PORT"]):
        probe = subprocess.run(["python3", "-c", f"import socket; socket.create_connection("
                                f"('127.0.0.1', {port}), timeout=1)"], capture_output=True,
                               check=False)
        assert probe.returncode != 0


def test_token_prints_only_a_token_for_the_call(tmp_path: Path) -> None:
    secret = "s" * 40
    result = run_cli("token", "call-42", env=clean_env(CALLSCRIBE_TOKEN_SECRET=secret),
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert result.stdout == token + "\n"
    assert TokenIssuer(secret).verify(token) == "call-42"


def test_token_without_a_secret_says_what_to_set(tmp_path: Path) -> None:
    result = run_cli("token", "call-42", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == ("callscribe token: set CALLSCRIBE_TOKEN_SECRET (the bridge's), or "
                             "run this where `callscribe up` is running: it writes "
                             ".callscribe/env\n")
    assert result.stdout == ""


def test_token_reads_the_secret_up_wrote(tmp_path: Path) -> None:
    secret = "f" * 43
    localenv.write({"CALLSCRIBE_TOKEN_SECRET": secret}, tmp_path / ".callscribe" / "env")
    result = run_cli("token", "call-7", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert TokenIssuer(secret).verify(result.stdout.strip()) == "call-7"


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    localenv.write({"CALLSCRIBE_TOKEN_SECRET": "f" * 43}, tmp_path / ".callscribe" / "env")
    mine = "m" * 43
    result = run_cli("token", "call-7", env=clean_env(CALLSCRIBE_TOKEN_SECRET=mine),
                     cwd=tmp_path)
    assert TokenIssuer(mine).verify(result.stdout.strip()) == "call-7"


def test_up_help_names_every_worker() -> None:
    result = run_cli("up", "--help", env=clean_env(COLUMNS="200"))
    assert result.returncode == 0
    for worker in ("broker", "ingest", "transcriber", "assist", "bridge", ".callscribe/env"):
        assert worker in result.stdout, worker


def test_simulate_a_file_that_is_not_a_wav_says_so(tmp_path: Path) -> None:
    result = run_cli("simulate", "jambonz", "--wav", str(REPO / "README.md"), cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == (f"callscribe simulate jambonz: {REPO / 'README.md'} is not a WAV "
                             "file (file does not start with RIFF id); expected a PCM16 WAV "
                             "(RIFF/WAVE, 16-bit samples)\n")
    assert result.stdout == ""  # nothing announced, nothing sent


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = run_cli("--debug", "simulate", "twilio", "--wav", str(REPO / "README.md"),
                     cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr
    assert "UsageError" in result.stderr


def test_simulate_with_nothing_listening_says_is_up_running(tmp_path: Path) -> None:
    url = f"ws://127.0.0.1:{free_port()}/jambonz"
    result = run_cli("simulate", "jambonz", "--wav", str(REPO / "workers/samples/demo_call.wav"),
                     "--url", url, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.startswith("call ")  # the id came first
    assert result.stderr == (f"callscribe simulate jambonz: cannot reach the ingest at {url} "
                             "(connection refused); is `callscribe up` running, and on that "
                             "port?\n")


def test_bad_dtmf_says_the_expected_form(tmp_path: Path) -> None:
    result = run_cli("simulate", "plivo", "--wav", str(REPO / "workers/samples/demo_call.wav"),
                     "--dtmf", "soon", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == ("callscribe simulate plivo: --dtmf 'soon'; expected SECONDS:DIGIT, "
                             "e.g. 2.5:1\n")


def test_simulate_telnyx_says_what_it_expects_and_what_it_could_not_reach(
        tmp_path: Path) -> None:
    wav = str(REPO / "workers/samples/demo_call.wav")
    result = run_cli("simulate", "telnyx", "--wav", wav, "--encoding", "G722", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr == ("callscribe simulate telnyx: --encoding G722 --rate 8000; expected "
                             "PCMU or PCMA at 8000, or L16 at 8000, 16000 or 24000\n")
    url = f"ws://127.0.0.1:{free_port()}/telnyx"
    result = run_cli("simulate", "telnyx", "--wav", wav, "--url", url, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.startswith("call v3:")  # the id came first
    assert result.stderr == (f"callscribe simulate telnyx: cannot reach the ingest at {url} "
                             "(connection refused); is `callscribe up` running, and on that "
                             "port?\n")


def test_watch_and_calls_without_a_bridge_say_so_at_once(tmp_path: Path) -> None:
    bridge = f"http://127.0.0.1:{free_port()}"
    localenv.write({"CALLSCRIBE_TOKEN_SECRET": "f" * 43, "CALLSCRIBE_API_KEYS": "k1",
                    "CALLSCRIBE_BRIDGE_URL": bridge}, tmp_path / ".callscribe" / "env")
    for args, shown in ((("watch", "call-1"), "ws" + bridge[4:]), (("calls",), bridge)):
        result = run_cli(*args, cwd=tmp_path, wait_s=10)
        assert result.returncode == 1, args
        assert result.stderr == (f"callscribe {args[0]}: cannot reach the bridge at {shown} "
                                 "(connection refused); is `callscribe up` running, and on "
                                 "that port?\n")


def test_watch_without_a_key_says_what_to_set(tmp_path: Path) -> None:
    result = run_cli("watch", "call-1", cwd=tmp_path)
    assert result.returncode == 2
    assert "set CALLSCRIBE_API_KEYS" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_vocabulary_stops_transcribe_before_kafka(tmp_path: Path) -> None:
    long_line = tmp_path / "long.txt"
    long_line.write_text("Quorvo\n" + "x" * 80 + "\n")
    missing = tmp_path / "missing.txt"
    # no broker listens on port 1: the vocabulary is checked before Kafka is touched
    for path, says in ((long_line, "line 2: a term of 80 characters"),
                       (missing, "expected a readable UTF-8 file")):
        result = run_cli("transcribe", env=clean_env(CALLSCRIBE_VOCABULARY=str(path),
                                                     CALLSCRIBE_KAFKA_BOOTSTRAP="127.0.0.1:1"))
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("callscribe transcribe: CALLSCRIBE_VOCABULARY: "
                                        f"{path}"), result.stderr
        assert says in result.stderr, result.stderr
        assert result.stderr.count("\n") == 1  # one line, no traceback
