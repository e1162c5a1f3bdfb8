"""Which calls someone watches with interims: the pure state behind ``CALLSCRIBE_INTERIMS=watched``.

Every bridge replica publishes, per call, whether its clients watch it with ``interim=true``
(:class:`~workers.records.InterimInterest`), and re-sends that while they do. A call is watched
while at least one replica's latest record says ``watching`` and has not lapsed (``atMs +
ttlMs``, the sender's clock): a replica that dies stops re-sending, and its interest lapses
with it. A later record of a replica replaces its earlier one; an older one (redelivered out
of order) is ignored.
"""

from __future__ import annotations

from workers.records import InterimInterest


class Interest:
    """Per call and bridge replica: until when (epoch ms) it is watched."""

    def __init__(self) -> None:
        #: call id → {bridge replica → (at_ms of its latest record, watched until, 0 if not)}
        self._calls: dict[str, dict[str, tuple[int, int]]] = {}

    def note(self, record: InterimInterest) -> None:
        """Take in one record of the interest topic."""
        replicas = self._calls.setdefault(record.call_id, {})
        previous = replicas.get(record.bridge)
        if previous is not None and previous[0] > record.at_ms:
            return
        replicas[record.bridge] = (
            record.at_ms, record.at_ms + record.ttl_ms if record.watching else 0)

    def watched(self, call_id: str, now_ms: int) -> bool:
        """Whether some replica watches ``call_id`` at ``now_ms`` (epoch ms)."""
        replicas = self._calls.get(call_id)
        return replicas is not None and any(until > now_ms for _, until in replicas.values())

    def prune(self, now_ms: int) -> None:
        """Forget lapsed interest (keeps the state bounded by the calls watched lately)."""
        for call_id in list(self._calls):
            replicas = self._calls[call_id]
            for bridge in [b for b, (_, until) in replicas.items() if until <= now_ms]:
                del replicas[bridge]
            if not replicas:
                del self._calls[call_id]

    def __len__(self) -> int:
        return len(self._calls)


__all__ = ["Interest"]
