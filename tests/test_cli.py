"""The ``callscribe`` command as a user runs it: ``up --demo`` (the README's first command) and
``token``."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import seconds
from workers.bridge.tokens import TokenIssuer
from workers.broker import free_port


def run_cli(*args: str, env: dict[str, str], wait_s: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workers.cli", *args], env=env,
                          capture_output=True, text=True, timeout=wait_s, check=False)


def test_up_demo_prints_the_live_transcript_and_stops_cleanly(tmp_path: object) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLSCRIBE_")}
    env.update({
        "CALLSCRIBE_BROKER_PORT": str(free_port()), "CALLSCRIBE_INGEST_PORT": str(free_port()),
        "CALLSCRIBE_WEB_PORT": str(free_port()), "CALLSCRIBE_BRIDGE_PORT": str(free_port()),
        "CALLSCRIBE_LOG_DIR": str(tmp_path), "CALLSCRIBE_CPU_THREADS": "2",
    })
    result = run_cli("up", "--demo", "--exit-after-demo", env=env, wait_s=seconds(180))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "callscribe is up" in out
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


def test_token_prints_only_a_token_for_the_call() -> None:
    secret = "s" * 40
    env = {**os.environ, "CALLSCRIBE_TOKEN_SECRET": secret}
    result = run_cli("token", "call-42", env=env, wait_s=seconds(30))
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    assert result.stdout == token + "\n"
    assert TokenIssuer(secret).verify(token) == "call-42"


def test_token_without_a_secret_says_what_to_set() -> None:
    env = {k: v for k, v in os.environ.items() if k != "CALLSCRIBE_TOKEN_SECRET"}
    result = run_cli("token", "call-42", env=env, wait_s=seconds(30))
    assert result.returncode == 2
    assert "CALLSCRIBE_TOKEN_SECRET" in result.stderr
    assert result.stdout == ""
