"""``callscribe up`` stopping: it says what it waits for, stops the workers before the broker,
and a second Ctrl-C kills what is left at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from tests.conftest import seconds
from workers.broker import EmbeddedBroker
from workers.local_stack import LocalStack

STUBBORN = ("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
            "print('ready', flush=True); time.sleep(120)")
POLITE = "import time; print('ready', flush=True); time.sleep(120)"


def child(code: str) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    assert process.stdout is not None
    assert process.stdout.readline() == b"ready\n"  # its signal handlers are in place
    process.stdout.close()
    return process


def stack_of(**processes: subprocess.Popen[bytes]) -> LocalStack:
    stack = LocalStack({})
    stack.processes = dict(processes)
    return stack


def test_stop_reports_each_worker_and_stops_the_broker_last() -> None:
    broker = EmbeddedBroker().start()
    stack = stack_of(ingest=child(POLITE), transcribe=child(STUBBORN))
    stack.broker = broker
    said: list[str] = []
    broker_up_while_workers_stop: list[bool] = []

    def say(line: str) -> None:
        said.append(line)
        if "stopped (" in line or "killing" in line:
            broker_up_while_workers_stop.append(broker._process is not None)

    stack.stop(grace=6, say=say)
    assert said[0] == "stopping ingest, transcribe (Ctrl-C again to force)"
    assert said[1].startswith("  ingest stopped (")
    assert said[2] == ("  waiting for transcribe (finishing utterances, committing offsets, "
                       "leaving its consumer group)")
    assert said[3:] == ["  transcribe did not stop in 6 s: killing", "stopping the broker",
                        "  broker stopped", "callscribe stopped"]
    assert broker_up_while_workers_stop == [True, True]
    assert all(p.poll() is not None for p in stack.processes.values())


def test_a_second_ctrl_c_forces() -> None:
    stack = stack_of(transcribe=child(STUBBORN))
    said: list[str] = []
    timer = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))
    started = time.monotonic()
    timer.start()
    try:
        stack.stop(grace=60, say=said.append)
    finally:
        timer.cancel()
    assert time.monotonic() - started < seconds(5)
    assert said == ["stopping transcribe (Ctrl-C again to force)",
                    "  forced: killing transcribe", "callscribe stopped"]
    assert stack.processes["transcribe"].returncode == -signal.SIGKILL


def _gone(pid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        try:  # reap it if it is ours (it is not: its parent was the killed process)
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.05)
    return False


PARENT = """
import subprocess, sys, time
from workers.broker import EmbeddedBroker
from workers.children import die_with_parent
broker = EmbeddedBroker(with_parent=True).start()
worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"],
                          start_new_session=True, preexec_fn=die_with_parent())
print(broker._process.pid, worker.pid, flush=True)
time.sleep(120)
"""


def test_children_end_when_up_is_killed() -> None:
    """`up` killed with SIGKILL (nothing of it runs to stop anything): the broker and the
    workers it started, each in a session of its own, still get SIGTERM and exit."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE)
    assert parent.stdout is not None
    broker_pid, worker_pid = map(int, parent.stdout.readline().split())
    parent.stdout.close()
    assert not _gone(broker_pid, 0.2) and not _gone(worker_pid, 0.2)
    parent.kill()
    parent.wait()
    assert _gone(worker_pid, seconds(10))
    assert _gone(broker_pid, seconds(10))
