"""The stop deadline (workers/deadline.py): a worker still stopping at its deadline exits,
whatever it waits for; one armed twice keeps the first deadline."""

from __future__ import annotations

import subprocess
import sys
import time

from tests.conftest import seconds
from workers.deadline import EXIT_DEADLINE

STUCK = """
import logging, time
from workers.deadline import StopDeadline
logging.basicConfig(level=logging.INFO)
deadline = StopDeadline("stuck", 0.5)
deadline.arm()
time.sleep(0.3)
deadline.arm()  # a second signal: the first deadline holds
time.sleep(60)  # a Kafka client waiting on a broker that does not answer
"""


def test_a_worker_still_stopping_at_its_deadline_exits() -> None:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", STUCK], capture_output=True, text=True,
                          timeout=seconds(30), check=False)
    assert done.returncode == EXIT_DEADLINE
    assert time.monotonic() - started < seconds(10)
    assert done.stderr.count("stuck: stopping; it exits within") == 1
    assert done.stderr.count("exiting now") == 1
