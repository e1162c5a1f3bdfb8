""":class:`BrokerProbe`'s answered clock: it stops from the last answer before an outage to the
first after it (the transcriber's idle timeout does not count an outage). The probe's one I/O
step (``_ask``) answers or fails as the test says; no broker."""

from __future__ import annotations

import asyncio

from aiokafka.errors import KafkaConnectionError

from workers.kafka import BrokerProbe


class Probe(BrokerProbe):
    def __init__(self) -> None:
        super().__init__("127.0.0.1:9", timeout_s=0.1)
        self.answers = True

    async def _ask(self) -> None:
        if not self.answers:
            raise KafkaConnectionError("not answering")


async def test_the_answered_clock_stops_while_the_brokers_do_not_answer() -> None:
    probe = Probe()
    await probe._probe_once()
    assert probe.reachable
    await asyncio.sleep(0.1)  # answering: the clock runs
    before = probe.answered_clock()
    probe.answers = False
    await probe._probe_once()  # the outage noticed: the clock steps back to the last answer
    await asyncio.sleep(0.3)
    during = probe.answered_clock()
    assert during <= before
    probe.answers = True
    await probe._probe_once()
    after = probe.answered_clock()
    assert after - during < 0.05  # the 0.3 s without an answer did not count
    await asyncio.sleep(0.2)
    assert 0.15 < probe.answered_clock() - after < 0.5  # and it runs again
