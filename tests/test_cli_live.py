"""The client commands against a running system (the session's broker, ingest, transcriber,
assist worker and bridge): ``simulate`` prints the call id and a ``watch`` command first,
``calls`` lists the call, ``watch`` prints it and refuses an unknown call at once with the
bridge's reason, and a 16 kHz mono WAV is sent as 16 kHz mono (each line once)."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

from tests.conftest import FIXTURES, RunningStack, seconds
from tests.test_cli import clean_env
from workers import localenv


async def cli(*args: str, cwd: Path, wait_s: float = 30) -> tuple[int, str, str]:
    """Run ``callscribe ARGS`` without blocking the loop (the bridge under test runs in it)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers.cli", *args, env=clean_env(), cwd=cwd,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), seconds(wait_s))
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def write_env(stack: RunningStack, folder: Path) -> None:
    """What `callscribe up` would have written for this stack."""
    secret = stack.issuer._secret  # the test stack's own issuer
    localenv.write({"CALLSCRIBE_TOKEN_SECRET": secret, "CALLSCRIBE_API_KEYS": stack.api_key,
                    "CALLSCRIBE_BRIDGE_URL": stack.bridge_http,
                    "CALLSCRIBE_INGEST_URL": stack.ingest_url.removesuffix("/jambonz")},
                   folder / ".callscribe" / "env")


async def test_watch_of_an_unknown_call_shows_the_bridges_reason_at_once(
        stack: RunningStack, tmp_path: Path) -> None:
    write_env(stack, tmp_path)
    started = time.monotonic()
    code, out, err = await cli("watch", "no-such-call", cwd=tmp_path)
    assert code == 1
    assert time.monotonic() - started < seconds(10)  # not 30 s of retrying
    assert out == ""
    assert err == ("callscribe watch: the bridge refused (HTTP 404) unknown_call: The call for "
                   "this conversationToken is not known or has ended. (live calls: `callscribe "
                   "calls`; --wait SECONDS waits for a call that has not started yet)\n")


async def test_a_wrong_api_key_is_named(stack: RunningStack, tmp_path: Path) -> None:
    write_env(stack, tmp_path)
    env_file = tmp_path / ".callscribe" / "env"
    env_file.write_text(env_file.read_text().replace(stack.api_key, "not-the-key"))
    code, _, err = await cli("calls", cwd=tmp_path)
    assert code == 1
    assert err.startswith("callscribe calls: the bridge refused (HTTP 401) ")
    code, _, err = await cli("watch", "any-call", cwd=tmp_path)
    assert code == 1
    assert err.startswith("callscribe watch: the bridge refused (HTTP 401) ")
    assert "CALLSCRIBE_API_KEYS" in err


async def test_a_mono_16k_wav_is_announced_listed_watched_and_heard_once(
        stack: RunningStack, tmp_path: Path) -> None:
    write_env(stack, tmp_path)
    wav = FIXTURES / "speech" / "call_mono_16k.wav"
    player = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers.cli", "simulate", "jambonz", "--wav", str(wav),
        env=clean_env(), cwd=tmp_path, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    assert player.stdout is not None
    first = (await asyncio.wait_for(player.stdout.readline(), seconds(30))).decode()
    second = (await asyncio.wait_for(player.stdout.readline(), seconds(5))).decode()
    # The id and how to watch come before the audio, with the WAV's own layout.
    assert first.startswith("call ") and "(16000 Hz mono)" in first, first
    call_id = first.split()[1].rstrip(":")
    assert second.strip() == f"watch it:  callscribe watch {call_id}"

    code, out, err = await cli("watch", call_id, "--wait", "10", cwd=tmp_path, wait_s=60)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("── call started")
    assert lines[-1].startswith("── call ended")
    spoken = [line for line in lines if line.startswith("[")]
    assert any("other: My internet is not working today." in line for line in spoken), out
    assert not any("assistant:" in line for line in spoken), out  # not duplicated as stereo
    rest, _ = await asyncio.wait_for(player.communicate(), seconds(30))
    assert player.returncode == 0
    assert f"call {call_id}: sent 104895 samples x 1 channels at 16000 Hz" in rest.decode()


async def test_calls_lists_a_live_call(stack: RunningStack, tmp_path: Path) -> None:
    from workers.bridge.client import messages, open_live_call
    from workers.simulate.jambonz import simulate_jambonz

    write_env(stack, tmp_path)
    call_id = "cli-calls-1"
    playing = asyncio.create_task(simulate_jambonz(
        stack.ingest_url, FIXTURES / "speech" / "call_stereo_8k.wav", call_sid=call_id))
    try:
        deadline = time.monotonic() + seconds(20)
        while True:
            code, out, err = await cli("calls", cwd=tmp_path)
            assert code == 0, err
            if call_id in out or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        header, *rows, footer = out.splitlines()
        assert header.split() == ["CALL", "ID", "PROVIDER", "FROM", "TO", "STARTED", "MESSAGES"]
        row = next(r for r in rows if r.startswith(call_id))
        assert row.split()[1:4] == ["jambonz", "+15083084809", "+15083728299"]
        assert footer == "watch one: callscribe watch CALL_ID"
    finally:
        await asyncio.wait_for(playing, seconds(30))
        # Leave nothing in flight: read the call to its end, as a watcher would.
        ws = await open_live_call(stack.bridge_url, stack.issuer.mint(call_id)[0],
                                  stack.api_key)
        assert [m async for _, m in messages(ws)][-1]["type"] == "event:callEnd"
