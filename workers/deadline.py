"""The stop deadline every worker keeps (``docs/reliability.md``, "Stopping").

Once asked to stop (SIGTERM, SIGINT), a worker drains: it finishes what it can, flushes its
producer, commits and leaves its consumer group. Each of those steps waits on Kafka, and against
a broker that does not answer (down, frozen, partitioned away) each waits for its own request
timeout, one after the other: ``bench.faults`` measured transcribers and ingest still running
45 s after SIGTERM with the broker frozen. :class:`StopDeadline` bounds the whole: armed when
the stop begins, it ends the process just before ``seconds`` are up if it is still there, as
Kubernetes would at the grace period, but logged and within the documented deadline. What was
not stored by then is replayed by the next owner of the partition (transcribe, assist: their
offsets were not committed) or never reached Kafka (ingest: audio the broker did not
acknowledge).
"""

from __future__ import annotations

import logging
import os
import threading
import time

log = logging.getLogger(__name__)

#: Exit status of a worker that its stop deadline ended.
EXIT_DEADLINE = 3
#: The deadline ends the process this long before it is due: time for the exit itself.
MARGIN_S = 1.0
#: Each worker's deadline, in seconds after SIGTERM (beyond its drain setting where it has
#: one); deploy/base sizes terminationGracePeriodSeconds from them and tests/deploy checks it.
INGEST_AFTER_DRAIN_S = 15.0  # close the calls still live with 1001, flush their audio
TRANSCRIBE_AFTER_DRAIN_S = 20.0  # commit, leave the consumer group
ASSIST_S = 30.0  # faust's 20 s broker request timeout + 10
BRIDGE_S = 15.0  # aiohttp's 10 s shutdown timeout + 5 to close the clients


class StopDeadline:
    """Ends the process :data:`MARGIN_S` before ``seconds`` after :meth:`arm` are up, unless
    it exited before."""

    def __init__(self, worker: str, seconds: float) -> None:
        self.worker = worker
        self.seconds = seconds
        self._armed_at: float | None = None

    @property
    def armed(self) -> bool:
        return self._armed_at is not None

    def arm(self) -> None:
        """Start counting (again: no effect); from any thread, or a signal handler."""
        if self._armed_at is not None:
            return
        self._armed_at = time.monotonic()
        log.info("%s: stopping; it exits within %.0f s", self.worker, self.seconds)
        threading.Thread(target=self._expire, name=f"{self.worker}-stop-deadline",
                         daemon=True).start()

    def _expire(self) -> None:
        waited = max(0.1, self.seconds - MARGIN_S)
        time.sleep(waited)
        log.warning("%s: still stopping %.0f s after it was asked to (Kafka not answering?); "
                    "exiting now: what it had not stored is replayed by the next owner, or, "
                    "for audio Kafka never acknowledged, lost", self.worker, waited)
        logging.shutdown()
        os._exit(EXIT_DEADLINE)


__all__ = ["ASSIST_S", "BRIDGE_S", "EXIT_DEADLINE", "INGEST_AFTER_DRAIN_S",
           "TRANSCRIBE_AFTER_DRAIN_S", "StopDeadline"]
